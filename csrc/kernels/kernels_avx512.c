/* AVX-512 kernels: F/BW/VL/DQ for every table entry, plus AVX512_BF16 (vdpbf16ps) for bf16 weights and
 * AVX512_VNNI (vpdpbusd) for int8 blocks in the table chosen when the CPU has both (Cooper Lake, Sapphire
 * Rapids, Zen 4 and later).
 *
 * setup.py compiles this file with -mavx512bf16 -mavx512vnni; so that the compiler cannot slip those
 * instructions into code meant for plain AVX-512 CPUs (Skylake-X), everything outside the marked bf16/VNNI
 * section is compiled with them switched off. */
#if defined(__GNUC__) && !defined(__clang__) && !defined(PR_EMULATE_AVX512)
#pragma GCC push_options
#pragma GCC target("no-avx512bf16,no-avx512vnni")
#endif
#ifdef PR_EMULATE_AVX512
#include "kernels/avx512_emulated.h"
#else
#include <immintrin.h>
#endif
#include <math.h>

#include "kernels/kernels.h"
#include "kernels/pack_avx2.h"

static inline __m512 load_f16(const uint16_t *p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p)); }
static inline __m512 load_bf16(const uint16_t *p) {
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}
static inline __mmask16 tail_mask(long r) { return (__mmask16)((1u << r) - 1); }

static float dot_f32(const float *w, const float *x, long n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    if (i < n) {
        __mmask16 m = tail_mask(n - i);
        a1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, w + i), _mm512_maskz_loadu_ps(m, x + i), a1);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

static float dot_f16(const uint16_t *w, const float *x, long n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(load_f16(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(load_f16(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(load_f16(w + i), _mm512_loadu_ps(x + i), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; i < n; i++) s += pr_f16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_bf16(const uint16_t *w, const float *x, long n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0;
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm512_fmadd_ps(load_bf16(w + i), _mm512_loadu_ps(x + i), a0);
        a1 = _mm512_fmadd_ps(load_bf16(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
    }
    for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(load_bf16(w + i), _mm512_loadu_ps(x + i), a0);
    float s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    for (; i < n; i++) s += pr_bf16_to_f32(w[i]) * x[i];
    return s;
}

static void axpy_f32(float a, const float *x, float *y, long n) {
    __m512 av = _mm512_set1_ps(a);
    long i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(av, _mm512_loadu_ps(x + i), _mm512_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

/* ---- decode attention over an f16 cache (kernels.h), as kernels_avx2.c's with 16 lanes: scores 8 keys at a
 * time (each accumulator folded to 8 lanes, then summed four at a time); the values are kernels_avx2.c's */
static inline __m256 fold256(__m512 a) {
    return _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
}

static void attn_scores_f16(const uint16_t *k, long ld, long n, const float *q, long hd, float scale, float *s) {
    for (long t = 0; t < n; t += 8) {
        const uint16_t *r[8];
        __m512 a[8];
        for (int j = 0; j < 8; j++) r[j] = k + (t + j < n ? t + j : n - 1) * ld, a[j] = _mm512_setzero_ps();
        for (long j = t + PR_ATTN_PREFETCH; j < t + PR_ATTN_PREFETCH + 8 && j < n; j++) pr_prefetch_row(k + j * ld, hd);
        long i = 0;
        for (; i + 16 <= hd; i += 16) {
            __m512 x = _mm512_loadu_ps(q + i);
            for (int j = 0; j < 8; j++) a[j] = _mm512_fmadd_ps(load_f16(r[j] + i), x, a[j]);
        }
        float tail[8] = {0}, out[8];
        for (; i < hd; i++)
            for (int j = 0; j < 8; j++) tail[j] += pr_f16_to_f32(r[j][i]) * q[i];
        __m128 sc = _mm_set1_ps(scale);
        __m128 lo = hsum4_ps(fold256(a[0]), fold256(a[1]), fold256(a[2]), fold256(a[3]));
        __m128 hi = hsum4_ps(fold256(a[4]), fold256(a[5]), fold256(a[6]), fold256(a[7]));
        _mm_storeu_ps(out, _mm_mul_ps(_mm_add_ps(lo, _mm_loadu_ps(tail)), sc));
        _mm_storeu_ps(out + 4, _mm_mul_ps(_mm_add_ps(hi, _mm_loadu_ps(tail + 4)), sc));
        for (int j = 0; j < 8 && t + j < n; j++) s[t + j] = out[j];
    }
}

static inline float f16(uint16_t h) { return _cvtsh_ss(h); }
static void quantize_q8_0(const float *x, block_q8_0 *y, long n) {
    for (long b = 0; b < n / PR_QK; b++, x += PR_QK) {
        __m512 v0 = _mm512_loadu_ps(x), v1 = _mm512_loadu_ps(x + 16);
        float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        y[b].d = pr_f32_to_f16(d);
        const __m512 s = _mm512_set1_ps(id);
        const int r = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        __m512i i0 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v0, s), r);
        __m512i i1 = _mm512_cvt_roundps_epi32(_mm512_mul_ps(v1, s), r);
        __m128i q0 = _mm512_cvtsepi32_epi8(i0), q1 = _mm512_cvtsepi32_epi8(i1);
        __m256i q = _mm256_max_epi8(_mm256_set_m128i(q1, q0), _mm256_set1_epi8(-127));
        _mm256_storeu_si256((__m256i *)y[b].qs, q);
    }
}

static void f16_to_f32(const uint16_t *x, float *y, long n) {
    long i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, load_f16(x + i));
    for (; i < n; i++) y[i] = pr_f16_to_f32(x[i]);
}

static void bf16_to_f32(const uint16_t *x, float *y, long n) {
    long i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, load_bf16(x + i));
    for (; i < n; i++) y[i] = pr_bf16_to_f32(x[i]);
}

static void f32_to_f16(const float *x, uint16_t *y, long n) {
    long i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i), _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = pr_f32_to_f16(x[i]);
}

static void dequantize_q8_0(const block_q8_0 *x, float *y, long n) {
    for (long b = 0; b < n / PR_QK; b++, y += PR_QK) {
        __m512 d = _mm512_set1_ps(f16(x[b].d));
        _mm512_storeu_ps(y, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)x[b].qs)))));
        _mm512_storeu_ps(y + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
                                                      _mm_loadu_si128((const __m128i *)(x[b].qs + 16))))));
    }
}

