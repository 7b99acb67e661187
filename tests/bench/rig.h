/* rig.h - what the bench rig's small programs (fastup, loadgen, curlgen) share: option numbers,
 * the clock, the open-file limit. Header-only: each program is one .c file and this. */
#ifndef RIG_H
#define RIG_H

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* s as a whole number in [min, max] (min >= 0), or -1. */
static inline long rig_number(const char *s, long min, long max)
{
	char *end;
	errno = 0;
	long v = s ? strtol(s, &end, 10) : -1;
	if (!s || errno || *end || end == s || v < min || v > max)
		return -1;
	return v;
}

static inline double rig_now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Every connection is a file descriptor: take all the kernel allows this process. */
static inline void rig_raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* The options of both clients:
 *   --port N --requests N --connections N [--key KEY] [--prompt TEXT] [--reuse]
 * Returns -1 on anything else or a missing port. */
struct rig_client {
	long port, requests, connections;
	const char *key, *prompt;
	bool reuse;
};

static inline int rig_client_options(int argc, char **argv, struct rig_client *o)
{
	*o = (struct rig_client){ .requests = 1000, .connections = 64, .key = "sk-demo",
				  .prompt = "bench 1" };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		long *num = !strcmp(a, "--port") ? &o->port :
			    !strcmp(a, "--requests") ? &o->requests :
			    !strcmp(a, "--connections") ? &o->connections : NULL;
		if (!strcmp(a, "--reuse")) {
			o->reuse = true;
			continue;
		}
		if (num && (*num = rig_number(v, 1, num == &o->port ? 65535 : 100000000)) < 0)
			return -1;
		else if (!num && !strcmp(a, "--key") && v && strlen(v) < 4096)
			o->key = v;
		else if (!num && !strcmp(a, "--prompt") && v && strlen(v) < 512)
			o->prompt = v;
		else if (!num)
			return -1;
		i++;
	}
	if (o->connections > o->requests)
		o->connections = o->requests;
	return o->port ? 0 : -1;
}

#endif
