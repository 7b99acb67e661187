/* job.h - the job file: the only code that reads a client's job JSON.
 *
 * job_parse() turns the bytes of a job file into a struct job, or says in plain words which field
 * is wrong and why. It never echoes the file's content beyond a short escaped excerpt. */
#ifndef JOB_H
#define JOB_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define JOB_ID_MAX 128          /* characters in a task id */
#define JOB_PROMPT_MAX 32000    /* characters (code points) in a prompt */
#define JOB_REFS_MAX 16         /* reference images */
#define JOB_PATH_MAX 256        /* bytes in a reference-image path */

/* Operator-set caps that a job must stay within (config [limits]). */
struct job_limits {
	int max_n;               /* images per job */
	int max_pixels_mp;       /* megapixels per image for WxH sizes, 0 = no cap */
	int max_depth;           /* JSON nesting depth */
};

struct job {
	char *prompt;            /* owned, never NULL after a successful parse */
	char *model;             /* owned; NULL = provider's default */
	char *provider;          /* owned; NULL = default provider */
	char *size;              /* owned; "WxH" or "auto"; NULL = not given */
	int n;                   /* images wanted, 1 when not given */
	char *quality;           /* owned; NULL = not given */
	char *background;
	char *output_format;
	int output_compression;  /* 0..100, -1 = not given */
	char *moderation;
	int timeout;             /* seconds, 0 = not given */
	char *refs[JOB_REFS_MAX]; /* owned; "images": paths relative to the spool root */
	int n_refs;
	char *mask;              /* owned; NULL = none */
	char *webhook_url;       /* owned; where this job's events go, NULL = [notify] url */
	json_t *metadata;        /* owned reference; NULL = absent. Echoed into the result untouched. */
	json_t *state;           /* owned; "imgspool": the daemon's records of earlier attempts */
};

enum job_parse_result {
	JOB_OK = 0,
	JOB_INCOMPLETE,          /* not (yet) a JSON document: may still be being written */
	JOB_INVALID,             /* JSON, but a field is missing or wrong */
};

struct job_error {
	char field[64];          /* the field at fault, "" when it is the file as a whole */
	char message[512];       /* for a user: what is wrong and what is allowed */
};

void job_limits_default(struct job_limits *limits);
/* Zeroes *job first; err is always set ("" on JOB_OK). JOB_INCOMPLETE means the bytes could still
 * be the beginning of a valid job (empty, or cut off mid-token). */
enum job_parse_result job_parse(struct job *job, const char *data, size_t len,
				const struct job_limits *limits, struct job_error *err);
void job_release(struct job *job);

/* The task id for a file name in new/: the name without a trailing ".json".
 * Returns 0, or -1 when the name is not a valid id (see spool-layout.md: characters
 * [A-Za-z0-9_.-], first one alphanumeric, at most JOB_ID_MAX, not ending in ".result" or
 * ".<digits>"). */
int job_id_from_name(const char *name, char *id, size_t idsize);
/* A version of ID that the daemon moved back to deferred/ while deferred/ID.json and deferred/ID
 * held others (spool-layout.md §5) is deferred/ID.N.json, N from 2 to JOB_NUMBERED_MAX: a name
 * no client writes (ID.N is no id). job_numbered_name writes it (size at least JOB_ID_MAX + 8);
 * job_id_from_listed is job_id_from_name for a name listed in a state directory, which in
 * deferred/ (numbered) takes those names too. Pure. */
#define JOB_NUMBERED_MAX 9
void job_numbered_name(const char *id, int n, char *name, size_t size);
int job_id_from_listed(const char *name, bool numbered, char *id, size_t idsize);

/* Whether a size string is "WxH" (both 1..16384); fills w and h. */
bool job_size_dimensions(const char *size, int *w, int *h);

/* The job file's bytes with records (compact JSON text of an object) as its "imgspool" member:
 * in place of the one it has, else added as its last member (",\"imgspool\":" and the records
 * before the closing brace). Every other byte stays as the client wrote it (re-serialising would
 * change numbers and escapes, and could grow a file past the cap it passed). NULL when data is
 * not a JSON object. *out_len gets the length. */
char *job_with_records(const char *data, size_t len, const char *records, size_t *out_len);
/* The bytes of a job file that are the client's: all but the "imgspool" member and its comma
 * (all of them when data is not a JSON object). What max_job_bytes holds a file in new/ to;
 * splicing records in never changes it. */
size_t job_client_bytes(const char *data, size_t len);
/* The value of data's top-level member called name, as the client wrote it (every byte, so
 * 1.10 stays 1.10): the last one, as jansson keeps it; NULL when there is none or data is not a
 * JSON object. Within data, so never longer than the client's file. */
const char *job_member_bytes(const char *data, size_t len, const char *name, size_t *value_len);
/* Where the value of every top-level member of data called name is, in order ([start, end) of
 * data), found by a scan, without parsing: the first max in spans. How many there are, or -1
 * when data is not a JSON object. */
struct job_span {
	size_t start, end;
};
long job_member_values(const char *data, size_t len, const char *name, struct job_span *spans,
		       size_t max);
/* Where the value of each top-level member named in names (NULL-terminated, at most 32) is,
 * in one scan of data: spans[i] for names[i], the last one so named, as jansson keeps it;
 * start == end when there is none. 0, or -1 when data is not a JSON object. With cut, data is
 * the beginning of a longer text: the members whose values end (and a byte follows) before
 * len are found, and the scan ends where data does. */
int job_members_at(const char *data, size_t len, const char *const *names, bool cut,
		   struct job_span *spans);

#endif
