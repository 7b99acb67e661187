/* test_http.c - which addresses a download may connect to (http_ip_is_public); and transfers on
 * the loop against a small server in a thread: a kept easy handle carries nothing of its last
 * call into the next, calls share one kept-alive connection, a connection the server closed
 * while it was idle is replaced, and a body kept on disk is there whole. A cancelled transfer
 * never gets its callback, wherever it is when cancelled: on its way to the transfer thread, in
 * flight there, finished and waiting for the loop, or in the same batch of callbacks as the
 * call that cancels it (ASan sees any use of it after the cancel); and a cancel of one transfer
 * of a batch the transfer thread is taking in loses none of the others. The answer of a call
 * never waits behind the body write of another that stalls after it in the same turn. A proxy
 * named in the environment is used. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "dispatch_impl.h"
#include "http.h"
#include "loop.h"
#include "slots.h"
#include "util.h"
#include "full_pipe.h"
#include "tap.h"

static const struct {
	const char *addr;
	bool is_public;
} rows[] = {
	{ "93.184.215.14", true },
	{ "8.8.8.8", true },
	{ "127.0.0.1", false },
	{ "127.255.1.2", false },
	{ "10.1.2.3", false },
	{ "172.16.0.1", false },
	{ "172.31.255.255", false },
	{ "172.32.0.1", true },
	{ "192.168.1.1", false },
	{ "169.254.169.254", false },
	{ "100.64.0.1", false },
	{ "0.0.0.0", false },
	{ "224.0.0.1", false },
	{ "255.255.255.255", false },
	{ "2606:2800:220:1:248:1893:25c8:1946", true },
	{ "::1", false },
	{ "::", false },
	{ "fd00::1", false },
	{ "fe80::1", false },
	{ "ff02::1", false },
	{ "::ffff:127.0.0.1", false },
	{ "::ffff:10.0.0.1", false },
	{ "::ffff:93.184.215.14", true },
	{ "64:ff9b::a9fe:a9fe", false },
};

/* ---- a server in a thread: one connection at a time, requests recorded -------------------- */

#define REQUESTS 3
static const char chunked_reply[] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
				     "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n";

struct server {
	int listen_fd;
	char requests[REQUESTS][1024];   /* request line and headers as received */
	int n_requests;
	int connections;
};

