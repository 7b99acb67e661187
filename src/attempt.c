/* attempt.c - the bookkeeping of a task's calls: what a call costs (price.c, from the [prices]
 * table), its reservation in the spend while it is in flight and what it cost once settled
 * (spend.c, and the shared ledger under a budget), and its entry in the job's records and in
 * the metrics.
 *
 * Nothing here fails: a call without a price is counted as of unknown cost. */
#include <stdlib.h>
#include <string.h>

#include "dispatch_impl.h"
#include "metrics.h"
#include "price.h"
#include "banned.h"

/* What a call for job to model costs if billed; images 0 means as many as the job asked for. */
struct price_quote attempt_quote(const struct dispatch *d, const struct job *job,
				 const char *model, const json_t *usage, int images)
{
	struct price_call c = { .model = model, .size = job->size, .quality = job->quality,
				.images = images > 0 ? images : job->n, .usage = usage };
	return price_call(&d->cfg->prices, &c);
}

static struct price_quote call_quote(const struct task *t, const json_t *usage, int images)
{
	return attempt_quote(t->d, &t->job, t->model, usage, images);
}

/* Names the call's target in its attempt and prices it: 0 when it was not billed, its price
 * when it was or may have been (unknown without a price). */
void attempt_price(const struct task *t, struct attempt *a, enum billed billed,
		   const json_t *usage, int images)
{
	a->provider = t->prov ? t->prov->cfg->name : NULL;
	a->model = t->model;
	struct price_quote q = billed == BILLED_NO ? (struct price_quote){ .known = true }
			       : call_quote(t, usage, images);
	a->cost_known = q.known;
	a->cost = q.amount;
}

void attempt_reserve(struct task *t)
{
	struct price_quote q = call_quote(t, NULL, 0);
	t->reserve = q.amount;
	t->reserve_known = q.known;
	t->reserved = true;
	spend_call_started(&t->d->spend, t->prov->cfg->name, q.amount, spend_day(wall_ms()));
}

/* The call's reservation is released and what it cost is counted. */
void attempt_settle(struct task *t, bool billed, bool known, double cost)
{
	long day = spend_day(wall_ms());
	if (t->reserved)
		spend_call_ended(&t->d->spend, t->prov->cfg->name, t->reserve, day);
	t->reserved = false;
	spend_add(&t->d->spend, t->prov->cfg->name, billed, known, cost, day);
	/* Counted in the ledger before the ticket goes: never out of every host's sight. */
	if (billed && known && provider_state_budgeted(t->prov))
		keyshare_spent(t->d->ks, t->prov->cfg->name, keyshare_micros(cost));
	keyshare_release(t->d->ks, &t->ticket);
}

/* An attempt goes on the job's record, and into the metrics. */
void attempt_record(struct task *t, const struct attempt *a)
{
	record_add_attempt(t->attempts, &t->elided, result_attempt_json(a));
	const char *provider = t->prov ? t->prov->cfg->name : NULL;
	metrics_attempt(provider, a->outcome, a->billed, a->http_status != 0, a->latency_ms);
	if (a->cost_known && a->cost > 0)
		metrics_cost(provider, t->d->cfg->prices.currency, a->cost);
}

/* Attempts made in this run, listed or not: they number the calls (sidecars, the log). */
size_t attempt_count(const struct task *t)
{
	return (size_t)t->elided.attempts + json_array_size(t->attempts);
}

