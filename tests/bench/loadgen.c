/* loadgen.c - the raw HTTP ceiling for `make bench`: exactly N requests over C keep-alive
 * connections, one request at a time on each, the same POST imgspoold sends (headers, JSON body).
 *
 * wrk measures a fixed duration, so with a 1 s upstream its last second is cut off; this counts
 * from before the first connect to the last complete answer, the same span the daemon's jobs/s
 * is measured over. One epoll thread. Prints one line:
 *   loadgen: requests=N ok=K errors=E connections=C seconds=S req_per_s=R
 * Exits 1 when a request got no complete answer or a status other than 200 (after printing). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "rig.h"
#include "banned.h"

struct client {
	int fd;
	size_t sent;                  /* bytes of the request written */
	char *in;
	size_t in_len, in_cap;
	bool busy;                    /* a request is out */
};

static struct {
	int epfd;
	struct sockaddr_in addr;
	char *request;
	size_t request_len;
	long total, started, done, ok, errors;
	long open;
} G;

static void die(const char *what)
{
	fprintf(stderr, "loadgen: %s: %s\n", what, strerror(errno));
	exit(2);
}

static void client_open(struct client *c)
{
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		die("socket");
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&G.addr, sizeof(G.addr)) < 0 && errno != EINPROGRESS)
		die("connect");
	struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN, .data.ptr = c };
	if (epoll_ctl(G.epfd, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		die("epoll_ctl");
	c->sent = 0;
	c->in_len = 0;
	G.open++;
}

static void client_close(struct client *c)
{
	epoll_ctl(G.epfd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	G.open--;
}

static void want(struct client *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.ptr = c };
	if (epoll_ctl(G.epfd, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		die("epoll_ctl");
}

/* Starts the next request on c, or closes c when all are started. */
static void next(struct client *c)
{
	if (G.started >= G.total) {
		client_close(c);
		return;
	}
	G.started++;
	c->busy = true;
	c->sent = 0;
	want(c, EPOLLOUT | EPOLLIN);
}

static void send_more(struct client *c)
{
	while (c->sent < G.request_len) {
		ssize_t n = write(c->fd, G.request + c->sent, G.request_len - c->sent);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == ENOTCONN))
			return;
		if (n < 0) {
			G.errors++;
			G.done++;
			c->busy = false;
			client_close(c);
			return;
		}
		c->sent += (size_t)n;
	}
	want(c, EPOLLIN);
}

/* The length of a complete response at the start of c->in, 0 when incomplete, -1 when
 * malformed; *status gets its status code. */
static long response_length(const struct client *c, int *status)
{
	const char *in = c->in, *end = memmem(in, c->in_len, "\r\n\r\n", 4);
	if (!end)
		return 0;
	size_t head = (size_t)(end - in) + 4;
	if (c->in_len < 12 || memcmp(in, "HTTP/1.1 ", 9))
		return -1;
	*status = (in[9] - '0') * 100 + (in[10] - '0') * 10 + (in[11] - '0');
	long clen = -1;
	bool chunked = false;
	for (const char *h = (const char *)memmem(in, head, "\r\n", 2) + 2; h < end; ) {
		const char *eol = memmem(h, (size_t)(end + 2 - h), "\r\n", 2);
		size_t n = (size_t)(eol - h);
		if (n > 15 && !strncasecmp(h, "content-length:", 15))
			clen = strtol(h + 15, NULL, 10);
		else if (n > 18 && !strncasecmp(h, "transfer-encoding:", 18))
			chunked = memmem(h, n, "chunked", 7) != NULL;
		h = eol + 2;
	}
	if (!chunked)
		return clen < 0 ? -1 : c->in_len >= head + (size_t)clen ? (long)(head + (size_t)clen) : 0;
	size_t at = head;
	for (;;) {
		const char *eol = memmem(in + at, c->in_len - at, "\r\n", 2);
		if (!eol)
			return 0;
		char *e;
		unsigned long size = strtoul(in + at, &e, 16);
		if (e == in + at)
			return -1;
		at = (size_t)(eol - in) + 2;
		if (size == 0)   /* no trailers from our fakes: the final CRLF follows */
			return c->in_len >= at + 2 ? (long)(at + 2) : 0;
		if (c->in_len < at + size + 2)
			return 0;
		at += size + 2;
	}
}

static void receive(struct client *c)
{
	for (;;) {
		if (c->in_cap - c->in_len < 16384) {
			c->in_cap = c->in_cap ? c->in_cap * 2 : 65536;
			c->in = realloc(c->in, c->in_cap);
			if (!c->in)
				die("realloc");
		}
		ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {   /* closed or reset: the request in progress is lost */
			bool idle_close = n == 0 && !c->busy;
			if (c->busy) {
				G.errors++;
				G.done++;
				c->busy = false;
			}
			client_close(c);
			if (idle_close && G.started < G.total) {   /* the server ended keep-alive */
				client_open(c);
				next(c);
			}
			return;
		}
		c->in_len += (size_t)n;
	}
	int status = 0;
	long len = response_length(c, &status);
	if (len == 0)
		return;
	if (len < 0 || !c->busy) {
		G.errors++;
		G.done++;
		c->busy = false;
		client_close(c);
		return;
	}
	G.done++;
	if (status == 200)
		G.ok++;
	else
		G.errors++;
	c->busy = false;
	memmove(c->in, c->in + len, c->in_len - (size_t)len);
	c->in_len -= (size_t)len;
	next(c);
}

int main(int argc, char **argv)
{
	struct rig_client o;
	if (rig_client_options(argc, argv, &o) < 0) {
		fprintf(stderr, "usage: loadgen --port N --requests N --connections N [--key KEY] "
			"[--prompt TEXT]\n");
		return 2;
	}
	long port = o.port, conns = o.connections;
	const char *key = o.key, *prompt = o.prompt;
	G.total = o.requests;
	rig_raise_nofile();
	/* What imgspoold's libcurl sends for a job {"prompt": PROMPT} (the model is the default). */
	char body[1024];
	int blen = snprintf(body, sizeof(body), "{\"model\":\"gpt-image-2\",\"prompt\":\"%s\"}",
			    prompt);
	if (blen < 0 || (size_t)blen >= sizeof(body))
		return 2;      /* cannot be: rig.h caps the prompt */
	size_t cap = 2048 + strlen(key) + (size_t)blen;
	G.request = malloc(cap);
	if (!G.request)
		die("malloc");
	int n = snprintf(G.request, cap, "POST /v1/images/generations HTTP/1.1\r\n"
			 "Host: 127.0.0.1:%ld\r\nUser-Agent: imgspoold/0.1\r\nAccept: */*\r\n"
			 "Accept-Encoding: deflate, gzip, br, zstd\r\nAuthorization: Bearer %s\r\n"
			 "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
			 port, key, blen, body);
	G.request_len = (size_t)n;
	G.addr = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				       .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	G.epfd = epoll_create1(EPOLL_CLOEXEC);
	if (G.epfd < 0)
		die("epoll_create1");

	struct client *clients = calloc((size_t)conns, sizeof(*clients));
	if (!clients)
		die("calloc");
	double t0 = rig_now_s();
	for (long i = 0; i < conns; i++) {
		client_open(&clients[i]);
		next(&clients[i]);
	}
	struct epoll_event evs[512];
	while (G.done < G.total && G.open > 0) {
		int k = epoll_wait(G.epfd, evs, 512, -1);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			die("epoll_wait");
		for (int i = 0; i < k; i++) {
			struct client *c = evs[i].data.ptr;
			if (c->fd < 0)
				continue;
			if (c->busy && c->sent < G.request_len && (evs[i].events & EPOLLOUT))
				send_more(c);
			if (c->fd >= 0 && (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
				receive(c);
		}
	}
	double took = rig_now_s() - t0;
	printf("loadgen: requests=%ld ok=%ld errors=%ld connections=%ld seconds=%.3f "
	       "req_per_s=%.0f\n", G.done, G.ok, G.errors + (G.total - G.done), conns, took,
	       (double)G.ok / took);
	for (long i = 0; i < conns; i++) {
		if (clients[i].fd >= 0)
			close(clients[i].fd);
		free(clients[i].in);
	}
	free(clients);
	free(G.request);
	return G.ok == G.total ? 0 : 1;
}