/* exp as in kernels_avx2.c, 16 lanes */
static inline __m512 exp16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(-87.3f), hi = _mm512_set1_ps(88.7f);
    __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    /* scalef computes p·2^n without exponent overflow for n = 128 */
    return _mm512_maskz_mov_ps(keep, _mm512_scalef_ps(p, n));
}

static void silu_mul(float *x, const float *u, long n) {
    const __m512 one = _mm512_set1_ps(1.0f);
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        __m512 sig = _mm512_div_ps(v, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), v))));
        _mm512_storeu_ps(x + i, _mm512_mul_ps(sig, _mm512_loadu_ps(u + i)));
    }
    pr_scalar_silu_mul(x + i, u + i, n - i);
}

/* 0.5y·(1 + erf(y/√2)) through erfc (kernels.h: pr_erfc_p) */
static inline __m512 gelu16(__m512 y) {
    __m512 z = _mm512_mul_ps(_mm512_abs_ps(y), _mm512_set1_ps(PR_SQRT1_2));
    __m512 t = _mm512_div_ps(_mm512_set1_ps(1.0f), _mm512_fmadd_ps(z, _mm512_set1_ps(0.5f), _mm512_set1_ps(1.0f)));
    __m512 p = _mm512_set1_ps(pr_erfc_p[9]);
    for (int i = 8; i >= 0; i--) p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(pr_erfc_p[i]));
    __m512 e = _mm512_mul_ps(t, exp16(_mm512_fnmadd_ps(z, z, p))); /* erfc(z) */
    __mmask16 neg = _mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_LT_OQ);
    __m512 f = _mm512_mask_blend_ps(neg, _mm512_sub_ps(_mm512_set1_ps(2.0f), e), e); /* 1 + erf(y/√2) */
    return _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5f), y), f);
}

static void bias_act_res(float *y, long ld, long rows, long n, const float *bias, int act, float *res) {
    const __m512 one = _mm512_set1_ps(1.0f), kq = _mm512_set1_ps(-1.702f);
    for (long r = 0; r < rows; r++, y += ld, res = res ? res + ld : NULL) {
        long i = 0;
        for (; i + 16 <= n; i += 16) {
            __m512 v = _mm512_loadu_ps(y + i);
            if (bias) v = _mm512_add_ps(v, _mm512_loadu_ps(bias + i));
            if (act == PR_ACT_QUICK_GELU) v = _mm512_div_ps(v, _mm512_add_ps(one, exp16(_mm512_mul_ps(kq, v))));
            else if (act == PR_ACT_GELU) v = gelu16(v);
            _mm512_storeu_ps(y + i, v);
            if (res) _mm512_storeu_ps(res + i, _mm512_add_ps(_mm512_loadu_ps(res + i), v));
        }
        if (i < n) pr_scalar_bias_act_res(y + i, ld, 1, n - i, bias ? bias + i : NULL, act, res ? res + i : NULL);
    }
}

