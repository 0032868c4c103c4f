/* Parsing JSON from clients, telling bad input (400) from a failed allocation (500). */
#ifndef TANDEM_JSON_PARSE_H
#define TANDEM_JSON_PARSE_H
#include <jansson.h>
#include <stddef.h>

/* Routes Jansson's allocations through a wrapper that notes failures. Call once at start-up,
 * before any thread parses; without it the checks below rely on Jansson's error code only. */
void json_parse_init(void);
/* The same over another allocator (the unit tests make it fail). */
void json_parse_init_with(void *(*alloc)(size_t));

/* Parses text[0..len) with flags. T_OK and *out set; T_ERR_BAD_JSON with err filled; or
 * T_ERR_NOMEM when an allocation failed on the way (Jansson may report that as a syntax
 * error: the client must not be told its request is wrong). */
int json_parse(const char *text, size_t len, size_t flags, json_t **out, json_error_t *err);
#endif
