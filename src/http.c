/* http — outbox.http.request on libcurl's multi interface, driven by the libuv loop:
 * curl tells us which sockets to watch (one uv_poll_t each) and when to call it back
 * (one uv_timer_t); no thread per request, no blocking call. One multi handle per
 * process keeps the connection cache, so keep-alive connections are reused.
 * Lua is resumed only after curl_multi_socket_action has returned, never from
 * inside a curl callback. */
#include <curl/curl.h>
#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "host.h"
#include "http.h"

#define HTTP_DEFAULT_TIMEOUT_S 30.0
#define HTTP_DEFAULT_MAX_BODY (64u << 20)
#define HTTP_POOL_MAX 256

typedef struct buf {
  char *data;
  size_t len, cap;
} buf_t;

/* A socket curl asked us to watch. Sockets curl opened through on_open_socket are
 * "owned": their poller lives as long as the socket (found by fd in H->byfd), so a
 * keep-alive connection going idle and coming back costs no epoll_ctl. Others (a
 * resolver's socketpair) get a poller from CURL_POLL_IN/OUT until CURL_POLL_REMOVE. */
typedef struct http http_t;

typedef struct http_sock {
  uv_poll_t poll;
  http_t *http;
  curl_socket_t fd;
  int events;                    /* what the poller watches now: UV_READABLE | UV_WRITABLE, or 0 */
  int wanted;                    /* curl wants events; 0 while parked in the connection cache */
  int owned;                     /* closed by on_close_socket, not by CURL_POLL_REMOVE */
  int started;                   /* uv_poll_init done */
  struct http_sock *prev, *next; /* live pollers, for http_shutdown */
} http_sock_t;

typedef struct xfer {
  CURL *easy;
  http_t *http;
  task_t *task;              /* the waiting task; NULL once woken or cancelled */
  buf_t hdr;                 /* request header lines, each ending in NUL */
  struct curl_slist *hnodes; /* the list curl reads, pointing into hdr */
  size_t hnodes_cap;
  CURLU *uh;  /* the URL, parsed once for every request to it (CURLOPT_CURLU) */
  char *url;  /* its text */
  buf_t req;  /* request body */
  buf_t body; /* response body */
  buf_t head; /* header lines of the last response */
  size_t max_body;
  int too_big, oom;
  long timeout_ms;
  CURLcode result;
  char errbuf[CURL_ERROR_SIZE];
  struct xfer *next; /* free list */
} xfer_t;

/* A host's HTTP side (its state of this area, closed by host_close). */
struct http {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  uv_idle_t kick; /* curl asked for a timeout of 0: act once on the next loop pass */
  http_sock_t *socks;
  http_sock_t **byfd; /* owned sockets by fd */
  size_t nbyfd;
  xfer_t *pool;
  int pooled;
  buf_t scratch; /* header lines being read; swapped into the transfer */
  int scratch_lines;
  int curl_ready; /* curl_global_init done */
  /* The proxy settings of the environment, read once (curl would read five
   * variables for every request): "" when there is none. */
  const char *proxy_http, *proxy_https, *no_proxy;
  int handles; /* of timer and kick, not yet closed */
};

/* ------------------------------------------------------------------ buffers */

/* Makes room for n more bytes and a NUL. Returns 0 or -ENOMEM. */
static int buf_room(buf_t *b, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 1024;
    while (cap < b->len + n + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return -ENOMEM;
    b->data = d;
    b->cap = cap;
  }
  return 0;
}

static int buf_add(buf_t *b, const char *p, size_t n) {
  if (buf_room(b, n)) return -ENOMEM;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

/* Keeps small buffers for the next transfer, frees big ones. */
static void buf_reset(buf_t *b) {
  b->len = 0;
  if (b->cap > 65536) {
    free(b->data);
    b->data = NULL;
    b->cap = 0;
  }
}

/* ------------------------------------------------------------------ transfers */

static size_t on_body(char *p, size_t size, size_t n, void *arg);
static size_t on_header(char *p, size_t size, size_t n, void *arg);
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a);
static int on_close_socket(void *clientp, curl_socket_t fd);

/* The options every request has: set once per easy handle, which is reused without
 * curl_easy_reset (prepare() sets what changes). */
static void set_fixed_options(xfer_t *x) {
  CURL *e = x->easy;
  curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)x);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
  curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
  curl_easy_setopt(e, CURLOPT_NOPROXY, x->http->no_proxy);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
  curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x->http);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
  curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, x->http);
}

