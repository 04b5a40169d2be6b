/* The Qwen2 byte-level BPE tokenizer: loading from GGUF, encoding, decoding (see tokenizer.h for the
 * behaviour, docs/gguf-tokenizer.md for the stored keys). */
#include "text/tokenizer.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "io/gguf.h"
#include "text/text_internal.h"
#include "util/mem.h"

/* ---------------------------------------------------------------- the GPT-2 byte alphabet */
/* Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls, space, DEL, NBSP, soft hyphen)
 * are given the code points 256, 257, ... in byte order, so every byte is a visible character. */
static uint32_t byte_to_cp[256];
static int16_t cp_to_byte[324]; /* -1 when the code point is not in the alphabet */
static pthread_once_t alphabet_once = PTHREAD_ONCE_INIT;

static void build_alphabet(void) {
    uint32_t next = 256;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        byte_to_cp[b] = printable ? (uint32_t)b : next++;
    }
    for (int c = 0; c < 324; c++) cp_to_byte[c] = -1;
    for (int b = 0; b < 256; b++) cp_to_byte[byte_to_cp[b]] = (int16_t)b;
}

/* ---------------------------------------------------------------- hashing */
static uint64_t hash_bytes(const void *p, size_t n) {
    const uint8_t *s = p;
    uint64_t h = 0xcbf29ce484222325ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    while (n--) h = (h ^ *s++) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0x9E3779B97F4A7C15ull;
    return h ^ (h >> 29);
}

static uint64_t hash_pair(int32_t a, int32_t b) {
    uint64_t k = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    k *= 0x9E3779B97F4A7C15ull;
    return k ^ (k >> 31);
}

static size_t pow2_at_least(size_t n) {
    size_t c = 16;
    while (c < n) c <<= 1;
    return c;
}

/* ---------------------------------------------------------------- the word cache */
/* BPE results of recent words, shared by all callers: a lookup takes the lock only if it is free (a busy
 * cache is simply bypassed), and a full cache is emptied. Memory is fixed at creation. */
#define CACHE_SLOTS (1u << 15)
#define CACHE_MAX_WORDS (CACHE_SLOTS / 4 * 3)
#define CACHE_MAX_KEY 48
#define CACHE_KEY_BYTES (1u << 20)
#define CACHE_IDS (1u << 18)

typedef struct {
    uint64_t hash;
    uint32_t key_off, ids_off;
    uint16_t key_len, n_ids; /* key_len 0: empty slot */
} cache_slot;

typedef struct {
    pthread_mutex_t lock;
    cache_slot *slots;
    uint8_t *keys;
    int32_t *ids;
    uint32_t n_words, keys_used, ids_used;
} word_cache;

static void cache_clear(word_cache *c) {
    memset(c->slots, 0, CACHE_SLOTS * sizeof *c->slots);
    c->n_words = c->keys_used = c->ids_used = 0;
}

static word_cache *cache_new(void) {
    word_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->slots = calloc(CACHE_SLOTS, sizeof *c->slots);
    c->keys = malloc(CACHE_KEY_BYTES);
    c->ids = malloc(CACHE_IDS * sizeof(int32_t));
    if (!c->slots || !c->keys || !c->ids || pthread_mutex_init(&c->lock, NULL) != 0) {
        free(c->slots);
        free(c->keys);
        free(c->ids);
        free(c);
        return NULL;
    }
    return c;
}

static void cache_free(word_cache *c) {
    if (!c) return;
    pthread_mutex_destroy(&c->lock);
    free(c->slots);
    free(c->keys);
    free(c->ids);
    free(c);
}

/* ---------------------------------------------------------------- the tokenizer */
typedef struct {
    uint64_t key; /* left id << 32 | right id */
    int32_t rank; /* -1: empty slot */
    int32_t id;   /* the merged token */
} merge_slot;

typedef struct {
    int32_t id;
    int special;
    const uint8_t *s; /* content (points into the token text arena) */
    size_t len;
} added_token;

/* Added tokens matched in one pass (raw text, or normalised text), grouped by first byte. */
typedef struct {
    added_token *tok; /* sorted by first byte */
    int n;
    int first[257];   /* tok[first[b] .. first[b+1]) start with byte b */
    int single_first; /* the one first byte all tokens share, or -1 */
} added_set;

struct pr_tokenizer {
    int32_t n_tokens;
    uint8_t *type;
    char *text;         /* stored token strings, each NUL-terminated */
    uint32_t *text_off;
    uint8_t *bytes;     /* what each token decodes to */
    uint32_t *bytes_off, *bytes_len;
    int32_t *vocab;     /* open addressing: token id or -1, keyed by stored text */
    size_t vocab_mask;
    merge_slot *merges;
    size_t merge_mask;
    int32_t byte_id[256]; /* the token of each single byte, -1 if the vocabulary lacks it */
    added_set raw, norm;
    int32_t eos_id, pad_id;
    word_cache *cache;
};

static int tok_error(pr_error *err, const gguf_file *f, const char *fmt, const char *detail) {
    return pr_set_error(err, PR_ERR_TOKENIZER, "%s: tokenizer: %s%s", gguf_path(f), fmt, detail ? detail : "");
}

