/* hook.c - the completion hook: vfork and execve without a shell, watched through a pidfd and a
 * pipe on the loop, killed with its whole process group at [notify] exec_timeout.
 *
 * The child gets an empty signal mask and default dispositions (the daemon blocks SIGTERM and
 * friends for its signalfd and ignores SIGPIPE), /dev/null as stdin, the pipe as stdout and
 * stderr, no other descriptor, an environment of PATH and LANG only, and the limit of open files
 * the daemon was started with (it raises its own soft limit for its calls in flight; a hook
 * using select(2) or a default-sized table must not see that). posix_spawn cannot set a limit,
 * so the child is set up by hand between vfork and execve, with system calls only. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "hook.h"
#include "log.h"
#include "loop.h"
#include "util.h"
#include "banned.h"

#define HOOK_OUTPUT_MAX (64 << 10)   /* bytes of a hook's output logged; the rest is dropped */

struct hook_run {
	struct hooks *h;
	struct hook_run *next;
	char id[160];
	pid_t pid;
	int pidfd;
	int out;                 /* read end of the output pipe, -1 once closed */
	uint64_t timer;
	bool killed;
	size_t logged;
	char line[512];
	size_t line_len;
	hook_done_fn *fn;
	void *arg;
};

struct hooks {
	struct loop *loop;
	struct config *const *cfgp;
	struct hook_run *runs;
	int running;
};

/* The limit of open files the daemon was started with, for its hooks. */
static struct rlimit start_nofile;
static bool start_nofile_known;

void hooks_note_open_files(void)
{
	start_nofile_known = getrlimit(RLIMIT_NOFILE, &start_nofile) == 0;
}

struct hooks *hooks_new(struct loop *loop, struct config *const *cfgp)
{
	struct hooks *h = xcalloc(1, sizeof(*h));
	h->loop = loop;
	h->cfgp = cfgp;
	return h;
}

int hooks_running(const struct hooks *h)
{
	return h->running;
}

bool hooks_room(const struct hooks *h)
{
	return h->running < (*h->cfgp)->notify_exec_max;
}

static void flush_line(struct hook_run *r)
{
	if (!r->line_len)
		return;
	if (r->logged < HOOK_OUTPUT_MAX)
		log_job(LOG_INFO, r->id, "hook: %.*s", (int)r->line_len, r->line);
	r->logged += r->line_len;
	r->line_len = 0;
}

static void read_output(struct hook_run *r)
{
	char buf[4096];
	ssize_t n;
	while ((n = read(r->out, buf, sizeof(buf))) > 0) {
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == '\n' || r->line_len == sizeof(r->line)) {
				flush_line(r);
				if (buf[i] == '\n')
					continue;
			}
			r->line[r->line_len++] = buf[i];
		}
	}
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
		flush_line(r);
		loop_del_fd(r->h->loop, r->out);
		close(r->out);
		r->out = -1;
	}
}

static void on_output(struct loop *loop, int fd, uint32_t events, void *arg)
{
	(void)loop;
	(void)fd;
	(void)events;
	read_output(arg);
}

static void run_free(struct hook_run *r)
{
	struct hooks *h = r->h;
	for (struct hook_run **p = &h->runs; *p; p = &(*p)->next)
		if (*p == r) {
			*p = r->next;
			break;
		}
	h->running--;
	if (r->timer)
		loop_del_timer(h->loop, r->timer);
	if (r->out >= 0) {
		loop_del_fd(h->loop, r->out);
		close(r->out);
	}
	loop_del_fd(h->loop, r->pidfd);
	close(r->pidfd);
	free(r);
}

static void on_exit_fd(struct loop *loop, int fd, uint32_t events, void *arg)
{
	(void)loop;
	(void)fd;
	(void)events;
	struct hook_run *r = arg;
	int wstatus = 0;
	if (waitpid(r->pid, &wstatus, WNOHANG) <= 0)
		return;
	if (r->out >= 0)
		read_output(r);   /* what it wrote before it ended; a child it left may keep the pipe */
	const struct config *cfg = *r->h->cfgp;
	int status = -1;
	if (r->killed)
		log_job(LOG_WARN, r->id, "hook killed after %lds (exec_timeout)", cfg->notify_exec_timeout);
	else if (WIFEXITED(wstatus)) {
		status = WEXITSTATUS(wstatus);
		log_job(status ? LOG_WARN : LOG_INFO, r->id, "hook exited with status %d", status);
	} else
		log_job(LOG_WARN, r->id, "hook died of signal %d", WTERMSIG(wstatus));
	hook_done_fn *fn = r->fn;
	void *fn_arg = r->arg;
	run_free(r);
	fn(fn_arg, status);
}

struct child {
	const char *path;
	char **argv, **envp;
	int out;                 /* the pipe's write end: its stdout and stderr */
	volatile int err;        /* errno of the step that failed, for the parent */
};

