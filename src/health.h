/* health.h - which targets (a provider and a model) are cooling down.
 *
 * A target that failed for free (5xx, connection refused) N times in a row cools down for M
 * seconds plus a random part (jitter, so the daemons sharing a target do not all come back at
 * once); a route sends its jobs elsewhere meanwhile. After a cooldown the target is tried again,
 * and one more free failure sends it straight back (a breaker's half-open state); an answer
 * that shows it working (a success, a 4xx) clears it. Timeouts and 429s say nothing here: the
 * first may be the job's own size, the second pauses the whole provider already.
 *
 * Pure: the caller passes the clock and a random number. State is keyed by "provider/model",
 * so it survives a reload of the configuration. */
#ifndef HEALTH_H
#define HEALTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct outcome;

enum health_event {
	HEALTH_WORKS,            /* an answer that shows the target serving */
	HEALTH_FREE_FAILURE,     /* 5xx, connection refused: it did not serve, and cost nothing */
	HEALTH_NEUTRAL,          /* says nothing about the target (timeout, 429, hold) */
};

struct health_policy {
	long failures;           /* free failures in a row that start a cooldown; 0 = never */
	int64_t cooldown_ms;
	long jitter_pct;         /* the cooldown is cooldown_ms plus up to this percent of it */
};

struct health_entry {
	char *key;               /* "provider/model" */
	long failures;           /* free failures in a row */
	int64_t cooling_until;   /* mono ms; 0 = not cooling */
	bool tripped;            /* it cooled down before and has not worked since */
};

struct health {
	struct health_entry *entries;
	size_t n;
};

void health_init(struct health *h);
void health_release(struct health *h);
/* What an outcome says about its target. */
enum health_event health_event_of(const struct outcome *o);
/* Records an event; returns the end of a cooldown it started (mono ms), else 0. */
int64_t health_record(struct health *h, const char *provider, const char *model,
		      enum health_event ev, const struct health_policy *p, int64_t now,
		      uint64_t random);
/* 0 when the target may be called at now, else the end of its cooldown. */
int64_t health_cooling_until(const struct health *h, const char *provider, const char *model,
			     int64_t now);

#endif
