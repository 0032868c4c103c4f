/* Everything Redis: the key schema of CONTRACT.md, connections, timeouts, reconnect with backoff. */
#ifndef TANDEM_STORE_H
#define TANDEM_STORE_H
#include <stddef.h>

#include "tandem/config.h"
#include "tandem/context.h"

struct redisReply;
struct store;

/* Process-wide settings shared by every connection; call once before store_new(). cfg is
 * borrowed for the life of the process. */
void store_global_init(const struct config *cfg);

/* A connection; not thread-safe: one per thread (store_thread() gives the calling thread's).
 * The connection is made lazily and remade after failures, with jittered backoff. */
struct store *store_new(void);
void store_free(struct store *s);
/* The calling thread's store, created on first use, freed when the thread exits. NULL on OOM. */
struct store *store_thread(void);

/* Key names: writes "<prefix>conv:{id}:<suffix>" etc. into out (size outsz). Returns length,
 * or -1 when it does not fit. */
int store_key_conv(char *out, size_t outsz, const char *conv_id, const char *suffix);
int store_key_cust(char *out, size_t outsz, const char *cust_id, const char *suffix);
/* "<prefix><name>" for tandem's own keys, e.g. "feedback", "memory:...". */
int store_key(char *out, size_t outsz, const char *name);

/* PING with a short timeout. T_OK or T_ERR_UNAVAILABLE; *why gets a static reason. */
int store_ping(struct store *s, const char **why);

/* Fetches the conversation's last `window` messages, its meta, and the customer's profile and
 * last `history` contacts, in one pipelined round trip when the customer is known.
 * On T_OK *out is a new context (context_free()). Errors: T_ERR_CONV_NOT_FOUND,
 * T_ERR_UNAVAILABLE, T_ERR_NOMEM. */
int store_fetch_context(struct store *s, const char *conv_id, size_t window, size_t history,
                        struct context **out);

/* The same, with the newest message considered being until_id (a stream id; NULL = newest):
 * the state of the conversation as it was when that message arrived. */
int store_fetch_context_until(struct store *s, const char *conv_id, const char *until_id, size_t window,
                              size_t history, struct context **out);

/* An HGETALL reply as key/value pairs in a (strings cleaned by context_strdup_utf8; non-string
 * pairs skipped): how the context holds meta and profile, for anyone who must match it.
 * A non-array reply is no pairs; T_ERR_INTERNAL for an odd array, T_ERR_NOMEM. */
int store_kv_from_hash(struct arena *a, const struct redisReply *r, struct ctx_kv **out, size_t *n);

/* With a redis-sentinel:// URL: asks the sentinels where the master is and, when it moved, makes
 * every connection reconnect before its next command. Called about once a second (the live
 * loop's tick). No-op for other URL kinds. Thread-safe. */
void store_sentinel_check(void);

/* Command timeout of this connection (blocking readers need more than the default). */
void store_set_timeout(struct store *s, unsigned ms);
/* Bumped on every (re)connect: a blocking reader re-reads its CLIENT ID when it changes. */
unsigned long store_generation(const struct store *s);
int store_connected(const struct store *s);

/* Runs one command given as argv (never formatted into a string). On T_OK *reply is a new
 * hiredis reply (free with store_reply_free()); a Redis error reply is returned as T_OK with
 * the error in the reply, so callers can tell "Redis said no" from "Redis unreachable".
 * Errors: T_ERR_UNAVAILABLE, T_ERR_NOMEM. */
int store_command(struct store *s, struct redisReply **reply, int argc, const char **argv,
                  const size_t *argvlen);
void store_reply_free(struct redisReply *r);
/* n commands in one round trip; replies[i] (new, free each) for command i. On error nothing is
 * left in replies. Same error rules as store_command(). */
int store_pipeline(struct store *s, size_t n, int argcs[], const char **argvs[], const size_t *lens[],
                   struct redisReply *replies[]);

/* Counters for /metrics. */
unsigned long store_stat_errors(void);
unsigned long store_stat_reconnects(void);
#endif
