/* Hyperparameters from the GGUF metadata (key names: docs/gguf.md). Missing optional keys take the reference
 * configuration's defaults; inconsistent values are a ModelError naming the key. */
#include <math.h>
#include <string.h>

#include "model/model.h"

#define GET_INT(key, req, dflt, dst)                                                                    \
    do {                                                                                                \
        int64_t v_;                                                                                     \
        if ((rc = gguf_get_int(f, key, req, dflt, &v_, err))) return rc;                               \
        if (v_ < INT32_MIN || v_ > INT32_MAX)                                                           \
            return pr_set_error(err, PR_ERR_FORMAT, "%s: metadata key '%s' is out of range", path, key); \
        dst = (int)v_;                                                                                  \
    } while (0)
#define GET_FLOAT(key, req, dflt, dst)                                                                  \
    do {                                                                                                \
        double v_;                                                                                      \
        if ((rc = gguf_get_float(f, key, req, dflt, &v_, err))) return rc;                             \
        dst = (float)v_;                                                                                \
    } while (0)

static int bad(pr_error *err, const char *path, const char *key, const char *why) {
    return pr_set_error(err, PR_ERR_FORMAT, "%s: metadata '%s' %s", path, key, why);
}

/* A required array of 3 floats (the image mean and std: the file is their one source, written by the converter
 * from the vision tower's preprocessor configuration). */
static int read_triplet(const gguf_file *f, const char *key, float out[3], pr_error *err) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) return pr_set_error(err, PR_ERR_FORMAT, "%s: missing metadata key '%s'", gguf_path(f), key);
    if (kv->type != GGUF_ARRAY || kv->arr_n != 3 || (kv->arr_type != GGUF_F32 && kv->arr_type != GGUF_F64))
        return bad(err, gguf_path(f), key, "must be an array of 3 floats");
    for (int i = 0; i < 3; i++) out[i] = (float)gguf_arr_float(kv, (uint64_t)i);
    return 0;
}

