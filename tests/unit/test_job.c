/* test_job.c - job_parse() and job_id_from_name(): table rows of job files and names, plus the
 * inputs too big for a table (deep nesting, long prompts, every prefix of a job). */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "job.h"
#include "util.h"
#include "tap.h"
#include "banned.h"

/* A literal with its length, so rows can hold NUL bytes. */
#define B(s) s, sizeof(s) - 1
/* A job with a good prompt and the given extra fields. */
#define J(rest) "{\"prompt\":\"a cat\"" rest "}"

/* Put in failing rows wherever a user's own text could leak into an error. */
#define SECRET "SECRET123"

struct parse_row {
	const char *name;
	const char *input;
	size_t len;
	enum job_parse_result want;
	const char *want_field;
};

static const struct parse_row parse_rows[] = {
	/* whole file */
	{ "minimal job", B(J("")), JOB_OK, "" },
	{ "white space around", B("\n\t {\"prompt\" : \"a cat\" }\r\n"), JOB_OK, "" },
	{ "empty file", B(""), JOB_INCOMPLETE, "" },
	{ "only white space", B(" \n\t"), JOB_INCOMPLETE, "" },
	{ "only {", B("{"), JOB_INCOMPLETE, "" },
	{ "truncated in a value", B("{\"prompt\":\"" SECRET), JOB_INCOMPLETE, "" },
	{ "truncated after a comma", B("{\"prompt\":\"" SECRET "\",\n\"n\":2,\n"), JOB_INCOMPLETE, "" },
	{ "truncated in true", B("{\"prompt\":\"x\",\"metadata\":tr"), JOB_INCOMPLETE, "" },
	{ "truncated in a number", B("{\"prompt\":\"x\",\"metadata\":-1.5e"), JOB_INCOMPLETE, "" },
	{ "truncated in a huge number", B("{\"prompt\":\"x\",\"metadata\":-99999999999999999999999"),
	  JOB_INCOMPLETE, "" },
	{ "truncated in an escape", B("{\"prompt\":\"x\\u00"), JOB_INCOMPLETE, "" },
	{ "truncated in a UTF-8 character", B("{\"prompt\":\"" SECRET "\xe2\x82"), JOB_INCOMPLETE, "" },
	{ "not JSON", B(SECRET " hello"), JOB_INVALID, "" },
	{ "top level is a list", B("[\"" SECRET "\"]"), JOB_INVALID, "" },
	{ "top level is a string", B("\"" SECRET "\""), JOB_INVALID, "" },
	{ "top level is a number", B("42"), JOB_INVALID, "" },
	{ "byte order mark", B("\xef\xbb\xbf{\"prompt\":\"x\"}"), JOB_INVALID, "" },
	{ "missing colon in the middle", B("{\"prompt\" \"" SECRET "\",\"n\":1}"), JOB_INVALID, "" },
	{ "missing comma in the middle", B("{\"prompt\":\"" SECRET "\" \"n\":1}"), JOB_INVALID, "" },
	{ "double comma", B("{\"prompt\":\"" SECRET "\",,\"n\":1}"), JOB_INVALID, "" },
	{ "bad word in the middle", B("{\"metadata\":tru,\"prompt\":\"" SECRET "\"}"), JOB_INVALID, "" },
	{ "bad word at the end", B("{\"prompt\":\"" SECRET "\",\"metadata\":trux"), JOB_INVALID, "" },
	{ "bad token at the end", B("{\"prompt\" x"), JOB_INVALID, "" },
	{ "bad number at the end", B("{\"prompt\":\"x\",\"metadata\":01"), JOB_INVALID, "" },
	{ "bad escape", B("{\"prompt\":\"" SECRET "\\x\"}"), JOB_INVALID, "" },
	{ "control character in a string", B("{\"prompt\":\"" SECRET "\x01\"}"), JOB_INVALID, "" },
	{ "text after the object", B("{\"prompt\":\"x\"} " SECRET), JOB_INVALID, "" },
	{ "second object after the first", B("{\"prompt\":\"x\"}\n{"), JOB_INVALID, "" },
	{ "invalid UTF-8", B("{\"prompt\":\"" SECRET "\xff" SECRET "\"}"), JOB_INVALID, "" },
	{ "overlong UTF-8 at the end", B("{\"prompt\":\"" SECRET "\xe0\x80"), JOB_INVALID, "" },
	{ "UTF-8 outside a string", B("{\"prompt\":\"x\"\xc3\xa9}"), JOB_INVALID, "" },
	{ "NUL byte in a string", B("{\"prompt\":\"" SECRET "\0" SECRET "\"}"), JOB_INVALID, "" },
	{ "NUL byte after the object", B("{\"prompt\":\"x\"}\0"), JOB_INVALID, "" },
	{ "NUL byte where a key goes", B("{\"prompt\":\"x\", \0"), JOB_INVALID, "" },
	{ "escaped NUL", B("{\"prompt\":\"" SECRET "\\u0000\"}"), JOB_INVALID, "" },
	{ "duplicate key", B("{\"prompt\":\"" SECRET "\",\"prompt\":\"" SECRET "\"}"), JOB_INVALID, "" },
	{ "duplicate key in metadata", B(J(",\"metadata\":{\"a\":1,\"a\":2}")), JOB_INVALID, "" },
	{ "integer overflow", B(J(",\"n\":99999999999999999999999")), JOB_INVALID, "" },
	{ "brackets inside strings do not nest", B("{\"prompt\":\"[[[[{{{{\\\"[[[[\"}"), JOB_OK, "" },

	/* prompt */
	{ "no prompt", B("{\"n\":1}"), JOB_INVALID, "prompt" },
	{ "empty object", B("{}"), JOB_INVALID, "prompt" },
	{ "empty prompt", B("{\"prompt\":\"\"}"), JOB_INVALID, "prompt" },
	{ "white space prompt", B("{\"prompt\":\" \\n\\t \"}"), JOB_INVALID, "prompt" },
	{ "number prompt", B("{\"prompt\":7}"), JOB_INVALID, "prompt" },
	{ "null prompt", B("{\"prompt\":null}"), JOB_INVALID, "prompt" },
	{ "list prompt", B("{\"prompt\":[\"" SECRET "\"]}"), JOB_INVALID, "prompt" },
	{ "escaped prompt", B("{\"prompt\":\"caf\\u00e9 \\ud83d\\ude00\"}"), JOB_OK, "" },

	/* model, provider */
	{ "model", B(J(",\"model\":\"gpt-image-2\"")), JOB_OK, "" },
	{ "model with : and .", B(J(",\"model\":\"gemini-3.1-flash:latest_2\"")), JOB_OK, "" },
	{ "model empty", B(J(",\"model\":\"\"")), JOB_INVALID, "model" },
	{ "model with a slash", B(J(",\"model\":\"" SECRET "/../x\"")), JOB_INVALID, "model" },
	{ "model with a space", B(J(",\"model\":\"gpt image\"")), JOB_INVALID, "model" },
	{ "model starting with a dot", B(J(",\"model\":\"..\"")), JOB_INVALID, "model" },
	{ "model too long", B(J(",\"model\":\"" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "\"")),
	  JOB_INVALID, "model" },
	{ "model 128 long", B(J(",\"model\":\"" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
				"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" "\"")),
	  JOB_OK, "" },
	{ "model number", B(J(",\"model\":2")), JOB_INVALID, "model" },
	{ "provider", B(J(",\"provider\":\"apiyi_backup-2\"")), JOB_OK, "" },
	{ "provider with a dot", B(J(",\"provider\":\"api.yi\"")), JOB_INVALID, "provider" },
	{ "provider object", B(J(",\"provider\":{}")), JOB_INVALID, "provider" },

	/* size */
	{ "size auto", B(J(",\"size\":\"auto\"")), JOB_OK, "" },
	{ "size WxH", B(J(",\"size\":\"1536x1024\"")), JOB_OK, "" },
	{ "size largest", B(J(",\"size\":\"16384x16384\"")), JOB_OK, "" },
	{ "size 1x1", B(J(",\"size\":\"1x1\"")), JOB_OK, "" },
	{ "size too wide", B(J(",\"size\":\"16385x1024\"")), JOB_INVALID, "size" },
	{ "size zero", B(J(",\"size\":\"0x1024\"")), JOB_INVALID, "size" },
	{ "size leading zero", B(J(",\"size\":\"01024x1024\"")), JOB_INVALID, "size" },
	{ "size sign", B(J(",\"size\":\"+1024x1024\"")), JOB_INVALID, "size" },
	{ "size negative", B(J(",\"size\":\"1024x-1024\"")), JOB_INVALID, "size" },
	{ "size capital X", B(J(",\"size\":\"1024X1024\"")), JOB_INVALID, "size" },
	{ "size spaces", B(J(",\"size\":\"1024 x 1024\"")), JOB_INVALID, "size" },
	{ "size trailing text", B(J(",\"size\":\"1024x1024" SECRET "\"")), JOB_INVALID, "size" },
	{ "size one side", B(J(",\"size\":\"1024\"")), JOB_INVALID, "size" },
	{ "size Auto", B(J(",\"size\":\"Auto\"")), JOB_INVALID, "size" },
	{ "size huge digits", B(J(",\"size\":\"99999999999999999999x1\"")), JOB_INVALID, "size" },
	{ "size number", B(J(",\"size\":1024")), JOB_INVALID, "size" },
	{ "size list", B(J(",\"size\":[1024,1024]")), JOB_INVALID, "size" },

	/* n */
	{ "n 1", B(J(",\"n\":1")), JOB_OK, "" },
	{ "n 4", B(J(",\"n\":4")), JOB_OK, "" },
	{ "n 5", B(J(",\"n\":5")), JOB_INVALID, "n" },
	{ "n 0", B(J(",\"n\":0")), JOB_INVALID, "n" },
	{ "n negative", B(J(",\"n\":-1")), JOB_INVALID, "n" },
	{ "n real", B(J(",\"n\":2.0")), JOB_INVALID, "n" },
	{ "n exponent", B(J(",\"n\":2e0")), JOB_INVALID, "n" },
	{ "n string", B(J(",\"n\":\"2\"")), JOB_INVALID, "n" },
	{ "n true", B(J(",\"n\":true")), JOB_INVALID, "n" },
	{ "n null", B(J(",\"n\":null")), JOB_INVALID, "n" },
	{ "n huge", B(J(",\"n\":9223372036854775807")), JOB_INVALID, "n" },

	/* quality, background, output_format, moderation */
	{ "quality low", B(J(",\"quality\":\"low\"")), JOB_OK, "" },
	{ "quality medium", B(J(",\"quality\":\"medium\"")), JOB_OK, "" },
	{ "quality high", B(J(",\"quality\":\"high\"")), JOB_OK, "" },
	{ "quality auto", B(J(",\"quality\":\"auto\"")), JOB_OK, "" },
	{ "quality xhigh", B(J(",\"quality\":\"xhigh\"")), JOB_OK, "" },
	{ "quality max", B(J(",\"quality\":\"max\"")), JOB_OK, "" },
	{ "quality hd", B(J(",\"quality\":\"hd\"")), JOB_INVALID, "quality" },
	{ "quality standard", B(J(",\"quality\":\"standard\"")), JOB_INVALID, "quality" },
	{ "quality High", B(J(",\"quality\":\"High\"")), JOB_INVALID, "quality" },
	{ "quality secret", B(J(",\"quality\":\"" SECRET "\"")), JOB_INVALID, "quality" },
	{ "quality number", B(J(",\"quality\":3")), JOB_INVALID, "quality" },
	{ "background transparent", B(J(",\"background\":\"transparent\"")), JOB_OK, "" },
	{ "background opaque", B(J(",\"background\":\"opaque\"")), JOB_OK, "" },
	{ "background auto", B(J(",\"background\":\"auto\"")), JOB_OK, "" },
	{ "background white", B(J(",\"background\":\"white\"")), JOB_INVALID, "background" },
	{ "background false", B(J(",\"background\":false")), JOB_INVALID, "background" },
	{ "output_format png", B(J(",\"output_format\":\"png\"")), JOB_OK, "" },
	{ "output_format jpeg", B(J(",\"output_format\":\"jpeg\"")), JOB_OK, "" },
	{ "output_format webp", B(J(",\"output_format\":\"webp\"")), JOB_OK, "" },
	{ "output_format jpg", B(J(",\"output_format\":\"jpg\"")), JOB_INVALID, "output_format" },
	{ "output_format list", B(J(",\"output_format\":[\"png\"]")), JOB_INVALID, "output_format" },
	{ "moderation auto", B(J(",\"moderation\":\"auto\"")), JOB_OK, "" },
	{ "moderation low", B(J(",\"moderation\":\"low\"")), JOB_OK, "" },
	{ "moderation off", B(J(",\"moderation\":\"off\"")), JOB_INVALID, "moderation" },

	/* output_compression */
	{ "compression with jpeg", B(J(",\"output_format\":\"jpeg\",\"output_compression\":80")), JOB_OK, "" },
	{ "compression 0 with webp", B(J(",\"output_format\":\"webp\",\"output_compression\":0")), JOB_OK, "" },
	{ "compression 100", B(J(",\"output_compression\":100,\"output_format\":\"jpeg\"")), JOB_OK, "" },
	{ "compression 101", B(J(",\"output_format\":\"jpeg\",\"output_compression\":101")),
	  JOB_INVALID, "output_compression" },
	{ "compression -1", B(J(",\"output_format\":\"jpeg\",\"output_compression\":-1")),
	  JOB_INVALID, "output_compression" },
	{ "compression real", B(J(",\"output_format\":\"jpeg\",\"output_compression\":50.5")),
	  JOB_INVALID, "output_compression" },
	{ "compression without format", B(J(",\"output_compression\":80")), JOB_INVALID, "output_compression" },
	{ "compression with png", B(J(",\"output_format\":\"png\",\"output_compression\":80")),
	  JOB_INVALID, "output_compression" },

	/* timeout */
	{ "timeout 1", B(J(",\"timeout\":1")), JOB_OK, "" },
	{ "timeout 3600", B(J(",\"timeout\":3600")), JOB_OK, "" },
	{ "timeout 0", B(J(",\"timeout\":0")), JOB_INVALID, "timeout" },
	{ "timeout 3601", B(J(",\"timeout\":3601")), JOB_INVALID, "timeout" },
	{ "timeout string", B(J(",\"timeout\":\"60\"")), JOB_INVALID, "timeout" },

	/* images, mask */
	{ "one image", B(J(",\"images\":[\"refs/cat.png\"]")), JOB_OK, "" },
	{ "image with dots in names", B(J(",\"images\":[\"./a/.b/c..d/...\"]")), JOB_OK, "" },
	{ "image with UTF-8 name", B(J(",\"images\":[\"r\xc3\xa9" "f/\xe7\x8c\xab.png\"]")), JOB_OK, "" },
	{ "sixteen images", B(J(",\"images\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\","
				"\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\"]")), JOB_OK, "" },
	{ "seventeen images", B(J(",\"images\":[\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\","
				  "\"i\",\"j\",\"k\",\"l\",\"m\",\"n\",\"o\",\"p\",\"q\"]")),
	  JOB_INVALID, "images" },
	{ "no images", B(J(",\"images\":[]")), JOB_INVALID, "images" },
	{ "images a string", B(J(",\"images\":\"" SECRET ".png\"")), JOB_INVALID, "images" },
	{ "image a number", B(J(",\"images\":[\"a.png\",3]")), JOB_INVALID, "images[1]" },
	{ "image empty", B(J(",\"images\":[\"\"]")), JOB_INVALID, "images[0]" },
	{ "image absolute", B(J(",\"images\":[\"/etc/" SECRET "\"]")), JOB_INVALID, "images[0]" },
	{ "image ..", B(J(",\"images\":[\"a\",\"b\",\"../" SECRET "\"]")), JOB_INVALID, "images[2]" },
	{ "image .. inside", B(J(",\"images\":[\"refs/../../" SECRET "\"]")), JOB_INVALID, "images[0]" },
	{ "image .. at the end", B(J(",\"images\":[\"refs/..\"]")), JOB_INVALID, "images[0]" },
	{ "image just ..", B(J(",\"images\":[\"..\"]")), JOB_INVALID, "images[0]" },
	{ "image //", B(J(",\"images\":[\"refs//" SECRET "\"]")), JOB_INVALID, "images[0]" },
	{ "image trailing /", B(J(",\"images\":[\"refs/" SECRET "/\"]")), JOB_INVALID, "images[0]" },
	{ "image backslash", B(J(",\"images\":[\"refs\\\\" SECRET "\"]")), JOB_INVALID, "images[0]" },
	{ "image newline", B(J(",\"images\":[\"refs/" SECRET "\\n.png\"]")), JOB_INVALID, "images[0]" },
	{ "image DEL", B(J(",\"images\":[\"refs/" SECRET "\x7f.png\"]")), JOB_INVALID, "images[0]" },
	{ "image C1 control", B(J(",\"images\":[\"refs/" SECRET "\\u0085.png\"]")), JOB_INVALID, "images[0]" },
	{ "image 255 bytes", B(J(",\"images\":[\""
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]")), JOB_OK, "" },
	{ "image 256 bytes", B(J(",\"images\":[\"" SECRET
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]")),
	  JOB_INVALID, "images[0]" },
	{ "mask with images", B(J(",\"images\":[\"a.png\"],\"mask\":\"m.png\"")), JOB_OK, "" },
	{ "mask without images", B(J(",\"mask\":\"" SECRET ".png\"")), JOB_INVALID, "mask" },
	{ "mask absolute", B(J(",\"images\":[\"a.png\"],\"mask\":\"/" SECRET "\"")), JOB_INVALID, "mask" },
	{ "mask ..", B(J(",\"images\":[\"a.png\"],\"mask\":\"x/../../" SECRET "\"")), JOB_INVALID, "mask" },
	{ "mask list", B(J(",\"images\":[\"a.png\"],\"mask\":[\"m.png\"]")), JOB_INVALID, "mask" },

	/* metadata */
	{ "metadata object", B(J(",\"metadata\":{\"user\":\"" SECRET "\"}")), JOB_OK, "" },
	{ "metadata null", B(J(",\"metadata\":null")), JOB_OK, "" },
	{ "metadata number", B(J(",\"metadata\":-1.5e+3")), JOB_OK, "" },

	/* webhook_url: its form only (where it may go is the daemon's configuration) */
	{ "webhook_url https", B(J(",\"webhook_url\":\"https://hooks.example.com/" SECRET "\"")), JOB_OK, "" },
	{ "webhook_url http", B(J(",\"webhook_url\":\"http://127.0.0.1:8080/x\"")), JOB_OK, "" },
	{ "webhook_url ftp", B(J(",\"webhook_url\":\"ftp://" SECRET "\"")), JOB_INVALID, "webhook_url" },
	{ "webhook_url upper case", B(J(",\"webhook_url\":\"HTTPS://" SECRET "\"")), JOB_INVALID,
	  "webhook_url" },
	{ "webhook_url no scheme", B(J(",\"webhook_url\":\"" SECRET ".example.com\"")), JOB_INVALID,
	  "webhook_url" },
	{ "webhook_url space", B(J(",\"webhook_url\":\"https://x/" SECRET " y\"")), JOB_INVALID,
	  "webhook_url" },
	{ "webhook_url number", B(J(",\"webhook_url\":1")), JOB_INVALID, "webhook_url" },
	{ "webhook_url null", B(J(",\"webhook_url\":null")), JOB_INVALID, "webhook_url" },

	/* unknown fields */
	{ "misspelt field", B(J(",\"quailty\":\"high\"")), JOB_INVALID, "quailty" },
	{ "capitalised field", B("{\"Prompt\":\"a cat\"}"), JOB_INVALID, "Prompt" },
	{ "unrelated field", B(J(",\"input_fidelity\":\"high\"")), JOB_INVALID, "input_fidelity" },
	{ "long hostile field", B(J(",\"" SECRET "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1")), JOB_INVALID, "" },
	{ "field with a quote", B(J(",\"" SECRET "\\\"\":1")), JOB_INVALID, "" },
	{ "field with a newline", B(J(",\"" SECRET "\\n\":1")), JOB_INVALID, "" },
	{ "field with UTF-8", B(J(",\"" SECRET "\xc3\xa9\":1")), JOB_INVALID, "" },
	{ "empty field name", B(J(",\"\":1")), JOB_INVALID, "" },
	{ "unknown field beats a bad value", B("{\"n\":0,\"colour\":1}"), JOB_INVALID, "colour" },
};

static const struct job zero_job;

static void check_parse_rows(void)
{
	struct job_limits limits;

	job_limits_default(&limits);
	for (size_t i = 0; i < ARRAY_SIZE(parse_rows); i++) {
		const struct parse_row *row = &parse_rows[i];
		struct job job;
		struct job_error err;
		enum job_parse_result got;

		memset(&err, 'x', sizeof(err));   /* job_parse must set both strings */
		err.field[sizeof(err.field) - 1] = err.message[sizeof(err.message) - 1] = '\0';
		got = job_parse(&job, row->input, row->len, &limits, &err);
		if (!ok(got == row->want, "%s: result", row->name))
			printf("#   got %d, want %d: [%s] %s\n", got, row->want, err.field, err.message);
		is_str(err.field, row->want_field, "%s: field", row->name);
		if (row->want == JOB_OK) {
			ok(job.prompt && job.n >= 1, "%s: filled", row->name);
			job_release(&job);
			continue;
		}
		ok(!memcmp(&job, &zero_job, sizeof(job)), "%s: nothing left to free", row->name);
		ok(err.message[0] && !isupper((unsigned char)err.message[0]),
		   "%s: a lower-case message: %s", row->name, err.message);
		ok(!strstr(err.message, SECRET) && !strstr(err.field, SECRET),
		   "%s: no secret in the error", row->name);
	}
}

static enum job_parse_result parse_str(struct job *job, const char *s, const struct job_limits *limits,
				       struct job_error *err)
{
	return job_parse(job, s, strlen(s), limits, err);
}

static void check_defaults_and_values(void)
{
	struct job_limits limits;
	struct job job;
	struct job_error err;
	const char *full = "{\"prompt\":\"a red fox\",\"model\":\"gpt-image-2\",\"provider\":\"apiyi\","
		"\"size\":\"1024x1536\",\"n\":3,\"quality\":\"high\",\"background\":\"opaque\","
		"\"output_format\":\"webp\",\"output_compression\":70,\"moderation\":\"low\","
		"\"timeout\":600,\"images\":[\"refs/a.png\",\"refs/b.jpg\"],\"mask\":\"refs/m.png\","
		"\"metadata\":{\"a\":[1,2.5,{\"b\":null}],\"c\":\"d\",\"e\":true}}";

	job_limits_default(&limits);
	ok(limits.max_n == 4 && limits.max_pixels_mp == 0 && limits.max_depth == 32, "default limits");

	ok(parse_str(&job, "{\"prompt\":\"a cat\"}", &limits, &err) == JOB_OK, "defaults: parses");
	is_str(job.prompt, "a cat", "defaults: prompt");
	ok(!job.model && !job.provider && !job.size && !job.quality && !job.background &&
	   !job.output_format && !job.moderation && !job.mask && !job.metadata,
	   "defaults: optional strings are NULL");
	ok(job.n == 1 && job.output_compression == -1 && job.timeout == 0 && job.n_refs == 0,
	   "defaults: n 1, compression -1, timeout 0, no refs");
	is_str(err.message, "", "defaults: no message");
	job_release(&job);
	ok(!memcmp(&job, &zero_job, sizeof(job)), "job_release leaves a zeroed job");
	job_release(&job);
	ok(1, "job_release twice is safe");

	ok(parse_str(&job, full, &limits, &err) == JOB_OK, "full job: parses");
	is_str(job.prompt, "a red fox", "full job: prompt");
	is_str(job.model, "gpt-image-2", "full job: model");
	is_str(job.provider, "apiyi", "full job: provider");
	is_str(job.size, "1024x1536", "full job: size");
	ok(job.n == 3, "full job: n");
	is_str(job.quality, "high", "full job: quality");
	is_str(job.background, "opaque", "full job: background");
	is_str(job.output_format, "webp", "full job: output_format");
	ok(job.output_compression == 70, "full job: output_compression");
	is_str(job.moderation, "low", "full job: moderation");
	ok(job.timeout == 600, "full job: timeout");
	ok(job.n_refs == 2, "full job: two refs");
	is_str(job.refs[0], "refs/a.png", "full job: refs[0]");
	is_str(job.refs[1], "refs/b.jpg", "full job: refs[1]");
	ok(!job.refs[2], "full job: refs[2] unused");
	is_str(job.mask, "refs/m.png", "full job: mask");

	/* The root is freed inside job_parse: the metadata must have its own reference. */
	json_t *want = json_loads("{\"e\":true,\"c\":\"d\",\"a\":[1,2.5,{\"b\":null}]}", 0, NULL);
	ok(job.metadata && json_equal(job.metadata, want), "full job: metadata echoed");
	ok(job.metadata && job.metadata->refcount == 1, "full job: metadata owned once");
	json_decref(want);
	job_release(&job);

	ok(parse_str(&job, "{\"prompt\":\"x\",\"metadata\":null}", &limits, &err) == JOB_OK &&
	   json_is_null(job.metadata), "metadata null is kept as null");
	job_release(&job);

	ok(parse_str(&job, "{\"prompt\":\"x\"}", NULL, NULL) == JOB_OK, "NULL limits and err");
	job_release(&job);
}

static void check_limits(void)
{
	struct job_limits limits;
	struct job job;
	struct job_error err;

	job_limits_default(&limits);
	limits.max_n = 2;
	ok(parse_str(&job, J(",\"n\":2"), &limits, &err) == JOB_OK, "max_n 2: n 2 ok");
	job_release(&job);
	ok(parse_str(&job, J(",\"n\":3"), &limits, &err) == JOB_INVALID, "max_n 2: n 3 refused");
	is_str(err.field, "n", "max_n 2: field");
	ok(strstr(err.message, "from 1 to 2") != NULL, "max_n 2: message says the range: %s",
	   err.message);

	limits.max_pixels_mp = 4;
	ok(parse_str(&job, J(",\"size\":\"2000x2000\""), &limits, &err) == JOB_OK,
	   "4 MP cap: exactly 4 000 000 pixels ok");
	job_release(&job);
	ok(parse_str(&job, J(",\"size\":\"2048x2048\""), &limits, &err) == JOB_INVALID,
	   "4 MP cap: 2048x2048 refused");
	is_str(err.field, "size", "4 MP cap: field");
	ok(strstr(err.message, "4 megapixels") != NULL, "4 MP cap: message says the cap: %s",
	   err.message);
	ok(parse_str(&job, J(",\"size\":\"auto\""), &limits, &err) == JOB_OK, "4 MP cap: auto ok");
	job_release(&job);
	limits.max_pixels_mp = 0;
	ok(parse_str(&job, J(",\"size\":\"16384x16384\""), &limits, &err) == JOB_OK,
	   "no cap: 16384x16384 ok");
	job_release(&job);
}

/* A JSON text nested depth levels deep inside a job's metadata, or alone when bare. */
static char *nested(int depth, bool bare)
{
	struct buf b;
	const char *head = "{\"prompt\":\"x\",\"metadata\":";

	buf_init(&b, 1 << 20);
	if (!bare)
		buf_append(&b, head, strlen(head));
	for (int i = 0; i < depth; i++)
		buf_append(&b, "[", 1);
	for (int i = 0; i < depth && !bare; i++)
		buf_append(&b, "]", 1);
	if (!bare)
		buf_append(&b, "}", 1);
	return buf_detach(&b, NULL);
}

static void check_depth(void)
{
	struct job_limits limits;
	struct job job;
	struct job_error err;
	char *s;

	job_limits_default(&limits);
	s = nested(10000, true);
	ok(parse_str(&job, s, &limits, &err) == JOB_INVALID, "10 000 [ refused");
	is_str(err.field, "", "10 000 [: whole file");
	free(s);

	s = nested(10000, false);
	ok(parse_str(&job, s, &limits, &err) == JOB_INVALID, "10 000 levels in metadata refused");
	ok(strstr(err.message, "32 levels") != NULL, "depth: message says the limit: %s", err.message);
	free(s);

	s = nested(31, false);
	ok(parse_str(&job, s, &limits, &err) == JOB_OK, "depth 32 in all accepted");
	job_release(&job);
	free(s);

	s = nested(32, false);
	ok(parse_str(&job, s, &limits, &err) == JOB_INVALID, "depth 33 in all refused");
	free(s);

	limits.max_depth = 2;
	ok(parse_str(&job, J(",\"metadata\":{\"a\":\"[[[{{{\"}"), &limits, &err) == JOB_OK,
	   "max_depth 2: brackets in strings do not count");
	job_release(&job);
	ok(parse_str(&job, J(",\"metadata\":{\"a\":[]}"), &limits, &err) == JOB_INVALID,
	   "max_depth 2: three levels refused");
}

/* A job whose prompt is count copies of ch. */
static char *prompt_of(const char *ch, size_t count)
{
	struct buf b;

	buf_init(&b, 1 << 20);
	buf_append(&b, "{\"prompt\":\"", 11);
	for (size_t i = 0; i < count; i++)
		buf_append(&b, ch, strlen(ch));
	buf_append(&b, "\"}", 2);
	return buf_detach(&b, NULL);
}

static void check_prompt_length(void)
{
	static const struct {
		const char *name;
		const char *ch;
		size_t count;
		enum job_parse_result want;
	} rows[] = {
		{ "32 000 ASCII characters", "a", 32000, JOB_OK },
		{ "32 001 ASCII characters", "a", 32001, JOB_INVALID },
		{ "32 000 two-byte characters", "\xc3\xa9", 32000, JOB_OK },
		{ "32 001 two-byte characters", "\xc3\xa9", 32001, JOB_INVALID },
		{ "32 000 three-byte characters", "\xe7\x8c\xab", 32000, JOB_OK },
		{ "32 000 four-byte characters", "\xf0\x9f\x98\x80", 32000, JOB_OK },
		{ "32 001 four-byte characters", "\xf0\x9f\x98\x80", 32001, JOB_INVALID },
		{ "32 000 escaped pairs", "\\ud83d\\ude00", 32000, JOB_OK },
	};
	struct job_limits limits;

	job_limits_default(&limits);
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		struct job job;
		struct job_error err;
		char *s = prompt_of(rows[i].ch, rows[i].count);
		enum job_parse_result got = parse_str(&job, s, &limits, &err);

		ok(got == rows[i].want, "%s: result", rows[i].name);
		if (got == JOB_OK) {
			/* An escaped surrogate pair decodes to four bytes of UTF-8. */
			size_t each = rows[i].ch[0] == '\\' ? 4 : strlen(rows[i].ch);
			ok(job.prompt && strlen(job.prompt) == rows[i].count * each, "%s: kept whole",
			   rows[i].name);
			job_release(&job);
		} else {
			is_str(err.field, "prompt", "%s: field", rows[i].name);
		}
		free(s);
	}
}

/* Every strict prefix of a job is something a writer might still be extending. */
static void check_prefixes(void)
{
	static const char doc[] = " {\"prompt\": \"h\\u00e9\\ud83d\\ude00 \xc3\xa9\xe7\x8c\xab\xf0\x9f\x98\x80\\n\\\"\","
		"\n \"n\" : 2, \"metadata\": {\"a\": [true, false, null, -1.5e+3, 0, 10E-2, \"\"], "
		"\"b\": {}, \"c\": []}}";
	struct job_limits limits;
	struct job job;
	struct job_error err;
	size_t bad = 0, first_bad = 0;

	job_limits_default(&limits);
	for (size_t len = 0; len < sizeof(doc) - 1; len++) {
		if (job_parse(&job, doc, len, &limits, &err) != JOB_INCOMPLETE && !bad++)
			first_bad = len;
	}
	if (!ok(!bad, "all %zu strict prefixes of a job are incomplete", sizeof(doc) - 1))
		printf("#   %zu wrong, first at %zu: %s\n", bad, first_bad, err.message);
	ok(job_parse(&job, doc, sizeof(doc) - 1, &limits, &err) == JOB_OK, "the whole job parses");
	job_release(&job);
}

static void check_messages(void)
{
	static const struct {
		const char *name;
		const char *input;
		const char *want;      /* a part of the message */
		const char *unwanted;  /* NULL, or something it must not say */
	} rows[] = {
		{ "n string", J(",\"n\":\"2\""), "\"n\" must be an integer from 1 to 4, not a string", NULL },
		{ "n 7", J(",\"n\":7"), "not 7", NULL },
		{ "n real", J(",\"n\":2.0"), "not a decimal number", NULL },
		{ "quality hd", J(",\"quality\":\"hd\""), "DALL-E", NULL },
		{ "quality hd lists", J(",\"quality\":\"hd\""), "low, medium, high, auto, xhigh, max", NULL },
		{ "misspelt", J(",\"quailty\":1"), "unknown field \"quailty\"", NULL },
		{ "suggestion", J(",\"quailty\":1"), "did you mean \"quality\"", NULL },
		{ "known list", J(",\"quailty\":1"), "output_compression", NULL },
		{ "no suggestion", J(",\"colour\":1"), "unknown field \"colour\";", "did you mean" },
		{ "hostile key", J(",\"" SECRET "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\":1"),
		  "an unknown field", SECRET },
		{ "mask", J(",\"mask\":\"m.png\""), "a mask applies to the first reference image", NULL },
		{ "compression", J(",\"output_compression\":5"), "jpeg", NULL },
		{ "truncated", "{\"prompt\":\n\"x\",\n", "unexpected end of input at line 3", NULL },
		{ "utf-8", "{\"prompt\":\"\xff\"}", "not valid UTF-8 JSON", NULL },
		{ "duplicate", "{\"prompt\":\"x\",\"prompt\":\"x\"}", "appears twice", NULL },
		{ "empty", "", "empty", NULL },
		{ "path", J(",\"images\":[\"/" SECRET "\"]"), "relative to the spool directory", SECRET },
	};
	struct job_limits limits;

	job_limits_default(&limits);
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		struct job job;
		struct job_error err;

		parse_str(&job, rows[i].input, &limits, &err);
		if (!ok(strstr(err.message, rows[i].want) &&
			(!rows[i].unwanted || !strstr(err.message, rows[i].unwanted)),
			"message %s", rows[i].name))
			printf("#   got: %s\n", err.message);
		job_release(&job);
	}
}

static void check_size_dimensions(void)
{
	static const struct {
		const char *size;
		bool want;
		int w, h;
	} rows[] = {
		{ "1024x1536", true, 1024, 1536 },
		{ "1x16384", true, 1, 16384 },
		{ "16384x16385", false, 0, 0 },
		{ "auto", false, 0, 0 },
		{ "", false, 0, 0 },
		{ "x", false, 0, 0 },
		{ "1024x", false, 0, 0 },
		{ "x1024", false, 0, 0 },
		{ "1024x1024x1", false, 0, 0 },
		{ "1024x0", false, 0, 0 },
		{ " 1024x1024", false, 0, 0 },
	};

	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		int w = 0, h = 0;
		bool got = job_size_dimensions(rows[i].size, &w, &h);

		ok(got == rows[i].want && (!got || (w == rows[i].w && h == rows[i].h)),
		   "job_size_dimensions(\"%s\")", rows[i].size);
	}
	ok(!job_size_dimensions(NULL, &(int){0}, &(int){0}), "job_size_dimensions(NULL)");
}

