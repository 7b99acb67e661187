/* test_config.c - defaults, bounds, unknown keys with their line, relative paths, providers. */
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "util.h"
#include "said.h"
#include "scratch_spool.h"
#include "tap.h"

static char dir[PATH_MAX];

static int load_bytes(const char *text, size_t len, struct config *cfg, char *err, size_t errsize)
{
	char *path = xasprintf("%s/t.ini", dir);
	FILE *f = fopen(path, "w");
	fwrite(text, 1, len, f);
	fclose(f);
	int rc = config_load(cfg, path, err, errsize);
	free(path);
	return rc;
}

static int load(const char *text, struct config *cfg, char *err, size_t errsize)
{
	return load_bytes(text, strlen(text), cfg, err, errsize);
}

/* What inih would read otherwise than the file says (found by tests/fuzz/fuzz_config.c): a
 * section name it cuts short, a line it cuts in two, a NUL byte, an indented line it joins to
 * the value before. Each is refused at its own line. */
static void test_what_inih_would_misread(void)
{
	char err[1024];
	struct config cfg;
	char long_name[120], long_comment[400], long_value[400];
	snprintf(long_name, sizeof(long_name), "[spool]\n[provider %045d]\nmodel = m\n", 7);
	snprintf(long_comment, sizeof(long_comment), "[spool]\nconcurrency = 2\n; %0220d\nx\n", 7);
	snprintf(long_value, sizeof(long_value), "[provider a]\nbase_url = https://h.example/%0190d"
		 ";x\n", 7);
	static const char with_nul[] = "[provider a]\nmodel = gpt\0-image-2\n";
	struct { const char *text; size_t len; int line; const char *needle; } rows[] = {
		{ long_name, strlen(long_name), 2,
		  "a [provider NAME] section's NAME is at most 40 bytes (a section's name, at most 49)" },
		{ "[route 01234567890123456789012345678901234567890123]\ntarget = apiyi\n", 0, 1,
		  "a [route NAME] section's NAME is at most 43 bytes" },
		{ "[limits01234567890123456789012345678901234567890123]\nx = 1\n", 0, 1,
		  "a section's name is at most 49 bytes" },
		{ long_comment, strlen(long_comment), 3,
		  "the line is 222 bytes long, more than the 199 read as one line" },
		{ long_value, strlen(long_value), 2, "the line is 221 bytes long" },
		{ with_nul, sizeof(with_nul) - 1, 2, "the line holds a NUL byte" },
		{ "[spool]\ndir = x\n\n  concurrency = 3\n", 0, 4,
		  "the line starts with white space, which would make it part of the value before it" },
		{ "[route r]\ntarget = apiyi/m1\n\tapiyi/m2\n", 0, 3, "starts with white space" },
		{ "  [spool]\nconcurrency = 3\n", 0, 1, "starts with white space" },
		{ "[spool] concurrency = 3\n", 0, 1, "text after a section's ']'" },
	};
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		size_t len = rows[i].len ? rows[i].len : strlen(rows[i].text);
		int rc = load_bytes(rows[i].text, len, &cfg, err, sizeof(err));
		char *prefix = xasprintf("%s/t.ini:%d: ", dir, rows[i].line);
		ok(rc < 0 && !strncmp(err, prefix, strlen(prefix)) && strstr(err, rows[i].needle),
		   "what inih would misread, row %zu, line %d: %s", i, rows[i].line, err);
		free(prefix);
		config_release(&cfg);
	}
	/* Still read: a line of 199 bytes, comments and blank lines indented, a comment after a
	 * section, a byte order mark, CRLF line ends; a long list of job URL prefixes over several
	 * lines. */
	char longest[300];
	snprintf(longest, sizeof(longest), "[spool]\n; %0196d\r\nconcurrency = 2\n", 7);
	ok(load(longest, &cfg, err, sizeof(err)) == 0 && cfg.concurrency == 2,
	   "a line of 199 bytes and CRLF: %s", err);
	config_release(&cfg);
	ok(load("[spool]\nconcurrency: 4\n", &cfg, err, sizeof(err)) == 0 && cfg.concurrency == 4,
	   "KEY: VALUE is still read as KEY = VALUE: %s", err);
	config_release(&cfg);
	ok(load("\xef\xbb\xbf[spool] ; the spool\n  ; indented comment\n \t\nconcurrency = 3\n",
		&cfg, err, sizeof(err)) == 0 && cfg.concurrency == 3,
	   "a byte order mark, a comment after a section, indented comments and blanks: %s", err);
	config_release(&cfg);
	ok(load("[notify]\nsecret_env = S\njob_url_prefixes = https://a.example/x/ https://b.example/y/\n"
		"; and\njob_url_prefixes = https://c.example/z/\n", &cfg, err, sizeof(err)) == 0 &&
	   cfg.notify_url_prefixes && !strcmp(cfg.notify_url_prefixes,
		"https://a.example/x/ https://b.example/y/ https://c.example/z/"),
	   "job_url_prefixes on several lines add up: %s", cfg.notify_url_prefixes);
	config_release(&cfg);
}

