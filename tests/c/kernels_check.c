/* Compares one SIMD kernel table with the scalar reference on odd sizes, without Python: used to test the
 * NEON table on an x86 machine (cross-compiled, run under qemu-aarch64; see tests/test_kernels.py).
 *   cc -Icsrc tests/c/kernels_check.c csrc/kernels/{kernels_scalar,quant,kernels_neon}.c -DTABLE=pr_kernels_neon -lm
 * Prints one line per failure and exits non-zero if any. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"

extern const pr_kernels TABLE;
static int failures;

static float rnd(unsigned *s) { /* deterministic normal-ish values */
    float t = 0;
    for (int i = 0; i < 4; i++) {
        *s = *s * 1664525u + 1013904223u;
        t += (float)(*s >> 8) / 16777216.0f - 0.5f;
    }
    return t;
}

static void check(const char *what, long n, double got, double want, double scale) {
    /* worst-case reordering error of an n-term f32 sum: n·2^-24·Σ|terms| (scale) */
    if (fabs(got - want) > (n + 2) * 8 * 5.97e-8 * scale + 1e-30) {
        printf("FAIL %s n=%ld: %.9g vs %.9g\n", what, n, got, want);
        failures++;
    }
}

int main(void) {
    unsigned seed = 1;
    const pr_kernels *S = &pr_kernels_scalar, *T = &TABLE;
    static const long sizes[] = {1, 7, 31, 37, 100, 1031};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        long n = sizes[si];
        float *w = malloc(n * sizeof(float)), *x = malloc(n * sizeof(float)), *y1 = malloc(n * sizeof(float)),
              *y2 = malloc(n * sizeof(float));
        uint16_t *h = malloc(n * sizeof(uint16_t)), *b = malloc(n * sizeof(uint16_t)), *h2 = malloc(n * sizeof(uint16_t));
        double scale = 0;
        for (long i = 0; i < n; i++) {
            w[i] = rnd(&seed), x[i] = rnd(&seed);
            h[i] = pr_f32_to_f16(w[i]), b[i] = pr_f32_to_bf16(w[i]);
            scale += fabs(w[i] * x[i]);
        }
        check("dot_f32", n, T->dot_f32(w, x, n), S->dot_f32(w, x, n), scale);
        check("dot_f16", n, T->dot_f16(h, x, n), S->dot_f16(h, x, n), scale * 1.01);
        check("dot_bf16", n, T->dot_bf16(b, x, n), S->dot_bf16(b, x, n), scale * 1.01);
        /* y += a·x: one fused or separate rounding per element */
        for (long i = 0; i < n; i++) y1[i] = y2[i] = x[i];
        T->axpy_f32(0.37f, w, y1, n), S->axpy_f32(0.37f, w, y2, n);
        for (long i = 0; i < n; i++) check("axpy_f32", 1, y1[i], y2[i], fabs(x[i]) + fabs(w[i]));
        T->f16_to_f32(h, y1, n), S->f16_to_f32(h, y2, n);
        if (memcmp(y1, y2, n * sizeof(float))) printf("FAIL f16_to_f32 n=%ld\n", n), failures++;
        T->bf16_to_f32(b, y1, n), S->bf16_to_f32(b, y2, n);
        if (memcmp(y1, y2, n * sizeof(float))) printf("FAIL bf16_to_f32 n=%ld\n", n), failures++;
        T->f32_to_f16(w, h2, n);
        if (memcmp(h, h2, n * sizeof(uint16_t))) printf("FAIL f32_to_f16 n=%ld\n", n), failures++;
        free(w), free(x), free(y1), free(y2), free(h), free(b), free(h2);
    }
    /* quantised: nb blocks, a tile of nw weight rows × nx activation rows */
    static const long nbs[] = {1, 3, 4, 6, 16, 37}; /* q4_0: one short superblock, one whole, whole + short */
    for (size_t bi = 0; bi < sizeof nbs / sizeof nbs[0]; bi++) {
        long nb = nbs[bi], k = nb * PR_QK, nw = 7, nx = 5;
        float *w = malloc(nw * k * sizeof(float)), *x = malloc(nx * k * sizeof(float));
        block_q8_0 *w8 = malloc(nw * nb * sizeof(block_q8_0)), *xq = malloc(nx * nb * sizeof(block_q8_0)),
                   *xq2 = malloc(nx * nb * sizeof(block_q8_0));
        block_q4_0 *w4 = malloc(nw * nb * sizeof(block_q4_0));
        float y1[35], y2[35];
        for (long i = 0; i < nw * k; i++) w[i] = rnd(&seed);
        for (long i = 0; i < nx * k; i++) x[i] = rnd(&seed);
        for (long r = 0; r < nw; r++) {
            pr_quantize_row_q8_0(w + r * k, w8 + r * nb, k);
            pr_quantize_row_q4_0(w + r * k, w4 + r * nb, k);
            pr_q4_0_to_superblocks(w4 + r * nb, nb); /* the kernels read q4_0 rows as the model holds them */
        }
        for (long r = 0; r < nx; r++) S->quantize_q8_0(x + r * k, xq + r * nb, k), T->quantize_q8_0(x + r * k, xq2 + r * nb, k);
        if (memcmp(xq, xq2, nx * nb * sizeof(block_q8_0))) printf("FAIL quantize_q8_0 nb=%ld\n", nb), failures++;
        double scale = 127.0 * 127.0 * 32 * nb * 0.01; /* |d_w d_x Σ q q| ≤ this for values of this size */
        for (int q = 0; q < 2; q++) {
            const void *W = q ? (const void *)w4 : (const void *)w8;
            size_t ldw = nb * (q ? sizeof(block_q4_0) : sizeof(block_q8_0));
            (q ? S->gemm_q4_0 : S->gemm_q8_0)(W, ldw, nw, xq, nb * sizeof(block_q8_0), nx, nb, y1, nw);
            (q ? T->gemm_q4_0 : T->gemm_q8_0)(W, ldw, nw, xq, nb * sizeof(block_q8_0), nx, nb, y2, nw);
            for (int i = 0; i < 35; i++) check(q ? "gemm_q4_0" : "gemm_q8_0", nb, y2[i], y1[i], scale);
            /* one row against one activation row, and the last 3 rows against the last 2 (the kernels' edge
             * passes): bit for bit what the whole call gave */
            float d;
            (q ? T->gemm_q4_0 : T->gemm_q8_0)(W, ldw, 1, xq, 0, 1, nb, &d, 1);
            if (d != y2[0]) printf("FAIL %s nb=%ld: one output alone differs\n", q ? "gemm_q4_0" : "gemm_q8_0", nb), failures++;
            float e[6];
            (q ? T->gemm_q4_0 : T->gemm_q8_0)((const char *)W + 4 * ldw, ldw, 3, xq + 3 * nb, nb * sizeof(block_q8_0), 2, nb, e, 3);
            for (int j = 0; j < 2; j++)
                for (int i = 0; i < 3; i++)
                    if (e[j * 3 + i] != y2[(3 + j) * nw + 4 + i])
                        printf("FAIL %s nb=%ld: edge pass differs\n", q ? "gemm_q4_0" : "gemm_q8_0", nb), failures++;
        }
        free(w), free(x), free(w8), free(xq), free(xq2), free(w4);
    }
    /* bf16 tiles (tables with bf16 dot-product instructions): X rows are the activation split into bf16 hi
     * then lo halves (see matmul.c); against the bf16 weights widened to f32 times hi + lo, in double */
    if (T->gemm_bf16) {
        static const long ks[] = {1, 31, 64, 100};
        for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
            long k = ks[ki], nw = 7, nx = 5;
            uint16_t *W = malloc(nw * k * sizeof(uint16_t)), *X = malloc(nx * 2 * k * sizeof(uint16_t));
            float y[35];
            for (long i = 0; i < nw * k; i++) W[i] = pr_f32_to_bf16(rnd(&seed));
            for (long r = 0; r < nx; r++)
                for (long e = 0; e < k; e++) {
                    float v = rnd(&seed);
                    X[r * 2 * k + e] = pr_f32_to_bf16(v);
                    X[r * 2 * k + k + e] = pr_f32_to_bf16(v - pr_bf16_to_f32(X[r * 2 * k + e]));
                }
            T->gemm_bf16(W, k * sizeof(uint16_t), nw, X, 2 * k * sizeof(uint16_t), nx, k, y, nw);
            for (long j = 0; j < nx; j++)
                for (long i = 0; i < nw; i++) {
                    double want = 0, scale = 0;
                    for (long e = 0; e < k; e++) {
                        double t = (double)pr_bf16_to_f32(W[i * k + e]) *
                                   ((double)pr_bf16_to_f32(X[j * 2 * k + e]) + pr_bf16_to_f32(X[j * 2 * k + k + e]));
                        want += t, scale += fabs(t);
                    }
                    check("gemm_bf16", 2 * k, y[j * nw + i], want, scale);
                }
            free(W), free(X);
        }
    }
    /* the packed GEMM's micro-kernel: one MR × NR tile over kc steps, written and accumulated, against float64 */
    if (T->gemm_ukernel) {
        long MR = T->gemm_mr, NR = T->gemm_nr, ldc = NR + 3;
        static const long kcs[] = {1, 7, 256};
        for (size_t ki = 0; ki < sizeof kcs / sizeof kcs[0]; ki++) {
            long kc = kcs[ki];
            float *A = malloc(kc * MR * sizeof(float)), *B = malloc(kc * NR * sizeof(float)),
                  *C = malloc(MR * ldc * sizeof(float)), *C0 = malloc(MR * ldc * sizeof(float));
            for (long e = 0; e < kc * MR; e++) A[e] = rnd(&seed);
            for (long e = 0; e < kc * NR; e++) B[e] = rnd(&seed);
            for (long e = 0; e < MR * ldc; e++) C0[e] = rnd(&seed);
            for (int accumulate = 0; accumulate < 2; accumulate++) {
                memcpy(C, C0, MR * ldc * sizeof(float));
                T->gemm_ukernel(kc, A, B, C, ldc, accumulate);
                for (long i = 0; i < MR; i++)
                    for (long j = 0; j < ldc; j++) {
                        if (j >= NR) { /* outside the tile: untouched */
                            if (C[i * ldc + j] != C0[i * ldc + j]) printf("FAIL gemm_ukernel wrote outside\n"), failures++;
                            continue;
                        }
                        double want = accumulate ? C0[i * ldc + j] : 0, scale = fabs(want);
                        for (long k = 0; k < kc; k++) {
                            double t = (double)A[k * MR + i] * B[k * NR + j];
                            want += t, scale += fabs(t);
                        }
                        check("gemm_ukernel", kc + 1, C[i * ldc + j], want, scale);
                    }
            }
            free(A), free(B), free(C), free(C0);
        }
    }
    /* decode attention over f16 rows (ld values apart, the first hd used): scores and the weighted sum of
     * values against float64, for n around the kernels' blocks of keys and pairs of rows */
    static const long ns[] = {1, 3, 9, 37}, hds[] = {7, 24, 64};
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++)
        for (size_t hi = 0; hi < sizeof hds / sizeof hds[0]; hi++) {
            long n = ns[ni], hd = hds[hi], ld = hd + 3;
            uint16_t *K = malloc(n * ld * sizeof(uint16_t)), *V = malloc(n * ld * sizeof(uint16_t));
            float *q = malloc(hd * sizeof(float)), *p = malloc(n * sizeof(float)), *s = malloc(n * sizeof(float)),
                  *o = malloc(hd * sizeof(float));
            for (long e = 0; e < n * ld; e++) K[e] = pr_f32_to_f16(rnd(&seed)), V[e] = pr_f32_to_f16(rnd(&seed));
            for (long e = 0; e < hd; e++) q[e] = rnd(&seed);
            for (long t = 0; t < n; t++) p[t] = rnd(&seed);
            T->attn_scores_f16(K, ld, n, q, hd, 0.125f, s);
            T->attn_values_f16(p, V, ld, n, hd, o);
            for (long t = 0; t < n; t++) {
                double want = 0, scale = 0;
                for (long e = 0; e < hd; e++) {
                    double x = (double)pr_f16_to_f32(K[t * ld + e]) * q[e];
                    want += x, scale += fabs(x);
                }
                check("attn_scores_f16", hd + 1, s[t], 0.125 * want, 0.125 * scale);
            }
            for (long e = 0; e < hd; e++) {
                double want = 0, scale = 0;
                for (long t = 0; t < n; t++) {
                    double x = (double)p[t] * pr_f16_to_f32(V[t * ld + e]);
                    want += x, scale += fabs(x);
                }
                check("attn_values_f16", n, o[e], want, scale);
            }
            free(K), free(V), free(q), free(p), free(s), free(o);
        }
    printf("%s: %d failures\n", T->isa, failures);
    return failures != 0;
}
