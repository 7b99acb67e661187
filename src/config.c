/* config.c - imgspool.ini: a table {section, key, type, field, min, max, default} and inih.
 *
 * inih's strings live only for the handler call, so every string is copied. Relative paths are
 * resolved against the directory of the config file. Unknown sections and keys are errors, with
 * the line number, so a typo never silently falls back to a default; so are a section or a key
 * given twice (which one would win is a guess) and a value with " #" in it (inih only strips
 * ";" comments, so "timeout = 60 # one minute" would be the value "60 # one minute").
 * inih as Debian builds it gives the handler no line number: the file is read through
 * ini_parse_stream with a reader that hands it one whole line at a time and counts them, and the
 * line of every key is kept for messages after parsing. The reader also refuses what inih would
 * read otherwise than it looks (a line past its buffer, a NUL, an indented line it would join to
 * the value before, a section name it would cut short). tests/fuzz/fuzz_config.c fuzzes it all. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "config.h"
#include "crypto.h"
#include "job.h"
#include "log.h"
#include "secret.h"
#include "upstream.h"
#include "util.h"
#include "banned.h"

/* T_LIST: words separated by spaces; each line of a repeatable key adds its words. */
enum key_type { T_INT, T_BOOL, T_STR, T_PATH, T_MONEY, T_LIST };

struct key {
	const char *section;     /* "provider" matches every [provider NAME] section */
	const char *name;
	enum key_type type;
	size_t offset;           /* in struct config, or in struct provider_config for "provider" */
	long min, max;
	const char *def;
};

#define C(f) offsetof(struct config, f)
#define P(f) offsetof(struct provider_config, f)

/* The table's bounds are plain numbers (tests and the man page read them from here); this one
 * is what the readers of job files (imgspool, a takeover) are sized by. */
_Static_assert(64L << 20 == CONFIG_JOB_BYTES_CEILING, "max_job_bytes's bound in keys[]");
_Static_assert(CONFIG_MAX_PROVIDERS == 8 && ROUTE_MAX_TARGETS == 32, "the messages' numbers");

static const struct key keys[] = {
	{ "spool", "dir", T_PATH, C(spool_dir), 0, 0, "spool" },
	{ "spool", "concurrency", T_INT, C(concurrency), 1, 65536, "16" },
	{ "spool", "poll_interval", T_INT, C(poll_interval), 1, 3600, "5" },
	{ "spool", "grace_period", T_INT, C(grace_period), 0, 7200, "auto" },
	{ "spool", "settle_time", T_INT, C(settle_time), 0, 3600, "5" },
	{ "spool", "host_id", T_STR, C(host_id), 0, 0, "" },
	{ "spool", "min_free_mb", T_INT, C(min_free_mb), 0, 1 << 20, "100" },
	{ "spool", "disk_retry_interval", T_INT, C(disk_retry_interval), 1, 3600, "10" },
	{ "spool", "lease_timeout", T_INT, C(lease_timeout), 2, 86400, "60" },
	{ "spool", "io_threads", T_INT, C(io_threads), 1, 64, "2" },
	{ "spool", "sync", T_STR, C(sync_text), 0, 0, "auto" },
	{ "spool", "umask", T_STR, C(umask_text), 0, 0, "022" },
	{ "spool", "default_provider", T_STR, C(default_provider), 0, 0, "" },
	{ "limits", "max_job_bytes", T_INT, C(max_job_bytes), 1024, 64L << 20, "1048576" },
	{ "limits", "max_response_mb", T_INT, C(max_response_mb), 1, 1024, "64" },
	{ "limits", "max_refs_mb", T_INT, C(max_refs_mb), 1, 320, "50" },
	{ "limits", "max_n", T_INT, C(max_n), 1, 10, "4" },
	{ "limits", "max_depth", T_INT, C(max_depth), 2, 256, "32" },
	{ "limits", "max_pixels_mp", T_INT, C(max_pixels_mp), 0, 1000, "0" },
	{ "limits", "timeout_min", T_INT, C(timeout_min), 1, 3600, "10" },
	{ "limits", "timeout_max", T_INT, C(timeout_max), 1, 7200, "900" },
	{ "limits", "download_timeout", T_INT, C(download_timeout), 1, 3600, "120" },
	{ "limits", "download_attempts", T_INT, C(download_attempts), 1, 20, "4" },
	{ "limits", "download_retry_cap", T_INT, C(download_retry_cap), 1, 3600, "30" },
	{ "limits", "allow_private_downloads", T_BOOL, C(allow_private_downloads), 0, 1, "no" },
	{ "retry", "max_retries", T_INT, C(max_retries), 0, 20, "2" },
	{ "retry", "max_billed_retries", T_INT, C(max_billed_retries), 0, 5, "1" },
	{ "retry", "backoff_base_ms", T_INT, C(backoff_base_ms), 0, 3600000, "5000" },
	{ "retry", "backoff_cap_ms", T_INT, C(backoff_cap_ms), 0, 86400000, "300000" },
	{ "retry", "max_crash_requeues", T_INT, C(max_crash_requeues), 0, 100, "3" },
	{ "retry", "hold_probe_interval", T_INT, C(hold_probe_interval), 1, 86400, "60" },
	{ "retry", "cooldown_failures", T_INT, C(cooldown_failures), 0, 1000, "3" },
	{ "retry", "cooldown_time", T_INT, C(cooldown_time), 1, 86400, "30" },
	{ "retry", "cooldown_jitter", T_INT, C(cooldown_jitter), 0, 100, "20" },
	{ "tls", "ca_file", T_PATH, C(ca_file), 0, 0, "" },
	{ "store", "endpoint", T_STR, C(store_endpoint), 0, 0, "" },
	{ "store", "bucket", T_STR, C(store_bucket), 0, 0, "" },
	{ "store", "region", T_STR, C(store_region), 0, 0, "us-east-1" },
	{ "store", "prefix", T_STR, C(store_prefix), 0, 0, "" },
	{ "store", "public_url", T_STR, C(store_public_url), 0, 0, "" },
	{ "store", "access_key_id_env", T_STR, C(store_access_key_id_env), 0, 0, "AWS_ACCESS_KEY_ID" },
	{ "store", "secret_access_key_env", T_STR, C(store_secret_access_key_env), 0, 0,
	  "AWS_SECRET_ACCESS_KEY" },
	{ "store", "access_key_id_file", T_PATH, C(store_access_key_id_file), 0, 0, "" },
	{ "store", "secret_access_key_file", T_PATH, C(store_secret_access_key_file), 0, 0, "" },
	{ "store", "timeout", T_INT, C(store_timeout), 1, 3600, "120" },
	{ "store", "retry_base_ms", T_INT, C(store_retry_base_ms), 10, 3600000, "2000" },
	{ "store", "retry_cap_ms", T_INT, C(store_retry_cap_ms), 10, 3600000, "120000" },
	{ "notify", "url", T_STR, C(notify_url), 0, 0, "" },
	{ "notify", "secret_env", T_STR, C(notify_secret_env), 0, 0, "" },
	{ "notify", "secret_file", T_PATH, C(notify_secret_file), 0, 0, "" },
	{ "notify", "allow_private", T_BOOL, C(notify_allow_private), 0, 1, "no" },
	{ "notify", "job_url_prefixes", T_LIST, C(notify_url_prefixes), 0, 0, "" },
	{ "notify", "deferrals", T_BOOL, C(notify_deferrals), 0, 1, "no" },
	{ "notify", "timeout", T_INT, C(notify_timeout), 1, 60, "15" },
	{ "notify", "retry_base_ms", T_INT, C(notify_retry_base_ms), 10, 3600000, "5000" },
	{ "notify", "retry_cap_ms", T_INT, C(notify_retry_cap_ms), 10, 86400000, "3600000" },
	{ "notify", "give_up_after", T_INT, C(notify_give_up_after), 1, 30 * 86400, "259200" },
	{ "notify", "exec", T_PATH, C(notify_exec), 0, 0, "" },
	{ "notify", "exec_timeout", T_INT, C(notify_exec_timeout), 1, 86400, "60" },
	{ "notify", "exec_max", T_INT, C(notify_exec_max), 1, 256, "4" },
	{ "metrics", "textfile", T_PATH, C(metrics_textfile), 0, 0, "" },
	{ "metrics", "interval", T_INT, C(metrics_interval), 1, 3600, "5" },
	{ "provider", "base_url", T_STR, P(base_url), 0, 0, "https://api.apiyi.com" },
	{ "provider", "api_key_env", T_STR, P(api_key_env), 0, 0, "APIYI_API_KEY" },
	{ "provider", "api_key_file", T_PATH, P(api_key_file), 0, 0, "" },
	{ "provider", "model", T_STR, P(model), 0, 0, "gpt-image-2" },
	{ "provider", "timeout", T_INT, P(timeout), 1, 3600, "300" },
	{ "provider", "connect_timeout", T_INT, P(connect_timeout), 1, 300, "10" },
	/* As many as one host may have ([spool] concurrency): the gate has no limit of its own. */
	{ "provider", "concurrency", T_INT, P(concurrency), 0, 65536, "0" },
	{ "provider", "rpm", T_INT, P(rpm), 0, 100000, "0" },
	{ "provider", "rate_window", T_INT, P(rate_window), 1, 3600, "60" },
	{ "provider", "budget_daily", T_MONEY, P(budget_daily), 0, 0, "0" },
	{ "provider", "budget_monthly", T_MONEY, P(budget_monthly), 0, 0, "0" },
	{ "budget", "daily", T_MONEY, C(budget_daily), 0, 0, "0" },
	{ "budget", "monthly", T_MONEY, C(budget_monthly), 0, 0, "0" },
};

