/* provider_state.c - a provider's state on the loop: its flow control (provider.c decides) with
 * the timers, logs and metrics around it; holds and pauses shared with the other hosts
 * (keyshare.c), read back at each rescan; the probe of a held provider; a call's place among
 * every host's calls within the shared limits and budgets.
 *
 * A provider removed by a reload lives on, retired, until its last task ends. Nothing here
 * fails: a shared file that cannot be read or written leaves the local state in charge. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "attempt.h"
#include "dispatch_impl.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "price.h"
#include "provider_state.h"
#include "slots.h"
#include "task.h"
#include "banned.h"

/* A provider's flow control (provider.c) and what it takes on the loop. */
struct provider_state {
	const struct provider_config *cfg;
	struct provider flow;    /* held, paused, calls in flight, rate: the decisions */
	bool shared_hold;        /* held by the upstream's word: shared with the other hosts */
	int64_t pause_seen;      /* the end (server ms) of the last shared pause acted on */
	bool over_budget;        /* logged as over budget */
	bool recovery_wait;      /* blocked until recovered answers are in the ledger */
	uint64_t probe_timer;
	int users;               /* tasks using it */
	struct config *retired;  /* gone from the config on reload: owns cfg until its tasks end */
	struct dispatch *d;
};

struct provider_state *provider_state_find(struct dispatch *d, const char *name)
{
	const struct provider_config *cfg = config_provider(d->cfg, name);
	for (int i = 0; cfg && i < d->n_providers; i++)
		if (d->providers[i]->cfg == cfg)
			return d->providers[i];
	return NULL;
}

static int64_t probe_due(struct loop *loop, void *arg)
{
	(void)loop;
	struct provider_state *p = arg;
	struct dispatch *d = p->d;
	p->probe_timer = 0;
	if (!p->shared_hold) {
		p->flow.probing = true;  /* dispatch_pump lets one job through */
		return LOOP_TIMER_DONE;
	}
	/* A hold every host shares is probed by one of them, which keeps providers/NAME/probe
	 * while its probe is in flight. A turn it had no job for goes to another host. */
	p->probe_timer = loop_add_timer(d->loop, d->cfg->hold_probe_interval * 1000,
					probe_due, p);
	for (struct task *t = d->tasks; t; t = t->next)
		if (t->is_probe && t->prov == p)
			return LOOP_TIMER_DONE;
	provider_state_look_at_others(p);   /* another host's probe may have released it already */
	if (!p->flow.held)
		return LOOP_TIMER_DONE;
	if (p->flow.probing)
		keyshare_probe_done(d->ks, p->cfg->name);
	p->flow.probing = keyshare_probe_claim(d->ks, p->cfg->name, d->cfg->lease_timeout * 1000);
	return LOOP_TIMER_DONE;
}

/* A 429: the provider pauses (counted once per pause, not per call that sees it). */
static void pause_provider(struct provider_state *p, int64_t until)
{
	if (p->flow.paused_until <= mono_ms())
		metrics_pause(p->cfg->name);
	provider_throttle(&p->flow, until);
	slots_recheck(p->d);   /* a job in the ready line for it goes back to new/ now */
}

void provider_state_hold(struct provider_state *p, const char *reason)
{
	struct dispatch *d = p->d;
	if (!p->flow.held)
		metrics_hold(p->cfg->name);
	if (provider_hold(&p->flow, reason))
		log_msg(LOG_WARN, p->cfg->api_key ? "provider '%s' is on hold: %s; its jobs stay in new/ "
			"and one is tried every %lds, or at once on SIGHUP" : "provider '%s' is on hold: "
			"%s; its jobs stay in new/ until a key is configured and the daemon gets SIGHUP",
			p->cfg->name, reason, d->cfg->hold_probe_interval);
	if (p->probe_timer)
		loop_del_timer(d->loop, p->probe_timer);
	p->probe_timer = 0;
	/* Without a key there is nothing to probe: only SIGHUP (a new key) can help. */
	if (p->cfg->api_key)
		p->probe_timer = loop_add_timer(d->loop, d->cfg->hold_probe_interval * 1000,
					probe_due, p);
	slots_recheck(d);   /* a job in the ready line for it goes back to new/ now */
}

void provider_state_release(struct provider_state *p)
{
	if (p->shared_hold)
		keyshare_unhold(p->d->ks, p->cfg->name);
	p->shared_hold = false;
	if (!provider_release_hold(&p->flow))
		return;
	slots_recheck(p->d);
	log_info("provider '%s' works again: resuming", p->cfg->name);
	if (p->probe_timer)
		loop_del_timer(p->d->loop, p->probe_timer);
	p->probe_timer = 0;
}

