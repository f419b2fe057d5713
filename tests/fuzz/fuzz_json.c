/* libFuzzer target (`make fuzz`): every input is decoded by outboxd's JSON decoder
 * (src/json.c) and by cjson, as a document, as an NDJSON string payload, and as the
 * escaped body of one (read straight, without unescaping first); any difference in
 * value or error message aborts. */
#include <stdint.h>
#include <stdlib.h>

#include "../unit/json_diff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static lua_State *L;
  if (!L && !(L = json_diff_state())) abort();
  const char *why = json_diff(L, "same", (const char *)data, size);
  if (!why) why = json_diff(L, "same_payload", (const char *)data, size);
  if (!why) why = json_diff(L, "same_raw", (const char *)data, size);
  if (why) {
    fprintf(stderr, "decoders differ: %s\n", why);
    abort();
  }
  lua_gc(L, LUA_GCSTEP, 0);
  return 0;
}
