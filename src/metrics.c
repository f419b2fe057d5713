/* metrics — /metrics (Prometheus text), /health and /ready over plain HTTP/1.x on
 * the loop, parsed with http_parser. Invariants: one response per connection, built
 * whole into one buffer and written with uv_write, then the connection closes;
 * requests are size-limited, connections are capped and idle ones are reaped. */
#include "metrics.h"

#include <dirent.h>
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "log.h"
#include "version.h"

#define MAX_CONNS 64     /* open connections at most; more are closed at once */
#define MAX_REQUEST 8192 /* bytes of request head at most */
#define MAX_URL 512
#define IDLE_MS 5000 /* a connection older than this is closed */
#define SWEEP_MS 1000
#define BODY_GUESS 8192

const double metrics_bucket_bounds[METRICS_BUCKETS] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                       0.5,   1,     2.5,  5,     10,   30,  60};

typedef struct conn {
  uv_tcp_t tcp;
  uv_write_t wr;
  uv_shutdown_t sd;
  http_parser parser;
  struct metrics *m;
  struct conn *next, *prev;
  uint64_t opened_ms;
  size_t received;
  char url[MAX_URL];
  size_t url_len;
  int url_too_long;
  int responded, closing;
  char head[256];
  char *body;
} conn_t;

struct metrics {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_timer_t sweep;
  metrics_fill_cb fill;
  void *arg;
  conn_t *conns;
  int nconns;
  int handles; /* open handles: listener, sweep timer, connections */
  int closing;
  int port;
  void (*close_cb)(void *arg);
  void *close_arg;
  char rbuf[4096]; /* reads are consumed synchronously, so one buffer serves all */
};

static http_parser_settings parser_settings;

/* ------------------------------------------------------------------ histogram */

void metrics_hist_observe(metrics_hist_t *h, double seconds) {
  int i = 0;
  if (seconds < 0) seconds = 0;
  while (i < METRICS_BUCKETS && seconds > metrics_bucket_bounds[i]) i++;
  h->bucket[i]++;
  h->count++;
  h->sum += seconds;
}

/* ------------------------------------------------------------------ rendering */

typedef struct out {
  char *buf;
  size_t cap, len;
} out_t;

__attribute__((format(printf, 2, 3))) static void put(out_t *o, const char *fmt, ...) {
  va_list ap;
  size_t room = o->len < o->cap ? o->cap - o->len : 0;
  va_start(ap, fmt);
  int n = vsnprintf(room ? o->buf + o->len : NULL, room, fmt, ap);
  va_end(ap);
  if (n > 0) o->len += (size_t)n;
}

