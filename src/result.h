/* result.h - what a finished job leaves beside it: its images and ID.result.json.
 *
 * result_to_json() is pure (a helper thread builds the document from what the task owns; an
 * event's data comes from the same, result_event_data(), on the loop); publish.c puts it in
 * place. */
#ifndef RESULT_H
#define RESULT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

struct spool;
struct image;
struct record_tally;

/* One upstream call, as the result records it (spool-layout.md §6). Returns a new object. */
struct attempt {
	int64_t started_wall_ms;
	int64_t latency_ms;
	const char *provider;    /* what was called */
	const char *model;
	long http_status;        /* 0 = no HTTP response */
	const char *transport;   /* done, not_sent, timeout, reset, truncated, too_big */
	const char *outcome;     /* succeeded, retry, failed, hold, interrupted */
	const char *billed;      /* yes, no, unknown */
	const char *error_code;  /* NULL on success */
	const char *request_id;  /* "" if none */
	bool cost_known;         /* false: billed (or maybe) with no price: "cost": null */
	double cost;             /* 0 when not billed */
};
json_t *result_attempt_json(const struct attempt *a);

struct result_info {
	const char *task_id;
	bool succeeded;
	const char *provider;
	const char *model;
	const char *dialect;
	const struct image *images;
	size_t n_images;
	size_t images_dropped;   /* returned beyond the job's n, neither fetched nor kept */
	char *const *urls;       /* where the images were stored ([store]), NULL = not stored */
	json_t *attempts;        /* borrowed array of result_attempt_json() objects: the last ones */
	const struct record_tally *elided; /* the run's earlier attempts, no longer listed; NULL: none */
	int retry_count;
	int64_t created_wall_ms;
	int64_t updated_wall_ms;
	int64_t latency_ms;
	json_t *usage;           /* borrowed, may be NULL */
	const char *currency;    /* of the attempts' costs */
	const char *metadata;    /* borrowed: the job's metadata as the client wrote it (valid JSON,
				  * job_member_bytes), copied verbatim; NULL = none ("metadata": null) */
	size_t metadata_len;
	const char *error_code;  /* on failure */
	const char *error_message;
	const char *error_upstream_message;
	const char *error_field; /* for an invalid job file, may be NULL */
	/* Only what is bounded by construction: the attempts counted but not listed, no usage,
	 * no upstream_message or field (a result that was too big, result_to_json). */
	bool trimmed;
	size_t headroom;         /* 0: RESULT_HEADROOM (less only in tests) */
};

/* The most a result takes beyond its metadata: everything the daemon writes in it is bounded
 * (the attempts by the records' rules, texts by their buffers) and a usage over
 * RESULT_USAGE_MAX is left out, so a result is at most the job's bytes plus this. */
#define RESULT_HEADROOM (64u << 10)
#define RESULT_USAGE_MAX (16u << 10)   /* bytes of the upstream's usage as written */
/* The most a result written for a job held to max_job_bytes may take. */
#define RESULT_FILE_MAX(max_job_bytes) ((size_t)(max_job_bytes) + RESULT_HEADROOM)
/* What every reader of results (a resumed publication, imgspool) reads: the largest result
 * any daemon writes, whatever its max_job_bytes. More is not a result of ours. */
#define RESULT_READ_MAX RESULT_FILE_MAX(CONFIG_JOB_BYTES_CEILING)

/* The file name of image index (0-based) of n: "ID.png" when n == 1, else "ID.1.png" ... */
char *result_image_name(const char *id, size_t index, size_t n, const char *ext);
/* The result document as JSON text (caller frees), at most its metadata plus RESULT_HEADROOM:
 * NULL when what the daemon writes besides the metadata would take more (*own_len, when not
 * NULL, says how much; a part that should be bounded is not): the job is then failed, with
 * r->trimmed, which is always written. */
char *result_to_json(const struct result_info *r, size_t *own_len);
/* The data of the job's event (webhook.h): task_id, status, error_code, images, urls and cost,
 * the values result_to_json(r) writes, without writing (or parsing) the document. New object. */
json_t *result_event_data(const struct result_info *r);

#endif
