/* routing.h - the target of a routed job, on the loop (routing.c; route.c decides). Part of the
 * dispatcher. */
#ifndef ROUTING_H
#define ROUTING_H

#include <stdbool.h>

#include "route.h"

struct dispatch;
struct job;
struct pending;
struct provider_state;
struct route_config;
struct task;

struct route_pick {
	enum route_verdict verdict;
	struct provider_state *prov;  /* ROUTE_CHOSEN */
	const char *model;            /* borrowed from the config, for this call only */
	char why[768];                /* ROUTE_NONE: what no target can do */
};

void routing_pick(struct dispatch *d, const struct route_config *r, const struct job *job,
		  const char *id, struct pending *pe, struct route_pick *pick);
bool routing_still_waits(struct dispatch *d, const struct pending *pe);
void routing_record_health(struct task *t);

#endif
