/* http — outbox.http.request: non-blocking HTTP for handlers on libcurl's multi
 * interface, driven by the libuv loop (one uv_poll_t per socket, one uv_timer_t).
 * Invariant: a transfer belongs to exactly one waiting task and is freed once —
 * when it completes (after the task has its result) or by the task's cancel. */
#ifndef OUTBOXD_HTTP_H
#define OUTBOXD_HTTP_H

#include <lua.h>

/* Adds http_request, http_get, http_post and http_date to the table on top of the
 * stack (the `core` table). The multi handle is made on the first request, one per
 * host (its state of this area: host_close releases it with the pooled transfers).
 * http_request{method=, url=, headers=, body=, timeout=, max_body=},
 * http_get(url, opts), http_post(url, body, opts) yield, then return
 * {status=, headers=, body=} or nil, msg; bad arguments raise. The headers table
 * and the body are copied before the call yields: the caller may reuse them.
 * http_date(s) returns the epoch seconds of an HTTP date, or nil. */
void http_register(lua_State *L);

#endif
