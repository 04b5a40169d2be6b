/* The whole multimodal pipeline behind parrot.h: an image's features as one C-owned object, and one call
 * from prompt ids (with the image placeholder) to a prefilled context.
 *
 *   pixels ──pr_image_encode──▶ pr_image_features { x = projector(ViT(pixels)),  Y_e = Expert_e(x) }
 *   ids    ──pr_prefill──▶ T = embed(text ids) → w = routing(x[0], T) → rows = Σ_e w_e·Y_e + moe_weight·x
 *                          → [T before the placeholder; rows; T after] → decoder (KV cache) → logits
 *
 * x and the Y_e depend only on the image, so one features object serves any number of questions; routing,
 * combination and the splice depend on the prompt and run in pr_prefill. Prompt tokenisation and image
 * loading for C callers are here too, so parrot.h alone runs the model. */
#include <string.h>
#include <time.h>

#include "image/image.h"
#include "model/model.h"
#include "text/tokenizer.h"
#include "util/mem.h"

struct pr_image_features {
    const pr_model *m;     /* the model that computed them: other models cannot use them */
    int n_tok, n_embd, n_expert;
    float *x;              /* n_tok × n_embd: projected features (row 0 is CLS for cls_patch) */
    float *experts;        /* n_expert × n_tok × n_embd: each expert's output on x; NULL without the MoE */
    double vision_s, experts_s;
};

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int pr_image_encode(pr_model *m, const float *pixels, pr_image_features **out, pr_error *err) {
    *out = NULL;
    const pr_config *c = &m->cfg;
    if (!c->has_vision) return pr_set_error(err, PR_ERR_ARG, "%s: this model has no vision tower", gguf_path(m->gguf));
    pr_image_features *f = calloc(1, sizeof *f);
    if (!f) return pr_set_error(err, PR_ERR_NOMEM, "out of memory");
    f->m = m;
    f->n_tok = c->n_img_tokens;
    f->n_embd = c->n_embd;
    f->n_expert = c->use_moe ? c->n_expert : 0;
    f->x = pr_alloc((size_t)f->n_tok, (size_t)f->n_embd, sizeof(float));
    if (f->n_expert) f->experts = pr_alloc((size_t)f->n_expert * (size_t)f->n_tok, (size_t)f->n_embd, sizeof(float));
    int rc = 0;
    if (!f->x || (f->n_expert && !f->experts)) rc = pr_set_error(err, PR_ERR_NOMEM, "out of memory for image features");
    double t0 = now_s();
    if (!rc) rc = pr_encode_image(m, pixels, f->x, err);
    double t1 = now_s();
    if (!rc && f->n_expert) rc = pr_moe_experts(m, f->x, f->n_tok, f->experts, err);
    f->vision_s = t1 - t0;
    f->experts_s = now_s() - t1;
    if (rc) {
        pr_image_features_free(f);
        return rc;
    }
    *out = f;
    return 0;
}

void pr_image_features_free(pr_image_features *f) {
    if (!f) return;
    pr_free(f->x);
    pr_free(f->experts);
    free(f);
}

int pr_image_features_n_tokens(const pr_image_features *f) { return f->n_tok; }
const float *pr_image_features_projected(const pr_image_features *f) { return f->x; }
const float *pr_image_features_experts(const pr_image_features *f) { return f->experts; }
size_t pr_image_features_nbytes(const pr_image_features *f) {
    return (size_t)(1 + f->n_expert) * (size_t)f->n_tok * (size_t)f->n_embd * sizeof(float);
}
void pr_image_features_seconds(const pr_image_features *f, double *vision_s, double *experts_s) {
    if (vision_s) *vision_s = f->vision_s;
    if (experts_s) *experts_s = f->experts_s;
}

/* Checks ids against the model and img: every id in the vocabulary but the image placeholder, which occurs
 * once when img is given and never otherwise. *pos: the placeholder's index, or -1. */
static int check_ids(const pr_model *m, const int32_t *ids, int n, const pr_image_features *img, int *pos,
                     pr_error *err) {
    *pos = -1;
    for (int i = 0; i < n; i++) {
        if (ids[i] == PR_IMAGE_TOKEN) {
            if (*pos >= 0)
                return pr_set_error(err, PR_ERR_ARG, "the prompt has the image placeholder twice (positions %d and "
                                    "%d); Parrot takes one image per prompt", *pos, i);
            *pos = i;
        } else if (ids[i] < 0 || ids[i] >= m->cfg.n_vocab) {
            return pr_set_error(err, PR_ERR_ARG, "token id %d at position %d is outside the vocabulary (0..%d)",
                                ids[i], i, m->cfg.n_vocab - 1);
        }
    }
    if (*pos >= 0 && !img)
        return pr_set_error(err, PR_ERR_ARG, "the prompt has the image placeholder (position %d) but no image "
                            "features were given", *pos);
    if (*pos < 0 && img)
        return pr_set_error(err, PR_ERR_ARG, "image features were given but the prompt has no image placeholder (%d)",
                            PR_IMAGE_TOKEN);
    if (img && img->m != m) return pr_set_error(err, PR_ERR_ARG, "the image features were computed by another model");
    return 0;
}

