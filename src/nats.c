/* nats — outbox.nats: NATS and JetStream for handlers on cnats, its libuv adapter
 * and our loop. cnats runs threads of its own (message delivery, connection
 * events, reconnects); they never touch Lua or a client: their callbacks copy
 * what arrived into a locked queue (N) and wake the loop with uv_async_send; the
 * loop thread does the rest. The first connect, a blocking handshake in cnats,
 * runs on libuv's thread pool; reconnects are cnats' own (it reattaches the
 * socket to the loop through the adapter).
 * A request (js_publish) is a message whose reply subject is "<inbox>.<seq>" under
 * the client's own inbox; one subscription to "<inbox>.*" receives the replies,
 * matched to their call by seq on the loop thread. Invariant: a request is in its
 * client's table from the call until its reply, its timeout, a lost connection or
 * its task's cancellation, whichever comes first, and is freed exactly then; a
 * reply for a seq no longer there is dropped. */
#include "nats.h"

#include <errno.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wcast-qual"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wstrict-prototypes"
#pragma GCC diagnostic ignored "-Wunused-function"
#include <nats/adapters/libuv.h>
#pragma GCC diagnostic pop

#include "backoff.h"
#include "broker.h"
#include "log.h"
#include "store.h"
#include "store_open.h"

#define NATS_MT "outbox.nats"
#define NATS_DEFAULT_TIMEOUT_S 5.0
#define NATS_CONNECT_TIMEOUT_MS 2000
#define NATS_RECONNECT_WAIT_MS 250
#define NATS_BACKOFF_BASE_MS 100
#define NATS_BACKOFF_CAP_MS 2000

enum { NS_IDLE, NS_CONNECTING, NS_READY, NS_FAILED };
enum { IT_REPLY, IT_NO_RESPONDERS, IT_DISCONNECTED, IT_RECONNECTED, IT_CLOSED };

/* What a cnats thread hands to the loop. */
typedef struct nitem {
  uint32_t client;
  int kind;
  uint64_t seq;
  char *data;
  int len;
  struct nitem *next;
} nitem_t;

typedef struct nclient nclient_t;

typedef struct nreq {
  broker_call_t b;
  nclient_t *c;
  uint64_t seq;
  uint64_t deadline;   /* loop time (ms) */
  int wants_reply;     /* request; 0: a publish queued while connecting */
  int sent;            /* handed to cnats */
  char *subject;       /* copied; for messages */
  char *data, *msg_id; /* copied only while queued */
  int len;
  struct nreq *hnext;       /* table chain */
  struct nreq *prev, *next; /* pending list, earliest deadline first */
} nreq_t;

struct nclient {
  uint32_t id;
  char addr[280];  /* host:port, for logs */
  char where[300]; /* "nats host:port", for messages */
  uv_loop_t *loop;
  int state;
  natsOptions *opts;
  natsConnection *nc;
  natsSubscription *sub;
  natsLibuvEvents *nle; /* the adapter's state, made on the loop for the first attach */
  int attached;         /* cnats took nle (set on the pool thread, read after the work) */
  int connecting;       /* the connect work is queued or running */
  uv_work_t work;
  natsStatus work_rc;
  char work_err[256];
  char inbox[128];
  uint64_t seq;
  nreq_t **table;
  size_t nbuckets, count;
  nreq_t *head, *tail;
  uv_timer_t timer; /* the earliest deadline */
  int timer_closed;
  int failures;
  uint64_t retry_at;
  backoff_t bo;
  char err[1024];
  int closing;
};

static struct {
  int ready; /* nats_Open and the queue are set up */
  uv_loop_t *loop;
  uv_mutex_t mu; /* guards open, head, tail */
  uv_async_t async;
  int open; /* items are accepted */
  nitem_t *head, *tail;
  nclient_t **clients; /* by id */
  uint32_t nclients;
  int connecting; /* connects on the thread pool: cnats stays open for them */
  int mu_ready;
} N;

/* The client whose first connect runs on this (pool) thread. */
static __thread nclient_t *attaching;

