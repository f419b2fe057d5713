/* host — Lua states (generations) and the coroutines that run handlers and hooks.
 * Invariants: Lua is entered only through resume(); every task's coroutine is
 * anchored in its state's registry exactly once (task->ref) and released exactly
 * once (recycle or abandon); a generation is closed only when it is no longer
 * current and none of its tasks runs. A retired generation starts no timer run; once
 * its events have settled its hooks and timer runs are cancelled, so it closes. */
#include "host.h"

#include <errno.h>
#include <lauxlib.h>
#include <libgen.h>
#include <limits.h>
#include <luajit.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blockcache.h"
#include "log.h"
#include "timers.h"
#include "watchdog.h"

struct lua_embed {
  const char *name;
  const char *src;
  size_t len;
};
extern const struct lua_embed lua_embedded[];
int luaopen_cjson(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

enum { T_EVENT = 1, T_HOOK = 2, T_TIMER = 3 }; /* T_TIMER: a run of a timer */
enum { K_DONE = 0, K_FAIL = 1, K_RETRY = 2, K_REJECT = 3, K_SNOOZE = 4 };

#define LOAD_BUDGET_MS 5000
#define LUA_BLOCKS_KEPT (256 * 1024) /* freed small blocks a state keeps for reuse */
#define LOAD_GRACE_MS 2000           /* the watchdog's margin over the load budget */
#define LOAD_HOOK_COUNT 10000        /* instructions between looks at the load clock */

struct task {
  lua_State *co;
  int ref; /* registry anchor of co in gen->L */
  host_gen_t *gen;
  int kind;                   /* T_EVENT, T_HOOK or T_TIMER */
  host_timer_t *timer;        /* the timer this task runs (T_TIMER) */
  void *owner;                /* dispatcher's job (events) */
  int64_t event_id;           /* the event run, or the event a child task works for; -1 */
  char what[HOST_TIMER_NAME]; /* the event's topic, the hook's or the timer's name */
  host_wait_t wait;           /* pending asynchronous call */
  int waiting;
  unsigned token; /* for waits woken by other tasks (all_settled) */
  unsigned wait_token;
  uint64_t deadline;     /* loop time (ms) after which the run times out; 0: none */
  uint64_t due;          /* sort key in the wait list: deadline, or UINT64_MAX */
  task_t *tnext, *tprev; /* timeout list, while waiting */
  int in_tlist;
  task_t *rnext;               /* ready queue, or free list */
  int rargs;                   /* values pushed for a queued resume */
  unsigned serial;             /* this run of the task struct (host_cancel_task) */
  int live;                    /* between task_get and its end */
  int fresh;                   /* queued and never resumed yet */
  int cancel_queued;           /* cancelled while queued: abandoned when its turn comes */
  store_event_t *ev;           /* an event run's event until its outcome, else NULL */
  store_event_t **follow_tail; /* where its next follow-up (outbox.enqueue) goes */
  task_t *parent;              /* all_settled/all child: the task it works for */
  unsigned parent_serial;      /* ...during that task's run */
};

struct host_gen {
  host_t *host;
  lua_State *L;
  int number;
  int refs;          /* running tasks */
  int worker_ref;    /* Lua worker function */
  int new_event_ref; /* builds an event table (lua/outbox.lua) */
  int hooks_ref;
  int loading;
  int load_timed_out;
  uint64_t load_started;
  config_t pending_cfg;         /* outbox.configure writes here while loading */
  store_event_t *loaded_events; /* outbox.enqueue at the top level: written once it loaded */
  store_event_t **loaded_tail;
  task_t *free; /* recycled tasks (coroutines parked at DONE) */
  int events;   /* running tasks by kind */
  int hooks;
  int timer_runs;
  host_timer_t *timers; /* the timers this generation created, still anchored */
  int sweep;            /* retired and its events settled: cancel the rest */
  int swept;
  host_gen_t *next;
  lua_Alloc alloc_f; /* LuaJIT's own allocator, which lua_alloc wraps */
  void *alloc_ud;
  blockcache_t blocks; /* small blocks the state freed, for its next ones of their size */
};

/* The state of one API area (host_area_state). */
typedef struct area_slot {
  const host_area_t *area;
  void *state;
  struct area_slot *next;
} area_slot_t;

struct host {
  uv_loop_t *loop;
  config_t *cfg;
  host_callbacks_t cb;
  host_module_fn module; /* opens the outbox module's C half in each state */
  area_slot_t *areas;
  host_gen_t *gens; /* every live generation, newest first */
  host_gen_t *cur;
  int counter;
  unsigned serials; /* last task serial handed out */
  int events_running;
  int hooks_running;
  int timer_runs;  /* T_TIMER tasks running */
  timers_t timers; /* every scheduled timer, all generations */
  uv_timer_t tmtimer;
  int timers_stopped;    /* shutting down: no timer ticks or starts any more */
  task_t *thead, *ttail; /* tasks waiting, by deadline */
  uv_timer_t ttimer;
  task_t *rhead, *rtail; /* tasks to start or resume on the next loop pass */
  uv_idle_t idle;
  int closing;
  void (*close_cb)(void *);
  void *close_arg;
  int pending_closes;
  uint64_t lua_used;  /* bytes held by every Lua state together */
  uint64_t lua_limit; /* hard cap on lua_used; 0: none */
  int in_lua;         /* Lua code of a run or load is executing */
  int lua_refused;    /* allocations refused since the last look */
};

static char DONE_SENTINEL;

static void on_timeout(uv_timer_t *timer);
static void on_idle(uv_idle_t *idle);
static void close_state(host_gen_t *g);
static int timers_stop(host_gen_t *g, char *names, size_t len);
static void timer_run_ended(host_timer_t *x);
static void gen_settled(host_gen_t *g);

/* ------------------------------------------------------------------ timeouts */

static void tlist_remove(host_t *h, task_t *t) {
  if (!t->in_tlist) return;
  if (t->tprev)
    t->tprev->tnext = t->tnext;
  else
    h->thead = t->tnext;
  if (t->tnext)
    t->tnext->tprev = t->tprev;
  else
    h->ttail = t->tprev;
  t->tnext = t->tprev = NULL;
  t->in_tlist = 0;
}

static void tlist_arm(host_t *h) {
  if (!h->thead || h->thead->due == UINT64_MAX) {
    uv_timer_stop(&h->ttimer);
    return;
  }
  uint64_t now = uv_now(h->loop);
  uint64_t due = h->thead->due > now ? h->thead->due - now : 0;
  uv_timer_start(&h->ttimer, on_timeout, due, 0);
}

/* Keeps the list sorted by deadline; deadlines mostly arrive in order, so the scan
 * from the tail is O(1) in practice. */
static void tlist_add(host_t *h, task_t *t) {
  task_t *p = h->ttail;
  t->due = t->deadline ? t->deadline : UINT64_MAX;
  while (p && p->due > t->due) p = p->tprev;
  t->tprev = p;
  t->tnext = p ? p->tnext : h->thead;
  if (t->tnext)
    t->tnext->tprev = t;
  else
    h->ttail = t;
  if (p)
    p->tnext = t;
  else
    h->thead = t;
  t->in_tlist = 1;
  if (h->thead == t) tlist_arm(h);
}

/* ------------------------------------------------------------------ generations */

/* Appends `name` to the comma-separated list in buf unless it is there already. */
static void name_add(char *buf, size_t len, const char *name) {
  size_t n = strlen(name), used = strlen(buf);
  for (const char *p = buf; (p = strstr(p, name)); p += n)
    if ((p == buf || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return;
  snprintf(buf + used, len - used, "%s%s", used ? "," : "", name);
}

/* What every way of ending a generation releases: its free tasks, its timers and its
 * Lua state (not g itself). */
static void gen_release(host_gen_t *g) {
  while (g->free) {
    task_t *t = g->free;
    g->free = t->rnext;
    free(t);
  }
  timers_stop(g, NULL, 0);
  close_state(g);
}

static void gen_close(host_gen_t *g) {
  host_t *h = g->host;
  host_gen_t **pp = &h->gens;
  while (*pp && *pp != g) pp = &(*pp)->next;
  if (*pp) *pp = g->next;
  gen_release(g);
  if (!h->closing) log_at(LOG_INFO, "generation closed", KI("generation", g->number));
  if (h->cb.gen_closed) h->cb.gen_closed(h->cb.arg, g);
  free(g);
}

static void gen_unref(host_gen_t *g) {
  if (--g->refs == 0 && g != g->host->cur) gen_close(g);
}

/* ------------------------------------------------------------------ tasks */

/* Names the task (an event's topic, a hook's name), cut to fit: a plain copy, as
 * it is made for every event. */
static void task_name(task_t *t, const char *name) {
  size_t n = strnlen(name, sizeof t->what - 1);
  memcpy(t->what, name, n);
  t->what[n] = '\0';
}

static task_t *task_get(host_gen_t *g, int kind) {
  task_t *t = g->free;
  if (t) {
    g->free = t->rnext;
  } else if (!(t = calloc(1, sizeof *t))) {
    return NULL;
  }
  if (!t->co) {                                 /* new, or its coroutine was abandoned */
    t->co = lua_newthread(g->L);                /* pushes the thread */
    t->ref = luaL_ref(g->L, LUA_REGISTRYINDEX); /* anchor it, pop */
    t->gen = g;
    lua_setexdata(t->co, t);
    lua_rawgeti(t->co, LUA_REGISTRYINDEX, g->worker_ref); /* body, resumed below */
  }
  t->rnext = NULL;
  t->kind = kind;
  t->event_id = -1;
  t->what[0] = 0;
  t->deadline = 0;
  t->waiting = 0;
  t->wait.cancel = NULL;
  t->serial = ++g->host->serials;
  t->live = 1;
  t->cancel_queued = 0;
  t->timer = NULL;
  t->ev = NULL;
  t->follow_tail = NULL;
  t->parent = NULL;
  g->refs++;
  if (kind == T_EVENT)
    g->host->events_running++, g->events++;
  else if (kind == T_HOOK)
    g->host->hooks_running++, g->hooks++;
  else
    g->host->timer_runs++, g->timer_runs++;
  return t;
}

static void task_end(task_t *t) {
  host_gen_t *g = t->gen;
  host_t *h = g->host;
  t->live = 0;
  if (t->kind == T_EVENT) {
    h->events_running--;
    if (--g->events == 0) gen_settled(g);
  } else if (t->kind == T_HOOK) {
    h->hooks_running--, g->hooks--;
  } else {
    h->timer_runs--, g->timer_runs--;
    if (t->timer) timer_run_ended(t->timer);
    t->timer = NULL;
  }
}

/* Parks a finished task's coroutine for reuse. */
static void task_recycle(task_t *t) {
  host_gen_t *g = t->gen;
  lua_settop(t->co, 0);
  t->owner = NULL;
  t->rnext = g->free;
  g->free = t;
  task_end(t);
  gen_unref(g);
}

/* Drops a task whose coroutine cannot be reused (error, timeout, cancel). */
static void task_abandon(task_t *t) {
  host_gen_t *g = t->gen;
  tlist_remove(g->host, t);
  if (t->waiting && t->wait.cancel) t->wait.cancel(t, t->wait.data);
  t->waiting = 0;
  lua_setexdata(t->co, NULL);
  luaL_unref(g->L, LUA_REGISTRYINDEX, t->ref);
  /* The struct is kept for reuse until the generation closes: coroutines the
   * handler created inherit a pointer to it, and host_task() must find it valid
   * (t->co no longer matches them). */
  t->co = NULL;
  t->owner = NULL;
  t->rnext = g->free;
  g->free = t;
  task_end(t);
  gen_unref(g);
}

/* Tells the dispatcher how an event's run ended. Only a run that is done keeps the
 * follow-ups it enqueued; the event is the dispatcher's again. */
static void report(task_t *t, int outcome, const char *msg, double delay) {
  host_t *h = t->gen->host;
  if (t->kind != T_EVENT) return;
  if (t->ev && outcome != HOST_DONE) {
    store_event_list_free(t->ev->follow);
    t->ev->follow = NULL;
  }
  t->ev = NULL;
  if (h->cb.outcome) h->cb.outcome(t->owner, outcome, msg, delay);
}

/* ------------------------------------------------------------------ runs */

/* Lua code runs between run_begin and run_end: the watchdog times it against the
 * CPU limit and the allocator holds it to the Lua memory limit. */
static void run_begin(host_t *h, int kind, int64_t event_id, const char *what, uint64_t limit_ms) {
  h->in_lua = 1;
  watchdog_enter(kind, event_id, what, limit_ms);
}

static void run_end(host_t *h) {
  watchdog_leave();
  h->in_lua = 0;
}

/* After a run that met the Lua memory limit: collect, say so, fire memory:high. */
static void after_refusal(host_t *h, int64_t event_id) {
  if (!h->lua_refused || h->closing) return;
  h->lua_refused = 0;
  uint64_t before = h->lua_used;
  host_full_gc(h);
  log_at(LOG_WARN, "Lua memory limit reached: allocation refused", KI("id", event_id),
         KI("lua_memory_limit", h->lua_limit), KI("lua_heap_before_gc", before),
         KI("lua_heap", h->lua_used));
  if (h->cb.lua_limit_met) h->cb.lua_limit_met(h->cb.arg);
}

/* The one resume path: runs the coroutine until it yields or ends, and settles
 * what that means. nargs values are on t->co's stack. */
static void resume(task_t *t, int nargs) {
  host_t *h = t->gen->host;
  t->fresh = 0;
  run_begin(h, t->event_id >= 0 ? WATCHDOG_EVENT : WATCHDOG_HOOK, t->event_id, t->what,
            (uint64_t)h->cfg->cpu_limit_ms);
  int rc = lua_resume(t->co, nargs);
  run_end(h);
  after_refusal(h, t->event_id);
  if (rc == LUA_YIELD) {
    if (lua_gettop(t->co) >= 2 && lua_touserdata(t->co, 1) == &DONE_SENTINEL) {
      int kind = (int)lua_tointeger(t->co, 2);
      if (t->kind == T_EVENT) {
        static const int map[] = {HOST_DONE, HOST_FAIL, HOST_RETRY, HOST_REJECT, HOST_SNOOZE};
        int later = kind == K_RETRY || kind == K_SNOOZE; /* (delay, reason) follow */
        int at = later ? 4 : 3;
        const char *msg = lua_isnoneornil(t->co, at) ? NULL : lua_tostring(t->co, at);
        double delay = later ? lua_tonumber(t->co, 3) : -1.0;
        if (!msg && later) msg = kind == K_RETRY ? "retry requested" : "snoozed";
        if (kind < K_DONE || kind > K_SNOOZE) kind = K_FAIL;
        report(t, map[kind], msg ? msg : (kind == K_FAIL ? "error" : NULL), delay);
      }
      task_recycle(t);
      return;
    }
    if (t->waiting) {
      if (!t->in_tlist) tlist_add(h, t); /* every waiting task is listed */
      return;
    }
    lua_settop(t->co, 0);
    lua_pushliteral(t->co, "coroutine.yield() is not allowed in a handler; use outbox.sleep");
    rc = LUA_ERRRUN;
  }
  /* An error escaped the worker, or the worker returned: the coroutine is done. */
  const char *msg = lua_tostring(t->co, -1);
  if (t->kind == T_EVENT) {
    report(t, HOST_FAIL, msg ? msg : "handler coroutine died", -1);
  } else {
    log_at(LOG_ERROR, "hook coroutine died", KS("error", msg ? msg : "?"));
  }
  task_abandon(t);
}

static void ready_push(host_t *h, task_t *t, int nargs) {
  t->rargs = nargs;
  t->rnext = NULL;
  if (h->rtail)
    h->rtail->rnext = t;
  else
    h->rhead = t;
  h->rtail = t;
  uv_idle_start(&h->idle, on_idle);
}

static void on_idle(uv_idle_t *idle) { host_run_ready(idle->data); }

static void sweep_retired(host_t *h);

void host_run_ready(host_t *h) {
  sweep_retired(h);
  task_t *list = h->rhead;
  uint64_t now = uv_now(h->loop);
  h->rhead = h->rtail = NULL;
  uv_idle_stop(&h->idle);
  while (list) { /* everything ready now runs in one pass */
    task_t *t = list;
    list = t->rnext;
    t->rnext = NULL;
    if (t->cancel_queued) { /* outbox.all gave up on it before it ran */
      task_abandon(t);
      continue;
    }
    if (t->kind == T_TIMER && t->fresh && (t->gen != h->cur || h->timers_stopped)) {
      task_abandon(t); /* its generation retired, or the host stops: it never starts */
      continue;
    }
    if (t->deadline && t->deadline <= now) { /* e.g. all_settled children of a run that timed out */
      if (t->kind == T_EVENT) report(t, HOST_TIMEOUT, "timeout", -1);
      task_abandon(t);
      continue;
    }
    resume(t, t->rargs);
  }
}

/* Abandons the queued tasks of generation g (every queued task when g is NULL);
 * the others stay queued. Tasks queued meanwhile (hooks fired by an outcome) are
 * kept. Returns how many events were cancelled. */
static int ready_cancel(host_t *h, host_gen_t *g) {
  task_t *list = h->rhead;
  int n = 0;
  h->rhead = h->rtail = NULL;
  while (list) {
    task_t *t = list;
    list = t->rnext;
    t->rnext = NULL;
    if (g && t->gen != g) {
      ready_push(h, t, t->rargs);
      continue;
    }
    if (t->kind == T_EVENT) report(t, HOST_CANCELLED, "cancelled", -1), n++;
    task_abandon(t);
  }
  return n;
}

static void on_timeout(uv_timer_t *timer) {
  host_t *h = timer->data;
  uint64_t now = uv_now(h->loop);
  while (h->thead && h->thead->due <= now) {
    task_t *t = h->thead;
    tlist_remove(h, t);
    if (t->kind == T_EVENT) {
      log_at(LOG_WARN, "handler timed out", KI("id", t->event_id),
             KI("timeout_ms", h->cfg->timeout_ms));
      report(t, HOST_TIMEOUT, "timeout", -1);
    }
    task_abandon(t);
  }
  tlist_arm(h);
}

/* ------------------------------------------------------------------ public: tasks */

task_t *host_task(lua_State *L) {
  task_t *t = lua_getexdata(L);
  return t && t->co == L ? t : NULL;
}

host_gen_t *host_gen_of(lua_State *L) { return lua_getexdata2(L); }

host_t *host_of(lua_State *L) {
  host_gen_t *g = host_gen_of(L);
  return g ? g->host : NULL;
}

uv_loop_t *host_loop(lua_State *L) { return host_of(L)->loop; }

config_t *host_config(lua_State *L) {
  host_gen_t *g = host_gen_of(L);
  return g->loading ? &g->pending_cfg : g->host->cfg;
}

int host_wait(lua_State *L, void (*cancel)(task_t *t, void *data), void *data) {
  task_t *t = host_task(L);
  if (!t || t->co != L || t->waiting) return -EINVAL;
  t->waiting = 1;
  t->wait.cancel = cancel;
  t->wait.data = data;
  return 0;
}

/* Ends t's wait; returns how many values `push` left for the resume. */
static int wake_begin(task_t *t, int (*push)(lua_State *co, void *arg), void *arg) {
  t->waiting = 0;
  t->wait.cancel = NULL;
  tlist_remove(t->gen->host, t);
  return push ? push(t->co, arg) : 0;
}

void host_wake(task_t *t, int (*push)(lua_State *co, void *arg), void *arg) {
  if (t->waiting) resume(t, wake_begin(t, push, arg));
}

void host_wake_later(task_t *t, int (*push)(lua_State *co, void *arg), void *arg) {
  if (t->waiting) ready_push(t->gen->host, t, wake_begin(t, push, arg));
}

int64_t host_task_event(task_t *t) { return t->kind == T_EVENT ? t->event_id : -1; }

double host_task_time_left(task_t *t) {
  if (!t || !t->deadline) return 1e9;
  uint64_t now = uv_now(t->gen->host->loop);
  return t->deadline > now ? (double)(t->deadline - now) / 1000.0 : 0.0;
}

/* ---- spawned coroutines (outbox.all, outbox.all_settled, timers): api_core.c's
 * core.spawn / core.wait_children call these */

/* Queues fn(arg) to start in a new hook-kind coroutine of L's generation on the
 * next loop pass; a child of a running event inherits its deadline. */
static task_t *spawn(lua_State *L, int fn_idx, int arg_idx, const char *name, int kind) {
  host_gen_t *g = host_gen_of(L);
  task_t *parent = host_task(L);
  task_t *t = task_get(g, kind);
  if (!t) return NULL;
  if (parent && parent->event_id >= 0) { /* a child works for its parent's event */
    t->event_id = parent->event_id;
    memcpy(t->what, parent->what, sizeof t->what);
  } else {
    task_name(t, name ? name : "?");
  }
  if (parent && parent->deadline)
    t->deadline = parent->deadline;
  else if (parent && parent->kind == T_EVENT && g->host->cfg->timeout_ms > 0)
    t->deadline = uv_now(g->host->loop) + (uint64_t)g->host->cfg->timeout_ms;
  lua_pushinteger(t->co, kind);
  lua_pushvalue(L, fn_idx);
  lua_xmove(L, t->co, 1);
  lua_pushvalue(L, arg_idx);
  lua_xmove(L, t->co, 1);
  lua_pushstring(t->co, name ? name : "?");
  t->fresh = 1;
  ready_push(g->host, t, 4);
  return t;
}

int host_spawn(lua_State *L, int fn_idx, int arg_idx, const char *name, int child) {
  task_t *parent = host_task(L);
  task_t *t = spawn(L, fn_idx, arg_idx, name, T_HOOK);
  if (!t) return -ENOMEM;
  if (child && parent) {
    t->parent = parent;
    t->parent_serial = parent->serial;
  }
  return 0;
}

int host_enqueue(lua_State *L, store_event_t *ev) {
  task_t *t = host_task(L);
  host_t *h = host_of(L);
  while (t && t->parent) { /* a child joins the run it works for, while that runs */
    if (!t->parent->live || t->parent->serial != t->parent_serial) break;
    t = t->parent;
  }
  if (t && t->kind == T_EVENT && t->ev) {
    *t->follow_tail = ev;
    t->follow_tail = &ev->next;
    return 1;
  }
  host_gen_t *g = host_gen_of(L);
  if (g && g->loading) { /* the top level: written when (if) the script loads */
    *g->loaded_tail = ev;
    g->loaded_tail = &ev->next;
    return 0;
  }
  if (h && h->cb.enqueue)
    h->cb.enqueue(h->cb.arg, ev);
  else
    store_event_free(ev);
  return 0;
}

unsigned host_token(task_t *t) { return ++t->token; }

unsigned host_task_serial(task_t *t) { return t->serial; }

int host_cancel_task(lua_State *L, task_t *t, unsigned serial) {
  if (!t || !t->live || t->serial != serial || !t->co || t == host_task(L)) return 0;
  if (t->kind == T_EVENT) return 0; /* only children: events end through the dispatcher */
  if (t->waiting) {
    tlist_remove(t->gen->host, t);
    task_abandon(t);
  } else {
    t->cancel_queued = 1; /* in the ready queue */
  }
  return 1;
}

int host_wait_token(lua_State *L, unsigned token) {
  task_t *t = host_task(L);
  if (host_wait(L, NULL, NULL)) return -EINVAL;
  t->wait_token = token;
  return 0;
}

void host_wake_token(task_t *t, unsigned token) {
  if (!t->waiting || t->wait_token != token) return;
  t->waiting = 0;
  tlist_remove(t->gen->host, t);
  ready_push(t->gen->host, t, 0);
}

/* ------------------------------------------------------------------ events */

#define EVENT_ARGS 8

/* Pushes the EVENT_ARGS arguments of new_event (lua/outbox.lua) for ev. */
static void push_event_args(lua_State *co, const store_event_t *ev) {
  lua_pushnumber(co, (lua_Number)ev->id);
  lua_pushstring(co, ev->topic);
  if (ev->key)
    lua_pushstring(co, ev->key);
  else
    lua_pushnil(co);
  lua_pushlstring(co, ev->payload, ev->payload_len);
  lua_pushboolean(co, ev->payload_escaped);
  if (ev->headers)
    lua_pushstring(co, ev->headers);
  else
    lua_pushnil(co);
  lua_pushinteger(co, ev->attempts + 1);
  lua_pushnumber(co, (lua_Number)ev->created_at);
}

/* Pushes the event table of ev. */
static void push_event(host_gen_t *g, lua_State *L, const store_event_t *ev) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->new_event_ref);
  push_event_args(L, ev);
  lua_call(L, EVENT_ARGS, 1);
}

int host_run(host_t *h, store_event_t *ev, void *owner, int64_t timeout_ms) {
  host_gen_t *g = h->cur;
  task_t *t = task_get(g, T_EVENT);
  if (!t) return -ENOMEM;
  t->owner = owner;
  t->ev = ev;
  t->follow_tail = &ev->follow;
  while (*t->follow_tail) t->follow_tail = &(*t->follow_tail)->next;
  t->event_id = ev->id;
  task_name(t, ev->topic);
  if (timeout_ms > 0) t->deadline = uv_now(h->loop) + (uint64_t)timeout_ms;
  lua_pushinteger(t->co, T_EVENT);
  push_event_args(t->co, ev); /* the worker builds the table */
  resume(t, 1 + EVENT_ARGS);
  return 0;
}

/* ------------------------------------------------------------------ hooks */

/* host_fire and host_fire_breaker: the argument is {event=, error=} with `ev`,
 * {error=} with only `err`, else the stats (plus `breaker` when given). */
static void fire(host_t *h, const char *name, const store_event_t *ev, const char *err,
                 const char *breaker) {
  host_gen_t *g = h->cur;
  if (!g || h->closing) return;
  lua_State *L = g->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, g->hooks_ref);
  lua_getfield(L, -1, name); /* hooks[name] */
  if (!lua_istable(L, -1)) {
    lua_pop(L, 2); /* nil, hooks */
    return;
  }
  int n = (int)lua_objlen(L, -1);
  if (ev) {
    lua_createtable(L, 0, 2);
    push_event(g, L, ev);
    lua_setfield(L, -2, "event");
    lua_pushstring(L, err ? err : "");
    lua_setfield(L, -2, "error");
  } else if (err) {
    lua_createtable(L, 0, 1);
    lua_pushstring(L, err);
    lua_setfield(L, -2, "error");
  } else {
    host_push_stats(L);
    if (breaker) {
      lua_pushstring(L, breaker);
      lua_setfield(L, -2, "breaker");
    }
  }
  for (int i = 1; i <= n; i++) {
    lua_rawgeti(L, -2, i); /* fn */
    host_spawn(L, lua_gettop(L), lua_gettop(L) - 1, name, 0);
    lua_pop(L, 1); /* fn */
  }
  lua_pop(L, 3); /* arg, list, hooks */
}