static void head(out_t *o, const char *name, const char *type, const char *help) {
  put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void gauge(out_t *o, const char *name, const char *help, double v) {
  head(o, name, "gauge", help);
  put(o, "%s %.15g\n", name, v);
}

static void render_histogram(out_t *o, const metrics_hist_t *h) {
  const char *name = "outboxd_handler_duration_seconds";
  uint64_t cum = 0;
  head(o, name, "histogram", "Handler run time from start to outcome.");
  for (int i = 0; i < METRICS_BUCKETS; i++) {
    cum += h->bucket[i];
    put(o, "%s_bucket{le=\"%g\"} %" PRIu64 "\n", name, metrics_bucket_bounds[i], cum);
  }
  cum += h->bucket[METRICS_BUCKETS];
  put(o, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cum);
  put(o, "%s_sum %.9g\n%s_count %" PRIu64 "\n", name, h->sum, name, h->count);
}

/* ------------------------------------------------------------------ process */

int metrics_process_read(metrics_process_t *p) {
  char buf[1024];
  unsigned long long utime, stime, start, vsize;
  long long rss;
  double tick = (double)sysconf(_SC_CLK_TCK), btime = 0;
  struct rlimit rl;
  memset(p, 0, sizeof *p);
  FILE *f = fopen("/proc/self/stat", "r");
  if (!f) return -errno;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *rest = strrchr(buf, ')'); /* the command name may hold spaces */
  /* fields 3.. after "pid (comm) ": state ... utime(14) stime(15) ... starttime(22)
   * vsize(23) rss(24) */
  if (!rest || sscanf(rest + 2,
                      "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                      "%*d %*d %llu %llu %lld",
                      &utime, &stime, &start, &vsize, &rss) != 5)
    return -EINVAL;
  if ((f = fopen("/proc/stat", "r"))) { /* btime: boot time, epoch seconds */
    while (fgets(buf, sizeof buf, f))
      if (sscanf(buf, "btime %lf", &btime) == 1) break;
    fclose(f);
  }
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    struct dirent *e;
    while ((e = readdir(d)))
      if (e->d_name[0] != '.') p->open_fds++;
    closedir(d);
    p->open_fds--; /* the directory stream's own descriptor */
  }
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
    p->max_fds = rl.rlim_cur == RLIM_INFINITY ? -1 : (int64_t)rl.rlim_cur;
  p->cpu_seconds = (double)(utime + stime) / tick;
  p->start_time_seconds = btime + (double)start / tick;
  p->virtual_bytes = vsize;
  p->resident_bytes = (uint64_t)(rss > 0 ? rss : 0) * (uint64_t)sysconf(_SC_PAGESIZE);
  p->ok = 1;
  return 0;
}

/* The standard process_* series, as every Prometheus client library names them. */
static void render_process(out_t *o, const metrics_process_t *p) {
  if (!p->ok) return;
  head(o, "process_cpu_seconds_total", "counter",
       "Total user and system CPU time spent in seconds.");
  put(o, "process_cpu_seconds_total %.15g\n", p->cpu_seconds);
  gauge(o, "process_resident_memory_bytes", "Resident memory size in bytes.",
        (double)p->resident_bytes);
  gauge(o, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
        (double)p->virtual_bytes);
  gauge(o, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.",
        p->start_time_seconds);
  gauge(o, "process_open_fds", "Number of open file descriptors.", (double)p->open_fds);
  if (p->max_fds >= 0)
    gauge(o, "process_max_fds", "Maximum number of open file descriptors.", (double)p->max_fds);
}

/* A label value, escaped as the exposition format wants (\\, \", \n). */
static void label(out_t *o, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"')
      put(o, "\\%c", *v);
    else if (*v == '\n')
      put(o, "\\n");
    else
      put(o, "%c", *v);
  }
}

/* outboxd_route_{inflight,limit,events_total}{route=}. */
static void render_routes(out_t *o, const metrics_figures_t *f) {
  static const struct {
    const char *name, *type, *help;
  } series[] = {
      {"outboxd_route_inflight", "gauge", "Handlers of the route running now."},
      {"outboxd_route_limit", "gauge", "Handlers of the route allowed in flight at most."},
      {"outboxd_route_events_total", "counter", "Handler runs of the route finished."},
  };
  for (int s = 0; s < 3; s++) {
    head(o, series[s].name, series[s].type, series[s].help);
    for (int i = 0; i < f->nroutes; i++) {
      const metrics_route_t *r = &f->routes[i];
      put(o, "%s{route=\"", series[s].name);
      label(o, r->name);
      put(o, "\"} %" PRId64 "\n", s == 0 ? r->inflight : s == 1 ? r->limit : r->events);
    }
  }
}

