/* secret.h - the one place that knows the daemon's secrets, so that nothing taken from outside
 * (an upstream's message, a body kept on disk, a header, a downloaded file) carries one back out.
 *
 * Every secret the daemon loads registers here (API keys today; an object-store or webhook
 * secret later); everything that comes from an upstream goes through secret_redact() before it
 * is kept, written or logged. Thread-safe: helper threads redact while the loop registers. */
#ifndef SECRET_H
#define SECRET_H

#include <jansson.h>
#include <stddef.h>

#define SECRET_MARK "[redacted]"

/* Remembers a copy of value (values under 4 bytes are ignored: they would match anywhere).
 * Registering the same value again does nothing; secrets stay registered for the process's life,
 * so a key replaced on SIGHUP is still redacted if an upstream quotes it later. */
void secret_register(const char *value);
/* Replaces, in place, every occurrence of a registered secret in buf[0..len) by SECRET_MARK
 * (or by as many '*' when the secret is shorter than the mark). Returns the new length; the
 * bytes after it are left as they were (terminate the text again if it needs it). */
size_t secret_redact(char *buf, size_t len);
/* The same for a NUL-terminated string. */
void secret_redact_str(char *s);
/* The same for every string inside a JSON value: values, and objects' member names (a member
 * whose name held a secret is moved to the redacted name). */
void secret_redact_json(json_t *v);
/* The value of the environment variable name (NULL when unset or empty), as it was the first
 * time it was asked for: a reload gets the start-up value, after secret_env_scrub() removed the
 * variable. The value is borrowed till secret_clear(). */
const char *secret_env(const char *name);
/* Removes every variable secret_env() read from the environment, zeroing its bytes (which
 * /proc/PID/environ shows). Start-up only: unsetenv is not safe while other threads read the
 * environment, so a variable first named by a reload stays there until a restart. */
void secret_env_scrub(void);
/* Makes the process not dumpable: no core file carries a key, and only root reads its
 * /proc/PID/environ and mem. */
void secret_keep_out_of_dumps(void);
/* Forgets every secret (zeroing the copies) and every kept variable; for tests and exit. */
void secret_clear(void);

#endif
