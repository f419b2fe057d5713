/* redis — outbox.redis: Redis for handlers on hiredis' async API, driven by the
 * libuv loop (one uv_poll_t per connection): no thread, no blocking call (host
 * names are resolved with uv_getaddrinfo first). One connection per URL for the
 * process, calls pipelined on it; a lost connection is reopened by the next call,
 * no sooner than a backoff allows. Invariant: every command handed to hiredis gets
 * its reply callback exactly once (the reply, or NULL when the connection ends),
 * and that callback frees the call; Lua never runs inside a hiredis callback. */
#include "redis.h"

#include <arpa/inet.h>
#include <errno.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "backoff.h"
#include "broker.h"
#include "log.h"
#include "store.h"
#include "store_open.h"

#define REDIS_MT "outbox.redis"
#define REDIS_CONNECT_TIMEOUT_MS 5000
#define REDIS_BACKOFF_BASE_MS 100
#define REDIS_BACKOFF_CAP_MS 2000
#define REDIS_STACK_ARGS 16

typedef struct rcall {
  broker_call_t b;
} rcall_t;

/* A command formatted while the host name resolves, sent once connected. */
typedef struct queued {
  char *cmd;
  int len;
  rcall_t *call;
  struct queued *next;
} queued_t;

typedef struct rclient {
  uv_loop_t *loop;
  broker_url_t u;
  char addr[280];        /* "host:port", for logs */
  char where[300];       /* "redis host:port", for messages */
  redisAsyncContext *ac; /* NULL while disconnected */
  int resolving;         /* uv_getaddrinfo pending */
  uv_getaddrinfo_t gai;
  uv_timer_t timer; /* connect timeout */
  int timer_closed;
  queued_t *qhead, *qtail;
  int failures;      /* failed connects in a row, for the backoff */
  uint64_t retry_at; /* loop time before which no connect is tried */
  backoff_t bo;
  char err[1024]; /* why the last connection failed or ended */
  int closing;
} rclient_t;

/* ------------------------------------------------------------------ the loop adapter */

/* hiredis' event-library hooks on a uv_poll_t. (hiredis 0.14's own libuv adapter
 * ignores a poll error, which libuv reports for a refused connect, so the failure
 * would only show at the connect timeout; here an error lets hiredis look.) */
typedef struct rpoll {
  uv_poll_t h;
  redisAsyncContext *ac; /* NULL once hiredis cleaned up */
  int events;
} rpoll_t;

