/* cli_gallery.c - imgspool gallery: static HTML pages of the finished jobs, newest first.
 *
 *   gallery [-o DIR] [-n JOBS] [done] [failed]    writes DIR/index.html and DIR/page-N.html
 *                                                 (DIR created when missing)
 *
 * The pages need no server and no network: thumbnails are the images themselves in the spool,
 * linked by relative paths and loaded lazily. JOBS a page (500 by default) keep each page a few
 * hundred kilobytes however many jobs the spool holds: page 1 is the newest, each page links to
 * the newer and the older one and to index.html, which lists the pages with their counts and
 * times. Every field is client data (prompts above all) and is escaped; a Content Security
 * Policy forbids scripts as well, so a prompt that slipped through still could not run.
 *
 * Memory does not grow with the results: each job's result and job file are read, written out
 * and let go; only an index of names and mtimes (cli_index, about 70 bytes a job) is kept to put
 * them in order, and it alone decides which page a job is on and what times a page covers, so
 * every page is written straight to its file. Each file is written under a temporary name and
 * renamed into place; pages left from an earlier, longer gallery are removed last.
 *
 * Runs on one directory take turns (a flock on DIR/.gallery.lock, which works across NFS
 * hosts too): two runs at once, with another -n above all, would otherwise overwrite each
 * other's pages and remove pages the other's index links to. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "util.h"
#include "banned.h"

#define PROMPT_SHOWN 600         /* bytes of a prompt on the page; the title has more */
#define PAGE_JOBS 500            /* default -n: a page of a few hundred kilobytes */
#define PAGE_JOBS_MAX 100000
#define LOCK_WAIT_S 60           /* default -w: a run over 100 000 jobs takes a few seconds */
#define LOCK_WAIT_MAX_S 86400

/* The bytes of the UTF-8 sequence c leads (1 for a byte that leads none). */
static size_t utf8_sequence_len(unsigned char c)
{
	return (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 1;
}

/* Text for HTML: & < > " ' escaped; control characters dropped; at most max bytes of s, cut
 * between characters (the page is UTF-8: half a character would make it invalid). */
static void put_html(FILE *f, const char *s, size_t max)
{
	size_t n = 0;
	for (; s && *s; s++, n++) {
		unsigned char c = (unsigned char)*s;
		if ((c & 0xC0) != 0x80 && n + utf8_sequence_len(c) > max)
			break;
		switch (c) {
		case '&': fputs("&amp;", f); break;
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '"': fputs("&quot;", f); break;
		case '\'': fputs("&#39;", f); break;
		default:
			if (c >= 0x20 && c != 0x7f)
				fputc(c, f);
			else if (c == '\n' || c == '\t')
				fputc(' ', f);
		}
	}
	if (s && *s)
		fputs("&hellip;", f);
}

/* A path in a URL: every byte outside the unreserved set and '/' percent-encoded. */
static void put_url_path(FILE *f, const char *s)
{
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == '.' || c == '~' || c == '/')
			fputc(c, f);
		else
			fprintf(f, "%%%02X", c);
	}
}

/* The spool seen from dir: a relative path ("../spool") when both resolve, else target as given. */
static char *relative_to(const char *dir, const char *target)
{
	char d[PATH_MAX], t[PATH_MAX];
	if (!realpath(dir, d) || !realpath(target, t))
		return xstrdup(target);
	/* The longest common run of whole components. */
	size_t common = 0;
	for (size_t i = 0;; i++) {
		bool d_end = d[i] == '\0' || d[i] == '/', t_end = t[i] == '\0' || t[i] == '/';
		if (d_end && t_end)
			common = i;
		if (d[i] != t[i] || !d[i])
			break;
	}
	struct buf out;
	buf_init(&out, PATH_MAX * 2);
	for (const char *p = d + common; *p; p++)
		if (*p == '/')
			buf_append(&out, "../", 3);
	const char *rest = t + common;
	if (*rest == '/')
		rest++;
	buf_append(&out, rest, strlen(rest));
	if (out.len && out.data[out.len - 1] == '/')
		out.data[--out.len] = '\0';
	if (!out.len)
		buf_append(&out, ".", 1);
	size_t len;
	return buf_detach(&out, &len);
}

