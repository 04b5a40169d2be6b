/* The inner kernels, one table per instruction set, chosen once at start-up.
 *
 * kernels_scalar.c is the reference every SIMD table is tested against (tests/test_kernels.py);
 * kernels_avx2.c (AVX2 + FMA + F16C), kernels_avx512.c (AVX-512 F/BW/VL/DQ, plus AVX512_BF16 dot products and
 * VNNI int8 where the CPU has them) and kernels_neon.c fill the same table. The table is picked from CPUID
 * (__builtin_cpu_supports) the first time it is asked for; PARROT_ISA=scalar|avx2|avx512|neon forces one, and
 * asking for one this CPU or build lacks is an error naming what is available.
 *
 * Quantised weights (q8_0, q4_0) are multiplied in integers: the activation row is first quantised to q8_0
 * blocks (per 32 values, as ggml), then each block product is an int32 sum scaled by d_w·d_x (gemm_q8_0 /
 * gemm_q4_0, one flat kernel per type and table). */
#ifndef PR_KERNELS_KERNELS_H
#define PR_KERNELS_KERNELS_H
#include <stdint.h>

#include "kernels/quant.h"
#include "parrot.h"

#define PR_ACT_NONE (-1) /* beside parrot.h's PR_ACT_QUICK_GELU, PR_ACT_GELU: no activation */

/* GELU's erf through erfc (SIMD tables): for z = |y|/√2, erfc(z) = t·exp(−z² + P(t)), t = 1/(1 + z/2), P of
 * degree 9 (Numerical Recipes' erfcc, a Chebyshev fit: relative error < 1.2e−7 for every z ≥ 0), and
 * 0.5y·(1 + erf(y/√2)) = 0.5y·(2 − erfc(z)) for y ≥ 0, 0.5y·erfc(z) for y < 0: no 1 + erf cancellation on
 * the negative side. The coefficients of P, constant term first: */
#define PR_SQRT1_2 0.70710678118654752f /* 1/√2 (M_SQRT1_2 is not C11) */
static const float pr_erfc_p[10] = {-1.26551223f, 1.00002368f, 0.37409196f, 0.09678418f, -0.18628806f,
                                    0.27886807f, -1.13520398f, 1.48851587f, -0.82215223f, 0.17087277f};

/* Tiled products: Y[j·ldy + i] = W_i · X_j for weight rows i < nw and activation rows j < nx, every row
 * nb blocks (q*_0) or k values long. W rows are ldw bytes apart, X rows ldx bytes apart. */
typedef void (*pr_gemm_fn)(const void *W, long ldw, long nw, const void *X, long ldx, long nx, long k, float *Y,
                           long ldy);

