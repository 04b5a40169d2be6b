/* NEON (Advanced SIMD) kernels for AArch64: baseline ARMv8.0, so no dot-product extension is assumed; int8
 * blocks use widening multiplies (vmull_s8) and pairwise accumulation into int32. Tiled products run the dot
 * kernels per element; element-wise functions use the scalar reference. */
#include <arm_neon.h>
#include <math.h>

#include "kernels/kernels.h"

static float dot_f32(const float *w, const float *x, long n) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0, a2 = a0, a3 = a0;
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = vfmaq_f32(a0, vld1q_f32(w + i), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, vld1q_f32(w + i + 4), vld1q_f32(x + i + 4));
        a2 = vfmaq_f32(a2, vld1q_f32(w + i + 8), vld1q_f32(x + i + 8));
        a3 = vfmaq_f32(a3, vld1q_f32(w + i + 12), vld1q_f32(x + i + 12));
    }
    for (; i + 4 <= n; i += 4) a0 = vfmaq_f32(a0, vld1q_f32(w + i), vld1q_f32(x + i));
    float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

static inline float32x4_t load_f16(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
static inline float32x4_t load_bf16(const uint16_t *p) { return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16)); }

static float dot_f16(const uint16_t *w, const float *x, long n) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0;
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 = vfmaq_f32(a0, load_f16(w + i), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, load_f16(w + i + 4), vld1q_f32(x + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; i++) s += pr_f16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_bf16(const uint16_t *w, const float *x, long n) {
    float32x4_t a0 = vdupq_n_f32(0), a1 = a0;
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        a0 = vfmaq_f32(a0, load_bf16(w + i), vld1q_f32(x + i));
        a1 = vfmaq_f32(a1, load_bf16(w + i + 4), vld1q_f32(x + i + 4));
    }
    float s = vaddvq_f32(vaddq_f32(a0, a1));
    for (; i < n; i++) s += pr_bf16_to_f32(w[i]) * x[i];
    return s;
}

static void axpy_f32(float a, const float *x, float *y, long n) {
    long i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
    for (; i < n; i++) y[i] += a * x[i];
}

/* decode attention over an f16 cache (kernels.h), as kernels_avx2.c's with 4 lanes: scores 4 keys at a time
 * (pairwise adds give [Σa, Σb, Σc, Σd] in one tree per key), values in stripes of up to 4 vectors of output
 * columns with even and odd rows in separate accumulators */
static void attn_scores_f16(const uint16_t *k, long ld, long n, const float *q, long hd, float scale, float *s) {
    for (long t = 0; t < n; t += 4) {
        const uint16_t *r[4];
        float32x4_t a[4];
        for (int j = 0; j < 4; j++) r[j] = k + (t + j < n ? t + j : n - 1) * ld, a[j] = vdupq_n_f32(0);
        for (long j = t + PR_ATTN_PREFETCH; j < t + PR_ATTN_PREFETCH + 4 && j < n; j++) pr_prefetch_row(k + j * ld, hd);
        long i = 0;
        for (; i + 4 <= hd; i += 4) {
            float32x4_t x = vld1q_f32(q + i);
            for (int j = 0; j < 4; j++) a[j] = vfmaq_f32(a[j], load_f16(r[j] + i), x);
        }
        float tail[4] = {0}, out[4];
        for (; i < hd; i++)
            for (int j = 0; j < 4; j++) tail[j] += pr_f16_to_f32(r[j][i]) * q[i];
        float32x4_t sum = vpaddq_f32(vpaddq_f32(a[0], a[1]), vpaddq_f32(a[2], a[3]));
        vst1q_f32(out, vmulq_n_f32(vaddq_f32(sum, vld1q_f32(tail)), scale));
        for (int j = 0; j < 4 && t + j < n; j++) s[t + j] = out[j];
    }
}

static inline __attribute__((always_inline)) void values_stripe(int W, const float *p, const uint16_t *v, long ld,
                                                                long n, float *o) {
    float32x4_t e[4], d[4];
    for (int w = 0; w < W; w++) e[w] = d[w] = vdupq_n_f32(0);
    for (long t = 0; t < n; t += 2) { /* an odd last row pairs with itself at weight 0 */
        long u = t + 1 < n ? t + 1 : t;
        float pu = u > t ? p[u] : 0.0f;
        for (long j = t + PR_ATTN_PREFETCH; j < t + PR_ATTN_PREFETCH + 2 && j < n; j++) pr_prefetch_row(v + j * ld, 4 * W);
        for (int w = 0; w < W; w++) {
            e[w] = vfmaq_n_f32(e[w], load_f16(v + t * ld + 4 * w), p[t]);
            d[w] = vfmaq_n_f32(d[w], load_f16(v + u * ld + 4 * w), pu);
        }
    }
    for (int w = 0; w < W; w++) vst1q_f32(o + 4 * w, vaddq_f32(e[w], d[w]));
}

static void attn_values_f16(const float *p, const uint16_t *v, long ld, long n, long hd, float *o) {
    long i = 0;
    for (; i + 16 <= hd; i += 16) values_stripe(4, p, v + i, ld, n, o + i);
    for (; i + 4 <= hd; i += 4) values_stripe(1, p, v + i, ld, n, o + i);
    pr_scalar_attn_values_f16(p, v + i, ld, n, hd - i, o + i); /* the last columns */
}