static xfer_t *xfer_get(http_t *H) {
  xfer_t *x = H->pool;
  if (x) {
    H->pool = x->next;
    H->pooled--;
    x->next = NULL;
    return x;
  }
  x = calloc(1, sizeof *x);
  if (!x) return NULL;
  x->easy = curl_easy_init();
  if (!x->easy) {
    free(x);
    return NULL;
  }
  x->http = H;
  set_fixed_options(x);
  return x;
}

static void xfer_free(xfer_t *x) {
  curl_easy_cleanup(x->easy);
  curl_url_cleanup(x->uh);
  free(x->url);
  free(x->hdr.data);
  free(x->hnodes);
  free(x->req.data);
  free(x->body.data);
  free(x->head.data);
  free(x);
}

/* Releases what one request held and pools the transfer; its buffers are kept
 * (small ones) for the next request. */
static void xfer_put(xfer_t *x) {
  http_t *H = x->http;
  x->task = NULL;
  buf_reset(&x->hdr);
  buf_reset(&x->req);
  buf_reset(&x->body);
  buf_reset(&x->head);
  x->too_big = x->oom = 0;
  x->errbuf[0] = '\0';
  if (H->pooled >= HTTP_POOL_MAX) {
    xfer_free(x);
    return;
  }
  x->next = H->pool;
  H->pool = x;
  H->pooled++;
}

static size_t on_body(char *p, size_t size, size_t n, void *arg) {
  xfer_t *x = arg;
  size_t len = size * n;
  if (x->body.len + len > x->max_body) {
    x->too_big = 1;
    return 0; /* aborts the transfer */
  }
  if (buf_add(&x->body, p, len)) {
    x->oom = 1;
    return 0;
  }
  return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg) {
  xfer_t *x = arg;
  size_t len = size * n;
  if (len >= 5 && memcmp(p, "HTTP/", 5) == 0) x->head.len = 0; /* a new response */
  if (buf_add(&x->head, p, len)) {
    x->oom = 1;
    return 0;
  }
  return len;
}

/* ------------------------------------------------------------------ results */

static void push_lower(lua_State *co, const char *p, size_t n) {
  char name[256];
  if (n >= sizeof name) n = sizeof name - 1;
  for (size_t i = 0; i < n; i++)
    name[i] = (p[i] >= 'A' && p[i] <= 'Z') ? (char)(p[i] - 'A' + 'a') : p[i];
  lua_pushlstring(co, name, n);
}

/* Pushes the response headers as a table of lower-case names; repeated headers are
 * joined with ", ". */
static void push_headers(lua_State *co, const buf_t *head) {
  const char *p = head->data, *end = head->data + head->len;
  int lines = 0;
  for (const char *q = p; q && q < end && (q = memchr(q, '\n', (size_t)(end - q))); q++) lines++;
  lua_createtable(co, 0, lines > 0 ? lines - 1 : 0); /* the table at its size: no rehash */
  while (p && p < end) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    const char *next = eol ? eol + 1 : end;
    const char *colon = memchr(p, ':', (size_t)((eol ? eol : end) - p));
    if (colon && colon > p && strncmp(p, "HTTP/", 5) != 0) {
      const char *v = colon + 1, *ve = eol ? eol : end;
      while (v < ve && (*v == ' ' || *v == '\t')) v++;
      while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t')) ve--;
      push_lower(co, p, (size_t)(colon - p));
      lua_pushvalue(co, -1);
      lua_rawget(co, -3); /* previous value of this header */
      if (lua_isstring(co, -1)) {
        lua_pushliteral(co, ", ");
        lua_pushlstring(co, v, (size_t)(ve - v));
        lua_concat(co, 3);
      } else {
        lua_pop(co, 1); /* nil */
        lua_pushlstring(co, v, (size_t)(ve - v));
      }
      lua_rawset(co, -3);
    }
    p = next;
  }
}

/* The host and port of the transfer's URL, for messages. */
static void url_host_port(xfer_t *x, char *host, size_t hn, char *port, size_t pn) {
  char *h = NULL, *p = NULL;
  if (x->uh) {
    curl_url_get(x->uh, CURLUPART_HOST, &h, 0);
    curl_url_get(x->uh, CURLUPART_PORT, &p, CURLU_DEFAULT_PORT);
  }
  snprintf(host, hn, "%s", h ? h : "?");
  snprintf(port, pn, "%s", p ? p : "?");
  curl_free(h);
  curl_free(p);
}

