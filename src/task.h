/* task.h - a job this daemon holds, from its claim to its end (task.c: the object; dispatch.c:
 * its life). Part of the dispatcher: its rooms read and write a task's fields. */
#ifndef TASK_H
#define TASK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "http.h"
#include "iopool.h"
#include "job.h"
#include "keyshare.h"
#include "outbox.h"
#include "refs.h"
#include "record.h"
#include "result.h"
#include "retry.h"
#include "spool.h"
#include "upstream.h"

struct config;
struct dispatch;
struct provider_state;
struct stat;
struct store_upload;

/* What a job's end says: made when first said (task_words), as a task in flight says nothing,
 * and 10 000 calls in flight would hold 11 MB of empty texts. */
struct task_words {
	char error_message[512];
	char error_field[64];
	char publish_err[512];
	char upstream_message[512]; /* the outcome's, cut to fit: the response is not kept */
};

enum task_state { T_CALLING, T_PARSING, T_BACKOFF, T_DEFERRING, T_DOWNLOADING, T_UPLOADING,
		  T_PUBLISHING, T_READY };

struct task {
	struct dispatch *d;
	struct task *prev, *next;
	enum task_state state;
	char *job_text;          /* the job file as claimed, rewritten with our records on deferral */
	size_t job_len;
	uint32_t owner_uid, owner_gid; /* the job file's owner when claimed: for whom its reference
					* images are read (refs.h) */
	bool calling;            /* its call is counted in a slot and by its provider (slots.c) */
	struct task *ready_prev, *ready_next; /* in the ready line while T_READY, or among the
					       * retries waiting for a slot (slot_waits): slots.c */
	bool slot_waits;         /* a retry from memory (T_BACKOFF) waiting for a call slot or for
				  * its provider (slots.c) */
	int64_t ready_since_ms;  /* mono_ms it joined the ready line */
	bool partial_held;       /* its call holds body_fd open (counted by slots.c) */
	bool partial_closed;     /* its .partial has its header but no fd (open files are short,
				  * slots.c): the body is written at the end of the call, and
				  * the parse opens it for its fsync */
	bool fenced;             /* another daemon reclaimed it: never publish */
	bool in_pool;            /* a helper thread owns it until its done() runs */
	int body_fd;             /* running/.ID@HOST.partial: the response as it arrives (the
				  * transfer holds it during the call: -1 here till call_done) */
	int save_err;            /* errno when its response could not be made durable, else 0 */
	int crashes;             /* times a daemon died while this job was in running/ */
	int finish_crashes;      /* of those, while it was finished from a saved response */
	char id[JOB_ID_MAX + 1];
	char *running_name;
	struct job job;
	struct provider_state *prov;
	char *model;
	bool routed;             /* its model names a route: the target was chosen for it */
	enum dialect dialect;
	struct request req;
	struct refs_checked refs; /* its reference images a multipart call reads: opened again
				   * for each call, none held between calls (dispatch.c) */
	int ref_files_want;      /* descriptors a call needs for them (refs.n, 0 when inlined) */
	int ref_files_held;      /* of them, what its call in flight holds (counted by slots.c) */
	struct http_xfer *xfer;
	uint64_t timer;
	int64_t timer_due;       /* mono ms a waiting retry's timer fires at (deferral.c) */
	struct http_result res;  /* of the last call; body owned */
	struct response resp;    /* body parsed */
	struct outcome outcome;
	json_t *attempts;        /* owned array, for the result: the last RECORD_ATTEMPTS_MAX */
	struct record_tally elided; /* this run's attempts before those */
	json_t *runs;            /* owned array: earlier runs of this job (record.h), or NULL */
	long runs_total;
	size_t sidecar_header;   /* bytes of our header at the start of the .partial */
	unsigned sidecars;       /* which of its sidecars exist (SIDECAR_*): only those are removed */
	struct attempt cur;      /* the call being classified */
	struct config *judge_cfg; /* held for its judgement on a helper thread (attempt.c) */
	bool judge_budgeted;     /* its provider is under a budget: the judgement bills the ledger */
	long judge_day, judge_month; /* keyshare_today() as the judgement began */
	bool cost_in_ledger;     /* the judgement put the call's cost in the ledger */
	unsigned long ledger_gen; /* the ledger's figures that hold it (keyshare_written) */
	unsigned long records_after_gen; /* figures counted on the loop (a cancel, a restart's
					  * unaccounted call): durable in the ledger before the job's
					  * records, which count the call, leave running/ */
	/* The last call's whole answer arrived (call_done, or lost at the cut): its attempt (as in
	 * its sidecar's header, 0: none), status and body length, for the mark an exit leaves
	 * while a helper still holds the job (sidecar_mark_answered). */
	size_t answer_attempt;
	long answer_status;
	size_t answer_len;
	char *answered_mark;     /* owned: such a mark of its last run, found at adoption, removed
				  * with its sidecars */
	void (*after_cut_bill)(struct task *t); /* on the loop once the cut's ledger write is done
						 * (or attempt_after_ledger's) */
	bool recovered_parse;    /* a saved answer from before a restart, under a budget, being
				  * judged: counted in d->recovered_unbilled till its judgement returns */
	int retry_count;
	int billed_retries;
	struct image *images;    /* collected: inline and downloaded */
	size_t n_images;
	size_t images_dropped;   /* returned beyond the job's n */
	struct store_upload *upload; /* the images, while they go to the store */
	char **urls;             /* where the store has them, one per image */
	struct outbox_batch events; /* outbox entries, written before the job moves */
	size_t next_url;
	int download_tries;
	int64_t created_wall_ms;
	/* Adopted after a restart cut its publication, which may have queued the events of an
	 * end (at or after this time) that the restart does not reach: INT64_MAX = none. */
	int64_t cut_events_since_ms;
	/* Adopted with end events of a dead host's run held for it here (outbox_take_along):
	 * they go before it leaves running/, ended or not (task_drop_held_events). */
	bool events_held;
	int64_t claimed_mono;
	int64_t call_started_wall; /* of the call in flight */
	int64_t defer_due;       /* the next attempt, by the file server's clock (wall ms) */
	int64_t defer_floor;     /* no retry before: the due time a shutdown left in running/ */
	enum spool_dir defer_dir; /* deferred/, or hold/ when an operator asked */
	bool is_probe;
	struct keyshare_ticket ticket; /* its place among the calls of every host */
	bool reserved;           /* counted in the spend's calls in flight */
	bool reserve_known;      /* the call has a price */
	double reserve;          /* what the call in flight costs if billed */
	/* the end */
	bool succeeded;
	const char *error_code;
	struct task_words *words; /* owned: error_message, error_field, publish_err; NULL till said */
	char *result_json;
	/* What result_json is built from, on the helper thread (publish_work), and the data of
	 * its event on the loop: it points into the task, but for two strings of the config,
	 * copied (a reload may free the config meanwhile). */
	struct result_info result;
	char *result_provider, *result_currency;
	char *final_job_text;    /* the job file with its final records, for the publication */
	size_t result_over;      /* result_json would take this much besides the metadata: too much */
	bool result_trimmed;     /* so it fails, with a result of only what is bounded (result.h) */
	int publish_rc;
	bool publish_committed;  /* its commit is made: its job file is in its staging directory */
	bool publish_pass_committed;  /* the helper thread's word for it, taken up in publish_done */
	bool records_final;      /* its records in running/ may say finished (a publication pass
				  * failed, or a restart found them so): staged through temporary
				  * names (publish_job.records_final) */
	bool publish_stuck_said; /* a failure past the commit was logged */
	int publish_failures;
};

struct task *task_new(struct dispatch *d, const char *id);
void task_free(struct task *t);
/* t's words, made (empty) on first use: on the loop, or on a helper thread that holds t. */
struct task_words *task_words(struct task *t);
/* With may_probe, t is the probe of a held provider (is_probe), one at a time. */
void task_set_provider(struct task *t, struct provider_state *prov, const char *model,
		       bool may_probe);
void task_restore_state(struct task *t, const struct stat *st, struct record *rec);
void task_apply_record(struct task *t, const struct record *rec);
/* The job file with our records (caller frees). */
char *task_job_text(const struct task *t, int64_t retry_at_ms, const char *finished);
void task_pool_submit(struct task *t, iopool_fn *work, iopool_fn *done);
void task_pool_submit_batched(struct task *t, iopool_batch_fn *work, iopool_fn *done);
void task_control_forget(struct task *t);
/* The end events held for t's run here go: it ends (its publication queues its own) or goes
 * back to wait (its real end, wherever, brings its own). Loop thread. */
void task_drop_held_events(struct task *t, const char *why);
#define TASK_WAITS_AGAIN "it waits again, and its real end brings its own"


#endif
