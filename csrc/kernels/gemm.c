/* The packed GEMM path: y[n × rows] = x[n × cols] · Wᵀ for many activation rows, W in f32/f16/bf16/q8_0/q4_0.
 *
 * BLIS's loop nest around a register-tile micro-kernel (the table's gemm_ukernel, MR activation rows × NR
 * weight rows, f32 FMA):
 *
 *   x is packed once (by all threads) into strips of MR rows, K-block by K-block: strip s of block p holds
 *       kc × MR values, k-major, so the micro-kernel broadcasts MR activations per step from one cache line;
 *   each thread owns a contiguous range of weight rows (multiples of NR, so both cores finish together) and
 *   walks it NC rows at a time; for each K block of KC values it
 *       packs the NC × kc weight panel into f32, NR rows interleaved per step (widening f16/bf16 or
 *       dequantising q8_0/q4_0 exactly here, once per panel: every packed value then serves all n rows),
 *       then for every activation strip (MR × kc, stays in L1) runs the micro-kernel over the panel's NR-row
 *       micro-panels (the panel stays in L2).
 *
 * The first K block writes y, later ones accumulate: each y element is the sum of its K blocks in a fixed
 * order, whatever the thread count. Edges are packed with zeros; the last strip of activations (n not a
 * multiple of MR) takes the table's micro-kernel for fewer rows, the last weight rows (not a multiple of NR) a
 * tile on the stack. The last K block of a tile also runs the epilogue (bias, activation,
 * residual) on it while it is in L1: the same tiles whatever the thread count, so the same results.
 *
 * Several weights of the same shape and dtype (a layer's q, k and v) can make one product: their rows are
 * laid end to end, the activations packed once and the threads split the rows of all of them. */
#include "kernels/gemm.h"

#include <string.h>

#include "kernels/matmul.h"

#define KC_MAX 256   /* K block (values): a packed NR × KC weight micro-panel (≤ 32 KiB) stays in L1 */
#define KC_STEP 128  /* K blocks are multiples of this (whole q*_0 blocks) */
#define A_BUDGET (640 << 10) /* bytes of packed activations per K block: the slice stays in L2 (1 MiB here) */
#define NC 1024      /* weight rows whose outputs (n × NC) are finished before the next NC: they stay in L3 */
#define MAX_TILE (16 * 32)
#define MAX_PARTS 3

typedef struct {
    const pr_kernels *k;
    const pr_tensor *W;  /* the first part: dtype and columns of all */
    const char *part[MAX_PARTS]; /* each part's data */
    long part_end[MAX_PARTS];    /* each part's last row + 1, counted over all parts */
    const pr_epilogue *ep;       /* or NULL */
    const float *x;
    float *y, *ap;       /* ap: packed activations, ceil(n/MR)·MR × cols */
    long n, rows, cols, mpad;
    long kc;             /* K block: KC_MAX, smaller for many activation rows (A_BUDGET), a multiple of KC_STEP */
    size_t ldw;          /* bytes per weight row */
} gemm_job;

static long kc_of(const gemm_job *j, long k0) { return j->cols - k0 < j->kc ? j->cols - k0 : j->kc; }

/* strip s of K block starting at k0: kc × MR values */
static float *a_strip(const gemm_job *j, long k0, long s) {
    return j->ap + k0 * j->mpad + s * kc_of(j, k0) * j->k->gemm_mr;
}

static void pack_a_task(void *arg, int ith, int nth) {
    const gemm_job *j = arg;
    long MR = j->k->gemm_mr, strips = j->mpad / MR, s0, s1;
    pr_split_range(strips, ith, nth, &s0, &s1);
    for (long s = s0; s < s1; s++)
        for (long k0 = 0; k0 < j->cols; k0 += j->kc) {
            long kc = kc_of(j, k0);
            float *dst = a_strip(j, k0, s);
            const float *src = j->x + s * MR * j->cols + k0;
            if (MR >= 8 && (s + 1) * MR <= j->n) { /* two overlapping 8-row transposes cover the strip */
                j->k->gemm_pack8(src, j->cols, kc, dst, MR);
                j->k->gemm_pack8(src + (MR - 8) * j->cols, j->cols, kc, dst + MR - 8, MR);
                continue;
            }
            for (long i = 0; i < MR; i++) {
                long r = s * MR + i;
                for (long k = 0; k < kc; k++) dst[k * MR + i] = r < j->n ? src[i * j->cols + k] : 0.0f;
            }
        }
}

