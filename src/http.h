/* http.h - HTTP transfers through libcurl's multi socket interface, driven by a thread of their
 * own: set up from the caller's event loop, their callbacks run there too.
 *
 * Every transfer has a hard cap on its body and a total time limit. The outcome says how far the
 * transfer got, because that decides billing: a request that never left is free to retry, one
 * that was sent and then lost may have been paid for. No redirects for API calls; downloads may
 * follow at most 3, to http or https only. */
#ifndef HTTP_H
#define HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop;
struct http;
struct http_xfer;
struct form_part;

enum http_transport {
	HTTP_DONE,               /* a complete HTTP response arrived (any status) */
	HTTP_NOT_SENT,           /* failed before the request was sent: DNS, connect, TLS */
	HTTP_TIMEOUT,            /* the time limit hit after the request was sent */
	HTTP_RESET,              /* the connection broke after the request was sent */
	HTTP_TRUNCATED,          /* the response ended early */
	HTTP_TOO_BIG,            /* the body went over the cap */
};

struct http_request {
	const char *url;
	const char *bearer;      /* API key for "Authorization: Bearer", or NULL */
	const char *body;        /* JSON body (copied), or NULL for GET */
	size_t body_len;         /* of body or body_lent */
	const struct form_part *parts; /* multipart body instead of body */
	size_t n_parts;
	const int *files;        /* the files the parts with from_fd read (form_part.file): one
				  * descriptor a distinct file, stolen by http_start (closed by it
				  * if it fails) and closed once the transfer is let go of */
	int n_files;
	long timeout_s;          /* whole transfer */
	long connect_timeout_s;
	size_t max_body;
	bool follow_redirects;
	const char *ca_file;     /* NULL = system default */
	int body_fd;             /* the body is also written here as it arrives; -1 = not. Stolen
				  * by http_start unless it fails: it comes back in the result, or
				  * is closed once the transfer is cancelled: by the transfer
				  * thread if it holds the transfer (a close on NFS may flush),
				  * else at once on the loop */
	bool public_only;        /* refuse to connect to a loopback, private or link-local address */
	/* For results leaving the spool (object storage, webhooks): */
	const char *method;      /* "PUT" etc.; NULL = GET, or POST when there is a body */
	const char *content_type; /* of body; NULL = application/json */
	const char *const *headers; /* more "Name: value" lines, NULL-terminated, or NULL */
	void *body_lent;         /* instead of body, not copied (an image): malloc'ed, and stolen by
				  * http_start unless it fails; it comes back in the result, or is
				  * freed on the loop once a cancelled transfer is let go of: at
				  * once, or when the transfer thread hands it back (a cancel does
				  * not wait for libcurl to stop reading it) */
	const char *aws_sigv4;   /* "aws:amz:REGION:s3": libcurl signs with SigV4 using userpwd */
	const char *userpwd;     /* "ACCESS_KEY_ID:SECRET" for aws_sigv4 */
};

struct http_result {
	enum http_transport transport;
	long status;             /* HTTP status, 0 if none */
	char *body;              /* owned by the result; NUL-terminated */
	size_t body_len;
	char request_id[128];    /* x-request-id or request-id header, "" if none */
	char retry_after[64];    /* Retry-After header value, "" if none */
	char retry_after_ms[32]; /* retry-after-ms header value, "" if none */
	const char *detail;      /* curl's error text for a failed transfer (static), else "" */
	int64_t started_wall_ms;
	int64_t latency_ms;
	int body_fd;             /* the request's body_fd, or -1: the callee may take it (setting
				  * -1), else it is closed after the call */
	void *body_lent;         /* the request's body_lent, or NULL: the same */
	bool body_fd_failed;     /* writing body_fd failed (disk full?): only memory has the body */
	char refused_address[64]; /* public_only: the non-public address refused, "" if none */
};

/* Called once per transfer unless it was cancelled. res is borrowed for the call, except body,
 * body_lent and body_fd, which the callee may steal by setting them to NULL (body_fd to -1). */
typedef void http_done_fn(void *arg, struct http_result *res);

/* The transfer thread's name (/proc/PID/task/TID/comm): make bench counts its CPU apart. */
#define HTTP_THREAD_NAME "imgspool-http"

struct http *http_new(struct loop *loop, long max_connections);
/* Ends the transfer thread and frees http; a thread still stuck in a write after
 * HTTP_FREE_WAIT_MS (or the exit's deadline, util.h exit_wait_ms) is left running instead,
 * and http with it (http_left_running). */
#define HTTP_FREE_WAIT_MS 2000
void http_free(struct http *http);
/* Whether http_free left a transfer thread running: then nothing it may use may be freed (the
 * loop http_new was given, libcurl's global state) and the process must end with _exit, no
 * atexit handler (libcurl's, libcrypto's) running under that thread. */
bool http_left_running(void);
/* Returns NULL (logged) if the request could not even be set up. */
struct http_xfer *http_start(struct http *http, const struct http_request *req, http_done_fn *fn,
			     void *arg);
/* Aborts a transfer; its callback is not called, and the caller may free what arg points to at
 * once. Never waits for the transfer thread: a body write already under way there may still
 * land in body_fd's file, none after it (see http.c). */
void http_cancel(struct http *http, struct http_xfer *xfer);
/* The same, unless the transfer has finished and its callback waits for http_deliver (checked
 * under the lock the transfer thread hands it over under): then false, and it is left be. */
bool http_cancel_unless_done(struct http *http, struct http_xfer *xfer);
/* Whether a whole response to xfer has arrived, its callback perhaps not yet run: then out
 * gets its status, headers, start, latency and body_len (no body: it may still be being
 * written to body_fd, a write that may be stuck on a stalled disk). For a shutdown that cannot
 * wait. */
bool http_answered(const struct http_xfer *xfer, struct http_result *out);
/* A shutdown's cut of a call: cancels xfer (HTTP_CUT_CANCELLED) unless its whole answer came,
 * checked in the same hold of the lock as the cancel, so no answer that came before the cut is
 * freed unseen. HTTP_CUT_DONE: handed over, left to http_deliver; HTTP_CUT_ANSWERED: not
 * cancelled, out as by http_answered (its body may still be being written). */
enum http_cut { HTTP_CUT_CANCELLED, HTTP_CUT_DONE, HTTP_CUT_ANSWERED };
enum http_cut http_cut(struct http *http, struct http_xfer *xfer, struct http_result *out);
/* Runs the callbacks of the transfers finished by now, at once rather than at the loop's next
 * turn. */
void http_deliver(struct http *http);
/* The descriptors cancelled transfers still hold (at most a socket each, and its body_fd) till
 * the transfer thread takes their cancels in: a thread stuck in a write holds them on. The
 * caller's budget of open files counts them. */
int http_cancelled_files(struct http *http);
const char *http_transport_name(enum http_transport t);
/* Whether an IP address (text) is on the public internet: not loopback, private (RFC 1918,
 * ULA), link-local, CGNAT, unspecified, multicast or reserved; IPv4-mapped and NAT64 addresses
 * are judged by the IPv4 address inside; anything unreadable is not public. Pure. */
bool http_ip_is_public(const char *ip);

#endif
