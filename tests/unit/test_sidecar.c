/* test_sidecar.c - the name of a put-back's new run beside its job in running/
 * (.ID@HOST.putback.D.INO, sidecar_putback_parse): taken only for this host, a valid task id, a
 * directory it was claimed from and an inode in hex, so that no daemon takes another host's, or
 * any other file, for one of its own; any host's (sidecar_putback_parse_any); and what each
 * suffix after ".ID@HOST." is (sidecar_suffix_kind). */
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <string.h>

#include "job.h"
#include "sidecar.h"
#include "tap.h"

struct row {
	const char *name;
	const char *host;
	bool want;
	const char *id;
	enum spool_dir from;
	uint64_t ino;
};

static const struct row rows[] = {
	{ ".job-1@hostA.putback.n.1f2e", "hostA", true, "job-1", SPOOL_NEW, 0x1f2e },
	{ ".job.v1@hostA.putback.d.0", "hostA", true, "job.v1", SPOOL_DEFERRED, 0 },
	{ ".j@host.with.dots.putback.n.ffffffffffffffff", "host.with.dots", true, "j", SPOOL_NEW,
	  UINT64_MAX },
	{ ".job-1@hostA.putback.n.1f2e", "hostB", false, NULL, 0, 0 },   /* another host's */
	{ ".job-1@hostA.putback.n.1f2e", "host", false, NULL, 0, 0 },    /* a host's prefix */
	{ ".job-1@hostAB.putback.n.1f2e", "hostA", false, NULL, 0, 0 },
	/* Host "a.putback.n" beside host "a": neither takes the other's. */
	{ ".x@a.putback.n.putback.n.12", "a", false, NULL, 0, 0 },
	{ ".x@a.putback.n.putback.n.12", "a.putback.n", true, "x", SPOOL_NEW, 0x12 },
	{ ".x@a.putback.n.12", "a.putback.n", false, NULL, 0, 0 },
	{ ".job-1@hostA.putback.x.1f2e", "hostA", false, NULL, 0, 0 },   /* no such directory */
	{ ".job-1@hostA.putback.n.", "hostA", false, NULL, 0, 0 },
	{ ".job-1@hostA.putback.n.1F2E", "hostA", false, NULL, 0, 0 },   /* we write lower case */
	{ ".job-1@hostA.putback.n.12345678901234567", "hostA", false, NULL, 0, 0 },
	{ ".job-1@hostA.putback.n.1f2e.tmp", "hostA", false, NULL, 0, 0 },
	{ ".job-1@hostA.putback.n1f2e", "hostA", false, NULL, 0, 0 },
	{ "job-1@hostA.putback.n.1f2e", "hostA", false, NULL, 0, 0 },    /* not a dot-name */
	{ ".@hostA.putback.n.1f2e", "hostA", false, NULL, 0, 0 },        /* no id */
	{ "..job@hostA.putback.n.1f2e", "hostA", false, NULL, 0, 0 },    /* not a task id */
	{ ".job.json@hostA.putback.n.1f2e", "hostA", false, NULL, 0, 0 },
	{ ".job.12@hostA.putback.n.1f2e", "hostA", false, NULL, 0, 0 },  /* reserved id */
	{ ".job-1@hostA.partial", "hostA", false, NULL, 0, 0 },
	{ ".job-1@hostA.response.200", "hostA", false, NULL, 0, 0 },
	{ ".job-1@hostA.json.hostA.12.0000abcd.tmp", "hostA", false, NULL, 0, 0 },
};

/* Another host's put-back names, whatever the host (sidecar_putback_parse_any): a rescan
 * removes those of hosts that are gone. */
