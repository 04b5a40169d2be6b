/* Matrix products for every weight dtype, split across the pool's threads by weight rows. Each output
 * element is computed by one thread in a fixed order, so results do not depend on timing.
 *
 *   few activation rows (decode, batched decode; n ≤ FEW_ROWS): one dot product per weight row and activation
 *       row; for q8_0/q4_0 weights the x rows are quantised to q8_0 first and the table's int8 kernel takes a
 *       thread's whole slice of rows against all of them. Memory-bound: every weight byte is read once.
 *   many rows (prefill, vision tower, projector, MoE experts): compute-bound, blocked kernels:
 *       f32   OpenBLAS sgemm, each thread on its slice of weight rows (OpenBLAS itself single-threaded)
 *       f16, bf16, q8_0, q4_0, from GEMM_MIN_ROWS rows (gemm_min_rows: 64 / 256 for q4_0 / q8_0 on VNNI CPUs):
 *             rows of ≥ GEMM_MIN_COLS (1024) values: the packed GEMM of gemm.c (weight panels widened or
 *             dequantised once per cache block, our f32 micro-kernels)
 *             shorter rows: panels of weight rows widened to f32 in per-thread scratch, then sgemm on them
 *       fewer rows:
 *       bf16  the table's bf16 tile kernel where the CPU has bf16 dot products (AVX512_BF16)
 *       q8_0, q4_0  where the CPU has int8 dot products (VNNI): activations quantised to q8_0 blocks on the
 *             fly, then the table's tiled int8 kernel
 *       else  widened panels + sgemm.
 *   The choice is measured (use_gemm); numbers in benchmarks/RESULTS.md. */
#include "kernels/matmul.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"
#include "util/mem.h"

#define FEW_ROWS 8    /* up to this many activation rows: dot products (matrix-vector; a batch of decoded
                       * sequences reads each weight row once) */
#define PANEL_BYTES (2 << 20) /* f32 weight rows widened at a time for sgemm: big enough that sgemm's packing
                                * of the activations is amortised, small enough to stay in L2/L3 */
#define ROW_ALIGN 4   /* thread slices start on multiples of the tile kernels' 4 weight rows */

const pr_kernels *pr_kern(void) {
    const pr_kernels *k = pr_kernels_active(NULL);
    return k ? k : &pr_kernels_scalar;
}

void pr_blas_single_thread(void) { openblas_set_num_threads(1); }

void pr_row_to_f32(const pr_tensor *W, long r, float *out) {
    long cols = (long)W->ne[0];
    switch (W->type) {
    case PR_F32: memcpy(out, (const float *)W->data + r * cols, (size_t)cols * sizeof(float)); break;
    case PR_F16: pr_kern()->f16_to_f32((const uint16_t *)W->data + r * cols, out, cols); break;
    case PR_BF16: pr_kern()->bf16_to_f32((const uint16_t *)W->data + r * cols, out, cols); break;
    case PR_Q8_0: pr_dequantize_row_q8_0((const block_q8_0 *)W->data + r * (cols / PR_QK), out, cols); break;
    case PR_Q4_0: pr_dequantize_row_q4_0((const block_q4_0 *)W->data + r * (cols / PR_QK), cols / PR_QK, 0, out, cols); break;
    default: memset(out, 0, (size_t)cols * sizeof(float)); break;
    }
}

void pr_tensor_to_f32(const pr_tensor *W, float *out) {
    long rows = 1;
    for (int d = 1; d < W->n_dims; d++) rows *= (long)W->ne[d];
    for (long r = 0; r < rows; r++) pr_row_to_f32(W, r, out + r * W->ne[0]);
}

void pr_add_bias_range(const pr_tensor *bias, float *y, long rows, long e0, long e1) {
    if (!bias) return; /* vectors are f32 in every file (weights.c checks) */
    const float *b = bias->data;
    for (long e = e0; e < e1;) {
        long j = e % rows, len = rows - j < e1 - e ? rows - j : e1 - e;
        for (long t = 0; t < len; t++) y[e + t] += b[j + t];
        e += len;
    }
}

