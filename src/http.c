/* http.c - libcurl calls, set up and called back on the caller's loop, run on a transfer thread
 * of its own (the multi socket interface, in the shape of curl's ephiperfifo.c).
 *
 * curl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION) and when to call it back
 * (CURLMOPT_TIMERFUNCTION); we tell curl when a socket is ready. CURLINFO_PRIVATE maps a finished
 * easy handle back to its transfer. No bytes arrive while the upstream generates (minutes), so
 * there is no low-speed limit: only the total timeout and the connect timeout.
 *
 * Per call, as little as possible: easy handles are kept for the next transfer (reset, so no
 * option of one call leaks into the next; connections live in the multi handle's cache either
 * way), a body that is also kept on disk is written there once per turn of the loop, not
 * once per piece curl hands over, and the socket of a kept-alive connection stays in epoll
 * between its transfers (we open and close every connection's socket, so we know when its fd
 * number stops being that connection).
 *
 * Two threads. The caller's loop sets a transfer up (the easy handle and its options) and gets
 * its callback; libcurl itself (connects, sends, reads, the multi handle and its sockets and
 * timer) runs on a thread of its own with a loop of its own: with a thousand calls in flight
 * their answers and the next calls' sends must not wait behind the daemon's work on jobs, nor
 * it behind them. They hand transfers over in lists under one lock, each side waking the other
 * with a loop_wake (a system call only when the other sleeps), once per turn of the sending
 * loop; the transfer thread sends the answers of a turn early, before a body write (or a close
 * of a cancelled one's body_fd) that follows them, since that may stall. A transfer is the
 * transfer thread's from the hand-over until it is finished (or cancelled), and so is its
 * body_fd.
 *
 * A cancel never waits for the transfer thread: that thread may be stuck in a write of a body to
 * a spool on NFS, and the loop with it would stop every job on the host. A transfer the loop
 * still holds is freed at once; one the transfer thread holds is marked, and that thread takes
 * it out of libcurl, closes its body_fd (a close on NFS may flush: not on the loop) and hands it
 * back through the done list without its callback, to be freed on the loop with its lent body.
 * The cancels of one turn of the loop go over with one wake, at its end (a grace cut of a
 * thousand calls is one). A body write under way when the cancel came still lands in body_fd's
 * file, no later one: the caller (the .partial of a job) never renames that file after a
 * cancel; it removes it or leaves it to a restart, which reads it as a call that may have been
 * sent. */
#include <arpa/inet.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "log.h"
#include "loop.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

#define IDLE_EASY_MAX 128      /* easy handles kept for reuse; more are freed */
#define BODY_FIRST_MAX (1 << 20) /* the most a Content-Length reserves before bytes come */

/* Where a transfer is; changed under http->lock. */
enum xfer_at {
	X_QUEUED,                /* in to_start: still the caller's thread's */
	X_RUNNING,               /* the transfer thread's */
	X_DONE,                  /* in done: the caller's thread's again, its callback due (none
				  * if it was cancelled: fn is NULL) */
	X_DELIVERING,            /* taken from done by the caller's loop, its callback next */
	X_CANCELLING,            /* in to_cancel: still the transfer thread's, which hands it back
				  * through done; its caller has forgotten it */
};

struct xfer_list {
	struct http_xfer *head, *tail;
};

struct http {
	struct loop *loop;       /* the caller's: callbacks run there */
	CURL *idle[IDLE_EASY_MAX]; /* reset easy handles, ready for the next transfer */
	size_t n_idle;
	/* the transfer thread's */
	struct loop *io;
	pthread_t thread;
	CURLM *multi;
	uint64_t timer_id;       /* 0 = none */
	int running;
	struct http_xfer *unsaved; /* transfers with body bytes not yet written to body_fd */
	unsigned char *conn_fd;  /* by fd: a connection's socket we opened and have not closed */
	int n_conn_fd;
	/* the hand-over, under lock */
	pthread_mutex_t lock;
	struct xfer_list to_start, done;
	struct http_xfer *to_cancel; /* by next_cancel: a transfer's next may still be walked */
	atomic_int cancelled_files; /* descriptors the transfers in to_cancel still hold */
	bool stopping;
	struct loop_wake *to_io, *to_loop;
	bool no_env_proxy;       /* none of libcurl's proxy variables is set (proxy_in_env) */
};

