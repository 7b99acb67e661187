/* test_hostlock.c - whether a host lock found at start-up is held by a live daemon. */
#include <string.h>

#include "hostlock.h"
#include "tap.h"

/* Which names in running/ are host locks, and whose: live hosts are waited for in a new ledger/. */
struct lock_row {
	const char *name;
	const char *host;        /* NULL: not a host lock */
};

static const struct lock_row lock_rows[] = {
	{ ".host.hostA", "hostA" },
	{ ".host.render-07.example_1", "render-07.example_1" },
	{ ".host.hostA.4242.0badf00d.tmp", NULL },          /* hostlock's temporary name */
	{ ".host.a.b.1.00000000.tmp", NULL },
	{ ".host-stale.hostA.4242.3.tmp", NULL },
	{ ".host.", NULL },
	{ ".hostA", NULL },
	{ "job@hostA.json", NULL },
	{ ".host.h.tmp", "h.tmp" },                          /* no PID and RANDOM: a host id */
	{ ".host.hostA.12.0badf00.tmp", "hostA.12.0badf00.tmp" },
	{ ".host.hostA.x2.0badf00d.tmp", "hostA.x2.0badf00d.tmp" },
};

/* Whether a lock found in running/ is a live host's: only what the daemon's user wrote, with an
 * owner that could be read, as hostlock_judge says. */
static void live_rows(const struct hostlock_owner *self, const struct hostlock_owner *here,
		      const struct hostlock_owner *elsewhere)
{
	const struct {
		const char *what;
		const struct hostlock_owner *found;
		bool by_daemon;
		int64_t age_ms;
		bool alive;
		bool live;
	} rows[] = {
		{ "another machine's, heartbeated", elsewhere, true, 1000, false, true },
		{ "another machine's, a lease old", elsewhere, true, 60001, false, false },
		{ "another user's (forged), heartbeated", elsewhere, false, 1000, false, false },
		{ "not a lock's content, heartbeated", NULL, true, 1000, false, false },
		{ "this machine's, its process alive", here, true, 3600000, true, true },
		{ "this machine's, its process gone, fresh", here, true, 100, false, false },
		{ "this machine's, another user's", here, false, 100, true, false },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(hostlock_live(rows[i].found, rows[i].by_daemon, self, rows[i].age_ms, 60000,
				 rows[i].alive) == rows[i].live,
		   "a lock in running/ %s: %s", rows[i].what, rows[i].live ? "a live host" : "no host");
}

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
	for (size_t i = 0; i < sizeof(lock_rows) / sizeof(lock_rows[0]); i++) {
		const struct lock_row *r = &lock_rows[i];
		char host[256] = "";
		bool is = hostlock_name_host(r->name, host, sizeof(host));
		ok(is == (r->host != NULL) && (!is || !strcmp(host, r->host)), "running/%s: %s", r->name,
		   r->host ? r->host : "not a host lock");
	}
	live_rows(&self, &here, &elsewhere);
	return tap_done();
}