struct parse_state {
	struct config *cfg;
	char *base_dir;
	char *err;
	size_t errsize;
	char reason[600];
	int reason_line;         /* of the first error */
	FILE *f;
	int line;                /* of the text inih is handling */
	struct strset sections;  /* headers seen, to refuse one given twice */
	char scratch[300];       /* a reason written out, for the handler to report */
};

static char *resolve_path(const char *base_dir, const char *value)
{
	if (!*value)
		return NULL;
	if (value[0] == '/')
		return xstrdup(value);
	return xasprintf("%s/%s", base_dir, value);
}

#define SHOWN_SIZE 160     /* a message's copy of a name or value of the file */
#define PATH_SHOWN_SIZE 600

/* s as a message may repeat it, into buf (size bytes): printable ASCII as it is, any other byte
 * as \xNN (a control character would act on the terminal or the log reading it), "..." where
 * it is cut short. */
static const char *shown(const char *s, char *buf, size_t size)
{
	size_t at = 0;
	for (; *s && at + 4 + 4 <= size; s++) {
		unsigned char c = (unsigned char)*s;
		if (c >= 0x20 && c < 0x7f && c != '\\')
			buf[at++] = (char)c;
		else
			at += (size_t)snprintf(buf + at, size - at, "\\x%02x", c);
	}
	if (*s)
		at += (size_t)snprintf(buf + at, size - at, "...");
	buf[at] = '\0';
	return buf;
}

/* Stores value into the field of k; returns NULL or a reason, which names section (as the file
 * has it), the key, the value and what is allowed. */
static const char *store(const struct key *k, const char *section, void *base, const char *value,
			 const char *base_dir, char *why, size_t whysize)
{
	char *field = (char *)base + k->offset, value_shown[SHOWN_SIZE];
	bool is_auto = !strcmp(k->def, "auto");
	if (k->type == T_INT && is_auto && !strcmp(value, "auto")) {
		*(long *)field = -1;   /* worked out after parsing */
		return NULL;
	}
	if (k->type == T_INT) {
		long v;
		if (parse_long(value, k->min, k->max, &v) < 0) {
			xsnprintf(why, whysize, "[%s] \"%s\" must be a whole number from %ld to %ld%s, not "
				  "\"%s\"", section, k->name, k->min, k->max, is_auto ? " or auto" : "",
				  shown(value, value_shown, sizeof(value_shown)));
			return why;
		}
		*(long *)field = v;
		return NULL;
	}
	if (k->type == T_MONEY) {
		char *end;
		errno = 0;
		double amount = strtod(value, &end);
		if (errno || end == value || *end || !(amount >= 0) || amount > 1e9) {
			xsnprintf(why, whysize, "[%s] \"%s\" must be an amount of the [prices] currency "
				  "from 0 to 1000000000 (0: no budget), not \"%s\"", section, k->name,
				  shown(value, value_shown, sizeof(value_shown)));
			return why;
		}
		*(long *)field = (long)llround(amount * 1e6);
		return NULL;
	}
	if (k->type == T_BOOL) {
		if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "1"))
			*(long *)field = 1;
		else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "0"))
			*(long *)field = 0;
		else {
			xsnprintf(why, whysize, "[%s] \"%s\" must be yes or no, not \"%s\"", section,
				  k->name, shown(value, value_shown, sizeof(value_shown)));
			return why;
		}
		return NULL;
	}
	char **slot = (char **)field;
	if (k->type == T_LIST && *slot && *value) {
		char *joined = xasprintf("%s %s", *slot, value);
		free(*slot);
		*slot = joined;
		return NULL;
	}
	if (k->type == T_LIST && *slot)
		return NULL;
	free(*slot);
	*slot = k->type == T_PATH ? resolve_path(base_dir, value) : (*value ? xstrdup(value) : NULL);
	return NULL;
}

static void set_defaults(void *base, const char *section, const char *base_dir)
{
	char why[8];
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		if (!strcmp(keys[i].section, section))
			store(&keys[i], section, base, keys[i].def, base_dir, why, sizeof(why));
	}
}

/* What inih (r55, as Debian builds it) reads of a line: ini.c's INI_MAX_LINE buffer (a longer
 * line would be cut, its rest read as a line of its own) and MAX_SECTION (a longer section name
 * would be cut short). */
#define INI_LINE_MAX 199
#define INI_SECTION_MAX 49

/* The NAME of a [KIND NAME] section may be this long and still be read whole by inih. */
static size_t section_name_max(const char *kind)
{
	return INI_SECTION_MAX - strlen(kind) - 1;
}

/* Whether section is a [KIND NAME] section (or a bare [KIND], whose NAME is then refused). */
static bool section_is(const char *section, const char *kind)
{
	size_t n = strlen(kind);
	return !strncmp(section, kind, n) && (section[n] == ' ' || section[n] == '\0');
}

/* Whether s is short printable ASCII, safe to quote in a message. */
static bool quotable(const char *s, size_t max)
{
	size_t n = strnlen(s, max + 1);
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	return n <= max;
}

/* The NAME of such a section, or NULL with *why (in st's scratch) set when it is not a plain
 * name. */
static const char *section_name(struct parse_state *st, const char *section, const char *kind,
				const char **why)
{
	const char *name = section + strlen(kind);
	name += strspn(name, " ");
	if (name_is_plain(name, section_name_max(kind)))
		return name;
	bool shown = quotable(section, INI_SECTION_MAX);
	xsnprintf(st->scratch, sizeof(st->scratch), "%s%s%sa [%s NAME] section's NAME is 1 to %zu "
		  "letters, digits, '.', '-' and '_'", shown ? "section [" : "", shown ? section : "",
		  shown ? "]: " : "", kind, section_name_max(kind));
	*why = st->scratch;
	return NULL;
}

static struct provider_config *provider_for_section(struct parse_state *st, const char *section,
						    const char **why)
{
	struct config *cfg = st->cfg;
	const char *name = section_name(st, section, "provider", why);
	if (!name)
		return NULL;
	for (int i = 0; i < cfg->n_providers; i++)
		if (!strcmp(cfg->providers[i].name, name))
			return &cfg->providers[i];
	if (cfg->n_providers == CONFIG_MAX_PROVIDERS) {
		*why = "there are at most 8 [provider NAME] sections";
		return NULL;
	}
	struct provider_config *p = &cfg->providers[cfg->n_providers++];
	memset(p, 0, sizeof(*p));
	p->name = xstrdup(name);
	set_defaults(p, "provider", st->base_dir);
	return p;
}

/* APIYI's recommended timeouts (upstream-api.md §1.9); a [timeouts] section in the file comes
 * first, so it can override any of these. */
static const struct { const char *pattern; bool only_4k; long seconds; } default_timeouts[] = {
	{ "gemini-3-pro-image*", true, 600 },
	{ "gpt-image-2-all*", false, 300 },
	{ "gpt-image-2-vip*", false, 300 },
	{ "gpt-image-2*", false, 360 },
	{ "gpt-image-2.5*", false, 360 },
	{ "gemini-3-pro-image*", false, 300 },
	{ "gemini-3.1-flash-image*", false, 360 },
	{ "gemini-3.1-flash-lite-image*", false, 300 },
	{ "flux-*", false, 120 },
	{ "seedream*", false, 60 },
	{ "doubao-seedream*", false, 60 },
};

