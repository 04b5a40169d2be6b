/* AVX2 + FMA + F16C kernels (x86-64 since Haswell / Zen). Same results as kernels_scalar.c up to the order of
 * float additions; quantised blocks are summed exactly in integers.
 *
 * int8 products use the sign trick (no unsigned×signed pitfalls): |w| (unsigned) × (x·sign(w)) (signed) with
 * vpmaddubsw gives the same pairwise sums as w×x; |w| ≤ 127 and |x| ≤ 127 keep each pair below 2^15. */
#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "kernels/kernels.h"
#include "kernels/pack_avx2.h"

static inline float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 load_bf16(const uint16_t *p) {
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}
static inline __m256 load_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }

static float dot_f32(const float *w, const float *x, long n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) s += w[i] * x[i];
    return s;
}

static float dot_f16(const uint16_t *w, const float *x, long n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(load_f16(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(load_f16(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(load_f16(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(load_f16(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_f16(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) s += pr_f16_to_f32(w[i]) * x[i];
    return s;
}

static float dot_bf16(const uint16_t *w, const float *x, long n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    long i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_fmadd_ps(load_bf16(w + i), _mm256_loadu_ps(x + i), a0);
        a1 = _mm256_fmadd_ps(load_bf16(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
        a2 = _mm256_fmadd_ps(load_bf16(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
        a3 = _mm256_fmadd_ps(load_bf16(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
    }
    for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(load_bf16(w + i), _mm256_loadu_ps(x + i), a0);
    float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
    for (; i < n; i++) s += pr_bf16_to_f32(w[i]) * x[i];
    return s;
}

static void axpy_f32(float a, const float *x, float *y, long n) {
    __m256 av = _mm256_set1_ps(a);
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

static inline float f16(uint16_t h) { return _cvtsh_ss(h); }
static inline __m256i load32(const int8_t *p) { return _mm256_loadu_si256((const __m256i *)p); }

static void quantize_q8_0(const float *x, block_q8_0 *y, long n) {
    const __m256 sign = _mm256_set1_ps(-0.0f);
    for (long b = 0; b < n / PR_QK; b++, x += PR_QK) {
        __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8), v2 = _mm256_loadu_ps(x + 16),
               v3 = _mm256_loadu_ps(x + 24);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        h = _mm_max_ps(h, _mm_movehl_ps(h, h));
        h = _mm_max_ss(h, _mm_movehdup_ps(h));
        float amax = _mm_cvtss_f32(h), d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        y[b].d = pr_f32_to_f16(d);
        const __m256 s = _mm256_set1_ps(id);
        const int r = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        __m256i i0 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v0, s), r));
        __m256i i1 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v1, s), r));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v2, s), r));
        __m256i i3 = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v3, s), r));
        /* packs work within 128-bit lanes: restore value order with one dword permutation */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        p = _mm256_max_epi8(p, _mm256_set1_epi8(-127)); /* as the reference's clamp */
        _mm256_storeu_si256((__m256i *)y[b].qs, p);
    }
}

static void f16_to_f32(const uint16_t *x, float *y, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, load_f16(x + i));
    for (; i < n; i++) y[i] = pr_f16_to_f32(x[i]);
}

static void bf16_to_f32(const uint16_t *x, float *y, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, load_bf16(x + i));
    for (; i < n; i++) y[i] = pr_bf16_to_f32(x[i]);
}

static void f32_to_f16(const float *x, uint16_t *y, long n) {
    long i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = pr_f32_to_f16(x[i]);
}

static void dequantize_q8_0(const block_q8_0 *x, float *y, long n) {
    for (long b = 0; b < n / PR_QK; b++, y += PR_QK) {
        __m256 d = _mm256_set1_ps(f16(x[b].d));
        for (int i = 0; i < PR_QK; i += 8) {
            __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(x[b].qs + i)));
            _mm256_storeu_ps(y + i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(q)));
        }
    }
}

/* block b of a q4_0 row in memory (nb blocks; quant.h's superblocks): its 16 file bytes (values 0..15 in the low
 * nibbles, 16..31 in the high ones) and its scale */
static inline __m128i q4_0_block(const block_q4_0 *row, long nb, long b, float *d) {
    block_q4_0 t = pr_q4_0_block(row, nb, b);
    *d = f16(t.d);
    return _mm_loadu_si128((const __m128i *)t.qs);
}

