/* fuzz_job.c - libFuzzer entry point for job.c: job_parse() and job_id_from_name().
 *
 * The input is a job file as a client could write it. It is parsed with the default limits and with
 * tight ones (max_depth 4, max_n 1, 4 megapixels), and also taken as a file name for job_id_from_name(). Every
 * promise job.h makes is checked and a broken one traps:
 *   - *job is zeroed first and is all zero again on any result but JOB_OK (nothing left to free);
 *   - on JOB_OK the prompt is set and every field is within its documented range;
 *   - err is always set: "" on JOB_OK, a non-empty lower-case message otherwise, and both strings
 *     are printable ASCII. job.c never quotes a value; the only bytes of the file it may repeat are
 *     an unknown key of at most 32 printable characters (then that key is also err->field). A
 *     canary, SECRET, placed in the seed corpus therefore appears in the message only if it is in
 *     err->field too;
 *   - tight limits only ever refuse more: OK under them means OK under the defaults;
 *   - JOB_INCOMPLETE is for files still being written: a prefix of a valid job is never INVALID;
 *   - job_id_from_name() agrees with the rules of spool-layout.md §3, written out again here, and
 *     never writes past idsize;
 *   - job_with_records() reads no byte past the input; on a valid job it gives a valid job whose
 *     records are the ones spliced in, and splicing again replaces them in place: the client's
 *     bytes never change and never grow.
 * Everything allocated is released, so LeakSanitizer sees any leak. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "job.h"
#include "fuzz.h"
#include "banned.h"

#define CANARY "SECRET"
#define NAME_MAX_FUZZ 512       /* bytes of the input taken as a file name */
#define PREFIX_CHECKS 8         /* prefixes of a valid job re-parsed per input */

static const struct job zero_job;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	/* jansson seeds its hash from /dev/urandom: fix it, so a key order (which unknown key is
	 * reported first) and thus a crash reproduces. */
	json_object_seed(1);
	return 0;
}

static bool printable_ascii(const char *s, size_t max)
{
	size_t n = strnlen(s, max);

	if (n == max)               /* not terminated */
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return true;
}

static bool one_of(const char *s, const char *const *values)
{
	for (size_t i = 0; values[i]; i++)
		if (!strcmp(s, values[i]))
			return true;
	return false;
}

static void check_ok_job(const struct job *job, const struct job_limits *limits)
{
	static const char *const quality[] = { "low", "medium", "high", "auto", "xhigh", "max", NULL };
	static const char *const background[] = { "transparent", "opaque", "auto", NULL };
	static const char *const format[] = { "png", "jpeg", "webp", NULL };
	static const char *const moderation[] = { "auto", "low", NULL };
	int w, h;

	CHECK(job->prompt && job->prompt[0]);
	CHECK(job->n >= 1 && job->n <= limits->max_n);
	CHECK(job->timeout >= 0 && job->timeout <= 3600);
	CHECK(job->output_compression >= -1 && job->output_compression <= 100);
	if (job->output_compression >= 0)
		CHECK(job->output_format && strcmp(job->output_format, "png"));
	CHECK(!job->quality || one_of(job->quality, quality));
	CHECK(!job->background || one_of(job->background, background));
	CHECK(!job->output_format || one_of(job->output_format, format));
	CHECK(!job->moderation || one_of(job->moderation, moderation));
	CHECK(!job->size || !strcmp(job->size, "auto") || job_size_dimensions(job->size, &w, &h));
	CHECK(job->n_refs >= 0 && job->n_refs <= JOB_REFS_MAX);
	for (int i = 0; i < JOB_REFS_MAX; i++) {
		CHECK((i < job->n_refs) == (job->refs[i] != NULL));
		if (job->refs[i])
			CHECK(job->refs[i][0] && job->refs[i][0] != '/' &&
			      strlen(job->refs[i]) < JOB_PATH_MAX);
	}
	CHECK(!job->mask || (job->n_refs > 0 && job->mask[0] && job->mask[0] != '/'));
	CHECK(!job->state || json_is_object(job->state));
	CHECK(!job->model || (job->model[0] && strlen(job->model) <= 128));
	CHECK(!job->provider || (job->provider[0] && strlen(job->provider) <= 64));
}

static void check_error(enum job_parse_result r, const struct job_error *err, bool canary)
{
	CHECK(printable_ascii(err->field, sizeof(err->field)));
	CHECK(printable_ascii(err->message, sizeof(err->message)));
	if (r == JOB_OK) {
		CHECK(!err->field[0] && !err->message[0]);
		return;
	}
	CHECK(r == JOB_INCOMPLETE || r == JOB_INVALID);
	CHECK(err->message[0] && !(err->message[0] >= 'A' && err->message[0] <= 'Z'));
	/* The file's text shows up only as the name of an unknown field, which is then the field. */
	if (canary && strstr(err->message, CANARY))
		CHECK(strstr(err->field, CANARY) != NULL);
}

