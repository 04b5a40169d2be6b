#include "util/mem.h"

#include <string.h>

void *pr_alloc(size_t a, size_t b, size_t c) {
    size_t n;
    if (pr_mul_overflows(a, b, &n) || pr_mul_overflows(n, c, &n)) return NULL;
    if (n == 0) n = 64;
    n = (n + 63) & ~(size_t)63;
    return aligned_alloc(64, n);
}

void *pr_calloc(size_t a, size_t b, size_t c) {
    size_t n;
    if (pr_mul_overflows(a, b, &n) || pr_mul_overflows(n, c, &n)) return NULL;
    void *p = pr_alloc(n, 1, 1);
    if (p) memset(p, 0, n);
    return p;
}

void pr_free(void *p) { free(p); }