static float exp_sum(float *x, long n, float m) {
    __m512 acc = _mm512_setzero_ps(), mv = _mm512_set1_ps(m);
    long i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv));
        _mm512_storeu_ps(x + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    float s = _mm512_reduce_add_ps(acc);
    for (; i < n; i++) s += (x[i] = expf(x[i] - m));
    return s;
}

/* C rows [0, n) (ldc apart) = (accumulate ? C : 0) + c: the micro-kernels' accumulators out */
static inline void store_rows(__m512 (*c)[2], int n, float *C, long ldc, int accumulate) {
    for (int i = 0; i < n; i++) {
        float *ci = C + i * ldc;
        if (accumulate) {
            c[i][0] = _mm512_add_ps(_mm512_loadu_ps(ci), c[i][0]);
            c[i][1] = _mm512_add_ps(_mm512_loadu_ps(ci + 16), c[i][1]);
        }
        _mm512_storeu_ps(ci, c[i][0]);
        _mm512_storeu_ps(ci + 16, c[i][1]);
    }
}

/* packed-GEMM micro-kernel (gemm.c): 14 activation rows × 32 weight rows in 28 of the 32 zmm registers; per
 * k step 2 loads of B, 14 broadcasts of A, 28 FMAs */
#define ROW14(i) a = _mm512_set1_ps(A[14 * k + i]); \
    c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]); c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
static void gemm_ukernel(long kc, const float *A, const float *B, float *C, long ldc, int accumulate) {
    __m512 c[14][2], a, b0, b1;
    for (int i = 0; i < 14; i++) c[i][0] = c[i][1] = _mm512_setzero_ps();
    for (long k = 0; k < kc; k++) {
        b0 = _mm512_loadu_ps(B + 32 * k);
        b1 = _mm512_loadu_ps(B + 32 * k + 16);
        ROW14(0) ROW14(1) ROW14(2) ROW14(3) ROW14(4) ROW14(5) ROW14(6)
        ROW14(7) ROW14(8) ROW14(9) ROW14(10) ROW14(11) ROW14(12) ROW14(13)
    }
    store_rows(c, 14, C, ldc, accumulate);
}

/* the first mr < 14 rows of a strip, 4 at a time (8 accumulators; rows of a group past mr repeat row mr − 1
 * and are not stored): per element the same FMA chain as gemm_ukernel */
#define ROW4(i) a = _mm512_set1_ps(A[14 * k + o[i]]); \
    c[i][0] = _mm512_fmadd_ps(a, b0, c[i][0]); c[i][1] = _mm512_fmadd_ps(a, b1, c[i][1]);
static void gemm_ukernel_rows(long kc, const float *A, const float *B, float *C, long ldc, int accumulate, int mr) {
    for (int i0 = 0; i0 < mr; i0 += 4) {
        int o[4];
        __m512 c[4][2], a, b0, b1;
        for (int i = 0; i < 4; i++) {
            o[i] = i0 + i < mr ? i0 + i : mr - 1;
            c[i][0] = c[i][1] = _mm512_setzero_ps();
        }
        for (long k = 0; k < kc; k++) {
            b0 = _mm512_loadu_ps(B + 32 * k);
            b1 = _mm512_loadu_ps(B + 32 * k + 16);
            ROW4(0) ROW4(1) ROW4(2) ROW4(3)
        }
        store_rows(c, mr - i0 < 4 ? mr - i0 : 4, C + i0 * ldc, ldc, accumulate);
    }
}

/* FMA peak: 24 independent zmm chains */
#define PEAK_CHAINS 24
static double peak(int kind, long iters) {
    if (kind != 0) return 0;
    __m512 c[PEAK_CHAINS], b = _mm512_set1_ps(0.999f), d = _mm512_set1_ps(1e-3f);
    for (int r = 0; r < PEAK_CHAINS; r++) c[r] = _mm512_set1_ps((float)r);
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 24 /* the chains must live in registers */
        for (int r = 0; r < PEAK_CHAINS; r++) c[r] = _mm512_fmadd_ps(c[r], b, d);
    __m512 s = c[0];
    for (int r = 1; r < PEAK_CHAINS; r++) s = _mm512_add_ps(s, c[r]);
    volatile float sink = _mm512_reduce_add_ps(s);
    (void)sink;
    return 2.0 * 16 * PEAK_CHAINS * (double)iters;
}