void host_fire(host_t *h, const char *name, const store_event_t *ev, const char *err) {
  fire(h, name, ev, err, NULL);
}

void host_fire_breaker(host_t *h, const char *name, const char *breaker) {
  fire(h, name, NULL, NULL, breaker);
}

/* ------------------------------------------------------------------ timers */

/* A timer of outbox.every / outbox.after: a userdata of its generation's state. While
 * it is scheduled or a run of it goes on, it is anchored in the registry (with its
 * function) and listed in gen->timers; after that Lua may collect it. */
struct host_timer {
  timers_entry_t e;          /* first: entries popped from h->timers cast back */
  host_gen_t *gen;           /* NULL once released */
  host_timer_t *next, *prev; /* gen->timers */
  int self_ref, fn_ref;
  char name[HOST_TIMER_NAME];
};

static void on_tmtimer(uv_timer_t *tm);

static void timers_arm(host_t *h) {
  uint64_t due = timers_next(&h->timers);
  if (due == UINT64_MAX) {
    uv_timer_stop(&h->tmtimer);
    return;
  }
  uint64_t now = uv_now(h->loop);
  uv_timer_start(&h->tmtimer, on_tmtimer, due > now ? due - now : 0, 0);
}

/* Releases x once it neither ticks again nor runs: unlisted and unanchored (Lua may
 * then collect it, so x is not touched after the last unref). */
