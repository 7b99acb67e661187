/* provider.h - a provider's health and flow control, as this daemon sees it: whether it is held
 * (key refused, balance exhausted), paused (a 429), ramping up after a pause, over budget, at
 * its concurrency or its rate; and when that may change.
 *
 * Pure: the caller passes the limits and the clock (mono ms); nothing here reads a file, a
 * timer or the config. What other hosts decided (keyshare.c) arrives through the same calls
 * (provider_throttle, provider_hold) and through provider_shared_block. State is keyed by the
 * provider's name, so it survives a reload of the configuration. */
#ifndef PROVIDER_H
#define PROVIDER_H

#include <stdbool.h>
#include <stdint.h>

struct provider_limits {
	long concurrency;        /* calls in flight from this host, at most */
	long rpm;                /* calls started per window, 0 = no limit */
	int64_t window_ms;       /* the rate's window (60 000: per minute) */
};

enum provider_block {
	PROVIDER_FREE,           /* a call may start now */
	PROVIDER_HELD,           /* unavailable: on hold, and not probing */
	PROVIDER_PAUSED,         /* unavailable: a 429 pause */
	PROVIDER_OVER_BUDGET,    /* unavailable: a call would pass a spend budget */
	PROVIDER_BUSY,           /* available but full: concurrency, ramp or rate, here or shared */
};

struct provider {
	char *name;              /* owned */
	bool held;               /* no usable key, or the upstream refused it / the balance */
	bool probing;            /* a held provider lets one job through to test it */
	char hold_reason[256];
	int64_t paused_until;    /* no new calls before (a 429 pauses the provider) */
	int active;              /* calls in flight from this host */
	int ramp;                /* after a pause: calls allowed at once, doubling per success; 0 = off */
	int64_t *starts;         /* the last rpm call starts (a ring), for the rate */
	long ring, n_starts, next_start;
	/* What the spool says (keyshare.c): another host's limit or a budget, until recheck. */
	enum provider_block shared;
	int64_t shared_until;    /* when to look again; -1: only after an event */
};

void provider_init(struct provider *p, const char *name);
void provider_release(struct provider *p);

/* Why a call may not start at now, and until when (*until: mono ms, -1 = until an event). */
enum provider_block provider_blocked(const struct provider *p, const struct provider_limits *l,
				     int64_t now, int64_t *until);
/* 0 if a call may start now; else the mono ms to look again, or -1 when only an event (a call
 * ending, SIGHUP, a probe) can change it. */
int64_t provider_blocked_until(const struct provider *p, const struct provider_limits *l,
			       int64_t now);
/* For a target chooser: 0 when the provider is available at now (not held, paused or over
 * budget), else when it may be (-1: after an event). Full is not unavailable. */
int64_t provider_unavailable_until(const struct provider *p, int64_t now);
/* 0 when it has room for one more call now (concurrency, ramp, rate), else when it may. */
int64_t provider_busy_until(const struct provider *p, const struct provider_limits *l, int64_t now);
bool provider_over_budget(const struct provider *p, int64_t now);

void provider_started(struct provider *p, const struct provider_limits *l, int64_t now);
void provider_ended(struct provider *p);
/* A 429: nothing starts before until; then one call at a time, doubling with each success. */
void provider_throttle(struct provider *p, int64_t until);
void provider_succeeded(struct provider *p, long concurrency);
/* Returns true when this is news (not held, or held for another reason): worth a log line. */
bool provider_hold(struct provider *p, const char *reason);
/* Returns true if it was held. */
bool provider_release_hold(struct provider *p);
/* The spool says block (BUSY or OVER_BUDGET) until until; PROVIDER_FREE clears it. */
void provider_shared_block(struct provider *p, enum provider_block why, int64_t until);
/* The rate limit changed (a reload): the ring of starts is sized by it. */
void provider_rate_changed(struct provider *p);
const char *provider_block_name(enum provider_block b);

#endif
