/* cli_query.c - the verbs that only look: status, show, wait, ls (mailq) and stat (qshape).
 *
 * They read the state directories as any client may (the group recipe lets clients read every
 * state), so they need no write access. A job is wherever its file is; a job between two
 * renames is looked for again before it is called missing. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "control.h"
#include "util.h"
#include "banned.h"

#define WAIT_POLL_MS 200
#define MISSING_GRACE_MS 2000    /* a job on another host's mount may take a moment to show */

/* Writes JSON text to stdout with DEL and every C1 control character (U+0080-U+009F, which
 * some terminals obey as CSI, OSC and the like) escaped: in JSON they can stand only in
 * strings, where \u007f and \u0080-\u009f mean the same. jansson accepts them raw in a
 * client's file and writes them raw. */
static void put_json(const char *p, size_t n)
{
	size_t from = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		unsigned char second = i + 1 < n ? (unsigned char)p[i + 1] : 0;
		bool c1 = c == 0xc2 && second >= 0x80 && second <= 0x9f;
		if (c != 0x7f && !c1)
			continue;
		fwrite(p + from, 1, i - from, stdout);
		printf("\\u%04x", c1 ? second : c);
		i += c1;
		from = i + 1;
	}
	fwrite(p + from, 1, n - from, stdout);
}

/* A finished job's result, as it is on disk. */
static int print_result(struct cli *c, enum spool_dir dir, const char *id)
{
	char *name = xasprintf("%s.result.json", id);
	struct buf text;
	struct stat st;
	enum spool_read rr = cli_read_text(c, dir, name, &text, &st);
	if (rr == SPOOL_READ_OK)
		put_json(text.data, text.len);
	buf_release(&text);
	int rc = CLI_OK;
	if (rr != SPOOL_READ_OK)
		rc = cli_fail(c, CLI_ERROR, "cannot read '%s/%s': %s", spool_dir_name(dir), name,
			      spool_read_reason(rr));
	free(name);
	return rc;
}

/* A job's own webhook_url may carry user:token@ or a token in its query: a new string without
 * them, or NULL when url is not a string. */
static json_t *url_shown(const json_t *url)
{
	const char *s = json_string_value(url);
	if (!s)
		return NULL;
	char *shown = url_redacted(s);
	json_t *v = json_string(shown);
	free(shown);
	return v;
}

static void redact_webhook_url(json_t *doc)
{
	json_t *shown = url_shown(json_object_get(doc, "webhook_url"));
	if (shown)
		json_object_set_new(doc, "webhook_url", shown);
}

/* A file too big to re-indent, as it is written, the values of its webhook_url members (every
 * one: the bytes may name it more than once) redacted by url_shown. False when it is not a
 * JSON object: the scan refuses a raw control byte as jansson does, so what is printed holds
 * none but white space between values (a client's escapes on an operator's terminal). */
static bool print_as_written(const struct buf *text)
{
	long n = job_member_values(text->data, text->len, "webhook_url", NULL, 0);
	if (n < 0)
		return false;
	struct job_span *spans = xcalloc((size_t)n + 1, sizeof(*spans));
	job_member_values(text->data, text->len, "webhook_url", spans, (size_t)n);
	size_t at = 0;
	for (long i = 0; i < n; i++) {
		put_json(text->data + at, spans[i].start - at);
		json_t *url = json_loadb(text->data + spans[i].start, spans[i].end - spans[i].start,
					 JSON_DECODE_ANY, NULL);
		json_t *shown = url_shown(url);
		char *out = shown ? json_dumps(shown, JSON_ENCODE_ANY) : NULL;
		if (out)
			put_json(out, strlen(out));
		else
			put_json(text->data + spans[i].start, spans[i].end - spans[i].start);
		free(out);
		json_decref(shown);
		json_decref(url);
		at = spans[i].end;
	}
	put_json(text->data + at, text->len - at);
	if (!text->len || text->data[text->len - 1] != '\n')
		putchar('\n');
	free(spans);
	return true;
}

/* "LABEL:" and the file pretty-printed, or bad when it is not JSON (or cannot be read, when
 * say_unread; else nothing is printed for a file that cannot be read). A file over
 * CLI_PARSE_WHOLE_MAX is printed as it is written instead (print_as_written): re-indenting the
 * largest job (64 MiB, nested deep) took gigabytes of memory and printed some thirty times its
 * size. */