static bool plain_image_name(const char *name)
{
	return name && *name && name[0] != '.' && !strchr(name, '/') && strlen(name) < NAME_MAX;
}

/* The most bytes a prompt the daemon would take is written in: JOB_PROMPT_MAX code points, each
 * at most a surrogate pair of \u escapes, and its quotes. */
#define PROMPT_TEXT_MAX ((size_t)JOB_PROMPT_MAX * 12 + 2)

/* The job's prompt (new reference), or NULL. A file over CLI_PARSE_WHOLE_MAX is scanned for it,
 * not parsed whole (its metadata may be megabytes nested deep), and a longer prompt than a job
 * may have is not parsed either. */
static json_t *job_prompt(struct cli *c, enum spool_dir d, const char *name)
{
	struct buf text;
	struct stat st;
	json_t *prompt = NULL;
	if (cli_read_text(c, d, name, &text, &st) == SPOOL_READ_OK) {
		if (text.len <= CLI_PARSE_WHOLE_MAX) {
			json_t *job = json_loadb(text.data, text.len, 0, NULL);
			prompt = json_incref(json_object_get(job, "prompt"));
			json_decref(job);
		} else {
			size_t len;
			const char *v = job_member_bytes(text.data, text.len, "prompt", &len);
			if (v && len <= PROMPT_TEXT_MAX)
				prompt = json_loadb(v, len, JSON_DECODE_ANY, NULL);
		}
	}
	buf_release(&text);
	return prompt;
}

static void put_entry(FILE *f, const struct cli_info *info, const char *prompt,
		      const char *spool_url)
{
	json_t *r = info->doc;
	const char *state = spool_dir_name(info->dir);
	fprintf(f, "<article class=\"%s\">", state);
	json_t *images = json_object_get(r, "images");
	size_t i;
	json_t *img;
	int shown = 0;
	json_array_foreach(images, i, img) {
		const char *name = json_string_value(img);
		if (!plain_image_name(name) || shown == 4)
			continue;
		fputs("<a href=\"", f);
		put_url_path(f, spool_url);
		fprintf(f, "/%s/", state);
		put_url_path(f, name);
		fputs("\"><img loading=\"lazy\" width=\"180\" height=\"180\" alt=\"\" src=\"", f);
		put_url_path(f, spool_url);
		fprintf(f, "/%s/", state);
		put_url_path(f, name);
		fputs("\"></a>", f);
		shown++;
	}
	if (!shown)
		fputs("<div class=\"none\">no image</div>", f);
	fputs("<p class=\"prompt\" title=\"", f);
	put_html(f, prompt, 4000);
	fputs("\">", f);
	put_html(f, prompt ? prompt : "(no prompt)", PROMPT_SHOWN);
	fputs("</p><dl><dt>id</dt><dd>", f);
	put_html(f, info->id, JOB_ID_MAX);
	fputs("</dd><dt>model</dt><dd>", f);
	put_html(f, info->model[0] ? info->model : "-", 200);
	fputs("</dd><dt>provider</dt><dd>", f);
	put_html(f, info->provider[0] ? info->provider : "-", 100);
	json_t *latency = json_object_get(r, "latency_ms");
	fprintf(f, "</dd><dt>latency</dt><dd>%.1f s</dd><dt>attempts</dt><dd>%d</dd><dt>cost</dt><dd>",
		json_is_integer(latency) ? (double)json_integer_value(latency) / 1000 : 0.0,
		info->attempts);
	if (info->has_cost) {
		fprintf(f, "%.4f ", info->cost);
		put_html(f, info->currency, 8);
	} else {
		fputs("-", f);
	}
	fputs("</dd>", f);
	if (info->dir == SPOOL_FAILED) {
		json_t *err = json_object_get(r, "error");
		fputs("<dt>error</dt><dd class=\"error\">", f);
		put_html(f, info->error_code[0] ? info->error_code : "?", 48);
		fputs(": ", f);
		put_html(f, json_string_value(json_object_get(err, "message")), 600);
		fputs("</dd>", f);
	}
	fputs("</dl></article>\n", f);
}

/* A file of ours under path in a directory others may write (a web root): a name planted
 * there, a symlink above all, is removed and never written through. NULL with errno. */
