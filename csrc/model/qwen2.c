/* The Qwen2 decoder (transformers' Qwen2ForCausalLM), one sequence per context:
 *
 *   h = embed(ids)                                   (or given input embeddings)
 *   for each layer:
 *     a = RMSNorm(h)·g1
 *     q, k, v = a·Wqᵀ + bq, a·Wkᵀ + bk, a·Wvᵀ + bv
 *     q, k = RoPE(q, pos), RoPE(k, pos)              (rotate-half, theta = rope_theta)
 *     h = h + softmax(q·Kᵀ/√d_head + causal mask)·V · Woᵀ     (GQA: head i reads kv head i / (H / H_kv))
 *     m = RMSNorm(h)·g2
 *     h = h + (silu(m·W_gateᵀ) ⊙ (m·W_upᵀ))·W_downᵀ
 *   logits = RMSNorm(h)·g · W_lm_headᵀ
 *
 * Positions continue from the cache: new rows get n_past, n_past+1, ...; the KV cache grows on demand up to
 * the context size, so a short chat does not reserve the whole context. It holds f32, or f16 (half the memory
 * and the reading time per decoded token) when the context is made with kv_type PR_F16.
 * Attention is fused (kernels/attention.c): no n × n score matrix is ever stored. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "model/model.h"
#include "util/mem.h"

#define PREFILL_CHUNK 256 /* positions per pass: bounds scratch memory and lets Ctrl-C in between */

struct pr_context {
    pr_model *m;
    int n_ctx, n_past, cap;
    int kv_type;      /* PR_F32 or PR_F16 */
    size_t kv_elt;    /* bytes per cached value */
    void **k, **v;    /* per layer: cap × kv_dim */
    float *inv_freq;  /* d_head/2 RoPE frequencies */
};

int pr_context_new(pr_model *m, int n_ctx, pr_context **out, pr_error *err) {
    return pr_context_new_kv(m, n_ctx, PR_F32, out, err);
}

int pr_context_new_kv(pr_model *m, int n_ctx, int kv_type, pr_context **out, pr_error *err) {
    *out = NULL;
    if (n_ctx <= 0 || n_ctx > m->cfg.n_ctx_train)
        return pr_set_error(err, PR_ERR_ARG, "context size %d must be between 1 and the model's %d", n_ctx,
                            m->cfg.n_ctx_train);
    if (kv_type != PR_F32 && kv_type != PR_F16)
        return pr_set_error(err, PR_ERR_ARG, "KV cache type must be f32 or f16, got %s",
                            pr_dtype_name(kv_type) ? pr_dtype_name(kv_type) : "an unknown type");
    pr_context *c = calloc(1, sizeof *c);
    if (!c) return pr_set_error(err, PR_ERR_NOMEM, "out of memory");
    c->m = m;
    c->n_ctx = n_ctx;
    c->kv_type = kv_type;
    c->kv_elt = kv_type == PR_F16 ? sizeof(uint16_t) : sizeof(float);
    int L = m->cfg.n_layer, hd = m->cfg.n_embd / m->cfg.n_head;
    c->k = calloc((size_t)L, sizeof(void *));
    c->v = calloc((size_t)L, sizeof(void *));
    c->inv_freq = malloc((size_t)hd / 2 * sizeof(float));
    if (!c->k || !c->v || !c->inv_freq) {
        pr_context_free(c);
        return pr_set_error(err, PR_ERR_NOMEM, "out of memory");
    }
    /* as transformers: inv_freq = 1 / theta^(2i/d) in f32 */
    for (int i = 0; i < hd / 2; i++)
        c->inv_freq[i] = 1.0f / powf(m->cfg.rope_theta, (float)(2 * i) / (float)hd);
    *out = c;
    return 0;
}

void pr_context_free(pr_context *c) {
    if (!c) return;
    for (int l = 0; c->k && l < c->m->cfg.n_layer; l++) pr_free(c->k[l]);
    for (int l = 0; c->v && l < c->m->cfg.n_layer; l++) pr_free(c->v[l]);
    free(c->k);
    free(c->v);
    free(c->inv_freq);
    free(c);
}

int pr_context_n_ctx(const pr_context *c) { return c->n_ctx; }
pr_model *pr_context_model(const pr_context *c) { return c->m; }
int pr_context_n_past(const pr_context *c) { return c->n_past; }

int pr_context_truncate(pr_context *c, int n_past, pr_error *err) {
    if (n_past < 0 || n_past > c->n_past)
        return pr_set_error(err, PR_ERR_ARG, "cannot truncate a sequence of %d positions to %d", c->n_past, n_past);
    c->n_past = n_past;
    return 0;
}

