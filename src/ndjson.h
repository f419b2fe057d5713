/* ndjson — one outbox event per JSON line:
 *   {"topic": "...", "payload": ..., "key": "...", "headers": {...}, "id": N}
 * A single pass validates the whole line (JSON grammar and UTF-8) and records where
 * the top-level fields are; no tree is built. String fields are unescaped in place. */
#ifndef OUTBOXD_NDJSON_H
#define OUTBOXD_NDJSON_H

#include <stddef.h>
#include <stdint.h>

typedef struct ndjson_rec {
  char *topic; /* unescaped, NUL-terminated in the line buffer */
  size_t topic_len;
  char *key; /* NULL when absent or null */
  size_t key_len;
  char *payload; /* a string payload unescaped; any other value as its JSON text */
  size_t payload_len;
  char *headers; /* JSON object text, or NULL */
  size_t headers_len;
  int64_t id;
  int has_id;
} ndjson_rec_t;

/* Parses one line (without its newline) held in `line[0..len]`; `line[len]` must be
 * writable (it receives a NUL). Rewrites the buffer. Returns 0, or -EINVAL and
 * points *err at a static message naming what is wrong. A blank line returns
 * -ENODATA. */
int ndjson_parse(char *line, size_t len, ndjson_rec_t *rec, const char **err);

/* Validates that `s[0..len]` is one JSON value (with optional surrounding blanks).
 * Returns 0 or -EINVAL with *err set. */
int ndjson_validate(const char *s, size_t len, const char **err);

#endif