/* This host's limits: the provider's concurrency, else [spool]'s; its rate. */
static struct provider_limits limits_of(const struct provider_state *p)
{
	const struct provider_config *c = p->cfg;
	return (struct provider_limits){ .concurrency = c->concurrency ? c->concurrency
					 : p->d->cfg->concurrency, .rpm = c->rpm,
					 .window_ms = c->rate_window * 1000 };
}

void provider_state_succeeded(struct provider_state *p)
{
	int ramp = p->flow.ramp;
	provider_succeeded(&p->flow, limits_of(p).concurrency);
	if (p->flow.ramp != ramp)
		slots_recheck(p->d);   /* jobs in the line may wait for it */
}

/* A refused key or an exhausted balance: every host holds the provider. */
void provider_state_hold_everywhere(struct provider_state *p, const char *reason)
{
	provider_state_hold(p, reason);
	p->shared_hold = true;
	keyshare_hold(p->d->ks, p->cfg->name, reason);
}

/* A 429: no host calls the provider before the wait is over. */
void provider_state_pause_everywhere(struct provider_state *p, int64_t wait_ms)
{
	pause_provider(p, mono_ms() + wait_ms);
	p->pause_seen = keyshare_pause(p->d->ks, p->cfg->name,
				       spool_server_now(p->d->spool) + wait_ms);
}

/* What the spool says about p (at each rescan): another host's hold, release or pause. */
void provider_state_look_at_others(struct provider_state *p)
{
	struct dispatch *d = p->d;
	struct keyshare_view v;
	if (keyshare_look(d->ks, p->cfg->name, &v) < 0)
		return;
	if (v.held && !p->flow.held) {
		char reason[300];
		xsnprintf(reason, sizeof(reason), "%s (another host's word, in providers/%s/hold)",
			  v.hold_reason, p->cfg->name);
		provider_state_hold(p, reason);
		p->shared_hold = true;
	} else if (!v.held && p->flow.held && p->shared_hold) {
		log_info("provider '%s': another host's probe worked", p->cfg->name);
		p->shared_hold = false;
		provider_state_release(p);
	}
	int64_t now = spool_server_now(d->spool);
	if (v.paused_until > now && v.paused_until != p->pause_seen) {
		p->pause_seen = v.paused_until;
		pause_provider(p, mono_ms() + (v.paused_until - now));
		log_info("provider '%s' is paused by another host's 429 for %" PRId64 " s", p->cfg->name,
			 (v.paused_until - now + 999) / 1000);
	}
}

/* The limits every host keeps together: the provider's own concurrency (not [spool]'s),
 * rpm and budgets. */
static struct keyshare_limits shared_limits_of(const struct provider_state *p)
{
	const struct config *cfg = p->d->cfg;
	const struct provider_config *c = p->cfg;
	return (struct keyshare_limits){ .concurrency = c->concurrency, .rpm = c->rpm,
		.window_ms = c->rate_window * 1000, .lease_ms = cfg->lease_timeout * 1000,
		.budget_daily = c->budget_daily, .budget_monthly = c->budget_monthly,
		.total_daily = cfg->budget_daily, .total_monthly = cfg->budget_monthly };
}

/* Whether p has limits kept with other hosts (a concurrency, rpm or budget of the key): a call
 * then takes a ticket among every host's calls first. */
bool provider_state_shared(const struct provider_state *p)
{
	struct keyshare_limits l = shared_limits_of(p);
	return keyshare_needed(&l);
}

/* Whether p's spend is kept in the ledger: only under a budget (a fsynced write per call). */
bool provider_state_budgeted(const struct provider_state *p)
{
	return p->cfg->budget_daily || p->cfg->budget_monthly || p->d->cfg->budget_daily ||
	       p->d->cfg->budget_monthly;
}

enum provider_block provider_state_block(const struct provider_state *p, int64_t now,
					 int64_t *until)
{
	if (control_paused(&p->d->control, p->cfg->name)) {
		*until = -1;   /* until the control/ pause file goes */
		return PROVIDER_HELD;
	}
	struct provider_limits l = limits_of(p);
	return provider_blocked(&p->flow, &l, now, until);
}

