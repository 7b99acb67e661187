/* config.h - the configuration: one table of keys with types, bounds and defaults, read by inih.
 * Every key has a default, so an empty file is a working configuration.
 *
 * How the daemon's modules read it (follow this for every new section or key):
 *   - A loaded struct config is never changed. SIGHUP loads the whole file into a new one
 *     (config_new); if that fails, the running one goes on and the reason is logged as
 *     FILE:LINE: reason. If it loads, it replaces the running one whole: main.c hands the new
 *     pointer to each module's reconfigure hook (dispatch_reconfigure, ...).
 *   - So a module keeps the pointer, not copies: it reads cfg->key when it needs it, and a
 *     reload takes effect at the next read. A module that derives state from the config (a
 *     table built from sections, a ring sized by a key) rebuilds it in its reconfigure hook,
 *     carrying over what is still valid (a provider's hold, by name).
 *   - Work in flight keeps the config it started with when the new one no longer has it (a
 *     provider removed by the reload finishes its calls): take a reference with config_ref()
 *     and drop it with config_unref(); the last unref frees it.
 *   - A key given twice is an error unless config.c lists it in repeatable_keys (a list, one
 *     item per line, e.g. a route's targets).
 *   - Keys that cannot change in a running process (spool dir, host_id, io_threads, sync) keep
 *     their running value on reload, with a warning (config_carry_fixed). */
#ifndef CONFIG_H
#define CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "price.h"
#include "syncset.h"

#define CONFIG_MAX_PROVIDERS 8
/* The highest [limits] max_job_bytes may be set to. With the records beyond it (record.h), the
 * largest job file any daemon reads, whatever its configuration (RECORD_FILE_MAX). */
#define CONFIG_JOB_BYTES_CEILING (64L << 20)
/* [limits] max_job_bytes's default (keys[] in config.c says it as a number): what imgspool
 * submit holds a job to without -c or --max-job-bytes, since a daemon so configured leaves a
 * larger one in new/ unread. */
#define CONFIG_JOB_BYTES_DEFAULT (1L << 20)

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
	long rate_window;        /* seconds rpm counts over (60) */
	long budget_daily;       /* micro-units of the [prices] currency per day, 0 = none */
	long budget_monthly;     /* per calendar month, 0 = none */
	char *api_key;           /* loaded by config_load_keys(); secret, never logged */
	char key_problem[256];   /* why there is no usable key, "" if there is one */
};

struct model_timeout {
	char *pattern;           /* fnmatch(3) glob over the model name */
	bool only_4k;            /* applies only when the long edge of "size" is above 2048 */
	long seconds;
};

/* Where a key was set in the file, for FILE:LINE messages after parsing. */
struct config_line {
	char *section;
	char *key;
	int line;
};

/* One target of a route: a provider and a model, with what it cannot do. */
struct route_target {
	char *provider;          /* a [provider NAME] */
	char *model;             /* the provider's model when the line names none */
	long weight;             /* share of the route's jobs; 0 for a fallback */
	bool fallback;           /* tried in order once no weighted target can take the job */
	long max_n;              /* images per call, 0 = any */
	long max_refs;           /* reference images, -1 = any */
	char *sizes;             /* "WxH,WxH,...": the only sizes it makes; NULL = any */
	int line;                /* of the file, for messages */
};

#define ROUTE_MAX_TARGETS 32

/* [route NAME]: a job whose "model" is NAME goes to one of these targets (route.h). */
struct route_config {
	char *name;
	bool cheapest;           /* strategy = cheapest: the cheapest target that can take it now */
	struct route_target *targets;
	size_t n_targets;
};