static int32_t vocab_find(const pr_tokenizer *t, const char *s, size_t n) {
    size_t i = hash_bytes(s, n) & t->vocab_mask;
    for (;;) {
        int32_t id = t->vocab[i];
        if (id < 0) return -1;
        const char *v = t->text + t->text_off[id];
        if (t->text_off[id + 1] - t->text_off[id] - 1 == n && memcmp(v, s, n) == 0) return id;
        i = (i + 1) & t->vocab_mask;
    }
}

static void vocab_insert_if_absent(pr_tokenizer *t, int32_t id) {
    const char *s = t->text + t->text_off[id];
    size_t n = t->text_off[id + 1] - t->text_off[id] - 1;
    size_t i = hash_bytes(s, n) & t->vocab_mask;
    for (;;) {
        int32_t o = t->vocab[i];
        if (o < 0) { t->vocab[i] = id; return; }
        if (t->text_off[o + 1] - t->text_off[o] - 1 == n && memcmp(t->text + t->text_off[o], s, n) == 0) return;
        i = (i + 1) & t->vocab_mask;
    }
}

static inline const merge_slot *merge_find(const pr_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = hash_pair(a, b) & t->merge_mask;
    for (;;) {
        const merge_slot *m = &t->merges[i];
        if (m->rank < 0) return NULL;
        if (m->key == key) return m;
        i = (i + 1) & t->merge_mask;
    }
}

/* The later of two identical merges wins, as when `tokenizers` collects its merge map. */
static void merge_put(pr_tokenizer *t, int32_t a, int32_t b, int32_t rank, int32_t id) {
    uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    size_t i = hash_pair(a, b) & t->merge_mask;
    for (;;) {
        merge_slot *m = &t->merges[i];
        if (m->rank < 0 || m->key == key) {
            m->key = key;
            m->rank = rank;
            m->id = id;
            return;
        }
        i = (i + 1) & t->merge_mask;
    }
}

static int cmp_added(const void *a, const void *b) {
    const added_token *x = a, *y = b;
    if (x->s[0] != y->s[0]) return x->s[0] < y->s[0] ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void added_set_index(added_set *set) {
    qsort(set->tok, (size_t)set->n, sizeof *set->tok, cmp_added);
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < set->n && set->tok[k].s[0] < b) k++;
        set->first[b] = k;
    }
    set->single_first = set->n > 0 && set->tok[0].s[0] == set->tok[set->n - 1].s[0] ? set->tok[0].s[0] : -1;
}

void pr_tokenizer_free(pr_tokenizer *t) {
    if (!t) return;
    free(t->type);
    free(t->text);
    free(t->text_off);
    free(t->bytes);
    free(t->bytes_off);
    free(t->bytes_len);
    free(t->vocab);
    free(t->merges);
    free(t->raw.tok);
    free(t->norm.tok);
    cache_free(t->cache);
    free(t);
}

static int get_str_key(const gguf_file *f, const char *key, gguf_str *out, pr_error *err) {
    const gguf_kv *kv = gguf_find(f, key);
    out->ptr = NULL;
    out->len = 0;
    if (!kv) return 0;
    if (kv->type != GGUF_STRING)
        return pr_set_error(err, PR_ERR_TOKENIZER, "%s: tokenizer: metadata key '%s' should be a string",
                            gguf_path(f), key);
    *out = kv->v.s;
    return 0;
}

static int get_token_id_key(const gguf_file *f, const char *key, int32_t n_tokens, int32_t *out, pr_error *err) {
    int64_t v;
    if (gguf_get_int(f, key, 0, -1, &v, err)) {
        err->code = PR_ERR_TOKENIZER;
        return PR_ERR_TOKENIZER;
    }
    if (v < -1 || v >= n_tokens)
        return pr_set_error(err, PR_ERR_TOKENIZER, "%s: tokenizer: '%s' = %lld is not a token id (0..%d)",
                            gguf_path(f), key, (long long)v, (int)n_tokens - 1);
    *out = (int32_t)v;
    return 0;
}

/* What a token decodes to: its characters mapped back to bytes when all are in the byte alphabet, else its
 * UTF-8 as is (the ByteLevel decoder's rule). */
static size_t token_bytes(const uint8_t *s, size_t n, uint8_t *out) {
    size_t i = 0, k = 0;
    while (i < n) {
        uint32_t cp;
        i += (size_t)pr_utf8_decode(s + i, &cp);
        if (cp >= 324 || cp_to_byte[cp] < 0) {
            memcpy(out, s, n);
            return n;
        }
        out[k++] = (uint8_t)cp_to_byte[cp];
    }
    return k;
}

