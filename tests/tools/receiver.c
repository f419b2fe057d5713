/* receiver — a small HTTP/1.1 server (libuv + http_parser) for the tests, the bench
 * and examples/webhook-relay: answers every request with a configurable status,
 * delay and Retry-After, logs one line per request, and keeps connections alive.
 * Responses on one connection go out in request order, whatever their delays.
 *
 * usage: receiver [--port N] [--port-file F] [--log F] [--status N] [--delay MS]
 *                 [--fail-first N] [--fail-status N] [--retry-after S] [--retry-after-date 1]
 *                 [--answers DIR] [--slots N]
 *   --retry-after-date 1 sends Retry-After as an HTTP date, S seconds from now.
 *   --answers DIR: a request whose X-Outbox-Topic is T, when the file DIR/T exists, is
 *     answered from it: its first line is the status, the lines up to an empty line are
 *     header lines, the rest is the body (any bytes).
 *   --slots N serves N requests at a time, each taking --delay MS, and queues the
 *     rest in arrival order (latency grows with concurrency past N, as a real
 *     server's does).
 *   --port 0 (default) picks a free port; it is printed on stdout and written to F.
 *   GET /stats      -> {"requests":n,"ok":n,"failed":n,"connections":n,"open":n,
 *                       "inflight":n,"peak":n}   (requests not yet answered, most seen)
 *   GET /control?status=N&delay=MS&retry_after=S&fail_first=N  changes the mode
 *   anything else   -> counted, logged, answered ("ok" or "fail", Content-Length set)
 * Log line: ts_ms=.. method=.. path=.. key=<Idempotency-Key> attempt=.. topic=..
 *           status=.. conn=.. body=<body, newlines as spaces>
 * SIGINT/SIGTERM close everything and exit 0. */
#include <errno.h>
#include <http_parser.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

typedef struct buf {
  char *data;
  size_t len, cap;
} buf_t;

typedef struct resp resp_t;
typedef struct conn conn_t;

struct resp {
  uv_timer_t timer; /* used only when delayed */
  int timed;
  int ready;
  int keep_alive;
  conn_t *c;
  char *data;
  size_t len;
  resp_t *next;
};

struct conn {
  uv_tcp_t tcp;
  http_parser parser;
  long id;
  int refs; /* the tcp handle + delayed responses not yet closed */
  int closing;
  buf_t url, body;
  char field[64];
  size_t field_len;
  int in_value;
  char value[256];
  size_t value_len;
  char key[128], attempt[32], topic[128];
  resp_t *head, *tail;
};

typedef struct wreq {
  uv_write_t req;
  char *data;
  int close_after;
} wreq_t;

static struct {
  uv_loop_t *loop;
  uv_tcp_t server;
  uv_signal_t sigint, sigterm;
  http_parser_settings settings;
  FILE *log;
  int status, fail_status;
  long fail_first, delay_ms, retry_after;
  int retry_after_date;
  const char *answers;
  long requests, ok, failed, connections, open;
  long inflight, peak;  /* requests received and not yet answered; the most at once */
  long slots;           /* --slots: served at a time */
  long long *slot_free; /* when each slot is free again (ms) */
} R = {.status = 200, .fail_status = 503, .retry_after = -1};

/* ------------------------------------------------------------------ helpers */