size_t metrics_render(const metrics_figures_t *f, char *buf, size_t cap) {
  out_t o = {buf, cap, 0};
  static const metrics_hist_t empty;
  if (cap) buf[0] = 0;
  head(&o, "outboxd_events_total", "counter",
       "Handler outcomes: done, failed runs, dead-lettered events, retries scheduled.");
  put(&o, "outboxd_events_total{outcome=\"done\"} %" PRId64 "\n", f->done);
  put(&o, "outboxd_events_total{outcome=\"failed\"} %" PRId64 "\n", f->failed);
  put(&o, "outboxd_events_total{outcome=\"dead\"} %" PRId64 "\n", f->dead);
  put(&o, "outboxd_events_total{outcome=\"retried\"} %" PRId64 "\n", f->retried);
  gauge(&o, "outboxd_inflight", "Handlers running now.", (double)f->inflight);
  gauge(&o, "outboxd_queued", "Claimed events waiting for a handler slot.", (double)f->queued);
  gauge(&o, "outboxd_concurrency", "Handlers allowed in flight at most.", (double)f->concurrency);
  gauge(&o, "outboxd_breaker_state",
        "Circuit breakers: 0 closed, 1 open, 2 half-open (unlabelled: the worst).", f->breaker);
  for (int i = 0; i < f->nbreakers; i++) {
    put(&o, "outboxd_breaker_state{breaker=\"");
    label(&o, f->breakers[i].name);
    put(&o, "\"} %d\n", f->breakers[i].state);
  }
  render_routes(&o, f);
  head(&o, "outboxd_paused", "gauge", "Topic patterns paused in the store (outboxd pause).");
  for (int i = 0; i < f->npaused; i++) {
    put(&o, "outboxd_paused{pattern=\"");
    label(&o, f->paused[i]);
    put(&o, "\"} 1\n");
  }
  head(&o, "outboxd_memory_bytes", "gauge", "Process RSS and the Lua heaps inside it.");
  put(&o, "outboxd_memory_bytes{kind=\"rss\"} %" PRIu64 "\n", f->rss);
  put(&o, "outboxd_memory_bytes{kind=\"lua\"} %" PRIu64 "\n", f->lua_heap);
  gauge(&o, "outboxd_memory_limit_bytes", "What 100% memory means.", (double)f->memory_limit);
  gauge(&o, "outboxd_memory_high", "1 while memory is high and intake paused.", f->memory_high);
  if (f->pending >= 0) {
    gauge(&o, "outboxd_pending", "Events pending in the store (refreshed about once a second).",
          (double)f->pending);
    gauge(&o, "outboxd_oldest_pending_age_seconds",
          "Age of the oldest pending event (refreshed about once a second).",
          f->oldest_pending_age_s);
  }
  render_histogram(&o, f->handler_duration ? f->handler_duration : &empty);
  head(&o, "outboxd_reloads_total", "counter", "Script reloads by result.");
  put(&o, "outboxd_reloads_total{result=\"ok\"} %" PRId64 "\n", f->reloads_ok);
  put(&o, "outboxd_reloads_total{result=\"failed\"} %" PRId64 "\n", f->reloads_failed);
  gauge(&o, "outboxd_generation", "Generation of the script serving new events.", f->generation);
  gauge(&o, "outboxd_live_generations",
        "Generations open: the serving one and retired ones still draining.", f->live_generations);
  gauge(&o, "outboxd_timers", "Timers scheduled (outbox.every, outbox.after).", (double)f->timers);
  gauge(&o, "outboxd_timers_running", "Timer runs going on.", (double)f->timers_running);
  head(&o, "outboxd_timer_skips_total", "counter",
       "Timer ticks that started no run (the last run still going, or the loop late).");
  put(&o, "outboxd_timer_skips_total %" PRId64 "\n", f->timer_skips);
  gauge(&o, "outboxd_hooks_running", "Hook coroutines going on.", (double)f->hooks_running);
  gauge(&o, "outboxd_store_up", "0 when the last store call failed.", f->store_ok);
  gauge(&o, "outboxd_uptime_seconds", "Time since the run started.", f->uptime_s);
  if (f->store_dead >= 0)
    gauge(&o, "outboxd_dead", "Dead events in the store (refreshed about once a second).",
          (double)f->store_dead);
  head(&o, "outboxd_build_info", "gauge", "Always 1; the version that is running.");
  put(&o, "outboxd_build_info{version=\"%s\"} 1\n", OUTBOXD_VERSION);
  render_process(&o, &f->process);
  return o.len;
}