static void check_ids(void)
{
	static const struct {
		const char *name;
		int want;
		const char *want_id;
	} rows[] = {
		{ "cat.json", 0, "cat" },
		{ "A-b_c.d.json", 0, "A-b_c.d" },
		{ "1700000000.M1P2Q3.host.json", 0, "1700000000.M1P2Q3.host" },
		{ "7.json", 0, "7" },
		{ "a.1b.json", 0, "a.1b" },
		{ "a.result2.json", 0, "a.result2" },
		{ "a.results.json", 0, "a.results" },
		{ "result.json", 0, "result" },
		{ ".json", -1, NULL },
		{ "json", 0, "json" },
		{ "cat", 0, "cat" },             /* a trailing ".json" is optional */
		{ "cat.JSON", 0, "cat.JSON" },
		{ "cat.json.tmp", 0, "cat.json.tmp" },
		{ "", -1, NULL },
		{ ".cat.json", -1, NULL },
		{ "-cat.json", -1, NULL },
		{ "_cat.json", -1, NULL },
		{ "cat.result.json", -1, NULL },
		{ "cat.1.json", -1, NULL },
		{ "cat.123.json", -1, NULL },
		{ "cat..json", -1, NULL },
		{ "c a t.json", -1, NULL },
		{ "cat/x.json", -1, NULL },
		{ "caf\xc3\xa9.json", -1, NULL },
		{ "cat\t.json", -1, NULL },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.json", 0,
		  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" },
		{ "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
		  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.json", -1, NULL },
	};
	char id[JOB_ID_MAX + 1];

	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		int got = job_id_from_name(rows[i].name, id, sizeof(id));

		ok(got == rows[i].want, "job_id_from_name(\"%s\") returns %d", rows[i].name, rows[i].want);
		if (got == 0)
			is_str(id, rows[i].want_id, "job_id_from_name(\"%s\"): id", rows[i].name);
	}
	ok(job_id_from_name("cat.json", id, 4) == 0 && !strcmp(id, "cat"), "id fits exactly");
	ok(job_id_from_name("cats.json", id, 4) == -1, "id does not fit");
}