const pr_kernels pr_kernels_avx512 = {
    .isa = "avx512",
    .dot_f32 = dot_f32, .dot_f16 = dot_f16, .dot_bf16 = dot_bf16, 
    .axpy_f32 = axpy_f32,
    .attn_scores_f16 = attn_scores_f16, .attn_values_f16 = pr_avx2_attn_values_f16,
    .quantize_q8_0 = quantize_q8_0,
    .f16_to_f32 = f16_to_f32, .bf16_to_f32 = bf16_to_f32, .f32_to_f16 = f32_to_f16,
    .dequantize_q8_0 = dequantize_q8_0, .dequantize_q4_0 = pr_avx2_dequantize_q4_0,
    .gemm_q8_0 = pr_avx2_gemm_q8_0, .gemm_q4_0 = pr_avx2_gemm_q4_0, .gemm_bf16 = NULL,
    .gemm_ukernel = gemm_ukernel, .gemm_ukernel_rows = gemm_ukernel_rows, .gemm_mr = 14, .gemm_nr = 32,
    .gemm_pack8 = gemm_pack8, .gemm_pack8_q8_0 = gemm_pack8_q8_0, .peak = peak,
    .silu_mul = silu_mul, .bias_act_res = bias_act_res, .exp_sum = exp_sum,
};

#if defined(__GNUC__) && !defined(__clang__) && !defined(PR_EMULATE_AVX512)
#pragma GCC pop_options
#endif

/* ---------------------------------------------------------------- AVX512_BF16 + AVX512_VNNI section */

/* ---- quantised weights × a few activation rows: decoding, batched decoding and short prompts (matmul.c's
 * matrix-vector path and its int8 tiles). Y[j·ldy + i] = W_i · X_j, X rows quantised to q8_0. vpdpbusd
 * multiplies unsigned by signed bytes and adds each 4 products into an int32 lane, so a lane is the exact
 * integer sum of its products, as in the scalar reference; the scale product d_w·d_x multiplies it in f32.
 * An output's lanes accumulate in the same order whatever the number of rows in the call and the output's
 * place in it: batching sequences or slicing rows between threads does not change a bit. */
#define ALWAYS_INLINE static inline __attribute__((always_inline))
/* Decoding streams each thread's slice of weights once; its software prefetch asks for the bytes this many
 * blocks ahead (1152 bytes of q4_0, 2176 of q8_0). The 4-row passes' distance (~32 KB, pr_mv_prefetch_rows) is
 * too far for one stream: a throwaway C loop over 300 MB weights on 2 threads, every distance timed on the same
 * buffers, with the host reading ~56 GB/s, streamed q8_0 at 38–40 GB/s with it and 45–48 at 1–2 KB
 * (benchmarks/RESULTS.md). */
#define MV_STREAM_AHEAD_BLOCKS 64

/* q8_0: one pass takes one weight row and up to 2 activation rows and walks their blocks two at a time, one
 * zmm per pair of blocks: each weight pair serves both activation rows, whose accumulators are independent
 * chains. Rows one at a time make each thread's slice of weights one sequential stream: passes of 4 rows
 * (each activation pair loaded once for the 4) read 4 interleaved streams per thread, and with both threads
 * streaming from memory that reached only ~2/3 of the bandwidth of one stream per thread (throwaway C loop
 * and decode A/B runs in benchmarks/RESULTS.md). Batches of more than 2 activation rows are compute-bound:
 * there passes take 4 weight rows, each activation pair loaded once for the 4 (one row per pass made 8-sequence
 * decoding of 0.5B q8_0 ~25 % slower). x + 128 (1..255) is the unsigned side; the accumulator starts at
 * −128·Σw of the lane. An odd last block runs as a pair with a zero second block. */
#define MV_ROWS 4 /* weight rows per pass for batches of > MV_ACTS activation rows */
#define MV_ACTS 2 /* activation rows per pass */

/* Activation blocks b, b+1 of one row: x + 128 and the scales in the lanes' pattern. `two` = 0: block b alone
 * (the second reads 128, against zero weights). */
typedef struct {
    __m512i q;
    __m512 d;
} act_pair;

ALWAYS_INLINE act_pair act_q8_0(const block_q8_0 *x, int two) {
    act_pair a;
    __m256i x0 = _mm256_loadu_si256((const __m256i *)x[0].qs);
    __m256i x1 = two ? _mm256_loadu_si256((const __m256i *)x[1].qs) : _mm256_setzero_si256();
    a.q = _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(x0), x1, 1), _mm512_set1_epi8((char)0x80));
    __m512 d0 = _mm512_set1_ps(f16(x[0].d)), d1 = _mm512_set1_ps(two ? f16(x[1].d) : 0.0f);
    a.d = _mm512_mask_blend_ps(0xff00, d0, d1);
    return a;
}

/* weight pair of one row: the signed bytes, their lane correction and their scales (as act_pair's) */
typedef struct {
    __m512i q, corr;
    __m512 d;
} w_pair;