/* ------------------------------------------------------------------ connections */

static void maybe_done(struct metrics *m) {
  if (!m->closing || m->handles > 0) return;
  void (*cb)(void *) = m->close_cb;
  void *arg = m->close_arg;
  free(m);
  if (cb) cb(arg);
}

static void on_handle_closed(uv_handle_t *h) {
  struct metrics *m = h->data;
  m->handles--;
  maybe_done(m);
}

static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  struct metrics *m = c->m;
  free(c->body);
  free(c);
  m->handles--;
  maybe_done(m);
}

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  if (c->prev)
    c->prev->next = c->next;
  else
    c->m->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  c->m->nconns--;
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  (void)status;
  conn_close(req->data);
}

static void on_written(uv_write_t *req, int status) {
  conn_t *c = req->data;
  if (status < 0 || c->closing) {
    conn_close(c);
    return;
  }
  c->sd.data = c;
  if (uv_shutdown(&c->sd, (uv_stream_t *)&c->tcp, on_shutdown)) conn_close(c);
}

/* Sends the status line, headers and `body` (owned by c from now on), then closes. */
static void respond(conn_t *c, int code, const char *reason, const char *ctype, char *body,
                    size_t len, const char *extra) {
  int head_only = c->parser.method == HTTP_HEAD && code < 400;
  c->responded = 1;
  c->body = body;
  uv_read_stop((uv_stream_t *)&c->tcp);
  int n = snprintf(c->head, sizeof c->head,
                   "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                   "Connection: close\r\n\r\n",
                   code, reason, ctype, len, extra ? extra : "");
  uv_buf_t bufs[2] = {uv_buf_init(c->head, (unsigned)n), uv_buf_init(body, (unsigned)len)};
  c->wr.data = c;
  if (uv_write(&c->wr, (uv_stream_t *)&c->tcp, bufs, head_only || !len ? 1 : 2, on_written))
    conn_close(c);
}

static void respond_text(conn_t *c, int code, const char *reason, const char *text,
                         const char *extra) {
  char *body = strdup(text);
  respond(c, code, reason, "text/plain; charset=utf-8", body, body ? strlen(body) : 0, extra);
}