/* to is from, without close-on-exec. */
static int dup_to(int from, int to)
{
	return from == to ? fcntl(to, F_SETFD, 0) : dup2(from, to);
}

/* Between vfork and execve: the child shares the daemon's memory while the daemon's thread
 * waits, so it makes system calls only (no allocation, lock or log line), and tells a failure
 * through c->err. */
static _Noreturn void child_exec(struct child *c)
{
	struct sigaction dfl = { .sa_handler = SIG_DFL };
	sigset_t none;
	/* Every signal is blocked here: reset the daemon's handlers before unblocking them. */
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			sigaction(sig, &dfl, NULL);   /* EINVAL for the C library's own: left */
	int null = open("/dev/null", O_RDONLY);
	if (setpgid(0, 0) < 0 || null < 0 || dup_to(null, 0) < 0 || dup_to(c->out, 1) < 0 ||
	    dup_to(c->out, 2) < 0 || close_range(3, ~0U, 0) < 0)
		goto fail;
	if (start_nofile_known && setrlimit(RLIMIT_NOFILE, &start_nofile) < 0)
		goto fail;
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	execve(c->path, c->argv, c->envp);
fail:
	c->err = errno;
	_exit(127);
}

/* Starts path as the hook; 0, or an errno when it could not be run (then nothing runs). */
static int spawn(pid_t *pid, const char *path, char **argv, char **envp, int out)
{
	struct child c = { .path = path, .argv = argv, .envp = envp, .out = out };
	sigset_t all, saved;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &saved);
	*pid = vfork();   /* returns once the child has called execve or _exit */
	if (*pid == 0)
		child_exec(&c);
	int err = *pid < 0 ? errno : c.err;
	pthread_sigmask(SIG_SETMASK, &saved, NULL);
	if (*pid > 0 && err)
		waitpid(*pid, NULL, 0);
	return err;
}

static int64_t on_timeout(struct loop *loop, void *arg)
{
	(void)loop;
	struct hook_run *r = arg;
	r->timer = 0;
	r->killed = true;
	kill(-r->pid, SIGKILL);   /* its own process group: what it started dies with it */
	return LOOP_TIMER_DONE;
}

void hooks_run(struct hooks *h, const char *task_id, const char *state, const char *result_path,
	       hook_done_fn *fn, void *arg)
{
	const struct config *cfg = *h->cfgp;
	struct hook_run *r = xcalloc(1, sizeof(*r));
	r->h = h;
	xsnprintf(r->id, sizeof(r->id), "%s", task_id);
	r->fn = fn;
	r->arg = arg;
	r->out = -1;
	r->pidfd = -1;
	int pipefd[2] = { -1, -1 };
	if (pipe2(pipefd, O_CLOEXEC | O_NONBLOCK) < 0)
		goto fail;
	/* The write end must block in the child like any stdout. */
	fcntl(pipefd[1], F_SETFL, 0);
	char *argv[] = { cfg->notify_exec, (char *)task_id, (char *)state, (char *)result_path, NULL };
	char *envp[] = { "PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", NULL };
	int rc = spawn(&r->pid, cfg->notify_exec, argv, envp, pipefd[1]);
	close(pipefd[1]);
	pipefd[1] = -1;
	if (rc != 0) {
		errno = rc;
		goto fail;
	}
	r->pidfd = (int)syscall(SYS_pidfd_open, r->pid, 0);
	r->out = pipefd[0];
	h->running++;
	r->next = h->runs;
	h->runs = r;
	if (r->pidfd < 0 || loop_add_fd(h->loop, r->pidfd, EPOLLIN, on_exit_fd, r) < 0) {
		/* Without a pidfd we could not tell when it ends: do not let it run unwatched. */
		log_job(LOG_ERROR, task_id, "cannot watch the hook: %s", strerror(errno));
		kill(-r->pid, SIGKILL);
		waitpid(r->pid, NULL, 0);
		if (r->pidfd < 0)
			r->pidfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		run_free(r);
		fn(arg, -1);
		return;
	}
	loop_add_fd(h->loop, r->out, EPOLLIN, on_output, r);
	r->timer = loop_add_timer(h->loop, cfg->notify_exec_timeout * 1000, on_timeout, r);
	log_job(LOG_INFO, task_id, "hook started: %s (pid %d)", cfg->notify_exec, (int)r->pid);
	return;
fail:
	log_job(LOG_ERROR, task_id, "cannot run the hook '%s': %s", cfg->notify_exec, strerror(errno));
	if (pipefd[0] >= 0)
		close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	free(r);
	fn(arg, -1);
}

void hooks_free(struct hooks *h)
{
	if (!h)
		return;
	while (h->runs) {
		struct hook_run *r = h->runs;
		kill(-r->pid, SIGKILL);
		waitpid(r->pid, NULL, 0);
		run_free(r);   /* its outbox entry stays: the next start runs it again */
	}
	free(h);
}
