/* Checked allocation helpers: sizes are multiplied with overflow checks. */
#ifndef PR_UTIL_MEM_H
#define PR_UTIL_MEM_H
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

/* a*b*c bytes or NULL on overflow / failure; 64-byte aligned, free with pr_free. */
void *pr_alloc(size_t a, size_t b, size_t c);
void *pr_calloc(size_t a, size_t b, size_t c);
void pr_free(void *p);
/* 1 if a*b overflows size_t */
static inline int pr_mul_overflows(size_t a, size_t b, size_t *out) {
    return __builtin_mul_overflow(a, b, out);
}
#endif