struct http_xfer {
	struct http *http;
	struct http_xfer *next;  /* in one of the hand-over lists */
	struct http_xfer *next_cancel; /* in http->to_cancel */
	enum xfer_at at;
	CURL *easy;
	atomic_bool cut;         /* cancelled: the transfer thread writes no more of its body */
	atomic_bool answered;    /* a whole response arrived: res's status and headers are set
				  * (http_answered), its body may still be being written */
	size_t answered_len;     /* its body's length, set before answered and never after */
	int cancelled_files;     /* what it adds to http->cancelled_files while in to_cancel */
	struct curl_slist *headers;
	curl_mime *mime;
	struct buf body;
	bool too_big;
	struct http_result res;
	int body_fd;             /* owned: closed by whoever holds the transfer last */
	int *files;              /* owned: the reference images its parts read (http_request) */
	int n_files;
	void *body_lent;         /* owned: libcurl reads it till the transfer is let go of */
	size_t body_saved;       /* bytes of body already written to body_fd */
	struct http_xfer *next_unsaved; /* in http->unsaved while body_saved < body.len */
	bool in_unsaved;
	bool public_only;
	http_done_fn *fn;
	void *arg;
	int64_t started_mono;
};

static void check_done(struct http *http);

/* Writes what arrived since the last time to body_fd: one write per transfer and turn. A paid
 * response is kept on disk too, so a crash cannot lose it; if the disk is full, the copy in
 * memory still lets the job finish. */
static void save_body(struct http_xfer *x)
{
	if (x->body_fd >= 0 && !x->res.body_fd_failed && x->body.len > x->body_saved &&
	    !atomic_load_explicit(&x->cut, memory_order_relaxed)) {
		/* The write may stall (NFS): answers finished earlier in this turn go first. */
		loop_wake_send_queued(x->http->io);
		stop_point("http:body-write");   /* a test holds the thread here: a stalled disk */
		if (write_all(x->body_fd, x->body.data + x->body_saved,
			      x->body.len - x->body_saved) < 0)
			x->res.body_fd_failed = true;
	}
	x->body_saved = x->body.len;
}

static void save_bodies(struct http *http)
{
	while (http->unsaved) {
		struct http_xfer *x = http->unsaved;
		http->unsaved = x->next_unsaved;
		x->in_unsaved = false;
		save_body(x);
	}
}

static void forget_unsaved(struct http *http, struct http_xfer *x)
{
	for (struct http_xfer **p = &http->unsaved; x->in_unsaved && *p; p = &(*p)->next_unsaved)
		if (*p == x) {
			*p = x->next_unsaved;
			x->in_unsaved = false;
			break;   /* *p may be NULL now: no step past it */
		}
}

/* After every call into curl: finished transfers to their callbacks (each marked answered
 * before its last write, which may stall), then the bodies of the others to disk. */
static void after_action(struct http *http)
{
	check_done(http);
	save_bodies(http);
}

static void on_socket_ready(struct loop *loop, int fd, uint32_t events, void *arg)
{
	(void)loop;
	struct http *http = arg;
	int flags = 0;
	if (events & EPOLLIN)
		flags |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		flags |= CURL_CSELECT_OUT;
	if (events & (EPOLLERR | EPOLLHUP))
		flags |= CURL_CSELECT_ERR;
	curl_multi_socket_action(http->multi, fd, flags, &http->running);
	after_action(http);
}

static int socket_fn(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	(void)easy;
	(void)socketp;
	struct http *http = userp;
	if (what == CURL_POLL_REMOVE) {
		/* A connection kept alive is likely watched again for its next transfer. */
		if (s < http->n_conn_fd && http->conn_fd[s])
			loop_park_fd(http->io, s);
		else
			loop_del_fd(http->io, s);
		return 0;
	}
	uint32_t events = 0;
	if (what & CURL_POLL_IN)
		events |= EPOLLIN;
	if (what & CURL_POLL_OUT)
		events |= EPOLLOUT;
	return loop_add_fd(http->io, s, events, on_socket_ready, http) ? -1 : 0;
}

static int64_t on_timeout(struct loop *loop, void *arg)
{
	(void)loop;
	struct http *http = arg;
	http->timer_id = 0;
	curl_multi_socket_action(http->multi, CURL_SOCKET_TIMEOUT, 0, &http->running);
	after_action(http);
	return LOOP_TIMER_DONE;
}

static int timer_fn(CURLM *multi, long timeout_ms, void *userp)
{
	(void)multi;
	struct http *http = userp;
	if (http->timer_id) {
		loop_del_timer(http->io, http->timer_id);
		http->timer_id = 0;
	}
	if (timeout_ms >= 0)
		http->timer_id = loop_add_timer(http->io, timeout_ms, on_timeout, http);
	return 0;
}

static void list_add(struct xfer_list *l, struct http_xfer *x)
{
	x->next = NULL;
	if (l->tail)
		l->tail->next = x;
	else
		l->head = x;
	l->tail = x;
}

static struct http_xfer *list_take(struct xfer_list *l)
{
	struct http_xfer *head = l->head;
	l->head = l->tail = NULL;
	return head;
}

static void list_remove(struct xfer_list *l, struct http_xfer *x)
{
	struct http_xfer *prev = NULL;
	for (struct http_xfer *y = l->head; y; prev = y, y = y->next) {
		if (y != x)
			continue;
		if (prev)
			prev->next = x->next;
		else
			l->head = x->next;
		if (l->tail == x)
			l->tail = prev;
		return;
	}
}

