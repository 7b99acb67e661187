/* main.c - imgspoold: options, configuration, the spool, signals, and the loop.
 *
 *   imgspoold -c FILE      run in the foreground, logging to stderr
 *   imgspoold -n -c FILE   check FILE and exit: 0 if good, 1 with "FILE:LINE: reason" if not
 *
 * Start-up failures are fatal (exit 1). After start-up nothing a job does ends the process;
 * SIGTERM/SIGINT drain and exit 0 (a second one cuts the calls left; from the first, the process
 * ends within grace_period + 6 s, from the second within 6 s, whatever the loop is doing, and a
 * loop slow to reach the cut still gets the cut's 6 s from there: sigwatch.c, exitwatch.h),
 * SIGHUP reloads the whole configuration (a file that does not load leaves the running one in
 * place).
 *
 * Under systemd (Type=notify) it says READY=1 once recovery and the first scan are done, keeps
 * STATUS= current, pings WATCHDOG=1 only from a full turn of the loop (so a wedged loop is
 * restarted), and from the first stop signal on says STOPPING=1 and how long it may still take
 * (EXTEND_TIMEOUT_USEC), from the signal thread at once, so even a loop stuck on a stalled spool
 * is never killed by systemd within its bound. */
#include <curl/curl.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "dispatch.h"
#include "exitwatch.h"
#include "hook.h"
#include "hostlock.h"
#include "http.h"
#include "log.h"
#include "secret.h"
#include "sigwatch.h"
#include "slots.h"
#include "loop.h"
#include "metrics.h"
#include "notify.h"
#include "spool.h"
#include "util.h"
#include "version.h"
#include "watch.h"
#include "banned.h"

struct daemon {
	const char *config_path;
	struct config *cfg;      /* the running configuration; replaced whole by a reload */
	struct spool spool;
	struct loop *loop;
	struct dispatch *dispatch;
	struct watch *watch;
	struct notify *notify;
	struct watch *control_watch;  /* control/: an operator's pause, hold and cancel */
	int sigfd;
	int stopfd;              /* SIGTERM and SIGINT taken (sigwatch.c); never closed */
	bool tick_due;           /* the service timer fired: the next full turn reports */
	char status[512];        /* last STATUS= sent */
	int64_t waiting_logged;  /* mono_ms of the last "waiting for" line while draining */
	bool metrics_failed;     /* said once */
};

#define SERVICE_TICK_MS 2000   /* STATUS= and, while stopping, EXTEND_TIMEOUT_USEC */
/* systemd waits this much beyond exitwatch's deadline: the last log lines exitwatch flushes
 * (2 s at most) and the service manager's own reaping. contrib/systemd's TimeoutStopSec is the
 * default grace period's bound plus this. */
#define STOP_NOTIFY_MARGIN_MS 5000

/* Told at every move of the exit's deadline, from the thread that moved it (the signal thread
 * while the loop may be stuck): kept until the process ends, never freed. */
static struct notify *stop_notify;

static void tell_stopping(int64_t left_ms)
{
	notify_stopping(stop_notify, left_ms + STOP_NOTIFY_MARGIN_MS);
}

static _Noreturn void usage(FILE *out, int code)
{
	fprintf(out, "usage: imgspoold [-n] [-v] [-c FILE]\n"
		     "       imgspoold --help | --version\n"
		     "  -c FILE  configuration (see etc/imgspool.ini); else $IMGSPOOL_CONFIG, the one\n"
		     "           imgspool(1) reads too\n"
		     "  -n       check the configuration and exit\n"
		     "  -v       log debug lines too\n");
	exit(code);
}

/* Loads the whole file again; the new configuration replaces the running one only if it loads
 * and passes the checks of -n. Calls in flight are not touched. */
