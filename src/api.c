/* The route table and the core handlers: health, readiness, metrics, context, focus. */
#include "tandem/clock.h"
#include "tandem/api.h"
#include "tandem/app.h"
#include "tandem/error.h"
#include "tandem/json_io.h"
#include "tandem/log.h"
#include "tandem/metrics.h"
#include "tandem/panel.h"
#include "tandem/store.h"
#include "tandem/watch.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const struct route api_routes[] = {
    {"/healthz", HTTP_GET, api_healthz, "healthz", ROUTE_NO_AUTH, 0},
    {"/readyz", HTTP_GET, api_readyz, "readyz", ROUTE_NO_AUTH, 0},
    {"/metrics", HTTP_GET, api_metrics, "metrics", ROUTE_NO_AUTH, 0},
    {"/v1/conversations/*/context", HTTP_GET, api_context, "context", 0, 0},
    {"/v1/focus", HTTP_GET, api_focus_get, "focus_get", 0, 0},
    {"/v1/focus", HTTP_PUT, api_focus_put, "focus_put", 0, 0},
    {"/v1/conversations/*/suggestions", HTTP_GET, api_suggestions, "suggestions", 0, 0},
    {"/v1/conversations/*/summary", HTTP_GET, api_summary, "summary", 0, 0},
    {"/v1/conversations/*/events", HTTP_GET, api_events, "events", ROUTE_TOKEN_IN_QUERY, 0},
    {"/v1/focus/suggestions/*", HTTP_GET, api_focus_suggestion, "focus_suggestion", 0, 0},
    {"/v1/transcripts", HTTP_POST, api_transcripts, "transcripts", ROUTE_NDJSON, 0},
    {"/v1/suggestions/*/feedback", HTTP_POST, api_feedback, "feedback", 0, 0},
    {"/v1/quality", HTTP_GET, api_quality, "quality", 0, 0},
    {"/v1/quality/report", HTTP_GET, api_quality_report, "quality_report", 0, 0},
    {"/panel", HTTP_GET, panel_redirect, "panel_redirect", ROUTE_NO_AUTH, 0},
    {"/panel/*", HTTP_GET, panel_serve, "panel", ROUTE_NO_AUTH, 0},
    {NULL, 0, NULL, NULL, 0, 0},
};


json_t *api_parse_body_object(struct request *req)
{
    json_error_t jerr;
    json_t *root;
    /* REJECT_DUPLICATES: {"a":1,"a":2} is ambiguous input, refuse it rather than guess */
    int err = json_parse(req->body.data, req->body.len, JSON_REJECT_DUPLICATES, &root, &jerr);
    if (err == T_ERR_NOMEM) {
        http_reply_error(req, T_ERR_NOMEM, NULL);
        return NULL;
    }
    if (!root) {
        char msg[300];
        snprintf(msg, sizeof msg, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
        http_reply_error(req, T_ERR_BAD_JSON, msg);
        return NULL;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        http_reply_error(req, T_ERR_BAD_JSON, "the body must be a JSON object");
        return NULL;
    }
    return root;
}

int api_reply_cached(struct request *req, const char *conv, unsigned what, int *err)
{
    struct buf out;
    buf_init(&out, 0);
    if (!watch_cached_json(conv, what, &out) || out.len < 2 || out.data[out.len - 1] != '}') {
        buf_cleanup(&out);
        return 0; /* a miss, or no memory for the copy: the caller computes */
    }
    out.len--; /* reopen the object for one more member */
    *err = buf_printf(&out, "%s\"took_ms\":%.3f}", out.len > 1 ? "," : "", clock_ms_since(req->start_ns));
    size_t len = out.len;
    char *body = *err ? NULL : buf_take(&out);
    buf_cleanup(&out);
    if (!*err)
        *err = body ? http_reply_take(req, 200, "application/json", body, len) : T_ERR_NOMEM;
    return 1;
}

int api_param_id(struct request *req, size_t i, const char **out)
{
    const char *id = i < req->n_params ? req->params[i] : NULL;
    if (!context_valid_id(id)) {
        http_reply_error(req, T_ERR_BAD_ID, NULL);
        return 0;
    }
    *out = id;
    return 1;
}

int api_healthz(struct request *req)
{
    static const char body[] = "{\"status\":\"ok\"}";
    return http_reply_data(req, 200, "application/json", body, sizeof body - 1);
}

int api_readyz(struct request *req)
{
    struct store *s = store_thread();
    const char *why = "out of memory";
    int err = s ? store_ping(s, &why) : T_ERR_NOMEM;
    if (err) {
        char msg[200];
        snprintf(msg, sizeof msg, "not ready: %s; tandem reconnects by itself", why);
        return http_reply_error(req, T_ERR_UNAVAILABLE, msg);
    }
    static const char body[] = "{\"status\":\"ready\"}";
    return http_reply_data(req, 200, "application/json", body, sizeof body - 1);
}

int api_metrics(struct request *req)
{
    struct buf out;
    buf_init(&out, 16u << 20);
    int err = metrics_render(&out);
    if (!err)
        err = http_reply_data(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len);
    buf_cleanup(&out);
    return err;
}

int api_context(struct request *req)
{
    const char *id;
    if (!api_param_id(req, 0, &id))
        return T_OK;
    struct store *s = store_thread();
    if (!s)
        return T_ERR_NOMEM;
    const struct config *cfg = req->app->cfg;
    struct context *c = NULL;
    int err = store_fetch_context(s, id, (size_t)cfg->context_messages, (size_t)cfg->history_entries, &c);
    if (err)
        return err;
    struct buf out;
    buf_init(&out, 0);
    err = context_render_json(c, &out);
    if (!err)
        err = http_reply_data(req, 200, "application/json", out.data, out.len);
    buf_cleanup(&out);
    context_free(c);
    return err;
}

static int reply_focus(struct request *req, const char *id, int64_t since)
{
    json_t *o = json_pack("{s:o, s:o}", "conversation_id", id && *id ? json_string(id) : json_null(), "since",
                          id && *id ? json_integer(since) : json_null());
    return http_reply_json(req, 200, o);
}

int api_focus_get(struct request *req)
{
    struct app *app = req->app;
    char id[ID_MAX_LEN + 1];
    pthread_mutex_lock(&app->focus_lock);
    memcpy(id, app->focus_id, sizeof id);
    int64_t since = app->focus_since_ms;
    pthread_mutex_unlock(&app->focus_lock);
    if (!id[0])
        return T_ERR_NO_FOCUS;
    return reply_focus(req, id, since);
}

int api_focus_put(struct request *req)
{
    json_t *root = api_parse_body_object(req);
    if (!root)
        return T_OK;
    json_t *v = json_object_get(root, "conversation_id");
    const char *id = NULL;
    int err = T_OK;
    if (!v) {
        http_reply_error(req, T_ERR_BAD_JSON, "'conversation_id' is required (a conversation id, or null to clear)");
        goto out;
    }
    if (!json_is_null(v)) {
        id = json_string_value(v);
        if (!id || !context_valid_id(id)) {
            http_reply_error(req, T_ERR_BAD_ID, "'conversation_id' must be 1-128 characters of [A-Za-z0-9._-], or null");
            goto out;
        }
    }
    struct app *app = req->app;
    int64_t since = clock_wall_ms();
    pthread_mutex_lock(&app->focus_lock);
    snprintf(app->focus_id, sizeof app->focus_id, "%s", id ? id : "");
    app->focus_since_ms = since;
    pthread_mutex_unlock(&app->focus_lock);
    watch_set_focus(id);
    err = reply_focus(req, id, since);
out:
    json_decref(root);
    return err;
}
