/* Matrix products against weights stored in any supported dtype (f32, f16, bf16, q8_0, q4_0).
 *
 * A weight W has rows = W->ne[1] rows of cols = W->ne[0] elements (an HF [out, in] matrix). */
#ifndef PR_KERNELS_MATMUL_H
#define PR_KERNELS_MATMUL_H
#include <stdint.h>

#include "kernels/kernels.h"
#include "kernels/pool.h"
#include "kernels/quant.h"
#include "parrot.h"

/* y[n × rows] = x[n × cols] · Wᵀ (row-major, dense), with the active kernel table. Never fails: if scratch
 * memory cannot be had it takes a slower path that needs none. */
void pr_matmul(pr_pool *pool, const pr_tensor *W, const float *x, int n, float *y);
/* The same with a given kernel table and, for many activation rows, a forced path (tests and benchmarks):
 * PR_MM_AUTO the table's choice, PR_MM_TILES its tiled int8/bf16 kernels (q8_0/q4_0/bf16 weights),
 * PR_MM_PANELS widening to f32 + OpenBLAS sgemm, PR_MM_GEMM the packed GEMM of gemm.c. */
enum { PR_MM_AUTO, PR_MM_TILES, PR_MM_PANELS, PR_MM_GEMM };
void pr_matmul_k(const pr_kernels *k, pr_pool *pool, const pr_tensor *W, const float *x, int n, float *y,
                 int path);
/* What happens to each output once its sum is complete, while its tile is still in cache (pr_matmul_fused, the packed GEMM):
 * y += bias, then the activation, then res += y. */
typedef struct pr_epilogue {
    const float *bias; /* one value per output column (all parts end to end), or NULL */
    int act;           /* PR_ACT_QUICK_GELU, PR_ACT_GELU or PR_ACT_NONE */
    float *res;        /* n × columns, the layout of y, or NULL */
} pr_epilogue;

/* rows × len outputs ld apart: columns c0 .. c0 + len of output rows (a GEMM tile, or whole rows), res the same
 * columns of their residual rows (or NULL). Each row segment is evaluated the same way whatever `rows` is. */
void pr_epilogue_tile(const pr_kernels *k, const pr_epilogue *ep, long c0, float *y, float *res, long rows, long len,
                      long ld);

/* A layer's products of one input and the element-wise steps after them: y[n × R] = x · [W_0; ...; W_{n_w−1}]ᵀ
 * (R: the weights' rows together, y's columns), + the biases (bias[p] NULL: none), the activation act
 * (PR_ACT_QUICK_GELU, PR_ACT_GELU or PR_ACT_NONE), then res[n × R] += y (res NULL: none). Where the packed
 * GEMM is the path for these weights they make one product with the steps in its epilogue; otherwise each
 * weight runs through pr_matmul and the steps follow as a pool job. n_w ≤ 3. 0, or -1 when out of memory. */
int pr_matmul_fused(pr_pool *pool, const pr_tensor *const *W, const pr_tensor *const *bias, int n_w, const float *x,
                    int n, float *y, int act, float *res);
/* The same with a given kernel table and path (tests): PR_MM_AUTO as above, PR_MM_GEMM the packed GEMM with the
 * epilogue inside, PR_MM_PANELS each weight through pr_matmul_k (its own choice) and the epilogue after. */
int pr_matmul_fused_k(const pr_kernels *k, pr_pool *pool, const pr_tensor *const *W, const pr_tensor *const *bias,
                      int n_w, const float *x, int n, float *y, int act, float *res, int path);
/* y[n × rows] += bias[rows] (an f32 vector; NULL does nothing) on the elements [e0, e1) of y only, counted row
 * after row (a thread's share) */
void pr_add_bias_range(const pr_tensor *bias, float *y, long rows, long e0, long e1);
/* Row r of W as f32 (cols values). */
void pr_row_to_f32(const pr_tensor *W, long r, float *out);
/* Whole 1-D/2-D tensor as f32 into out (ne[0]*ne[1] values). */
void pr_tensor_to_f32(const pr_tensor *W, float *out);

/* The active kernel table (pr_kernels_active), or the scalar one if PARROT_ISA was refused (pr_model_load
 * reports that refusal before any kernel runs). */
const pr_kernels *pr_kern(void);

/* OpenBLAS runs single-threaded inside our pool's threads: one set of threads, no oversubscription. Called
 * at model load. */
void pr_blas_single_thread(void);
#endif
