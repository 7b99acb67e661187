/* cli_gallery.c - imgspool gallery: a static HTML page of the finished jobs, newest first.
 *
 *   gallery [-o DIR] [done] [failed]     writes DIR/index.html (DIR created when missing)
 *
 * The page needs no server and no network: thumbnails are the images themselves in the spool,
 * linked by relative paths and loaded lazily, so 10 000 jobs make a page of a few megabytes that
 * scrolls at once. Every field is client data (prompts above all) and is escaped; a Content
 * Security Policy forbids scripts as well, so a prompt that slipped through still could not run.
 *
 * Memory does not grow with the results: each job's result and job file are read, written out
 * and let go; only an index of names and mtimes (cli_index, about 70 bytes a job) is kept to put
 * them in order. DIR holds the articles in an unlinked scratch file until the heading's counts
 * are known, so it needs room for the page twice while the page is made. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "util.h"
#include "banned.h"

#define PROMPT_SHOWN 600         /* characters of a prompt on the page; the title has more */

/* Text for HTML: & < > " ' escaped; control characters dropped. */
static void put_html(FILE *f, const char *s, size_t max)
{
	size_t n = 0;
	for (; s && *s && n < max; s++, n++) {
		unsigned char c = (unsigned char)*s;
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

static const char page_head[] =
	"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	/* No script may run, whatever a prompt contains; images only from beside the page. */
	"<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self' "
	"file:; style-src 'unsafe-inline'\">\n"
	"<meta name=\"viewport\" content=\"width=device-width\">\n<title>imgspool gallery</title>\n"
	"<style>body{font:13px/1.4 sans-serif;margin:1em;background:#f4f4f4}"
	"main{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:12px}"
	"article{background:#fff;border-left:4px solid #2a2;padding:8px;overflow:hidden}"
	"article.failed{border-color:#c22}img{object-fit:contain;background:#ddd;margin:0 4px 4px 0}"
	".none{width:180px;height:40px;color:#888}.prompt{font-weight:bold;white-space:pre-wrap;"
	"overflow-wrap:anywhere}dl{display:grid;grid-template-columns:auto 1fr;gap:0 8px;margin:0}"
	"dt{color:#666}dd{margin:0;overflow-wrap:anywhere}.error{color:#c22}</style>\n</head><body>\n";

int cli_gallery(struct cli *c, int argc, char **argv)
{
	const char *out_dir = "gallery";
	int opt;
	while ((opt = getopt(argc, argv, "o:")) != -1) {
		if (opt != 'o')
			return cli_fail(c, CLI_USAGE, "usage: imgspool gallery [-o DIR] [done] [failed]");
		out_dir = optarg;
	}
	bool want[2];   /* done, failed */
	int rc = cli_finished_states(c, argc, argv, want);
	if (rc != CLI_OK)
		return rc;
	if (mkdir(out_dir, 0777) < 0 && errno != EEXIST)
		return cli_fail_errno(c, "cannot create", out_dir, errno);

	/* The page is written as the results are read, one job at a time; what is kept is the
	 * index of names that puts them newest first. The heading's counts are known only at the
	 * end, so the articles go to a scratch file first and are copied in after the heading. */
	struct cli_index ix;
	cli_index_init(&ix);
	for (int k = 0; k < 2; k++) {
		enum spool_dir d = k ? SPOOL_FAILED : SPOOL_DONE;
		if (want[k] && cli_index_add(c, &ix, d) < 0) {
			int err = errno;
			cli_index_release(&ix);
			return cli_fail(c, CLI_ERROR, "cannot read '%s/': %s", spool_dir_name(d), strerror(err));
		}
	}
	cli_index_sort(&ix, true);

	char *path = xasprintf("%s/index.html", out_dir);
	char *tmp = xasprintf("%s/.index.html.%d.tmp", out_dir, (int)getpid());
	char *scratch = xasprintf("%s/.index.html.%d.articles", out_dir, (int)getpid());
	char *spool_url = relative_to(out_dir, c->dir);
	FILE *f = NULL, *articles = create_new(scratch, "w+");
	if (!articles) {
		rc = cli_fail_errno(c, "cannot write", scratch, errno);
		goto out;
	}
	unlink(scratch);   /* it lives as long as it is open, and is never left behind */
	setvbuf(articles, NULL, _IOFBF, 1 << 16);
	size_t n = 0, done = 0;
	for (size_t i = 0; i < ix.n; i++) {
		enum spool_dir d = ix.jobs[i].dir;
		const char *name = cli_index_name(&ix, i);
		struct cli_info info;
		if (cli_info_read(c, d, name, ix.jobs[i].mtime_ns / 1000000, true, &info) < 0 ||
		    !info.doc) {
			cli_info_release(&info);
			continue;
		}
		struct stat st;
		enum spool_read rr;
		json_t *job = cli_read_json(c, d, name, &rr, &st);
		put_entry(articles, &info, json_string_value(json_object_get(job, "prompt")), spool_url);
		json_decref(job);
		cli_info_release(&info);
		n++;
		done += d == SPOOL_DONE;
	}

	f = create_new(tmp, "w");
	if (!f) {
		rc = cli_fail_errno(c, "cannot write", tmp, errno);
		goto out;
	}
	setvbuf(f, NULL, _IOFBF, 1 << 16);
	fputs(page_head, f);
	fprintf(f, "<h1>imgspool: %zu finished job(s): %zu done, %zu failed</h1>\n<main>\n", n, done,
		n - done);
	bool copied = fflush(articles) == 0 && !ferror(articles) && fseek(articles, 0, SEEK_SET) == 0;
	char chunk[65536];
	size_t got;
	while (copied && (got = fread(chunk, 1, sizeof(chunk), articles)) > 0)
		copied = fwrite(chunk, 1, got, f) == got;
	fputs("</main>\n</body></html>\n", f);
	copied = copied && !ferror(articles);
	if (ferror(f) | (fclose(f) != 0) | !copied || rename(tmp, path) < 0) {
		rc = cli_fail_errno(c, "cannot write", path, errno);
		unlink(tmp);
		goto out;
	}
	printf("%s: %zu job(s)\n", path, n);
out:
	if (articles)
		fclose(articles);
	cli_index_release(&ix);
	free(spool_url);
	free(scratch);
	free(tmp);
	free(path);
	return rc;
}
