/* topics — sets of topics the way claim queries filter them. A pattern is an exact
 * topic or a prefix ending in '*' ("*" alone: every topic); a set is a sorted list
 * of disjoint ranges [lo, hi) of topic strings in byte order, so a store turns each
 * range into an index range (topic >= lo AND topic < hi). Pure C.
 * Invariant: ranges are sorted by lo, non-empty, and neither overlap nor touch. */
#ifndef OUTBOXD_TOPICS_H
#define OUTBOXD_TOPICS_H

#include <stddef.h>

typedef struct topics_range {
  char *lo; /* owned, never NULL ("" is the lowest topic) */
  char *hi; /* owned; NULL: no upper bound */
} topics_range_t;

typedef struct topics {
  topics_range_t *v;
  int n; /* 0: no topic at all */
} topics_t;

/* The whole topic space ("*"). Returns 0 or -ENOMEM. */
int topics_all(topics_t *t);

/* Adds the topics `pattern` matches (its text before a final '*' as a prefix, else
 * the exact topic). Returns 0 or -ENOMEM (the set is then unchanged). */
int topics_add(topics_t *t, const char *pattern);

/* Parses a comma-separated pattern list (--topics) into *t (spaces around each
 * pattern ignored). Returns 0, or -EINVAL with a one-line reason in err for an empty
 * list or pattern, or a '*' anywhere but at the end; -ENOMEM. */
int topics_parse(topics_t *t, const char *list, char *err, size_t errlen);

/* out = a ∪ b, out = a ∩ b, out = a − b. out must not be a or b; its old contents are freed.
 * Return 0 or -ENOMEM (out is then empty). */
int topics_union(topics_t *out, const topics_t *a, const topics_t *b);
int topics_intersect(topics_t *out, const topics_t *a, const topics_t *b);
int topics_subtract(topics_t *out, const topics_t *a, const topics_t *b);

/* 1 when `topic` is in the set. */
int topics_match(const topics_t *t, const char *topic);

/* 1 when the set holds every topic. */
int topics_is_all(const topics_t *t);

/* 1 when both sets hold the same topics. */
int topics_equal(const topics_t *a, const topics_t *b);

/* Empties the set (it stays usable). */
void topics_free(topics_t *t);

#endif
