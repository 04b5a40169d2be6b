/* Unicode for the tokenizer: UTF-8 validation, character classes of the pre-tokeniser and NFC, using utf8proc
 * for the Unicode data.
 *
 * NFC quick check (UAX #15, section 9): a string whose characters all have canonical combining class 0 and
 * NFC_Quick_Check = Yes is already in NFC. utf8proc does not expose NFC_Quick_Check, so we derive a superset of
 * the characters that fail it: every character with a non-zero combining class; every character that appears
 * after the first position of some canonical decomposition (the possible second halves of a composition,
 * "Maybe"), including the Hangul vowel and trailing jamo; every character whose own NFC differs from itself
 * ("No"); and every character whose decomposition starts with one of those. A text with none of them skips
 * utf8proc's normalisation entirely (most text: ASCII, CJK, Cyrillic, Arabic letters, Hangul syllables).
 *
 * Unicode versions: the NFC of `tokenizers` (crate unicode-normalization-alignments) uses Unicode 9 data, while
 * utf8proc has Unicode 15. Stability guarantees that characters known to both normalise alike, but the marks
 * and composition pairs added since then are plain starters (combining class 0, no decomposition, no
 * composition) to `tokenizers`. NFC then never reorders or composes across them, so the text normalises
 * piece by piece around them: pr_nfc splits at these "barriers" and leaves them as they are. The list is
 * every code point whose NFC behaviour differs between the two, found by comparing both normalisers over all
 * code points next to marks of combining class 1 to 240 and over every canonical decomposition. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "text/text_internal.h"

uint8_t pr_uni_bmp_class[65536];

static const uint32_t hf_plain_starters[] = {
    0x07FD, 0x0898, 0x0899, 0x089A, 0x089B, 0x089C, 0x089D, 0x089E, 0x089F, 0x08CA, 0x08CB, 0x08CC, 0x08CD,
    0x08CE, 0x08CF, 0x08D0, 0x08D1, 0x08D2, 0x08D3, 0x09FE, 0x0C3C, 0x0D3B, 0x0D3C, 0x0EBA, 0x1715, 0x1ABF,
    0x1AC0, 0x1AC1, 0x1AC2, 0x1AC3, 0x1AC4, 0x1AC5, 0x1AC6, 0x1AC7, 0x1AC8, 0x1AC9, 0x1ACA, 0x1ACB, 0x1ACC,
    0x1ACD, 0x1ACE, 0x1DF6, 0x1DF7, 0x1DF8, 0x1DF9, 0x1DFA, 0xA82C, 0x10D24, 0x10D25, 0x10D26, 0x10D27,
    0x10EAB, 0x10EAC, 0x10EFD, 0x10EFE, 0x10EFF, 0x10F46, 0x10F47, 0x10F48, 0x10F49, 0x10F4A, 0x10F4B,
    0x10F4C, 0x10F4D, 0x10F4E, 0x10F4F, 0x10F50, 0x10F82, 0x10F83, 0x10F84, 0x10F85, 0x11070, 0x1133B,
    0x1145E, 0x11839, 0x1183A, 0x11930, 0x11935, 0x11938, 0x1193D, 0x1193E, 0x11943, 0x119E0, 0x11A34,
    0x11A47, 0x11A99, 0x11D42, 0x11D44, 0x11D45, 0x11D97, 0x11F41, 0x11F42, 0x16FF0, 0x16FF1, 0x1E08F,
    0x1E130, 0x1E131, 0x1E132, 0x1E133, 0x1E134, 0x1E135, 0x1E136, 0x1E2AE, 0x1E2EC, 0x1E2ED, 0x1E2EE,
    0x1E2EF, 0x1E4EC, 0x1E4ED, 0x1E4EE, 0x1E4EF,
};
#define N_HF_PLAIN (sizeof hf_plain_starters / sizeof hf_plain_starters[0])

static int is_barrier(uint32_t cp) {
    size_t lo = 0, hi = N_HF_PLAIN;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (hf_plain_starters[mid] == cp) return 1;
        if (hf_plain_starters[mid] < cp) lo = mid + 1;
        else hi = mid;
    }
    return 0;
}
static uint8_t nfc_unsafe[0x110000 / 8]; /* bit per code point */
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