/* 16 file bytes of a q4_0 block → its 32 values d·(n − 8) */
static inline void q4_0_values(__m128i q, float dw, float *y) {
    const __m128i mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
    __m128i lo = _mm_sub_epi8(_mm_and_si128(q, mask), eight), hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(q, 4), mask), eight);
    __m256 d = _mm256_set1_ps(dw);
    _mm256_storeu_ps(y, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo))));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)))));
    _mm256_storeu_ps(y + 16, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi))));
    _mm256_storeu_ps(y + 24, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)))));
}

/* Blocks 4i..4i+3 of a superblock come back from its 4 chunks by one 4 × 4 transpose of 32-bit words (the GEMM's
 * K blocks start at multiples of 4 blocks); other blocks one at a time. */
void pr_avx2_dequantize_q4_0(const block_q4_0 *row, long nb, long b0, float *y, long n) {
    long b1 = b0 + n / PR_QK;
    for (long b = b0; b < b1;) {
        long s = b / PR_Q4_0_SB, j = b % PR_Q4_0_SB, m = pr_q4_0_sb_blocks(nb, s);
        const char *p = (const char *)(row + s * PR_Q4_0_SB);
        if (j % 4 == 0 && j + 4 <= m && b + 4 <= b1) {
            __m128i c[4], t[4], q[4];
            uint16_t h[4];
            memcpy(h, p + 2 * j, sizeof h);
            for (int k = 0; k < 4; k++) c[k] = _mm_loadu_si128((const __m128i *)(p + 2 * m + 4 * m * k + 4 * j));
            t[0] = _mm_unpacklo_epi32(c[0], c[1]), t[1] = _mm_unpackhi_epi32(c[0], c[1]);
            t[2] = _mm_unpacklo_epi32(c[2], c[3]), t[3] = _mm_unpackhi_epi32(c[2], c[3]);
            q[0] = _mm_unpacklo_epi64(t[0], t[2]), q[1] = _mm_unpackhi_epi64(t[0], t[2]);
            q[2] = _mm_unpacklo_epi64(t[1], t[3]), q[3] = _mm_unpackhi_epi64(t[1], t[3]);
            for (int i = 0; i < 4; i++) q4_0_values(q[i], f16(h[i]), y + i * PR_QK);
            b += 4, y += 4 * PR_QK;
        } else {
            float dw;
            __m128i q = q4_0_block(row, nb, b, &dw);
            q4_0_values(q, dw, y);
            b += 1, y += PR_QK;
        }
    }
}

/* ---- quantised weights × a few activation rows (decoding, batched decoding, short prompts): Y[j·ldy + i] =
 * W_i · X_j with X quantised to q8_0. vpmaddubsw multiplies unsigned by signed bytes and adds pairs into int16
 * without saturating here (≤ 2·15·127 for q4_0, ≤ 2·127·127 for q8_0), so each int32 lane is the exact sum of
 * its products, as in the scalar reference; d_w·d_x scales it in f32. An output's lanes accumulate in the same
 * order whatever the number of rows in the call and its place there: batching and threads' slices do not
 * change a bit. The plain AVX-512 table uses these too (it has no VNNI; vpmaddubsw is the same at 256 bits).
 *
 * q8_0: a pass takes up to 4 weight rows against one activation row: each activation block is loaded once for
 * the 4 rows, whose accumulators are independent chains; |w| against x with w's signs (vpsignb). */
#define MV_ROWS 4
#define ALWAYS_INLINE static inline __attribute__((always_inline))

ALWAYS_INLINE __m256i madd_u8s8(__m256i u, __m256i s) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

/* one q8_0 pass, R rows (a constant after inlining) */
ALWAYS_INLINE void mv_pass(int R, const char *W, long ldw, const block_q8_0 *x, long nb, float *Y) {
    __m256 acc[MV_ROWS];
    for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
    long pf_rows = pr_mv_prefetch_rows(ldw);
    for (long b = 0; b < nb; b++) {
        __m256i xq = load32(x[b].qs);
        float dx = f16(x[b].d);
        for (int r = 0; r < R; r++) {
            __builtin_prefetch(W + (r + pf_rows) * ldw + b * (long)sizeof(block_q8_0));
            const block_q8_0 *w = (const block_q8_0 *)(W + r * ldw) + b;
            __m256i wq = load32(w->qs);
            __m256i s = madd_u8s8(_mm256_sign_epi8(wq, wq), _mm256_sign_epi8(xq, wq));
            acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(f16(w->d) * dx), acc[r]);
        }
    }
    for (int r = 0; r < R; r++) Y[r] = hsum(acc[r]);
}