static void forget_unsaved(struct http *http, struct http_xfer *x);

/* The transfer thread: new transfers go into the multi handle, cancelled ones out of it. */
static void on_wake_io(struct loop *io, void *arg)
{
	struct http *http = arg;
	pthread_mutex_lock(&http->lock);
	struct http_xfer *start = list_take(&http->to_start);
	for (struct http_xfer *x = start; x; x = x->next)
		x->at = X_RUNNING;
	struct http_xfer *cancel = http->to_cancel;
	http->to_cancel = NULL;
	bool stopping = http->stopping;
	pthread_mutex_unlock(&http->lock);
	while (start) {
		struct http_xfer *x = start;
		start = x->next;
		if (curl_multi_add_handle(http->multi, x->easy) != CURLM_OK) {
			x->res.transport = HTTP_NOT_SENT;
			x->res.detail = "cannot start the transfer";
			pthread_mutex_lock(&http->lock);
			bool deliver = x->at == X_RUNNING;   /* else its cancel hands it back */
			if (deliver) {
				x->at = X_DONE;
				list_add(&http->done, x);
			}
			pthread_mutex_unlock(&http->lock);
			if (deliver)
				loop_wake_send_later(http->io, http->to_loop);
		}
	}
	/* Cancelled ones go back to the loop, to be freed there, all in one hand-over. */
	struct xfer_list back = { 0 };
	while (cancel) {
		struct http_xfer *x = cancel;
		cancel = x->next_cancel;
		curl_multi_remove_handle(http->multi, x->easy);   /* harmless if it finished */
		forget_unsaved(http, x);
		if (x->body_fd >= 0) {
			loop_wake_send_queued(io);   /* a close on NFS may flush, and stall */
			close(x->body_fd);
		}
		x->body_fd = -1;
		for (int i = 0; i < x->n_files; i++)   /* out of libcurl: nothing reads them now */
			close(x->files[i]);
		x->n_files = 0;
		atomic_fetch_sub(&http->cancelled_files, x->cancelled_files);
		list_add(&back, x);
	}
	if (back.head) {
		pthread_mutex_lock(&http->lock);
		for (struct http_xfer *x = back.head; x; x = x->next)
			x->at = X_DONE;   /* fn is NULL: no callback */
		if (http->done.tail)
			http->done.tail->next = back.head;
		else
			http->done.head = back.head;
		http->done.tail = back.tail;
		pthread_mutex_unlock(&http->lock);
		loop_wake_send_later(http->io, http->to_loop);
	}
	if (stopping)
		loop_stop(io);
}

static void *transfer_main(void *arg)
{
	struct http *http = arg;
	if (loop_run(http->io) < 0)
		fatal("the transfer thread's loop failed");
	return NULL;
}

static void finish_all(struct http *http);

/* The caller's loop: finished transfers to their callbacks. */
static void on_wake_loop(struct loop *loop, void *arg)
{
	(void)loop;
	finish_all(arg);
}

/* Whether the environment names a proxy, or hosts that go without one, as libcurl reads it
 * (7.88: http_proxy, https_proxy or HTTPS_PROXY, all_proxy or ALL_PROXY, no_proxy or NO_PROXY;
 * not HTTP_PROXY). libcurl looks them up at every transfer's connection (five getenv calls,
 * about 4 000 instructions on the transfer thread); when none is set the daemon says "no
 * proxy" itself, which is what libcurl would find. Set but empty counts as set: libcurl then
 * decides, as before. */
static bool proxy_in_env(void)
{
	static const char *const names[] = { "http_proxy", "https_proxy", "HTTPS_PROXY",
					     "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY" };
	for (size_t i = 0; i < ARRAY_SIZE(names); i++)
		if (getenv(names[i]))
			return true;
	return false;
}