static void timer_settle(host_timer_t *x) {
  host_gen_t *g = x->gen;
  if (!g || timers_scheduled(&x->e) || x->e.running) return;
  if (x->prev)
    x->prev->next = x->next;
  else
    g->timers = x->next;
  if (x->next) x->next->prev = x->prev;
  x->next = x->prev = NULL;
  x->gen = NULL;
  int fn_ref = x->fn_ref, self_ref = x->self_ref;
  luaL_unref(g->L, LUA_REGISTRYINDEX, fn_ref);
  luaL_unref(g->L, LUA_REGISTRYINDEX, self_ref);
}

static void timer_run_ended(host_timer_t *x) {
  timers_done(&x->e);
  timer_settle(x);
}

/* Takes g's timers out of the schedule; their names go to `names` (may be NULL).
 * Runs going on are left alone. Returns how many were scheduled. */
static int timers_stop(host_gen_t *g, char *names, size_t len) {
  host_t *h = g->host;
  int n = 0;
  for (host_timer_t *x = g->timers, *next; x; x = next) {
    next = x->next;
    if (timers_scheduled(&x->e)) {
      timers_remove(&h->timers, &x->e);
      if (names) name_add(names, len, x->name);
      n++;
    }
    timer_settle(x);
  }
  timers_arm(h);
  return n;
}

