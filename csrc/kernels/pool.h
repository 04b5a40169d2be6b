/* One persistent pool of worker threads per model. A job is a number of chunks: fn(arg, i, n) for every i < n,
 * each run once, on whichever pool thread (the caller included) claims it first; the call returns when all are
 * done. Chunks must not wait for each other (one thread may run several in turn). Waiting threads spin for a
 * bounded time, then sleep (pool.c explains the protocol), so an idle pool does not compete with other work. */
#ifndef PR_KERNELS_POOL_H
#define PR_KERNELS_POOL_H
#include <stddef.h>

typedef struct pr_pool pr_pool;
typedef void (*pr_task_fn)(void *arg, int ith, int nth);

int pr_pool_new(int n_threads, pr_pool **out);
void pr_pool_free(pr_pool *p);
int pr_pool_size(const pr_pool *p);
/* fn(arg, ith, nth) for ith < nth = pr_pool_size(p): one share per pool thread. A NULL pool runs fn(arg, 0, 1). */
void pr_pool_run(pr_pool *p, pr_task_fn fn, void *arg);
/* fn(arg, i, n_chunks) for every chunk i < n_chunks as one job (in turn on the caller for a NULL pool). */
void pr_pool_run_chunks(pr_pool *p, pr_task_fn fn, void *arg, int n_chunks);
/* Jobs run so far (each a hand-over to the workers): for counting synchronisations per token. */
unsigned long pr_pool_runs(const pr_pool *p);
/* Splits [0, n) into nth near-equal contiguous ranges; range of thread ith. */
void pr_split_range(long n, int ith, int nth, long *begin, long *end);
/* The same on multiples of `align` (the last range ends at n): element-wise SIMD kernels then see the same
 * vector/tail split whatever the thread count. */
void pr_split_aligned(long n, long align, int ith, int nth, long *begin, long *end);
/* Guided chunks (OpenMP's schedule(guided)) of a job over n units on nth threads: each chunk takes about
 * 1/(2·nth) of the units still left, at least min_units, so chunks shrink towards the end and a thread that
 * finishes early, or a worker that starts late, leaves little for the others to wait for. Writes the first
 * unit of each chunk to start[0..k) and start[k] = n; returns k ≤ PR_GUIDED_MAX (one chunk on one thread). */
#define PR_GUIDED_MAX 64
int pr_split_guided(long n, int nth, long min_units, long *start);
/* Per-thread scratch memory that grows and is kept for the thread's life (freed when it exits), so hot paths
 * do not allocate per call. One buffer per slot; a slot's previous contents are not kept when it grows.
 * NULL if the allocation fails. */
enum { PR_SCRATCH_ACT, PR_SCRATCH_PANEL, PR_SCRATCH_ATTN, PR_SCRATCH_SLOTS };
void *pr_scratch(int slot, size_t bytes);
/* Physical cores of this machine (best effort, >= 1). */
int pr_physical_cores(void);
#endif
