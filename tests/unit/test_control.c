/* test_control.c - the names of requests in control/, the ones the daemon itself writes or
 * judges: gone webhook endpoints, and when a hold or cancel has outlived its job (every row of the
 * rule in spool-layout.md §15). */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "control.h"
#include "spool.h"
#include "scratch_spool.h"
#include "tap.h"
#include "util.h"

static void test_names(void)
{
	static const struct { const char *name; enum control_kind kind; const char *arg; } rows[] = {
		{ "pause", CONTROL_PAUSE, "" },
		{ "pause.apiyi", CONTROL_PAUSE, "apiyi" },
		{ "pause.a_b-c", CONTROL_PAUSE, "a_b-c" },
		{ "pause.", CONTROL_NONE, "" },
		{ "pause.openai.eu", CONTROL_PAUSE, "openai.eu" },   /* config allows dots */
		{ "hold.job-1", CONTROL_HOLD, "job-1" },
		{ "hold.1764068523.104233.4242.render-07.9f1c", CONTROL_HOLD, "1764068523.104233.4242.render-07.9f1c" },
		{ "hold.x.result", CONTROL_NONE, "" },
		{ "hold.-x", CONTROL_NONE, "" },
		{ "hold.x.json", CONTROL_NONE, "" },
		{ "cancel.job-1", CONTROL_CANCEL, "job-1" },
		{ "cancel.", CONTROL_NONE, "" },
		{ ".pause.host.1.tmp", CONTROL_NONE, "" },
		{ "paused", CONTROL_NONE, "" },
		{ "resume", CONTROL_NONE, "" },
		{ "gone.8f8810afab6d644b84d59f75a3a1be88", CONTROL_GONE, "8f8810afab6d644b84d59f75a3a1be88" },
		{ "gone.8f8810afab6d644b84d59f75a3a1be8", CONTROL_NONE, "" },     /* 31 digits */
		{ "gone.8f8810afab6d644b84d59f75a3a1be880", CONTROL_NONE, "" },   /* 33 */
		{ "gone.8F8810AFAB6D644B84D59F75A3A1BE88", CONTROL_NONE, "" },    /* lower case only */
		{ "gone.8f8810afab6d644b84d59f75a3a1be8g", CONTROL_NONE, "" },
		{ "gone.", CONTROL_NONE, "" },
		{ "gone", CONTROL_NONE, "" },
		{ ".gone.8f8810afab6d644b84d59f75a3a1be88.h.1.tmp", CONTROL_NONE, "" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		const char *arg;
		enum control_kind k = control_parse_name(rows[i].name, &arg);
		ok(k == rows[i].kind, "\"%s\" is kind %d", rows[i].name, rows[i].kind);
		is_str(arg, rows[i].arg, "\"%s\" names \"%s\"", rows[i].name, rows[i].arg);
	}
	char *n = control_name(CONTROL_GONE, "8f8810afab6d644b84d59f75a3a1be88");
	is_str(n, "gone.8f8810afab6d644b84d59f75a3a1be88", "a gone endpoint's file name");
	free(n);
	n = control_name(CONTROL_CANCEL, "j1");
	is_str(n, "cancel.j1", "cancel request name");
	free(n);
	n = control_name(CONTROL_PAUSE, NULL);
	is_str(n, "pause", "pause of every provider");
	free(n);

	struct control c;
	control_init(&c);
	ok(!control_wants(&c, CONTROL_GONE, "8f8810afab6d644b84d59f75a3a1be88"), "nothing gone at first");
	control_note(&c, CONTROL_GONE, "8f8810afab6d644b84d59f75a3a1be88");
	ok(control_wants(&c, CONTROL_GONE, "8f8810afab6d644b84d59f75a3a1be88"), "noted before it is read");
	ok(!control_wants(&c, CONTROL_HOLD, "8f8810afab6d644b84d59f75a3a1be88"), "kinds are apart");
	control_release(&c);
}

#define MIN (60 * 1000LL)
#define LEASE (60 * 1000LL)

static void test_judge(void)
{
	static const struct {
		const char *name;
		enum control_kind kind;
		enum control_where where;
		int64_t age, unseen;
		enum control_verdict want;
	} rows[] = {
		/* A live job keeps its request, however old. */
		{ "hold, job live", CONTROL_HOLD, CONTROL_JOB_LIVE, 48 * 60 * MIN, 48 * 60 * MIN, CONTROL_KEEP },
		{ "cancel, job live", CONTROL_CANCEL, CONTROL_JOB_LIVE, 48 * 60 * MIN, 48 * 60 * MIN, CONTROL_KEEP },
		/* Finished: consumed, once the request and the look are a lease old. */
		{ "hold, finished", CONTROL_HOLD, CONTROL_JOB_FINISHED, 2 * MIN, LEASE, CONTROL_CONSUME },
		{ "cancel, finished", CONTROL_CANCEL, CONTROL_JOB_FINISHED, 2 * MIN, LEASE, CONTROL_CONSUME },
		{ "finished, request younger than a lease", CONTROL_CANCEL, CONTROL_JOB_FINISHED,
		  LEASE - 1, 48 * 60 * MIN, CONTROL_KEEP },
		{ "finished, seen so for less than a lease", CONTROL_HOLD, CONTROL_JOB_FINISHED,
		  48 * 60 * MIN, LEASE - 1, CONTROL_KEEP },
		{ "finished, first look", CONTROL_HOLD, CONTROL_JOB_FINISHED, 48 * 60 * MIN, 0, CONTROL_KEEP },
		/* Held: a hold is fulfilled, a cancel moot (imgspool cancel ends a held job). */
		{ "hold, held", CONTROL_HOLD, CONTROL_JOB_HELD, 2 * MIN, LEASE, CONTROL_CONSUME },
		{ "cancel, held", CONTROL_CANCEL, CONTROL_JOB_HELD, 2 * MIN, LEASE, CONTROL_CONSUME },
		{ "hold, held, young", CONTROL_HOLD, CONTROL_JOB_HELD, LEASE - 1, LEASE, CONTROL_KEEP },
		/* Nowhere: removed only past the max age, and after a lease of looks. */
		{ "nowhere, an hour old", CONTROL_CANCEL, CONTROL_JOB_NOWHERE, 60 * MIN, LEASE, CONTROL_EXPIRE },
		{ "nowhere, just under an hour", CONTROL_CANCEL, CONTROL_JOB_NOWHERE, 60 * MIN - 1, LEASE,
		  CONTROL_KEEP },
		{ "nowhere, old, seen so briefly", CONTROL_HOLD, CONTROL_JOB_NOWHERE, 48 * 60 * MIN,
		  LEASE - 1, CONTROL_KEEP },
		{ "nowhere, a day old", CONTROL_HOLD, CONTROL_JOB_NOWHERE, 24 * 60 * MIN, 5 * MIN,
		  CONTROL_EXPIRE },
		/* A file from the future (a skewed writer): never old. */
		{ "nowhere, mtime ahead", CONTROL_HOLD, CONTROL_JOB_NOWHERE, -5 * MIN, 5 * MIN, CONTROL_KEEP },
		/* Only jobs' requests are judged. */
		{ "pause", CONTROL_PAUSE, CONTROL_JOB_NOWHERE, 48 * 60 * MIN, 48 * 60 * MIN, CONTROL_KEEP },
		{ "gone", CONTROL_GONE, CONTROL_JOB_NOWHERE, 48 * 60 * MIN, 48 * 60 * MIN, CONTROL_KEEP },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		enum control_verdict v = control_judge(rows[i].kind, rows[i].where, rows[i].age,
						       rows[i].unseen, LEASE);
		ok(v == rows[i].want, "judge: %s -> %d (want %d)", rows[i].name, v, rows[i].want);
	}
	/* A lease longer than the max age: the lease rules. */
	ok(control_judge(CONTROL_HOLD, CONTROL_JOB_NOWHERE, 90 * MIN, 90 * MIN, 120 * MIN) == CONTROL_KEEP,
	   "judge: a two-hour lease keeps a 90-minute request");
}

/* What a daemon read may be stale: a claim confirms a request with one stat, and only when the
 * read names the job. */
static void test_still_wants(void)
{
	char dir[PATH_MAX];
	struct spool sp;
	ok(scratch_mkdtemp(dir, sizeof(dir), "control") != NULL && spool_open(&sp, dir, "h1") == 0, "a scratch spool");
	ok(control_request(&sp, CONTROL_CANCEL, "job-1") == 0 &&
	   control_request(&sp, CONTROL_HOLD, "job-2") == 0, "two requests written");
	struct control c;
	control_init(&c);
	ok(control_read(&c, &sp) == 0, "control/ read");
	ok(control_still_wants(&c, &sp, CONTROL_CANCEL, "job-1"), "still_wants: a request there");
	ok(!control_still_wants(&c, &sp, CONTROL_HOLD, "job-1"), "still_wants: not of that kind");
	ok(!control_still_wants(&c, &sp, CONTROL_CANCEL, "job-3"), "still_wants: never read");
	ok(control_withdraw(&sp, CONTROL_HOLD, "job-2") == 0, "hold.job-2 withdrawn after the read");
	ok(control_wants(&c, CONTROL_HOLD, "job-2"), "the read still names it");
	ok(!control_still_wants(&c, &sp, CONTROL_HOLD, "job-2"), "still_wants: withdrawn since");
	ok(!control_wants(&c, CONTROL_HOLD, "job-2"), "and forgotten");
	control_release(&c);
	control_withdraw(&sp, CONTROL_CANCEL, "job-1");
	ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool removed");
}

/* A read counts a change of the pauses only when one was made or removed (what wakes the jobs
 * and retries waiting for a provider), not at every read, nor for a hold or cancel. */
static void test_pause_changes(void)
{
	char dir[PATH_MAX];
	struct spool sp;
	ok(scratch_mkdtemp(dir, sizeof(dir), "control") != NULL && spool_open(&sp, dir, "h1") == 0, "a scratch spool");
	struct control c;
	control_init(&c);
	static const struct {
		const char *name;
		enum control_kind kind;
		const char *arg;
		bool add;              /* else withdraw */
		unsigned long changes; /* pause_changes after the read */
	} steps[] = {
		{ "nothing there", CONTROL_NONE, NULL, false, 0 },
		{ "pause.a made", CONTROL_PAUSE, "a", true, 1 },
		{ "the same read again", CONTROL_NONE, NULL, false, 1 },
		{ "a hold is no pause", CONTROL_HOLD, "job-1", true, 1 },
		{ "pause.b beside pause.a", CONTROL_PAUSE, "b", true, 2 },
		{ "pause (all) made", CONTROL_PAUSE, "", true, 3 },
		{ "pause.a removed", CONTROL_PAUSE, "a", false, 4 },
		{ "pause (all) removed", CONTROL_PAUSE, "", false, 5 },
		{ "pause.b removed, pause.c made: as many", CONTROL_NONE, NULL, false, 6 },
	};
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		if (i == sizeof(steps) / sizeof(steps[0]) - 1) {
			control_withdraw(&sp, CONTROL_PAUSE, "b");
			control_request(&sp, CONTROL_PAUSE, "c");
		} else if (steps[i].kind != CONTROL_NONE && steps[i].add)
			control_request(&sp, steps[i].kind, steps[i].arg);
		else if (steps[i].kind != CONTROL_NONE)
			control_withdraw(&sp, steps[i].kind, steps[i].arg);
		int rc = control_read(&c, &sp);
		ok(rc == 0 && c.pause_changes == steps[i].changes, "pause_changes: %s (%lu)",
		   steps[i].name, c.pause_changes);
	}
	control_release(&c);
	control_withdraw(&sp, CONTROL_PAUSE, "c");
	control_withdraw(&sp, CONTROL_HOLD, "job-1");
	ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool removed");
}

int main(void)
{
	test_names();
	test_judge();
	test_still_wants();
	test_pause_changes();
	return tap_done();
}
