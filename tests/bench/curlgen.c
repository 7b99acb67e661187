/* curlgen.c - the daemon's HTTP path without the daemon, for `make bench`: exactly N POSTs with
 * at most C in flight through libcurl's multi socket interface on epoll + timerfd (the shape of
 * src/http.c), each with a new easy handle and the options and headers http.c sets, the answer
 * kept in memory. What it reaches is the most a daemon built on libcurl this way can reach;
 * --reuse keeps one easy handle per slot instead (what reusing handles would buy). Options as
 * loadgen's (rig.h); --connections is how many requests are in flight at once.
 * Prints one line (its peak RSS last), with the mean times libcurl saw per request (from its
 * start: to the request about to go out, to the answer's first byte read, to the end):
 *   curlgen: requests=N ok=K errors=E connections=C seconds=S req_per_s=R pretransfer_ms=P
 *            firstbyte_ms=F call_ms=T maxrss_kib=M
 * Exits 1 when a request failed or got a status other than 200 (after printing). */
#include <curl/curl.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "rig.h"
#include "banned.h"

struct slot {
	CURL *easy;
	struct curl_slist *headers;
	char *body;                   /* the answer */
	size_t len, cap;
};

static struct {
	int epfd, tfd;
	CURLM *multi;
	char url[256], auth[4200];
	const char *post;
	bool reuse;
	long total, started, done, ok;
	int running;
	curl_off_t pre_us, first_us, total_us;   /* sums over the answers: where a call's time goes */
} G;

static void die(const char *what)
{
	fprintf(stderr, "curlgen: %s: %s\n", what, strerror(errno));
	exit(2);
}

static size_t on_data(char *p, size_t size, size_t n, void *arg)
{
	struct slot *s = arg;
	size_t add = size * n;
	if (s->len + add > s->cap) {
		s->cap = (s->len + add) * 2;
		s->body = realloc(s->body, s->cap);
		if (!s->body)
			die("realloc");
	}
	memcpy(s->body + s->len, p, add);
	s->len += add;
	return add;
}

static void start(struct slot *s)
{
	G.started++;
	s->len = 0;
	if (!s->easy || !G.reuse) {
		s->easy = curl_easy_init();
		if (!s->easy)
			die("curl_easy_init");
		CURL *e = s->easy;
		/* The options of src/http.c's http_start(). */
		curl_easy_setopt(e, CURLOPT_URL, G.url);
		curl_easy_setopt(e, CURLOPT_PRIVATE, s);
		curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
		curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
		curl_easy_setopt(e, CURLOPT_TIMEOUT, 120L);
		curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 30L);
		curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
		curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
		curl_easy_setopt(e, CURLOPT_USERAGENT, "imgspoold/0.1");
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
		curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
		s->headers = curl_slist_append(NULL, "Expect:");
		s->headers = curl_slist_append(s->headers, G.auth);
		s->headers = curl_slist_append(s->headers, "Content-Type: application/json");
		curl_easy_setopt(e, CURLOPT_HTTPHEADER, s->headers);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(G.post));
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, G.post);
	}
	if (curl_multi_add_handle(G.multi, s->easy) != CURLM_OK)
		die("curl_multi_add_handle");
}

static void finish(CURL *easy, CURLcode rc)
{
	struct slot *s;
	long status = 0;
	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&s);
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
	curl_off_t pre = 0, first = 0, total = 0;
	curl_easy_getinfo(easy, CURLINFO_PRETRANSFER_TIME_T, &pre);
	curl_easy_getinfo(easy, CURLINFO_STARTTRANSFER_TIME_T, &first);
	curl_easy_getinfo(easy, CURLINFO_TOTAL_TIME_T, &total);
	G.pre_us += pre;
	G.first_us += first;
	G.total_us += total;
	curl_multi_remove_handle(G.multi, easy);
	G.done++;
	if (rc == CURLE_OK && status == 200 && s->len > 0)
		G.ok++;
	if (!G.reuse) {
		curl_easy_cleanup(easy);
		curl_slist_free_all(s->headers);
		s->easy = NULL;
		s->headers = NULL;
	}
	if (G.started < G.total)
		start(s);
}

static void check_done(void)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(G.multi, &left)))
		if (m->msg == CURLMSG_DONE)
			finish(m->easy_handle, m->data.result);
}

