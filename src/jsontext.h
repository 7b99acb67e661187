/* jsontext.h - the text of a jansson value, byte for byte as json_dumps() writes it, at a fraction
 * of its cost: jansson 2.14 formats a pointer and fills a hash table for every object and array
 * (its loop check), calls back per token and decodes every character's UTF-8. The documents
 * written per job (results, records, request bodies) go through here, and the job files and
 * answers read per job are read here when their text allows. */
#ifndef JSONTEXT_H
#define JSONTEXT_H

#include <stddef.h>
#include <stdint.h>   /* SIZE_MAX: no cap */

#include <jansson.h>

/* What json_dumps(v, flags) returns, or NULL where it would (a string that is not UTF-8; without
 * JSON_ENCODE_ANY, a v that is neither object nor array), or when the text passes cap bytes
 * (SIZE_MAX: no cap). *len (if not NULL) gets the text's length. Flags: JSON_INDENT(n),
 * JSON_COMPACT, JSON_REAL_PRECISION(n), JSON_ENCODE_ANY and JSON_PRESERVE_ORDER (what jansson
 * 2.14 does anyway); with JSON_SORT_KEYS, JSON_ENSURE_ASCII, JSON_ESCAPE_SLASH or JSON_EMBED it
 * fails (use json_dumps). Also NULL for a tree deeper than 4096 levels (a loop). Caller frees. */
char *jsontext_dump(const json_t *v, size_t flags, size_t cap, size_t *len);

/* What json_loadb(text, len, flags, error) returns, the same tree in the same order; flags 0 or
 * JSON_REJECT_DUPLICATES. Plain ASCII text with integers, the usual escapes and at most 64 levels
 * is read here, about ten times faster than jansson; any other text (\u escapes, UTF-8, reals,
 * errors...) by json_loadb itself. */
json_t *jsontext_load(const char *text, size_t len, size_t flags, json_error_t *error);
/* The tree jsontext_load reads itself, or NULL where it hands the text to json_loadb. */
json_t *jsontext_load_fast(const char *text, size_t len, size_t flags);

#endif
