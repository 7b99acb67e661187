/* test_hostlock.c - whether a host lock found at start-up is held by a live daemon. */
#include <string.h>

#include "hostlock.h"
#include "tap.h"

int main(void)
{
	static const struct hostlock_owner self = { .pid = 200, .start_time = 9, .hostname = "render-7",
					     .boot_id = "boot-a" };
	static const struct hostlock_owner here = { .pid = 100, .start_time = 5, .hostname = "render-7",
					     .boot_id = "boot-a" };
	static const struct hostlock_owner rebooted = { .pid = 100, .start_time = 5, .hostname = "render-7",
						 .boot_id = "boot-b" };
	static const struct hostlock_owner elsewhere = { .pid = 100, .start_time = 5, .hostname = "render-8",
						  .boot_id = "boot-c" };
	const int64_t lease = 60000;
	const struct {
		const char *what;
		const struct hostlock_owner *found;
		int64_t age_ms;
		bool alive;
		enum hostlock_verdict want;
	} rows[] = {
		{ "this machine, holder alive", &here, 0, true, HOSTLOCK_HELD },
		{ "this machine, holder alive, heartbeat old (stopped?)", &here, 3600000, true, HOSTLOCK_HELD },
		{ "this machine, holder killed -9 a moment ago: start at once", &here, 100, false, HOSTLOCK_STALE },
		{ "an earlier boot, fresh heartbeat", &rebooted, 1000, false, HOSTLOCK_HELD },
		{ "an earlier boot, no heartbeat for a lease", &rebooted, 60001, false, HOSTLOCK_STALE },
		{ "another machine, heartbeated", &elsewhere, 59000, false, HOSTLOCK_HELD },
		{ "another machine, exactly one lease old", &elsewhere, 60000, false, HOSTLOCK_HELD },
		{ "another machine, silent for longer than a lease", &elsewhere, 60001, false, HOSTLOCK_STALE },
		{ "another machine, its clock far ahead (negative age)", &elsewhere, -500000, false, HOSTLOCK_HELD },
		{ "unreadable lock, fresh", NULL, 0, false, HOSTLOCK_HELD },
		{ "unreadable lock, old", NULL, 120000, false, HOSTLOCK_STALE },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(hostlock_judge(rows[i].found, &self, rows[i].age_ms, lease, rows[i].alive) == rows[i].want,
		   "%s: %s", rows[i].what, rows[i].want == HOSTLOCK_HELD ? "refuse to start" : "take over");
	return tap_done();
}
