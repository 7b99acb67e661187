/* secret.c - the registry of secrets and the redaction of text taken from outside.
 *
 * A short list guarded by a mutex: the loop thread registers (start-up, SIGHUP), helper threads
 * redact response bodies. Redaction shrinks in place, so it never allocates and never fails.
 * Secrets taken from the environment are kept from their first read and removed from it, and the
 * process is made not dumpable, so neither /proc/PID/environ nor a core file shows them. */
#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "log.h"
#include "secret.h"
#include "util.h"
#include "banned.h"

#define SECRET_MIN 4

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char **secrets;
static size_t n_secrets;
/* Environment variables read for secrets, with their values as first read (NULL: unset). */
static struct kept_env {
	char *name, *value;
} *kept;
static size_t n_kept;

void secret_register(const char *value)
{
	if (!value || strlen(value) < SECRET_MIN)
		return;
	pthread_mutex_lock(&lock);
	bool known = false;
	for (size_t i = 0; i < n_secrets && !known; i++)
		known = !strcmp(secrets[i], value);
	if (!known) {
		secrets = xrealloc(secrets, (n_secrets + 1) * sizeof(*secrets));
		secrets[n_secrets++] = xstrdup(value);
	}
	pthread_mutex_unlock(&lock);
}

/* Replaces each occurrence of one secret; returns the new length. */
static size_t redact_one(char *buf, size_t len, const char *secret)
{
	size_t slen = strlen(secret), mlen = strlen(SECRET_MARK);
	size_t out = 0, in = 0;
	while (in < len) {
		const char *hit = memmem(buf + in, len - in, secret, slen);
		size_t upto = hit ? (size_t)(hit - buf) : len;
		memmove(buf + out, buf + in, upto - in);
		out += upto - in;
		if (!hit)
			break;
		if (slen >= mlen) {
			memcpy(buf + out, SECRET_MARK, mlen);
			out += mlen;
		} else {
			memset(buf + out, '*', slen);
			out += slen;
		}
		in = upto + slen;
	}
	return out;
}

size_t secret_redact(char *buf, size_t len)
{
	if (!buf || !len)
		return len;
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < n_secrets; i++)
		len = redact_one(buf, len, secrets[i]);
	pthread_mutex_unlock(&lock);
	return len;
}

void secret_redact_str(char *s)
{
	if (s)
		s[secret_redact(s, strlen(s))] = '\0';
}

/* Whether buf[0..len) holds a registered secret: most text holds none, and is not copied. */
static bool holds_secret(const char *buf, size_t len)
{
	bool found = false;
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < n_secrets && !found; i++)
		found = memmem(buf, len, secrets[i], strlen(secrets[i])) != NULL;
	pthread_mutex_unlock(&lock);
	return found;
}

/* An object's member names are text from outside too ("usage":{"sk\u002d...":1}): a member
 * whose name holds a secret is put back under the redacted name (replacing a member already
 * there under that name, which loses a value, never a secret). */
static void redact_names(json_t *obj)
{
	const char *key;
	json_t *item;
	size_t n = 0;
	char **names = NULL;
	json_object_foreach(obj, key, item) {
		if (holds_secret(key, strlen(key))) {
			names = xrealloc(names, (n + 1) * sizeof(*names));
			names[n++] = xstrdup(key);
		}
	}
	for (size_t i = 0; i < n; i++) {
		item = json_incref(json_object_get(obj, names[i]));
		json_object_del(obj, names[i]);
		secret_redact_str(names[i]);
		json_object_set_new(obj, names[i], item);
		free(names[i]);
	}
	free(names);
}

void secret_redact_json(json_t *v)
{
	size_t i;
	const char *key;
	json_t *item;
	if (json_is_string(v)) {
		size_t len = json_string_length(v);
		if (!holds_secret(json_string_value(v), len))
			return;
		char *copy = xstrndup(json_string_value(v), len);
		json_string_setn(v, copy, secret_redact(copy, len));
		free(copy);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, item)
			secret_redact_json(item);
	} else if (json_is_object(v)) {
		redact_names(v);
		json_object_foreach(v, key, item)
			secret_redact_json(item);
	}
}

const char *secret_env(const char *name)
{
	if (!name)
		return NULL;
	pthread_mutex_lock(&lock);
	size_t i = 0;
	while (i < n_kept && strcmp(kept[i].name, name))
		i++;
	if (i == n_kept) {
		const char *v = getenv(name);
		kept = xrealloc(kept, (n_kept + 1) * sizeof(*kept));
		kept[n_kept++] = (struct kept_env){ xstrdup(name), v && *v ? xstrdup(v) : NULL };
	}
	const char *value = kept[i].value;
	pthread_mutex_unlock(&lock);
	return value;
}

void secret_env_scrub(void)
{
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < n_kept; i++) {
		/* /proc/PID/environ shows the bytes the process started with, whatever environ
		 * points at: each NAME=VALUE is zeroed where it is, once unsetenv dropped it. */
		size_t nlen = strlen(kept[i].name), n = 0;
		char **entries = NULL;
		for (char **e = environ; e && *e; e++) {
			if (!strncmp(*e, kept[i].name, nlen) && (*e)[nlen] == '=') {
				entries = xrealloc(entries, (n + 1) * sizeof(*entries));
				entries[n++] = *e;
			}
		}
		unsetenv(kept[i].name);
		for (size_t j = 0; j < n; j++)
			explicit_bzero(entries[j], strlen(entries[j]));
		free(entries);
	}
	pthread_mutex_unlock(&lock);
}

void secret_keep_out_of_dumps(void)
{
	/* Not dumpable: no core file, and /proc/PID/environ, mem and the like are root's only. */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		log_warn("cannot keep the keys out of core dumps (prctl PR_SET_DUMPABLE): %s",
			 strerror(errno));
}

void secret_clear(void)
{
	pthread_mutex_lock(&lock);
	for (size_t i = 0; i < n_kept; i++) {
		if (kept[i].value)
			explicit_bzero(kept[i].value, strlen(kept[i].value));
		free(kept[i].value);
		free(kept[i].name);
	}
	free(kept);
	kept = NULL;
	n_kept = 0;
	for (size_t i = 0; i < n_secrets; i++) {
		explicit_bzero(secrets[i], strlen(secrets[i]));
		free(secrets[i]);
	}
	free(secrets);
	secrets = NULL;
	n_secrets = 0;
	pthread_mutex_unlock(&lock);
}
