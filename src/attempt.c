/* attempt.c - the bookkeeping of a task's calls: what a call costs (price.c, from the [prices]
 * table), its reservation in the spend while it is in flight and what it cost once settled
 * (spend.c, and the shared ledger under a budget), and its entry in the job's records and in
 * the metrics. An answer is judged (classified, priced, recorded, logged) on the helper thread
 * that parsed it; what that changes beyond the task is done back on the loop.
 *
 * Nothing here fails: a call without a price is counted as of unknown cost. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "attempt.h"
#include "dispatch_impl.h"
#include "http.h"
#include "iopool.h"
#include "log.h"
#include "metrics.h"
#include "price.h"
#include "provider_state.h"
#include "routing.h"
#include "task.h"
#include "banned.h"

static struct price_quote quote(const struct config *cfg, const struct job *job,
				const char *model, const json_t *usage, int images)
{
	struct price_call c = { .model = model, .size = job->size, .quality = job->quality,
				.images = images > 0 ? images : job->n, .usage = usage };
	return price_call(&cfg->prices, &c);
}

/* What a call for job to model costs if billed; images 0 means as many as the job asked for. */
struct price_quote attempt_quote(const struct dispatch *d, const struct job *job,
				 const char *model, const json_t *usage, int images)
{
	return quote(d->cfg, job, model, usage, images);
}

static struct price_quote call_quote(const struct task *t, const json_t *usage, int images)
{
	return attempt_quote(t->d, &t->job, t->model, usage, images);
}

/* Prices the attempt by cfg's table: 0 when it was not billed, its price when it was or may
 * have been (unknown without a price). */
static void price_by(const struct config *cfg, const struct task *t, struct attempt *a,
		     enum billed billed, const json_t *usage, int images)
{
	struct price_quote q = billed == BILLED_NO ? (struct price_quote){ .known = true }
			       : quote(cfg, &t->job, t->model, usage, images);
	a->cost_known = q.known;
	a->cost = q.amount;
}

/* Names the call's target in its attempt and prices it. */
void attempt_price(const struct task *t, struct attempt *a, enum billed billed,
		   const json_t *usage, int images)
{
	a->provider = t->prov ? provider_state_name(t->prov) : NULL;
	a->model = t->model;
	price_by(t->d->cfg, t, a, billed, usage, images);
}

void attempt_reserve(struct task *t)
{
	struct price_quote q = call_quote(t, NULL, 0);
	t->reserve = q.amount;
	t->reserve_known = q.known;
	t->reserved = true;
	spend_call_started(&t->d->spend, provider_state_name(t->prov), q.amount, spend_day(wall_ms()));
}

/* The call's reservation is released and what it cost is counted. */
void attempt_settle(struct task *t, bool billed, bool known, double cost)
{
	long day = spend_day(wall_ms());
	if (t->reserved)
		spend_call_ended(&t->d->spend, provider_state_name(t->prov), t->reserve, day);
	t->reserved = false;
	spend_add(&t->d->spend, provider_state_name(t->prov), billed, known, cost, day);
	if (billed && known && provider_state_budgeted(t->prov) && !t->cost_in_ledger)
		t->ledger_gen = t->records_after_gen =
			keyshare_spent(t->d->ks, provider_state_name(t->prov), keyshare_micros(cost));
	t->cost_in_ledger = false;
	/* In the ledger file before the ticket goes: never out of every host's sight. A failed
	 * write keeps the ticket (its reservation) until a later one takes the cost. */
	if (!keyshare_release_spent(t->d->ks, &t->ticket, t->ledger_gen))
		log_job(LOG_WARN, t->id, "its cost is not in the ledger yet: its ticket stays in calls/ "
			"until a write of the ledger takes it");
	t->ledger_gen = 0;
}

/* cfg: the configuration whose prices priced the attempt (a reload may have swapped d->cfg). */
static void count_in_metrics(const struct config *cfg, const struct attempt *a)
{
	metrics_attempt(a->provider, a->outcome, a->billed, a->http_status != 0, a->latency_ms);
	if (a->cost_known && a->cost > 0)
		metrics_cost(a->provider, cfg->prices.currency, a->cost);
}

