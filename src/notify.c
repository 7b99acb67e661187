/* notify.c - the systemd notify protocol, written by hand rather than linking libsystemd.
 *
 * The protocol is one datagram per message on the AF_UNIX socket named by NOTIFY_SOCKET (a
 * path, or "@name" for the abstract namespace), holding newline-separated KEY=VALUE lines. That
 * is twenty lines of code; libsystemd would bring a large library and its dependencies into a
 * small daemon (and into a sandbox whose system-call filter must then allow what it does) for
 * one sendmsg(2). Sends are non-blocking: a slow or gone service manager never stalls the loop.
 * Failures are logged once and otherwise ignored (systemd notices a silent service itself). */
#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"
#include "util.h"
#include "banned.h"

struct notify {
	int fd;                  /* -1 when notifying is off */
	struct sockaddr_un addr;
	socklen_t addr_len;
	int64_t watchdog_ms;
	atomic_int failed_errno; /* of the first send that failed, said by the loop's next send */
	atomic_bool warned;
};

struct notify *notify_new(void)
{
	struct notify *n = xcalloc(1, sizeof(*n));
	n->fd = -1;
	const char *path = getenv("NOTIFY_SOCKET");
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	long watchdog_pid;
	long long watchdog_usec = usec ? strtoll(usec, NULL, 10) : 0;
	if (watchdog_usec > 0 && (!pid || (parse_long(pid, 1, 1L << 30, &watchdog_pid) == 0 &&
					    watchdog_pid == (long)getpid())))
		n->watchdog_ms = watchdog_usec / 1000 > 0 ? watchdog_usec / 1000 : 1;
	if (path && *path) {
		size_t len = strlen(path);
		if ((path[0] != '/' && path[0] != '@') || len >= sizeof(n->addr.sun_path)) {
			log_warn("NOTIFY_SOCKET '%s' is not a socket path: not notifying systemd", path);
		} else {
			n->addr.sun_family = AF_UNIX;
			memcpy(n->addr.sun_path, path, len);
			if (path[0] == '@')
				n->addr.sun_path[0] = '\0';   /* the abstract namespace */
			/* An abstract name is exactly len bytes; a path includes its NUL. */
			n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
						  (path[0] == '/'));
			n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
			if (n->fd < 0)
				log_warn("cannot make a socket to notify systemd: %s", strerror(errno));
		}
	}
	if (n->fd < 0)
		n->watchdog_ms = 0;   /* nobody to ping */
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	return n;
}

bool notify_enabled(const struct notify *n)
{
	return n->fd >= 0;
}

int64_t notify_watchdog_ms(const struct notify *n)
{
	return n->watchdog_ms;
}

/* One datagram, whole or not at all: never blocks (SOCK_NONBLOCK and MSG_DONTWAIT), takes no
 * lock, allocates nothing and touches no stdio, so any thread may send at any time (the signal
 * thread while the loop is stuck). A failure is kept for the loop to say once. */
static int send_datagram(struct notify *n, const char *msg, size_t len)
{
	if (sendto(n->fd, msg, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&n->addr,
		   n->addr_len) == (ssize_t)len)
		return 0;
	int none = 0;
	atomic_compare_exchange_strong(&n->failed_errno, &none, errno ? errno : EIO);
	return -1;
}

int notify_send(struct notify *n, const char *fmt, ...)
{
	if (n->fd < 0)
		return 0;
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	int len = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (len < 0 || (size_t)len >= sizeof(msg))
		len = (int)strlen(msg);
	int rc = send_datagram(n, msg, (size_t)len);
	int err = atomic_load(&n->failed_errno);
	if (err && !atomic_exchange(&n->warned, true))
		log_warn("cannot notify systemd: %s", strerror(err));
	return rc;
}

int notify_stopping(struct notify *n, int64_t extend_ms)
{
	if (n->fd < 0)
		return 0;
	static const char head[] = "STOPPING=1\nEXTEND_TIMEOUT_USEC=";
	char msg[sizeof(head) + 24];
	memcpy(msg, head, sizeof(head) - 1);
	size_t len = sizeof(head) - 1;
	uint64_t usec = extend_ms > 0 ? (uint64_t)extend_ms * 1000 : 0;
	char digits[24];
	size_t nd = 0;
	do
		digits[nd++] = (char)('0' + usec % 10);
	while ((usec /= 10) && nd < sizeof(digits));
	while (nd)
		msg[len++] = digits[--nd];
	return send_datagram(n, msg, len);
}
