/* Capped growable byte buffer: appends past the cap fail with T_ERR_TOO_LARGE, never truncate. */
#ifndef TANDEM_BUF_H
#define TANDEM_BUF_H
#include <stddef.h>
#include <stdarg.h>

struct buf {
    char *data;  /* always NUL-terminated when non-NULL */
    size_t len;  /* bytes used, excluding the NUL */
    size_t cap;  /* bytes allocated */
    size_t max;  /* most bytes it may ever hold (0 = no cap) */
};

/* Caller storage: buf_init() then buf_cleanup(). */
void buf_init(struct buf *b, size_t max);
void buf_cleanup(struct buf *b);
/* Returns T_OK, T_ERR_TOO_LARGE (b unchanged) or T_ERR_NOMEM. */
int buf_append(struct buf *b, const void *data, size_t len);
int buf_puts(struct buf *b, const char *s);
int buf_putc(struct buf *b, char c);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int buf_vprintf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Empties b, keeping its memory. */
void buf_reset(struct buf *b);
/* Hands the data to the caller (free() it) and resets b; returns "" copy when empty. NULL on OOM. */
char *buf_take(struct buf *b);

/* Bump allocator for many small strings freed together (a context, a request). */
struct arena_chunk;
struct arena {
    struct arena_chunk *head;
};
void arena_init(struct arena *a);
void arena_cleanup(struct arena *a);
/* New memory owned by the arena, 16-byte aligned; NULL on OOM. */
void *arena_alloc(struct arena *a, size_t size);
/* Copy of s[0..len) NUL-terminated, owned by the arena; NULL on OOM. */
char *arena_strndup(struct arena *a, const char *s, size_t len);
char *arena_strdup(struct arena *a, const char *s);
#endif