typedef struct pr_kernels {
    const char *isa; /* "scalar", "avx2", "avx512", "neon" */
    /* dot products of one weight row with one activation row (n values) */
    float (*dot_f32)(const float *w, const float *x, long n);
    float (*dot_f16)(const uint16_t *w, const float *x, long n);
    float (*dot_bf16)(const uint16_t *w, const float *x, long n);
    /* y += a·x for one row (attention over an f32 KV cache when decoding: o += p_t·v_t) */
    void (*axpy_f32)(float a, const float *x, float *y, long n);
    /* one query head's decode attention over n cached f16 rows (ld values apart, hd used): the scores
     * s[t] = scale·(k_t·q), several keys in flight, and the weighted sum of the values o = Σ_t p[t]·v_t
     * (o overwritten). A score's sum order depends on hd alone, not on n or the key's place in a block. */
    void (*attn_scores_f16)(const uint16_t *k, long ld, long n, const float *q, long hd, float scale, float *s);
    void (*attn_values_f16)(const float *p, const uint16_t *v, long ld, long n, long hd, float *o);
    /* activations to q8_0 blocks (n a multiple of 32): d = max|x|/127, q = round-half-even(x/d) */
    void (*quantize_q8_0)(const float *x, block_q8_0 *y, long n);
    /* widening and narrowing rows (KV cache, f16/bf16 weight panels for sgemm) */
    void (*f16_to_f32)(const uint16_t *x, float *y, long n);
    void (*bf16_to_f32)(const uint16_t *x, float *y, long n);
    void (*f32_to_f16)(const float *x, uint16_t *y, long n);
    /* q*_0 rows back to f32 (n a multiple of 32), exactly d·q as the reference: panels for sgemm */
    void (*dequantize_q8_0)(const block_q8_0 *x, float *y, long n);
    void (*dequantize_q4_0)(const block_q4_0 *row, long nb, long b0, float *y, long n); /* quant.h's layout */
    /* quantised weights × a few activation rows quantised to q8_0 (k in blocks): decoding one or a batch of
     * sequences, short prompts. Each output is summed in an order that does not depend on nw, nx or its place
     * in the call, so batching and the threads' slices do not change results. */
    pr_gemm_fn gemm_q8_0, gemm_q4_0;
    /* bf16 tiles (k values; X holds each activation row split into bf16 hi and lo halves): NULL where widening
     * to f32 + sgemm is faster (no bf16 dot product instruction) */
    pr_gemm_fn gemm_bf16;
    /* 1 if gemm_q8_0/gemm_q4_0 beat widening to f32 + sgemm on many rows (int8 dot-product instructions) */
    int int8_tiles;
    /* f32 GEMM micro-kernel of the packed path (gemm.c): the MR × NR tile C (rows ldc apart; row i = activation
     * row, column j = weight row) = (accumulate ? C : 0) + Σ_k A[k·MR + i]·B[k·NR + j] over k < kc. NULL: no
     * packed path in this table. */
    void (*gemm_ukernel)(long kc, const float *A, const float *B, float *C, long ldc, int accumulate);
    /* the same for only the first mr < MR rows of a strip (A still MR values per step; rows ≥ mr of C are not
     * touched): the last strip of activations without a whole tile's work, each C element summed exactly as
     * gemm_ukernel sums it */
    void (*gemm_ukernel_rows)(long kc, const float *A, const float *B, float *C, long ldc, int accumulate, int mr);
    int gemm_mr, gemm_nr;
    /* its packing: dst[k·ldd + i] = src[i·ld + k] for 8 rows i and k < kc (8 widened weight rows into k-major
     * order, NR values apart) */
    void (*gemm_pack8)(const float *src, long ld, long kc, float *dst, long ldd);
    /* the same from 8 q8_0 rows (ldw bytes apart; kc a multiple of 32, from a block boundary): dst[k·ldd + i] =
     * the dequantised value, as dequantize_q8_0 gives it. NULL: dequantize_q8_0 into rows, then gemm_pack8. */
    void (*gemm_pack8_q8_0)(const block_q8_0 *w, size_t ldw, long kc, float *dst, long ldd);
    /* machine limit for benchmarks: runs `iters` rounds of many independent chains of the table's widest
     * multiply-add of `kind` (0 f32 FMA, 1 bf16 pair dot product, 2 int8 quad dot product) and returns the
     * arithmetic operations done (2 per multiply-add); 0 if the table lacks that kind */
    double (*peak)(int kind, long iters);
    /* element-wise: y = x·σ(x)·u (SwiGLU), and x = exp(x − m) returning Σ x (softmax numerators) */
    void (*silu_mul)(float *x, const float *u, long n);
    float (*exp_sum)(float *x, long n, float m);
    /* the products' epilogue on rows × n values ld apart (a GEMM tile, or whole rows): y += bias (one value per
     * column; NULL: none), then the activation act: PR_ACT_QUICK_GELU y·σ(1.702y), PR_ACT_GELU
     * 0.5y·(1 + erf(y/√2)) (see pr_erfc_p), PR_ACT_NONE none; then res += y (res: y's layout; NULL: none),
     * one pass while the values are in registers. Each row is evaluated as one call of n values (vectors from
     * its first column, the tail scalar), so results depend only on the segment, not on rows. */
    void (*bias_act_res)(float *y, long ld, long rows, long n, const float *bias, int act, float *res);
} pr_kernels;