/* Each tick due starts a run of its timer in a coroutine of the timer's generation,
 * unless the last run still goes (skipped, counted by the schedule). */
static void on_tmtimer(uv_timer_t *tm) {
  host_t *h = tm->data;
  uint64_t now = uv_now(h->loop);
  timers_entry_t *e;
  int run;
  while ((e = timers_pop(&h->timers, now, &run))) {
    host_timer_t *x = (host_timer_t *)e;
    if (!run) {
      log_at(LOG_DEBUG, "timer tick skipped: its last run still goes", KS("timer", x->name),
             KI("skipped", (int64_t)e->skipped));
      continue;
    }
    lua_State *L = x->gen->L;
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->fn_ref);
    lua_rawgeti(L, LUA_REGISTRYINDEX, x->self_ref); /* fn(handle) */
    task_t *t = spawn(L, lua_gettop(L) - 1, lua_gettop(L), x->name, T_TIMER);
    lua_pop(L, 2); /* handle, fn */
    if (t) {
      t->timer = x;
    } else {
      log_at(LOG_ERROR, "timer run not started: out of memory", KS("timer", x->name));
      timer_run_ended(x);
    }
  }
  timers_arm(h);
}

int host_timer_start(lua_State *L, int fn_idx, uint64_t delay_ms, uint64_t period_ms,
                     const char *name, const char **why) {
  host_gen_t *g = host_gen_of(L);
  host_t *h = g->host;
  if (h->closing || h->timers_stopped) {
    *why = "the host is shutting down";
    return -ECANCELED;
  }
  if (!g->loading && g != h->cur) {
    *why = "its generation was replaced by a reload";
    return -ECANCELED;
  }
  if (fn_idx < 0) fn_idx = lua_gettop(L) + fn_idx + 1;
  /* Lua allocations first: one refused raises, and nothing points at x yet */
  host_timer_t *x = lua_newuserdata(L, sizeof *x);
  memset(x, 0, sizeof *x);
  timers_entry_init(&x->e);
  snprintf(x->name, sizeof x->name, "%s", name);
  luaL_getmetatable(L, HOST_TIMER_MT);
  lua_setmetatable(L, -2);
  lua_pushvalue(L, fn_idx);
  int fn_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_pushvalue(L, -1);
  int self_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  uv_update_time(h->loop); /* the cached loop time may be old (a load, a long pass) */
  if (timers_add(&h->timers, &x->e, uv_now(h->loop), delay_ms, period_ms)) {
    luaL_unref(L, LUA_REGISTRYINDEX, fn_ref);
    luaL_unref(L, LUA_REGISTRYINDEX, self_ref);
    lua_pop(L, 1); /* the userdata */
    *why = "out of memory";
    return -ENOMEM;
  }
  x->fn_ref = fn_ref;
  x->self_ref = self_ref;
  x->gen = g;
  x->next = g->timers;
  if (g->timers) g->timers->prev = x;
  g->timers = x;
  timers_arm(h);
  return 0;
}