void pr_avx2_gemm_q8_0(const void *W, long ldw, long nw, const void *X, long ldx, long nx, long nb, float *Y, long ldy) {
    for (long i = 0; i < nw; i += MV_ROWS)
        for (long j = 0; j < nx; j++) {
            const char *w = (const char *)W + i * ldw;
            const block_q8_0 *x = (const block_q8_0 *)((const char *)X + j * ldx);
            float *y = Y + j * ldy + i;
            switch (nw - i < MV_ROWS ? nw - i : MV_ROWS) {
            case 1: mv_pass(1, w, ldw, x, nb, y); break;
            case 2: mv_pass(2, w, ldw, x, nb, y); break;
            case 3: mv_pass(3, w, ldw, x, nb, y); break;
            default: mv_pass(4, w, ldw, x, nb, y); break;
            }
        }
}

/* q4_0 in superblocks (quant.h): 32-bit lane j of a weight superblock's chunk k holds block j's values 4k..4k+3
 * (low nibbles, n = q + 8) and 16+4k..16+4k+3 (high ones); a ymm takes 8 blocks. Each activation row is laid out
 * the same way once per call (pr_avx2_q4_0_prepare: 8 × 8 transposes of the blocks' 32-bit words), so per 8 blocks and
 * activation row the kernel issues 8 vpmaddubsw, whose pair sums (≤ 2·15·127) add up in int16 over all 8
 * (≤ 16·15·127 = 30480 < 2¹⁵: exact), one vpmaddwd to int32 lanes (block j's Σ n·x), the prepared −8·Σx, and one
 * multiply-add by d_w·d_x; the unpacking of the weights is shared by up to SB_ACTS activation rows. Each output's
 * f32 lanes accumulate half-superblock after half-superblock: the order depends on nb alone. */
typedef struct {
    __m256i lo[4][2], hi[4][2]; /* [k][half]: lane j of half h is block 8h + j's x[4k..4k+3] / x[16+4k..16+4k+3] */
    __m256i bias[2];            /* −8·Σ of each block's x */
    __m256 d[2];                /* each block's scale */
} act_sb;
_Static_assert(sizeof(act_sb) == PR_Q4_0_ACT_BYTES, "a prepared superblock as quant.h's walk lays them out");
#define SB_ACTS PR_Q4_0_PASS_ACTS

/* superblocks s0..s1−1 of an activation row (nb blocks); the AVX-512 VNNI kernel reads the same bytes */
void pr_avx2_q4_0_prepare(const block_q8_0 *x, long nb, long s0, long s1, void *out) {
    act_sb *a = out;
    for (long s = s0; s < s1; s++, a++) {
        long m = pr_q4_0_sb_blocks(nb, s);
        const block_q8_0 *xs = x + s * PR_Q4_0_SB;
        for (int h = 0; h < 2; h++) {
            __m256i r[8], t[8], u[8], sum = _mm256_setzero_si256();
            uint16_t d[8] = {0};
            for (int i = 0; i < 8; i++) {
                r[i] = 8 * h + i < m ? _mm256_loadu_si256((const __m256i *)xs[8 * h + i].qs) : _mm256_setzero_si256();
                if (8 * h + i < m) d[i] = xs[8 * h + i].d;
            }
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
                u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
                u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
                u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
            }
            /* u[c] (c < 4): word c of blocks 0..3 in the low lane, word c + 4 in the high one; u[4 + c]: blocks 4..7 */
            for (int c = 0; c < 4; c++) {
                a->lo[c][h] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x20);
                a->hi[c][h] = _mm256_permute2x128_si256(u[c], u[4 + c], 0x31);
                sum = _mm256_add_epi32(sum, _mm256_add_epi32(madd_u8s8(_mm256_set1_epi8(1), a->lo[c][h]),
                                                             madd_u8s8(_mm256_set1_epi8(1), a->hi[c][h])));
            }
            a->bias[h] = _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sum, 3));
            a->d[h] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)d));
        }
    }
}

