/* The live loop: XREAD BLOCK over watched conversations, one recompute per new message, push. */
#ifndef TANDEM_WATCH_H
#define TANDEM_WATCH_H
#include "tandem/app.h"
#include "tandem/context.h"

struct json_t;
struct sse_event;

#define WATCH_BLOCK_MS 250    /* XREAD BLOCK; also the housekeeping tick (hung-up clients) */
#define WATCH_MAX_K 10        /* suggestions computed (and cached) per state; requests slice */
#define WATCH_EVENT_K 3       /* suggestions per pushed event */

/* What the engines say about one state of a conversation. All new references (or NULL). */
struct watch_answers {
    struct json_t *suggestions; /* the GET .../suggestions answer with WATCH_MAX_K suggestions */
    struct json_t *summary;     /* the GET .../summary answer */
    struct json_t *alerts;      /* array of alert objects, each with a "type" string */
};
/* What to compute: the live loop asks for suggestions first and pushes them before the summary. */
#define WATCH_SUGGESTIONS 0x1
#define WATCH_SUMMARY 0x2 /* the summary and its alerts */
#define WATCH_ALL (WATCH_SUGGESTIONS | WATCH_SUMMARY)
typedef int (*watch_compute_fn)(struct app *app, const struct context *ctx, struct watch_answers *out, unsigned what);
void watch_answers_cleanup(struct watch_answers *a);

/* Starts the watcher thread (own Redis connection); it computes with app->compute. */
int watch_start(struct app *app);
void watch_stop(void);

/* Watch-set changes. conv must be a valid id. from_id: the newest message the caller has
 * already covered ("" unknown: the watcher starts from the newest message it finds). */
void watch_subscribed(const char *conv, const char *from_id, int subscribed);
/* The focused conversation is watched too (so hotkeys hit the cache); NULL/"" clears. */
void watch_set_focus(const char *conv);

/* Caches a for conv (when watched and newer than what is cached): a snapshot computed outside
 * the loop (from meta with meta_digest), so the next request or stream need not compute it. */
void watch_prime(const char *conv, const struct watch_answers *a, const char *based_on, uint64_t meta_digest);

/* Forgets every cached answer (the KB changed): the next request computes afresh. */
void watch_invalidate(void);

/* Cached answers for conv when they describe its newest message (the watcher is connected and
 * caught up). On 1, *out holds new references and based_on the message id. */
int watch_cached(const char *conv, struct watch_answers *out, char based_on[STREAM_ID_MAX]);

/* A watched conversation's cached answer, serialized once per state (the hot path: no JSON tree
 * is copied or dumped per request), when it describes the newest message: what is
 * WATCH_SUGGESTIONS (GET …/suggestions with k=WATCH_EVENT_K) or WATCH_SUMMARY (GET …/summary),
 * both without took_ms. Appends it (a JSON object) to out and returns 1; 0 on a miss or when
 * out of memory. */
struct buf;
int watch_cached_json(const char *conv, unsigned what, struct buf *out);

/* The cached state of conv as snapshot events for a new stream, built once per state and shared
 * by every stream (new references in evs, at most max). 0 when conv has no current cached
 * state; then the caller computes. based_on gets the state's message id. */
size_t watch_snapshot(const char *conv, struct sse_event **evs, size_t max, char based_on[STREAM_ID_MAX]);

/* Builds the events for one state: "suggestions" (first WATCH_EVENT_K), "summary", and an
 * "alert" for each alert type not in prev_alerts (may be NULL). *n is the count written to evs
 * (at most max), each a new reference (sse_event_unref). T_ERR_NOMEM when one could not be
 * built: then *n is 0 (never a state with a part missing). */
struct sse_event;
int watch_build_events(const struct watch_answers *a, const char *conv, const char *msg_id, const struct json_t *prev_alerts,
                       struct sse_event **evs, size_t max, size_t *n);
/* Slices a suggestions answer to its first k suggestions: new reference. */
struct json_t *watch_slice_suggestions(const struct json_t *answer, size_t k);
#endif