struct bad_row {
	const char *text;
	int line;
	const char *needle;
};

static const struct bad_row bad[] = {
	/* Each names the section, the key, the value and what is allowed. */
	{ "[spool]\nconcurrency = many\n", 2,
	  "[spool] \"concurrency\" must be a whole number from 1 to 65536, not \"many\"" },
	{ "[spool]\nconcurrency = 0\n", 2, "from 1 to 65536, not \"0\"" },
	{ "[spool]\nconcurrency = 65537\n", 2, "from 1 to 65536" },
	{ "[provider a]\nconcurrency = 65537\n", 2,
	  "[provider a] \"concurrency\" must be a whole number from 0 to 65536, not \"65537\"" },
	{ "; comment\n[spool]\nconcurency = 3\n", 3, "unknown key \"concurency\"" },
	{ "[nonsense]\nx = 1\n", 2, "unknown section [nonsense] (the sections: spool, limits," },
	{ "[retry]\nretries = 1\n", 2, "unknown key \"retries\" in section [retry] (its keys: "
	  "max_retries, max_billed_retries, backoff_base_ms," },
	{ "[provider p]\nkey = 1\n", 2, "unknown key \"key\" in section [provider p] (its keys: "
	  "base_url, api_key_env, api_key_file, model," },
	{ "[provider a b]\nmodel = x\n", 2, "provider" },
	{ "[limits]\nmax_n = 11\n", 2, "max_n" },
	{ "[limits]\nallow_private_downloads = maybe\n", 2,
	  "[limits] \"allow_private_downloads\" must be yes or no, not \"maybe\"" },
	{ "[spool]\ndir = x\nthis line is wrong\n", 3,
	  "the line is neither [section], key = value nor a comment (a line starting with ';')" },
	{ "[spool]\ndir = x\n[limits ; x]\n", 3, "the section line has no ']'" },
	{ "[spool]\nconcurrency ; = 3\n", 2, "neither [section], key = value" },
	{ "[prices]\ncurrency = EUR\ngpt-image-1 = cheap\n", 3,
	  "[prices] \"gpt-image-1\" = \"cheap\": a [prices] amount must be a number" },
	{ "[prices]\ngemini-3:beta = 0.1\n", 2, "the key ends at its first ':' (KEY: VALUE is read as "
	  "KEY = VALUE), so the text before '=' is not the key" },
	{ "[timeouts]\nm:x = 60\n", 2, "the key ends at its first ':'" },
	{ "[prices]\ngpt-image-1@8K = 1\n", 2, "qualifier" },
	{ "[spool]\ndir = x\n\n[limits]\nmax_n = 2\n[spool]\n", 6, "[spool] is given twice" },
	{ "[spool]\ndir = x\n; c\ndir = y\n", 4, "given twice in [spool] (first on line 2)" },
	{ "[provider a]\ntimeout = 60 # a minute\n", 2, "comment" },
	{ "[limits]\ntimeout_min = 60\ntimeout_max = 30\n", 2,
	  "[limits] timeout_min (60) is above timeout_max (30)" },
	{ "[limits]\ntimeout_max = 5\n", 2, "[limits] timeout_min (10) is above timeout_max (5)" },
	{ "[spool]\nconcurrency = 2\ndefault_provider = b\n[provider a]\n", 3, "default_provider" },
	{ "[spool]\ngrace_period = soon\n", 2,
	  "[spool] \"grace_period\" must be a whole number from 0 to 7200 or auto, not \"soon\"" },
	{ "[route r]\ntarget = apiyi/gpt-image-2 heavy\n", 2, "\"heavy\" is not a weight: a target "
	  "line is PROVIDER/MODEL [WEIGHT]" },
	{ "[route r]\nfallback = apiyi/gpt-image-2 5\n", 2, "a fallback has no weight" },
	{ "[route r]\ntarget = apiyi/bad/model\n", 2,
	  "the target's model \"bad/model\" has '/' at byte offset 3: a model is 1 to 128" },
	/* A provider's default model is checked when the file is read, not job by job. */
	{ "[provider a]\nmodel = gpt image 2\n", 2,
	  "[provider a] model \"gpt image 2\" has ' ' at byte offset 3: a model is 1 to 128 letters" },
	{ "[provider a]\ntimeout = 60\nmodel =\n", 3, "[provider a] model is empty: a model is" },
	{ "[provider g]\nmodel = gemini-3-pro-image-preview:beta\n", 2,
	  "model \"gemini-3-pro-image-preview:beta\" is a Gemini model with ':' at byte offset 26: " },
	{ "[provider a]\nmodel = gpt-image-2\x01x\n", 2,
	  "[provider a] model has the byte 0x01 at byte offset 11: a model is" },
	{ "[provider a]\nmodel =\n[route r]\ntarget = a\n", 2, "[provider a] model is empty" },
	{ "[route r]\nfallback = apiyi/flux:2\ntarget = apiyi/gemini-3-pro-image:x\n", 3,
	  "the target's model \"gemini-3-pro-image:x\" is a Gemini model with ':' at byte offset 18" },
	{ "[route r]\ntarget = apiyi n=0\n", 2, "n= is" },
	{ "[route r]\ntarget = apiyi sizes=big\n", 2, "sizes=" },
	{ "[route r]\nstrategy = random\n", 2, "strategy is weighted (the default) or cheapest, not "
	  "\"random\"" },
	{ "[route r]\ntargets = apiyi\n", 2, "target, fallback and strategy" },
	/* The section's own kind is named, and the section as written. */
	{ "[route a b]\ntarget = apiyi\n", 2, "section [route a b]: a [route NAME] section's NAME" },
	{ "[route]\ntarget = apiyi\n", 2, "section [route]: a [route NAME] section's NAME is 1 to 43 " },
	{ "[provider]\nmodel = x\n", 2, "section [provider]: a [provider NAME] section's NAME is 1 to 40" },
	{ "[provider a/b]\nmodel = x\n", 2, "section [provider a/b]: a [provider NAME] section's" },
	{ "[provider a\x1b]\nmodel = x\n", 2, ": a [provider NAME] section's" },
	{ "[provider a]\nbudget_daily = lots\n", 2, "[provider a] \"budget_daily\" must be an amount "
	  "of the [prices] currency from 0 to 1000000000 (0: no budget), not \"lots\"" },
	{ "[budget]\nmonthly = -3\n", 2, "[budget] \"monthly\" must be an amount" },
	{ "[timeouts]\nflux-* = slow\n", 2,
	  "[timeouts] \"flux-*\" must be whole seconds from 1 to 7200, not \"slow\"" },
	{ "[spool]\nhost_id = a b\n", 2, "[spool] host_id \"a b\" must be 1 to 64 letters" },
	{ "[spool]\numask = 0x22\n", 2, "[spool] umask \"0x22\" must be an octal number from 0 to 777" },
	{ "[spool]\nsync = always\n", 2, "[spool] sync \"always\" must be auto, fsync or syncfs" },
	{ "[metrics]\ntextfile = m.txt\n", 2, "[metrics] textfile \"" },
	{ "[provider a]\nrpm = 1\n[provider b]\nrpm = 1\n[provider c]\nrpm = 1\n[provider d]\nrpm = 1\n"
	  "[provider e]\nrpm = 1\n[provider f]\nrpm = 1\n[provider g]\nrpm = 1\n[provider h]\nrpm = 1\n"
	  "[provider i]\nrpm = 1\n", 18,
	  "there are at most 8 [provider NAME] sections" },
	/* Checked after reading, still at their line. */
	{ "[provider a]\nmodel = m\n[route r]\ntarget = a\nfallback = nowhere/m\n", 5,
	  "[route r] fallback names provider \"nowhere\", which has no [provider nowhere] section" },
	{ "[spool]\nconcurrency = 2\n[route r]\nstrategy = cheapest\nfallback = apiyi/m\n", 4,
	  "[route r] needs at least one target line" },
	{ "[store]\nendpoint = ftp://x\nbucket = abc\n", 2,
	  "[store] endpoint \"ftp://x\" must start with https:// or http://" },
	{ "[store]\nendpoint = http://x\nbucket = AB\n", 3, "[store] bucket \"AB\" must be 3 to 63" },
	{ "[store]\nendpoint = http://x\n", 2, "[store] bucket must be 3 to 63 lower-case letters, "
	  "digits, '.' or '-' (it is not set, and endpoint is)" },
	{ "[store]\nendpoint = http://x\nbucket = abc\nprefix = a/../b\n", 4,
	  "[store] prefix \"a/../b\" may hold only" },
	{ "[store]\nendpoint = http://x\nbucket = abc\nprefix = /a\n", 4, "prefix \"/a\"" },
	{ "[store]\nendpoint = http://x\nbucket = abc\nprefix = a?b=1\n", 4, "prefix \"a?b=1\"" },
	{ "[store]\nendpoint = http://x\nbucket = abc\nprefix = a//b\n", 4, "prefix \"a//b\"" },
	{ "[store]\nendpoint = http://x\nbucket = abc\nregion = US\n", 4, "[store] region \"US\" must" },
	{ "[store]\nendpoint = http://x\nbucket = abc\npublic_url = cdn.example/x\n", 4,
	  "[store] public_url \"cdn.example/x\" must start with" },
	{ "[notify]\nsecret_env = S\nurl = h/token-Sekr1t\n", 3,
	  "[notify] url must start with https:// or http://" },
	{ "[notify]\ndeferrals = yes\nurl = http://h/x\n", 3, "[notify] url turns webhooks on, which need "
	  "secret_env or secret_file" },
	{ "[notify]\njob_url_prefixes = http://h/x/\n", 2, "[notify] job_url_prefixes turns webhooks on" },
	{ "[notify]\nallow_private = maybe\n", 2, "yes or no, not \"maybe\"" },
	{ "[provider a]\nrate_window = 0\n", 2, "rate_window" },
	/* The file's text in a message: control characters and bytes past ASCII escaped (found by
	 * fuzz_config.c: a CR in a key rewrote the terminal's line), a long one cut short. */
	{ "[spool]\nd#rp\rpp = x\n", 2, "unknown key \"d#rp\\x0dpp\" in section [spool]" },
	{ "[sp\x1b[2Jool]\nx = 1\n", 2, "unknown section [sp\\x1b[2Jool]" },
	{ "[spool]\nh\xc3\xb4" "te = 1\n", 2, "unknown key \"h\\xc3\\xb4te\"" },
	{ "[spool]\nkey\\x1b = 1\n", 2, "unknown key \"key\\x5cx1b\"" },
	{ "[spool]\n0123456789012345678901234567890123456789012345678901234567890123456789012345678901234"
	  "567890123456789012345678901234567890123456789012345678901234567890123456789 = 1\n", 2,
	  "56789012...\" in section [spool]" },
	{ "[spool]\ndefault_provider = n\x7f" "body\n", 2, "default_provider \"n\\x7fbody\" has no" },
	/* The prefix that is not a URL with a path is named, and which one it is. */
	{ "[notify]\njob_url_prefixes = https://h\nsecret_env = S\n", 2,
	  "[notify] job_url_prefixes: prefix 1, \"https://h\", is not a URL with a path: each" },
	{ "[notify]\nsecret_env = S\njob_url_prefixes = https://h/ \tftp://x/y/\n", 3,
	  "prefix 2, \"ftp://x/y/\", is not a URL with a path" },
	{ "[notify]\nsecret_env = S\njob_url_prefixes = https://h/ http://u:Sekr1t@x\n", 3,
	  "prefix 2, \"http://x\", is not" },
};

