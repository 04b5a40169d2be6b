/* One persistent pool of worker threads per model. pr_pool_run(fn) runs fn(arg, ith, nth) on every thread
 * (the caller is thread 0) and returns when all are done. Idle workers sleep on a condition variable, so they
 * do not compete with OpenBLAS's own threads, which run only between pool jobs. */
#ifndef PR_KERNELS_POOL_H
#define PR_KERNELS_POOL_H
#include <stddef.h>

typedef struct pr_pool pr_pool;
typedef void (*pr_task_fn)(void *arg, int ith, int nth);

int pr_pool_new(int n_threads, pr_pool **out);
void pr_pool_free(pr_pool *p);
int pr_pool_size(const pr_pool *p);
void pr_pool_run(pr_pool *p, pr_task_fn fn, void *arg);
/* fn(arg, i, n_chunks) for every chunk i < n_chunks as one job: pool thread t runs chunks t, t + n, ... */
void pr_pool_run_chunks(pr_pool *p, pr_task_fn fn, void *arg, int n_chunks);
/* Jobs run so far (each wakes every worker once): for counting wake-ups per token. */
unsigned long pr_pool_runs(const pr_pool *p);
/* Splits [0, n) into nth near-equal contiguous ranges; range of thread ith. */
void pr_split_range(long n, int ith, int nth, long *begin, long *end);
/* The same on multiples of `align` (the last range ends at n): element-wise SIMD kernels then see the same
 * vector/tail split whatever the thread count. */
void pr_split_aligned(long n, long align, int ith, int nth, long *begin, long *end);
/* Per-thread scratch memory that grows and is kept for the thread's life (freed when it exits), so hot paths
 * do not allocate per call. One buffer per slot; a slot's previous contents are not kept when it grows.
 * NULL if the allocation fails. */
enum { PR_SCRATCH_ACT, PR_SCRATCH_PANEL, PR_SCRATCH_ATTN, PR_SCRATCH_SLOTS };
void *pr_scratch(int slot, size_t bytes);
/* Physical cores of this machine (best effort, >= 1). */
int pr_physical_cores(void);
#endif
