/* adaptive — gradient concurrency limit (see adaptive.h for what it follows).
 * A window closes after ADAPTIVE_WINDOW_SAMPLES samples or ADAPTIVE_WINDOW_MS,
 * whichever is later, so one slow or fast run never moves the limit by itself. */
#include "adaptive.h"

#include <math.h>

#define WINDOW_SAMPLES 10 /* at least this many runs per window */
#define WINDOW_MS 20      /* and at least this long */
#define TOLERANCE 2.0     /* latency may reach this times the no-load RTT: no shrinking */
#define SMOOTHING 0.2     /* weight of a window's lower limit (a higher one is taken whole) */
#define BACKOFF 0.9       /* a failure in the window multiplies the limit by this */
#define MIN_GRADIENT 0.5  /* one window at most halves the limit */
#define PROBE_WINDOWS 500 /* re-measure the no-load RTT this often: it may have drifted */

void adaptive_init(adaptive_t *a, int initial, int max, int64_t now) {
  a->max = max < 1 ? 1 : max;
  a->min = 1;
  a->limit = initial < 1 ? 1 : initial > a->max ? a->max : initial;
  a->noload_us = 0;
  a->min_us = 0;
  a->count = 0;
  a->max_inflight = 0;
  a->dropped = 0;
  a->window_start = now;
  a->windows = 0;
}

int adaptive_limit(const adaptive_t *a) {
  int l = (int)a->limit;
  return l < 1 ? 1 : l;
}

static double clamp(const adaptive_t *a, double v) {
  if (v < a->min) return a->min;
  if (v > a->max) return a->max;
  return v;
}

/* The window is over: move the limit. */
static void close_window(adaptive_t *a) {
  int64_t rtt = a->min_us; /* the window's fastest run: queueing delays them all, a
                              host held up now and then only some */
  if (rtt < 1) rtt = 1;
  if (++a->windows >= PROBE_WINDOWS) {
    /* Probe, as GradientLimit does: the no-load RTT may have drifted, and a limit
     * that keeps the downstream queueing never sees it again. Drop to sqrt(limit)
     * and measure afresh; the limit grows back within a few dozen windows. */
    a->windows = 0;
    a->noload_us = 0;
    a->limit = clamp(a, sqrt(a->limit));
    a->min_us = 0;
    a->count = 0;
    a->max_inflight = 0;
    a->dropped = 0;
    return;
  }
  double target;
  if (!a->dropped && (a->noload_us == 0 || rtt < a->noload_us)) a->noload_us = rtt;
  if (a->dropped) {
    target = a->limit * BACKOFF;
  } else if (a->max_inflight * 2 < adaptive_limit(a)) {
    target = a->limit; /* the route does not use its limit: nothing learned */
  } else {
    double gradient = TOLERANCE * (double)a->noload_us / (double)rtt;
    if (gradient < MIN_GRADIENT) gradient = MIN_GRADIENT;
    if (gradient > 1) gradient = 1;
    target = a->limit * gradient + sqrt(a->limit);
  }
  if (a->dropped || target >= a->limit)
    a->limit = clamp(a, target); /* back off, or grow, at once */
  else
    a->limit = clamp(a, a->limit * (1 - SMOOTHING) + target * SMOOTHING);
  a->min_us = 0;
  a->count = 0;
  a->max_inflight = 0;
  a->dropped = 0;
}

int adaptive_sample(adaptive_t *a, int64_t rtt_us, int inflight, int dropped, int64_t now) {
  if (rtt_us < 0) rtt_us = 0;
  if (a->count == 0 || rtt_us < a->min_us) a->min_us = rtt_us;
  a->count++;
  if (inflight > a->max_inflight) a->max_inflight = inflight;
  if (dropped) a->dropped = 1;
  if (a->count >= WINDOW_SAMPLES && now - a->window_start >= WINDOW_MS) {
    close_window(a);
    a->window_start = now;
  }
  return adaptive_limit(a);
}