static int on_socket(CURL *e, curl_socket_t fd, int what, void *u, void *sp)
{
	(void)e;
	(void)u;
	struct epoll_event ev = { .data.fd = fd };
	if (what == CURL_POLL_REMOVE) {
		epoll_ctl(G.epfd, EPOLL_CTL_DEL, fd, NULL);
		curl_multi_assign(G.multi, fd, NULL);
		return 0;
	}
	ev.events = (what & CURL_POLL_IN ? EPOLLIN : 0) | (what & CURL_POLL_OUT ? EPOLLOUT : 0);
	if (epoll_ctl(G.epfd, sp ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ev) < 0)
		die("epoll_ctl");
	curl_multi_assign(G.multi, fd, (void *)1);
	return 0;
}

static int on_timer(CURLM *m, long ms, void *u)
{
	(void)m;
	(void)u;
	/* A 0 timerfd disarms: ask for 1 ns instead (as src/loop.c does). */
	struct itimerspec its = { 0 };
	if (ms >= 0) {
		its.it_value.tv_sec = ms / 1000;
		its.it_value.tv_nsec = ms % 1000 * 1000000 + (ms == 0);
	}
	timerfd_settime(G.tfd, 0, &its, NULL);
	return 0;
}

int main(int argc, char **argv)
{
	struct rig_client o;
	if (rig_client_options(argc, argv, &o) < 0) {
		fprintf(stderr, "usage: curlgen --port N --requests N --connections N [--key KEY] "
			"[--reuse]\n");
		return 2;
	}
	long parallel = o.connections;
	G.total = o.requests;
	G.reuse = o.reuse;
	rig_raise_nofile();
	snprintf(G.url, sizeof(G.url), "http://127.0.0.1:%ld/v1/images/generations", o.port);
	snprintf(G.auth, sizeof(G.auth), "Authorization: Bearer %s", o.key);
	G.post = "{\"model\":\"gpt-image-2\",\"prompt\":\"bench 1\"}";

	if (curl_global_init(CURL_GLOBAL_DEFAULT))
		die("curl_global_init");
	G.epfd = epoll_create1(EPOLL_CLOEXEC);
	G.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	G.multi = curl_multi_init();
	if (G.epfd < 0 || G.tfd < 0 || !G.multi)
		die("start-up");
	struct epoll_event tev = { .events = EPOLLIN, .data.fd = G.tfd };
	if (epoll_ctl(G.epfd, EPOLL_CTL_ADD, G.tfd, &tev) < 0)
		die("epoll_ctl");
	curl_multi_setopt(G.multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(G.multi, CURLMOPT_TIMERFUNCTION, on_timer);
	curl_multi_setopt(G.multi, CURLMOPT_MAXCONNECTS, parallel * 2);

	struct slot *slots = calloc((size_t)parallel, sizeof(*slots));
	if (!slots)
		die("calloc");
	double t0 = rig_now_s();
	for (long i = 0; i < parallel; i++)
		start(&slots[i]);
	struct epoll_event evs[256];
	while (G.done < G.total) {
		int n = epoll_wait(G.epfd, evs, 256, 1000);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		if (n == 0 && !G.running && G.started == G.done)
			break;
		for (int i = 0; i < n; i++) {
			int fd = evs[i].data.fd;
			if (fd == G.tfd) {
				uint64_t ticks;
				if (read(G.tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
					die("read timerfd");
				curl_multi_socket_action(G.multi, CURL_SOCKET_TIMEOUT, 0, &G.running);
			} else {
				int flags = (evs[i].events & EPOLLIN ? CURL_CSELECT_IN : 0) |
					    (evs[i].events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
					    (evs[i].events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
				curl_multi_socket_action(G.multi, fd, flags, &G.running);
			}
			check_done();
		}
	}
	double took = rig_now_s() - t0;
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("curlgen: requests=%ld ok=%ld errors=%ld connections=%ld seconds=%.3f req_per_s=%.0f "
	       "pretransfer_ms=%.1f firstbyte_ms=%.1f call_ms=%.1f maxrss_kib=%ld\n", G.done, G.ok,
	       G.total - G.ok, parallel, took, (double)G.ok / took,
	       G.done ? (double)G.pre_us / G.done / 1000 : 0.0,
	       G.done ? (double)G.first_us / G.done / 1000 : 0.0,
	       G.done ? (double)G.total_us / G.done / 1000 : 0.0, ru.ru_maxrss);
	for (long i = 0; i < parallel; i++) {
		if (slots[i].easy) {
			curl_multi_remove_handle(G.multi, slots[i].easy);
			curl_easy_cleanup(slots[i].easy);
		}
		curl_slist_free_all(slots[i].headers);
		free(slots[i].body);
	}
	free(slots);
	curl_multi_cleanup(G.multi);
	curl_global_cleanup();
	return G.ok == G.total ? 0 : 1;
}
