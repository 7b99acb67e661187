/* provider.c - a provider's health and flow control (see provider.h). Pure: no I/O, no clock
 * of its own. */
#include <stdlib.h>
#include <string.h>

#include "provider.h"
#include "util.h"
#include "banned.h"

void provider_init(struct provider *p, const char *name)
{
	*p = (struct provider){ .name = xstrdup(name) };
}

void provider_release(struct provider *p)
{
	free(p->name);
	free(p->starts);
	*p = (struct provider){ 0 };
}

static long limit_now(const struct provider *p, const struct provider_limits *l)
{
	long limit = l->concurrency;
	if (p->ramp && p->ramp < limit)
		limit = p->ramp;
	return limit;
}

int64_t provider_unavailable_until(const struct provider *p, int64_t now)
{
	int64_t until;
	enum provider_block b = provider_blocked(p, &(struct provider_limits){ .concurrency = 1,
						 .window_ms = 60000 }, now, &until);
	return b == PROVIDER_FREE || b == PROVIDER_BUSY ? 0 : until;
}

bool provider_over_budget(const struct provider *p, int64_t now)
{
	return p->shared == PROVIDER_OVER_BUDGET && (p->shared_until < 0 || now < p->shared_until);
}

int64_t provider_busy_until(const struct provider *p, const struct provider_limits *l, int64_t now)
{
	if (p->active >= limit_now(p, l))
		return -1;
	if (l->rpm && p->ring == l->rpm && p->n_starts == l->rpm) {
		int64_t oldest = p->starts[p->next_start];
		if (now - oldest < l->window_ms)
			return oldest + l->window_ms;
	}
	if (p->shared == PROVIDER_BUSY && (p->shared_until < 0 || now < p->shared_until))
		return p->shared_until;
	return 0;
}

enum provider_block provider_blocked(const struct provider *p, const struct provider_limits *l,
				     int64_t now, int64_t *until)
{
	*until = 0;
	if (p->held && !p->probing) {
		*until = -1;
		return PROVIDER_HELD;
	}
	if (now < p->paused_until) {
		*until = p->paused_until;
		return PROVIDER_PAUSED;
	}
	if (provider_over_budget(p, now)) {
		*until = p->shared_until;
		return PROVIDER_OVER_BUDGET;
	}
	*until = provider_busy_until(p, l, now);
	return *until ? PROVIDER_BUSY : PROVIDER_FREE;
}

int64_t provider_blocked_until(const struct provider *p, const struct provider_limits *l,
			       int64_t now)
{
	int64_t until;
	provider_blocked(p, l, now, &until);
	return until;
}

void provider_started(struct provider *p, const struct provider_limits *l, int64_t now)
{
	p->active++;
	if (!l->rpm)
		return;
	if (p->ring != l->rpm)
		provider_rate_changed(p);
	if (!p->starts) {
		p->ring = l->rpm;
		p->starts = xcalloc((size_t)p->ring, sizeof(*p->starts));
	}
	p->starts[p->next_start] = now;
	p->next_start = (p->next_start + 1) % p->ring;
	if (p->n_starts < p->ring)
		p->n_starts++;
}

void provider_ended(struct provider *p)
{
	if (p->active > 0)
		p->active--;
}

void provider_throttle(struct provider *p, int64_t until)
{
	if (until > p->paused_until)
		p->paused_until = until;
	p->ramp = 1;
}

void provider_succeeded(struct provider *p, long concurrency)
{
	if (p->ramp && (p->ramp *= 2) >= concurrency)
		p->ramp = 0;
}

bool provider_hold(struct provider *p, const char *reason)
{
	bool news = !p->held || strcmp(p->hold_reason, reason);
	p->held = true;
	p->probing = false;
	xsnprintf(p->hold_reason, sizeof(p->hold_reason), "%s", reason);
	return news;
}

bool provider_release_hold(struct provider *p)
{
	bool was = p->held;
	p->held = p->probing = false;
	return was;
}

void provider_shared_block(struct provider *p, enum provider_block why, int64_t until)
{
	p->shared = why;
	p->shared_until = why == PROVIDER_FREE ? 0 : until;
}

void provider_rate_changed(struct provider *p)
{
	free(p->starts);
	p->starts = NULL;
	p->ring = p->n_starts = p->next_start = 0;
}

const char *provider_block_name(enum provider_block b)
{
	switch (b) {
	case PROVIDER_FREE: return "free";
	case PROVIDER_HELD: return "held";
	case PROVIDER_PAUSED: return "paused";
	case PROVIDER_OVER_BUDGET: return "over budget";
	case PROVIDER_BUSY: return "busy";
	}
	return "?";
}