struct http *http_new(struct loop *loop, long max_connections)
{
	struct http *http = xcalloc(1, sizeof(*http));
	http->loop = loop;
	http->no_env_proxy = !proxy_in_env();
	http->io = loop_new();
	http->multi = curl_multi_init();
	if (!http->multi)
		fatal("cannot initialise libcurl");
	curl_multi_setopt(http->multi, CURLMOPT_SOCKETFUNCTION, socket_fn);
	curl_multi_setopt(http->multi, CURLMOPT_SOCKETDATA, http);
	curl_multi_setopt(http->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
	curl_multi_setopt(http->multi, CURLMOPT_TIMERDATA, http);
	curl_multi_setopt(http->multi, CURLMOPT_MAXCONNECTS, max_connections);
	pthread_mutex_init(&http->lock, NULL);
	http->to_io = loop_wake_new(http->io, on_wake_io, http);
	http->to_loop = loop_wake_new(loop, on_wake_loop, http);
	int rc = pthread_create(&http->thread, NULL, transfer_main, http);
	if (rc)
		fatal("cannot start the transfer thread: %s", strerror(rc));
	pthread_setname_np(http->thread, HTTP_THREAD_NAME);
	return http;
}

/* An easy handle for a new transfer: a kept one, or a new one. */
static CURL *easy_get(struct http *http)
{
	if (http->n_idle)
		return http->idle[--http->n_idle];
	CURL *e = curl_easy_init();
	if (!e)
		fatal("cannot initialise a libcurl handle");
	return e;
}

/* Keeps a handle that is out of the multi handle for the next transfer, every option reset. */
static void easy_put(struct http *http, CURL *e)
{
	if (!e)
		return;
	if (http->n_idle == IDLE_EASY_MAX) {
		curl_easy_cleanup(e);
		return;
	}
	curl_easy_reset(e);
	http->idle[http->n_idle++] = e;
}

static void xfer_free(struct http_xfer *x)
{
	if (x->body_fd >= 0)
		close(x->body_fd);
	for (int i = 0; i < x->n_files; i++)
		close(x->files[i]);
	free(x->files);
	free(x->body_lent);
	curl_slist_free_all(x->headers);
	curl_mime_free(x->mime);
	buf_release(&x->body);
	free(x->res.body);
	free(x);
}

/* Never waits for the transfer thread (see the top of the file). */
/* keep_done: a transfer already finished and waiting on done is left to its callback
 * (HTTP_CUT_DONE); keep_answered: one whose whole answer came, its body perhaps still being
 * written, too (HTTP_CUT_ANSWERED). Seen in the same hold of the lock as the cancel: an answer
 * marked after it came after the cancel, as one the upstream ends after a cut does. */
static enum http_cut cancel(struct http *http, struct http_xfer *x, bool keep_done,
			    bool keep_answered)
{
	if (!x)
		return HTTP_CUT_CANCELLED;
	pthread_mutex_lock(&http->lock);
	enum xfer_at at = x->at;
	if (keep_done && at == X_DONE) {
		pthread_mutex_unlock(&http->lock);
		return HTTP_CUT_DONE;
	}
	if (keep_answered && at == X_RUNNING &&
	    atomic_load_explicit(&x->answered, memory_order_acquire)) {
		pthread_mutex_unlock(&http->lock);
		return HTTP_CUT_ANSWERED;
	}
	x->fn = NULL;   /* read on the loop only */
	if (at == X_QUEUED) {
		list_remove(&http->to_start, x);
	} else if (at == X_DONE) {
		list_remove(&http->done, x);
	} else if (at == X_RUNNING) {
		x->at = X_CANCELLING;   /* finish() leaves it to the cancel */
		atomic_store_explicit(&x->cut, true, memory_order_relaxed);
		x->next_cancel = http->to_cancel;   /* not x->next: the batch x came in may be walked */
		http->to_cancel = x;
		/* Its socket (if it got one) and body_fd stay open till the transfer thread takes
		 * the cancel in, while the caller's budget of open files already let go of them. */
		x->cancelled_files = 1 + (x->body_fd >= 0) + x->n_files;
		atomic_fetch_add(&http->cancelled_files, x->cancelled_files);
	}
	pthread_mutex_unlock(&http->lock);
	if (at == X_QUEUED || at == X_DONE) {   /* the loop's: freed now */
		easy_put(http, x->easy);
		xfer_free(x);
	} else if (at == X_RUNNING) {   /* the turn's cancels go over in one wake, at its end */
		loop_wake_send_later(http->loop, http->to_io);
	}
	/* X_DELIVERING: from a callback of the same batch, which frees it */
	return HTTP_CUT_CANCELLED;
}

void http_cancel(struct http *http, struct http_xfer *x)
{
	(void)cancel(http, x, false, false);
}

bool http_cancel_unless_done(struct http *http, struct http_xfer *x)
{
	return cancel(http, x, true, false) == HTTP_CUT_CANCELLED;
}

enum http_cut http_cut(struct http *http, struct http_xfer *x, struct http_result *out)
{
	enum http_cut cut = cancel(http, x, true, true);
	if (cut == HTTP_CUT_ANSWERED)
		(void)http_answered(x, out);   /* on the loop: x stays till it delivers or cancels */
	return cut;
}

int http_cancelled_files(struct http *http)
{
	return atomic_load(&http->cancelled_files);
}

/* An http whose transfer thread did not end in time (http_free), kept whole: that thread may
 * still use any of it, and the process is ending. */
static struct http *left_running;

bool http_left_running(void)
{
	return left_running != NULL;
}

/* Waits for the transfer thread to end, so for every cancel it was sent; the cancelled transfers
 * it handed back, and any finished one whose callback is still due (it never comes), are freed.
 * A thread still stuck in a write (a body to a stalled NFS) after HTTP_FREE_WAIT_MS is left: the
 * files tell a restart what was done (a cancelled call's .partial is never renamed), so the
 * process may exit without it; nothing it may touch is freed, the caller's loop included. */
void http_free(struct http *http)
{
	if (!http)
		return;
	pthread_mutex_lock(&http->lock);
	http->stopping = true;
	pthread_mutex_unlock(&http->lock);
	loop_wake_send(http->to_io);
	if (!join_within(http->thread, exit_wait_ms(HTTP_FREE_WAIT_MS))) {
		left_running = http;
		log_warn("libcurl's transfer thread has not ended by the exit's deadline (%d ms at "
			 "most; stuck in a write, a stalled disk?): exiting without it",
			 HTTP_FREE_WAIT_MS);
		return;
	}
	for (struct http_xfer *x = list_take(&http->done), *next; x; x = next) {
		next = x->next;
		easy_put(http, x->easy);
		xfer_free(x);
	}
	if (http->timer_id)
		loop_del_timer(http->io, http->timer_id);
	curl_multi_cleanup(http->multi);   /* closes the connections: close_socket needs io */
	loop_wake_free(http->to_loop);
	loop_free(http->io);   /* and its wake */
	pthread_mutex_destroy(&http->lock);
	while (http->n_idle)
		curl_easy_cleanup(http->idle[--http->n_idle]);
	free(http->conn_fd);
	free(http);
}

static size_t write_fn(char *data, size_t size, size_t nmemb, void *userp)
{
	struct http_xfer *x = userp;
	size_t len = size * nmemb;
	if (!x->body.alloc) {
		/* Sized by the answer's Content-Length (an upstream's word: believed up to
		 * BODY_FIRST_MAX), not the 4 KiB doubling starts from: 10 000 answers of 600 bytes
		 * waiting for the loop hold 6 MB, not 40. */
		curl_off_t said = -1;
		curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &said);
		size_t want = said > 0 ? (size_t)(said < BODY_FIRST_MAX ? said : BODY_FIRST_MAX) : 0;
		buf_reserve(&x->body, want > len ? want : len);
	}
	if (buf_append(&x->body, data, len) < 0) {
		x->too_big = true;
		return 0;        /* makes curl fail the transfer with CURLE_WRITE_ERROR */
	}
	if (x->body_fd >= 0 && !x->in_unsaved) {   /* saved after this call into curl */
		x->next_unsaved = x->http->unsaved;
		x->http->unsaved = x;
		x->in_unsaved = true;
	}
	return len;
}

