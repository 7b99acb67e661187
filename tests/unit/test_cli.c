/* test_cli.c - the CLI's pure helpers: durations, qshape's age buckets, short ages, the
 * names of control/ requests, which names are job files, and the orders of the job index. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "control.h"
#include "tap.h"

static void test_durations(void)
{
	static const struct { const char *in; int64_t want_ms; } rows[] = {
		{ "90m", 90 * 60000LL }, { "12h", 12 * 3600000LL }, { "30d", 30 * 86400000LL },
		{ "45s", 45000 }, { "45", 45000 }, { "2w", 14 * 86400000LL }, { "0m", 0 },
		{ "", -1 }, { "m", -1 }, { "-5m", -1 }, { "5 m", -1 }, { "5mm", -1 }, { "1.5h", -1 },
		{ "99999999999999999999d", -1 }, { "999999999999999d", -1 },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(cli_parse_duration(rows[i].in) == rows[i].want_ms, "duration \"%s\"", rows[i].in);
	ok(cli_parse_duration(NULL) == -1, "no duration");
}

static void test_buckets(void)
{
	static const struct { int64_t age_s; int want; } rows[] = {
		{ 0, 0 }, { 300, 0 }, { 301, 1 }, { 600, 1 }, { 601, 2 }, { 1200, 2 }, { 2400, 3 },
		{ 4800, 4 }, { 9600, 5 }, { 19200, 6 }, { 38400, 7 }, { 38401, 8 }, { 86400 * 30, 8 },
		{ -5, 0 },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(cli_age_bucket(rows[i].age_s * 1000) == rows[i].want, "age %llds in bucket %s",
		   (long long)rows[i].age_s, cli_bucket_names[rows[i].want]);
	is_str(cli_bucket_names[0], "5m", "first bucket");
	is_str(cli_bucket_names[CLI_BUCKETS - 2], "640m", "last bounded bucket");
	is_str(cli_bucket_names[CLI_BUCKETS - 1], "more", "open bucket");
}

static void test_ages(void)
{
	static const struct { int64_t ms; const char *want; } rows[] = {
		{ 0, "0s" }, { 119999, "119s" }, { 120000, "2m" }, { 7199999, "119m" },
		{ 7200000, "2h" }, { 48 * 3600000LL, "2d" }, { -1000, "0s" },
	};
	char out[16];
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		cli_format_age(rows[i].ms, out, sizeof(out));
		is_str(out, rows[i].want, "age of %lld ms", (long long)rows[i].ms);
	}
}

static void test_states(void)
{
	ok(cli_state_from_name("hold") == SPOOL_HOLD, "hold is a state");
	ok(cli_state_from_name("new") == SPOOL_NEW, "new is a state");
	ok(cli_state_from_name("tmp") == -1, "tmp is not a state");
	ok(cli_state_from_name("control") == -1, "control is not a state");
	is_str(cli_state_word(SPOOL_NEW), "pending", "new/ is pending");
}

static void test_job_files(void)
{
	static const struct { enum spool_dir d; const char *name; bool want; } rows[] = {
		{ SPOOL_DONE, "a.json", true }, { SPOOL_DONE, "a.result.json", false },
		{ SPOOL_DONE, "a.png", false }, { SPOOL_DONE, "a.2.png", false },
		{ SPOOL_DONE, ".a.json", false }, { SPOOL_DONE, ".json", false },
		{ SPOOL_DONE, "x.json", true }, { SPOOL_FAILED, "result.json", true },
		{ SPOOL_NEW, "a", true }, { SPOOL_NEW, "a.json", true },
		{ SPOOL_NEW, "a.result.json", false }, { SPOOL_NEW, ".", false },
		{ SPOOL_NEW, "..", false }, { SPOOL_RUNNING, "a@h.json", true },
		{ SPOOL_RUNNING, "a.json", false }, { SPOOL_RUNNING, ".a@h.json", false },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		ok(cli_is_job_file(rows[i].d, rows[i].name) == rows[i].want, "%s/%s %s a job file",
		   spool_dir_name(rows[i].d), rows[i].name, rows[i].want ? "is" : "is not");
}

/* An index built by hand: what cli_index_add would make of these names and mtimes. */
static void index_of(struct cli_index *ix, const char *const *names, const int64_t *mtime_ns,
		     size_t n)
{
	cli_index_init(ix);
	size_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += strlen(names[i]) + 1;
	ix->jobs = calloc(n, sizeof(*ix->jobs));
	ix->names = malloc(total);
	ix->n = ix->alloc = n;
	ix->names_alloc = total;
	for (size_t i = 0; i < n; i++) {
		memcpy(ix->names + ix->names_len, names[i], strlen(names[i]) + 1);
		ix->jobs[i] = (struct cli_job){ .mtime_ns = mtime_ns[i], .name = ix->names_len,
						.dir = SPOOL_DONE };
		ix->names_len += strlen(names[i]) + 1;
	}
}

