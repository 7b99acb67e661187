/* test_metrics.c - the exposition: counters by provider and outcome, a cumulative histogram,
 * gauges zeroed between writes, costs by currency, escaping. */
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "util.h"
#include "tap.h"

static bool has(const char *text, const char *line)
{
	char *needle = xasprintf("\n%s\n", line);
	bool found = strstr(text, needle) != NULL;
	free(needle);
	return found;
}

int main(void)
{
	metrics_attempt("a", "succeeded", "yes", true, 4000);
	metrics_attempt("a", "succeeded", "yes", true, 45000);
	metrics_attempt("a", "retry", "unknown", false, 0);
	metrics_attempt("a", "interrupted", "unknown", false, 0);
	metrics_cost("a", "USD", 0.04);
	metrics_cost("a", "USD", 0.04);
	metrics_retry("a");
	metrics_hold("b\"x");
	metrics_finished(true);
	metrics_begin();
	metrics_provider_state("a", 3, false, true);
	metrics_jobs(5, 3, 1, 12.5);
	metrics_outputs(&(struct metrics_outputs){ .uploads = 4, .upload_failures = 3,
		.jobs_waiting_for_store = 2, .webhooks_delivered = 7, .webhook_failures = 6,
		.webhooks_dropped = 1, .hooks_run = 5, .outbox_backlog = 9,
		.webhook_endpoints_gone = 2, .webhooks_parked = 7 });
	char *text = metrics_render();
	const struct { const char *line; } rows[] = {
		{ "imgspool_jobs{state=\"new\"} 5" },
		{ "imgspool_jobs{state=\"deferred\"} 1" },
		{ "imgspool_jobs_finished_total{state=\"done\"} 1" },
		{ "imgspool_oldest_pending_seconds 12.500" },
		{ "imgspool_calls_in_flight{provider=\"a\"} 3" },
		{ "imgspool_calls_total{provider=\"a\",outcome=\"succeeded\"} 2" },
		{ "imgspool_calls_total{provider=\"a\",outcome=\"interrupted\"} 1" },
		{ "imgspool_billed_calls_total{provider=\"a\",billed=\"yes\"} 2" },
		{ "imgspool_billed_calls_total{provider=\"a\",billed=\"unknown\"} 2" },
		{ "imgspool_retries_total{provider=\"a\"} 1" },
		{ "imgspool_provider_holds_total{provider=\"b\\\"x\"} 1" },
		{ "imgspool_provider_paused{provider=\"a\"} 1" },
		{ "imgspool_call_duration_seconds_bucket{provider=\"a\",le=\"1\"} 0" },
		{ "imgspool_call_duration_seconds_bucket{provider=\"a\",le=\"5\"} 1" },
		{ "imgspool_call_duration_seconds_bucket{provider=\"a\",le=\"60\"} 2" },
		{ "imgspool_call_duration_seconds_bucket{provider=\"a\",le=\"+Inf\"} 2" },
		{ "imgspool_call_duration_seconds_sum{provider=\"a\"} 49.000" },
		{ "imgspool_spent_total{provider=\"a\",currency=\"USD\"} 0.080000" },
		{ "imgspool_store_uploads_total 4" },
		{ "imgspool_store_upload_failures_total 3" },
		{ "imgspool_store_waiting_jobs 2" },
		{ "imgspool_webhook_deliveries_total{result=\"delivered\"} 7" },
		{ "imgspool_webhook_deliveries_total{result=\"failed\"} 6" },
		{ "imgspool_webhook_deliveries_total{result=\"dropped\"} 1" },
		{ "imgspool_hooks_run_total 5" },
		{ "imgspool_outbox_backlog 9" },
		{ "imgspool_webhook_endpoints_gone 2" },
		{ "imgspool_webhook_parked 7" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++)
		ok(has(text, rows[i].line), "has %s", rows[i].line);
	free(text);
	metrics_begin();
	text = metrics_render();
	ok(has(text, "imgspool_calls_in_flight{provider=\"a\"} 0") &&
	   has(text, "imgspool_provider_paused{provider=\"a\"} 0"), "gauges are zeroed between writes");
	ok(has(text, "imgspool_calls_total{provider=\"a\",outcome=\"succeeded\"} 2"), "counters are not");
	free(text);
	metrics_reset();
	return tap_done();
}