/* An attempt goes on the job's record, and into the metrics. */
void attempt_record(struct task *t, const struct attempt *a)
{
	record_add_attempt(t->attempts, &t->elided, result_attempt_json(a));
	count_in_metrics(t->d->cfg, a);
}

/* An answer is judged on a helper thread, after its parse (attempt_judge). What that reads of
 * the task's surroundings is taken here, on the loop: the provider's name (its section lives
 * in d->cfg, or in the configuration a retired provider keeps while it has jobs), and a
 * reference to the configuration for its prices (a reload may swap d->cfg meanwhile). */
void attempt_judge_begin(struct task *t)
{
	t->cur.provider = t->prov ? provider_state_name(t->prov) : NULL;
	t->cur.model = t->model;
	t->judge_cfg = config_ref(t->d->cfg);
	t->judge_budgeted = t->prov && provider_state_budgeted(t->prov);
	if (t->judge_budgeted)
		keyshare_today(t->d->ks, &t->judge_day, &t->judge_month);
}

/* On a helper thread, the parsed answer of t's call: its outcome, its price, its entry in the
 * job's records and its log line. Touches the task and the configuration held for it only. */
void attempt_judge(struct task *t)
{
	struct classify_input in = {
		.transport = t->res.transport,
		.status = t->res.status,
		.retry_after = t->res.retry_after,
		.retry_after_ms = t->res.retry_after_ms,
		.resp = &t->resp,
		.now_wall_ms = wall_ms(),
	};
	if (t->recovered_parse)
		stop_point("recovery:judge");
	retry_classify(&in, &t->outcome);
	struct attempt *a = &t->cur;
	a->outcome = decision_name(t->outcome.decision);
	a->billed = billed_name(t->outcome.billed);
	a->error_code = t->outcome.code;
	price_by(t->judge_cfg, t, a, t->outcome.billed, t->resp.usage,
		 (int)(t->resp.n_images + t->resp.n_urls));
	record_add_attempt(t->attempts, &t->elided, result_attempt_json(a));
	log_job(LOG_INFO, t->id, "attempt %zu: HTTP %ld (%s) in %" PRId64 " ms: %s%s%s",
		attempt_count(t), t->res.status, http_transport_name(t->res.transport),
		t->res.latency_ms, a->outcome, t->outcome.code ? " " : "",
		t->outcome.code ? t->outcome.code : "");
}

/* On the helper thread, after a batch of answers was judged: the costs of those billed (or
 * maybe billed) under a budget go into the ledger in one durable write, before anything on the
 * loop acts on the answers (so before their tickets go, and before their jobs are published or
 * called again). The loop was kept waiting for each such write before. A job dropped on the
 * loop afterwards (lost to another daemon) stays counted: its reclaimer counts it again, which
 * may overstate the spend, never understate it. */
void attempt_bill(void **tasks, size_t n)
{
	struct keyshare_spend *spends = xcalloc(n ? n : 1, sizeof(*spends));
	struct keyshare *ks = NULL;
	size_t m = 0;
	long day = 0, month = 0;
	for (size_t i = 0; i < n; i++) {
		struct task *t = tasks[i];
		if (!t->judge_budgeted || t->outcome.billed == BILLED_NO || !t->cur.cost_known ||
		    keyshare_micros(t->cur.cost) <= 0)
			continue;
		ks = t->d->ks;
		spends[m++] = (struct keyshare_spend){ .provider = t->cur.provider,
						       .amount = keyshare_micros(t->cur.cost) };
		day = t->judge_day > day ? t->judge_day : day;
		month = t->judge_month > month ? t->judge_month : month;
		t->cost_in_ledger = true;
	}
	unsigned long gen = m ? keyshare_spent_batch(ks, spends, m, day, month) : 0;
	for (size_t i = 0; i < n; i++) {
		struct task *t = tasks[i];
		if (t->cost_in_ledger)
			t->ledger_gen = gen;
	}
	if (m)
		crash_point("ledger:written");
	free(spends);
}

static void cut_bill_work(void *arg)
{
	void *one[1] = { arg };
	attempt_bill(one, 1);
}

