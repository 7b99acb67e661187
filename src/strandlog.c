/* strandlog.c - each job left in running/ has its error said once (and again when it changes),
 * its quiet retries counted, and one line when it is settled (strandlog.h). A short array: the
 * jobs left at once are few (a failing disk), and each rescan looks at every one anyway. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strandlog.h"
#include "banned.h"

void strandlog_init(struct strandlog *sl)
{
	memset(sl, 0, sizeof(*sl));
}

void strandlog_release(struct strandlog *sl)
{
	for (size_t i = 0; i < sl->n; i++)
		free(sl->e[i].id);
	free(sl->e);
	strandlog_init(sl);
}

bool strandlog_says(uint64_t said, uint64_t line)
{
	return said != line;
}

static struct strandlog_entry *entry_of(struct strandlog *sl, const char *id)
{
	for (size_t i = 0; i < sl->n; i++)
		if (!strcmp(sl->e[i].id, id))
			return &sl->e[i];
	if (sl->n == sl->cap) {
		sl->cap = sl->cap ? sl->cap * 2 : 4;
		sl->e = xrealloc(sl->e, sl->cap * sizeof(*sl->e));
	}
	sl->e[sl->n] = (struct strandlog_entry){ .id = xstrdup(id) };
	return &sl->e[sl->n++];
}

void strandlog_say(struct strandlog *sl, enum log_level level, const char *id, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	struct strandlog_entry *e = entry_of(sl, id);
	uint64_t hash = str_hash(line);
	if (e->said)
		e->retries++;
	if (strandlog_says(e->said, hash))
		log_job(level, id, "%s", line);
	e->said = hash;
}

void strandlog_settled(struct strandlog *sl, const struct strset *stranded)
{
	size_t kept = 0;
	for (size_t i = 0; i < sl->n; i++) {
		struct strandlog_entry *e = &sl->e[i];
		if (strset_has(stranded, e->id)) {
			sl->e[kept++] = *e;
			continue;
		}
		log_job(LOG_INFO, e->id, "no longer left in running/: settled after %ld retr%s at "
			"rescans", e->retries, e->retries == 1 ? "y" : "ies");
		free(e->id);
	}
	sl->n = kept;
}