static void reload(struct daemon *dm)
{
	char err[1024];
	notify_send(dm->notify, "RELOADING=1\nSTATUS=reloading %s", dm->config_path);
	log_info("SIGHUP: reloading '%s'", dm->config_path);
	stop_point("main:reload");   /* a test sends SIGTERM while a reload is under way */
	struct config *next = config_new(dm->config_path, err, sizeof(err));
	if (next && config_verify(next, err, sizeof(err)) < 0) {
		config_unref(next);
		next = NULL;
	}
	if (!next) {
		log_msg(LOG_ERROR, "reload failed, the running configuration goes on: %s", err);
	} else {
		config_carry_fixed(next, dm->cfg);
		config_load_keys(next);
		umask(next->umask);
		dispatch_reconfigure(dm->dispatch, next);
		config_unref(dm->cfg);
		dm->cfg = next;
		sigwatch_set_grace_ms(next->grace_period * 1000);
		log_info("reloaded '%s': %d provider(s), concurrency %ld, grace period %lds",
			 dm->config_path, next->n_providers, next->concurrency, next->grace_period);
	}
	dm->status[0] = '\0';   /* send STATUS= again with READY=1 */
	notify_send(dm->notify, "READY=1");
}

static void on_signal(struct loop *loop, int fd, uint32_t events, void *arg)
{
	(void)events;
	struct daemon *dm = arg;
	struct signalfd_siginfo si;
	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGHUP:
			reload(dm);
			break;
		case SIGUSR1:   /* IMGSPOOLD_LOG_MARK: every line made before it is out once it is */
			log_info("log mark");
			break;
		}
	}
	(void)loop;
}

/* SIGTERM and SIGINT, counted by sigwatch's thread: the first drains, a second cuts. */
static void on_stop_signal(struct loop *loop, int fd, uint32_t events, void *arg)
{
	(void)loop;
	(void)events;
	struct daemon *dm = arg;
	uint64_t taken;
	if (read(fd, &taken, sizeof(taken)) != sizeof(taken))
		return;
	for (; taken; taken--) {
		if (dispatch_draining(dm->dispatch)) {
			dispatch_cut(dm->dispatch);
			continue;
		}
		/* The grace period counts from the signal, as the bound the signal thread armed
		 * does. A reload read just before this signal may have lengthened it after that
		 * thread armed: the bound is put off to match the grace period applied. */
		int64_t since, armed_grace_ms;
		if (!sigwatch_first(&since, &armed_grace_ms))
			since = mono_ms();
		dispatch_drain(dm->dispatch, since);
		char after[160];
		xsnprintf(after, sizeof(after), "the stop signal (the grace period, %ld s as reloaded, "
			  "then %d s)", dm->cfg->grace_period, EXITWATCH_CUT_MS / 1000);
		sigwatch_lengthen(dm->cfg->grace_period * 1000, exitwatch_arm_at_least, after);
		log_info("the process ends at most %lld s after the signal, %lld s if its loop is slow "
			 "to reach the cut (imgspoold(8) EXIT STATUS)",
			 (long long)(dm->cfg->grace_period + EXITWATCH_CUT_MS / 1000),
			 (long long)(dm->cfg->grace_period + 2 * EXITWATCH_CUT_MS / 1000));
		dm->waiting_logged = mono_ms();
		dm->tick_due = true;   /* STATUS= at the end of this turn */
	}
}

static void on_file(void *arg, const char *name);
static void on_control(void *arg, const char *name);

/* Watches state directory d, new/ (arrivals) or control/ (any change, removals too), in place
 * of its watch so far: at start-up, and again when an operator replaced the directory. */
static void watch_dir(struct daemon *dm, enum spool_dir d)
{
	bool control = d == SPOOL_CONTROL;
	struct watch **slot = control ? &dm->control_watch : &dm->watch;
	char *path = xasprintf("%s/%s", dm->cfg->spool_dir, spool_dir_name(d));
	watch_free(*slot);
	*slot = (control ? watch_changes : watch_new)(dm->loop, dm->spool.fd[d], path,
						      control ? on_control : on_file, dm);
	free(path);
}

/* After each rescan, the state directories are checked against their names (spool_recheck_dirs:
 * a stat each, never on a job's path; after the rescan, which a look at other hosts' pauses
 * must not wait for). One an operator replaced is used at once: new/ and control/ watched
 * again, and everything listed again. */