/* weight row r of all the parts together */
static const char *wrow(const gemm_job *j, long r) {
    int p = 0;
    while (r >= j->part_end[p]) p++;
    return j->part[p] + (size_t)(r - (p ? j->part_end[p - 1] : 0)) * j->ldw;
}

/* f32 values [k0, k0 + kc) of weight row r */
static void widen(const gemm_job *j, long r, long k0, long kc, float *out) {
    const char *row = wrow(j, r);
    switch (j->W->type) {
    case PR_F32: memcpy(out, (const float *)row + k0, (size_t)kc * sizeof(float)); break;
    case PR_F16: j->k->f16_to_f32((const uint16_t *)row + k0, out, kc); break;
    case PR_BF16: j->k->bf16_to_f32((const uint16_t *)row + k0, out, kc); break;
    case PR_Q8_0: j->k->dequantize_q8_0((const block_q8_0 *)row + k0 / PR_QK, out, kc); break;
    default: j->k->dequantize_q4_0((const block_q4_0 *)row, j->cols / PR_QK, k0 / PR_QK, out, kc); break;
    }
}

/* weight rows [r0, r0 + nc) × K block k0 into bp (kc steps of NR values), 8 rows at a time: widened into
 * rows8 (8 × kc, zeros past nc), then transposed by the table */
static void pack_b(const gemm_job *j, long r0, long nc, long k0, long kc, float *bp, float *rows8) {
    long NR = j->k->gemm_nr;
    for (long g = 0; g < NR; g += 8) {
        const char *w = g + 8 <= nc ? wrow(j, r0 + g) : NULL;
        if (w && wrow(j, r0 + g + 7) != w + 7 * j->ldw) w = NULL; /* not 8 rows of one part */
        if (w && j->W->type == PR_F32) { /* f32 rows: straight */
            j->k->gemm_pack8((const float *)w + k0, j->cols, kc, bp + g, NR);
            continue;
        }
        if (w && j->W->type == PR_Q8_0 && j->k->gemm_pack8_q8_0) { /* q8_0 rows: dequantised as they are transposed */
            j->k->gemm_pack8_q8_0((const block_q8_0 *)w + k0 / PR_QK, j->ldw, kc, bp + g, NR);
            continue;
        }
        for (long i = 0; i < 8; i++) {
            if (g + i < nc) widen(j, r0 + g + i, k0, kc, rows8 + i * kc);
            else memset(rows8 + i * kc, 0, (size_t)kc * sizeof(float));
        }
        j->k->gemm_pack8(rows8, kc, kc, bp + g, NR);
    }
}

/* asks for the weight bytes the next pack_b reads while the micro-kernels run: its NR rows are ldw apart, which
 * the hardware prefetchers do not follow (CLIP-L/336 q8_0 in an interleaved A/B: 2 % less CPU time) */
static void prefetch_b(const gemm_job *j, long r0, long nc, long k0, long kc) {
    size_t off = (size_t)(k0 / (long)pr_dtype_block_size(j->W->type)) * pr_dtype_block_bytes(j->W->type);
    size_t len = (size_t)(kc / (long)pr_dtype_block_size(j->W->type)) * pr_dtype_block_bytes(j->W->type);
    for (long r = 0; r < nc; r++) {
        const char *row = wrow(j, r0 + r) + off;
        for (size_t b = 0; b < len; b += 64) __builtin_prefetch(row + b);
        __builtin_prefetch(row + len - 1);
    }
}

