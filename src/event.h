/* event — one outbox event as the stores hand it out and the host runs it: its
 * fields, and its allocation. Invariant: an event and all its strings are one
 * block; its follow-ups are a list of their own, freed with it. */
#ifndef OUTBOXD_EVENT_H
#define OUTBOXD_EVENT_H

#include <stddef.h>
#include <stdint.h>

typedef struct store_event {
  int64_t id;
  char *topic;   /* NUL-terminated, never NULL */
  char *key;     /* NULL when the event has none */
  char *payload; /* raw text (JSON text when it was not a string) */
  size_t payload_len;
  int payload_escaped;  /* 1: payload is a JSON string's body still holding its escapes
                           (NDJSON); the host unescapes it when a handler reads it */
  char *headers;        /* JSON object text, or NULL */
  int attempts;         /* runs already made before this claim */
  int lapsed;           /* 0, or STORE_LAPSED / STORE_SUSPECT: see below */
  int64_t created_at;   /* ms since the epoch */
  int64_t available_at; /* enqueue: not claimable before (ms since the epoch); 0: at once */
  void *owner;          /* free for the dispatcher */
  void *priv;           /* free for the store */
  /* Follow-ups (outbox.enqueue in the event's handler): a list linked by `next`, to
   * be inserted in the same transaction as this event's ack and only if that ack is
   * written. Owned by the event: any other settlement frees them with it. */
  struct store_event *follow;
  struct store_event *next; /* the next event of a follow-up list */
} store_event_t;

/* A claim that takes an event over from a host whose lease ran out (the host stopped
 * mid-run) counts that run as an attempt (`attempts` includes it) and sets `lapsed`.
 * STORE_SUSPECT: the host that took it over after an earlier lapse stopped too; the
 * store hands such an event out alone, and the dispatcher runs it alone, so an event
 * that kills its host takes no neighbours with it. */
#define STORE_LAPSED 1
#define STORE_SUSPECT 2
#define STORE_LAPSE_ERROR "lease expired: the host running it stopped"

/* Allocates an event with its strings in one block (lengths exclude NUL; key and
 * headers may be NULL). Returns NULL on ENOMEM. Free with store_event_free. */
store_event_t *store_event_new(int64_t id, const char *topic, size_t topic_len, const char *key,
                               size_t key_len, const char *payload, size_t payload_len,
                               const char *headers, size_t headers_len, size_t extra);
/* Frees an event from store_event_new (one block) and its follow-ups; NULL is ignored. */
void store_event_free(store_event_t *ev);
/* Frees every event of a list linked by `next` (and their follow-ups). */
void store_event_list_free(store_event_t *list);

#endif
