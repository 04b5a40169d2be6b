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
#include <string.h>

#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "model/model.h"
#include "util/mem.h"

/* the layer norms between the products, a pool job: each thread takes its share of the rows */
typedef struct {
    const pr_config *c;
    long n, w;                   /* rows, values per row */
    const pr_tensor *ln_w, *ln_b;
    float *y;                    /* n × w: y = LayerNorm(x) */
    const float *x;
} ln_job;

static void ln_task(void *arg, int ith, int nth) {
    const ln_job *s = arg;
    long i0, i1;
    pr_split_range(s->n, ith, nth, &i0, &i1);
    for (long i = i0; i < i1; i++) pr_layernorm(s->y + i * s->w, s->x + i * s->w, s->ln_w, s->ln_b, s->w, s->c->v_eps);
}

static void layernorm(pr_model *m, long n, long w, const pr_tensor *ln_w, const pr_tensor *ln_b, float *y, const float *x) {
    ln_job j = {&m->cfg, n, w, ln_w, ln_b, y, x};
    pr_pool_run(m->pool, ln_task, &j);
}

/* y = act(x·W_pᵀ + b_p for each p, side by side) (+ res += y): pr_matmul_fused, out of memory as an error */
static int linear(pr_model *m, int n_w, const pr_tensor *const *W, const pr_tensor *const *b, const float *x, int n,
                  float *y, int act, float *res, pr_error *err) {
    if (pr_matmul_fused(m->pool, W, b, n_w, x, n, y, act, res))
        return pr_set_error(err, PR_ERR_NOMEM, "out of memory in the vision tower");
    return 0;
}

/* x: n × vd, updated in place through `n_run` encoder layers */
static int vit_layers(pr_model *m, float *x, int n, pr_error *err) {
    const pr_config *c = &m->cfg;
    long vd = c->v_embd, ff = c->v_ff;
    int hd = c->v_embd / c->v_head;
    float *h = pr_alloc((size_t)n, (size_t)vd, sizeof(float)), *qkv = pr_alloc((size_t)n, 3 * (size_t)vd, sizeof(float));
    float *o = pr_alloc((size_t)n, (size_t)vd, sizeof(float)), *f = pr_alloc((size_t)n, (size_t)ff, sizeof(float));
    const pr_kernels *K = pr_kern();
    int rc = 0;
    if (!h || !qkv || !o || !f) {
        rc = pr_set_error(err, PR_ERR_NOMEM, "out of memory in the vision tower");
        goto done;
    }
    for (int l = 0; l < c->n_layer_run; l++) {
        if (pr_should_abort()) {
            rc = pr_set_error(err, PR_ERR_INTERRUPTED, "interrupted");
            goto done;
        }
        const pr_vit_layer *L = &m->w.v_layers[l];
        layernorm(m, n, vd, L->ln1_w, L->ln1_b, h, x);
        /* q, k, v side by side in each row of qkv: one product over the three weights */
        if ((rc = linear(m, 3, (const pr_tensor *[]){L->wq, L->wk, L->wv}, (const pr_tensor *[]){L->bq, L->bk, L->bv},
                         h, n, qkv, PR_ACT_NONE, NULL, err)))
            goto done;
        pr_attn at = {.q = qkv, .k = qkv + vd, .v = qkv + 2 * vd, .kv_type = PR_F32, .out = o, .ldq = 3 * vd,
                      .ldkv = 3 * vd, .ldo = vd, .n_q = n, .n_kv = n, .n_head = c->v_head, .n_head_kv = c->v_head,
                      .hd = hd, .causal = 0};
        if ((rc = pr_attention(K, m->pool, &at, err))) goto done;
        if ((rc = linear(m, 1, &L->wo, &L->bo, o, n, h, PR_ACT_NONE, x, err))) goto done; /* x += o·Woᵀ + bo */

        layernorm(m, n, vd, L->ln2_w, L->ln2_b, h, x);
        if ((rc = linear(m, 1, &L->fc1_w, &L->fc1_b, h, n, f, c->v_act, NULL, err))) goto done;
        if ((rc = linear(m, 1, &L->fc2_w, &L->fc2_b, f, n, h, PR_ACT_NONE, x, err))) goto done;
    }
done:
    pr_free(h); pr_free(qkv); pr_free(o); pr_free(f);
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
    if (c->projector_type == PR_PROJ_LINEAR) return linear(m, 1, &m->w.mm0_w, &m->w.mm0_b, F, n, Y, PR_ACT_NONE, NULL, err);
    float *h = pr_alloc((size_t)n, (size_t)d, sizeof(float));
    if (!h) return pr_set_error(err, PR_ERR_NOMEM, "out of memory in the projector");
    int rc = linear(m, 1, &m->w.mm0_w, &m->w.mm0_b, F, n, h, PR_ACT_GELU, NULL, err); /* exact-erf GELU */
    if (!rc) rc = linear(m, 1, &m->w.mm2_w, &m->w.mm2_b, h, n, Y, PR_ACT_NONE, NULL, err);
    pr_free(h);
    return rc;
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
