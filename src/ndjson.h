/* ndjson — one outbox event per JSON line:
 *   {"topic": "...", "payload": ..., "key": "...", "headers": {...}, "id": N}
 * A single pass validates the whole line (JSON grammar and UTF-8) and records where
 * the top-level fields are; no tree is built. Topic and key are unescaped in place; a
 * string payload is left as it is in the line until someone reads it. */
#ifndef OUTBOXD_NDJSON_H
#define OUTBOXD_NDJSON_H

#include <stddef.h>
#include <stdint.h>

typedef struct ndjson_rec {
  char *topic; /* unescaped, NUL-terminated in the line buffer */
  size_t topic_len;
  char *key; /* NULL when absent or null */
  size_t key_len;
  char *payload; /* a string payload's bytes between its quotes; else its JSON text */
  size_t payload_len;
  int payload_escaped; /* 1: a string payload holding escapes (see ndjson_unescape) */
  char *headers;       /* JSON object text, or NULL */
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

/* Past the closing quote of the JSON string whose opening quote is at p, or NULL
 * when it is not a valid one (bad escape, control character, invalid UTF-8, no
 * end before `end`). *escaped gets 1 when its body holds escapes. */
const char *ndjson_skip_string(const char *p, const char *end, int *escaped);

/* The first byte at or after p that does not stand for itself in a JSON string
 * (a quote, a backslash, a control byte or a byte above 0x7f), or end. */
const char *ndjson_plain_span(const char *p, const char *end);

/* Unescapes the body of a validated JSON string in place; returns its new length.
 * Does not NUL-terminate. */
size_t ndjson_unescape(char *s, size_t len);

/* The same from src to dst, which has room for len + 16 bytes (the copy moves 16
 * bytes at a time); dst == src is in place. */
size_t ndjson_unescape_to(char *dst, const char *src, size_t len);

#endif