int pr_tokenizer_from_gguf(const struct gguf_file *f, pr_tokenizer **out, pr_error *err) {
    *out = NULL;
    pr_uni_init();
    pthread_once(&alphabet_once, build_alphabet);

    gguf_str model, pre, regex, normalizer;
    if (get_str_key(f, "tokenizer.ggml.model", &model, err) || get_str_key(f, "tokenizer.ggml.pre", &pre, err) ||
        get_str_key(f, "parrot.tokenizer.pre_regex", &regex, err) ||
        get_str_key(f, "parrot.tokenizer.normalizer", &normalizer, err))
        return PR_ERR_TOKENIZER;
    if (!model.ptr) return tok_error(err, f, "the file has no tokenizer (missing 'tokenizer.ggml.model')", NULL);
    if (!gguf_str_eq(model, "gpt2"))
        return pr_set_error(err, PR_ERR_TOKENIZER,
                            "%s: tokenizer: 'tokenizer.ggml.model' is '%.*s'; only 'gpt2' (byte-level BPE) is "
                            "supported", gguf_path(f), (int)(model.len > 64 ? 64 : model.len), model.ptr);
    if (regex.ptr) {
        if (!gguf_str_eq(regex, PR_QWEN2_PRE_REGEX))
            return pr_set_error(err, PR_ERR_TOKENIZER,
                                "%s: tokenizer: unsupported pre-tokeniser regex '%.*s' in "
                                "'parrot.tokenizer.pre_regex'; only Qwen2's is implemented", gguf_path(f),
                                (int)(regex.len > 300 ? 300 : regex.len), regex.ptr);
    } else if (!pre.ptr || !gguf_str_eq(pre, "qwen2")) {
        return pr_set_error(err, PR_ERR_TOKENIZER,
                            "%s: tokenizer: unsupported pre-tokeniser '%.*s' in 'tokenizer.ggml.pre' (and no "
                            "'parrot.tokenizer.pre_regex'); only 'qwen2' is implemented", gguf_path(f),
                            (int)(pre.len > 64 ? 64 : pre.len), pre.ptr ? pre.ptr : "");
    }
    if (normalizer.ptr && !gguf_str_eq(normalizer, "NFC"))
        return pr_set_error(err, PR_ERR_TOKENIZER,
                            "%s: tokenizer: unsupported normaliser '%.*s' in 'parrot.tokenizer.normalizer'; only "
                            "'NFC' is implemented", gguf_path(f), (int)(normalizer.len > 64 ? 64 : normalizer.len),
                            normalizer.ptr);

    const gguf_kv *ktok = gguf_find(f, "tokenizer.ggml.tokens");
    const gguf_kv *ktype = gguf_find(f, "tokenizer.ggml.token_type");
    const gguf_kv *kmerge = gguf_find(f, "tokenizer.ggml.merges");
    const gguf_kv *knorm = gguf_find(f, "parrot.tokenizer.added_normalized");
    if (!ktok || ktok->type != GGUF_ARRAY || ktok->arr_type != GGUF_STRING)
        return tok_error(err, f, "'tokenizer.ggml.tokens' is missing or not an array of strings", NULL);
    if (ktok->arr_n == 0 || ktok->arr_n > (1u << 30))
        return tok_error(err, f, "'tokenizer.ggml.tokens' has an unusable number of entries", NULL);
    if (!ktype || ktype->type != GGUF_ARRAY || !gguf_type_is_int(ktype->arr_type) || ktype->arr_n != ktok->arr_n)
        return tok_error(err, f, "'tokenizer.ggml.token_type' is missing, not an integer array, or not as long "
                         "as 'tokenizer.ggml.tokens'", NULL);
    /* GGUF cannot store an empty array, so a tokenizer without merges has no merges key */
    if (kmerge && (kmerge->type != GGUF_ARRAY || kmerge->arr_type != GGUF_STRING || kmerge->arr_n >= (1u << 31)))
        return tok_error(err, f, "'tokenizer.ggml.merges' is not an array of strings", NULL);
    uint64_t n_merges = kmerge ? kmerge->arr_n : 0;
    if (knorm && (knorm->type != GGUF_ARRAY || !gguf_type_is_int(knorm->arr_type)))
        return tok_error(err, f, "'parrot.tokenizer.added_normalized' is not an integer array", NULL);

    pr_tokenizer *t = calloc(1, sizeof *t);
    if (!t) return pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory");
    int rc = PR_ERR_NOMEM;
    int32_t n = (int32_t)ktok->arr_n;
    t->n_tokens = n;

    /* token texts, types and decoded bytes */
    size_t total = 0;
    for (int32_t i = 0; i < n; i++) {
        total += ktok->arr_strs[i].len + 1;
        if (total > UINT32_MAX - 1) {
            rc = tok_error(err, f, "token strings are too large", NULL);
            goto fail;
        }
    }
    t->type = malloc((size_t)n);
    t->text = malloc(total);
    t->text_off = malloc(((size_t)n + 1) * 4);
    t->bytes = malloc(total);
    t->bytes_off = malloc((size_t)n * 4);
    t->bytes_len = malloc((size_t)n * 4);
    if (!t->type || !t->text || !t->text_off || !t->bytes || !t->bytes_off || !t->bytes_len) goto fail;
    uint32_t off = 0, boff = 0;
    int n_added = 0;
    for (int32_t i = 0; i < n; i++) {
        gguf_str s = ktok->arr_strs[i];
        int64_t ty = gguf_arr_int(ktype, (uint64_t)i);
        if (ty != PR_TOKEN_NORMAL && ty != PR_TOKEN_CONTROL && ty != PR_TOKEN_USER_DEFINED && ty != PR_TOKEN_UNUSED) {
            rc = pr_set_error(err, PR_ERR_TOKENIZER,
                              "%s: tokenizer: token %d has type %lld; a byte-level BPE uses only 1 (normal), "
                              "3 (control), 4 (user-defined) and 5 (unused)", gguf_path(f), (int)i, (long long)ty);
            goto fail;
        }
        size_t bad = pr_utf8_first_invalid((const uint8_t *)s.ptr, s.len);
        if (bad < s.len) {
            rc = pr_set_error(err, PR_ERR_TOKENIZER, "%s: tokenizer: 'tokenizer.ggml.tokens'[%d] is not valid "
                              "UTF-8 (byte %zu)", gguf_path(f), (int)i, bad);
            goto fail;
        }
        if (memchr(s.ptr, 0, s.len)) {
            rc = pr_set_error(err, PR_ERR_TOKENIZER, "%s: tokenizer: token %d contains a NUL character",
                              gguf_path(f), (int)i);
            goto fail;
        }
        if ((ty == PR_TOKEN_CONTROL || ty == PR_TOKEN_USER_DEFINED) && s.len == 0) {
            rc = pr_set_error(err, PR_ERR_TOKENIZER, "%s: tokenizer: added token %d is empty", gguf_path(f),
                              (int)i);
            goto fail;
        }
        t->type[i] = (uint8_t)ty;
        t->text_off[i] = off;
        memcpy(t->text + off, s.ptr, s.len);
        t->text[off + s.len] = 0;
        off += (uint32_t)s.len + 1;
        t->bytes_off[i] = boff;
        t->bytes_len[i] = 0;
        if (ty != PR_TOKEN_UNUSED) {
            t->bytes_len[i] = (uint32_t)token_bytes((const uint8_t *)s.ptr, s.len, t->bytes + boff);
            boff += t->bytes_len[i];
        }
        if (ty == PR_TOKEN_CONTROL || ty == PR_TOKEN_USER_DEFINED) n_added++;
    }
    t->text_off[n] = off;

    /* the vocabulary map; normal tokens first so merges find the BPE entry when an added token repeats it */
    size_t vcap = pow2_at_least((size_t)n * 2);
    t->vocab = malloc(vcap * sizeof *t->vocab);
    if (!t->vocab) goto fail;
    memset(t->vocab, 0xFF, vcap * sizeof *t->vocab);
    t->vocab_mask = vcap - 1;
    for (int pass = 0; pass < 2; pass++)
        for (int32_t i = 0; i < n; i++)
            if ((pass == 0) == (t->type[i] == PR_TOKEN_NORMAL) && t->type[i] != PR_TOKEN_UNUSED)
                vocab_insert_if_absent(t, i);

    for (int b = 0; b < 256; b++) {
        uint8_t u[4];
        int k = pr_utf8_encode(byte_to_cp[b], u);
        t->byte_id[b] = vocab_find(t, (const char *)u, (size_t)k);
    }

    /* merges "left right" in rank order */
    size_t mcap = pow2_at_least((size_t)n_merges * 2);
    t->merges = malloc(mcap * sizeof *t->merges);
    if (!t->merges) goto fail;
    for (size_t i = 0; i < mcap; i++) t->merges[i].rank = -1;
    t->merge_mask = mcap - 1;
    char *joined = NULL;
    size_t joined_cap = 0;
    for (uint64_t r = 0; r < n_merges; r++) {
        gguf_str m = kmerge->arr_strs[r];
        size_t bad = pr_utf8_first_invalid((const uint8_t *)m.ptr, m.len);
        if (bad < m.len) {
            free(joined);
            rc = pr_set_error(err, PR_ERR_TOKENIZER, "%s: tokenizer: 'tokenizer.ggml.merges'[%llu] is not valid "
                              "UTF-8 (byte %zu)", gguf_path(f), (unsigned long long)r, bad);
            goto fail;
        }
        const char *sp = m.len > 1 ? memchr(m.ptr + 1, ' ', m.len - 1) : NULL;
        if (!sp) {
            free(joined);
            rc = pr_set_error(err, PR_ERR_TOKENIZER, "%s: tokenizer: merge %llu is not of the form 'left right'",
                              gguf_path(f), (unsigned long long)r);
            goto fail;
        }
        size_t la = (size_t)(sp - m.ptr), lb = m.len - la - 1;
        int32_t a = vocab_find(t, m.ptr, la), b = vocab_find(t, sp + 1, lb);
        if (joined_cap < la + lb) {
            free(joined);
            joined_cap = (la + lb) * 2;
            joined = malloc(joined_cap);
            if (!joined) goto fail;
        }
        memcpy(joined, m.ptr, la);
        memcpy(joined + la, sp + 1, lb);
        int32_t ab = vocab_find(t, joined, la + lb);
        if (a < 0 || b < 0 || ab < 0) {
            free(joined);
            rc = pr_set_error(err, PR_ERR_TOKENIZER,
                              "%s: tokenizer: merge %llu ('%.*s') names a token that is not in the vocabulary",
                              gguf_path(f), (unsigned long long)r, (int)(m.len > 200 ? 200 : m.len), m.ptr);
            goto fail;
        }
        merge_put(t, a, b, (int32_t)r, ab);
    }
    free(joined);

    /* added tokens: those listed in parrot.tokenizer.added_normalized are matched after NFC */
    uint8_t *normalized = calloc((size_t)n, 1);
    if (!normalized) goto fail;
    if (knorm) {
        for (uint64_t i = 0; i < knorm->arr_n; i++) {
            int64_t id = gguf_arr_int(knorm, i);
            if (id < 0 || id >= n || (t->type[id] != PR_TOKEN_CONTROL && t->type[id] != PR_TOKEN_USER_DEFINED)) {
                free(normalized);
                rc = pr_set_error(err, PR_ERR_TOKENIZER,
                                  "%s: tokenizer: 'parrot.tokenizer.added_normalized' lists %lld, which is not an "
                                  "added token", gguf_path(f), (long long)id);
                goto fail;
            }
            normalized[id] = 1;
        }
    }
    t->raw.tok = calloc((size_t)n_added + 1, sizeof(added_token));
    t->norm.tok = calloc((size_t)n_added + 1, sizeof(added_token));
    if (!t->raw.tok || !t->norm.tok) {
        free(normalized);
        goto fail;
    }
    for (int32_t i = 0; i < n; i++) {
        if (t->type[i] != PR_TOKEN_CONTROL && t->type[i] != PR_TOKEN_USER_DEFINED) continue;
        added_set *set = normalized[i] ? &t->norm : &t->raw;
        added_token *a = &set->tok[set->n++];
        a->id = i;
        a->special = t->type[i] == PR_TOKEN_CONTROL;
        a->s = (const uint8_t *)t->text + t->text_off[i];
        a->len = t->text_off[i + 1] - t->text_off[i] - 1;
    }
    free(normalized);
    added_set_index(&t->raw);
    added_set_index(&t->norm);

    if (get_token_id_key(f, "tokenizer.ggml.eos_token_id", n, &t->eos_id, err) ||
        get_token_id_key(f, "tokenizer.ggml.padding_token_id", n, &t->pad_id, err)) {
        rc = PR_ERR_TOKENIZER;
        goto fail;
    }
    t->cache = cache_new();
    if (!t->cache) goto fail;
    *out = t;
    return 0;
fail:
    if (rc == PR_ERR_NOMEM) pr_set_error(err, PR_ERR_NOMEM, "%s: tokenizer: out of memory", gguf_path(f));
    pr_tokenizer_free(t);
    return rc;
}