/* ---- one job description for every path */
typedef struct {
    const pr_kernels *k;
    const pr_tensor *W;
    const float *x;     /* n × cols f32 */
    const void *xq;     /* x prepared for the kernel: q8_0 blocks, bf16 hi/lo, or NULL */
    size_t ldxq;        /* bytes between rows of xq */
    int n;
    float *y;           /* n × rows */
    long rows, cols;
    size_t ldw;         /* bytes per weight row */
} mm_job;

/* this thread's slice of weight rows, on multiples of ROW_ALIGN */
static void slice(const mm_job *j, int ith, int nth, long *r0, long *r1) {
    long groups = (j->rows + ROW_ALIGN - 1) / ROW_ALIGN, g0, g1;
    pr_split_range(groups, ith, nth, &g0, &g1);
    *r0 = g0 * ROW_ALIGN;
    *r1 = g1 * ROW_ALIGN < j->rows ? g1 * ROW_ALIGN : j->rows;
}

static inline const void *wrow(const mm_job *j, long r) { return (const char *)j->W->data + (size_t)r * j->ldw; }

/* a q*_0 weight row against an f32 activation row, with no scratch memory (the fallback): 16 blocks at a time */
static float dot_dequant(const mm_job *j, long r, const float *x) {
    float w[PR_Q4_0_SB * PR_QK], s = 0;
    const char *row = wrow(j, r);
    long nb = j->cols / PR_QK;
    for (long b = 0; b < nb; b += PR_Q4_0_SB) {
        long m = nb - b < PR_Q4_0_SB ? nb - b : PR_Q4_0_SB;
        if (j->W->type == PR_Q8_0) pr_dequantize_row_q8_0((const block_q8_0 *)row + b, w, m * PR_QK);
        else pr_dequantize_row_q4_0((const block_q4_0 *)row, nb, b, w, m * PR_QK);
        s += j->k->dot_f32(w, x + b * PR_QK, m * PR_QK);
    }
    return s;
}

/* f32/f16/bf16 weights, or q*_0 without scratch for the quantised activations */
static void matvec_task(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    const pr_kernels *k = j->k;
    long r0, r1;
    slice(j, ith, nth, &r0, &r1);
    for (long r = r0; r < r1; r++) {
        const void *w = wrow(j, r);
        for (int i = 0; i < j->n; i++) {
            const float *x = j->x + (long)i * j->cols;
            float s;
            switch (j->W->type) {
            case PR_F32: s = k->dot_f32(w, x, j->cols); break;
            case PR_F16: s = k->dot_f16(w, x, j->cols); break;
            case PR_BF16: s = k->dot_bf16(w, x, j->cols); break;
            case PR_Q8_0: case PR_Q4_0: s = dot_dequant(j, r, x); break;
            default: s = 0; break;
            }
            j->y[(long)i * j->rows + r] = s;
        }
    }
}

