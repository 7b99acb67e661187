/* outbox.c - webhook deliveries and hook runs, durable in outbox/, driven by the loop.
 *
 * Entries are written by the publication (on an I/O helper) before the job file moves, so an
 * event is never lost: a crash before the move re-finishes the job and rewrites the same entry
 * (its name comes from the webhook-id); a crash after it leaves the entry for the next start.
 * Delivery is at least once, with the same webhook-id every time. An entry is not delivered
 * while its job is still held by this daemon, so nobody hears of a job before done/ says it.
 *
 * Webhooks: POST, no redirects (a 3xx is a failure), a 2xx is success, anything else is retried
 * after retry_base_ms doubling to retry_cap_ms (or the receiver's Retry-After when longer) until
 * give_up_after. A 410 says the endpoint is gone: control/gone.KEY tells every daemon, and its
 * entries are parked (looked at again every retry_cap_ms, for give_up_after) until an operator
 * removes that file or reloads; a file older than give_up_after that no entry is for goes. Addresses that are not public are refused on the connected
 * socket unless allow_private. Entries of a host that stopped (due more than lease_timeout ago)
 * are taken over by another daemon with one rename, unless their job is still that host's in
 * running/: the daemon that reclaims the job takes its end events along, held under a name
 * that says so (MSGID.TARGET@HOST.held: no scan sends or takes it), so that a restart knows
 * them from the files alone; the job's end reaches their targets too (its publication queues
 * entries for the URLs, and the hook, that none of its own is for: MSGID.webhook.KEY@HOST.json)
 * and drops them once it is out, and a publication the dead host staged whole releases its
 * end's. An entry is rewritten only over itself, so one taken back or over while it was being
 * sent stays gone; one is taken over only by a daemon that can deliver it, never over another. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "control.h"
#include "hook.h"
#include "http.h"
#include "iopool.h"
#include "job.h"
#include "jsontext.h"
#include "log.h"
#include "loop.h"
#include "outbox.h"
#include "retry.h"
#include "spool.h"
#include "util.h"
#include "webhook.h"
#include "banned.h"

#define WEBHOOKS_IN_FLIGHT 16

struct delivery {
	struct outbox *o;
	struct delivery *prev, *next;
	char *name;
	json_t *doc;             /* the entry */
	struct http_xfer *xfer;
	char *text;              /* rewritten entry, on a helper */
	char *gone_url;          /* the endpoint answered 410: its control/gone.KEY, on the helper */
	char gone_key[WEBHOOK_ENDPOINT_KEY_LEN + 1];   /* of the full URL; gone_url is redacted */
	int64_t due;
	int rc;
	int err;                 /* errno of the rewrite, on the helper */
};

/* An entry of ours that waits for its endpoint to come back. */
struct parked {
	char *name;
	char key[WEBHOOK_ENDPOINT_KEY_LEN + 1];
};

struct outbox {
	struct loop *loop;
	struct http *http;
	struct iopool *pool;
	struct spool *spool;
	struct config *const *cfgp;
	struct hooks *hooks;
	outbox_busy_fn *busy;
	void *busy_arg;
	struct strset in_flight; /* entry names being delivered or rewritten */
	struct delivery *deliveries;
	int webhooks;            /* POSTs in flight */
	int rewriting;           /* entries on a helper */
	uint64_t timer;
	int64_t timer_due;       /* wall ms */
	bool secret_warned;
	bool capped;             /* due entries waited for a free slot: scan when one frees */
	struct control *control; /* borrowed: the requests in control/ (gone endpoints) */
	struct parked *parked;   /* our entries parked for a gone endpoint, in this run */
	size_t n_parked;
	struct strset parked_names;
	struct strset woken;     /* parked entries whose endpoint is back: due at once */
	int64_t next_gone_check; /* mono ms: when old control/gone.KEY markers are looked at */
	struct strset held;      /* our MSGID.TARGET@HOST.held (outbox_take_along) */
	bool held_listed;        /* held has what outbox/ had (held_listed) */
	struct spool_entry *reclaim_list;   /* outbox/ as listed once per pass of reclaims */
	long reclaim_n;                     /* -1: not listed in this pass */
	bool reclaiming;                    /* between outbox_reclaims_begin and _end */
	bool swept;                         /* held entries left by a stop looked at (sweep_held) */
	struct outbox_stats stats;
};

static const char *str(json_t *doc, const char *key);
static json_t *entry_read(struct outbox *o, const char *name, bool mine);

/* ---- building entries ------------------------------------------------------------------- */

/* Whether an entry's name (MSGID.TARGET@HOST.EXT) is a webhook's: TARGET webhook, or
 * webhook.KEY for a URL besides the daemon's own. */
static bool webhook_name(const char *name)
{
	const char *dot = strchr(name, '.');
	return dot && !strncmp(dot + 1, "webhook", 7) && (dot[8] == '@' || dot[8] == '.');
}

/* Whether this daemon can deliver the entry named so: a webhook needs a secret to sign it
 * with, a hook a program. */
static bool deliverable(const struct config *cfg, const char *name)
{
	return webhook_name(name) ? cfg->notify_secret != NULL : cfg->notify_exec != NULL;
}

/* MSGID.webhook.KEY@HOST.EXT of name (MSGID.TARGET@HOST.EXT) for url: the entry of that event
 * for that URL, beside one of the same event for another. */
static char *url_twin(const char *name, const char *url)
{
	char key[WEBHOOK_ENDPOINT_KEY_LEN + 1];
	webhook_endpoint_key(url, key);
	const char *dot = strchr(name, '.'), *at = strrchr(name, '@');
	return xasprintf("%.*s.webhook.%s%s", (int)(dot ? dot - name : 0), name, key, at ? at : "");
}

/* Adds the entry of doc (stolen) named MSGID.TARGET@HOST.json, unless the batch has it. */
static void add_entry(struct outbox_batch *b, const char *msg_id, const char *target,
		      const char *host_id, json_t *doc)
{
	char *name = xasprintf("%s.%s@%s.json", msg_id, target, host_id);
	for (size_t i = 0; i < b->n; i++)
		if (!strcmp(b->e[i].name, name)) {
			free(name);
			json_decref(doc);
			return;
		}
	b->e = xrealloc(b->e, (b->n + 1) * sizeof(*b->e));
	char *text = jsontext_dump(doc, JSON_COMPACT | JSON_PRESERVE_ORDER, SIZE_MAX, NULL);
	if (!text)
		out_of_memory("writing an outbox entry");   /* fails only so: its strings are UTF-8 */
	json_decref(doc);
	b->e[b->n++] = (struct outbox_entry){ .name = name, .text = text };
}