/* ------------------------------------------------------------------ cnats threads */

/* Queues an item for the loop (any thread). Takes `data`. */
static void post(uint32_t client, int kind, uint64_t seq, char *data, int len) {
  nitem_t *it = calloc(1, sizeof *it);
  if (!it) {
    free(data);
    return;
  }
  it->client = client;
  it->kind = kind;
  it->seq = seq;
  it->data = data;
  it->len = len;
  uv_mutex_lock(&N.mu);
  if (N.open) {
    if (N.tail)
      N.tail->next = it;
    else
      N.head = it;
    N.tail = it;
    uv_async_send(&N.async); /* under the lock: the handle is not closed meanwhile */
    it = NULL;
  }
  uv_mutex_unlock(&N.mu);
  if (it) {
    free(it->data);
    free(it);
  }
}

/* A reply on "<inbox>.<seq>" (a cnats delivery thread). */
static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure) {
  const char *subj = natsMsg_GetSubject(msg);
  const char *dot = subj ? strrchr(subj, '.') : NULL;
  uint64_t seq = dot ? strtoull(dot + 1, NULL, 10) : 0;
  int kind = natsMsg_IsNoResponders(msg) ? IT_NO_RESPONDERS : IT_REPLY;
  int len = natsMsg_GetDataLength(msg);
  char *data = malloc((size_t)len + 1);
  if (data) {
    memcpy(data, natsMsg_GetData(msg), (size_t)len);
    data[len] = '\0';
  }
  natsMsg_Destroy(msg);
  if (seq) post((uint32_t)(uintptr_t)closure, data ? kind : IT_DISCONNECTED, seq, data, len);
}

static void on_disconnected(natsConnection *nc, void *closure) {
  post((uint32_t)(uintptr_t)closure, IT_DISCONNECTED, 0, NULL, 0);
}
static void on_reconnected(natsConnection *nc, void *closure) {
  post((uint32_t)(uintptr_t)closure, IT_RECONNECTED, 0, NULL, 0);
}
static void on_closed(natsConnection *nc, void *closure) {
  post((uint32_t)(uintptr_t)closure, IT_CLOSED, 0, NULL, 0);
}

/* The adapter's attach requires its first call on the loop thread; ours comes from
 * the pool thread that connects, so the adapter's state was made on the loop
 * beforehand and is handed over here; the adapter then schedules the attach onto
 * the loop itself, as it does for reconnects. */
static natsStatus on_attach(void **user, void *loop, natsConnection *nc, natsSock fd) {
  nclient_t *c = attaching;
  if (!*user && c && c->nle) {
    c->nle->nc = nc;
    *user = c->nle;
    c->attached = 1;
  }
  return natsLibuv_Attach(user, loop, nc, fd);
}

/* ------------------------------------------------------------------ the adapter's state */

static void nle_freed(uv_handle_t *h) {
  natsLibuvEvents *nle = h->data;
  uv_mutex_destroy(nle->lock);
  free(nle->lock);
  free(nle->scheduler);
  free(nle);
}

/* What natsLibuv_Attach makes on a first attach. Returns NULL when out of memory. */
static natsLibuvEvents *nle_new(uv_loop_t *loop) {
  natsLibuvEvents *nle = calloc(1, sizeof *nle);
  if (!nle) return NULL;
  nle->lock = malloc(sizeof *nle->lock);
  nle->scheduler = malloc(sizeof *nle->scheduler);
  if (!nle->lock || !nle->scheduler || uv_mutex_init(nle->lock)) {
    free(nle->lock);
    free(nle->scheduler);
    free(nle);
    return NULL;
  }
  uv_async_init(loop, nle->scheduler, uvAsyncCb);
  nle->scheduler->data = nle;
  nle->loop = loop;
  return nle;
}

/* Frees an nle cnats never took. */
static void nle_drop(natsLibuvEvents *nle) { uv_close((uv_handle_t *)nle->scheduler, nle_freed); }

/* ------------------------------------------------------------------ requests */

