/* GET /v1/conversations/{ID}/events: the live stream of suggestions, summary and alerts. */
#include "tandem/api.h"
#include "tandem/app.h"
#include "tandem/error.h"
#include "tandem/sse.h"
#include "tandem/store.h"
#include "tandem/watch.h"

#include <string.h>

#define SNAPSHOT_MAX_EVENTS 16

int api_events(struct request *req)
{
    const char *id;
    if (!api_param_id(req, 0, &id))
        return T_OK;
    /* EventSource sends Last-Event-ID on reconnect; a query parameter lets a fresh page resume */
    const char *last = http_header(req, "Last-Event-ID");
    if (!last)
        last = http_query(req, "last_event_id");
    if (last && *last && !context_valid_stream_id(last))
        return http_reply_error(req, T_ERR_BAD_REQUEST, "Last-Event-ID must be a message id like 1732368000000-0");
    struct app *app = req->app;
    struct sse_sub *sub;
    int err = sse_subscribe(req, id, &sub);
    if (err)
        return err;
    /* the state now: the live loop's prepared events when current (shared by every stream of
     * this conversation), else computed here */
    struct watch_answers a = {0};
    char based_on[STREAM_ID_MAX] = "";
    struct sse_event *evs[SNAPSHOT_MAX_EVENTS];
    size_t n = watch_snapshot(id, evs, SNAPSHOT_MAX_EVENTS, based_on);
    if (n) {
        if (last && *last && context_stream_id_cmp(last, based_on) >= 0) {
            for (size_t i = 0; i < n; i++)
                sse_event_unref(evs[i]);
            n = 0; /* this client already saw this state */
        }
        sse_start(sub, based_on, evs, n);
        for (size_t i = 0; i < n; i++)
            sse_event_unref(evs[i]);
        return T_OK;
    }
    uint64_t meta_digest = 0;
    int computed = !watch_cached(id, &a, based_on);
    if (computed) {
        struct store *s = store_thread();
        struct context *c = NULL;
        err = s ? store_fetch_context(s, id, (size_t)app->cfg->context_messages, (size_t)app->cfg->history_entries, &c)
                : T_ERR_NOMEM;
        if (!err) {
            err = app->compute(app, c, &a, WATCH_ALL);
            meta_digest = context_meta_digest(c->meta, c->n_meta);
            snprintf(based_on, sizeof based_on, "%s", c->newest_id[0] ? c->newest_id : "0-0");
        }
        context_free(c);
        if (err) {
            watch_answers_cleanup(&a);
            sse_abort(req);
            return err;
        }
    }
    n = 0;
    /* a client that already saw this state gets only what comes next */
    if ((!last || !*last || context_stream_id_cmp(last, based_on) < 0) &&
        (err = watch_build_events(&a, id, based_on, NULL, evs, SNAPSHOT_MAX_EVENTS, &n)) != T_OK) {
        watch_answers_cleanup(&a);
        sse_abort(req);
        return err;
    }
    sse_start(sub, based_on, evs, n); /* the conversation is watched from here on */
    if (computed) /* what came from the cache is there already (or was dropped since) */
        watch_prime(id, &a, based_on, meta_digest);
    for (size_t i = 0; i < n; i++)
        sse_event_unref(evs[i]);
    watch_answers_cleanup(&a);
    return T_OK;
}
