/* watchdog — a thread that sees the loop thread stay too long in one Lua run.
 * Invariant: the loop thread announces runs through a sequence number that is odd
 * while a run is under way and writes the run's fields only while it is even, so
 * the watchdog reads a consistent run without a lock; a verdict is given only with
 * the loop thread frozen and the sequence number unchanged since it was judged. */
#include "watchdog.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

#define FREEZE_SIGNAL SIGURG
#define FREEZE_WAIT_MS 2000 /* longest wait for the loop thread to freeze */
#define LOOK_MIN_MS 5
#define LOOK_MAX_MS 100

static struct {
  pthread_t loop_thread, thread;
  int started;
  watchdog_stall_cb cb;
  void *arg;
  atomic_uint_fast64_t seq; /* odd while a run is under way */
  atomic_int kind;
  atomic_int_fast64_t event_id;
  _Atomic(const char *) what;
  atomic_uint_fast64_t started_ms, limit_ms;
  atomic_int freeze, frozen;
  int stop;
  pthread_mutex_t mu;
  pthread_cond_t cv;
} W = {.mu = PTHREAD_MUTEX_INITIALIZER};

uint64_t watchdog_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int watchdog_overdue(const watchdog_run_t *run, uint64_t now_ms) {
  return run->limit_ms > 0 && now_ms >= run->started_ms && now_ms - run->started_ms > run->limit_ms;
}

uint64_t watchdog_next_look_ms(const watchdog_run_t *run, uint64_t now_ms) {
  if (!run || run->limit_ms == 0) return LOOK_MAX_MS;
  uint64_t step = run->limit_ms / 10;
  if (step < LOOK_MIN_MS) step = LOOK_MIN_MS;
  if (step > LOOK_MAX_MS) step = LOOK_MAX_MS;
  uint64_t due = run->started_ms + run->limit_ms + 1;
  if (due > now_ms && due - now_ms < step) step = due - now_ms;
  return step;
}

/* ------------------------------------------------------------ loop thread */

void watchdog_enter(int kind, int64_t event_id, const char *what, uint64_t limit_ms) {
  uint_fast64_t s = atomic_load_explicit(&W.seq, memory_order_relaxed);
  if (s & 1) s++; /* a run that never left (cannot happen; stay consistent) */
  atomic_store_explicit(&W.kind, kind, memory_order_relaxed);
  atomic_store_explicit(&W.event_id, event_id, memory_order_relaxed);
  atomic_store_explicit(&W.what, what, memory_order_relaxed);
  atomic_store_explicit(&W.started_ms, watchdog_now_ms(), memory_order_relaxed);
  atomic_store_explicit(&W.limit_ms, limit_ms, memory_order_relaxed);
  atomic_store_explicit(&W.seq, s + 1, memory_order_release);
}

void watchdog_leave(void) {
  uint_fast64_t s = atomic_load_explicit(&W.seq, memory_order_relaxed);
  if (s & 1) atomic_store_explicit(&W.seq, s + 1, memory_order_release);
}

/* The handler of FREEZE_SIGNAL on the loop thread: waits while a verdict is made. */
static void on_freeze(int sig) {
  int saved = errno;
  (void)sig;
  atomic_store(&W.frozen, 1);
  while (atomic_load(&W.freeze)) {
    struct timespec ts = {0, 1000000};
    nanosleep(&ts, NULL);
  }
  atomic_store(&W.frozen, 0);
  errno = saved;
}

/* ------------------------------------------------------- watchdog thread */

/* Copies the run under way into *r; returns its sequence number, or 0 when the
 * loop thread is between runs. */
static uint_fast64_t snapshot(watchdog_run_t *r) {
  uint_fast64_t s = atomic_load_explicit(&W.seq, memory_order_acquire);
  if (!(s & 1)) return 0;
  r->kind = atomic_load_explicit(&W.kind, memory_order_relaxed);
  r->event_id = atomic_load_explicit(&W.event_id, memory_order_relaxed);
  r->what = atomic_load_explicit(&W.what, memory_order_relaxed);
  r->started_ms = atomic_load_explicit(&W.started_ms, memory_order_relaxed);
  r->limit_ms = atomic_load_explicit(&W.limit_ms, memory_order_relaxed);
  atomic_thread_fence(memory_order_acquire);
  return atomic_load_explicit(&W.seq, memory_order_relaxed) == s ? s : 0;
}

static void sleep_ms(uint64_t ms) {
  struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static void thaw(void) {
  atomic_store(&W.freeze, 0);
  for (int i = 0; i < FREEZE_WAIT_MS && atomic_load(&W.frozen); i++) sleep_ms(1);
}

/* Freezes the loop thread; when run `seq` is still under way the callback judges it. */
static void judge(const watchdog_run_t *r, uint_fast64_t seq) {
  atomic_store(&W.freeze, 1);
  if (pthread_kill(W.loop_thread, FREEZE_SIGNAL) != 0) {
    thaw();
    return;
  }
  for (int i = 0; i < FREEZE_WAIT_MS && !atomic_load(&W.frozen); i++) sleep_ms(1);
  if (atomic_load(&W.frozen) && atomic_load(&W.seq) == seq) {
    uint64_t now = watchdog_now_ms();
    W.cb(W.arg, r, now > r->started_ms ? now - r->started_ms : 0);
  }
  thaw();
}

static void *watch_main(void *unused) {
  (void)unused;
  pthread_mutex_lock(&W.mu);
  while (!W.stop) {
    watchdog_run_t r;
    uint_fast64_t seq = snapshot(&r);
    uint64_t now = watchdog_now_ms();
    if (seq && watchdog_overdue(&r, now)) {
      pthread_mutex_unlock(&W.mu);
      judge(&r, seq);
      pthread_mutex_lock(&W.mu);
      continue;
    }
    uint64_t wait = watchdog_next_look_ms(seq ? &r : NULL, now);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(wait / 1000);
    until.tv_nsec += (long)(wait % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(&W.cv, &W.mu, &until);
  }
  pthread_mutex_unlock(&W.mu);
  return NULL;
}

int watchdog_start(watchdog_stall_cb cb, void *arg) {
  struct sigaction sa;
  pthread_condattr_t ca;
  sigset_t all, old;
  if (W.started) return -EALREADY;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_freeze;
  sa.sa_flags = SA_RESTART;
  sigfillset(&sa.sa_mask);
  if (sigaction(FREEZE_SIGNAL, &sa, NULL)) return -errno;
  W.cb = cb;
  W.arg = arg;
  W.stop = 0;
  W.loop_thread = pthread_self();
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&W.cv, &ca);
  pthread_condattr_destroy(&ca);
  /* The thread takes no signals: they stay with the loop thread. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int rc = pthread_create(&W.thread, NULL, watch_main, NULL);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc) {
    pthread_cond_destroy(&W.cv);
    return -rc;
  }
  W.started = 1;
  return 0;
}

void watchdog_stop(void) {
  if (!W.started) return;
  pthread_mutex_lock(&W.mu);
  W.stop = 1;
  pthread_cond_signal(&W.cv);
  pthread_mutex_unlock(&W.mu);
  pthread_join(W.thread, NULL);
  pthread_cond_destroy(&W.cv);
  W.started = 0;
}
