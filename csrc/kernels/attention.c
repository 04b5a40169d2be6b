/* Fused attention (see attention.h), flash-attention style on the packed GEMM's micro-kernel (gemm.c):
 *
 *   for each head h and block of up to QB queries (QB a multiple of the micro-kernel's MR rows):
 *     m = −∞, l = 0, O = 0
 *     for each tile of up to BK keys (only those a causal query block can see):
 *       pack the tile's keys transposed (Kᵀ, NR keys interleaved per step) and its values (NR head
 *       dimensions interleaved per step), widening an f16 cache here
 *       for each strip of MR queries (packed once per block, pre-scaled by 1/√d), over the keys its last
 *       query sees (causal: a prefix of the tile):
 *         S = Q·Kᵀ                                      (micro-kernel, MR × tile)
 *         m' = max(m, rowmax S);  P = exp(S − m');  l = l·e^(m−m') + rowsum P;  O = O·e^(m−m')
 *         O += P·V                                      (P transposed to k-major, micro-kernel)
 *     out = O / l
 *
 * Scores live only in an MR × BK strip per thread and every product runs in the micro-kernel's registers:
 * the per-head sgemm calls this replaces ran at about half its rate on CLIP-L's 577 × 577 × 64 heads.
 * Each output is computed by one thread in a fixed order, whatever the thread count.
 *
 * A few queries (decoding) take a direct path instead: one row of scores per (query, head) from dot products
 * against the cached keys as stored (f32 or f16), softmax, then o = Σ p_t·v_t — no copies of the cache. An f16
 * cache (the default for decoding) takes two kernel calls per (query, head), each over all cached positions
 * with several rows in flight (kernels.h: attn_scores_f16, attn_values_f16); an f32 cache one call per
 * position. */
#include "kernels/attention.h"

#include <math.h>
#include <string.h>

#define QB_STRIPS 48 /* query strips of MR rows per block (672 queries at MR = 14: a ViT's 577 take one block per
                      * head): the packed keys and values of a tile serve them all. CLIP-L's attention on 2
                      * threads, CPU time: 8 strips 300 GFLOP/s, 16 316, 48 331 */
#define BK_MAX 1024 /* keys per tile: up to this many keys (a ViT's 577, a chat's context) take one tile; longer
                     * contexts stream through tiles of this size */

typedef struct {
    const pr_kernels *k;  /* element-wise kernels and f16 widening */
    const pr_kernels *u;  /* the micro-kernel: k's, or the scalar reference where k has none */
    const pr_attn *a;
    int qb, n_qb; /* queries per block, blocks */
    int bk;       /* keys per tile */
    int failed;   /* set (atomically) by a thread that could not get scratch memory */
} attn_job;

static long round_up(long x, long m) { return (x + m - 1) / m * m; }
static long kv_head(const pr_attn *a, int g) { return (long)g * (a->ldh ? a->ldh : a->hd); }

/* rows [r0, r0+n) of K or V for kv head g as f32: in place for an f32 cache, widened into buf for f16 */
static const float *kv_rows(const attn_job *j, const void *base, int g, int r0, int n, float *buf, long *ld) {
    const pr_attn *a = j->a;
    if (a->kv_type == PR_F32) {
        *ld = a->ldkv;
        return (const float *)base + (long)r0 * a->ldkv + kv_head(a, g);
    }
    const uint16_t *src = (const uint16_t *)base + (long)r0 * a->ldkv + kv_head(a, g);
    for (int r = 0; r < n; r++) j->k->f16_to_f32(src + (long)r * a->ldkv, buf + (long)r * a->hd, a->hd);
    *ld = a->hd;
    return buf;
}

/* dst[k·ldd + i] = src[i·ld + k] for rows i < n (zeros for n ≤ i < m) and k < kc: 8 rows at a time through
 * the table's register transposes, the rest one by one */
