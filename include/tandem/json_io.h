/* JSON in and out through Jansson, telling our memory trouble apart: a failed allocation is a
 * 500, never a client's bad JSON (400) and never a malformed answer. */
#ifndef TANDEM_JSON_IO_H
#define TANDEM_JSON_IO_H
#include <jansson.h>
#include <stddef.h>

/* Routes Jansson's allocations through a wrapper that notes failures. Call once at start-up,
 * before any thread uses Jansson; without it the checks below rely on Jansson's own errors. */
void json_io_init(void);
/* The same over another allocator (the unit tests make it fail). */
void json_io_init_with(void *(*alloc)(size_t));

/* Parses text[0..len) with flags. T_OK and *out set; T_ERR_BAD_JSON with err filled; or
 * T_ERR_NOMEM when an allocation failed on the way: Jansson may report that as a syntax error
 * (the client must not be told its request is wrong) or drop a character of a string and
 * succeed. Every parse in tandem goes through here. */
int json_parse(const char *text, size_t len, size_t flags, json_t **out, json_error_t *err);

/* json_dumps(j, flags), or NULL when any allocation failed on the way: Jansson ignores a failed
 * append of an object key, so its output can be malformed ("code:" for "code":) and still be
 * returned. Free the result with free(). */
char *json_serialize(const json_t *j, size_t flags);

/* json_copy(j) (shallow: the members are shared), or NULL when an allocation failed on the
 * way: Jansson ignores a failed insert while copying, so its copy can lack a key. */
json_t *json_copy_whole(const json_t *j);
#endif
