/* Binds every weight the forward pass uses to its tensor in the file, checking shape and dtype. Names and
 * shapes: docs/gguf.md. Vectors (norms, biases, embeddings of one row) must be f32; matrices may be any
 * supported dtype. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "model/model.h"

typedef struct {
    pr_model *m;
    pr_error *err;
    int rc;
} binder;

/* ne1 == 0: a vector of ne0 f32 values; otherwise a matrix of ne1 rows × ne0 columns */
static const pr_tensor *bind(binder *b, long ne0, long ne1, const char *fmt, ...) {
    if (b->rc) return NULL;
    char name[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    const char *path = gguf_path(b->m->gguf);
    const pr_tensor *t = gguf_find_tensor(b->m->gguf, name);
    if (!t) {
        b->rc = pr_set_error(b->err, PR_ERR_FORMAT, "%s: missing tensor '%s'", path, name);
        return NULL;
    }
    long rows = 1;
    for (int d = 1; d < t->n_dims; d++) rows *= (long)t->ne[d];
    int ok = ne1 == 0 ? (t->n_dims == 1 && t->ne[0] == ne0) : (t->n_dims == 2 && t->ne[0] == ne0 && t->ne[1] == ne1);
    if (!ok) {
        if (ne1 == 0)
            b->rc = pr_set_error(b->err, PR_ERR_FORMAT, "%s: tensor '%s' has shape [%lld x %ld], expected [%ld]",
                                 path, name, (long long)t->ne[0], rows, ne0);
        else
            b->rc = pr_set_error(b->err, PR_ERR_FORMAT, "%s: tensor '%s' has %d dims, ne = [%lld, %ld], expected "
                                 "a matrix of %ld rows x %ld columns", path, name, t->n_dims, (long long)t->ne[0],
                                 rows, ne1, ne0);
        return NULL;
    }
    if (ne1 == 0 && t->type != PR_F32) {
        b->rc = pr_set_error(b->err, PR_ERR_FORMAT, "%s: tensor '%s' is %s, vectors must be f32", path, name,
                             pr_dtype_name(t->type));
        return NULL;
    }
    return t;
}

void pr_weights_free(pr_weights *w) {
    free(w->layers);
    free(w->v_layers);
    free(w->experts);
    w->layers = NULL;
    w->v_layers = NULL;
    w->experts = NULL;
}

int pr_weights_bind(pr_model *m, pr_error *err) {
    const pr_config *c = &m->cfg;
    pr_weights *w = &m->w;
    binder b = {m, err, 0};
    long d = c->n_embd, hd = c->n_embd / c->n_head, kv = hd * c->n_head_kv;

    w->tok_embd = bind(&b, d, c->n_vocab, "token_embd.weight");
    w->out_norm = bind(&b, d, 0, "output_norm.weight");
    w->lm_head = c->tied_embeddings ? w->tok_embd : bind(&b, d, c->n_vocab, "output.weight");
    w->layers = calloc((size_t)c->n_layer, sizeof *w->layers);
    if (!w->layers) return pr_set_error(err, PR_ERR_NOMEM, "out of memory");
    for (int i = 0; i < c->n_layer && !b.rc; i++) {
        pr_llm_layer *l = &w->layers[i];
        l->attn_norm = bind(&b, d, 0, "blk.%d.attn_norm.weight", i);
        l->wq = bind(&b, d, d, "blk.%d.attn_q.weight", i);
        l->bq = bind(&b, d, 0, "blk.%d.attn_q.bias", i);
        l->wk = bind(&b, d, kv, "blk.%d.attn_k.weight", i);
        l->bk = bind(&b, kv, 0, "blk.%d.attn_k.bias", i);
        l->wv = bind(&b, d, kv, "blk.%d.attn_v.weight", i);
        l->bv = bind(&b, kv, 0, "blk.%d.attn_v.bias", i);
        l->wo = bind(&b, d, d, "blk.%d.attn_output.weight", i);
        l->ffn_norm = bind(&b, d, 0, "blk.%d.ffn_norm.weight", i);
        l->w_gate = bind(&b, d, c->n_ff, "blk.%d.ffn_gate.weight", i);
        l->w_up = bind(&b, d, c->n_ff, "blk.%d.ffn_up.weight", i);
        l->w_down = bind(&b, c->n_ff, d, "blk.%d.ffn_down.weight", i);
    }
    if (b.rc || !c->has_vision) return b.rc;

    long vd = c->v_embd, p = c->v_patch_size, np = (c->v_image_size / p) * (c->v_image_size / p);
    w->patch_embd = bind(&b, 3 * p * p, vd, "v.patch_embd.weight");
    w->class_embd = bind(&b, vd, 0, "v.class_embd");
    w->pos_embd = bind(&b, vd, np + 1, "v.position_embd.weight");
    w->pre_ln_w = bind(&b, vd, 0, "v.pre_ln.weight");
    w->pre_ln_b = bind(&b, vd, 0, "v.pre_ln.bias");
    w->v_layers = calloc((size_t)c->v_layer, sizeof *w->v_layers);
    if (!w->v_layers) return pr_set_error(err, PR_ERR_NOMEM, "out of memory");
    for (int i = 0; i < c->n_layer_run && !b.rc; i++) { /* only the layers the selected hidden state needs */
        pr_vit_layer *l = &w->v_layers[i];
        l->ln1_w = bind(&b, vd, 0, "v.blk.%d.ln1.weight", i);
        l->ln1_b = bind(&b, vd, 0, "v.blk.%d.ln1.bias", i);
        l->wq = bind(&b, vd, vd, "v.blk.%d.attn_q.weight", i);
        l->bq = bind(&b, vd, 0, "v.blk.%d.attn_q.bias", i);
        l->wk = bind(&b, vd, vd, "v.blk.%d.attn_k.weight", i);
        l->bk = bind(&b, vd, 0, "v.blk.%d.attn_k.bias", i);
        l->wv = bind(&b, vd, vd, "v.blk.%d.attn_v.weight", i);
        l->bv = bind(&b, vd, 0, "v.blk.%d.attn_v.bias", i);
        l->wo = bind(&b, vd, vd, "v.blk.%d.attn_out.weight", i);
        l->bo = bind(&b, vd, 0, "v.blk.%d.attn_out.bias", i);
        l->ln2_w = bind(&b, vd, 0, "v.blk.%d.ln2.weight", i);
        l->ln2_b = bind(&b, vd, 0, "v.blk.%d.ln2.bias", i);
        l->fc1_w = bind(&b, vd, c->v_ff, "v.blk.%d.ffn_up.weight", i);
        l->fc1_b = bind(&b, c->v_ff, 0, "v.blk.%d.ffn_up.bias", i);
        l->fc2_w = bind(&b, c->v_ff, vd, "v.blk.%d.ffn_down.weight", i);
        l->fc2_b = bind(&b, vd, 0, "v.blk.%d.ffn_down.bias", i);
    }
    if (c->projector_type == PR_PROJ_MLP2X_GELU) {
        w->mm0_w = bind(&b, vd, d, "mm.0.weight");
        w->mm0_b = bind(&b, d, 0, "mm.0.bias");
        w->mm2_w = bind(&b, d, d, "mm.2.weight");
        w->mm2_b = bind(&b, d, 0, "mm.2.bias");
    } else if (c->projector_type == PR_PROJ_LINEAR) {
        w->mm0_w = bind(&b, vd, d, "mm.0.weight");
        w->mm0_b = bind(&b, d, 0, "mm.0.bias");
    }
    if (c->use_moe && !b.rc) {
        w->moe_gate = bind(&b, d, c->n_expert, "moe.gate.weight");
        w->experts = calloc((size_t)c->n_expert, sizeof *w->experts);
        if (!w->experts) return pr_set_error(err, PR_ERR_NOMEM, "out of memory");
        for (int e = 0; e < c->n_expert && !b.rc; e++) {
            w->experts[e].gate = bind(&b, d, c->moe_ff, "moe.exp.%d.ffn_gate.weight", e);
            w->experts[e].up = bind(&b, d, c->moe_ff, "moe.exp.%d.ffn_up.weight", e);
            w->experts[e].down = bind(&b, c->moe_ff, d, "moe.exp.%d.ffn_down.weight", e);
        }
    }
    return b.rc;
}