/* a.b.json sorts before a.json as a name ('b' < 'j'), after it as an id ("a" < "a.b"). */
static const char *const index_names[] = { "c.json", "a.json", "a.b.json", "b.json", "d.json" };
static const int64_t index_mtimes[] = { 3000000, 1000000, 1000000, 2000000, 1500000 };

static void sorts_as(bool newest, const char *const *want)
{
	struct cli_index ix;
	index_of(&ix, index_names, index_mtimes, 5);
	cli_index_sort(&ix, newest);
	for (size_t i = 0; i < 5; i++)
		is_str(cli_index_name(&ix, i), want[i], "%s first: %zu", newest ? "newest" : "oldest", i);
	cli_index_release(&ix);
	ok(ix.n == 0 && !ix.jobs && !ix.names, "a released index is empty");
}

static void test_index_orders(void)
{
	static const char *const oldest[] = { "a.b.json", "a.json", "d.json", "b.json", "c.json" };
	sorts_as(false, oldest);
	/* Newest first by the millisecond: d (1.5 ms) ties with a and a.b (1 ms), then by id. */
	static const char *const newest[] = { "c.json", "b.json", "a.json", "a.b.json", "d.json" };
	sorts_as(true, newest);
}

static void test_new_ids(void)
{
	static const struct { const char *host; unsigned char rnd[8]; } rows[] = {
		{ "render-07", { 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11 } },   /* all digits */
		{ "render-07", { 0 } },              /* what a failed getrandom leaves */
		{ "r.e:n/d er", { 0x9f, 0x1c, 0x2a, 0xb3, 0x8d, 0x04, 0xe6, 0xc1 } },
		{ "", { 0x12, 0x34, 0x56, 0x78, 0x90, 0x12, 0x34, 0x56 } },
		{ "a-very-long-host-name-that-goes-on-and-on-and-on-for-more-than-64-characters-in-all",
		  { 1, 2, 3, 4, 5, 6, 7, 8 } },
	};
	struct timespec ts = { .tv_sec = 1764068523, .tv_nsec = 104233999 };
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		char id[JOB_ID_MAX + 1], back[JOB_ID_MAX + 1];
		cli_make_id(id, sizeof(id), &ts, 4242, rows[i].host, rows[i].rnd);
		ok(job_id_from_name(id, back, sizeof(back)) == 0 && !strcmp(back, id),
		   "a new id is a valid task id: %s", id);
	}
	char id[JOB_ID_MAX + 1];
	cli_make_id(id, sizeof(id), &ts, 4242, "render-07", rows[2].rnd);
	is_str(id, "1764068523.104233.4242.render-07.r9f1c2ab38d04e6c1", "the recipe's shape");
}

int main(void)
{
	test_durations();
	test_buckets();
	test_ages();
	test_states();
	test_job_files();
	test_index_orders();
	test_new_ids();
	return tap_done();
}