struct config {
	int refs;                /* config_new() gives 1; config_unref() frees at 0 */
	char *path;              /* the file read, for messages */
	struct config_line *lines;
	size_t n_lines;
	/* [spool] */
	char *spool_dir;
	long concurrency;
	long poll_interval;      /* seconds between full rescans */
	long grace_period;       /* seconds calls in flight may finish after SIGTERM */
	bool grace_period_auto;  /* not set: the longest call the configuration allows */
	long settle_time;        /* seconds an unparsable file may still be being written */
	char *host_id;
	long lease_timeout;
	long min_free_mb;        /* no claims while the spool's file system has less free */
	long disk_retry_interval; /* seconds between tries to publish onto a full disk */      /* seconds without a heartbeat before another host reclaims a job */
	long io_threads;
	char *sync_text;         /* [spool] sync, as written */
	enum sync_mode sync_mode; /* how a batch of jobs is made durable (syncset.h) */
	char *umask_text;        /* octal, as written */
	unsigned umask;          /* applied at start: the mode of every file and directory created */
	char *default_provider;
	/* [limits] */
	long max_job_bytes;      /* at most CONFIG_JOB_BYTES_CEILING */
	long max_response_mb;
	long max_refs_mb;        /* a job's reference images together (each distinct file once) */
	long max_n;
	long max_depth;
	long max_pixels_mp;
	long download_timeout;   /* seconds for fetching a returned image URL */
	long download_attempts;
	long download_retry_cap; /* seconds: the longest wait between two tries of a download */
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
	long cooldown_failures;  /* free failures in a row that cool a route's target down, 0 = never */
	long cooldown_time;      /* seconds it then cools down, */
	long cooldown_jitter;    /* plus up to this percent */
	long max_crash_requeues; /* a job running through more daemon deaths than this fails */
	/* [budget]: all providers together, micro-units of the [prices] currency, 0 = none */
	long budget_daily;
	long budget_monthly;
	/* [tls] */
	char *ca_file;
	/* [metrics] */
	char *metrics_textfile;  /* Prometheus text file for node_exporter, NULL = none */
	long metrics_interval;   /* seconds between writes */
	/* [store]: object storage for the images of succeeded jobs; off while endpoint is unset */
	char *store_endpoint;    /* http(s)://host[:port], path-style requests */
	char *store_bucket;
	char *store_region;
	char *store_prefix;      /* prepended to every object key, from [A-Za-z0-9._~/-] */
	char *store_public_url;  /* base of the URLs written into results; default endpoint/bucket */
	char *store_access_key_id_env;
	char *store_secret_access_key_env;
	char *store_access_key_id_file;     /* win over the _env keys when set */
	char *store_secret_access_key_file;
	long store_timeout;      /* seconds for one upload */
	long store_retry_base_ms; /* first wait after a failed upload, doubling up to the cap */
	long store_retry_cap_ms;
	char *store_access_key_id;     /* loaded by config_load_keys() */
	char *store_secret_access_key; /* secret, never logged */
	char store_key_problem[256];   /* why uploads cannot be signed, "" if they can */
	/* [notify]: webhooks and the completion hook */
	char *notify_url;        /* webhook endpoint; NULL = no webhooks */
	char *notify_secret_env; /* holds the whsec_... secret */
	char *notify_secret_file;
	long notify_allow_private; /* 1: loopback and private addresses may be called */
	char *notify_url_prefixes; /* space-separated: a job's webhook_url must start with one */
	long notify_deferrals;   /* 1: a deferral sends a job.deferred event too */
	long notify_timeout;     /* seconds for one delivery */
	long notify_retry_base_ms;
	long notify_retry_cap_ms;
	long notify_give_up_after; /* seconds after the event an undelivered one is dropped */
	char *notify_exec;       /* completion hook program, NULL = none */
	long notify_exec_timeout; /* seconds before a hook is killed */
	long notify_exec_max;    /* hooks running at once */
	unsigned char *notify_secret;  /* the decoded bytes of the whsec_ secret; secret */
	size_t notify_secret_len;
	char notify_secret_problem[256];
	/* [provider NAME] sections */
	struct provider_config providers[CONFIG_MAX_PROVIDERS];
	int n_providers;
	/* [route NAME] sections */
	struct route_config *routes;
	size_t n_routes;
};

/* Reads path into cfg (defaults first). On error returns -1 with "FILE:LINE: reason" in err.
 * The file alone: what imgspool reads of a daemon's configuration. */
int config_load(struct config *cfg, const char *path, char *err, size_t errsize);
/* config_load into a new reference-counted config, or NULL with err set; for the daemon, so
 * also what its host must have ([notify] exec an executable file). */
struct config *config_new(const char *path, char *err, size_t errsize);
struct config *config_ref(struct config *cfg);
void config_unref(struct config *cfg);
/* Checks of meaning beyond syntax, for -n and before a reload is applied: each api_key_file can
 * be read, the spool directory (and the metrics file's) can be created and written. -1 with
 * "FILE:LINE: reason" in err. */
int config_verify(const struct config *cfg, char *err, size_t errsize);
/* The line key was set on in section ("provider NAME" for a provider), 0 if not in the file. */
int config_line(const struct config *cfg, const char *section, const char *key);
/* A reload: keys that cannot change in a running daemon take running's values, with a warning. */
void config_carry_fixed(struct config *next, const struct config *running);
/* The longest one call may be allowed to take: the default grace period. */
long config_longest_call(const struct config *cfg);
/* Loads each provider's key from its file or environment; never fails: a provider without a
 * usable key gets key_problem set and the daemon waits instead of failing jobs. */
void config_load_keys(struct config *cfg);
/* Whether results go to object storage / webhooks are sent. */
bool config_store_enabled(const struct config *cfg);
bool config_notify_enabled(const struct config *cfg);
const struct provider_config *config_provider(const struct config *cfg, const char *name);
/* Seconds one call for model at size (NULL = not given) may take: the [timeouts] table
 * (4K rows first, then the first matching pattern), else the provider's timeout. */
long config_call_timeout(const struct config *cfg, const struct provider_config *p,
			 const char *model, const char *size);
/* The route called name, or NULL. */
const struct route_config *config_route(const struct config *cfg, const char *name);
/* What the job parser allows under cfg's [limits]: the daemon's and imgspool submit's checks. */
struct job_limits;
void config_job_limits(const struct config *cfg, struct job_limits *limits);
/* The same for the most any configuration allows (the bounds of those keys): a job these take
 * and another daemon's limits refuse is refused by those limits alone. */
void config_job_limits_widest(struct job_limits *limits);
void config_release(struct config *cfg);

#endif
