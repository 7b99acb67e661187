/* test_log.c - telling the journal's stream from any other stderr; every line's time is the
 * time it was written, though each thread keeps the last second's date; lines held by the loop
 * thread go out together, in order with other threads' lines. */
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "full_pipe.h"
#include "tap.h"

static void test_line_times(void)
{
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	if (!f || saved < 0 || dup2(fileno(f), STDERR_FILENO) < 0)
		return;
	char before[20][48], after[20][48];
	for (int i = 0; i < 20; i++) {
		format_time_iso8601(wall_ms(), before[i], sizeof(before[i]));
		log_info("line %d", i);
		format_time_iso8601(wall_ms(), after[i], sizeof(after[i]));
		for (volatile int spin = 0; spin < 200000; spin++)
			;   /* let the milliseconds move on between lines */
	}
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(f);
	char line[256];
	int i = 0, in_order = 0;
	while (i < 20 && fgets(line, sizeof(line), f)) {
		char *space = strchr(line, ' ');
		if (space)
			*space = '\0';
		in_order += strcmp(before[i], line) <= 0 && strcmp(line, after[i]) <= 0;
		i++;
	}
	ok(i == 20 && in_order == 20, "every line carries the time it was written (%d of %d)",
	   in_order, i);
	fclose(f);
}

static void *log_from_helper(void *arg)
{
	if (arg)
		log_hold(true);
	log_info("from a helper%s", arg ? " that holds" : "");
	return NULL;
}

/* What stderr (a temporary file) holds: its lines, without their times. */
static void written(FILE *f, char *out, size_t size)
{
	char line[512];
	size_t len = 0;
	out[0] = '\0';
	rewind(f);
	while (len + 1 < size && fgets(line, sizeof(line), f)) {
		const char *text = strchr(line, ' ');
		text = text ? text + 1 : line;
		int n = snprintf(out + len, size - len, "%s", text);
		len = n < 0 ? len : len + (size_t)n;
	}
}

static void test_held_lines(void)
{
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	if (!f || saved < 0 || dup2(fileno(f), STDERR_FILENO) < 0)
		return;
	static char got[128 * 1024];
	log_hold(true);
	log_info("one");
	log_info("two");
	written(f, got, sizeof(got));
	is_str(got, "", "lines held are not written yet");
	log_flush();
	written(f, got, sizeof(got));
	is_str(got, "imgspoold: one\nimgspoold: two\n", "log_flush writes the lines held, in order");
	log_info("three");
	pthread_t th;
	if (pthread_create(&th, NULL, log_from_helper, NULL) == 0)
		pthread_join(th, NULL);
	written(f, got, sizeof(got));
	is_str(got, "imgspoold: one\nimgspoold: two\nimgspoold: three\nimgspoold: from a helper\n",
	       "another thread's line goes out at once, after the lines held before it");
	if (pthread_create(&th, NULL, log_from_helper, "hold") == 0)
		pthread_join(th, NULL);
	log_flush();
	written(f, got, sizeof(got));
	ok(!strstr(got, "that holds"), "a flush by a thread with no line of its own waiting writes "
	   "nothing (a loop that turns once per job but logs nothing)");
	log_info("after it");
	written(f, got, sizeof(got));
	ok(!strstr(got, "that holds"), "a helper that holds its lines leaves them for a flush");
	log_flush();
	written(f, got, sizeof(got));
	ok(strstr(got, "from a helper\nimgspoold: from a helper that holds\nimgspoold: after it\n") !=
	   NULL, "the next flush, by any thread, writes every thread's lines in their order");
	fseek(f, 0, SEEK_END);
	long size = ftell(f);
	log_info("four");
	for (int i = 0; i < 200; i++)   /* more than the buffer holds: written as it fills */
		log_info("%0300d", i);
	fseek(f, 0, SEEK_END);
	ok(ftell(f) > size + 30000, "lines past what is held go out before the buffer overflows");
	log_info("last");
	log_hold(false);
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	log_info("at once");
	fseek(f, 0, SEEK_END);
	ok(ftell(f) > size, "not held any more: a line goes out at once");
	written(f, got, sizeof(got));
	ok(strstr(got, "imgspoold: last\nimgspoold: at once\n") != NULL,
	   "letting go writes the lines held");
	dup2(saved, STDERR_FILENO);
	close(saved);
	fclose(f);
}

/* ---- a flush with nothing of its own to write, while another thread's write is stuck ---- */

