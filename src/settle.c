/* settle — buffered settlements shared by the SQL stores (see settle.h).
 * Invariant: a settlement owns its error text and follow-ups until it is dropped. */
#include "settle.h"

#include <errno.h>
#include <stdlib.h>

#include "log.h"

static const char *const kind_name[] = {"ack", "fail", "dead", "release", "defer", "emit"};

const char *settle_kind_name(int kind) {
  return kind >= 0 && kind <= SETTLE_EMIT ? kind_name[kind] : "?";
}

settle_t settle_take(store_event_t *ev, int kind, int64_t arg, const char *err) {
  settle_t x = {ev->id, arg, kind, store_error_text(err), 0, NULL};
  if (kind == STORE_FAIL || kind == STORE_DEFER) x.arg = store_clamp_time(arg);
  if (kind == STORE_ACK) {
    x.follow = ev->follow;
    ev->follow = NULL;
  }
  store_event_free(ev);
  return x;
}

settle_t settle_emit(store_event_t *list) {
  settle_t x = {0, 0, SETTLE_EMIT, NULL, 0, list};
  return x;
}

int settle_frees(const settle_t *x, int keyed) {
  return keyed || (x->kind != STORE_ACK && x->kind != STORE_DEAD) || x->follow != NULL;
}

void settle_drop(settle_t *x) {
  free(x->err);
  x->err = NULL;
  store_event_list_free(x->follow);
  x->follow = NULL;
}

int settles_push(settles_t *v, const settle_t *x) {
  if (v->n == v->cap) {
    int cap = v->cap ? v->cap * 2 : 64;
    settle_t *p = realloc(v->v, (size_t)cap * sizeof *p);
    if (!p) return -ENOMEM;
    v->v = p;
    v->cap = cap;
  }
  v->v[v->n++] = *x;
  return 0;
}

int settles_add(settles_t *v, settle_t *x) {
  if (settles_push(v, x) == 0) return 0;
  log_at(LOG_ERROR, "out of memory; the event returns when its lease expires", KI("id", x->id));
  settle_drop(x);
  return -ENOMEM;
}

void settles_clear(settles_t *v) {
  for (int i = 0; i < v->n; i++) settle_drop(&v->v[i]);
  v->n = 0;
}

void settles_free(settles_t *v) {
  settles_clear(v);
  free(v->v);
  v->v = NULL;
  v->cap = 0;
}

void settles_restore(settles_t *sending, settles_t *set) {
  for (int i = 0; i < set->n; i++) settles_add(sending, &set->v[i]);
  set->n = 0;
  settles_t t = *sending;
  *sending = *set;
  *set = t;
}

int settles_due(const settles_t *v, int64_t *at) {
  int any = 0;
  for (int i = 0; i < v->n; i++) {
    const settle_t *x = &v->v[i];
    if ((x->kind == STORE_FAIL || x->kind == STORE_DEFER) && (!any || x->arg < *at)) {
      *at = x->arg;
      any = 1;
    }
    for (const store_event_t *f = x->follow; f; f = f->next)
      if (f->available_at > 0 && (!any || f->available_at < *at)) {
        *at = f->available_at;
        any = 1;
      }
  }
  return any;
}