/* Makes room for `need` cached positions. */
static int reserve(pr_context *c, int need, pr_error *err) {
    if (need <= c->cap) return 0;
    int cap = c->cap ? c->cap : 256;
    while (cap < need) cap *= 2;
    if (cap > c->n_ctx) cap = c->n_ctx;
    const pr_config *cf = &c->m->cfg;
    size_t kv = (size_t)(cf->n_embd / cf->n_head) * cf->n_head_kv;
    for (int l = 0; l < cf->n_layer; l++) {
        void *k = pr_alloc((size_t)cap, kv, c->kv_elt), *v = pr_alloc((size_t)cap, kv, c->kv_elt);
        if (!k || !v) {
            pr_free(k);
            pr_free(v);
            return pr_set_error(err, PR_ERR_NOMEM, "out of memory growing the KV cache to %d positions", cap);
        }
        if (c->k[l]) {
            memcpy(k, c->k[l], (size_t)c->n_past * kv * c->kv_elt);
            memcpy(v, c->v[l], (size_t)c->n_past * kv * c->kv_elt);
        }
        pr_free(c->k[l]);
        pr_free(c->v[l]);
        c->k[l] = k;
        c->v[l] = v;
    }
    c->cap = cap;
    return 0;
}

int pr_embed_tokens(const pr_model *m, const int32_t *ids, int n, float *out, pr_error *err) {
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->cfg.n_vocab)
            return pr_set_error(err, PR_ERR_ARG, "token id %d at position %d is outside the vocabulary (0..%d)",
                                ids[i], i, m->cfg.n_vocab - 1);
        pr_row_to_f32(m->w.tok_embd, ids[i], out + (size_t)i * m->cfg.n_embd);
    }
    return 0;
}

static void rope(float *x, int n_heads, int hd, int pos, const float *inv_freq) {
    for (int i = 0; i < hd / 2; i++) {
        float ang = (float)pos * inv_freq[i], cs = cosf(ang), sn = sinf(ang);
        for (int h = 0; h < n_heads; h++) {
            float *p = x + h * hd, a = p[i], b = p[i + hd / 2];
            p[i] = a * cs - b * sn;
            p[i + hd / 2] = b * cs + a * sn;
        }
    }
}

/* One pass of n ≤ PREFILL_CHUNK positions. x (n × d) is updated in place to the final hidden states. */
static int forward_chunk(pr_context *c, float *x, int n, pr_error *err) {
    pr_model *m = c->m;
    const pr_config *cf = &m->cfg;
    long d = cf->n_embd, hd = d / cf->n_head, kv = hd * cf->n_head_kv, ff = cf->n_ff;
    float *a = pr_alloc((size_t)n, (size_t)d, sizeof(float)), *q = pr_alloc((size_t)n, (size_t)d, sizeof(float));
    float *kb = pr_alloc((size_t)n, (size_t)kv, sizeof(float)), *vb = pr_alloc((size_t)n, (size_t)kv, sizeof(float));
    float *o = pr_alloc((size_t)n, (size_t)d, sizeof(float));
    float *g = pr_alloc((size_t)n, (size_t)ff, sizeof(float)), *u = pr_alloc((size_t)n, (size_t)ff, sizeof(float));
    const pr_kernels *K = pr_kern();
    int rc = 0;
    if (!a || !q || !kb || !vb || !o || !g || !u) {
        rc = pr_set_error(err, PR_ERR_NOMEM, "out of memory for a pass of %d positions", n);
        goto done;
    }
    for (int l = 0; l < cf->n_layer; l++) {
        if (pr_should_abort(m)) {
            rc = pr_set_error(err, PR_ERR_INTERRUPTED, "interrupted");
            goto done;
        }
        const pr_llm_layer *L = &m->w.layers[l];
        for (int i = 0; i < n; i++) pr_rmsnorm(a + i * d, x + i * d, L->attn_norm, d, cf->rms_eps);
        pr_matmul(m->pool, L->wq, a, n, q);
        pr_add_bias(L->bq, q, n, d);
        pr_matmul(m->pool, L->wk, a, n, kb);
        pr_add_bias(L->bk, kb, n, kv);
        pr_matmul(m->pool, L->wv, a, n, vb);
        pr_add_bias(L->bv, vb, n, kv);
        for (int i = 0; i < n; i++) {
            rope(q + i * d, cf->n_head, (int)hd, c->n_past + i, c->inv_freq);
            rope(kb + i * kv, cf->n_head_kv, (int)hd, c->n_past + i, c->inv_freq);
        }
        char *kc = (char *)c->k[l] + (size_t)c->n_past * kv * c->kv_elt;
        char *vc = (char *)c->v[l] + (size_t)c->n_past * kv * c->kv_elt;
        if (c->kv_type == PR_F16) {
            K->f32_to_f16(kb, (uint16_t *)kc, n * kv);
            K->f32_to_f16(vb, (uint16_t *)vc, n * kv);
        } else {
            memcpy(kc, kb, (size_t)n * kv * sizeof(float));
            memcpy(vc, vb, (size_t)n * kv * sizeof(float));
        }
        pr_attn at = {.q = q, .k = c->k[l], .v = c->v[l], .kv_type = c->kv_type, .out = o, .ldq = d, .ldkv = kv,
                      .ldo = d, .n_q = n, .n_kv = c->n_past + n, .n_head = cf->n_head, .n_head_kv = cf->n_head_kv,
                      .hd = (int)hd, .causal = 1};
        if ((rc = pr_attention(K, m->pool, &at, err))) goto done;
        pr_matmul(m->pool, L->wo, o, n, a);
        for (long i = 0; i < n * d; i++) x[i] += a[i];

        for (int i = 0; i < n; i++) pr_rmsnorm(a + i * d, x + i * d, L->ffn_norm, d, cf->rms_eps);
        pr_matmul(m->pool, L->w_gate, a, n, g);
        pr_matmul(m->pool, L->w_up, a, n, u);
        K->silu_mul(g, u, n * ff); /* g = silu(g) ⊙ u */
        pr_matmul(m->pool, L->w_down, g, n, a);
        for (long i = 0; i < n * d; i++) x[i] += a[i];
    }
done:
    pr_free(a); pr_free(q); pr_free(kb); pr_free(vb); pr_free(o); pr_free(g); pr_free(u);
    return rc;
}

