/* bench_store_sqlite — claim+ack throughput of the SQLite store, no handlers:
 * enqueue N rows, then claim(batch) and ack every event until nothing is left.
 * usage: bench_store_sqlite [N=1000000] [BATCH=50] [KEYS=0 (0: no keys)] [DIR=/tmp]
 * build (after make): cc -std=c11 -D_GNU_SOURCE -O2 -Isrc $(pkg-config --cflags libuv sqlite3
 *          libpq) tests/bench/bench_store_sqlite.c build/store_open.o build/store.o
 *          build/event.o build/settle.o build/idset.o build/topics.o build/utf8.o build/log.o
 *          build/ndjson.o build/store_ndjson.o build/store_sqlite.o build/store_pg.o
 *          -o bench $(pkg-config --libs libuv sqlite3 libpq) -lm */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "store.h"
#include "store_open.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_closed(void *arg) { *(int *)arg = 1; }

static void close_store(uv_loop_t *loop, store_t *s) {
  int closed = 0;
  store_close(s, on_closed, &closed);
  while (!closed) uv_run(loop, UV_RUN_ONCE);
}

static void fill(uv_loop_t *loop, const char *path, long n, int keys) {
  store_opts_t o = {.batch = 1};
  store_t *s;
  char err[256], key[32];
  static store_event_t *evs[10000];
  const char *payload = "{\"order\": 12345, \"amount\": 99.5, \"currency\": \"EUR\"}";
  if (store_open(loop, path, &o, &s, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    exit(1);
  }
  for (long i = 0; i < n;) {
    int m = 0;
    for (; m < 10000 && i < n; m++, i++) {
      int kl = keys ? snprintf(key, sizeof key, "k%ld", i % keys) : 0;
      evs[m] = store_event_new(0, "orders", 6, keys ? key : NULL, (size_t)kl, payload,
                               strlen(payload), NULL, 0, 0);
    }
    if (s->ops->enqueue(s, evs, m)) {
      fprintf(stderr, "enqueue: %s\n", s->err);
      exit(1);
    }
    for (int j = 0; j < m; j++) store_event_free(evs[j]);
  }
  close_store(loop, s);
}

int main(int argc, char **argv) {
  long n = argc > 1 ? atol(argv[1]) : 1000000;
  int batch = argc > 2 ? atoi(argv[2]) : 50;
  int keys = argc > 3 ? atoi(argv[3]) : 0;
  const char *dir = argc > 4 ? argv[4] : "/tmp";
  char path[256], init_err[256];
  snprintf(path, sizeof path, "%s/bench_store_%d.db", dir, (int)getpid());
  uv_loop_t loop;
  uv_loop_init(&loop);
  if (store_init_schema(path, init_err, sizeof init_err)) {
    fprintf(stderr, "%s\n", init_err);
    return 1;
  }
  double t0 = now_s();
  fill(&loop, path, n, keys);
  double t1 = now_s();

  store_opts_t o = {
      .batch = batch, .ordering_key = 1, .lease_ms = 30000, .poll_ms = 5000, .host_id = "bench"};
  store_t *s;
  char err[256];
  if (store_open(&loop, path, &o, &s, err, sizeof err)) {
    fprintf(stderr, "%s\n", err);
    return 1;
  }
  store_event_t **out = malloc((size_t)batch * sizeof *out);
  long done = 0;
  int got;
  double t2 = now_s();
  while (store_claim(s, batch, out, &got) == 0 && got > 0) {
    for (int i = 0; i < got; i++) store_ack(s, out[i]);
    done += got;
  }
  store_flush(s);
  double t3 = now_s();
  store_counts_t c;
  store_counts(s, &c);
  close_store(&loop, s);
  uv_loop_close(&loop);
  printf("rows %ld batch %d keys %d: enqueue %.0f/s (%.2f s), claim+ack %.0f/s (%.2f s),"
         " left pending %lld\n",
         n, batch, keys, (double)n / (t1 - t0), t1 - t0, (double)done / (t3 - t2), t3 - t2,
         (long long)c.pending);
  free(out);
  const char *suffix[] = {"", "-wal", "-shm"};
  for (int i = 0; i < 3; i++) {
    char p[300];
    snprintf(p, sizeof p, "%.256s%s", path, suffix[i]);
    unlink(p);
  }
  return done == n ? 0 : 1;
}