static pid_t stuck_tid;
static sem_t flusher_ready, flusher_go;
static int flushed;   /* atomic */

static void *write_stuck(void *arg)
{
	(void)arg;
	__atomic_store_n(&stuck_tid, gettid(), __ATOMIC_SEQ_CST);
	log_info("a line stderr has no room for");
	return NULL;
}

static void *flush_nothing(void *arg)
{
	(void)arg;
	log_hold(true);
	sem_post(&flusher_ready);
	sem_wait(&flusher_go);
	log_flush();
	__atomic_store_n(&flushed, 1, __ATOMIC_SEQ_CST);
	log_hold(false);
	return NULL;
}

/* Whether thread tid is in write(2) on fd 2 (/proc/self/task/TID/syscall: "1 0x2 ..."). */
static bool writes_stderr(pid_t tid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", (int)tid);
	FILE *f = fopen(path, "r");
	unsigned long nr = 0, fd = 0;
	bool writes = f && fscanf(f, "%lu 0x%lx", &nr, &fd) == 2 && nr == 1 && fd == 2;
	if (f)
		fclose(f);
	return writes;
}

/* Waits (5 s at most) for the thread whose id *tid gets to be in a write to stderr. */
static bool until_stuck(pid_t *tid)
{
	int64_t deadline = mono_ms() + 5000;
	pid_t t = 0;
	while (!((t = __atomic_load_n(tid, __ATOMIC_SEQ_CST)) && writes_stderr(t)) &&
	       mono_ms() < deadline)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	return t && writes_stderr(t);
}

/* A loop flushes before every sleep, mostly with nothing of its own held: that must not wait
 * for another thread's write to a stderr that does not drain (a stuck journal, a full pipe). */
static void test_flush_of_nothing_does_not_wait(void)
{
	int fds[2], saved = dup(STDERR_FILENO);
	char fill[4096];
	if (saved < 0 || full_pipe(fds) < 0)
		return;
	sem_init(&flusher_ready, 0, 0);
	sem_init(&flusher_go, 0, 0);
	pthread_t flusher, stuck;
	pthread_create(&flusher, NULL, flush_nothing, NULL);
	sem_wait(&flusher_ready);
	dup2(fds[1], STDERR_FILENO);
	pthread_create(&stuck, NULL, write_stuck, NULL);
	bool was_stuck = until_stuck(&stuck_tid);
	sem_post(&flusher_go);
	int64_t deadline = mono_ms() + 2000;
	while (!__atomic_load_n(&flushed, __ATOMIC_SEQ_CST) && mono_ms() < deadline)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	bool returned = __atomic_load_n(&flushed, __ATOMIC_SEQ_CST);
	while (read(fds[0], fill, sizeof(fill)) > 0 || !__atomic_load_n(&flushed, __ATOMIC_SEQ_CST))
		;   /* drains until the stuck write is done and the flush returned */
	pthread_join(stuck, NULL);
	pthread_join(flusher, NULL);
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fds[0]);
	close(fds[1]);
	ok(was_stuck, "another thread's line is stuck in its write to stderr");
	ok(returned, "a flush with no line of its own waiting returns meanwhile");
}

/* ---- a logger never waits for another thread's stuck write ----------------------------------- */

#define PAST_CAP_LINES 4000      /* of about 330 bytes: more than the 1 MiB kept meanwhile */
static pid_t writer_tid;
static int logger_returned;      /* atomic */

static void *flush_into_a_full_pipe(void *arg)
{
	(void)arg;
	__atomic_store_n(&writer_tid, gettid(), __ATOMIC_SEQ_CST);
	log_hold(true);
	log_info("first: its flush is stuck in the write");
	log_flush();
	log_hold(false);
	return NULL;
}

