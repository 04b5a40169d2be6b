/* The CLIP vision tower (transformers' CLIPVisionModel) and the multimodal projector.
 *
 *   E = patches(pixels)·W_patchᵀ                          (14×14 stride-14 conv written as a GEMM)
 *   x = [class_embd; E] + P                                (577 tokens at 336/14)
 *   x = LayerNorm_pre(x)                                   (hidden_states[0])
 *   for each encoder layer (only as many as select_layer needs):
 *     x = x + MHA(LN1(x))                                  (bidirectional, biases)
 *     x = x + fc2(act(fc1(LN2(x))))                        (act = quick_gelu: x·σ(1.702x))
 *   F = x, or x without the CLS row for select_feature "patch"
 *   projector mlp2x_gelu: Y = GELU(F·W0ᵀ + b0)·W2ᵀ + b2   (exact erf GELU); linear: Y = F·W0ᵀ + b0
 */
#include <math.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "model/model.h"
#include "util/mem.h"

static inline float gelu_erf(float x) { return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2)); }

/* ---- the element-wise steps between the products, each a pool job: every thread takes its share of the rows
 * (layer norms) or of the values, on multiples of 16 (the SIMD activations then split their work the same way
 * whatever the thread count) */
enum { STEP_LN, STEP_BIAS, STEP_BIAS_ADD, STEP_BIAS_ACT };

typedef struct {
    const pr_config *c;
    int step;
    long n, w;                   /* rows, values per row */
    const pr_tensor *b, *ln_b;   /* a bias (or NULL); the layer norm's weight is b, its bias ln_b */
    float *y;                    /* n × w: the values the step updates */
    float *res;                  /* STEP_BIAS_ADD: res += y + b;  STEP_LN: y = LayerNorm(res) */
    int act;                     /* STEP_BIAS_ACT: PR_ACT_QUICK_GELU or else exact-erf GELU */
} vit_step;

static void vit_step_task(void *arg, int ith, int nth) {
    const vit_step *s = arg;
    long e0, e1;
    if (s->step == STEP_LN) {
        pr_split_range(s->n, ith, nth, &e0, &e1);
        for (long i = e0; i < e1; i++)
            pr_layernorm(s->y + i * s->w, s->res + i * s->w, s->b, s->ln_b, s->w, s->c->v_eps);
        return;
    }
    pr_split_aligned(s->n * s->w, 16, ith, nth, &e0, &e1);
    pr_add_bias_range(s->b, s->y, s->w, e0, e1);
    if (s->step == STEP_BIAS_ADD)
        for (long e = e0; e < e1; e++) s->res[e] += s->y[e];
    if (s->step == STEP_BIAS_ACT && s->act == PR_ACT_QUICK_GELU)
        pr_kern()->quick_gelu(s->y + e0, e1 - e0); /* x·σ(1.702x) */
    else if (s->step == STEP_BIAS_ACT)
        for (long e = e0; e < e1; e++) s->y[e] = gelu_erf(s->y[e]);
}

static void run_step(pr_model *m, vit_step s) { pr_pool_run(m->pool, vit_step_task, &s); }

/* x: n × vd, updated in place through `n_run` encoder layers */
static int vit_layers(pr_model *m, float *x, int n, pr_error *err) {
    const pr_config *c = &m->cfg;
    long vd = c->v_embd, ff = c->v_ff;
    int hd = c->v_embd / c->v_head;
    float *h = pr_alloc((size_t)n, (size_t)vd, sizeof(float)), *q = pr_alloc((size_t)n, (size_t)vd, sizeof(float));
    float *k = pr_alloc((size_t)n, (size_t)vd, sizeof(float)), *v = pr_alloc((size_t)n, (size_t)vd, sizeof(float));
    float *o = pr_alloc((size_t)n, (size_t)vd, sizeof(float)), *f = pr_alloc((size_t)n, (size_t)ff, sizeof(float));
    const pr_kernels *K = pr_kern();
    int rc = 0;
    if (!h || !q || !k || !v || !o || !f) {
        rc = pr_set_error(err, PR_ERR_NOMEM, "out of memory in the vision tower");
        goto done;
    }
    for (int l = 0; l < c->n_layer_run; l++) {
        if (pr_should_abort()) {
            rc = pr_set_error(err, PR_ERR_INTERRUPTED, "interrupted");
            goto done;
        }
        const pr_vit_layer *L = &m->w.v_layers[l];
        run_step(m, (vit_step){c, STEP_LN, n, vd, L->ln1_w, L->ln1_b, h, x, 0});
        pr_matmul(m->pool, L->wq, h, n, q);
        pr_matmul(m->pool, L->wk, h, n, k);
        pr_matmul(m->pool, L->wv, h, n, v);
        run_step(m, (vit_step){c, STEP_BIAS, n, vd, L->bq, NULL, q, NULL, 0});
        run_step(m, (vit_step){c, STEP_BIAS, n, vd, L->bk, NULL, k, NULL, 0});
        run_step(m, (vit_step){c, STEP_BIAS, n, vd, L->bv, NULL, v, NULL, 0});
        pr_attn at = {.q = q, .k = k, .v = v, .kv_type = PR_F32, .out = o, .ldq = vd, .ldkv = vd, .ldo = vd,
                      .n_q = n, .n_kv = n, .n_head = c->v_head, .n_head_kv = c->v_head, .hd = hd, .causal = 0};
        if ((rc = pr_attention(K, m->pool, &at, err))) goto done;
        pr_matmul(m->pool, L->wo, o, n, h);
        run_step(m, (vit_step){c, STEP_BIAS_ADD, n, vd, L->bo, NULL, h, x, 0}); /* x += o·Woᵀ + bo */

        run_step(m, (vit_step){c, STEP_LN, n, vd, L->ln2_w, L->ln2_b, h, x, 0});
        pr_matmul(m->pool, L->fc1_w, h, n, f);
        run_step(m, (vit_step){c, STEP_BIAS_ACT, n, ff, L->fc1_b, NULL, f, NULL, c->v_act});
        pr_matmul(m->pool, L->fc2_w, f, n, h);
        run_step(m, (vit_step){c, STEP_BIAS_ADD, n, vd, L->fc2_b, NULL, h, x, 0});
    }
done:
    pr_free(h); pr_free(q); pr_free(k); pr_free(v); pr_free(o); pr_free(f);
    return rc;
}

