/* config.h - the configuration: one table of keys with types, bounds and defaults, read by inih.
 * Every key has a default, so an empty file is a working configuration. */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "price.h"

#define CONFIG_MAX_PROVIDERS 8

struct provider_config {
	char *name;
	char *base_url;
	char *api_key_env;       /* environment variable holding the key */
	char *api_key_file;      /* or a file holding it (wins when set) */
	char *model;             /* default model */
	long timeout;            /* seconds for one call */
	long connect_timeout;    /* seconds */
	long concurrency;        /* calls in flight to this provider, 0 = [spool] concurrency */
	long rpm;                /* calls started per minute, 0 = no limit */
	char *api_key;           /* loaded by config_load_keys(); secret, never logged */
	char key_problem[256];   /* why there is no usable key, "" if there is one */
};

struct model_timeout {
	char *pattern;           /* fnmatch(3) glob over the model name */
	bool only_4k;            /* applies only when the long edge of "size" is above 2048 */
	long seconds;
};

struct config {
	char *path;              /* the file read, for messages */
	/* [spool] */
	char *spool_dir;
	long concurrency;
	long poll_interval;      /* seconds between full rescans */
	long grace_period;       /* seconds calls in flight may finish after SIGTERM */
	long settle_time;        /* seconds an unparsable file may still be being written */
	char *host_id;
	long lease_timeout;
	long min_free_mb;        /* no claims while the spool's file system has less free */
	long disk_retry_interval; /* seconds between tries to publish onto a full disk */      /* seconds without a heartbeat before another host reclaims a job */
	long io_threads;
	char *umask_text;        /* octal, as written */
	unsigned umask;          /* applied at start: the mode of every file and directory created */
	char *default_provider;
	/* [limits] */
	long max_job_bytes;
	long max_response_mb;
	long max_n;
	long max_depth;
	long max_pixels_mp;
	long download_timeout;   /* seconds for fetching a returned image URL */
	long download_attempts;
	long allow_private_downloads; /* 1: image URLs may point at loopback or private addresses */
	long timeout_min;        /* a job's "timeout" is clamped to [timeout_min, timeout_max] */
	long timeout_max;
	/* [timeouts]: seconds per model pattern, "PATTERN" or "PATTERN@4K" */
	struct model_timeout *timeouts;
	size_t n_timeouts;
	/* [prices]: what a call costs, by model pattern (price.h) */
	struct price_table prices;
	/* [retry] */
	long max_retries;        /* business retries of one job */
	long max_billed_retries; /* of those, retries after an attempt that may have been charged */
	long backoff_base_ms;
	long backoff_cap_ms;
	long hold_probe_interval; /* seconds between probes of a held provider */
	long max_crash_requeues; /* a job running through more daemon deaths than this fails */
	/* [tls] */
	char *ca_file;
	/* [provider NAME] sections */
	struct provider_config providers[CONFIG_MAX_PROVIDERS];
	int n_providers;
};

/* Reads path into cfg (defaults first). On error returns -1 with "FILE:LINE: reason" in err. */
int config_load(struct config *cfg, const char *path, char *err, size_t errsize);
/* Loads each provider's key from its file or environment; never fails: a provider without a
 * usable key gets key_problem set and the daemon waits instead of failing jobs. */
void config_load_keys(struct config *cfg);
const struct provider_config *config_provider(const struct config *cfg, const char *name);
/* Seconds one call for model at size (NULL = not given) may take: the [timeouts] table
 * (4K rows first, then the first matching pattern), else the provider's timeout. */
long config_call_timeout(const struct config *cfg, const struct provider_config *p,
			 const char *model, const char *size);
void config_release(struct config *cfg);

#endif