static void print_pretty(struct cli *c, enum spool_dir dir, const char *name, const char *label,
			 const char *bad, bool say_unread)
{
	struct buf text;
	struct stat st;
	enum spool_read rr = cli_read_text(c, dir, name, &text, &st);
	if (rr == SPOOL_READ_OK && text.len > CLI_PARSE_WHOLE_MAX) {
		printf("%s:\n", label);
		if (!print_as_written(&text))
			printf("%s\n", bad);
		buf_release(&text);
		return;
	}
	json_t *doc = rr == SPOOL_READ_OK ? json_loadb(text.data, text.len, 0, NULL) : NULL;
	buf_release(&text);
	redact_webhook_url(doc);
	char *pretty = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
	if (rr == SPOOL_READ_OK || say_unread) {
		printf("%s:\n", label);
		if (pretty)
			put_json(pretty, strlen(pretty));
		else
			fputs(bad, stdout);
		putchar('\n');
	}
	free(pretty);
	json_decref(doc);
}

static int exit_for(enum spool_dir dir)
{
	return dir == SPOOL_DONE ? CLI_OK : dir == SPOOL_FAILED ? CLI_FAILED : CLI_PENDING;
}

static int no_job(struct cli *c, const char *id)
{
	return cli_fail(c, CLI_ERROR, "no job '%s' in '%s' (not submitted, purged, or another spool)",
			id, c->dir);
}

/* The job named by a verb's one argument: CLI_OK with id and w filled, or the error said. */
static int locate_arg(struct cli *c, int argc, char **argv, const char *usage, char *id,
		      struct cli_where *w)
{
	if (argc != 2)
		return cli_fail(c, CLI_USAGE, "usage: imgspool %s", usage);
	if (!cli_task_id(argv[1], id, JOB_ID_MAX + 1))
		return cli_fail(c, CLI_USAGE, "'%s' is not a valid task id", argv[1]);
	if (cli_locate(c, id, w) < 0)
		return no_job(c, id);
	return CLI_OK;
}

int cli_status(struct cli *c, int argc, char **argv)
{
	char id[JOB_ID_MAX + 1];
	struct cli_where w;
	int rc = locate_arg(c, argc, argv, "status ID", id, &w);
	if (rc != CLI_OK)
		return rc;
	if (w.dir != SPOOL_DONE && w.dir != SPOOL_FAILED) {
		printf("%s%s%s\n", cli_state_word(w.dir), w.host[0] ? " on " : "", w.host);
		return CLI_PENDING;
	}
	rc = print_result(c, w.dir, id);
	return rc == CLI_OK ? exit_for(w.dir) : rc;
}

int cli_show(struct cli *c, int argc, char **argv)
{
	char id[JOB_ID_MAX + 1];
	struct cli_where w;
	int rc = locate_arg(c, argc, argv, "show ID", id, &w);
	if (rc != CLI_OK)
		return rc;
	struct cli_info info;
	if (cli_info_read(c, w.dir, w.name, -1, false, &info) < 0)
		return no_job(c, id);
	char age[16];
	cli_format_age(wall_ms() - info.age_from_ms, age, sizeof(age));
	printf("id:       %s\nstate:    %s%s%s\nfile:     %s/%s/%s\nage:      %s\n", id,
	       cli_state_word(w.dir), w.host[0] ? " on " : "", w.host, c->dir, spool_dir_name(w.dir),
	       w.name, age);
	if (info.next_retry_ms) {
		char when[48];
		format_time_iso8601(info.next_retry_ms, when, sizeof(when));
		printf("retry at: %s\n", when);
	}
	if (w.dir == SPOOL_RUNNING || w.dir == SPOOL_NEW || w.dir == SPOOL_DEFERRED ||
	    w.dir == SPOOL_HOLD) {
		struct control ctl;
		control_init(&ctl);
		if (control_read(&ctl, &c->sp) == 0) {
			if (control_wants(&ctl, CONTROL_HOLD, id))
				printf("request:  hold (at its next transition)\n");
			if (control_wants(&ctl, CONTROL_CANCEL, id))
				printf("request:  cancel\n");
		}
		control_release(&ctl);
	}
	/* The job file (the daemon's records included), then the result. */
	print_pretty(c, w.dir, w.name, "job", "(not JSON)", false);
	if (w.dir == SPOOL_DONE || w.dir == SPOOL_FAILED) {
		char *name = xasprintf("%s.result.json", id);
		print_pretty(c, w.dir, name, "result", "(missing or not JSON)", true);
		free(name);
	}
	return exit_for(w.dir);
}

