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
	bool warned;
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

void notify_free(struct notify *n)
{
	if (!n)
		return;
	if (n->fd >= 0)
		close(n->fd);
	free(n);
}

bool notify_enabled(const struct notify *n)
{
	return n->fd >= 0;
}

int64_t notify_watchdog_ms(const struct notify *n)
{
	return n->watchdog_ms;
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
	if (sendto(n->fd, msg, (size_t)len, MSG_NOSIGNAL, (struct sockaddr *)&n->addr,
		   n->addr_len) == len)
		return 0;
	if (!n->warned)
		log_warn("cannot notify systemd: %s", strerror(errno));
	n->warned = true;
	return -1;
}