static void push_timeout(struct config *cfg, const char *pattern, bool only_4k, long seconds)
{
	cfg->timeouts = xrealloc(cfg->timeouts, (cfg->n_timeouts + 1) * sizeof(*cfg->timeouts));
	cfg->timeouts[cfg->n_timeouts++] = (struct model_timeout){
		.pattern = xstrdup(pattern), .only_4k = only_4k, .seconds = seconds };
}

static bool add_timeout(struct parse_state *st, const char *name, const char *value,
			const char **reason)
{
	long seconds;
	size_t len = strlen(name);
	bool only_4k = len > 3 && !strcmp(name + len - 3, "@4K");
	if (parse_long(value, 1, 7200, &seconds) < 0) {
		char name_shown[SHOWN_SIZE], value_shown[SHOWN_SIZE];
		xsnprintf(st->scratch, sizeof(st->scratch), "[timeouts] \"%s\" must be whole seconds "
			  "from 1 to 7200, not \"%s\"", shown(name, name_shown, sizeof(name_shown)),
			  shown(value, value_shown, sizeof(value_shown)));
		*reason = st->scratch;
		return false;
	}
	char *pattern = xstrndup(name, only_4k ? len - 3 : len);
	push_timeout(st->cfg, pattern, only_4k, seconds);
	free(pattern);
	return true;
}

static struct route_config *route_for_section(struct parse_state *st, const char *section,
					      const char **why)
{
	struct config *cfg = st->cfg;
	const char *name = section_name(st, section, "route", why);
	if (!name)
		return NULL;
	for (size_t i = 0; i < cfg->n_routes; i++)
		if (!strcmp(cfg->routes[i].name, name))
			return &cfg->routes[i];
	cfg->routes = xrealloc(cfg->routes, (cfg->n_routes + 1) * sizeof(*cfg->routes));
	struct route_config *r = &cfg->routes[cfg->n_routes++];
	*r = (struct route_config){ .name = xstrdup(name) };
	return r;
}

static bool valid_sizes(const char *list)
{
	char *copy = xstrdup(list), *save = NULL;
	bool ok = *list != '\0';
	for (char *item = strtok_r(copy, ",", &save); item && ok; item = strtok_r(NULL, ",", &save)) {
		int w, h;
		char end;
		ok = !strcmp(item, "auto") || (sscanf(item, "%dx%d%c", &w, &h, &end) == 2 && w > 0 && h > 0);
	}
	free(copy);
	return ok;
}

/* "WHOSE "MODEL" WHAT: the rule" into buf; the model's text only when it is plain to read. */
static const char *model_problem(char *buf, size_t size, const char *whose, const char *model,
				 const char *what)
{
	bool plain = *model && quotable(model, UPSTREAM_MODEL_MAX);
	xsnprintf(buf, size, "%s%s%s%s %s: " UPSTREAM_MODEL_RULE, whose, plain ? " \"" : "",
		  plain ? model : "", plain ? "\"" : "", what);
	return buf;
}

/* One word of a target line after PROVIDER/MODEL: a weight, n=, refs=, sizes=. A reason may be
 * written into why. */
static const char *target_option(struct route_target *tg, const char *word, char *why,
				 size_t whysize)
{
	if (!strncmp(word, "n=", 2))
		return parse_long(word + 2, 1, 10, &tg->max_n) < 0 ? "n= is the most images per call, 1 to 10" : NULL;
	if (!strncmp(word, "refs=", 5))
		return parse_long(word + 5, 0, 16, &tg->max_refs) < 0
		       ? "refs= is the most reference images the model takes, 0 to 16" : NULL;
	if (!strncmp(word, "sizes=", 6)) {
		if (tg->sizes || !valid_sizes(word + 6))
			return "sizes= lists the sizes the model makes: WxH or auto, separated by commas";
		tg->sizes = xstrdup(word + 6);
		return NULL;
	}
	const char *number = !strncmp(word, "weight=", 7) ? word + 7 : word;
	if (tg->fallback)
		return "a fallback has no weight: fallbacks are tried in order";
	if (parse_long(number, 1, 1000000, &tg->weight) < 0) {
		char word_shown[SHOWN_SIZE];
		xsnprintf(why, whysize, "\"%s\" is not a weight: a target line is PROVIDER/MODEL "
			  "[WEIGHT] [n=N] [refs=N] [sizes=WxH,...], WEIGHT a whole number from 1 to "
			  "1000000", shown(word, word_shown, sizeof(word_shown)));
		return why;
	}
	return NULL;
}

static void route_target_release(struct route_target *tg)
{
	free(tg->provider);
	free(tg->model);
	free(tg->sizes);
}

/* "target = PROVIDER[/MODEL] [WEIGHT] [n=N] [refs=N] [sizes=...]", "fallback = ...",
 * "strategy = weighted|cheapest". A reason may be written into why. */
static const char *route_line(struct route_config *r, const char *key, const char *value,
			      int line, char *why, size_t whysize)
{
	if (!strcmp(key, "strategy")) {
		if (strcmp(value, "weighted") && strcmp(value, "cheapest")) {
			char value_shown[SHOWN_SIZE];
			xsnprintf(why, whysize, "strategy is weighted (the default) or cheapest, not "
				  "\"%s\"", shown(value, value_shown, sizeof(value_shown)));
			return why;
		}
		r->cheapest = !strcmp(value, "cheapest");
		return NULL;
	}
	bool fallback = !strcmp(key, "fallback");
	if (!fallback && strcmp(key, "target"))
		return "a [route NAME] section has target, fallback and strategy lines";
	if (r->n_targets == ROUTE_MAX_TARGETS)
		return "a route has at most 32 target and fallback lines";
	struct route_target tg = { .weight = fallback ? 0 : 1, .fallback = fallback, .max_refs = -1,
				   .line = line };
	char *copy = xstrdup(value), *save = NULL;
	const char *reason = NULL;
	char *word = strtok_r(copy, " \t", &save);
	if (!word) {
		reason = "a target line names PROVIDER/MODEL";
	} else {
		char *slash = strchr(word, '/');
		if (slash)
			*slash = '\0';
		char model_why[96];
		if (!name_is_plain(word, 64))
			reason = "a target is PROVIDER/MODEL: a [provider NAME], then a model name";
		else if (slash && upstream_model_check(slash + 1, model_why, sizeof(model_why)) < 0)
			reason = model_problem(why, whysize, fallback ? "the fallback's model" :
					       "the target's model", slash + 1, model_why);
		tg.provider = xstrdup(word);
		tg.model = slash ? xstrdup(slash + 1) : NULL;
	}
	while (!reason && (word = strtok_r(NULL, " \t", &save)))
		reason = target_option(&tg, word, why, whysize);
	free(copy);
	if (reason) {
		route_target_release(&tg);
		return reason;
	}
	r->targets = xrealloc(r->targets, (r->n_targets + 1) * sizeof(*r->targets));
	r->targets[r->n_targets++] = tg;
	return NULL;
}

/* inih (as Debian builds it) gives no line number to the handler: it returns the line of the
 * first error from ini_parse_file, and the handler keeps the first reason. */
static void fail_line(struct parse_state *st, int line, const char *reason)
{
	if (!st->reason[0]) {
		xsnprintf(st->reason, sizeof(st->reason), "%s", reason);
		st->reason_line = line;
	}
}

/* inih's find_chars_or_comment: the first of chars in s, or of an inline comment (" ;"), or
 * its end. */
static const char *ini_find(const char *s, const char *chars)
{
	bool was_space = false;
	while (*s && !strchr(chars, *s) && !(was_space && *s == ';')) {
		was_space = isspace((unsigned char)*s);
		s++;
	}
	return s;
}

/* Looks at one whole line as inih will read it, before it does: refuses what inih would read
 * otherwise than it looks (a NUL byte, a line too long, a line inih joins to the value before it,
 * a section name cut short) and a section given twice. */