/* Y (n × d) = projector(F) for F n × vd */
int pr_project(pr_model *m, const float *F, int n, float *Y, pr_error *err) {
    const pr_config *c = &m->cfg;
    if (!c->has_vision) return pr_set_error(err, PR_ERR_ARG, "%s: this model has no projector", gguf_path(m->gguf));
    long d = c->n_embd;
    if (c->projector_type == PR_PROJ_IDENTITY) {
        memcpy(Y, F, (size_t)n * d * sizeof(float));
        return 0;
    }
    if (c->projector_type == PR_PROJ_LINEAR) {
        pr_matmul(m->pool, m->w.mm0_w, F, n, Y);
        pr_add_bias(m->w.mm0_b, Y, n, d);
        return 0;
    }
    float *h = pr_alloc((size_t)n, (size_t)d, sizeof(float));
    if (!h) return pr_set_error(err, PR_ERR_NOMEM, "out of memory in the projector");
    pr_matmul(m->pool, m->w.mm0_w, F, n, h);
    run_step(m, (vit_step){c, STEP_BIAS_ACT, n, d, m->w.mm0_b, NULL, h, NULL, PR_ACT_GELU});
    pr_matmul(m->pool, m->w.mm2_w, h, n, Y);
    run_step(m, (vit_step){c, STEP_BIAS, n, d, m->w.mm2_b, NULL, Y, NULL, 0});
    pr_free(h);
    return 0;
}

int pr_vision_features(pr_model *m, const float *pixels, float *out, pr_error *err) {
    const pr_config *c = &m->cfg;
    if (!c->has_vision) return pr_set_error(err, PR_ERR_ARG, "%s: this model has no vision tower", gguf_path(m->gguf));
    int S = c->v_image_size, p = c->v_patch_size, G = S / p, np = G * G, n = np + 1;
    long vd = c->v_embd, pd = 3L * p * p;
    float *patches = pr_alloc((size_t)np, (size_t)pd, sizeof(float));
    float *x = pr_alloc((size_t)n, (size_t)vd, sizeof(float)), *t = pr_alloc((size_t)n, (size_t)vd, sizeof(float));
    int rc = 0;
    if (!patches || !x || !t) {
        rc = pr_set_error(err, PR_ERR_NOMEM, "out of memory in the vision tower");
        goto done;
    }
    /* patch (gy, gx) as a vector in the conv weight's (channel, ky, kx) order */
    for (int gy = 0; gy < G; gy++)
        for (int gx = 0; gx < G; gx++) {
            float *dst = patches + (long)(gy * G + gx) * pd;
            for (int ch = 0; ch < 3; ch++)
                for (int ky = 0; ky < p; ky++)
                    memcpy(dst + (ch * p + ky) * p, pixels + ((long)ch * S + gy * p + ky) * S + gx * p,
                           (size_t)p * sizeof(float));
        }
    pr_matmul(m->pool, m->w.patch_embd, patches, np, t + vd);
    memcpy(t, pr_f32(m->w.class_embd), (size_t)vd * sizeof(float));
    float *pos = pr_alloc((size_t)vd, sizeof(float), 1);
    if (!pos) {
        rc = pr_set_error(err, PR_ERR_NOMEM, "out of memory in the vision tower");
        goto done;
    }
    for (int i = 0; i < n; i++) {
        pr_row_to_f32(m->w.pos_embd, i, pos);
        for (long e = 0; e < vd; e++) t[i * vd + e] += pos[e];
        pr_layernorm(x + i * vd, t + i * vd, m->w.pre_ln_w, m->w.pre_ln_b, vd, c->v_eps);
    }
    pr_free(pos);
    rc = vit_layers(m, x, n, err);
    if (rc) goto done;
    const float *F = c->select_feature == PR_FEAT_PATCH ? x + vd : x;
    memcpy(out, F, (size_t)c->n_img_tokens * vd * sizeof(float));
done:
    pr_free(patches); pr_free(x); pr_free(t);
    return rc;
}

int pr_encode_image(pr_model *m, const float *pixels, float *out, pr_error *err) {
    const pr_config *c = &m->cfg;
    if (!c->has_vision) return pr_set_error(err, PR_ERR_ARG, "%s: this model has no vision tower", gguf_path(m->gguf));
    float *F = pr_alloc((size_t)c->n_img_tokens, (size_t)c->v_embd, sizeof(float));
    if (!F) return pr_set_error(err, PR_ERR_NOMEM, "out of memory in the vision tower");
    int rc = pr_vision_features(m, pixels, F, err);
    if (!rc) rc = pr_project(m, F, c->n_img_tokens, out, err);
    pr_free(F);
    return rc;
}
