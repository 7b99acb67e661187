/* retry.h - pure policy: what an upstream outcome means (success, retry, fail, hold), whether it
 * was billed, and when to try again. No I/O, no clock, no randomness of its own: the caller passes
 * them in, so every row of the table in spool-layout.md is a unit test. */
#ifndef RETRY_H
#define RETRY_H

#include <stdbool.h>
#include <stdint.h>

#include "http.h"

struct response;

enum decision {
	DECIDE_SUCCEEDED,
	DECIDE_RETRY,            /* free to retry: nothing was billed */
	DECIDE_RETRY_BILLED,     /* may have been billed: retry only within the billed-retry budget */
	DECIDE_FAIL,
	DECIDE_HOLD,             /* the provider is unusable (key, balance): pause it, keep jobs pending */
};

enum billed { BILLED_NO, BILLED_YES, BILLED_UNKNOWN };

struct outcome {
	enum decision decision;
	enum billed billed;
	const char *code;        /* static, from the fixed set in spool-layout.md */
	const char *message;     /* static, friendly, for an end user */
	const char *upstream_message; /* the upstream's own words, "" or NULL if none: borrowed from
				       * the response (a result keeps its first 511 bytes) */
	int64_t retry_after_ms;  /* what the upstream asked us to wait, -1 if it did not say */
};

struct classify_input {
	enum http_transport transport;
	long status;
	const char *retry_after;     /* header, may be "" */
	const char *retry_after_ms;  /* header, may be "" */
	const struct response *resp; /* the parsed body; never NULL */
	int64_t now_wall_ms;         /* for an HTTP-date Retry-After */
};

void retry_classify(const struct classify_input *in, struct outcome *out);

/* Retry-After in its forms: retry-after-ms, then seconds (fractions allowed), then an HTTP-date.
 * Returns milliseconds (clamped to [0, cap_ms]), or -1 when absent or unreadable. */
int64_t retry_after_ms(const char *retry_after, const char *retry_after_ms_hdr, int64_t now_wall_ms,
		       int64_t cap_ms);

/* Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)].
 * random is a uniform 64-bit value supplied by the caller. */
int64_t retry_backoff_ms(int attempt, int64_t base_ms, int64_t cap_ms, uint64_t random);
/* For deliveries that must not hammer a peer that is down (uploads, webhooks): the wait after
 * the failure-th failure (1 = first) is min(cap, base * 2^(failure-1)) less up to a quarter of
 * it at random, so the first wait is close to base and retries from many jobs spread out. */
int64_t retry_redelivery_ms(int failure, int64_t base_ms, int64_t cap_ms, uint64_t random);

/* Deliveries retried until they work or their time is over (uploads to the store, webhooks):
 * what to do after one failed. Pure: the caller passes the clock and the random value. */
struct redelivery_rule {
	int64_t base_ms, cap_ms;     /* the first wait, and the longest */
	int64_t give_up_after_ms;    /* from the delivery's first queueing; 0: never give up */
};
enum redelivery_verdict { REDELIVER_LATER, REDELIVER_GIVE_UP };
/* After the failures-th failure in a row (1 = the first) of a delivery first queued at
 * first_ms, at now_ms: give up once more than give_up_after_ms have passed since first_ms;
 * else *delay_ms gets retry_redelivery_ms's wait, or asked_ms (what the peer asked for, its
 * Retry-After; -1 when it said nothing) when that is longer. */
enum redelivery_verdict retry_redeliver(const struct redelivery_rule *rule, int failures,
					int64_t first_ms, int64_t now_ms, int64_t asked_ms,
					uint64_t random, int64_t *delay_ms);

/* Whether a response with HTTP status was billed, judged by its status alone, for an answer
 * that cannot be judged whole (a saved one whose parse may be what kills the daemon, one lost
 * at exit before it could be saved): a 2xx yes (even one a judgement would find free: the safe
 * side), a 524 maybe, any other status no. */
enum billed retry_billed_by_status(long status);

const char *decision_name(enum decision d);
const char *billed_name(enum billed b);

#endif