ALWAYS_INLINE w_pair w_q8_0(const block_q8_0 *w, int two) {
    w_pair p;
    __m256i w0 = _mm256_loadu_si256((const __m256i *)w[0].qs);
    __m256i w1 = two ? _mm256_loadu_si256((const __m256i *)w[1].qs) : _mm256_setzero_si256();
    p.q = _mm512_inserti64x4(_mm512_castsi256_si512(w0), w1, 1);
    p.corr = _mm512_sub_epi32(_mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_setzero_si512(), _mm512_set1_epi8((char)0x80), p.q));
    if (two) /* d_b and d_b+1 are word 0 of 32-byte loads at each block: spread over the lanes by one permute */
        p.d = _mm512_cvtph_ps(_mm256_permutex2var_epi16(
            _mm256_loadu_si256((const __m256i *)w), _mm256_setr_epi16(0, 0, 0, 0, 0, 0, 0, 0, 16, 16, 16, 16, 16, 16, 16, 16),
            _mm256_loadu_si256((const __m256i *)&w[1])));
    else
        p.d = _mm512_maskz_mov_ps(0x00ff, _mm512_set1_ps(f16(w[0].d)));
    return p;
}

/* One step of a pass: blocks b and b+1 of R weight rows (ldw bytes apart) × A activation rows (constants after
 * inlining); pf: how far ahead (bytes) to ask for each row's stream. */
ALWAYS_INLINE void mv_step(int R, int A, int two, const char *W, long ldw, const char *X, long ldx, long b, long pf,
                           __m512 acc[MV_ROWS][MV_ACTS]) {
    act_pair x[MV_ACTS];
    for (int j = 0; j < A; j++) x[j] = act_q8_0((const block_q8_0 *)(X + j * ldx) + b, two);
    for (int r = 0; r < R; r++) {
        const char *w = W + r * ldw;
        const char *ahead = w + pf + b * (long)sizeof(block_q8_0); /* a step reads 68 bytes: two lines */
        __builtin_prefetch(ahead);
        __builtin_prefetch(ahead + 64);
        w_pair wp = w_q8_0((const block_q8_0 *)w + b, two);
        for (int j = 0; j < A; j++)
            acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(wp.corr, x[j].q, wp.q)),
                                        _mm512_mul_ps(wp.d, x[j].d), acc[r][j]);
    }
}

/* one pass: R weight rows × A activation rows, all nb blocks in pairs */
ALWAYS_INLINE void mv_pass(int R, int A, const char *W, long ldw, const char *X, long ldx, long nb, long pf,
                           float *Y, long ldy) {
    __m512 acc[MV_ROWS][MV_ACTS];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < A; j++) acc[r][j] = _mm512_setzero_ps();
    long b = 0;
    for (; b + 1 < nb; b += 2) mv_step(R, A, 1, W, ldw, X, ldx, b, pf, acc);
    if (b < nb) mv_step(R, A, 0, W, ldw, X, ldx, b, pf, acc);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < A; j++) Y[j * ldy + r] = _mm512_reduce_add_ps(acc[r][j]);
}

/* every pass of a call: one weight row at a time for one or two activation rows (one stream per thread);
 * for larger batches, where the activation work per weight byte makes the product compute-bound, 4 weight
 * rows per pass sharing each activation load (as many as fit: the results are the same bits either way) */
static void gemm_q8_0_vnni(const void *W, long ldw, long nw, const void *X, long ldx, long nx, long nb, float *Y,
                           long ldy) {
    int rows = nx > MV_ACTS ? MV_ROWS : 1;
    long pf = rows == 1 ? MV_STREAM_AHEAD_BLOCKS * (long)sizeof(block_q8_0) : pr_mv_prefetch_rows(ldw) * ldw;
    for (long i = 0; i < nw; i += rows)
        for (long j = 0; j < nx; j += MV_ACTS) {
            const char *w = (const char *)W + i * ldw, *x = (const char *)X + j * ldx;
            float *y = Y + j * ldy + i;
            int R = nw - i < rows ? (int)(nw - i) : rows, A = nx - j < MV_ACTS ? (int)(nx - j) : MV_ACTS;
            switch (R * 2 + A - 3) { /* R 1..4, A 1..2 */
            case 0: mv_pass(1, 1, w, ldw, x, ldx, nb, pf, y, ldy); break;
            case 1: mv_pass(1, 2, w, ldw, x, ldx, nb, pf, y, ldy); break;
            case 2: mv_pass(2, 1, w, ldw, x, ldx, nb, pf, y, ldy); break;
            case 3: mv_pass(2, 2, w, ldw, x, ldx, nb, pf, y, ldy); break;
            case 4: mv_pass(3, 1, w, ldw, x, ldx, nb, pf, y, ldy); break;
            case 5: mv_pass(3, 2, w, ldw, x, ldx, nb, pf, y, ldy); break;
            case 6: mv_pass(4, 1, w, ldw, x, ldx, nb, pf, y, ldy); break;
            default: mv_pass(4, 2, w, ldw, x, ldx, nb, pf, y, ldy); break;
            }
        }
}

