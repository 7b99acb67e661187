/* route.h - choosing a target (a provider and a model) for a job whose "model" names a route.
 *
 * Pure: the caller says, per target, whether it can serve the job, whether it is available
 * (not held, paused, over budget or cooling down) and when it may be again, whether it is busy
 * (at its concurrency or rpm) and what the job would cost there; route_choose() decides.
 *
 * Weighted (the default): the job's place among the weighted targets comes from a hash of its
 * task id, so a job keeps its target across retries and restarts; 5 % of the weight gets about
 * 5 % of the jobs. A job whose target is unavailable goes to another weighted target (again by
 * weight, by a second hash), then to the fallbacks in order. A busy target is waited for, so a
 * queue behind a canary's main target does not spill onto the canary.
 * Cheapest: the cheapest target that can take the job now (priced before unpriced, ties in
 * file order), then the fallbacks in order.
 * Either way a retry avoids the target whose call just failed when another can take the job,
 * and a target that cannot serve the job (route_can_serve) is never chosen: no request that
 * silently drops an input. */
#ifndef ROUTE_H
#define ROUTE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct job;

struct target_view {
	bool can_serve;
	int64_t unavailable_until;   /* 0: available; else when it may be (mono ms), -1: an event */
	int64_t busy_until;          /* 0: has room; else when it may have (mono ms), -1: an event */
	bool priced;
	double price;                /* what the job would cost there, when priced */
};

enum route_verdict {
	ROUTE_CHOSEN,
	ROUTE_WAIT,                  /* some target can serve the job, none can take it now */
	ROUTE_NONE,                  /* no target can serve the job */
};

struct route_choice {
	enum route_verdict verdict;
	int target;                  /* ROUTE_CHOSEN: the index in the route's targets; ROUTE_WAIT:
				      * the busy target it waits for, or -1 when it waits for any */
	int64_t wait_until;          /* ROUTE_WAIT: mono ms to look again, -1: after an event */
};

/* avoid: the target whose call just failed (-1 for none). */
struct route_choice route_choose(const struct route_config *r, const char *task_id,
				 const struct target_view *views, int avoid);

/* Whether tg (its model resolved) can do all the job asks; if not, why ("... makes one image
 * per call"). */
bool route_can_serve(const struct route_target *tg, const struct job *job, char *why,
		     size_t whysize);

/* A 64-bit hash of s, well mixed (FNV-1a then a finaliser), for the weighted choice. */
uint64_t route_hash(const char *s, uint64_t salt);

#endif
