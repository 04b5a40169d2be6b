/* libFuzzer target: the GGUF reader (every header, key/value, array and tensor-info field) and the tokenizer
 * built from its keys, then used once each way. gguf_open maps a path, so each input is written to a
 * per-process file first. Run by scripts/fuzz.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/gguf.h"
#include "text/tokenizer.h"

static char path[64];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len) {
    if (!path[0]) snprintf(path, sizeof path, "/tmp/parrot-fuzz-gguf-%d", (int)getpid());
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, len, f);
    fclose(f);
    pr_error err;
    gguf_file *g = NULL;
    if (gguf_open(path, &g, &err) != 0) return 0;
    /* as pr_model_load does: q8_0/q4_0 tensors copied into owned memory (q4_0 regrouped) */
    if (gguf_own_quantized(g, NULL, &err) != 0) {
        gguf_close(g);
        return 0;
    }
    /* touch what the reader exposes: every tensor's bytes must lie inside the mapping or the owned copy */
    volatile uint8_t sink = 0;
    for (int i = 0; i < gguf_n_tensors(g); i++) {
        const pr_tensor *t = gguf_tensor_at(g, i);
        if (t->nbytes) sink ^= ((const uint8_t *)t->data)[0] ^ ((const uint8_t *)t->data)[t->nbytes - 1];
    }
    for (int i = 0; i < gguf_n_kv(g); i++) {
        const gguf_kv *kv = gguf_kv_at(g, i);
        if (kv->type == GGUF_ARRAY && kv->arr_type != GGUF_STRING && kv->arr_n)
            sink ^= (uint8_t)gguf_arr_int(kv, kv->arr_n - 1);
    }
    (void)sink;
    pr_tokenizer *tok = NULL;
    if (pr_tokenizer_from_gguf(g, &tok, &err) == 0) {
        static const char text[] = "Hello wörld 123 <|im_start|>user\n你好！ \xF0\x9F\x98\x80  ";
        int32_t *ids = NULL;
        size_t n = 0;
        if (pr_tokenize(tok, text, sizeof text - 1, 1, &ids, &n, &err) == 0) {
            char *out = NULL;
            size_t olen = 0;
            if (pr_detokenize(tok, ids, n, 0, &out, &olen, &err) == 0) free(out);
        }
        free(ids);
        pr_tokenizer_free(tok);
    }
    gguf_close(g);
    return 0;
}