/* Adds r to the table by seq. Returns 0, or -ENOMEM when there is no table yet. */
static int table_put(nclient_t *c, nreq_t *r) {
  if (c->count >= c->nbuckets) { /* grow: the table stays at most one per bucket */
    size_t n = c->nbuckets ? c->nbuckets * 2 : 256;
    nreq_t **t = calloc(n, sizeof *t);
    if (t) {
      for (size_t i = 0; i < c->nbuckets; i++)
        for (nreq_t *p = c->table[i], *next; p; p = next) {
          next = p->hnext;
          p->hnext = t[p->seq & (n - 1)];
          t[p->seq & (n - 1)] = p;
        }
      free(c->table);
      c->table = t;
      c->nbuckets = n;
    }
  }
  if (!c->nbuckets) return -ENOMEM;
  nreq_t **b = &c->table[r->seq & (c->nbuckets - 1)];
  r->hnext = *b;
  *b = r;
  c->count++;
  return 0;
}

static nreq_t *table_find(nclient_t *c, uint64_t seq) {
  if (!c->nbuckets) return NULL;
  nreq_t *r = c->table[seq & (c->nbuckets - 1)];
  while (r && r->seq != seq) r = r->hnext;
  return r;
}

/* Takes r out of the table and the pending list and frees it. */
static void req_free(nreq_t *r) {
  nclient_t *c = r->c;
  nreq_t **b = &c->table[r->seq & (c->nbuckets - 1)];
  while (*b && *b != r) b = &(*b)->hnext;
  if (*b) *b = r->hnext;
  c->count--;
  if (r->prev)
    r->prev->next = r->next;
  else
    c->head = r->next;
  if (r->next)
    r->next->prev = r->prev;
  else
    c->tail = r->prev;
  free(r->subject);
  free(r->data);
  free(r->msg_id);
  free(r);
}

static void on_deadline(uv_timer_t *t);

/* The timer follows the earliest deadline. */
static void rearm(nclient_t *c) {
  if (c->closing || !c->head) {
    uv_timer_stop(&c->timer);
    return;
  }
  uint64_t now = uv_now(c->loop);
  uv_timer_start(&c->timer, on_deadline, c->head->deadline > now ? c->head->deadline - now : 0, 0);
}

/* Ends request r with an error (its task, if still waiting, gets nil, msg). */
static void req_fail(nreq_t *r, const char *msg) {
  broker_fail(&r->b, msg);
  req_free(r);
}

static void on_deadline(uv_timer_t *t) {
  nclient_t *c = t->data;
  uint64_t now = uv_now(c->loop);
  while (c->head && c->head->deadline <= now) {
    nreq_t *r = c->head;
    char msg[1200];
    if (r->sent)
      snprintf(msg, sizeof msg, "%s: no reply on subject '%s' in time", c->where, r->subject);
    else
      snprintf(msg, sizeof msg, "%s: not connected in time", c->where);
    req_fail(r, msg);
  }
  rearm(c);
}

/* The task was abandoned: the request goes; a late reply finds nothing. */
static void on_cancel(broker_call_t *b) {
  nreq_t *r = (nreq_t *)b;
  nclient_t *c = r->c;
  req_free(r);
  rearm(c);
}

/* Fails every request of c (sent ones only when only_sent). */
static void fail_all(nclient_t *c, const char *msg, int only_sent) {
  for (nreq_t *r = c->head, *next; r; r = next) {
    next = r->next;
    if (!only_sent || r->sent) req_fail(r, msg);
  }
  rearm(c);
}

/* Hands a message to cnats. Returns NATS_OK or its error. */
static natsStatus send_msg(nclient_t *c, const char *subject, const char *reply, const char *data,
                           int len, const char *msg_id) {
  natsMsg *m = NULL;
  natsStatus s = natsMsg_Create(&m, subject, reply, data, len);
  if (s == NATS_OK && msg_id) s = natsMsgHeader_Set(m, "Nats-Msg-Id", msg_id);
  if (s == NATS_OK) s = natsConnection_PublishMsg(c->nc, m);
  natsMsg_Destroy(m);
  return s;
}