static void add_webhook(struct outbox_batch *b, const char *msg_id, const char *target,
			const char *host_id, const struct outbox_event *ev, const char *url,
			const char *body)
{
	add_entry(b, msg_id, target, host_id,
		  json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:i}", "target", "webhook", "id",
			    msg_id, "task_id", ev->task_id, "type", ev->type, "url", url, "body",
			    body, "created_at_ms", (json_int_t)ev->now_ms, "attempts", 0));
}

void outbox_event_entries(const struct config *cfg, const char *host_id,
			  const struct outbox_event *ev, json_t *data, struct outbox_batch *out)
{
	out->e = NULL;
	out->n = 0;
	char msg_id[WEBHOOK_ID_LEN + 1];
	webhook_id(ev->task_id, ev->type, ev->seq, msg_id);
	bool deferral = !strcmp(ev->state, "deferred");
	const char *url = ev->job_url ? ev->job_url : cfg->notify_url;
	if (deferral && !cfg->notify_deferrals)
		url = NULL;
	const struct outbox_targets *held = deferral ? NULL : ev->held;
	char *body = url || (held && held->n_urls)
		     ? webhook_body(ev->type, ev->now_ms, json_incref(data)) : NULL;
	if (url)
		add_webhook(out, msg_id, "webhook", host_id, ev, url, body);
	/* A dead host's targets that are not ours hear the end we reached, by the same id. */
	for (size_t i = 0; held && i < held->n_urls; i++) {
		if (url && !strcmp(held->urls[i], url))
			continue;
		char key[WEBHOOK_ENDPOINT_KEY_LEN + 1];
		webhook_endpoint_key(held->urls[i], key);
		char *target = xasprintf("webhook.%s", key);
		add_webhook(out, msg_id, target, host_id, ev, held->urls[i], body);
		free(target);
	}
	if (!deferral && (cfg->notify_exec || (held && held->exec)))
		add_entry(out, msg_id, "exec", host_id,
			  json_pack("{s:s, s:s, s:s, s:s, s:s, s:I}", "target", "exec", "id", msg_id,
				    "task_id", ev->task_id, "state", ev->state, "result_path",
				    ev->result_path, "created_at_ms", (json_int_t)ev->now_ms));
	free(body);
	json_decref(data);
}

int outbox_write_in(struct spool *sp, const struct outbox_batch *b, struct syncset *ss)
{
	for (size_t i = 0; i < b->n; i++)
		if (spool_write_final_in(sp, sp->fd[SPOOL_OUTBOX], b->e[i].name, b->e[i].text,
				   strlen(b->e[i].text), ss) < 0)
			return -1;
	return 0;
}

int outbox_write(struct spool *sp, const struct outbox_batch *b)
{
	struct syncset ss;
	syncset_init(&ss, sp->root_fd, false);
	int rc = outbox_write_in(sp, b, &ss);
	if (rc == 0)
		rc = syncset_barrier(&ss);
	syncset_release(&ss);
	return rc;
}

void outbox_withdraw(struct spool *sp, const struct outbox_batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		unlinkat(sp->fd[SPOOL_OUTBOX], b->e[i].name, 0);
}

static const char *const event_targets[] = { "webhook", "exec" };
static const char *const end_types[] = { "job.succeeded", "job.failed" };

/* The name of the entry of task_id's event type (a terminal one) for target, of host: ext
 * ".json" for one to send, ".held" for one held for the job's run on host (taken along). */
static char *end_entry_name(const char *task_id, const char *type, const char *target,
			    const char *host, const char *ext)
{
	char msg_id[WEBHOOK_ID_LEN + 1];
	webhook_id(task_id, type, 0, msg_id);
	return xasprintf("%s.%s@%s%s", msg_id, target, host, ext);
}

/* Removes outbox/name if this host wrote it at or after since_ms (its created_at_ms). */
static bool withdraw_if_since(struct spool *sp, const char *name, int64_t since_ms)
{
	struct buf b;
	struct stat st;
	buf_init(&b, 256 << 10);
	json_t *doc = spool_read_file(sp->fd[SPOOL_OUTBOX], name, 256 << 10, &b, &st) ==
		      SPOOL_READ_OK ? json_loadb(b.data, b.len, 0, NULL) : NULL;
	json_t *created = json_object_get(doc, "created_at_ms");
	bool gone = json_is_integer(created) && json_integer_value(created) >= since_ms &&
		    unlinkat(sp->fd[SPOOL_OUTBOX], name, 0) == 0;
	json_decref(doc);
	buf_release(&b);
	return gone;
}

int outbox_withdraw_since(struct outbox *o, const char *task_id, const char *type,
			  int64_t since_ms, const struct outbox_targets *held)
{
	struct spool *sp = o->spool;
	int n = 0;
	for (size_t i = 0; i < ARRAY_SIZE(event_targets); i++) {
		char *name = end_entry_name(task_id, type, event_targets[i], sp->host_id, ".json");
		n += withdraw_if_since(sp, name, since_ms);
		/* The cut publication's entries for the held targets too (outbox_event_entries). */
		for (size_t k = 0; !i && held && k < held->n_urls; k++) {
			char *twin = url_twin(name, held->urls[k]);
			n += withdraw_if_since(sp, twin, since_ms);
			free(twin);
		}
		free(name);
	}
	return n;
}

/* Our held entries, from one listing of outbox/ (the first question) and our own renames
 * since: only this host names an entry MSGID.TARGET@HOST.held. */
static void held_listed(struct outbox *o)
{
	if (o->held_listed)
		return;
	struct spool_entry *e;
	long n = spool_list_names(o->spool, SPOOL_OUTBOX, false, &e);
	if (n < 0)
		return;   /* listed again at the next job adopted; its names looked at meanwhile */
	char *mine = xasprintf("@%s.held", o->spool->host_id);
	size_t ml = strlen(mine);
	for (long i = 0; i < n; i++) {
		size_t len = strlen(e[i].name);
		if (len > ml && !strcmp(e[i].name + len - ml, mine))
			strset_add(&o->held, e[i].name);
	}
	free(mine);
	spool_entries_free(e, n);
	o->held_listed = true;
}