int cli_wait(struct cli *c, int argc, char **argv)
{
	long seconds = 0;
	int opt;
	while ((opt = getopt(argc, argv, "t:")) != -1) {
		if (opt != 't' || parse_long(optarg, 1, 86400 * 365, &seconds) < 0)
			return cli_fail(c, CLI_USAGE, "usage: imgspool wait [-t SECONDS] ID...");
	}
	int n = argc - optind;
	if (n < 1)
		return cli_fail(c, CLI_USAGE, "usage: imgspool wait [-t SECONDS] ID...");
	char (*ids)[JOB_ID_MAX + 1] = xcalloc((size_t)n, sizeof(*ids));
	enum spool_dir *where = xcalloc((size_t)n, sizeof(*where));
	bool *finished = xcalloc((size_t)n, sizeof(*finished));
	int rc = CLI_OK;
	for (int i = 0; i < n; i++)
		if (!cli_task_id(argv[optind + i], ids[i], sizeof(ids[i]))) {
			rc = cli_fail(c, CLI_USAGE, "'%s' is not a valid task id", argv[optind + i]);
			goto out;
		}
	int64_t start = mono_ms(), deadline = seconds ? start + seconds * 1000 : 0;
	int left = n;
	/* Polling is the protocol's way for any client on any host (NFS sends no events). */
	for (;;) {
		for (int i = 0; i < n; i++) {
			if (finished[i])
				continue;
			struct cli_where w;
			if (cli_locate(c, ids[i], &w) < 0) {
				if (mono_ms() - start < MISSING_GRACE_MS)
					continue;
				rc = no_job(c, ids[i]);
				goto out;
			}
			where[i] = w.dir;
			if (w.dir == SPOOL_DONE || w.dir == SPOOL_FAILED) {
				finished[i] = true;
				left--;
			}
		}
		if (!left)
			break;
		if (deadline && mono_ms() >= deadline) {
			for (int i = 0; i < n; i++)
				if (!finished[i])
					cli_fail(c, CLI_PENDING, "job '%s' not finished after %lds (%s)", ids[i],
						 seconds, cli_state_word(where[i]));
			rc = CLI_PENDING;
			goto out;
		}
		struct timespec pause = { .tv_nsec = WAIT_POLL_MS * 1000000L };
		nanosleep(&pause, NULL);
	}
	if (n == 1) {
		rc = print_result(c, where[0], ids[0]);
		if (rc == CLI_OK)
			rc = exit_for(where[0]);
		goto out;
	}
	for (int i = 0; i < n; i++) {
		printf("%s\t%s\n", ids[i], cli_state_word(where[i]));
		if (where[i] == SPOOL_FAILED)
			rc = CLI_FAILED;
	}
out:
	free(ids);
	free(where);
	free(finished);
	return rc;
}

/* ---- ls ------------------------------------------------------------------------------------ */

static int states_from_args(struct cli *c, int argc, char **argv, bool want[SPOOL_NDIRS],
			    bool finished_only)
{
	bool any = false;
	for (int i = 0; i < SPOOL_NDIRS; i++)
		want[i] = false;
	for (int i = optind; i < argc; i++) {
		int d = cli_state_from_name(argv[i]);
		if (d < 0 || (finished_only && d != SPOOL_DONE && d != SPOOL_FAILED))
			return cli_fail(c, CLI_USAGE, "'%s' is not a state: use %s", argv[i],
					finished_only ? "done or failed"
					: "new, running, deferred, hold, done or failed");
		want[d] = any = true;
	}
	if (!any)
		for (size_t i = 0; i < ARRAY_SIZE(cli_states); i++)
			want[cli_states[i]] = !finished_only || cli_states[i] == SPOOL_DONE ||
					      cli_states[i] == SPOOL_FAILED;
	return CLI_OK;
}

