/* test_notify.c - the systemd notify protocol as a socket of the test's own hears it: one
 * datagram per message, and STOPPING=1 with EXTEND_TIMEOUT_USEC sent from any thread without
 * ever blocking, even when nobody reads the socket. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"
#include "util.h"
#include "tap.h"

/* A datagram socket in the abstract namespace (no file to remove), named in NOTIFY_SOCKET. */
static int listener(int rcvbuf)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	char name[64];
	snprintf(name, sizeof(name), "@imgspool-test-notify-%ld-%d", (long)getpid(), rcvbuf);
	size_t len = strlen(name);
	memcpy(addr.sun_path, name, len);
	addr.sun_path[0] = '\0';
	if (rcvbuf)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (bind(fd, (struct sockaddr *)&addr, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
		return -1;
	setenv("NOTIFY_SOCKET", name, 1);
	return fd;
}

/* Never freed, as in the daemon (the signal thread may send at any time): kept reachable. */
static struct notify *volatile kept[2];

static void received(int fd, char *buf, size_t size)
{
	struct timeval tv = { .tv_sec = 5 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ssize_t got = recv(fd, buf, size - 1, 0);
	buf[got > 0 ? got : 0] = '\0';
}

static void test_stopping_message(void)
{
	static const struct {
		const char *name;
		int64_t extend_ms;
		const char *want;
	} rows[] = {
		{ "a grace period and the cut", 911000, "STOPPING=1\nEXTEND_TIMEOUT_USEC=911000000" },
		{ "the cut alone", 11000, "STOPPING=1\nEXTEND_TIMEOUT_USEC=11000000" },
		{ "nothing left: 0, never negative", -5, "STOPPING=1\nEXTEND_TIMEOUT_USEC=0" },
		{ "the longest grace period and more", 7200000 + 17000,
		  "STOPPING=1\nEXTEND_TIMEOUT_USEC=7217000000" },
	};
	int fd = listener(0);
	ok(fd >= 0, "the test's socket is bound");
	struct notify *n = kept[0] = notify_new();
	ok(notify_enabled(n) && !getenv("NOTIFY_SOCKET"), "notifying is on, the variable unset");
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char buf[256];
		int rc = notify_stopping(n, rows[i].extend_ms);
		received(fd, buf, sizeof(buf));
		ok(rc == 0, "%s: sent", rows[i].name);
		is_str(buf, rows[i].want, "%s: one datagram, as systemd reads it", rows[i].name);
	}
	close(fd);
}

struct sender {
	struct notify *n;
	int sent, failed;
	int64_t longest_ms;
};

static void *send_many(void *arg)
{
	struct sender *s = arg;
	for (int i = 0; i < 2000; i++) {
		int64_t t0 = mono_ms();
		if (notify_stopping(s->n, 6000 + i) == 0)
			s->sent++;
		else
			s->failed++;
		int64_t took = mono_ms() - t0;
		if (took > s->longest_ms)
			s->longest_ms = took;
	}
	return NULL;
}

/* Nobody reads: the socket's queue fills, and a send then fails at once (EAGAIN) instead of
 * waiting for room, from two threads at once (a signal thread and the loop). */
static void test_never_blocks(void)
{
	int fd = listener(4096);
	struct notify *n = kept[1] = notify_new();
	struct sender a = { .n = n }, b = { .n = n };
	pthread_t ta, tb;
	pthread_create(&ta, NULL, send_many, &a);
	pthread_create(&tb, NULL, send_many, &b);
	pthread_join(ta, NULL);
	pthread_join(tb, NULL);
	ok(a.failed + b.failed > 0, "a queue nobody reads fills (%d sent, %d refused)",
	   a.sent + b.sent, a.failed + b.failed);
	ok(a.longest_ms < 1000 && b.longest_ms < 1000,
	   "and no send waited for room (longest %lld ms)",
	   (long long)(a.longest_ms > b.longest_ms ? a.longest_ms : b.longest_ms));
	ok(notify_send(n, "STATUS=%s", "still there") < 0, "a send from the loop fails too, said once");
	close(fd);
}

int main(void)
{
	test_stopping_message();
	test_never_blocks();
	return tap_done();
}
