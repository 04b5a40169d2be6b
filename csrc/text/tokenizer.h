/* The Qwen2 byte-level BPE tokenizer, exact to Hugging Face `tokenizers` with Qwen2TokenizerFast's
 * tokenizer.json (see docs/model.md §9, and docs/gguf-tokenizer.md for the GGUF keys).
 *
 * Encoding, step by step, as `tokenizers` does it:
 *   1. added tokens that are not "normalized" are cut out of the raw text (leftmost, longest match);
 *   2. each remaining piece is NFC-normalised (utf8proc), then added tokens marked "normalized" are cut out
 *      of the normalised piece the same way;
 *   3. each remaining piece is split by Qwen2's pre-tokeniser regex (a hand-written matcher, pretok.c);
 *   4. each split is mapped byte by byte to the GPT-2 byte alphabet and merged by BPE merge rank.
 * With parse_special == 0, special (control) added tokens are not recognised — as `tokenizers` with
 * encode_special_tokens = True: a special token's text is then ordinary text.
 *
 * Input text is UTF-8. Invalid UTF-8 (also overlong forms, surrogates, code points above U+10FFFF) is refused
 * with PR_ERR_TOKENIZER naming the byte offset. This is what HF's Python API implies: its input is a str, which
 * cannot hold invalid UTF-8, and a str with lone surrogates is refused with an exception.
 *
 * Decoding concatenates every token's bytes (a token's text mapped back through the byte alphabet, or its raw
 * UTF-8 when it has a character outside that alphabet, as the ByteLevel decoder does), skipping ids of unused
 * vocabulary slots, and special tokens when skip_special; the bytes then become text with every ill-formed
 * sequence replaced by U+FFFD (one per maximal ill-formed subpart, like Rust's String::from_utf8_lossy and
 * Python's errors="replace"). Ids outside [0, n_tokens) are refused with PR_ERR_ARG.
 *
 * A pr_tokenizer is immutable after loading (its word cache is locked internally) and may be used from
 * several threads at once. It copies what it needs: the GGUF file may be closed after loading. */
#ifndef PR_TEXT_TOKENIZER_H
#define PR_TEXT_TOKENIZER_H
#include <stddef.h>
#include <stdint.h>

#include "parrot.h"

#ifdef __cplusplus
extern "C" {
#endif

struct gguf_file;
typedef struct pr_tokenizer pr_tokenizer;

/* GGUF token types (tokenizer.ggml.token_type), llama.cpp's numbering. */
enum {
    PR_TOKEN_NORMAL = 1,
    PR_TOKEN_UNKNOWN = 2,
    PR_TOKEN_CONTROL = 3,      /* special added token: <|im_start|>, <|im_end|>, <|endoftext|> */
    PR_TOKEN_USER_DEFINED = 4, /* added token that is not special */
    PR_TOKEN_UNUSED = 5,       /* a gap in the id range: never produced, decodes to nothing */
    PR_TOKEN_BYTE = 6,
};

/* Builds the tokenizer from the tokenizer.* and parrot.tokenizer.* keys of f. PR_ERR_TOKENIZER when they are
 * missing, inconsistent or describe a tokenizer other than Qwen2's. */
int pr_tokenizer_from_gguf(const struct gguf_file *f, pr_tokenizer **out, pr_error *err);
void pr_tokenizer_free(pr_tokenizer *t);

/* text: len bytes of UTF-8 (NUL bytes are ordinary characters). *ids is malloc'd (free with free(); it may
 * be NULL when *n == 0). parse_special: recognise special tokens in the text. */
int pr_tokenize(const pr_tokenizer *t, const char *text, size_t len, int parse_special, int32_t **ids,
                size_t *n, pr_error *err);

/* *out is malloc'd, NUL-terminated valid UTF-8 of *len bytes (free with free()). */
int pr_detokenize(const pr_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **out,
                  size_t *len, pr_error *err);

/* The id of an added token by its content, else of a vocabulary entry by its stored (byte-alphabet) text;
 * -1 if absent. */
int32_t pr_tokenizer_token_id(const pr_tokenizer *t, const char *token);
int pr_tokenizer_n_tokens(const pr_tokenizer *t);
/* Stored text and type of a token (NULL / 0 when id is out of range). The text is NUL-terminated. */
const char *pr_tokenizer_token_text(const pr_tokenizer *t, int32_t id);
int pr_tokenizer_token_type(const pr_tokenizer *t, int32_t id);
/* The bytes one token decodes to (*len of them; not NUL-terminated; may be a partial UTF-8 sequence). */
const uint8_t *pr_tokenizer_token_bytes(const pr_tokenizer *t, int32_t id, size_t *len);
/* tokenizer.ggml.eos_token_id / padding_token_id, -1 when absent. */
int32_t pr_tokenizer_eos_id(const pr_tokenizer *t);
int32_t pr_tokenizer_pad_id(const pr_tokenizer *t);

/* Incremental decoding for streaming generation: push ids one at a time and get back the text that became
 * complete. Text never ends inside a UTF-8 sequence; bytes that may still complete a character are held
 * back until the next push. The concatenation of all pushes and the final flush equals pr_detokenize of
 * the same ids. One stream is used by one thread at a time; it must not outlive its tokenizer. */
typedef struct pr_detok_stream pr_detok_stream;

int pr_detok_stream_new(const pr_tokenizer *t, int skip_special, pr_detok_stream **out, pr_error *err);
void pr_detok_stream_free(pr_detok_stream *s);
/* *text points into the stream (valid until the next call on it), NUL-terminated, *len bytes (often 0). */
int pr_detok_stream_push(pr_detok_stream *s, int32_t id, const char **text, size_t *len, pr_error *err);
/* Ends the stream: held-back bytes that never completed become U+FFFD. The stream is then empty and can be
 * reused for a new sequence. */
int pr_detok_stream_flush(pr_detok_stream *s, const char **text, size_t *len, pr_error *err);

#ifdef __cplusplus
}
#endif
#endif