/* A listening socket on 127.0.0.1, its port in *port; -1 (a failed check) if none. */
static int listen_on_loopback(int backlog, int *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t salen = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, backlog) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &salen) < 0) {
		ok(0, "a server on loopback");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

/* What the tests of transfers share: a server on loopback in a thread, a loop and its http. */
struct rig {
	int listen_fd, port;
	pthread_t server;
	struct loop *loop;
	struct http *http;
	char url[3][64];         /* of the paths given to rig_start */
};

static const char *const abc_paths[3] = { "/a", "/b", "/c" };
enum { OK, HOLD, HOLD_AT_ONCE };   /* the held server's */
static const char *const held_paths[3] = { "/ok", "/hold", "/hold-at-once" };

static void rig_url(const struct rig *r, char url[64], const char *path)
{
	xsnprintf(url, 64, "http://127.0.0.1:%d%s", r->port, path);
}

/* Listens on loopback (the fd in *server_fd too), runs serve_fn(arg) in a thread, makes the loop
 * and its http, and the URLs of paths; false (a failed check) if it cannot listen. */
static bool rig_start(struct rig *r, const char *const paths[3], int *server_fd,
		      void *(*serve_fn)(void *), void *arg)
{
	r->listen_fd = listen_on_loopback(64, &r->port);
	if (r->listen_fd < 0)
		return false;
	*server_fd = r->listen_fd;
	for (int i = 0; i < 3; i++)
		rig_url(r, r->url[i], paths[i]);
	pthread_create(&r->server, NULL, serve_fn, arg);
	r->loop = loop_new();
	r->http = http_new(r->loop, 64);
	return true;
}

/* The http first: its connections close, which ends the server's connection threads; the
 * listening socket's shutdown ends its accept. */
static void rig_stop(struct rig *r)
{
	http_free(r->http);
	loop_free(r->loop);
	shutdown(r->listen_fd, SHUT_RDWR);
	pthread_join(r->server, NULL);
	close(r->listen_fd);
}

/* A GET: a 5 s connect timeout, a body of 1 KiB at most, none kept on disk. */
static struct http_request get_of(const char *url, long timeout_s)
{
	return (struct http_request){ .url = url, .timeout_s = timeout_s, .connect_timeout_s = 5,
				      .max_body = 1024, .body_fd = -1 };
}

/* Reads one request (headers and a Content-Length body); 0 at end of connection. */
static int read_request(int fd, char *head, size_t size)
{
	size_t len = 0;
	while (len + 1 < size) {
		ssize_t n = read(fd, head + len, 1);
		if (n <= 0)
			return 0;
		len++;
		head[len] = '\0';
		if (len >= 4 && !memcmp(head + len - 4, "\r\n\r\n", 4))
			break;
	}
	const char *cl = strcasestr(head, "content-length:");
	long body = cl ? strtol(cl + 15, NULL, 10) : 0;
	char c;
	for (long i = 0; i < body; i++)
		if (read(fd, &c, 1) != 1)
			return 0;
	return 1;
}

static void *serve(void *arg)
{
	struct server *sv = arg;
	while (sv->n_requests < REQUESTS) {
		int fd = accept(sv->listen_fd, NULL, NULL);
		if (fd < 0)
			break;
		sv->connections++;
		while (sv->n_requests < REQUESTS &&
		       read_request(fd, sv->requests[sv->n_requests], sizeof(sv->requests[0]))) {
			int i = sv->n_requests++;
			const char *reply = i == 0 ? chunked_reply
					    : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
			if (write_all(fd, reply, strlen(reply)) < 0)
				break;
			if (i == 1)
				break;   /* closes the kept-alive connection while the client idles */
		}
		close(fd);
	}
	return NULL;
}

struct call {
	bool done;
	long status;
	char body[64];
};

static void call_done(void *arg, struct http_result *res)
{
	struct call *c = arg;
	c->done = true;
	c->status = res->transport == HTTP_DONE ? res->status : -1;
	xsnprintf(c->body, sizeof(c->body), "%s", res->body ? res->body : "");
}

static int64_t stop_now(struct loop *loop, void *arg)
{
	(void)arg;
	loop_stop(loop);
	return LOOP_TIMER_DONE;
}

static int64_t check_call(struct loop *loop, void *arg)
{
	struct call *c = arg;
	if (c->done)
		loop_stop(loop);
	return c->done ? LOOP_TIMER_DONE : 1;
}

/* Runs the loop until check (a timer from now on) stops it, or 5 s. */
static void run_checking(struct loop *loop, loop_timer_fn *check, void *arg)
{
	uint64_t deadline = loop_add_timer(loop, 5000, stop_now, NULL);
	uint64_t timer = loop_add_timer(loop, 0, check, arg);
	loop_run(loop);
	loop_del_timer(loop, deadline);
	loop_del_timer(loop, timer);
}

/* Runs the loop until c's callback came, or 5 s. */
static void until_called(struct loop *loop, struct call *c)
{
	run_checking(loop, check_call, c);
}

/* Runs one transfer to its end (5 s at most). */
static void run_call(struct loop *loop, struct http *http, struct http_request *req, struct call *c)
{
	*c = (struct call){ 0 };
	ok(http_start(http, req, call_done, c) != NULL, "%s started", req->url);
	until_called(loop, c);
}

static void test_calls_on_the_loop(void)
{
	static struct server sv;
	struct rig r;
	if (!rig_start(&r, abc_paths, &sv.listen_fd, serve, &sv))
		return;
	struct loop *loop = r.loop;
	struct http *http = r.http;
	char (*url)[64] = r.url;
	FILE *kept = tmpfile();
	const char *const more[] = { "X-Only-Once: 1", NULL };
	struct http_request post = { .url = url[0], .bearer = "sk-once", .body = "{}", .body_len = 2,
				     .headers = more, .timeout_s = 5, .connect_timeout_s = 5,
				     .max_body = 1024, .body_fd = kept ? dup(fileno(kept)) : -1 };
	struct http_request get = get_of(url[1], 5);
	struct call c;
	run_call(loop, http, &post, &c);
	ok(c.status == 200 && !strcmp(c.body, "hello world"), "a chunked body arrives whole (%ld '%s')",
	   c.status, c.body);
	char saved[64] = "";
	ssize_t n = kept ? pread(fileno(kept), saved, sizeof(saved) - 1, 0) : -1;
	saved[n > 0 ? n : 0] = '\0';
	is_str(saved, "hello world", "the body kept on disk is whole");
	run_call(loop, http, &get, &c);
	ok(c.status == 200 && !strcmp(c.body, "ok"), "a second call on the kept handle (%ld)", c.status);
	ok(!strncmp(sv.requests[1], "GET /b ", 7), "it is a GET: nothing of the POST is left");
	ok(!strcasestr(sv.requests[1], "authorization") && !strcasestr(sv.requests[1], "x-only-once"),
	   "neither the key nor the other call's header goes with it");
	ok(sv.connections == 1, "both calls went over one kept-alive connection (%d)", sv.connections);
	get.url = url[2];
	run_call(loop, http, &get, &c);
	ok(c.status == 200, "a call after the server closed the idle connection (%ld)", c.status);
	ok(sv.connections == 2, "on a new connection (%d)", sv.connections);

	rig_stop(&r);
	if (kept)
		fclose(kept);
}

/* ---- cancels: a server answering every connection in a thread of its own ------------------ */

struct held_server {
	int listen_fd;
	int answered;            /* requests answered, under lock */
	int held;                /* requests to /hold read and never answered (/hold-at-once too,
				  * uncounted: it may arrive any time after its cancel) */
	pthread_mutex_t lock;
};

struct conn {
	struct held_server *sv;
	int fd;
};

static void *serve_conn(void *arg)
{
	struct conn *c = arg;
	char head[1024];
	while (read_request(c->fd, head, sizeof(head))) {
		bool hold = !strncmp(head, "GET /hold", 9);
		pthread_mutex_lock(&c->sv->lock);
		if (!strncmp(head, "GET /hold ", 10))
			c->sv->held++;
		else if (!hold)
			c->sv->answered++;
		pthread_mutex_unlock(&c->sv->lock);
		if (hold)
			continue;   /* read on: the client's close ends the connection */
		const char *reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
		if (write_all(c->fd, reply, strlen(reply)) < 0)
			break;
	}
	close(c->fd);
	free(c);
	return NULL;
}

static void *accept_all(void *arg)
{
	struct held_server *sv = arg;
	for (;;) {
		int fd = accept(sv->listen_fd, NULL, NULL);
		if (fd < 0)
			return NULL;   /* the listening socket was shut down */
		struct conn *c = xcalloc(1, sizeof(*c));
		*c = (struct conn){ .sv = sv, .fd = fd };
		pthread_t t;
		pthread_create(&t, NULL, serve_conn, c);
		pthread_detach(t);
	}
}

static int held_now(struct held_server *sv)
{
	pthread_mutex_lock(&sv->lock);
	int n = sv->held;
	pthread_mutex_unlock(&sv->lock);
	return n;
}

/* Runs the loop until *flag (read under sv's lock when sv is given) is at least want, or 5 s. */
struct wait_for {
	struct held_server *sv;
	int *flag, want;
};

static int64_t check_flag(struct loop *loop, void *arg)
{
	struct wait_for *w = arg;
	int v = w->sv ? held_now(w->sv) : *w->flag;
	if (v >= w->want) {
		loop_stop(loop);
		return LOOP_TIMER_DONE;
	}
	return 1;
}

static void run_until(struct loop *loop, struct wait_for *w)
{
	run_checking(loop, check_flag, w);
}

/* Two calls; the first callback cancels the other call. */
struct pair {
	struct http *http;
	struct http_xfer *x[2];
	int callbacks;
};

struct pair_call {
	struct pair *p;
	int i;
};

static void pair_done(void *arg, struct http_result *res)
{
	(void)res;
	struct pair_call *c = arg;
	struct pair *p = c->p;
	p->callbacks++;
	p->x[c->i] = NULL;
	if (p->x[!c->i])
		http_cancel(p->http, p->x[!c->i]);
	p->x[!c->i] = NULL;
}

static void test_cancels(void)
{
	static struct held_server sv;
	pthread_mutex_init(&sv.lock, NULL);
	struct rig r;
	if (!rig_start(&r, held_paths, &sv.listen_fd, accept_all, &sv))
		return;
	struct loop *loop = r.loop;
	struct http *http = r.http;
	struct http_request hold = get_of(r.url[HOLD], 30), fast = get_of(r.url[OK], 5);

	/* Cancelled at once: on its way to the transfer thread, or just taken by it. */
	struct call c = { 0 };
	struct http_request at_once = hold;
	at_once.url = r.url[HOLD_AT_ONCE];
	struct http_xfer *x = http_start(http, &at_once, call_done, &c);
	http_cancel(http, x);
	/* Cancelled in flight: the server has its request. */
	int held_before = held_now(&sv);
	struct call c2 = { 0 };
	x = http_start(http, &hold, call_done, &c2);
	struct wait_for w = { .sv = &sv, .want = held_before + 1 };
	run_until(loop, &w);
	ok(held_now(&sv) == held_before + 1, "the held call reached the server");
	http_cancel(http, x);
	/* Two calls answered at once; the first callback cancels the other, wherever it is:
	 * in flight, finished and waiting for the loop, or in the same batch of callbacks. */
	int once = 0;
	for (int i = 0; i < 20; i++) {
		struct pair p = { .http = http };
		struct pair_call pc[2] = { { &p, 0 }, { &p, 1 } };
		p.x[0] = http_start(http, &fast, pair_done, &pc[0]);
		p.x[1] = http_start(http, &fast, pair_done, &pc[1]);
		struct wait_for done = { .flag = &p.callbacks, .want = 1 };
		run_until(loop, &done);
		/* A call after it: a callback of the cancelled one would have come by its end. */
		struct call after = { 0 };
		run_call(loop, http, &fast, &after);
		once += p.callbacks == 1;
	}
	ok(once == 20, "of two calls, the one cancelled by the other's callback never got its own "
	   "(%d of 20 pairs)", once);
	ok(!c.done && !c2.done, "neither held call got its callback");

	rig_stop(&r);
}

/* ---- a cancel while the transfer thread takes a batch in ----------------------------------- */

/* Whether the transfer thread (HTTP_THREAD_NAME) is in this process; if so, *nr and *arg0 say
 * which system call it is in (/proc/self/task/TID/syscall: "1 0xFD ..." for a write to FD). */
static bool transfer_thread_syscall(unsigned long *nr, unsigned long *arg0)
{
	DIR *d = opendir("/proc/self/task");
	bool found = false;
	*nr = *arg0 = ~0UL;
	for (struct dirent *e; d && !found && (e = readdir(d));) {
		char path[96], text[128] = "";
		xsnprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		FILE *f = fopen(path, "r");
		if (!f)
			continue;
		found = fgets(text, sizeof(text), f) &&
			!strncmp(text, HTTP_THREAD_NAME, strlen(HTTP_THREAD_NAME));
		fclose(f);
		if (!found)
			continue;
		xsnprintf(path, sizeof(path), "/proc/self/task/%s/syscall", e->d_name);
		f = fopen(path, "r");
		if (f && fscanf(f, "%lu 0x%lx", nr, arg0) != 2)
			*nr = *arg0 = ~0UL;
		if (f)
			fclose(f);
	}
	if (d)
		closedir(d);
	return found;
}

/* Whether the transfer thread is in write(2) on fd. */
static bool transfer_thread_writes(int fd)
{
	unsigned long nr, arg0;
	return transfer_thread_syscall(&nr, &arg0) && nr == 1 && arg0 == (unsigned long)fd;
}

static void count_done(void *arg, struct http_result *res)
{
	(void)res;
	(*(int *)arg)++;
}

/* Waits (10 s at most) until the transfer thread is (want) or is not in a write to fd. */
static bool until_writes(int fd, bool want)
{
	int64_t deadline = mono_ms() + 10000;
	while (transfer_thread_writes(fd) != want && mono_ms() < deadline)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	return transfer_thread_writes(fd) == want;
}

/* The transfer thread is held in a write of a body to a full pipe while BATCH calls are started,
 * so it takes them in as one batch when the pipe is drained; then calls from the end of the batch
 * backward are cancelled, the first ones while still queued, then one the thread has taken in and
 * not yet handed to libcurl. Every call not cancelled must still get its callback. */
#define BATCH 2000
static void test_cancel_in_a_batch(void)
{
	static struct held_server sv;
	pthread_mutex_init(&sv.lock, NULL);
	int pipe_fd[2];
	struct rig r;
	if (full_pipe(pipe_fd) < 0 || !rig_start(&r, held_paths, &sv.listen_fd, accept_all, &sv))
		return;
	struct loop *loop = r.loop;
	struct http *http = r.http;
	char fill[4096];
	struct http_request blocker = get_of(r.url[OK], 30);
	blocker.body_fd = dup(pipe_fd[1]);
	struct http_request refused = get_of("http://127.0.0.1:1/", 30);
	int callbacks = 0, cancelled = 0;
	http_start(http, &blocker, count_done, &callbacks);
	ok(until_writes(blocker.body_fd, true), "the transfer thread waits to write a body");
	static struct http_xfer *xs[BATCH];
	for (int i = 0; i < BATCH; i++)
		xs[i] = http_start(http, &refused, count_done, &callbacks);
	ok(read(pipe_fd[0], fill, sizeof(fill)) > 0, "room in the pipe");
	until_writes(blocker.body_fd, false);
	for (int i = BATCH - 2; i >= BATCH / 2; i--, cancelled++)
		http_cancel(http, xs[i]);
	struct wait_for all = { .flag = &callbacks, .want = 1 + BATCH - cancelled };
	run_until(loop, &all);
	ok(callbacks == 1 + BATCH - cancelled, "every call not cancelled got its callback (%d of %d)",
	   callbacks, 1 + BATCH - cancelled);

	rig_stop(&r);
	close(pipe_fd[0]);
	close(pipe_fd[1]);
}

/* ---- cancels while the transfer thread is stuck in a write (a spool on a stalled NFS) ------- */

/* Drains the full pipe once the cancels returned, or after 10 s if they never do (a cancel that
 * waits for the stuck thread): the test then fails instead of hanging. */
struct rescuer {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool cancels_returned, drained;
	int read_fd;
	ssize_t read;            /* bytes drained */
};

static void *rescue(void *arg)
{
	struct rescuer *r = arg;
	struct timespec until;
	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += 10;
	pthread_mutex_lock(&r->lock);
	while (!r->cancels_returned &&
	       pthread_cond_timedwait(&r->cond, &r->lock, &until) == 0)
		;
	char room[4096];
	r->read = read(r->read_fd, room, sizeof(room));
	r->drained = true;
	pthread_mutex_unlock(&r->lock);
	return NULL;
}

/* The dispatcher's budget of open files for a .partial (slots_partial_room): under a limit of
 * 1024, 639 calls leave room for one (639 + 1 + a reserve of 64 + 256 + 1024/16). */
static void partial_budget(struct dispatch *d, struct config *cfg, struct loop *loop,
			   struct http *http)
{
	struct rlimit was, low;
	getrlimit(RLIMIT_NOFILE, &was);
	low = was;
	low.rlim_cur = 1024;
	ok(setrlimit(RLIMIT_NOFILE, &low) == 0, "a limit of 1024 open files");
	*cfg = (struct config){ .concurrency = 639 };
	*d = (struct dispatch){ .loop = loop, .cfg = cfg, .http = http, .slots = slots_new(loop) };
	setrlimit(RLIMIT_NOFILE, &was);
}

/* A call whose body write is stuck (a full pipe), and with it the transfer thread, a call in
 * flight beside it and an upload of a lent body (libcurl may still be reading it): the cancels
 * return at once, no callback ever comes, the stuck write lands and nothing after it, the
 * transfer thread closes the cancelled call's body_fd, and the lent body is freed once libcurl
 * let go of it (ASan: no leak, no use after free). Till then the descriptors the cancelled calls
 * hold count against the open files a new call's .partial may use. */
static void test_cancel_while_the_thread_is_stuck(void)
{
	static struct held_server sv;
	pthread_mutex_init(&sv.lock, NULL);
	int pipe_fd[2];
	ssize_t filled = full_pipe(pipe_fd);
	struct rig rg;
	if (filled < 0 || !rig_start(&rg, held_paths, &sv.listen_fd, accept_all, &sv))
		return;
	pthread_t rescuer_thread;
	struct loop *loop = rg.loop;
	struct http *http = rg.http;
	struct http_request hold = get_of(rg.url[HOLD], 30), stuck = get_of(rg.url[OK], 30);
	struct http_request fast = get_of(rg.url[OK], 5);
	stuck.body_fd = dup(pipe_fd[1]);
	struct http_request upload = hold;
	upload.url = rg.url[HOLD_AT_ONCE];
	upload.method = "PUT";
	upload.body_len = 4 << 20;
	upload.body_lent = xcalloc(1, upload.body_len);
	struct call in_flight = { 0 }, writing = { 0 }, uploading = { 0 };
	struct http_xfer *sending = http_start(http, &upload, call_done, &uploading);
	struct http_xfer *held = http_start(http, &hold, call_done, &in_flight);
	struct wait_for w = { .sv = &sv, .want = 1 };
	run_until(loop, &w);
	ok(held_now(&sv) == 1, "a call in flight");
	struct config cfg;
	struct dispatch d;
	partial_budget(&d, &cfg, loop, http);
	ok(slots_partial_room(&d), "a .partial may be kept open");
	struct http_xfer *x = http_start(http, &stuck, call_done, &writing);
	ok(until_writes(stuck.body_fd, true), "the transfer thread is stuck writing a body");

	struct rescuer r = { .read_fd = pipe_fd[0] };
	pthread_mutex_init(&r.lock, NULL);
	pthread_condattr_t attr;
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&r.cond, &attr);
	pthread_create(&rescuer_thread, NULL, rescue, &r);
	int64_t before = mono_ms();
	http_cancel(http, x);
	http_cancel(http, held);
	http_cancel(http, sending);
	int64_t took = mono_ms() - before;
	int cancelled_files = http_cancelled_files(http);
	bool partial_room = slots_partial_room(&d);
	pthread_mutex_lock(&r.lock);
	bool stuck_still = !r.drained;
	r.cancels_returned = true;
	pthread_cond_signal(&r.cond);
	pthread_mutex_unlock(&r.lock);
	ok(stuck_still, "the cancels returned while the transfer thread was stuck (%lld ms)",
	   (long long)took);
	pthread_join(rescuer_thread, NULL);
	ok(stuck_still && cancelled_files == 4, "meanwhile their descriptors were counted: the body_fd "
	   "and three sockets (%d)", cancelled_files);
	ok(stuck_still && !partial_room, "and a new call had no room to keep its .partial open");

	/* A callback of a cancelled call would have come by the end of a call after them. */
	struct call after = { 0 };
	run_call(loop, http, &fast, &after);
	ok(after.status == 200, "a call after them (%ld)", after.status);
	ok(!in_flight.done && !writing.done && !uploading.done, "no callback of a cancelled call");
	ok(http_cancelled_files(http) == 0 && slots_partial_room(&d),
	   "once the cancels were taken in, their descriptors no longer count (%d)",
	   http_cancelled_files(http));
	slots_free(d.slots);
	rig_stop(&rg);   /* ASan: the cancelled transfers were freed */

	/* Only the write under way landed ("ok"), and the transfer thread closed its descriptor:
	 * with ours closed, the pipe ends after the bytes left in it. */
	close(pipe_fd[1]);
	fcntl(pipe_fd[0], F_SETFL, O_NONBLOCK);
	char rest[4096];
	ssize_t n, left = 0;
	while ((n = read(pipe_fd[0], rest, sizeof(rest))) > 0)
		left += n;
	ok(n == 0, "the cancelled call's body_fd was closed (%s)", n < 0 ? strerror(errno) : "end");
	ok(r.read > 0 && left == filled - r.read + 2,
	   "the write under way landed, nothing more (%zd bytes of %zd filled, %zd drained)", left,
	   filled, r.read);
	close(pipe_fd[0]);
	pthread_cond_destroy(&r.cond);
	pthread_condattr_destroy(&attr);
	pthread_mutex_destroy(&r.lock);
}

