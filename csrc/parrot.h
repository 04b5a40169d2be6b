/* parrot.h — the plain C API of the parrot inference engine.
 *
 * Nothing behind this header calls Python. Every function that can fail returns 0 on success or a
 * PR_ERR_* code, and fills a pr_error with a human-readable message naming what was wrong (file, tensor,
 * field, byte offset). No function calls exit() or abort() on user input.
 *
 * Rooms (see docs/architecture.md):
 *   io/       GGUF reader (mmap + validation)
 *   kernels/  matrix kernels per dtype, CPU dispatch, thread pool
 *   model/    config, weights, Qwen2 decoder, CLIP vision tower, projector, multilingual MoE
 *   text/     Qwen2 byte-level BPE tokenizer
 *   image/    PNG/JPEG decoding and CLIP preprocessing
 *   python/   the CPython extension (the only place that includes Python.h)
 */
#ifndef PARROT_H
#define PARROT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- errors */
enum {
    PR_OK = 0,
    PR_ERR_IO = 1,          /* cannot open / read / map a file */
    PR_ERR_FORMAT = 2,      /* model file is corrupt, truncated, foreign or inconsistent */
    PR_ERR_ARG = 3,         /* bad argument from the caller */
    PR_ERR_NOMEM = 4,       /* allocation failed */
    PR_ERR_IMAGE = 5,       /* image cannot be decoded or is refused */
    PR_ERR_TOKENIZER = 6,   /* tokenizer data or input problem */
    PR_ERR_INTERRUPTED = 7, /* the abort flag was raised */
    PR_ERR_CONTEXT = 8,     /* sequence does not fit in the context */
};

typedef struct pr_error {
    int code;
    char msg[1024];
} pr_error;

