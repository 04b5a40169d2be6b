/* The persistent thread pool and per-thread scratch memory (pool.h).
 *
 * A job is n_chunks calls fn(arg, chunk, n_chunks). The caller publishes it and every thread, the caller too,
 * claims chunks from one atomic word until none is left; the caller returns once every chunk has finished. A
 * worker that is late (descheduled, or still waking up) thus delays nothing: the caller takes its chunks.
 *
 * Waiting is hybrid: a thread that waits (a worker for the next job, the caller for the last running chunks)
 * spins for a bounded time on the word it waits for, then sleeps on a futex (Linux) or a condition variable.
 * Decoding a token runs ~100 short jobs back to back: a spinning worker starts a job in well under a
 * microsecond, a sleeping one ~30–60 µs later. The bound keeps an idle pool from holding a CPU that another
 * process (or OpenBLAS's threads, which run between our jobs) needs. The spin has no sched_yield: on Linux's
 * EEVDF scheduler each yield pushes the thread's deadline back by a slice, so a worker that yields while it
 * waits falls behind any other process on its core and then misses the jobs (measured while other processes
 * kept both vCPUs busy: the worker ran 4 % of decoding's chunks when it yielded, ~40 % when it did not).
 *
 * Words (all C11 atomics):
 *   claim  = gen << 32 | n_chunks << 16 | next   the current job: its generation, its chunks, the next unclaimed
 *   gen    = the generation alone, 32 bits: what sleeping workers wait on (a futex word)
 *   left   = chunks of the current job not yet finished: what the caller waits on (a futex word)
 *   sleepers, caller_sleeps: how many threads are (about to be) asleep on gen / on left
 *
 * Why no wake-up is lost (the sleeping side and the waking side form a Dekker pair, both seq_cst):
 *   sleeper: sleepers += 1; if (gen == seen) futex_wait(&gen, seen)      waker: gen = g; if (sleepers) wake(&gen)
 * In the single total order of seq_cst operations either the sleeper's increment comes before the waker's load
 * of `sleepers` (the waker sees it and wakes), or the waker's store of gen comes before the sleeper's re-check
 * (the sleeper sees the new gen and does not sleep). Between the re-check and the actual sleep, futex_wait
 * itself compares the word with `seen` atomically against futex_wake, so a store plus wake in that window makes
 * it return at once (the condition-variable version checks the word under the mutex the waker takes). The same
 * argument holds for the caller sleeping on `left` against the worker that finishes the last chunk.
 *
 * Why a late worker never touches a finished job: it can run a chunk only after a successful CAS on `claim`,
 * which carries the generation, so it claims from the current job or not at all; the job cannot finish (and
 * the caller cannot return and reuse fn/arg) before that chunk's `left` decrement, which follows the chunk.
 * The generation is 32 bits: a CAS could only succeed on a stale job if exactly 2^32 jobs ran between a
 * worker's load and its CAS. */
#include "kernels/pool.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield")
#else
#define cpu_relax() ((void)0)
#endif
#if defined(__linux__) && !defined(PR_POOL_NO_FUTEX)
#include <linux/futex.h>
#include <sys/syscall.h>
#define USE_FUTEX 1
#endif

#define SPIN_NS 50000L     /* how long a waiting thread spins before it sleeps: a decoding worker waits for the
                            * next job about one chunk (~10–40 µs); between tokens (sampling in Python, ~50–100 µs)
                            * it sleeps. PARROT_POOL_SPIN_NS overrides it (tests: 0, every wait sleeps) */
#define MAX_CHUNKS 0xffff  /* chunks one job can have (16 bits of `claim`); more run grouped */

struct pr_pool {
    int n;
    pthread_t *threads;
    pr_task_fn fn; /* the current job, written before `claim` is published and read after a successful claim */
    void *arg;
    _Atomic uint64_t claim;
    _Atomic uint32_t gen;
    _Atomic uint32_t left;
    _Atomic int sleepers, caller_sleeps;
    _Atomic int quit;
    _Atomic unsigned long runs; /* jobs run, also on a one-thread pool (pr_pool_runs) */
    long spin_ns;
#ifndef USE_FUTEX
    pthread_mutex_t sleep_mu;
    pthread_cond_t sleep_cv;
#endif
    /* calls from several Python threads are serialised here: a job owns the pool until it returns */
    pthread_mutex_t job_mu;
};

