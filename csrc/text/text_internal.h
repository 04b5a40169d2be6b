/* Internals of the text room shared between its files (not part of the C API). */
#ifndef PR_TEXT_INTERNAL_H
#define PR_TEXT_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

#include "parrot.h"

/* ---------------------------------------------------------------- unicode.c */
/* Character classes of the pre-tokeniser regex, as Oniguruma (the regex engine of `tokenizers`) defines them:
 * \p{L} = general categories L*, \p{N} = N*, \s = U+0009..U+000D, U+0085 and categories Zs, Zl, Zp.
 * UC_NFC_UNSAFE marks characters that may change or interact under NFC; UC_NFC_BARRIER characters that
 * `tokenizers`' NFC treats as plain starters although newer Unicode gives them normalisation properties
 * (see unicode.c). */
enum { UC_L = 1, UC_N = 2, UC_S = 4, UC_NFC_UNSAFE = 8, UC_NFC_BARRIER = 16 };

void pr_uni_init(void);                  /* builds the class tables once per process (thread-safe) */
extern uint8_t pr_uni_bmp_class[65536];  /* valid after pr_uni_init */
uint8_t pr_uni_class_slow(uint32_t cp);  /* classes of code points above the BMP */

static inline uint8_t pr_uni_class(uint32_t cp) {
    return cp < 65536 ? pr_uni_bmp_class[cp] : pr_uni_class_slow(cp);
}

/* Decodes the character at s (valid UTF-8 with at least one byte); returns its length. */
static inline int pr_utf8_decode(const uint8_t *s, uint32_t *cp) {
    uint8_t b = s[0];
    if (b < 0x80) { *cp = b; return 1; }
    if (b < 0xE0) { *cp = ((uint32_t)(b & 0x1F) << 6) | (s[1] & 0x3F); return 2; }
    if (b < 0xF0) { *cp = ((uint32_t)(b & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F); return 3; }
    *cp = ((uint32_t)(b & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
          (s[3] & 0x3F);
    return 4;
}

int pr_utf8_encode(uint32_t cp, uint8_t out[4]);

/* Well-formedness of the UTF-8 sequence at s (n > 0 bytes available), per Unicode Table 3-7:
 * returns > 0: length of a well-formed character;
 *         < 0: -(length of the maximal ill-formed subpart), always at least one byte;
 *           0: the n bytes are a proper prefix of a well-formed character (more bytes may complete it). */
int pr_utf8_check_one(const uint8_t *s, size_t n);
/* Offset of the first ill-formed byte, or n if all of s is well-formed UTF-8. */
size_t pr_utf8_first_invalid(const uint8_t *s, size_t n);

/* NFC of s[0..n) (valid UTF-8). Returns 0 with *out == NULL when s is already in NFC (the common case,
 * found by a quick check), or 0 with *out malloc'd (free with free()) holding *out_n bytes; else an error. */
int pr_nfc(const uint8_t *s, size_t n, uint8_t **out, size_t *out_n, pr_error *err);

/* ---------------------------------------------------------------- pretok.c */
/* Length in bytes of the pre-token that starts at s[0] (n > 0 bytes of valid UTF-8 remain): the match of
 * Qwen2's split regex at this position. Every position starts a non-empty match, so repeated calls cover
 * the text exactly as find_iter of `tokenizers`' Split(behavior=Isolated) does. */
size_t pr_pretok_next(const uint8_t *s, size_t n);

/* The pre-tokeniser regex of Qwen2 (the only one implemented). */
extern const char PR_QWEN2_PRE_REGEX[];
#endif