/* The names of the entries we hold for task_id's end events (owned; *names owned too): those
 * listed (held_listed), of every target; unlisted (outbox/ could not be read), each plain name
 * (MSGID.webhook, MSGID.exec) is looked at, so a held event is neither lost to a completed
 * publication nor left for ever. */
static size_t held_names(struct outbox *o, const char *task_id, char ***names)
{
	held_listed(o);
	char msg_ids[ARRAY_SIZE(end_types)][WEBHOOK_ID_LEN + 1];
	for (size_t k = 0; k < ARRAY_SIZE(end_types); k++)
		webhook_id(task_id, end_types[k], 0, msg_ids[k]);
	size_t n = 0;
	*names = NULL;
	if (o->held_listed) {
		for (size_t i = 0; i < o->held.cap && o->held.count; i++) {
			const char *name = o->held.slots[i];
			if (!name || strlen(name) <= WEBHOOK_ID_LEN || name[WEBHOOK_ID_LEN] != '.')
				continue;
			for (size_t k = 0; k < ARRAY_SIZE(end_types); k++)
				if (!strncmp(name, msg_ids[k], WEBHOOK_ID_LEN)) {
					*names = xrealloc(*names, (n + 1) * sizeof(**names));
					(*names)[n++] = xstrdup(name);
				}
		}
		return n;
	}
	for (size_t i = 0; i < ARRAY_SIZE(event_targets); i++)
		for (size_t k = 0; k < ARRAY_SIZE(end_types); k++) {
			char *name = xasprintf("%s.%s@%s.held", msg_ids[k], event_targets[i],
					       o->spool->host_id);
			if (spool_exists(o->spool->fd[SPOOL_OUTBOX], name)) {
				strset_add(&o->held, name);
				*names = xrealloc(*names, (n + 1) * sizeof(**names));
				(*names)[n++] = name;
			} else {
				free(name);
			}
		}
	return n;
}

