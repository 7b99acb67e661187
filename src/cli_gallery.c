/* cli_gallery.c - imgspool gallery: a static HTML page of the finished jobs, newest first.
 *
 *   gallery [-o DIR] [done] [failed]     writes DIR/index.html (DIR created when missing)
 *
 * The page needs no server and no network: thumbnails are the images themselves in the spool,
 * linked by relative paths and loaded lazily, so 10 000 jobs make a page of a few megabytes that
 * scrolls at once. Every field is client data (prompts above all) and is escaped; a Content
 * Security Policy forbids scripts as well, so a prompt that slipped through still could not run. */
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

#define JOB_MAX (2u << 20)
#define PROMPT_SHOWN 600         /* characters of a prompt on the page; the title has more */

struct entry {
	struct cli_info info;    /* doc: the result */
	char *prompt;            /* owned, from the job file */
};

static int newest_first(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;
	if (x->info.mtime_ms != y->info.mtime_ms)
		return x->info.mtime_ms < y->info.mtime_ms ? 1 : -1;
	return strcmp(x->info.id, y->info.id);
}

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

static void put_entry(FILE *f, const struct entry *e, const char *spool_url)
{
	json_t *r = e->info.doc;
	const char *state = spool_dir_name(e->info.dir);
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
	put_html(f, e->prompt, 4000);
	fputs("\">", f);
	put_html(f, e->prompt ? e->prompt : "(no prompt)", PROMPT_SHOWN);
	fputs("</p><dl><dt>id</dt><dd>", f);
	put_html(f, e->info.id, JOB_ID_MAX);
	fputs("</dd><dt>model</dt><dd>", f);
	put_html(f, e->info.model[0] ? e->info.model : "-", 200);
	fputs("</dd><dt>provider</dt><dd>", f);
	put_html(f, e->info.provider[0] ? e->info.provider : "-", 100);
	json_t *latency = json_object_get(r, "latency_ms");
	fprintf(f, "</dd><dt>latency</dt><dd>%.1f s</dd><dt>attempts</dt><dd>%d</dd><dt>cost</dt><dd>",
		json_is_integer(latency) ? (double)json_integer_value(latency) / 1000 : 0.0,
		e->info.attempts);
	if (e->info.has_cost) {
		fprintf(f, "%.4f ", e->info.cost);
		put_html(f, e->info.currency, 8);
	} else {
		fputs("-", f);
	}
	fputs("</dd>", f);
	if (e->info.dir == SPOOL_FAILED) {
		json_t *err = json_object_get(r, "error");
		fputs("<dt>error</dt><dd class=\"error\">", f);
		put_html(f, e->info.error_code[0] ? e->info.error_code : "?", 48);
		fputs(": ", f);
		put_html(f, json_string_value(json_object_get(err, "message")), 600);
		fputs("</dd>", f);
	}
	fputs("</dl></article>\n", f);
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

	struct entry *v = NULL;
	size_t n = 0, alloc = 0;
	struct buf text;
	buf_init(&text, JOB_MAX);
	for (int k = 0; k < 2; k++) {
		if (!want[k])
			continue;
		enum spool_dir d = k ? SPOOL_FAILED : SPOOL_DONE;
		struct spool_entry *e;
		long m = spool_list(&c->sp, d, &e);
		if (m < 0) {
			buf_release(&text);
			return cli_fail(c, CLI_ERROR, "cannot read '%s/': %s", spool_dir_name(d), strerror(errno));
		}
		for (long i = 0; i < m; i++) {
			size_t len = strlen(e[i].name);
			if (len < 6 || strcmp(e[i].name + len - 5, ".json") ||
			    (len > 12 && !strcmp(e[i].name + len - 12, ".result.json")))
				continue;
			if (n == alloc) {
				alloc = alloc ? alloc * 2 : 256;
				v = xrealloc(v, alloc * sizeof(*v));
			}
			struct entry *en = &v[n];
			if (cli_info_read(c, d, e[i].name, e[i].mtime_ns / 1000000, true, &en->info) < 0 ||
			    !en->info.doc) {
				cli_info_release(&en->info);
				continue;
			}
			struct stat st;
			en->prompt = NULL;
			if (spool_read_file(c->sp.fd[d], e[i].name, JOB_MAX, &text, &st) == SPOOL_READ_OK) {
				json_t *job = json_loadb(text.data, text.len, 0, NULL);
				const char *p = json_string_value(json_object_get(job, "prompt"));
				en->prompt = p ? xstrdup(p) : NULL;
				json_decref(job);
			}
			n++;
		}
		spool_entries_free(e, m);
	}
	buf_release(&text);
	if (n)
		qsort(v, n, sizeof(*v), newest_first);

	char *path = xasprintf("%s/index.html", out_dir);
	char *tmp = xasprintf("%s/.index.html.%d.tmp", out_dir, (int)getpid());
	char *spool_url = relative_to(out_dir, c->dir);
	FILE *f = fopen(tmp, "w");
	if (!f) {
		rc = cli_fail_errno(c, "cannot write", tmp, errno);
		goto out;
	}
	fputs(page_head, f);
	size_t done = 0;
	for (size_t i = 0; i < n; i++)
		done += v[i].info.dir == SPOOL_DONE;
	fprintf(f, "<h1>imgspool: %zu finished job(s): %zu done, %zu failed</h1>\n<main>\n", n, done,
		n - done);
	for (size_t i = 0; i < n; i++)
		put_entry(f, &v[i], spool_url);
	fputs("</main>\n</body></html>\n", f);
	if (ferror(f) | (fclose(f) != 0) || rename(tmp, path) < 0) {
		rc = cli_fail_errno(c, "cannot write", path, errno);
		unlink(tmp);
		goto out;
	}
	printf("%s: %zu job(s)\n", path, n);
out:
	for (size_t i = 0; i < n; i++) {
		cli_info_release(&v[i].info);
		free(v[i].prompt);
	}
	free(v);
	free(spool_url);
	free(tmp);
	free(path);
	return rc;
}
