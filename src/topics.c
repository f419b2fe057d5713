/* topics — topic sets as sorted, disjoint ranges of topic strings: an exact topic t
 * is [t, t "\x01") (no topic lies between: topics hold no NUL byte), a prefix p is
 * [p, the next string after every p...), "" the whole space. Set algebra walks the
 * sorted lists once. */
#include "topics.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* hi bounds: NULL is +infinity. */
static int cmp_hi(const char *a, const char *b) {
  if (!a || !b) return !a - !b;
  return strcmp(a, b);
}

/* lo < hi, with hi possibly +infinity */
static int below(const char *lo, const char *hi) { return !hi || strcmp(lo, hi) < 0; }

static char *dup_or_null(const char *s, int *oom) {
  if (!s) return NULL;
  char *c = strdup(s);
  if (!c) *oom = 1;
  return c;
}

/* Appends [lo, hi) (copied) to t, merging it into the last range when they touch.
 * Ranges must come in order of lo. */
static int push(topics_t *t, const char *lo, const char *hi) {
  int oom = 0;
  if (!below(lo, hi)) return 0;
  if (t->n && cmp_hi(lo, t->v[t->n - 1].hi) <= 0 && t->v[t->n - 1].hi) {
    topics_range_t *last = &t->v[t->n - 1];
    if (cmp_hi(hi, last->hi) > 0) {
      char *h = dup_or_null(hi, &oom);
      if (oom) return -ENOMEM;
      free(last->hi);
      last->hi = h;
    }
    return 0;
  }
  if (t->n && !t->v[t->n - 1].hi) return 0; /* the last range runs to the end */
  topics_range_t *v = realloc(t->v, (size_t)(t->n + 1) * sizeof *v);
  if (!v) return -ENOMEM;
  t->v = v;
  char *l = dup_or_null(lo, &oom), *h = dup_or_null(hi, &oom);
  if (oom) {
    free(l);
    free(h);
    return -ENOMEM;
  }
  t->v[t->n++] = (topics_range_t){l, h};
  return 0;
}

void topics_free(topics_t *t) {
  for (int i = 0; i < t->n; i++) {
    free(t->v[i].lo);
    free(t->v[i].hi);
  }
  free(t->v);
  t->v = NULL;
  t->n = 0;
}

int topics_all(topics_t *t) {
  topics_free(t);
  return push(t, "", NULL);
}

/* The range of `pattern` into lo/hi (owned); returns 0 or -ENOMEM. */
static int pattern_range(const char *pattern, char **lo, char **hi) {
  size_t len = strlen(pattern);
  int prefix = len && pattern[len - 1] == '*';
  if (prefix) len--;
  *lo = strndup(pattern, len);
  *hi = malloc(len + 2);
  if (!*lo || !*hi) goto oom;
  memcpy(*hi, pattern, len);
  if (!prefix) { /* the next string after the topic */
    (*hi)[len] = '\x01';
    (*hi)[len + 1] = 0;
    return 0;
  }
  while (len && (unsigned char)(*hi)[len - 1] == 0xff) len--;
  if (!len) { /* every topic from lo on */
    free(*hi);
    *hi = NULL;
    return 0;
  }
  (*hi)[len - 1] = (char)((unsigned char)(*hi)[len - 1] + 1);
  (*hi)[len] = 0;
  return 0;
oom:
  free(*lo);
  free(*hi);
  return -ENOMEM;
}

int topics_add(topics_t *t, const char *pattern) {
  topics_range_t r;
  if (pattern_range(pattern, &r.lo, &r.hi)) return -ENOMEM;
  topics_t one = {&r, 1}, out = {0};
  int rc = topics_union(&out, t, &one);
  free(r.lo);
  free(r.hi);
  if (rc) return rc;
  topics_free(t);
  *t = out;
  return 0;
}