/* A version moved back to deferred/ as ID.N.json (N from 2 to 9) names ID there, and only there:
 * in new/ such a name is no id. */
static void check_ids_listed(void)
{
	static const struct {
		const char *name;
		bool numbered;
		int want;
		const char *want_id;
	} rows[] = {
		{ "cat.json", false, 0, "cat" },
		{ "cat", true, 0, "cat" },
		{ "cat.2.json", true, 0, "cat" },
		{ "cat.9.json", true, 0, "cat" },
		{ "cat.2.json", false, -1, NULL },
		{ "cat.1.json", true, -1, NULL },
		{ "cat.10.json", true, -1, NULL },
		{ "cat.2", true, -1, NULL },
		{ ".2.json", true, -1, NULL },
		{ "x.json.2.json", true, 0, "x.json" },
		{ "cat.result.2.json", true, -1, NULL },
		{ "cat.3.2.json", true, -1, NULL },
	};
	char id[JOB_ID_MAX + 1], name[JOB_ID_MAX + 8];
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++) {
		int got = job_id_from_listed(rows[i].name, rows[i].numbered, id, sizeof(id));
		ok(got == rows[i].want, "job_id_from_listed(\"%s\", %d) returns %d", rows[i].name,
		   rows[i].numbered, rows[i].want);
		if (got == 0)
			is_str(id, rows[i].want_id, "job_id_from_listed(\"%s\"): id", rows[i].name);
	}
	job_numbered_name("x.json", 2, name, sizeof(name));
	is_str(name, "x.json.2.json", "job_numbered_name of an id ending in .json");
	ok(job_id_from_listed(name, true, id, sizeof(id)) == 0 && !strcmp(id, "x.json"),
	   "and back");
}

