/* The in-memory model of one conversation and its customer, as assembled from Redis. */
#ifndef TANDEM_CONTEXT_H
#define TANDEM_CONTEXT_H
#include <stddef.h>
#include <stdint.h>

#include "tandem/buf.h"

#define ID_MAX_LEN 128       /* conversation / customer ids: 1-128 of [A-Za-z0-9._-] */
#define STREAM_ID_MAX 48     /* "<ms>-<seq>" fits easily */

enum msg_role { ROLE_CUSTOMER, ROLE_AGENT, ROLE_BOT, ROLE_SYSTEM, ROLE_NOTE, ROLE_OTHER };

struct ctx_kv {
    const char *key;
    const char *value;
};

struct ctx_message {
    char id[STREAM_ID_MAX]; /* stream entry id */
    enum msg_role role;
    const char *role_name;  /* as stored */
    const char *text;       /* "" when missing */
    const char *author;     /* NULL when missing */
    int64_t ts_ms;          /* field ts, else the entry id's time */
};

struct ctx_history {
    char id[STREAM_ID_MAX];
    int64_t ts_ms; /* from the entry id */
    const char *conv_id, *summary, *outcome, *tags; /* "" when missing */
};

/* All strings are owned by the context's arena and live until context_free(). */
struct context {
    char conv_id[ID_MAX_LEN + 1];
    struct ctx_message *messages; /* oldest first; at most the configured window */
    size_t n_messages;
    struct ctx_kv *meta;
    size_t n_meta;
    const char *customer_id;      /* meta customer_id when valid, else NULL */
    struct ctx_kv *profile;
    size_t n_profile;
    struct ctx_history *history;  /* newest first */
    size_t n_history;
    char newest_id[STREAM_ID_MAX]; /* id of the newest message, "" when the stream is empty */
    struct arena arena;
};

/* 1 when s is a valid conversation/customer id (1-128 of [A-Za-z0-9._-]), else 0. */
int context_valid_id(const char *s);
/* 1 when s looks like a Redis stream id "<ms>-<seq>" or "<ms>", else 0. */
int context_valid_stream_id(const char *s);
/* Orders two stream ids ("<ms>-<seq>", seq 0 when absent) numerically: <0, 0, >0. */
int context_stream_id_cmp(const char *a, const char *b);
/* Parses a stream id's millisecond part; -1 when malformed. */
int64_t context_stream_id_ms(const char *id);

/* New, empty context for conv_id (caller checked it); NULL on OOM. Free with context_free(). */
struct context *context_new(const char *conv_id);
void context_free(struct context *c);
enum msg_role context_role_from_name(const char *name);
const char *context_role_name(enum msg_role r);

/* Lookups; borrowed strings valid until context_free(); NULL when absent. */
const char *context_meta(const struct context *c, const char *key);
/* Digest of a conversation's meta fields (as read by store_kv_from_hash), for caches keyed by
 * the state an answer was computed from: tells one conversation's meta versions apart, field
 * order aside. No security boundary. */
uint64_t context_meta_digest(const struct ctx_kv *kv, size_t n);
const char *context_profile(const struct context *c, const char *key);

/* Copy of s[0..n) into a, with NUL bytes and invalid UTF-8 replaced by U+FFFD, so the result is
 * always valid JSON string material. NULL on OOM. */
char *context_strdup_utf8(struct arena *a, const char *s, size_t n);

/* Appends the context as the JSON of GET /v1/conversations/{ID}/context to out. */
int context_render_json(const struct context *c, struct buf *out);
#endif