static void on_poll(uv_poll_t *h, int status, int events) {
  rpoll_t *p = h->data;
  if (status < 0) { /* libuv stopped the handle: hiredis finds the error and ends the context */
    p->events = 0;
    if (!(p->ac->c.flags & REDIS_CONNECTED))
      redisAsyncHandleWrite(p->ac); /* reads the connect's SO_ERROR */
    else
      redisAsyncHandleRead(p->ac);
    return;
  }
  if (events & UV_READABLE) redisAsyncHandleRead(p->ac);
  if (p->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
}

static void poll_update(rpoll_t *p, int ev, int on) {
  p->events = on ? p->events | ev : p->events & ~ev;
  if (p->events)
    uv_poll_start(&p->h, p->events, on_poll);
  else
    uv_poll_stop(&p->h);
}

static void ev_add_read(void *d) { poll_update(d, UV_READABLE, 1); }
static void ev_del_read(void *d) { poll_update(d, UV_READABLE, 0); }
static void ev_add_write(void *d) { poll_update(d, UV_WRITABLE, 1); }
static void ev_del_write(void *d) { poll_update(d, UV_WRITABLE, 0); }
static void on_poll_closed(uv_handle_t *h) { free(h->data); }

static void ev_cleanup(void *d) {
  rpoll_t *p = d;
  p->ac = NULL;
  uv_close((uv_handle_t *)&p->h, on_poll_closed);
}

/* Attaches ac to the loop. Returns 0 or -1. */
static int poll_attach(redisAsyncContext *ac, uv_loop_t *loop) {
  rpoll_t *p = calloc(1, sizeof *p);
  if (!p) return -1;
  if (uv_poll_init_socket(loop, &p->h, ac->c.fd)) {
    free(p);
    return -1;
  }
  p->h.data = p;
  p->ac = ac;
  ac->ev.data = p;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  return 0;
}

/* ------------------------------------------------------------------ replies */

/* Pushes one reply value; nested nils become outbox.redis.null (cjson.null),
 * nested errors {err = msg}. */
static void push_value(lua_State *co, const redisReply *r, int top) {
  lua_checkstack(co, 4);
  switch (r->type) {
  case REDIS_REPLY_STRING:
  case REDIS_REPLY_STATUS: lua_pushlstring(co, r->str, r->len); return;
  case REDIS_REPLY_INTEGER: lua_pushnumber(co, (lua_Number)r->integer); return;
  case REDIS_REPLY_ARRAY:
    lua_createtable(co, (int)r->elements, 0);
    for (size_t i = 0; i < r->elements; i++) {
      push_value(co, r->element[i], 0);
      lua_rawseti(co, -2, (int)i + 1);
    }
    return;
  case REDIS_REPLY_ERROR:
    lua_createtable(co, 0, 1);
    lua_pushlstring(co, r->str, r->len);
    lua_setfield(co, -2, "err");
    return;
  default:
    if (top)
      lua_pushnil(co);
    else
      lua_pushlightuserdata(co, NULL); /* == cjson.null */
    return;
  }
}

/* host_wake push function: the reply, or nil, msg for an error reply. */
static int push_reply(lua_State *co, void *arg) {
  const redisReply *r = arg;
  if (r->type == REDIS_REPLY_ERROR) {
    lua_pushnil(co);
    lua_pushlstring(co, r->str, r->len);
    return 2;
  }
  push_value(co, r, 1);
  return 1;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv) {
  rcall_t *call = priv;
  rclient_t *c = ac->data;
  if (call->b.task) {
    if (reply) {
      broker_wake(&call->b, push_reply, reply);
    } else {
      char msg[1200];
      if (ac->err)
        snprintf(msg, sizeof msg, "%s: %s", c->where, ac->errstr);
      else
        snprintf(msg, sizeof msg, "%s", c->err[0] ? c->err : "connection closed");
      broker_fail(&call->b, msg);
    }
  }
  free(call);
}

/* ------------------------------------------------------------------ connection */

static void fail_queued(rclient_t *c) {
  while (c->qhead) {
    queued_t *q = c->qhead;
    c->qhead = q->next;
    broker_fail(&q->call->b, c->err);
    free(q->call);
    redisFreeCommand(q->cmd);
    free(q);
  }
  c->qtail = NULL;
}

/* A connect failed or timed out: the next one waits for the backoff. */
static void connect_failed(rclient_t *c) {
  c->failures++;
  c->retry_at = uv_now(c->loop) + (uint64_t)backoff_delay(&c->bo, c->failures);
  if (!c->closing) log_at(LOG_WARN, "redis connection failed", KS("error", c->err));
  fail_queued(c);
}

static void on_connect(const redisAsyncContext *cac, int status) {
  rclient_t *c = cac->data;
  uv_timer_stop(&c->timer);
  if (status == REDIS_OK) {
    c->failures = 0;
    c->err[0] = '\0';
    log_at(LOG_INFO, "redis connected", KS("redis", c->addr));
    return;
  }
  snprintf(c->err, sizeof c->err, "%s: %s", c->where, cac->errstr);
  c->ac = NULL; /* hiredis frees it after this callback */
  connect_failed(c);
}

static void on_disconnect(const redisAsyncContext *cac, int status) {
  rclient_t *c = cac->data;
  if (c->ac == cac) c->ac = NULL;
  if (c->closing) return;
  snprintf(c->err, sizeof c->err, "%s: connection lost%s%s", c->where, cac->err ? ": " : "",
           cac->err ? cac->errstr : "");
  c->failures = 0; /* the next call reconnects at once */
  c->retry_at = 0;
  log_at(LOG_WARN, "redis disconnected", KS("error", c->err));
}

static void on_connect_timeout(uv_timer_t *t) {
  rclient_t *c = t->data;
  redisAsyncContext *ac = c->ac;
  if (!ac) return;
  snprintf(c->err, sizeof c->err, "%s: no connection after %d ms", c->where,
           REDIS_CONNECT_TIMEOUT_MS);
  c->ac = NULL;
  connect_failed(c);
  redisAsyncFree(ac); /* pending calls get c->err */
}

static void on_setup_reply(redisAsyncContext *ac, void *reply, void *priv) {
  const redisReply *r = reply;
  rclient_t *c = ac->data;
  if (r && r->type == REDIS_REPLY_ERROR)
    log_at(LOG_ERROR, "redis rejected the URL's credentials or database", KS("redis", c->addr),
           KS("command", priv), KS("error", r->str));
}

/* AUTH and SELECT from the URL, ahead of every call on a new connection. */
static void send_setup(rclient_t *c) {
  static char auth[] = "AUTH", select[] = "SELECT";
  if (c->u.password[0]) {
    const char *argv[3] = {auth, c->u.user, c->u.password};
    if (c->u.user[0]) {
      redisAsyncCommandArgv(c->ac, on_setup_reply, auth, 3, argv, NULL);
    } else {
      argv[1] = c->u.password;
      redisAsyncCommandArgv(c->ac, on_setup_reply, auth, 2, argv, NULL);
    }
  }
  if (c->u.path[0]) {
    const char *argv[2] = {select, c->u.path};
    redisAsyncCommandArgv(c->ac, on_setup_reply, select, 2, argv, NULL);
  }
}

/* Opens a connection to the address `ip`; queued commands follow. Returns 0, or -1
 * with c->err set (the queued calls have failed). */
static int connect_to(rclient_t *c, const char *ip) {
  redisAsyncContext *ac = redisAsyncConnect(ip, c->u.port);
  if (!ac || ac->err) {
    snprintf(c->err, sizeof c->err, "%s: %s", c->where, ac ? ac->errstr : "out of memory");
    if (ac) redisAsyncFree(ac);
    connect_failed(c);
    return -1;
  }
  ac->data = c;
  if (poll_attach(ac, c->loop)) {
    snprintf(c->err, sizeof c->err, "%s: cannot watch the socket", c->where);
    redisAsyncFree(ac);
    connect_failed(c);
    return -1;
  }
  redisAsyncSetConnectCallback(ac, on_connect);
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  c->ac = ac;
  uv_timer_start(&c->timer, on_connect_timeout, REDIS_CONNECT_TIMEOUT_MS, 0);
  send_setup(c);
  while (c->qhead) {
    queued_t *q = c->qhead;
    c->qhead = q->next;
    if (redisAsyncFormattedCommand(ac, on_reply, q->call, q->cmd, (size_t)q->len) != REDIS_OK) {
      broker_fail(&q->call->b, "redis: connection closing");
      free(q->call);
    }
    redisFreeCommand(q->cmd);
    free(q);
  }
  c->qtail = NULL;
  return 0;
}

static void free_client(rclient_t *c) { free(c); }

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  rclient_t *c = req->data;
  char ip[INET6_ADDRSTRLEN] = "";
  c->resolving = 0;
  if (c->closing) {
    uv_freeaddrinfo(res);
    fail_queued(c);
    if (c->timer_closed) free_client(c);
    return;
  }
  if (status < 0 || !res) {
    snprintf(c->err, sizeof c->err, "%s: could not resolve host %s: %s", c->where, c->u.host,
             uv_strerror(status));
    uv_freeaddrinfo(res);
    connect_failed(c);
    return;
  }
  if (res->ai_family == AF_INET6)
    inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, ip, sizeof ip);
  else
    inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip, sizeof ip);
  uv_freeaddrinfo(res);
  connect_to(c, ip);
}