static void pack_rows(const pr_kernels *u, const float *src, long ld, int n, int m, long kc, float *dst, long ldd) {
    int i = 0;
    for (; i + 8 <= n; i += 8) u->gemm_pack8(src + (long)i * ld, ld, kc, dst + i, ldd);
    if (i < n && n >= 8 && m == n) { /* an overlapping transpose covers the last rows (MR = 14: rows 6..13) */
        u->gemm_pack8(src + (long)(n - 8) * ld, ld, kc, dst + n - 8, ldd);
        return;
    }
    for (; i < m; i++)
        for (long k = 0; k < kc; k++) dst[k * ldd + i] = i < n ? src[(long)i * ld + k] : 0.0f;
}

/* max(m, x[0..n)), 4 × 4 lanes at a time (GCC/Clang vector extension: SSE, NEON or plain code, whatever the
 * target; the plain loop is not vectorised, a float max reduction being order-sensitive for NaN) */
typedef float f32x4 __attribute__((vector_size(16)));
typedef int i32x4 __attribute__((vector_size(16)));
static inline f32x4 max4(f32x4 a, f32x4 b) {
    i32x4 gt = a > b;
    return (f32x4)(((i32x4)a & gt) | ((i32x4)b & ~gt));
}
static float row_max(const float *x, long n, float m) {
    f32x4 mv[4] = {{m, m, m, m}, {m, m, m, m}, {m, m, m, m}, {m, m, m, m}}, v;
    long p = 0;
    for (; p + 16 <= n; p += 16) /* four independent chains */
        for (int c = 0; c < 4; c++) {
            memcpy(&v, x + p + 4 * c, sizeof v);
            mv[c] = max4(v, mv[c]);
        }
    mv[0] = max4(max4(mv[0], mv[1]), max4(mv[2], mv[3]));
    for (int e = 0; e < 4; e++) m = mv[0][e] > m ? mv[0][e] : m;
    for (; p < n; p++) m = x[p] > m ? x[p] : m;
    return m;
}

/* the micro-kernel on a strip of `rows` queries: the table's kernel for fewer rows on the last strip (rows of C
 * past them are left as they are) */
static void ukernel(const pr_kernels *u, int rows, long kc, const float *A, const float *B, float *C, long ldc,
                    int accumulate) {
    if (rows < u->gemm_mr) u->gemm_ukernel_rows(kc, A, B, C, ldc, accumulate, rows);
    else u->gemm_ukernel(kc, A, B, C, ldc, accumulate);
}

