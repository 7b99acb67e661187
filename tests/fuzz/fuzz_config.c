/* fuzz_config.c - libFuzzer entry point for the configuration loader: inih and config.c.
 *
 * The input is an imgspool.ini as an operator could write it. It is written into a memfd (no
 * file is left anywhere: the harness has nothing to remove) and read with config_load() through
 * /proc/self/fd, then with config_new() (the daemon's load). Checked, trapping on a broken
 * promise of config.h, every rule written out again here from imgspool.ini(5), not from
 * config.c's table:
 *   - a refused file gives one message "PATH:LINE: reason" or "PATH: reason", LINE a line the
 *     file has, and everything is released (LeakSanitizer sees any leak);
 *   - an accepted file gives a configuration a second look accepts too: every number within
 *     the bounds the man page gives, every provider's name plain and its model one a request
 *     can be built with, every route target naming a provider that exists and a model, the
 *     default provider found, every remembered key line within the file, the store's and the
 *     webhooks' URLs of printable ASCII, every line whole to inih (at most 199 bytes, no NUL),
 *     and the same bytes loaded again giving the same configuration;
 *   - config_new() takes what config_load() took, but for a [notify] exec this host lacks.
 * Nothing here reads a key file, the environment or the spool: that is config_verify() and
 * config_load_keys(), whose inputs are not the file's bytes. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "job.h"
#include "upstream.h"
#include "fuzz.h"
#include "banned.h"

static int memfd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	memfd = memfd_create("imgspool.ini", MFD_CLOEXEC);
	CHECK(memfd >= 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", memfd);
	return 0;
}

#define F(f) offsetof(struct config, f)
#define PF(f) offsetof(struct provider_config, f)

/* imgspool.ini(5)'s bounds of the whole numbers. */
static const struct { size_t offset; long min, max; } config_bounds[] = {
	{ F(concurrency), 1, 65536 }, { F(poll_interval), 1, 3600 }, { F(grace_period), 0, 7200 },
	{ F(settle_time), 0, 3600 }, { F(min_free_mb), 0, 1 << 20 },
	{ F(disk_retry_interval), 1, 3600 }, { F(lease_timeout), 2, 86400 },
	{ F(io_threads), 1, 64 }, { F(max_job_bytes), 1024, 64L << 20 },
	{ F(max_response_mb), 1, 1024 }, { F(max_n), 1, 10 }, { F(max_depth), 2, 256 },
	{ F(max_pixels_mp), 0, 1000 }, { F(timeout_min), 1, 3600 }, { F(timeout_max), 1, 7200 },
	{ F(download_timeout), 1, 3600 }, { F(download_attempts), 1, 20 },
	{ F(download_retry_cap), 1, 3600 }, { F(allow_private_downloads), 0, 1 },
	{ F(max_retries), 0, 20 }, { F(max_billed_retries), 0, 5 },
	{ F(backoff_base_ms), 0, 3600000 }, { F(backoff_cap_ms), 0, 86400000 },
	{ F(max_crash_requeues), 0, 100 }, { F(hold_probe_interval), 1, 86400 },
	{ F(cooldown_failures), 0, 1000 }, { F(cooldown_time), 1, 86400 },
	{ F(cooldown_jitter), 0, 100 }, { F(store_timeout), 1, 3600 },
	{ F(store_retry_base_ms), 10, 3600000 }, { F(store_retry_cap_ms), 10, 3600000 },
	{ F(notify_allow_private), 0, 1 }, { F(notify_deferrals), 0, 1 },
	{ F(notify_timeout), 1, 60 }, { F(notify_retry_base_ms), 10, 3600000 },
	{ F(notify_retry_cap_ms), 10, 86400000 }, { F(notify_give_up_after), 1, 30 * 86400 },
	{ F(notify_exec_timeout), 1, 86400 }, { F(notify_exec_max), 1, 256 },
	{ F(metrics_interval), 1, 3600 }, { F(budget_daily), 0, 1000000000L * 1000000 },
	{ F(budget_monthly), 0, 1000000000L * 1000000 },
};
static const struct { size_t offset; long min, max; } provider_bounds[] = {
	{ PF(timeout), 1, 3600 }, { PF(connect_timeout), 1, 300 }, { PF(concurrency), 0, 65536 },
	{ PF(rpm), 0, 100000 }, { PF(rate_window), 1, 3600 },
	{ PF(budget_daily), 0, 1000000000L * 1000000 }, { PF(budget_monthly), 0, 1000000000L * 1000000 },
};

static bool plain_name(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;
	if (n < 1 || n > max)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_'))
			return false;
	}
	return true;
}