static int is_address(const char *h) {
  unsigned char a[16];
  return inet_pton(AF_INET, h, a) == 1 || inet_pton(AF_INET6, h, a) == 1;
}

/* Starts a connection: at once to an address, after uv_getaddrinfo for a name.
 * Returns 0, or -1 with c->err set. */
static int start_connect(rclient_t *c) {
  if (is_address(c->u.host)) return connect_to(c, c->u.host);
  struct addrinfo hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  c->gai.data = c;
  int rc = uv_getaddrinfo(c->loop, &c->gai, on_resolved, c->u.host, NULL, &hints);
  if (rc) {
    snprintf(c->err, sizeof c->err, "%s: could not resolve host %s: %s", c->where, c->u.host,
             uv_strerror(rc));
    connect_failed(c);
    return -1;
  }
  c->resolving = 1;
  return 0;
}

static void on_timer_closed(uv_handle_t *h) {
  rclient_t *c = h->data;
  c->timer_closed = 1;
  if (!c->resolving) free_client(c);
}

/* broker_shutdown: drops the connection (its pending calls end with NULL replies). */
static void close_client(void *arg) {
  rclient_t *c = arg;
  c->closing = 1;
  uv_timer_stop(&c->timer);
  if (c->resolving) uv_cancel((uv_req_t *)&c->gai);
  fail_queued(c);
  if (c->ac) {
    redisAsyncContext *ac = c->ac;
    c->ac = NULL;
    redisAsyncFree(ac);
  }
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}

/* ------------------------------------------------------------------ the Lua side */