static int64_t on_rescan(struct loop *loop, void *arg)
{
	(void)loop;
	struct daemon *dm = arg;
	dispatch_scan(dm->dispatch);
	unsigned swapped = spool_recheck_dirs(&dm->spool);
	if (swapped & SPOOL_BIT(SPOOL_NEW))
		watch_dir(dm, SPOOL_NEW);
	if (swapped & SPOOL_BIT(SPOOL_CONTROL))
		watch_dir(dm, SPOOL_CONTROL);
	if (swapped)
		dispatch_scan(dm->dispatch);
	return dm->cfg->poll_interval * 1000;
}

/* Jobs per state and the providers' gauges from what dispatch knows (never a listing of the
 * spool: with a large backlog that would cost a full listing per interval), then the file. */
static void write_metrics(struct daemon *dm)
{
	const char *path = dm->cfg->metrics_textfile;
	if (!path)
		return;
	struct dispatch_counts c;
	dispatch_counts(dm->dispatch, &c);
	int64_t now_ns = wall_ms() * 1000000, oldest_ns = c.oldest_pending_ns;
	if (!oldest_ns || oldest_ns > now_ns)
		oldest_ns = now_ns;
	metrics_begin();
	metrics_jobs(c.new_jobs, c.running, c.deferred, (double)(now_ns - oldest_ns) / 1e9);
	dispatch_report_metrics(dm->dispatch);
	if (metrics_write(path) == 0)
		dm->metrics_failed = false;
	else if (!dm->metrics_failed) {
		log_warn("cannot write the metrics file '%s': %s (said once until it works)", path,
			 strerror(errno));
		dm->metrics_failed = true;
	}
}

static int64_t on_metrics(struct loop *loop, void *arg)
{
	(void)loop;
	struct daemon *dm = arg;
	write_metrics(dm);
	return dm->cfg->metrics_interval * 1000;
}

/* The host lock is heartbeated like a job's lease: several times per lease_timeout. A lock that
 * another daemon holds now is a broken invariant: that daemon has adopted this one's jobs, so
 * this one stops at once (a drain would still move them) and leaves the spool to it. */
static int64_t on_lock_beat(struct loop *loop, void *arg)
{
	(void)loop;
	struct daemon *dm = arg;
	char err[1024];
	if (hostlock_heartbeat(&dm->spool, err, sizeof(err)) < 0) {
		notify_send(dm->notify, "STATUS=stopped: %s", err);
		log_msg(LOG_ERROR, "%s", err);
		log_flush_all();
		/* _exit, not exit: no atexit handler (libcrypto's cleanup, the sanitizers') may run
		 * while helper threads still rename our jobs' files. The new holder has our host id,
		 * so fencing cannot tell their renames from its own: every thread stops here. */
		_exit(1);
	}
	return dm->cfg->lease_timeout * 1000 / 4;
}

/* The service timer: it only asks; the report is made at the end of the next full turn. */
static int64_t on_tick(struct loop *loop, void *arg)
{
	(void)loop;
	struct daemon *dm = arg;
	dm->tick_due = true;
	int64_t every = SERVICE_TICK_MS, watchdog = notify_watchdog_ms(dm->notify);
	if (watchdog && watchdog / 2 < every)
		every = watchdog / 2;
	return every;
}

/* At the end of a full turn of the loop: the watchdog ping, STATUS= when it changed, and while
 * stopping how long systemd must still wait. */
static void report(struct daemon *dm)
{
	char status[512];
	int64_t left = exitwatch_left_ms();
	dm->tick_due = false;
	dispatch_status(dm->dispatch, status, sizeof(status));
	if (dispatch_draining(dm->dispatch)) {
		/* Till exitwatch's deadline, which the signal thread told systemd at once. */
		notify_send(dm->notify, "STOPPING=1\nSTATUS=stopping: %s\nEXTEND_TIMEOUT_USEC=%" PRId64,
			    status, ((left > 0 ? left : 0) + STOP_NOTIFY_MARGIN_MS) * 1000);
		if (mono_ms() - dm->waiting_logged >= 60000) {
			dm->waiting_logged = mono_ms();
			dispatch_log_waiting(dm->dispatch);
		}
	} else if (strcmp(status, dm->status)) {
		notify_send(dm->notify, "STATUS=%s", status);
		xsnprintf(dm->status, sizeof(dm->status), "%s", status);
	}
	if (notify_watchdog_ms(dm->notify))
		notify_send(dm->notify, "WATCHDOG=1");
}

