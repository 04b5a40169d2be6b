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

static void axpy_f16(float a, const uint16_t *x, float *y, long n) {
    long i = 0;
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), load_f16(x + i), a));
    for (; i < n; i++) y[i] += a * pr_f16_to_f32(x[i]);
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

static float dot_q4_0(const block_q4_0 *w, const block_q8_0 *x, long nb) {
    float s = 0;
    const uint8x16_t mask = vdupq_n_u8(0x0f);
    const int8x16_t eight = vdupq_n_s8(8);
    for (long b = 0; b < nb; b++) {
        uint8x16_t q = vld1q_u8(w[b].qs);
        int8x16_t lo = vsubq_s8(vreinterpretq_s8_u8(vandq_u8(q, mask)), eight); /* values 0..15 */
        int8x16_t hi = vsubq_s8(vreinterpretq_s8_u8(vshrq_n_u8(q, 4)), eight);  /* values 16..31 */
        s += pr_f16_to_f32(w[b].d) * pr_f16_to_f32(x[b].d) * (float)block_dot(lo, hi, x[b].qs);
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
    .axpy_f32 = axpy_f32, .axpy_f16 = axpy_f16,
    .quantize_q8_0 = quantize_q8_0,
    .f16_to_f32 = f16_to_f32, .bf16_to_f32 = bf16_to_f32, .f32_to_f16 = f32_to_f16,
    .dequantize_q8_0 = pr_dequantize_row_q8_0, .dequantize_q4_0 = pr_dequantize_row_q4_0,
    .gemm_q8_0 = gemm_q8_0, .gemm_q4_0 = gemm_q4_0, .gemm_bf16 = NULL,
    .silu_mul = pr_scalar_silu_mul, .bias_act_res = pr_scalar_bias_act_res, .exp_sum = pr_scalar_exp_sum,
};
