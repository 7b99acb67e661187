/* test_route.c - the target chooser row by row (weights, determinism per task id, failover to
 * other weighted targets and fallbacks, waiting, retries avoiding the failed target, cheapest),
 * what a target can serve, and the cooldowns of health.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health.h"
#include "job.h"
#include "retry.h"
#include "route.h"
#include "tap.h"

static struct route_target targets3[] = {
	{ .provider = "a", .model = "main", .weight = 90, .max_refs = -1 },
	{ .provider = "b", .model = "canary", .weight = 10, .max_refs = -1 },
	{ .provider = "c", .model = "backup", .fallback = true, .max_refs = -1 },
};
static struct route_config route3 = { .name = "r", .targets = targets3, .n_targets = 3 };

#define OK_ { .can_serve = true }
#define AT(t) { .can_serve = true, .unavailable_until = (t) }
#define BUSY(t) { .can_serve = true, .busy_until = (t) }
#define NO { .can_serve = false }
#define PRICE(p) { .can_serve = true, .priced = true, .price = (p) }

static int choose(const struct route_config *r, int i, const struct target_view *v, int avoid,
		  struct route_choice *c)
{
	char id[64];
	snprintf(id, sizeof(id), "1764068523.%06d.4242.host.9f1c", i);
	*c = route_choose(r, id, v, avoid);
	return c->verdict == ROUTE_CHOSEN ? c->target : -1;
}

/* How many of n jobs land on each target. */
static void spread(const struct route_config *r, const struct target_view *v, int avoid, int n,
		   int *counts)
{
	struct route_choice c;
	memset(counts, 0, sizeof(int) * 8);
	for (int i = 0; i < n; i++) {
		int t = choose(r, i, v, avoid, &c);
		counts[t < 0 ? 7 : t]++;
	}
}

struct row {
	const char *name;
	struct target_view v[3];
	int avoid;
	enum route_verdict verdict;
	int target;              /* -1: by weight, checked elsewhere */
	int64_t wait_until;
};

static const struct row rows[] = {
	{ "main unavailable: everything to the canary", { AT(-1), OK_, OK_ }, -1, ROUTE_CHOSEN, 1, 0 },
	{ "both weighted unavailable: the fallback", { AT(5000), AT(-1), OK_ }, -1, ROUTE_CHOSEN, 2, 0 },
	{ "all unavailable: wait for the first to come back", { AT(5000), AT(-1), AT(3000) }, -1,
	  ROUTE_WAIT, -1, 3000 },
	{ "all held: wait for an event", { AT(-1), AT(-1), AT(-1) }, -1, ROUTE_WAIT, -1, -1 },
	{ "the canary cannot serve: the main", { OK_, NO, OK_ }, -1, ROUTE_CHOSEN, 0, 0 },
	{ "only the fallback can serve", { NO, NO, OK_ }, -1, ROUTE_CHOSEN, 2, 0 },
	{ "none can serve", { NO, NO, NO }, -1, ROUTE_NONE, -1, 0 },
	{ "the weighted one that can serve is cooling: the fallback", { NO, AT(7000), OK_ }, -1,
	  ROUTE_CHOSEN, 2, 0 },
	{ "the one that can serve is cooling and no fallback serves", { NO, AT(7000), NO }, -1,
	  ROUTE_WAIT, -1, 7000 },
	{ "a retry after the main failed: the canary", { OK_, OK_, OK_ }, 0, ROUTE_CHOSEN, 1, 0 },
	{ "a retry after the canary failed: the main", { OK_, OK_, OK_ }, 1, ROUTE_CHOSEN, 0, 0 },
	{ "a retry, the canary unavailable: the fallback", { OK_, AT(-1), OK_ }, 0, ROUTE_CHOSEN, 2, 0 },
	{ "a retry with nowhere else to go: the same target", { OK_, AT(-1), AT(-1) }, 0,
	  ROUTE_CHOSEN, 0, 0 },
	{ "a retry, the failed one cooling too: wait", { AT(9000), AT(-1), AT(-1) }, 0, ROUTE_WAIT,
	  -1, 9000 },
	{ "a busy fallback is waited for", { AT(-1), AT(-1), BUSY(4000) }, -1, ROUTE_WAIT, -1, 4000 },
};

