/* broker — the parts both broker clients share: URL parsing, the per-process
 * registry of clients (one per URL) and the wait of a task on a pending call.
 * Results reach the task through host_wake_later, so no Lua runs inside a client
 * library's callback. */
#include "broker.h"

#include <curl/curl.h>
#include <errno.h>
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store.h"
#include "store_open.h"

/* ------------------------------------------------------------------ URLs */

/* Copies a URL part (or "" when absent) into out; returns -1 when it is too long. */
static int url_part(CURLU *u, CURLUPart part, unsigned flags, char *out, size_t n) {
  char *v = NULL;
  out[0] = '\0';
  if (curl_url_get(u, part, &v, flags) != CURLUE_OK || !v) return 0;
  int rc = strlen(v) < n ? 0 : -1;
  if (!rc) memcpy(out, v, strlen(v) + 1);
  curl_free(v);
  return rc;
}

int broker_parse_url(const char *url, const char *scheme, int default_port, broker_url_t *out,
                     char *err, size_t n) {
  char got[32], port[16], shown[512];
  int rc = -EINVAL;
  store_url_redact(url, shown, sizeof shown); /* what messages quote: no password */
  memset(out, 0, sizeof *out);
  CURLU *u = curl_url();
  if (!u) {
    snprintf(err, n, "%s: out of memory", scheme);
    return -ENOMEM;
  }
  if (!strstr(url, "://") ||
      curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK ||
      url_part(u, CURLUPART_SCHEME, 0, got, sizeof got)) {
    snprintf(err, n, "%s: malformed URL (expected %s://host:port): %.200s", scheme, scheme, shown);
    goto out;
  }
  if (strcmp(got, scheme) != 0) {
    snprintf(err, n, "%s: unsupported URL scheme '%s' (expected %s://host:port): %.200s", scheme,
             got, scheme, shown);
    goto out;
  }
  if (url_part(u, CURLUPART_HOST, 0, out->host, sizeof out->host) || !out->host[0] ||
      url_part(u, CURLUPART_PORT, 0, port, sizeof port) ||
      url_part(u, CURLUPART_USER, CURLU_URLDECODE, out->user, sizeof out->user) ||
      url_part(u, CURLUPART_PASSWORD, CURLU_URLDECODE, out->password, sizeof out->password) ||
      url_part(u, CURLUPART_PATH, 0, out->path, sizeof out->path)) {
    snprintf(err, n, "%s: malformed URL (expected %s://host:port): %.200s", scheme, scheme, shown);
    goto out;
  }
  out->port = port[0] ? atoi(port) : default_port;
  if (out->port <= 0 || out->port > 65535) {
    snprintf(err, n, "%s: bad port in URL: %.200s", scheme, shown);
    goto out;
  }
  if (out->host[0] == '[') { /* an IPv6 literal: the clients want it bare */
    size_t len = strlen(out->host);
    memmove(out->host, out->host + 1, len - 2);
    out->host[len - 2] = '\0';
  }
  if (out->path[0] == '/') memmove(out->path, out->path + 1, strlen(out->path));
  rc = 0;
out:
  curl_url_cleanup(u);
  return rc;
}

/* ------------------------------------------------------------------ registry */

typedef struct entry {
  char *kind, *url;
  void *client;
  void (*close)(void *client);
  struct entry *next;
} entry_t;

static entry_t *clients; /* newest first */

void *broker_find(const char *kind, const char *url) {
  for (entry_t *e = clients; e; e = e->next)
    if (strcmp(e->kind, kind) == 0 && strcmp(e->url, url) == 0) return e->client;
  return NULL;
}

int broker_add(const char *kind, const char *url, void *client, void (*close)(void *client)) {
  entry_t *e = calloc(1, sizeof *e);
  if (!e || !(e->kind = strdup(kind)) || !(e->url = strdup(url))) {
    if (e) free(e->kind);
    free(e);
    return -ENOMEM;
  }
  e->client = client;
  e->close = close;
  e->next = clients;
  clients = e;
  return 0;
}

void broker_shutdown(void) {
  while (clients) {
    entry_t *e = clients;
    clients = e->next;
    e->close(e->client);
    free(e->kind);
    free(e->url);
    free(e);
  }
}

/* ------------------------------------------------------------------ calls */

static void on_abandon(task_t *t, void *data) {
  broker_call_t *c = data;
  (void)t;
  c->task = NULL;
  if (c->cancel) c->cancel(c);
}

int broker_wait(lua_State *L, broker_call_t *c) {
  task_t *t = host_task(L);
  if (!t || host_wait(L, on_abandon, c)) return -EINVAL;
  c->task = t;
  return 0;
}

void broker_wake(broker_call_t *c, int (*push)(lua_State *co, void *arg), void *arg) {
  task_t *t = c->task;
  if (!t) return;
  c->task = NULL;
  host_wake_later(t, push, arg);
}

static int push_error(lua_State *co, void *arg) {
  lua_pushnil(co);
  lua_pushstring(co, arg);
  return 2;
}

void broker_fail(broker_call_t *c, const char *msg) {
  broker_wake(c, push_error, (void *)(uintptr_t)msg);
}

/* ------------------------------------------------------------------ Lua handles */

void broker_push_handle(lua_State *L, void *client, const char *mt) {
  void **ud = lua_newuserdata(L, sizeof *ud);
  *ud = client;
  luaL_getmetatable(L, mt);
  lua_setmetatable(L, -2);
}

void *broker_check_handle(lua_State *L, int idx, const char *mt) {
  void **ud = luaL_checkudata(L, idx, mt);
  return *ud;
}
