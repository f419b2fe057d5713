/* store_open — the backend a --db value names, and database URLs as they may be
 * printed. Invariant: no message that leaves here holds a password. */
#include "store_open.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "store_backends.h"

/* ------------------------------------------------------------ redaction */

typedef struct sbuf {
  char *p;
  size_t len, cap;
} sbuf_t;

static void sput(sbuf_t *b, const char *s, size_t n) {
  if (b->len + n >= b->cap) n = b->cap - 1 - b->len;
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = 0;
}

/* Where the value of a password= at s ends: a quoted conninfo value runs to its
 * closing quote, others to a space or the next query parameter. */
static const char *password_end(const char *s) {
  if (*s == '\'') {
    for (s++; *s && *s != '\''; s++)
      if (*s == '\\' && s[1]) s++;
    return *s ? s + 1 : s;
  }
  return s + strcspn(s, " \t&#");
}

const char *store_url_redact(const char *url, char *out, size_t len) {
  sbuf_t b = {out, 0, len};
  const char *p = url, *scheme = strstr(url, "://");
  if (!len) return out;
  out[0] = 0;
  if (scheme) { /* scheme://user:PASSWORD@host... */
    const char *info = scheme + 3, *at = NULL;
    for (const char *q = info; *q && *q != '?' && *q != '#'; q++)
      if (*q == '@') at = q;
    const char *colon = at ? memchr(info, ':', (size_t)(at - info)) : NULL;
    if (colon) {
      sput(&b, url, (size_t)(colon + 1 - url));
      sput(&b, "***", 3);
      p = at;
    }
  }
  while (*p) { /* password=VALUE, at the start or after a space, '?' or '&' */
    const char *hit = strcasestr(p, "password=");
    while (hit && hit > url && !strchr(" \t?&", hit[-1])) hit = strcasestr(hit + 1, "password=");
    if (!hit) break;
    hit += strlen("password=");
    sput(&b, p, (size_t)(hit - p));
    sput(&b, "***", 3);
    p = password_end(hit);
  }
  sput(&b, p, strlen(p));
  return out;
}

/* Replaces each copy of `url` in the message errbuf with its redacted form, so a
 * backend's error never shows a password, whatever it quotes. */
static void scrub(char *errbuf, size_t errlen, const char *url) {
  char safe[1024], out[2048];
  const char *hit, *p = errbuf;
  size_t n = strlen(url);
  store_url_redact(url, safe, sizeof safe);
  if (!n || !errlen || strcmp(safe, url) == 0) return;
  sbuf_t b = {out, 0, sizeof out};
  out[0] = 0;
  while ((hit = strstr(p, url))) {
    sput(&b, p, (size_t)(hit - p));
    sput(&b, safe, strlen(safe));
    p = hit + n;
  }
  sput(&b, p, strlen(p));
  snprintf(errbuf, errlen, "%s", out);
}

/* ------------------------------------------------------------ opening */

static int has_prefix(const char *s, const char *prefix) {
  return strncmp(s, prefix, strlen(prefix)) == 0;
}

static int is_pg(const char *url) {
  return has_prefix(url, "postgres://") || has_prefix(url, "postgresql://");
}

static int open_store(uv_loop_t *loop, const char *url, const store_opts_t *opts, store_t **out,
                      char *errbuf, size_t errlen) {
  if (has_prefix(url, "ndjson:"))
    return store_ndjson_open(loop, url + 7, opts, out, errbuf, errlen);
  if (is_pg(url)) return store_pg_open(loop, url, opts, out, errbuf, errlen);
  if (has_prefix(url, "sqlite:")) url += 7;
  return store_sqlite_open(loop, url, opts, out, errbuf, errlen);
}

int store_open(uv_loop_t *loop, const char *url, const store_opts_t *opts, store_t **out,
               char *errbuf, size_t errlen) {
  int rc = open_store(loop, url, opts, out, errbuf, errlen);
  if (rc) scrub(errbuf, errlen, url);
  if (rc && has_prefix(url, "sqlite:")) scrub(errbuf, errlen, url + 7);
  return rc;
}

static int init_schema(const char *url, char *errbuf, size_t errlen) {
  if (has_prefix(url, "ndjson:")) {
    snprintf(errbuf, errlen, "--db %s: an NDJSON source has no tables to create", url);
    return -EINVAL;
  }
  if (is_pg(url)) return store_pg_init_schema(url, errbuf, errlen);
  if (has_prefix(url, "sqlite:")) url += 7;
  return store_sqlite_init_schema(url, errbuf, errlen);
}

int store_init_schema(const char *url, char *errbuf, size_t errlen) {
  int rc = init_schema(url, errbuf, errlen);
  if (rc) scrub(errbuf, errlen, url);
  if (rc && has_prefix(url, "sqlite:")) scrub(errbuf, errlen, url + 7);
  return rc;
}
