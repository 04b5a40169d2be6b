/* The persistent thread pool and per-thread scratch memory (pool.h). */
#include "kernels/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct pr_pool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    pr_task_fn fn;
    void *arg;
    unsigned long generation; /* bumped for every job */
    unsigned long runs;       /* jobs run, also on a one-thread pool (pr_pool_runs) */
    int pending;              /* workers still running the current job */
    int quit;
    /* calls from several Python threads are serialised here: a job owns the pool until it returns */
    pthread_mutex_t job_mu;
};

typedef struct {
    pr_pool *p;
    int ith;
} worker_arg;

static void *worker(void *a) {
    worker_arg *wa = a;
    pr_pool *p = wa->p;
    int ith = wa->ith;
    free(wa);
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->generation == seen) pthread_cond_wait(&p->wake, &p->mu);
        if (p->quit) break;
        seen = p->generation;
        pr_task_fn fn = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->mu);
        fn(arg, ith, p->n);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int pr_pool_new(int n_threads, pr_pool **out) {
    *out = NULL;
    if (n_threads < 1) n_threads = 1;
    pr_pool *p = calloc(1, sizeof *p);
    if (!p) return -1;
    p->n = n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->job_mu, NULL);
    pthread_cond_init(&p->wake, NULL);
    pthread_cond_init(&p->done, NULL);
    p->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) {
        free(p);
        return -1;
    }
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (!wa || pthread_create(&p->threads[i], NULL, worker, wa ? (wa->p = p, wa->ith = i, wa) : NULL)) {
            free(wa);
            p->n = i; /* run with the threads we got */
            break;
        }
    }
    *out = p;
    return 0;
}

void pr_pool_free(pr_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = 1;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->job_mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}

int pr_pool_size(const pr_pool *p) { return p ? p->n : 1; }

unsigned long pr_pool_runs(const pr_pool *p) { return p ? __atomic_load_n(&p->runs, __ATOMIC_RELAXED) : 0; }

void pr_pool_run(pr_pool *p, pr_task_fn fn, void *arg) {
    if (p) __atomic_fetch_add(&p->runs, 1, __ATOMIC_RELAXED);
    if (!p || p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&p->job_mu);
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->arg = arg;
    p->pending = p->n - 1;
    p->generation++;
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    fn(arg, 0, p->n);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0) pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->job_mu);
}

/* chunks i, i + n, i + 2n, ... of the job on pool thread i: one pool job, with each chunk's share fixed */
typedef struct {
    pr_task_fn fn;
    void *arg;
    int n_chunks;
} chunks_job;

static void chunks_task(void *arg, int ith, int nth) {
    const chunks_job *j = arg;
    for (int c = ith; c < j->n_chunks; c += nth) j->fn(j->arg, c, j->n_chunks);
}

void pr_pool_run_chunks(pr_pool *p, pr_task_fn fn, void *arg, int n_chunks) {
    chunks_job j = {fn, arg, n_chunks};
    pr_pool_run(p, chunks_task, &j);
}

void pr_split_range(long n, int ith, int nth, long *begin, long *end) {
    long per = n / nth, rem = n % nth;
    *begin = ith * per + (ith < rem ? ith : rem);
    *end = *begin + per + (ith < rem ? 1 : 0);
}

void pr_split_aligned(long n, long align, int ith, int nth, long *begin, long *end) {
    long g0, g1;
    pr_split_range((n + align - 1) / align, ith, nth, &g0, &g1);
    *begin = g0 * align < n ? g0 * align : n;
    *end = g1 * align < n ? g1 * align : n;
}

int pr_physical_cores(void) {
    /* count distinct (physical id, core id) pairs; fall back to online CPUs */
    FILE *f = fopen("/proc/cpuinfo", "r");
    int cores = 0;
    if (f) {
        char line[256];
        int phys = -1, seen_pairs[1024][2], n_pairs = 0;
        while (fgets(line, sizeof line, f)) {
            int v;
            if (sscanf(line, "physical id : %d", &v) == 1) phys = v;
            else if (sscanf(line, "core id : %d", &v) == 1) {
                int dup = 0;
                for (int i = 0; i < n_pairs; i++)
                    if (seen_pairs[i][0] == phys && seen_pairs[i][1] == v) dup = 1;
                if (!dup && n_pairs < 1024) {
                    seen_pairs[n_pairs][0] = phys;
                    seen_pairs[n_pairs][1] = v;
                    n_pairs++;
                }
            }
        }
        fclose(f);
        cores = n_pairs;
    }
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1 || (online > 0 && cores > online)) cores = online > 0 ? (int)online : 1;
    return cores;
}

/* ---- per-thread scratch: a pthread key whose destructor frees the thread's buffers */
typedef struct {
    void *p[PR_SCRATCH_SLOTS];
    size_t size[PR_SCRATCH_SLOTS];
} scratch_set;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static int scratch_key_ok;

static void scratch_free(void *a) {
    scratch_set *s = a;
    for (int i = 0; i < PR_SCRATCH_SLOTS; i++) free(s->p[i]);
    free(s);
}

static void scratch_init(void) { scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0; }

void *pr_scratch(int slot, size_t bytes) {
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_key_ok || slot < 0 || slot >= PR_SCRATCH_SLOTS) return NULL;
    scratch_set *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(scratch_key, s)) {
            free(s);
            return NULL;
        }
    }
    if (bytes > s->size[slot]) {
        size_t n = (bytes + 63) & ~(size_t)63;
        if (n < bytes) return NULL;
        void *p = aligned_alloc(64, n);
        if (!p) return NULL;
        free(s->p[slot]);
        s->p[slot] = p;
        s->size[slot] = n;
    }
    return s->p[slot];
}