/* A short, clear message for a failed transfer. */
static void describe(xfer_t *x, char *out, size_t n) {
  long oserr = 0;
  char host[256], port[16];
  url_host_port(x, host, sizeof host, port, sizeof port);
  switch (x->result) {
  case CURLE_COULDNT_RESOLVE_HOST: snprintf(out, n, "could not resolve host %s", host); return;
  case CURLE_COULDNT_CONNECT:
    curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &oserr);
    if (oserr == ECONNREFUSED)
      snprintf(out, n, "connection refused by %s:%s", host, port);
    else
      snprintf(out, n, "could not connect to %s:%s: %s", host, port,
               oserr ? strerror((int)oserr) : (x->errbuf[0] ? x->errbuf : "failed"));
    return;
  case CURLE_OPERATION_TIMEDOUT: snprintf(out, n, "timeout after %ld ms", x->timeout_ms); return;
  case CURLE_GOT_NOTHING: snprintf(out, n, "empty reply from %s:%s", host, port); return;
  case CURLE_WRITE_ERROR:
    if (x->too_big) {
      snprintf(out, n, "response body larger than %zu bytes", x->max_body);
      return;
    }
    if (x->oom) {
      snprintf(out, n, "out of memory reading the response");
      return;
    }
    break;
  default: break;
  }
  snprintf(out, n, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(x->result));
}

/* host_wake push function: res table, or nil, msg. */
static int push_result(lua_State *co, void *arg) {
  xfer_t *x = arg;
  lua_checkstack(co, 8);
  if (x->result != CURLE_OK) {
    char msg[CURL_ERROR_SIZE + 300];
    describe(x, msg, sizeof msg);
    lua_pushnil(co);
    lua_pushstring(co, msg);
    return 2;
  }
  long status = 0;
  curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
  lua_createtable(co, 0, 3);
  lua_pushinteger(co, (lua_Integer)status);
  lua_setfield(co, -2, "status");
  push_headers(co, &x->head);
  lua_setfield(co, -2, "headers");
  lua_pushlstring(co, x->body.data ? x->body.data : "", x->body.len);
  lua_setfield(co, -2, "body");
  return 1;
}

/* ------------------------------------------------------------------ the loop side */

