/* utf8 — validating UTF-8 decoding, encoding and repair: the one place that knows
 * which byte sequences are valid (no overlongs, no surrogates, nothing past
 * U+10FFFF). Used by the JSON scanner, the log writer and the stores. */
#ifndef OUTBOXD_UTF8_H
#define OUTBOXD_UTF8_H

#include <stddef.h>

/* The replacement character U+FFFD, as UTF-8 and as a JSON escape. */
#define UTF8_REPLACEMENT "\xEF\xBF\xBD"
#define UTF8_REPLACEMENT_JSON "\\ufffd"

/* Length of the valid UTF-8 sequence at p (1..4, bytes up to `end`), or 0 when
 * the bytes there are not valid UTF-8. Sets *cp to the code point when cp is not
 * NULL. */
int utf8_len(const unsigned char *p, const unsigned char *end, unsigned *cp);

/* Writes code point `cp` (at most U+10FFFF) at w; returns the byte after it. */
char *utf8_put(char *w, unsigned cp);

/* 1 when the `len` bytes at s are valid UTF-8. */
int utf8_valid(const char *s, size_t len);

/* A NUL-terminated copy of the `len` bytes at s with each invalid byte (and each
 * NUL byte) replaced by U+FFFD; the caller frees it. NULL when out of memory. */
char *utf8_repair(const char *s, size_t len);

/* Like utf8_repair, and a NUL byte becomes U+FFFD too, so the result is one C
 * string; when it would exceed `max` bytes (max >= 8) it is cut on a character
 * boundary and ends with "...", so it never exceeds `max`. *out_len (when not NULL)
 * gets its length. NULL when out of memory; the caller frees it. */
char *utf8_clean(const char *s, size_t len, size_t max, size_t *out_len);

#endif