static int buf_add(buf_t *b, const char *p, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return -ENOMEM;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void copy_value(char *dst, size_t n, const char *v, size_t len) {
  if (len >= n) len = n - 1;
  memcpy(dst, v, len);
  dst[len] = '\0';
}

/* ------------------------------------------------------------------ connections */

static void conn_unref(conn_t *c) {
  if (--c->refs > 0) return;
  free(c->url.data);
  free(c->body.data);
  free(c);
}

static void on_resp_closed(uv_handle_t *h) {
  resp_t *r = h->data;
  conn_t *c = r->c;
  free(r->data);
  free(r);
  conn_unref(c);
}

static void resp_free(resp_t *r) {
  if (!r->timed) {
    free(r->data);
    free(r);
    return;
  }
  uv_timer_stop(&r->timer);
  uv_close((uv_handle_t *)&r->timer, on_resp_closed);
}

static void on_tcp_closed(uv_handle_t *h) { conn_unref(h->data); }

static void conn_close(conn_t *c) {
  if (c->closing) return;
  c->closing = 1;
  R.open--;
  while (c->head) {
    resp_t *r = c->head;
    c->head = r->next;
    resp_free(r);
  }
  c->tail = NULL;
  uv_close((uv_handle_t *)&c->tcp, on_tcp_closed);
}

static void on_written(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  conn_t *c = req->handle->data;
  if (status < 0 || w->close_after) conn_close(c);
  free(w->data);
  free(w);
}

/* Writes the responses at the head of the queue that are ready, in order. */
static void flush(conn_t *c) {
  while (!c->closing && c->head && c->head->ready) {
    resp_t *r = c->head;
    c->head = r->next;
    if (!c->head) c->tail = NULL;
    wreq_t *w = calloc(1, sizeof *w);
    if (!w) {
      conn_close(c);
      resp_free(r);
      return;
    }
    w->data = r->data;
    w->close_after = !r->keep_alive;
    size_t len = r->len;
    r->data = NULL;
    resp_free(r);
    uv_buf_t b = uv_buf_init(w->data, (unsigned)len);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written)) {
      free(w->data);
      free(w);
      conn_close(c);
      return;
    }
  }
}

static void on_delay(uv_timer_t *t) {
  resp_t *r = t->data;
  r->ready = 1;
  R.inflight--;
  flush(r->c);
}

