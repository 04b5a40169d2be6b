/* The packed GEMM path for many activation rows (prefill, vision tower, projector, MoE experts):
 * y[n × rows] = x[n × cols] · Wᵀ for W stored in any dtype, BLIS-style. See gemm.c. */
#ifndef PR_KERNELS_GEMM_H
#define PR_KERNELS_GEMM_H
#include "kernels/kernels.h"
#include "kernels/pool.h"

/* 0 on success; -1 (nothing written) if the table has no micro-kernel or scratch memory cannot be had. */
int pr_gemm_packed(const pr_kernels *k, pr_pool *pool, const pr_tensor *W, const float *x, int n, float *y);
#endif
