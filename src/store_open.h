/* store_open — a store from a --db value: which backend a URL names, opening it or
 * creating its tables, and the URL as it may be printed (passwords hidden). The one
 * place that knows every backend; the backends know nothing of it. */
#ifndef OUTBOXD_STORE_OPEN_H
#define OUTBOXD_STORE_OPEN_H

#include <stddef.h>
#include <uv.h>

#include "store.h"

/* Opens the store named by `url` ("sqlite:PATH", a bare path, "postgres://...",
 * "ndjson:PATH", "ndjson:-"). On error returns a negative code and writes a one-line
 * message into errbuf. */
int store_open(uv_loop_t *loop, const char *url, const store_opts_t *opts, store_t **out,
               char *errbuf, size_t errlen);

/* Copies the database URL `url` into out (len bytes, NUL-terminated, cut when
 * longer) with every password replaced by "***": the one in a URI's user info
 * (postgres://app:***@db/shop) and any password=VALUE, as a conninfo keyword or a
 * query parameter (quoted values included). Everything that prints a database URL
 * prints this. Returns out. */
const char *store_url_redact(const char *url, char *out, size_t len);

/* Creates the outbox table(s) if missing (`outboxd init`). */
int store_init_schema(const char *url, char *errbuf, size_t errlen);

#endif