static const struct {
	const char *name;
	const char *host, *id;   /* NULL: no put-back name of any host */
} any[] = {
	{ ".job-1@hostA.putback.n.1f2e", "hostA", "job-1" },
	{ ".j@host.with.dots.putback.n.ffffffffffffffff", "host.with.dots", "j" },
	{ ".x@a.putback.n.putback.n.12", "a.putback.n", "x" },   /* the host's own ".putback." */
	{ ".x@a.putback.n.12", "a", "x" },
	{ ".job-1@.putback.n.12", NULL, NULL },                   /* no host */
	{ ".job-1@hostA.putback.x.1f2e", NULL, NULL },
	{ ".job-1@hostA.partial", NULL, NULL },
	{ ".job-1@hostA.json.hostA.12.0000abcd.tmp", NULL, NULL },
	{ ".~0@hostA.batch-done", NULL, NULL },
	{ ".job-1.putback.n.12", NULL, NULL },                    /* no '@' */
};

/* What follows ".ID@HOST." in a name: one list for the takeover (all kinds) and the removal of
 * orphans (a call's files only). */
static const struct {
	const char *suffix;
	enum sidecar_kind want;
} kinds[] = {
	{ "partial", SIDECAR_KIND_CALL },
	{ "target", SIDECAR_KIND_CALL },
	{ "response.200", SIDECAR_KIND_CALL },
	{ "left.3", SIDECAR_KIND_CALL },
	{ "done", SIDECAR_KIND_STAGING },
	{ "failed", SIDECAR_KIND_STAGING },
	{ "putback.n.1f2e", SIDECAR_KIND_PUTBACK },
	{ "partially", SIDECAR_KIND_NONE },    /* whole words */
	{ "target.tmp", SIDECAR_KIND_NONE },
	{ "done.x", SIDECAR_KIND_NONE },
	{ "response", SIDECAR_KIND_NONE },
	{ "left", SIDECAR_KIND_NONE },
	{ "putback", SIDECAR_KIND_NONE },
	{ "json", SIDECAR_KIND_NONE },
	{ "", SIDECAR_KIND_NONE },
};

int main(void)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		ok(sidecar_suffix_kind(kinds[i].suffix) == kinds[i].want, "suffix '%s' is of kind %d",
		   kinds[i].suffix, kinds[i].want);
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		char id[JOB_ID_MAX + 1] = "";
		enum spool_dir from = SPOOL_TMP;
		uint64_t ino = 42;
		bool got = sidecar_putback_parse(r->name, r->host, id, &from, &ino);
		if (!ok(got == r->want, "%s as %s's: %s", r->name, r->host, r->want ? "taken" : "not taken")
		    || !got)
			continue;
		is_str(id, r->id, "%s: its id", r->name);
		ok(from == r->from && ino == r->ino, "%s: from %d, inode %" PRIx64, r->name, from, ino);
	}
	for (size_t i = 0; i < sizeof(any) / sizeof(any[0]); i++) {
		char host[NAME_MAX + 1] = "", id[JOB_ID_MAX + 1] = "";
		enum spool_dir from;
		uint64_t ino;
		bool got = sidecar_putback_parse_any(any[i].name, host, id, &from, &ino);
		if (!ok(got == (any[i].host != NULL), "%s: %s", any[i].name,
			any[i].host ? "a put-back name" : "no put-back name") || !got)
			continue;
		ok(!strcmp(host, any[i].host) && !strcmp(id, any[i].id), "%s: host '%s', id '%s'",
		   any[i].name, host, id);
	}
	/* The longest id and host id fit in a name. */
	char name[300], id[JOB_ID_MAX + 1], host[65];
	memset(id, 'i', JOB_ID_MAX);
	id[JOB_ID_MAX] = '\0';
	memset(host, 'h', 64);
	host[64] = '\0';
	snprintf(name, sizeof(name), ".%s@%s.putback.d.%" PRIx64, id, host, UINT64_MAX);
	ok(strlen(name) <= 255, "the longest name is %zu bytes", strlen(name));
	char got[JOB_ID_MAX + 1];
	enum spool_dir from;
	uint64_t ino;
	ok(sidecar_putback_parse(name, host, got, &from, &ino) && !strcmp(got, id) &&
	   from == SPOOL_DEFERRED && ino == UINT64_MAX, "the longest name is taken");
	return tap_done();
}