static FILE *create_new(const char *path, const char *mode)
{
	if (unlink(path) < 0 && errno != ENOENT)
		return NULL;
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
	if (fd < 0)
		return NULL;
	FILE *f = fdopen(fd, mode);
	if (!f) {
		int err = errno;
		close(fd);
		unlink(path);
		errno = err;
	}
	return f;
}

/* A file of the gallery: written under DIR/.NAME.PID.tmp, renamed over DIR/NAME when whole. */
struct out_file {
	char *path, *tmp;
	FILE *f;
};

static int out_open(struct out_file *o, const char *dir, const char *name)
{
	o->path = xasprintf("%s/%s", dir, name);
	o->tmp = xasprintf("%s/.%s.%d.tmp", dir, name, (int)getpid());
	o->f = create_new(o->tmp, "w");
	if (!o->f)
		return -1;
	setvbuf(o->f, NULL, _IOFBF, 1 << 16);
	return 0;
}

/* 0, or -1 with errno: the file is then not in place and its temporary name is gone. */
static int out_commit(struct out_file *o)
{
	int rc = 0;
	if (o->f) {
		int err = ferror(o->f) ? EIO : 0;   /* a write failed earlier: its errno is long gone */
		if (fclose(o->f) != 0 && !err)
			err = errno;
		o->f = NULL;
		if (!err && rename(o->tmp, o->path) < 0)
			err = errno;
		if (err) {
			unlink(o->tmp);
			errno = err;
			rc = -1;
		}
	}
	free(o->path);
	free(o->tmp);
	o->path = o->tmp = NULL;
	return rc;
}

static void out_abort(struct out_file *o)
{
	if (o->f) {
		fclose(o->f);
		unlink(o->tmp);
		o->f = NULL;
	}
	free(o->path);
	free(o->tmp);
	o->path = o->tmp = NULL;
}

static void put_head(FILE *f, const char *title)
{
	fputs("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	      /* No script may run, whatever a prompt contains; images only from beside the page. */
	      "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src "
	      "'self' file:; style-src 'unsafe-inline'\">\n"
	      "<meta name=\"viewport\" content=\"width=device-width\">\n<title>", f);
	put_html(f, title, 200);
	fputs("</title>\n<style>body{font:13px/1.4 sans-serif;margin:1em;background:#f4f4f4}"
	      "main{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:12px}"
	      "article{background:#fff;border-left:4px solid #2a2;padding:8px;overflow:hidden}"
	      "article.failed{border-color:#c22}img{object-fit:contain;background:#ddd;margin:0 4px 4px 0}"
	      ".none{width:180px;height:40px;color:#888}.prompt{font-weight:bold;white-space:pre-wrap;"
	      "overflow-wrap:anywhere}dl{display:grid;grid-template-columns:auto 1fr;gap:0 8px;margin:0}"
	      "dt{color:#666}dd{margin:0;overflow-wrap:anywhere}.error{color:#c22}"
	      "nav{margin:8px 0;font-size:15px}nav a,nav span{margin-right:1em}"
	      "table{border-collapse:collapse;background:#fff}th,td{padding:2px 10px;text-align:left}"
	      "td.n{text-align:right}</style>\n</head><body>\n", f);
}

/* Opens DIR/NAME under its temporary name and writes the page's head: CLI_OK, or the failure
 * said. */
static int page_open(struct cli *c, struct out_file *o, const char *dir, const char *name,
		     const char *title)
{
	if (out_open(o, dir, name) < 0) {
		int rc = cli_fail_errno(c, "cannot write", o->tmp, errno);
		out_abort(o);
		return rc;
	}
	put_head(o->f, title);
	return CLI_OK;
}

/* Ends the page and puts it in place: CLI_OK, or the failure said. */
static int page_close(struct cli *c, struct out_file *o)
{
	fputs("</body></html>\n", o->f);
	char *path = xstrdup(o->path);
	int rc = out_commit(o) < 0 ? cli_fail_errno(c, "cannot write", path, errno) : CLI_OK;
	free(path);
	return rc;
}

