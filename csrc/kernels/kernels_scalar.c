/* The scalar reference kernels: plain C, one accumulator, the order a reader would write. Every SIMD table
 * is tested against these (tests/test_kernels.py). */
#include <math.h>

#include "kernels/kernels.h"

static float dot_f32(const float *w, const float *x, long n) {
    float s = 0;
    for (long i = 0; i < n; i++) s += w[i] * x[i];
    return s;
}

static float dot_f16(const uint16_t *w, const float *x, long n) {
    float s = 0;
    for (long i = 0; i < n; i++) s += pr_f16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_bf16(const uint16_t *w, const float *x, long n) {
    float s = 0;
    for (long i = 0; i < n; i++) s += pr_bf16_to_f32(w[i]) * x[i];
    return s;
}

static void axpy_f32(float a, const float *x, float *y, long n) {
    for (long i = 0; i < n; i++) y[i] += a * x[i];
}


static void attn_scores_f16(const uint16_t *k, long ld, long n, const float *q, long hd, float scale, float *s) {
    for (long t = 0; t < n; t++) s[t] = scale * dot_f16(k + t * ld, q, hd);
}

void pr_scalar_attn_values_f16(const float *p, const uint16_t *v, long ld, long n, long hd, float *o) {
    for (long i = 0; i < hd; i++) o[i] = 0;
    for (long t = 0; t < n; t++)
        for (long i = 0; i < hd; i++) o[i] += p[t] * pr_f16_to_f32(v[t * ld + i]);
}

/* Σ_blocks d_w·d_x · Σ_i q_w[i]·q_x[i], the inner sum exact in int32 */
static float dot_q8_0(const block_q8_0 *w, const block_q8_0 *x, long nb) {
    float s = 0;
    for (long b = 0; b < nb; b++) {
        int32_t acc = 0;
        for (int i = 0; i < PR_QK; i++) acc += (int32_t)w[b].qs[i] * x[b].qs[i];
        s += pr_f16_to_f32(w[b].d) * pr_f16_to_f32(x[b].d) * (float)acc;
    }
    return s;
}

/* w: a q4_0 row in memory (quant.h's groups) */
static float dot_q4_0(const block_q4_0 *w, const block_q8_0 *x, long nb) {
    float s = 0;
    uint8_t q[PR_QK];
    for (long b = 0; b < nb; b++) {
        float dw = pr_f16_to_f32(pr_q4_0_unpack(w, nb, b, q));
        int32_t acc = 0;
        for (int i = 0; i < PR_QK; i++) acc += (q[i] - 8) * x[b].qs[i];
        s += dw * pr_f16_to_f32(x[b].d) * (float)acc;
    }
    return s;
}

/* Activations: ties to even (nearbyintf in the default rounding mode), as the SIMD rounding instructions,
 * so that every table quantises an activation row to the same bytes. */
void pr_scalar_quantize_q8_0(const float *x, block_q8_0 *y, long n) {
    for (long b = 0; b < n / PR_QK; b++, x += PR_QK) {
        float amax = 0;
        for (int i = 0; i < PR_QK; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        y[b].d = pr_f32_to_f16(d);
        for (int i = 0; i < PR_QK; i++) y[b].qs[i] = (int8_t)fmaxf(-127.0f, fminf(127.0f, nearbyintf(x[i] * id)));
    }
}

static void f16_to_f32(const uint16_t *x, float *y, long n) {
    for (long i = 0; i < n; i++) y[i] = pr_f16_to_f32(x[i]);
}

static void bf16_to_f32(const uint16_t *x, float *y, long n) {
    for (long i = 0; i < n; i++) y[i] = pr_bf16_to_f32(x[i]);
}

static void f32_to_f16(const float *x, uint16_t *y, long n) {
    for (long i = 0; i < n; i++) y[i] = pr_f32_to_f16(x[i]);
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

/* the reference micro-kernel of the packed GEMM (gemm.c): a 4 × 8 tile */
static void gemm_ukernel_rows(long kc, const float *A, const float *B, float *C, long ldc, int accumulate, int mr) {
    float c[4][8] = {{0}};
    for (long k = 0; k < kc; k++)
        for (int i = 0; i < mr; i++)
            for (int j = 0; j < 8; j++) c[i][j] += A[k * 4 + i] * B[k * 8 + j];
    for (int i = 0; i < mr; i++)
        for (int j = 0; j < 8; j++) C[i * ldc + j] = (accumulate ? C[i * ldc + j] : 0.0f) + c[i][j];
}

static void gemm_ukernel(long kc, const float *A, const float *B, float *C, long ldc, int accumulate) {
    gemm_ukernel_rows(kc, A, B, C, ldc, accumulate, 4);
}

static void gemm_pack8(const float *src, long ld, long kc, float *dst, long ldd) {
    for (long k = 0; k < kc; k++)
        for (int i = 0; i < 8; i++) dst[k * ldd + i] = src[i * ld + k];
}

void pr_scalar_silu_mul(float *x, const float *u, long n) {
    for (long i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i])) * u[i];
}

void pr_scalar_bias_act_res(float *y, long ld, long rows, long n, const float *bias, int act, float *res) {
    for (long r = 0; r < rows; r++, y += ld, res = res ? res + ld : NULL)
        for (long i = 0; i < n; i++) {
            float v = bias ? y[i] + bias[i] : y[i];
            if (act == PR_ACT_QUICK_GELU) v = v / (1.0f + expf(-1.702f * v));
            else if (act == PR_ACT_GELU) v = 0.5f * v * (1.0f + erff(v * PR_SQRT1_2)); /* the definition */
            y[i] = v;
            if (res) res[i] += v;
        }
}

float pr_scalar_exp_sum(float *x, long n, float m) {
    float s = 0;
    for (long i = 0; i < n; i++) s += (x[i] = expf(x[i] - m));
    return s;
}

const pr_kernels pr_kernels_scalar = {
    .isa = "scalar",
    .dot_f32 = dot_f32, .dot_f16 = dot_f16, .dot_bf16 = dot_bf16,
    .axpy_f32 = axpy_f32, .attn_scores_f16 = attn_scores_f16, .attn_values_f16 = pr_scalar_attn_values_f16,
    .quantize_q8_0 = pr_scalar_quantize_q8_0,
    .f16_to_f32 = f16_to_f32, .bf16_to_f32 = bf16_to_f32, .f32_to_f16 = f32_to_f16,
    .dequantize_q8_0 = pr_dequantize_row_q8_0, .dequantize_q4_0 = pr_dequantize_row_q4_0,
    .gemm_q8_0 = gemm_q8_0, .gemm_q4_0 = gemm_q4_0, .gemm_bf16 = NULL,
    .gemm_ukernel = gemm_ukernel, .gemm_ukernel_rows = gemm_ukernel_rows, .gemm_mr = 4, .gemm_nr = 8, .gemm_pack8 = gemm_pack8,
    .silu_mul = pr_scalar_silu_mul, .bias_act_res = pr_scalar_bias_act_res, .exp_sum = pr_scalar_exp_sum,
};