static void sgemm_task(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    long r0, r1;
    slice(j, ith, nth, &r0, &r1);
    if (r1 <= r0) return;
    if (j->W->type == PR_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, (int)(r1 - r0), (int)j->cols, 1.0f, j->x,
                    (int)j->cols, wrow(j, r0), (int)j->cols, 0.0f, j->y + r0, (int)j->rows);
        return;
    }
    /* other dtypes: widen panel_rows weight rows at a time into this thread's scratch */
    long panel_rows = PANEL_BYTES / (j->cols * (long)sizeof(float));
    if (panel_rows < 16) panel_rows = 16;
    float *panel = pr_scratch(PR_SCRATCH_PANEL, (size_t)panel_rows * (size_t)j->cols * sizeof(float));
    if (!panel) { /* no memory for a panel: dot products need none */
        matvec_task(arg, ith, nth);
        return;
    }
    for (long p = r0; p < r1; p += panel_rows) {
        long np = r1 - p < panel_rows ? r1 - p : panel_rows;
        for (long r = 0; r < np; r++) {
            float *dst = panel + r * j->cols;
            switch (j->W->type) {
            case PR_F16: j->k->f16_to_f32(wrow(j, p + r), dst, j->cols); break;
            case PR_BF16: j->k->bf16_to_f32(wrow(j, p + r), dst, j->cols); break;
            case PR_Q8_0: j->k->dequantize_q8_0(wrow(j, p + r), dst, j->cols); break;
            default: j->k->dequantize_q4_0(wrow(j, p + r), j->cols / PR_QK, 0, dst, j->cols); break;
            }
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->n, (int)np, (int)j->cols, 1.0f, j->x, (int)j->cols,
                    panel, (int)j->cols, 0.0f, j->y + p, (int)j->rows);
    }
}

static void tile_task(void *arg, int ith, int nth) {
    const mm_job *j = arg;
    long r0, r1;
    slice(j, ith, nth, &r0, &r1);
    if (r1 <= r0) return;
    pr_gemm_fn gemm = j->W->type == PR_Q8_0 ? j->k->gemm_q8_0 : j->W->type == PR_Q4_0 ? j->k->gemm_q4_0 : j->k->gemm_bf16;
    long k = j->W->type == PR_BF16 ? j->cols : j->cols / PR_QK;
    gemm(wrow(j, r0), (long)j->ldw, r1 - r0, j->xq, (long)j->ldxq, j->n, k, j->y + r0, j->rows);
}

/* x rows → q8_0 blocks */
static void quantize_x(const mm_job *j, block_q8_0 *xq) {
    for (int i = 0; i < j->n; i++)
        j->k->quantize_q8_0(j->x + (long)i * j->cols, (block_q8_0 *)((char *)xq + (size_t)i * j->ldxq), j->cols);
}

/* x rows → bf16 hi then lo halves (see gemm_bf16 in kernels_avx512.c) */
static void split_bf16_x(const mm_job *j, uint16_t *xs) {
    for (int i = 0; i < j->n; i++) {
        const float *x = j->x + (long)i * j->cols;
        uint16_t *h = xs + (size_t)i * 2 * j->cols, *l = h + j->cols;
        for (long e = 0; e < j->cols; e++) {
            h[e] = pr_f32_to_bf16(x[e]);
            l[e] = pr_f32_to_bf16(x[e] - pr_bf16_to_f32(h[e]));
        }
    }
}

/* Many activation rows: the packed GEMM where it was measured to win (benchmarks/bench_gemm.py, table in
 * benchmarks/RESULTS.md; 2 threads, AVX-512 VNNI/BF16 CPU, OpenBLAS choosing its own kernels):
 *   - from 40 rows on it beats the bf16 tiles by ~1.4× (and the int8 tiles before their rewrite by 1.7–2.4×);
 *   - against widening + OpenBLAS it wins on long rows (≥ 4096 columns: +0–8 %; 11008 columns: ~2×, where the
 *     widened panels are only 47 rows) and matches it on 1024-column products (CLIP-L's layers, Qwen1.5-0.5B's:
 *     577 × 1024 × 1024 and 577 × 4096 × 1024 q8_0, 437–449 against 435–445 GFLOP/s once the next weight rows
 *     are prefetched), where its epilogue then saves the separate bias/activation/residual passes
 *     (pr_matmul_fused);
 *   - f32 weights need no widening: OpenBLAS's sgemm is 7–12 % faster than ours there (AVX2 and AVX-512);
 *   - against the int8 kernel of few rows (VNNI CPUs; `bench_gemm.py --shapes "128 rows,64 rows,40 rows,..."`):
 *     on q4_0 weights it is as fast as the GEMM at 64 rows (328 vs 323 GFLOP/s) and faster below (321 vs 180
 *     at 12 rows), the GEMM ahead at 128 (357 vs 331); on q8_0 weights it is ahead up to 128 rows (370 vs 347),
 *     the GEMM at 603 (410 vs 367): q4_0 goes to the GEMM from 64 rows, q8_0 from 256 (between the two).
 * The AVX2 table on the same machine with OpenBLAS's Haswell kernels gives the same picture. */
