/* test_slots.c - slots_some_provider_may_claim: whether some provider would take a job now (the
 * claim room's check, with a call slot free or not, and the pump's, which asks of the providers
 * alone), and when none would, when the first of them may. */
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "dispatch_impl.h"
#include "loop.h"
#include "provider_state.h"
#include "slots.h"
#include "util.h"
#include "tap.h"

#define MAX_P 3

enum state {
	NONE,                    /* no such provider */
	FREE,                    /* a call may start */
	RATED,                   /* rpm 1, one call started: blocked until its window ends */
	FULL,                    /* concurrency 1, one call in flight: until a call ends */
	HELD,                    /* no key: until SIGHUP */
	PAUSED,                  /* paused by an operator (control/): until the file goes */
};

struct row {
	const char *name;
	enum state st[MAX_P];
	bool slot_free;
	bool want;
	int earliest_s;          /* seconds after now *earliest is, 0 for 0 */
};

/* Provider i's rate window is 10 * (i + 1) seconds: a RATED one is blocked that long. */
static const struct row rows[] = {
	{ "one free provider, a slot free", { FREE }, true, true, 0 },
	{ "one free provider, no slot free", { FREE }, false, false, 0 },
	{ "a free provider after a rated one", { RATED, FREE }, true, true, 0 },
	{ "rated only: the window's end", { RATED }, true, false, 10 },
	{ "rated, no slot: the same", { RATED }, false, false, 10 },
	{ "the earliest of two windows", { FULL, RATED, RATED }, true, false, 20 },
	{ "full, held and paused: only an event", { FULL, HELD, PAUSED }, true, false, 0 },
	{ "held then rated", { HELD, PAUSED, RATED }, true, false, 30 },
	{ "a free one behind held and full", { HELD, FULL, FREE }, true, true, 0 },
	{ "a free one behind held and full, no slot", { HELD, FULL, FREE }, false, false, 0 },
	{ "no provider", { NONE }, true, false, 0 },
};

static void run(const struct row *r)
{
	static char names[MAX_P][8];
	struct config cfg = { .concurrency = 4, .hold_probe_interval = 60 };
	struct provider_config pcfg[MAX_P];
	struct loop *loop = loop_new();
	struct dispatch d = { .loop = loop, .cfg = &cfg, .slots = slots_new(loop) };
	strset_init(&d.control.paused);
	int64_t now = mono_ms();
	for (int i = 0; i < MAX_P && r->st[i] != NONE; i++) {
		xsnprintf(names[i], sizeof(names[i]), "p%d", i);
		pcfg[i] = (struct provider_config){ .name = names[i], .rate_window = 10 * (i + 1),
						    .api_key = r->st[i] == HELD ? NULL : "sk-test" };
		if (r->st[i] == HELD)
			xsnprintf(pcfg[i].key_problem, sizeof(pcfg[i].key_problem), "no key");
		if (r->st[i] == RATED)
			pcfg[i].rpm = 1;
		if (r->st[i] == FULL)
			pcfg[i].concurrency = 1;
		struct provider_state *p = provider_state_new(&d, &pcfg[i]);
		if (r->st[i] == RATED || r->st[i] == FULL)
			provider_state_call_started(p, now);
		if (r->st[i] == PAUSED)
			strset_add(&d.control.paused, names[i]);
	}
	int64_t earliest = -7;
	bool got = slots_some_provider_may_claim(&d, now, r->slot_free, &earliest);
	int64_t want_earliest = r->earliest_s ? now + r->earliest_s * 1000 : 0;
	ok(got == r->want && (got || earliest == want_earliest),
	   "%s: %s, earliest %+lld ms (want %s, %+lld ms)", r->name, got ? "yes" : "no",
	   (long long)(got || !earliest ? 0 : earliest - now), r->want ? "yes" : "no",
	   (long long)(want_earliest ? want_earliest - now : 0));
	ok(slots_some_provider_may_claim(&d, now, r->slot_free, NULL) == r->want,
	   "%s: the same without asking when", r->name);
	while (d.n_providers)
		provider_state_free(d.providers[0]);
	free(d.providers);
	strset_release(&d.control.paused);
	slots_free(d.slots);
	loop_free(loop);
}

int main(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		run(&rows[i]);
	return tap_done();
}