const char *provider_state_wait_name(const struct provider_state *p, int64_t now)
{
	int64_t until;
	enum provider_block b = provider_state_block(p, now, &until);
	if (b == PROVIDER_HELD && control_paused(&p->d->control, p->cfg->name))
		return "paused by an operator";
	if (b == PROVIDER_BUSY && p->recovery_wait)
		return "recovered answers not yet in the ledger";
	if (b == PROVIDER_BUSY && until < 0)
		return "full: its calls in flight";
	return provider_block_name(b);
}

int64_t provider_state_blocked_until(const struct provider_state *p, int64_t now)
{
	int64_t until;
	provider_state_block(p, now, &until);
	return until;
}

int64_t provider_state_unavailable_until(const struct provider_state *p, int64_t now)
{
	return provider_unavailable_until(&p->flow, now);
}

void provider_state_call_started(struct provider_state *p, int64_t now)
{
	struct provider_limits limits = limits_of(p);
	provider_started(&p->flow, &limits, now);
}

void provider_state_call_ended(struct provider_state *p)
{
	provider_ended(&p->flow);
}

const struct provider_config *provider_state_config(const struct provider_state *p)
{
	return p->cfg;
}

const char *provider_state_name(const struct provider_state *p)
{
	return p->cfg->name;
}

bool provider_state_retired(const struct provider_state *p)
{
	return p->retired;
}

bool provider_state_held(const struct provider_state *p)
{
	return p->flow.held;
}

bool provider_state_probing(const struct provider_state *p)
{
	return p->flow.probing;
}

bool provider_state_over_budget(const struct provider_state *p)
{
	return p->over_budget;
}

int provider_state_calls(const struct provider_state *p)
{
	return p->flow.active;
}

void provider_state_report_metrics(const struct provider_state *p, int64_t now)
{
	metrics_provider_state(p->cfg->name, p->flow.active, p->flow.held && !p->retired,
			       now < p->flow.paused_until);
	metrics_provider_over_budget(p->cfg->name, p->over_budget && !p->retired);
}

bool provider_state_use(struct provider_state *p, bool may_probe)
{
	p->users++;
	if (!may_probe || !p->flow.held)
		return false;
	p->flow.probing = false;  /* one probe at a time */
	return true;
}

void provider_state_unuse(struct provider_state *p, bool was_probe)
{
	struct dispatch *d = p->d;
	if (was_probe) {
		keyshare_probe_done(d->ks, p->cfg->name);
		/* A probe that ended without a verdict (a bad reference image, say) must not leave
		 * its held provider without a next probe. */
		if (p->flow.held && !p->probe_timer && !p->flow.probing && !p->retired)
			p->probe_timer = loop_add_timer(d->loop, d->cfg->hold_probe_interval * 1000,
							probe_due, p);
	}
	if (--p->users == 0 && p->retired)
		provider_state_free(p);
}

void provider_state_reload(struct provider_state *p, const struct config *next, struct config *old)
{
	if (p->retired)
		return;   /* its old section stays */
	const struct provider_config *section = config_provider(next, p->cfg->name);
	if (section && section->rpm != p->cfg->rpm)
		provider_rate_changed(&p->flow);
	/* A raised budget or limit is looked at again now. */
	provider_shared_block(&p->flow, PROVIDER_FREE, 0);
	if (section)
		p->cfg = section;
	else if (p->users) {
		log_info("provider '%s' is no longer configured: its %d job(s) finish first",
			 p->cfg->name, p->users);
		p->retired = config_ref(old);
	} else
		provider_state_free(p);
}

/* At its concurrency, ramp or rate: a routed job waits its turn there. 0 when it has room. */
int64_t provider_state_busy_until(const struct provider_state *p, int64_t now)
{
	struct provider_limits l = limits_of(p);
	return provider_busy_until(&p->flow, &l, now);
}

struct provider_state *provider_state_new(struct dispatch *d, const struct provider_config *cfg)
{
	struct provider_state *p = xcalloc(1, sizeof(*p));
	*p = (struct provider_state){ .cfg = cfg, .d = d };
	provider_init(&p->flow, cfg->name);
	d->providers = xrealloc(d->providers, (size_t)(d->n_providers + 1) * sizeof(*d->providers));
	d->providers[d->n_providers++] = p;
	if (!cfg->api_key)
		provider_state_hold(p, cfg->key_problem);
	return p;
}

void provider_state_free(struct provider_state *p)
{
	struct dispatch *d = p->d;
	for (int i = 0; i < d->n_providers; i++)
		if (d->providers[i] == p)
			d->providers[i] = d->providers[--d->n_providers];
	if (p->probe_timer)
		loop_del_timer(d->loop, p->probe_timer);
	provider_release(&p->flow);
	config_unref(p->retired);
	free(p);
}