int host_timer_cancel(host_timer_t *x) {
  host_gen_t *g = x->gen;
  if (!g || !timers_scheduled(&x->e)) return 0;
  timers_remove(&g->host->timers, &x->e);
  timers_arm(g->host);
  timer_settle(x);
  return 1;
}

void host_timer_info(const host_timer_t *x, host_timer_info_t *out) {
  out->name = x->name;
  out->runs = x->e.runs;
  out->skipped = x->e.skipped;
  out->scheduled = x->gen && timers_scheduled(&x->e);
  out->running = x->e.running;
}

int host_stop_timers(host_t *h, char *names, size_t len) {
  int n = 0;
  if (len) names[0] = 0;
  h->timers_stopped = 1;
  for (host_gen_t *g = h->gens; g; g = g->next) n += timers_stop(g, names, len);
  return n;
}

size_t host_timers(const host_t *h) { return timers_count(&h->timers); }

int host_timers_running(const host_t *h) { return h->timer_runs; }

uint64_t host_timer_skips(const host_t *h) { return h->timers.skipped; }

/* ------------------------------------------------------------------ routes */

/* Reads field `k` of the table on top of L as a number (0 when absent). */
static double num_field(lua_State *L, const char *k) {
  lua_getfield(L, -1, k);
  double v = lua_tonumber(L, -1);
  lua_pop(L, 1); /* the value */
  return v;
}

