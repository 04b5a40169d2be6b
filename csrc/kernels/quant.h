/* Weight element formats: half floats and ggml's block-quantised q8_0 / q4_0, as plain structs.
 *
 * A q*_0 row of `cols` values (cols a multiple of 32) is cols/32 blocks; block k holds values
 * 32k .. 32k+31 as  value = d · q  with one f16 scale d per block:
 *   q8_0: q = qs[i] (int8, −127..127)                           34 bytes / 32 values
 *   q4_0: q = (qs[i] & 15) − 8 for value i, (qs[i] >> 4) − 8 for value i+16   18 bytes / 32 values
 * Byte-for-byte the layout of ggml's block_q8_0 / block_q4_0, so our files read like llama.cpp's.
 *
 * In memory (not in files) a q4_0 row is regrouped once at load (pr_q4_0_to_groups): each run of 4 blocks
 * becomes one block_q4_0x4 of the same 72 bytes, the 4 scales first, then the nibbles arranged so that one
 * 64-byte load gives blocks b, b+1 in the low nibbles and b+2, b+3 in the high ones, each in value order (the
 * decode kernels then unpack 4 blocks with one shift and two masks instead of shuffling every block, and read
 * 4 scales with one load). The row's last nb mod 4 blocks stay as they are. Block b still starts at byte 18·b
 * of its row, so row views, row sizes and K ranges starting at multiples of 128 values are unchanged. */
#ifndef PR_KERNELS_QUANT_H
#define PR_KERNELS_QUANT_H
#include <stddef.h>
#include <stdint.h>

#define PR_QK 32 /* values per quantised block */

typedef struct {
    uint16_t d; /* f16 scale */
    int8_t qs[PR_QK];
} block_q8_0;

typedef struct {
    uint16_t d; /* f16 scale */
    uint8_t qs[PR_QK / 2];
} block_q4_0;

/* 4 q4_0 blocks b..b+3 in memory: value i of block b+k is nibble (qs[32·(k & 1) + i] >> 4·(k >> 1)) & 15,
 * minus 8, times d[k] */
#define PR_Q4_0_GROUP 4
typedef struct {
    uint16_t d[PR_Q4_0_GROUP]; /* f16 scales of blocks b..b+3 */
    uint8_t qs[64];            /* bytes 0..31: blocks b | b+2 << 4; bytes 32..63: blocks b+1 | b+3 << 4 */
} block_q4_0x4;

_Static_assert(sizeof(block_q4_0x4) == PR_Q4_0_GROUP * 18, "a group must take its 4 blocks' bytes");
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
/* a row of q4_0 values in memory (n values from a group boundary: the groups, then the ungrouped tail) */
void pr_dequantize_row_q4_0(const block_q4_0 *x, float *y, long n);

/* file layout → memory layout, in place, for a row of nb blocks (the inverse: tests/test_kernels.py) */
void pr_q4_0_to_groups(void *row, long nb);

/* block b of a q4_0 row in memory (nb blocks from a group boundary): its nibbles (q + 8, value order) into n,
 * its f16 scale returned. The reference for the SIMD kernels' reading of the layout. */
static inline uint16_t pr_q4_0_unpack(const void *row, long nb, long b, uint8_t n[PR_QK]) {
    if (b < nb / PR_Q4_0_GROUP * PR_Q4_0_GROUP) {
        const block_q4_0x4 *g = (const block_q4_0x4 *)row + b / PR_Q4_0_GROUP;
        const uint8_t *q = g->qs + (b & 1) * PR_QK;
        int shift = (b & 2) ? 4 : 0;
        for (int i = 0; i < PR_QK; i++) n[i] = (uint8_t)((q[i] >> shift) & 15);
        return g->d[b % PR_Q4_0_GROUP];
    }
    const block_q4_0 *t = (const block_q4_0 *)row + b;
    for (int i = 0; i < PR_QK / 2; i++) {
        n[i] = t->qs[i] & 15;
        n[i + PR_QK / 2] = t->qs[i] >> 4;
    }
    return t->d;
}
#endif
