/* test_dirtrust.c - which owners and modes of the spool's directories the daemon accepts. */
#include <string.h>
#include <sys/stat.h>

#include "dirtrust.h"
#include "tap.h"

enum { DAEMON = 998, NFS_NOBODY = 65534, CLIENT = 23456 };

static void test_judge(void)
{
	static const struct {
		const char *what;
		enum dirtrust_kind kind;
		uint32_t uid, mode;
		enum dirtrust_verdict want;
	} rows[] = {
		{ "the old recipe's root: 2775, no sticky bit", DIRTRUST_ROOT, DAEMON, 02775, DIRTRUST_NO_STICKY },
		{ "the recipe's root: 3775", DIRTRUST_ROOT, DAEMON, 03775, DIRTRUST_OK },
		{ "a root others may write, no sticky bit", DIRTRUST_ROOT, 0, 0757, DIRTRUST_NO_STICKY },
		{ "a root only its owner writes", DIRTRUST_ROOT, DAEMON, 0755, DIRTRUST_OK },
		{ "a root of root's", DIRTRUST_ROOT, 0, 0755, DIRTRUST_OK },
		{ "a root a client owns, even sticky", DIRTRUST_ROOT, CLIENT, 01755, DIRTRUST_OWNER },
		{ "running/ a client made", DIRTRUST_TRUSTED, CLIENT, 0755, DIRTRUST_OWNER },
		{ "running/ the group may write", DIRTRUST_TRUSTED, DAEMON, 02770, DIRTRUST_WRITABLE },
		{ "control/ others may write, sticky", DIRTRUST_TRUSTED, DAEMON, 01777, DIRTRUST_WRITABLE },
		{ "the recipe's running/: 2750", DIRTRUST_TRUSTED, DAEMON, 02750, DIRTRUST_OK },
		{ "running/ made through root squashing", DIRTRUST_TRUSTED, NFS_NOBODY, 0755, DIRTRUST_OK },
		{ "done/ the group may write: said", DIRTRUST_DAEMON, DAEMON, 0775, DIRTRUST_WARN_WRITABLE },
		{ "done/ a client made", DIRTRUST_DAEMON, CLIENT, 0755, DIRTRUST_OWNER },
		{ "the recipe's new/: 3770", DIRTRUST_CLIENTS, DAEMON, 03770, DIRTRUST_OK },
		{ "new/ anyone may write", DIRTRUST_CLIENTS, 0, 0777, DIRTRUST_OK },
		{ "new/ a client made", DIRTRUST_CLIENTS, CLIENT, 0777, DIRTRUST_OWNER },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(dirtrust_judge(rows[i].kind, rows[i].uid, S_IFDIR | rows[i].mode, DAEMON,
				  NFS_NOBODY) == rows[i].want, "%s", rows[i].what);
}

static void test_owner(void)
{
	ok(dirtrust_owner_ok(DAEMON, DAEMON, DAEMON), "the daemon's user");
	ok(dirtrust_owner_ok(0, DAEMON, DAEMON), "root");
	ok(dirtrust_owner_ok(NFS_NOBODY, 0, NFS_NOBODY), "what the server makes of the daemon's files");
	ok(!dirtrust_owner_ok(CLIENT, DAEMON, DAEMON), "a client");
}

static void test_explain(void)
{
	char why[320];
	dirtrust_explain(why, sizeof(why), DIRTRUST_NO_STICKY, DAEMON, S_IFDIR | 02775, DAEMON);
	ok(strstr(why, "(mode 2775) without the sticky bit") && strstr(why, "chmod +t"), "%s", why);
	dirtrust_explain(why, sizeof(why), DIRTRUST_OWNER, CLIENT, S_IFDIR | 0755, DAEMON);
	ok(strstr(why, "owned by uid 23456, not by the daemon's user (uid 998) or root"), "%s", why);
}

int main(void)
{
	test_judge();
	test_owner();
	test_explain();
	return tap_done();
}