int pr_decode_embd(pr_context *c, const float *embd, int n, float *logits, int all_logits, pr_error *err) {
    pr_model *m = c->m;
    const pr_config *cf = &m->cfg;
    long d = cf->n_embd;
    if (n <= 0) return pr_set_error(err, PR_ERR_ARG, "nothing to decode (0 positions)");
    if (c->n_past + n > c->n_ctx)
        return pr_set_error(err, PR_ERR_CONTEXT, "sequence of %d positions does not fit: %d already cached, "
                            "context size %d", n, c->n_past, c->n_ctx);
    int rc = reserve(c, c->n_past + n, err);
    if (rc) return rc;
    int chunk = n < PREFILL_CHUNK ? n : PREFILL_CHUNK;
    float *x = pr_alloc((size_t)chunk, (size_t)d, sizeof(float)), *hn = pr_alloc((size_t)chunk, (size_t)d, sizeof(float));
    if (!x || !hn) {
        pr_free(x); pr_free(hn);
        return pr_set_error(err, PR_ERR_NOMEM, "out of memory");
    }
    int start_past = c->n_past;
    for (int s = 0; s < n && !rc; s += chunk) {
        int nc = n - s < chunk ? n - s : chunk;
        memcpy(x, embd + (long)s * d, (size_t)nc * d * sizeof(float));
        rc = forward_chunk(c, x, nc, err);
        if (rc) break;
        c->n_past += nc;
        if (!logits) continue;
        if (all_logits) {
            for (int i = 0; i < nc; i++) pr_rmsnorm(hn + i * d, x + i * d, m->w.out_norm, d, cf->rms_eps);
            pr_matmul(m->pool, m->w.lm_head, hn, nc, logits + (long)s * cf->n_vocab);
        } else if (s + nc == n) {
            pr_rmsnorm(hn, x + (long)(nc - 1) * d, m->w.out_norm, d, cf->rms_eps);
            pr_matmul(m->pool, m->w.lm_head, hn, 1, logits);
        }
    }
    if (rc) c->n_past = start_past; /* a failed pass leaves the sequence as it was */
    pr_free(x);
    pr_free(hn);
    return rc;
}

int pr_decode_tokens(pr_context *c, const int32_t *ids, int n, float *logits, int all_logits, pr_error *err) {
    if (n <= 0) return pr_set_error(err, PR_ERR_ARG, "nothing to decode (0 tokens)");
    float *e = pr_alloc((size_t)n, (size_t)c->m->cfg.n_embd, sizeof(float));
    if (!e) return pr_set_error(err, PR_ERR_NOMEM, "out of memory embedding %d tokens", n);
    int rc = pr_embed_tokens(c->m, ids, n, e, err);
    if (!rc) rc = pr_decode_embd(c, e, n, logits, all_logits, err);
    pr_free(e);
    return rc;
}
