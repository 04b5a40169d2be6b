/* The persistent thread pool and per-thread scratch memory (pool.h). */
#include "kernels/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A job is n_chunks calls fn(arg, i, n_chunks). Threads claim chunks one at a time from an atomic counter, so a
 * worker that wakes late (tens of microseconds on a busy or virtual machine) finds the chunks the caller has
 * not yet started rather than holding the caller up until it has run a fixed share: the caller waits only for
 * chunks already running. The counter carries the job's generation in its high half, so a worker still
 * looking at a finished job cannot claim a chunk of it. */
struct pr_pool {
    int n;
    pthread_t *threads;
    /* the current job: written before claim is published (release) and read after it is loaded (acquire); a
     * worker may read a newer job's values here, but then its claim (compare-exchange on the old generation)
     * fails and it does not use them */
    _Atomic(pr_task_fn) fn;
    _Atomic(void *) arg;
    atomic_int n_chunks;
    atomic_ullong claim;      /* generation << 32 | next chunk to claim */
    atomic_int done;          /* chunks of the current job finished */
    atomic_int caller_asleep; /* the caller sleeps (or is about to) on finished */
    atomic_int quit;
    atomic_ulong runs;        /* jobs run, also on a one-thread pool (pr_pool_runs) */
    unsigned generation;      /* the caller's (under job_mu) */
    pthread_mutex_t mu;       /* with wake: workers sleep until claim's generation changes or quit */
    pthread_cond_t wake, finished;
    /* calls from several Python threads are serialised here: a job owns the pool until it returns */
    pthread_mutex_t job_mu;
};

/* Runs chunks of job `gen` until none is left to claim. */
static void run_chunks(pr_pool *p, unsigned gen) {
    for (;;) {
        unsigned long long c = atomic_load_explicit(&p->claim, memory_order_acquire);
        if ((unsigned)(c >> 32) != gen) return;
        pr_task_fn fn = atomic_load_explicit(&p->fn, memory_order_relaxed);
        void *arg = atomic_load_explicit(&p->arg, memory_order_relaxed);
        int n_chunks = atomic_load_explicit(&p->n_chunks, memory_order_relaxed);
        int i = (int)(c & 0xffffffffu);
        if (i >= n_chunks) return;
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &c, c + 1, memory_order_acq_rel, memory_order_acquire))
            continue;
        fn(arg, i, n_chunks);
        /* the last chunk wakes the caller if it sleeps: it sees done == n_chunks before sleeping, or we see
         * caller_asleep (both seq_cst) */
        if (atomic_fetch_add(&p->done, 1) + 1 == n_chunks && atomic_load(&p->caller_asleep)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->finished);
            pthread_mutex_unlock(&p->mu);
        }
    }
}

static void *worker(void *a) {
    pr_pool *p = a;
    unsigned seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!atomic_load(&p->quit) && (unsigned)(atomic_load(&p->claim) >> 32) == seen)
            pthread_cond_wait(&p->wake, &p->mu);
        if (atomic_load(&p->quit)) break;
        seen = (unsigned)(atomic_load(&p->claim) >> 32);
        pthread_mutex_unlock(&p->mu);
        run_chunks(p, seen);
        pthread_mutex_lock(&p->mu);
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
    pthread_cond_init(&p->finished, NULL);
    p->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) {
        free(p);
        return -1;
    }
    for (int i = 1; i < n_threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p)) {
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
    atomic_store(&p->quit, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->job_mu);
    pthread_cond_destroy(&p->wake);
    pthread_cond_destroy(&p->finished);
    free(p->threads);
    free(p);
}

int pr_pool_size(const pr_pool *p) { return p ? p->n : 1; }

unsigned long pr_pool_runs(const pr_pool *p) {
    return p ? atomic_load_explicit(&((pr_pool *)p)->runs, memory_order_relaxed) : 0;
}

void pr_pool_run_chunks(pr_pool *p, pr_task_fn fn, void *arg, int n_chunks) {
    if (p) atomic_fetch_add_explicit(&p->runs, 1, memory_order_relaxed);
    if (!p || p->n == 1 || n_chunks == 1) {
        for (int i = 0; i < n_chunks; i++) fn(arg, i, n_chunks);
        return;
    }
    pthread_mutex_lock(&p->job_mu);
    atomic_store_explicit(&p->fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->arg, arg, memory_order_relaxed);
    atomic_store_explicit(&p->n_chunks, n_chunks, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    unsigned gen = ++p->generation;
    pthread_mutex_lock(&p->mu);
    atomic_store_explicit(&p->claim, (unsigned long long)gen << 32, memory_order_release);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, gen);
    if (atomic_load(&p->done) != n_chunks) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->caller_asleep, 1);
        while (atomic_load(&p->done) != n_chunks) pthread_cond_wait(&p->finished, &p->mu);
        atomic_store(&p->caller_asleep, 0);
        pthread_mutex_unlock(&p->mu);
    }
    pthread_mutex_unlock(&p->job_mu);
}

void pr_pool_run(pr_pool *p, pr_task_fn fn, void *arg) { pr_pool_run_chunks(p, fn, arg, pr_pool_size(p)); }

void pr_split_range(long n, int ith, int nth, long *begin, long *end) {
    long per = n / nth, rem = n % nth;
    *begin = ith * per + (ith < rem ? ith : rem);
    *end = *begin + per + (ith < rem ? 1 : 0);
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