/* q4_0 in superblocks (quant.h): 32-bit lane j of a weight superblock's chunk k holds block j's values 4k..4k+3
 * (low nibbles, n = q + 8) and 16+4k..16+4k+3 (high ones). Each activation row is laid out the same way once per
 * call (the AVX2 file's pr_avx2_q4_0_prepare: its two halves of 8 lanes are this struct's 16), so a weight row's superblock costs, per
 * activation row, 8 vpdpbusd, one conversion and one multiply-add, and its unpacking (4 loads, 8 masks) is shared
 * by up to SB_ACTS activation rows; no permute, no per-block scale. The low nibbles n & 15 and the high ones as
 * n & 0xF0 = 16·n (no shift) go into two int32 accumulators: lane j of the first is Σ n·x − 8·Σx (it starts at
 * the prepared −8·Σx), of the second 16·Σ n·x (|·| < 16·15·127·16 < 2³¹), which an arithmetic shift by 4
 * divides exactly; their sum is block j's Σ (n − 8)·x exactly, as the scalar reference. Lane j then adds
 * (d_w·d_x)·sum into the output's f32 accumulator, superblock after superblock: the order depends on nb alone.
 * A row's last superblock of m < 16 blocks is read with masked loads (lanes ≥ m zero on both sides). */
typedef struct {
    __m512i lo[4], hi[4]; /* lane j: block j's x[4k..4k+3] / x[16+4k..16+4k+3] */
    __m512i bias;         /* lane j: −8·Σ block j's x */
    __m512 d;             /* lane j: block j's scale */
} act_sb;
_Static_assert(sizeof(act_sb) == PR_Q4_0_ACT_BYTES, "a prepared superblock as quant.h's walk lays them out");
#define SB_ACTS PR_Q4_0_PASS_ACTS

/* one weight superblock of m blocks (m = 16: plain loads) against A prepared activation superblocks (nsb apart) */
ALWAYS_INLINE void sb_step(int A, int whole, const char *sb, long m, const act_sb *x, long nsb, __m512 acc[SB_ACTS]) {
    const __m512i low = _mm512_set1_epi8(0x0f), high = _mm512_set1_epi8((char)0xf0);
    __m512i lo[4], hi[4];
    __m512 dw;
    __mmask16 k16 = (__mmask16)((1u << m) - 1);
    for (int k = 0; k < 4; k++) {
        __m512i v = whole ? _mm512_loadu_si512(sb + 2 * PR_Q4_0_SB + 4 * PR_Q4_0_SB * k)
                          : _mm512_maskz_loadu_epi32(k16, sb + 2 * m + 4 * m * k);
        lo[k] = _mm512_and_si512(v, low);
        hi[k] = _mm512_and_si512(v, high);
    }
    dw = _mm512_cvtph_ps(whole ? _mm256_loadu_si256((const __m256i *)sb) : _mm256_maskz_loadu_epi16(k16, sb));
    for (int j = 0; j < A; j++) {
        const act_sb *a = x + j * nsb;
        __m512i sl = a->bias, sh = _mm512_setzero_si512();
        for (int k = 0; k < 4; k++) {
            sl = _mm512_dpbusd_epi32(sl, lo[k], a->lo[k]);
            sh = _mm512_dpbusd_epi32(sh, hi[k], a->hi[k]);
        }
        __m512i sum = _mm512_add_epi32(sl, _mm512_srai_epi32(sh, 4));
        acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(dw, a->d), acc[j]);
    }
}

/* quant.h's walk, row[A − 1]: superblocks s0..s1−1 of one weight row (nb blocks) against A prepared activation
 * rows (s1 − s0 apart), stored into y or added to it; the row's bytes are asked for 64 blocks ahead */
ALWAYS_INLINE void row_sb(int A, const char *w, long nb, long s0, long s1, const act_sb *x, float *y, long ldy, int add) {
    const long pf = MV_STREAM_AHEAD_BLOCKS * (long)sizeof(block_q4_0);
    const long bytes = PR_Q4_0_SB * (long)sizeof(block_q4_0); /* 288: a superblock spans 5 or 6 lines */
    long whole = nb / PR_Q4_0_SB < s1 ? nb / PR_Q4_0_SB : s1, nsb = s1 - s0;
    __m512 acc[SB_ACTS];
    for (int j = 0; j < A; j++) acc[j] = _mm512_setzero_ps();
    for (long s = s0; s < whole; s++) {
        const char *sb = w + s * bytes;
        for (long l = 0; l < bytes; l += 64) __builtin_prefetch(sb + pf + l);
        sb_step(A, 1, sb, PR_Q4_0_SB, x + s - s0, nsb, acc);
    }
    if (whole < s1) sb_step(A, 0, w + whole * bytes, nb - whole * PR_Q4_0_SB, x + whole - s0, nsb, acc);
    for (int j = 0; j < A; j++) y[j * ldy] = (add ? y[j * ldy] : 0.0f) + _mm512_reduce_add_ps(acc[j]);
}

