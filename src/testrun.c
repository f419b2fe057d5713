/* testrun — `outboxd test`: the dispatcher itself, told each attempt's outcome.
 * Invariant: nothing leaves the process (no database, no network through
 * outbox.http when a stub is given) and no time is spent waiting. */
#include "testrun.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "dispatch.h"
#include "log.h"

typedef struct results {
  int json;
  long attempts, done, dead, enqueued;
} results_t;

static void on_attempt(void *arg, const store_event_t *ev, int attempt, const char *outcome,
                       const char *error) {
  results_t *r = arg;
  char topic[512], err[2048];
  log_escape(ev->topic, topic, sizeof topic);
  log_escape(error ? error : "", err, sizeof err);
  r->attempts++;
  if (!strcmp(outcome, "done")) r->done++;
  if (!strcmp(outcome, "dead")) r->dead++;
  if (r->json)
    printf("{\"id\":%lld,\"topic\":\"%s\",\"attempt\":%d,\"outcome\":\"%s\"%s%s%s}\n",
           (long long)ev->id, topic, attempt, outcome, error ? ",\"error\":\"" : "",
           error ? err : "", error ? "\"" : "");
  else if (!strcmp(outcome, "retry"))
    printf("%lld %s retry %d: %s\n", (long long)ev->id, topic, attempt, err);
  else if (error)
    printf("%lld %s %s: %s\n", (long long)ev->id, topic, outcome, err);
  else
    printf("%lld %s %s\n", (long long)ev->id, topic, outcome);
  fflush(stdout);
}

/* `s` on one line for the text output: control characters escaped, cut to fit. */
static const char *text_of(const char *s, char *out, size_t cap) {
  size_t n = 0;
  for (; *s && n + 5 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c >= 0x20 && c != 0x7f)
      out[n++] = (char)c;
    else
      n += (size_t)snprintf(out + n, cap - n, c == '\n' ? "\\n" : c == '\t' ? "\\t" : "\\x%02x", c);
  }
  out[n] = 0;
  return out;
}

/* `ID TOPIC enqueue NEW_TOPIC [key=K] [delay=Ns] PAYLOAD` after the done line of the
 * run that enqueued it (`enqueue NEW_TOPIC ...` outside a handler). */
static void on_enqueue(void *arg, const store_event_t *parent, const store_event_t *ev) {
  results_t *r = arg;
  char ptopic[512], topic[512], key[512], payload[1024];
  double delay = ev->available_at > 0 ? (double)(ev->available_at - ev->created_at) / 1000.0 : 0;
  log_escape(parent ? parent->topic : "", ptopic, sizeof ptopic);
  log_escape(ev->topic, topic, sizeof topic);
  log_escape(ev->key ? ev->key : "", key, sizeof key);
  log_escape(ev->payload, payload, sizeof payload);
  r->enqueued++;
  if (r->json) {
    if (parent)
      printf("{\"id\":%lld,\"topic\":\"%s\",", (long long)parent->id, ptopic);
    else
      printf("{");
    printf("\"outcome\":\"enqueue\",\"enqueue\":{\"topic\":\"%s\"", topic);
    if (ev->key) printf(",\"key\":\"%s\"", key);
    printf(",\"payload\":\"%s\",\"delay\":%g}}\n", payload, delay);
  } else {
    if (parent) printf("%lld %s ", (long long)parent->id, ptopic);
    printf("enqueue %s", topic);
    if (ev->key) printf(" key=%s", key);
    if (delay > 0) printf(" delay=%gs", delay);
    printf(" %s\n", text_of(ev->payload, payload, sizeof payload));
  }
  fflush(stdout);
}

/* The stub must load and return a function; checked in a state of its own so a
 * bad stub is a one-line usage error, not a failed run. Returns 0 or 2. */
static int check_stub(const char *stub) {
  lua_State *L = luaL_newstate();
  int rc = 0;
  if (!L) return 2;
  luaL_openlibs(L);
  if (luaL_loadfile(L, stub) || lua_pcall(L, 0, 1, 0)) {
    fprintf(stderr, "outboxd test: --http-stub %s\n", lua_tostring(L, -1));
    rc = 2;
  } else if (!lua_isfunction(L, -1)) {
    fprintf(stderr, "outboxd test: --http-stub %s: returned a %s; return function(req) ... end\n",
            stub, luaL_typename(L, -1));
    rc = 2;
  }
  lua_close(L);
  return rc;
}

int testrun(config_t *cfg, const char *script, const char *fixture, const char *stub, int json) {
  results_t r = {json, 0, 0, 0, 0};
  dispatch_report_t report = {on_attempt, &r, on_enqueue};
  if (access(script, R_OK) != 0) {
    fprintf(stderr, "outboxd test: %s: cannot read the script\n", script);
    return 2;
  }
  if (strcmp(fixture, "-") != 0 && access(fixture, R_OK) != 0) {
    fprintf(stderr, "outboxd test: %s: cannot read the fixture\n", fixture);
    return 2;
  }
  if (stub && check_stub(stub)) return 2;
  if ((size_t)snprintf(cfg->db, sizeof cfg->db, "ndjson:%s", fixture) >= sizeof cfg->db) {
    fprintf(stderr, "outboxd test: %s: path too long\n", fixture);
    return 2;
  }
  cfg->http_stub = stub;
  cfg->watch = 0;
  cfg->metrics[0] = 0;
  int rc = dispatch_test(cfg, script, &report);
  if (!r.attempts && rc == 0)
    fprintf(stderr, "outboxd test: %s: no events in the fixture\n", fixture);
  if (!json && r.enqueued)
    fprintf(stderr, "outboxd test: %ld done, %ld dead, %ld attempts, %ld enqueued (not run)\n",
            r.done, r.dead, r.attempts, r.enqueued);
  else if (!json)
    fprintf(stderr, "outboxd test: %ld done, %ld dead, %ld attempts\n", r.done, r.dead, r.attempts);
  return rc ? rc : r.dead ? 1 : 0;
}
