/* Process-wide state shared by the handlers: configuration, token, focus, engines. */
#ifndef TANDEM_APP_H
#define TANDEM_APP_H
#include <pthread.h>
#include <stdint.h>

#include "tandem/config.h"
#include "tandem/context.h"

#define TOKEN_MAX_LEN 256

struct kb;
struct memory_store;
struct watch_answers;
struct context;

struct app {
    const struct config *cfg;
    char token[TOKEN_MAX_LEN + 1]; /* the bearer token; secret */
    size_t token_len;
    char token_path[4096];         /* where the token was read or written, "" when from env */

    /* The conversation the agent is looking at (PUT /v1/focus). */
    pthread_mutex_t focus_lock;
    char focus_id[ID_MAX_LEN + 1]; /* "" when none */
    int64_t focus_since_ms;

    struct kb *kb; /* the knowledge base; NULL when none is loaded */
    /* Guards kb while it is swapped on SIGHUP; readers take a reference (app_kb_acquire in
     * kb.h) and drop the lock at once, so a reload never waits for requests. */
    pthread_mutex_t kb_lock;
    /* Reply memory (memory.h); NULL means the process-wide default store. */
    struct memory_store *memory;

    /* Computes suggestions, summary and alerts for one state of a conversation (events.c);
     * used by the live loop, the event stream's snapshot and the cache. */
    int (*compute)(struct app *app, const struct context *ctx, struct watch_answers *out, unsigned what);
};
#endif
