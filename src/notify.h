/* notify.h - telling systemd how the service is (sd_notify(3) protocol): READY=1, STATUS=,
 * RELOADING=1, STOPPING=1, EXTEND_TIMEOUT_USEC=, WATCHDOG=1. Does nothing when the daemon was
 * not started by systemd with Type=notify (no NOTIFY_SOCKET). */
#ifndef NOTIFY_H
#define NOTIFY_H

#include <stdbool.h>
#include <stdint.h>

struct notify;

/* Reads NOTIFY_SOCKET and WATCHDOG_USEC (for this pid) from the environment and unsets them, so
 * no child inherits them. Never fails: a bad socket name is logged and notifying is off. Kept
 * till the process ends (the signal thread may send at any time): never freed. */
struct notify *notify_new(void);
/* Sends one datagram of newline-separated KEY=VALUE lines; never blocks; -1 on failure (the
 * first failure of any send is logged here, once). On the loop. */
int notify_send(struct notify *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* STOPPING=1 and EXTEND_TIMEOUT_USEC=extend_ms: from any thread, at any time (no lock, no
 * allocation, no stdio, never blocks: the signal thread, the loop stuck on a stalled spool).
 * systemd then waits extend_ms more at least, never less than it would have. -1 on failure. */
int notify_stopping(struct notify *n, int64_t extend_ms);
/* The watchdog interval systemd expects pings within, in ms; 0 = no watchdog. */
int64_t notify_watchdog_ms(const struct notify *n);
bool notify_enabled(const struct notify *n);

#endif
