/* Unicode for the tokenizer: UTF-8 validation, character classes of the pre-tokeniser and NFC, using utf8proc
 * for the Unicode data.
 *
 * NFC quick check (UAX #15, section 9): a string whose characters all have canonical combining class 0 and
 * NFC_Quick_Check = Yes is already in NFC. utf8proc does not expose NFC_Quick_Check, so we derive a superset of
 * the characters that fail it: every character with a non-zero combining class; every character that appears
 * after the first position of some canonical decomposition (the possible second halves of a composition,
 * "Maybe"), including the Hangul vowel and trailing jamo; every character whose own NFC differs from itself
 * ("No"); and every character whose decomposition starts with one of those. A text with none of them skips
 * utf8proc's normalisation entirely (most text: ASCII, CJK, Cyrillic, Arabic letters, Hangul syllables). */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "text/text_internal.h"

uint8_t pr_uni_bmp_class[65536];
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
    for (uint32_t cp = 0; cp < 65536; cp++)
        pr_uni_bmp_class[cp] = (uint8_t)(category_class(cp) | (is_unsafe(cp) ? UC_NFC_UNSAFE : 0));
}

void pr_uni_init(void) { pthread_once(&tables_once, build_tables); }

uint8_t pr_uni_class_slow(uint32_t cp) {
    return (uint8_t)(category_class(cp) | (is_unsafe(cp) ? UC_NFC_UNSAFE : 0));
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

int pr_nfc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_n, pr_error *err) {
    *out = NULL;
    *out_n = n;
    size_t i = 0;
    int unsafe = 0;
    while (i < n) {
        if (s[i] < 0x80) { i++; continue; } /* ASCII has no decompositions and composes with nothing before */
        uint32_t cp;
        i += (size_t)pr_utf8_decode(s + i, &cp);
        if (pr_uni_class(cp) & UC_NFC_UNSAFE) { unsafe = 1; break; }
    }
    if (!unsafe) return 0;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t m = utf8proc_map(s, (utf8proc_ssize_t)n, &dst, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
    if (m < 0) {
        free(dst);
        if (m == UTF8PROC_ERROR_NOMEM) return pr_set_error(err, PR_ERR_NOMEM, "tokenizer: out of memory in NFC");
        return pr_set_error(err, PR_ERR_TOKENIZER, "tokenizer: NFC normalisation failed: %s",
                            utf8proc_errmsg(m));
    }
    *out = dst;
    *out_n = (size_t)m;
    return 0;
}