static void reply_subject(nclient_t *c, uint64_t seq, char *out, size_t n) {
  snprintf(out, n, "%s.%llu", c->inbox, (unsigned long long)seq);
}

static int push_true(lua_State *co, void *arg) {
  lua_pushboolean(co, 1);
  return 1;
}

/* Sends what was queued while connecting. */
static void send_queued(nclient_t *c) {
  for (nreq_t *r = c->head, *next; r; r = next) {
    char reply[160], msg[512];
    next = r->next;
    if (r->sent) continue;
    reply_subject(c, r->seq, reply, sizeof reply);
    natsStatus s =
        send_msg(c, r->subject, r->wants_reply ? reply : NULL, r->data, r->len, r->msg_id);
    if (s != NATS_OK) {
      snprintf(msg, sizeof msg, "%s: cannot publish: %s", c->where, natsStatus_GetText(s));
      req_fail(r, msg);
      continue;
    }
    r->sent = 1;
    free(r->data);
    free(r->msg_id);
    r->data = r->msg_id = NULL;
    if (!r->wants_reply) {
      broker_wake(&r->b, push_true, NULL);
      req_free(r);
    }
  }
  rearm(c);
}

/* ------------------------------------------------------------------ the loop side */

static int push_reply(lua_State *co, void *arg) {
  const nitem_t *it = arg;
  lua_pushlstring(co, it->data, (size_t)it->len);
  return 1;
}

static void connect_failed(nclient_t *c) {
  c->state = NS_FAILED;
  c->failures++;
  c->retry_at = uv_now(c->loop) + (uint64_t)backoff_delay(&c->bo, c->failures);
  log_at(LOG_WARN, "nats connection failed", KS("error", c->err));
  fail_all(c, c->err, 0);
}

static void handle_item(nclient_t *c, nitem_t *it) {
  char msg[1200];
  nreq_t *r;
  switch (it->kind) {
  case IT_REPLY:
  case IT_NO_RESPONDERS:
    if (!(r = table_find(c, it->seq)) || !r->sent) return; /* late: cancelled or timed out */
    if (it->kind == IT_NO_RESPONDERS) {
      snprintf(msg, sizeof msg, "%s: no responders on subject '%s'", c->where, r->subject);
      req_fail(r, msg);
    } else {
      broker_wake(&r->b, push_reply, it);
      req_free(r);
    }
    rearm(c);
    return;
  case IT_DISCONNECTED:
    snprintf(msg, sizeof msg, "%s: connection lost before the reply", c->where);
    log_at(LOG_WARN, "nats disconnected", KS("nats", c->addr));
    fail_all(c, msg, 1);
    return;
  case IT_RECONNECTED: log_at(LOG_INFO, "nats reconnected", KS("nats", c->addr)); return;
  case IT_CLOSED:
    if (c->state != NS_READY) return;
    snprintf(c->err, sizeof c->err, "%s: connection closed", c->where);
    if (c->sub) natsSubscription_Destroy(c->sub);
    natsConnection_Destroy(c->nc);
    c->sub = NULL;
    c->nc = NULL;
    connect_failed(c);
    return;
  }
}

/* Takes what cnats' threads queued; with `stop`, no more is accepted. */
static nitem_t *take_items(int stop) {
  uv_mutex_lock(&N.mu);
  nitem_t *list = N.head;
  N.head = N.tail = NULL;
  if (stop) N.open = 0;
  uv_mutex_unlock(&N.mu);
  return list;
}

/* Handles (when `handle`) and frees the items of list. */
static void drain(nitem_t *list, int handle) {
  while (list) {
    nitem_t *it = list;
    list = it->next;
    nclient_t *c = handle && it->client < N.nclients ? N.clients[it->client] : NULL;
    if (c && !c->closing) handle_item(c, it);
    free(it->data);
    free(it);
  }
}

static void on_async(uv_async_t *a) { drain(take_items(0), 1); }