PR_Q4_0_WALK(walk, pr_avx2_q4_0_prepare, row_sb)

static void gemm_q4_0_vnni(const void *W, long ldw, long nw, const void *X, long ldx, long nx, long nb, float *Y,
                           long ldy) {
    pr_q4_0_gemm(&walk, W, ldw, nw, X, ldx, nx, nb, Y, ldy);
}

/* bf16 weights × f32 activations with vdpbf16ps. An activation x is split as x = hi + lo, both bf16
 * (lo = bf16(x − hi)), so W·x = W·hi + W·lo keeps ~16 significant bits of x instead of bf16's 8: results stay
 * as close to the f32 path as the widening one. X rows hold hi[k] then lo[k] (bf16, 2k values, k a multiple
 * of 32 for the vector part). Tiles of 4 weight rows × 2 activation rows. */
static inline __m512bh ld_bh(const uint16_t *p) { return (__m512bh)_mm512_loadu_si512((const void *)p); }

static float dot_bf16_split(const uint16_t *w, const uint16_t *x, long k) {
    __m512 acc = _mm512_setzero_ps();
    long i = 0;
    for (; i + 32 <= k; i += 32) {
        __m512bh wv = ld_bh(w + i);
        acc = _mm512_dpbf16_ps(acc, wv, ld_bh(x + i));
        acc = _mm512_dpbf16_ps(acc, wv, ld_bh(x + k + i));
    }
    float s = _mm512_reduce_add_ps(acc);
    for (; i < k; i++) s += pr_bf16_to_f32(w[i]) * (pr_bf16_to_f32(x[i]) + pr_bf16_to_f32(x[k + i]));
    return s;
}

static void gemm_bf16(const void *W, long ldw, long nw, const void *X, long ldx, long nx, long k, float *Y, long ldy) {
    const char *Wc = W, *Xc = X;
    long nw4 = nw - nw % 4, nx2 = nx - nx % 2, kv = k - k % 32;
    for (long j0 = 0; j0 < nx2; j0 += 32)
        for (long i = 0; i < nw4; i += 4) {
            long j1 = j0 + 32 < nx2 ? j0 + 32 : nx2;
            for (long j = j0; j < j1; j += 2) {
                const uint16_t *x0 = (const uint16_t *)(Xc + j * ldx), *x1 = (const uint16_t *)(Xc + (j + 1) * ldx);
                __m512 acc[4][2];
                for (int r = 0; r < 4; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
                for (long e = 0; e < kv; e += 32) {
                    __m512bh h0 = ld_bh(x0 + e), l0 = ld_bh(x0 + k + e), h1 = ld_bh(x1 + e), l1 = ld_bh(x1 + k + e);
                    for (int r = 0; r < 4; r++) {
                        __m512bh wv = ld_bh((const uint16_t *)(Wc + (i + r) * ldw) + e);
                        acc[r][0] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[r][0], wv, h0), wv, l0);
                        acc[r][1] = _mm512_dpbf16_ps(_mm512_dpbf16_ps(acc[r][1], wv, h1), wv, l1);
                    }
                }
                for (int r = 0; r < 4; r++) {
                    const uint16_t *w = (const uint16_t *)(Wc + (i + r) * ldw);
                    float s0 = _mm512_reduce_add_ps(acc[r][0]), s1 = _mm512_reduce_add_ps(acc[r][1]);
                    for (long e = kv; e < k; e++) {
                        float wf = pr_bf16_to_f32(w[e]);
                        s0 += wf * (pr_bf16_to_f32(x0[e]) + pr_bf16_to_f32(x0[k + e]));
                        s1 += wf * (pr_bf16_to_f32(x1[e]) + pr_bf16_to_f32(x1[k + e]));
                    }
                    Y[j * ldy + i + r] = s0;
                    Y[(j + 1) * ldy + i + r] = s1;
                }
            }
        }
    for (long j = 0; j < nx; j++)
        for (long i = (j < nx2 ? nw4 : 0); i < nw; i++)
            Y[j * ldy + i] = dot_bf16_split((const uint16_t *)(Wc + i * ldw), (const uint16_t *)(Xc + j * ldx), k);
}

