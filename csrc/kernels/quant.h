/* Weight element formats: half floats and ggml's block-quantised q8_0 / q4_0, as plain structs.
 *
 * A q*_0 row of `cols` values (cols a multiple of 32) is cols/32 blocks; block k holds values
 * 32k .. 32k+31 as  value = d · q  with one f16 scale d per block:
 *   q8_0: q = qs[i] (int8, −127..127)                           34 bytes / 32 values
 *   q4_0: q = (qs[i] & 15) − 8 for value i, (qs[i] >> 4) − 8 for value i+16   18 bytes / 32 values
 * Byte-for-byte the layout of ggml's block_q8_0 / block_q4_0, so our files read like llama.cpp's. */
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
void pr_dequantize_row_q4_0(const block_q4_0 *x, float *y, long n);
#endif
