/* Choosing the kernel table: once, from CPUID, or from PARROT_ISA (see kernels.h). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

/* The best table of one ISA family that this CPU and build can run, or NULL. */
static const pr_kernels *table_for(const char *isa) {
    if (!strcmp(isa, "scalar")) return &pr_kernels_scalar;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (!strcmp(isa, "avx2"))
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c")
                   ? &pr_kernels_avx2 : NULL;
    if (!strcmp(isa, "avx512")) {
#ifdef PR_EMULATE_AVX512
        return &pr_kernels_avx512_bf16; /* SIMDe, developer builds only (setup.py) */
#endif
        if (!(__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
              __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma")))
            return NULL;
        return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni")
                   ? &pr_kernels_avx512_bf16 : &pr_kernels_avx512;
    }
#endif
#if defined(__aarch64__)
    if (!strcmp(isa, "neon")) return &pr_kernels_neon; /* Advanced SIMD is part of every AArch64 CPU */
#endif
    return NULL;
}

static const char *const ALL_ISAS[] = {"scalar", "avx2", "avx512", "neon"}; /* worst to best */
#define N_ISAS (int)(sizeof ALL_ISAS / sizeof ALL_ISAS[0])

static char available[64];
static const pr_kernels *active;
static pr_error active_err;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static const pr_kernels *best(void) {
    const pr_kernels *k = &pr_kernels_scalar;
    for (int i = 0; i < N_ISAS; i++)
        if (table_for(ALL_ISAS[i])) k = table_for(ALL_ISAS[i]);
    return k;
}

static const pr_kernels *lookup(const char *isa, pr_error *err);

static void choose(void) {
    for (int i = 0; i < N_ISAS; i++)
        if (table_for(ALL_ISAS[i])) {
            if (available[0]) strcat(available, " ");
            strcat(available, ALL_ISAS[i]);
        }
    const char *want = getenv("PARROT_ISA");
    if (!want || !*want || !strcmp(want, "best")) {
        active = best();
        return;
    }
    active = lookup(want, &active_err);
}

const char *pr_kernels_available(void) {
    pthread_once(&once, choose);
    return available;
}

const pr_kernels *pr_kernels_get(const char *isa, pr_error *err) {
    pthread_once(&once, choose);
    return lookup(isa, err);
}

static const pr_kernels *lookup(const char *isa, pr_error *err) {
    if (!strcmp(isa, "best")) return best();
    const pr_kernels *k = table_for(isa);
    if (k) return k;
    int known = 0;
    for (int i = 0; i < N_ISAS; i++) known |= !strcmp(isa, ALL_ISAS[i]);
    if (known)
        pr_set_error(err, PR_ERR_ARG, "instruction set '%s' is not available on this CPU/build (available: %s)",
                     isa, available);
    else
        pr_set_error(err, PR_ERR_ARG, "unknown instruction set '%s' (known: scalar, avx2, avx512, neon; "
                     "available here: %s)", isa, available);
    return NULL;
}

const pr_kernels *pr_kernels_active(pr_error *err) {
    pthread_once(&once, choose);
    if (!active) {
        pr_set_error(err, PR_ERR_ARG, "PARROT_ISA: %s", active_err.msg);
        return NULL;
    }
    return active;
}