static void check_done(http_t *H) {
  CURLMsg *m;
  int left;
  while ((m = curl_multi_info_read(H->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    xfer_t *x = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&x);
    x->result = m->data.result;
    curl_multi_remove_handle(H->multi, x->easy); /* m is invalid from here */
    task_t *t = x->task;
    x->task = NULL;
    if (t) host_wake(t, push_result, x); /* may start new transfers */
    xfer_put(x);
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  http_sock_t *s = p->data;
  http_t *H = s->http;
  if (!s->wanted) {
    /* A parked keep-alive connection became readable (closed by the peer) or is
     * writable: stop watching until curl reuses or closes it; curl checks that the
     * connection is alive before reusing it. */
    uv_poll_stop(&s->poll);
    s->events = 0;
    return;
  }
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(H->multi, s->fd, flags, &running); /* may close s */
  check_done(H);
}

static void on_timer(uv_timer_t *t) {
  http_t *H = t->data;
  int running;
  curl_multi_socket_action(H->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  check_done(H);
}

/* Runs curl's due work once per loop pass however many times it asked for a
 * timeout of 0 (every curl_multi_add_handle does) since the last pass. */
static void on_kick(uv_idle_t *i) {
  http_t *H = i->data;
  uv_idle_stop(i);
  on_timer(&H->timer);
}

static void on_sock_closed(uv_handle_t *h) { free(h->data); }

static void sock_link(http_sock_t *s) {
  http_t *H = s->http;
  s->prev = NULL;
  s->next = H->socks;
  if (H->socks) H->socks->prev = s;
  H->socks = s;
}

/* Stops watching s and frees it (after the close callback when it has a poller). */
static void sock_close(http_sock_t *s) {
  http_t *H = s->http;
  if (s->owned && (size_t)s->fd < H->nbyfd && H->byfd[s->fd] == s) H->byfd[s->fd] = NULL;
  if (!s->started) {
    free(s);
    return;
  }
  if (s->prev)
    s->prev->next = s->next;
  else
    H->socks = s->next;
  if (s->next) s->next->prev = s->prev;
  uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

/* Watches `ev` on s; uv_poll_start costs an epoll_ctl DEL and ADD, so only when the
 * events change. Returns 0 or a negative code. */
static int sock_watch(http_sock_t *s, int ev) {
  if (!s->started) {
    if (uv_poll_init_socket(s->http->loop, &s->poll, s->fd)) return -EINVAL;
    s->poll.data = s;
    s->started = 1;
    sock_link(s);
  }
  if (s->wanted)
    uv_ref((uv_handle_t *)&s->poll);
  else
    uv_unref((uv_handle_t *)&s->poll); /* a parked connection keeps no loop alive */
  if (ev == s->events) return 0;
  s->events = ev;
  return ev ? uv_poll_start(&s->poll, ev, on_poll) : uv_poll_stop(&s->poll);
}

static http_sock_t *sock_owned(http_t *H, curl_socket_t fd) {
  return fd >= 0 && (size_t)fd < H->nbyfd ? H->byfd[fd] : NULL;
}

/* CURLMOPT_SOCKETFUNCTION: start, change or stop watching a socket. */
static int on_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp) {
  http_t *H = userp;
  http_sock_t *s = socketp ? socketp : sock_owned(H, fd);
  if (what == CURL_POLL_REMOVE) {
    if (!s) return 0;
    if (!s->owned) {
      curl_multi_assign(H->multi, fd, NULL);
      sock_close(s);
      return 0;
    }
    /* Parked: keep watching readability (cheap) to notice a close by the peer. */
    s->wanted = 0;
    return sock_watch(s, s->events & UV_READABLE) ? -1 : 0;
  }
  if (!s) {
    if (!(s = calloc(1, sizeof *s))) return -1;
    s->http = H;
    s->fd = fd;
    curl_multi_assign(H->multi, fd, s);
  }
  s->wanted = 1;
  int ev = ((what & CURL_POLL_IN) ? UV_READABLE : 0) | ((what & CURL_POLL_OUT) ? UV_WRITABLE : 0);
  return sock_watch(s, ev) ? -1 : 0;
}

/* Grows H->byfd to hold fd. Returns 0 or -ENOMEM. */
static int byfd_fit(http_t *H, curl_socket_t fd) {
  if ((size_t)fd < H->nbyfd) return 0;
  size_t n = H->nbyfd ? H->nbyfd : 64;
  while (n <= (size_t)fd) n *= 2;
  http_sock_t **b = realloc(H->byfd, n * sizeof *b);
  if (!b) return -ENOMEM;
  memset(b + H->nbyfd, 0, (n - H->nbyfd) * sizeof *b);
  H->byfd = b;
  H->nbyfd = n;
  return 0;
}

/* CURLOPT_OPENSOCKETFUNCTION: a connection's socket, which on_close_socket closes. */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a) {
  http_t *H = clientp;
  curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
  if (fd == CURL_SOCKET_BAD) return fd;
  http_sock_t *s = byfd_fit(H, fd) ? NULL : calloc(1, sizeof *s);
  if (!s) {
    close(fd);
    return CURL_SOCKET_BAD;
  }
  if (H->byfd[fd]) /* closed behind our back: forget it */
    sock_close(H->byfd[fd]);
  s->http = H;
  s->fd = fd;
  s->owned = 1;
  H->byfd[fd] = s;
  return fd;
}

/* CURLOPT_CLOSESOCKETFUNCTION: the poller goes before the socket does. */
static int on_close_socket(void *clientp, curl_socket_t fd) {
  http_sock_t *s = sock_owned(clientp, fd);
  if (s) sock_close(s);
  return close(fd);
}

/* CURLMOPT_TIMERFUNCTION: curl wants to be called back in timeout_ms (-1: never). */
static int on_timer_set(CURLM *m, long timeout_ms, void *userp) {
  http_t *H = userp;
  if (timeout_ms < 0) {
    uv_timer_stop(&H->timer);
  } else if (timeout_ms == 0) {
    uv_timer_stop(&H->timer);
    uv_idle_start(&H->kick, on_kick);
  } else {
    uv_timer_start(&H->timer, on_timer, (uint64_t)timeout_ms, 0);
  }
  return 0;
}

/* The first of the environment variables that is set and not empty (as curl
 * reads them), or "". */
static const char *env_first(const char *const *names) {
  for (; *names; names++) {
    const char *v = getenv(*names);
    if (v && *v) return v;
  }
  return "";
}

/* The proxies curl would find in the environment, as it looks for them: for http
 * only the lower-case http_proxy, for https either case, then all_proxy. Given to
 * curl as CURLOPT_PROXY and CURLOPT_NOPROXY ("" is none), so it does not look. */
static void read_proxy_env(http_t *H) {
  static const char *const http[] = {"http_proxy", "all_proxy", "ALL_PROXY", NULL};
  static const char *const https[] = {"https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", NULL};
  static const char *const none[] = {"no_proxy", "NO_PROXY", NULL};
  H->proxy_http = env_first(http);
  H->proxy_https = env_first(https);
  H->no_proxy = env_first(none);
}

/* Creates the multi handle on first use. Returns 0 or a negative code. */
static int multi_open(http_t *H, uv_loop_t *loop) {
  if (H->multi) return H->loop == loop ? 0 : -EINVAL;
  if (!H->curl_ready) {
    if (curl_global_init(CURL_GLOBAL_DEFAULT)) return -ENOMEM;
    H->curl_ready = 1;
  }
  H->multi = curl_multi_init();
  if (!H->multi) return -ENOMEM;
  read_proxy_env(H);
  H->loop = loop;
  uv_timer_init(loop, &H->timer);
  uv_idle_init(loop, &H->kick);
  H->timer.data = H->kick.data = H;
  H->handles = 2;
  curl_multi_setopt(H->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(H->multi, CURLMOPT_SOCKETDATA, H);
  curl_multi_setopt(H->multi, CURLMOPT_TIMERFUNCTION, on_timer_set);
  curl_multi_setopt(H->multi, CURLMOPT_TIMERDATA, H);
  return 0;
}

/* ------------------------------------------------------------------ the Lua side */

typedef struct req {
  const char *method, *url, *body;
  size_t body_len;
  double timeout_s;
  size_t max_body;
} req_t;

/* The bytes of a method or header name: letters, '-' and '_'. */
static const unsigned char token_byte[256] = {
    ['A' ... 'Z'] = 1,
    ['a' ... 'z'] = 1,
    ['-'] = 1,
    ['_'] = 1,
};

static int valid_token(const char *s) {
  const unsigned char *p = (const unsigned char *)s;
  if (!*p) return 0;
  while (token_byte[*p]) p++;
  return *p == '\0';
}

/* Stack slots of a request's fields while it is read: request() fetches them from
 * its table, get() and post() from their arguments (no table is built). */
enum { F_HEADERS = 2, F_URL, F_METHOD, F_BODY, F_TIMEOUT, F_MAX_BODY };

/* Checks the fields in slots F_HEADERS..F_MAX_BODY (raises on bad arguments,
 * naming argument `arg`) and fills r; the slots stay on the stack. */
static void read_req(lua_State *L, req_t *r, int arg) {
  if (!lua_isnil(L, F_HEADERS) && !lua_istable(L, F_HEADERS))
    luaL_argerror(L, arg, "headers must be a table");
  if (lua_type(L, F_URL) != LUA_TSTRING) luaL_argerror(L, 1, "url must be a string");
  r->url = lua_tostring(L, F_URL);
  if (!lua_isnil(L, F_METHOD) && lua_type(L, F_METHOD) != LUA_TSTRING)
    luaL_argerror(L, arg, "method must be a string");
  r->method = lua_isnil(L, F_METHOD) ? "GET" : lua_tostring(L, F_METHOD);
  if (!valid_token(r->method)) luaL_argerror(L, arg, "method must be a token like GET or POST");
  if (!lua_isnil(L, F_BODY) && lua_type(L, F_BODY) != LUA_TSTRING)
    luaL_argerror(L, arg == 1 ? 1 : 2, "body must be a string");
  r->body = lua_isnil(L, F_BODY) ? NULL : lua_tolstring(L, F_BODY, &r->body_len);
  if (!lua_isnil(L, F_TIMEOUT) && lua_type(L, F_TIMEOUT) != LUA_TNUMBER)
    luaL_argerror(L, arg, "timeout must be a number of seconds");
  r->timeout_s = lua_isnil(L, F_TIMEOUT) ? HTTP_DEFAULT_TIMEOUT_S : lua_tonumber(L, F_TIMEOUT);
  if (!(r->timeout_s > 0) || !isfinite(r->timeout_s))
    luaL_argerror(L, arg, "timeout must be > 0 seconds");
  if (!lua_isnil(L, F_MAX_BODY) && lua_type(L, F_MAX_BODY) != LUA_TNUMBER)
    luaL_argerror(L, arg, "max_body must be a number of bytes");
  double max = lua_isnil(L, F_MAX_BODY) ? HTTP_DEFAULT_MAX_BODY : lua_tonumber(L, F_MAX_BODY);
  if (!(max >= 0) || max > 1e15) luaL_argerror(L, arg, "max_body must be >= 0 bytes");
  r->max_body = (size_t)max;
}

static int header_ok(const char *s) { return s[strcspn(s, "\r\n")] == '\0'; }

/* Appends a header line for curl and its NUL to H->scratch: "name: value", or
 * "name;" (curl sends that as an empty value) when vn is 0, or just `k` when v is
 * NULL ("Name:" tells curl not to send its own). Returns 0 or -ENOMEM. */
static int scratch_line(http_t *H, const char *k, size_t kn, const char *v, size_t vn) {
  buf_t *b = &H->scratch;
  if (buf_room(b, kn + 2 + vn + 1)) return -ENOMEM;
  char *p = b->data + b->len;
  memcpy(p, k, kn);
  p += kn;
  if (v && vn) {
    memcpy(p, ": ", 2);
    memcpy(p + 2, v, vn);
    p += 2 + vn;
  } else if (v) {
    *p++ = ';';
  }
  *p = '\0'; /* the NUL ends the line */
  b->len = (size_t)(p + 1 - b->data);
  H->scratch_lines++;
  return 0;
}

/* Reads the headers table (slot F_HEADERS) into H->scratch, one NUL-terminated line each;
 * raises on bad entries (nothing is held but the scratch buffer, which is reused).
 * Returns 0 or -ENOMEM. Without a Content-Type of the caller's, none is sent (curl
 * would send a form type with a POST body); without a User-Agent, "outboxd" is
 * (a line of the list: curl's own User-Agent would cost a formatted copy per request). */
static int read_headers(http_t *H, lua_State *L, int arg) {
  int has_type = 0, has_agent = 0, rc = 0;
  H->scratch.len = 0;
  H->scratch_lines = 0;
  rc = scratch_line(H, "Expect:", 7, NULL, 0);   /* no 100-continue */
  if (lua_istable(L, F_HEADERS)) lua_pushnil(L); /* first key */
  while (lua_istable(L, F_HEADERS) && lua_next(L, F_HEADERS)) {
    if (lua_type(L, -2) != LUA_TSTRING || !lua_isstring(L, -1))
      luaL_argerror(L, arg, "headers must map names to strings");
    size_t kn, vn;
    const char *k = lua_tolstring(L, -2, &kn), *v = lua_tolstring(L, -1, &vn);
    if (!valid_token(k) || !header_ok(v))
      luaL_argerror(L, arg, "header names must be tokens, values without CR or LF");
    has_type |= kn == 12 && strcasecmp(k, "Content-Type") == 0;
    has_agent |= kn == 10 && strcasecmp(k, "User-Agent") == 0;
    if (!rc) rc = scratch_line(H, k, kn, v, vn);
    lua_pop(L, 1); /* value; keep key */
  }
  if (!has_type && !rc) rc = scratch_line(H, "Content-Type:", 13, NULL, 0);
  if (!has_agent && !rc) rc = scratch_line(H, "User-Agent", 10, "outboxd", 7);
  return rc;
}

/* Moves the lines read by read_headers into x and points curl's list at them. The
 * list nodes live in x, so a request allocates nothing once x has served one of
 * its size. Returns 0 or -ENOMEM. */
static int take_headers(xfer_t *x) {
  http_t *H = x->http;
  buf_t t = x->hdr;
  x->hdr = H->scratch;
  H->scratch = t;
  H->scratch.len = 0;
  size_t n = (size_t)H->scratch_lines;
  if (n > x->hnodes_cap) {
    struct curl_slist *nodes = realloc(x->hnodes, n * sizeof *nodes);
    if (!nodes) return -ENOMEM;
    x->hnodes = nodes;
    x->hnodes_cap = n;
  }
  char *p = x->hdr.data;
  for (size_t i = 0; i < n; i++) {
    x->hnodes[i].data = p;
    x->hnodes[i].next = i + 1 < n ? &x->hnodes[i + 1] : NULL;
    p += strlen(p) + 1;
  }
  return 0;
}

/* Points x at the URL: parsed and checked when it is not the one x had (handlers
 * post to one URL, so a pooled transfer parses it once, and curl, reading the
 * parsed form through CURLOPT_CURLU, does not parse it again for each request).
 * Returns 0, or -EINVAL / -ENOMEM with a message. */
static int xfer_url(xfer_t *x, const char *url, char *err, size_t n) {
  if (x->url && strcmp(x->url, url) == 0) return 0;
  CURLU *u = curl_url();
  char *copy = strdup(url), *host = NULL, *scheme = NULL;
  int rc = -EINVAL;
  if (!u || !copy) {
    snprintf(err, n, "out of memory");
    rc = -ENOMEM;
    goto out;
  }
  if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
      curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
    snprintf(err, n, "malformed URL: %.200s", url);
    goto out;
  }
  if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
    snprintf(err, n, "unsupported URL scheme '%.20s' (http or https): %.200s", scheme, url);
    goto out;
  }
  curl_easy_setopt(x->easy, CURLOPT_CURLU, u);
  curl_easy_setopt(x->easy, CURLOPT_PROXY, scheme[4] ? x->http->proxy_https : x->http->proxy_http);
  curl_url_cleanup(x->uh);
  free(x->url);
  x->uh = u;
  x->url = copy;
  u = NULL;
  copy = NULL;
  rc = 0;
out:
  curl_free(scheme);
  curl_free(host);
  curl_url_cleanup(u);
  free(copy);
  return rc;
}

/* The method and body; the handle is reused, so what the last request set is
 * undone first (POSTFIELDS NULL, then HTTPGET: plain GET, no body, no upload). */
static void set_method(xfer_t *x, const req_t *r) {
  CURL *e = x->easy;
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, (char *)NULL);
  curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, (char *)NULL);
  if (strcmp(r->method, "HEAD") == 0) {
    curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
  } else if (r->body || strcmp(r->method, "POST") == 0) {
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(r->body ? r->body_len : 0));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->req.data ? x->req.data : "");
    if (strcmp(r->method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
  } else if (strcmp(r->method, "GET") != 0) {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, r->method);
  }
}