/* Whether s holds a byte a terminal or a log reader would act on (a control character). */
static bool has_control(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* A path in config_verify's and the key file's messages is escaped: a name with a newline or a
 * terminal escape must not forge a log line of its own (log injection by a hostile name). */
static void test_paths_escaped(void)
{
	char err[4096];
	struct config cfg;
	char *hostile = xasprintf("%s/x\x1b[2K\nimgspoold: forged", dir);
	int fd = open(hostile, O_WRONLY | O_CREAT | O_EXCL, 0644);
	ok(fd >= 0 && write(fd, "sk-1\n", 5) == 5, "a group-readable key file with a hostile name");
	close(fd);

	/* That file as the spool's directory: "is not a directory". */
	ok(load("[spool]\ndir = x\n", &cfg, err, sizeof(err)) == 0, "a config: %s", err);
	free(cfg.spool_dir);
	cfg.spool_dir = xstrdup(hostile);
	ok(config_verify(&cfg, err, sizeof(err)) < 0 && strstr(err, "is not a directory") &&
	   strstr(err, "/x\\x1b[2K\\x0aimgspoold: forged'") && !has_control(err),
	   "a spool dir below a hostile name: escaped in the error: %s", err);
	config_release(&cfg);

	/* A missing key file with such a name: "cannot open". */
	char *text = xasprintf("[spool]\ndir = s\n[provider a]\napi_key_file = %s\n", dir);
	ok(load(text, &cfg, err, sizeof(err)) == 0, "a config with a key file: %s", err);
	free(cfg.providers[0].api_key_file);
	cfg.providers[0].api_key_file = xasprintf("%s.missing", hostile);
	ok(config_verify(&cfg, err, sizeof(err)) < 0 && strstr(err, "cannot open api_key_file") &&
	   strstr(err, "\\x1b[2K\\x0aimgspoold: forged.missing'") && !has_control(err),
	   "a missing key file's hostile name: escaped in the error: %s", err);

	/* The key file there, readable by others: the warning is a log line of its own. */
	free(cfg.providers[0].api_key_file);
	cfg.providers[0].api_key_file = xstrdup(hostile);
	char *log_path = xasprintf("%s/log", dir);
	struct said said;
	ok(said_start(&said, log_path), "the log kept");
	config_load_keys(&cfg);
	said_end(&said);
	ok(cfg.providers[0].api_key && !strcmp(cfg.providers[0].api_key, "sk-1"), "the key read");
	char *nl = strchr(said.text, '\n');
	ok(nl && !nl[1] && strstr(said.text, "readable by group or others") &&
	   strstr(said.text, "\\x1b[2K\\x0aimgspoold: forged'") &&
	   !memchr(said.text, '\x1b', strlen(said.text)),
	   "the mode warning: one line, the name escaped: %s", said.text);
	config_release(&cfg);
	unlink(log_path);
	unlink(hostile);
	free(log_path);
	free(text);
	free(hostile);
}

int main(void)
{
	char err[1024];
	struct config cfg;
	if (!scratch_mkdtemp(dir, sizeof(dir), "config"))
		return 1;
	test_what_inih_would_misread();
	test_paths_escaped();
	ok(load("", &cfg, err, sizeof(err)) == 0, "an empty file is a working configuration");
	ok(cfg.concurrency == 16 && cfg.poll_interval == 5 && cfg.max_retries == 2 &&
	   cfg.max_billed_retries == 1, "defaults");
	ok(cfg.n_providers == 1 && !strcmp(cfg.providers[0].name, "apiyi") &&
	   !strcmp(cfg.providers[0].base_url, "https://api.apiyi.com") &&
	   !strcmp(cfg.providers[0].api_key_env, "APIYI_API_KEY"), "the implicit apiyi provider");
	char *want_spool = xasprintf("%s/spool", dir);
	is_str(cfg.spool_dir, want_spool, "relative dir resolved against the config's directory");
	free(want_spool);
	ok(cfg.host_id && *cfg.host_id, "host_id defaults to the host name");
	ok(cfg.max_job_bytes == CONFIG_JOB_BYTES_DEFAULT,
	   "max_job_bytes's default is CONFIG_JOB_BYTES_DEFAULT, the cap of imgspool submit (%ld)",
	   cfg.max_job_bytes);
	ok(cfg.grace_period_auto && cfg.grace_period == 900,
	   "the grace period defaults to the longest call allowed (timeout_max)");
	config_release(&cfg);
	ok(load("[spool]\ngrace_period = 20\n", &cfg, err, sizeof(err)) == 0 &&
	   cfg.grace_period == 20 && !cfg.grace_period_auto, "a grace period set is kept");
	config_release(&cfg);
	ok(load("[provider a]\nbudget_daily = 1.10\nbudget_monthly = 30\n[budget]\ndaily = 0.000001\n",
		&cfg, err, sizeof(err)) == 0 && cfg.providers[0].budget_daily == 1100000 &&
	   cfg.providers[0].budget_monthly == 30000000 && cfg.budget_daily == 1 &&
	   cfg.budget_monthly == 0 && cfg.providers[0].rate_window == 60,
	   "budgets in micro-units of the currency; rate_window defaults to a minute");
	config_release(&cfg);
	ok(load("[timeouts]\nslow* = 2000\n", &cfg, err, sizeof(err)) == 0 &&
	   cfg.grace_period == 2000, "a longer [timeouts] row lengthens the default grace period");
	config_release(&cfg);
	ok(load("[spool]\ngrace_period = auto\n[provider a]\ntimeout = 1200\n", &cfg, err,
		sizeof(err)) == 0 && cfg.grace_period == 1200, "so does a longer provider timeout");
	config_release(&cfg);

	ok(load("[spool]\nconcurrency = 10000\n", &cfg, err, sizeof(err)) == 0 &&
	   cfg.concurrency == 10000, "10 000 calls in flight are allowed (issue 14): %s", err);
	config_release(&cfg);
	/* A key's calls in flight across hosts: as many as one host may have (it was 1 024). */
	ok(load("[provider a]\nconcurrency = 65536\n", &cfg, err, sizeof(err)) == 0 &&
	   cfg.providers[0].concurrency == 65536, "a provider's shared concurrency up to 65 536: %s", err);
	config_release(&cfg);

	ok(load("[spool]\ndir = /srv/spool\nconcurrency = 3\n[provider a]\nmodel = m1\n"
		"[provider b]\nbase_url = http://127.0.0.1:1\napi_key_file = key\n", &cfg, err,
		sizeof(err)) == 0, "two providers: %s", err);
	ok(cfg.n_providers == 2 && config_provider(&cfg, NULL) == &cfg.providers[0],
	   "the first provider is the default");
	ok(config_provider(&cfg, "b") == &cfg.providers[1] && !config_provider(&cfg, "c"),
	   "providers by name");
	is_str(cfg.spool_dir, "/srv/spool", "absolute dir kept");
	char *want_key = xasprintf("%s/key", dir);
	is_str(cfg.providers[1].api_key_file, want_key, "relative key file resolved");
	free(want_key);
	config_load_keys(&cfg);
	ok(!cfg.providers[1].api_key && strstr(cfg.providers[1].key_problem, "cannot open"),
	   "a missing key file is a key problem, not a failure");
	config_release(&cfg);

	/* A FIFO, a huge file or a symlink as the key file: a key problem at once, never a hang
	 * (the alarm turns a hang into a failure). */
	char *fifo = xasprintf("%s/fifo.key", dir), *big = xasprintf("%s/big.key", dir),
	     *link = xasprintf("%s/link.key", dir);
	mkfifo(fifo, 0600);
	FILE *bf = fopen(big, "w");
	for (int i = 0; i < 1000; i++)
		fputs("sk-0123456789", bf);
	fclose(bf);
	(void)!symlink(big, link);
	char *text = xasprintf("[provider f]\napi_key_file = %s\n[provider b]\napi_key_file = %s\n"
			       "[provider l]\napi_key_file = %s\n", fifo, big, link);
	ok(load(text, &cfg, err, sizeof(err)) == 0, "key file config: %s", err);
	alarm(10);
	config_load_keys(&cfg);
	alarm(0);
	ok(!cfg.providers[0].api_key && strstr(cfg.providers[0].key_problem, "not a regular file"),
	   "a FIFO key file is refused without blocking: %s", cfg.providers[0].key_problem);
	ok(!cfg.providers[1].api_key && strstr(cfg.providers[1].key_problem, "larger than"),
	   "an oversized key file is refused: %s", cfg.providers[1].key_problem);
	ok(!cfg.providers[2].api_key && strstr(cfg.providers[2].key_problem, "symlink"),
	   "a symlinked key file is refused: %s", cfg.providers[2].key_problem);
	config_release(&cfg);
	unlink(fifo);
	unlink(big);
	unlink(link);
	free(fifo);
	free(big);
	free(link);
	free(text);

	ok(load("[prices]\ncurrency = EUR\ngpt-image-2@input = 5\nflux-* = 0.035\n", &cfg, err,
		sizeof(err)) == 0 && cfg.prices.n_rows == 2 && !strcmp(cfg.prices.currency, "EUR"),
	   "[prices]: currency and rows: %s", err);
	config_release(&cfg);

	ok(load("[provider a]\nmodel = m1\n[provider b]\nmodel = m2\n[route images]\ntarget = a 90\n"
		"target = b/gemini-3-pro-image-preview weight=10 refs=4 sizes=1024x1024,auto\n"
		"fallback = b/flux-2-pro n=1 refs=0\nstrategy = cheapest\n", &cfg, err, sizeof(err)) == 0,
	   "a route: %s", err);
	const struct route_config *r = config_route(&cfg, "images");
	ok(r && r->cheapest && r->n_targets == 3 && !config_route(&cfg, "other"), "the route by name");
	ok(r && !strcmp(r->targets[0].provider, "a") && !strcmp(r->targets[0].model, "m1") &&
	   r->targets[0].weight == 90 && r->targets[0].max_refs == -1, "a target without a model: "
	   "the provider's");
	ok(r && r->targets[1].weight == 10 && r->targets[1].max_refs == 4 &&
	   !strcmp(r->targets[1].sizes, "1024x1024,auto"), "weight=, refs=, sizes=");
	ok(r && r->targets[2].fallback && !r->targets[2].weight && r->targets[2].max_n == 1 &&
	   r->targets[2].max_refs == 0, "a fallback with n= and refs=");
	config_release(&cfg);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = load(bad[i].text, &cfg, err, sizeof(err));
		char *prefix = xasprintf("%s/t.ini:%d: ", dir, bad[i].line);
		ok(rc < 0 && !strncmp(err, prefix, strlen(prefix)) && strstr(err, bad[i].needle) &&
		   !strstr(err, "Sekr1t"), "bad config row %zu reports line %d: %s", i, bad[i].line, err);
		free(prefix);
		config_release(&cfg);
	}
	/* A hook the daemon's host lacks: refused for the daemon (config_new), with its line; the file
	 * alone (config_load, what imgspool reads on other hosts) does not need it. */
	ok(load("[notify]\nexec = /nonexistent/hook\n", &cfg, err, sizeof(err)) == 0 && cfg.notify_exec,
	   "config_load takes a hook this host lacks: %s", err);
	config_release(&cfg);
	{
		char *path = xasprintf("%s/t.ini", dir), *want = xasprintf("%s:2: [notify] exec", path);
		struct config *daemon_cfg = config_new(path, err, sizeof(err));
		ok(!daemon_cfg && !strncmp(err, want, strlen(want)) && strstr(err, "not an executable file"),
		   "config_new refuses it, with its line: %s", err);
		config_unref(daemon_cfg);
		load("[notify]\nexec = /nonexistent/\x1b]0;title\x07hook\n", &cfg, err, sizeof(err));
		config_release(&cfg);
		daemon_cfg = config_new(path, err, sizeof(err));
		ok(!daemon_cfg && strstr(err, "exec '/nonexistent/\\x1b]0;title\\x07hook' is not"),
		   "the hook's path is shown escaped: %s", err);
		config_unref(daemon_cfg);
		free(want);
		free(path);
	}
	/* Credentials in a store URL would reach every result: refused, the key and its line named,
	 * the secret never repeated. */
	static const struct { const char *text, *needle; int line; } secret_urls[] = {
		{ "[store]\nendpoint = http://x\nbucket = abc\npublic_url = https://ak:Sekr1t@cdn.example/r\n",
		  "public_url holds credentials", 4 },
		{ "[store]\nendpoint = http://x\nbucket = abc\npublic_url = https://cdn.example/r?token=Sekr1t\n",
		  "public_url holds a query", 4 },
		{ "[store]\nendpoint = http://x\nbucket = abc\npublic_url = https://cdn.example/#Sekr1t\n",
		  "public_url holds a fragment", 4 },
		{ "[store]\nendpoint = https://Sekr1t@s3.example\nbucket = abc\n", "endpoint holds credentials", 2 },
		{ "[store]\nbucket = abc\nendpoint = https://s3.example/?X-Amz-Signature=Sekr1t\n",
		  "endpoint holds a query", 3 },
		{ "[store]\npublic_url = https://u:Sekr1t@cdn.example\n", "public_url holds credentials", 2 },
	};
	for (size_t i = 0; i < sizeof(secret_urls) / sizeof(secret_urls[0]); i++) {
		int rc = load(secret_urls[i].text, &cfg, err, sizeof(err));
		char *prefix = xasprintf("%s/t.ini:%d: ", dir, secret_urls[i].line);
		ok(rc < 0 && !strncmp(err, prefix, strlen(prefix)) && strstr(err, secret_urls[i].needle) &&
		   !strstr(err, "Sekr1t"), "store URL with a secret, row %zu: %s", i, err);
		free(prefix);
		config_release(&cfg);
	}
	/* A byte a URL may not hold raw, in any URL of the configuration: refused, the key, its line
	 * and the byte's offset in the value named, never the text. A control character was written
	 * escaped, six bytes each, into every URL of every result; a CR, LF or space in a URL that
	 * goes into a request line or header could split it. */
	static const struct { const char *text, *needle; int line; } unprintable_urls[] = {
		{ "[store]\nendpoint = http://x\nbucket = abc\npublic_url = https://cdn.example/\x1b[2J\n",
		  "[store] public_url holds a control character (0x1b) at byte offset 20 of its value", 4 },
		{ "[store]\npublic_url = https://cdn.example/a\tb\n",
		  "[store] public_url holds a control character (0x09) at byte offset 21 of its value", 2 },
		{ "[store]\npublic_url = https://cdn.example/a b\n",
		  "[store] public_url holds a space at byte offset 21 of its value", 2 },
		{ "[store]\npublic_url = https://cdn\x7f.example/\n",
		  "[store] public_url holds a control character (0x7f) at byte offset 11 of its value", 2 },
		{ "[store]\npublic_url = https://cdn.example/\xc2\x9b" "2J\n",
		  "[store] public_url holds a control character (U+009B) at byte offset 20 of its value", 2 },
		{ "[store]\npublic_url = https://b\xc3\xbc\x63her.example/\n",
		  "[store] public_url holds a byte past ASCII (0xc3) at byte offset 9 of its value", 2 },
		{ "[store]\nendpoint = http://s3\x1b.example\nbucket = abc\n",
		  "[store] endpoint holds a control character (0x1b) at byte offset 9 of its value", 2 },
		{ "[store]\nbucket = abc\nendpoint = http://s3.example/a\x0c\x62\n",
		  "[store] endpoint holds a control character (0x0c) at byte offset 19 of its value", 3 },
		{ "[store]\nbucket = abc\nendpoint = http://s3.example/\x01?X-Amz-Signature=Sekr1t\n",
		  "[store] endpoint holds a control character (0x01) at byte offset 18 of its value", 3 },
		{ "[notify]\nsecret_env = S\nurl = https://hooks.example/a\rX-Injected: 1\n",
		  "[notify] url holds a control character (0x0d) at byte offset 23 of its value", 3 },
		{ "[notify]\nsecret_env = S\nurl = https://hooks.example/a HTTP/1.1\n",
		  "[notify] url holds a space at byte offset 23 of its value", 3 },
		{ "[notify]\nsecret_env = S\nurl = h\xc3\xa9://hooks.example/\n",
		  "[notify] url holds a byte past ASCII (0xc3) at byte offset 1 of its value", 3 },
		{ "[notify]\nsecret_env = S\njob_url_prefixes = https://a.example/x/ https://b.example/\x1by/\n",
		  "[notify] job_url_prefixes holds a control character (0x1b) at byte offset 39 of its value", 3 },
		{ "[notify]\njob_url_prefixes = https://a.example/x/\thttps://b\xc3\xa9.example/\nsecret_env = S\n",
		  "[notify] job_url_prefixes holds a byte past ASCII (0xc3) at byte offset 30 of its value", 2 },
		{ "[notify]\njob_url_prefixes = https://a.ex\x7f" "ample/x/\nsecret_env = S\n",
		  "[notify] job_url_prefixes holds a control character (0x7f) at byte offset 12 of its value", 2 },
		{ "[provider p]\nbase_url = https://api\x0b.example\n",
		  "[provider p] base_url holds a control character (0x0b) at byte offset 11 of its value", 2 },
		{ "[provider a]\nmodel = m\n[provider p]\nbase_url = https://api.example/v1 x\n",
		  "[provider p] base_url holds a space at byte offset 22 of its value", 4 },
		{ "[provider p]\nbase_url = https://api.example/\xc2\x85v1\n",
		  "[provider p] base_url holds a control character (U+0085) at byte offset 20 of its value", 2 },
	};
	for (size_t i = 0; i < sizeof(unprintable_urls) / sizeof(unprintable_urls[0]); i++) {
		int rc = load(unprintable_urls[i].text, &cfg, err, sizeof(err));
		char *prefix = xasprintf("%s/t.ini:%d: %s: a URL is printable ASCII", dir,
					 unprintable_urls[i].line, unprintable_urls[i].needle);
		ok(rc < 0 && !strncmp(err, prefix, strlen(prefix)) && !strstr(err, "Sekr1t") &&
		   !strstr(err, "example"), "URL with a byte it may not hold, row %zu: %s", i, err);
		free(prefix);
		config_release(&cfg);
	}
	/* Spaces and tabs separate job_url_prefixes: they are not in a URL. */
	ok(load("[notify]\nsecret_env = S\njob_url_prefixes = https://a.example/x/ \thttps://b.example/y/\n",
		&cfg, err, sizeof(err)) == 0, "job_url_prefixes separated by a space and a tab: %s", err);
	config_release(&cfg);
	ok(load("[store]\nendpoint = http://x\nbucket = abc\npublic_url = https://cdn.example/users/@me/\n",
		&cfg, err, sizeof(err)) == 0, "an '@' in a store URL's path is not credentials: %s", err);
	config_release(&cfg);
	ok(load("[store]\nendpoint = http://127.0.0.1:9000\nbucket = imgs\nprefix = a/b-\n"
		"access_key_id_env = T_AK\nsecret_access_key_env = T_SK\n[notify]\nurl = http://h/x\n"
		"secret_env = T_WH\nallow_private = yes\n", &cfg, err, sizeof(err)) == 0,
	   "store and notify: %s", err);
	ok(config_store_enabled(&cfg) && config_notify_enabled(&cfg) && cfg.notify_allow_private == 1,
	   "enabled, bool parsed");
	setenv("T_AK", "AKID", 1);
	unsetenv("T_SK");
	setenv("T_WH", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 1);
	config_load_keys(&cfg);
	ok(cfg.store_access_key_id && !cfg.store_secret_access_key &&
	   strstr(cfg.store_key_problem, "T_SK"), "a missing store secret is a problem: %s",
	   cfg.store_key_problem);
	ok(cfg.notify_secret && cfg.notify_secret_len == 24 && !cfg.notify_secret_problem[0],
	   "the whsec_ secret is decoded to its bytes");
	config_release(&cfg);
	/* Another variable: secret_env keeps the value it read first of each (a reload gets it). */
	ok(load("[notify]\nurl = http://h/x\nsecret_env = T_WH_BARE\n", &cfg, err, sizeof(err)) == 0,
	   "notify with another secret variable: %s", err);
	setenv("T_WH_BARE", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", 1);
	config_load_keys(&cfg);
	ok(!cfg.notify_secret && strstr(cfg.notify_secret_problem, "whsec_"),
	   "a secret without whsec_ is refused");
	config_release(&cfg);

	char *path = xasprintf("%s/t.ini", dir);
	unlink(path);
	free(path);
	rmdir(dir);
	return tap_done();
}
