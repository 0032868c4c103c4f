/* What the agent is shown for one state of a conversation: suggestions, summary and alerts,
 * computed together so the live loop, the event stream and the caches agree. */
#include "tandem/clock.h"
#include "tandem/events.h"
#include "tandem/alerts.h"
#include "tandem/api.h"
#include "tandem/error.h"
#include "tandem/kb.h"
#include "tandem/memory.h"
#include "tandem/store.h"
#include "tandem/summary.h"
#include "tandem/watch.h"

#include <jansson.h>
#include <time.h>


int events_compute(struct app *app, const struct context *ctx, struct watch_answers *out, unsigned what)
{
    out->suggestions = out->summary = out->alerts = NULL;
    int err = T_OK;
    if (what & WATCH_SUGGESTIONS) {
        struct store *s = store_thread();
        if (!s)
            return T_ERR_NOMEM;
        struct kb *kb = app_kb_acquire(app);
        struct memory *mem = memory_store_acquire(app_memory(app), s, kb, 0);
        struct arena a;
        arena_init(&a);
        err = api_suggest_compute(s, ctx, kb, mem, WATCH_MAX_K, NULL, &a, &out->suggestions);
        arena_cleanup(&a);
        memory_unref(mem);
        app_kb_release(kb);
    }
    if (!err && (what & WATCH_SUMMARY))
        err = summary_build(ctx, alert_rules_global(), clock_wall_ms(), &out->summary);
    if (!err && (what & WATCH_SUMMARY)) {
        json_t *alerts = json_object_get(json_object_get(out->summary, "conversation"), "alerts");
        out->alerts = json_is_array(alerts) ? json_incref(alerts) : json_array();
    }
    if (err)
        watch_answers_cleanup(out);
    return err;
}
