/* memmon — RSS against a memory limit with hysteresis, plus the readers that find the
 * RSS, physical RAM and the cgroup limit. Invariant: `high` turns on at rss >= high_pct
 * of the limit and off only at rss < low_pct, so no sample between them changes it. */
#include "memmon.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CGROUP_UNLIMITED (1ULL << 60) /* at or above: no real limit */

/* ---- hysteresis -------------------------------------------------------------- */

/* ceil(limit * pct / 100) without overflow (pct <= 100), so that
 * rss >= threshold(limit, pct) exactly when rss * 100 >= limit * pct. */
static uint64_t threshold(uint64_t limit, int pct) {
  uint64_t p = (uint64_t)pct;
  return (limit / 100) * p + ((limit % 100) * p + 99) / 100;
}

int memmon_init(memmon_t *m, uint64_t limit, int high_pct, int low_pct) {
  if (limit == 0 || low_pct <= 0 || low_pct >= high_pct || high_pct > 100) return -EINVAL;
  memset(m, 0, sizeof(*m));
  m->limit = limit;
  m->high_pct = high_pct;
  m->low_pct = low_pct;
  return 0;
}

int memmon_sample(memmon_t *m, uint64_t rss, uint64_t lua_heap) {
  m->rss = rss;
  m->lua_heap = lua_heap;
  if (!m->high && rss >= threshold(m->limit, m->high_pct)) {
    m->high = 1;
    return MEMMON_HIGH;
  }
  if (m->high && rss < threshold(m->limit, m->low_pct)) {
    m->high = 0;
    return MEMMON_NORMAL;
  }
  return MEMMON_NO_CHANGE;
}

/* ---- readers ----------------------------------------------------------------- */

static uint64_t page_size(void) {
  long ps = sysconf(_SC_PAGESIZE);
  return ps > 0 ? (uint64_t)ps : 4096;
}

/* Reads the first line of `path` into buf (NUL-terminated). Returns 0 or -errno. */
static int read_line(const char *path, char *buf, size_t size) {
  FILE *f = fopen(path, "r");
  if (!f) return -errno;
  char *ok = fgets(buf, (int)size, f);
  fclose(f);
  return ok ? 0 : -EIO;
}

int memmon_enter_high(memmon_t *m) {
  if (m->high) return MEMMON_NO_CHANGE;
  m->high = 1;
  return MEMMON_HIGH;
}

uint64_t memmon_read_rss(void) {
  char buf[256];
  unsigned long long size, resident;
  if (read_line("/proc/self/statm", buf, sizeof(buf)) < 0) return 0;
  if (sscanf(buf, "%llu %llu", &size, &resident) != 2) return 0;
  return (uint64_t)resident * page_size();
}

static uint64_t meminfo_total(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  if (!f) return 0;
  char line[256];
  unsigned long long kb = 0;
  while (fgets(line, sizeof(line), f)) {
    if (sscanf(line, "MemTotal: %llu kB", &kb) == 1) break;
  }
  fclose(f);
  return (uint64_t)kb * 1024;
}

uint64_t memmon_physical(void) {
  long pages = sysconf(_SC_PHYS_PAGES);
  if (pages > 0) return (uint64_t)pages * page_size();
  return meminfo_total();
}

/* A cgroup limit file: a byte count, or "max". Returns bytes, or 0 for none. */
static uint64_t read_limit_file(const char *path) {
  char buf[64];
  if (read_line(path, buf, sizeof(buf)) < 0) return 0;
  if (strncmp(buf, "max", 3) == 0) return 0;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(buf, &end, 10);
  if (errno || end == buf || !isdigit((unsigned char)buf[0])) return 0;
  if (v == 0 || v >= CGROUP_UNLIMITED) return 0;
  return (uint64_t)v;
}

