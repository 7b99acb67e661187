/* result.h - what a finished job leaves beside it: its images and ID.result.json.
 *
 * result_to_json() is pure (the loop builds the document); result_publish() does the blocking
 * part (write, fsync, rename) and runs on an I/O helper thread. */
#ifndef RESULT_H
#define RESULT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool;
struct image;

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
	json_t *attempts;        /* borrowed array of result_attempt_json() objects */
	int retry_count;
	int64_t created_wall_ms;
	int64_t updated_wall_ms;
	int64_t latency_ms;
	json_t *usage;           /* borrowed, may be NULL */
	const char *currency;    /* of the attempts' costs */
	json_t *metadata;        /* borrowed, may be NULL */
	const char *error_code;  /* on failure */
	const char *error_message;
	const char *error_upstream_message;
	const char *error_field; /* for an invalid job file, may be NULL */
};

/* The file name of image index (0-based) of n: "ID.png" when n == 1, else "ID.1.png" ... */
char *result_image_name(const char *id, size_t index, size_t n, const char *ext);
/* The result document as JSON text (caller frees). */
char *result_to_json(const struct result_info *r);

/* Writes images, then ID.result.json, into dest (done/ or failed/), each durably, fsyncs dest,
 * then (when job_text is not NULL) replaces running/running_name with job_text, the job file
 * with its final records, and moves it to dest/ID.json and fsyncs both directories. After it returns 0
 * the result is durable. Returns -1 with errno and a description in err on failure, leaving the
 * job file in running/. */
int result_publish(struct spool *sp, int dest, const char *id, const char *running_name,
		   const struct image *images, size_t n_images, const char *result_json,
		   const char *job_text, char *err, size_t errsize);

#endif
