/* GET /v1/conversations/{ID}/summary: the conversation and customer summary with alerts (summary.h). */
#include "tandem/clock.h"
#include "tandem/alerts.h"
#include "tandem/api.h"
#include "tandem/app.h"
#include "tandem/config.h"
#include "tandem/context.h"
#include "tandem/error.h"
#include "tandem/log.h"
#include "tandem/store.h"
#include "tandem/summary.h"
#include "tandem/watch.h"

#include <jansson.h>
#include <math.h>
#include <stdint.h>
#include <time.h>



int api_summary(struct request *req)
{
    const char *id;
    if (!api_param_id(req, 0, &id))
        return T_OK;
    /* Rules are loaded at start-up (alert_rules_global_init); a broken operator file there stops
     * the process, so NULL here means the built-in rules failed: answer without phrase alerts
     * rather than not at all, and say so in the log (once per request is cheap and rare). */
    const struct alert_rules *rules = alert_rules_global();
    if (!rules)
        log_warn("summary_without_rules", "req_id=%s", req->id);
    /* a watched conversation: the live loop's summary for its newest message */
    int err;
    if (api_reply_cached(req, id, WATCH_SUMMARY, &err))
        return err;
    struct store *s = store_thread();
    if (!s)
        return T_ERR_NOMEM;
    const struct config *cfg = req->app->cfg;
    struct context *c = NULL;
    err = store_fetch_context(s, id, (size_t)cfg->context_messages, (size_t)cfg->history_entries, &c);
    if (err)
        return err;
    json_t *out = NULL;
    err = summary_build(c, rules, clock_wall_ms(), &out);
    context_free(c);
    if (err)
        return err;
    if (json_object_set_new(out, "took_ms",
                            json_real(clock_ms_since(req->start_ns)))) {
        json_decref(out);
        return T_ERR_NOMEM;
    }
    return http_reply_json(req, 200, out);
}
