/* metrics.c - what an operator alerts on, as a Prometheus text file.
 *
 * The daemon does not serve HTTP: node_exporter's textfile collector reads PATH (which must end
 * in .prom) every scrape, so the daemon rewrites it every [metrics] interval seconds, whole,
 * under a temporary name in the same directory, then renames it over the old one: a scrape sees
 * one complete file or the previous one. Samples carry no timestamps (the collector refuses
 * them). Counters start at 0 with the process, as Prometheus expects of a restart.
 *
 * Failures to write are reported to the caller, which logs them; nothing here can stop the
 * daemon. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics.h"
#include "util.h"
#include "banned.h"

static const char *const outcomes[] = { "succeeded", "retry", "failed", "hold", "interrupted" };
#define N_OUTCOMES ARRAY_SIZE(outcomes)
/* Calls last 10-600 s upstream; the buckets resolve that range. */
static const double latency_buckets[] = { 1, 5, 10, 20, 30, 60, 90, 120, 180, 300, 600, 900, 1800 };
#define N_BUCKETS ARRAY_SIZE(latency_buckets)

struct cost {
	char *currency;
	double amount;
};

struct provider_metrics {
	char *name;
	unsigned long calls[N_OUTCOMES];
	unsigned long billed_yes, billed_unknown;
	unsigned long retries, holds, pauses;
	unsigned long latency_counts[N_BUCKETS];   /* not cumulative; summed when written */
	unsigned long latency_n;
	double latency_sum;
	struct cost *costs;
	size_t n_costs;
	long in_flight;          /* gauges */
	bool held, paused, over_budget;
};

static struct {
	struct provider_metrics *providers;
	size_t n_providers;
	unsigned long finished_done, finished_failed;
	long jobs_new, jobs_running, jobs_deferred;
	double oldest_pending_s;
	struct metrics_outputs outputs;
} m;

static struct provider_metrics *provider(const char *name)
{
	if (!name)
		name = "";
	for (size_t i = 0; i < m.n_providers; i++)
		if (!strcmp(m.providers[i].name, name))
			return &m.providers[i];
	m.providers = xrealloc(m.providers, (m.n_providers + 1) * sizeof(*m.providers));
	struct provider_metrics *p = &m.providers[m.n_providers++];
	memset(p, 0, sizeof(*p));
	p->name = xstrdup(name);
	return p;
}

void metrics_attempt(const char *name, const char *outcome, const char *billed, bool answered,
		     int64_t latency_ms)
{
	struct provider_metrics *p = provider(name);
	for (size_t i = 0; outcome && i < N_OUTCOMES; i++)
		if (!strcmp(outcome, outcomes[i]))
			p->calls[i]++;
	if (billed && !strcmp(billed, "yes"))
		p->billed_yes++;
	else if (billed && !strcmp(billed, "unknown"))
		p->billed_unknown++;
	if (!answered)
		return;
	double s = (double)latency_ms / 1000.0;
	p->latency_n++;
	p->latency_sum += s;
	for (size_t i = 0; i < N_BUCKETS; i++)
		if (s <= latency_buckets[i]) {
			p->latency_counts[i]++;
			break;
		}
}

void metrics_cost(const char *name, const char *currency, double amount)
{
	struct provider_metrics *p = provider(name);
	for (size_t i = 0; i < p->n_costs; i++)
		if (!strcmp(p->costs[i].currency, currency)) {
			p->costs[i].amount += amount;
			return;
		}
	p->costs = xrealloc(p->costs, (p->n_costs + 1) * sizeof(*p->costs));
	p->costs[p->n_costs++] = (struct cost){ .currency = xstrdup(currency), .amount = amount };
}

void metrics_retry(const char *name)
{
	provider(name)->retries++;
}

void metrics_hold(const char *name)
{
	provider(name)->holds++;
}

void metrics_pause(const char *name)
{
	provider(name)->pauses++;
}

void metrics_finished(bool succeeded)
{
	if (succeeded)
		m.finished_done++;
	else
		m.finished_failed++;
}

void metrics_begin(void)
{
	for (size_t i = 0; i < m.n_providers; i++) {
		m.providers[i].in_flight = 0;
		m.providers[i].held = m.providers[i].paused = m.providers[i].over_budget = false;
	}
}

void metrics_provider_state(const char *name, long in_flight, bool held, bool paused)
{
	struct provider_metrics *p = provider(name);
	p->in_flight += in_flight;
	p->held |= held;
	p->paused |= paused;
}

void metrics_outputs(const struct metrics_outputs *o)
{
	m.outputs = *o;
}

void metrics_provider_over_budget(const char *name, bool over)
{
	provider(name)->over_budget |= over;
}

void metrics_jobs(long new_jobs, long running, long deferred, double oldest_pending_s)
{
	m.jobs_new = new_jobs;
	m.jobs_running = running;
	m.jobs_deferred = deferred;
	m.oldest_pending_s = oldest_pending_s;
}

