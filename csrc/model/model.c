/* Loading a model file: map + validate (io/gguf.c), read the config, bind the weights, start the pool. */
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/matmul.h"
#include "text/tokenizer.h"

int pr_model_load(const char *path, int n_threads, pr_model **out, pr_error *err) {
    *out = NULL;
    pr_model *m = calloc(1, sizeof *m);
    if (!m) return pr_set_error(err, PR_ERR_NOMEM, "out of memory");
    if (!pr_kernels_active(err)) { /* PARROT_ISA names an instruction set this CPU or build lacks */
        free(m);
        return err ? err->code : PR_ERR_ARG;
    }
    int rc = gguf_open(path, &m->gguf, err);
    if (!rc) rc = gguf_own_quantized(m->gguf, pr_should_abort, err);
    if (!rc) rc = pr_config_read(m->gguf, &m->cfg, err);
    if (!rc) rc = pr_weights_bind(m, err);
    if (!rc && gguf_find(m->gguf, "tokenizer.ggml.tokens")) {
        rc = pr_tokenizer_from_gguf(m->gguf, &m->tok, err);
        if (!rc) {
            pr_config *c = &m->cfg;
            c->im_start_id = pr_tokenizer_token_id(m->tok, "<|im_start|>");
            c->im_end_id = pr_tokenizer_token_id(m->tok, "<|im_end|>");
            c->endoftext_id = pr_tokenizer_token_id(m->tok, "<|endoftext|>");
            if (pr_tokenizer_n_tokens(m->tok) > c->n_vocab)
                rc = pr_set_error(err, PR_ERR_FORMAT, "%s: the tokenizer has %d tokens but the model's vocabulary "
                                  "is %d", path, pr_tokenizer_n_tokens(m->tok), c->n_vocab);
        }
    }
    if (!rc) {
        if (n_threads <= 0) n_threads = pr_physical_cores();
        if (pr_pool_new(n_threads, &m->pool)) rc = pr_set_error(err, PR_ERR_NOMEM, "cannot start threads");
        else pr_blas_single_thread();
    }
    if (rc) {
        pr_model_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void pr_model_free(pr_model *m) {
    if (!m) return;
    pr_pool_free(m->pool);
    pr_weights_free(&m->w);
    pr_tokenizer_free(m->tok);
    gguf_close(m->gguf);
    free(m);
}

const pr_config *pr_model_config(const pr_model *m) { return &m->cfg; }
int pr_model_n_threads(const pr_model *m) { return pr_pool_size(m->pool); }
unsigned long pr_model_pool_runs(const pr_model *m) { return pr_pool_runs(m->pool); }
int pr_model_n_tensors(const pr_model *m) { return gguf_n_tensors(m->gguf); }
const pr_tensor *pr_model_tensor_at(const pr_model *m, int i) { return gguf_tensor_at(m->gguf, i); }
const struct gguf_file *pr_model_gguf(const pr_model *m) { return m->gguf; }
const struct pr_tokenizer *pr_model_tokenizer(const pr_model *m) { return m->tok; }

#include <signal.h>
static volatile sig_atomic_t interrupt_requested;
void pr_interrupt_request(void) { interrupt_requested = 1; }
void pr_interrupt_clear(void) { interrupt_requested = 0; }
int pr_should_abort(void) { return interrupt_requested; }

/* ---- numeric helpers shared by the model files */

void pr_rmsnorm(float *out, const float *x, const pr_tensor *w, long n, float eps) {
    /* as transformers' Qwen2RMSNorm: x * rsqrt(mean(x²) + eps), then * weight (all f32) */
    float ss = 0;
    for (long i = 0; i < n; i++) ss += x[i] * x[i];
    float inv = 1.0f / sqrtf(ss / (float)n + eps);
    const float *g = pr_f32(w);
    for (long i = 0; i < n; i++) out[i] = g[i] * (x[i] * inv);
}

/* Σ x_i (c = 0, square = 0) or Σ (x_i − c)² in 16 interleaved partial sums, which the compiler keeps in vector
 * registers (one running sum would be a chain of n dependent additions: 1.6 % of CLIP-L's encode time) */
static float sum16(const float *x, long n, float c, int square) {
    float acc[16] = {0}, s = 0;
    long i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) acc[l] += square ? (x[i + l] - c) * (x[i + l] - c) : x[i + l];
    for (; i < n; i++) s += square ? (x[i] - c) * (x[i] - c) : x[i];
    for (int l = 0; l < 16; l++) s += acc[l];
    return s;
}

void pr_layernorm(float *out, const float *x, const pr_tensor *w, const pr_tensor *b, long n, float eps) {
    float mean = sum16(x, n, 0, 0) / (float)n, var = sum16(x, n, mean, 1) / (float)n;
    float inv = 1.0f / sqrtf(var + eps);
    const float *g = pr_f32(w), *bb = pr_f32(b);
    for (long i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * g[i] + bb[i];
}

void pr_softmax(float *x, long n) {
    float mx = x[0], s = 0;
    for (long i = 1; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (long i = 0; i < n; i++) s += (x[i] = expf(x[i] - mx));
    for (long i = 0; i < n; i++) x[i] /= s;
}
