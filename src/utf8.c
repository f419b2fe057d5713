/* utf8 — validating UTF-8 decoding, encoding and repair.
 * Invariant: utf8_len accepts exactly the well-formed sequences of RFC 3629. */
#include "utf8.h"

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

char *utf8_repair(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  char *out = malloc(len * 3 + 1), *w = out; /* each bad byte grows to 3 */
  if (!out) return NULL;
  while (p < end) {
    int n = *p < 0x80 ? 1 : utf8_len(p, end, NULL);
    if (n) {
      memcpy(w, p, (size_t)n);
      w += n;
      p += n;
    } else {
      memcpy(w, UTF8_REPLACEMENT, 3);
      w += 3;
      p++;
    }
  }
  *w = 0;
  return out;
}