static void gemm_task(void *arg, int ith, int nth) {
    const gemm_job *j = arg;
    const pr_kernels *k = j->k;
    long MR = k->gemm_mr, NR = k->gemm_nr, strips = j->mpad / MR;
    long g0, g1;
    pr_split_range((j->rows + NR - 1) / NR, ith, nth, &g0, &g1);
    long r_begin = g0 * NR, r_end = g1 * NR < j->rows ? g1 * NR : j->rows;
    float *bp = pr_scratch(PR_SCRATCH_PANEL, (size_t)(j->kc * NR + 8 * j->kc) * sizeof(float));
    if (!bp) { /* no memory for a panel: dot products of widened K blocks need none */
        float row[KC_MAX];
        for (long r = r_begin; r < r_end; r++)
            for (long k0 = 0; k0 < j->cols; k0 += j->kc) {
                long kc = kc_of(j, k0);
                widen(j, r, k0, kc, row);
                for (long i = 0; i < j->n; i++)
                    j->y[i * j->rows + r] = (k0 ? j->y[i * j->rows + r] : 0.0f) + k->dot_f32(row, j->x + i * j->cols + k0, kc);
            }
        for (long c = r_begin; j->ep && c < r_end; c += NR) /* the tiles' segments: the same results */
            pr_epilogue_tile(k, j->ep, c, j->y + c, j->ep->res ? j->ep->res + c : NULL, j->n,
                             r_end - c < NR ? r_end - c : NR, j->rows);
        return;
    }
    float *rows8 = bp + j->kc * NR;
    float tile[MAX_TILE];
    for (long r0 = r_begin; r0 < r_end; r0 += NC) {
        long r1 = r_end - r0 < NC ? r_end : r0 + NC;
        for (long k0 = 0; k0 < j->cols; k0 += j->kc) {
            long kc = kc_of(j, k0);
            int acc = k0 > 0, last = k0 + kc == j->cols;
            for (long c = r0; c < r1; c += NR) {
                long nr = r1 - c < NR ? r1 - c : NR;
                pack_b(j, c, nr, k0, kc, bp, rows8);
                if (c + NR < r1) prefetch_b(j, c + NR, r1 - c - NR < NR ? r1 - c - NR : NR, k0, kc);
                for (long s = 0; s < strips; s++) {
                    const float *a = a_strip(j, k0, s);
                    long i0 = s * MR, mr = j->n - i0 < MR ? j->n - i0 : MR;
                    float *y = j->y + i0 * j->rows + c;
                    if (mr == MR && nr == NR) {
                        k->gemm_ukernel(kc, a, bp, y, j->rows, acc);
                    } else if (nr == NR) { /* the last strip: only its rows' work */
                        k->gemm_ukernel_rows(kc, a, bp, y, j->rows, acc, (int)mr);
                    } else {
                        k->gemm_ukernel(kc, a, bp, tile, NR, 0);
                        for (long i = 0; i < mr; i++)
                            for (long q = 0; q < nr; q++)
                                y[i * j->rows + q] = (acc ? y[i * j->rows + q] : 0.0f) + tile[i * NR + q];
                    }
                    if (last && j->ep)
                        pr_epilogue_tile(k, j->ep, c, y, j->ep->res ? j->ep->res + i0 * j->rows + c : NULL, mr, nr, j->rows);
                }
            }
        }
    }
}

int pr_gemm_packed(const pr_kernels *k, pr_pool *pool, const pr_tensor *const *Ws, int n_w, const float *x, int n,
                   float *y, const pr_epilogue *ep) {
    if (!k->gemm_ukernel || !k->gemm_ukernel_rows || k->gemm_mr * k->gemm_nr > MAX_TILE || k->gemm_nr % 8 || n <= 0 || n_w < 1 ||
        n_w > MAX_PARTS)
        return -1;
    const pr_tensor *W = Ws[0];
    gemm_job j = {.k = k, .W = W, .ep = ep, .x = x, .y = y, .n = n, .cols = (long)W->ne[0]};
    for (int p = 0; p < n_w; p++) {
        if (Ws[p]->type != W->type || Ws[p]->ne[0] != W->ne[0]) return -1;
        j.part[p] = Ws[p]->data;
        j.part_end[p] = j.rows += (long)Ws[p]->ne[1];
    }
    if ((W->type == PR_Q8_0 || W->type == PR_Q4_0) && j.cols % PR_QK) return -1;
    j.ldw = (size_t)(j.cols / (long)pr_dtype_block_size(W->type)) * pr_dtype_block_bytes(W->type);
    j.mpad = (n + k->gemm_mr - 1) / k->gemm_mr * k->gemm_mr;
    /* a multiple of KC_STEP values: whole q*_0 blocks */
    j.kc = A_BUDGET / (j.mpad * (long)sizeof(float)) / KC_STEP * KC_STEP;
    j.kc = j.kc > KC_MAX ? KC_MAX : j.kc < KC_STEP ? KC_STEP : j.kc;
    j.ap = pr_scratch(PR_SCRATCH_ACT, (size_t)j.mpad * (size_t)j.cols * sizeof(float));
    if (!j.ap) return -1;
    pr_pool_run(pool, pack_a_task, &j);
    pr_pool_run(pool, gemm_task, &j);
    return 0;
}
