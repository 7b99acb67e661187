/* main.c - imgspoold: options, configuration, the spool, signals, and the loop.
 *
 *   imgspoold -c FILE      run in the foreground, logging to stderr
 *   imgspoold -n -c FILE   check FILE and exit: 0 if good, 1 with "FILE:LINE: reason" if not
 *
 * Start-up failures are fatal (exit 1). After start-up nothing a job does ends the process;
 * SIGTERM/SIGINT drain and exit 0, SIGHUP reloads the API keys. */
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config.h"
#include "dispatch.h"
#include "log.h"
#include "secret.h"
#include "loop.h"
#include "spool.h"
#include "util.h"
#include "watch.h"
#include "banned.h"

struct daemon {
	struct config cfg;
	struct spool spool;
	struct loop *loop;
	struct dispatch *dispatch;
	struct watch *watch;
	int sigfd;
};

static void usage(void)
{
	fprintf(stderr, "usage: imgspoold [-n] [-v] -c FILE\n"
			"  -c FILE  configuration (see etc/imgspool.ini)\n"
			"  -n       check the configuration and exit\n"
			"  -v       log debug lines too\n");
	exit(2);
}

static void on_signal(struct loop *loop, int fd, uint32_t events, void *arg)
{
	(void)events;
	struct daemon *dm = arg;
	struct signalfd_siginfo si;
	while (read(fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGTERM:
		case SIGINT:
			dispatch_drain(dm->dispatch);
			break;
		case SIGHUP:
			log_info("SIGHUP: reloading API keys");
			config_load_keys(&dm->cfg);
			dispatch_keys_changed(dm->dispatch);
			break;
		}
	}
	(void)loop;
}

static int64_t on_rescan(struct loop *loop, void *arg)
{
	(void)loop;
	struct daemon *dm = arg;
	dispatch_scan(dm->dispatch);
	return dm->cfg.poll_interval * 1000;
}

static void on_file(void *arg, const char *name)
{
	struct daemon *dm = arg;
	dispatch_hint(dm->dispatch, name);
}

static void before_sleep(struct loop *loop, void *arg)
{
	struct daemon *dm = arg;
	dispatch_pump(dm->dispatch);
	if (dispatch_drained(dm->dispatch))
		loop_stop(loop);
}

int main(int argc, char **argv)
{
	const char *config_path = NULL;
	bool check_only = false;
	int opt;
	log_init();
	while ((opt = getopt(argc, argv, "c:nvh")) != -1) {
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
		default:
			usage();
		}
	}
	if (!config_path || optind != argc)
		usage();

	static struct daemon dm;
	char err[1024];
	if (config_load(&dm.cfg, config_path, err, sizeof(err)) < 0) {
		fprintf(stderr, "imgspoold: %s\n", err);
		return 1;
	}
	if (check_only) {
		printf("%s: ok\n", config_path);
		config_release(&dm.cfg);
		return 0;
	}

	/* Signals are read from a signalfd on the loop, never handled asynchronously. */
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	dm.sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (dm.sigfd < 0)
		fatal("cannot create a signalfd: %s", strerror(errno));

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0)
		fatal("cannot initialise libcurl");
	json_object_seed(0);   /* seeds jansson's hash once, before any helper thread uses it */
	umask(dm.cfg.umask);
	config_load_keys(&dm.cfg);
	if (spool_open(&dm.spool, dm.cfg.spool_dir, dm.cfg.host_id) < 0)
		fatal("cannot open the spool '%s'", dm.cfg.spool_dir);

	dm.loop = loop_new();
	if (loop_add_fd(dm.loop, dm.sigfd, EPOLLIN, on_signal, &dm) < 0)
		fatal("cannot watch signals");
	dm.dispatch = dispatch_new(dm.loop, &dm.cfg, &dm.spool);
	dispatch_recover(dm.dispatch);
	char *new_path = xasprintf("%s/new", dm.cfg.spool_dir);
	dm.watch = watch_new(dm.loop, dm.spool.fd[SPOOL_NEW], new_path, on_file, &dm);
	free(new_path);
	dispatch_scan(dm.dispatch);
	loop_add_timer(dm.loop, dm.cfg.poll_interval * 1000, on_rescan, &dm);
	loop_set_before_sleep(dm.loop, before_sleep, &dm);

	log_info("ready: spool '%s', host id '%s', concurrency %ld, rescan every %lds",
		 dm.cfg.spool_dir, dm.cfg.host_id, dm.cfg.concurrency, dm.cfg.poll_interval);
	int rc = loop_run(dm.loop);

	watch_free(dm.watch);
	dispatch_free(dm.dispatch);
	loop_free(dm.loop);
	spool_close(&dm.spool);
	close(dm.sigfd);
	config_release(&dm.cfg);
	secret_clear();
	curl_global_cleanup();
	log_info("stopped");
	return rc < 0 ? 1 : 0;
}
