/* routing.c - where a job whose model names a route goes: the target chosen for its call
 * (route.c decides, from what each target can serve, when it is free and what it costs), the
 * wait of a job whose targets are all busy, and the cooldowns (health.c) its answers feed. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dispatch_impl.h"
#include "intake.h"
#include "log.h"
#include "loop.h"
#include "provider_state.h"
#include "route.h"
#include "routing.h"
#include "task.h"
#include "banned.h"

static int64_t route_wake(struct loop *loop, void *arg)
{
	(void)loop;
	struct dispatch *d = arg;
	d->route_timer = 0;   /* the before-sleep hook pumps */
	return LOOP_TIMER_DONE;
}

/* Wakes the pump when a cooldown or pause that routed jobs wait for ends. */
static void route_wake_at(struct dispatch *d, int64_t due)
{
	if (due <= 0 || (d->route_timer && d->route_due <= due))
		return;
	if (d->route_timer)
		loop_del_timer(d->loop, d->route_timer);
	d->route_due = due;
	int64_t delay = due - mono_ms();
	d->route_timer = loop_add_timer(d->loop, delay > 0 ? delay : 1, route_wake, d);
}

static bool is_route_target(const struct config *cfg, const char *provider, const char *model)
{
	for (size_t i = 0; i < cfg->n_routes; i++)
		for (size_t k = 0; k < cfg->routes[i].n_targets; k++) {
			const struct route_target *tg = &cfg->routes[i].targets[k];
			if (!strcmp(tg->provider, provider) && !strcmp(tg->model, model))
				return true;
		}
	return false;
}

/* A target that failed for free too often in a row cools down (health.c). */
void routing_record_health(struct task *t)
{
	struct dispatch *d = t->d;
	const char *provider = provider_state_name(t->prov);
	if (!is_route_target(d->cfg, provider, t->model))
		return;   /* only routes read it; a job's own model names do not fill the table */
	struct health_policy p = { .failures = d->cfg->cooldown_failures,
				   .cooldown_ms = d->cfg->cooldown_time * 1000,
				   .jitter_pct = d->cfg->cooldown_jitter };
	int64_t until = health_record(&d->health, provider, t->model, health_event_of(&t->outcome),
				      &p, mono_ms(), random64());
	if (until)
		log_warn("%s/%s failed %ld times in a row for free: cooling down for %" PRId64 " ms; its "
			 "routes send jobs elsewhere", provider, t->model, p.failures, until - mono_ms());
}

/* When can each target of r take job: served, available, busy, priced (route.h). */
static void target_views(struct dispatch *d, const struct route_config *r, const struct job *job,
			 struct target_view *v, char *why, size_t whysize)
{
	int64_t now = mono_ms();
	size_t used = 0;
	why[0] = '\0';
	for (size_t i = 0; i < r->n_targets; i++) {
		const struct route_target *tg = &r->targets[i];
		struct provider_state *p = provider_state_find(d, tg->provider);
		char reason[256];
		v[i] = (struct target_view){ .can_serve = p && route_can_serve(tg, job, reason, sizeof(reason)) };
		if (!v[i].can_serve) {
			int n = snprintf(why + used, whysize - used, "%s%s", used ? "; " : "", reason);
			used = n > 0 && used + (size_t)n < whysize ? used + (size_t)n : used;
			continue;
		}
		v[i].unavailable_until = provider_state_unavailable_until(p, now);
		if (!v[i].unavailable_until)
			v[i].unavailable_until = health_cooling_until(&d->health, tg->provider, tg->model, now);
		v[i].busy_until = provider_state_busy_until(p, now);
		struct price_call c = { .model = tg->model, .size = job->size, .quality = job->quality,
					.images = job->n };
		struct price_quote q = price_call(&d->cfg->prices, &c);
		v[i].priced = q.known;
		v[i].price = q.amount;
	}
}

/* The target of the job's last call if it failed and may be retried: the next avoids it. */
static int failed_target(const struct route_config *r, const struct job *job)
{
	json_t *attempts = json_object_get(job->state, "attempts");
	json_t *last = json_array_get(attempts, json_array_size(attempts) - 1);
	const char *outcome = json_string_value(json_object_get(last, "outcome"));
	const char *provider = json_string_value(json_object_get(last, "provider"));
	const char *model = json_string_value(json_object_get(last, "model"));
	if (!outcome || !provider || !model || (strcmp(outcome, "retry") && strcmp(outcome, "interrupted")))
		return -1;
	for (size_t i = 0; i < r->n_targets; i++)
		if (!strcmp(r->targets[i].provider, provider) && !strcmp(r->targets[i].model, model))
			return (int)i;
	return -1;
}

/* Chooses the target of a routed job; on ROUTE_WAIT, pe remembers what it waits for, so the
 * pump need not reread its file until something changes. */
void routing_pick(struct dispatch *d, const struct route_config *r, const struct job *job,
		  const char *id, struct pending *pe, struct route_pick *pick)
{
	struct target_view v[ROUTE_MAX_TARGETS];
	target_views(d, r, job, v, pick->why, sizeof(pick->why));
	struct route_choice c = route_choose(r, id, v, failed_target(r, job));
	pick->verdict = c.verdict;
	if (c.verdict == ROUTE_CHOSEN) {
		pick->prov = provider_state_find(d, r->targets[c.target].provider);
		pick->model = r->targets[c.target].model;
	}
	if (c.verdict != ROUTE_WAIT)
		return;
	free(pe->route);
	pe->route = xstrdup(r->name);
	pe->route_target = c.target;
	pe->route_mask = 0;
	for (size_t i = 0; i < r->n_targets; i++)
		pe->route_mask |= v[i].can_serve ? 1u << i : 0;
	route_wake_at(d, c.wait_until);
}

/* Whether a job waiting for its route must still wait: its busy target is still busy, or no
 * target that can serve it is free. */
bool routing_still_waits(struct dispatch *d, const struct pending *pe)
{
	const struct route_config *r = config_route(d->cfg, pe->route);
	int64_t now = mono_ms();
	for (size_t i = 0; r && i < r->n_targets; i++) {
		const struct route_target *tg = &r->targets[i];
		struct provider_state *p = provider_state_find(d, tg->provider);
		if (!(pe->route_mask & (1u << i)) || !p)
			continue;
		bool available = !provider_state_unavailable_until(p, now) &&
				 !health_cooling_until(&d->health, tg->provider, tg->model, now);
		if (pe->route_target == (int)i)
			return available && provider_state_busy_until(p, now);
		if (pe->route_target < 0 && available && !provider_state_busy_until(p, now))
			return false;
	}
	return r && pe->route_target < 0;
}