static const char *str_field(lua_State *L, const char *k) {
  lua_getfield(L, -1, k);
  const char *v = lua_tostring(L, -1); /* kept alive by the spec table */
  lua_pop(L, 1);                       /* the value */
  return v;
}

int host_routes(host_t *h, int (*fn)(void *arg, const route_spec_t *specs, int n), void *arg) {
  if (!h->cur) return fn(arg, NULL, 0);
  lua_State *L = h->cur->L;
  lua_getfield(L, LUA_REGISTRYINDEX, "outbox.internals");
  lua_getfield(L, -1, "route_specs");
  lua_call(L, 0, 1); /* the list of specs, anchored on the stack during fn */
  int n = (int)lua_objlen(L, -1);
  route_spec_t *specs = calloc(n > 0 ? (size_t)n : 1, sizeof *specs);
  if (!specs) {
    lua_pop(L, 2); /* list, internals */
    return -ENOMEM;
  }
  for (int i = 0; i < n; i++) {
    route_spec_t *x = &specs[i];
    lua_rawgeti(L, -1, i + 1);
    x->pattern = str_field(L, "pattern");
    x->breaker = str_field(L, "breaker");
    x->concurrency = (int)num_field(L, "concurrency");
    x->rate = num_field(L, "rate");
    x->timeout_ms = (int64_t)(num_field(L, "timeout") * 1000.0);
    x->slow_ms = (int64_t)(num_field(L, "slow") * 1000.0);
    lua_pop(L, 1); /* the spec, still referenced by the list */
  }
  int rc = fn(arg, specs, n);
  free(specs);
  lua_pop(L, 2); /* list, internals */
  return rc;
}

int host_catch_all(host_t *h) {
  if (!h->cur) return 1;
  lua_State *L = h->cur->L;
  lua_getfield(L, LUA_REGISTRYINDEX, "outbox.internals");
  lua_getfield(L, -1, "has_default");
  lua_call(L, 0, 1);
  int yes = lua_toboolean(L, -1);
  lua_pop(L, 2); /* result, internals */
  return yes;
}

/* ------------------------------------------------------------------ loading */

/* The load budget. The script's top level runs with the JIT off, so this count hook
 * is called even inside loops (LuaJIT calls no hook inside compiled traces). */
static void load_hook(lua_State *L, lua_Debug *ar) {
  host_gen_t *g = host_gen_of(L);
  (void)ar;
  if (!g || !g->loading || watchdog_now_ms() - g->load_started <= LOAD_BUDGET_MS) return;
  g->load_timed_out = 1;
  lua_pushliteral(L, "did not finish loading");
  lua_error(L);
}

static int traceback_first_line(lua_State *L) {
  if (!lua_isstring(L, 1)) lua_pushstring(L, "(error object is not a string)");
  return 1;
}

static void set_package_path(lua_State *L, const char *script) {
  char tmp[PATH_MAX];
  snprintf(tmp, sizeof tmp, "%s", script);
  const char *dir = dirname(tmp);
  lua_getglobal(L, "package");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;", dir, dir);
  lua_getfield(L, -2, "path");
  lua_concat(L, 2);
  lua_setfield(L, -2, "path");
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pushcfunction(L, luaopen_cjson_safe);
  lua_setfield(L, -2, "cjson.safe");
  lua_pop(L, 2); /* preload, package */
}

/* Runs lua/outbox.lua; leaves nothing on the stack. */
static int load_module(host_gen_t *g, char *err, size_t errlen) {
  lua_State *L = g->L;
  const struct lua_embed *e = lua_embedded;
  while (e->name && strcmp(e->name, "outbox") != 0) e++;
  if (!e->name || luaL_loadbuffer(L, e->src, e->len, "=outbox")) {
    snprintf(err, errlen, "internal: cannot load the outbox module");
    return -EINVAL;
  }
  g->host->module(L, &DONE_SENTINEL); /* the C half */
  if (lua_pcall(L, 1, 2, 0)) {
    snprintf(err, errlen, "internal: %s", lua_tostring(L, -1));
    return -EINVAL;
  }
  lua_getfield(L, -1, "worker");
  g->worker_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, -1, "new_event");
  g->new_event_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, -1, "hooks");
  g->hooks_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_setfield(L, LUA_REGISTRYINDEX, "outbox.internals"); /* pops internals */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "loaded");
  lua_pushvalue(L, -3);
  lua_setfield(L, -2, "outbox");
  lua_pop(L, 2); /* loaded, package */
  lua_setglobal(L, "outbox");
  return 0;
}

/* Runs the script; its result becomes the default handler. */
static int load_script(host_gen_t *g, const char *path, char *err, size_t errlen) {
  lua_State *L = g->L;
  lua_pushcfunction(L, traceback_first_line);
  if (luaL_loadfile(L, path)) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    return -EINVAL;
  }
  g->loading = 1;
  g->load_started = watchdog_now_ms();
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_OFF);
  lua_sethook(L, load_hook, LUA_MASKCOUNT, LOAD_HOOK_COUNT);
  run_begin(g->host, WATCHDOG_LOAD, -1, path, LOAD_BUDGET_MS + LOAD_GRACE_MS);
  int rc = lua_pcall(L, 0, 1, -2);
  run_end(g->host);
  lua_sethook(L, NULL, 0, 0);
  luaJIT_setmode(L, 0, LUAJIT_MODE_ENGINE | LUAJIT_MODE_ON);
  g->loading = 0;
  if (g->load_timed_out) {
    snprintf(err, errlen, "%s: did not finish loading within %d s", path, LOAD_BUDGET_MS / 1000);
    return -EINVAL;
  }
  if (rc) {
    snprintf(err, errlen, "%s", lua_tostring(L, -1));
    return -EINVAL;
  }
  lua_getfield(L, LUA_REGISTRYINDEX, "outbox.internals");
  int has_fn = lua_isfunction(L, -2);
  if (!lua_isnil(L, -2) && !has_fn) {
    snprintf(err, errlen, "%s: the script returned a %s; return a handler function", path,
             luaL_typename(L, -2));
    return -EINVAL;
  }
  lua_getfield(L, -1, "set_handler");
  lua_pushvalue(L, -3);
  lua_call(L, 1, 0);
  lua_getfield(L, -1, "has_routes");
  lua_call(L, 0, 1);
  int routes = lua_toboolean(L, -1);
  lua_pop(L, 4); /* has_routes result, internals, script result, traceback fn */
  if (!has_fn && !routes) {
    snprintf(err, errlen, "%s: no handler: return a function or route topics with outbox.handle",
             path);
    return -EINVAL;
  }
  return 0;
}

/* Every Lua state allocates here: one count for all of them, and a hard cap that
 * only Lua code meets ("not enough memory" in that code). The host's own calls on a
 * state (a new coroutine, an event table) are never refused: an error there would
 * be unprotected. A run that met the cap is followed at once by a full collection. */