int pr_config_read(const gguf_file *f, pr_config *c, pr_error *err) {
    const char *path = gguf_path(f);
    int rc;
    memset(c, 0, sizeof *c);
    gguf_str arch;
    if ((rc = gguf_get_str(f, "general.architecture", 1, (gguf_str){0}, &arch, err))) return rc;
    if (!gguf_str_eq(arch, "parrot"))
        return pr_set_error(err, PR_ERR_FORMAT, "%s: general.architecture is '%.*s', expected 'parrot' (convert "
                            "the checkpoint with `parrot convert`)", path, (int)(arch.len > 64 ? 64 : arch.len),
                            arch.ptr);

    GET_INT("parrot.vocab_size", 1, 0, c->n_vocab);
    GET_INT("parrot.embedding_length", 1, 0, c->n_embd);
    GET_INT("parrot.block_count", 1, 0, c->n_layer);
    GET_INT("parrot.feed_forward_length", 1, 0, c->n_ff);
    GET_INT("parrot.attention.head_count", 1, 0, c->n_head);
    GET_INT("parrot.attention.head_count_kv", 0, c->n_head, c->n_head_kv);
    GET_INT("parrot.context_length", 0, 32768, c->n_ctx_train);
    GET_FLOAT("parrot.attention.layer_norm_rms_epsilon", 0, 1e-6, c->rms_eps);
    GET_FLOAT("parrot.rope.freq_base", 0, 1e6, c->rope_theta);
    if ((rc = gguf_get_bool(f, "parrot.tie_word_embeddings", 0, 0, &c->tied_embeddings, err))) return rc;
    if (c->n_vocab < 1) return bad(err, path, "parrot.vocab_size", "must be positive");
    if (c->n_embd < 1) return bad(err, path, "parrot.embedding_length", "must be positive");
    if (c->n_layer < 1) return bad(err, path, "parrot.block_count", "must be positive");
    if (c->n_ff < 1) return bad(err, path, "parrot.feed_forward_length", "must be positive");
    if (c->n_head < 1 || c->n_embd % c->n_head || (c->n_embd / c->n_head) % 2)
        return bad(err, path, "parrot.attention.head_count", "must divide the embedding length into even-sized heads");
    if (c->n_head_kv < 1 || c->n_head % c->n_head_kv)
        return bad(err, path, "parrot.attention.head_count_kv", "must divide the head count");
    if (c->n_ctx_train < 1) return bad(err, path, "parrot.context_length", "must be positive");
    if (!(c->rms_eps > 0) || !isfinite(c->rms_eps)) return bad(err, path, "parrot.attention.layer_norm_rms_epsilon", "must be > 0");
    if (!(c->rope_theta > 0) || !isfinite(c->rope_theta)) return bad(err, path, "parrot.rope.freq_base", "must be > 0");

    int64_t id;
    if ((rc = gguf_get_int(f, "tokenizer.ggml.eos_token_id", 0, -1, &id, err))) return rc;
    c->eos_id = (int32_t)id;
    if ((rc = gguf_get_int(f, "tokenizer.ggml.padding_token_id", 0, -1, &id, err))) return rc;
    c->pad_id = (int32_t)id;
    c->im_start_id = c->im_end_id = c->endoftext_id = -1; /* filled from the tokenizer when present */

    if ((rc = gguf_get_bool(f, "parrot.vision.present", 0, 0, &c->has_vision, err))) return rc;
    if (!c->has_vision) return 0;

    GET_INT("parrot.vision.image_size", 1, 0, c->v_image_size);
    GET_INT("parrot.vision.patch_size", 1, 0, c->v_patch_size);
    GET_INT("parrot.vision.embedding_length", 1, 0, c->v_embd);
    GET_INT("parrot.vision.feed_forward_length", 1, 0, c->v_ff);
    GET_INT("parrot.vision.block_count", 1, 0, c->v_layer);
    GET_INT("parrot.vision.attention.head_count", 1, 0, c->v_head);
    GET_FLOAT("parrot.vision.attention.layer_norm_epsilon", 0, 1e-5, c->v_eps);
    gguf_str s;
    if ((rc = gguf_get_str(f, "parrot.vision.activation", 0, (gguf_str){"quick_gelu", 10}, &s, err))) return rc;
    if (gguf_str_eq(s, "quick_gelu")) c->v_act = PR_ACT_QUICK_GELU;
    else if (gguf_str_eq(s, "gelu")) c->v_act = PR_ACT_GELU;
    else return bad(err, path, "parrot.vision.activation", "must be 'quick_gelu' or 'gelu'");
    if ((rc = read_triplet(f, "parrot.vision.image_mean", c->image_mean, err))) return rc;
    if ((rc = read_triplet(f, "parrot.vision.image_std", c->image_std, err))) return rc;
    for (int i = 0; i < 3; i++)
        if (!(c->image_std[i] > 0)) return bad(err, path, "parrot.vision.image_std", "must be positive");
    if ((rc = gguf_get_str(f, "parrot.vision.image_aspect_ratio", 0, (gguf_str){"pad", 3}, &s, err))) return rc;
    c->pad_square = gguf_str_eq(s, "pad");
    GET_INT("parrot.vision.select_layer", 0, -2, c->select_layer);
    if ((rc = gguf_get_str(f, "parrot.vision.select_feature", 0, (gguf_str){"cls_patch", 9}, &s, err))) return rc;
    if (gguf_str_eq(s, "cls_patch")) c->select_feature = PR_FEAT_CLS_PATCH;
    else if (gguf_str_eq(s, "patch")) c->select_feature = PR_FEAT_PATCH;
    else return bad(err, path, "parrot.vision.select_feature", "must be 'cls_patch' or 'patch'");
    if (c->v_image_size < 1 || c->v_patch_size < 1 || c->v_image_size % c->v_patch_size)
        return bad(err, path, "parrot.vision.image_size", "must be a positive multiple of the patch size");
    if (c->v_embd < 1 || c->v_head < 1 || c->v_embd % c->v_head)
        return bad(err, path, "parrot.vision.attention.head_count", "must divide the vision embedding length");
    if (c->v_layer < 1 || c->v_ff < 1) return bad(err, path, "parrot.vision.block_count", "must be positive");
    /* hidden_states has v_layer + 1 entries (embeddings first); select_layer indexes it like Python */
    int idx = c->select_layer < 0 ? c->v_layer + 1 + c->select_layer : c->select_layer;
    if (idx < 0 || idx > c->v_layer)
        return bad(err, path, "parrot.vision.select_layer", "is outside the vision tower's hidden states");
    c->n_layer_run = idx;
    int n_patch = (c->v_image_size / c->v_patch_size) * (c->v_image_size / c->v_patch_size);
    c->n_img_tokens = n_patch + (c->select_feature == PR_FEAT_CLS_PATCH ? 1 : 0);

    if ((rc = gguf_get_str(f, "parrot.projector.type", 0, (gguf_str){"mlp2x_gelu", 10}, &s, err))) return rc;
    if (gguf_str_eq(s, "mlp2x_gelu")) c->projector_type = PR_PROJ_MLP2X_GELU;
    else if (gguf_str_eq(s, "linear")) c->projector_type = PR_PROJ_LINEAR;
    else if (gguf_str_eq(s, "identity")) c->projector_type = PR_PROJ_IDENTITY;
    else return bad(err, path, "parrot.projector.type", "must be 'mlp2x_gelu', 'linear' or 'identity'");
    GET_INT("parrot.projector.input_size", 0, c->v_embd, c->mm_hidden);
    if (c->mm_hidden != c->v_embd)
        return bad(err, path, "parrot.projector.input_size", "must equal the vision embedding length");
    if (c->projector_type == PR_PROJ_IDENTITY && c->v_embd != c->n_embd)
        return bad(err, path, "parrot.projector.type", "'identity' needs equal vision and LLM widths");

    if ((rc = gguf_get_bool(f, "parrot.moe.enabled", 0, 1, &c->use_moe, err))) return rc;
    if ((rc = gguf_get_bool(f, "parrot.moe.residual", 0, 1, &c->use_moe_residual, err))) return rc;
    GET_INT("parrot.moe.expert_count", 0, 6, c->n_expert);
    GET_INT("parrot.moe.feed_forward_length", 0, 4096, c->moe_ff);
    GET_INT("parrot.moe.top_k", 0, 0, c->moe_top_k);
    GET_FLOAT("parrot.moe.weight", 0, 0.1, c->moe_weight);
    if (c->use_moe && (c->n_expert < 1 || c->moe_ff < 1))
        return bad(err, path, "parrot.moe.expert_count", "must be positive when the MoE is enabled");
    return 0;
}