static void on_file(void *arg, const char *name)
{
	struct daemon *dm = arg;
	dispatch_hint(dm->dispatch, name);
}

static void on_control(void *arg, const char *name)
{
	(void)name;
	struct daemon *dm = arg;
	dispatch_control(dm->dispatch);
}

static void before_sleep(struct loop *loop, void *arg)
{
	struct daemon *dm = arg;
	dispatch_pump(dm->dispatch);
	if (dm->tick_due)
		report(dm);
	if (dispatch_drained(dm->dispatch))
		loop_stop(loop);
}

/* Every call in flight holds a socket (and its reference images, slots.c): take the hard limit
 * of open files (systemd's soft default is 1024), and say so when even that leaves too few. The
 * hooks get the limit as it was. */
static void raise_open_files(long concurrency)
{
	struct rlimit rl;
	hooks_note_open_files();
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	rlim_t need = (rlim_t)slots_open_files_needed(concurrency);
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
		log_warn("concurrency %ld needs %llu open files (a socket a call, one call's reference "
			 "images and a reserve), more than the limit of %llu: raise it (LimitNOFILE= in the "
			 "unit, ulimit -n)", concurrency,
			 (unsigned long long)need, (unsigned long long)rl.rlim_cur);
}

/* running/ at the exit, on a thread of its own while the rest of the exit goes on: first the
 * marks of the jobs left there (a restart may start as soon as the lock is gone), then the host
 * lock's removal, unless a helper may still write the spool (the lock then stays, as a crash
 * leaves it: no second daemon meets that write). */
struct exit_running {
	struct left_marks *marks;   /* owned till made */
	size_t n_marks;
	struct spool *spool;
	bool remove_lock;
	atomic_int done;            /* EXIT_MARKED, then EXIT_UNLOCKED */
};
enum { EXIT_MARKED = 1, EXIT_UNLOCKED = 2 };

static void *exit_running_main(void *arg)
{
	struct exit_running *er = arg;
	dispatch_make_marks(er->marks);
	atomic_store(&er->done, EXIT_MARKED);
	if (er->remove_lock) {
		hostlock_release(er->spool);
		atomic_store(&er->done, EXIT_UNLOCKED);
	}
	return NULL;
}

/* Whether running/'s part of the exit ended by the exit's deadline; says what did not (a
 * thread left stuck may still use running/'s descriptor). */
static bool exit_running_wait(struct exit_running *er, pthread_t thread, bool threaded)
{
	if (threaded)
		join_within(thread, exit_wait_ms(EXITWATCH_WAITS_MS));
	int done = atomic_load(&er->done);
	if (done < EXIT_MARKED)
		log_warn("cannot mark %zu job(s) left in running/ within %d ms (a stalled disk?): "
			 "exiting without; their restart may count a death for them", er->n_marks,
			 EXITWATCH_WAITS_MS);
	else if (er->remove_lock && done < EXIT_UNLOCKED)
		log_warn("cannot remove the host lock 'running/.host.%s' within %d ms (a stalled "
			 "disk?): leaving it, as a crash would; the restart replaces it once this "
			 "process is gone", er->spool->host_id, EXITWATCH_WAITS_MS);
	return done >= (er->remove_lock ? EXIT_UNLOCKED : EXIT_MARKED);
}