static void look_at_line(struct parse_state *st, const char *text, size_t len, bool nul)
{
	char why[300];
	const char *c = text;
	if (st->line == 1 && !strncmp(c, "\xef\xbb\xbf", 3))
		c += 3;   /* inih skips a UTF-8 byte order mark */
	bool indented = isspace((unsigned char)*c);
	while (isspace((unsigned char)*c))
		c++;
	if (nul) {
		fail_line(st, st->line, "the line holds a NUL byte: a configuration is text");
		return;
	}
	if (len > INI_LINE_MAX) {
		xsnprintf(why, sizeof(why), "the line is %zu bytes long, more than the %d read as one "
			  "line: split a comment over several lines; give job_url_prefixes on several lines",
			  len, INI_LINE_MAX);
		fail_line(st, st->line, why);
		return;
	}
	if (!*c || *c == ';' || *c == '#')
		return;
	if (indented) {
		/* inih reads an indented line after a key as more of its value. */
		fail_line(st, st->line, "the line starts with white space, which would make it part of "
			  "the value before it: remove the indentation");
		return;
	}
	if (*c != '[') {
		const char *sep = ini_find(c, "=:");
		if (*sep != '=' && *sep != ':')
			fail_line(st, st->line, "the line is neither [section], key = value nor a comment "
				  "(a line starting with ';')");
		else if (*sep == ':' && *ini_find(sep, "="))
			fail_line(st, st->line, "the key ends at its first ':' (KEY: VALUE is read as KEY = "
				  "VALUE), so the text before '=' is not the key: a [prices] or [timeouts] "
				  "pattern cannot hold ':'");
		return;
	}
	const char *close = ini_find(c + 1, "]");
	size_t n = (size_t)(close - c - 1);
	if (*close != ']') {
		fail_line(st, st->line, "the section line has no ']' (before a \" ;\" comment)");
		return;
	}
	const char *after = close + 1;
	after += strspn(after, " \t\r\n");
	char *name = xstrndup(c + 1, n);
	if (*after && *after != ';' && *after != '#') {
		fail_line(st, st->line, "text after a section's ']': put it on a line of its own");
	} else if (n > INI_SECTION_MAX) {
		bool provider = section_is(name, "provider"), route = section_is(name, "route");
		if (provider || route)
			xsnprintf(why, sizeof(why), "a [%s NAME] section's NAME is at most %zu bytes "
				  "(a section's name, at most %d)", provider ? "provider" : "route",
				  section_name_max(provider ? "provider" : "route"), INI_SECTION_MAX);
		else
			xsnprintf(why, sizeof(why), "a section's name is at most %d bytes", INI_SECTION_MAX);
		fail_line(st, st->line, why);
	} else if (!strset_add(&st->sections, name)) {
		char name_shown[SHOWN_SIZE];
		xsnprintf(why, sizeof(why), "section [%s] is given twice: merge the two",
			  shown(name, name_shown, sizeof(name_shown)));
		fail_line(st, st->line, why);
	}
	free(name);
}

/* The reader inih calls for each line: one whole line each call, however long (what does not
 * fit in inih's buffer is dropped, and the line refused), so inih's count of lines is the
 * file's. */
static char *read_line(char *str, int num, void *stream)
{
	struct parse_state *st = stream;
	size_t room = (size_t)num - 1, len = 0;
	bool nul = false;
	int c;
	while ((c = getc(st->f)) != EOF) {
		if (len < room)
			str[len] = (char)c;
		len++;
		nul |= c == '\0';
		if (c == '\n')
			break;
	}
	if (!len)
		return NULL;
	str[len < room ? len : room] = '\0';
	st->line++;
	size_t text = len - (c == '\n');
	look_at_line(st, str, text, nul);
	return str;
}

static void remember_line(struct config *cfg, const char *section, const char *name, int line)
{
	cfg->lines = xrealloc(cfg->lines, (cfg->n_lines + 1) * sizeof(*cfg->lines));
	cfg->lines[cfg->n_lines++] = (struct config_line){ .section = xstrdup(section),
							   .key = xstrdup(name), .line = line };
}

int config_line(const struct config *cfg, const char *section, const char *key)
{
	for (size_t i = 0; i < cfg->n_lines; i++)
		if (!strcmp(cfg->lines[i].section, section) && !strcmp(cfg->lines[i].key, key))
			return cfg->lines[i].line;
	return 0;
}

/* Keys that may be given on several lines, each adding one item in order (a list). Every other
 * key given twice is an error. A section with such a key lists it here, as "SECTION KEY" with
 * SECTION's first word ("route" for every [route NAME]). */
static const char *const repeatable_keys[] = { "route target", "route fallback",
					       "notify job_url_prefixes", NULL };

static bool repeatable(const char *section, const char *name)
{
	size_t word = strcspn(section, " ");
	for (size_t i = 0; repeatable_keys[i]; i++) {
		const char *r = repeatable_keys[i], *space = strchr(r, ' ');
		if (space && (size_t)(space - r) == word && !strncmp(r, section, word) &&
		    !strcmp(space + 1, name))
			return true;
	}
	return false;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_state *st = user;
	char why[600];
	const char *reason = NULL;
	void *base = st->cfg;
	const char *table_section = section;

	char name_shown[SHOWN_SIZE], section_shown[SHOWN_SIZE];
	int first = config_line(st->cfg, section, name);
	if (first && !repeatable(section, name)) {
		xsnprintf(why, sizeof(why), "\"%s\" is given twice in [%s] (first on line %d)",
			  shown(name, name_shown, sizeof(name_shown)), shown(section, section_shown, sizeof(section_shown)), first);
		reason = why;
		goto bad;
	}
	remember_line(st->cfg, section, name, st->line);
	const char *hash = strchr(value, '#');
	if (hash && (hash == value || isspace((unsigned char)hash[-1]))) {
		reason = "\"#\" does not start a comment after a value (only \";\" does): put the "
			 "comment on a line of its own";
		goto bad;
	}
	if (!strcmp(section, "prices")) {
		reason = price_table_add(&st->cfg->prices, name, value);
		if (!reason)
			return 1;
		char value_shown[SHOWN_SIZE];
		xsnprintf(why, sizeof(why), "[prices] \"%s\" = \"%s\": %s",
			  shown(name, name_shown, sizeof(name_shown)),
			  shown(value, value_shown, sizeof(value_shown)), reason);
		reason = why;
		goto bad;
	}
	if (section_is(section, "route")) {
		struct route_config *r = route_for_section(st, section, &reason);
		if (r && !(reason = route_line(r, name, value, st->line, why, sizeof(why))))
			return 1;
		goto bad;
	}
	if (!strcmp(section, "timeouts")) {
		if (add_timeout(st, name, value, &reason))
			return 1;
		goto bad;
	}
	if (section_is(section, "provider")) {
		struct provider_config *p = provider_for_section(st, section, &reason);
		if (!p)
			goto bad;
		base = p;
		table_section = "provider";
	}
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		const struct key *k = &keys[i];
		if (strcmp(k->section, table_section) || strcmp(k->name, name))
			continue;
		reason = store(k, section, base, value, st->base_dir, why, sizeof(why));
		if (reason)
			goto bad;
		return 1;
	}
	/* What the section takes, from the table: a typo's fix is in the message. */
	char known[400] = "";
	for (size_t i = 0, at = 0; i < ARRAY_SIZE(keys) && at < sizeof(known); i++)
		if (!strcmp(keys[i].section, table_section))
			at += (size_t)snprintf(known + at, sizeof(known) - at, "%s%s", at ? ", " : "",
					       keys[i].name);
	if (known[0])
		xsnprintf(why, sizeof(why), "unknown key \"%s\" in section [%s] (its keys: %s)",
			  shown(name, name_shown, sizeof(name_shown)),
			  shown(section, section_shown, sizeof(section_shown)), known);
	else
		xsnprintf(why, sizeof(why), "unknown section [%s] (the sections: spool, limits, retry, "
			  "budget, tls, store, notify, metrics, timeouts, prices, provider NAME and route "
			  "NAME)", shown(section, section_shown, sizeof(section_shown)));
	reason = why;
bad:
	fail_line(st, st->line, reason);
	return 0;
}

/* "FILE:LINE: reason", or "FILE: reason" when line is 0. Returns -1. */
__attribute__((format(printf, 5, 0)))
static int vfail_on(const struct config *cfg, int line, char *err, size_t errsize,
		    const char *fmt, va_list ap)
{
	char why[700];
	vsnprintf(why, sizeof(why), fmt, ap);
	if (line)
		xsnprintf(err, errsize, "%s:%d: %s", cfg->path, line, why);
	else
		xsnprintf(err, errsize, "%s: %s", cfg->path, why);
	return -1;
}