/* Copies a header's value (trimmed) into out when name matches. */
static void grab_header(const char *line, size_t len, const char *name, char *out, size_t outsize)
{
	size_t nlen = strlen(name);
	if (len <= nlen || line[nlen] != ':' || strncasecmp(line, name, nlen))
		return;
	const char *v = line + nlen + 1, *end = line + len;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	size_t n = (size_t)(end - v);
	if (n >= outsize)
		n = outsize - 1;
	memcpy(out, v, n);
	out[n] = '\0';
}

static size_t header_fn(char *line, size_t size, size_t nmemb, void *userp)
{
	struct http_xfer *x = userp;
	size_t len = size * nmemb;
	/* A new status line (after a redirect or 100 Continue) starts a new header set. */
	if (len >= 5 && !memcmp(line, "HTTP/", 5)) {
		x->res.request_id[0] = x->res.retry_after[0] = x->res.retry_after_ms[0] = '\0';
		return len;
	}
	grab_header(line, len, "x-request-id", x->res.request_id, sizeof(x->res.request_id));
	if (!x->res.request_id[0])
		grab_header(line, len, "request-id", x->res.request_id, sizeof(x->res.request_id));
	grab_header(line, len, "retry-after", x->res.retry_after, sizeof(x->res.retry_after));
	grab_header(line, len, "retry-after-ms", x->res.retry_after_ms, sizeof(x->res.retry_after_ms));
	return len;
}

/* A file part read from its descriptor as the transfer sends it: a dup of its own, so that
 * the transfer thread never reads a descriptor the loop closed (or that names another file
 * since); freed with the mime, by whichever thread frees the transfer. */
struct part_reader {
	int fd;
	curl_off_t len, pos;
};

static size_t part_read(char *buf, size_t size, size_t nitems, void *arg)
{
	struct part_reader *r = arg;
	size_t want = size * nitems;
	if ((curl_off_t)want > r->len - r->pos)
		want = (size_t)(r->len - r->pos);
	if (!want)
		return 0;
	ssize_t n;
	do
		n = pread(r->fd, buf, want, (off_t)r->pos);
	while (n < 0 && errno == EINTR);
	if (n <= 0)   /* the file shrank under the call, or cannot be read: no short part */
		return CURL_READFUNC_ABORT;
	r->pos += n;
	return (size_t)n;
}

static int part_seek(void *arg, curl_off_t offset, int origin)
{
	struct part_reader *r = arg;
	if (origin != SEEK_SET || offset < 0 || offset > r->len)
		return CURL_SEEKFUNC_FAIL;
	r->pos = offset;
	return CURL_SEEKFUNC_OK;
}

static void part_free(void *arg)
{
	free(arg);   /* its fd is the transfer's (x->files), shared by the parts naming that file */
}