/* What changes from one request to the next (set_fixed_options has the rest). */
static void set_options(xfer_t *x, const req_t *r) {
  CURL *e = x->easy;
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hnodes);
  curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, x->timeout_ms);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, x->timeout_ms);
  set_method(x, r);
}

/* The cancel of a waiting task: the transfer is dropped, its connection closed. */
static void on_cancel(task_t *t, void *data) {
  xfer_t *x = data;
  curl_multi_remove_handle(x->http->multi, x->easy);
  xfer_put(x);
}

/* Fills a pooled transfer from the request; returns it, or NULL with a message. */
static xfer_t *prepare(http_t *H, lua_State *L, const req_t *r, int arg, task_t *t, char *err,
                       size_t n) {
  int rc = read_headers(H, L, arg); /* may raise; nothing held yet */
  xfer_t *x = rc ? NULL : xfer_get(H);
  if (x && xfer_url(x, r->url, err, n)) {
    xfer_put(x);
    return NULL;
  }
  if (!x || take_headers(x) || (r->body && buf_add(&x->req, r->body, r->body_len))) {
    if (x) xfer_put(x);
    snprintf(err, n, "out of memory");
    return NULL;
  }
  double secs = fmin(r->timeout_s, host_task_time_left(t));
  x->timeout_ms = (long)fmax(1.0, ceil(secs * 1000.0));
  x->max_body = r->max_body;
  set_options(x, r);
  return x;
}

