/* The packed GEMM path for many activation rows (prefill, vision tower, projector, MoE experts):
 * y[n × rows] = x[n × cols] · Wᵀ for W stored in any dtype, BLIS-style. See gemm.c. */
#ifndef PR_KERNELS_GEMM_H
#define PR_KERNELS_GEMM_H
#include "kernels/matmul.h"

/* y[n × R] = x[n × cols] · [W_0; ...; W_{n_w−1}]ᵀ then ep (NULL: none), R the parts' rows together: one product
 * over weights of the same dtype and columns (q, k and v of a layer), the x panels packed once. 0 on success;
 * -1 (nothing written) if the table has no micro-kernel, the parts differ, or scratch memory cannot be had. */
int pr_gemm_packed(const pr_kernels *k, pr_pool *pool, const pr_tensor *const *W, int n_w, const float *x, int n,
                   float *y, const pr_epilogue *ep);
#endif