static void attn_task(void *arg, int ith, int nth) {
    attn_job *j = arg;
    const pr_attn *a = j->a;
    const pr_kernels *u = j->u;
    int hd = a->hd, group = a->n_head / a->n_head_kv, BK = j->bk, QB = j->qb, MR = u->gemm_mr, NR = u->gemm_nr;
    long bkp = round_up(BK, NR), hdp = round_up(hd, NR);
    size_t need = (size_t)hd * bkp + (size_t)BK * hdp   /* Kp, Vp */
                + (size_t)QB * hd + (size_t)MR * bkp     /* Qp, S */
                + (size_t)BK * MR + (size_t)QB * hdp     /* Pp, O */
                + 2 * (size_t)QB                          /* m, l */
                + (a->kv_type == PR_F32 ? 0 : (size_t)BK * hd); /* f16 rows widened */
    float *Kp = pr_scratch(PR_SCRATCH_ATTN, need * sizeof(float));
    if (!Kp) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    float *Vp = Kp + (long)hd * bkp, *Qp = Vp + (long)BK * hdp, *S = Qp + (long)QB * hd, *Pp = S + (long)MR * bkp;
    float *O = Pp + (long)BK * MR, *m = O + (long)QB * hdp, *l = m + QB, *wide = l + QB;
    float scale = 1.0f / sqrtf((float)hd);
    int past = a->n_kv - a->n_q; /* causal: query i is position past + i */
    long t0, t1;
    pr_split_range((long)a->n_head * j->n_qb, ith, nth, &t0, &t1);
    for (long t = t0; t < t1; t++) {
        int h = (int)(t / j->n_qb), q0 = (int)(t % j->n_qb) * QB, g = h / group;
        int nq = a->n_q - q0 < QB ? a->n_q - q0 : QB, strips = (nq + MR - 1) / MR;
        int kv_end = a->causal ? past + q0 + nq : a->n_kv; /* keys the last query of the block sees */
        for (int s = 0; s < strips; s++) { /* Q strips k-major, scaled: S comes out as q·k/√d */
            int rows = nq - s * MR < MR ? nq - s * MR : MR;
            float *dst = Qp + (long)s * MR * hd;
            pack_rows(u, a->q + (long)(q0 + s * MR) * a->ldq + (long)h * hd, a->ldq, rows, MR, hd, dst, MR);
            for (long e = 0; e < (long)MR * hd; e++) dst[e] *= scale;
        }
        memset(O, 0, (size_t)strips * MR * hdp * sizeof(float));
        for (int i = 0; i < nq; i++) m[i] = -INFINITY, l[i] = 0;
        for (int k0 = 0; k0 < kv_end; k0 += BK) {
            int nk = kv_end - k0 < BK ? kv_end - k0 : BK;
            long ldk, ldv;
            const float *K = kv_rows(j, a->k, g, k0, nk, wide, &ldk);
            for (int c = 0; c < nk; c += NR) /* Kᵀ: chunk c holds hd steps of NR keys */
                pack_rows(u, K + (long)c * ldk, ldk, nk - c < NR ? nk - c : NR, NR, hd, Kp + (long)c * hd, NR);
            const float *V = kv_rows(j, a->v, g, k0, nk, wide, &ldv);
            for (long e0 = 0; e0 < hdp; e0 += NR) { /* V: chunk e0 holds nk steps of NR head dimensions */
                float *dst = Vp + e0 * BK;
                long w = hd - e0 < NR ? hd - e0 : NR;
                for (int r = 0; r < nk; r++) {
                    memcpy(dst + (long)r * NR, V + (long)r * ldv + e0, (size_t)w * sizeof(float));
                    if (w < NR) memset(dst + (long)r * NR + w, 0, (size_t)(NR - w) * sizeof(float));
                }
            }
            for (int s = 0; s < strips; s++) {
                int i0 = s * MR, rows = nq - i0 < MR ? nq - i0 : MR;
                int ns = a->causal ? past + q0 + i0 + rows - k0 : nk; /* keys the strip's last query sees */
                if (ns > nk) ns = nk;
                if (ns <= 0) continue; /* none in this tile: the strip's m, l and O stay as they are */
                for (long c = 0; c < ns; c += NR) ukernel(u, rows, hd, Qp + (long)i0 * hd, Kp + c * hd, S + c, bkp, 0);
                for (int i = 0; i < MR; i++) {
                    float *sr = S + (long)i * bkp;
                    int qi = i0 + i;
                    int lim = i >= rows ? 0 : a->causal ? past + q0 + qi + 1 - k0 : ns; /* keys [0, lim) visible */
                    if (lim > ns) lim = ns;
                    if (lim <= 0) { /* a padding row, or no visible key in this tile */
                        memset(sr, 0, (size_t)ns * sizeof(float));
                        continue;
                    }
                    float mx = row_max(sr, lim, m[qi]);
                    float corr = expf(m[qi] - mx); /* 0 on the first tile (m = −∞) */
                    l[qi] = l[qi] * corr + j->k->exp_sum(sr, lim, mx);
                    m[qi] = mx;
                    if (lim < ns) memset(sr + lim, 0, (size_t)(ns - lim) * sizeof(float));
                    if (corr != 1.0f && k0 > 0) /* (O is still 0 on the first tile) */
                        for (long e = 0; e < hd; e++) O[(long)qi * hdp + e] *= corr;
                }
                pack_rows(u, S, bkp, MR, MR, ns, Pp, MR); /* P k-major: ns steps of MR queries */
                for (long e0 = 0; e0 < hdp; e0 += NR)
                    ukernel(u, rows, ns, Pp, Vp + e0 * BK, O + (long)i0 * hdp + e0, hdp, 1);
            }
        }
        for (int i = 0; i < nq; i++) {
            float *o = a->out + (long)(q0 + i) * a->ldo + (long)h * hd, inv = 1.0f / l[i];
            for (int e = 0; e < hd; e++) o[e] = O[(long)i * hdp + e] * inv;
        }
    }
}

