/* Qwen2's pre-tokeniser: the split regex of docs/model.md §9, matched by hand with the exact semantics of the
 * backtracking engine (Oniguruma) that `tokenizers` runs it with. The alternatives are tried in order at the
 * current position and the first that matches wins:
 *
 *   A1  (?i:'s|'t|'re|'ve|'m|'ll|'d)     ASCII apostrophe + contraction, any case; under Unicode case folding
 *                                        U+017F LATIN SMALL LETTER LONG S matches s too
 *   A2  [^\r\n\p{L}\p{N}]?\p{L}+         a run of letters, with at most one leading non-letter/non-digit that
 *                                        is not CR or LF
 *   A3  \p{N}                            one number character
 *   A4   ?[^\s\p{L}\p{N}]+[\r\n]*        optional space, a run of "other" characters, trailing CR/LF
 *   A5  \s*[\r\n]+                       white space up to and including its last CR/LF
 *   A6  \s+(?!\S)                        white space, minus its last character when a non-space follows
 *   A7  \s+                              white space
 *
 * Every character starts some alternative (letters A2, numbers A3, white space A5-A7, the rest A4) and none
 * matches empty, so matches tile the text; the caller just calls pr_pretok_next repeatedly. */
#include "text/text_internal.h"

const char PR_QWEN2_PRE_REGEX[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/* ASCII classes, so the common case does not touch the big table */
static uint8_t ascii_class(uint8_t b) {
    if ((b >= 'a' && b <= 'z') || (b >= 'A' && b <= 'Z')) return UC_L;
    if (b >= '0' && b <= '9') return UC_N;
    if (b == ' ' || (b >= 0x09 && b <= 0x0D)) return UC_S;
    return 0;
}

/* class of the character at s[i], its code point and length */
static inline uint8_t char_at(const uint8_t *s, size_t i, uint32_t *cp, int *len) {
    if (s[i] < 0x80) {
        *cp = s[i];
        *len = 1;
        return ascii_class(s[i]);
    }
    *len = pr_utf8_decode(s + i, cp);
    return pr_uni_class(*cp) & (UC_L | UC_N | UC_S);
}

/* end of the run of characters starting at i whose class has any of the bits `want` (or none, if invert) */
static size_t run_end(const uint8_t *s, size_t n, size_t i, uint8_t want, int invert) {
    while (i < n) {
        uint32_t cp;
        int len;
        uint8_t c = char_at(s, i, &cp, &len);
        int in = (c & want) != 0;
        if (in == invert) break;
        i += (size_t)len;
    }
    return i;
}

static int lower_ascii(uint8_t b) { return b >= 'A' && b <= 'Z' ? b + 32 : b; }

/* A1: length of a contraction at s (s[0] == '\''), 0 if none */
static size_t contraction(const uint8_t *s, size_t n) {
    if (n < 2) return 0;
    /* U+017F (C5 BF) folds to 's' */
    if (n >= 3 && s[1] == 0xC5 && s[2] == 0xBF) return 3;
    int c1 = lower_ascii(s[1]);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
    if (n >= 3) {
        int c2 = lower_ascii(s[2]);
        if ((c1 == 'r' || c1 == 'v') && c2 == 'e') return 3;
        if (c1 == 'l' && c2 == 'l') return 3;
    }
    return 0;
}

size_t pr_pretok_next(const uint8_t *s, size_t n) {
    uint32_t cp0;
    int len0;
    uint8_t c0 = char_at(s, 0, &cp0, &len0);
    size_t i1 = (size_t)len0; /* start of the second character */

    if (cp0 == '\'') { /* A1 */
        size_t k = contraction(s, n);
        if (k) return k;
    }
    if (c0 & UC_L) return run_end(s, n, i1, UC_L, 0); /* A2 without the optional prefix */
    if (!(c0 & UC_N) && cp0 != '\r' && cp0 != '\n' && i1 < n) { /* A2 with the prefix */
        uint32_t cp1;
        int len1;
        if (char_at(s, i1, &cp1, &len1) & UC_L) return run_end(s, n, i1 + (size_t)len1, UC_L, 0);
    }
    if (c0 & UC_N) return i1; /* A3 */
    if (!(c0 & UC_S)) { /* A4 without the space */
        size_t j = run_end(s, n, i1, UC_S | UC_L | UC_N, 1);
        while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
        return j;
    }
    if (cp0 == ' ' && i1 < n) { /* A4 with the space */
        uint32_t cp1;
        int len1;
        if (!(char_at(s, i1, &cp1, &len1) & (UC_S | UC_L | UC_N))) {
            size_t j = run_end(s, n, i1 + (size_t)len1, UC_S | UC_L | UC_N, 1);
            while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
            return j;
        }
    }
    /* white space: A5, A6, A7. Scan the run, remembering where its last CR/LF ends and where its last
     * character starts. */
    size_t i = 0, last_nl_end = 0, last_start = 0;
    while (i < n) {
        uint32_t cp;
        int len;
        if (!(char_at(s, i, &cp, &len) & UC_S)) break;
        last_start = i;
        i += (size_t)len;
        if (cp == '\r' || cp == '\n') last_nl_end = i;
    }
    if (last_nl_end) return last_nl_end; /* A5 */
    if (i == n) return i;                /* A6: nothing follows */
    if (last_start > 0) return last_start; /* A6: leave the last space to the next token */
    return i;                            /* A7: a single space before a non-space */
}