static void http_close(void *state);

static const host_area_t area = {sizeof(http_t), http_close};

/* Starts the request whose fields are in slots F_HEADERS..F_MAX_BODY and yields;
 * `arg` is the argument named when an option is wrong. */
static int start(lua_State *L, int arg) {
  req_t r;
  char err[512];
  read_req(L, &r, arg);
  task_t *t = host_task(L);
  if (!t) return luaL_error(L, "outbox.http can only wait inside a handler or hook");
  http_t *H = host_area_state(host_of(L), &area);
  if (!H || multi_open(H, host_loop(L))) return luaL_error(L, "outbox.http: cannot start libcurl");
  xfer_t *x = prepare(H, L, &r, arg, t, err, sizeof err);
  if (!x) {
    lua_pushnil(L);
    lua_pushstring(L, err);
    return 2;
  }
  if (curl_multi_add_handle(H->multi, x->easy) != CURLM_OK) {
    xfer_put(x);
    return luaL_error(L, "outbox.http: cannot add the transfer");
  }
  if (host_wait(L, on_cancel, x)) {
    curl_multi_remove_handle(H->multi, x->easy);
    xfer_put(x);
    return luaL_error(L, "outbox.http can only wait inside a handler or hook");
  }
  x->task = t;
  return lua_yield(L, 0);
}