int pr_tokenizer_n_tokens(const pr_tokenizer *t) { return t->n_tokens; }
int32_t pr_tokenizer_eos_id(const pr_tokenizer *t) { return t->eos_id; }
int32_t pr_tokenizer_pad_id(const pr_tokenizer *t) { return t->pad_id; }

const char *pr_tokenizer_token_text(const pr_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_tokens ? t->text + t->text_off[id] : NULL;
}

int pr_tokenizer_token_type(const pr_tokenizer *t, int32_t id) {
    return id >= 0 && id < t->n_tokens ? t->type[id] : 0;
}

const uint8_t *pr_tokenizer_token_bytes(const pr_tokenizer *t, int32_t id, size_t *len) {
    if (id < 0 || id >= t->n_tokens) {
        *len = 0;
        return NULL;
    }
    *len = t->bytes_len[id];
    return t->bytes + t->bytes_off[id];
}

int32_t pr_tokenizer_token_id(const pr_tokenizer *t, const char *token) {
    size_t n = strlen(token);
    const added_set *sets[2] = {&t->raw, &t->norm};
    for (int k = 0; k < 2; k++)
        for (int i = 0; i < sets[k]->n; i++)
            if (sets[k]->tok[i].len == n && memcmp(sets[k]->tok[i].s, token, n) == 0) return sets[k]->tok[i].id;
    return vocab_find(t, token, n);
}

