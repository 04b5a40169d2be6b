/* Stress test of the thread pool (csrc/kernels/pool.c), built with a sanitizer by tests/test_pool.py:
 *   cc -fsanitize=thread -Icsrc tests/c/pool_stress.c csrc/kernels/pool.c -pthread && ./a.out JOBS
 * Thousands of jobs of random sizes with random pauses (so waiting threads take both the spinning and the
 * sleeping path), on pools of 2 and 3 threads, from one and from several calling threads at once, and pools
 * freed right after a job or while their workers sleep. After every job each chunk must have run exactly once;
 * each job's argument is freed as soon as the call returns, so a worker touching a finished job is a
 * use-after-free (ASan) or a race (TSan). A watchdog thread fails the run if no job finishes for 20 s: a lost
 * wake-up shows as a hang. Prints one line per failure and exits non-zero if any. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "kernels/pool.h"

static atomic_long progress; /* jobs finished, for the watchdog */
static atomic_int failures;

typedef struct {
    int n;
    unsigned char *ran; /* n: times each chunk ran; plain bytes, each written by the one thread running it */
    long *out;          /* n: chunk i writes i * i */
    unsigned seed;
} job;

static unsigned next_rand(unsigned *s) { return *s = *s * 1664525u + 1013904223u; }

static void pause_us(unsigned us) {
    struct timespec t = {0, (long)us * 1000};
    nanosleep(&t, NULL);
}

static void chunk_task(void *arg, int i, int n) {
    job *j = arg;
    if (n != j->n) {
        printf("FAIL chunk told %d chunks, job has %d\n", n, j->n);
        atomic_fetch_add(&failures, 1);
        return;
    }
    unsigned s = j->seed + (unsigned)i * 7919u;
    unsigned r = next_rand(&s) >> 16;
    if (r % 16 == 0) pause_us(r % 200); /* a slow chunk now and then */
    j->ran[i]++;
    j->out[i] = (long)i * i;
}

/* one job of n chunks (or one share per thread when n == 0), checked */
static void one_job(pr_pool *p, int n, unsigned seed) {
    int chunks = n ? n : pr_pool_size(p);
    job *j = malloc(sizeof *j);
    j->n = chunks;
    j->ran = calloc((size_t)chunks, 1);
    j->out = calloc((size_t)chunks, sizeof(long));
    j->seed = seed;
    if (n) pr_pool_run_chunks(p, chunk_task, j, n);
    else pr_pool_run(p, chunk_task, j);
    for (int i = 0; i < chunks; i++)
        if (j->ran[i] != 1 || j->out[i] != (long)i * i) {
            printf("FAIL job of %d chunks: chunk %d ran %d times\n", chunks, i, j->ran[i]);
            atomic_fetch_add(&failures, 1);
        }
    free(j->ran);
    free(j->out);
    free(j);
    atomic_fetch_add(&progress, 1);
}

static void jobs(pr_pool *p, int count, unsigned seed) {
    for (int k = 0; k < count; k++) {
        unsigned r = next_rand(&seed) >> 8;
        one_job(p, r % 5 == 0 ? 0 : 1 + (int)(r % 17), seed);
        if (r % 7 == 0) pause_us(r % 300); /* long enough now and then for the workers to fall asleep */
    }
}

typedef struct {
    pr_pool *p;
    int count;
    unsigned seed;
} caller_arg;

static void *caller(void *a) {
    caller_arg *c = a;
    jobs(c->p, c->count, c->seed);
    return NULL;
}

static void *watchdog(void *a) {
    (void)a;
    long last = -1;
    for (;;) {
        sleep(20);
        long now = atomic_load(&progress);
        if (now == last) {
            printf("FAIL no job finished for 20 s (after %ld jobs): a lost wake-up or a deadlock\n", now);
            fflush(stdout);
            _exit(2);
        }
        last = now;
    }
    return NULL;
}

int main(int argc, char **argv) {
    int count = argc > 1 ? atoi(argv[1]) : 20000;
    pthread_t wd;
    pthread_create(&wd, NULL, watchdog, NULL);
    for (int nth = 2; nth <= 3; nth++) {
        pr_pool *p;
        if (pr_pool_new(nth, &p) || pr_pool_size(p) != nth) {
            printf("FAIL cannot start a pool of %d threads\n", nth);
            return 1;
        }
        unsigned long runs0 = pr_pool_runs(p);
        jobs(p, count, 1u + (unsigned)nth);
        if (pr_pool_runs(p) - runs0 != (unsigned long)count) {
            printf("FAIL %lu jobs counted, %d run\n", pr_pool_runs(p) - runs0, count);
            atomic_fetch_add(&failures, 1);
        }
        /* three threads calling into one pool at once: their jobs run one after the other */
        pthread_t t[3];
        caller_arg ca[3];
        for (int i = 0; i < 3; i++) {
            ca[i] = (caller_arg){p, count / 8, 100u * (unsigned)i + (unsigned)nth};
            pthread_create(&t[i], NULL, caller, &ca[i]);
        }
        for (int i = 0; i < 3; i++) pthread_join(t[i], NULL);
        pr_pool_free(p);
        /* pools freed right after a job, while workers spin, and after they fell asleep */
        for (int k = 0; k < count / 100; k++) {
            if (pr_pool_new(nth, &p)) return 1;
            if (k % 3) one_job(p, 1 + k % 9, (unsigned)k);
            if (k % 3 == 2) pause_us(200 + k % 500);
            pr_pool_free(p);
        }
    }
    /* more chunks than one job can count run grouped, each once */
    pr_pool *p;
    if (pr_pool_new(2, &p)) return 1;
    one_job(p, 70000, 5);
    pr_pool_free(p);
    int f = atomic_load(&failures);
    printf("%s: %d jobs per pool size\n", f ? "FAILED" : "ok", count);
    return f != 0;
}
