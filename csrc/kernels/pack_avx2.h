/* Packing for the GEMM micro-kernels (gemm.c) with AVX2, shared by kernels_avx2.c and kernels_avx512.c (which
 * include it after their intrinsics headers): 8 rows of f32 values, or of q8_0 blocks, transposed into k-major
 * order; and the four-way horizontal sum of the decode attention's scores. */
#ifndef PR_KERNELS_PACK_AVX2_H
#define PR_KERNELS_PACK_AVX2_H

/* dst[k·ldd + i] = src[i·ld + k] for i < 8, k < kc: 8×8 blocks transposed in registers (unpack, shuffle,
 * lane permute), the last kc % 8 columns one by one */
static void gemm_pack8(const float *src, long ld, long kc, float *dst, long ldd) {
    long k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 r0 = _mm256_loadu_ps(src + k), r1 = _mm256_loadu_ps(src + ld + k),
               r2 = _mm256_loadu_ps(src + 2 * ld + k), r3 = _mm256_loadu_ps(src + 3 * ld + k),
               r4 = _mm256_loadu_ps(src + 4 * ld + k), r5 = _mm256_loadu_ps(src + 5 * ld + k),
               r6 = _mm256_loadu_ps(src + 6 * ld + k), r7 = _mm256_loadu_ps(src + 7 * ld + k);
        __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
               t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
               t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
        __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE),
               u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE),
               u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
               u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
        float *d = dst + k * ldd;
        _mm256_storeu_ps(d, _mm256_permute2f128_ps(u0, u4, 0x20));
        _mm256_storeu_ps(d + ldd, _mm256_permute2f128_ps(u1, u5, 0x20));
        _mm256_storeu_ps(d + 2 * ldd, _mm256_permute2f128_ps(u2, u6, 0x20));
        _mm256_storeu_ps(d + 3 * ldd, _mm256_permute2f128_ps(u3, u7, 0x20));
        _mm256_storeu_ps(d + 4 * ldd, _mm256_permute2f128_ps(u0, u4, 0x31));
        _mm256_storeu_ps(d + 5 * ldd, _mm256_permute2f128_ps(u1, u5, 0x31));
        _mm256_storeu_ps(d + 6 * ldd, _mm256_permute2f128_ps(u2, u6, 0x31));
        _mm256_storeu_ps(d + 7 * ldd, _mm256_permute2f128_ps(u3, u7, 0x31));
    }
    for (; k < kc; k++)
        for (int i = 0; i < 8; i++) dst[k * ldd + i] = src[i * ld + k];
}

/* [Σ a, Σ b, Σ c, Σ d] over the 8 lanes of each: every vector's lanes are added in the same tree, whichever of
 * the four it is (a score does not depend on its place in a block of keys) */
static inline __m128 hsum4_ps(__m256 a, __m256 b, __m256 c, __m256 d) {
    __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b)); /* a0+a2 b0+b2 a1+a3 b1+b3 */
    __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
    __m256 s = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, 0x44), _mm256_shuffle_ps(ab, cd, 0xEE)); /* per 128 bits */
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
}

/* 8 q8_0 weight rows (ldw bytes apart), kc values from a block boundary (a multiple of 32), dequantised
 * straight into k-major order: dst[k·ldd + i] = d_i·q_i,k as dequantize_q8_0 computes it. Per block the 8 × 32
 * int8 values are transposed as bytes (three rounds of unpacks: 24 shuffles for 256 values, against 96 to
 * transpose them as floats), then widened 8 at a time with the 8 rows' scales: no f32 round trip through
 * memory. */
static void gemm_pack8_q8_0(const block_q8_0 *w, size_t ldw, long kc, float *dst, long ldd) {
    int8_t t[PR_QK * 8]; /* one block, k-major: t[8k + i] = q_i,k */
    for (long b = 0; b < kc / PR_QK; b++, dst += PR_QK * ldd) {
        const block_q8_0 *r[8];
        for (int i = 0; i < 8; i++) r[i] = (const block_q8_0 *)((const char *)w + i * ldw) + b;
#define LOADQ(i) _mm256_loadu_si256((const __m256i *)r[i]->qs)
        __m256i q0 = LOADQ(0), q1 = LOADQ(1), q2 = LOADQ(2), q3 = LOADQ(3), q4 = LOADQ(4), q5 = LOADQ(5),
                q6 = LOADQ(6), q7 = LOADQ(7);
#undef LOADQ
        /* bytes of row pairs: a0 = (r0 r1) for k 0-7 | 16-23, a1 for k 8-15 | 24-31 (one 128-bit lane each) */
        __m256i a0 = _mm256_unpacklo_epi8(q0, q1), a1 = _mm256_unpackhi_epi8(q0, q1),
                a2 = _mm256_unpacklo_epi8(q2, q3), a3 = _mm256_unpackhi_epi8(q2, q3),
                a4 = _mm256_unpacklo_epi8(q4, q5), a5 = _mm256_unpackhi_epi8(q4, q5),
                a6 = _mm256_unpacklo_epi8(q6, q7), a7 = _mm256_unpackhi_epi8(q6, q7);
        /* rows 0-3 (b0-b3) and 4-7 (b4-b7) per k: b0 k 0-3 | 16-19, b1 4-7 | 20-23, b2 8-11 | 24-27, b3 12-15 | 28-31 */
        __m256i b0 = _mm256_unpacklo_epi16(a0, a2), b1 = _mm256_unpackhi_epi16(a0, a2),
                b2 = _mm256_unpacklo_epi16(a1, a3), b3 = _mm256_unpackhi_epi16(a1, a3),
                b4 = _mm256_unpacklo_epi16(a4, a6), b5 = _mm256_unpackhi_epi16(a4, a6),
                b6 = _mm256_unpacklo_epi16(a5, a7), b7 = _mm256_unpackhi_epi16(a5, a7);
        /* all 8 rows per k: c[m] holds k = 2m, 2m + 1 (m < 4: low lane; the high lane k + 16), c[4 + m] k + 8 */
        __m256i c[8] = {_mm256_unpacklo_epi32(b0, b4), _mm256_unpackhi_epi32(b0, b4), _mm256_unpacklo_epi32(b1, b5),
                        _mm256_unpackhi_epi32(b1, b5), _mm256_unpacklo_epi32(b2, b6), _mm256_unpackhi_epi32(b2, b6),
                        _mm256_unpacklo_epi32(b3, b7), _mm256_unpackhi_epi32(b3, b7)};
        for (int m = 0; m < 8; m++) {
            _mm_storeu_si128((__m128i *)(t + 16 * m), _mm256_castsi256_si128(c[m]));
            _mm_storeu_si128((__m128i *)(t + 128 + 16 * m), _mm256_extracti128_si256(c[m], 1));
        }
        __m256 d = _mm256_cvtph_ps(_mm_setr_epi16((short)r[0]->d, (short)r[1]->d, (short)r[2]->d, (short)r[3]->d,
                                                  (short)r[4]->d, (short)r[5]->d, (short)r[6]->d, (short)r[7]->d));
        for (int k = 0; k < PR_QK; k++)
            _mm256_storeu_ps(dst + k * ldd,
                             _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(t + 8 * k))))));
    }
}
#endif
