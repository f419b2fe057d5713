/* notify-listen — a stand-in for systemd's notification socket in tests: binds an
 * AF_UNIX datagram socket at PATH ("@name" for an abstract one) and prints each
 * datagram received, newlines inside it shown as '|', one per line, flushed. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char **argv) {
  struct sockaddr_un sa;
  char buf[4096];
  if (argc != 2 || strlen(argv[1]) >= sizeof sa.sun_path) {
    fprintf(stderr, "usage: notify-listen PATH|@NAME\n");
    return 2;
  }
  size_t n = strlen(argv[1]);
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, argv[1], n);
  if (argv[1][0] == '@') sa.sun_path[0] = 0;
  int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
  socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (argv[1][0] != '@'));
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) < 0) {
    perror("notify-listen: bind");
    return 1;
  }
  printf("listening\n");
  fflush(stdout);
  for (;;) {
    ssize_t got = recv(fd, buf, sizeof buf - 1, 0);
    if (got < 0) return 1;
    for (ssize_t i = 0; i < got; i++)
      if (buf[i] == '\n') buf[i] = '|';
    buf[got] = 0;
    printf("%s\n", buf);
    fflush(stdout);
  }
}