/* half h of a weight superblock of m blocks against A prepared activation superblocks (nsb apart) */
ALWAYS_INLINE void sb_half(int A, const char *sb, long m, int h, const act_sb *x, long nsb, __m256 acc[SB_ACTS]) {
    const __m256i mask = _mm256_set1_epi8(0x0f);
    long n = m - 8 * h; /* blocks in this half: a full one (always, in a whole superblock: m = 16 folds to a
                         * constant) is read with plain loads, at the short layout's offsets when m < 16 */
    int full = n >= 8;
    __m256i lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    __m256i s16[SB_ACTS];
    for (int j = 0; j < A; j++) s16[j] = _mm256_setzero_si256();
    for (int k = 0; k < 4; k++) {
        const char *p = sb + 2 * m + 4 * m * k + 32 * h;
        __m256i v = full ? _mm256_loadu_si256((const __m256i *)p) : _mm256_maskload_epi32((const int *)p, lanes);
        __m256i lo = _mm256_and_si256(v, mask), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
        for (int j = 0; j < A; j++) {
            const act_sb *a = x + j * nsb;
            s16[j] = _mm256_add_epi16(s16[j], _mm256_add_epi16(_mm256_maddubs_epi16(lo, a->lo[k][h]),
                                                               _mm256_maddubs_epi16(hi, a->hi[k][h])));
        }
    }
    __m256 dw;
    if (full) dw = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(sb + 16 * h)));
    else { /* the half's n < 8 scales: the ⌈n/2⌉ 32-bit words holding them, then the lanes past n zeroed (an odd n
            * brings in 2 bytes of the next field, which may read as an f16 NaN; no copy through memory, whose
            * narrow stores would stall the wide load) */
        __m128i words = _mm_cmpgt_epi32(_mm_set1_epi32((int)(n + 1) / 2), _mm_setr_epi32(0, 1, 2, 3));
        dw = _mm256_and_ps(_mm256_cvtph_ps(_mm_maskload_epi32((const int *)(sb + 16 * h), words)),
                           _mm256_castsi256_ps(lanes));
    }
    for (int j = 0; j < A; j++) {
        const act_sb *a = x + j * nsb;
        __m256i s = _mm256_add_epi32(_mm256_madd_epi16(s16[j], _mm256_set1_epi16(1)), a->bias[h]);
        acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(dw, a->d[h]), acc[j]);
    }
}

/* quant.h's walk, row[A − 1]: superblocks s0..s1−1 of one weight row (nb blocks) against A prepared activation
 * rows (s1 − s0 apart), stored into y or added to it; the row's bytes are asked for 64 blocks ahead */
ALWAYS_INLINE void row_sb(int A, const char *w, long nb, long s0, long s1, const act_sb *x, float *y, long ldy, int add) {
    const long pf = 64 * (long)sizeof(block_q4_0);
    const long bytes = PR_Q4_0_SB * (long)sizeof(block_q4_0); /* 288 */
    long whole = nb / PR_Q4_0_SB < s1 ? nb / PR_Q4_0_SB : s1, nsb = s1 - s0;
    __m256 acc[SB_ACTS];
    for (int j = 0; j < A; j++) acc[j] = _mm256_setzero_ps();
    for (long s = s0; s < whole; s++) {
        const char *sb = w + s * bytes;
        for (long l = 0; l < bytes; l += 64) __builtin_prefetch(sb + pf + l);
        sb_half(A, sb, PR_Q4_0_SB, 0, x + s - s0, nsb, acc);
        sb_half(A, sb, PR_Q4_0_SB, 1, x + s - s0, nsb, acc);
    }
    if (whole < s1) {
        long m = nb - whole * PR_Q4_0_SB;
        sb_half(A, w + whole * bytes, m, 0, x + whole - s0, nsb, acc);
        if (m > 8) sb_half(A, w + whole * bytes, m, 1, x + whole - s0, nsb, acc);
    }
    for (int j = 0; j < A; j++) y[j * ldy] = (add ? y[j * ldy] : 0.0f) + hsum(acc[j]);
}