struct serve_row {
	const char *name;
	struct route_target tg;
	struct job job;
	bool want;
	const char *needle;
};

#define JOB(...) { .output_compression = -1, __VA_ARGS__ }
static char *one_ref[1] = { "refs/a.png" };
static char *three_refs[3] = { "refs/a.png", "refs/b.png", "refs/c.png" };

static struct serve_row serve_rows[] = {
	{ "gemini, plain", { .provider = "p", .model = "gemini-3-pro-image-preview", .max_refs = -1 },
	  JOB(.prompt = "x"), true, NULL },
	{ "gemini, n 2", { .provider = "p", .model = "gemini-3-pro-image-preview", .max_refs = -1 },
	  JOB(.n = 2), false, "one image per call" },
	{ "gemini, a mask", { .provider = "p", .model = "gemini-3-pro-image-preview", .max_refs = -1 },
	  JOB(.refs = { "r.png" }, .n_refs = 1, .mask = "m.png"), false, "takes no mask" },
	{ "gemini, references", { .provider = "p", .model = "gemini-3-pro-image-preview", .max_refs = -1 },
	  JOB(.refs = { "r.png" }, .n_refs = 1), true, NULL },
	{ "gemini, background", { .provider = "p", .model = "gemini-3-pro-image-preview", .max_refs = -1 },
	  JOB(.background = "transparent"), false, "has no \"background\"" },
	{ "gemini, output_format", { .provider = "p", .model = "gemini-3-pro-image-preview", .max_refs = -1 },
	  JOB(.output_format = "webp"), false, "has no \"output_format\"" },
	{ "gemini, quality auto", { .provider = "p", .model = "gemini-3-pro-image-preview", .max_refs = -1 },
	  JOB(.quality = "auto"), true, NULL },
	{ "gemini, quality high", { .provider = "p", .model = "gemini-3-pro-image-preview", .max_refs = -1 },
	  JOB(.quality = "high"), false, "has no \"quality\"" },
	{ "gemini 2.5 flash at 2K", { .provider = "p", .model = "gemini-2.5-flash-image", .max_refs = -1 },
	  JOB(.size = "2048x2048"), false, "1K images only" },
	{ "gemini 2.5 flash at 1K", { .provider = "p", .model = "gemini-2.5-flash-image", .max_refs = -1 },
	  JOB(.size = "1024x1024"), true, NULL },
	{ "openai, n 2", { .provider = "p", .model = "gpt-image-1", .max_refs = -1 }, JOB(.n = 2), true, NULL },
	{ "n= caps images per call", { .provider = "p", .model = "gpt-image-2", .max_n = 1, .max_refs = -1 },
	  JOB(.n = 2), false, "at most 1 image(s) per call" },
	{ "refs=0 takes none", { .provider = "p", .model = "flux-2-pro", .max_refs = 0 },
	  JOB(.n_refs = 1), false, "p/flux-2-pro takes no reference images" },
	{ "refs=0, no references", { .provider = "p", .model = "flux-2-pro", .max_refs = 0 }, JOB(.n = 1),
	  true, NULL },
	{ "refs=2, three references", { .provider = "p", .model = "m", .max_refs = 2 }, JOB(.n_refs = 3),
	  false, "at most 2 reference images" },
	{ "sizes=, another size", { .provider = "p", .model = "m", .max_refs = -1,
	  .sizes = "1024x1024,auto" }, JOB(.size = "1536x1024"), false, "does not make size 1536x1024" },
	{ "sizes=, a listed size", { .provider = "p", .model = "m", .max_refs = -1,
	  .sizes = "1024x1024,auto" }, JOB(.size = "auto"), true, NULL },
	{ "sizes=, no size asked", { .provider = "p", .model = "m", .max_refs = -1, .sizes = "1024x1024" },
	  JOB(.n = 1), true, NULL },
};