__attribute__((format(printf, 5, 6)))
static int fail_on(const struct config *cfg, int line, char *err, size_t errsize,
		   const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail_on(cfg, line, err, errsize, fmt, ap);
	va_end(ap);
	return -1;
}

/* The same at the line section/key is on (no line when it is not in the file). */
__attribute__((format(printf, 6, 7)))
static int fail_at(const struct config *cfg, const char *section, const char *key, char *err,
		   size_t errsize, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vfail_on(cfg, section ? config_line(cfg, section, key) : 0, err, errsize, fmt, ap);
	va_end(ap);
	return -1;
}

/* The first line of section in the file, 0 if none. */
static int section_line(const struct config *cfg, const char *section)
{
	for (size_t i = 0; i < cfg->n_lines; i++)
		if (!strcmp(cfg->lines[i].section, section))
			return cfg->lines[i].line;
	return 0;
}

long config_longest_call(const struct config *cfg)
{
	long longest = cfg->timeout_max;
	for (int i = 0; i < cfg->n_providers; i++)
		if (cfg->providers[i].timeout > longest)
			longest = cfg->providers[i].timeout;
	for (size_t i = 0; i < cfg->n_timeouts; i++)
		if (cfg->timeouts[i].seconds > longest)
			longest = cfg->timeouts[i].seconds;
	return longest;
}

/* An object key prefix: URL-safe characters only (libcurl 7.88 signs the path as written), no
 * leading '/', no empty, "." or ".." segment. */
static bool valid_key_prefix(const char *p)
{
	if (!p)
		return true;
	if (*p == '/')
		return false;
	for (const char *c = p; *c; c++)
		if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._~/-", *c))
			return false;
	for (const char *seg = p; *seg;) {
		size_t n = strcspn(seg, "/");
		if ((n == 0 && seg[n] == '/') || (n == 1 && seg[0] == '.') ||
		    (n == 2 && seg[0] == '.' && seg[1] == '.'))
			return false;
		seg += n + (seg[n] == '/');
	}
	return true;
}

/* A URL of the configuration goes as it is into request lines and headers (base_url, a
 * webhook's), into the prefixes job URLs are held to, and into every result (a store's): a CR
 * or LF could split a request, a space end its line, and a control character is written
 * escaped, six bytes each, in every URL of every result. None of them, nor a byte past ASCII,
 * belongs in a URL raw. Checks value[from, to) (one URL of a list); the message names the key,
 * the byte and its offset in the whole value, never the text. */
static int check_url_bytes(const struct config *cfg, const char *section, const char *key,
			   const char *value, size_t from, size_t to, char *err, size_t errsize)
{
	size_t at = from + url_unprintable_at(value + from, to - from);
	if (at == to)
		return 0;
	unsigned char b = (unsigned char)value[at], next = (unsigned char)value[at + 1];
	char what[48];
	if (b == ' ')
		xsnprintf(what, sizeof(what), "a space");
	else if (b < 0x20 || b == 0x7f)
		xsnprintf(what, sizeof(what), "a control character (0x%02x)", b);
	else if (b == 0xc2 && next >= 0x80 && next <= 0x9f)
		xsnprintf(what, sizeof(what), "a control character (U+%04X)", next);
	else
		xsnprintf(what, sizeof(what), "a byte past ASCII (0x%02x)", b);
	return fail_at(cfg, section, key, err, errsize,
		       "[%s] %s holds %s at byte offset %zu of its value: a URL is printable ASCII "
		       "without spaces (percent-encode anything else, a space as %%20)", section, key,
		       what, at);
}

/* A store URL goes into every result (urls, output_url) as it is: no secret may ride in it
 * either. The message names the part, never the text. */
static int check_store_url(const struct config *cfg, const char *key, const char *url,
			   const char *goes, char *err, size_t errsize)
{
	if (!url)
		return 0;
	if (check_url_bytes(cfg, "store", key, url, 0, strlen(url), err, errsize) < 0)
		return -1;
	const char *part = url_secret_part(url);
	if (!part)
		return 0;
	return fail_at(cfg, "store", key, err, errsize,
		       "[store] %s holds %s, which %s would show to anyone who reads done/: remove it "
		       "(the store's keys go in access_key_id_file and secret_access_key_file, or their "
		       "_env variables)", key, part, goes);
}