PR_Q4_0_WALK(walk, pr_avx2_q4_0_prepare, row_sb)

void pr_avx2_gemm_q4_0(const void *W, long ldw, long nw, const void *X, long ldx, long nx, long nb, float *Y, long ldy) {
    pr_q4_0_gemm(&walk, W, ldw, nw, X, ldx, nx, nb, Y, ldy);
}

/* ---- decode attention over an f16 cache (kernels.h): scores 4 keys at a time, one accumulator each (a last
 * group of fewer repeats its last key and stores only the real ones); values in stripes of up to 4 vectors
 * of output columns, even and odd rows into separate accumulators so that two FMA chains per column run */
static void attn_scores_f16(const uint16_t *k, long ld, long n, const float *q, long hd, float scale, float *s) {
    for (long t = 0; t < n; t += 4) {
        const uint16_t *r[4];
        for (int j = 0; j < 4; j++) r[j] = k + (t + j < n ? t + j : n - 1) * ld;
        for (long j = t + PR_ATTN_PREFETCH; j < t + PR_ATTN_PREFETCH + 4 && j < n; j++) pr_prefetch_row(k + j * ld, hd);
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        long i = 0;
        for (; i + 8 <= hd; i += 8) {
            __m256 x = _mm256_loadu_ps(q + i);
            a0 = _mm256_fmadd_ps(load_f16(r[0] + i), x, a0);
            a1 = _mm256_fmadd_ps(load_f16(r[1] + i), x, a1);
            a2 = _mm256_fmadd_ps(load_f16(r[2] + i), x, a2);
            a3 = _mm256_fmadd_ps(load_f16(r[3] + i), x, a3);
        }
        float tail[4] = {0}, out[4];
        for (; i < hd; i++)
            for (int j = 0; j < 4; j++) tail[j] += pr_f16_to_f32(r[j][i]) * q[i];
        _mm_storeu_ps(out, _mm_mul_ps(_mm_add_ps(hsum4_ps(a0, a1, a2, a3), _mm_loadu_ps(tail)), _mm_set1_ps(scale)));
        for (int j = 0; j < 4 && t + j < n; j++) s[t + j] = out[j];
    }
}

/* output columns [0, 8·W) of the weighted sum (W constant after inlining); an odd last row pairs with itself
 * at weight 0 */
ALWAYS_INLINE void values_stripe(int W, const float *p, const uint16_t *v, long ld, long n, float *o) {
    __m256 e[4], d[4];
    for (int w = 0; w < W; w++) e[w] = d[w] = _mm256_setzero_ps();
    for (long t = 0; t < n; t += 2) {
        long u = t + 1 < n ? t + 1 : t;
        __m256 p0 = _mm256_set1_ps(p[t]), p1 = _mm256_set1_ps(u > t ? p[u] : 0.0f);
        for (long j = t + PR_ATTN_PREFETCH; j < t + PR_ATTN_PREFETCH + 2 && j < n; j++) pr_prefetch_row(v + j * ld, 8 * W);
        for (int w = 0; w < W; w++) {
            e[w] = _mm256_fmadd_ps(p0, load_f16(v + t * ld + 8 * w), e[w]);
            d[w] = _mm256_fmadd_ps(p1, load_f16(v + u * ld + 8 * w), d[w]);
        }
    }
    for (int w = 0; w < W; w++) _mm256_storeu_ps(o + 8 * w, _mm256_add_ps(e[w], d[w]));
}

/* also the AVX-512 tables' (on Zen 4, whose 512-bit FMAs take two 256-bit slots, as fast as 16 lanes) */
void pr_avx2_attn_values_f16(const float *p, const uint16_t *v, long ld, long n, long hd, float *o) {
    long i = 0;
    for (; i + 32 <= hd; i += 32) values_stripe(4, p, v + i, ld, n, o + i);
    for (; i + 8 <= hd; i += 8) values_stripe(1, p, v + i, ld, n, o + i);
    pr_scalar_attn_values_f16(p, v + i, ld, n, hd - i, o + i); /* the last columns */
}

/* ---- exp: e^x = 2^n · e^r with n = round(x·log2 e), |r| ≤ ln2/2, e^r by Cephes' degree-6 polynomial
 * (≤ 2 ulp on this range); below −87.3 the result is 0, above 88.7 it is clamped (callers only divide by it) */