static void test_health(void)
{
	struct health h;
	struct health_policy p = { .failures = 3, .cooldown_ms = 30000, .jitter_pct = 20 };
	health_init(&h);
	ok(!health_record(&h, "a", "m", HEALTH_FREE_FAILURE, &p, 1000, 0) &&
	   !health_record(&h, "a", "m", HEALTH_FREE_FAILURE, &p, 1100, 0) &&
	   !health_cooling_until(&h, "a", "m", 1100), "two free failures: still available");
	int64_t until = health_record(&h, "a", "m", HEALTH_FREE_FAILURE, &p, 1200, 0);
	ok(until == 31200 && health_cooling_until(&h, "a", "m", 1300) == 31200,
	   "the third cools it down for 30 s (no jitter drawn)");
	ok(!health_cooling_until(&h, "a", "n", 1300) && !health_cooling_until(&h, "b", "m", 1300),
	   "another model or provider is not cooling");
	ok(!health_record(&h, "a", "m", HEALTH_FREE_FAILURE, &p, 2000, 0) &&
	   health_cooling_until(&h, "a", "m", 2000) == 31200, "a late failure does not lengthen it");
	ok(!health_cooling_until(&h, "a", "m", 31200), "available again when it ends");
	until = health_record(&h, "a", "m", HEALTH_FREE_FAILURE, &p, 32000, UINT64_MAX);
	ok(until >= 62000 && until <= 68000, "one more failure after a cooldown cools it again (%ld)",
	   (long)until);
	health_record(&h, "a", "m", HEALTH_WORKS, &p, 70000, 0);
	ok(!health_cooling_until(&h, "a", "m", 70000) && h.n == 0, "working clears it");
	health_record(&h, "a", "m", HEALTH_FREE_FAILURE, &p, 71000, 0);
	health_record(&h, "a", "m", HEALTH_FREE_FAILURE, &p, 71000, 0);
	health_record(&h, "a", "m", HEALTH_NEUTRAL, &p, 71000, 0);
	ok(health_record(&h, "a", "m", HEALTH_FREE_FAILURE, &p, 71000, 0) > 0,
	   "a timeout in between neither counts nor resets");
	int64_t lo = INT64_MAX, hi = 0;
	for (uint64_t r = 0; r < 2000; r += 7) {
		struct health one;
		health_init(&one);
		struct health_policy p1 = { .failures = 1, .cooldown_ms = 10000, .jitter_pct = 20 };
		int64_t u = health_record(&one, "x", "y", HEALTH_FREE_FAILURE, &p1, 0, r * 0x9e3779b97f4a7c15ULL);
		lo = u < lo ? u : lo;
		hi = u > hi ? u : hi;
		health_release(&one);
	}
	ok(lo >= 10000 && hi <= 12000 && hi - lo > 1000, "jitter: 10 s plus up to 20 %% (%ld..%ld)",
	   (long)lo, (long)hi);
	struct health_policy never = { .failures = 0, .cooldown_ms = 10000 };
	for (int i = 0; i < 10; i++)
		health_record(&h, "n", "m", HEALTH_FREE_FAILURE, &never, 1000, 0);
	ok(!health_cooling_until(&h, "n", "m", 1000), "cooldown_failures 0: never");
	health_release(&h);

	struct { enum decision d; const char *code; enum health_event want; } ev[] = {
		{ DECIDE_SUCCEEDED, NULL, HEALTH_WORKS },
		{ DECIDE_FAIL, "content_refused", HEALTH_WORKS },
		{ DECIDE_FAIL, "invalid_request", HEALTH_WORKS },
		{ DECIDE_RETRY, "upstream_unavailable", HEALTH_FREE_FAILURE },
		{ DECIDE_RETRY, "network", HEALTH_FREE_FAILURE },
		{ DECIDE_RETRY, "rate_limited", HEALTH_NEUTRAL },
		{ DECIDE_RETRY_BILLED, "timeout", HEALTH_NEUTRAL },
		{ DECIDE_HOLD, "quota_exhausted", HEALTH_NEUTRAL },
	};
	for (size_t i = 0; i < sizeof(ev) / sizeof(ev[0]); i++) {
		struct outcome o = { .decision = ev[i].d, .code = ev[i].code };
		ok(health_event_of(&o) == ev[i].want, "health of %s %s", decision_name(ev[i].d),
		   ev[i].code ? ev[i].code : "");
	}
}