/* The Retry-After line: seconds, or the HTTP date that many seconds from now. */
static void retry_after_header(char *out, size_t n) {
  if (!R.retry_after_date) {
    snprintf(out, n, "Retry-After: %ld\r\n", R.retry_after);
    return;
  }
  time_t at = time(NULL) + R.retry_after;
  struct tm tm;
  gmtime_r(&at, &tm);
  strftime(out, n, "Retry-After: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
}

/* Queues a response with extra header lines `hdrs` ("Name: value\r\n" each) and a
 * body of `blen` bytes; it goes out after `delay` ms and after those before it. */
static void respond_with(conn_t *c, int status, const char *hdrs, const char *body, size_t blen,
                         long delay) {
  resp_t *r = calloc(1, sizeof *r);
  int keep = http_should_keep_alive(&c->parser);
  if (!r) {
    conn_close(c);
    return;
  }
  size_t n = strlen(hdrs) + blen + 256;
  r->data = malloc(n);
  if (!r->data) {
    free(r);
    conn_close(c);
    return;
  }
  int head = snprintf(
      r->data, n, "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s%s\r\n",
      status, http_status_str((enum http_status)status), blen, hdrs,
      keep ? "" : "Connection: close\r\n");
  memcpy(r->data + head, body, blen);
  r->len = (size_t)head + blen;
  r->c = c;
  r->keep_alive = keep;
  if (c->tail)
    c->tail->next = r;
  else
    c->head = r;
  c->tail = r;
  if (delay <= 0) {
    r->ready = 1;
    R.inflight--;
    flush(c);
    return;
  }
  r->timed = 1;
  c->refs++;
  uv_timer_init(R.loop, &r->timer);
  r->timer.data = r;
  uv_timer_start(&r->timer, on_delay, (uint64_t)delay, 0);
}

static void respond(conn_t *c, int status, const char *body, long delay) {
  char ra[64] = "";
  if (R.retry_after >= 0 && (status < 200 || status > 299)) retry_after_header(ra, sizeof ra);
  respond_with(c, status, ra, body, strlen(body), delay);
}

static void log_request(conn_t *c, int status);

/* Counts and logs a request answered with `status`. */
static void count_request(conn_t *c, int status) {
  R.requests++;
  if (status >= 200 && status <= 299)
    R.ok++;
  else
    R.failed++;
  log_request(c, status);
  if (++R.inflight > R.peak) R.peak = R.inflight;
}

/* Answers from DIR/<topic> (see --answers). Returns 0, or -1 when there is no such file. */
static int respond_from_file(conn_t *c) {
  char path[512], line[512], hdrs[2048] = "";
  static char body[65536];
  if (!R.answers || !c->topic[0] || strchr(c->topic, '/')) return -1;
  snprintf(path, sizeof path, "%s/%s", R.answers, c->topic);
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  int status = fgets(line, sizeof line, f) ? atoi(line) : 500;
  while (fgets(line, sizeof line, f) && line[0] != '\n' && line[0] != '\r') {
    line[strcspn(line, "\r\n")] = 0;
    size_t used = strlen(hdrs);
    snprintf(hdrs + used, sizeof hdrs - used, "%s\r\n", line);
  }
  size_t blen = fread(body, 1, sizeof body, f);
  fclose(f);
  count_request(c, status);
  respond_with(c, status, hdrs, body, blen, R.delay_ms);
  return 0;
}

/* ------------------------------------------------------------------ requests */

static long query_long(const char *url, const char *name, long dflt) {
  const char *q = strchr(url, '?');
  size_t n = strlen(name);
  while (q) {
    q++;
    if (strncmp(q, name, n) == 0 && q[n] == '=') return strtol(q + n + 1, NULL, 10);
    q = strchr(q, '&');
  }
  return dflt;
}

static void handle_stats(conn_t *c) {
  char body[256];
  snprintf(body, sizeof body,
           "{\"requests\":%ld,\"ok\":%ld,\"failed\":%ld,\"connections\":%ld,\"open\":%ld,"
           "\"inflight\":%ld,\"peak\":%ld}\n",
           R.requests, R.ok, R.failed, R.connections, R.open, R.inflight, R.peak);
  R.inflight++; /* answered at once below */
  respond(c, 200, body, 0);
}

static void handle_control(conn_t *c) {
  const char *u = c->url.data;
  R.status = (int)query_long(u, "status", R.status);
  R.delay_ms = query_long(u, "delay", R.delay_ms);
  R.retry_after = query_long(u, "retry_after", R.retry_after);
  R.fail_first = query_long(u, "fail_first", R.fail_first);
  R.inflight++; /* answered at once below */
  respond(c, 200, "ok\n", 0);
}

/* The wait for a request arriving now: --delay, or with --slots the time until the
 * earliest free slot has served it (a FIFO queue in front of N workers). */
static long service_delay(void) {
  if (R.slots <= 0 || R.delay_ms <= 0) return R.delay_ms;
  long long now = now_ms();
  long best = 0;
  for (long i = 1; i < R.slots; i++)
    if (R.slot_free[i] < R.slot_free[best]) best = i;
  long long start = R.slot_free[best] > now ? R.slot_free[best] : now;
  R.slot_free[best] = start + R.delay_ms;
  return (long)(R.slot_free[best] - now);
}

static void log_request(conn_t *c, int status) {
  if (!R.log) return;
  for (size_t i = 0; i < c->body.len; i++)
    if (c->body.data[i] == '\n' || c->body.data[i] == '\r') c->body.data[i] = ' ';
  fprintf(R.log,
          "ts_ms=%lld method=%s path=%s key=%s attempt=%s topic=%s status=%d conn=%ld body=%s\n",
          now_ms(), http_method_str((enum http_method)c->parser.method), c->url.data,
          c->key[0] ? c->key : "-", c->attempt[0] ? c->attempt : "-", c->topic[0] ? c->topic : "-",
          status, c->id, c->body.data ? c->body.data : "");
  fflush(R.log);
}

static void handle_request(conn_t *c) {
  if (respond_from_file(c) == 0) return;
  int status = R.status;
  if (R.fail_first > 0) {
    R.fail_first--;
    status = R.fail_status;
  }
  count_request(c, status);
  respond(c, status, status >= 200 && status <= 299 ? "ok\n" : "fail\n", service_delay());
}

/* ------------------------------------------------------------------ parser callbacks */

static void commit_header(conn_t *c) {
  if (!c->in_value) return;
  c->field[c->field_len] = '\0';
  if (strcasecmp(c->field, "Idempotency-Key") == 0)
    copy_value(c->key, sizeof c->key, c->value, c->value_len);
  else if (strcasecmp(c->field, "X-Outbox-Attempt") == 0)
    copy_value(c->attempt, sizeof c->attempt, c->value, c->value_len);
  else if (strcasecmp(c->field, "X-Outbox-Topic") == 0)
    copy_value(c->topic, sizeof c->topic, c->value, c->value_len);
  c->in_value = 0;
  c->field_len = c->value_len = 0;
}

static int on_begin(http_parser *p) {
  conn_t *c = p->data;
  c->url.len = c->body.len = 0;
  if (c->url.data) c->url.data[0] = '\0';
  if (c->body.data) c->body.data[0] = '\0';
  c->key[0] = c->attempt[0] = c->topic[0] = '\0';
  c->in_value = 0;
  c->field_len = c->value_len = 0;
  return 0;
}

static int on_url(http_parser *p, const char *at, size_t n) {
  return buf_add(&((conn_t *)p->data)->url, at, n) ? -1 : 0;
}

static int on_field(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  commit_header(c);
  if (c->field_len + n >= sizeof c->field) n = sizeof c->field - 1 - c->field_len;
  memcpy(c->field + c->field_len, at, n);
  c->field_len += n;
  return 0;
}

static int on_value(http_parser *p, const char *at, size_t n) {
  conn_t *c = p->data;
  c->in_value = 1;
  if (c->value_len + n >= sizeof c->value) n = sizeof c->value - 1 - c->value_len;
  memcpy(c->value + c->value_len, at, n);
  c->value_len += n;
  return 0;
}

static int on_headers_done(http_parser *p) {
  commit_header(p->data);
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  return buf_add(&((conn_t *)p->data)->body, at, n) ? -1 : 0;
}

static int on_complete(http_parser *p) {
  conn_t *c = p->data;
  const char *u = c->url.data ? c->url.data : "/";
  if (strcmp(u, "/stats") == 0)
    handle_stats(c);
  else if (strncmp(u, "/control", 8) == 0)
    handle_control(c);
  else
    handle_request(c);
  return 0;
}

/* ------------------------------------------------------------------ sockets */

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  static char slab[65536];
  (void)h;
  (void)hint;
  *b = uv_buf_init(slab, sizeof slab);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  conn_t *c = s->data;
  if (n < 0) {
    conn_close(c);
    return;
  }
  if (n == 0) return;
  size_t used = http_parser_execute(&c->parser, &R.settings, b->base, (size_t)n);
  if (c->parser.http_errno != HPE_OK || used != (size_t)n) conn_close(c);
}

