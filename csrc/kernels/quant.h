/* Weight element formats: half floats and ggml's block-quantised q8_0 / q4_0, as plain structs.
 *
 * A q*_0 row of `cols` values (cols a multiple of 32) is cols/32 blocks; block k holds values
 * 32k .. 32k+31 as  value = d · q  with one f16 scale d per block:
 *   q8_0: q = qs[i] (int8, −127..127)                           34 bytes / 32 values
 *   q4_0: q = (qs[i] & 15) − 8 for value i, (qs[i] >> 4) − 8 for value i+16   18 bytes / 32 values
 * Byte-for-byte the layout of ggml's block_q8_0 / block_q4_0, so our files read like llama.cpp's.
 *
 * In memory (not in files) a q4_0 row is rearranged once at load (pr_q4_0_to_superblocks) into superblocks of
 * up to 16 blocks: blocks 16s .. 16s+m−1 (m = 16, or the row's last nb mod 16) keep their 18·m bytes at byte
 * 288·s of the row, as the m f16 scales, then 4 chunks of 4·m bytes: chunk k holds bytes 4k .. 4k+3 of each
 * block's 16 file bytes, block after block. Loaded into a vector, 32-bit lane j of chunk k is then block j's
 * values 4k .. 4k+3 (low nibbles) and 16+4k .. 16+4k+3 (high ones), so one dot-product instruction per chunk
 * and nibble half adds every block's products into its own lane, and one multiply-add scales 16 blocks
 * (kernels_avx512.c). Rows keep their size and start, and any block can still be read on its own
 * (pr_q4_0_unpack), but a row's bytes are laid out by superblock, so a range of blocks is read from the row's
 * start, with the row's block count. */
#ifndef PR_KERNELS_QUANT_H
#define PR_KERNELS_QUANT_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define PR_QK 32 /* values per quantised block */

typedef struct {
    uint16_t d; /* f16 scale */
    int8_t qs[PR_QK];
} block_q8_0;

typedef struct {
    uint16_t d; /* f16 scale */
    uint8_t qs[PR_QK / 2];
} block_q4_0;

/* blocks per superblock of a q4_0 row in memory; superblock s of a row of nb blocks holds pr_q4_0_sb_blocks */
#define PR_Q4_0_SB 16
static inline long pr_q4_0_sb_blocks(long nb, long s) {
    return nb - s * PR_Q4_0_SB < PR_Q4_0_SB ? nb - s * PR_Q4_0_SB : PR_Q4_0_SB;
}

_Static_assert(sizeof(block_q8_0) == 34, "block_q8_0 must be packed as ggml's");
_Static_assert(sizeof(block_q4_0) == 18, "block_q4_0 must be packed as ggml's");

float pr_f16_to_f32(uint16_t h);
uint16_t pr_f32_to_f16(float f); /* round to nearest even, as numpy's astype(float16) */
static inline float pr_bf16_to_f32(uint16_t h) {
    union { uint32_t u; float f; } v = {(uint32_t)h << 16};
    return v.f;
}
static inline uint16_t pr_f32_to_bf16(float f) { /* round to nearest even; NaN stays NaN */
    union { float f; uint32_t u; } v = {f};
    if ((v.u & 0x7fffffff) > 0x7f800000) return (uint16_t)((v.u >> 16) | 0x40);
    return (uint16_t)((v.u + 0x7fff + ((v.u >> 16) & 1)) >> 16);
}

/* The reference quantisers (ggml's algorithm; n a multiple of 32). They define the file format, so the
 * converter always uses these, whatever the CPU. */
void pr_quantize_row_q8_0(const float *x, block_q8_0 *y, long n);
void pr_quantize_row_q4_0(const float *x, block_q4_0 *y, long n);
void pr_dequantize_row_q8_0(const block_q8_0 *x, float *y, long n);
/* blocks b0 .. b0 + n/32 − 1 of a q4_0 row of nb blocks in memory (row: its start), n values */
void pr_dequantize_row_q4_0(const block_q4_0 *row, long nb, long b0, float *y, long n);

