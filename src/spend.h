/* spend.h - money being spent and spent today, per provider, as the daemon sees it: what its
 * calls in flight may cost (reserved when a call starts) and what its finished calls cost since
 * the start of the local day. The numbers budgets and metrics read.
 *
 * Pure bookkeeping keyed by provider name (so it survives a config reload); the caller passes
 * the day. Costs are in the [prices] currency. A daemon counts only its own calls, from its own
 * start. */
#ifndef SPEND_H
#define SPEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spend_entry {
	char *provider;
	long day;                /* spend_day() of "today" */
	double in_flight;        /* reserved by calls not yet answered */
	double today;            /* settled costs of today's calls */
	long unpriced_today;     /* billed (or maybe billed) calls today with no price */
	long calls_in_flight;
};

struct spend {
	struct spend_entry *entries;
	size_t n;
};

struct spend_view {
	double in_flight;
	double today;
	long unpriced_today;
	long calls_in_flight;
};

void spend_init(struct spend *s);
void spend_release(struct spend *s);
/* A call to provider starts; reserve is what it would cost if billed (0 when unpriced). */
void spend_call_started(struct spend *s, const char *provider, double reserve, long day);
/* The call ended: its reserve is released. */
void spend_call_ended(struct spend *s, const char *provider, double reserve, long day);
/* A call's cost is known: added to today's if billed (or maybe billed); one with no price
 * (known false) is counted as unpriced. */
void spend_add(struct spend *s, const char *provider, bool billed, bool known, double cost,
	       long day);
/* One provider's figures, or the sum of all when provider is NULL. */
struct spend_view spend_get(const struct spend *s, const char *provider, long day);
/* The local calendar day of a wall-clock time in ms, as a day number. */
long spend_day(int64_t wall_msec);

#endif