static void print_json_line(const struct cli_info *in, int64_t now)
{
	json_t *o = json_object();
	char when[48];
	json_object_set_new(o, "id", json_string(in->id));
	json_object_set_new(o, "state", json_string(spool_dir_name(in->dir)));
	json_object_set_new(o, "age_s", json_integer((now - in->age_from_ms) / 1000));
	json_object_set_new(o, "provider", in->provider[0] ? json_string(in->provider) : json_null());
	json_object_set_new(o, "model", in->model[0] ? json_string(in->model) : json_null());
	json_object_set_new(o, "host", in->host[0] ? json_string(in->host) : json_null());
	json_object_set_new(o, "attempts", json_integer(in->attempts));
	if (in->next_retry_ms) {
		format_time_iso8601(in->next_retry_ms, when, sizeof(when));
		json_object_set_new(o, "next_retry_at", json_string(when));
	} else {
		json_object_set_new(o, "next_retry_at", json_null());
	}
	json_object_set_new(o, "error_code", in->error_code[0] ? json_string(in->error_code) : json_null());
	json_object_set_new(o, "cost", in->has_cost ? json_real(in->cost) : json_null());
	json_object_set_new(o, "currency", in->has_cost && in->currency[0] ? json_string(in->currency)
							     : json_null());
	char *line = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	puts(line);
	free(line);
	json_decref(o);
}

static void print_row(const struct cli_info *in, int64_t now)
{
	char age[16], next[16] = "-";
	cli_format_age(now - in->age_from_ms, age, sizeof(age));
	if (in->next_retry_ms)
		cli_format_age(in->next_retry_ms - now, next, sizeof(next));
	printf("%-8s %5s %-10s %-22s %-12s %3d %5s %-20s %s\n", spool_dir_name(in->dir), age,
	       in->provider[0] ? in->provider : "-", in->model[0] ? in->model : "-",
	       in->host[0] ? in->host : "-", in->attempts, next,
	       in->error_code[0] ? in->error_code : "-", in->id);
}

/* Calls fn for every job of the wanted states, oldest first within a state. What is kept is
 * one state's index of names; each job's document is read, used and let go. */
typedef void info_fn(struct cli_info *in, void *arg);
static int each_job(struct cli *c, const bool want[SPOOL_NDIRS], info_fn *fn, void *arg)
{
	for (size_t k = 0; k < ARRAY_SIZE(cli_states); k++) {
		enum spool_dir d = cli_states[k];
		if (!want[d] || c->sp.fd[d] < 0)
			continue;
		struct cli_index ix;
		cli_index_init(&ix);
		if (cli_index_add(c, &ix, d) < 0) {
			int err = errno;
			cli_index_release(&ix);
			return cli_fail(c, CLI_ERROR, "cannot read '%s/%s': %s", c->dir, spool_dir_name(d),
					strerror(err));
		}
		cli_index_sort(&ix, false);
		for (size_t i = 0; i < ix.n; i++) {
			struct cli_info in;
			if (cli_info_read(c, d, cli_index_name(&ix, i), ix.jobs[i].mtime_ns / 1000000,
					  false, &in) < 0)
				continue;
			fn(&in, arg);
			cli_info_release(&in);
		}
		cli_index_release(&ix);
	}
	return CLI_OK;
}

struct ls_state {
	bool json;
	int64_t now;
};

static void ls_one(struct cli_info *in, void *arg)
{
	struct ls_state *ls = arg;
	if (ls->json)
		print_json_line(in, ls->now);
	else
		print_row(in, ls->now);
}

int cli_ls(struct cli *c, int argc, char **argv)
{
	struct ls_state ls = { .now = wall_ms() };
	int opt;
	while ((opt = getopt(argc, argv, "j")) != -1) {
		if (opt != 'j')
			return cli_fail(c, CLI_USAGE, "usage: imgspool ls [-j] [STATE...]");
		ls.json = true;
	}
	bool want[SPOOL_NDIRS];
	int rc = states_from_args(c, argc, argv, want, false);
	if (rc != CLI_OK)
		return rc;
	if (!ls.json)
		printf("%-8s %5s %-10s %-22s %-12s %3s %5s %-20s %s\n", "STATE", "AGE", "PROVIDER",
		       "MODEL", "HOST", "ATT", "NEXT", "ERROR", "ID");
	return each_job(c, want, ls_one, &ls);
}

/* ---- stat ---------------------------------------------------------------------------------- */

#define STAT_PROVIDERS 32

struct stat_row {
	char provider[72];
	long count[CLI_BUCKETS];
	long total;
};

struct money {
	char currency[8];
	double today, month;
};

struct stat_state {
	int64_t now, today_start, month_start;
	struct stat_row rows[SPOOL_NDIRS][STAT_PROVIDERS + 1];   /* [0]: all providers */
	int n_rows[SPOOL_NDIRS];
	int64_t oldest_pending;
	struct money money[8];
	int n_money;
};