static void on_connection(uv_stream_t *server, int status) {
  if (status < 0) return;
  conn_t *c = calloc(1, sizeof *c);
  if (!c) return;
  uv_tcp_init(R.loop, &c->tcp);
  c->tcp.data = c;
  c->refs = 1;
  c->id = ++R.connections;
  R.open++;
  http_parser_init(&c->parser, HTTP_REQUEST);
  c->parser.data = c;
  if (uv_accept(server, (uv_stream_t *)&c->tcp) ||
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read))
    conn_close(c);
}

/* ------------------------------------------------------------------ main */

static void close_any(uv_handle_t *h, void *arg) {
  (void)arg;
  if (uv_is_closing(h)) return;
  if (h->type == UV_TCP && h != (uv_handle_t *)&R.server) {
    conn_close(h->data);
    return;
  }
  if (h->type == UV_TIMER) return; /* closed by their connection */
  uv_close(h, NULL);
}

static void on_signal(uv_signal_t *s, int signum) {
  (void)signum;
  uv_walk(R.loop, close_any, NULL);
}

static int usage(const char *why) {
  fprintf(stderr,
          "receiver: %s\nusage: receiver [--port N] [--port-file F] [--log F] "
          "[--status N] [--delay MS] [--fail-first N] [--fail-status N] "
          "[--retry-after S] [--retry-after-date 1]\n",
          why);
  return 2;
}