/* ---------------------------------------------------------------- encoding */
typedef struct {
    int32_t *v;
    size_t n, cap;
} id_vec;

static int push_ids(id_vec *o, const int32_t *ids, size_t k) {
    if (k == 0) return 0; /* o->v may still be NULL (found by tests/fuzz/fuzz_gguf.c) */
    if (o->cap - o->n < k) {
        size_t cap = o->cap ? o->cap : 64;
        while (cap - o->n < k) {
            if (cap > SIZE_MAX / 8) return PR_ERR_NOMEM;
            cap *= 2;
        }
        int32_t *v = realloc(o->v, cap * sizeof *v);
        if (!v) return PR_ERR_NOMEM;
        o->v = v;
        o->cap = cap;
    }
    memcpy(o->v + o->n, ids, k * sizeof *ids);
    o->n += k;
    return 0;
}

/* Leftmost-longest match of an added token in s[pos..n), like the Aho-Corasick automaton of `tokenizers`:
 * a special token met while special tokens are off is stepped over (its text stays ordinary text, and no
 * other token may start inside it). Returns the match start (n if none). */
static size_t find_added(const added_set *set, const uint8_t *s, size_t n, size_t pos, int parse_special,
                         const added_token **hit) {
    *hit = NULL;
    size_t i = pos;
    while (i < n) {
        if (set->single_first >= 0) {
            const uint8_t *p = memchr(s + i, set->single_first, n - i);
            if (!p) return n;
            i = (size_t)(p - s);
        }
        uint8_t b = s[i];
        const added_token *best = NULL;
        for (int k = set->first[b]; k < set->first[b + 1]; k++) {
            const added_token *a = &set->tok[k];
            if (a->len <= n - i && (!best || a->len > best->len) && memcmp(s + i, a->s, a->len) == 0) best = a;
        }
        if (best) {
            if (best->special && !parse_special) {
                i += best->len;
                continue;
            }
            *hit = best;
            return i;
        }
        i++;
    }
    return n;
}