static void stat_one(struct cli_info *in, void *arg)
{
	struct stat_state *st = arg;
	int b = cli_age_bucket(st->now - in->age_from_ms);
	const char *prov = in->provider[0] ? in->provider : "(default)";
	struct stat_row *rows = st->rows[in->dir];
	int *n = &st->n_rows[in->dir];
	if (*n == 0) {
		xsnprintf(rows[0].provider, sizeof(rows[0].provider), "TOTAL");
		*n = 1;
	}
	int r = 1;
	while (r < *n && strcmp(rows[r].provider, prov))
		r++;
	if (r == *n && *n <= STAT_PROVIDERS) {
		xsnprintf(rows[r].provider, sizeof(rows[r].provider), "%s", prov);
		(*n)++;
	}
	for (int k = 0; k < 2; k++) {
		struct stat_row *row = k ? (r < *n ? &rows[r] : NULL) : &rows[0];
		if (row) {
			row->count[b]++;
			row->total++;
		}
	}
	if ((in->dir == SPOOL_NEW || in->dir == SPOOL_DEFERRED) &&
	    (!st->oldest_pending || in->age_from_ms < st->oldest_pending))
		st->oldest_pending = in->age_from_ms;
	if (in->has_cost && in->mtime_ms >= st->month_start) {
		int m = 0;
		while (m < st->n_money && strcmp(st->money[m].currency, in->currency))
			m++;
		if (m == st->n_money && m < (int)ARRAY_SIZE(st->money))
			xsnprintf(st->money[st->n_money++].currency, sizeof(st->money[0].currency), "%s",
				  in->currency);
		if (m < st->n_money) {
			st->money[m].month += in->cost;
			if (in->mtime_ms >= st->today_start)
				st->money[m].today += in->cost;
		}
	}
}

/* A webhook endpoint that answered 410 Gone (control/gone.KEY, spool-layout.md §14). */
struct gone_endpoint {
	const char *key;
	char *url;               /* url_redacted; NULL if unreadable */
	int64_t since_ms;        /* the file's mtime: when the 410 came */
};

static int gone_cmp(const void *a, const void *b)
{
	return strcmp(((const struct gone_endpoint *)a)->key, ((const struct gone_endpoint *)b)->key);
}

/* The endpoints the last read of control/ found gone, by key; the caller frees each url and
 * *out. */
static size_t gone_endpoints(struct cli *c, const struct control *ctl, struct gone_endpoint **out)
{
	*out = xcalloc(ctl->gone.count + 1, sizeof(**out));
	size_t n = 0;
	for (size_t i = 0; i < ctl->gone.cap && n < ctl->gone.count; i++) {
		const char *key = ctl->gone.slots[i];
		if (!key || !key[0])
			continue;
		struct gone_endpoint *g = &(*out)[n++];
		g->key = key;
		char *name = control_name(CONTROL_GONE, key);
		struct buf text;
		struct stat st;
		buf_init(&text, 8192);
		if (spool_read_file(c->sp.fd[SPOOL_CONTROL], name, 8192, &text, &st) == SPOOL_READ_OK) {
			/* An empty file has no data at all: its URL is unknown. */
			if (text.len)
				g->url = url_redacted(text.data);
			g->since_ms = timespec_ms(&st.st_mtim);
		}
		buf_release(&text);
		free(name);
	}
	qsort(*out, n, sizeof(**out), gone_cmp);
	return n;
}