/* ---- sleeping on a word until it changes (futex semantics: returns at once if *w != seen; may return early) */
#ifdef USE_FUTEX
static void word_wait(pr_pool *p, _Atomic uint32_t *w, uint32_t seen) {
    (void)p;
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
}
static void word_wake(pr_pool *p, _Atomic uint32_t *w) {
    (void)p;
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}
#else
static void word_wait(pr_pool *p, _Atomic uint32_t *w, uint32_t seen) {
    pthread_mutex_lock(&p->sleep_mu);
    if (atomic_load(w) == seen) pthread_cond_wait(&p->sleep_cv, &p->sleep_mu);
    pthread_mutex_unlock(&p->sleep_mu);
}
static void word_wake(pr_pool *p, _Atomic uint32_t *w) {
    (void)w;
    pthread_mutex_lock(&p->sleep_mu);
    pthread_cond_broadcast(&p->sleep_cv);
    pthread_mutex_unlock(&p->sleep_mu);
}
#endif

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

/* Whether this thread may spin: not while it shares its CPU. A thread that was preempted (an involuntary context
 * switch: another runnable thread took its CPU) in the last check interval does not spin for CONTENDED_NS. On a
 * shared CPU a spinner burns the scheduler share its own next chunk needs and is then preempted in the middle
 * of chunks the other threads wait for (measured with a busy process on the other vCPU: 1.8B q4_0 decoding
 * 27–28 tokens/s spinning, 29–30 sleeping). Checked at most every CHECK_NS (one getrusage call). */
#define CHECK_NS 1000000L
#define CONTENDED_NS 100000000L
static int may_spin(const pr_pool *p) {
    if (p->spin_ns <= 0) return 0;
#ifdef RUSAGE_THREAD
    static _Thread_local long last_check, quiet_from;
    static _Thread_local long last_nivcsw = -1;
    long t = now_ns();
    if (t - last_check >= CHECK_NS) {
        struct rusage ru;
        if (!getrusage(RUSAGE_THREAD, &ru)) {
            if (last_nivcsw >= 0 && ru.ru_nivcsw > last_nivcsw) quiet_from = t + CONTENDED_NS;
            last_nivcsw = ru.ru_nivcsw;
        }
        last_check = t;
    }
    return t >= quiet_from;
#else
    return 1;
#endif
}

/* Spins until *w != seen or the spin time is up (at once if this thread may not spin); returns the last value
 * read. */
static uint32_t spin_while(const pr_pool *p, _Atomic uint32_t *w, uint32_t seen) {
    long t0 = 0;
    if (!may_spin(p)) return atomic_load_explicit(w, memory_order_acquire);
    for (unsigned i = 0;; i++) {
        uint32_t v = atomic_load_explicit(w, memory_order_acquire);
        if (v != seen) return v;
        if ((i & 63) == 0) { /* ~64 pauses between clock reads (a few µs at most) */
            long t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 >= p->spin_ns) return v;
        }
        cpu_relax();
    }
}

/* Runs chunks of whatever job is current until none is left to claim; returns the generation it worked on. */
static uint32_t claim_and_run(pr_pool *p) {
    uint64_t c = atomic_load_explicit(&p->claim, memory_order_acquire);
    for (;;) {
        uint32_t next = (uint32_t)(c & 0xffff), n = (uint32_t)(c >> 16 & 0xffff);
        if (next >= n) return (uint32_t)(c >> 32);
        if (!atomic_compare_exchange_weak_explicit(&p->claim, &c, c + 1, memory_order_acquire,
                                                   memory_order_acquire))
            continue; /* c now holds the current word */
        p->fn(p->arg, (int)next, (int)n);
        /* release: this chunk's writes happen before the caller's return; the last one wakes a sleeping caller */
        if (atomic_fetch_sub(&p->left, 1) == 1 && atomic_load(&p->caller_sleeps)) /* seq_cst: see the header */
            word_wake(p, &p->left);
        c = atomic_load_explicit(&p->claim, memory_order_acquire);
    }
}

static void *worker(void *a) {
    pr_pool *p = a;
    uint32_t seen = 0; /* the generation of a new pool, not a load of gen: a job or quit published before this
                        * thread got to run must still be seen as new */
    for (;;) {
        uint32_t g = spin_while(p, &p->gen, seen);
        if (g == seen) {
            atomic_fetch_add(&p->sleepers, 1); /* seq_cst: see the header comment */
            if (atomic_load(&p->gen) == seen && !atomic_load(&p->quit)) word_wait(p, &p->gen, seen);
            atomic_fetch_sub(&p->sleepers, 1);
            continue;
        }
        if (atomic_load_explicit(&p->quit, memory_order_acquire)) break;
        /* the generation claimed from is g or a newer one (claim is stored before gen); a job with nothing left
         * to claim is done as far as this worker is concerned */
        seen = claim_and_run(p);
    }
    return NULL;
}

static long env_ns(const char *name, long dflt) {
    const char *s = getenv(name);
    return s && *s ? atol(s) : dflt;
}