static int build_mime(struct http_xfer *x, const struct http_request *req)
{
	x->mime = curl_mime_init(x->easy);
	for (size_t i = 0; i < req->n_parts; i++) {
		const struct form_part *p = &req->parts[i];
		curl_mimepart *part = curl_mime_addpart(x->mime);
		curl_mime_name(part, p->name);
		if (p->filename && p->from_fd) {
			struct part_reader *r = xmalloc(sizeof(*r));
			if (p->file < 0 || p->file >= x->n_files) {
				free(r);
				return -1;
			}
			*r = (struct part_reader){ .fd = x->files[p->file], .len = (curl_off_t)p->len };
			curl_mime_data_cb(part, r->len, part_read, part_seek, part_free, r);
			curl_mime_filename(part, p->filename);
			curl_mime_type(part, p->mime);
		} else if (p->filename) {
			curl_mime_data(part, (const char *)p->data, p->len);
			curl_mime_filename(part, p->filename);
			curl_mime_type(part, p->mime);
		} else {
			curl_mime_data(part, p->value, CURL_ZERO_TERMINATED);
		}
	}
	return curl_easy_setopt(x->easy, CURLOPT_MIMEPOST, x->mime) == CURLE_OK ? 0 : -1;
}

static bool ipv4_is_public(uint32_t a)   /* host byte order */
{
	static const struct { uint32_t net, mask; } blocked[] = {
		{ 0x00000000, 0xff000000 },   /* 0/8 "this network" */
		{ 0x0a000000, 0xff000000 },   /* 10/8 */
		{ 0x64400000, 0xffc00000 },   /* 100.64/10 CGNAT */
		{ 0x7f000000, 0xff000000 },   /* 127/8 loopback */
		{ 0xa9fe0000, 0xffff0000 },   /* 169.254/16 link-local (cloud metadata) */
		{ 0xac100000, 0xfff00000 },   /* 172.16/12 */
		{ 0xc0000000, 0xffffff00 },   /* 192.0.0/24 protocol assignments */
		{ 0xc0a80000, 0xffff0000 },   /* 192.168/16 */
		{ 0xc6120000, 0xfffe0000 },   /* 198.18/15 benchmarking */
		{ 0xe0000000, 0xe0000000 },   /* 224/3 multicast, reserved, broadcast */
	};
	for (size_t i = 0; i < ARRAY_SIZE(blocked); i++)
		if ((a & blocked[i].mask) == blocked[i].net)
			return false;
	return true;
}

static bool address_is_public(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ipv4_is_public(ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr));
	if (sa->sa_family != AF_INET6)
		return false;
	const uint8_t *b = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	static const uint8_t nat64[12] = { 0, 0x64, 0xff, 0x9b };
	static const uint8_t zero[12];
	if (!memcmp(b, mapped, 12) || !memcmp(b, nat64, 12) || !memcmp(b, zero, 12))
		return ipv4_is_public((uint32_t)b[12] << 24 | (uint32_t)b[13] << 16 |
				      (uint32_t)b[14] << 8 | b[15]);
	if ((b[0] & 0xfe) == 0xfc ||                 /* fc00::/7 unique local */
	    (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) || /* fe80::/10 link-local */
	    (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) || /* fec0::/10 site-local */
	    b[0] == 0xff)                            /* multicast */
		return false;
	return true;
}

bool http_ip_is_public(const char *ip)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1)
		v4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1)
		v6->sin6_family = AF_INET6;
	return address_is_public((struct sockaddr *)&ss);
}

/* Every connection's socket is ours to open and close. public_only: every address curl connects
 * to (after DNS, after each redirect) is checked, so neither a URL naming a private host nor a
 * name that resolves to one (DNS rebinding) gets through. */
static curl_socket_t open_socket(void *userp, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct http_xfer *x = userp;
	struct http *http = x->http;
	(void)purpose;
	if (x->public_only && !address_is_public(&a->addr)) {
		char text[INET6_ADDRSTRLEN] = "?";
		const void *in = a->family == AF_INET
			? (const void *)&((const struct sockaddr_in *)(const void *)&a->addr)->sin_addr
			: (const void *)&((const struct sockaddr_in6 *)(const void *)&a->addr)->sin6_addr;
		if (a->family == AF_INET || a->family == AF_INET6)
			inet_ntop(a->family, in, text, sizeof(text));
		xsnprintf(x->res.refused_address, sizeof(x->res.refused_address), "%s", text);
		return CURL_SOCKET_BAD;
	}
	int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
	if (fd < 0)
		return CURL_SOCKET_BAD;
	if (fd >= http->n_conn_fd) {
		int n = http->n_conn_fd ? http->n_conn_fd : 64;
		while (n <= fd)
			n *= 2;
		http->conn_fd = xrealloc(http->conn_fd, (size_t)n);
		memset(http->conn_fd + http->n_conn_fd, 0, (size_t)(n - http->n_conn_fd));
		http->n_conn_fd = n;
	}
	loop_del_fd(http->io, fd);   /* forgets a stale watch of the number, if any */
	http->conn_fd[fd] = 1;
	return fd;
}