/* ------------------------------------------------------------------ connecting */

static void work_connect(uv_work_t *w) {
  nclient_t *c = w->data;
  natsConnection *nc = NULL;
  attaching = c;
  c->work_rc = natsConnection_Connect(&nc, c->opts);
  attaching = NULL;
  if (c->work_rc != NATS_OK) {
    const char *e = nats_GetLastError(NULL); /* thread-local in cnats */
    const char *p = e && e[0] == '(' ? strstr(e, "): ") : NULL;
    if (p) e = p + 3; /* drop cnats' "(conn.c:2088): " */
    snprintf(c->work_err, sizeof c->work_err, "%s", e && *e ? e : natsStatus_GetText(c->work_rc));
    natsConnection_Destroy(nc);
    nc = NULL;
  }
  c->nc = nc;
}

static void free_client(nclient_t *c) {
  free(c->table);
  free(c);
}

/* Closes the connection, on the loop thread (cnats detaches from the loop). */
static void drop_connection(nclient_t *c) {
  if (c->sub) natsSubscription_Destroy(c->sub);
  if (c->nc) natsConnection_Destroy(c->nc);
  c->sub = NULL;
  c->nc = NULL;
}

static void after_connect(uv_work_t *w, int status) {
  nclient_t *c = w->data;
  char subj[160];
  c->connecting = 0;
  N.connecting--;
  if (!c->attached && c->nle) nle_drop(c->nle);
  c->nle = NULL;
  if (c->closing) {
    drop_connection(c);
    if (c->timer_closed) free_client(c);
    return;
  }
  if (status < 0 || c->work_rc != NATS_OK) {
    snprintf(c->err, sizeof c->err, "%s: %s", c->where,
             status < 0 ? uv_strerror(status) : c->work_err);
    connect_failed(c);
    return;
  }
  snprintf(subj, sizeof subj, "%s.*", c->inbox);
  natsStatus s = natsConnection_Subscribe(&c->sub, c->nc, subj, on_msg, (void *)(uintptr_t)c->id);
  if (s != NATS_OK) {
    snprintf(c->err, sizeof c->err, "%s: cannot subscribe to replies: %s", c->where,
             natsStatus_GetText(s));
    drop_connection(c);
    connect_failed(c);
    return;
  }
  c->state = NS_READY;
  c->failures = 0;
  c->err[0] = '\0';
  log_at(LOG_INFO, "nats connected", KS("nats", c->addr));
  send_queued(c);
}

/* Starts the first connect on the thread pool. Returns 0, or -1 with c->err set. */
static int start_connect(nclient_t *c) {
  c->attached = 0;
  c->nle = nle_new(c->loop);
  c->work.data = c;
  if (!c->nle || uv_queue_work(c->loop, &c->work, work_connect, after_connect)) {
    if (c->nle) nle_drop(c->nle);
    c->nle = NULL;
    snprintf(c->err, sizeof c->err, "%s: cannot start connecting", c->where);
    return -1;
  }
  c->connecting = 1;
  N.connecting++;
  c->state = NS_CONNECTING;
  return 0;
}

/* Loop-side set-up, once: cnats, the adapter, the queue. Returns 0 or -1. */
static void lib_close(void *arg);

static int lib_open(uv_loop_t *loop) {
  if (N.ready) return N.loop == loop ? 0 : -1;
  if (nats_Open(-1) != NATS_OK) return -1;
  natsLibuv_Init();
  natsLibuv_SetThreadLocalLoop(loop);
  if (!N.mu_ready && uv_mutex_init(&N.mu)) return -1;
  N.mu_ready = 1;
  uv_async_init(loop, &N.async, on_async);
  uv_unref((uv_handle_t *)&N.async);
  N.loop = loop;
  N.open = 1;
  N.ready = 1;
  /* registered before any client, so broker_shutdown closes it after them all */
  return broker_add("nats-lib", "", &N, lib_close) ? -1 : 0;
}