/* One parse with every check; returns the result and leaves job filled on JOB_OK. */
static enum job_parse_result parse(struct job *job, const char *data, size_t len,
				   const struct job_limits *limits, bool canary)
{
	struct job_error err;
	enum job_parse_result r;

	memset(job, 0xa5, sizeof(*job));        /* job_parse zeroes it first */
	memset(&err, 'x', sizeof(err));         /* and always sets both strings */
	r = job_parse(job, data, len, limits, &err);
	check_error(r, &err, canary);
	if (r == JOB_OK)
		check_ok_job(job, limits);
	else
		CHECK(!memcmp(job, &zero_job, sizeof(*job)));
	return r;
}

/* spool-layout.md §3, independently of job.c. */
static bool id_valid(const char *name, size_t *idlen)
{
	size_t len = strlen(name), i;

	if (len > 5 && !memcmp(name + len - 5, ".json", 5))
		len -= 5;
	if (len < 1 || len > JOB_ID_MAX)
		return false;
	for (i = 0; i < len; i++) {
		char c = name[i];
		bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
			return false;
	}
	if (len >= 7 && !memcmp(name + len - 7, ".result", 7))
		return false;
	for (i = len; i > 0 && name[i - 1] >= '0' && name[i - 1] <= '9'; i--)
		;
	if (i > 0 && name[i - 1] == '.')
		return false;
	*idlen = len;
	return true;
}

static void check_id(const uint8_t *data, size_t size)
{
	char name[NAME_MAX_FUZZ + 1];
	size_t n = size < NAME_MAX_FUZZ ? size : NAME_MAX_FUZZ, want_len = 0;
	bool want = false;

	memcpy(name, data, n);
	name[n] = '\0';
	want = id_valid(name, &want_len);

	/* Exactly idsize bytes on the heap, so a write past it is caught: the usual size, the
	 * smallest that fits and one too small. */
	size_t sizes[] = { JOB_ID_MAX + 1, want_len + 1, want_len };
	for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
		size_t idsize = sizes[k];
		char *id = malloc(idsize ? idsize : 1);
		int rc;

		CHECK(id);
		rc = job_id_from_name(name, id, idsize);
		if (want && want_len + 1 <= idsize) {
			CHECK(rc == 0);
			CHECK(strlen(id) == want_len && !memcmp(id, name, want_len));
		} else {
			CHECK(rc == -1);
		}
		free(id);
	}
}

static void check_splice(const char *text, size_t size, bool valid)
{
	static const char first[] = "{\"retry_count\":1}", second[] = "{\"attempts\":[{}]}";
	size_t len1, len2, len_direct;
	char *once = job_with_records(text, size, first, &len1);
	size_t client = job_client_bytes(text, size);
	CHECK(client <= size);
	if (!valid) {
		free(once);
		return;
	}
	CHECK(once != NULL);
	struct job job;
	struct job_limits limits;
	struct job_error err;
	job_limits_default(&limits);
	CHECK(job_parse(&job, once, len1, &limits, &err) == JOB_OK);
	json_t *want = json_loads(first, 0, NULL);
	CHECK(json_equal(job.state, want));
	json_decref(want);
	job_release(&job);
	CHECK(job_client_bytes(once, len1) == client);
	CHECK(len1 <= client + strlen(",\"imgspool\":") + strlen(first));
	char *twice = job_with_records(once, len1, second, &len2);
	char *direct = job_with_records(text, size, second, &len_direct);
	CHECK(twice && direct && len2 == len_direct && !memcmp(twice, direct, len2));
	free(once);
	free(twice);
	free(direct);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	struct job_limits defaults, tight;
	struct job job, job2;
	enum job_parse_result r, rt;
	bool canary = memmem(data, size, CANARY, strlen(CANARY)) != NULL;

	job_limits_default(&defaults);
	tight = defaults;
	tight.max_depth = 4;
	tight.max_n = 1;
	tight.max_pixels_mp = 4;

	r = parse(&job, text, size, &defaults, canary);
	rt = parse(&job2, text, size, &tight, canary);
	if (rt == JOB_OK) {
		/* tighter limits never accept what the defaults refuse */
		CHECK(r == JOB_OK);
		CHECK(!strcmp(job.prompt, job2.prompt) && job.n == job2.n);
	}
	job_release(&job2);
	CHECK(!memcmp(&job2, &zero_job, sizeof(job2)));

	if (r == JOB_OK) {
		/* A client writing this file may be caught at any byte: never call that INVALID. */
		for (size_t k = 0; k < PREFIX_CHECKS && size > 1; k++) {
			size_t cut = k == 0 ? size - 1 : size * k / PREFIX_CHECKS;
			struct job part;
			enum job_parse_result rp = parse(&part, text, cut, &defaults, canary);

			CHECK(rp == JOB_OK || rp == JOB_INCOMPLETE);
			job_release(&part);
		}
	}
	job_release(&job);
	CHECK(!memcmp(&job, &zero_job, sizeof(job)));

	check_splice(text, size, r == JOB_OK);
	check_id(data, size);
	return 0;
}
