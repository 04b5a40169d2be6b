/* Parrot's text-guided multilingual mixture of experts (one routing per image and prompt, dense):
 *
 *   x  = projected image features (n × d),  c = x[0]   (the CLS row)
 *   T  = embed_tokens(prompt text tokens)   (n_text × d)
 *   a  = softmax(c·Tᵀ / √d)                 cross-attention of CLS over the text
 *   g  = a·T                                the text-guided query (1 × d)
 *   w  = softmax(g·W_gateᵀ)                 routing weights, one per language expert
 *   Expert_e(x) = (silu(x·W_gate,eᵀ) ⊙ (x·W_up,eᵀ))·W_down,eᵀ
 *   out = Σ_e w_e·Expert_e(x) + moe_weight·x        (residual only when use_moe_residual)
 *
 * Expert outputs depend only on the image, so they are computed separately (pr_moe_experts) and can be
 * cached; routing and combination are cheap and run per prompt. */
#include <math.h>
#include <string.h>

#include "kernels/matmul.h"
#include "model/model.h"
#include "util/mem.h"

int pr_moe_routing(const pr_model *m, const float *x, const float *T, int n_text, float *w, pr_error *err) {
    const pr_config *c = &m->cfg;
    long d = c->n_embd;
    if (!c->has_vision || !c->use_moe) return pr_set_error(err, PR_ERR_ARG, "this model has no MoE");
    if (n_text < 1) return pr_set_error(err, PR_ERR_ARG, "the MoE needs at least one text token in the prompt");
    float *a = pr_alloc((size_t)n_text, sizeof(float), 1), *g = pr_calloc((size_t)d, sizeof(float), 1);
    float *row = pr_alloc((size_t)d, sizeof(float), 1);
    if (!a || !g || !row) {
        pr_free(a); pr_free(g); pr_free(row);
        return pr_set_error(err, PR_ERR_NOMEM, "out of memory in the MoE router");
    }
    float scale = 1.0f / sqrtf((float)d);
    for (int j = 0; j < n_text; j++) {
        float s = 0;
        for (long e = 0; e < d; e++) s += x[e] * T[j * d + e];
        a[j] = s * scale;
    }
    pr_softmax(a, n_text);
    for (int j = 0; j < n_text; j++)
        for (long e = 0; e < d; e++) g[e] += a[j] * T[j * d + e];
    for (int k = 0; k < c->n_expert; k++) {
        pr_row_to_f32(m->w.moe_gate, k, row);
        float s = 0;
        for (long e = 0; e < d; e++) s += g[e] * row[e];
        w[k] = s;
    }
    pr_softmax(w, c->n_expert);
    pr_free(a); pr_free(g); pr_free(row);
    return 0;
}

typedef struct {
    float *g;
    const float *u;
    long n;
} silu_job;

/* g = silu(g) ⊙ u, each thread on its share (multiples of 16 values: the same SIMD split for any thread count) */
static void silu_task(void *arg, int ith, int nth) {
    const silu_job *j = arg;
    long e0, e1;
    pr_split_aligned(j->n, 16, ith, nth, &e0, &e1);
    pr_kern()->silu_mul(j->g + e0, j->u + e0, e1 - e0);
}

int pr_moe_experts(pr_model *m, const float *x, int n_tok, float *out, pr_error *err) {
    const pr_config *c = &m->cfg;
    long d = c->n_embd, ff = c->moe_ff;
    if (!c->has_vision || !c->use_moe) return pr_set_error(err, PR_ERR_ARG, "this model has no MoE");
    float *gt = pr_alloc((size_t)n_tok, (size_t)ff, sizeof(float)), *up = pr_alloc((size_t)n_tok, (size_t)ff, sizeof(float));
    if (!gt || !up) {
        pr_free(gt); pr_free(up);
        return pr_set_error(err, PR_ERR_NOMEM, "out of memory in the MoE experts");
    }
    int rc = 0;
    for (int e = 0; e < c->n_expert; e++) {
        if (pr_should_abort()) {
            rc = pr_set_error(err, PR_ERR_INTERRUPTED, "interrupted");
            break;
        }
        const pr_expert *E = &m->w.experts[e];
        pr_matmul(m->pool, E->gate, x, n_tok, gt);
        pr_matmul(m->pool, E->up, x, n_tok, up);
        silu_job sj = {gt, up, n_tok * ff};
        pr_pool_run(m->pool, silu_task, &sj); /* gt = silu(gt) ⊙ up */
        pr_matmul(m->pool, E->down, gt, n_tok, out + (long)e * n_tok * d);
    }
    pr_free(gt); pr_free(up);
    return rc;
}

int pr_moe_combine(const pr_model *m, const float *x, const float *Y, const float *w, int n_tok, float *out,
                   pr_error *err) {
    const pr_config *c = &m->cfg;
    long n = (long)n_tok * c->n_embd;
    (void)err;
    if (!c->use_moe) {
        memcpy(out, x, (size_t)n * sizeof(float));
        return 0;
    }
    for (long i = 0; i < n; i++) out[i] = c->use_moe_residual ? c->moe_weight * x[i] : 0.0f;
    for (int e = 0; e < c->n_expert; e++)
        for (long i = 0; i < n; i++) out[i] += w[e] * Y[e * n + i];
    return 0;
}