static int close_socket(void *userp, curl_socket_t fd)
{
	struct http *http = userp;
	loop_del_fd(http->io, fd);   /* it may be parked in epoll */
	if (fd < http->n_conn_fd)
		http->conn_fd[fd] = 0;
	return close(fd);
}

/* A connection kept from an earlier transfer opens no socket: the address it is connected to
 * is checked again here, before anything is sent on it. */
static int prereq_public(void *userp, char *conn_primary_ip, char *conn_local_ip,
			 int conn_primary_port, int conn_local_port)
{
	struct http_xfer *x = userp;
	(void)conn_local_ip;
	(void)conn_primary_port;
	(void)conn_local_port;
	if (http_ip_is_public(conn_primary_ip))
		return CURL_PREREQFUNC_OK;
	xsnprintf(x->res.refused_address, sizeof(x->res.refused_address), "%s", conn_primary_ip);
	return CURL_PREREQFUNC_ABORT;
}

struct http_xfer *http_start(struct http *http, const struct http_request *req, http_done_fn *fn,
			     void *arg)
{
	struct http_xfer *x = xcalloc(1, sizeof(*x));
	x->http = http;
	x->fn = fn;
	x->arg = arg;
	x->body_fd = -1;   /* the caller's until the transfer is set up */
	x->res.body_fd = -1;
	x->res.detail = "";
	if (req->n_files > 0) {   /* stolen now: xfer_free closes them, also if the set-up fails */
		x->files = xmalloc((size_t)req->n_files * sizeof(*x->files));
		memcpy(x->files, req->files, (size_t)req->n_files * sizeof(*x->files));
		x->n_files = req->n_files;
	}
	buf_init(&x->body, req->max_body);
	x->easy = easy_get(http);
	CURL *e = x->easy;
	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, x);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, req->follow_redirects ? 1L : 0L);
	curl_easy_setopt(e, CURLOPT_MAXREDIRS, 3L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
	if (req->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, req->timeout_s);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, req->connect_timeout_s);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(e, CURLOPT_USERAGENT, "imgspoold/0.1");
	if (http->no_env_proxy) {
		curl_easy_setopt(e, CURLOPT_PROXY, "");
		curl_easy_setopt(e, CURLOPT_NOPROXY, "");
	}
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_fn);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, x);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_fn);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, x);
	x->public_only = req->public_only;
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, x);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, http);
	if (req->public_only) {
		curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_public);
		curl_easy_setopt(e, CURLOPT_PREREQDATA, x);
	}
	if ((curl_off_t)req->max_body > 0)
		curl_easy_setopt(e, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)req->max_body);

	/* Expect: 100-continue would cost a round trip per upload and some gateways mishandle it.
	 * Not with SigV4: libcurl 7.88 signs every HTTPHEADER entry, even this removal, and a
	 * signed header that is never sent breaks the signature. */
	if (!req->aws_sigv4)
		x->headers = curl_slist_append(x->headers, "Expect:");
	if (req->bearer) {
		/* Built in memory only: the key must never reach a log line or argv. */
		char *auth = xasprintf("Authorization: Bearer %s", req->bearer);
		x->headers = curl_slist_append(x->headers, auth);
		explicit_bzero(auth, strlen(auth));
		free(auth);
	}
	if (req->parts) {
		if (build_mime(x, req) < 0)
			goto fail;
	} else if (req->body || req->body_lent) {
		char *ct = xasprintf("Content-Type: %s", req->content_type ? req->content_type
									: "application/json");
		x->headers = curl_slist_append(x->headers, ct);
		free(ct);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
		if (req->body_lent)
			curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body_lent);
		else
			curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, req->body);
	}
	for (const char *const *h = req->headers; h && *h; h++)
		x->headers = curl_slist_append(x->headers, *h);
	if (req->method)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
	if (req->aws_sigv4) {
		curl_easy_setopt(e, CURLOPT_AWS_SIGV4, req->aws_sigv4);
		curl_easy_setopt(e, CURLOPT_USERPWD, req->userpwd);
	}
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);

	x->res.started_wall_ms = wall_ms();
	x->started_mono = mono_ms();
	x->body_fd = req->body_fd;   /* stolen, as is body_lent */
	x->body_lent = req->body_lent;
	pthread_mutex_lock(&http->lock);
	x->at = X_QUEUED;
	list_add(&http->to_start, x);
	pthread_mutex_unlock(&http->lock);
	loop_wake_send_later(http->loop, http->to_io);
	return x;
fail:
	error("cannot set up a request to '%s'", req->url);
	easy_put(http, x->easy);
	xfer_free(x);
	return NULL;
}