static void *log_meanwhile(void *arg)
{
	(void)arg;
	log_info("second: from a thread that does not hold");
	log_hold(true);
	log_info("third: held, and flushed");
	log_flush();
	for (int i = 0; i < PAST_CAP_LINES; i++)
		log_info("n%05d %0320d", i, i);
	log_hold(false);
	__atomic_store_n(&logger_returned, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

struct pipe_reader {
	int fd;
	char *text;
	size_t len;
};

static void *read_all(void *arg)
{
	struct pipe_reader *r = arg;
	size_t cap = 4 << 20;
	r->text = xmalloc(cap + 1);
	for (ssize_t n; r->len < cap && (n = read(r->fd, r->text + r->len, cap - r->len)) > 0;)
		r->len += (size_t)n;
	r->text[r->len] = '\0';
	return NULL;
}

/* What a stuck write let another thread do: whether the write was stuck, whether the logger
 * returned (within 5 s, in took ms) while it still was, and all the pipe held once read again. */
struct stuck_run {
	bool was_stuck, returned, still_stuck;
	int64_t took;
	struct pipe_reader read;
};

/* stderr made fds[1] (full: nobody reads fds[0]), a flush stuck writing into it, logger_fn run
 * on another thread; then the pipe read: the stuck write ends, its writer takes the lines
 * wanted meanwhile, and a last line goes out after them. stderr is saved again after. */
static void while_a_write_is_stuck(int fds[2], int saved, void *(*logger_fn)(void *),
				   struct stuck_run *run)
{
	dup2(fds[1], STDERR_FILENO);
	__atomic_store_n(&writer_tid, 0, __ATOMIC_SEQ_CST);
	__atomic_store_n(&logger_returned, 0, __ATOMIC_SEQ_CST);
	pthread_t writer, logger, reader;
	pthread_create(&writer, NULL, flush_into_a_full_pipe, NULL);
	run->was_stuck = until_stuck(&writer_tid);
	pid_t tid = __atomic_load_n(&writer_tid, __ATOMIC_SEQ_CST);
	int64_t before = mono_ms();
	pthread_create(&logger, NULL, logger_fn, NULL);
	int64_t deadline = mono_ms() + 5000;
	while (!__atomic_load_n(&logger_returned, __ATOMIC_SEQ_CST) && mono_ms() < deadline)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	run->returned = __atomic_load_n(&logger_returned, __ATOMIC_SEQ_CST);
	run->took = mono_ms() - before;
	run->still_stuck = writes_stderr(tid);
	run->read = (struct pipe_reader){ .fd = fds[0] };
	fcntl(fds[0], F_SETFL, 0);
	pthread_create(&reader, NULL, read_all, &run->read);
	pthread_join(writer, NULL);
	pthread_join(logger, NULL);
	log_info("last: after the write went through");
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fds[1]);
	pthread_join(reader, NULL);
	close(fds[0]);
}

/* stderr is a pipe nobody reads: a flusher's write blocks in it. Another thread's lines, held
 * and flushed or not, go into the buffer and it returns (before, it waited for the lock the
 * write held); past the cap the lines are dropped and counted. When the pipe is read again, the
 * lines come out in order, the count where the dropped lines would have been, then the rest. */
static void test_a_logger_never_waits_for_a_stuck_write(void)
{
	int fds[2], saved = dup(STDERR_FILENO);
	ssize_t filled = full_pipe(fds);
	if (saved < 0 || filled < 0)
		return;
	struct stuck_run run;
	while_a_write_is_stuck(fds, saved, log_meanwhile, &run);
	struct pipe_reader r = run.read;
	ok(run.was_stuck, "a flush is stuck in its write to stderr");
	ok(run.returned && run.still_stuck, "another thread logged %d lines, held or not, and "
	   "returned meanwhile (%lld ms)", PAST_CAP_LINES + 2, (long long)run.took);
	const char *text = r.len > (size_t)filled ? r.text + filled : "";
	const char *first = strstr(text, "imgspoold: first:"), *second = strstr(text, "imgspoold: second:");
	const char *third = strstr(text, "imgspoold: third:"), *last = strstr(text, "imgspoold: last:");
	const char *count = strstr(text, "log line(s) dropped here");
	ok(first && second && third && count && last && first < second && second < third &&
	   third < count && count < last, "the lines come out in order, the count of those dropped "
	   "where they would have been");
	int kept = 0, in_order = 1;
	for (const char *p = text; (p = strstr(p, "imgspoold: n")); p++) {
		long i = strtol(p + strlen("imgspoold: n"), NULL, 10);
		in_order &= i == kept && p < count;
		kept++;
	}
	unsigned long lost = 0;
	if (count) {
		const char *digits = count - 1;   /* "N log line(s)": the space before "log" */
		while (digits > text && digits[-1] >= '0' && digits[-1] <= '9')
			digits--;
		lost = strtoul(digits, NULL, 10);
	}
	ok(kept > 2000 && in_order && lost > 0 && kept + (long)lost == PAST_CAP_LINES,
	   "about 1 MiB of lines kept, in order, the rest counted: %d kept, %lu dropped", kept, lost);
	free(r.text);
}

/* ---- lines dropped: the count stands where they were lost ------------------------------------ */

#define KEPT_LINE 1024            /* bytes of a line that fills the buffer */
static size_t prefix_len;         /* a line's bytes before its message */

static void *fill_then_drop(void *arg)
{
	(void)arg;
	char pad[KEPT_LINE];
	int fill = (int)(KEPT_LINE - prefix_len - 1 - 6);   /* "f0000 " then the pad */
	memset(pad, 'x', sizeof(pad));
	log_hold(true);
	/* 1 MiB less 512 bytes kept: room is left for a short line, not for a long one. */
	for (int i = 0; i < 1024 - 1; i++)
		log_info("f%04d %.*s", i, fill, pad);
	log_info("g0000 %.*s", fill - KEPT_LINE / 2, pad);
	log_info("lost: %.*s", fill, pad);
	log_info("late: short, made after the line lost");
	log_hold(false);
	__atomic_store_n(&logger_returned, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

/* Once a line is dropped, every later one is too until the buffer is taken: a shorter line that
 * would still fit must not come out before the count of a line made before it. */
static void test_drop_notice_where_lines_were_lost(void)
{
	FILE *probe = tmpfile();
	int fds[2], saved = dup(STDERR_FILENO);
	char line[256] = "";
	if (!probe || saved < 0 || dup2(fileno(probe), STDERR_FILENO) < 0)
		return;
	log_info("probe");
	dup2(saved, STDERR_FILENO);
	rewind(probe);
	if (!fgets(line, sizeof(line), probe))
		line[0] = '\0';
	fclose(probe);
	prefix_len = strlen(line) - strlen("probe\n");
	ssize_t filled = full_pipe(fds);
	if (filled < 0)
		return;
	struct stuck_run run;
	while_a_write_is_stuck(fds, saved, fill_then_drop, &run);
	struct pipe_reader r = run.read;
	bool was_stuck = run.was_stuck, returned = run.returned;
	const char *text = r.len > (size_t)filled ? r.text + filled : "";
	const char *kept = strstr(text, "imgspoold: g0000"), *lost = strstr(text, "imgspoold: lost:");
	const char *late = strstr(text, "imgspoold: late:"), *last = strstr(text, "imgspoold: last:");
	const char *count = strstr(text, "log line(s) dropped here");
	const char *after_kept = kept ? strchr(kept, '\n') : NULL;
	const char *count_line = count ? memrchr(text, '\n', (size_t)(count - text)) : NULL;
	ok(was_stuck && returned, "a write is stuck; another thread logged 1 MiB and more meanwhile");
	ok(kept && !lost && count && last && after_kept == count_line && count < last,
	   "the lines that fit come out, then at once the count of those dropped");
	ok(!late || late > count, "a short line made after a line was dropped does not come out "
	   "before that line's count");
	const char *space = count ? memrchr(text, ' ', (size_t)(count - 1 - text)) : NULL;
	ok(space && strtoul(space + 1, NULL, 10) == 2,
	   "the count takes in every line dropped until the buffer was taken (2)");
	free(r.text);
}

/* An allocation too big for any machine fails as malloc does, not in the sanitizer's report. */
const char *__asan_default_options(void);
const char *__tsan_default_options(void);
const char *__asan_default_options(void)
{
	return "allocator_may_return_null=1:log_path=stdout";
}
const char *__tsan_default_options(void)
{
	return "allocator_may_return_null=1:log_path=stdout";
}

/* Out of memory, a process aborts: the lines it held go out first, then why. */
static void test_out_of_memory(void)
{
	int fds[2];
	if (pipe(fds) < 0)
		return;
	fflush(NULL);   /* the child's copy of what stdout buffered must not be written twice */
	pid_t pid = fork();
	if (pid == 0) {
		setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 });
		dup2(fds[1], STDERR_FILENO);
		log_hold(true);
		log_info("held before");
		volatile size_t huge = SIZE_MAX / 2;
		free(xmalloc(huge));
		_exit(0);
	}
	close(fds[1]);
	char got[4096];
	size_t len = 0;
	for (ssize_t n; (n = read(fds[0], got + len, sizeof(got) - 1 - len)) > 0;)
		len += (size_t)n;
	got[len] = '\0';
	close(fds[0]);
	int status = 0;
	waitpid(pid, &status, 0);
	ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT, "out of memory, it aborts");
	const char *held = strstr(got, "imgspoold: held before\n");
	const char *why = strstr(got, "imgspoold: error: out of memory allocating ");
	ok(held && why && held < why, "the lines it held are written first, then why");
	if (!(held && why && held < why))
		printf("# it wrote: %s\n", got);
}

