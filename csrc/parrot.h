/* parrot.h — the plain C API of the parrot inference engine for Parrot, the multilingual vision-language
 * model (a CLIP vision tower, a projector, a language-routed mixture of experts, a Qwen2 decoder).
 *
 * One question about one image, greedy (examples/describe.c is this, with error handling):
 *
 *     pr_error err = {0};
 *     pr_model *m;        pr_model_load("model.gguf", 0, &m, &err);               // map + validate
 *     const pr_config *cf = pr_model_config(m);
 *     float *px = malloc(3 * cf->v_image_size * cf->v_image_size * sizeof *px);
 *     pr_image_pixels_file(m, "cat.png", px, &err);                                // decode + preprocess
 *     pr_image_features *img; pr_image_encode(m, px, &img, &err);                  // ViT, projector, experts
 *     int32_t *ids; int n;                                                         // "<image>" marks the image
 *     pr_tokenize_prompt(m, "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
 *                           "<image>\nWhat is it?<|im_end|>\n<|im_start|>assistant\n", &ids, &n, &err);
 *     pr_context *ctx;    pr_context_new_kv(m, 1024, PR_F32, &ctx, &err);          // one sequence's KV cache
 *     float *logits = malloc(cf->n_vocab * sizeof *logits), routing[cf->n_expert];
 *     pr_prefill(ctx, ids, n, 0, img, routing, logits, 0, &err); // route, combine, splice, run the prompt
 *     for (;;) {                                                                   // decode loop
 *         int32_t t = argmax(logits, cf->n_vocab);
 *         if (t == cf->im_end_id || t == cf->endoftext_id || t == cf->eos_id) break;
 *         ... keep t ...
 *         pr_decode_tokens(ctx, &t, 1, logits, 0, &err);
 *     }
 *     pr_detokenize_ids(m, kept, n_kept, 1, &text, &err);                         // the answer (free(text))
 *     pr_context_free(ctx); pr_image_features_free(img); pr_model_free(m); free(ids);
 *
 * The image's features (pr_image_features) depend on the image only: encode once, prefill as many questions
 * (and contexts) with them as you like. Routing, combination and the splice depend on the prompt's text and
 * run inside pr_prefill.
 *
 * Nothing behind this header calls Python. Every function that can fail returns 0 on success or a
 * PR_ERR_* code, and fills a pr_error with a human-readable message naming what was wrong (file, tensor,
 * field, byte offset). No function calls exit() or abort() on user input.
 *
 * Rooms (see docs/architecture.md):
 *   io/       GGUF reader (mmap + validation)
 *   kernels/  matrix kernels per dtype, CPU dispatch, thread pool
 *   model/    config, weights, Qwen2 decoder, CLIP vision tower + projector, multilingual MoE, the pipeline
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

/* A tensor of a loaded model: viewed in place inside the mapped model file, except q8_0/q4_0 tensors, which the
 * model holds in its own memory (q4_0 rows rearranged for the kernels: kernels/quant.h). ne[0] is the
 * fastest-varying dimension (GGUF order): an HF weight of shape [out, in] has ne = {in, out} and is stored as
 * `out` rows of `in` elements. */
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
    int pad_square;     /* pad the image to a square with the mean colour first (image_aspect_ratio "pad") */
    int select_layer;   /* as in config: negative counts from the end of hidden_states */
    int select_feature; /* PR_FEAT_* */
    int n_layer_run;    /* encoder layers actually needed for select_layer */
    int n_img_tokens;   /* tokens after selection: 577 for cls_patch at 336/14 */
    /* projector */
    int projector_type; /* PR_PROJ_* */
    int mm_hidden;
    /* multilingual MoE */
    int use_moe, use_moe_residual, n_expert, moe_ff;
    int moe_top_k;      /* stored only: Parrot's forward pass always runs every expert (dense routing) */
    float moe_weight;
} pr_config;

/* Opens and validates a GGUF model file written by parrot's converter. The file is mapped: f32/f16/bf16 weights
 * are used in place, q8_0/q4_0 ones copied into the model's own memory (seconds for a 7B file; the copy checks
 * the abort flag between tensors: PR_ERR_INTERRUPTED). n_threads <= 0 picks the number of physical cores. */
int pr_model_load(const char *path, int n_threads, pr_model **out, pr_error *err);
void pr_model_free(pr_model *m);
const pr_config *pr_model_config(const pr_model *m);
int pr_model_n_threads(const pr_model *m);
/* Jobs the model's thread pool has run so far; each wakes every worker once (benchmarks count them). */
unsigned long pr_model_pool_runs(const pr_model *m);
/* The file's tensors, in file order. */
int pr_model_n_tensors(const pr_model *m);
const pr_tensor *pr_model_tensor_at(const pr_model *m, int i);
/* The mapped file's GGUF reader, for metadata lookups (see io/gguf.h). */
struct gguf_file;
const struct gguf_file *pr_model_gguf(const pr_model *m);
struct pr_tokenizer;
const struct pr_tokenizer *pr_model_tokenizer(const pr_model *m); /* NULL if the file has none */