#define GEMM_MIN_ROWS 32
#define GEMM_MIN_COLS 1024
static int gemm_min_rows(const pr_kernels *k, int type) {
    if (!k->int8_tiles) return GEMM_MIN_ROWS;
    return type == PR_Q4_0 ? 64 : type == PR_Q8_0 ? 256 : GEMM_MIN_ROWS;
}

static int use_gemm(const pr_kernels *k, int type, long cols) {
    /* the scalar table's micro-kernel is the reference the others are tested against, not a fast path */
    return k->gemm_ukernel && k != &pr_kernels_scalar && type != PR_F32 && cols >= GEMM_MIN_COLS;
}

/* the packed GEMM for n activation rows against W (path as pr_matmul_k's) */
static int takes_gemm(const pr_kernels *k, const pr_tensor *W, int n, int path) {
    if (n <= FEW_ROWS && path == PR_MM_AUTO) return 0;
    return path == PR_MM_GEMM || (path == PR_MM_AUTO && n >= gemm_min_rows(k, W->type) &&
                                  use_gemm(k, W->type, (long)W->ne[0]));
}

void pr_matmul_k(const pr_kernels *k, pr_pool *pool, const pr_tensor *W, const float *x, int n, float *y,
                 int path) {
    if (n <= 0) return;
    mm_job j = {k, W, x, NULL, 0, n, y, (long)W->ne[1], (long)W->ne[0], 0};
    j.ldw = (size_t)(j.cols / (long)pr_dtype_block_size(W->type)) * pr_dtype_block_bytes(W->type);
    int quant = W->type == PR_Q8_0 || W->type == PR_Q4_0;
    int many = n >= GEMM_MIN_ROWS, few = n <= FEW_ROWS && path == PR_MM_AUTO; /* a forced path is taken */
    int gemm = takes_gemm(k, W, n, path);
    /* long q8_0/q4_0 rows below the GEMM's threshold: the int8 kernel, also from GEMM_MIN_ROWS rows */
    int long_q = quant && k->int8_tiles && use_gemm(k, W->type, j.cols) && n < gemm_min_rows(k, W->type);
    int tiles = !gemm && (path == PR_MM_TILES || (path == PR_MM_AUTO && ((!many && k->int8_tiles) || long_q)));
    if (quant && (few || tiles)) {
        /* the activation scratch belongs to the calling thread; workers only read it */
        j.ldxq = (size_t)(j.cols / PR_QK) * sizeof(block_q8_0);
        void *xq = pr_scratch(PR_SCRATCH_ACT, (size_t)n * j.ldxq);
        if (xq) {
            quantize_x(&j, xq);
            j.xq = xq;
        }
    }
    if (quant && j.xq) { /* few rows or tiles: the table's int8 kernel */
        pr_pool_run(pool, tile_task, &j);
        return;
    }
    if (few) {
        pr_pool_run(pool, matvec_task, &j);
        return;
    }
    if (gemm && !pr_gemm_packed(k, pool, &W, 1, x, n, y, NULL)) return;
    if (W->type == PR_BF16 && k->gemm_bf16 && (path == PR_MM_TILES || (path == PR_MM_AUTO && !many))) {
        j.ldxq = (size_t)j.cols * 2 * sizeof(uint16_t);
        void *xs = pr_scratch(PR_SCRATCH_ACT, (size_t)n * j.ldxq);
        if (xs) {
            split_bf16_x(&j, xs);
            j.xq = xs;
            pr_pool_run(pool, tile_task, &j);
            return;
        }
    }
    pr_pool_run(pool, sgemm_task, &j);
}

