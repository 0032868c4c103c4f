/* Capped growable buffers and a bump arena: the two ways request-scoped memory is held. */
#include "tandem/buf.h"
#include "tandem/error.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void buf_init(struct buf *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max;
}

void buf_cleanup(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static int buf_reserve(struct buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return T_ERR_TOO_LARGE;
    size_t need = b->len + extra;
    if (b->max && need > b->max)
        return T_ERR_TOO_LARGE;
    if (need + 1 <= b->cap)
        return T_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need + 1)
        cap = cap > SIZE_MAX / 2 ? need + 1 : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p)
        return T_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return T_OK;
}

int buf_append(struct buf *b, const void *data, size_t len)
{
    int err = buf_reserve(b, len);
    if (err)
        return err;
    if (len)
        memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
    return T_OK;
}

int buf_puts(struct buf *b, const char *s) { return buf_append(b, s, strlen(s)); }
int buf_putc(struct buf *b, char c) { return buf_append(b, &c, 1); }

int buf_vprintf(struct buf *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0)
        return T_ERR_INTERNAL;
    int err = buf_reserve(b, (size_t)n);
    if (err)
        return err;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return T_OK;
}

int buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int err = buf_vprintf(b, fmt, ap);
    va_end(ap);
    return err;
}

char *buf_take(struct buf *b)
{
    char *p = b->data;
    if (!p)
        p = calloc(1, 1);
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

/* ---- arena ---- */

struct arena_chunk {
    struct arena_chunk *next;
    size_t used, size;
    _Alignas(16) unsigned char mem[];
};

#define ARENA_CHUNK_DEFAULT 8192  /* most contexts fit in a few chunks */
#define ARENA_CHUNK_FIRST 512     /* most requests need a few ids and nothing else */
#define ARENA_MAX_ALLOC (1u << 30) /* nothing we hold per request comes near; bigger is a bug or an attack */

void arena_init(struct arena *a) { a->head = NULL; }

void arena_cleanup(struct arena *a)
{
    struct arena_chunk *c = a->head;
    while (c) {
        struct arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
}

void *arena_alloc(struct arena *a, size_t size)
{
    size_t need = (size + 15) & ~(size_t)15;
    if (need < size || need > ARENA_MAX_ALLOC)
        return NULL;
    struct arena_chunk *c = a->head;
    if (!c || c->size - c->used < need) {
        /* start small (a long-lived request keeps its arena: every open event stream), then
         * double up to the default so big users (a context) need few chunks */
        size_t grow = c ? (c->size >= ARENA_CHUNK_DEFAULT ? ARENA_CHUNK_DEFAULT : c->size * 2) : ARENA_CHUNK_FIRST;
        size_t sz = need > grow ? need : grow;
        c = malloc(sizeof(*c) + sz);
        if (!c)
            return NULL;
        c->used = 0;
        c->size = sz;
        /* A big one-off allocation goes behind the current chunk so its free space stays usable. */
        if (a->head && need > ARENA_CHUNK_DEFAULT) {
            c->next = a->head->next;
            a->head->next = c;
        } else {
            c->next = a->head;
            a->head = c;
        }
    }
    void *p = c->mem + c->used;
    c->used += need;
    return p;
}

char *arena_strndup(struct arena *a, const char *s, size_t len)
{
    char *p = arena_alloc(a, len + 1);
    if (!p)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

char *arena_strdup(struct arena *a, const char *s) { return arena_strndup(a, s, strlen(s)); }