/* Stopping long work: a process-wide flag (async-signal-safe to set, for a SIGINT handler) is checked between
 * layers and chunks; functions then return PR_ERR_INTERRUPTED. The caller clears the flag. */
void pr_interrupt_request(void); /* async-signal-safe */
void pr_interrupt_clear(void);

/* ---------------------------------------------------------------- the language model */
/* A new sequence of up to n_ctx positions (at most the model's n_ctx_train); the KV cache grows on demand and
 * holds kv_type values: PR_F32, or PR_F16 (half the memory and reading time per token). */
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

/* Batched decoding: n_seq sequences (distinct contexts of one model, each with its own KV cache and position)
 * advance by one token each (tokens[s] into ctxs[s]) through one pass over the weights per group of up to 4
 * sequences; logits (may be NULL) is n_seq × n_vocab. Each sequence's logits equal what pr_decode_tokens gives
 * it alone, exactly. On error no sequence has advanced. */
int pr_decode_batch(pr_context *const *ctxs, const int32_t *tokens, int n_seq, float *logits, pr_error *err);

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

/* ---------------------------------------------------------------- the pipeline (model/pipeline.c) */
/* The id standing for the image in prompt token ids (the reference's IMAGE_TOKEN_INDEX). */
#define PR_IMAGE_TOKEN (-200)

/* Parrot's prompt tokenisation: the text is split at "<image>", each piece tokenised alone with the special
 * tokens (<|im_start|>, <|im_end|>, <|endoftext|>) recognised, and PR_IMAGE_TOKEN put between the pieces.
 * *ids is malloc'd (free with free()). */
int pr_tokenize_prompt(const pr_model *m, const char *text, int32_t **ids, int *n_ids, pr_error *err);
/* The text of n ids (special tokens skipped when skip_special), malloc'd, NUL-terminated UTF-8. */
int pr_detokenize_ids(const pr_model *m, const int32_t *ids, int n, int skip_special, char **text, pr_error *err);

/* The pixels the vision tower sees (3 × v_image_size × v_image_size float32, CHW) from a PNG or JPEG file or
 * from its bytes: decoded as Pillow's convert('RGB'), padded to a square when pad_square, resized, cropped and
 * normalised with the file's mean and std. PR_ERR_IO / PR_ERR_IMAGE name the file and the problem. */
int pr_image_pixels_file(const pr_model *m, const char *path, float *pixels, pr_error *err);
int pr_image_pixels(const pr_model *m, const void *data, size_t len, float *pixels, pr_error *err);

/* Everything computed from an image alone: the projected features x (n_img_tokens × n_embd) and, when the
 * model uses the MoE, every expert's output on x (n_expert × n_img_tokens × n_embd). Immutable once made:
 * several contexts and threads may prefill with one at the same time. Free it before its model. */
typedef struct pr_image_features pr_image_features;
/* pixels (3 × S × S, as pr_image_pixels makes) → vision tower → projector → experts. The longest call of the
 * pipeline: it checks the abort flags between layers (PR_ERR_INTERRUPTED). */
int pr_image_encode(pr_model *m, const float *pixels, pr_image_features **out, pr_error *err);
void pr_image_features_free(pr_image_features *f);
int pr_image_features_n_tokens(const pr_image_features *f);
const float *pr_image_features_projected(const pr_image_features *f);  /* x */
const float *pr_image_features_experts(const pr_image_features *f);    /* the experts' outputs, or NULL */
size_t pr_image_features_nbytes(const pr_image_features *f);          /* memory held */
/* Seconds pr_image_encode spent in the vision tower + projector and in the experts. */
void pr_image_features_seconds(const pr_image_features *f, double *vision_s, double *experts_s);

/* Runs a prompt into ctx (appending to what it holds). ids may contain PR_IMAGE_TOKEN once, and then img
 * gives the image: the text ids are embedded, the MoE routes on them (softmax over the experts of the gate
 * applied to the CLS row's attention over the text), the experts' outputs are combined with those weights
 * (+ moe_weight·x), and the image's n_img_tokens rows replace the placeholder. Without a placeholder img must
 * be NULL and this is pr_decode_tokens. routing (n_expert, may be NULL) receives the routing weights when the
 * model uses the MoE; logits as pr_decode_embd (the last position's, or every position's when all_logits).
 * n_cached: the first n_cached ids are already at the end of ctx (a reused prefix, e.g. the system turn; it ends
 * before the image): the MoE routes on their text too, but they are not run again (0: ctx holds none of ids).
 * PR_ERR_CONTEXT when the spliced prompt does not fit; on any error ctx is unchanged. */
int pr_prefill(pr_context *ctx, const int32_t *ids, int n_ids, int n_cached, const pr_image_features *img,
               float *routing, float *logits, int all_logits, pr_error *err);

#ifdef __cplusplus
}
#endif
#endif
