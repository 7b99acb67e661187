/* fastup.c - a fast fake APIYI upstream for `make bench`: one epoll thread, HTTP/1.1 keep-alive.
 *
 * Answers what the real gateway answers on success (shared/upstream-api.md section 6), chunked
 * like its large bodies, with Content-Type: application/json and an x-request-id:
 *   POST /v1/images/generations, /v1/images/edits   200, the OpenAI Images body of 6.1
 *   POST /v1beta/models/MODEL:generateContent       200, the Gemini body of 6.3
 * A key that is not one of --key gets 6.7's 401, another path a 404, a body without a prompt
 * (contents, for Gemini) a 400. The image is a valid PNG (--pad-kb makes it bigger).
 * --delay-ms holds every answer that long: the delay is fixed, so answers fall due in arrival
 * order and one FIFO plus one timerfd hold any number of them (10 000 calls wait at once).
 * --hold holds every answer until SIGUSR2 (then the delay applies), so a test can wait until a
 * given number of calls is in flight at once ("held_now" in the counters) and let them go.
 *
 * Prints "fastup: listening on PORT" on stdout when ready; SIGUSR1 prints the counters (and
 * starts new ones), SIGTERM/SIGINT print them and exit 0. It scripts no failures: that is
 * tests/fake/upstream.py's job. Fails only at start-up (bad option, cannot listen). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "rig.h"
#include "banned.h"

#define MAX_KEYS 8
#define MAX_HEAD (64u << 10)          /* request line and headers */
#define MAX_BODY (256u << 20)         /* edits carry reference images */
#define LISTEN_TAG UINT64_MAX
#define TIMER_TAG (UINT64_MAX - 1)
#define SIGNAL_TAG (UINT64_MAX - 2)

/* The 1x1 PNG of upstream-api.md 6.1. */
static const unsigned char png_1x1[] = {
	0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44,
	0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f,
	0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0xda, 0x63, 0x64,
	0xf8, 0xcf, 0x50, 0x0f, 0x00, 0x03, 0x86, 0x01, 0x80, 0x5a, 0x34, 0x7d, 0x6b, 0x00, 0x00,
	0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
};

enum answer { A_OPENAI, A_GEMINI, A_BAD_OPENAI, A_BAD_GEMINI, A_UNAUTHORIZED, A_NOT_FOUND,
	      A_UNSUPPORTED, A_COUNT };

struct conn {
	int fd;                       /* -1: free slot */
	uint32_t serial;              /* tells a reused fd from the one a held answer is for */
	char *in;
	size_t in_len, in_cap;
	char *out;
	size_t out_off, out_len, out_cap;
	unsigned held;                /* answers waiting on the delay queue */
	bool want_out;                /* EPOLLOUT is registered */
	bool close_after;             /* "Connection: close", or a request we cannot frame */
	bool continued;               /* "100 Continue" sent for the request being read */
};

struct held {
	int64_t due_ns;
	int fd;
	uint32_t serial;
	uint32_t rid;
	uint8_t answer;
	char model[64];
};

static struct {
	int epfd, lfd, tfd, sfd;
	int64_t delay_ns;
	bool gated;                   /* --hold, until SIGUSR2 */
	const char *keys[MAX_KEYS];
	int n_keys;
	char *image_b64;              /* the PNG, base64 */
	size_t image_b64_len;
	struct conn *conns;           /* indexed by fd */
	int n_conns;
	struct held *queue;           /* ring */
	size_t q_head, q_len, q_cap;
	bool timer_armed;
	uint32_t next_rid;
	/* counters since start or the last SIGUSR1 */
	unsigned long requests, by_answer[A_COUNT], accepted;
	long open_now, open_max, held_max;
} S;

