/* The model as loaded: config, weight views into the mapped file, thread pool. Internal to the C core. */
#ifndef PR_MODEL_MODEL_H
#define PR_MODEL_MODEL_H
#include "io/gguf.h"
#include "kernels/pool.h"
#include "parrot.h"

typedef struct pr_llm_layer {
    const pr_tensor *attn_norm, *wq, *bq, *wk, *bk, *wv, *bv, *wo;
    const pr_tensor *ffn_norm, *w_gate, *w_up, *w_down;
} pr_llm_layer;

typedef struct pr_vit_layer {
    const pr_tensor *ln1_w, *ln1_b, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
    const pr_tensor *ln2_w, *ln2_b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} pr_vit_layer;

typedef struct pr_expert {
    const pr_tensor *gate, *up, *down;
} pr_expert;

typedef struct pr_weights {
    /* Qwen2 */
    const pr_tensor *tok_embd, *out_norm, *lm_head;
    pr_llm_layer *layers;
    /* CLIP vision tower */
    const pr_tensor *patch_embd, *class_embd, *pos_embd, *pre_ln_w, *pre_ln_b;
    pr_vit_layer *v_layers;
    /* projector: mlp2x_gelu uses mm0 + mm2, linear uses mm0 only */
    const pr_tensor *mm0_w, *mm0_b, *mm2_w, *mm2_b;
    /* multilingual MoE */
    const pr_tensor *moe_gate;
    pr_expert *experts;
} pr_weights;

struct pr_tokenizer;

struct pr_model {
    gguf_file *gguf;
    pr_config cfg;
    pr_weights w;
    pr_pool *pool;
    struct pr_tokenizer *tok;
};

int pr_config_read(const gguf_file *f, pr_config *c, pr_error *err);
int pr_weights_bind(pr_model *m, pr_error *err);
void pr_weights_free(pr_weights *w);

/* Shared numeric helpers of the model files */
void pr_rmsnorm(float *out, const float *x, const pr_tensor *w, long n, float eps);
void pr_layernorm(float *out, const float *x, const pr_tensor *w, const pr_tensor *b, long n, float eps);
void pr_softmax(float *x, long n);
/* 1-D tensor (norm weight, bias, class embedding) as f32 pointer; f32 in every file we write */
static inline const float *pr_f32(const pr_tensor *t) { return (const float *)t->data; }

/* The model a context decodes with */
pr_model *pr_context_model(const pr_context *c);

/* 1 if long work should stop (pr_interrupt_request was called) */
int pr_should_abort(void);
#endif