/* Reads the arguments of call() (from index 2) into argv/lens; raises on bad ones. */
static void read_args(lua_State *L, int argc, const char **argv, size_t *lens) {
  for (int i = 0; i < argc; i++) {
    int t = lua_type(L, i + 2);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      luaL_argerror(L, i + 2, "Redis arguments must be strings or numbers");
    argv[i] = lua_tolstring(L, i + 2, &lens[i]);
  }
}

/* Hands a command to the connection (or to the queue while the host resolves).
 * Returns 0, or -1 with a message in err. */
static int send_call(rclient_t *c, rcall_t *call, int argc, const char **argv, const size_t *lens,
                     char *err, size_t n) {
  if (c->resolving) {
    queued_t *q = calloc(1, sizeof *q);
    if (!q || (q->len = redisFormatCommandArgv(&q->cmd, argc, argv, lens)) < 0) {
      free(q);
      snprintf(err, n, "out of memory");
      return -1;
    }
    q->call = call;
    if (c->qtail)
      c->qtail->next = q;
    else
      c->qhead = q;
    c->qtail = q;
    return 0;
  }
  if (redisAsyncCommandArgv(c->ac, on_reply, call, argc, argv, lens) != REDIS_OK) {
    snprintf(err, n, "%s: connection closing", c->where);
    return -1;
  }
  return 0;
}

/* client:call(cmd, ...) -> reply, or nil, msg */
static int l_call(lua_State *L) {
  rclient_t *c = broker_check_handle(L, 1, REDIS_MT);
  int argc = lua_gettop(L) - 1;
  const char *stack_argv[REDIS_STACK_ARGS];
  size_t stack_lens[REDIS_STACK_ARGS];
  const char **argv = stack_argv;
  size_t *lens = stack_lens;
  char err[1200];
  if (argc < 1) return luaL_argerror(L, 2, "a Redis command name expected");
  if (!host_task(L)) return luaL_error(L, "outbox.redis can only wait inside a handler or hook");
  if (argc > REDIS_STACK_ARGS) { /* a userdata the GC frees, so a raise leaks nothing */
    argv = lua_newuserdata(L, (size_t)argc * (sizeof *argv + sizeof *lens));
    lens = (size_t *)(argv + argc);
  }
  read_args(L, argc, argv, lens);
  if (!c->ac && !c->resolving) {
    if (uv_now(c->loop) < c->retry_at) {
      lua_pushnil(L);
      lua_pushfstring(L, "%s (reconnecting)", c->err);
      return 2;
    }
    if (start_connect(c)) {
      lua_pushnil(L);
      lua_pushstring(L, c->err);
      return 2;
    }
  }
  rcall_t *call = calloc(1, sizeof *call);
  if (!call) return luaL_error(L, "out of memory");
  if (send_call(c, call, argc, argv, lens, err, sizeof err)) {
    free(call);
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  broker_wait(L, &call->b); /* cannot fail: L is a task's coroutine */
  return lua_yield(L, 0);
}

/* connect(url) -> client, or nil, msg. Connects on the first call. */
static int l_connect(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  char err[1200];
  rclient_t *c = broker_find("redis", url);
  if (!c) {
    broker_url_t u;
    if (broker_parse_url(url, "redis", 6379, &u, err, sizeof err)) {
      lua_pushnil(L);
      lua_pushstring(L, err);
      return 2;
    }
    if (u.path[0] && strspn(u.path, "0123456789") != strlen(u.path)) {
      lua_pushnil(L);
      char shown[512];
      lua_pushfstring(L, "redis: the database in the URL must be a number, got '%s': %s", u.path,
                      store_url_redact(url, shown, sizeof shown));
      return 2;
    }
    if (!(c = calloc(1, sizeof *c))) return luaL_error(L, "out of memory");
    c->u = u;
    c->loop = host_loop(L);
    snprintf(c->addr, sizeof c->addr, "%s:%d", u.host, u.port);
    snprintf(c->where, sizeof c->where, "redis %s", c->addr);
    backoff_init(&c->bo, REDIS_BACKOFF_BASE_MS, REDIS_BACKOFF_CAP_MS, (uint64_t)(uintptr_t)c);
    uv_timer_init(c->loop, &c->timer);
    c->timer.data = c;
    uv_unref((uv_handle_t *)&c->timer);
    if (broker_add("redis", url, c, close_client)) {
      close_client(c);
      return luaL_error(L, "out of memory");
    }
  }
  broker_push_handle(L, c, REDIS_MT);
  return 1;
}

void redis_register(lua_State *L) {
  luaL_newmetatable(L, REDIS_MT);
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, l_call);
  lua_setfield(L, -2, "call");
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1); /* metatable */
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "redis_connect");
}