/* One (head h, query i) pair of the direct path; s has room for n_kv scores. */
static void attn_row(const pr_kernels *K, const pr_attn *a, float *s, int h, int i) {
    int hd = a->hd, g = h / (a->n_head / a->n_head_kv), past = a->n_kv - a->n_q;
    int T = a->causal ? past + i + 1 : a->n_kv;
    float scale = 1.0f / sqrtf((float)hd);
    const float *q = a->q + (long)i * a->ldq + (long)h * hd;
    float *o = a->out + (long)i * a->ldo + (long)h * hd, mx = -INFINITY;
    if (a->kv_type == PR_F16) { /* one call for all T scores, one for the weighted sum, then 1/Σ once */
        long off = kv_head(a, g);
        for (int p = 0; p < T && p < PR_ATTN_PREFETCH; p++) { /* the kernels ask for the rows after these */
            pr_prefetch_row((const uint16_t *)a->k + off + (long)p * a->ldkv, hd);
            pr_prefetch_row((const uint16_t *)a->v + off + (long)p * a->ldkv, hd);
        }
        K->attn_scores_f16((const uint16_t *)a->k + off, a->ldkv, T, q, hd, scale, s);
        float inv = 1.0f / K->exp_sum(s, T, row_max(s, T, -INFINITY));
        K->attn_values_f16(s, (const uint16_t *)a->v + off, a->ldkv, T, hd, o);
        for (int e = 0; e < hd; e++) o[e] *= inv;
        return;
    }
    for (int p = 0; p < T; p++) {
        long off = (long)p * a->ldkv + kv_head(a, g);
        s[p] = scale * K->dot_f32((const float *)a->k + off, q, hd);
        mx = s[p] > mx ? s[p] : mx;
    }
    float inv = 1.0f / K->exp_sum(s, T, mx);
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int p = 0; p < T; p++) {
        long off = (long)p * a->ldkv + kv_head(a, g);
        K->axpy_f32(s[p] * inv, (const float *)a->v + off, o, hd);
    }
}

static void attn_rows_task(void *arg, int ith, int nth) {
    attn_job *j = arg;
    const pr_attn *a = j->a;
    float *s = pr_scratch(PR_SCRATCH_ATTN, (size_t)a->n_kv * sizeof(float));
    if (!s) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    long t0, t1;
    pr_split_range((long)a->n_head * a->n_q, ith, nth, &t0, &t1);
    for (long t = t0; t < t1; t++) attn_row(j->k, a, s, (int)(t / a->n_q), (int)(t % a->n_q));
}

int pr_attention_heads(const pr_kernels *k, const pr_attn *a, int h0, int h1) {
    float *s = pr_scratch(PR_SCRATCH_ATTN, (size_t)a->n_kv * sizeof(float));
    if (!s) return -1;
    for (int h = h0; h < h1; h++)
        for (int i = 0; i < a->n_q; i++) attn_row(k, a, s, h, i);
    return 0;
}

int pr_attention(const pr_kernels *k, pr_pool *pool, const pr_attn *a, pr_error *err) {
    const pr_kernels *u = k->gemm_ukernel ? k : &pr_kernels_scalar;
    int qb = QB_STRIPS * u->gemm_mr;
    attn_job j = {k, u, a, qb, (a->n_q + qb - 1) / qb, a->n_kv < BK_MAX ? a->n_kv : BK_MAX, 0};
    pr_pool_run(pool, a->n_q <= PR_ATTN_FEW_QUERIES ? attn_rows_task : attn_task, &j);
    if (j.failed) return pr_set_error(err, PR_ERR_NOMEM, "out of memory for attention scratch");
    return 0;
}