/* ---- the stop while the transfer thread is stuck in a write --------------------------------- */

/* At the daemon's exit its calls are cancelled (the grace cut), but the transfer thread may still
 * be stuck in a body write (a spool on a stalled NFS): http_free returns within its bound all the
 * same, leaving that thread, and everything it may use, alone (the rig's loop too: static, never
 * freed). The thread ends by itself once its write does. Before, http_free waited for the write:
 * here, till the rescuer drained the pipe after 10 s. */
static void test_free_while_the_thread_is_stuck(void)
{
	static struct held_server sv;
	static struct rig rg;
	pthread_mutex_init(&sv.lock, NULL);
	int pipe_fd[2];
	if (full_pipe(pipe_fd) < 0 || !rig_start(&rg, held_paths, &sv.listen_fd, accept_all, &sv))
		return;
	struct http_request stuck = get_of(rg.url[OK], 30);
	stuck.body_fd = dup(pipe_fd[1]);
	struct call writing = { 0 };
	struct http_xfer *x = http_start(rg.http, &stuck, call_done, &writing);
	ok(until_writes(stuck.body_fd, true), "the transfer thread is stuck writing a body");
	http_cancel(rg.http, x);   /* the grace cut */

	struct rescuer r = { .read_fd = pipe_fd[0] };
	pthread_t rescuer_thread;
	pthread_condattr_t attr;
	pthread_mutex_init(&r.lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&r.cond, &attr);
	pthread_create(&rescuer_thread, NULL, rescue, &r);
	int64_t before = mono_ms();
	http_free(rg.http);
	int64_t took = mono_ms() - before;
	pthread_mutex_lock(&r.lock);
	bool stuck_still = !r.drained;
	r.cancels_returned = true;
	pthread_cond_signal(&r.cond);
	pthread_mutex_unlock(&r.lock);
	pthread_join(rescuer_thread, NULL);
	/* No upper bound on took: on a loaded machine it is a timing, and stuck_still already says
	 * http_free returned before the rescuer let the write through. */
	ok(stuck_still && took >= HTTP_FREE_WAIT_MS - 50,
	   "http_free returned while the transfer thread was stuck, after its bound (%lld ms; "
	   "bound %d ms)", (long long)took, HTTP_FREE_WAIT_MS);
	ok(http_left_running(), "and says it left the thread running");
	/* The rest of the pipe, till the thread (its write done, its stop seen) has ended. */
	fcntl(pipe_fd[0], F_SETFL, O_NONBLOCK);
	char room[4096];
	int64_t deadline = mono_ms() + 10000;
	unsigned long nr, arg0;
	while (transfer_thread_syscall(&nr, &arg0) && mono_ms() < deadline) {
		while (read(pipe_fd[0], room, sizeof(room)) > 0)
			;
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
	ok(!transfer_thread_syscall(&nr, &arg0), "the thread ended once its write did");
	ok(!writing.done, "no callback of the cancelled call");
	shutdown(rg.listen_fd, SHUT_RDWR);
	pthread_join(rg.server, NULL);
	close(rg.listen_fd);
	close(pipe_fd[0]);
	close(pipe_fd[1]);
	pthread_cond_destroy(&r.cond);
	pthread_condattr_destroy(&attr);
	pthread_mutex_destroy(&r.lock);
}

/* ---- answers do not wait behind a body write that stalls -------------------------------------- */

/* Three calls, a connection each: /c gets its header and one byte of its two at once, and never
 * the other; /b is answered at step 1; /a gets its header and one byte of body at once, the rest
 * (PACED_REST bytes, more than a page) at step 2. */
#define PACED_REST 8192
struct paced_server {
	int listen_fd;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int b_read;              /* /b's request arrived */
	int step;                /* the test's: what may be written */
	int written;             /* the steps written */
};

struct paced_conn {
	struct paced_server *sv;
	int fd;
};

/* Waits (10 s at most) until *v is at least want; sv's lock held. */
static bool paced_wait(struct paced_server *sv, int *v, int want)
{
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += 10;
	while (*v < want && pthread_cond_timedwait(&sv->cond, &sv->lock, &until) == 0)
		;
	return *v >= want;
}

static void paced_set(struct paced_server *sv, int *v, int to)
{
	*v = to;
	pthread_cond_broadcast(&sv->cond);
}

static void *paced_conn(void *arg)
{
	struct paced_conn *c = arg;
	struct paced_server *sv = c->sv;
	char head[1024];
	static char rest[PACED_REST];
	if (read_request(c->fd, head, sizeof(head))) {
		char path = !strncmp(head, "GET /", 5) ? head[5] : '?';
		const char *a_head = "HTTP/1.1 200 OK\r\nContent-Length: 8193\r\n\r\nx";
		const char *b_reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
		const char *c_reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nx";
		pthread_mutex_lock(&sv->lock);
		if (path == 'c' && write_all(c->fd, c_reply, strlen(c_reply)) < 0)
			ok(0, "/c answered");
		if (path == 'b')
			paced_set(sv, &sv->b_read, 1);
		if (path == 'a' && write_all(c->fd, a_head, strlen(a_head)) < 0)
			ok(0, "the first byte of /a sent");
		int step = path == 'b' ? 1 : path == 'a' ? 2 : 0;
		if (step) {
			paced_wait(sv, &sv->step, step);
			if (step == 1 ? write_all(c->fd, b_reply, strlen(b_reply))
				      : write_all(c->fd, rest, sizeof(rest)))
				ok(0, "the rest of an answer sent");
			paced_set(sv, &sv->written, step);
		}
		pthread_mutex_unlock(&sv->lock);
		while (read_request(c->fd, head, sizeof(head)))   /* till the client closes */
			;
	}
	close(c->fd);
	return NULL;
}

static void *paced_accept(void *arg)
{
	struct paced_server *sv = arg;
	pthread_t t[3];
	struct paced_conn c[3];
	int n = 0;
	for (; n < 3; n++) {
		c[n] = (struct paced_conn){ .sv = sv, .fd = accept(sv->listen_fd, NULL, NULL) };
		if (c[n].fd < 0)
			break;
		pthread_create(&t[n], NULL, paced_conn, &c[n]);
	}
	while (n--)
		pthread_join(t[n], NULL);
	return NULL;
}

/* Lets the server write a step, and waits till it did. */
static bool paced_step(struct paced_server *sv, int step)
{
	pthread_mutex_lock(&sv->lock);
	paced_set(sv, &sv->step, step);
	bool written = paced_wait(sv, &sv->written, step);
	pthread_mutex_unlock(&sv->lock);
	return written;
}

static void drain_pipe(struct loop *loop, int fd, uint32_t events, void *arg)
{
	(void)loop;
	(void)events;
	(void)arg;
	char room[4096];
	while (read(fd, room, sizeof(room)) > 0)
		;
}

/* Waits (10 s at most) until the pipe that fd reads holds more than before. */
static bool pipe_grows(int fd, int before)
{
	int64_t deadline = mono_ms() + 10000;
	int now = before;
	while ((ioctl(fd, FIONREAD, &now) < 0 || now <= before) && mono_ms() < deadline)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	return now > before;
}

/* /a writes its body to a pipe with room for a page, its first byte lands. The transfer thread
 * is then held in the body write of /c (a full pipe; /c never finishes, so no answer of it is
 * on its way to the loop) while /b's answer and the rest of /a arrive, in that order. Let go,
 * it finishes /b and stalls writing the rest of /a: /b's callback must come meanwhile, not wait
 * for /a's pipe. */
static void test_answers_before_a_stalled_write(void)
{
	static struct paced_server sv;
	pthread_mutex_init(&sv.lock, NULL);
	pthread_cond_init(&sv.cond, NULL);
	int a_pipe[2], c_pipe[2], a_filled;
	char room[4096];
	struct rig r;
	if (full_pipe(a_pipe) < 0 || full_pipe(c_pipe) < 0 ||
	    !ok(read(a_pipe[0], room, sizeof(room)) > 0 && ioctl(a_pipe[0], FIONREAD, &a_filled) == 0,
		"a pipe with room for a page") ||
	    !rig_start(&r, abc_paths, &sv.listen_fd, paced_accept, &sv))
		return;
	struct loop *loop = r.loop;
	struct http *http = r.http;
	char (*url)[64] = r.url;
	struct http_request a = get_of(url[0], 30), b = get_of(url[1], 30), c = get_of(url[2], 30);
	a.max_body = 2 * PACED_REST;
	a.body_fd = dup(a_pipe[1]);
	c.body_fd = dup(c_pipe[1]);
	struct call a_call = { 0 }, b_call = { 0 }, c_call = { 0 };
	http_start(http, &b, call_done, &b_call);
	pthread_mutex_lock(&sv.lock);
	ok(paced_wait(&sv, &sv.b_read, 1), "/b is in flight");
	pthread_mutex_unlock(&sv.lock);
	http_start(http, &a, call_done, &a_call);
	ok(pipe_grows(a_pipe[0], a_filled), "/a's first byte landed");
	struct http_xfer *c_xfer = http_start(http, &c, call_done, &c_call);
	ok(until_writes(c.body_fd, true), "the transfer thread is stuck writing /c's body");
	ok(paced_step(&sv, 1) && paced_step(&sv, 2), "/b's answer, then the rest of /a, arrived");
	ok(read(c_pipe[0], room, sizeof(room)) > 0, "room in /c's pipe");
	until_called(loop, &b_call);
	ok(b_call.status == 200, "/b's callback came (%ld)", b_call.status);
	ok(until_writes(a.body_fd, true) && !a_call.done,
	   "while the transfer thread was stuck writing the rest of /a");
	fcntl(a_pipe[0], F_SETFL, O_NONBLOCK);
	loop_add_fd(loop, a_pipe[0], EPOLLIN, drain_pipe, NULL);
	until_called(loop, &a_call);
	loop_del_fd(loop, a_pipe[0]);
	ok(a_call.status == 200, "then /a's (%ld)", a_call.status);

	http_cancel(http, c_xfer);
	rig_stop(&r);
	for (int i = 0; i < 2; i++) {
		close(a_pipe[i]);
		close(c_pipe[i]);
	}
	pthread_cond_destroy(&sv.cond);
	pthread_mutex_destroy(&sv.lock);
}

/* A proxy named in the environment is still used (the daemon says "no proxy" to libcurl itself
 * only when no proxy variable is set): the server, as the proxy, gets the request in absolute
 * form; with none set, a call goes straight to its server (every other test). */
static void test_proxy_from_the_environment(void)
{
	static struct server sv;
	struct rig r = { 0 };
	char proxy[64];
	r.listen_fd = sv.listen_fd = listen_on_loopback(64, &r.port);
	if (r.listen_fd < 0)
		return;
	pthread_create(&r.server, NULL, serve, &sv);
	r.loop = loop_new();
	xsnprintf(proxy, sizeof(proxy), "http://127.0.0.1:%d", r.port);
	setenv("http_proxy", proxy, 1);   /* looked at when the http is made, and by libcurl */
	r.http = http_new(r.loop, 64);
	struct http_request get = get_of("http://proxied.invalid/through", 5);
	struct call c;
	run_call(r.loop, r.http, &get, &c);
	unsetenv("http_proxy");
	ok(c.status == 200, "a call through the proxy of http_proxy (%ld)", c.status);
	ok(!strncmp(sv.requests[0], "GET http://proxied.invalid/through HTTP/1.1", 43),
	   "the proxy got it in absolute form: '%.60s'", sv.requests[0]);
	rig_stop(&r);
}

int main(void)
{
	test_calls_on_the_loop();
	test_proxy_from_the_environment();
	test_cancels();
	test_cancel_in_a_batch();
	test_cancel_while_the_thread_is_stuck();
	test_answers_before_a_stalled_write();
	test_free_while_the_thread_is_stuck();   /* last: it leaves an http behind */
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(http_ip_is_public(rows[i].addr) == rows[i].is_public, "%s is %s", rows[i].addr,
		   rows[i].is_public ? "public" : "not public");
	ok(!http_ip_is_public("not an address"), "an unreadable address is not public");
	return tap_done();
}