static int check_outputs(struct config *cfg, char *err, size_t errsize)
{
	if (check_store_url(cfg, "public_url", cfg->store_public_url, "every result's urls", err,
			    errsize) < 0 ||
	    check_store_url(cfg, "endpoint", cfg->store_endpoint,
			    "every upload's URL and, without a public_url, every result's urls", err,
			    errsize) < 0)
		return -1;
	/* The store's values hold no secret by now (check_store_url): they may be shown. */
	char shown_value[SHOWN_SIZE];
	if (cfg->store_endpoint) {
		const char *b = cfg->store_bucket;
		size_t bl = b ? strlen(b) : 0;
		if (!url_is_http(cfg->store_endpoint))
			return fail_at(cfg, "store", "endpoint", err, errsize, "[store] endpoint \"%s\" "
				       "must start with https:// or http://",
				       shown(cfg->store_endpoint, shown_value, sizeof(shown_value)));
		if (bl < 3 || bl > 63 || strspn(b, "abcdefghijklmnopqrstuvwxyz0123456789.-") != bl)
			return fail_at(cfg, "store", b ? "bucket" : "endpoint", err, errsize,
				       "[store] bucket%s%s%s must be 3 to 63 lower-case letters, digits, "
				       "'.' or '-'%s", b ? " \"" : "",
				       b ? shown(b, shown_value, sizeof(shown_value)) : "", b ? "\"" : "",
				       b ? "" : " (it is not set, and endpoint is)");
		const char *r = cfg->store_region;
		if (!r || strspn(r, "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(r))
			return fail_at(cfg, "store", "region", err, errsize, "[store] region \"%s\" must "
				       "be lower-case letters, digits and '-', such as us-east-1",
				       r ? shown(r, shown_value, sizeof(shown_value)) : "");
		if (!valid_key_prefix(cfg->store_prefix))
			return fail_at(cfg, "store", "prefix", err, errsize, "[store] prefix \"%s\" may "
				       "hold only A-Z a-z 0-9 . _ ~ / -, and no leading '/', empty, '.' or "
				       "'..' segment",
				       shown(cfg->store_prefix, shown_value, sizeof(shown_value)));
		if (cfg->store_public_url && !url_is_http(cfg->store_public_url))
			return fail_at(cfg, "store", "public_url", err, errsize, "[store] public_url "
				       "\"%s\" must start with https:// or http://",
				       shown(cfg->store_public_url, shown_value, sizeof(shown_value)));
	}
	/* A webhook URL may carry a token in its path: named by its line, never shown. */
	const char *url = cfg->notify_url;
	if (url && check_url_bytes(cfg, "notify", "url", url, 0, strlen(url), err, errsize) < 0)
		return -1;
	if (url && !url_is_http(url))
		return fail_at(cfg, "notify", "url", err, errsize,
			       "[notify] url must start with https:// or http://");
	/* Prefixes separated by spaces or tabs (webhook_job_url_allowed): each one a URL. */
	const char *list = cfg->notify_url_prefixes;
	for (size_t at = 0, n, nth = 1; list && list[at]; at += n, nth++) {
		at += strspn(list + at, " \t");
		n = strcspn(list + at, " \t");
		if (!n)
			break;
		if (check_url_bytes(cfg, "notify", "job_url_prefixes", list, at, at + n, err,
				    errsize) < 0)
			return -1;
		char *prefix = xstrndup(list + at, n);
		bool bad = !url_is_http(prefix) || !strchr(strstr(prefix, "://") + 3, '/');
		/* Printable ASCII by now; credentials in it are not repeated into the log. */
		char *shown = bad ? url_redacted(prefix) : NULL;
		free(prefix);
		if (bad) {
			fail_at(cfg, "notify", "job_url_prefixes", err, errsize,
				"[notify] job_url_prefixes: prefix %zu, \"%s\", is not a URL with a path: "
				"each prefix is http:// or https://, a host and a path, such as "
				"https://hooks.example.com/imgspool/", nth, shown);
			free(shown);
			return -1;
		}
	}
	if (config_notify_enabled(cfg) && !cfg->notify_secret_env && !cfg->notify_secret_file)
		return fail_at(cfg, "notify", cfg->notify_url ? "url" : "job_url_prefixes", err, errsize,
			       "[notify] %s turns webhooks on, which need secret_env or secret_file (a "
			       "whsec_ secret to sign them with)",
			       cfg->notify_url ? "url" : "job_url_prefixes");
	return 0;
}

/* What the daemon's host must have beyond the file: the hook program it runs. imgspool, which
 * reads the daemon's file for its spool and limits on other hosts and as other users, does not
 * need it. */
static int check_host(const struct config *cfg, char *err, size_t errsize)
{
	if (cfg->notify_exec && access(cfg->notify_exec, X_OK) < 0)
		return fail_at(cfg, "notify", "exec", err, errsize,
			       "[notify] exec '%s' is not an executable file: %s",
			       shown(cfg->notify_exec, (char[PATH_SHOWN_SIZE]){ 0 }, PATH_SHOWN_SIZE),
			       strerror(errno));
	return 0;
}

bool config_store_enabled(const struct config *cfg)
{
	return cfg->store_endpoint != NULL;
}

bool config_notify_enabled(const struct config *cfg)
{
	return cfg->notify_url || cfg->notify_url_prefixes;
}

static int check(struct config *cfg, char *err, size_t errsize)
{
	if (!cfg->host_id) {
		char host[256];
		if (gethostname(host, sizeof(host)) < 0)
			xsnprintf(host, sizeof(host), "localhost");
		host[sizeof(host) - 1] = '\0';
		/* Host names may hold characters our file names do not: keep the safe ones. */
		for (char *c = host; *c; c++)
			if (!name_is_plain((char[]){ *c, 0 }, 1))
				*c = '_';
		cfg->host_id = xstrdup(host);
	}
	char shown_value[SHOWN_SIZE];
	if (!name_is_plain(cfg->host_id, 64))
		return fail_at(cfg, "spool", "host_id", err, errsize, "[spool] host_id \"%s\" must be "
			       "1 to 64 letters, digits, '.', '-' and '_'",
			       shown(cfg->host_id, shown_value, sizeof(shown_value)));
	char *end;
	long mask = cfg->umask_text ? strtol(cfg->umask_text, &end, 8) : -1;
	if (!cfg->umask_text || *end || mask < 0 || mask > 0777)
		return fail_at(cfg, "spool", "umask", err, errsize, "[spool] umask \"%s\" must be an "
			       "octal number from 0 to 777, such as 022 or 002",
			       cfg->umask_text ? shown(cfg->umask_text, shown_value, sizeof(shown_value))
			       : "");
	/* Never group- or other-writable: what the daemon makes (running/, its results) is its
	 * own, and a client of the spool's group must not change it (spool-layout.md §12). */
	cfg->umask = (unsigned)mask | 022;
	if (sync_mode_parse(cfg->sync_text, &cfg->sync_mode) < 0)
		return fail_at(cfg, "spool", "sync", err, errsize, "[spool] sync \"%s\" must be auto, "
			       "fsync or syncfs", cfg->sync_text ? shown(cfg->sync_text, shown_value,
									sizeof(shown_value)) : "");
	if (!cfg->spool_dir)
		return fail_at(cfg, "spool", "dir", err, errsize, "[spool] dir must not be empty (the "
			       "default is spool, beside this file)");
	for (int i = 0; i < cfg->n_providers; i++) {
		const char *url = cfg->providers[i].base_url;
		char section[80];
		xsnprintf(section, sizeof(section), "provider %s", cfg->providers[i].name);
		if (url && check_url_bytes(cfg, section, "base_url", url, 0, strlen(url), err,
					   errsize) < 0)
			return -1;
		if (!url || (strncmp(url, "https://", 8) && strncmp(url, "http://", 7)))
			return fail_at(cfg, section, "base_url", err, errsize,
				       "[provider %s] base_url must start with https:// or http://",
				       cfg->providers[i].name);
		/* Every job without a model of its own calls this one: a typo fails at start. */
		char what[96], why[400];
		if (upstream_model_check(cfg->providers[i].model, what, sizeof(what)) < 0)
			return fail_at(cfg, section, "model", err, errsize, "[%s] %s", section,
				       model_problem(why, sizeof(why), "model", cfg->providers[i].model
						     ? cfg->providers[i].model : "", what));
	}
	for (size_t i = 0; i < cfg->n_routes; i++) {
		struct route_config *r = &cfg->routes[i];
		size_t weighted = 0;
		for (size_t k = 0; k < r->n_targets; k++) {
			struct route_target *tg = &r->targets[k];
			const struct provider_config *p = NULL;
			for (int j = 0; j < cfg->n_providers && !p; j++)
				if (!strcmp(cfg->providers[j].name, tg->provider))
					p = &cfg->providers[j];
			if (!p)
				return fail_on(cfg, tg->line, err, errsize, "[route %s] %s names provider "
					       "\"%s\", which has no [provider %s] section", r->name,
					       tg->fallback ? "fallback" : "target", tg->provider,
					       tg->provider);
			if (!tg->model)
				tg->model = xstrdup(p->model);
			weighted += !tg->fallback;
		}
		if (!weighted) {
			char section[80];
			xsnprintf(section, sizeof(section), "route %s", r->name);
			return fail_on(cfg, section_line(cfg, section), err, errsize, "[route %s] needs "
				       "at least one target line (fallbacks are tried only when no target "
				       "can take a job)", r->name);
		}
	}
	if (cfg->timeout_min > cfg->timeout_max)
		return fail_at(cfg, "limits", config_line(cfg, "limits", "timeout_min") ? "timeout_min"
			       : "timeout_max", err, errsize, "[limits] timeout_min (%ld) is above "
			       "timeout_max (%ld): the range a job's timeout is held to would be empty",
			       cfg->timeout_min, cfg->timeout_max);
	if (cfg->default_provider && !config_provider(cfg, cfg->default_provider))
		return fail_at(cfg, "spool", "default_provider", err, errsize,
			       "default_provider \"%s\" has no [provider NAME] section of that NAME",
			       shown(cfg->default_provider, (char[SHOWN_SIZE]){ 0 }, SHOWN_SIZE));
	const char *prom = cfg->metrics_textfile;
	if (prom && (strlen(prom) < 6 || strcmp(prom + strlen(prom) - 5, ".prom")))
		return fail_at(cfg, "metrics", "textfile", err, errsize, "[metrics] textfile \"%s\" "
			       "must end in .prom (node_exporter's collector reads only those)",
			       shown(prom, (char[PATH_SHOWN_SIZE]){ 0 }, PATH_SHOWN_SIZE));
	cfg->grace_period_auto = cfg->grace_period < 0;
	if (cfg->grace_period_auto)
		cfg->grace_period = config_longest_call(cfg);
	return check_outputs(cfg, err, errsize);
}

int config_load(struct config *cfg, const char *path, char *err, size_t errsize)
{
	memset(cfg, 0, sizeof(*cfg));
	price_table_init(&cfg->prices);
	cfg->path = xstrdup(path);
	char *copy = xstrdup(path);
	struct parse_state st = { .cfg = cfg, .base_dir = xstrdup(dirname(copy)), .err = err,
				  .errsize = errsize };
	free(copy);
	strset_init(&st.sections);
	set_defaults(cfg, "spool", st.base_dir);
	set_defaults(cfg, "limits", st.base_dir);
	set_defaults(cfg, "retry", st.base_dir);
	set_defaults(cfg, "tls", st.base_dir);
	set_defaults(cfg, "budget", st.base_dir);
	set_defaults(cfg, "metrics", st.base_dir);
	cfg->grace_period = -1;
	set_defaults(cfg, "store", st.base_dir);
	set_defaults(cfg, "notify", st.base_dir);

	int rc = -1;
	/* O_NONBLOCK: a FIFO in the config's place must not hang the start. */
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	struct stat sb;
	if (fd >= 0 && (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode))) {
		close(fd);
		fd = -1;
		errno = EINVAL;
	}
	st.f = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (!st.f) {
		xsnprintf(err, errsize, "%s: cannot open: %s", path,
			  errno == EINVAL ? "not a regular file" : strerror(errno));
		if (fd >= 0)
			close(fd);
		goto out;
	}
	int line = ini_parse_stream(read_line, &st, handler, &st);
	fclose(st.f);
	if (line != 0 || st.reason[0]) {
		xsnprintf(err, errsize, "%s:%d: %s", path, st.reason[0] ? st.reason_line : line,
			  st.reason[0] ? st.reason : "not a valid ini line (expected [section] or key = value)");
		goto out;
	}
	for (size_t i = 0; i < ARRAY_SIZE(default_timeouts); i++)
		push_timeout(cfg, default_timeouts[i].pattern, default_timeouts[i].only_4k,
			     default_timeouts[i].seconds);
	if (cfg->n_providers == 0) {
		struct provider_config *p = &cfg->providers[cfg->n_providers++];
		p->name = xstrdup("apiyi");
		set_defaults(p, "provider", st.base_dir);
	}
	rc = check(cfg, err, errsize);
out:
	strset_release(&st.sections);
	free(st.base_dir);
	return rc;
}

struct config *config_new(const char *path, char *err, size_t errsize)
{
	struct config *cfg = xmalloc(sizeof(*cfg));
	if (config_load(cfg, path, err, errsize) < 0 || check_host(cfg, err, errsize) < 0) {
		config_release(cfg);
		free(cfg);
		return NULL;
	}
	cfg->refs = 1;
	return cfg;
}

struct config *config_ref(struct config *cfg)
{
	cfg->refs++;
	return cfg;
}

void config_unref(struct config *cfg)
{
	if (cfg && --cfg->refs == 0) {
		config_release(cfg);
		free(cfg);
	}
}

static char *read_key_file(const char *path, const char *what, char *problem, size_t psize);

/* access(2) passes anything for root: a read-only mount it does not see. */
static bool read_only(const char *path)
{
	struct statvfs vfs;
	if (statvfs(path, &vfs) < 0 || !(vfs.f_flag & ST_RDONLY))
		return false;
	errno = EROFS;
	return true;
}

/* Whether dir exists and can be written, or could be made: its nearest existing parent can. The
 * paths in why are shown(): a name holding a newline or an escape must not forge a log line. */
static int can_write_dir(const char *dir, char *why, size_t whysize)
{
	char *path = xstrdup(dir), path_shown[PATH_SHOWN_SIZE], dir_shown[PATH_SHOWN_SIZE];
	struct stat st;
	int rc = -1;
	shown(dir, dir_shown, sizeof(dir_shown));
	for (;;) {
		if (stat(path, &st) == 0) {
			bool asked = !strcmp(path, dir);
			shown(path, path_shown, sizeof(path_shown));
			if (!S_ISDIR(st.st_mode))
				xsnprintf(why, whysize, "'%s' is not a directory", path_shown);
			else if (access(path, W_OK | X_OK) < 0 || read_only(path))
				xsnprintf(why, whysize, asked ? "'%s' cannot be written: %s" :
					  "'%s' cannot be made: its parent '%s' cannot be written: %s",
					  asked ? path_shown : dir_shown,
					  asked ? strerror(errno) : path_shown, strerror(errno));
			else
				rc = 0;
			break;
		}
		if (errno != ENOENT) {
			int failed = errno;
			xsnprintf(why, whysize, "'%s' cannot be looked at: %s",
				  shown(path, path_shown, sizeof(path_shown)), strerror(failed));
			break;
		}
		char *slash = strrchr(path, '/');
		if (!slash || slash == path) {
			xsnprintf(why, whysize, "'%s' cannot be made: no parent directory exists",
				  dir_shown);
			break;
		}
		*slash = '\0';
	}
	free(path);
	return rc;
}

int config_verify(const struct config *cfg, char *err, size_t errsize)
{
	char why[2 * PATH_SHOWN_SIZE + 100];
	if (can_write_dir(cfg->spool_dir, why, sizeof(why)) < 0)
		return fail_at(cfg, "spool", "dir", err, errsize, "spool directory %s", why);
	if (cfg->metrics_textfile) {
		char *copy = xstrdup(cfg->metrics_textfile);
		int rc = can_write_dir(dirname(copy), why, sizeof(why));
		free(copy);
		if (rc < 0)
			return fail_at(cfg, "metrics", "textfile", err, errsize,
				       "the metrics file's directory %s", why);
	}
	for (int i = 0; i < cfg->n_providers; i++) {
		const struct provider_config *p = &cfg->providers[i];
		char section[80], problem[256] = "";
		if (!p->api_key_file)
			continue;
		xsnprintf(section, sizeof(section), "provider %s", p->name);
		char *key = read_key_file(p->api_key_file, "api_key_file", problem, sizeof(problem));
		if (key)
			explicit_bzero(key, strlen(key));
		free(key);
		if (!key)
			return fail_at(cfg, section, "api_key_file", err, errsize, "%s", problem);
	}
	return 0;
}

void config_carry_fixed(struct config *next, const struct config *running)
{
	if (strcmp(next->spool_dir, running->spool_dir))
		log_warn("%s: [spool] dir changed to '%s': a running daemon keeps '%s' (restart to move)",
			 next->path, shown(next->spool_dir, (char[PATH_SHOWN_SIZE]){ 0 }, PATH_SHOWN_SIZE),
			 shown(running->spool_dir, (char[PATH_SHOWN_SIZE]){ 0 }, PATH_SHOWN_SIZE));
	if (strcmp(next->host_id, running->host_id))
		log_warn("%s: [spool] host_id changed to '%s': a running daemon keeps '%s' (restart to "
			 "change it)", next->path, next->host_id, running->host_id);
	if (next->io_threads != running->io_threads)
		log_warn("%s: [spool] io_threads changed to %ld: takes effect at the next restart",
			 next->path, next->io_threads);
	if (next->sync_mode != running->sync_mode)
		log_warn("%s: [spool] sync changed to %s: takes effect at the next restart",
			 next->path, next->sync_text);
	free(next->spool_dir);
	next->spool_dir = xstrdup(running->spool_dir);
	free(next->host_id);
	next->host_id = xstrdup(running->host_id);
	next->io_threads = running->io_threads;
	next->sync_mode = running->sync_mode;
}

#define KEY_FILE_MAX 4096   /* bytes: a key file is one line */

/* Reads a key file (what: the config key naming it), warning when others can read it. Returns
 * NULL with problem set. Opened without blocking or following a symlink, and only read when it
 * is a small regular file: a FIFO or a device there must not hang start-up or SIGHUP. Its name is
 * shown() in every message. */
static char *read_key_file(const char *path, const char *what, char *problem, size_t psize)
{
	char path_shown[PATH_SHOWN_SIZE];
	shown(path, path_shown, sizeof(path_shown));
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	struct stat st;
	char buf[KEY_FILE_MAX + 1];
	ssize_t n = -1;
	if (fd < 0) {
		xsnprintf(problem, psize, "cannot open %s '%s': %s", what, path_shown,
			  errno == ELOOP ? "it is a symlink" : strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		xsnprintf(problem, psize, "%s '%s' is not a regular file", what, path_shown);
		return NULL;
	}
	if (st.st_size > KEY_FILE_MAX) {
		close(fd);
		xsnprintf(problem, psize, "%s '%s' is larger than %d bytes: it should hold "
			  "the key alone", what, path_shown, KEY_FILE_MAX);
		return NULL;
	}
	if (st.st_mode & 0077)
		log_warn("%s '%s' is readable by group or others (mode %03o): chmod 600 it",
			 what, path_shown, (unsigned)(st.st_mode & 0777));
	n = read(fd, buf, KEY_FILE_MAX);
	close(fd);
	if (n <= 0) {
		xsnprintf(problem, psize, "%s '%s' is empty or unreadable", what, path_shown);
		return NULL;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	char *key = *buf ? xstrdup(buf) : NULL;
	explicit_bzero(buf, sizeof(buf));
	if (!key)
		xsnprintf(problem, psize, "%s '%s' has an empty first line", what, path_shown);
	return key;
}

static void forget(char **secret)
{
	if (*secret)
		explicit_bzero(*secret, strlen(*secret));
	free(*secret);
	*secret = NULL;
}

/* One secret from file (when set) or environment; NULL with problem set if neither has it. */
static char *load_secret(const char *file, const char *file_key, const char *env,
			 const char *section, char *problem, size_t psize)
{
	if (file)
		return read_key_file(file, file_key, problem, psize);
	const char *v = secret_env(env);
	if (v)
		return xstrdup(v);
	xsnprintf(problem, psize, "set the environment variable %s or %s in [%s]",
		  env ? env : "(none)", file_key, section);
	return NULL;
}

static void load_store_keys(struct config *cfg)
{
	char problem[256] = "";
	forget(&cfg->store_access_key_id);
	forget(&cfg->store_secret_access_key);
	cfg->store_key_problem[0] = '\0';
	if (!config_store_enabled(cfg))
		return;
	cfg->store_access_key_id = load_secret(cfg->store_access_key_id_file, "access_key_id_file",
					       cfg->store_access_key_id_env, "store", problem, sizeof(problem));
	if (!cfg->store_access_key_id) {
		xsnprintf(cfg->store_key_problem, sizeof(cfg->store_key_problem),
			  "no access key id for [store]: %s", problem);
		return;
	}
	cfg->store_secret_access_key = load_secret(cfg->store_secret_access_key_file,
						   "secret_access_key_file",
						   cfg->store_secret_access_key_env, "store", problem,
						   sizeof(problem));
	secret_register(cfg->store_secret_access_key);
	if (!cfg->store_secret_access_key)
		xsnprintf(cfg->store_key_problem, sizeof(cfg->store_key_problem),
			  "no secret access key for [store]: %s", problem);
}

static void load_notify_secret(struct config *cfg)
{
	char problem[256] = "";
	if (cfg->notify_secret)
		explicit_bzero(cfg->notify_secret, cfg->notify_secret_len);
	free(cfg->notify_secret);
	cfg->notify_secret = NULL;
	cfg->notify_secret_len = 0;
	cfg->notify_secret_problem[0] = '\0';
	if (!config_notify_enabled(cfg))
		return;
	char *text = load_secret(cfg->notify_secret_file, "secret_file", cfg->notify_secret_env,
				 "notify", problem, sizeof(problem));
	if (!text) {
		xsnprintf(cfg->notify_secret_problem, sizeof(cfg->notify_secret_problem),
			  "no webhook secret: %s", problem);
		return;
	}
	secret_register(text);
	if (!strncmp(text, "whsec_", 6))
		secret_register(text + 6);
	/* Standard Webhooks: "whsec_" + base64 of the key bytes; the bytes are what is signed with. */
	if (strncmp(text, "whsec_", 6) ||
	    !(cfg->notify_secret = crypto_base64_decode(text + 6, &cfg->notify_secret_len)) ||
	    cfg->notify_secret_len < 16)
		xsnprintf(cfg->notify_secret_problem, sizeof(cfg->notify_secret_problem),
			  "the webhook secret is not \"whsec_\" followed by base64 of at least 16 bytes");
	if (cfg->notify_secret_problem[0] && cfg->notify_secret) {
		explicit_bzero(cfg->notify_secret, cfg->notify_secret_len);
		free(cfg->notify_secret);
		cfg->notify_secret = NULL;
	}
	forget(&text);
}

void config_load_keys(struct config *cfg)
{
	load_store_keys(cfg);
	load_notify_secret(cfg);
	for (int i = 0; i < cfg->n_providers; i++) {
		struct provider_config *p = &cfg->providers[i];
		p->key_problem[0] = '\0';
		if (p->api_key) {
			explicit_bzero(p->api_key, strlen(p->api_key));
			free(p->api_key);
			p->api_key = NULL;
		}
		if (p->api_key_file) {
			p->api_key = read_key_file(p->api_key_file, "api_key_file", p->key_problem,
						   sizeof(p->key_problem));
			secret_register(p->api_key);
			continue;
		}
		const char *v = secret_env(p->api_key_env);
		if (v) {
			p->api_key = xstrdup(v);
			secret_register(p->api_key);
		} else
			xsnprintf(p->key_problem, sizeof(p->key_problem),
				  "no API key: set the environment variable %s or api_key_file in [provider %s]",
				  p->api_key_env ? p->api_key_env : "(none)", p->name);
	}
}

const struct provider_config *config_provider(const struct config *cfg, const char *name)
{
	if (!name)
		name = cfg->default_provider;
	if (!name)
		return cfg->n_providers ? &cfg->providers[0] : NULL;
	for (int i = 0; i < cfg->n_providers; i++)
		if (!strcmp(cfg->providers[i].name, name))
			return &cfg->providers[i];
	return NULL;
}

const struct route_config *config_route(const struct config *cfg, const char *name)
{
	for (size_t i = 0; name && i < cfg->n_routes; i++)
		if (!strcmp(cfg->routes[i].name, name))
			return &cfg->routes[i];
	return NULL;
}

static bool is_4k(const char *size)
{
	int w = 0, h = 0;
	if (!size || sscanf(size, "%dx%d", &w, &h) != 2)
		return false;
	return (w > h ? w : h) > 2048;
}

long config_call_timeout(const struct config *cfg, const struct provider_config *p,
			 const char *model, const char *size)
{
	bool big = is_4k(size);
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < cfg->n_timeouts; i++) {
			const struct model_timeout *t = &cfg->timeouts[i];
			if (t->only_4k == (pass == 0) && (pass == 1 || big) &&
			    pattern_match(t->pattern, model))
				return t->seconds;
		}
	}
	return p->timeout;
}

void config_job_limits(const struct config *cfg, struct job_limits *limits)
{
	job_limits_default(limits);
	limits->max_n = (int)cfg->max_n;
	limits->max_depth = (int)cfg->max_depth;
	limits->max_pixels_mp = (int)cfg->max_pixels_mp;
}

void config_job_limits_widest(struct job_limits *limits)
{
	job_limits_default(limits);
	limits->max_pixels_mp = 0;   /* no limit */
	for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
		if (strcmp(keys[i].section, "limits"))
			continue;
		if (!strcmp(keys[i].name, "max_n"))
			limits->max_n = (int)keys[i].max;
		else if (!strcmp(keys[i].name, "max_depth"))
			limits->max_depth = (int)keys[i].max;
	}
}

