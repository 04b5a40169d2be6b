/* libFuzzer target: the tokenizer and detokenizer of the shipped model on arbitrary input. The input is
 * encoded (with and without special tokens), read as token ids and decoded (whole and streamed; the two must
 * agree), and the encoding of valid text must decode back to it. PARROT_FUZZ_MODEL names the GGUF file whose
 * tokenizer is used (scripts/fuzz.sh passes the shipped model). Run by scripts/fuzz.sh. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "text/tokenizer.h"

static pr_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    const char *path = getenv("PARROT_FUZZ_MODEL");
    pr_error err;
    gguf_file *g = NULL;
    if (!path || gguf_open(path, &g, &err) != 0 || pr_tokenizer_from_gguf(g, &tok, &err) != 0) {
        fprintf(stderr, "fuzz_tokenizer: set PARROT_FUZZ_MODEL to a GGUF file with a tokenizer (%s)\n",
                path ? err.msg : "unset");
        exit(2);
    }
    gguf_close(g);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len) {
    pr_error err;
    for (int special = 0; special < 2; special++) {
        int32_t *ids = NULL;
        size_t n = 0;
        if (pr_tokenize(tok, (const char *)data, len, special, &ids, &n, &err) == 0) {
            char *out = NULL;
            size_t olen = 0;
            /* byte-level BPE is lossless: valid UTF-8 in, the same bytes out (NFC aside: only when the
             * text is ASCII, which NFC leaves alone) */
            if (pr_detokenize(tok, ids, n, 0, &out, &olen, &err) == 0) {
                int ascii = 1;
                for (size_t i = 0; i < len; i++) ascii &= data[i] < 0x80;
                if (ascii && (olen != len || memcmp(out, data, len) != 0)) __builtin_trap();
                free(out);
            }
        }
        free(ids);
    }
    /* the input as ids (in range, so most decode), whole and streamed */
    size_t n = len / 4;
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) return 0;
    int nt = pr_tokenizer_n_tokens(tok);
    for (size_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, data + 4 * i, 4);
        ids[i] = (int32_t)(v % (uint32_t)(nt + 2)) - 1; /* -1 and nt: out of range */
    }
    char *whole = NULL;
    size_t wlen = 0;
    int rc = pr_detokenize(tok, ids, n, 1, &whole, &wlen, &err);
    pr_detok_stream *s = NULL;
    if (pr_detok_stream_new(tok, 1, &s, &err) == 0) {
        char *cat = malloc(wlen + 1);
        size_t clen = 0;
        int ok = 1;
        for (size_t i = 0; i < n && ok; i++) {
            const char *piece;
            size_t plen;
            ok = pr_detok_stream_push(s, ids[i], &piece, &plen, &err) == 0;
            if (ok && cat && clen + plen <= wlen) memcpy(cat + clen, piece, plen);
            clen += ok ? plen : 0;
        }
        const char *piece;
        size_t plen;
        if (ok && pr_detok_stream_flush(s, &piece, &plen, &err) == 0) {
            if (cat && clen + plen <= wlen) memcpy(cat + clen, piece, plen);
            clen += plen;
            /* streaming must give exactly the whole decoding */
            if (rc == 0 && cat && (clen != wlen || memcmp(cat, whole, wlen) != 0)) __builtin_trap();
        }
        free(cat);
        pr_detok_stream_free(s);
    }
    free(whole);
    free(ids);
    return 0;
}