void pr_matmul(pr_pool *pool, const pr_tensor *W, const float *x, int n, float *y) {
    pr_matmul_k(pr_kern(), pool, W, x, n, y, PR_MM_AUTO);
}

void pr_epilogue_tile(const pr_kernels *k, const pr_epilogue *ep, long c0, float *y, float *res, long rows, long len,
                      long ld) { /* bias, activation, residual: one pass in the table's registers */
    k->bias_act_res(y, ld, rows, len, ep->bias ? ep->bias + c0 : NULL, ep->act, res);
}

typedef struct {
    const pr_kernels *k;
    const pr_epilogue *ep;
    float *y;
    long n, cols;
} epilogue_job;

/* each thread its share of whole rows: every row sees the same calls whatever the thread count */
static void epilogue_task(void *arg, int ith, int nth) {
    const epilogue_job *e = arg;
    long i0, i1;
    pr_split_range(e->n, ith, nth, &i0, &i1);
    pr_epilogue_tile(e->k, e->ep, 0, e->y + i0 * e->cols, e->ep->res ? e->ep->res + i0 * e->cols : NULL, i1 - i0, e->cols,
                     e->cols);
}

int pr_matmul_fused(pr_pool *pool, const pr_tensor *const *W, const pr_tensor *const *bias, int n_w, const float *x,
                    int n, float *y, int act, float *res) {
    return pr_matmul_fused_k(pr_kern(), pool, W, bias, n_w, x, n, y, act, res, PR_MM_AUTO);
}

int pr_matmul_fused_k(const pr_kernels *k, pr_pool *pool, const pr_tensor *const *W, const pr_tensor *const *bias,
                      int n_w, const float *x, int n, float *y, int act, float *res, int path) {
    long R = 0, off = 0;
    int same = 1, biased = 0, rc = 0;
    for (int p = 0; p < n_w; p++) {
        R += (long)W[p]->ne[1];
        same &= W[p]->type == W[0]->type && W[p]->ne[0] == W[0]->ne[0];
        biased |= bias[p] != NULL;
    }
    float *b = biased && n_w > 1 ? malloc((size_t)R * sizeof(float)) : NULL; /* the biases end to end */
    if (biased && n_w > 1 && !b) return -1;
    for (int p = 0; b && p < n_w; off += (long)W[p]->ne[1], p++) {
        if (bias[p]) memcpy(b + off, bias[p]->data, (size_t)W[p]->ne[1] * sizeof(float));
        else memset(b + off, 0, (size_t)W[p]->ne[1] * sizeof(float));
    }
    pr_epilogue ep = {b ? b : biased ? (const float *)bias[0]->data : NULL, act, res};
    if (same && takes_gemm(k, W[0], n, path) && !pr_gemm_packed(k, pool, W, n_w, x, n, y, &ep)) goto done;
    if (n_w == 1) {
        pr_matmul_k(k, pool, W[0], x, n, y, PR_MM_AUTO);
    } else { /* each weight into its own columns of y */
        off = 0;
        for (int p = 0; p < n_w && !rc; off += (long)W[p]->ne[1], p++) {
            long rows = (long)W[p]->ne[1];
            float *t = pr_alloc((size_t)n, (size_t)rows, sizeof(float));
            if (!t) {
                rc = -1;
                break;
            }
            pr_matmul_k(k, pool, W[p], x, n, t, PR_MM_AUTO);
            for (long i = 0; i < n; i++) memcpy(y + i * R + off, t + i * rows, (size_t)rows * sizeof(float));
            pr_free(t);
        }
    }
    epilogue_job e = {k, &ep, y, n, R};
    if (!rc && (ep.bias || act != PR_ACT_NONE || res)) pr_pool_run(pool, epilogue_task, &e);
done:
    free(b);
    return rc;
}