static void serve_metrics(conn_t *c, const metrics_figures_t *f) {
  size_t cap = BODY_GUESS;
  char *body = malloc(cap);
  size_t n = body ? metrics_render(f, body, cap) : 0;
  if (body && n >= cap) {
    char *bigger = realloc(body, n + 1);
    if (bigger)
      metrics_render(f, bigger, n + 1);
    else
      free(body);
    body = bigger;
  }
  if (!body) {
    respond_text(c, 500, "Internal Server Error", "out of memory\n", NULL);
    return;
  }
  respond(c, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", body, n, NULL);
}

/* The reason /ready says no, or NULL when ready. */
static const char *not_ready(const metrics_figures_t *f) {
  if (f->breakers_all_open) return "not ready: circuit breaker open (every route's)\n";
  if (!f->store_ok) return "not ready: store unreachable\n";
  if (f->intake_paused) return "not ready: intake paused, memory high\n";
  return NULL;
}

static void route(conn_t *c) {
  struct metrics *m = c->m;
  metrics_figures_t f;
  char *q = memchr(c->url, '?', c->url_len);
  if (q) *q = 0;
  if (c->parser.method != HTTP_GET && c->parser.method != HTTP_HEAD) {
    respond_text(c, 405, "Method Not Allowed", "only GET and HEAD\n", "Allow: GET, HEAD\r\n");
    return;
  }
  if (strcmp(c->url, "/health") == 0) {
    respond_text(c, 200, "OK", "ok\n", NULL);
    return;
  }
  if (strcmp(c->url, "/metrics") && strcmp(c->url, "/ready")) {
    respond_text(c, 404, "Not Found", "try /metrics, /health or /ready\n", NULL);
    return;
  }
  memset(&f, 0, sizeof f);
  f.store_ok = 1;
  f.pending = -1;
  f.store_dead = -1;
  m->fill(m->arg, &f);
  metrics_process_read(&f.process);
  if (strcmp(c->url, "/metrics") == 0) {
    serve_metrics(c, &f);
    return;
  }
  const char *why = not_ready(&f);
  if (why)
    respond_text(c, 503, "Service Unavailable", why, NULL);
  else
    respond_text(c, 200, "OK", "ready\n", NULL);
}

static int on_url(http_parser *p, const char *at, size_t len) {
  conn_t *c = p->data;
  if (c->url_len + len >= sizeof c->url) {
    c->url_too_long = 1;
    return 0;
  }
  memcpy(c->url + c->url_len, at, len);
  c->url_len += len;
  c->url[c->url_len] = 0;
  return 0;
}

static int on_message_complete(http_parser *p) {
  conn_t *c = p->data;
  if (c->responded) return 1;
  if (c->url_too_long)
    respond_text(c, 414, "URI Too Long", "URI too long\n", NULL);
  else
    route(c);
  return 1; /* one request per connection: stop parsing */
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  conn_t *c = h->data;
  (void)hint;
  *buf = uv_buf_init(c->m->rbuf, sizeof c->m->rbuf);
}

static void bad_request(conn_t *c, const char *why) {
  log_at(LOG_DEBUG, "metrics: bad request", KS("error", why));
  respond_text(c, 400, "Bad Request", "bad request\n", NULL);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  conn_t *c = s->data;
  if (c->responded || c->closing || nread == 0) return;
  if (nread < 0) { /* EOF or error before a whole request */
    conn_close(c);
    return;
  }
  c->received += (size_t)nread;
  size_t used = http_parser_execute(&c->parser, &parser_settings, buf->base, (size_t)nread);
  if (c->responded) return;
  if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || used != (size_t)nread) {
    bad_request(c, http_errno_description(HTTP_PARSER_ERRNO(&c->parser)));
    return;
  }
  if (c->received > MAX_REQUEST)
    respond_text(c, 431, "Request Header Fields Too Large", "request too large\n", NULL);
}

/* The table is full: closes the oldest connection still waiting for its request
 * (a slow or silent client) so that `keep`, a new one, gets served. Idle clients
 * that reconnect all the time therefore cannot lock /health and /ready out.
 * Returns 1 when one was closed. */
static int evict_oldest_idle(struct metrics *m, const conn_t *keep) {
  conn_t *oldest = NULL;
  for (conn_t *c = m->conns; c; c = c->next) /* newest first: the last match is oldest */
    if (c != keep && !c->responded && !c->closing) oldest = c;
  if (!oldest) return 0;
  log_at(LOG_DEBUG, "metrics: connection table full, closed the oldest idle one",
         KI("open", m->nconns));
  conn_close(oldest);
  return 1;
}

static void on_connection(uv_stream_t *server, int status) {
  struct metrics *m = server->data;
  if (status < 0 || m->closing) return;
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return;
  c->m = m;
  uv_tcp_init(m->loop, &c->tcp);
  c->tcp.data = c;
  m->handles++;
  c->next = m->conns;
  if (m->conns) m->conns->prev = c;
  m->conns = c;
  m->nconns++;
  if (uv_accept(server, (uv_stream_t *)&c->tcp)) {
    conn_close(c);
    return;
  }
  if (m->nconns > MAX_CONNS && !evict_oldest_idle(m, c)) {
    conn_close(c); /* every other connection is being answered */
    return;
  }
  c->opened_ms = uv_now(m->loop);
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read)) conn_close(c);
}

/* Closes connections that have been open too long (slow or silent clients). */
static void on_sweep(uv_timer_t *t) {
  struct metrics *m = t->data;
  uint64_t now = uv_now(m->loop);
  conn_t *next;
  for (conn_t *c = m->conns; c; c = next) {
    next = c->next;
    if (now >= c->opened_ms + IDLE_MS) conn_close(c); /* opened_ms may be ahead of now */
  }
}