/* file layout → memory layout, in place, for a row of nb blocks (built by hand in tests/test_kernels.py) */
void pr_q4_0_to_superblocks(void *row, long nb);

/* The walk the SIMD q4_0 kernels share (gemm_q4_0: Y[j·ldy + i] = W_i · X_j, X rows q8_0 blocks ldx bytes
 * apart): every activation row is laid out per superblock once per call (prepare: superblocks s0..s1−1 into
 * PR_Q4_0_ACT_BYTES each, in a buffer on the stack: the rows that fit, the rest in later parts over blocks of
 * weight rows small enough to be read again from L2), then each weight row against up to PR_Q4_0_PASS_ACTS of
 * them (row[A − 1]: superblocks s0..s1−1 of the weight row against A prepared rows s1 − s0 superblocks apart,
 * stored into y[j·ldy], or added with add = 1). One weight row per pass, so each thread's slice is one
 * sequential stream. Rows longer than PR_Q4_0_ACT_MAX superblocks (no model's) go in windows of superblocks,
 * each window's sum added to the output: the order of the sums depends on nb alone. */
#define PR_Q4_0_ACT_BYTES 640 /* a prepared activation superblock: 8 × 64 bytes of values, 16 sums, 16 scales */
#define PR_Q4_0_ACT_MAX 192   /* prepared superblocks on the stack (120 KiB) */
#define PR_Q4_0_PASS_ACTS 4
typedef struct {
    void (*prepare)(const block_q8_0 *x, long nb, long s0, long s1, void *a);
    void (*row[PR_Q4_0_PASS_ACTS])(const char *w, long nb, long s0, long s1, const void *a, float *y, long ldy, int add);
} pr_q4_0_walk;
/* a kernel file's walk: NAME, from its prepare function and its always-inline row(A, w, nb, s0, s1, a, y, ldy, add) */
#define PR_Q4_0_WALK_ROW(ROW, A)                                                                             \
    static void ROW##_##A(const char *w, long nb, long s0, long s1, const void *a, float *y, long ldy, int add) { \
        ROW(A, w, nb, s0, s1, a, y, ldy, add);                                                                   \
    }
#define PR_Q4_0_WALK(NAME, PREPARE, ROW)                                                                     \
    PR_Q4_0_WALK_ROW(ROW, 1) PR_Q4_0_WALK_ROW(ROW, 2) PR_Q4_0_WALK_ROW(ROW, 3) PR_Q4_0_WALK_ROW(ROW, 4)         \
    static const pr_q4_0_walk NAME = {PREPARE, {ROW##_1, ROW##_2, ROW##_3, ROW##_4}};
void pr_q4_0_gemm(const pr_q4_0_walk *k, const void *W, long ldw, long nw, const void *X, long ldx, long nx, long nb,
                  float *Y, long ldy);

/* block b of a q4_0 row in memory (nb blocks) back in the file's layout: its scale, and its 16 bytes, which
 * are 4 chunks of 4 bytes 4·m bytes apart. The reference for the SIMD kernels' reading of the layout. */
static inline block_q4_0 pr_q4_0_block(const void *row, long nb, long b) {
    long s = b / PR_Q4_0_SB, j = b % PR_Q4_0_SB, m = pr_q4_0_sb_blocks(nb, s);
    const uint8_t *sb = (const uint8_t *)row + s * PR_Q4_0_SB * (long)sizeof(block_q4_0);
    block_q4_0 t;
    memcpy(&t.d, sb + 2 * j, sizeof t.d);
    for (int k = 0; k < 4; k++) memcpy(t.qs + 4 * k, sb + 2 * m + 4 * m * k + 4 * j, 4);
    return t;
}

/* block b of a q4_0 row in memory (nb blocks): its nibbles (q + 8, value order) into n, its f16 scale returned */
static inline uint16_t pr_q4_0_unpack(const void *row, long nb, long b, uint8_t n[PR_QK]) {
    block_q4_0 t = pr_q4_0_block(row, nb, b);
    for (int i = 0; i < PR_QK / 2; i++) {
        n[i] = t.qs[i] & 15;
        n[i + PR_QK / 2] = t.qs[i] >> 4;
    }
    return t.d;
}
#endif