/* N.mu is never destroyed: a cnats thread may still post (a connection's closed
 * callback) after the library was closed; it finds N.open false. */
static void on_lib_closed(uv_handle_t *h) { (void)h; }

static void lib_close(void *arg) {
  drain(take_items(1), 0);
  uv_close((uv_handle_t *)&N.async, on_lib_closed);
  free(N.clients);
  N.clients = NULL;
  N.nclients = 0;
  N.ready = 0;
  if (!N.connecting) nats_Close(); /* else the process ends with cnats open */
}

static void on_timer_closed(uv_handle_t *h) {
  nclient_t *c = h->data;
  c->timer_closed = 1;
  if (!c->connecting) free_client(c);
}

/* broker_shutdown: pending requests go (their tasks were abandoned first). */
static void close_client(void *arg) {
  nclient_t *c = arg;
  c->closing = 1;
  while (c->head) req_free(c->head);
  if (c->id < N.nclients) N.clients[c->id] = NULL;
  uv_timer_stop(&c->timer);
  uv_close((uv_handle_t *)&c->timer, on_timer_closed);
  if (!c->connecting) drop_connection(c);
  natsOptions_Destroy(c->opts);
  c->opts = NULL;
}

static natsOptions *make_options(nclient_t *c, const char *url) {
  natsOptions *o = NULL;
  void *id = (void *)(uintptr_t)c->id;
  if (natsOptions_Create(&o) != NATS_OK) return NULL;
  if (natsOptions_SetURL(o, url) != NATS_OK ||
      natsOptions_SetEventLoop(o, c->loop, on_attach, natsLibuv_Read, natsLibuv_Write,
                               natsLibuv_Detach) != NATS_OK ||
      natsOptions_SetSendAsap(o, true) != NATS_OK || natsOptions_SetName(o, "outboxd") ||
      natsOptions_SetTimeout(o, NATS_CONNECT_TIMEOUT_MS) || natsOptions_SetMaxReconnect(o, -1) ||
      natsOptions_SetReconnectWait(o, NATS_RECONNECT_WAIT_MS) ||
      natsOptions_SetDisconnectedCB(o, on_disconnected, id) ||
      natsOptions_SetReconnectedCB(o, on_reconnected, id) ||
      natsOptions_SetClosedCB(o, on_closed, id)) {
    natsOptions_Destroy(o);
    return NULL;
  }
  return o;
}

/* A new client for url (validated), registered. Returns NULL with err set. */
static nclient_t *client_new(lua_State *L, const char *url, const broker_url_t *u, char *err,
                             size_t n) {
  natsInbox *inbox = NULL;
  nclient_t *c = calloc(1, sizeof *c);
  nclient_t **cl = realloc(N.clients, (N.nclients + 1) * sizeof *cl);
  if (cl) N.clients = cl;
  if (!c || !cl || natsInbox_Create(&inbox) != NATS_OK) {
    natsInbox_Destroy(inbox);
    free(c);
    snprintf(err, n, "nats: out of memory");
    return NULL;
  }
  snprintf(c->inbox, sizeof c->inbox, "%s", (const char *)inbox);
  natsInbox_Destroy(inbox);
  c->id = N.nclients;
  c->loop = host_loop(L);
  snprintf(c->addr, sizeof c->addr, "%s:%d", u->host, u->port);
  snprintf(c->where, sizeof c->where, "nats %s", c->addr);
  backoff_init(&c->bo, NATS_BACKOFF_BASE_MS, NATS_BACKOFF_CAP_MS, (uint64_t)(uintptr_t)c);
  if (!(c->opts = make_options(c, url))) {
    const char *e = nats_GetLastError(NULL);
    char shown[512];
    snprintf(err, n, "nats: cannot use URL %.200s: %s", store_url_redact(url, shown, sizeof shown),
             e && *e ? e : "invalid");
    free(c);
    return NULL;
  }
  uv_timer_init(c->loop, &c->timer);
  c->timer.data = c;
  uv_unref((uv_handle_t *)&c->timer);
  N.clients[N.nclients++] = c;
  if (broker_add("nats", url, c, close_client)) {
    close_client(c);
    snprintf(err, n, "nats: out of memory");
    return NULL;
  }
  return c;
}

