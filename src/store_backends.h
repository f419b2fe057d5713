/* store_backends — the openers of the three backends (see store.h for the interface
 * they implement), for store_open.c, which picks one from a --db value. Each backend
 * includes this header for its own opener; none calls another's. */
#ifndef OUTBOXD_STORE_BACKENDS_H
#define OUTBOXD_STORE_BACKENDS_H

#include <stddef.h>
#include <uv.h>

#include "store.h"

/* A numeric macro as a string literal, for SQL built at compile time. */
#define STORE_STR_(x) #x
#define STORE_STR(x) STORE_STR_(x)

/* Each opens its store on `loop` into *out and returns 0, or returns a negative
 * errno with a one-line message in errbuf. ndjson: `path` is a file or "-" (stdin),
 * read once and held in memory; sqlite: an existing database (STORE_NO_DB when the
 * file does not exist); pg: a libpq URL, connected in the background. */
int store_ndjson_open(uv_loop_t *loop, const char *path, const store_opts_t *opts, store_t **out,
                      char *errbuf, size_t errlen);
int store_sqlite_open(uv_loop_t *loop, const char *path, const store_opts_t *opts, store_t **out,
                      char *errbuf, size_t errlen);
int store_pg_open(uv_loop_t *loop, const char *url, const store_opts_t *opts, store_t **out,
                  char *errbuf, size_t errlen);

/* `outboxd init`: create the database (SQLite) and what is missing of the tables.
 * Return 0 or a negative errno with a one-line message in errbuf. */
int store_sqlite_init_schema(const char *path, char *errbuf, size_t errlen);
int store_pg_init_schema(const char *url, char *errbuf, size_t errlen);

#endif
