/* test_provider.c - a provider's flow control row by row: each row builds a state by a few
 * events, then asks whether a call may start at a given time and why not. */
#include <stdlib.h>
#include <string.h>

#include "provider.h"
#include "tap.h"

enum ev { END, START, END_CALL, THROTTLE, SUCCEED, HOLD, RELEASE, PROBE, SHARED_BUSY,
	  SHARED_BUDGET, SHARED_FREE };

struct step {
	enum ev ev;
	int64_t at;              /* the clock of the event; THROTTLE/SHARED_*: the until */
};

struct row {
	const char *name;
	struct provider_limits limits;
	struct step steps[12];
	int64_t now;
	enum provider_block want;
	int64_t want_until;
	int64_t want_unavailable;  /* provider_unavailable_until */
};

#define L(c, r) { .concurrency = (c), .rpm = (r), .window_ms = 60000 }

static const struct row rows[] = {
	{ "fresh: free", L(2, 0), { { END, 0 } }, 0, PROVIDER_FREE, 0, 0 },
	{ "one of two in flight: free", L(2, 0), { { START, 0 }, { END, 0 } }, 5, PROVIDER_FREE, 0, 0 },
	{ "two of two in flight: busy until a call ends", L(2, 0),
	  { { START, 0 }, { START, 0 }, { END, 0 } }, 5, PROVIDER_BUSY, -1, 0 },
	{ "a call ended: free again", L(2, 0),
	  { { START, 0 }, { START, 0 }, { END_CALL, 0 }, { END, 0 } }, 5, PROVIDER_FREE, 0, 0 },
	{ "rpm 2: third start in the minute waits for the oldest to age out", L(9, 2),
	  { { START, 1000 }, { END_CALL, 0 }, { START, 2000 }, { END_CALL, 0 }, { END, 0 } }, 3000,
	  PROVIDER_BUSY, 61000, 0 },
	{ "rpm 2: a minute after the oldest start: free", L(9, 2),
	  { { START, 1000 }, { END_CALL, 0 }, { START, 2000 }, { END_CALL, 0 }, { END, 0 } }, 61000,
	  PROVIDER_FREE, 0, 0 },
	{ "a 429 pauses until its wait", L(4, 0), { { THROTTLE, 5000 }, { END, 0 } }, 100,
	  PROVIDER_PAUSED, 5000, 5000 },
	{ "after the pause: one call at a time", L(4, 0),
	  { { THROTTLE, 5000 }, { START, 5000 }, { END, 0 } }, 5001, PROVIDER_BUSY, -1, 0 },
	{ "after the pause and a success: two at a time", L(4, 0),
	  { { THROTTLE, 5000 }, { START, 5000 }, { END_CALL, 0 }, { SUCCEED, 0 }, { START, 5002 }, { END, 0 } },
	  5003,
	  PROVIDER_FREE, 0, 0 },
	{ "a shorter pause does not shorten a longer one", L(4, 0),
	  { { THROTTLE, 9000 }, { THROTTLE, 2000 }, { END, 0 } }, 3000, PROVIDER_PAUSED, 9000, 9000 },
	{ "held: waits for an event", L(4, 0), { { HOLD, 0 }, { END, 0 } }, 1, PROVIDER_HELD, -1, -1 },
	{ "held but probing: one call may start", L(4, 0), { { HOLD, 0 }, { PROBE, 0 }, { END, 0 } }, 1,
	  PROVIDER_FREE, 0, 0 },
	{ "released: free", L(4, 0), { { HOLD, 0 }, { RELEASE, 0 }, { END, 0 } }, 1, PROVIDER_FREE, 0, 0 },
	{ "held wins over paused", L(4, 0), { { THROTTLE, 9000 }, { HOLD, 0 }, { END, 0 } }, 1,
	  PROVIDER_HELD, -1, -1 },
	{ "another host full: busy until the recheck", L(4, 0), { { SHARED_BUSY, 2000 }, { END, 0 } },
	  1000, PROVIDER_BUSY, 2000, 0 },
	{ "another host full, recheck passed: free", L(4, 0), { { SHARED_BUSY, 2000 }, { END, 0 } },
	  2000, PROVIDER_FREE, 0, 0 },
	{ "over budget until an event: unavailable", L(4, 0), { { SHARED_BUDGET, -1 }, { END, 0 } },
	  99999, PROVIDER_OVER_BUDGET, -1, -1 },
	{ "over budget until the day ends", L(4, 0), { { SHARED_BUDGET, 8000 }, { END, 0 } }, 100,
	  PROVIDER_OVER_BUDGET, 8000, 8000 },
	{ "budget cleared: free", L(4, 0), { { SHARED_BUDGET, -1 }, { SHARED_FREE, 0 }, { END, 0 } },
	  100, PROVIDER_FREE, 0, 0 },
	{ "paused wins over over budget", L(4, 0), { { SHARED_BUDGET, -1 }, { THROTTLE, 500 }, { END, 0 } },
	  100, PROVIDER_PAUSED, 500, 500 },
};