extern const pr_kernels pr_kernels_scalar;
#if defined(__x86_64__) || defined(__i386__)
extern const pr_kernels pr_kernels_avx2;
extern const pr_kernels pr_kernels_avx512;     /* AVX-512 F/BW/VL/DQ */
extern const pr_kernels pr_kernels_avx512_bf16; /* ... + AVX512_BF16 and VNNI */
#endif
#if defined(__aarch64__)
extern const pr_kernels pr_kernels_neon;
#endif

/* The table in use: PARROT_ISA if set, else the best this CPU has. NULL (and err filled) if PARROT_ISA names
 * an unknown or unavailable instruction set. Chosen once; thread-safe. */
const pr_kernels *pr_kernels_active(pr_error *err);
/* The table for a named ISA ("scalar", "avx2", "avx512", "neon", or "best"), or NULL with err filled. */
const pr_kernels *pr_kernels_get(const char *isa, pr_error *err);
/* Space-separated names of the ISAs this CPU and build can run, best last, e.g. "scalar avx2". */
const char *pr_kernels_available(void);

/* The q8_0 few-rows kernels' 4-row passes ask for each weight row's bytes this many rows ahead (about 32 KB
 * ahead, a multiple of 4 rows): without it, streaming a 143 MB q8_0 matrix in 4-row passes ran at half the
 * speed (benchmarks/RESULTS.md). Passes of one row (one stream) ask for a fixed distance ahead instead. */
static inline long pr_mv_prefetch_rows(long ldw) {
    long rows = (32768 / ldw + 3) / 4 * 4;
    return rows < 4 ? 4 : rows;
}

/* The decode attention kernels read cached rows ld values apart (each head's few values of every position):
 * strided reads from memory the hardware prefetchers follow poorly, so they ask for the rows this many
 * positions ahead, each row's n f16 values. */
#define PR_ATTN_PREFETCH 16
static inline void pr_prefetch_row(const uint16_t *row, long n) {
    uintptr_t line = (uintptr_t)row & ~(uintptr_t)63, end = (uintptr_t)(row + n);
    for (; line < end; line += 64) __builtin_prefetch((const void *)line);
}

/* The AVX2 int8 products, also those of the plain AVX-512 table (no VNNI), and the AVX2 q4_0 dequantiser and
 * weighted sum of the decode attention, every AVX-512 table's. */
void pr_avx2_gemm_q8_0(const void *W, long ldw, long nw, const void *X, long ldx, long nx, long nb, float *Y, long ldy);
void pr_avx2_dequantize_q4_0(const block_q4_0 *row, long nb, long b0, float *y, long n);
void pr_avx2_gemm_q4_0(const void *W, long ldw, long nw, const void *X, long ldx, long nx, long nb, float *Y, long ldy);
void pr_avx2_q4_0_prepare(const block_q8_0 *x, long nb, long s0, long s1, void *a); /* quant.h's walk */
void pr_avx2_attn_values_f16(const float *p, const uint16_t *v, long ld, long n, long hd, float *o);

/* Scalar pieces shared by every table (tails, reference element-wise functions). */
void pr_scalar_quantize_q8_0(const float *x, block_q8_0 *y, long n);
void pr_scalar_silu_mul(float *x, const float *u, long n);
void pr_scalar_bias_act_res(float *y, long ld, long rows, long n, const float *bias, int act, float *res);
float pr_scalar_exp_sum(float *x, long n, float m);
void pr_scalar_attn_values_f16(const float *p, const uint16_t *v, long ld, long n, long hd, float *o);
#endif