typedef struct {
    int32_t rank, pos, id;
} heap_item;

/* min-heap on (rank, pos) */
static int heap_less(const heap_item *a, const heap_item *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(heap_item *h, size_t *n, heap_item x) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&x, &h[p])) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = x;
}

static heap_item heap_pop(heap_item *h, size_t *n) {
    heap_item top = h[0], x = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) break;
        if (c + 1 < *n && heap_less(&h[c + 1], &h[c])) c++;
        if (!heap_less(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    if (*n) h[i] = x;
    return top;
}

typedef struct {
    int32_t id, prev, next; /* id -1: merged into its left neighbour */
} symbol;

/* BPE of one pre-token, with the same queue discipline as `tokenizers` (Word::merge_all): pop the lowest
 * (rank, position); skip entries whose symbol is gone, is last, or whose pair no longer merges into the
 * queued token; merge; queue the new pairs with both neighbours. Appends the ids to out[] and returns their
 * count. sym has room for n entries, heap for 2n (each merge pops one entry and queues at most two). */
static size_t bpe_merge(const pr_tokenizer *t, const uint8_t *w, size_t n, symbol *sym, heap_item *heap,
                        int32_t *out) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = t->byte_id[w[i]];
        if (id < 0) continue; /* a byte missing from the vocabulary is dropped, as with no unk token */
        sym[m].id = id;
        sym[m].prev = (int32_t)m - 1;
        sym[m].next = (int32_t)m + 1;
        m++;
    }
    if (m == 0) return 0;
    sym[m - 1].next = -1;
    size_t nh = 0;
    for (size_t i = 0; i + 1 < m; i++) {
        const merge_slot *ms = merge_find(t, sym[i].id, sym[i + 1].id);
        if (ms) heap_push(heap, &nh, (heap_item){ms->rank, (int32_t)i, ms->id});
    }
    while (nh) {
        heap_item top = heap_pop(heap, &nh);
        symbol *cur = &sym[top.pos];
        if (cur->id < 0 || cur->next < 0) continue;
        symbol *right = &sym[cur->next];
        const merge_slot *ms = merge_find(t, cur->id, right->id);
        if (!ms || ms->id != top.id) continue;
        cur->id = top.id;
        right->id = -1;
        cur->next = right->next;
        if (cur->next >= 0) sym[cur->next].prev = top.pos;
        if (cur->prev >= 0) {
            ms = merge_find(t, sym[cur->prev].id, cur->id);
            if (ms) heap_push(heap, &nh, (heap_item){ms->rank, cur->prev, ms->id});
        }
        if (cur->next >= 0) {
            ms = merge_find(t, cur->id, sym[cur->next].id);
            if (ms) heap_push(heap, &nh, (heap_item){ms->rank, top.pos, ms->id});
        }
    }
    size_t k = 0;
    for (int32_t i = 0; i >= 0; i = sym[i].next) out[k++] = sym[i].id;
    return k;
}

typedef struct {
    const pr_tokenizer *t;
    id_vec *out;
    /* scratch for bpe_merge, grown to the longest word */
    symbol *sym;
    heap_item *heap;
    int32_t *ids;
    size_t scratch_cap;
    symbol sym_small[CACHE_MAX_KEY];
    heap_item heap_small[2 * CACHE_MAX_KEY];
    int32_t ids_small[CACHE_MAX_KEY];
} encoder;