static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(-87.3f), hi = _mm256_set1_ps(88.7f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    /* 2^n: n in [-126, 128] after the clamps; scale in two halves so 2^128 does not overflow the exponent */
    __m256i ni = _mm256_cvtps_epi32(n), h = _mm256_srai_epi32(ni, 1);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h, _mm256_set1_epi32(127)), 23));
    __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, h), _mm256_set1_epi32(127)), 23));
    return _mm256_and_ps(_mm256_mul_ps(_mm256_mul_ps(p, s1), s2), under);
}

static void silu_mul(float *x, const float *u, long n) {
    const __m256 one = _mm256_set1_ps(1.0f), neg = _mm256_set1_ps(-0.0f);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 sig = _mm256_div_ps(v, _mm256_add_ps(one, exp8(_mm256_xor_ps(v, neg))));
        _mm256_storeu_ps(x + i, _mm256_mul_ps(sig, _mm256_loadu_ps(u + i)));
    }
    pr_scalar_silu_mul(x + i, u + i, n - i);
}

/* 0.5y·(1 + erf(y/√2)) through erfc (kernels.h: pr_erfc_p) */
static inline __m256 gelu8(__m256 y) {
    __m256 z = _mm256_mul_ps(_mm256_andnot_ps(_mm256_set1_ps(-0.0f), y), _mm256_set1_ps(PR_SQRT1_2));
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(z, _mm256_set1_ps(0.5f), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(pr_erfc_p[9]);
    for (int i = 8; i >= 0; i--) p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(pr_erfc_p[i]));
    __m256 e = _mm256_mul_ps(t, exp8(_mm256_fnmadd_ps(z, z, p))); /* erfc(z) */
    __m256 neg = _mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_LT_OQ);
    __m256 f = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), e), e, neg); /* 1 + erf(y/√2) */
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), y), f);
}

static void bias_act_res(float *y, long ld, long rows, long n, const float *bias, int act, float *res) {
    const __m256 one = _mm256_set1_ps(1.0f), kq = _mm256_set1_ps(-1.702f);
    for (long r = 0; r < rows; r++, y += ld, res = res ? res + ld : NULL) {
        long i = 0;
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(y + i);
            if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + i));
            if (act == PR_ACT_QUICK_GELU) v = _mm256_div_ps(v, _mm256_add_ps(one, exp8(_mm256_mul_ps(kq, v))));
            else if (act == PR_ACT_GELU) v = gelu8(v);
            _mm256_storeu_ps(y + i, v);
            if (res) _mm256_storeu_ps(res + i, _mm256_add_ps(_mm256_loadu_ps(res + i), v));
        }
        if (i < n) pr_scalar_bias_act_res(y + i, ld, 1, n - i, bias ? bias + i : NULL, act, res ? res + i : NULL);
    }
}

static float exp_sum(float *x, long n, float m) {
    __m256 acc = _mm256_setzero_ps(), mv = _mm256_set1_ps(m);
    long i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    float s = hsum(acc);
    for (; i < n; i++) s += (x[i] = expf(x[i] - m));
    return s;
}

/* row i of a tile (ci its first output) = (accumulate ? ci : 0) + its two accumulators */
#define STORE_ROW(i, ci) do { \
        if (accumulate) { c##i##0 = _mm256_add_ps(_mm256_loadu_ps(ci), c##i##0); \
                          c##i##1 = _mm256_add_ps(_mm256_loadu_ps((ci) + 8), c##i##1); } \
        _mm256_storeu_ps(ci, c##i##0); _mm256_storeu_ps((ci) + 8, c##i##1); } while (0)

/* packed-GEMM micro-kernel (gemm.c), BLIS's Haswell/Zen shape: 6 activation rows × 16 weight rows in 12 ymm
 * accumulators; per k step 2 loads of B, 6 broadcasts of A, 12 FMAs (named registers: GCC spills an array
 * of them here) */
#define ROW6(i) a = _mm256_broadcast_ss(A + 6 * k + i); \
    c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0); c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);
