/* The packed GEMM's micro-kernels alone, beside the FMA peak loop of the same table (benchmarks/bench_gemm.py
 * --breakdown compiles and runs this): one thread, one MR × NR tile over kc = 256 steps with A and B in L1,
 * best of many short runs (a shared machine disturbs some of them).
 *   cc -O2 -Icsrc -mavx2 -mfma -mf16c benchmarks/gemm_ukernel.c csrc/kernels/{kernels_scalar,quant,kernels_avx2}.c
 *      [kernels_avx512.c with its flags] -lm */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/kernels.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void run(const pr_kernels *k) {
    long MR = k->gemm_mr, NR = k->gemm_nr, kc = 256;
    float *A = calloc((size_t)(kc * MR), sizeof(float)), *B = calloc((size_t)(kc * NR), sizeof(float)),
          *C = calloc((size_t)(MR * NR), sizeof(float));
    for (long i = 0; i < kc * MR; i++) A[i] = 1e-3f * (float)(i % 7);
    for (long i = 0; i < kc * NR; i++) B[i] = 1e-3f * (float)(i % 5);
    double best_uk = 0, best_peak = 0;
    for (int round = 0; round < 300; round++) {
        double t = now();
        for (int r = 0; r < 30; r++) k->gemm_ukernel(kc, A, B, C, NR, r & 1);
        double rate = 2.0 * (double)(MR * NR * kc) * 30 / (now() - t);
        if (rate > best_uk) best_uk = rate;
        t = now();
        double ops = k->peak(0, 20000);
        rate = ops / (now() - t);
        if (rate > best_peak) best_peak = rate;
    }
    printf("%s micro-kernel %ldx%ld: %.1f GFLOP/s, FMA peak loop %.1f GFLOP/s (one thread): %.0f %%\n", k->isa, MR,
           NR, best_uk / 1e9, best_peak / 1e9, 100 * best_uk / best_peak);
    free(A), free(B), free(C);
}

int main(void) {
    const char *names[] = {"avx2", "avx512"};
    for (int i = 0; i < 2; i++) {
        pr_error e = {0};
        const pr_kernels *k = pr_kernels_get(names[i], &e);
        if (k && k->gemm_ukernel && k->peak) run(k);
    }
    return 0;
}
