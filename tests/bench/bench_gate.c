/* bench_gate.c - `make bench` (BENCH_ONLY=gate): the file system calls one keyshare_acquire()
 * and keyshare_release() make with a total budget ([budget] daily) on, against a spool where
 * PROVIDERS providers each have a call in flight of another host, whose run's ledger file is there too. Run by bench_gate.py under
 * strace -c, once with 0 cycles and once with CYCLES, so the difference is per cycle.
 *
 *   bench_gate DIR PROVIDERS CYCLES [busy|full|look]
 *
 * busy: before every cycle another host starts or ends a call on another provider, so a listing
 * kept from the cycle before is always out of date (the worst case for any cache). It does so
 * with mknodat and renameat, which the gate never makes, so bench_gate.py leaves them out.
 * full: p0 has FULL_CALLS calls of the other host in flight and that concurrency, so every
 * acquire finds it full and says BUSY (what a host waiting for a place pays per try).
 * look: no acquire; a cycle is a rescan's look at every provider (keyshare_look: its pause,
 * its hold, and its directory checked against its name).
 * ended N: N ended runs of the other host in ended/, and before every acquire one more run ends
 * (its file renamed into ended/); prints the first acquire's time and the mean of the others
 * (review2 F6: thousands of ended runs, as a crash-looping daemon leaves).
 * Prints nothing but a line per run; asserts nothing. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "keyshare.h"
#include "spend.h"
#include "spool.h"
#include "util.h"

#define FULL_CALLS 64

#define ENDED_RUNS 64

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void make_file(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || close(fd) < 0) {
		perror(path);
		exit(1);
	}
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: bench_gate DIR PROVIDERS CYCLES [busy|full|look|ledger|ledger-flat]\n");
		return 2;
	}
	const char *dir = argv[1];
	long providers = strtol(argv[2], NULL, 10), cycles = strtol(argv[3], NULL, 10);
	bool busy = argc > 4 && !strcmp(argv[4], "busy"), full = argc > 4 && !strcmp(argv[4], "full");
	bool look = argc > 4 && !strcmp(argv[4], "look");
	/* ledger: 64 ended runs of the other host, in ended/ (ledger-flat: in the month's directory,
	 * as without ended/), and the month's directory changes before every acquire (as it does
	 * whenever a host writes its run's file). */
	bool flat = argc > 4 && !strcmp(argv[4], "ledger-flat");
	bool ending = argc > 5 && !strcmp(argv[4], "ended");
	long ended_runs = ending ? strtol(argv[5], NULL, 10) : ENDED_RUNS;
	bool ledger_busy = flat || ending || (argc > 4 && !strcmp(argv[4], "ledger"));
	struct spool sp;
	if (spool_open(&sp, dir, "benchA") < 0)
		return 1;
	struct keyshare *ks = keyshare_new(&sp);
	/* Every provider's directory, with one call of another host in flight. */
	for (long i = 0; i < providers; i++) {
		char *path = xasprintf("%s/providers/p%ld", dir, i);
		mkdir(path, 0777);
		free(path);
		path = xasprintf("%s/providers/p%ld/calls", dir, i);
		mkdir(path, 0777);
		free(path);
		path = xasprintf("%s/providers/p%ld/calls/benchB~1-%ld~10000", dir, i, i);
		make_file(path);
		free(path);
	}
	for (long j = 0; full && j < FULL_CALLS; j++) {
		char *path = xasprintf("%s/providers/p0/calls/benchB~3-%ld~10000", dir, j);
		make_file(path);
		free(path);
	}
	/* And what that host spent: its run's ledger file, read by every acquire under a budget. */
	long month = keyshare_month(wall_ms()), day = spend_day(wall_ms());
	char *months = xasprintf("%s/ledger/%04ld-%02ld", dir, month / 12, month % 12 + 1);
	char *ledger = xasprintf("%s/benchB.0123456789abcdef.json", months);
	mkdir(months, 0777);
	FILE *f = fopen(ledger, "w");
	if (!f || fprintf(f, "{\"host\": \"benchB\", \"run\": \"0123456789abcdef\", \"day\": %ld, "
			  "\"month\": %ld, \"providers\": {}}\n", day, month) < 0 || fclose(f) != 0) {
		perror(ledger);
		return 1;
	}
	/* Nothing has changed there for a minute (a listing or a ledger kept may be trusted). */
	struct timespec old[2] = { { .tv_sec = time(NULL) - 60 }, { .tv_sec = time(NULL) - 60 } };
	for (long i = -5; i < providers; i++) {
		char *path = i == -5 ? xasprintf("%s/ended", months) :
			     i == -4 ? xasprintf("%s/ledger", dir) :
			     i == -3 ? xstrdup(months) :
			     i == -2 ? xstrdup(ledger) :
			     i == -1 ? xasprintf("%s/providers", dir) :
				       xasprintf("%s/providers/p%ld/calls", dir, i);
		if (utimensat(AT_FDCWD, path, old, 0) < 0) {
			perror(path);
			return 1;
		}
		free(path);
	}
	for (long r = 0; ledger_busy && r < ended_runs + (ending ? cycles : 0); r++) {
		char *ended = xasprintf("%s/benchB.%016lx.json", months, r + 1);
		char *moved = xasprintf("%s/ended/benchB.%016lx.json", months, r + 1);
		f = fopen(ended, "w");
		if (!f || fprintf(f, "{\"host\": \"benchB\", \"run\": \"%016lx\", \"day\": %ld, "
				  "\"month\": %ld, \"providers\": {}}\n", r + 1, day, month) < 0 || fclose(f) ||
		    utimensat(AT_FDCWD, ended, (struct timespec[2]){ { .tv_sec = time(NULL) - 60 },
							{ .tv_sec = time(NULL) - 60 } }, 0) < 0 ||
		    (!flat && r < ended_runs && rename(ended, moved) < 0)) {
			perror(ended);
			return 1;
		}
		free(moved);
		free(ended);
	}
	char *tick = xasprintf("%s/.tick", months), *tock = xasprintf("%s/.tock", months);
	if (ledger_busy)
		make_file(tick);
	struct timespec quiet[2] = { { .tv_sec = time(NULL) - 60 }, { .tv_sec = time(NULL) - 60 } };
	char *ended_dir = xasprintf("%s/ended", months);
	if (utimensat(AT_FDCWD, months, quiet, 0) < 0 || utimensat(AT_FDCWD, ended_dir, quiet, 0) < 0) {
		perror(months);
		return 1;
	}
	free(ended_dir);
	free(ledger);
	free(months);
	struct keyshare_limits l = { .concurrency = full ? FULL_CALLS + 1 : 1000, .window_ms = 60000,
				     .lease_ms = 60000, .total_daily = keyshare_micros(1e6) };
	struct keyshare_ticket t;
	/* One cycle before the measured ones: directories opened, caches (if any) filled. */
	int64_t t0 = mono_ns();
	struct keyshare_verdict v = keyshare_acquire(ks, "p0", &l, 10000, &t);
	int64_t first_ns = mono_ns() - t0, rest_ns = 0;
	keyshare_release(ks, &t);
	char *months_again = xasprintf("%s/ledger/%04ld-%02ld", dir, month / 12, month % 12 + 1);
	for (long c = 0; c < cycles && look; c++) {
		for (long i = 0; i < providers; i++) {
			char name[32];
			struct keyshare_view view;
			xsnprintf(name, sizeof(name), "p%ld", i);
			keyshare_look(ks, name, &view);
		}
	}
	for (long c = 0; c < cycles && !look; c++) {
		if (busy && providers > 1) {
			/* Another host's call on another provider starts (even cycles) or ends. */
			long other = 1 + c / 2 % (providers - 1);
			char *path = xasprintf("%s/providers/p%ld/calls/benchB~2-%ld~10000", dir, other,
					       c / 2);
			char *gone = xasprintf("%s/providers/p%ld/gone", dir, other);
			if (c % 2 == 0 ? mknodat(AT_FDCWD, path, S_IFREG | 0644, 0) :
					 renameat(AT_FDCWD, path, AT_FDCWD, gone)) {
				perror(path);
				return 1;
			}
			free(path);
			free(gone);
		}
		if (ledger_busy && (c % 2 ? renameat(AT_FDCWD, tock, AT_FDCWD, tick) :
					    renameat(AT_FDCWD, tick, AT_FDCWD, tock))) {
			perror(tick);
			return 1;
		}
		if (ending) {   /* one more run ends */
			char *from = xasprintf("%s/benchB.%016lx.json", months_again, ended_runs + c + 1);
			char *to = xasprintf("%s/ended/benchB.%016lx.json", months_again,
					     ended_runs + c + 1);
			if (rename(from, to) < 0) {
				perror(from);
				return 1;
			}
			free(from);
			free(to);
		}
		t0 = mono_ns();
		v = keyshare_acquire(ks, "p0", &l, 10000, &t);
		rest_ns += mono_ns() - t0;
		if (full && v.block == PROVIDER_BUSY)
			continue;
		if (v.block != PROVIDER_FREE || full) {
			fprintf(stderr, "bench_gate: the gate said no (%s)\n", v.which ? v.which : "?");
			return 1;
		}
		keyshare_release(ks, &t);
	}
	if (ending)
		printf("bench_gate: %ld ended runs: first acquire %.1f ms; after a run ends, %.2f ms "
		       "(mean of %ld)\n", ended_runs, first_ns / 1e6,
		       cycles ? rest_ns / 1e6 / cycles : 0.0, cycles);
	free(months_again);
	printf("bench_gate: %ld providers, %ld cycles%s\n", providers, cycles,
	       busy ? ", busy" : full ? ", full" : look ? ", look" : flat ? ", ledger-flat" :
	       ledger_busy ? ", ledger" : "");
	free(tick);
	free(tock);
	keyshare_free(ks);
	spool_close(&sp);
	return 0;
}
