/* describe — answers a question about a picture with a parrot GGUF model, using only parrot.h.
 *
 *   make -C examples && examples/build/describe parrot/models/parrot-tiny-shapes.gguf cat.png "What is it?"
 *
 * Prints the greedy answer (special tokens skipped, surrounding white space stripped, as the reference
 * evaluation decodes) on stdout and the MoE's routing weights on stderr. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "parrot.h"

static int fail(const char *what, const pr_error *err) {
    fprintf(stderr, "describe: %s: %s\n", what, err->msg);
    return 1;
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        fprintf(stderr, "usage: %s MODEL.gguf IMAGE QUESTION [MAX_NEW_TOKENS]\n", argv[0]);
        return 2;
    }
    int max_new = argc == 5 ? atoi(argv[4]) : 512;
    pr_error err = {0};
    pr_model *m = NULL;
    pr_image_features *img = NULL;
    pr_context *ctx = NULL;
    float *pixels = NULL, *logits = NULL, *routing = NULL;
    int32_t *ids = NULL, *answer = NULL;
    char *prompt = NULL, *text = NULL;
    int rc = 1, n_ids, n_answer = 0;

    if (pr_model_load(argv[1], 0, &m, &err)) return fail(argv[1], &err);
    const pr_config *cf = pr_model_config(m);
    if (!cf->has_vision) {
        fprintf(stderr, "describe: %s has no vision tower\n", argv[1]);
        goto done;
    }
    /* 1. the image: decode, pad, resize, normalise, then the vision tower, projector and experts */
    pixels = malloc(sizeof(float) * 3 * cf->v_image_size * cf->v_image_size);
    if (!pixels) goto done;
    if (pr_image_pixels_file(m, argv[2], pixels, &err) || pr_image_encode(m, pixels, &img, &err)) {
        fail(argv[2], &err);
        goto done;
    }
    /* 2. the prompt in Parrot's chat format; "<image>" marks where the image's rows go */
    const char *fmt = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n%s"
                      "<|im_end|>\n<|im_start|>assistant\n";
    size_t len = strlen(fmt) + strlen(argv[3]) + 1;
    prompt = malloc(len);
    if (!prompt) goto done;
    snprintf(prompt, len, fmt, argv[3]);
    if (pr_tokenize_prompt(m, prompt, &ids, &n_ids, &err)) {
        fail("prompt", &err);
        goto done;
    }
    /* 3. prefill: route on the text, combine the experts, splice, run the decoder over the prompt */
    int n_prompt = n_ids - 1 + pr_image_features_n_tokens(img);
    int n_ctx = n_prompt + max_new < cf->n_ctx_train ? n_prompt + max_new : cf->n_ctx_train;
    logits = malloc(sizeof(float) * cf->n_vocab);
    routing = malloc(sizeof(float) * (cf->n_expert > 0 ? cf->n_expert : 1));
    answer = malloc(sizeof(int32_t) * (max_new > 0 ? max_new : 1));
    if (!logits || !routing || !answer) goto done;
    if (pr_context_new_kv(m, n_ctx, PR_F32, &ctx, &err) ||
        pr_prefill(ctx, ids, n_ids, img, routing, logits, 0, &err)) {
        fail("prefill", &err);
        goto done;
    }
    /* 4. greedy decoding until the end of the assistant's turn */
    while (n_answer < max_new && pr_context_n_past(ctx) < n_ctx) {
        int32_t t = argmax(logits, cf->n_vocab);
        if (t == cf->im_end_id || t == cf->endoftext_id || t == cf->eos_id) break;
        answer[n_answer++] = t;
        if (n_answer == max_new || pr_context_n_past(ctx) == n_ctx) break;
        if (pr_decode_tokens(ctx, &t, 1, logits, 0, &err)) {
            fail("decode", &err);
            goto done;
        }
    }
    if (pr_detokenize_ids(m, answer, n_answer, 1, &text, &err)) {
        fail("detokenize", &err);
        goto done;
    }
    char *s = text, *e = text + strlen(text);
    while (*s && isspace((unsigned char)*s)) s++;
    while (e > s && isspace((unsigned char)e[-1])) e--;
    printf("%.*s\n", (int)(e - s), s);
    if (cf->use_moe) {
        fprintf(stderr, "routing:");
        for (int i = 0; i < cf->n_expert; i++) fprintf(stderr, " %.4f", routing[i]);
        fprintf(stderr, "\n");
    }
    rc = 0;
done:
    free(text);
    free(answer);
    free(routing);
    free(logits);
    free(ids);
    free(prompt);
    free(pixels);
    pr_context_free(ctx);
    pr_image_features_free(img);
    pr_model_free(m);
    return rc;
}