static int encode_word(encoder *e, const uint8_t *w, size_t n) {
    const pr_tokenizer *t = e->t;
    if (n == 1) {
        int32_t id = t->byte_id[w[0]];
        return id < 0 ? 0 : push_ids(e->out, &id, 1);
    }
    word_cache *c = t->cache;
    uint64_t h = 0;
    int cacheable = n <= CACHE_MAX_KEY;
    if (cacheable) {
        h = hash_bytes(w, n);
        if (pthread_mutex_trylock(&c->lock) == 0) {
            for (size_t i = h & (CACHE_SLOTS - 1);; i = (i + 1) & (CACHE_SLOTS - 1)) {
                cache_slot *s = &c->slots[i];
                if (s->key_len == 0) break;
                if (s->hash == h && s->key_len == n && memcmp(c->keys + s->key_off, w, n) == 0) {
                    int32_t tmp[CACHE_MAX_KEY];
                    size_t k = s->n_ids;
                    memcpy(tmp, c->ids + s->ids_off, k * sizeof *tmp);
                    pthread_mutex_unlock(&c->lock);
                    return push_ids(e->out, tmp, k);
                }
            }
            pthread_mutex_unlock(&c->lock);
        }
    }
    symbol *sym = e->sym_small;
    heap_item *heap = e->heap_small;
    int32_t *ids = e->ids_small;
    if (n > CACHE_MAX_KEY) {
        if (n > e->scratch_cap) {
            symbol *s2 = realloc(e->sym, n * sizeof *s2);
            if (s2) e->sym = s2;
            heap_item *h2 = realloc(e->heap, 2 * n * sizeof *h2);
            if (h2) e->heap = h2;
            int32_t *i2 = realloc(e->ids, n * sizeof *i2);
            if (i2) e->ids = i2;
            if (!s2 || !h2 || !i2) return PR_ERR_NOMEM;
            e->scratch_cap = n;
        }
        sym = e->sym;
        heap = e->heap;
        ids = e->ids;
    }
    size_t k = bpe_merge(t, w, n, sym, heap, ids);
    if (cacheable && pthread_mutex_trylock(&c->lock) == 0) {
        if (c->n_words >= CACHE_MAX_WORDS || c->keys_used + n > CACHE_KEY_BYTES || c->ids_used + k > CACHE_IDS)
            cache_clear(c);
        size_t i = h & (CACHE_SLOTS - 1);
        while (c->slots[i].key_len != 0) {
            cache_slot *s = &c->slots[i];
            if (s->hash == h && s->key_len == n && memcmp(c->keys + s->key_off, w, n) == 0) break;
            i = (i + 1) & (CACHE_SLOTS - 1);
        }
        if (c->slots[i].key_len == 0) {
            cache_slot *s = &c->slots[i];
            s->hash = h;
            s->key_off = c->keys_used;
            s->key_len = (uint16_t)n;
            s->ids_off = c->ids_used;
            s->n_ids = (uint16_t)k;
            memcpy(c->keys + c->keys_used, w, n);
            memcpy(c->ids + c->ids_used, ids, k * sizeof *ids);
            c->keys_used += (uint32_t)n;
            c->ids_used += (uint32_t)k;
            c->n_words++;
        }
        pthread_mutex_unlock(&c->lock);
    }
    return push_ids(e->out, ids, k);
}

/* pre-tokenise and BPE a piece that contains no added token */
static int encode_plain(encoder *e, const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        size_t k = pr_pretok_next(s + i, n - i);
        int rc = encode_word(e, s + i, k);
        if (rc) return rc;
        i += k;
    }
    return 0;
}

/* a piece of the raw text between non-normalised added tokens: NFC, then normalised added tokens */
static int encode_segment(encoder *e, const uint8_t *s, size_t n, int parse_special, pr_error *err) {
    uint8_t *nfc;
    size_t nn;
    int rc = pr_nfc(s, n, &nfc, &nn, err);
    if (rc) return rc;
    const uint8_t *p = nfc ? nfc : s;
    size_t pos = 0;
    while (pos < nn && rc == 0) {
        const added_token *hit = NULL;
        size_t at = e->t->norm.n ? find_added(&e->t->norm, p, nn, pos, parse_special, &hit) : nn;
        if (at > pos) rc = encode_plain(e, p + pos, at - pos);
        if (rc || !hit) break;
        rc = push_ids(e->out, &hit->id, 1);
        pos = at + hit->len;
    }
    free(nfc);
    if (rc == PR_ERR_NOMEM) pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory");
    return rc;
}

int pr_tokenize(const pr_tokenizer *t, const char *text, size_t len, int parse_special, int32_t **ids,
                size_t *n, pr_error *err) {
    *ids = NULL;
    *n = 0;
    if (!text && len) return pr_set_error(err, PR_ERR_ARG, "tokenizer: NULL text");
    const uint8_t *s = (const uint8_t *)text;
    size_t bad = pr_utf8_first_invalid(s, len);
    if (bad < len)
        return pr_set_error(err, PR_ERR_TOKENIZER, "tokenizer: the text is not valid UTF-8 (byte offset %zu)", bad);
    id_vec out = {0};
    encoder e = {.t = t, .out = &out};
    int rc = 0;
    size_t pos = 0;
    while (pos < len && rc == 0) {
        const added_token *hit = NULL;
        size_t at = t->raw.n ? find_added(&t->raw, s, len, pos, parse_special, &hit) : len;
        if (at > pos) rc = encode_segment(&e, s + pos, at - pos, parse_special, err);
        if (rc || !hit) break;
        rc = push_ids(&out, &hit->id, 1);
        if (rc) pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory");
        pos = at + hit->len;
    }
    free(e.sym);
    free(e.heap);
    free(e.ids);
    if (rc) {
        if (rc == PR_ERR_NOMEM) pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory");
        free(out.v);
        return rc;
    }
    *ids = out.v;
    *n = out.n;
    return 0;
}

/* ---------------------------------------------------------------- decoding */
/* Converts bytes to well-formed UTF-8, each maximal ill-formed subpart becoming U+FFFD. Unless final, a
 * trailing proper prefix of a character is left unconsumed. out needs room for 3 * n bytes. */