static void mark_unsafe(uint32_t cp) {
    if (cp < 0x110000) nfc_unsafe[cp >> 3] |= (uint8_t)(1u << (cp & 7));
}

static int is_unsafe(uint32_t cp) { return cp < 0x110000 && (nfc_unsafe[cp >> 3] >> (cp & 7)) & 1; }

static uint8_t category_class(uint32_t cp) {
    switch (utf8proc_category((utf8proc_int32_t)cp)) {
    case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO:
        return UC_L;
    case UTF8PROC_CATEGORY_ND: case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
        return UC_N;
    case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP:
        return UC_S;
    default:
        return (cp >= 0x09 && cp <= 0x0D) || cp == 0x85 ? UC_S : 0;
    }
}

/* Full canonical decomposition of cp (0 if it has none). */
static int canonical_decomposition(uint32_t cp, utf8proc_int32_t *buf, int cap) {
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
    if (p->decomp_seqindex == UINT16_MAX || p->decomp_type != 0) return 0;
    int boundclass = 0;
    utf8proc_ssize_t k = utf8proc_decompose_char((utf8proc_int32_t)cp, buf, cap, UTF8PROC_DECOMPOSE, &boundclass);
    return k > 0 && k <= cap ? (int)k : 0;
}

static int nfc_changes(uint32_t cp) {
    uint8_t in[4];
    int n = pr_utf8_encode(cp, in);
    utf8proc_uint8_t *out = NULL;
    utf8proc_ssize_t m = utf8proc_map(in, n, &out, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    int changed = m != n || memcmp(out, in, (size_t)n) != 0;
    free(out);
    return changed;
}

static void build_tables(void) {
    utf8proc_int32_t d[32];
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)cp);
        if (p->combining_class != 0) mark_unsafe(cp);
        int k = canonical_decomposition(cp, d, 32);
        if (k > 0) {
            for (int i = 1; i < k; i++) mark_unsafe((uint32_t)d[i]);
            if (nfc_changes(cp)) mark_unsafe(cp);
        }
    }
    for (uint32_t cp = 0x1161; cp <= 0x1175; cp++) mark_unsafe(cp); /* Hangul V: L + V -> LV */
    for (uint32_t cp = 0x11A8; cp <= 0x11C2; cp++) mark_unsafe(cp); /* Hangul T: LV + T -> LVT */
    /* a decomposition that starts with a second half may compose with what precedes it */
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        int k = canonical_decomposition(cp, d, 32);
        if (k > 0 && is_unsafe((uint32_t)d[0])) mark_unsafe(cp);
    }
    for (size_t i = 0; i < N_HF_PLAIN; i++) {
        uint32_t cp = hf_plain_starters[i];
        nfc_unsafe[cp >> 3] &= (uint8_t)~(1u << (cp & 7));
    }
    for (uint32_t cp = 0; cp < 65536; cp++) pr_uni_bmp_class[cp] = pr_uni_class_slow(cp);
}

void pr_uni_init(void) { pthread_once(&tables_once, build_tables); }

uint8_t pr_uni_class_slow(uint32_t cp) {
    return (uint8_t)(category_class(cp) | (is_unsafe(cp) ? UC_NFC_UNSAFE : 0) |
                     (is_barrier(cp) ? UC_NFC_BARRIER : 0));
}

