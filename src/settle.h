/* settle — buffered settlements, the part the SQL stores share: one outcome as the
 * database will write it (settle_t), a growing list of them, and taking an outcome
 * over from a claimed event. Pure C: no I/O, no libuv; the stores decide when a list
 * is written and what a write costs. */
#ifndef OUTBOXD_SETTLE_H
#define OUTBOXD_SETTLE_H

#include <stdint.h>

#include "store.h"

/* The kinds of settle_t: a store outcome (STORE_ACK .. STORE_DEFER), or new events
 * tied to no event (store_push), with id 0. */
enum { SETTLE_EMIT = STORE_DEFER + 1 };

typedef struct settle {
  int64_t id;
  int64_t arg; /* fail, defer: available_at (clamped); dead: attempts to add */
  int kind;
  char *err;             /* owned, valid UTF-8 (store_error_text), or NULL */
  int repaired;          /* refused once by the database and rewritten */
  store_event_t *follow; /* ack: its follow-ups; emit: the new events (owned) */
} settle_t;

/* A list of settlements in the order they were made; {0} is empty. */
typedef struct settles {
  settle_t *v;
  int n, cap;
} settles_t;

/* "ack", "fail", "dead", "release", "defer" or "emit", for logs. */
const char *settle_kind_name(int kind);

/* Takes over `ev` (a claimed event) for an outcome of `kind` (STORE_ACK ..
 * STORE_DEFER; arg and err as store_ops_t's settle): an ack keeps the event's
 * follow-ups, any other kind frees them; the error is copied as store_error_text;
 * times are clamped. Frees the event. The settlement owns what it holds. */
settle_t settle_take(store_event_t *ev, int kind, int64_t arg, const char *err);

/* A SETTLE_EMIT settlement owning `list` (new events linked by `next`). */
settle_t settle_emit(store_event_t *list);

/* 1 when writing x may make some event claimable at once: a release, retry or
 * deferral (the event itself), new events, or any outcome of an event whose key
 * holds others back (`keyed`: it has one under per-key order); 0 for an ack or
 * dead-letter of any other event, whose write frees nothing a claim could take. */
int settle_frees(const settle_t *x, int keyed);

/* Frees what x owns (its error, its follow-ups). */
void settle_drop(settle_t *x);

/* Appends x to v (a plain copy: v owns what x owned). Returns 0, or -ENOMEM with
 * nothing changed and x still the caller's. */
int settles_push(settles_t *v, const settle_t *x);

/* Appends x to v; when out of memory logs that the event returns when its lease
 * expires and drops x. Returns 0 or -ENOMEM. Either way x is no longer the caller's. */
int settles_add(settles_t *v, settle_t *x);

/* Drops every settlement of v; v keeps its storage. */
void settles_clear(settles_t *v);

/* Drops every settlement of v and frees its storage; v is empty after. */
void settles_free(settles_t *v);

/* After a write of `sending` failed: its settlements go back in front of those of
 * `set` made meanwhile, in order; `sending` is empty after. A settlement that no
 * longer fits (out of memory) is logged and dropped. */
void settles_restore(settles_t *sending, settles_t *set);

/* The earliest time (ms since the epoch) something in v becomes claimable once v is
 * written: a retry, a deferral or a scheduled new event. Returns 1 with *at set, or
 * 0 when nothing in v waits for a time. */
int settles_due(const settles_t *v, int64_t *at);

#endif
