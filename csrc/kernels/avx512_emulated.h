/* Developer builds only (setup.py, PARROT_EMULATE_AVX512=1): the AVX-512 intrinsics of kernels_avx512.c
 * implemented by SIMDe (Debian libsimde-dev) on top of AVX2, plus the few SIMDe 0.7 lacks written out below
 * from Intel's definitions, so that the AVX-512 + BF16 + VNNI table can be run and tested on CPUs without
 * AVX-512. Results follow the real instructions; speed does not. */
#ifndef PR_KERNELS_AVX512_EMULATED_H
#define PR_KERNELS_AVX512_EMULATED_H
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <math.h>
#include <simde/x86/avx512.h>
#include <immintrin.h> /* F16C: _cvtsh_ss, _cvtss_sh */

#define PR_EMU_UNARY(NAME, TO, FROM, BODY)                                                                    \
    static inline simde##TO NAME(simde##FROM a_) {                                                           \
        simde##FROM##_private a = simde##FROM##_to_private(a_);                                              \
        simde##TO##_private r;                                                                               \
        for (int i = 0; i < 16; i++) BODY;                                                                   \
        return simde##TO##_from_private(r);                                                                  \
    }
PR_EMU_UNARY(pr_emu_cvtepu16_epi32, __m512i, __m256i, r.i32[i] = a.u16[i])
PR_EMU_UNARY(pr_emu_cvtepi8_epi32, __m512i, __m128i, r.i32[i] = a.i8[i])
PR_EMU_UNARY(pr_emu_cvtepi32_ps, __m512, __m512i, r.f32[i] = (float)a.i32[i])
PR_EMU_UNARY(pr_emu_cvtph_ps, __m512, __m256i, r.f32[i] = _cvtsh_ss(a.u16[i]))
#undef PR_EMU_UNARY

static inline simde__m256i pr_emu_cvtps_ph(simde__m512 a_, int rounding) {
    simde__m512_private a = simde__m512_to_private(a_);
    simde__m256i_private r;
    for (int i = 0; i < 16; i++) r.u16[i] = _cvtss_sh(a.f32[i], 0); /* kernels only ask for nearest-even */
    (void)rounding;
    return simde__m256i_from_private(r);
}

/* round to nearest even (the default MXCSR mode, the only one the kernels use); out of range → INT_MIN */
static inline simde__m512i pr_emu_cvt_roundps_epi32(simde__m512 a_, int rounding) {
    simde__m512_private a = simde__m512_to_private(a_);
    simde__m512i_private r;
    for (int i = 0; i < 16; i++) {
        float v = nearbyintf(a.f32[i]);
        r.i32[i] = (v >= -2147483648.0f && v < 2147483648.0f) ? (int32_t)v : INT32_MIN;
    }
    (void)rounding;
    return simde__m512i_from_private(r);
}

static inline simde__m512 pr_emu_maskz_loadu_ps(simde__mmask16 k, const void *p) {
    simde__m512_private r;
    for (int i = 0; i < 16; i++) r.f32[i] = (k >> i) & 1 ? ((const float *)p)[i] : 0.0f;
    return simde__m512_from_private(r);
}

/* masked-out elements are not read, as with the real instructions */
static inline simde__m512i pr_emu_maskz_loadu_epi32(simde__mmask16 k, const void *p) {
    simde__m512i_private r;
    for (int i = 0; i < 16; i++) r.i32[i] = (k >> i) & 1 ? ((const int32_t *)p)[i] : 0;
    return simde__m512i_from_private(r);
}

static inline simde__m256i pr_emu_maskz_loadu_epi16(simde__mmask16 k, const void *p) {
    simde__m256i_private r;
    for (int i = 0; i < 16; i++) r.i16[i] = (k >> i) & 1 ? ((const int16_t *)p)[i] : 0;
    return simde__m256i_from_private(r);
}

static inline simde__m512i pr_emu_srai_epi32(simde__m512i a_, unsigned int n) {
    simde__m512i_private a = simde__m512i_to_private(a_), r;
    for (int i = 0; i < 16; i++) r.i32[i] = a.i32[i] >> (n > 31 ? 31 : n); /* arithmetic on GCC */
    return simde__m512i_from_private(r);
}

/* the reductions in the order GCC's avx512fintrin.h uses: halves, then quarters, then pairs */
#define PR_EMU_REDUCE(NAME, OP)                                                                               \
    static inline float NAME(simde__m512 a_) {                                                               \
        simde__m512_private a = simde__m512_to_private(a_);                                                  \
        float v[16];                                                                                         \
        for (int i = 0; i < 16; i++) v[i] = a.f32[i];                                                        \
        for (int w = 8; w >= 1; w /= 2)                                                                      \
            for (int i = 0; i < w; i++) v[i] = OP(v[i], v[i + w]);                                           \
        return v[0];                                                                                         \
    }
#define PR_EMU_ADD(x, y) ((x) + (y))
#define PR_EMU_MAX(x, y) ((x) > (y) ? (x) : (y))
PR_EMU_REDUCE(pr_emu_reduce_add_ps, PR_EMU_ADD)
PR_EMU_REDUCE(pr_emu_reduce_max_ps, PR_EMU_MAX)
#undef PR_EMU_REDUCE

#define _mm512_cvtepu16_epi32 pr_emu_cvtepu16_epi32
#define _mm512_cvtepi8_epi32 pr_emu_cvtepi8_epi32
#define _mm512_cvtepi32_ps pr_emu_cvtepi32_ps
#define _mm512_cvtph_ps pr_emu_cvtph_ps
#define _mm512_cvtps_ph pr_emu_cvtps_ph
#define _mm512_cvt_roundps_epi32 pr_emu_cvt_roundps_epi32
#define _mm512_maskz_loadu_ps pr_emu_maskz_loadu_ps
#define _mm512_maskz_loadu_epi32 pr_emu_maskz_loadu_epi32
#define _mm256_maskz_loadu_epi16 pr_emu_maskz_loadu_epi16
#define _mm512_srai_epi32 pr_emu_srai_epi32
#define _mm512_reduce_add_ps pr_emu_reduce_add_ps
#define _mm512_reduce_max_ps pr_emu_reduce_max_ps
#endif