/* "2026-11-25 11:02:03" in local time, its full ISO 8601 form in datetime. */
static void put_time(FILE *f, int64_t ms)
{
	char iso[48];
	format_time_iso8601(ms, iso, sizeof(iso));
	const char *t = strchr(iso, 'T');
	if (!t) {
		fputs(iso, f);
		return;
	}
	fprintf(f, "<time datetime=\"%s\">%.*s %.8s</time>", iso, (int)(t - iso), iso, t + 1);
}

/* The way to the index and to the newer and the older page; pages count from 1. */
static void put_nav(FILE *f, size_t page, size_t pages)
{
	fputs("<nav><a href=\"index.html\">index</a>", f);
	if (page > 1)
		fprintf(f, "<a rel=\"prev\" href=\"page-%zu.html\">&larr; newer</a>", page - 1);
	fprintf(f, "<span>page %zu of %zu</span>", page, pages);
	if (page < pages)
		fprintf(f, "<a rel=\"next\" href=\"page-%zu.html\">older &rarr;</a>", page + 1);
	fputs("</nav>\n", f);
}

/* What the index says of a page. */
struct page {
	size_t done, failed;
	int64_t newest_ms, oldest_ms;
};

/* Writes page number page (from 1): the jobs first..end-1 of the index, newest first. */
static int write_page(struct cli *c, const char *out_dir, const struct cli_index *ix, size_t first,
		      size_t end, size_t page, size_t pages, const char *spool_url, struct page *pg)
{
	char name[64], title[96];
	xsnprintf(name, sizeof(name), "page-%zu.html", page);
	xsnprintf(title, sizeof(title), "imgspool gallery: page %zu of %zu", page, pages);
	struct out_file o;
	int rc = page_open(c, &o, out_dir, name, title);
	if (rc != CLI_OK)
		return rc;
	pg->newest_ms = ix->jobs[first].mtime_ns / 1000000;
	pg->oldest_ms = ix->jobs[end - 1].mtime_ns / 1000000;
	fprintf(o.f, "<h1>imgspool: page %zu of %zu</h1>\n<p>finished from ", page, pages);
	put_time(o.f, pg->newest_ms);
	fputs(" back to ", o.f);
	put_time(o.f, pg->oldest_ms);
	fputs("</p>\n", o.f);
	put_nav(o.f, page, pages);
	fputs("<main>\n", o.f);
	for (size_t i = first; i < end; i++) {
		enum spool_dir d = ix->jobs[i].dir;
		const char *job_name = cli_index_name(ix, i);
		struct cli_info info;
		if (cli_info_read(c, d, job_name, ix->jobs[i].mtime_ns / 1000000, true, &info) < 0 ||
		    !info.doc) {
			cli_info_release(&info);
			continue;   /* gone since the listing, or not a job */
		}
		json_t *prompt = job_prompt(c, d, job_name);
		put_entry(o.f, &info, json_string_value(prompt), spool_url);
		json_decref(prompt);
		cli_info_release(&info);
		if (d == SPOOL_DONE)
			pg->done++;
		else
			pg->failed++;
	}
	fputs("</main>\n", o.f);
	put_nav(o.f, page, pages);
	return page_close(c, &o);
}

static int write_index(struct cli *c, const char *out_dir, const struct page *pg, size_t pages)
{
	struct out_file o;
	int rc = page_open(c, &o, out_dir, "index.html", "imgspool gallery");
	if (rc != CLI_OK)
		return rc;
	size_t done = 0, failed = 0;
	for (size_t p = 0; p < pages; p++) {
		done += pg[p].done;
		failed += pg[p].failed;
	}
	fprintf(o.f, "<h1>imgspool: %zu finished job(s): %zu done, %zu failed</h1>\n", done + failed,
		done, failed);
	if (!pages)
		fputs("<p>No finished jobs.</p>\n", o.f);
	else
		fputs("<table>\n<tr><th>page</th><th>jobs</th><th>done</th><th>failed</th>"
		      "<th>finished from</th><th>back to</th></tr>\n", o.f);
	for (size_t p = 0; p < pages; p++) {
		fprintf(o.f, "<tr><td><a href=\"page-%zu.html\">page %zu</a></td><td class=\"n\">%zu</td>"
			"<td class=\"n\">%zu</td><td class=\"n\">%zu</td><td>", p + 1, p + 1,
			pg[p].done + pg[p].failed, pg[p].done, pg[p].failed);
		put_time(o.f, pg[p].newest_ms);
		fputs("</td><td>", o.f);
		put_time(o.f, pg[p].oldest_ms);
		fputs("</td></tr>\n", o.f);
	}
	if (pages)
		fputs("</table>\n", o.f);
	return page_close(c, &o);
}