void config_release(struct config *cfg)
{
	for (size_t i = 0; i < cfg->n_lines; i++) {
		free(cfg->lines[i].section);
		free(cfg->lines[i].key);
	}
	free(cfg->lines);
	free(cfg->metrics_textfile);
	for (size_t i = 0; i < cfg->n_timeouts; i++)
		free(cfg->timeouts[i].pattern);
	free(cfg->timeouts);
	price_table_release(&cfg->prices);
	for (size_t i = 0; i < cfg->n_routes; i++) {
		for (size_t k = 0; k < cfg->routes[i].n_targets; k++)
			route_target_release(&cfg->routes[i].targets[k]);
		free(cfg->routes[i].targets);
		free(cfg->routes[i].name);
	}
	free(cfg->routes);
	for (int i = 0; i < cfg->n_providers; i++) {
		struct provider_config *p = &cfg->providers[i];
		if (p->api_key)
			explicit_bzero(p->api_key, strlen(p->api_key));
		free(p->api_key);
		free(p->name);
		free(p->base_url);
		free(p->api_key_env);
		free(p->api_key_file);
		free(p->model);
	}
	free(cfg->path);
	free(cfg->spool_dir);
	free(cfg->host_id);
	free(cfg->umask_text);
	free(cfg->sync_text);
	free(cfg->default_provider);
	free(cfg->ca_file);
	forget(&cfg->store_access_key_id);
	forget(&cfg->store_secret_access_key);
	if (cfg->notify_secret)
		explicit_bzero(cfg->notify_secret, cfg->notify_secret_len);
	free(cfg->notify_secret);
	char **strings[] = { &cfg->store_endpoint, &cfg->store_bucket, &cfg->store_region,
			     &cfg->store_prefix, &cfg->store_public_url, &cfg->store_access_key_id_env,
			     &cfg->store_secret_access_key_env, &cfg->store_access_key_id_file,
			     &cfg->store_secret_access_key_file, &cfg->notify_url,
			     &cfg->notify_secret_env, &cfg->notify_secret_file,
			     &cfg->notify_url_prefixes, &cfg->notify_exec };
	for (size_t i = 0; i < ARRAY_SIZE(strings); i++)
		free(*strings[i]);
	memset(cfg, 0, sizeof(*cfg));
}