static size_t utf8_lossy(const uint8_t *s, size_t n, int final, uint8_t *out, size_t *consumed) {
    size_t i = 0, k = 0;
    while (i < n) {
        if (s[i] < 0x80) {
            out[k++] = s[i++];
            continue;
        }
        int r = pr_utf8_check_one(s + i, n - i);
        if (r > 0) {
            memcpy(out + k, s + i, (size_t)r);
            k += (size_t)r;
            i += (size_t)r;
            continue;
        }
        if (r == 0 && !final) break;
        out[k++] = 0xEF;
        out[k++] = 0xBF;
        out[k++] = 0xBD;
        i += r == 0 ? n - i : (size_t)-r;
    }
    *consumed = i;
    return k;
}

static int check_id(const pr_tokenizer *t, int32_t id, size_t pos, pr_error *err) {
    if (id < 0 || id >= t->n_tokens)
        return pr_set_error(err, PR_ERR_ARG, "tokenizer: id %d at position %zu is not a token id (0..%d)", (int)id,
                            pos, (int)t->n_tokens - 1);
    return 0;
}

static int decodes(const pr_tokenizer *t, int32_t id, int skip_special) {
    return t->type[id] != PR_TOKEN_UNUSED && !(skip_special && t->type[id] == PR_TOKEN_CONTROL);
}

int pr_detokenize(const pr_tokenizer *t, const int32_t *ids, size_t n, int skip_special, char **out,
                  size_t *len, pr_error *err) {
    *out = NULL;
    *len = 0;
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        if (check_id(t, ids[i], i, err)) return PR_ERR_ARG;
        if (decodes(t, ids[i], skip_special)) total += t->bytes_len[ids[i]];
    }
    if (total > (SIZE_MAX - 1) / 4) return pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory");
    uint8_t *raw = malloc(total ? total : 1);
    uint8_t *txt = malloc(total * 3 + 1);
    if (!raw || !txt) {
        free(raw);
        free(txt);
        return pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory");
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (!decodes(t, ids[i], skip_special)) continue;
        memcpy(raw + k, t->bytes + t->bytes_off[ids[i]], t->bytes_len[ids[i]]);
        k += t->bytes_len[ids[i]];
    }
    size_t used;
    size_t m = utf8_lossy(raw, k, 1, txt, &used);
    free(raw);
    txt[m] = 0;
    *out = (char *)txt;
    *len = m;
    return 0;
}

/* ---------------------------------------------------------------- streaming */
struct pr_detok_stream {
    const pr_tokenizer *t;
    int skip_special;
    uint8_t pending[4]; /* a proper prefix of a character, at most 3 bytes */
    size_t n_pending;
    uint8_t *in, *out;  /* scratch: pending + token bytes, and the text made of them */
    size_t cap;
};

int pr_detok_stream_new(const pr_tokenizer *t, int skip_special, pr_detok_stream **out, pr_error *err) {
    pr_detok_stream *s = calloc(1, sizeof *s);
    if (!s) return pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory");
    s->t = t;
    s->skip_special = skip_special;
    *out = s;
    return 0;
}

void pr_detok_stream_free(pr_detok_stream *s) {
    if (!s) return;
    free(s->in);
    free(s->out);
    free(s);
}

static int stream_reserve(pr_detok_stream *s, size_t n, pr_error *err) {
    if (n <= s->cap) return 0;
    if (n > SIZE_MAX / 4) return pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory");
    uint8_t *in = realloc(s->in, n);
    if (in) s->in = in;
    uint8_t *o = realloc(s->out, n * 3 + 1);
    if (o) s->out = o;
    if (!in || !o) return pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory");
    s->cap = n;
    return 0;
}

static int stream_emit(pr_detok_stream *s, const uint8_t *b, size_t nb, int final, const char **text, size_t *len,
                       pr_error *err) {
    if (stream_reserve(s, s->n_pending + nb + 4, err)) return PR_ERR_NOMEM;
    memcpy(s->in, s->pending, s->n_pending);
    if (nb) memcpy(s->in + s->n_pending, b, nb);
    size_t n = s->n_pending + nb, used;
    size_t m = utf8_lossy(s->in, n, final, s->out, &used);
    s->n_pending = n - used;
    memcpy(s->pending, s->in + used, s->n_pending);
    s->out[m] = 0;
    *text = (const char *)s->out;
    *len = m;
    return 0;
}

int pr_detok_stream_push(pr_detok_stream *s, int32_t id, const char **text, size_t *len, pr_error *err) {
    *text = "";
    *len = 0;
    if (check_id(s->t, id, 0, err)) return PR_ERR_ARG;
    if (!decodes(s->t, id, s->skip_special)) return 0;
    return stream_emit(s, s->t->bytes + s->t->bytes_off[id], s->t->bytes_len[id], 0, text, len, err);
}

int pr_detok_stream_flush(pr_detok_stream *s, const char **text, size_t *len, pr_error *err) {
    *text = "";
    *len = 0;
    if (s->n_pending == 0) return 0;
    return stream_emit(s, NULL, 0, 1, text, len, err);
}