static void *lua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  host_gen_t *g = ud;
  host_t *h = g->host;
  if (!ptr) osize = 0;
  if (nsize > osize && h->lua_limit && h->in_lua && h->lua_used + (nsize - osize) > h->lua_limit) {
    h->lua_refused++;
    return NULL;
  }
  void *p;
  if (nsize == 0 && blockcache_keep(&g->blocks, ptr, osize)) {
    p = NULL;
  } else if (!(osize == 0 && (p = blockcache_take(&g->blocks, nsize)))) {
    /* LuaJIT's allocator maps big blocks on their own: freeing them gives memory back */
    p = g->alloc_f(g->alloc_ud, ptr, osize, nsize);
    if (!p && nsize) {
      h->lua_refused += nsize > osize;
      return NULL;
    }
  }
  h->lua_used = h->lua_used + nsize - osize;
  return p;
}

/* How many bytes the state holds, by its collector's count. */
static uint64_t state_bytes(lua_State *L) {
  return (uint64_t)lua_gc(L, LUA_GCCOUNT, 0) * 1024 + (uint64_t)lua_gc(L, LUA_GCCOUNTB, 0);
}

/* Frees a block g's state had freed and its cache kept. */
static void free_block(void *arg, void *p, size_t size) {
  host_gen_t *g = arg;
  g->alloc_f(g->alloc_ud, p, size, 0);
}

/* Closes g's state with LuaJIT's own allocator back in place, so that allocator is
 * destroyed too (LuaJIT only destroys its own). */
static void close_state(host_gen_t *g) {
  uint64_t held = state_bytes(g->L);
  host_t *h = g->host;
  h->lua_used = h->lua_used > held ? h->lua_used - held : 0;
  blockcache_drain(&g->blocks, free_block, g);
  lua_setallocf(g->L, g->alloc_f, g->alloc_ud);
  lua_close(g->L);
}

/* A state of LuaJIT's own allocator, then wrapped by lua_alloc; what it holds so
 * far is counted. Returns NULL when out of memory. */
static lua_State *new_state(host_gen_t *g) {
  lua_State *L = luaL_newstate();
  if (!L) return NULL;
  g->alloc_f = lua_getallocf(L, &g->alloc_ud);
  blockcache_init(&g->blocks, LUA_BLOCKS_KEPT);
  g->host->lua_used += state_bytes(L);
  lua_setallocf(L, lua_alloc, g);
  return L;
}

/* An error outside any protected call (only out of memory can get there). */
static int on_panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  log_at(LOG_ERROR, "Lua error outside a protected call: exiting", KS("error", msg ? msg : "?"));
  return 0; /* LuaJIT then exits the process */
}

/* Frees a generation whose script failed to load. Its top level may have queued
 * coroutines (outbox.emit, outbox.all_settled): they leave the ready queue first. */
static void gen_discard(host_gen_t *g) {
  host_t *h = g->host;
  task_t **pp = &h->rhead;
  h->rtail = NULL;
  while (*pp) {
    task_t *t = *pp;
    if (t->gen != g) {
      h->rtail = t;
      pp = &t->rnext;
      continue;
    }
    *pp = t->rnext;
    task_end(t);
    free(t);
  }
  if (!h->rhead) uv_idle_stop(&h->idle);
  store_event_list_free(g->loaded_events); /* a script that failed to load writes nothing */
  gen_release(g);
  free(g);
}

/* The generation before the current one: its timers stop at once; it closes when
 * nothing runs there, and what runs besides events is cancelled once they settle. */
static void gen_retire(host_gen_t *old) {
  char names[256] = "";
  int n = timers_stop(old, names, sizeof names);
  if (n)
    log_at(LOG_INFO, "old generation: timers stopped", KI("generation", old->number),
           KI("timers", n), KS("stopped", names));
  if (old->refs == 0)
    gen_close(old);
  else if (old->events == 0)
    gen_settled(old);
}

int host_load(host_t *h, const char *path, char *err, size_t errlen) {
  host_gen_t *g = calloc(1, sizeof *g);
  if (!g) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  g->host = h;
  g->number = h->counter + 1;
  g->pending_cfg = *h->cfg;
  g->loaded_tail = &g->loaded_events;
  g->L = new_state(g);
  if (!g->L) {
    free(g);
    snprintf(err, errlen, "cannot create a Lua state");
    return -ENOMEM;
  }
  lua_atpanic(g->L, on_panic);
  lua_setexdata2(g->L, g);
  luaL_openlibs(g->L);
  set_package_path(g->L, path);
  if (load_module(g, err, errlen) || load_script(g, path, err, errlen)) {
    gen_discard(g);
    return -EINVAL;
  }
  lua_gc(g->L, LUA_GCCOLLECT, 0);
  *h->cfg = g->pending_cfg;
  h->counter = g->number;
  host_gen_t *old = h->cur;
  g->next = h->gens;
  h->gens = g;
  h->cur = g;
  if (old) gen_retire(old);
  store_event_t *evs = g->loaded_events;
  g->loaded_events = NULL;
  if (evs && h->cb.enqueue)
    h->cb.enqueue(h->cb.arg, evs);
  else
    store_event_list_free(evs);
  return 0;
}

/* ------------------------------------------------------------------ lifecycle */

int host_init(host_t **out, uv_loop_t *loop, config_t *cfg, const host_callbacks_t *cb,
              host_module_fn module) {
  host_t *h = calloc(1, sizeof *h);
  if (!h) return -ENOMEM;
  h->loop = loop;
  h->cfg = cfg;
  h->cb = *cb;
  h->module = module;
  uv_timer_init(loop, &h->ttimer);
  h->ttimer.data = h;
  uv_unref((uv_handle_t *)&h->ttimer);
  uv_idle_init(loop, &h->idle);
  h->idle.data = h;
  timers_init(&h->timers);
  uv_timer_init(loop, &h->tmtimer);
  h->tmtimer.data = h;
  uv_unref((uv_handle_t *)&h->tmtimer);
  *out = h;
  return 0;
}

void host_cancel_all(host_t *h) {
  /* Queued tasks first, then every waiting one. Hooks that the cancelled outcomes
   * fire (shutdown) are queued afresh and survive. */
  ready_cancel(h, NULL);
  while (h->thead) {
    task_t *t = h->thead;
    tlist_remove(h, t);
    if (t->kind == T_EVENT) report(t, HOST_CANCELLED, "cancelled", -1);
    task_abandon(t);
  }
}

/* The names of the hooks and timer runs of g (of every generation when g is NULL)
 * that wait or are queued. */
static void background_names(const host_t *h, const host_gen_t *g, char *buf, size_t len) {
  if (!len) return;
  buf[0] = 0;
  for (const task_t *t = h->thead; t; t = t->tnext)
    if (t->kind != T_EVENT && (!g || t->gen == g)) name_add(buf, len, t->what);
  for (const task_t *t = h->rhead; t; t = t->rnext)
    if (t->kind != T_EVENT && (!g || t->gen == g)) name_add(buf, len, t->what);
}