/* request{method=, url=, headers=, body=, timeout=, max_body=} */
static int l_request(lua_State *L) {
  static const char *const fields[] = {"headers", "url", "method", "body", "timeout", "max_body"};
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  for (int i = 0; i < 6; i++) lua_getfield(L, 1, fields[i]); /* slots F_HEADERS.. */
  return start(L, 1);
}

/* Pushes opts[name] (opts at index `opts`, maybe nil), or nil. */
static void push_opt(lua_State *L, int opts, const char *name) {
  if (lua_istable(L, opts))
    lua_getfield(L, opts, name);
  else
    lua_pushnil(L);
}

/* get(url, opts) and post(url, body, opts): the request's fields straight from the
 * arguments; opts.method overrides the method. */
static int shorthand(lua_State *L, const char *method, int opts) {
  luaL_checktype(L, 1, LUA_TSTRING);
  if (opts == 3 && !lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TSTRING);
  if (!lua_isnoneornil(L, opts)) luaL_checktype(L, opts, LUA_TTABLE);
  lua_settop(L, 3);
  push_opt(L, opts, "headers"); /* 4 */
  lua_pushvalue(L, 1);          /* 5: url */
  push_opt(L, opts, "method");  /* 6 */
  if (lua_isnil(L, -1)) {
    lua_pop(L, 1); /* nil */
    lua_pushstring(L, method);
  }
  if (opts != 3)
    lua_pushnil(L); /* 7: no body */
  else if (lua_isnil(L, 2))
    lua_pushliteral(L, "");
  else
    lua_pushvalue(L, 2);
  push_opt(L, opts, "timeout");  /* 8 */
  push_opt(L, opts, "max_body"); /* 9 */
  lua_remove(L, 2);
  lua_remove(L, 2); /* slots 4.. become F_HEADERS.. */
  return start(L, opts);
}