/* peaks of the bf16 pair (vdpbf16ps: 32 multiply-adds per zmm) and int8 quad (vpdpbusd: 64) dot products */
static double peak_bf16_vnni(int kind, long iters) {
    if (kind == 0) return peak(0, iters);
    if (kind == 1) {
        __m512 c[PEAK_CHAINS];
        __m512bh b = (__m512bh)_mm512_set1_epi16(0x3f80); /* bf16 1.0 */
        for (int r = 0; r < PEAK_CHAINS; r++) c[r] = _mm512_set1_ps((float)r);
        for (long it = 0; it < iters; it++)
#pragma GCC unroll 24
            for (int r = 0; r < PEAK_CHAINS; r++) c[r] = _mm512_dpbf16_ps(c[r], b, b);
        __m512 s = c[0];
        for (int r = 1; r < PEAK_CHAINS; r++) s = _mm512_add_ps(s, c[r]);
        volatile float sink = _mm512_reduce_add_ps(s);
        (void)sink;
        return 2.0 * 32 * PEAK_CHAINS * (double)iters;
    }
    if (kind == 2) { /* named chains: GCC kept an array of these in memory (a store per instruction) */
        __m512i b = _mm512_set1_epi8(1), c0 = _mm512_set1_epi32(0), c1 = _mm512_set1_epi32(1),
                c2 = _mm512_set1_epi32(2), c3 = _mm512_set1_epi32(3), c4 = _mm512_set1_epi32(4),
                c5 = _mm512_set1_epi32(5), c6 = _mm512_set1_epi32(6), c7 = _mm512_set1_epi32(7),
                c8 = _mm512_set1_epi32(8), c9 = _mm512_set1_epi32(9), c10 = _mm512_set1_epi32(10),
                c11 = _mm512_set1_epi32(11); /* distinct: identical chains would be merged into one */
        for (long it = 0; it < iters; it++) {
            c0 = _mm512_dpbusd_epi32(c0, b, b), c1 = _mm512_dpbusd_epi32(c1, b, b);
            c2 = _mm512_dpbusd_epi32(c2, b, b), c3 = _mm512_dpbusd_epi32(c3, b, b);
            c4 = _mm512_dpbusd_epi32(c4, b, b), c5 = _mm512_dpbusd_epi32(c5, b, b);
            c6 = _mm512_dpbusd_epi32(c6, b, b), c7 = _mm512_dpbusd_epi32(c7, b, b);
            c8 = _mm512_dpbusd_epi32(c8, b, b), c9 = _mm512_dpbusd_epi32(c9, b, b);
            c10 = _mm512_dpbusd_epi32(c10, b, b), c11 = _mm512_dpbusd_epi32(c11, b, b);
        }
        __m512i s = _mm512_add_epi32(_mm512_add_epi32(_mm512_add_epi32(c0, c1), _mm512_add_epi32(c2, c3)),
                                     _mm512_add_epi32(_mm512_add_epi32(c4, c5), _mm512_add_epi32(c6, c7)));
        s = _mm512_add_epi32(s, _mm512_add_epi32(_mm512_add_epi32(c8, c9), _mm512_add_epi32(c10, c11)));
        volatile int sink = _mm_cvtsi128_si32(_mm512_castsi512_si128(s));
        (void)sink;
        return 2.0 * 64 * 12 * (double)iters;
    }
    return 0;
}

const pr_kernels pr_kernels_avx512_bf16 = {
    .isa = "avx512",
    .dot_f32 = dot_f32, .dot_f16 = dot_f16, .dot_bf16 = dot_bf16,
    .quantize_q8_0 = quantize_q8_0, .axpy_f32 = axpy_f32,
    .attn_scores_f16 = attn_scores_f16, .attn_values_f16 = pr_avx2_attn_values_f16,
    .f16_to_f32 = f16_to_f32, .bf16_to_f32 = bf16_to_f32, .f32_to_f16 = f32_to_f16,
    .dequantize_q8_0 = dequantize_q8_0, .dequantize_q4_0 = pr_avx2_dequantize_q4_0,
    .gemm_q8_0 = gemm_q8_0_vnni, .gemm_q4_0 = gemm_q4_0_vnni, .gemm_bf16 = gemm_bf16, .int8_tiles = 1,
    .gemm_ukernel = gemm_ukernel, .gemm_ukernel_rows = gemm_ukernel_rows, .gemm_mr = 14, .gemm_nr = 32,
    .gemm_pack8 = gemm_pack8, .gemm_pack8_q8_0 = gemm_pack8_q8_0, .peak = peak_bf16_vnni,
    .silu_mul = silu_mul, .bias_act_res = bias_act_res, .exp_sum = exp_sum,
};