static enum http_transport transport_of(struct http_xfer *x, CURLcode rc)
{
	long header_bytes = 0;
	curl_easy_getinfo(x->easy, CURLINFO_REQUEST_SIZE, &header_bytes);
	bool sent = header_bytes > 0;
	if (x->too_big || rc == CURLE_FILESIZE_EXCEEDED)
		return HTTP_TOO_BIG;
	switch (rc) {
	case CURLE_OK:
		return HTTP_DONE;
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
	case CURLE_COULDNT_CONNECT:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
		return HTTP_NOT_SENT;
	case CURLE_OPERATION_TIMEDOUT:
		return sent ? HTTP_TIMEOUT : HTTP_NOT_SENT;
	case CURLE_PARTIAL_FILE:
		return HTTP_TRUNCATED;
	default:
		return sent ? HTTP_RESET : HTTP_NOT_SENT;
	}
}

/* On the transfer thread: what the transfer came to, then it goes back to the caller's loop
 * (unless its caller cancelled it: then on_wake_io, taking the cancel in, hands it back). */
static void finish(struct http *http, CURL *easy, CURLcode rc)
{
	struct http_xfer *x = NULL;
	curl_easy_getinfo(easy, CURLINFO_PRIVATE, (char **)&x);
	curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &x->res.status);
	x->res.transport = transport_of(x, rc);
	/* A truncated chunked body can still carry a status: it is not a complete response. */
	if (x->res.transport == HTTP_DONE && x->res.status == 0)
		x->res.transport = HTTP_RESET;
	if (rc != CURLE_OK)
		x->res.detail = curl_easy_strerror(rc);
	x->res.latency_ms = mono_ms() - x->started_mono;
	/* Known to the caller's loop before the write: a shutdown that cannot wait for it still
	 * knows the answer came (and what it cost), not a call in flight. */
	x->answered_len = x->body.len;
	if (x->res.transport == HTTP_DONE)
		atomic_store_explicit(&x->answered, true, memory_order_release);
	save_body(x);
	forget_unsaved(http, x);
	x->res.body = buf_detach(&x->body, &x->res.body_len);
	curl_multi_remove_handle(http->multi, easy);
	pthread_mutex_lock(&http->lock);
	if (x->at == X_RUNNING) {
		x->at = X_DONE;
		list_add(&http->done, x);
	}
	bool deliver = x->at == X_DONE;
	pthread_mutex_unlock(&http->lock);
	if (deliver)
		loop_wake_send_later(http->io, http->to_loop);
	stop_point("http:answer-done");   /* a test holds the thread here: its answer handed over */
}

bool http_answered(const struct http_xfer *x, struct http_result *out)
{
	if (!x || !atomic_load_explicit(&x->answered, memory_order_acquire))
		return false;
	/* Only what finish() set before the flag: the rest (body, body_fd_failed) is the transfer
	 * thread's still. */
	*out = (struct http_result){ .transport = x->res.transport, .status = x->res.status,
				     .body_len = x->answered_len,
				     .started_wall_ms = x->res.started_wall_ms,
				     .latency_ms = x->res.latency_ms, .body_fd = -1, .detail = "" };
	memcpy(out->request_id, x->res.request_id, sizeof(out->request_id));
	memcpy(out->retry_after, x->res.retry_after, sizeof(out->retry_after));
	memcpy(out->retry_after_ms, x->res.retry_after_ms, sizeof(out->retry_after_ms));
	return true;
}

void http_deliver(struct http *http)
{
	finish_all(http);
}

/* On the caller's loop: the finished transfers' callbacks, in the order they finished. */
static void finish_all(struct http *http)
{
	pthread_mutex_lock(&http->lock);
	struct http_xfer *list = list_take(&http->done);
	for (struct http_xfer *x = list; x; x = x->next)
		x->at = X_DELIVERING;
	pthread_mutex_unlock(&http->lock);
	while (list) {
		struct http_xfer *x = list;
		list = x->next;
		easy_put(http, x->easy);
		x->easy = NULL;
		x->res.body_fd = x->body_fd;   /* the callee may take them */
		x->res.body_lent = x->body_lent;
		x->body_fd = -1;
		x->body_lent = NULL;
		if (x->fn)   /* else cancelled: by an earlier callback of this batch, or handed back */
			x->fn(x->arg, &x->res);
		x->body_fd = x->res.body_fd;
		x->body_lent = x->res.body_lent;
		xfer_free(x);
	}
}

static void check_done(struct http *http)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(http->multi, &left))) {
		if (msg->msg == CURLMSG_DONE)
			finish(http, msg->easy_handle, msg->data.result);
	}
}

const char *http_transport_name(enum http_transport t)
{
	static const char *names[] = {
		[HTTP_DONE] = "done", [HTTP_NOT_SENT] = "not_sent", [HTTP_TIMEOUT] = "timeout",
		[HTTP_RESET] = "reset", [HTTP_TRUNCATED] = "truncated", [HTTP_TOO_BIG] = "too_big",
	};
	return names[t];
}