int cli_stat(struct cli *c, int argc, char **argv)
{
	int opt;
	bool json = false;
	while ((opt = getopt(argc, argv, "j")) != -1) {
		if (opt != 'j')
			return cli_fail(c, CLI_USAGE, "usage: imgspool stat [-j]");
		json = true;
	}
	if (optind != argc)
		return cli_fail(c, CLI_USAGE, "usage: imgspool stat [-j]");
	struct stat_state *st = xcalloc(1, sizeof(*st));
	st->now = wall_ms();
	time_t now_s = (time_t)(st->now / 1000);
	struct tm tm;
	localtime_r(&now_s, &tm);
	tm.tm_hour = tm.tm_min = tm.tm_sec = 0;
	tm.tm_isdst = -1;
	st->today_start = (int64_t)mktime(&tm) * 1000;
	tm.tm_mday = 1;
	tm.tm_isdst = -1;
	st->month_start = (int64_t)mktime(&tm) * 1000;
	bool want[SPOOL_NDIRS];
	states_from_args(c, argc, argv, want, false);
	int rc = each_job(c, want, stat_one, st);
	struct control ctl;
	control_init(&ctl);
	control_read(&ctl, &c->sp);
	struct gone_endpoint *gone;
	size_t n_gone = gone_endpoints(c, &ctl, &gone);
	if (rc == CLI_OK && json) {
		json_t *o = json_object(), *states = json_object();
		for (size_t k = 0; k < ARRAY_SIZE(cli_states); k++) {
			enum spool_dir d = cli_states[k];
			json_t *provs = json_object();
			for (int r = 0; r < st->n_rows[d]; r++) {
				json_t *b = json_object();
				for (int i = 0; i < CLI_BUCKETS; i++)
					json_object_set_new(b, cli_bucket_names[i], json_integer(st->rows[d][r].count[i]));
				json_object_set_new(b, "total", json_integer(st->rows[d][r].total));
				json_object_set_new(provs, r ? st->rows[d][r].provider : "total", b);
			}
			json_object_set_new(states, spool_dir_name(d), provs);
		}
		json_object_set_new(o, "states", states);
		json_object_set_new(o, "oldest_pending_s", st->oldest_pending ?
				    json_integer((st->now - st->oldest_pending) / 1000) : json_null());
		json_t *money = json_array();
		for (int m = 0; m < st->n_money; m++)
			json_array_append_new(money, json_pack("{s:s, s:f, s:f}", "currency",
							       st->money[m].currency, "today",
							       st->money[m].today, "month", st->money[m].month));
		json_object_set_new(o, "spent", money);
		json_object_set_new(o, "paused", json_boolean(ctl.pause_all));
		json_t *endpoints = json_array();
		for (size_t i = 0; i < n_gone; i++) {
			char *file = control_name(CONTROL_GONE, gone[i].key);
			json_array_append_new(endpoints, json_pack(
				"{s:s?, s:s, s:o, s:s++}", "url", gone[i].url, "key", gone[i].key,
				"since_s", gone[i].since_ms ? json_integer((st->now - gone[i].since_ms) / 1000)
							    : json_null(),
				"file", spool_dir_name(SPOOL_CONTROL), "/", file));
			free(file);
		}
		json_object_set_new(o, "webhooks_gone", endpoints);
		char *text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
		puts(text);
		free(text);
		json_decref(o);
	} else if (rc == CLI_OK) {
		printf("%-9s %-12s %7s", "STATE", "PROVIDER", "TOTAL");
		for (int i = 0; i < CLI_BUCKETS; i++)
			printf(" %6s", cli_bucket_names[i]);
		putchar('\n');
		for (size_t k = 0; k < ARRAY_SIZE(cli_states); k++) {
			enum spool_dir d = cli_states[k];
			for (int r = 0; r < st->n_rows[d]; r++) {
				printf("%-9s %-12s %7ld", r ? "" : spool_dir_name(d),
				       r ? st->rows[d][r].provider : "total", st->rows[d][r].total);
				for (int i = 0; i < CLI_BUCKETS; i++)
					printf(" %6ld", st->rows[d][r].count[i]);
				putchar('\n');
			}
		}
		char age[16] = "-";
		if (st->oldest_pending)
			cli_format_age(st->now - st->oldest_pending, age, sizeof(age));
		printf("\noldest pending: %s\n", age);
		for (int m = 0; m < st->n_money; m++)
			printf("spent: %.2f %s today, %.2f %s this month\n", st->money[m].today,
			       st->money[m].currency, st->money[m].month, st->money[m].currency);
		if (ctl.pause_all)
			printf("paused: every provider (imgspool resume)\n");
		for (size_t i = 0; i < ctl.paused.cap; i++)
			if (ctl.paused.slots[i] && ctl.paused.slots[i][0] && strcmp(ctl.paused.slots[i], ""))
				printf("paused: %s\n", ctl.paused.slots[i]);
		for (size_t i = 0; i < n_gone; i++) {
			char since[16] = "?";
			if (gone[i].since_ms)
				cli_format_age(st->now - gone[i].since_ms, since, sizeof(since));
			printf("webhooks stopped: %s answered 410 Gone %s ago (its events wait in outbox/)\n"
			       "  to send again: rm '%s/control/gone.%s' (or reload a daemon)\n",
			       gone[i].url ? gone[i].url : "(an endpoint)", since, c->dir, gone[i].key);
		}
	}
	for (size_t i = 0; i < n_gone; i++)
		free(gone[i].url);
	free(gone);
	control_release(&ctl);
	free(st);
	return rc;
}
