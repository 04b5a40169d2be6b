/* Matrix products against weights stored in any supported dtype, computed in f32.
 *
 * A weight W has rows = W->ne[1] rows of cols = W->ne[0] elements (an HF [out, in] matrix). */
#ifndef PR_KERNELS_MATMUL_H
#define PR_KERNELS_MATMUL_H
#include <stdint.h>

#include "kernels/pool.h"
#include "parrot.h"

/* y[n × rows] = x[n × cols] · Wᵀ (row-major, dense). */
void pr_matmul(pr_pool *pool, const pr_tensor *W, const float *x, int n, float *y);
/* y[n × rows] += bias[rows] (bias f32 or any float dtype; NULL does nothing) */
void pr_add_bias(const pr_tensor *bias, float *y, int n, long rows);
/* Row r of W as f32 (cols values). */
void pr_row_to_f32(const pr_tensor *W, long r, float *out);
/* Whole 1-D/2-D tensor as f32 into out (ne[0]*ne[1] values). */
void pr_tensor_to_f32(const pr_tensor *W, float *out);

float pr_f16_to_f32(uint16_t h);
uint16_t pr_f32_to_f16(float f);
static inline float pr_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}

/* Tells OpenBLAS how many threads it may use (called once per model load). */
void pr_blas_set_threads(int n);
#endif
