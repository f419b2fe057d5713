/* notify — sd_notify(3) without libsystemd: a datagram to $NOTIFY_SOCKET.
 * Invariant: never blocks (MSG_DONTWAIT) and never fails the caller's work; the
 * socket is opened once, close-on-exec. */
#include "notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int fd = -1;

int notify_enabled(void) {
  const char *path = getenv("NOTIFY_SOCKET");
  return path && (path[0] == '/' || path[0] == '@') && path[1];
}

/* The address of $NOTIFY_SOCKET; returns its length, or 0 when unusable. */
static socklen_t address(struct sockaddr_un *sa) {
  const char *path = getenv("NOTIFY_SOCKET");
  size_t n = path ? strlen(path) : 0;
  if (!notify_enabled() || n >= sizeof sa->sun_path) return 0;
  memset(sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  memcpy(sa->sun_path, path, n);
  if (path[0] == '@') sa->sun_path[0] = 0; /* abstract: no NUL terminator counted */
  return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (path[0] == '/'));
}

int notify_send(const char *msg) {
  struct sockaddr_un sa;
  socklen_t len = address(&sa);
  if (!len) return 0;
  if (fd < 0 && (fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) return -errno;
  if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sa, len) < 0)
    return -errno;
  return 0;
}

uint64_t notify_watchdog_usec(void) {
  const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
  char *end;
  if (!usec || !notify_enabled()) return 0;
  if (pid && *pid && strtol(pid, NULL, 10) != (long)getpid()) return 0;
  unsigned long long v = strtoull(usec, &end, 10);
  return end != usec && !*end ? (uint64_t)v : 0;
}