static void cut_bill_done(void *arg)
{
	struct task *t = arg;
	t->in_pool = false;
	attempt_settle(t, true, t->cur.cost_known, t->cur.cost);   /* the ledger holds it */
	t->after_cut_bill(t);
}

/* At the cut, a call billed or maybe billed (a lost answer, a call cut in flight) is settled,
 * then next(t) runs on the loop. Its cost goes into the ledger, under a budget, by a helper
 * (attempt_bill) as every judged answer's does: the loop never makes that durable write itself,
 * which a stalled disk would hold until exitwatch ended the process. A helper stuck there is
 * left at the exit's bounded wait, its job as a crash leaves it: its restart counts the call
 * (recovery.c), which this run never wrote. */
void attempt_settle_at_cut(struct task *t, enum billed billed, bool known, double cost,
			   void (*next)(struct task *t))
{
	bool ledger = billed != BILLED_NO && known && keyshare_micros(cost) > 0 && t->prov &&
		      provider_state_budgeted(t->prov);
	if (!ledger) {
		attempt_settle(t, billed != BILLED_NO, known, cost);
		next(t);
		return;
	}
	t->outcome.billed = billed;
	t->cur.cost = cost;
	t->cur.cost_known = known;
	t->cur.provider = provider_state_name(t->prov);
	t->judge_budgeted = true;
	keyshare_today(t->d->ks, &t->judge_day, &t->judge_month);
	t->after_cut_bill = next;
	task_pool_submit(t, cut_bill_work, cut_bill_done);
}

static void ledger_then_work(void *arg)
{
	struct task *t = arg;
	keyshare_write(t->d->ks);
}

static void ledger_then_done(void *arg)
{
	struct task *t = arg;
	t->in_pool = false;
	t->records_after_gen = 0;
	keyshare_write_done(t->d->ks);
	t->after_cut_bill(t);
}

/* next(t) on the loop once the ledger has what the loop counted of t's calls
 * (records_after_gen): a helper writes it first, as at the cut, so that the job's records,
 * which say the call is counted, never leave running/ before the ledger has it (a kill
 * between would lose it), and the loop never waits for that write. A write that fails goes
 * on too: the cost stays in this host's figures, written at a later try. */
void attempt_after_ledger(struct task *t, void (*next)(struct task *t))
{
	if (!t->records_after_gen || keyshare_written(t->d->ks, t->records_after_gen)) {
		next(t);
		return;
	}
	t->state = T_PARSING;   /* no call of its is in flight for the cut: as a judgement's */
	t->after_cut_bill = next;
	task_pool_submit(t, ledger_then_work, ledger_then_done);
}

/* The daemon's writer of the ledger (keyshare_set_writer): a helper writes, the loop then
 * releases the tickets kept for what it wrote. */
static void ledger_work(void *arg)
{
	keyshare_write(arg);
}

static void ledger_done(void *arg)
{
	keyshare_write_done(arg);
}

static void ledger_wanted(void *arg)
{
	struct dispatch *d = arg;
	iopool_submit(d->pool, ledger_work, ledger_done, d->ks);
}

/* Until the pool stops: then (the exit) the loop writes the ledger itself, once. */
void attempt_ledger_writer(struct dispatch *d, bool on)
{
	keyshare_set_writer(d->ks, on ? ledger_wanted : NULL, d);
}

/* Back on the loop: unless dropped, the judged attempt counts in the routes' health, the spend
 * and the metrics; then the configuration is let go, and the attempt names the provider's
 * section as it is now. */
void attempt_judged(struct task *t, bool counted)
{
	if (counted) {
		routing_record_health(t);
		attempt_settle(t, t->outcome.billed != BILLED_NO, t->cur.cost_known, t->cur.cost);
		count_in_metrics(t->judge_cfg, &t->cur);
	}
	t->cost_in_ledger = false;
	t->ledger_gen = 0;
	config_unref(t->judge_cfg);
	t->judge_cfg = NULL;
	t->cur.provider = t->prov ? provider_state_name(t->prov) : NULL;
}

/* Attempts made in this run, listed or not: they number the calls (sidecars, the log). */
size_t attempt_count(const struct task *t)
{
	return (size_t)t->elided.attempts + json_array_size(t->attempts);
}