/* ---- a writer of its own (the daemon's): no other thread ever waits for stderr -------------- */

static int loop_returned, flush_all_returned;   /* atomic */

static void *log_like_a_loop(void *arg)
{
	(void)arg;
	log_info("own: a line of a thread that does not hold");
	log_hold(true);
	for (int i = 0; i < 3; i++) {
		log_info("own: turn %d", i);
		log_flush();
	}
	log_hold(false);
	__atomic_store_n(&loop_returned, 1, __ATOMIC_SEQ_CST);
	log_flush_all();   /* as at exit: the writer is stuck, so this waits 2 s at most */
	__atomic_store_n(&flush_all_returned, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static bool until_set(int *flag, int64_t ms)
{
	int64_t deadline = mono_ms() + ms;
	while (!__atomic_load_n(flag, __ATOMIC_SEQ_CST) && mono_ms() < deadline)
		nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	return __atomic_load_n(flag, __ATOMIC_SEQ_CST);
}

/* stderr a full pipe nobody reads, and no other thread writing: with the writer started, the
 * first thread to log (on the code before, it wrote itself and stuck there: the loop, in the
 * daemon) returns, and so does the last flush; once the pipe is read, every line is there. */
static void test_a_writer_of_its_own(void)
{
	int fds[2], saved = dup(STDERR_FILENO);
	ssize_t filled = full_pipe(fds);
	if (saved < 0 || filled < 0)
		return;
	log_start_writer();
	dup2(fds[1], STDERR_FILENO);
	pthread_t loop, reader;
	pthread_create(&loop, NULL, log_like_a_loop, NULL);
	bool returned = until_set(&loop_returned, 5000);
	bool flushed_all = until_set(&flush_all_returned, 10000);
	struct pipe_reader r = { .fd = fds[0] };
	fcntl(fds[0], F_SETFL, 0);
	pthread_create(&reader, NULL, read_all, &r);
	pthread_join(loop, NULL);
	log_info("own: last");
	bool all_out = log_flush_all();   /* the pipe is read now: it needs no wait */
	dup2(saved, STDERR_FILENO);
	close(saved);
	close(fds[1]);
	pthread_join(reader, NULL);
	close(fds[0]);
	ok(returned, "a thread whose lines fill no pipe returns from its flushes: only the log's "
	   "writer waits for stderr");
	ok(flushed_all, "the last flush before the end waits for the stuck writer 2 s at most");
	ok(all_out, "once stderr takes them, the last flush finds every line written (lines "
	   "written before the writer started count as written)");
	const char *text = r.len > (size_t)filled ? r.text + filled : "";
	const char *first = strstr(text, "own: a line"), *turn = strstr(text, "own: turn 2");
	const char *last = strstr(text, "own: last");
	ok(first && turn && last && first < turn && turn < last, "the writer writes every line, in "
	   "order, once stderr takes them");
	free(r.text);
}

int main(void)
{
	test_line_times();
	test_held_lines();
	test_out_of_memory();
	test_flush_of_nothing_does_not_wait();
	test_a_logger_never_waits_for_a_stuck_write();
	test_drop_notice_where_lines_were_lost();
	test_a_writer_of_its_own();   /* last: the writer stays for the rest of the process */
	FILE *f = tmpfile();
	struct stat st;
	if (!f || fstat(fileno(f), &st) < 0)
		return 1;
	char *same = xasprintf("%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
	char *other = xasprintf("%llu:%llu", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino + 1);
	char *trailing = xasprintf("%s:1", same);
	const struct { const char *value; bool want; } rows[] = {
		{ NULL, false }, { "", false }, { "journal", false }, { same, true },
		{ other, false }, { trailing, false },
	};
	for (size_t i = 0; i < ARRAY_SIZE(rows); i++)
		ok(log_stream_is_journal(rows[i].value, fileno(f)) == rows[i].want,
		   "JOURNAL_STREAM=%s -> %d", rows[i].value ? rows[i].value : "(unset)", rows[i].want);
	free(same);
	free(other);
	free(trailing);
	fclose(f);
	return tap_done();
}
