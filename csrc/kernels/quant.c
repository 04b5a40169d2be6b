/* Half floats and the reference q8_0 / q4_0 quantisers (the file format; see quant.h). */
#include "kernels/quant.h"

#include <math.h>
#include <string.h>

float pr_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: normalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    union { uint32_t u; float f; } v = {bits};
    return v.f;
}

uint16_t pr_f32_to_f16(float f) {
    union { float f; uint32_t u; } v = {f};
    uint32_t x = v.u, sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0));
    if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00); /* overflow to inf */
    if (ax < 0x38800000) {                                  /* subnormal or zero in f16 */
        if (ax < 0x33000000) return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffff) | 0x800000;
        int shift = 126 - (int)e; /* 14 + (113 - e) */
        uint32_t r = m >> (shift), rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((ax >> 13) - ((127 - 15) << 10)), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
    return (uint16_t)(sign | r);
}

/* q8_0: d = max|x| / 127, q = round(x / d) (half away from zero, as ggml's reference) */
void pr_quantize_row_q8_0(const float *x, block_q8_0 *y, long n) {
    for (long b = 0; b < n / PR_QK; b++, x += PR_QK) {
        float amax = 0;
        for (int i = 0; i < PR_QK; i++) amax = fmaxf(amax, fabsf(x[i]));
        float d = amax / 127.0f, id = d > 0 ? 1.0f / d : 0.0f;
        y[b].d = pr_f32_to_f16(d);
        for (int i = 0; i < PR_QK; i++) y[b].qs[i] = (int8_t)fmaxf(-127.0f, fminf(127.0f, roundf(x[i] * id)));
    }
}

/* q4_0: the value of largest magnitude maps to −8 exactly, d = that value / −8, q = clamp(round(x/d)) + 8 in
 * 0..15 (as ggml's reference, which rounds by truncating x/d + 8.5) */
void pr_quantize_row_q4_0(const float *x, block_q4_0 *y, long n) {
    for (long b = 0; b < n / PR_QK; b++, x += PR_QK) {
        float amax = 0, max = 0;
        for (int i = 0; i < PR_QK; i++)
            if (fabsf(x[i]) > amax) {
                amax = fabsf(x[i]);
                max = x[i];
            }
        float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
        y[b].d = pr_f32_to_f16(d);
        for (int i = 0; i < PR_QK / 2; i++) {
            float v0 = fmaxf(0.0f, fminf(15.0f, x[i] * id + 8.5f));
            float v1 = fmaxf(0.0f, fminf(15.0f, x[i + PR_QK / 2] * id + 8.5f));
            y[b].qs[i] = (uint8_t)((uint8_t)v0 | ((uint8_t)v1 << 4));
        }
    }
}

void pr_dequantize_row_q8_0(const block_q8_0 *x, float *y, long n) {
    for (long b = 0; b < n / PR_QK; b++) {
        float d = pr_f16_to_f32(x[b].d);
        for (int i = 0; i < PR_QK; i++) y[b * PR_QK + i] = d * (float)x[b].qs[i];
    }
}

void pr_dequantize_row_q4_0(const block_q4_0 *row, long nb, long b0, float *y, long n) {
    uint8_t q[PR_QK];
    for (long b = b0; b < b0 + n / PR_QK; b++, y += PR_QK) {
        float d = pr_f16_to_f32(pr_q4_0_unpack(row, nb, b, q));
        for (int i = 0; i < PR_QK; i++) y[i] = d * (float)(q[i] - 8);
    }
}

void pr_q4_0_to_superblocks(void *row, long nb) {
    block_q4_0 in[PR_Q4_0_SB];
    for (long s = 0; s * PR_Q4_0_SB < nb; s++) {
        long m = pr_q4_0_sb_blocks(nb, s);
        uint8_t *sb = (uint8_t *)row + s * (long)sizeof in;
        memcpy(in, sb, (size_t)m * sizeof *in);
        for (long j = 0; j < m; j++) memcpy(sb + 2 * j, &in[j].d, 2);
        for (int k = 0; k < 4; k++)
            for (long j = 0; j < m; j++) memcpy(sb + 2 * m + 4 * m * k + 4 * j, in[j].qs + 4 * k, 4);
    }
}

void pr_q4_0_gemm(const pr_q4_0_walk *k, const void *W, long ldw, long nw, const void *X, long ldx, long nx, long nb,
                  float *Y, long ldy) {
    _Alignas(64) unsigned char a[PR_Q4_0_ACT_MAX * PR_Q4_0_ACT_BYTES];
    long nsb = (nb + PR_Q4_0_SB - 1) / PR_Q4_0_SB, win = nsb < PR_Q4_0_ACT_MAX ? nsb : PR_Q4_0_ACT_MAX;
    long part = PR_Q4_0_ACT_MAX / win < nx ? PR_Q4_0_ACT_MAX / win : nx;
    long rows = part < nx ? (256 << 10) / ldw + 1 : nw;
    for (long i0 = 0; i0 < nw; i0 += rows)
        for (long s0 = 0; s0 < nsb; s0 += win)
            for (long j0 = 0; j0 < nx; j0 += part) {
                long np = nx - j0 < part ? nx - j0 : part, i1 = nw - i0 < rows ? nw : i0 + rows;
                long s1 = nsb - s0 < win ? nsb : s0 + win, stride = (s1 - s0) * PR_Q4_0_ACT_BYTES;
                for (long j = 0; j < np; j++)
                    k->prepare((const block_q8_0 *)((const char *)X + (j0 + j) * ldx), nb, s0, s1, a + j * stride);
                for (long i = i0; i < i1; i++)
                    for (long j = 0; j < np; j += PR_Q4_0_PASS_ACTS) {
                        long A = np - j < PR_Q4_0_PASS_ACTS ? np - j : PR_Q4_0_PASS_ACTS;
                        k->row[A - 1]((const char *)W + i * ldw, nb, s0, s1, a + j * stride, Y + (j0 + j) * ldy + i, ldy,
                                      s0 > 0);
                    }
            }
}
