/* Matrix products for every weight dtype.
 *
 * Many rows of activations (prefill, vision tower, MoE experts): OpenBLAS sgemm. For f32 weights directly;
 * for other dtypes, chunks of weight rows are widened to f32 in parallel, then multiplied by sgemm.
 * A few rows (decode): one dot product per weight row, rows split across the pool's threads. */
#include "kernels/matmul.h"

#include <cblas.h>
#include <math.h>
#include <string.h>

#include "util/mem.h"

void pr_blas_set_threads(int n) { openblas_set_num_threads(n); }

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
    /* round to nearest even, as numpy's astype(float16) */
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

typedef struct { uint16_t d; int8_t qs[32]; } block_q8_0;
typedef struct { uint16_t d; uint8_t qs[16]; } block_q4_0;

void pr_row_to_f32(const pr_tensor *W, long r, float *out) {
    long cols = (long)W->ne[0];
    switch (W->type) {
    case PR_F32: memcpy(out, (const float *)W->data + r * cols, (size_t)cols * sizeof(float)); break;
    case PR_F16: {
        const uint16_t *p = (const uint16_t *)W->data + r * cols;
        for (long i = 0; i < cols; i++) out[i] = pr_f16_to_f32(p[i]);
        break;
    }
    case PR_BF16: {
        const uint16_t *p = (const uint16_t *)W->data + r * cols;
        for (long i = 0; i < cols; i++) out[i] = pr_bf16_to_f32(p[i]);
        break;
    }
    case PR_Q8_0: {
        const block_q8_0 *b = (const block_q8_0 *)W->data + r * (cols / 32);
        for (long k = 0; k < cols / 32; k++) {
            float d = pr_f16_to_f32(b[k].d);
            for (int i = 0; i < 32; i++) out[k * 32 + i] = d * b[k].qs[i];
        }
        break;
    }
    case PR_Q4_0: {
        const block_q4_0 *b = (const block_q4_0 *)W->data + r * (cols / 32);
        for (long k = 0; k < cols / 32; k++) {
            float d = pr_f16_to_f32(b[k].d);
            for (int i = 0; i < 16; i++) {
                out[k * 32 + i] = d * ((b[k].qs[i] & 0x0f) - 8);
                out[k * 32 + i + 16] = d * ((b[k].qs[i] >> 4) - 8);
            }
        }
        break;
    }
    default: memset(out, 0, (size_t)cols * sizeof(float)); break;
    }
}

void pr_tensor_to_f32(const pr_tensor *W, float *out) {
    long rows = 1;
    for (int d = 1; d < W->n_dims; d++) rows *= (long)W->ne[d];
    for (long r = 0; r < rows; r++) pr_row_to_f32(W, r, out + r * W->ne[0]);
}

void pr_add_bias(const pr_tensor *bias, float *y, int n, long rows) {
    if (!bias) return;
    if (bias->type == PR_F32) {
        const float *b = bias->data;
        for (int i = 0; i < n; i++)
            for (long j = 0; j < rows; j++) y[(long)i * rows + j] += b[j];
        return;
    }
    float *b = pr_alloc((size_t)rows, sizeof(float), 1);
    if (!b) return; /* biases are f32 in files we write; other dtypes are a tiny corner */
    pr_row_to_f32(bias, 0, b);
    for (int i = 0; i < n; i++)
        for (long j = 0; j < rows; j++) y[(long)i * rows + j] += b[j];
    pr_free(b);
}

/* ---- few activation rows: per-row dot products */
typedef struct {
    const pr_tensor *W;
    const float *x;
    int n;
    float *y;
} matvec_job;

static float dot_f32(const float *a, const float *b, long n) {
    float s = 0;
    for (long i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void matvec_task(void *arg, int ith, int nth) {
    matvec_job *j = arg;
    long rows = (long)j->W->ne[1], cols = (long)j->W->ne[0], r0, r1;
    pr_split_range(rows, ith, nth, &r0, &r1);
    float *buf = j->W->type == PR_F32 ? NULL : pr_alloc((size_t)cols, sizeof(float), 1);
    for (long r = r0; r < r1; r++) {
        const float *w = (const float *)j->W->data + r * cols;
        if (buf) {
            pr_row_to_f32(j->W, r, buf);
            w = buf;
        }
        for (int i = 0; i < j->n; i++) j->y[(long)i * rows + r] = dot_f32(w, j->x + (long)i * cols, cols);
    }
    pr_free(buf);
}

/* ---- many activation rows: widen chunks of weight rows, then sgemm */
#define CHUNK_ROWS 256
typedef struct {
    const pr_tensor *W;
    long r0, nr;
    float *dst;
} widen_job;

static void widen_task(void *arg, int ith, int nth) {
    widen_job *j = arg;
    long a, b;
    pr_split_range(j->nr, ith, nth, &a, &b);
    for (long r = a; r < b; r++) pr_row_to_f32(j->W, j->r0 + r, j->dst + r * j->W->ne[0]);
}

void pr_matmul(pr_pool *pool, const pr_tensor *W, const float *x, int n, float *y) {
    long rows = (long)W->ne[1], cols = (long)W->ne[0];
    if (n <= 0) return;
    if (W->type == PR_F32 && n > 1) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, (int)rows, (int)cols, 1.0f, x, (int)cols,
                    W->data, (int)cols, 0.0f, y, (int)rows);
        return;
    }
    if (n <= 4) {
        matvec_job j = {W, x, n, y};
        pr_pool_run(pool, matvec_task, &j);
        return;
    }
    long chunk = rows < CHUNK_ROWS ? rows : CHUNK_ROWS;
    float *wf = pr_alloc((size_t)chunk, (size_t)cols, sizeof(float));
    if (!wf) { /* cannot widen: fall back to dot products */
        matvec_job j = {W, x, n, y};
        pr_pool_run(pool, matvec_task, &j);
        return;
    }
    for (long r0 = 0; r0 < rows; r0 += chunk) {
        long nr = rows - r0 < chunk ? rows - r0 : chunk;
        widen_job wj = {W, r0, nr, wf};
        pr_pool_run(pool, widen_task, &wj);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, (int)nr, (int)cols, 1.0f, x, (int)cols, wf,
                    (int)cols, 0.0f, y + r0, (int)rows);
    }
    pr_free(wf);
}
