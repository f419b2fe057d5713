/* js_bench — the ceiling of the NATS benchmark (tests/bench/brokers.sh): N JetStream
 * publishes through cnats' own asynchronous API, at most C awaiting their ack (as
 * outboxd at concurrency C), each with its own Nats-Msg-Id; prints acked msgs/s.
 *   js_bench URL SUBJECT N C ID_PREFIX PAYLOAD
 * Exits 1 when a publish fails or is not acknowledged. */
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static volatile int failures;

static void on_error(jsCtx *js, jsPubAckErr *pae, void *closure) {
  (void)js;
  (void)closure;
  if (failures++ < 3) fprintf(stderr, "js_bench: %s\n", pae->ErrText ? pae->ErrText : "error");
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  natsConnection *nc = NULL;
  jsCtx *js = NULL;
  jsOptions o;
  jsPubOptions po;
  char id[128];
  if (argc != 7) {
    fprintf(stderr, "usage: js_bench URL SUBJECT N C ID_PREFIX PAYLOAD\n");
    return 2;
  }
  long n = atol(argv[3]), c = atol(argv[4]);
  const char *subject = argv[2], *prefix = argv[5], *payload = argv[6];
  int len = (int)strlen(payload);
  natsStatus s = natsConnection_ConnectTo(&nc, argv[1]);
  jsOptions_Init(&o);
  o.PublishAsync.MaxPending = c;
  o.PublishAsync.ErrHandler = on_error;
  o.PublishAsync.StallWait = 60000;
  if (s == NATS_OK) s = natsConnection_JetStream(&js, nc, &o);
  double t0 = now_s();
  for (long i = 0; s == NATS_OK && i < n; i++) {
    natsMsg *m = NULL;
    snprintf(id, sizeof id, "%s-%ld", prefix, i);
    s = natsMsg_Create(&m, subject, NULL, payload, len);
    if (s == NATS_OK) s = natsMsgHeader_Set(m, "Nats-Msg-Id", id);
    if (s == NATS_OK) s = js_PublishMsgAsync(js, &m, NULL);
    natsMsg_Destroy(m); /* NULL when the library took it */
  }
  jsPubOptions_Init(&po);
  po.MaxWait = 60000;
  if (s == NATS_OK) s = js_PublishAsyncComplete(js, &po);
  double secs = now_s() - t0;
  if (s != NATS_OK || failures) {
    fprintf(stderr, "js_bench: %s, %d failed\n", natsStatus_GetText(s), failures);
    return 1;
  }
  printf("%.0f\n", (double)n / secs);
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  nats_Close();
  return 0;
}