/* Label values are provider names and currencies ([A-Za-z0-9._-]); escape anyway. */
static void label(struct buf *b, const char *value)
{
	for (const char *c = value; *c; c++) {
		if (*c == '\\' || *c == '"')
			buf_append(b, "\\", 1);
		if (*c == '\n')
			buf_append(b, "\\n", 2);
		else
			buf_append(b, c, 1);
	}
}

__attribute__((format(printf, 2, 3)))
static void put(struct buf *b, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n > 0)
		buf_append(b, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
}

static void head(struct buf *b, const char *name, const char *type, const char *help)
{
	put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{provider="P"<extra>} */
static void sample_start(struct buf *b, const char *name, const char *prov)
{
	put(b, "%s{provider=\"", name);
	label(b, prov);
	buf_append(b, "\"", 1);
}

enum field_kind { F_ULONG, F_LONG, F_BOOL };

/* A metric with one sample per provider, from one field of struct provider_metrics. */
struct field_metric {
	const char *name, *type, *help;
	size_t offset;
	enum field_kind kind;
};

#define FIELD(field) offsetof(struct provider_metrics, field)

static const struct field_metric in_flight_metric = {
	"imgspool_calls_in_flight", "gauge", "Upstream calls in flight, by provider.",
	FIELD(in_flight), F_LONG,
};

/* Written after the calls, in this order. */
static const struct field_metric field_metrics[] = {
	{ "imgspool_retries_total", "counter", "Retries scheduled, by provider.", FIELD(retries),
	  F_ULONG },
	{ "imgspool_provider_holds_total", "counter",
	  "Times a provider went on hold (key refused, balance exhausted, no key).", FIELD(holds),
	  F_ULONG },
	{ "imgspool_provider_pauses_total", "counter", "Times a provider was paused by a 429.",
	  FIELD(pauses), F_ULONG },
	{ "imgspool_provider_held", "gauge", "1 while a provider is on hold.", FIELD(held), F_BOOL },
	{ "imgspool_provider_paused", "gauge", "1 while a provider is paused.", FIELD(paused), F_BOOL },
	{ "imgspool_provider_over_budget", "gauge",
	  "1 while a call to a provider would pass a spend budget (all hosts' spend).",
	  FIELD(over_budget), F_BOOL },
};

static void per_provider(struct buf *b, const struct field_metric *f)
{
	head(b, f->name, f->type, f->help);
	for (size_t i = 0; i < m.n_providers; i++) {
		const char *field = (const char *)&m.providers[i] + f->offset;
		sample_start(b, f->name, m.providers[i].name);
		if (f->kind == F_ULONG)
			put(b, "} %lu\n", *(const unsigned long *)field);
		else if (f->kind == F_LONG)
			put(b, "} %ld\n", *(const long *)field);
		else
			put(b, "} %d\n", *(const bool *)field);
	}
}

char *metrics_render(void)
{
	struct buf b;
	buf_init(&b, 16u << 20);
	head(&b, "imgspool_jobs", "gauge",
	     "Jobs in the spool by state directory, all hosts: this daemon's moves at once, "
	     "other hosts' as of its last rescan.");
	put(&b, "imgspool_jobs{state=\"new\"} %ld\n", m.jobs_new);
	put(&b, "imgspool_jobs{state=\"running\"} %ld\n", m.jobs_running);
	put(&b, "imgspool_jobs{state=\"deferred\"} %ld\n", m.jobs_deferred);
	head(&b, "imgspool_jobs_finished_total", "counter",
	     "Jobs this daemon published, by the directory they went to.");
	put(&b, "imgspool_jobs_finished_total{state=\"done\"} %lu\n", m.finished_done);
	put(&b, "imgspool_jobs_finished_total{state=\"failed\"} %lu\n", m.finished_failed);
	head(&b, "imgspool_oldest_pending_seconds", "gauge",
	     "Age of the oldest job waiting in new/ (0 when none).");
	put(&b, "imgspool_oldest_pending_seconds %.3f\n", m.oldest_pending_s);

	const struct metrics_outputs *o = &m.outputs;
	head(&b, "imgspool_store_uploads_total", "counter", "Images stored in the object store.");
	put(&b, "imgspool_store_uploads_total %lu\n", o->uploads);
	head(&b, "imgspool_store_upload_failures_total", "counter",
	     "Uploads to the object store that failed (each is retried; the job waits in running/).");
	put(&b, "imgspool_store_upload_failures_total %lu\n", o->upload_failures);
	head(&b, "imgspool_store_waiting_jobs", "gauge",
	     "Succeeded jobs waiting in running/ until the store takes their images.");
	put(&b, "imgspool_store_waiting_jobs %ld\n", o->jobs_waiting_for_store);
	head(&b, "imgspool_webhook_deliveries_total", "counter",
	     "Webhook delivery attempts by result (failed ones, a 410 too, are retried; dropped: given up).");
	put(&b, "imgspool_webhook_deliveries_total{result=\"delivered\"} %lu\n", o->webhooks_delivered);
	put(&b, "imgspool_webhook_deliveries_total{result=\"failed\"} %lu\n", o->webhook_failures);
	put(&b, "imgspool_webhook_deliveries_total{result=\"dropped\"} %lu\n", o->webhooks_dropped);
	head(&b, "imgspool_hooks_run_total", "counter", "Completion hooks run.");
	put(&b, "imgspool_hooks_run_total %lu\n", o->hooks_run);
	head(&b, "imgspool_outbox_backlog", "gauge",
	     "Events in outbox/ to be delivered (all hosts; not the end events a reclaimer holds).");
	put(&b, "imgspool_outbox_backlog %ld\n", o->outbox_backlog);
	head(&b, "imgspool_webhook_endpoints_gone", "gauge",
	     "Webhook endpoints that answered 410 Gone: sent nothing until enabled again (control/gone.*).");
	put(&b, "imgspool_webhook_endpoints_gone %ld\n", o->webhook_endpoints_gone);
	head(&b, "imgspool_webhook_parked", "gauge",
	     "This daemon's webhook events waiting for such an endpoint to be enabled again.");
	put(&b, "imgspool_webhook_parked %ld\n", o->webhooks_parked);

	per_provider(&b, &in_flight_metric);
	head(&b, "imgspool_calls_total", "counter",
	     "Upstream calls on record, by provider and outcome (interrupted: cut by a stop or a crash).");
	for (size_t i = 0; i < m.n_providers; i++)
		for (size_t k = 0; k < N_OUTCOMES; k++) {
			sample_start(&b, "imgspool_calls_total", m.providers[i].name);
			put(&b, ",outcome=\"%s\"} %lu\n", outcomes[k], m.providers[i].calls[k]);
		}
	head(&b, "imgspool_billed_calls_total", "counter",
	     "Calls that were billed (yes) or may have been (unknown), by provider.");
	for (size_t i = 0; i < m.n_providers; i++) {
		sample_start(&b, "imgspool_billed_calls_total", m.providers[i].name);
		put(&b, ",billed=\"yes\"} %lu\n", m.providers[i].billed_yes);
		sample_start(&b, "imgspool_billed_calls_total", m.providers[i].name);
		put(&b, ",billed=\"unknown\"} %lu\n", m.providers[i].billed_unknown);
	}
	for (size_t i = 0; i < ARRAY_SIZE(field_metrics); i++)
		per_provider(&b, &field_metrics[i]);
	head(&b, "imgspool_call_duration_seconds", "histogram",
	     "Time from sending a call to its complete answer, by provider.");
	for (size_t i = 0; i < m.n_providers; i++) {
		const struct provider_metrics *p = &m.providers[i];
		unsigned long cumulative = 0;
		for (size_t k = 0; k < N_BUCKETS; k++) {
			cumulative += p->latency_counts[k];
			sample_start(&b, "imgspool_call_duration_seconds_bucket", p->name);
			put(&b, ",le=\"%g\"} %lu\n", latency_buckets[k], cumulative);
		}
		sample_start(&b, "imgspool_call_duration_seconds_bucket", p->name);
		put(&b, ",le=\"+Inf\"} %lu\n", p->latency_n);
		sample_start(&b, "imgspool_call_duration_seconds_sum", p->name);
		put(&b, "} %.3f\n", p->latency_sum);
		sample_start(&b, "imgspool_call_duration_seconds_count", p->name);
		put(&b, "} %lu\n", p->latency_n);
	}
	head(&b, "imgspool_spent_total", "counter",
	     "Money the calls cost at the [prices] of the configuration, by provider and currency.");
	for (size_t i = 0; i < m.n_providers; i++)
		for (size_t k = 0; k < m.providers[i].n_costs; k++) {
			sample_start(&b, "imgspool_spent_total", m.providers[i].name);
			buf_append(&b, ",currency=\"", 11);
			label(&b, m.providers[i].costs[k].currency);
			put(&b, "\"} %.6f\n", m.providers[i].costs[k].amount);
		}
	size_t len;
	return buf_detach(&b, &len);
}

int metrics_write(const char *path)
{
	char *text = metrics_render();
	char *tmp = xasprintf("%s.%ld.tmp", path, (long)getpid());
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0644);
	int rc = -1;
	if (fd >= 0) {
		rc = write_all(fd, text, strlen(text));
		if (close(fd) < 0)
			rc = -1;
		if (rc == 0)
			rc = rename(tmp, path);
		if (rc < 0) {
			int saved = errno;
			unlink(tmp);
			errno = saved;
		}
	}
	free(tmp);
	free(text);
	return rc;
}

void metrics_reset(void)
{
	for (size_t i = 0; i < m.n_providers; i++) {
		for (size_t k = 0; k < m.providers[i].n_costs; k++)
			free(m.providers[i].costs[k].currency);
		free(m.providers[i].costs);
		free(m.providers[i].name);
	}
	free(m.providers);
	memset(&m, 0, sizeof(m));
}