int topics_parse(topics_t *t, const char *list, char *err, size_t errlen) {
  topics_free(t);
  const char *p = list;
  for (;;) {
    size_t n = strcspn(p, ",");
    const char *a = p, *b = p + n;
    while (a < b && (*a == ' ' || *a == '\t')) a++;
    while (b > a && (b[-1] == ' ' || b[-1] == '\t')) b--;
    const char *star = memchr(a, '*', (size_t)(b - a));
    if (a == b || (star && star != b - 1)) {
      snprintf(err, errlen, "%s '%.*s' in '%s' (want comma-separated topics, '*' only at the end)",
               a == b ? "empty pattern" : "bad pattern", (int)(b - a), a, list);
      topics_free(t);
      return -EINVAL;
    }
    char *pat = strndup(a, (size_t)(b - a));
    if (!pat || topics_add(t, pat)) {
      free(pat);
      topics_free(t);
      return -ENOMEM;
    }
    free(pat);
    if (!p[n]) return 0;
    p += n + 1;
  }
}

int topics_union(topics_t *out, const topics_t *a, const topics_t *b) {
  int i = 0, j = 0, rc = 0;
  topics_free(out);
  while (rc == 0 && (i < a->n || j < b->n)) {
    const topics_range_t *x =
        j == b->n || (i < a->n && strcmp(a->v[i].lo, b->v[j].lo) <= 0) ? &a->v[i++] : &b->v[j++];
    rc = push(out, x->lo, x->hi);
  }
  if (rc) topics_free(out);
  return rc;
}

int topics_intersect(topics_t *out, const topics_t *a, const topics_t *b) {
  int i = 0, j = 0, rc = 0;
  topics_free(out);
  while (rc == 0 && i < a->n && j < b->n) {
    const topics_range_t *x = &a->v[i], *y = &b->v[j];
    const char *lo = strcmp(x->lo, y->lo) > 0 ? x->lo : y->lo;
    const char *hi = cmp_hi(x->hi, y->hi) < 0 ? x->hi : y->hi;
    rc = push(out, lo, hi);
    if (cmp_hi(x->hi, y->hi) < 0)
      i++;
    else
      j++;
  }
  if (rc) topics_free(out);
  return rc;
}

int topics_subtract(topics_t *out, const topics_t *a, const topics_t *b) {
  int rc = 0, j = 0;
  topics_free(out);
  for (int i = 0; i < a->n && rc == 0; i++) {
    const char *lo = a->v[i].lo, *hi = a->v[i].hi;
    int gone = 0;
    while (j < b->n && b->v[j].hi && strcmp(b->v[j].hi, lo) <= 0) j++; /* wholly below */
    for (int k = j; k < b->n && below(b->v[k].lo, hi) && rc == 0; k++) {
      if (strcmp(b->v[k].lo, lo) > 0) rc = push(out, lo, b->v[k].lo);
      if (!b->v[k].hi) {
        gone = 1;
        break;
      }
      if (strcmp(b->v[k].hi, lo) > 0) lo = b->v[k].hi;
      if (!below(lo, hi)) {
        gone = 1;
        break;
      }
    }
    if (!gone && rc == 0) rc = push(out, lo, hi);
  }
  if (rc) topics_free(out);
  return rc;
}

int topics_match(const topics_t *t, const char *topic) {
  int lo = 0, hi = t->n - 1;
  while (lo <= hi) { /* the last range whose lo <= topic */
    int mid = (lo + hi) / 2;
    if (strcmp(t->v[mid].lo, topic) <= 0)
      lo = mid + 1;
    else
      hi = mid - 1;
  }
  return hi >= 0 && below(topic, t->v[hi].hi);
}

int topics_is_all(const topics_t *t) { return t->n == 1 && !t->v[0].lo[0] && !t->v[0].hi; }

int topics_equal(const topics_t *a, const topics_t *b) {
  if (a->n != b->n) return 0;
  for (int i = 0; i < a->n; i++)
    if (strcmp(a->v[i].lo, b->v[i].lo) || cmp_hi(a->v[i].hi, b->v[i].hi)) return 0;
  return 1;
}
