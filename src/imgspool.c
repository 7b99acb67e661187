/* imgspool.c - the operator's and the client's command: a table of verbs (OpenSMTPD's smtpctl)
 * over the spool protocol of spool-layout.md. It never talks to the daemon: it reads the state
 * directories, moves jobs with the same one-winner rename(2) a daemon uses, and leaves requests
 * that need a daemon (cancel a running call, pause) as files in control/.
 *
 *   imgspool [-d SPOOL] [-c CONFIG] VERB [ARGS]     verbs below; imgspool(1) has everything
 *
 * The daemon's configuration (read by the daemon's own reader) is -c, else $IMGSPOOL_CONFIG. The
 * spool is -d, else the [spool] dir of -c, else $IMGSPOOL_DIR, else the [spool] dir of
 * $IMGSPOOL_CONFIG, else ./spool: the command line over the environment, and on each a spool
 * named outright over a configuration's. Errors read "imgspool: VERB: what went wrong"; exit
 * codes are enum cli_exit. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "util.h"
#include "version.h"
#include "banned.h"

static const struct verb {
	const char *name;
	int (*fn)(struct cli *c, int argc, char **argv);
	bool needs_spool;
	const char *usage;
} verbs[] = {
	{ "submit", cli_submit, true,
	  "submit [-i ID] [--wait] [--max-job-bytes N] [FILE...|-] | --jsonl FILE|-" },
	{ "status", cli_status, true, "status ID" },
	{ "show", cli_show, true, "show ID" },
	{ "wait", cli_wait, true, "wait [-t SECONDS] ID..." },
	{ "ls", cli_ls, true, "ls [-j] [STATE...]" },
	{ "stat", cli_stat, true, "stat [-j]" },
	{ "hold", cli_hold, true, "hold ID..." },
	{ "release", cli_release, true, "release ID..." },
	{ "cancel", cli_cancel, true, "cancel [-t SECONDS] ID..." },
	{ "retry", cli_retry, true, "retry [--again] ID..." },
	{ "purge", cli_purge, true, "purge --older-than DURATION [STATE...]" },
	{ "pause", cli_pause, true, "pause [PROVIDER]" },
	{ "resume", cli_resume, true, "resume [PROVIDER]" },
	{ "gallery", cli_gallery, true, "gallery [-o DIR] [-n JOBS] [-w SECONDS] [done] [failed]" },
};

static void print_usage(FILE *out)
{
	fprintf(out, "usage: imgspool [-d SPOOL] [-c CONFIG] VERB [ARGS]\n"
		     "       imgspool --help | --version\n\nverbs:\n");
	for (size_t i = 0; i < ARRAY_SIZE(verbs); i++)
		fprintf(out, "  %s\n", verbs[i].usage);
	fprintf(out, "\nCONFIG: the daemon's configuration, -c, else $IMGSPOOL_CONFIG: its spool, and\n"
		     "the job limits submit holds jobs to (without one, a daemon's defaults).\n"
		     "SPOOL: -d, else -c's [spool] dir, else $IMGSPOOL_DIR, else $IMGSPOOL_CONFIG's\n"
		     "[spool] dir, else ./spool.\n"
		     "STATE: new running deferred hold done failed.\nExit: 0 ok/done, 1 failed, 2 usage, "
		     "3 not finished, 4 no such job/spool or I/O\nerror, 5 permission denied. See "
		     "imgspool(1).\n");
}

static const char CONFIG_GIVEN[] = "given with -c";

/* The daemon's configuration, read as the daemon reads it: a file it would not start with is
 * refused, with its line, whichever verb it is given to. */
static int use_config(struct cli *c, const char *path, struct config *cfg)
{
	char err[1024];
	if (config_load(cfg, path, err, sizeof(err)) < 0)
		return cli_fail(c, CLI_USAGE, "the configuration %s does not load: %s", c->cfg_named,
				err);
	c->cfg = cfg;
	return CLI_OK;
}

/* The first spool named, in the order of the comment at the top; fills c->dir_from. */
static void choose_spool(struct cli *c)
{
	const char *config_dir = c->cfg ? c->cfg->spool_dir : NULL;
	bool config_flag = c->cfg && c->cfg_named == CONFIG_GIVEN;
	const struct { const char *dir, *from; } order[] = {
		{ c->dir, "-d" },
		{ config_flag ? config_dir : NULL, "-c" },
		{ getenv("IMGSPOOL_DIR"), "$IMGSPOOL_DIR" },
		{ config_flag ? NULL : config_dir, "$IMGSPOOL_CONFIG" },
		{ "spool", "the default" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(order); i++) {
		if (order[i].dir && *order[i].dir) {
			c->dir = order[i].dir;
			c->dir_from = order[i].from;
			return;
		}
	}
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli c = { .verb = "imgspool", .cfg_named = CONFIG_GIVEN };
	const char *config_path = NULL;
	int opt;
	/* '+': options after the verb belong to the verb. */
	while ((opt = getopt_long(argc, argv, "+d:c:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd':
			c.dir = optarg;
			break;
		case 'c':
			config_path = optarg;
			break;
		case 'h':
			print_usage(stdout);
			return CLI_OK;
		case 'V':
			printf("imgspool %s\n", IMGSPOOL_VERSION);
			return CLI_OK;
		default:
			print_usage(stderr);
			return CLI_USAGE;
		}
	}
	if (optind >= argc) {
		print_usage(stderr);
		return CLI_USAGE;
	}
	/* The environment's, when the command line names none. */
	const char *config_env = getenv("IMGSPOOL_CONFIG");
	if (!config_path && config_env && *config_env) {
		config_path = config_env;
		c.cfg_named = "named by $IMGSPOOL_CONFIG";
	}
	const char *name = argv[optind];
	for (size_t i = 0; i < ARRAY_SIZE(verbs); i++) {
		if (strcmp(name, verbs[i].name))
			continue;
		c.verb = verbs[i].name;
		int sub_argc = argc - optind;
		char **sub_argv = argv + optind;
		for (int k = 1; k < sub_argc; k++) {
			if (!strcmp(sub_argv[k], "--help") || !strcmp(sub_argv[k], "-h")) {
				printf("usage: imgspool [-d SPOOL] [-c CONFIG] %s\n", verbs[i].usage);
				return CLI_OK;
			}
			if (!strcmp(sub_argv[k], "--"))
				break;
		}
		struct config cfg;
		int rc = config_path ? use_config(&c, config_path, &cfg) : CLI_OK;
		choose_spool(&c);
		if (rc == CLI_OK && verbs[i].needs_spool)
			rc = cli_attach(&c);
		if (rc == CLI_OK) {
			optind = 0;   /* glibc: start the verb's getopt afresh */
			rc = verbs[i].fn(&c, sub_argc, sub_argv);
		}
		if (c.attached)
			spool_close(&c.sp);
		if (config_path)
			config_release(&cfg);
		return rc;
	}
	fprintf(stderr, "imgspool: %s: unknown command (imgspool --help lists them)\n", name);
	return CLI_USAGE;
}