/* Keys were (re)loaded: a provider without one is held, a held one with one is probed. */
void provider_state_keys_changed(struct provider_state *p)
{
	const struct provider_config *c = p->cfg;
	if (!c->api_key) {
		if (p->flow.held && !strcmp(p->flow.hold_reason, c->key_problem))
			log_warn("provider '%s' is still on hold: %s%s", c->name, c->key_problem,
				 c->api_key_file ? "" : " (a running daemon never sees a variable exported "
				 "after it started: use api_key_file, or restart it with the variable set)");
		provider_state_hold(p, c->key_problem);
		return;
	}
	if (p->flow.held) {
		log_info("provider '%s' was held (%s): trying it with one job now", c->name,
			 p->flow.hold_reason);
		p->flow.probing = true;
	}
	if (p->probe_timer)
		loop_del_timer(p->d->loop, p->probe_timer);
	p->probe_timer = 0;
}

void provider_state_recovered_parse(struct dispatch *d, int delta)
{
	d->recovered_unbilled += delta;
	if (d->recovered_unbilled > 0)
		return;
	for (int i = 0; i < d->n_providers; i++) {
		struct provider_state *p = d->providers[i];
		if (!p->recovery_wait)
			continue;
		log_info("provider '%s': the answers recovered from before the restart are in the "
			 "ledger: its calls are counted against its budgets again", p->cfg->name);
		p->recovery_wait = false;
		provider_shared_block(&p->flow, PROVIDER_FREE, 0);
	}
	slots_recheck(d);   /* the before-sleep hook pumps what waited */
}

/* A place among every host's calls to p for one call of job: within the provider's shared
 * concurrency, rate and budgets, or the provider waits (and says why once, for a budget). */
bool provider_state_take_share(struct provider_state *p, const struct job *job, const char *model,
			       struct keyshare_ticket *out)
{
	struct dispatch *d = p->d;
	struct keyshare_limits l = shared_limits_of(p);
	*out = (struct keyshare_ticket){ 0 };
	if (!keyshare_needed(&l))
		return true;
	if (d->recovered_unbilled && provider_state_budgeted(p)) {
		if (!p->recovery_wait)
			log_info("provider '%s': its calls wait until the cost of %d answer(s) recovered "
				 "from before the restart is in the ledger", p->cfg->name,
				 d->recovered_unbilled);
		p->recovery_wait = true;
		provider_shared_block(&p->flow, PROVIDER_BUSY, -1);   /* woken by the last one */
		return false;
	}
	/* Priced as the model called: a routed job's model names its route, not a price. */
	if (!model)
		model = job->model ? job->model : p->cfg->model;
	struct price_quote q = attempt_quote(d, job, model, NULL, 0);
	struct keyshare_verdict v = keyshare_acquire(d->ks, p->cfg->name, &l,
						     q.known ? keyshare_micros(q.amount) : 0, out);
	const char *cur = d->cfg->prices.currency;
	if (v.block == PROVIDER_FREE) {
		if (p->over_budget)
			log_info("provider '%s' is within its budgets again: its jobs run", p->cfg->name);
		p->over_budget = false;
		provider_shared_block(&p->flow, PROVIDER_FREE, 0);
		return true;
	}
	int64_t now = mono_ms(), wait = d->cfg->poll_interval * 1000;
	if (v.retry_at > 0)
		wait = v.retry_at - spool_server_now(d->spool);
	if (wait < 1)
		wait = 1;
	if (v.block == PROVIDER_OVER_BUDGET && !p->over_budget)
		log_msg(LOG_WARN, "provider '%s' is over its %s budget: %.2f %s spent and %.2f in flight "
			"of %.2f, with every host's calls; its jobs wait in new/ until the %s rolls over or a "
			"reload raises the budget", p->cfg->name, v.which, v.spent / 1e6, cur,
			v.reserved / 1e6, v.budget / 1e6, strstr(v.which, "daily") ? "day" : "month");
	p->over_budget = v.block == PROVIDER_OVER_BUDGET;
	log_debug("provider '%s': no room among every host's calls (%s, %ld counted): next look "
		  "in %" PRId64 " ms", p->cfg->name, v.which ? v.which : "?", v.counted, wait);
	provider_shared_block(&p->flow, v.block, now + wait);
	return false;
}