static void names_free(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Renames outbox/src to dst, never over another entry: one there by that name is the same
 * event when it goes to the same place (its URL; a hook's is the hook), and src is removed;
 * one for another URL keeps its name, and src goes under its URL's (url_twin). Returns the
 * name the event has now (owned), or NULL (errno; ENOENT: src was gone). */
static char *move_entry(struct outbox *o, const char *src, const char *dst)
{
	struct spool *sp = o->spool;
	if (spool_rename_noreplace(sp, SPOOL_OUTBOX, src, SPOOL_OUTBOX, dst) == 0)
		return xstrdup(dst);
	if (errno != EEXIST)
		return NULL;
	json_t *from = entry_read(o, src, false), *there = entry_read(o, dst, false);
	const char *url = str(from, "url");
	char *now = xstrdup(dst);
	if (url[0] && strcmp(url, str(there, "url"))) {
		free(now);
		now = url_twin(dst, url);
		int rc = spool_rename_noreplace(sp, SPOOL_OUTBOX, src, SPOOL_OUTBOX, now);
		if (rc == 0 || errno != EEXIST) {
			json_decref(from);
			json_decref(there);
			if (rc < 0) {
				free(now);
				return NULL;
			}
			return now;
		}
	}
	json_decref(from);
	json_decref(there);
	if (unlinkat(sp->fd[SPOOL_OUTBOX], src, 0) < 0) {
		free(now);
		return NULL;
	}
	return now;
}

/* Takes src (an entry of task_id's end) as mine (its .held name): one winner against a daemon
 * taking it over; one held here by that name is the same event (its webhook-id), unless it
 * goes to another URL (move_entry). A failure but ENOENT (src not there) is said in why (the
 * first one; why may be NULL). */
static bool take_held(struct outbox *o, const char *src, const char *mine, char *why,
		      size_t why_len)
{
	char *now = move_entry(o, src, mine);
	bool taken = now != NULL;
	if (taken)
		strset_add(&o->held, now);
	else if (errno != ENOENT && why && !why[0])
		xsnprintf(why, why_len, "cannot take 'outbox/%s' along: %s", src, strerror(errno));
	free(now);
	return taken;
}

/* The job we reclaimed is still running/ID@ME.json: a reclaimer stalled after its rename of
 * the job (for seconds, on a slow file server) takes nothing along from a host that reclaimed
 * and ended it meanwhile, whose end entries are to be sent. Looked at right before each take. */
static bool still_ours(struct outbox *o, const char *task_id)
{
	char *job = spool_running_name(o->spool, task_id);
	bool ours = spool_still_ours(o->spool, job);
	free(job);
	return ours;
}

/* Entries of task_id's end of hosts but from_host whose job is not theirs in running/ (ours
 * too: the job is ours now): left by a reclaimer that died between its rename of the job and
 * those of the entries (the job was then that reclaimer's, from_host's now), or by this host
 * before a death; and from_host's that the plain names did not reach (MSGID.webhook.KEY, for a
 * URL besides its own). Sent by nobody while the job is in running/ (take_over, the busy set).
 * One listing of outbox/ per pass of reclaims (a dead host's thousand jobs list it once).
 * Returns how many of from_host's. */
static int take_orphans(struct outbox *o, const char *task_id, const char *from_host, char *why,
			size_t why_len)
{
	struct spool *sp = o->spool;
	if (o->reclaim_n < 0)
		o->reclaim_n = spool_list_names(sp, SPOOL_OUTBOX, false, &o->reclaim_list);
	if (o->reclaim_n < 0 && why && !why[0])
		xsnprintf(why, why_len, "cannot list outbox/: %s", strerror(errno));
	struct spool_entry *e = o->reclaim_list;
	long n = o->reclaim_n;
	char msg_ids[ARRAY_SIZE(end_types)][WEBHOOK_ID_LEN + 1];
	for (size_t k = 0; k < ARRAY_SIZE(end_types); k++)
		webhook_id(task_id, end_types[k], 0, msg_ids[k]);
	int taken = 0, taken_from = 0;
	for (long i = 0; i < n; i++) {
		const char *name = e[i].name, *at = strrchr(name, '@'), *dot = strchr(name, '.');
		size_t len = strlen(name);
		bool held = len > 5 && !strcmp(name + len - 5, ".held");
		if (!at || !dot || dot > at || (!held && (len < 5 || strcmp(name + len - 5, ".json"))))
			continue;
		bool ours = false;
		for (size_t k = 0; k < ARRAY_SIZE(end_types); k++)
			ours |= (size_t)(dot - name) == WEBHOOK_ID_LEN && !strncmp(name, msg_ids[k],
										   WEBHOOK_ID_LEN);
		char host[NAME_MAX + 1];
		xsnprintf(host, sizeof(host), "%.*s", (int)(len - 5 - (size_t)(at + 1 - name)), at + 1);
		bool mine_already = !strcmp(host, sp->host_id), from = !strcmp(host, from_host);
		if (!ours || (mine_already && held))
			continue;
		char *job = xasprintf("%s@%s.json", task_id, host);
		bool theirs = !mine_already && !from && spool_exists(sp->fd[SPOOL_RUNNING], job);
		free(job);
		if (theirs)
			continue;
		if (!still_ours(o, task_id))
			break;
		char *mine = xasprintf("%.*s@%s.held", (int)(at - name), name, sp->host_id);
		if (take_held(o, name, mine, why, why_len))
			*(from ? &taken_from : &taken) += 1;
		free(mine);
	}
	if (!o->reclaiming)
		outbox_reclaims_end(o);
	if (taken)
		log_job(LOG_INFO, task_id, "took along %d end event(s) of it left in outbox/ by other "
			"hosts, or by this one before a restart: sent or taken back as the job ends",
			taken);
	return taken_from;
}

void outbox_reclaims_begin(struct outbox *o)
{
	o->reclaiming = true;
}

void outbox_reclaims_end(struct outbox *o)
{
	if (o->reclaim_n > 0)
		spool_entries_free(o->reclaim_list, o->reclaim_n);
	o->reclaim_list = NULL;
	o->reclaim_n = -1;
	o->reclaiming = false;
}

int outbox_take_along(struct outbox *o, const char *task_id, const char *from_host, char *why,
		      size_t why_len)
{
	struct spool *sp = o->spool;
	int n = 0;
	if (!still_ours(o, task_id)) {
		log_job(LOG_WARN, task_id, "reclaimed from '%s' but no longer ours: another host "
			"reclaimed it meanwhile; none of its end events taken along", from_host);
		return 0;
	}
	for (size_t i = 0; i < ARRAY_SIZE(event_targets); i++)
		for (size_t k = 0; k < ARRAY_SIZE(end_types); k++) {
			char *mine = end_entry_name(task_id, end_types[k], event_targets[i],
						    sp->host_id, ".held");
			/* Its entry to send, and one it held itself (taken along from a third). */
			for (int held = 0; held < 2; held++) {
				char *from = end_entry_name(task_id, end_types[k], event_targets[i],
							    from_host, held ? ".held" : ".json");
				n += take_held(o, from, mine, why, why_len);
				free(from);
			}
			free(mine);
		}
	return n + take_orphans(o, task_id, from_host, why, why_len);
}

bool outbox_holds(struct outbox *o, const char *task_id)
{
	char **names;
	size_t n = held_names(o, task_id, &names);
	names_free(names, n);
	return n > 0;
}

void outbox_held_targets(struct outbox *o, const char *task_id, struct outbox_targets *out)
{
	*out = (struct outbox_targets){ 0 };
	char **names;
	size_t n = held_names(o, task_id, &names);
	for (size_t i = 0; i < n; i++) {
		json_t *doc = entry_read(o, names[i], false);
		const char *target = str(doc, "target"), *url = str(doc, "url");
		if (!strcmp(target, "exec"))
			out->exec = true;
		bool known = !url[0] || strcmp(target, "webhook");
		for (size_t k = 0; k < out->n_urls && !known; k++)
			known = !strcmp(out->urls[k], url);
		if (!known) {
			out->urls = xrealloc(out->urls, (out->n_urls + 1) * sizeof(*out->urls));
			out->urls[out->n_urls++] = xstrdup(url);
		}
		json_decref(doc);
	}
	names_free(names, n);
}

void outbox_targets_release(struct outbox_targets *t)
{
	names_free(t->urls, t->n_urls);
	*t = (struct outbox_targets){ 0 };
}

int outbox_release_held(struct outbox *o, const char *task_id, const char *end)
{
	struct spool *sp = o->spool;
	char end_id[WEBHOOK_ID_LEN + 1] = "";
	if (end)
		webhook_id(task_id, end, 0, end_id);
	char **names;
	size_t n = held_names(o, task_id, &names);
	int removed = 0;
	for (size_t i = 0; i < n; i++) {
		const char *held = names[i];
		if (end && !strncmp(held, end_id, WEBHOOK_ID_LEN)) {
			/* Ours to send; one of ours by that name is the same event (move_entry). */
			char *send = xasprintf("%.*s.json", (int)(strlen(held) - 5), held);
			free(move_entry(o, held, send));
			free(send);
		} else if (unlinkat(sp->fd[SPOOL_OUTBOX], held, 0) == 0) {
			removed++;
		}
		strset_del(&o->held, held);
	}
	names_free(names, n);
	return removed;
}

int outbox_drop_held(struct outbox *o, const char *task_id, const char *why)
{
	int n = outbox_release_held(o, task_id, NULL);
	if (n)
		log_job(LOG_INFO, task_id, "dropped the %d end event(s) its dead host had queued: %s",
			n, why);
	return n;
}

void outbox_batch_release(struct outbox_batch *b)
{
	for (size_t i = 0; i < b->n; i++) {
		free(b->e[i].name);
		free(b->e[i].text);
	}
	free(b->e);
	b->e = NULL;
	b->n = 0;
}

/* ---- delivering ------------------------------------------------------------------------- */

static const char *str(json_t *doc, const char *key)
{
	const char *s = json_string_value(json_object_get(doc, key));
	return s ? s : "";
}

static void arm(struct outbox *o, int64_t due_wall_ms);
static void scan_if_capped(struct outbox *o);

static void delivery_free(struct delivery *dl)
{
	if (dl->prev)
		dl->prev->next = dl->next;
	else
		dl->o->deliveries = dl->next;
	if (dl->next)
		dl->next->prev = dl->prev;
	strset_del(&dl->o->in_flight, dl->name);
	json_decref(dl->doc);
	free(dl->text);
	free(dl->gone_url);
	free(dl->name);
	free(dl);
}

/* Done with the entry, for good. */
static void entry_remove(struct delivery *dl)
{
	if (unlinkat(dl->o->spool->fd[SPOOL_OUTBOX], dl->name, 0) < 0 && errno != ENOENT)
		log_job(LOG_WARN, str(dl->doc, "task_id"), "cannot remove 'outbox/%s': %s", dl->name,
			strerror(errno));
	delivery_free(dl);
}

static void rewrite_work(void *arg)
{
	struct delivery *dl = arg;
	struct spool *sp = dl->o->spool;
	if (dl->gone_url) {
		/* The marker first: once it is there, no daemon sends this endpoint anything. */
		char *text = xasprintf("%s\n", dl->gone_url);
		if (control_write(sp, CONTROL_GONE, dl->gone_key, text) < 0)
			log_warn("cannot write 'control/gone.%s': %s", dl->gone_key, strerror(errno));
		free(text);
	}
	/* Only over the entry itself: one gone meanwhile was taken back (its job ended another
	 * way on a host that reclaimed it) or over (by a daemon that took this one for stopped),
	 * and must not come back. */
	dl->rc = spool_rewrite_file(sp, SPOOL_OUTBOX, dl->name, dl->text, strlen(dl->text));
	if (dl->rc == 0) {
		struct timespec ts[2] = { { .tv_nsec = UTIME_OMIT },
					  { .tv_sec = dl->due / 1000, .tv_nsec = dl->due % 1000 * 1000000 } };
		dl->rc = utimensat(sp->fd[SPOOL_OUTBOX], dl->name, ts, AT_SYMLINK_NOFOLLOW);
	}
	dl->err = dl->rc < 0 ? errno : 0;
}

static void rewrite_done(void *arg)
{
	struct delivery *dl = arg;
	struct outbox *o = dl->o;
	o->rewriting--;
	if (dl->rc < 0 && dl->err == ENOENT) {
		log_job(LOG_INFO, str(dl->doc, "task_id"), "'outbox/%s' was taken back or over by "
			"another daemon while it was being sent: not written again", dl->name);
		delivery_free(dl);
		return;
	}
	if (dl->rc < 0)
		log_job(LOG_WARN, str(dl->doc, "task_id"), "cannot reschedule 'outbox/%s' (%s): it is "
			"tried again at the next rescan", dl->name, strerror(dl->err));
	arm(o, dl->rc < 0 ? wall_ms() + (*o->cfgp)->notify_retry_base_ms : dl->due);
	delivery_free(dl);
}

/* Writes the entry again, on a helper, with its next attempt at dl->due. */
static void reschedule(struct delivery *dl)
{
	dl->text = jsontext_dump(dl->doc, JSON_COMPACT | JSON_PRESERVE_ORDER, SIZE_MAX, NULL);
	if (!dl->text)
		out_of_memory("writing an outbox entry again");
	dl->o->rewriting++;
	iopool_submit(dl->o->pool, rewrite_work, rewrite_done, dl);
}

static struct redelivery_rule webhook_rule(const struct config *cfg)
{
	return (struct redelivery_rule){ .base_ms = cfg->notify_retry_base_ms,
					 .cap_ms = cfg->notify_retry_cap_ms,
					 .give_up_after_ms = cfg->notify_give_up_after * 1000 };
}

/* The entry's endpoint answered 410 Gone: it is not sent again until an operator enables the
 * endpoint; meanwhile it is looked at every retry_cap_ms, and dropped after give_up_after. */
static void park(struct delivery *dl, const char *key)
{
	struct outbox *o = dl->o;
	const struct config *cfg = *o->cfgp;
	const char *id = str(dl->doc, "task_id"), *type = str(dl->doc, "type");
	const struct redelivery_rule rule = webhook_rule(cfg);
	int64_t now = wall_ms(), delay;
	int64_t created = json_integer_value(json_object_get(dl->doc, "created_at_ms"));
	/* However many failures it had, a parked entry waits the longest. */
	if (retry_redeliver(&rule, INT_MAX, created, now, -1, random64(), &delay) ==
	    REDELIVER_GIVE_UP) {
		o->stats.dropped++;
		log_job(LOG_ERROR, id, "webhook %s: giving up after %lds: its endpoint answered 410 Gone "
			"and was not enabled again", type, cfg->notify_give_up_after);
		strset_del(&o->parked_names, dl->name);   /* wake_enabled drops it from the list */
		entry_remove(dl);
		return;
	}
	if (strset_add(&o->parked_names, dl->name)) {
		o->parked = xrealloc(o->parked, (o->n_parked + 1) * sizeof(*o->parked));
		o->parked[o->n_parked].name = xstrdup(dl->name);
		xsnprintf(o->parked[o->n_parked].key, sizeof(o->parked->key), "%s", key);
		o->n_parked++;
	}
	log_job(LOG_INFO, id, "webhook %s waits: its endpoint answered 410 Gone (control/gone.%s)",
		type, key);
	dl->due = now + delay;
	reschedule(dl);
}

/* Wakes the parked entries whose endpoint an operator enabled again; forgets those given up. */
static void wake_enabled(struct outbox *o)
{
	size_t keep = 0, woken = 0;
	for (size_t i = 0; i < o->n_parked; i++) {
		struct parked *p = &o->parked[i];
		if (!strset_has(&o->parked_names, p->name)) {
			free(p->name);
			continue;
		}
		if (control_wants(o->control, CONTROL_GONE, p->key)) {
			o->parked[keep++] = *p;
			continue;
		}
		strset_add(&o->woken, p->name);
		strset_del(&o->parked_names, p->name);
		free(p->name);
		woken++;
	}
	o->n_parked = keep;
	if (woken)
		log_info("%zu webhook event(s) go out again: their endpoint was enabled", woken);
}

static void webhook_done(void *arg, struct http_result *res)
{
	struct delivery *dl = arg;
	struct outbox *o = dl->o;
	const struct config *cfg = *o->cfgp;
	const char *id = str(dl->doc, "task_id"), *type = str(dl->doc, "type");
	dl->xfer = NULL;
	o->webhooks--;
	scan_if_capped(o);   /* this entry is still in flight: the scan leaves it alone */
	int attempts = (int)json_integer_value(json_object_get(dl->doc, "attempts")) + 1;
	json_object_set_new(dl->doc, "attempts", json_integer(attempts));
	if (res->transport == HTTP_DONE && res->status >= 200 && res->status < 300) {
		o->stats.delivered++;
		log_job(LOG_INFO, id, "webhook %s delivered (%s, HTTP %ld, attempt %d)", type,
			str(dl->doc, "id"), res->status, attempts);
		entry_remove(dl);
		return;
	}
	if (res->transport == HTTP_DONE && res->status == 410) {
		const char *url = str(dl->doc, "url");
		char key[WEBHOOK_ENDPOINT_KEY_LEN + 1];
		webhook_endpoint_key(url, key);
		o->stats.failures++;
		/* The log and the marker (which clients may read) show it without credentials. */
		dl->gone_url = url_redacted(url);
		memcpy(dl->gone_key, key, sizeof(key));
		if (!control_wants(o->control, CONTROL_GONE, key))
			log_msg(LOG_ERROR, "webhook endpoint '%s' answered 410 Gone (%s %s): no daemon "
				"sends it anything more until an operator enables it again: remove "
				"'control/gone.%s', or reload", dl->gone_url, id, type, key);
		control_note(o->control, CONTROL_GONE, key);
		park(dl, key);
		return;
	}
	o->stats.failures++;
	char why[320];
	if (res->transport != HTTP_DONE)
		xsnprintf(why, sizeof(why), "%s%s%s", http_transport_name(res->transport),
			  res->refused_address[0] ? ": refused a non-public address " : ": ",
			  res->refused_address[0] ? res->refused_address : res->detail);
	else if (res->status >= 300 && res->status < 400)
		xsnprintf(why, sizeof(why), "HTTP %ld: redirects are not followed", res->status);
	else
		xsnprintf(why, sizeof(why), "HTTP %ld", res->status);
	int64_t now = wall_ms(), delay;
	int64_t created = json_integer_value(json_object_get(dl->doc, "created_at_ms"));
	const struct redelivery_rule rule = webhook_rule(cfg);
	int64_t asked = retry_after_ms(res->retry_after, res->retry_after_ms, now,
				       cfg->notify_retry_cap_ms);
	if (retry_redeliver(&rule, attempts, created, now, asked, random64(), &delay) ==
	    REDELIVER_GIVE_UP) {
		o->stats.dropped++;
		log_job(LOG_ERROR, id, "webhook %s: giving up after %d attempts over %lds (%s)", type,
			attempts, cfg->notify_give_up_after, why);
		entry_remove(dl);
		return;
	}
	log_job(LOG_WARN, id, "webhook %s failed (%s, attempt %d); next try in %" PRId64 " ms", type,
		why, attempts, delay);
	dl->due = now + delay;
	reschedule(dl);
}

/* A slot freed: only when something waited for one is outbox/ listed again (a backlog of
 * thousands must not be listed once per delivery). */
static void scan_if_capped(struct outbox *o)
{
	if (o->capped) {
		o->capped = false;
		outbox_scan(o);
	}
}

/* Whether this daemon can deliver its entry named so now (deliverable); a webhook that waits
 * for a secret says so once. Its entries wait, and a daemon that can takes them over. */
static bool deliverable_here(struct outbox *o, const char *name)
{
	const struct config *cfg = *o->cfgp;
	bool webhook = webhook_name(name), can = deliverable(cfg, name);
	if (webhook && !can && !o->secret_warned)
		log_msg(LOG_ERROR, "webhooks wait in outbox/: %s; another daemon of the spool that has "
			"one takes them over %lds after they are due", cfg->notify_secret_problem[0] ?
			cfg->notify_secret_problem : "no [notify] secret is configured",
			cfg->lease_timeout);
	if (webhook)
		o->secret_warned = !can;
	return can;
}

static bool send_webhook(struct outbox *o, struct delivery *dl)
{
	const struct config *cfg = *o->cfgp;
	if (!deliverable_here(o, dl->name))
		return false;
	const char *id = str(dl->doc, "id"), *body = str(dl->doc, "body");
	int64_t ts = wall_ms() / 1000;
	char *sig = webhook_signature(cfg->notify_secret, cfg->notify_secret_len, id, ts, body,
				      strlen(body));
	char *h_id = xasprintf("webhook-id: %s", id);
	char *h_ts = xasprintf("webhook-timestamp: %lld", (long long)ts);
	char *h_sig = xasprintf("webhook-signature: %s", sig);
	const char *headers[] = { h_id, h_ts, h_sig, NULL };
	struct http_request req = {
		.url = str(dl->doc, "url"),
		.body = body,
		.body_len = strlen(body),
		.headers = headers,
		.timeout_s = cfg->notify_timeout,
		.connect_timeout_s = cfg->notify_timeout < 10 ? cfg->notify_timeout : 10,
		.max_body = 64 << 10,
		.follow_redirects = false,
		.ca_file = cfg->ca_file,
		.body_fd = -1,
		.public_only = !cfg->notify_allow_private,
	};
	dl->xfer = http_start(o->http, &req, webhook_done, dl);
	free(sig);
	free(h_id);
	free(h_ts);
	free(h_sig);
	if (!dl->xfer)
		return false;
	o->webhooks++;
	return true;
}

static void hook_done(void *arg, int status)
{
	struct delivery *dl = arg;
	struct outbox *o = dl->o;
	(void)status;   /* logged by hook.c; a hook runs once per event, whatever it returns */
	o->stats.hooks_run++;
	entry_remove(dl);
	scan_if_capped(o);
}

/* An entry of ours that is empty or not a JSON object (torn: written before this version
 * synced an entry's bytes before its name, or damaged) would be read and refused at every scan:
 * it is set aside once, as outbox/.NAME.torn, for an operator to look at. Its event is not lost
 * by it: the entry is written again while its job is unpublished (a restart finishes it). */
static void set_aside(struct outbox *o, const char *name, size_t len)
{
	char *aside = xasprintf(".%s.torn", name);
	int fd = o->spool->fd[SPOOL_OUTBOX];
	if (renameat(fd, name, fd, aside) == 0)
		log_msg(LOG_ERROR, "'outbox/%s' is torn (%zu bytes, not an entry): set aside as 'outbox/%s'",
			  name, len, aside);
	else if (errno != ENOENT)
		log_msg(LOG_ERROR, "'outbox/%s' is torn (%zu bytes, not an entry) and cannot be set aside: "
			  "%s", name, len, strerror(errno));
	free(aside);
}

/* An entry as a JSON object (owned), or NULL (logged, unless it was gone); mine: a torn
 * entry is set aside (set_aside). */
static json_t *entry_read(struct outbox *o, const char *name, bool mine)
{
	struct buf b;
	buf_init(&b, 256 << 10);
	struct stat st;
	enum spool_read rr = spool_read_file(o->spool->fd[SPOOL_OUTBOX], name, 256 << 10, &b, &st);
	json_error_t jerr;
	json_t *doc = rr == SPOOL_READ_OK ? json_loadb(b.data, b.len, 0, &jerr) : NULL;
	size_t len = b.len;
	buf_release(&b);
	if (!json_is_object(doc) && rr == SPOOL_READ_OK && mine) {
		json_decref(doc);
		set_aside(o, name, len);
		return NULL;
	}
	if (!json_is_object(doc)) {
		if (rr != SPOOL_READ_GONE)
			log_warn("ignoring 'outbox/%s': %s", name, rr == SPOOL_READ_OK ? "not an entry"
				 : spool_read_reason(rr));
		json_decref(doc);
		return NULL;
	}
	return doc;
}

/* Reads and starts one entry (due, or woken); false if it cannot start now. */
static bool start(struct outbox *o, const char *name, bool due)
{
	json_t *doc = entry_read(o, name, true);
	if (!doc)
		return false;
	if (o->busy(o->busy_arg, str(doc, "task_id"))) {
		json_decref(doc);
		return false;
	}
	bool exec = !strcmp(str(doc, "target"), "exec");
	if (exec && (!(*o->cfgp)->notify_exec || !hooks_room(o->hooks))) {
		o->capped |= (*o->cfgp)->notify_exec != NULL;
		json_decref(doc);
		return false;
	}
	struct delivery *dl = xcalloc(1, sizeof(*dl));
	dl->o = o;
	dl->name = xstrdup(name);
	dl->doc = doc;
	dl->next = o->deliveries;
	if (o->deliveries)
		o->deliveries->prev = dl;
	o->deliveries = dl;
	strset_add(&o->in_flight, name);
	strset_del(&o->woken, name);
	if (exec) {
		hooks_run(o->hooks, str(doc, "task_id"), str(doc, "state"), str(doc, "result_path"),
			  hook_done, dl);
		return true;
	}
	/* The key is a SHA-256: computed only when some endpoint is gone. */
	char key[WEBHOOK_ENDPOINT_KEY_LEN + 1];
	if (o->control->gone.count) {
		webhook_endpoint_key(str(doc, "url"), key);
		if (control_wants(o->control, CONTROL_GONE, key)) {
			if (!due) {   /* woken, but its endpoint is gone again: it waits for its time */
				delivery_free(dl);
				return false;
			}
			park(dl, key);
			return true;
		}
	}
	if (!send_webhook(o, dl)) {
		delivery_free(dl);
		return false;
	}
	return true;
}

static int64_t on_timer(struct loop *loop, void *arg)
{
	(void)loop;
	struct outbox *o = arg;
	o->timer = 0;
	outbox_scan(o);
	return LOOP_TIMER_DONE;
}

static void arm(struct outbox *o, int64_t due_wall_ms)
{
	if (o->timer && due_wall_ms >= o->timer_due)
		return;
	if (o->timer)
		loop_del_timer(o->loop, o->timer);
	o->timer_due = due_wall_ms;
	o->timer = loop_add_timer(o->loop, due_wall_ms - wall_ms() + 1, on_timer, o);
}

/* An entry MSG@OTHER.json of host OTHER whose due time passed lease_timeout ago: its daemon is
 * gone, or cannot deliver it (no secret, no hook): a daemon that can takes it over. Not while
 * its job is still in running/, OTHER's or, at the last rescan, any host's (one that died
 * reclaiming it before it took the entry along): the job's end is not known yet, and the
 * daemon that reclaims the job takes the entry along (outbox_take_along), to send it or take
 * it back as the job ends. Never over an entry of ours (move_entry). */
static void take_over(struct outbox *o, const char *name, const char *msg, const char *other)
{
	struct spool *sp = o->spool;
	if (!deliverable(*o->cfgp, name))
		return;
	json_t *doc = entry_read(o, name, false);
	const char *id = str(doc, "task_id");
	char *job = xasprintf("%s@%s.json", id, other);
	bool job_theirs = doc && *id && (spool_exists(sp->fd[SPOOL_RUNNING], job) ||
					 o->busy(o->busy_arg, id));
	free(job);
	json_decref(doc);
	if (!doc || job_theirs)
		return;
	char *mine = xasprintf("%s@%s.json", msg, sp->host_id);
	char *now = move_entry(o, name, mine);
	if (now && strcmp(now, mine))
		log_info("took over 'outbox/%s' from a daemon that stopped delivering it, as "
			 "'outbox/%s' (ours by its name is for another URL)", name, now);
	else if (now)
		log_info("took over 'outbox/%s' from a daemon that stopped delivering it", name);
	free(now);
	free(mine);
}

/* A control/gone.KEY older than give_up_after whose endpoint no event in outbox/ (any host's)
 * is for: every event that waited for it was given up, and it would stay for ever, one per
 * URL. Looked at every give_up_after/8, and only when there are markers; the entries are read
 * only when one is old enough. */
static void expire_gone(struct outbox *o, const struct spool_entry *e, long n)
{
	struct spool *sp = o->spool;
	const struct strset *gone = &o->control->gone;
	int64_t now = mono_ms(), give_up_ms = (*o->cfgp)->notify_give_up_after * 1000;
	if (!gone->count || now < o->next_gone_check || sp->fd[SPOOL_CONTROL] < 0)
		return;
	o->next_gone_check = now + give_up_ms / 8;
	int64_t server_now = spool_server_now(sp);
	struct strset old;
	strset_init(&old);
	for (size_t i = 0; i < gone->cap; i++) {
		const char *key = gone->slots[i];
		if (!key || !key[0])
			continue;
		char *name = control_name(CONTROL_GONE, key);
		struct stat st;
		if (fstatat(sp->fd[SPOOL_CONTROL], name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
		    server_now - timespec_ms(&st.st_mtim) > give_up_ms)
			strset_add(&old, key);
		free(name);
	}
	for (long i = 0; i < n && old.count; i++) {
		json_t *doc = webhook_name(e[i].name) ? entry_read(o, e[i].name, false) : NULL;
		if (!doc)
			continue;
		char key[WEBHOOK_ENDPOINT_KEY_LEN + 1];
		webhook_endpoint_key(str(doc, "url"), key);
		strset_del(&old, key);
		json_decref(doc);
	}
	for (size_t i = 0; i < old.cap; i++) {
		const char *key = old.slots[i];
		if (!key || !key[0])
			continue;
		char *name = control_name(CONTROL_GONE, key);
		if (unlinkat(sp->fd[SPOOL_CONTROL], name, 0) == 0) {
			log_info("removed 'control/%s': its webhook endpoint answered 410 Gone over %lds "
				 "ago, and no event waits for it", name, (*o->cfgp)->notify_give_up_after);
			strset_del(&o->control->gone, key);
		}
		free(name);
	}
	strset_release(&old);
}

/* A held entry of ours whose job was published here, with the entries that stand for it, by a
 * run killed before it removed it: nothing would ever send or remove it. Looked at once per
 * start; it goes when its job is in done/ or failed/ and in no running/, ours by a look of
 * its own, or any host's by the last listing (a host reclaiming it takes it along). */
static void sweep_held(struct outbox *o, const char *name)
{
	struct spool *sp = o->spool;
	json_t *doc = entry_read(o, name, false);
	char *file = xasprintf("%s.json", str(doc, "task_id"));
	char id[JOB_ID_MAX + 1];
	if (job_id_from_name(file, id, sizeof(id)) == 0) {
		char *mine = spool_running_name(sp, id);
		if (!spool_exists(sp->fd[SPOOL_RUNNING], mine) && !o->busy(o->busy_arg, id) &&
		    (spool_exists(sp->fd[SPOOL_DONE], file) || spool_exists(sp->fd[SPOOL_FAILED], file)) &&
		    unlinkat(sp->fd[SPOOL_OUTBOX], name, 0) == 0) {
			strset_del(&o->held, name);
			log_job(LOG_INFO, id, "removed 'outbox/%s', an end event held for it here: it was "
				"published, with its events, before a stop", name);
		}
		free(mine);
	}
	free(file);
	json_decref(doc);
}

void outbox_scan(struct outbox *o)
{
	struct spool_entry *e;
	long n = spool_list(o->spool, SPOOL_OUTBOX, &e);
	if (n < 0)
		return;
	expire_gone(o, e, n);
	wake_enabled(o);
	o->stats.gone = (long)o->control->gone.count;
	o->stats.parked = (long)o->n_parked;
	int64_t now = wall_ms(), next = 0, server_now = 0;
	int64_t lease_ms = (*o->cfgp)->lease_timeout * 1000;
	char msg[NAME_MAX + 1], host[NAME_MAX + 1];
	long backlog = 0;
	char *held_suffix = o->swept ? NULL : xasprintf("@%s.held", o->spool->host_id);
	for (long i = 0; i < n; i++) {
		const char *name = e[i].name;
		int64_t due = e[i].mtime_ns / 1000000;
		size_t len = strlen(name), sl = held_suffix ? strlen(held_suffix) : 0;
		if (held_suffix && len > sl && !strcmp(name + len - sl, held_suffix))
			sweep_held(o, name);
		/* MSGID.TARGET@HOST.json: named as a job in running/ is. A held entry (.held) is
		 * not one to send: not in the backlog. */
		if (!spool_running_id(name, msg, sizeof(msg), host, sizeof(host)))
			continue;
		backlog++;
		if (strcmp(host, o->spool->host_id)) {
			if (!server_now)
				server_now = spool_server_now(o->spool);
			if (server_now > 0 && server_now - due > lease_ms)
				take_over(o, name, msg, host);
			continue;
		}
		if (strset_has(&o->in_flight, name) || !deliverable_here(o, name))
			continue;
		bool woken = o->woken.count && strset_has(&o->woken, name);
		if (due > now && !woken) {
			if (!next || due < next)
				next = due;
			continue;
		}
		if (o->webhooks >= WEBHOOKS_IN_FLIGHT && webhook_name(name)) {
			o->capped = true;
			continue;
		}
		start(o, name, due <= now);
	}
	spool_entries_free(e, n);
	free(held_suffix);
	o->swept = true;
	o->stats.backlog = backlog;
	if (!o->capped && o->woken.count) {
		/* Every woken entry listed was started: the rest are gone (taken over). */
		strset_release(&o->woken);
		strset_init(&o->woken);
	}
	if (next)
		arm(o, next);
}

struct outbox *outbox_new(struct loop *loop, struct http *http, struct iopool *pool,
			  struct spool *spool, struct config *const *cfgp, struct control *control,
			  outbox_busy_fn *busy, void *busy_arg)
{
	struct outbox *o = xcalloc(1, sizeof(*o));
	o->loop = loop;
	o->http = http;
	o->pool = pool;
	o->spool = spool;
	o->cfgp = cfgp;
	o->busy = busy;
	o->busy_arg = busy_arg;
	o->hooks = hooks_new(loop, cfgp);
	o->control = control;
	strset_init(&o->in_flight);
	strset_init(&o->parked_names);
	strset_init(&o->woken);
	strset_init(&o->held);
	o->reclaim_n = -1;
	return o;
}

void outbox_enable_endpoints(struct outbox *o)
{
	long n = control_withdraw_all(o->control, o->spool, CONTROL_GONE);
	if (n < 0)
		log_warn("cannot remove 'control/gone.*': %s", strerror(errno));
	else if (n > 0)
		log_info("%ld webhook endpoint(s) that answered 410 Gone are enabled again", n);
	outbox_scan(o);
}

const struct outbox_stats *outbox_stats(const struct outbox *o)
{
	return &o->stats;
}

void outbox_free(struct outbox *o)
{
	if (!o)
		return;
	hooks_free(o->hooks);
	while (o->deliveries) {
		struct delivery *dl = o->deliveries;
		if (dl->xfer)
			http_cancel(o->http, dl->xfer);
		delivery_free(dl);
	}
	if (o->timer)
		loop_del_timer(o->loop, o->timer);
	strset_release(&o->in_flight);
	for (size_t i = 0; i < o->n_parked; i++)
		free(o->parked[i].name);
	free(o->parked);
	strset_release(&o->parked_names);
	strset_release(&o->woken);
	strset_release(&o->held);
	outbox_reclaims_end(o);
	free(o);
}