int main(void)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		struct provider p;
		provider_init(&p, "apiyi");
		for (const struct step *s = r->steps; s->ev != END; s++) {
			switch (s->ev) {
			case START: provider_started(&p, &r->limits, s->at); break;
			case END_CALL: provider_ended(&p); break;
			case THROTTLE: provider_throttle(&p, s->at); break;
			case SUCCEED: provider_succeeded(&p, r->limits.concurrency); break;
			case HOLD: provider_hold(&p, "quota"); break;
			case RELEASE: provider_release_hold(&p); break;
			case PROBE: p.probing = true; break;
			case SHARED_BUSY: provider_shared_block(&p, PROVIDER_BUSY, s->at); break;
			case SHARED_BUDGET: provider_shared_block(&p, PROVIDER_OVER_BUDGET, s->at); break;
			case SHARED_FREE: provider_shared_block(&p, PROVIDER_FREE, 0); break;
			case END: break;
			}
		}
		int64_t until;
		enum provider_block got = provider_blocked(&p, &r->limits, r->now, &until);
		ok(got == r->want && until == r->want_until, "%s: %s until %lld", r->name,
		   provider_block_name(got), (long long)until);
		if (got != r->want || until != r->want_until)
			printf("#   want %s until %lld\n", provider_block_name(r->want),
			       (long long)r->want_until);
		int64_t un = provider_unavailable_until(&p, r->now);
		ok(un == r->want_unavailable, "%s: unavailable until %lld (want %lld)", r->name,
		   (long long)un, (long long)r->want_unavailable);
		ok(provider_blocked_until(&p, &r->limits, r->now) == r->want_until, "%s: blocked_until",
		   r->name);
		provider_release(&p);
	}

	/* Holding twice for the same reason is not news; another reason is. */
	struct provider p;
	provider_init(&p, "apiyi");
	ok(provider_hold(&p, "quota"), "first hold is news");
	ok(!provider_hold(&p, "quota"), "same hold again is not");
	ok(provider_hold(&p, "auth"), "another reason is");
	ok(provider_release_hold(&p) && !provider_release_hold(&p), "release once");
	/* A reload changing rpm: the ring is rebuilt, old starts forgotten. */
	struct provider_limits l2 = L(9, 2), l3 = L(9, 3);
	provider_started(&p, &l2, 0);
	provider_started(&p, &l2, 1);
	ok(provider_busy_until(&p, &l2, 10) == 60000, "rpm 2 full");
	ok(provider_busy_until(&p, &l3, 10) == 0, "rpm raised to 3: room");
	provider_started(&p, &l3, 20);
	ok(p.ring == 3 && p.n_starts == 1, "ring rebuilt for the new rpm");
	provider_release(&p);
	return tap_done();
}