/* Whether name is page-N.html with N past pages: left by an earlier gallery of more pages. */
static bool stale_page(const char *name, size_t pages)
{
	if (strncmp(name, "page-", 5) || name[5] < '1' || name[5] > '9')
		return false;
	char *end;
	errno = 0;
	unsigned long long n = strtoull(name + 5, &end, 10);
	return !errno && !strcmp(end, ".html") && n > pages;
}

static void remove_stale_pages(const char *out_dir, size_t pages)
{
	DIR *dir = opendir(out_dir);
	if (!dir)
		return;
	struct dirent *de;
	while ((de = readdir(dir)))
		if (stale_page(de->d_name, pages))
			unlinkat(dirfd(dir), de->d_name, 0);
	closedir(dir);
}

/* Who holds the flock on the file fd is open on, from /proc/locks: "pid N (COMM)" into out,
 * or "" when it is not knowable (another host's run over NFS, no /proc, a lock given up). */
static void lock_holder(int fd, char *out, size_t size)
{
	out[0] = '\0';
	struct stat st;
	FILE *f = fstat(fd, &st) == 0 ? fopen("/proc/locks", "re") : NULL;
	if (!f)
		return;
	char line[256], want[64];
	xsnprintf(want, sizeof(want), "%02x:%02x:%llu", major(st.st_dev), minor(st.st_dev),
		  (unsigned long long)st.st_ino);
	while (fgets(line, sizeof(line), f)) {
		/* "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"; "->" marks a waiter. */
		char kind[16], pid[16], where[64];
		if (strstr(line, "->") || sscanf(line, "%*s %15s %*s %*s %15s %63s", kind, pid, where) != 3
		    || strcmp(kind, "FLOCK") || strcmp(where, want) || !strcmp(pid, "-1"))
			continue;
		char comm[32] = "", path[48];
		xsnprintf(path, sizeof(path), "/proc/%s/comm", pid);
		FILE *cf = fopen(path, "re");
		if (cf) {
			if (!fgets(comm, sizeof(comm), cf))
				comm[0] = '\0';
			comm[strcspn(comm, "\n")] = '\0';
			fclose(cf);
		}
		xsnprintf(out, size, comm[0] ? "pid %s (%s)" : "pid %s", pid, comm);
		break;
	}
	fclose(f);
}

/* Takes DIR/.gallery.lock, waiting (and saying so) while another run holds it, for at most
 * wait_s seconds: anyone who can write DIR can hold it, so it is never waited on for ever. The
 * fd to close when done; -1 with errno (EWOULDBLOCK: still held, holder says by whom, if
 * knowable; EINVAL: the name is not a regular file). The name is opened as hostile (DIR may be a
 * web root others write to): no link followed, no FIFO waited on, a regular file only. */
static int lock_gallery(const char *out_dir, long wait_s, char *holder, size_t holder_size)
{
	char *path = xasprintf("%s/.gallery.lock", out_dir);
	int fd = open(path, O_RDONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0666);
	free(path);
	struct stat st;
	if (fd < 0 && (errno == EISDIR || errno == ELOOP)) {   /* a directory; a link, not followed */
		errno = EINVAL;
		return -1;
	}
	if (fd >= 0 && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) == 0)
		return fd;
	int err = errno;
	int64_t deadline = mono_ms() + wait_s * 1000;
	if (err == EWOULDBLOCK && wait_s > 0) {
		lock_holder(fd, holder, holder_size);
		fprintf(stderr, "imgspool: gallery: waiting for another gallery run on '%s'%s%s%s to "
			"end (at most %ld s)\n", out_dir, holder[0] ? " (" : "", holder,
			holder[0] ? ")" : "", wait_s);
	}
	/* Polled: a blocking flock has no time limit of its own. */
	while (err == EWOULDBLOCK || err == EINTR) {
		int64_t left = deadline - mono_ms();
		if (left <= 0) {
			lock_holder(fd, holder, holder_size);
			err = EWOULDBLOCK;
			break;
		}
		struct timespec pause = { 0, (left < 100 ? left : 100) * 1000000L };
		nanosleep(&pause, NULL);
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return fd;
		err = errno;
	}
	close(fd);
	errno = err;
	return -1;
}