/* Does the comma-separated `list` (ended by ':') name `controller`? */
static int lists_controller(const char *list, const char *controller) {
  size_t n = strlen(controller);
  for (const char *p = list;;) {
    size_t len = strcspn(p, ",:\n");
    if (len == n && strncmp(p, controller, n) == 0) return 1;
    if (p[len] != ',') return 0;
    p += len + 1;
  }
}

/* This process's cgroup path for `controller` (NULL: the v2 hierarchy) from
 * /proc/self/cgroup, e.g. "/system.slice/x.service". Returns 0 or -ENOENT. */
static int own_cgroup(const char *controller, char *out, size_t size) {
  FILE *f = fopen("/proc/self/cgroup", "r");
  if (!f) return -ENOENT;
  char line[512];
  int rc = -ENOENT;
  while (rc < 0 && fgets(line, sizeof(line), f)) {
    char *list = strchr(line, ':');
    char *path = list ? strchr(list + 1, ':') : NULL;
    if (!path) continue;
    int match =
        controller ? lists_controller(list + 1, controller) : (strncmp(line, "0::", 3) == 0);
    if (!match) continue;
    path[1 + strcspn(path + 1, "\n")] = '\0';
    snprintf(out, size, "%s", path + 1);
    rc = 0;
  }
  fclose(f);
  return rc;
}

/* The limit in `file` of this process's own cgroup under `root`, then of `root`
 * itself (which is the own cgroup inside a container). Returns bytes, or 0. */
static uint64_t hierarchy_limit(const char *root, const char *controller, const char *file) {
  char cg[512], path[1024];
  if (own_cgroup(controller, cg, sizeof(cg)) == 0 && strcmp(cg, "/") != 0) {
    snprintf(path, sizeof(path), "%s%s/%s", root, cg, file);
    uint64_t v = read_limit_file(path);
    if (v) return v;
  }
  snprintf(path, sizeof(path), "%s/%s", root, file);
  return read_limit_file(path);
}

uint64_t memmon_cgroup_limit(void) {
  uint64_t v = hierarchy_limit("/sys/fs/cgroup", NULL, "memory.max");
  if (v) return v;
  return hierarchy_limit("/sys/fs/cgroup/memory", "memory", "memory.limit_in_bytes");
}

uint64_t memmon_default_limit(void) {
  uint64_t cg = memmon_cgroup_limit();
  uint64_t phys = memmon_physical();
  if (cg && (phys == 0 || cg < phys)) return cg;
  return phys;
}

/* ---- sizes ------------------------------------------------------------------- */

static int unit_shift(char c) {
  switch (tolower((unsigned char)c)) {
  case 'k': return 10;
  case 'm': return 20;
  case 'g': return 30;
  case 't': return 40;
  default: return -1;
  }
}

/* The suffix after the digits: "", "B", or a unit letter with optional "B"/"iB".
 * Returns the shift or -EINVAL. */
static int parse_unit(const char *s) {
  if (*s == '\0') return 0;
  if ((s[0] == 'b' || s[0] == 'B') && s[1] == '\0') return 0;
  int shift = unit_shift(s[0]);
  if (shift < 0) return -EINVAL;
  s++;
  int binary = (*s == 'i' || *s == 'I');
  if (binary) s++;
  if (*s == 'b' || *s == 'B')
    s++;
  else if (binary)
    return -EINVAL; /* "Mi" without the B */
  return *s == '\0' ? shift : -EINVAL;
}

int memmon_parse_size(const char *s, uint64_t *bytes) {
  if (!s || !isdigit((unsigned char)*s)) return -EINVAL;
  uint64_t v = 0;
  for (; isdigit((unsigned char)*s); s++) {
    uint64_t d = (uint64_t)(*s - '0');
    if (v > (UINT64_MAX - d) / 10) return -EINVAL;
    v = v * 10 + d;
  }
  int shift = parse_unit(s);
  if (shift < 0) return -EINVAL;
  if (shift && v > (UINT64_MAX >> shift)) return -EINVAL;
  *bytes = v << shift;
  return 0;
}