int pr_pool_new(int n_threads, pr_pool **out) {
    *out = NULL;
    if (n_threads < 1) n_threads = 1;
    pr_pool *p = calloc(1, sizeof *p);
    if (!p) return -1;
    p->n = n_threads;
    p->spin_ns = env_ns("PARROT_POOL_SPIN_NS", SPIN_NS);
    pthread_mutex_init(&p->job_mu, NULL);
#ifndef USE_FUTEX
    pthread_mutex_init(&p->sleep_mu, NULL);
    pthread_cond_init(&p->sleep_cv, NULL);
#endif
    p->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!p->threads) {
        free(p);
        return -1;
    }
    for (int i = 1; i < n_threads; i++)
        if (pthread_create(&p->threads[i], NULL, worker, p)) {
            p->n = i; /* run with the threads we got */
            break;
        }
    *out = p;
    return 0;
}

void pr_pool_free(pr_pool *p) {
    if (!p) return;
    atomic_store(&p->quit, 1);
    atomic_fetch_add(&p->gen, 1); /* seq_cst, then the same check as a job's publication */
    if (atomic_load(&p->sleepers)) word_wake(p, &p->gen);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->job_mu);
#ifndef USE_FUTEX
    pthread_mutex_destroy(&p->sleep_mu);
    pthread_cond_destroy(&p->sleep_cv);
#endif
    free(p->threads);
    free(p);
}

int pr_pool_size(const pr_pool *p) { return p ? p->n : 1; }

unsigned long pr_pool_runs(const pr_pool *p) {
    return p ? atomic_load_explicit(&((pr_pool *)p)->runs, memory_order_relaxed) : 0;
}

/* Publishes a job of n_chunks ≤ MAX_CHUNKS chunks, runs chunks until none is left, waits for the others'. */
static void run_job(pr_pool *p, pr_task_fn fn, void *arg, int n_chunks) {
    pthread_mutex_lock(&p->job_mu);
    /* no chunk of the previous job is running (it returned), so fn/arg are ours to write */
    p->fn = fn;
    p->arg = arg;
    atomic_store_explicit(&p->left, (uint32_t)n_chunks, memory_order_relaxed);
    uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed) + 1;
    atomic_store_explicit(&p->claim, (uint64_t)g << 32 | (uint64_t)n_chunks << 16, memory_order_release);
    atomic_store(&p->gen, g); /* seq_cst: see the header comment */
    if (atomic_load(&p->sleepers)) word_wake(p, &p->gen);
    claim_and_run(p);
    for (;;) { /* the chunks other threads claimed; acquire: their writes are visible once left reads 0 */
        uint32_t left = atomic_load_explicit(&p->left, memory_order_acquire);
        if (left == 0) break;
        if (spin_while(p, &p->left, left) != left) continue;
        atomic_store(&p->caller_sleeps, 1); /* seq_cst: see the header comment */
        if (atomic_load(&p->left) == left) word_wait(p, &p->left, left);
        atomic_store(&p->caller_sleeps, 0);
    }
    pthread_mutex_unlock(&p->job_mu);
}

/* chunks i, i + MAX_CHUNKS, ... as one chunk: for jobs of more chunks than `claim` can count */
typedef struct {
    pr_task_fn fn;
    void *arg;
    int n_chunks;
} grouped_job;

static void grouped_task(void *arg, int g, int n_groups) {
    const grouped_job *j = arg;
    for (int c = g; c < j->n_chunks; c += n_groups) j->fn(j->arg, c, j->n_chunks);
}

void pr_pool_run_chunks(pr_pool *p, pr_task_fn fn, void *arg, int n_chunks) {
    if (n_chunks <= 0) return;
    if (p) atomic_fetch_add_explicit(&p->runs, 1, memory_order_relaxed);
    if (!p || p->n == 1) {
        for (int c = 0; c < n_chunks; c++) fn(arg, c, n_chunks);
    } else if (n_chunks > MAX_CHUNKS) {
        grouped_job j = {fn, arg, n_chunks};
        run_job(p, grouped_task, &j, MAX_CHUNKS);
    } else {
        run_job(p, fn, arg, n_chunks);
    }
}


void pr_pool_run(pr_pool *p, pr_task_fn fn, void *arg) { pr_pool_run_chunks(p, fn, arg, pr_pool_size(p)); }

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

int pr_split_guided(long n, int nth, long min_units, long *start) {
    int k = 0;
    for (long at = 0; at < n; k++) {
        long left = n - at, c = nth <= 1 ? left : (left + 2L * nth - 1) / (2L * nth);
        if (c < min_units) c = min_units;
        if (c > left || k == PR_GUIDED_MAX - 1) c = left;
        start[k] = at;
        at += c;
    }
    start[k] = n;
    return k;
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