int main(int argc, char **argv)
{
	const char *config_path = NULL;
	bool check_only = false;
	int opt;
	log_init();
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	while ((opt = getopt_long(argc, argv, "c:nvhV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'n':
			check_only = true;
			break;
		case 'v':
			log_set_level(LOG_DEBUG);
			break;
		case 'h':
			usage(stdout, 0);
		case 'V':
			printf("imgspoold %s\n", IMGSPOOL_VERSION);
			return 0;
		default:
			usage(stderr, 2);
		}
	}
	/* The clients' variable: one export names the configuration for imgspool and imgspoold. */
	const char *config_env = getenv("IMGSPOOL_CONFIG");
	bool config_from_env = !config_path && config_env && *config_env;
	if (config_from_env)
		config_path = config_env;
	if (optind != argc)
		usage(stderr, 2);
	if (!config_path) {
		fprintf(stderr, "imgspoold: no configuration: give -c FILE or set IMGSPOOL_CONFIG\n");
		usage(stderr, 2);
	}

	static struct daemon dm;
	char err[1024];
	if (config_from_env)
		log_info("configuration '%s' from $IMGSPOOL_CONFIG (no -c given)", config_path);
	dm.config_path = config_path;
	dm.cfg = config_new(config_path, err, sizeof(err));
	if (dm.cfg && check_only && config_verify(dm.cfg, err, sizeof(err)) < 0) {
		config_unref(dm.cfg);
		dm.cfg = NULL;
	}
	if (!dm.cfg) {
		fprintf(stderr, "imgspoold: %s\n", err);
		return 1;
	}
	if (check_only) {
		printf("%s: ok\n", config_path);
		config_unref(dm.cfg);
		return 0;
	}
	secret_keep_out_of_dumps();
	/* From here no thread of the daemon's waits for a write to stderr: a full pipe stops no
	 * loop (log.c). */
	log_start_writer();
	dm.notify = notify_new();
	stop_notify = dm.notify;
	/* From the first stop signal on, systemd hears STOPPING=1 and how long the exit may still
	 * take at every move of its bound, whatever the loop is doing. */
	exitwatch_on_arm(tell_stopping);
	raise_open_files(dm.cfg->concurrency);

	/* Signals are never handled asynchronously. SIGTERM and SIGINT are taken by a thread of
	 * their own, which bounds the exit from the signal even when the loop is stuck on a
	 * stalled spool, and counted for the loop (sigwatch.c); the others are read from a
	 * signalfd on the loop. */
	dm.stopfd = sigwatch_start(dm.cfg->grace_period * 1000, exitwatch_arm_after);
	if (dm.stopfd < 0)
		fatal("cannot start the signal thread: %s", strerror(errno));
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGHUP);
	/* A test hook (nothing else reads it): SIGUSR1 logs "log mark", and log.c writes lines in
	 * the order they were made, so a test that sees the mark knows no line made before it is
	 * still to come. Without it SIGUSR1 does what it always did. */
	if (getenv("IMGSPOOLD_LOG_MARK"))
		sigaddset(&mask, SIGUSR1);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	dm.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (dm.sigfd < 0)
		fatal("cannot create a signalfd: %s", strerror(errno));

	stop_points_fix();
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		fatal("cannot initialise libcurl");
	json_object_seed(0);   /* seeds jansson's hash once, before any helper thread uses it */
	umask(dm.cfg->umask);
	config_load_keys(dm.cfg);
	secret_env_scrub();   /* the keys are kept: a reload uses them (imgspool.ini(5)) */
	if (spool_open(&dm.spool, dm.cfg->spool_dir, dm.cfg->host_id) < 0)
		fatal("cannot open the spool '%s'", dm.cfg->spool_dir);
	dm.spool.sync_mode = dm.cfg->sync_mode;
	if (dm.spool.journal_kind == SPOOL_JOURNAL_NO_BARRIER)
		log_warn("the spool's ext4 is mounted nobarrier: no sync reaches the disk, so a "
			 "power cut can lose jobs reported done, whatever [spool] sync says");
	else if (sync_names_in_order(dm.spool.sync_mode, dm.spool.fs_type,
				     dm.spool.journal_kind != SPOOL_JOURNAL_NONE))
		log_info("the spool is on ext4 with a journal: a batch's renames are left to it to "
			 "keep in order, fewer syncs per batch (sync = auto)");
	/* Before recovery: a second daemon with our host id would adopt the first one's jobs. */
	char lock_err[1024];
	if (hostlock_acquire(&dm.spool, dm.cfg->lease_timeout * 1000, lock_err, sizeof(lock_err)) < 0)
		fatal("%s", lock_err);

	dm.loop = loop_new();
	if (loop_add_fd(dm.loop, dm.sigfd, EPOLLIN, on_signal, &dm) < 0 ||
	    loop_add_fd(dm.loop, dm.stopfd, EPOLLIN, on_stop_signal, &dm) < 0)
		fatal("cannot watch signals");
	dm.dispatch = dispatch_new(dm.loop, dm.cfg, &dm.spool);
	dispatch_recover(dm.dispatch);
	watch_dir(&dm, SPOOL_NEW);
	watch_dir(&dm, SPOOL_CONTROL);
	dispatch_scan(dm.dispatch);
	loop_add_timer(dm.loop, dm.cfg->poll_interval * 1000, on_rescan, &dm);
	loop_add_timer(dm.loop, on_tick(dm.loop, &dm), on_tick, &dm);
	loop_add_timer(dm.loop, 0, on_metrics, &dm);
	loop_add_timer(dm.loop, on_lock_beat(dm.loop, &dm), on_lock_beat, &dm);
	loop_set_before_sleep(dm.loop, before_sleep, &dm);

	log_info("ready: spool '%s', host id '%s', concurrency %ld, rescan every %lds",
		 dm.cfg->spool_dir, dm.cfg->host_id, dm.cfg->concurrency, dm.cfg->poll_interval);
	dispatch_status(dm.dispatch, dm.status, sizeof(dm.status));
	notify_send(dm.notify, "READY=1\nSTATUS=%s\nMAINPID=%ld", dm.status, (long)getpid());
	dm.tick_due = false;
	int rc = loop_run(dm.loop);

	write_metrics(&dm);   /* the last counts */
	watch_free(dm.watch);
	watch_free(dm.control_watch);
	struct exit_running er = { .spool = &dm.spool };
	er.marks = dispatch_leave(dm.dispatch, &er.n_marks, &er.remove_lock);
	/* From here the exit's waits share one deadline: running/'s part on a thread of its own,
	 * the helpers and libcurl's thread (dispatch_free) meanwhile, then the log. */
	exit_deadline_set(EXITWATCH_WAITS_MS);
	pthread_t thread = { 0 };
	bool threaded = pthread_create(&thread, NULL, exit_running_main, &er) == 0;
	if (!threaded)
		exit_running_main(&er);   /* no thread (no memory): on this one */
	bool freed = dispatch_free(dm.dispatch);
	bool running_done = exit_running_wait(&er, thread, threaded);
	if (!freed || !running_done) {
		/* An I/O helper, or running/'s part, is stuck in a write: it may use anything of the
		 * daemon's, the spool's descriptors included. The spool is left as a crash leaves it,
		 * its host lock too (replaced by the restart once this process is gone), and the
		 * restart finishes what the helper was doing (a publication is crash-safe). */
		log_info(!freed ? "stopped, a thread left stuck in a write"
			 : er.done >= EXIT_MARKED ? "stopped, its host lock left"
			 : "stopped, the marks of the jobs left in running/ not all made");
		log_flush_all();
		_exit(rc < 0 ? 1 : 0);
	}
	/* libcurl's thread may be left stuck in a write (http_free): it may still use the loop. */
	bool left = http_left_running();
	if (!left)
		loop_free(dm.loop);
	spool_close(&dm.spool);
	close(dm.sigfd);
	config_unref(dm.cfg);
	metrics_reset();
	secret_clear();
	if (left) {
		/* No cleanup of libcurl's or libcrypto's under that thread: _exit, not exit. */
		log_info("stopped");
		log_flush_all();
		_exit(rc < 0 ? 1 : 0);
	}
	curl_global_cleanup();
	log_info("stopped");
	return rc < 0 ? 1 : 0;
}