int pr_utf8_encode(uint32_t cp, uint8_t out[4]) {
    if (cp < 0x80) { out[0] = (uint8_t)cp; return 1; }
    if (cp < 0x800) { out[0] = (uint8_t)(0xC0 | (cp >> 6)); out[1] = (uint8_t)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | (cp >> 12));
        out[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | (cp >> 18));
    out[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

int pr_utf8_check_one(const uint8_t *s, size_t n) {
    uint8_t b = s[0];
    if (b < 0x80) return 1;
    int len;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte (Table 3-7) */
    if (b >= 0xC2 && b <= 0xDF) len = 2;
    else if (b == 0xE0) { len = 3; lo = 0xA0; }
    else if ((b >= 0xE1 && b <= 0xEC) || b == 0xEE || b == 0xEF) len = 3;
    else if (b == 0xED) { len = 3; hi = 0x9F; }
    else if (b == 0xF0) { len = 4; lo = 0x90; }
    else if (b >= 0xF1 && b <= 0xF3) len = 4;
    else if (b == 0xF4) { len = 4; hi = 0x8F; }
    else return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        uint8_t c = s[i];
        int ok = i == 1 ? (c >= lo && c <= hi) : (c >= 0x80 && c <= 0xBF);
        if (!ok) return -i;
    }
    return len;
}

size_t pr_utf8_first_invalid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        /* ASCII runs eight bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (s[i] < 0x80) { i++; continue; }
        int k = pr_utf8_check_one(s + i, n - i);
        if (k <= 0) return i;
        i += (size_t)k;
    }
    return n;
}

static int nfc_map(const uint8_t *s, size_t n, uint8_t **out, utf8proc_ssize_t *m, pr_error *err) {
    *out = NULL;
    if (n == 0) {
        *m = 0;
        return 0;
    }
    *m = utf8proc_map(s, (utf8proc_ssize_t)n, out, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (*m >= 0) return 0;
    free(*out);
    *out = NULL;
    if (*m == UTF8PROC_ERROR_NOMEM) return pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory in NFC");
    return pr_set_error(err, PR_ERR_TOKENIZER, "tokenizer: NFC normalisation failed: %s", utf8proc_errmsg(*m));
}

int pr_nfc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_n, pr_error *err) {
    *out = NULL;
    *out_n = n;
    size_t i = 0;
    int unsafe = 0, barrier = 0;
    while (i < n) {
        if (s[i] < 0x80) { i++; continue; } /* ASCII has no decompositions and composes with nothing before */
        uint32_t cp;
        i += (size_t)pr_utf8_decode(s + i, &cp);
        uint8_t c = pr_uni_class(cp);
        unsafe |= c & UC_NFC_UNSAFE;
        barrier |= c & UC_NFC_BARRIER;
    }
    if (!unsafe) return 0;
    if (!barrier) {
        utf8proc_ssize_t m;
        uint8_t *dst;
        if (nfc_map(s, n, &dst, &m, err)) return err ? err->code : PR_ERR_TOKENIZER;
        *out = dst;
        *out_n = (size_t)m;
        return 0;
    }
    /* normalise the pieces between barriers one by one; NFC never makes a piece longer than 3x */
    if (n > SIZE_MAX / 3 - 1) return pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory in NFC");
    size_t cap = 3 * n + 1, k = 0, start = 0;
    uint8_t *res = malloc(cap);
    if (!res) return pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory in NFC");
    i = 0;
    while (i <= n) {
        uint32_t cp = 0;
        int len = 0;
        if (i < n) len = pr_utf8_decode(s + i, &cp);
        if (i == n || (cp >= 0x80 && (pr_uni_class(cp) & UC_NFC_BARRIER))) {
            uint8_t *piece;
            utf8proc_ssize_t m;
            if (nfc_map(s + start, i - start, &piece, &m, err)) {
                free(res);
                return err ? err->code : PR_ERR_TOKENIZER;
            }
            if (k + (size_t)m + (size_t)len > cap) { /* cannot happen (NFC expands at most 3x), but stay safe */
                free(piece);
                free(res);
                return pr_set_error(err, PR_ERR_TOKENIZER, "tokenizer: NFC output larger than expected");
            }
            if (m) memcpy(res + k, piece, (size_t)m);
            free(piece);
            k += (size_t)m;
            if (i == n) break;
            memcpy(res + k, s + i, (size_t)len);
            k += (size_t)len;
            start = i + (size_t)len;
        }
        i += (size_t)len;
    }
    *out = res;
    *out_n = k;
    return 0;
}
