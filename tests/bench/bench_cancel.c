/* bench_cancel.c - `make bench` (BENCH_ONLY=cancel): what cancelling CALLS calls in flight costs
 * the loop thread, as the second SIGTERM's grace cut does (one loop callback cancels them all).
 * A server on loopback reads every request and never answers; once it has them all, a timer on
 * the loop cancels every call. Prints the loop thread's time in those cancels. With MARK set, it
 * writes "cancels\n" to stderr before them and "free\n" once the loop stopped (the turn's wakes
 * are sent then), so bench_cancel.py can count under strace the system calls the loop thread
 * made in between. Asserts nothing.
 *
 *   bench_cancel CALLS */
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "log.h"
#include "loop.h"
#include "util.h"

static int listen_fd, requests_seen, calls;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct http *http;
static struct http_xfer **xfers;
static int64_t cancels_ns;

/* One connection: its request is counted, then read on until the client hangs up. */
static void *hold(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[4096];
	bool counted = false;
	while (read(fd, buf, sizeof(buf)) > 0)
		if (!counted) {
			counted = true;
			pthread_mutex_lock(&lock);
			requests_seen++;
			pthread_mutex_unlock(&lock);
		}
	close(fd);
	return NULL;
}

static void *accept_all(void *arg)
{
	(void)arg;
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	for (;;) {
		int fd = accept(listen_fd, NULL, NULL);
		if (fd < 0)
			return NULL;
		pthread_t t;
		pthread_create(&t, &attr, hold, (void *)(intptr_t)fd);
		pthread_detach(t);
	}
}

static void never(void *arg, struct http_result *res)
{
	(void)arg;
	(void)res;
	fatal("a cancelled call got its callback");
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t cancel_all(struct loop *loop, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&lock);
	int seen = requests_seen;
	pthread_mutex_unlock(&lock);
	if (seen < calls)
		return 5;
	if (getenv("MARK"))
		write_all(2, "cancels\n", 8);
	int64_t start = now_ns();
	for (int i = 0; i < calls; i++)
		http_cancel(http, xfers[i]);
	cancels_ns = now_ns() - start;
	loop_stop(loop);
	return LOOP_TIMER_DONE;
}

int main(int argc, char **argv)
{
	calls = argc > 1 ? atoi(argv[1]) : 1000;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t salen = sizeof(sa);
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(listen_fd, 4096) < 0 || getsockname(listen_fd, (struct sockaddr *)&sa, &salen) < 0)
		fatal("cannot listen on loopback");
	pthread_t server;
	pthread_create(&server, NULL, accept_all, NULL);
	struct loop *loop = loop_new();
	http = http_new(loop, calls * 2L);
	char url[64];
	xsnprintf(url, sizeof(url), "http://127.0.0.1:%d/hold", ntohs(sa.sin_port));
	struct http_request req = { .url = url, .timeout_s = 120, .connect_timeout_s = 30,
				    .max_body = 1024, .body_fd = -1 };
	xfers = xcalloc((size_t)calls, sizeof(*xfers));
	for (int i = 0; i < calls; i++)
		xfers[i] = http_start(http, &req, never, NULL);
	loop_add_timer(loop, 5, cancel_all, NULL);
	loop_run(loop);   /* its end sends the turn's wakes */
	if (getenv("MARK"))
		write_all(2, "free\n", 5);
	printf("%d cancels: %.3f ms on the loop thread (%.2f us each)\n", calls, cancels_ns / 1e6,
	       cancels_ns / 1e3 / calls);
	fflush(stdout);
	http_free(http);
	loop_free(loop);
	free(xfers);
	return 0;   /* the server's threads end with the process */
}
