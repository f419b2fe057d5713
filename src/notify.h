/* notify — the systemd service notification protocol, by hand: one datagram per
 * message to the AF_UNIX socket named by $NOTIFY_SOCKET (a path, or "@name" for an
 * abstract socket). Nothing is sent, and nothing fails, when it is unset. */
#ifndef OUTBOXD_NOTIFY_H
#define OUTBOXD_NOTIFY_H

#include <stdint.h>

/* 1 when $NOTIFY_SOCKET names a socket (the service manager listens). */
int notify_enabled(void);

/* Sends `msg` ("READY=1", "STATUS=...", several lines joined by '\n'). Returns 0
 * (also when notifications are off), or a negative errno when the send failed. */
int notify_send(const char *msg);

/* The watchdog period systemd expects pings within ($WATCHDOG_USEC, when
 * $WATCHDOG_PID is unset or names this process), in microseconds; 0 when off. */
uint64_t notify_watchdog_usec(void);

#endif