int pr_prefill(pr_context *ctx, const int32_t *ids, int n_ids, const pr_image_features *img, float *routing,
               float *logits, int all_logits, pr_error *err) {
    pr_model *m = pr_context_model(ctx);
    const pr_config *c = &m->cfg;
    int pos, rc;
    if (n_ids <= 0) return pr_set_error(err, PR_ERR_ARG, "nothing to prefill (0 tokens)");
    if ((rc = check_ids(m, ids, n_ids, img, &pos, err))) return rc;
    if (pos < 0) return pr_decode_tokens(ctx, ids, n_ids, logits, all_logits, err);

    long d = c->n_embd, n_text = n_ids - 1, n_img = img->n_tok, L = n_text + n_img;
    if (c->use_moe && n_text < 1)
        return pr_set_error(err, PR_ERR_ARG, "the MoE routes on the prompt's text, but the prompt has no text tokens");
    if (pr_context_n_past(ctx) + L > pr_context_n_ctx(ctx))
        return pr_set_error(err, PR_ERR_CONTEXT, "the prompt is %ld positions long (%ld of them the image's) after "
                            "%d cached, but the context holds %d", L, n_img, pr_context_n_past(ctx),
                            pr_context_n_ctx(ctx));
    float *embd = pr_alloc((size_t)L, (size_t)d, sizeof(float));
    int32_t *text = malloc((size_t)n_text * sizeof(int32_t) + 1);
    float *w = c->use_moe ? pr_alloc((size_t)c->n_expert, sizeof(float), 1) : NULL;
    if (!embd || !text || (c->use_moe && !w)) {
        rc = pr_set_error(err, PR_ERR_NOMEM, "out of memory for a prompt of %ld positions", L);
        goto done;
    }
    /* the text is embedded once, contiguously: that is the router's T; then the rows after the placeholder
     * move up to make room for the image's */
    memcpy(text, ids, (size_t)pos * sizeof(int32_t));
    memcpy(text + pos, ids + pos + 1, (size_t)(n_text - pos) * sizeof(int32_t));
    if ((rc = pr_embed_tokens(m, text, (int)n_text, embd, err))) goto done;
    if (c->use_moe && (rc = pr_moe_routing(m, img->x, embd, (int)n_text, w, err))) goto done;
    float *slot = embd + pos * d;
    memmove(slot + n_img * d, slot, (size_t)(n_text - pos) * d * sizeof(float));
    if ((rc = pr_moe_combine(m, img->x, img->experts, w, (int)n_img, slot, err))) goto done;
    if (routing && w) memcpy(routing, w, (size_t)c->n_expert * sizeof(float));
    rc = pr_decode_embd(ctx, embd, (int)L, logits, all_logits, err);
done:
    pr_free(embd);
    free(text);
    pr_free(w);
    return rc;
}

/* ---- prompts and images for C callers */

int pr_tokenize_prompt(const pr_model *m, const char *text, int32_t **ids, int *n_ids, pr_error *err) {
    static const char tag[] = "<image>";
    *ids = NULL;
    *n_ids = 0;
    if (!m->tok) return pr_set_error(err, PR_ERR_TOKENIZER, "%s has no tokenizer", gguf_path(m->gguf));
    size_t cap = 0, n = 0;
    int32_t *out = NULL;
    for (const char *s = text;;) {
        const char *e = strstr(s, tag);
        size_t len = e ? (size_t)(e - s) : strlen(s);
        int32_t *chunk = NULL;
        size_t nc = 0;
        int rc = pr_tokenize(m->tok, s, len, 1, &chunk, &nc, err);
        if (!rc && n + nc + 1 > cap) {
            size_t ncap = 2 * (n + nc + 1);
            int32_t *grown = realloc(out, ncap * sizeof(int32_t));
            if (!grown) rc = pr_set_error(err, PR_ERR_NOMEM, "out of memory");
            else out = grown, cap = ncap;
        }
        if (rc || n + nc + 1 > (size_t)INT32_MAX) {
            free(chunk);
            free(out);
            return rc ? rc : pr_set_error(err, PR_ERR_ARG, "the prompt is too long");
        }
        if (nc) memcpy(out + n, chunk, nc * sizeof(int32_t));
        n += nc;
        free(chunk);
        if (!e) break;
        out[n++] = PR_IMAGE_TOKEN;
        s = e + sizeof tag - 1;
    }
    *ids = out;
    *n_ids = (int)n;
    return 0;
}

int pr_detokenize_ids(const pr_model *m, const int32_t *ids, int n, int skip_special, char **text, pr_error *err) {
    *text = NULL;
    if (!m->tok) return pr_set_error(err, PR_ERR_TOKENIZER, "%s has no tokenizer", gguf_path(m->gguf));
    if (n < 0) return pr_set_error(err, PR_ERR_ARG, "negative token count %d", n);
    size_t len;
    return pr_detokenize(m->tok, ids, (size_t)n, skip_special, text, &len, err);
}

static int pixels_from(const pr_model *m, pr_image *im, int rc, float *pixels, pr_error *err) {
    const pr_config *c = &m->cfg;
    if (!rc) rc = pr_clip_preprocess(im->rgb, im->w, im->h, c->v_image_size, c->pad_square, c->image_mean,
                                     c->image_std, pixels, err);
    pr_image_free(im);
    return rc;
}

int pr_image_pixels_file(const pr_model *m, const char *path, float *pixels, pr_error *err) {
    if (!m->cfg.has_vision) return pr_set_error(err, PR_ERR_ARG, "%s: this model has no vision tower", gguf_path(m->gguf));
    pr_image im = {0};
    return pixels_from(m, &im, pr_image_decode_file(path, 0, 0, &im, err), pixels, err);
}

int pr_image_pixels(const pr_model *m, const void *data, size_t len, float *pixels, pr_error *err) {
    if (!m->cfg.has_vision) return pr_set_error(err, PR_ERR_ARG, "%s: this model has no vision tower", gguf_path(m->gguf));
    pr_image im = {0};
    return pixels_from(m, &im, pr_image_decode(data, len, NULL, 0, &im, err), pixels, err);
}