int main(void)
{
	int counts[8];
	struct route_choice c;
	struct target_view all_ok[3] = { OK_, OK_, OK_ };
	spread(&route3, all_ok, -1, 10000, counts);
	ok(counts[1] >= 900 && counts[1] <= 1100 && counts[0] + counts[1] == 10000 && !counts[2],
	   "weights 90/10: %d of 10000 on the canary, none on the fallback", counts[1]);
	int first[2000];
	for (int i = 0; i < 2000; i++)
		first[i] = choose(&route3, i, all_ok, -1, &c);
	struct target_view fb_down[3] = { OK_, OK_, AT(-1) };
	int same = 0, moved_off_main = 0;
	for (int i = 0; i < 2000; i++)
		same += choose(&route3, i, all_ok, -1, &c) == first[i] &&
			choose(&route3, i, fb_down, -1, &c) == first[i];
	ok(same == 2000, "the same id gets the same target, whatever an unrelated target does");
	struct target_view canary_down[3] = { OK_, AT(60000), OK_ };
	for (int i = 0; i < 2000; i++)
		moved_off_main += first[i] == 0 && choose(&route3, i, canary_down, -1, &c) != 0;
	spread(&route3, canary_down, -1, 2000, counts);
	ok(counts[0] == 2000 && !moved_off_main, "the canary unavailable: its jobs to the main, the "
	   "main's stay");

	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct route_choice got = route_choose(&route3, "some.task", r->v, r->avoid);
		ok(got.verdict == r->verdict && (r->verdict != ROUTE_CHOSEN || got.target == r->target) &&
		   (r->verdict != ROUTE_WAIT || got.wait_until == r->wait_until),
		   "%s (got verdict %d, target %d, wait %ld)", r->name, got.verdict, got.target,
		   (long)got.wait_until);
	}
	/* A busy main is waited for by the jobs it was picked for: no spill onto the canary. */
	struct target_view main_busy[3] = { BUSY(-1), OK_, OK_ };
	spread(&route3, main_busy, -1, 2000, counts);
	ok(counts[1] + counts[7] == 2000 && counts[1] > 100 && counts[1] < 300,
	   "main busy: its jobs wait (%d), the canary's run (%d)", counts[7], counts[1]);

	/* Three weights: the unavailable one's share spreads by weight; the others' jobs stay. */
	struct route_target t3[] = {
		{ .provider = "a", .model = "m", .weight = 50, .max_refs = -1 },
		{ .provider = "b", .model = "m", .weight = 30, .max_refs = -1 },
		{ .provider = "c", .model = "m", .weight = 20, .max_refs = -1 },
	};
	struct route_config abc = { .name = "abc", .targets = t3, .n_targets = 3 };
	spread(&abc, all_ok, -1, 10000, counts);
	ok(abs(counts[0] - 5000) < 300 && abs(counts[1] - 3000) < 300 && abs(counts[2] - 2000) < 300,
	   "weights 50/30/20: %d/%d/%d", counts[0], counts[1], counts[2]);
	struct target_view a_down[3] = { AT(-1), OK_, OK_ };
	int stayed = 0, was = 0;
	for (int i = 0; i < 10000; i++) {
		int before = choose(&abc, i, all_ok, -1, &c);
		if (before == 0)
			continue;
		was++;
		stayed += choose(&abc, i, a_down, -1, &c) == before;
	}
	spread(&abc, a_down, -1, 10000, counts);
	ok(stayed == was && abs(counts[1] - 6000) < 300 && abs(counts[2] - 4000) < 300,
	   "a unavailable: b %d, c %d; b's and c's own jobs stay", counts[1], counts[2]);

	/* Cheapest. */
	struct route_config cheap = route3;
	cheap.cheapest = true;
	struct { const char *name; struct target_view v[3]; int avoid; enum route_verdict verdict;
		 int target; } crows[] = {
		{ "the cheapest weighted target", { PRICE(0.04), PRICE(0.03), PRICE(0.01) }, -1, ROUTE_CHOSEN, 1 },
		{ "the cheapest is busy: the next", { PRICE(0.04), { .can_serve = true, .priced = true,
		  .price = 0.03, .busy_until = -1 }, PRICE(0.01) }, -1, ROUTE_CHOSEN, 0 },
		{ "the cheapest is unavailable: the next", { PRICE(0.04), { .can_serve = true, .priced = true,
		  .price = 0.03, .unavailable_until = -1 }, PRICE(0.01) }, -1, ROUTE_CHOSEN, 0 },
		{ "priced before unpriced", { PRICE(0.5), OK_, OK_ }, -1, ROUTE_CHOSEN, 0 },
		{ "unpriced ties: file order", { OK_, OK_, OK_ }, -1, ROUTE_CHOSEN, 0 },
		{ "all busy: wait", { BUSY(2000), BUSY(1000), OK_ }, -1, ROUTE_WAIT, -1 },
		{ "all unavailable: the fallback", { AT(-1), AT(-1), PRICE(9) }, -1, ROUTE_CHOSEN, 2 },
		{ "a retry avoids the failed one", { PRICE(0.04), PRICE(0.03), OK_ }, 1, ROUTE_CHOSEN, 0 },
		{ "the cheapest cannot serve", { PRICE(0.04), { .can_serve = false, .priced = true,
		  .price = 0.01 }, OK_ }, -1, ROUTE_CHOSEN, 0 },
	};
	for (size_t i = 0; i < sizeof(crows) / sizeof(crows[0]); i++) {
		struct route_choice got = route_choose(&cheap, "t", crows[i].v, crows[i].avoid);
		ok(got.verdict == crows[i].verdict && (got.verdict != ROUTE_CHOSEN || got.target == crows[i].target),
		   "cheapest: %s (got %d, target %d)", crows[i].name, got.verdict, got.target);
	}
	struct route_choice w = route_choose(&cheap, "t", crows[5].v, -1);
	ok(w.wait_until == 1000, "cheapest, all busy: wait for the first room (%ld)", (long)w.wait_until);

	for (size_t i = 0; i < sizeof(serve_rows) / sizeof(serve_rows[0]); i++) {
		struct serve_row *r = &serve_rows[i];
		char why[256] = "";
		if (r->job.n_refs == 1 && !r->job.refs[0])
			r->job.refs[0] = one_ref[0];
		if (r->job.n_refs == 3)
			memcpy(r->job.refs, three_refs, sizeof(three_refs));
		bool got = route_can_serve(&r->tg, &r->job, why, sizeof(why));
		ok(got == r->want && (r->want || strstr(why, r->needle)), "can serve: %s (%s)", r->name, why);
	}
	ok(route_hash("a", 0) != route_hash("a", 1) && route_hash("a", 0) == route_hash("a", 0),
	   "the hash is a function of the id and the salt");
	test_health();
	return tap_done();
}