/* ------------------------------------------------------------------ the Lua side */

/* Makes sure c is connected or connecting. Returns 0, or -1 with a message in err. */
static int ensure(nclient_t *c, char *err, size_t n) {
  switch (c->state) {
  case NS_READY:
    if (natsConnection_Status(c->nc) == NATS_CONN_STATUS_CONNECTED) return 0;
    snprintf(err, n, "%s: not connected (reconnecting)", c->where);
    return -1;
  case NS_CONNECTING: return 0;
  case NS_FAILED:
    if (uv_now(c->loop) < c->retry_at) {
      snprintf(err, n, "%s (reconnecting)", c->err);
      return -1;
    }
    /* fall through */
  default:
    if (start_connect(c)) {
      snprintf(err, n, "%s", c->err);
      return -1;
    }
    return 0;
  }
}

/* Creates a request of c, in its table and pending list; it fails after timeout_s
 * unless the task's own timeout comes first (then the host abandons the task, so
 * the handler sees "timeout", not a lost reply). NULL when out of memory. */
static nreq_t *req_new(nclient_t *c, task_t *t, const char *subject, double timeout_s) {
  nreq_t *r = calloc(1, sizeof *r);
  if (!r || !(r->subject = strdup(subject))) {
    free(r);
    return NULL;
  }
  r->c = c;
  r->b.cancel = on_cancel;
  r->seq = ++c->seq;
  r->deadline = timeout_s < host_task_time_left(t)
                    ? uv_now(c->loop) + (uint64_t)ceil(timeout_s * 1000.0)
                    : UINT64_MAX;
  if (table_put(c, r)) {
    free(r->subject);
    free(r);
    return NULL;
  }
  nreq_t *p = c->tail; /* keep the list sorted by deadline (mostly appends) */
  while (p && p->deadline > r->deadline) p = p->prev;
  r->prev = p;
  r->next = p ? p->next : c->head;
  if (r->next)
    r->next->prev = r;
  else
    c->tail = r;
  if (p)
    p->next = r;
  else
    c->head = r;
  if (c->head == r) rearm(c);
  return r;
}

/* Queues a copy of the message until the connection is up. Returns 0 or -1. */
static int req_keep(nreq_t *r, const char *data, size_t len, const char *msg_id) {
  r->len = (int)len;
  r->data = malloc(len + 1);
  if (!r->data) return -1;
  memcpy(r->data, data, len);
  if (msg_id && !(r->msg_id = strdup(msg_id))) return -1;
  return 0;
}

static int fail_now(lua_State *L, const char *msg) {
  lua_pushnil(L);
  lua_pushstring(L, msg);
  return 2;
}

static nclient_t *check_call(lua_State *L, const char *what, const char **subject,
                             const char **data, size_t *len) {
  nclient_t *c = broker_check_handle(L, 1, NATS_MT);
  *subject = luaL_checkstring(L, 2);
  if (!**subject || strpbrk(*subject, " \t\r\n"))
    luaL_argerror(L, 2, "subject must be a non-empty token without spaces");
  if (lua_type(L, 3) != LUA_TSTRING && !lua_isnoneornil(L, 3))
    luaL_argerror(L, 3, "data must be a string");
  *data = lua_isnoneornil(L, 3) ? "" : lua_tolstring(L, 3, len);
  if (lua_isnoneornil(L, 3)) *len = 0;
  if (*len > INT32_MAX) luaL_argerror(L, 3, "data too large");
  if (!host_task(L)) luaL_error(L, "outbox.nats %s can only run inside a handler or hook", what);
  return c;
}

