/* test_outbox.c - an outbox entry's name is never durable before its bytes: even where a
 * batch's barrier is one syncfs (sync = syncfs, or sync = auto and a batch of two jobs or more),
 * each entry's bytes are synced before its rename, because the journal may commit the rename
 * before the barrier, and after a crash the entry would be empty. And the entries an event
 * makes: a dead host's held targets that are not the daemon's own get the end too, each once,
 * under a name of their own (spool-layout.md §14). */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "outbox.h"
#include "spool.h"
#include "syncset.h"
#include "util.h"
#include "webhook.h"
#include "scratch_spool.h"
#include "tap.h"

static void test_bytes_before_name(bool names_in_order)
{
	char dir[PATH_MAX];
	struct spool sp;
	ok(scratch_mkdtemp(dir, sizeof(dir), "outbox") != NULL && spool_open(&sp, dir, "h1") == 0, "a scratch spool");
	struct outbox_entry *e = xcalloc(2, sizeof(*e));
	e[0] = (struct outbox_entry){ xstrdup("m1.webhook@h1.json"), xstrdup("{\"target\":\"webhook\"}") };
	e[1] = (struct outbox_entry){ xstrdup("m1.exec@h1.json"), xstrdup("{\"target\":\"exec\"}") };
	struct outbox_batch b = { e, 2 };
	struct syncset ss;
	syncset_init(&ss, sp.root_fd, true);   /* its barrier is one syncfs */
	ss.names_in_order = names_in_order;
	ok(outbox_write_in(&sp, &b, &ss) == 0, "two entries written (%s)",
	   names_in_order ? "journaled ext4, sync = auto" : "sync = syncfs");
	ok(ss.calls == 2, "each entry's bytes were synced before its rename, not left to the "
	   "barrier (%lu syncs)", ss.calls);
	struct stat st;
	ok(fstatat(sp.fd[SPOOL_OUTBOX], e[0].name, &st, 0) == 0 && st.st_size == 20 &&
	   fstatat(sp.fd[SPOOL_OUTBOX], e[1].name, &st, 0) == 0, "both are in outbox/");
	ok(syncset_barrier(&ss) == 0, "the barrier");
	syncset_release(&ss);
	outbox_withdraw(&sp, &b);
	outbox_batch_release(&b);
	ok(scratch_spool_remove(&sp, dir) == 0, "the scratch spool removed");
}

#define U_OWN "https://own.example.com/hook"
#define U_DEAD "https://dead.example.com/hook"
#define U_JOB "https://hooks.example.com/a/job"

/* The entries of an event: names (with MSG for its webhook-id, KEY(url) for an endpoint's key,
 * in order), and each webhook entry's url. */
static void test_event_entries(void)
{
	static const struct {
		const char *name;
		const char *notify_url, *exec, *job_url, *state;
		const char *held_urls[3];
		bool held_exec;
		const char *want[4];        /* "webhook", "webhook.KEY:URL", "exec" */
	} rows[] = {
		{ "own url, nothing held", U_OWN, NULL, NULL, "succeeded", { NULL }, false,
		  { "webhook", NULL } },
		{ "a held url that is ours: one entry", U_OWN, NULL, NULL, "succeeded", { U_OWN },
		  false, { "webhook", NULL } },
		{ "a dead host's other url: one more, named for it", U_OWN, NULL, NULL, "failed",
		  { U_DEAD }, false, { "webhook", "webhook.KEY:" U_DEAD, NULL } },
		{ "no url here: the held ones only, each once", NULL, NULL, NULL, "succeeded",
		  { U_DEAD, U_OWN, U_DEAD }, false,
		  { "webhook.KEY:" U_DEAD, "webhook.KEY:" U_OWN, NULL } },
		{ "the job's own url is the held one's", U_OWN, NULL, U_JOB, "succeeded", { U_JOB },
		  false, { "webhook", NULL } },
		{ "a held hook, none here: the hook's entry", NULL, NULL, NULL, "failed", { NULL }, true,
		  { "exec", NULL } },
		{ "a held hook and one here: one entry", NULL, "/bin/true", NULL, "succeeded", { NULL },
		  true, { "exec", NULL } },
		{ "a deferral does not go to held targets", U_OWN, NULL, NULL, "deferred", { U_DEAD },
		  true, { NULL } },
	};
	for (size_t r = 0; r < ARRAY_SIZE(rows); r++) {
		struct config cfg = { .notify_url = (char *)rows[r].notify_url,
				      .notify_exec = (char *)rows[r].exec };
		char *urls[3];
		size_t n_urls = 0;
		for (size_t i = 0; i < 3 && rows[r].held_urls[i]; i++)
			urls[n_urls++] = (char *)rows[r].held_urls[i];
		struct outbox_targets held = { .urls = urls, .n_urls = n_urls,
					       .exec = rows[r].held_exec };
		char *type = xasprintf("job.%s", rows[r].state);
		struct outbox_event ev = { .task_id = "t1", .type = type, .state = rows[r].state,
					   .job_url = rows[r].job_url, .result_path = "/s/done/t1.result.json",
					   .now_ms = 1000, .held = &held };
		struct outbox_batch b;
		outbox_event_entries(&cfg, "h1", &ev, json_object(), &b);
		char msg[WEBHOOK_ID_LEN + 1];
		webhook_id("t1", type, 0, msg);
		size_t want = 0;
		while (want < 4 && rows[r].want[want])
			want++;
		ok(b.n == want, "%s: %zu entries (want %zu)", rows[r].name, b.n, want);
		for (size_t i = 0; i < b.n && i < want; i++) {
			const char *w = rows[r].want[i], *url = strchr(w, ':');
			char *name;
			if (url) {
				char key[WEBHOOK_ENDPOINT_KEY_LEN + 1];
				webhook_endpoint_key(url + 1, key);
				name = xasprintf("%s.webhook.%s@h1.json", msg, key);
			} else {
				name = xasprintf("%s.%s@h1.json", msg, w);
			}
			json_t *doc = json_loads(b.e[i].text, 0, NULL);
			const char *got_url = json_string_value(json_object_get(doc, "url"));
			const char *want_url = url ? url + 1 : !strcmp(w, "webhook")
				? (rows[r].job_url ? rows[r].job_url : rows[r].notify_url) : NULL;
			ok(!strcmp(b.e[i].name, name) && (want_url ? got_url && !strcmp(got_url, want_url)
						       : !got_url),
			   "%s: entry %zu is %s (%s)", rows[r].name, i, name, b.e[i].name);
			json_decref(doc);
			free(name);
		}
		outbox_batch_release(&b);
		free(type);
	}
}

int main(void)
{
	test_event_entries();
	test_bytes_before_name(false);
	test_bytes_before_name(true);
	return tap_done();
}
