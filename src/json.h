/* json — JSON text straight into Lua values, on top of the ndjson scanner, in one
 * pass with tables created at their final size and the short strings of the
 * previous document reused where they repeat. Only strict RFC 8259 documents
 * (nested at most 256 deep) take this path; any
 * other text goes to lua-cjson's decode, so what users see (values, the null
 * sentinel, big numbers, error wording) is exactly cjson's. */
#ifndef OUTBOXD_JSON_H
#define OUTBOXD_JSON_H

#include <lua.h>
#include <stddef.h>

/* Returns 0 when s[0..len) is a strict JSON document (one the decoders below read
 * themselves),
 * else -EINVAL; nothing is pushed or allocated. */
int json_check(const char *s, size_t len);

/* Adds json_decoder, json_checker, payload_decoder and unescape to the table on top of the stack:
 *   json_decoder(cjson_decode) -> decode(text), cjson's decode with this fast path
 *     (each decoder made remembers its last document's shape and short strings);
 *   json_checker(cjson_decode) -> valid(text), true when decode(text) succeeds;
 *   payload_decoder(cjson_decode) -> decode(raw), the same for the body of a JSON
 *     string still holding its escapes (an NDJSON string payload), read as it is
 *     when its only escapes are its strings' quotes;
 *   unescape(raw) -> the text of such a body. */
void json_register(lua_State *L);

#endif