static int write_port(const char *path, int port) {
  char tmp[4096];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return -1;
  fprintf(f, "%d\n", port);
  if (fclose(f) || rename(tmp, path)) return -1;
  return 0;
}

int main(int argc, char **argv) {
  long port = 0;
  const char *port_file = NULL, *log_file = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) return usage("missing value");
    const char *v = argv[++i];
    if (strcmp(a, "--port") == 0)
      port = strtol(v, NULL, 10);
    else if (strcmp(a, "--port-file") == 0)
      port_file = v;
    else if (strcmp(a, "--log") == 0)
      log_file = v;
    else if (strcmp(a, "--status") == 0)
      R.status = (int)strtol(v, NULL, 10);
    else if (strcmp(a, "--delay") == 0)
      R.delay_ms = strtol(v, NULL, 10);
    else if (strcmp(a, "--fail-first") == 0)
      R.fail_first = strtol(v, NULL, 10);
    else if (strcmp(a, "--fail-status") == 0)
      R.fail_status = (int)strtol(v, NULL, 10);
    else if (strcmp(a, "--retry-after") == 0)
      R.retry_after = strtol(v, NULL, 10);
    else if (strcmp(a, "--answers") == 0)
      R.answers = v;
    else if (strcmp(a, "--retry-after-date") == 0)
      R.retry_after_date = (int)strtol(v, NULL, 10);
    else if (strcmp(a, "--slots") == 0)
      R.slots = strtol(v, NULL, 10);
    else
      return usage(a);
  }
  if (R.slots > 0 && !(R.slot_free = calloc((size_t)R.slots, sizeof *R.slot_free)))
    return usage("out of memory for --slots");
  signal(SIGPIPE, SIG_IGN);
  if (log_file && !(R.log = fopen(log_file, "a"))) return usage("cannot open the log file");
  R.loop = uv_default_loop();
  R.settings = (http_parser_settings){.on_message_begin = on_begin,
                                      .on_url = on_url,
                                      .on_header_field = on_field,
                                      .on_header_value = on_value,
                                      .on_headers_complete = on_headers_done,
                                      .on_body = on_body,
                                      .on_message_complete = on_complete};
  struct sockaddr_in addr;
  struct sockaddr_storage bound;
  int len = sizeof bound;
  uv_ip4_addr("127.0.0.1", (int)port, &addr);
  uv_tcp_init(R.loop, &R.server);
  int rc = uv_tcp_bind(&R.server, (const struct sockaddr *)&addr, 0);
  if (!rc) rc = uv_listen((uv_stream_t *)&R.server, 1024, on_connection);
  if (rc) {
    fprintf(stderr, "receiver: cannot listen on 127.0.0.1:%ld: %s\n", port, uv_strerror(rc));
    return 1;
  }
  uv_tcp_getsockname(&R.server, (struct sockaddr *)&bound, &len);
  int actual = ntohs(((struct sockaddr_in *)&bound)->sin_port);
  printf("%d\n", actual);
  fflush(stdout);
  if (port_file && write_port(port_file, actual)) return usage("cannot write the port file");
  uv_signal_init(R.loop, &R.sigint);
  uv_signal_init(R.loop, &R.sigterm);
  uv_signal_start(&R.sigint, on_signal, SIGINT);
  uv_signal_start(&R.sigterm, on_signal, SIGTERM);
  uv_run(R.loop, UV_RUN_DEFAULT);
  uv_loop_close(R.loop);
  if (R.log) fclose(R.log);
  free(R.slot_free);
  return 0;
}