/* Printable ASCII without spaces: what a URL of the configuration may hold. */
static bool url_bytes(const char *s)
{
	for (; s && *s; s++)
		if ((unsigned char)*s <= ' ' || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

static bool http_url(const char *s)
{
	return s && (!strncmp(s, "http://", 7) || !strncmp(s, "https://", 8)) && url_bytes(s);
}

/* The lines of the file: each '\n' ends one, and text after the last is one more. */
static size_t lines_in(const uint8_t *data, size_t size)
{
	size_t n = size && data[size - 1] != '\n';
	for (size_t i = 0; i < size; i++)
		n += data[i] == '\n';
	return n;
}

static const uint8_t *input;
static size_t input_size;

/* Whether text is somewhere in the file whole: followed by one of ends (a '\0' in ends: or by
 * the file's end). A value or a name the loader cut short fails this. */
static bool in_file_whole(const char *text, const char *ends)
{
	size_t n = strlen(text);
	for (const uint8_t *at = input, *stop = input + input_size;
	     (at = memmem(at, (size_t)(stop - at), text, n)); at++) {
		if (at + n == stop || memchr(ends, at[n], strlen(ends)))
			return true;
	}
	return false;
}

static void check_refused(const char *err, size_t lines)
{
	size_t plen = strlen(path);
	CHECK(!strncmp(err, path, plen) && err[plen] == ':');
	const char *rest = err + plen + 1;
	if (*rest >= '0' && *rest <= '9') {
		char *end;
		unsigned long line = strtoul(rest, &end, 10);
		CHECK(line >= 1 && line <= lines && *end == ':');
		rest = end + 1;
	}
	CHECK(rest[0] == ' ' && rest[1]);
	/* A message goes to a log or a terminal: the file's bytes are never repeated raw. */
	for (const unsigned char *c = (const unsigned char *)err; *c; c++)
		CHECK(*c >= 0x20 && *c != 0x7f && !(c[0] == 0xc2 && c[1] >= 0x80 && c[1] <= 0x9f));
}

static void check_provider(const struct provider_config *p)
{
	char why[128];
	CHECK(plain_name(p->name, 64));
	CHECK(upstream_model_check(p->model, why, sizeof(why)) == 0);
	CHECK(http_url(p->base_url));
	for (size_t i = 0; i < sizeof(provider_bounds) / sizeof(provider_bounds[0]); i++) {
		long v = *(const long *)((const char *)p + provider_bounds[i].offset);
		CHECK(v >= provider_bounds[i].min && v <= provider_bounds[i].max);
	}
}

static void check_accepted(const struct config *cfg, size_t lines)
{
	char why[128];
	/* inih read every line whole: none is past its 199-byte buffer, none holds a NUL. */
	CHECK(!memchr(input, '\0', input_size));
	for (size_t at = 0, n; at < input_size; at += n + 1) {
		const uint8_t *nl = memchr(input + at, '\n', input_size - at);
		n = nl ? (size_t)(nl - input - at) : input_size - at;
		CHECK(n <= 199);
	}
	for (size_t i = 0; i < sizeof(config_bounds) / sizeof(config_bounds[0]); i++) {
		long v = *(const long *)((const char *)cfg + config_bounds[i].offset);
		CHECK(v >= config_bounds[i].min && v <= config_bounds[i].max);
	}
	CHECK(cfg->timeout_min <= cfg->timeout_max);
	CHECK(cfg->spool_dir && cfg->spool_dir[0]);
	CHECK(plain_name(cfg->host_id, 64));
	CHECK(cfg->umask <= 0777);
	CHECK(cfg->sync_mode == SYNC_AUTO || cfg->sync_mode == SYNC_FILES || cfg->sync_mode == SYNC_FS);
	CHECK(cfg->n_providers >= 1 && cfg->n_providers <= CONFIG_MAX_PROVIDERS);
	/* The names of sections and the values the file set are its text whole. */
	const char *value_ends = " \t\r\n;";
	for (int i = 0; i < cfg->n_providers; i++) {
		const struct provider_config *p = &cfg->providers[i];
		char section[80];
		snprintf(section, sizeof(section), "provider %s", p->name);
		if (config_line(cfg, section, "model"))
			CHECK(in_file_whole(p->model, value_ends));
		if (config_line(cfg, section, "base_url"))
			CHECK(in_file_whole(p->base_url, value_ends));
		for (size_t k = 0; k < cfg->n_lines; k++)
			if (!strcmp(cfg->lines[k].section, section))
				CHECK(in_file_whole(p->name, "]"));
	}
	for (size_t i = 0; i < cfg->n_routes; i++)
		CHECK(in_file_whole(cfg->routes[i].name, "]"));
	if (cfg->notify_url)
		CHECK(in_file_whole(cfg->notify_url, value_ends));
	if (cfg->notify_url_prefixes) {
		char *list = strdup(cfg->notify_url_prefixes), *save = NULL;
		CHECK(list);
		for (char *w = strtok_r(list, " \t", &save); w; w = strtok_r(NULL, " \t", &save))
			CHECK(in_file_whole(w, value_ends));
		free(list);
	}
	if (config_line(cfg, "spool", "host_id"))
		CHECK(in_file_whole(cfg->host_id, value_ends));
	for (int i = 0; i < cfg->n_providers; i++) {
		check_provider(&cfg->providers[i]);
		for (int k = 0; k < i; k++)
			CHECK(strcmp(cfg->providers[i].name, cfg->providers[k].name));
	}
	CHECK(config_provider(cfg, NULL) != NULL);
	CHECK(!cfg->default_provider || config_provider(cfg, cfg->default_provider));
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct route_config *r = &cfg->routes[i];
		size_t weighted = 0;
		CHECK(plain_name(r->name, 64) && config_route(cfg, r->name) == r);
		CHECK(r->n_targets >= 1 && r->n_targets <= ROUTE_MAX_TARGETS);
		for (size_t k = 0; k < r->n_targets; k++) {
			const struct route_target *tg = &r->targets[k];
			CHECK(config_provider(cfg, tg->provider) != NULL);
			CHECK(upstream_model_check(tg->model, why, sizeof(why)) == 0);
			CHECK(tg->fallback ? tg->weight == 0 : tg->weight >= 1 && tg->weight <= 1000000);
			CHECK(tg->max_n >= 0 && tg->max_n <= 10);
			CHECK(tg->max_refs >= -1 && tg->max_refs <= 16);
			weighted += !tg->fallback;
		}
		CHECK(weighted >= 1);
	}
	for (size_t i = 0; i < cfg->n_lines; i++)
		CHECK(cfg->lines[i].line >= 1 && (size_t)cfg->lines[i].line <= lines);
	for (size_t i = 0; i < cfg->n_timeouts; i++)
		CHECK(cfg->timeouts[i].seconds >= 1 && cfg->timeouts[i].seconds <= 7200 &&
		      cfg->timeouts[i].pattern);
	CHECK(cfg->grace_period >= 0 && cfg->grace_period <= 7200);
	if (cfg->grace_period_auto)
		CHECK(cfg->grace_period == config_longest_call(cfg));
	CHECK(!cfg->notify_url || http_url(cfg->notify_url));
	CHECK(!config_notify_enabled(cfg) || cfg->notify_secret_env || cfg->notify_secret_file);
	if (config_store_enabled(cfg)) {
		CHECK(http_url(cfg->store_endpoint));
		CHECK(!cfg->store_public_url || http_url(cfg->store_public_url));
		CHECK(cfg->store_bucket && strlen(cfg->store_bucket) >= 3);
	}
	CHECK(strlen(cfg->prices.currency) >= 1);
	struct job_limits limits, widest;
	config_job_limits(cfg, &limits);
	config_job_limits_widest(&widest);
	CHECK(limits.max_n >= 1 && limits.max_n <= widest.max_n);
	CHECK(limits.max_depth >= 1 && limits.max_depth <= widest.max_depth);
	for (int i = 0; i < cfg->n_providers; i++)
		CHECK(config_call_timeout(cfg, &cfg->providers[i], cfg->providers[i].model, "4096x4096")
		      >= 1);
}

/* What two loads of the same bytes must agree on. */
static void check_same(const struct config *a, const struct config *b)
{
	for (size_t i = 0; i < sizeof(config_bounds) / sizeof(config_bounds[0]); i++)
		CHECK(*(const long *)((const char *)a + config_bounds[i].offset) ==
		      *(const long *)((const char *)b + config_bounds[i].offset));
	CHECK(a->n_providers == b->n_providers && a->n_routes == b->n_routes &&
	      a->n_timeouts == b->n_timeouts && a->prices.n_rows == b->prices.n_rows &&
	      a->n_lines == b->n_lines && !strcmp(a->spool_dir, b->spool_dir));
	for (int i = 0; i < a->n_providers; i++)
		CHECK(!strcmp(a->providers[i].name, b->providers[i].name) &&
		      !strcmp(a->providers[i].model, b->providers[i].model));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[1024], err2[1024];
	struct config cfg, again;
	size_t lines = lines_in(data, size);

	input = data;
	input_size = size;
	if (ftruncate(memfd, 0) < 0 || pwrite(memfd, data, size, 0) != (ssize_t)size)
		return 0;
	memset(err, 'x', sizeof(err));
	int rc = config_load(&cfg, path, err, sizeof(err));
	if (rc < 0) {
		CHECK(memchr(err, '\0', sizeof(err)) != NULL);
		check_refused(err, lines);
		config_release(&cfg);
		return 0;
	}
	CHECK(rc == 0);
	check_accepted(&cfg, lines);
	CHECK(config_load(&again, path, err2, sizeof(err2)) == 0);
	check_same(&cfg, &again);
	config_release(&again);

	struct config *daemon = config_new(path, err2, sizeof(err2));
	CHECK(daemon || (cfg.notify_exec && strstr(err2, "[notify] exec")));
	config_unref(daemon);
	config_release(&cfg);
	return 0;
}