/* ------------------------------------------------------------------ server */

int metrics_parse_addr(const char *spec, char *host, size_t hostlen, int *port) {
  const char *p = spec, *colon;
  char *end;
  size_t hl = 0;
  if (!spec || !*spec) return -EINVAL;
  if (*spec == '[') {
    const char *close = strchr(spec, ']');
    if (!close || close[1] != ':') return -EINVAL;
    hl = (size_t)(close - spec - 1);
    if (!hl || hl >= hostlen) return -EINVAL;
    memcpy(host, spec + 1, hl);
    p = close + 2;
  } else if ((colon = strrchr(spec, ':'))) {
    hl = (size_t)(colon - spec);
    if (!hl || hl >= hostlen || memchr(spec, ':', hl)) return -EINVAL;
    memcpy(host, spec, hl);
    p = colon + 1;
  } else {
    hl = strlen("127.0.0.1");
    if (hl >= hostlen) return -EINVAL;
    memcpy(host, "127.0.0.1", hl);
  }
  host[hl] = 0;
  errno = 0;
  long v = strtol(p, &end, 10);
  if (errno || end == p || *end || v < 0 || v > 65535) return -EINVAL;
  *port = (int)v;
  return 0;
}

static int bind_addr(struct metrics *m, const char *host, int port) {
  struct sockaddr_storage sa;
  int rc = uv_ip4_addr(host, port, (struct sockaddr_in *)&sa);
  if (rc) rc = uv_ip6_addr(host, port, (struct sockaddr_in6 *)&sa);
  if (rc) return -EINVAL;
  if ((rc = uv_tcp_bind(&m->listener, (const struct sockaddr *)&sa, 0))) return rc;
  if ((rc = uv_listen((uv_stream_t *)&m->listener, 128, on_connection))) return rc;
  int len = sizeof sa;
  if ((rc = uv_tcp_getsockname(&m->listener, (struct sockaddr *)&sa, &len))) return rc;
  m->port = sa.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&sa)->sin6_port)
                                     : ntohs(((struct sockaddr_in *)&sa)->sin_port);
  return 0;
}

int metrics_start(metrics_t **out, uv_loop_t *loop, const char *spec, metrics_fill_cb fill,
                  void *arg, char *err, size_t errlen) {
  char host[128];
  int port;
  if (metrics_parse_addr(spec, host, sizeof host, &port)) {
    snprintf(err, errlen, "--metrics: invalid value \"%s\" ([HOST:]PORT)", spec);
    return -EINVAL;
  }
  struct metrics *m = calloc(1, sizeof *m);
  if (!m) return -ENOMEM;
  parser_settings.on_url = on_url;
  parser_settings.on_message_complete = on_message_complete;
  m->loop = loop;
  m->fill = fill;
  m->arg = arg;
  uv_tcp_init(loop, &m->listener);
  m->listener.data = m;
  uv_timer_init(loop, &m->sweep);
  m->sweep.data = m;
  m->handles = 2;
  int rc = bind_addr(m, host, port);
  if (rc) {
    snprintf(err, errlen, "--metrics %s: %s", spec,
             rc == -EINVAL ? "not an IP address" : uv_strerror(rc));
    metrics_close(m, NULL, NULL);
    return rc;
  }
  uv_timer_start(&m->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
  uv_unref((uv_handle_t *)&m->sweep);
  log_at(LOG_INFO, "metrics listening", KS("host", host), KI("port", m->port));
  *out = m;
  return 0;
}

int metrics_port(const metrics_t *m) { return m->port; }

void metrics_close(metrics_t *m, void (*cb)(void *arg), void *arg) {
  m->closing = 1;
  m->close_cb = cb;
  m->close_arg = arg;
  while (m->conns) conn_close(m->conns);
  uv_close((uv_handle_t *)&m->listener, on_handle_closed);
  uv_close((uv_handle_t *)&m->sweep, on_handle_closed);
}