static void gemm_ukernel(long kc, const float *A, const float *B, float *C, long ldc, int accumulate) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
           c40 = c00, c41 = c00, c50 = c00, c51 = c00, a, b0, b1;
    for (long k = 0; k < kc; k++) {
        b0 = _mm256_loadu_ps(B + 16 * k);
        b1 = _mm256_loadu_ps(B + 16 * k + 8);
        ROW6(0) ROW6(1) ROW6(2) ROW6(3) ROW6(4) ROW6(5)
    }
    STORE_ROW(0, C); STORE_ROW(1, C + ldc); STORE_ROW(2, C + 2 * ldc);
    STORE_ROW(3, C + 3 * ldc); STORE_ROW(4, C + 4 * ldc); STORE_ROW(5, C + 5 * ldc);
}

/* the first mr < 6 rows of a strip, 3 at a time (6 accumulators; rows of a group past mr repeat row mr − 1
 * and are not stored): per element the same FMA chain as gemm_ukernel */
#define ROW3(i) a = _mm256_broadcast_ss(A + 6 * k + o##i); \
    c##i##0 = _mm256_fmadd_ps(a, b0, c##i##0); c##i##1 = _mm256_fmadd_ps(a, b1, c##i##1);
static void gemm_ukernel_rows(long kc, const float *A, const float *B, float *C, long ldc, int accumulate, int mr) {
    for (int i0 = 0; i0 < mr; i0 += 3) {
        int o0 = i0, o1 = i0 + 1 < mr ? i0 + 1 : mr - 1, o2 = i0 + 2 < mr ? i0 + 2 : mr - 1;
        __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, a, b0, b1;
        for (long k = 0; k < kc; k++) {
            b0 = _mm256_loadu_ps(B + 16 * k);
            b1 = _mm256_loadu_ps(B + 16 * k + 8);
            ROW3(0) ROW3(1) ROW3(2)
        }
        float *Ci = C + i0 * ldc;
        STORE_ROW(0, Ci);
        if (i0 + 1 < mr) STORE_ROW(1, Ci + ldc);
        if (i0 + 2 < mr) STORE_ROW(2, Ci + 2 * ldc);
    }
}

/* FMA peak: 12 independent chains (latency 4 × 2 FMA pipes = 8 in flight is enough; 12 leaves margin) */
static double peak(int kind, long iters) {
    if (kind != 0) return 0;
    __m256 c[12], b = _mm256_set1_ps(0.999f), d = _mm256_set1_ps(1e-3f);
    for (int r = 0; r < 12; r++) c[r] = _mm256_set1_ps((float)r);
    for (long it = 0; it < iters; it++)
#pragma GCC unroll 12 /* the chains must live in registers */
        for (int r = 0; r < 12; r++) c[r] = _mm256_fmadd_ps(c[r], b, d);
    __m256 s = c[0];
    for (int r = 1; r < 12; r++) s = _mm256_add_ps(s, c[r]);
    volatile float sink = hsum(s);
    (void)sink;
    return 2.0 * 8 * 12 * (double)iters;
}

const pr_kernels pr_kernels_avx2 = {
    .isa = "avx2",
    .dot_f32 = dot_f32, .dot_f16 = dot_f16, .dot_bf16 = dot_bf16,
    .axpy_f32 = axpy_f32, .attn_scores_f16 = attn_scores_f16, .attn_values_f16 = pr_avx2_attn_values_f16,
    .quantize_q8_0 = quantize_q8_0,
    .f16_to_f32 = f16_to_f32, .bf16_to_f32 = bf16_to_f32, .f32_to_f16 = f32_to_f16,
    .dequantize_q8_0 = dequantize_q8_0, .dequantize_q4_0 = pr_avx2_dequantize_q4_0,
    .gemm_q8_0 = pr_avx2_gemm_q8_0, .gemm_q4_0 = pr_avx2_gemm_q4_0, .gemm_bf16 = NULL,
    .gemm_ukernel = gemm_ukernel, .gemm_ukernel_rows = gemm_ukernel_rows, .gemm_mr = 6, .gemm_nr = 16,
    .gemm_pack8 = gemm_pack8, .gemm_pack8_q8_0 = gemm_pack8_q8_0, .peak = peak,
    .silu_mul = silu_mul, .bias_act_res = bias_act_res, .exp_sum = exp_sum,
};
