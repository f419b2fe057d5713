/* broker — what the broker clients (redis.c, nats.c) share: URL parsing with clear
 * messages, one client per URL for the whole process (clients live until
 * broker_shutdown, so Lua handles to them never dangle), and the wait of a task
 * on a pending broker call. Invariant: a call belongs to at most one waiting task;
 * once the task is woken or abandoned (timeout, shutdown) call->task is NULL and
 * the result, when it comes, is dropped: a dead coroutine is never resumed. */
#ifndef OUTBOXD_BROKER_H
#define OUTBOXD_BROKER_H

#include <lua.h>
#include <stddef.h>

#include "host.h"

typedef struct broker_url {
  char host[256];
  int port;
  char user[128];
  char password[256];
  char path[256]; /* without the leading '/', "" when none */
} broker_url_t;

/* Parses `url` of the given scheme ("redis", "nats"), filling the port with
 * `default_port` when absent. Returns 0, or -EINVAL with a one-line message in err
 * naming what is wrong ("redis: unsupported URL scheme 'http' ..."). */
int broker_parse_url(const char *url, const char *scheme, int default_port, broker_url_t *out,
                     char *err, size_t n);

/* ---- the registry: one client per (kind, URL) */

/* The client registered for kind and url, or NULL. */
void *broker_find(const char *kind, const char *url);

/* Registers a client; `close` is called once by broker_shutdown (it must release
 * everything the client holds, possibly after the loop has run close callbacks).
 * Returns 0 or -ENOMEM. */
int broker_add(const char *kind, const char *url, void *client, void (*close)(void *client));

/* Closes every registered client, newest first, and forgets them. Pending calls
 * must have been abandoned first (host_close does that); run the loop afterwards
 * so the close callbacks run. */
void broker_shutdown(void);

/* ---- calls */

typedef struct broker_call {
  task_t *task; /* the waiting task; NULL once woken or abandoned */
  /* called when the task is abandoned (task already NULL); may free the call */
  void (*cancel)(struct broker_call *c);
} broker_call_t;

/* Makes the running task wait on c; the caller then returns lua_yield(L, 0).
 * Returns 0, or -EINVAL when L is not a handler's or hook's coroutine. */
int broker_wait(lua_State *L, broker_call_t *c);

/* Hands the result to the waiting task, if any: `push` pushes the values the call
 * returns (now), the task resumes on the next loop pass. Safe inside a client
 * library's callback. */
void broker_wake(broker_call_t *c, int (*push)(lua_State *co, void *arg), void *arg);

/* broker_wake with the values (nil, msg); msg is copied before this returns. */
void broker_fail(broker_call_t *c, const char *msg);

/* A new full userdata holding `client`, with the metatable registered as `mt`. */
void broker_push_handle(lua_State *L, void *client, const char *mt);

/* The client of the handle at idx (raises when it is not one of type `mt`). */
void *broker_check_handle(lua_State *L, int idx, const char *mt);

#endif