/* exact int32 sum of 32 int8 products */
static inline int32_t block_dot(int8x16_t w0, int8x16_t w1, const int8_t *x) {
    int8x16_t x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
    int32x4_t acc = vdupq_n_s32(0);
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w0), vget_low_s8(x0)));
    acc = vpadalq_s16(acc, vmull_s8(vget_high_s8(w0), vget_high_s8(x0)));
    acc = vpadalq_s16(acc, vmull_s8(vget_low_s8(w1), vget_low_s8(x1)));
    acc = vpadalq_s16(acc, vmull_s8(vget_high_s8(w1), vget_high_s8(x1)));
    return vaddvq_s32(acc);
}

static float dot_q8_0(const block_q8_0 *w, const block_q8_0 *x, long nb) {
    float s = 0;
    for (long b = 0; b < nb; b++)
        s += pr_f16_to_f32(w[b].d) * pr_f16_to_f32(x[b].d) *
             (float)block_dot(vld1q_s8(w[b].qs), vld1q_s8(w[b].qs + 16), x[b].qs);
    return s;
}

/* w: a q4_0 row in memory (quant.h's superblocks) */
static float dot_q4_0(const block_q4_0 *w, const block_q8_0 *x, long nb) {
    float s = 0;
    const uint8x16_t mask = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    for (long b = 0; b < nb; b++) {
        block_q4_0 t = pr_q4_0_block(w, nb, b);
        uint8x16_t q = vld1q_u8(t.qs);
        int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, mask)), eight); /* values 0..15 */
        int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), eight);  /* values 16..31 */
        s += pr_f16_to_f32(t.d) * pr_f16_to_f32(x[b].d) * (float)block_dot(lo, hi, x[b].qs);
    }
    return s;
}

static void quantize_q8_0(const float *x, block_q8_0 *y, long n) {
    for (long b = 0; b < n / PR_QK; b++, x += PR_QK) {
        float32x4_t v[8], m = vdupq_n_f32(0);
        for (int i = 0; i < 8; i++) {
            v[i] = vld1q_f32(x + 4 * i);
            m = vmaxq_f32(m, vabsq_f32(v[i]));
        }
        float amax = vmaxvq_f32(m), d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        y[b].d = pr_f32_to_f16(d);
        for (int i = 0; i < 8; i++) {
            int32x4_t q = vcvtnq_s32_f32(vmulq_n_f32(v[i], id)); /* round to nearest, ties to even */
            q = vmaxq_s32(vminq_s32(q, vdupq_n_s32(127)), vdupq_n_s32(-127));
            int32_t t[4];
            vst1q_s32(t, q);
            for (int e = 0; e < 4; e++) y[b].qs[4 * i + e] = (int8_t)t[e];
        }
    }
}

static void f16_to_f32(const uint16_t *x, float *y, long n) {
    long i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, load_f16(x + i));
    for (; i < n; i++) y[i] = pr_f16_to_f32(x[i]);
}

static void bf16_to_f32(const uint16_t *x, float *y, long n) {
    long i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, load_bf16(x + i));
    for (; i < n; i++) y[i] = pr_bf16_to_f32(x[i]);
}

static void f32_to_f16(const float *x, uint16_t *y, long n) {
    long i = 0;
    for (; i + 4 <= n; i += 4) vst1_u16(y + i, vreinterpret_u16_f16(vcvt_f16_f32(vld1q_f32(x + i))));
    for (; i < n; i++) y[i] = pr_f32_to_f16(x[i]);
}

static void gemm_q8_0(const void *W, long ldw, long nw, const void *X, long ldx, long nx, long nb, float *Y,
                      long ldy) {
    for (long j = 0; j < nx; j++)
        for (long i = 0; i < nw; i++)
            Y[j * ldy + i] = dot_q8_0((const block_q8_0 *)((const char *)W + i * ldw),
                                      (const block_q8_0 *)((const char *)X + j * ldx), nb);
}

static void gemm_q4_0(const void *W, long ldw, long nw, const void *X, long ldx, long nx, long nb, float *Y,
                      long ldy) {
    for (long j = 0; j < nx; j++)
        for (long i = 0; i < nw; i++)
            Y[j * ldy + i] = dot_q4_0((const block_q4_0 *)((const char *)W + i * ldw),
                                      (const block_q8_0 *)((const char *)X + j * ldx), nb);
}

/* element-wise functions: the scalar ones (expf per element; not on any hot path measured here) */
const pr_kernels pr_kernels_neon = {
    .isa = "neon",
    .dot_f32 = dot_f32, .dot_f16 = dot_f16, .dot_bf16 = dot_bf16,
    .axpy_f32 = axpy_f32, .attn_scores_f16 = attn_scores_f16, .attn_values_f16 = attn_values_f16,
    .quantize_q8_0 = quantize_q8_0,
    .f16_to_f32 = f16_to_f32, .bf16_to_f32 = bf16_to_f32, .f32_to_f16 = f32_to_f16,
    .dequantize_q8_0 = pr_dequantize_row_q8_0, .dequantize_q4_0 = pr_dequantize_row_q4_0,
    .gemm_q8_0 = gemm_q8_0, .gemm_q4_0 = gemm_q4_0, .gemm_bf16 = NULL,
    .silu_mul = pr_scalar_silu_mul, .bias_act_res = pr_scalar_bias_act_res, .exp_sum = pr_scalar_exp_sum,
};