/* client:publish(subject, data) -> true, or nil, msg. Core NATS: no ack. */
static int l_publish(lua_State *L) {
  const char *subject, *data;
  size_t len = 0;
  char err[1200];
  nclient_t *c = check_call(L, "publish", &subject, &data, &len);
  if (ensure(c, err, sizeof err)) return fail_now(L, err);
  if (c->state == NS_READY) {
    natsStatus s = send_msg(c, subject, NULL, data, (int)len, NULL);
    if (s != NATS_OK) return fail_now(L, natsStatus_GetText(s));
    lua_pushboolean(L, 1);
    return 1;
  }
  nreq_t *r = req_new(c, host_task(L), subject, NATS_DEFAULT_TIMEOUT_S);
  if (!r || req_keep(r, data, len, NULL)) {
    if (r) req_free(r);
    return luaL_error(L, "out of memory");
  }
  broker_wait(L, &r->b);
  return lua_yield(L, 0);
}

/* client:request(subject, data, {msg_id=, timeout=}) -> reply data, or nil, msg. */
static int l_request(lua_State *L) {
  const char *subject, *data, *msg_id = NULL;
  size_t len = 0;
  double timeout = NATS_DEFAULT_TIMEOUT_S;
  char err[1200], reply[160];
  nclient_t *c = check_call(L, "request", &subject, &data, &len);
  if (lua_istable(L, 4)) {
    lua_getfield(L, 4, "msg_id");
    if (!lua_isnil(L, -1) && !lua_isstring(L, -1)) luaL_argerror(L, 4, "msg_id must be a string");
    msg_id = lua_tostring(L, -1); /* stays on the stack */
    if (msg_id && (!*msg_id || strpbrk(msg_id, "\r\n")))
      luaL_argerror(L, 4, "msg_id must be non-empty, without CR or LF");
    lua_getfield(L, 4, "timeout");
    if (!lua_isnil(L, -1)) {
      timeout = lua_tonumber(L, -1);
      if (!(timeout > 0) || !isfinite(timeout)) luaL_argerror(L, 4, "timeout must be > 0 seconds");
    }
  } else if (!lua_isnoneornil(L, 4)) {
    luaL_argerror(L, 4, "options must be a table");
  }
  if (ensure(c, err, sizeof err)) return fail_now(L, err);
  nreq_t *r = req_new(c, host_task(L), subject, timeout);
  if (!r) return luaL_error(L, "out of memory");
  r->wants_reply = 1;
  if (c->state == NS_READY) {
    reply_subject(c, r->seq, reply, sizeof reply);
    natsStatus s = send_msg(c, subject, reply, data, (int)len, msg_id);
    if (s != NATS_OK) {
      snprintf(err, sizeof err, "%s: cannot publish: %s", c->where, natsStatus_GetText(s));
      req_free(r);
      rearm(c);
      return fail_now(L, err);
    }
    r->sent = 1;
  } else if (req_keep(r, data, len, msg_id)) {
    req_free(r);
    return luaL_error(L, "out of memory");
  }
  broker_wait(L, &r->b);
  return lua_yield(L, 0);
}

/* connect(url) -> client, or nil, msg. Connects on the first publish or request. */
static int l_connect(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  char err[1200];
  nclient_t *c = broker_find("nats", url);
  if (!c) {
    broker_url_t u;
    if (broker_parse_url(url, "nats", 4222, &u, err, sizeof err)) return fail_now(L, err);
    if (lib_open(host_loop(L))) return fail_now(L, "nats: cannot start the NATS library");
    if (!(c = client_new(L, url, &u, err, sizeof err))) return fail_now(L, err);
  }
  broker_push_handle(L, c, NATS_MT);
  return 1;
}

void nats_register(lua_State *L) {
  luaL_newmetatable(L, NATS_MT);
  lua_createtable(L, 0, 3);
  lua_pushcfunction(L, l_publish);
  lua_setfield(L, -2, "publish");
  lua_pushcfunction(L, l_request);
  lua_setfield(L, -2, "request");
  lua_pushvalue(L, -1);
  lua_setfield(L, -4, "nats_methods"); /* core.nats_methods */
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1); /* metatable */
  lua_pushcfunction(L, l_connect);
  lua_setfield(L, -2, "nats_connect");
}