#define GALLERY_USAGE "usage: imgspool gallery [-o DIR] [-n JOBS] [-w SECONDS] [done] [failed]"

int cli_gallery(struct cli *c, int argc, char **argv)
{
	const char *out_dir = "gallery";
	long per_page = PAGE_JOBS, wait_s = LOCK_WAIT_S;
	int opt;
	while ((opt = getopt(argc, argv, "o:n:w:")) != -1) {
		if (opt == 'o')
			out_dir = optarg;
		else if (opt == 'w' && parse_long(optarg, 0, LOCK_WAIT_MAX_S, &wait_s) == 0)
			continue;
		else if (opt != 'n' || parse_long(optarg, 1, PAGE_JOBS_MAX, &per_page) < 0)
			return cli_fail(c, CLI_USAGE, GALLERY_USAGE " (JOBS a page: 1 to %d; SECONDS to "
					"wait for another run: 0 to %d)", PAGE_JOBS_MAX, LOCK_WAIT_MAX_S);
	}
	bool want[2];   /* done, failed */
	int rc = cli_finished_states(c, argc, argv, want);
	if (rc != CLI_OK)
		return rc;
	if (mkdir(out_dir, 0777) < 0 && errno != EEXIST)
		return cli_fail_errno(c, "cannot create", out_dir, errno);
	char holder[64] = "";
	int lock = lock_gallery(out_dir, wait_s, holder, sizeof(holder));
	if (lock < 0) {
		char *path = xasprintf("%s/.gallery.lock", out_dir);
		if (errno == EWOULDBLOCK)
			rc = cli_fail(c, CLI_FAILED, "'%s' is still held%s%s after %ld s: another gallery "
				      "run (or anyone who can write '%s') has it; nothing written (-w "
				      "SECONDS waits longer)", path, holder[0] ? " by " : "", holder,
				      wait_s, out_dir);
		else if (errno == EINVAL)
			rc = cli_fail(c, CLI_FAILED, "'%s' is not a regular file; nothing written", path);
		else
			rc = cli_fail_errno(c, "cannot lock", path, errno);
		free(path);
		return rc;
	}

	/* What is kept is the index of names that puts the jobs newest first; it says which page
	 * each job is on, so each page is written as its jobs are read, one job at a time. */
	struct cli_index ix;
	cli_index_init(&ix);
	for (int k = 0; k < 2; k++) {
		enum spool_dir d = k ? SPOOL_FAILED : SPOOL_DONE;
		if (want[k] && cli_index_add(c, &ix, d) < 0) {
			int err = errno;
			cli_index_release(&ix);
			close(lock);
			return cli_fail(c, CLI_ERROR, "cannot read '%s/': %s", spool_dir_name(d), strerror(err));
		}
	}
	cli_index_sort(&ix, true);

	size_t per = (size_t)per_page, pages = (ix.n + per - 1) / per;
	struct page *pg = xcalloc(pages ? pages : 1, sizeof(*pg));
	char *spool_url = relative_to(out_dir, c->dir);
	for (size_t p = 0; p < pages && rc == CLI_OK; p++) {
		size_t first = p * per, end = first + per < ix.n ? first + per : ix.n;
		rc = write_page(c, out_dir, &ix, first, end, p + 1, pages, spool_url, &pg[p]);
	}
	stop_point("gallery:pages-written");
	if (rc == CLI_OK)
		rc = write_index(c, out_dir, pg, pages);
	if (rc == CLI_OK) {
		remove_stale_pages(out_dir, pages);
		size_t n = 0;
		for (size_t p = 0; p < pages; p++)
			n += pg[p].done + pg[p].failed;
		printf("%s/index.html: %zu job(s) on %zu page(s)\n", out_dir, n, pages);
	}
	cli_index_release(&ix);
	free(spool_url);
	free(pg);
	close(lock);
	return rc;
}