/* Formats msg (printf-style), stores code, returns code. Safe with e == NULL. */
int pr_set_error(pr_error *e, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* ---------------------------------------------------------------- tensors */
/* Type ids are ggml's, so files written by the gguf package mean the same thing here. */
typedef enum pr_dtype {
    PR_F32 = 0,
    PR_F16 = 1,
    PR_Q4_0 = 2,
    PR_Q8_0 = 8,
    PR_BF16 = 30,
} pr_dtype;

const char *pr_dtype_name(int type);     /* "f32", ..., or NULL for an unknown id */
size_t pr_dtype_block_size(int type);    /* elements per block (1 for f32/f16/bf16, 32 for q*_0), 0 unknown */
size_t pr_dtype_block_bytes(int type);   /* bytes per block, 0 unknown */

#define PR_MAX_DIMS 4

/* A tensor viewed in place inside the mapped model file. ne[0] is the fastest-varying dimension (GGUF
 * order): an HF weight of shape [out, in] has ne = {in, out} and is stored as `out` rows of `in` elements. */
typedef struct pr_tensor {
    const char *name;
    int type;
    int n_dims;
    int64_t ne[PR_MAX_DIMS];
    size_t nbytes;
    const void *data;
} pr_tensor;

/* ---------------------------------------------------------------- the model */
typedef struct pr_model pr_model;     /* weights + config + tokenizer, immutable after load, shareable */
typedef struct pr_context pr_context; /* one sequence: KV cache and scratch; one thread at a time */

enum { PR_PROJ_MLP2X_GELU = 0, PR_PROJ_LINEAR = 1, PR_PROJ_IDENTITY = 2 };
enum { PR_FEAT_CLS_PATCH = 0, PR_FEAT_PATCH = 1 };
enum { PR_ACT_QUICK_GELU = 0, PR_ACT_GELU = 1 };

typedef struct pr_config {
    /* LLM (Qwen2) */
    int n_vocab, n_embd, n_layer, n_head, n_head_kv, n_ff, n_ctx_train;
    float rms_eps, rope_theta;
    int tied_embeddings;
    /* special tokens (-1 if absent) */
    int32_t eos_id, im_start_id, im_end_id, endoftext_id, pad_id;
    /* vision (CLIP) */
    int has_vision;
    int v_image_size, v_patch_size, v_embd, v_ff, v_layer, v_head, v_act;
    float v_eps;
    float image_mean[3], image_std[3];
    int select_layer;   /* as in config: negative counts from the end of hidden_states */
    int select_feature; /* PR_FEAT_* */
    int n_layer_run;    /* encoder layers actually needed for select_layer */
    int n_img_tokens;   /* tokens after selection: 577 for cls_patch at 336/14 */
    /* projector */
    int projector_type; /* PR_PROJ_* */
    int mm_hidden;
    /* multilingual MoE */
    int use_moe, use_moe_residual, n_expert, moe_ff, moe_top_k;
    float moe_weight;
} pr_config;

/* Opens and validates a GGUF model file written by parrot's converter; the file is mapped, weights are used
 * in place. n_threads <= 0 picks the number of physical cores. */
int pr_model_load(const char *path, int n_threads, pr_model **out, pr_error *err);
void pr_model_free(pr_model *m);
const pr_config *pr_model_config(const pr_model *m);
int pr_model_n_threads(const pr_model *m);
/* Tensor lookup by GGUF name (NULL if absent) and enumeration. */
const pr_tensor *pr_model_tensor(const pr_model *m, const char *name);
int pr_model_n_tensors(const pr_model *m);
const pr_tensor *pr_model_tensor_at(const pr_model *m, int i);
/* The mapped file's GGUF reader, for metadata lookups (see io/gguf.h). */
struct gguf_file;
const struct gguf_file *pr_model_gguf(const pr_model *m);
struct pr_tokenizer;
const struct pr_tokenizer *pr_model_tokenizer(const pr_model *m); /* NULL if the file has none */

/* Stopping long work: the per-model flag, or the process-wide one (async-signal-safe to set, for a SIGINT
 * handler), is checked between layers and chunks; functions then return PR_ERR_INTERRUPTED. The caller
 * clears the flags. */
volatile int *pr_model_abort_flag(pr_model *m);
void pr_interrupt_request(void); /* async-signal-safe */
void pr_interrupt_clear(void);
int pr_interrupt_pending(void);

/* ---------------------------------------------------------------- the language model */
int pr_context_new(pr_model *m, int n_ctx, pr_context **out, pr_error *err);
/* The same with the KV cache stored as kv_type: PR_F32 (pr_context_new) or PR_F16 (half the memory). */
int pr_context_new_kv(pr_model *m, int n_ctx, int kv_type, pr_context **out, pr_error *err);
void pr_context_free(pr_context *c);
int pr_context_n_ctx(const pr_context *c);
int pr_context_n_past(const pr_context *c);
/* Forget cached positions >= n_past (0 clears the sequence). */
int pr_context_truncate(pr_context *c, int n_past, pr_error *err);

/* Embedding rows of token ids: out is n × n_embd. */
int pr_embed_tokens(const pr_model *m, const int32_t *ids, int n, float *out, pr_error *err);

/* Runs n new positions (from embeddings, n × n_embd) through the decoder, appending to the KV cache.
 * logits: if all_logits, n × n_vocab; else n_vocab for the last position; may be NULL. */
int pr_decode_embd(pr_context *c, const float *embd, int n, float *logits, int all_logits, pr_error *err);
/* The same from token ids. */
int pr_decode_tokens(pr_context *c, const int32_t *ids, int n, float *logits, int all_logits, pr_error *err);

/* ---------------------------------------------------------------- vision, projector, MoE */
/* pixels: 3 × S × S float32 (preprocessed, CHW). out: n_img_tokens × n_embd (ViT + selection + projector). */
int pr_encode_image(pr_model *m, const float *pixels, float *out, pr_error *err);
/* The two halves of pr_encode_image: the selected vision hidden state (n_img_tokens × v_embd) ... */
int pr_vision_features(pr_model *m, const float *pixels, float *out, pr_error *err);
/* ... and the projector on n rows of it (n × n_embd). */
int pr_project(pr_model *m, const float *features, int n, float *out, pr_error *err);
/* The MoE's routing weights (n_expert) for image features x (n_img_tokens × n_embd, row 0 is CLS) and the
 * text embeddings T (n_text × n_embd). */
int pr_moe_routing(const pr_model *m, const float *x, const float *T, int n_text, float *w, pr_error *err);
/* Each expert's output on x: out is n_expert × n_tok × n_embd. Depends only on the image. */
int pr_moe_experts(pr_model *m, const float *x, int n_tok, float *out, pr_error *err);
/* out = Σ_e w_e·Y_e (+ moe_weight·x when use_moe_residual); x itself when use_moe is false. */
int pr_moe_combine(const pr_model *m, const float *x, const float *Y, const float *w, int n_tok, float *out,
                   pr_error *err);

#ifdef __cplusplus
}
#endif
#endif