/* date(s): the seconds since the epoch of an HTTP date (as in Retry-After), or nil. */
static int l_date(lua_State *L) {
  time_t t = curl_getdate(luaL_checkstring(L, 1), NULL);
  if (t == (time_t)-1)
    lua_pushnil(L);
  else
    lua_pushnumber(L, (lua_Number)t);
  return 1;
}

static int l_get(lua_State *L) { return shorthand(L, "GET", 2); }
static int l_post(lua_State *L) { return shorthand(L, "POST", 3); }

void http_register(lua_State *L) {
  lua_pushcfunction(L, l_request);
  lua_setfield(L, -2, "http_request");
  lua_pushcfunction(L, l_get);
  lua_setfield(L, -2, "http_get");
  lua_pushcfunction(L, l_post);
  lua_setfield(L, -2, "http_post");
  lua_pushcfunction(L, l_date);
  lua_setfield(L, -2, "http_date");
}

/* The last of timer and kick closed: the state goes. */
static void on_handle_closed(uv_handle_t *h) {
  http_t *H = h->data;
  if (--H->handles == 0) free(H);
}

/* host_close: the pooled easy handles and the multi handle are freed, the timer and
 * the socket pollers closed (every transfer was cancelled with its task). */
static void http_close(void *state) {
  http_t *H = state;
  while (H->pool) {
    xfer_t *x = H->pool;
    H->pool = x->next;
    xfer_free(x);
  }
  H->pooled = 0;
  if (H->multi) {
    while (H->socks) { /* stop watching before curl closes the sockets */
      if (!H->socks->owned) curl_multi_assign(H->multi, H->socks->fd, NULL);
      sock_close(H->socks);
    }
    for (size_t i = 0; i < H->nbyfd; i++) /* owned, never watched */
      if (H->byfd[i]) sock_close(H->byfd[i]);
    curl_multi_cleanup(H->multi); /* closes the cached connections */
    H->multi = NULL;
  }
  free(H->byfd); /* after the multi handle: closing it closes owned sockets */
  free(H->scratch.data);
  if (H->curl_ready) curl_global_cleanup();
  if (H->handles) {
    uv_close((uv_handle_t *)&H->timer, on_handle_closed);
    uv_close((uv_handle_t *)&H->kick, on_handle_closed);
  } else {
    free(H);
  }
}