static void die(const char *what)
{
	fprintf(stderr, "fastup: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void *xrealloc_or_die(void *p, size_t n)
{
	p = realloc(p, n);
	if (!p) {
		fprintf(stderr, "fastup: out of memory\n");
		abort();
	}
	return p;
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static char *base64(const unsigned char *in, size_t n, size_t *out_len)
{
	static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *out = xrealloc_or_die(NULL, (n + 2) / 3 * 4 + 1), *o = out;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
			     (i + 2 < n ? in[i + 2] : 0);
		*o++ = abc[v >> 18 & 63];
		*o++ = abc[v >> 12 & 63];
		*o++ = i + 1 < n ? abc[v >> 6 & 63] : '=';
		*o++ = i + 2 < n ? abc[v & 63] : '=';
	}
	*o = '\0';
	*out_len = (size_t)(o - out);
	return out;
}

static uint32_t crc32_png(const unsigned char *p, size_t n)
{
	uint32_t c = 0xffffffffu;
	for (size_t i = 0; i < n; i++) {
		c ^= p[i];
		for (int k = 0; k < 8; k++)
			c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
	}
	return c ^ 0xffffffffu;
}

static void put32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* The 1x1 PNG, with a private ancillary chunk of pad bytes before IEND (decoders skip it). */
static void make_image(size_t pad)
{
	size_t iend = sizeof(png_1x1) - 12;
	size_t n = sizeof(png_1x1) + (pad ? 12 + pad : 0);
	unsigned char *png = calloc(1, n);
	if (!png)
		die("calloc");
	memcpy(png, png_1x1, iend);
	if (pad) {
		unsigned char *c = png + iend;
		put32(c, (uint32_t)pad);
		memcpy(c + 4, "paDd", 4);
		put32(c + 8 + pad, crc32_png(c + 4, 4 + pad));
	}
	memcpy(png + n - 12, png_1x1 + iend, 12);
	S.image_b64 = base64(png, n, &S.image_b64_len);
	free(png);
}

static void watch(int fd, uint32_t events, uint64_t tag, int op)
{
	struct epoll_event ev = { .events = events, .data.u64 = tag };
	if (epoll_ctl(S.epfd, op, fd, &ev) < 0 && op != EPOLL_CTL_DEL)
		die("epoll_ctl");
}

/* ---- output ---- */

static void out_reserve(struct conn *c, size_t more)
{
	if (c->out_off && c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + more <= c->out_cap)
		return;
	size_t cap = c->out_cap ? c->out_cap : 4096;
	while (cap < c->out_len + more)
		cap *= 2;
	c->out = xrealloc_or_die(c->out, cap);
	c->out_cap = cap;
}

static void out_add(struct conn *c, const char *s, size_t n)
{
	out_reserve(c, n);
	memcpy(c->out + c->out_len, s, n);
	c->out_len += n;
}

static void out_printf(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	out_reserve(c, (size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(c->out + c->out_len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	c->out_len += (size_t)n;
}

static void conn_close(struct conn *c)
{
	watch(c->fd, 0, 0, EPOLL_CTL_DEL);
	close(c->fd);
	free(c->in);
	free(c->out);
	uint32_t serial = c->serial;
	memset(c, 0, sizeof(*c));
	c->fd = -1;
	c->serial = serial;
	S.open_now--;
}

/* Writes what is pending; watches for EPOLLOUT while the socket is full. Returns -1 when the
 * connection was closed. */
static int conn_flush(struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			conn_close(c);
			return -1;
		}
		c->out_off += (size_t)n;
	}
	bool pending = c->out_off < c->out_len;
	if (!pending && c->close_after && !c->held) {
		conn_close(c);
		return -1;
	}
	if (pending != c->want_out) {
		watch(c->fd, EPOLLIN | (pending ? EPOLLOUT : 0), (uint64_t)c->fd, EPOLL_CTL_MOD);
		c->want_out = pending;
	}
	return 0;
}

static void json_error(struct conn *c, int status, const char *reason, const char *rid,
		       const char *body)
{
	out_printf(c, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nx-request-id: %s\r\n"
		   "Content-Length: %zu\r\n\r\n%s", status, reason, rid, strlen(body), body);
}

static void answer(struct conn *c, enum answer a, uint32_t rid_n, const char *model)
{
	char rid[32], body[512];
	snprintf(rid, sizeof(rid), "20261129fastup%010u", rid_n);
	S.by_answer[a]++;
	switch (a) {
	case A_OPENAI:
	case A_GEMINI: {
		char head[256], tail[512];
		int hn, tn;
		if (a == A_OPENAI) {
			hn = snprintf(head, sizeof(head), "{\"created\":%lld,\"data\":[{\"b64_json\":\"",
				      (long long)time(NULL));
			tn = snprintf(tail, sizeof(tail), "\"}],\"usage\":{\"input_tokens\":17,"
				      "\"input_tokens_details\":{\"image_tokens\":0,\"text_tokens\":17},"
				      "\"output_tokens\":196,\"output_tokens_details\":"
				      "{\"image_tokens\":196,\"text_tokens\":0},\"total_tokens\":213}}");
		} else {
			hn = snprintf(head, sizeof(head), "{\"candidates\":[{\"content\":{\"role\":"
				      "\"model\",\"parts\":[{\"inlineData\":{\"mimeType\":\"image/png\","
				      "\"data\":\"");
			tn = snprintf(tail, sizeof(tail), "\"}}]},\"finishReason\":\"STOP\",\"index\":0}],"
				      "\"usageMetadata\":{\"promptTokenCount\":276,"
				      "\"candidatesTokenCount\":1120,\"totalTokenCount\":1396},"
				      "\"modelVersion\":\"%s\"}", model);
		}
		size_t blen = (size_t)hn + S.image_b64_len + (size_t)tn;
		out_printf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
			   "x-request-id: %s\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n", rid, blen);
		out_add(c, head, (size_t)hn);
		out_add(c, S.image_b64, S.image_b64_len);
		out_add(c, tail, (size_t)tn);
		out_add(c, "\r\n0\r\n\r\n", 7);
		break;
	}
	case A_BAD_OPENAI:
		snprintf(body, sizeof(body), "{\"error\":{\"message\":\"prompt is required (request id: "
			 "%s)\",\"type\":\"invalid_request_error\",\"param\":\"prompt\",\"code\":null}}",
			 rid);
		json_error(c, 400, "Bad Request", rid, body);
		break;
	case A_BAD_GEMINI:
		json_error(c, 400, "Bad Request", rid, "{\"error\":{\"code\":400,\"message\":"
			   "\"contents is required\",\"status\":\"INVALID_ARGUMENT\"}}");
		break;
	case A_UNAUTHORIZED:   /* 无效的令牌: "invalid token" */
		snprintf(body, sizeof(body), "{\"error\":{\"message\":\"\xe6\x97\xa0\xe6\x95\x88"
			 "\xe7\x9a\x84\xe4\xbb\xa4\xe7\x89\x8c (request id: %s)\",\"type\":"
			 "\"new_api_error\",\"param\":\"\",\"code\":\"\"}}", rid);
		json_error(c, 401, "Unauthorized", rid, body);
		break;
	case A_NOT_FOUND:
		snprintf(body, sizeof(body), "{\"error\":{\"message\":\"Invalid URL (%s)\",\"type\":"
			 "\"invalid_request_error\",\"param\":null,\"code\":null}}", model);
		json_error(c, 404, "Not Found", rid, body);
		break;
	case A_UNSUPPORTED:
		json_error(c, 411, "Length Required", rid, "{\"error\":{\"message\":\"chunked "
			   "request bodies are not supported here\",\"type\":\"invalid_request_error\","
			   "\"param\":null,\"code\":null}}");
		c->close_after = true;
		break;
	case A_COUNT:
		break;
	}
}

/* ---- the delay queue ---- */

static void timer_arm(void)
{
	if (!S.q_len || S.gated) {
		S.timer_armed = false;
		return;
	}
	int64_t due = S.queue[S.q_head].due_ns;
	struct itimerspec its = { .it_value = { .tv_sec = due / 1000000000,
						.tv_nsec = due % 1000000000 } };
	if (timerfd_settime(S.tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		die("timerfd_settime");
	S.timer_armed = true;
}

static void hold(struct conn *c, enum answer a, uint32_t rid, const char *model)
{
	if (S.q_len == S.q_cap) {
		size_t cap = S.q_cap ? S.q_cap * 2 : 1024;
		struct held *q = xrealloc_or_die(NULL, cap * sizeof(*q));
		for (size_t i = 0; i < S.q_len; i++)
			q[i] = S.queue[(S.q_head + i) % S.q_cap];
		free(S.queue);
		S.queue = q;
		S.q_head = 0;
		S.q_cap = cap;
	}
	struct held *h = &S.queue[(S.q_head + S.q_len++) % S.q_cap];
	h->due_ns = mono_ns() + S.delay_ns;
	h->fd = c->fd;
	h->serial = c->serial;
	h->rid = rid;
	h->answer = (uint8_t)a;
	snprintf(h->model, sizeof(h->model), "%s", model);
	c->held++;
	if ((long)S.q_len > S.held_max)
		S.held_max = (long)S.q_len;
	if (!S.timer_armed)
		timer_arm();
}

static void on_timer(void)
{
	uint64_t ticks;
	if (read(S.tfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
		die("read timerfd");
	int64_t now = mono_ns();
	while (S.q_len && S.queue[S.q_head].due_ns <= now) {
		struct held h = S.queue[S.q_head];
		S.q_head = (S.q_head + 1) % S.q_cap;
		S.q_len--;
		struct conn *c = h.fd < S.n_conns ? &S.conns[h.fd] : NULL;
		if (!c || c->fd != h.fd || c->serial != h.serial)
			continue;       /* the client hung up meanwhile */
		c->held--;
		answer(c, (enum answer)h.answer, h.rid, h.model);
		conn_flush(c);
	}
	timer_arm();
}

/* ---- requests ---- */

static bool key_ok(const char *v, size_t n)
{
	for (int i = 0; i < S.n_keys; i++)
		if (strlen(S.keys[i]) == n && !memcmp(S.keys[i], v, n))
			return true;
	return false;
}

static bool header_is(const char *line, size_t n, const char *name, const char **value,
		      size_t *vlen)
{
	size_t k = strlen(name);
	if (n <= k || line[k] != ':' || strncasecmp(line, name, k))
		return false;
	const char *v = line + k + 1, *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*value = v;
	*vlen = (size_t)(end - v);
	return true;
}

/* What to answer a request: the path, the key, and a glance at the body. model gets the
 * Gemini model name (or the path, for a 404). */
static enum answer route(const char *method, size_t mlen, const char *path, size_t plen,
			 bool authorized, const char *body, size_t blen, char *model, size_t msize)
{
	static const char gem_prefix[] = "/v1beta/models/", gem_suffix[] = ":generateContent";
	const char *q = memchr(path, '?', plen);
	if (q)
		plen = (size_t)(q - path);
	bool post = mlen == 4 && !memcmp(method, "POST", 4);
	bool openai = (plen == 22 && !memcmp(path, "/v1/images/generations", 22)) ||
		      (plen == 16 && !memcmp(path, "/v1/images/edits", 16));
	bool gemini = false;
	size_t pre = sizeof(gem_prefix) - 1, suf = sizeof(gem_suffix) - 1;
	if (plen > pre + suf && !memcmp(path, gem_prefix, pre) &&
	    !memcmp(path + plen - suf, gem_suffix, suf) && plen - pre - suf < msize) {
		gemini = true;
		for (size_t i = pre; i < plen - suf; i++) {
			char ch = path[i];
			if (!(ch == '-' || ch == '.' || ch == '_' || (ch >= '0' && ch <= '9') ||
			      (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')))
				gemini = false;
		}
		if (gemini)
			snprintf(model, msize, "%.*s", (int)(plen - pre - suf), path + pre);
	}
	if (!post || (!openai && !gemini)) {
		/* "METHOD /path", made safe inside a JSON string */
		size_t at = 0;
		for (size_t i = 0; i < mlen + 1 + plen && at + 1 < msize; i++) {
			char ch = i < mlen ? method[i] : i == mlen ? ' ' : path[i - mlen - 1];
			model[at++] = ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\' ? ch : '?';
		}
		model[at] = '\0';
		return A_NOT_FOUND;
	}
	if (!authorized)
		return A_UNAUTHORIZED;
	if (openai)
		return memmem(body, blen, "prompt\"", 7) ? A_OPENAI : A_BAD_OPENAI;
	return memmem(body, blen, "\"contents\"", 10) ? A_GEMINI : A_BAD_GEMINI;
}

/* Handles the complete requests at the start of c->in. Returns -1 when c was closed. */
static int serve(struct conn *c)
{
	size_t off = 0;
	while (off < c->in_len && !c->close_after) {
		char *start = c->in + off;
		size_t avail = c->in_len - off;
		char *end = memmem(start, avail, "\r\n\r\n", 4);
		if (!end) {
			if (avail > MAX_HEAD)
				goto bad;
			break;
		}
		size_t head = (size_t)(end - start) + 4;
		char *line = start, *eol = memchr(line, '\r', head);
		char *sp1 = memchr(line, ' ', (size_t)(eol - line));
		char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
		if (!sp2)
			goto bad;
		size_t clen = 0;
		bool authorized = false, chunked = false, expect = false;
		for (char *h = eol + 2; h < end; ) {
			char *hend = memmem(h, (size_t)(end + 2 - h), "\r\n", 2);
			size_t n = (size_t)(hend - h);
			const char *v;
			size_t vn;
			if (header_is(h, n, "content-length", &v, &vn)) {
				char num[24];
				snprintf(num, sizeof(num), "%.*s", (int)(vn < 23 ? vn : 23), v);
				char *e;
				unsigned long long x = strtoull(num, &e, 10);
				if (*e || e == num || x > MAX_BODY)
					goto bad;
				clen = (size_t)x;
			} else if (header_is(h, n, "authorization", &v, &vn)) {
				authorized = vn > 7 && !strncasecmp(v, "Bearer ", 7) &&
					     key_ok(v + 7, vn - 7);
			} else if (header_is(h, n, "x-goog-api-key", &v, &vn)) {
				authorized = key_ok(v, vn);
			} else if (header_is(h, n, "transfer-encoding", &v, &vn)) {
				chunked = true;
			} else if (header_is(h, n, "connection", &v, &vn)) {
				if (vn == 5 && !strncasecmp(v, "close", 5))
					c->close_after = true;
			} else if (header_is(h, n, "expect", &v, &vn)) {
				expect = vn == 12 && !strncasecmp(v, "100-continue", 12);
			}
			h = hend + 2;
		}
		char model[64] = "";
		if (chunked) {
			S.requests++;
			answer(c, A_UNSUPPORTED, ++S.next_rid, model);
			off = c->in_len;
			break;
		}
		if (avail < head + clen) {
			if (expect && !c->continued) {
				out_add(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
				c->continued = true;
			}
			break;
		}
		c->continued = false;
		S.requests++;
		uint32_t rid = ++S.next_rid;
		enum answer a = route(line, (size_t)(sp1 - line), sp1 + 1, (size_t)(sp2 - sp1 - 1),
				      authorized, start + head, clen, model, sizeof(model));
		if (S.delay_ns > 0 || S.gated || c->held)
			hold(c, a, rid, model);
		else
			answer(c, a, rid, model);
		off += head + clen;
	}
	if (off) {
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
	}
	return conn_flush(c);
bad:
	c->close_after = true;
	c->in_len = 0;
	return conn_flush(c);
}

static void on_readable(struct conn *c)
{
	for (;;) {
		if (c->in_cap - c->in_len < 16384) {
			size_t cap = c->in_cap ? c->in_cap * 2 : 32768;
			if (cap > MAX_HEAD + MAX_BODY + 65536) {
				conn_close(c);
				return;
			}
			c->in = xrealloc_or_die(c->in, cap);
			c->in_cap = cap;
		}
		ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			conn_close(c);
			return;
		}
		c->in_len += (size_t)n;
		if ((size_t)n < c->in_cap - c->in_len + (size_t)n)
			break;          /* a short read: the socket is drained */
	}
	serve(c);
}

static void on_accept(void)
{
	for (;;) {
		int fd = accept4(S.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno != EAGAIN)
				fprintf(stderr, "fastup: accept: %s\n", strerror(errno));
			return;
		}
		if (fd >= S.n_conns) {
			int n = S.n_conns ? S.n_conns : 1024;
			while (n <= fd)
				n *= 2;
			S.conns = xrealloc_or_die(S.conns, (size_t)n * sizeof(*S.conns));
			for (int i = S.n_conns; i < n; i++)
				S.conns[i] = (struct conn){ .fd = -1 };
			S.n_conns = n;
		}
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct conn *c = &S.conns[fd];
		uint32_t serial = c->serial + 1;
		*c = (struct conn){ .fd = fd, .serial = serial };
		watch(fd, EPOLLIN, (uint64_t)fd, EPOLL_CTL_ADD);
		S.accepted++;
		if (++S.open_now > S.open_max)
			S.open_max = S.open_now;
	}
}

static void print_counters(void)
{
	printf("fastup: requests=%lu ok=%lu bad_request=%lu unauthorized=%lu not_found=%lu "
	       "other=%lu connections=%lu open_max=%ld held_max=%ld held_now=%zu\n", S.requests,
	       S.by_answer[A_OPENAI] + S.by_answer[A_GEMINI],
	       S.by_answer[A_BAD_OPENAI] + S.by_answer[A_BAD_GEMINI], S.by_answer[A_UNAUTHORIZED],
	       S.by_answer[A_NOT_FOUND], S.by_answer[A_UNSUPPORTED], S.accepted, S.open_max,
	       S.held_max, S.q_len);
	fflush(stdout);
	S.requests = S.accepted = 0;
	memset(S.by_answer, 0, sizeof(S.by_answer));
	S.open_max = S.open_now;
	S.held_max = (long)S.q_len;
}

/* Returns true when asked to stop. */
static bool on_signal(void)
{
	struct signalfd_siginfo si;
	bool stop = false;
	while (read(S.sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGUSR2) {      /* the gate opens: what waits is due now */
			int64_t now = mono_ns();
			for (size_t i = 0; i < S.q_len; i++)
				S.queue[(S.q_head + i) % S.q_cap].due_ns = now;
			S.gated = false;
			timer_arm();
			continue;
		}
		print_counters();
		if (si.ssi_signo != SIGUSR1)
			stop = true;
	}
	return stop;
}

static void usage(void)
{
	fprintf(stderr, "usage: fastup [--port N] [--port-file PATH] [--key KEY]... [--delay-ms MS] "
		"[--pad-kb KB] [--hold]\n");
	exit(2);
}

static long number(const char *s, long min, long max)
{
	long v = rig_number(s, min, max);
	if (v < 0)
		usage();
	return v;
}

int main(int argc, char **argv)
{
	long port = 0, pad_kb = 0;
	const char *port_file = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--hold")) {
			S.gated = true;
			continue;
		}
		if (!strcmp(a, "--port"))
			port = number(v, 0, 65535);
		else if (!strcmp(a, "--port-file") && v)
			port_file = v;
		else if (!strcmp(a, "--key") && v && S.n_keys < MAX_KEYS)
			S.keys[S.n_keys++] = v;
		else if (!strcmp(a, "--delay-ms"))
			S.delay_ns = number(v, 0, 86400000L) * 1000000;
		else if (!strcmp(a, "--pad-kb"))
			pad_kb = number(v, 0, 1L << 20);
		else
			usage();
		i++;
	}
	if (!S.n_keys)
		S.keys[S.n_keys++] = "sk-demo";
	make_image((size_t)pad_kb << 10);

	/* Every connection is a file descriptor: take all the kernel allows this process. */
	rig_raise_nofile();
	sigset_t sigs;
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGUSR1);
	sigaddset(&sigs, SIGUSR2);
	sigprocmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	S.epfd = epoll_create1(EPOLL_CLOEXEC);
	S.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	S.sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
	S.lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (S.epfd < 0 || S.tfd < 0 || S.sfd < 0 || S.lfd < 0)
		die("start-up");
	int one = 1;
	setsockopt(S.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t salen = sizeof(sa);
	if (bind(S.lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(S.lfd, 65535) < 0 ||
	    getsockname(S.lfd, (struct sockaddr *)&sa, &salen) < 0)
		die("listen on 127.0.0.1");
	watch(S.lfd, EPOLLIN, LISTEN_TAG, EPOLL_CTL_ADD);
	watch(S.tfd, EPOLLIN, TIMER_TAG, EPOLL_CTL_ADD);
	watch(S.sfd, EPOLLIN, SIGNAL_TAG, EPOLL_CTL_ADD);
	if (port_file) {
		char tmp[4096];
		snprintf(tmp, sizeof(tmp), "%s.tmp%d", port_file, (int)getpid());
		FILE *f = fopen(tmp, "w");
		if (!f || fprintf(f, "%d\n", ntohs(sa.sin_port)) < 0 || fclose(f) ||
		    rename(tmp, port_file))
			die("write the port file");
	}
	printf("fastup: listening on %d\n", ntohs(sa.sin_port));
	fflush(stdout);

	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(S.epfd, evs, 256, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			die("epoll_wait");
		for (int i = 0; i < n; i++) {
			uint64_t tag = evs[i].data.u64;
			if (tag == LISTEN_TAG) {
				on_accept();
			} else if (tag == TIMER_TAG) {
				on_timer();
			} else if (tag == SIGNAL_TAG) {
				if (on_signal())
					return 0;
			} else {
				struct conn *c = &S.conns[tag];
				if (c->fd < 0)
					continue;
				if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
					on_readable(c);
				else if (evs[i].events & EPOLLOUT)
					conn_flush(c);
			}
		}
	}
}
