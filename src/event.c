/* event — allocation of an outbox event (see event.h).
 * Invariant: an event and all its strings are one allocation. */
#include "event.h"

#include <stdlib.h>
#include <string.h>

store_event_t *store_event_new(int64_t id, const char *topic, size_t topic_len, const char *key,
                               size_t key_len, const char *payload, size_t payload_len,
                               const char *headers, size_t headers_len, size_t extra) {
  size_t need = sizeof(store_event_t) + topic_len + 1 + payload_len + 1 + extra;
  if (key) need += key_len + 1;
  if (headers) need += headers_len + 1;
  store_event_t *ev = malloc(need);
  if (!ev) return NULL;
  char *p = (char *)(ev + 1);
  memset(ev, 0, sizeof *ev);
  ev->id = id;
  ev->topic = p;
  memcpy(p, topic, topic_len);
  p[topic_len] = 0;
  p += topic_len + 1;
  ev->payload = p;
  ev->payload_len = payload_len;
  memcpy(p, payload, payload_len);
  p[payload_len] = 0;
  p += payload_len + 1;
  if (key) {
    ev->key = p;
    memcpy(p, key, key_len);
    p[key_len] = 0;
    p += key_len + 1;
  }
  if (headers) {
    ev->headers = p;
    memcpy(p, headers, headers_len);
    p[headers_len] = 0;
  }
  return ev;
}

void store_event_list_free(store_event_t *list) {
  while (list) {
    store_event_t *next = list->next;
    store_event_list_free(list->follow); /* follow-ups have none of their own */
    free(list);
    list = next;
  }
}

void store_event_free(store_event_t *ev) {
  if (!ev) return;
  store_event_list_free(ev->follow);
  free(ev);
}
