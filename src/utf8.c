/* utf8 — validating UTF-8 decoding, encoding and repair.
 * Invariant: utf8_len accepts exactly the well-formed sequences of RFC 3629. */
#include "utf8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int utf8_len(const unsigned char *p, const unsigned char *end, unsigned *out) {
  unsigned char c = p[0];
  int n;
  unsigned cp;
  if (c < 0x80) {
    if (out) *out = c;
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF)
    n = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF)
    n = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4)
    n = 4, cp = c & 0x07;
  else
    return 0;
  if (end - p < n) return 0;
  for (int i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if ((n == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
      (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
    return 0;
  if (out) *out = cp;
  return n;
}

char *utf8_put(char *w, unsigned cp) {
  if (cp < 0x80) {
    *w++ = (char)cp;
  } else if (cp < 0x800) {
    *w++ = (char)(0xC0 | (cp >> 6));
    *w++ = (char)(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    *w++ = (char)(0xE0 | (cp >> 12));
    *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *w++ = (char)(0x80 | (cp & 0x3F));
  } else {
    *w++ = (char)(0xF0 | (cp >> 18));
    *w++ = (char)(0x80 | ((cp >> 12) & 0x3F));
    *w++ = (char)(0x80 | ((cp >> 6) & 0x3F));
    *w++ = (char)(0x80 | (cp & 0x3F));
  }
  return w;
}

int utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    int n = *p < 0x80 ? 1 : utf8_len(p, end, NULL);
    if (!n) return 0;
    p += n;
  }
  return 1;
}

#define ELLIPSIS "..."

/* Bytes of the valid sequence at p, or 0 for a byte that is replaced (NUL included). */
static int keep_len(const unsigned char *p, const unsigned char *end) {
  return *p == 0 ? 0 : *p < 0x80 ? 1 : utf8_len(p, end, NULL);
}

/* Bytes the cleaned form of p[0..end) takes. */
static size_t clean_len(const unsigned char *p, const unsigned char *end) {
  size_t total = 0;
  while (p < end) {
    int n = keep_len(p, end);
    total += n ? (size_t)n : sizeof UTF8_REPLACEMENT - 1;
    p += n ? n : 1;
  }
  return total;
}

char *utf8_clean(const char *s, size_t len, size_t max, size_t *out_len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  size_t total = clean_len(p, end);
  int cut = total > max;
  size_t room = cut ? max - (sizeof ELLIPSIS - 1) : total;
  char *out = malloc((cut ? max : total) + 1), *w = out;
  if (!out) return NULL;
  while (p < end) {
    int n = keep_len(p, end);
    size_t k = n ? (size_t)n : sizeof UTF8_REPLACEMENT - 1;
    if ((size_t)(w - out) + k > room) break;
    memcpy(w, n ? (const char *)p : UTF8_REPLACEMENT, k);
    w += k;
    p += n ? n : 1;
  }
  if (cut) memcpy(w, ELLIPSIS, sizeof ELLIPSIS - 1), w += sizeof ELLIPSIS - 1;
  *w = 0;
  if (out_len) *out_len = (size_t)(w - out);
  return out;
}

char *utf8_repair(const char *s, size_t len) { return utf8_clean(s, len, SIZE_MAX, NULL); }