/* The daemon's records go onto the client's bytes: every other byte as written (a 1e300 or a
 * "\u00e9" would change if re-serialised), one "imgspool" member, in place of the one there. */
static const struct splice_row {
	const char *name;
	const char *in;
	const char *want;        /* NULL: not a JSON object, no text */
} splice_rows[] = {
	{ "added last", "{\"prompt\": \"x\", \"metadata\": [1e300, \"\\u00e9\"]}\n",
	  "{\"prompt\": \"x\", \"metadata\": [1e300, \"\\u00e9\"],\"imgspool\":R}\n" },
	{ "white space kept", " {\n  \"prompt\" : \"x\"\n}\n\n", " {\n  \"prompt\" : \"x\",\"imgspool\":R\n}\n\n" },
	{ "an empty object", "{}", "{\"imgspool\":R}" },
	{ "an empty object with space", "{ }", "{ \"imgspool\":R}" },
	{ "replaced in place", "{\"imgspool\" : {\"a\": [1, {\"b\": \"}\"}]}, \"prompt\": \"x\"}",
	  "{\"imgspool\":R, \"prompt\": \"x\"}" },
	{ "replaced last", "{\"prompt\":\"x\",\"imgspool\":{}}", "{\"prompt\":\"x\",\"imgspool\":R}" },
	{ "an escaped key is the same key", "{\"prompt\":\"x\",\"imgspo\\u006fl\":{\"c\":1}}",
	  "{\"prompt\":\"x\",\"imgspool\":R}" },
	{ "a longer key is another", "{\"imgspool2\":1,\"p\":\"imgspool\"}",
	  "{\"imgspool2\":1,\"p\":\"imgspool\",\"imgspool\":R}" },
	{ "only the top level counts", "{\"metadata\":{\"imgspool\":{}},\"q\":\"\\\"}\"}",
	  "{\"metadata\":{\"imgspool\":{}},\"q\":\"\\\"}\",\"imgspool\":R}" },
	{ "not an object", "[1,2]", NULL },
	{ "cut short", "{\"prompt\":\"x\"", NULL },
	{ "cut in a string", "{\"prompt\":\"x", NULL },
	{ "a bad escape", "{\"pro\\qmpt\":1}", NULL },
	{ "empty", "", NULL },
};

