/* test_intake.c - where a job of ours goes back to when its place is taken by another version of
 * its id (intake_return_place, spool-layout.md §5): new/, then deferred/ under the same name,
 * then deferred/ under the id's other name, so that a job left in running/ never waits for an
 * operator while versions of its id fill new/ and deferred/; and when a put-back's claim has
 * stalled too long to be made (intake_claim_stalled, §10). */
#include <stdbool.h>
#include <stdint.h>

#include "intake.h"
#include "tap.h"

struct place_row {
	const char *what;
	enum spool_dir asked;
	const char *name, *id;
	int step;
	bool there;
	enum spool_dir dir;
	const char *want_name, *want_why;
};

static const struct place_row places[] = {
	{ "new/ first", SPOOL_NEW, "a.json", "a", 0, true, SPOOL_NEW, "a.json", "" },
	{ "new/ taken: deferred/, due at once", SPOOL_NEW, "a.json", "a", 1, true, SPOOL_DEFERRED,
	  "a.json", "; new/ holds a later version of it" },
	{ "new/ and deferred/ taken: deferred/ under the bare id", SPOOL_NEW, "a.json", "a", 2,
	  true, SPOOL_DEFERRED, "a", "; new/ and deferred/ hold another version of it: as "
	  "deferred/a" },
	{ "every name taken: deferred/ID.2.json", SPOOL_NEW, "a.json", "a", 3, true,
	  SPOOL_DEFERRED, "a.2.json", "; new/ and deferred/ hold other versions of it: as "
	  "deferred/a.2.json" },
	{ "then ID.3.json", SPOOL_NEW, "a.json", "a", 4, true, SPOOL_DEFERRED, "a.3.json",
	  "; new/ and deferred/ hold other versions of it: as deferred/a.3.json" },
	{ "up to ID.9.json", SPOOL_NEW, "a.json", "a", 10, true, SPOOL_DEFERRED, "a.9.json",
	  "; new/ and deferred/ hold other versions of it: as deferred/a.9.json" },
	{ "nothing after that", SPOOL_NEW, "a.json", "a", 11, false, 0, NULL, NULL },
	{ "a bare name in new/: its other name is ID.json", SPOOL_NEW, "a", "a", 2, true,
	  SPOOL_DEFERRED, "a.json", "; new/ and deferred/ hold another version of it: as "
	  "deferred/a.json" },
	{ "deferred/ first", SPOOL_DEFERRED, "a.json", "a", 0, true, SPOOL_DEFERRED, "a.json", "" },
	{ "deferred/ taken: its other name there, never new/ (not due yet)", SPOOL_DEFERRED,
	  "a.json", "a", 1, true, SPOOL_DEFERRED, "a", "; deferred/ holds another version of it: "
	  "as deferred/a" },
	{ "then numbered, from deferred/", SPOOL_DEFERRED, "a.json", "a", 2, true, SPOOL_DEFERRED,
	  "a.2.json", "; deferred/ holds other versions of it: as deferred/a.2.json" },
	{ "a numbered version taken again: the next", SPOOL_DEFERRED, "a.3.json", "a", 3, true,
	  SPOOL_DEFERRED, "a.3.json", "; deferred/ holds other versions of it: as deferred/a.3.json" },
	{ "nothing after ID.9.json from deferred/", SPOOL_DEFERRED, "a.json", "a", 10, false, 0,
	  NULL, NULL },
	{ "hold/ is only itself", SPOOL_HOLD, "a.json", "a", 0, true, SPOOL_HOLD, "a.json", "" },
	{ "nothing after hold/", SPOOL_HOLD, "a.json", "a", 1, false, 0, NULL, NULL },
	/* The bare name of an id ending in ".json" (file "x.json.json") names id "x". */
	{ "an id ending in .json has no other name: numbered next", SPOOL_NEW, "x.json.json",
	  "x.json", 2, true, SPOOL_DEFERRED, "x.json.2.json", "; new/ and deferred/ hold other "
	  "versions of it: as deferred/x.json.2.json" },
	{ "an id ending in .json: up to ID.9.json", SPOOL_NEW, "x.json.json", "x.json", 10, false,
	  0, NULL, NULL },
	{ "an id ending in .json still goes to deferred/", SPOOL_NEW, "x.json.json", "x.json", 1,
	  true, SPOOL_DEFERRED, "x.json.json", "; new/ holds a later version of it" },
	{ "an id ending in .json from deferred/: numbered", SPOOL_DEFERRED, "x.json.json",
	  "x.json", 1, true, SPOOL_DEFERRED, "x.json.2.json", "; deferred/ holds other versions "
	  "of it: as deferred/x.json.2.json" },
};

struct stall_row {
	const char *what;
	int64_t stalled_ms, lease_ms;
	bool want;
};

static const struct stall_row stalls[] = {
	{ "no stall", 0, 60000, false },
	{ "a slow write, well within the lease", 2000, 60000, false },
	{ "just under half a lease", 29999, 60000, false },
	{ "half a lease", 30000, 60000, true },
	{ "a whole lease: its put-back file may be gone", 61000, 60000, true },
	{ "a short lease", 1000, 2000, true },
};

int main(void)
{
	for (size_t i = 0; i < sizeof(places) / sizeof(places[0]); i++) {
		const struct place_row *r = &places[i];
		struct intake_place p = { .dir = SPOOL_RUNNING, .name = "untouched", .why = "" };
		bool there = intake_return_place(r->asked, r->name, r->id, r->step, &p);
		ok(there == r->there, "%s: %s", r->what, there ? "a place" : "none");
		if (!r->there) {
			is_str(p.name, "untouched", "%s: the last place tried is kept", r->what);
			continue;
		}
		ok(p.dir == r->dir, "%s: the directory", r->what);
		is_str(p.name, r->want_name, "%s: the name", r->what);
		is_str(p.why, r->want_why, "%s: why", r->what);
	}
	for (size_t i = 0; i < sizeof(stalls) / sizeof(stalls[0]); i++) {
		const struct stall_row *r = &stalls[i];
		ok(intake_claim_stalled(r->stalled_ms, r->lease_ms) == r->want, "%s", r->what);
	}
	return tap_done();
}
