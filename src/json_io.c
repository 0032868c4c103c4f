/* Jansson reports some failed allocations inside its lexer as syntax errors ("invalid token"),
 * and its encoder and its copy can skip a failed append and go on, so neither its error text
 * nor its output tells our memory trouble apart. A thread-local flag set by Jansson's allocator does. */
#include "tandem/json_io.h"

#include <stdlib.h>

#include "tandem/error.h"

static _Thread_local int alloc_failed;
static void *(*underlying)(size_t) = malloc;

static void *json_malloc_noted(size_t n)
{
    void *p = underlying(n);
    if (!p)
        alloc_failed = 1;
    return p;
}

void json_io_init_with(void *(*alloc)(size_t))
{
    underlying = alloc ? alloc : malloc;
    json_set_alloc_funcs(json_malloc_noted, free);
}

void json_io_init(void) { json_io_init_with(malloc); }

int json_parse(const char *text, size_t len, size_t flags, json_t **out, json_error_t *err)
{
    alloc_failed = 0;
    *out = json_loadb(text ? text : "", text ? len : 0, flags, err);
    if (*out && alloc_failed) {
        /* the lexer ignores a failed append to the text it saves, so a key or string can come
         * back with a character missing: no result is better than a wrong one */
        json_decref(*out);
        *out = NULL;
    }
    if (*out)
        return T_OK;
    if (alloc_failed || json_error_code(err) == json_error_out_of_memory || !err->text[0])
        return T_ERR_NOMEM;
    return T_ERR_BAD_JSON;
}

char *json_serialize(const json_t *j, size_t flags)
{
    alloc_failed = 0;
    char *s = json_dumps(j, flags);
    if (s && alloc_failed) {
        free(s);
        return NULL;
    }
    return s;
}

json_t *json_copy_whole(const json_t *j)
{
    alloc_failed = 0;
    json_t *c = json_copy((json_t *)j);
    if (c && alloc_failed) {
        json_decref(c);
        return NULL;
    }
    return c;
}