static void check_splice(void)
{
	const char *records = "{\"attempts\":[]}";
	for (size_t i = 0; i < ARRAY_SIZE(splice_rows); i++) {
		const struct splice_row *w = &splice_rows[i];
		size_t len = 0, in_len = strlen(w->in);
		char *got = job_with_records(w->in, in_len, records, &len);
		char want[512] = "";
		if (w->want) {   /* R stands for the records */
			const char *r = strstr(w->want, "R");
			xsnprintf(want, sizeof(want), "%.*s%s%s", (int)(r - w->want), w->want, records, r + 1);
		}
		is_str(got, w->want ? want : NULL, "splice, %s", w->name);
		ok(!got || len == strlen(got), "splice, %s: its length", w->name);
		if (got) {   /* what max_job_bytes holds: the client's bytes, the same after */
			size_t client = job_client_bytes(got, len);
			ok(client == job_client_bytes(w->in, in_len) &&
			   len == client + strlen(records) + strlen(",\"imgspool\":") - !strcmp(w->in, "{}") -
			   !strcmp(w->in, "{ }"), "splice, %s: %zu client bytes", w->name, client);
		}
		free(got);
	}
	ok(job_client_bytes("[1]", 3) == 3, "a file that is not an object is all the client's");
	static const char *const members[][2] = {
		{ "{\"a\":1,\"imgspool\":{\"x\":[1,2]}}", "{\"a\":1}" },
		{ "{\"imgspool\":{},\"a\":1}", "{\"a\":1}" },
		{ "{ \"imgspool\" : 5 }", "{  }" },
		{ "{\"a\":1}\n", "{\"a\":1}\n" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(members); i++)
		ok(job_client_bytes(members[i][0], strlen(members[i][0])) == strlen(members[i][1]),
		   "client bytes, row %zu", i);

	/* A member's value as the client wrote it: the last of its name, as jansson keeps it. */
	static const struct { const char *in, *want; } values[] = {
		{ "{\"metadata\": {\"a\": [1.10, \"}\\\"\"] } ,\"b\":1}", "{\"a\": [1.10, \"}\\\"\"] }" },
		{ "{\"metad\\u0061ta\":1e300}", "1e300" },
		{ "{\"metadata\":1,\"x\":{\"metadata\":2},\"metadata\":\n null\n}", "null" },
		{ "{\"metadatax\":1}", NULL },
		{ "[{\"metadata\":1}]", NULL },
	};
	for (size_t i = 0; i < ARRAY_SIZE(values); i++) {
		size_t vlen = 0;
		const char *v = job_member_bytes(values[i].in, strlen(values[i].in), "metadata", &vlen);
		ok(values[i].want ? v && vlen == strlen(values[i].want) && !memcmp(v, values[i].want, vlen)
				  : !v, "member bytes, row %zu", i);
	}

	/* Every member of a name (what imgspool show redacts in a file it does not parse). */
	static const struct { const char *in; long count; const char *first, *second; } all[] = {
		{ "{\"w\":\"a\",\"x\":{\"w\":1},\"\\u0077\": [2] }", 2, "\"a\"", "[2]" },
		{ "{\"x\":1}", 0, NULL, NULL },
		{ "{}", 0, NULL, NULL },
		{ "[{\"w\":1}]", -1, NULL, NULL },
		{ "{\"w\":1,", -1, NULL, NULL },
	};
	for (size_t i = 0; i < ARRAY_SIZE(all); i++) {
		struct job_span spans[2];
		const char *in = all[i].in;
		long n = job_member_values(in, strlen(in), "w", spans, 1);
		bool first = !all[i].first || (spans[0].end - spans[0].start == strlen(all[i].first) &&
					       !memcmp(in + spans[0].start, all[i].first, strlen(all[i].first)));
		n = n == all[i].count && n == 2 ? job_member_values(in, strlen(in), "w", spans, 2) : n;
		bool second = !all[i].second || (spans[1].end - spans[1].start == strlen(all[i].second) &&
						 !memcmp(in + spans[1].start, all[i].second,
							 strlen(all[i].second)));
		ok(n == all[i].count && first && second, "every member of a name, row %zu (%ld)", i, n);
	}

	/* What jansson refuses the scan refuses too (imgspool show prints the bytes of a file it
	 * takes): a raw control byte in a string, a stray byte between values, bytes after the
	 * object. White space and escapes are JSON. */
	static const struct { const char *in; long count; } strict[] = {
		{ "{\"w\":\"a\x1b[2J\"}", -1 },
		{ "{\"w\x07\":1}", -1 },
		{ "{\"w\":\"a\tb\"}", -1 },
		{ "{\"x\":[1,\x1b 2]}", -1 },
		{ "{\"x\":{\"y\":1\x1b}}", -1 },
		{ "{\"x\":1\x1b}", -1 },
		{ "{\"x\":tr\x1bue}", -1 },
		{ "{\"w\":1}\x1b[2J", -1 },
		{ "{\"w\":1}x", -1 },
		{ "{\"w\":1,}", -1 },
		{ "{,\"w\":1}", -1 },
		{ "{\"w\":\"a\\u001b\\t\x7f\xc3\xa9\"}\r\n\t ", 1 },
		{ "\n{ \"x\" : [ -1.5e+3, true, null, {} ] , \"w\" :false }\n", 1 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(strict); i++) {
		const char *in = strict[i].in;
		long n = job_member_values(in, strlen(in), "w", NULL, 0);
		ok(n == strict[i].count, "the scan takes what jansson takes, row %zu (%ld)", i, n);
	}

	/* Several members in one scan (imgspool ls of a large file): the last of each name. Of
	 * the beginning of a longer text (cut: a large result's head), what ends in it, a number
	 * cut short not taken for a whole one. */
	static const char *const names[] = { "provider", "model", "imgspool", "latency_ms", NULL };
	static const struct { bool cut; const char *in; int rc; const char *want[4]; } several[] = {
		{ false, "{\"model\":\"m\",\"x\":{\"provider\":1},\"provider\":\"p\",\"model\":[2]}", 0,
		  { "\"p\"", "[2]", NULL, NULL } },
		{ false, "{\"imgsp\\u006fol\":{},\"prov\":1,\"providers\":2}", 0, { NULL, NULL, "{}" } },
		{ false, "{}", 0, { NULL } },
		{ false, "[{\"model\":1}]", -1, { NULL } },
		{ false, "{\"model\":\"\x1b\"}", -1, { NULL } },
		{ false, "{\"provider\":\"p\",\"latency_ms\":12", -1, { NULL } },
		{ true, "{\"provider\":\"p\",\"latency_ms\":12", 0, { "\"p\"", NULL } },
		{ true, "{\"provider\":\"p\",\"latency_ms\":12 ,\"metadata\":{\"a\":", 0,
		  { "\"p\"", NULL, NULL, "12" } },
		{ true, "{\"provider\":\"p", 0, { NULL } },
		{ true, "{\"provider\":\"p\"}", 0, { "\"p\"" } },
		{ true, "[{\"provider\":1", -1, { NULL } },
	};
	for (size_t i = 0; i < ARRAY_SIZE(several); i++) {
		struct job_span spans[4];
		const char *in = several[i].in;
		int rc = job_members_at(in, strlen(in), names, several[i].cut, spans);
		bool same = rc == several[i].rc;
		for (size_t k = 0; same && rc == 0 && k < 4; k++) {
			const char *want = several[i].want[k];
			size_t len = spans[k].end - spans[k].start;
			same = want ? len == strlen(want) && !memcmp(in + spans[k].start, want, len) : !len;
		}
		ok(same, "several members in one scan, row %zu", i);
	}

	/* Spliced twice, parsed: one member, the client's fields untouched. */
	const char *job = "{\"prompt\":\"caf\\u00e9\",\"metadata\":{\"big\":1e300,\"n\":1E2}}";
	size_t len;
	char *once = job_with_records(job, strlen(job), "{\"retry_count\":1}", &len);
	char *twice = job_with_records(once, len, "{\"retry_count\":2}", &len);
	struct job j;
	struct job_error err;
	struct job_limits limits;
	job_limits_default(&limits);
	ok(job_parse(&j, twice, len, &limits, &err) == JOB_OK &&
	   json_integer_value(json_object_get(j.state, "retry_count")) == 2 &&
	   !strcmp(j.prompt, "caf\xc3\xa9"), "spliced twice, it parses with the last records");
	ok(strstr(twice, "1e300") && strstr(twice, "1E2") && strstr(twice, "\\u00e9") &&
	   len == strlen(job) + strlen(",\"imgspool\":{\"retry_count\":2}"),
	   "the client's bytes are as written");
	job_release(&j);
	free(once);
	free(twice);
}

int main(void)
{
	check_parse_rows();
	check_defaults_and_values();
	check_limits();
	check_depth();
	check_prompt_length();
	check_prefixes();
	check_messages();
	check_size_dimensions();
	check_ids();
	check_ids_listed();
	check_splice();
	return tap_done();
}