/* Abandons every task of retired generation g (events come back as HOST_CANCELLED)
 * and logs the hooks and timer runs it cancelled; g closes if nothing else holds
 * it. Returns how many events were cancelled. */
static int gen_cancel(host_t *h, host_gen_t *g, const char *why) {
  char names[256];
  int hooks = g->hooks, runs = g->timer_runs, n;
  background_names(h, g, names, sizeof names);
  g->swept = 1;
  g->sweep = 0;
  g->refs++; /* keep it open while its tasks go */
  n = ready_cancel(h, g);
  for (task_t *t = h->thead, *next; t; t = next) {
    next = t->tnext;
    if (t->gen != g) continue;
    tlist_remove(h, t);
    if (t->kind == T_EVENT) report(t, HOST_CANCELLED, "cancelled", -1), n++;
    task_abandon(t);
  }
  if (hooks + runs > 0)
    log_at(LOG_INFO, "old generation: hooks and timer runs cancelled", KI("generation", g->number),
           KS("reason", why), KI("hooks", hooks), KI("timers", runs), KS("cancelled", names));
  gen_unref(g);
  return n;
}

/* A generation's last event settled: once retired, what else runs there goes (on
 * the next pass: this may be called from inside a resume). */
static void gen_settled(host_gen_t *g) {
  host_t *h = g->host;
  if (g == h->cur || g->swept || h->closing) return;
  g->sweep = 1;
  uv_idle_start(&h->idle, on_idle);
}

static void sweep_retired(host_t *h) {
  for (host_gen_t *g = h->gens, *next; g; g = next) {
    next = g->next;
    if (g->sweep) gen_cancel(h, g, "its events have settled");
  }
}

int host_cancel_generation(host_t *h, int number) {
  host_gen_t *g = h->gens;
  while (g && g->number != number) g = g->next;
  if (!g || g == h->cur) return 0;
  return gen_cancel(h, g, "drain timeout");
}

int host_hooks_running(const host_t *h) { return h->hooks_running; }

void host_hook_names(const host_t *h, char *buf, size_t len) {
  background_names(h, NULL, buf, len);
}
int host_events_running(const host_t *h) { return h->events_running; }
int host_generation(const host_t *h) { return h->cur ? h->cur->number : 0; }

int host_live_generations(const host_t *h) {
  int n = 0;
  for (host_gen_t *g = h->gens; g; g = g->next) n++;
  return n;
}

uint64_t host_lua_heap(const host_t *h) { return h->lua_used; }

void host_set_lua_limit(host_t *h, uint64_t bytes) { h->lua_limit = bytes; }

void host_full_gc(host_t *h) {
  for (host_gen_t *g = h->gens; g; g = g->next) lua_gc(g->L, LUA_GCCOLLECT, 0);
}

void host_push_stats(lua_State *L) {
  host_t *h = host_of(L);
  host_stats_t s;
  memset(&s, 0, sizeof s);
  if (h->cb.stats) h->cb.stats(h->cb.arg, &s);
  lua_createtable(L, 0, 26);
#define SETN(name, v)                                                                              \
  do {                                                                                             \
    lua_pushnumber(L, (lua_Number)(v));                                                            \
    lua_setfield(L, -2, name);                                                                     \
  } while (0)
  SETN("active", s.active);
  SETN("queued", s.queued);
  SETN("processed", s.processed);
  SETN("done", s.done);
  SETN("failed", s.failed);
  SETN("dead", s.dead);
  SETN("retried", s.retried);
  SETN("failure_rate", s.failure_rate);
  lua_pushstring(L, s.breaker ? s.breaker : "closed");
  lua_setfield(L, -2, "breaker");
  SETN("lua_heap", host_lua_heap(h));
  SETN("rss", s.rss);
  SETN("memory_limit", s.memory_limit);
  lua_pushboolean(L, s.memory_high);
  lua_setfield(L, -2, "memory_high");
  SETN("rate", s.rate);
  SETN("uptime_ms", s.uptime_ms);
  SETN("generation", host_generation(h));
  SETN("concurrency", s.concurrency);
  SETN("live_generations", host_live_generations(h));
  SETN("timers", host_timers(h));
  SETN("timers_running", h->timer_runs);
  SETN("timers_skipped", host_timer_skips(h));
  SETN("hooks_running", h->hooks_running);
  lua_createtable(L, 0, s.nbreakers);
  for (int i = 0; i < s.nbreakers; i++) {
    lua_createtable(L, 0, 2);
    lua_pushstring(L, s.breakers[i].state);
    lua_setfield(L, -2, "state");
    SETN("failure_rate", s.breakers[i].failure_rate);
    lua_setfield(L, -2, s.breakers[i].name);
  }
  lua_setfield(L, -2, "breakers");
  lua_createtable(L, 0, s.nroutes);
  for (int i = 0; i < s.nroutes; i++) {
    const host_route_stats_t *r = &s.routes[i];
    lua_createtable(L, 0, 6);
    SETN("active", r->active);
    SETN("queued", r->queued);
    SETN("limit", r->limit);
    SETN("done", r->done);
    SETN("failed", r->failed);
    SETN("dead", r->dead);
    lua_setfield(L, -2, r->name);
  }
  lua_setfield(L, -2, "routes");
#undef SETN
}

static void on_handle_closed(uv_handle_t *handle) {
  host_t *h = handle->data;
  if (--h->pending_closes == 0) {
    void (*cb)(void *) = h->close_cb;
    void *arg = h->close_arg;
    free(h);
    if (cb) cb(arg);
  }
}

void *host_area_state(host_t *h, const host_area_t *area) {
  area_slot_t *a = h->areas;
  while (a && a->area != area) a = a->next;
  if (a) return a->state;
  if (h->closing) return NULL;
  a = calloc(1, sizeof *a);
  void *state = a ? calloc(1, area->size) : NULL;
  if (!state) {
    free(a);
    return NULL;
  }
  a->area = area;
  a->state = state;
  a->next = h->areas;
  h->areas = a;
  return state;
}

/* Releases every API area's state (its tasks were cancelled). */
static void areas_close(host_t *h) {
  while (h->areas) {
    area_slot_t *a = h->areas;
    h->areas = a->next;
    a->area->close(a->state);
    free(a);
  }
}

void host_close(host_t *h, void (*cb)(void *arg), void *arg) {
  h->closing = 1;
  host_cancel_all(h);
  h->cur = NULL;
  while (h->gens) {
    host_gen_t *g = h->gens;
    g->refs = 0;
    gen_close(g);
  }
  areas_close(h);
  timers_free(&h->timers);
  h->close_cb = cb;
  h->close_arg = arg;
  h->pending_closes = 3;
  uv_close((uv_handle_t *)&h->tmtimer, on_handle_closed);
  uv_close((uv_handle_t *)&h->ttimer, on_handle_closed);
  uv_close((uv_handle_t *)&h->idle, on_handle_closed);
}
