/* Fused attention (see attention.h), flash-attention style:
 *
 *   for each head h and block Q of up to BQ queries:
 *     m = −∞, l = 0, O = 0
 *     for each tile K, V of up to BK keys (only those a causal query block can see):
 *       S = Q·Kᵀ/√d                                    (sgemm, BQ × BK)
 *       m' = max(m, rowmax S);  P = exp(S − m');  l = l·e^(m−m') + rowsum P;  O = O·e^(m−m') + P·V
 *     out = O / l
 *
 * Scores live only in a BQ × BK tile per thread. An f16 KV cache is widened tile by tile.
 *
 * A few queries (decoding) take a direct path instead: one row of scores per (query, head) from dot products
 * against the cached keys as stored (f32 or f16), softmax, then o = Σ p_t·v_t — no copies of the cache. */
#include "kernels/attention.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#define BQ 128      /* queries per block: makes the two sgemm calls per tile large enough for OpenBLAS (CLIP-L's
                     * attention, 577 × 16 heads × 64, 2 threads: 157 GFLOP/s with 32 queries, 217 with 128) */
#define BK_MAX 1024 /* keys per tile: up to this many keys (a ViT's 577, a chat's context) take one tile, so the
                     * sgemm calls are few and large; longer contexts stream through tiles of this size */

typedef struct {
    const pr_kernels *k;
    const pr_attn *a;
    int n_qb;   /* query blocks */
    int bk;     /* keys per tile */
    int failed; /* set (atomically) by a thread that could not get scratch memory */
} attn_job;

/* rows [r0, r0+n) of K or V for kv head g as f32: in place for an f32 cache, widened into buf for f16 */
static const float *kv_tile(const attn_job *j, const void *base, int g, int r0, int n, float *buf, long *ld) {
    const pr_attn *a = j->a;
    if (a->kv_type == PR_F32) {
        *ld = a->ldkv;
        return (const float *)base + (long)r0 * a->ldkv + (long)g * a->hd;
    }
    const uint16_t *src = (const uint16_t *)base + (long)r0 * a->ldkv + (long)g * a->hd;
    for (int r = 0; r < n; r++) j->k->f16_to_f32(src + (long)r * a->ldkv, buf + (long)r * a->hd, a->hd);
    *ld = a->hd;
    return buf;
}

static void attn_task(void *arg, int ith, int nth) {
    attn_job *j = arg;
    const pr_attn *a = j->a;
    int hd = a->hd, group = a->n_head / a->n_head_kv, BK = j->bk;
    size_t need = ((size_t)BQ * BK + (size_t)BQ * hd + 2 * (size_t)BQ + 2 * (size_t)BK * hd) * sizeof(float);
    float *S = pr_scratch(PR_SCRATCH_ATTN, need);
    if (!S) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        return;
    }
    float *O = S + (long)BQ * BK, *m = O + (long)BQ * hd, *l = m + BQ, *Kb = l + BQ, *Vb = Kb + (long)BK * hd;
    float scale = 1.0f / sqrtf((float)hd);
    int past = a->n_kv - a->n_q; /* causal: query i is position past + i */
    long t0, t1;
    pr_split_range((long)a->n_head * j->n_qb, ith, nth, &t0, &t1);
    for (long t = t0; t < t1; t++) {
        int h = (int)(t / j->n_qb), q0 = (int)(t % j->n_qb) * BQ, g = h / group;
        int nq = a->n_q - q0 < BQ ? a->n_q - q0 : BQ;
        int kv_end = a->causal ? past + q0 + nq : a->n_kv; /* keys the last query of the block sees */
        const float *Q = a->q + (long)q0 * a->ldq + (long)h * hd;
        memset(O, 0, (size_t)nq * hd * sizeof(float));
        for (int i = 0; i < nq; i++) m[i] = -INFINITY, l[i] = 0;
        for (int k0 = 0; k0 < kv_end; k0 += BK) {
            int nk = kv_end - k0 < BK ? kv_end - k0 : BK;
            long ldk, ldv;
            const float *K = kv_tile(j, a->k, g, k0, nk, Kb, &ldk), *V = kv_tile(j, a->v, g, k0, nk, Vb, &ldv);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nq, nk, hd, scale, Q, (int)a->ldq, K, (int)ldk,
                        0.0f, S, BK);
            for (int i = 0; i < nq; i++) {
                float *s = S + (long)i * BK;
                int lim = a->causal ? past + q0 + i + 1 - k0 : nk; /* keys [0, lim) of this tile are visible */
                if (lim > nk) lim = nk;
                if (lim <= 0) {
                    memset(s, 0, (size_t)nk * sizeof(float));
                    continue;
                }
                float mx = m[i];
                for (int p = 0; p < lim; p++) mx = s[p] > mx ? s[p] : mx;
                float corr = expf(m[i] - mx); /* 0 on the first tile (m = −∞) */
                l[i] = l[i] * corr + j->k->exp_sum(s, lim, mx);
                m[i] = mx;
                if (lim < nk) memset(s + lim, 0, (size_t)(nk - lim) * sizeof(float));
                if (corr != 1.0f)
                    for (int e = 0; e < hd; e++) O[(long)i * hd + e] *= corr;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nq, hd, nk, 1.0f, S, BK, V, (int)ldv, 1.0f, O, hd);
        }
        for (int i = 0; i < nq; i++) {
            float *o = a->out + (long)(q0 + i) * a->ldo + (long)h * hd, inv = 1.0f / l[i];
            for (int e = 0; e < hd; e++) o[e] = O[(long)i * hd + e] * inv;
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
    for (int p = 0; p < T; p++) {
        long off = (long)p * a->ldkv + (long)g * hd;
        s[p] = scale * (a->kv_type == PR_F16 ? K->dot_f16((const uint16_t *)a->k + off, q, hd)
                                             : K->dot_f32((const float *)a->k + off, q, hd));
        mx = s[p] > mx ? s[p] : mx;
    }
    float inv = 1.0f / K->exp_sum(s, T, mx);
    memset(o, 0, (size_t)hd * sizeof(float));
    for (int p = 0; p < T; p++) {
        long off = (long)p * a->ldkv + (long)g * hd;
        if (a->kv_type == PR_F16) K->axpy_f16(s[p] * inv, (const uint16_t *)a->v + off, o, hd);
        else K->axpy_f32(s[p] * inv, (const float *)a->v + off, o, hd);
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
    attn_job j = {k, a, (a->n_q + BQ - 1) / BQ, a->n_kv < BK_MAX ? a->n_kv : BK_MAX, 0};
    pr_pool_run(pool, a->n_q <= PR_ATTN_FEW_QUERIES ? attn_rows_task : attn_task, &j);
    if (j.failed) return pr_set_error(err, PR_ERR_NOMEM, "out of memory for attention scratch");
    return 0;
}
