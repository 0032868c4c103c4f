/* Handlers for feedback on suggestions (POST /v1/suggestions/{SID}/feedback) and the quality figures and report. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

#include "tandem/clock.h"
#include "tandem/api.h"
#include "tandem/app.h"
#include "tandem/context.h"
#include "tandem/error.h"
#include "tandem/feedback.h"
#include "tandem/kb.h"
#include "tandem/log.h"
#include "tandem/memory.h"
#include "tandem/quality.h"
#include "tandem/store.h"

static int reply_stored(struct request *req, const char *entry_id, int duplicate)
{
    json_t *o = json_pack("{s:s, s:b}", "feedback_entry_id", entry_id, "duplicate", duplicate);
    if (!o)
        return T_ERR_NOMEM;
    return http_reply_json(req, 202, o);
}

static int reply_id_reused(struct request *req, const char *feedback_id)
{
    char msg[300];
    snprintf(msg, sizeof msg,
             "feedback_id '%s' was already used for another suggestion; send a new feedback_id for each action",
             feedback_id);
    return http_reply_error(req, T_ERR_CONFLICT, msg);
}

/* Adds the reply the agent sent to the reply memory, as the next similar conversation should get
 * it: redacted (this customer's card or e-mail must never be suggested to the next one) and with
 * this customer's and agent's names turned back into placeholders. */
static int learn(struct store *s, const struct feedback_suggestion *sg, const struct feedback_entry *e)
{
    /* once per suggestion: repeated accepts (new feedback ids) must not grow the memory */
    char key[320];
    if (feedback_key(key, sizeof key, "feedback", "learned") < 0)
        return T_ERR_INTERNAL;
    size_t kl = strlen(key);
    if (kl + 2 + strlen(sg->sid) >= sizeof key)
        return T_ERR_INTERNAL;
    snprintf(key + kl, sizeof key - kl, ":%s", sg->sid);
    const char *argv[] = {"SET", key, "1", "NX", "EX", "172800"};
    redisReply *r = NULL;
    int err0 = store_command(s, &r, 6, argv, NULL);
    if (err0)
        return err0;
    int is_new = r->type == REDIS_REPLY_STATUS;
    int refused = r->type == REDIS_REPLY_ERROR;
    store_reply_free(r);
    if (refused)
        return T_ERR_UNAVAILABLE;
    if (!is_new)
        return T_OK;
    struct context *ctx = NULL;
    int err = store_fetch_context(s, sg->conversation_id, 1, 0, &ctx);
    if (err && err != T_ERR_CONV_NOT_FOUND)
        return err;
    const char *full = ctx ? context_profile(ctx, "name") : NULL;
    const char *first = ctx ? context_profile(ctx, "first_name") : NULL;
    char first_buf[128] = "";
    if ((!first || !*first) && full) {
        size_t n = strcspn(full, " \t");
        if (n < sizeof first_buf) {
            memcpy(first_buf, full, n);
            first_buf[n] = '\0';
        }
        first = first_buf;
    }
    const char *agent = ctx ? context_meta(ctx, "agent_name") : NULL;
    struct buf t;
    buf_init(&t, 0);
    err = feedback_templatize(e->final_redacted.data ? e->final_redacted.data : "", full, first, agent, &t);
    if (!err)
        err = memory_add_reply(s, sg->sid, sg->brand, sg->lang, sg->context, t.data, sg->kb_id);
    if (!err)
        feedback_count_learned();
    buf_cleanup(&t);
    context_free(ctx);
    return err;
}

int api_feedback(struct request *req)
{
    const char *sid = req->n_params ? req->params[0] : NULL;
    if (!feedback_valid_sid(sid))
        return http_reply_error(req, T_ERR_BAD_ID, "suggestion ids are 'sg_' followed by 16 lowercase hex digits");
    json_t *body = api_parse_body_object(req);
    if (!body)
        return T_OK;
    int64_t now = clock_wall_ms();
    struct feedback_input in;
    struct feedback_entry e;
    int have_entry = 0;
    char msg[400];
    int err = feedback_parse(body, now, &in, msg, sizeof msg);
    if (err) {
        err = http_reply_error(req, err, msg);
        goto out;
    }
    struct store *s = store_thread();
    if (!s) {
        err = T_ERR_NOMEM;
        goto out;
    }
    struct feedback_suggestion sg;
    int found;
    char dup_entry[STREAM_ID_MAX], dup_sid[FEEDBACK_SID_BUF];
    err = feedback_fetch(s, sid, in.feedback_id, &req->arena, &sg, &found, dup_entry, dup_sid);
    if (err)
        goto out;
    if (dup_entry[0]) {
        /* a retry: answered from the first call, nothing written again */
        if (strcmp(dup_sid, sid) != 0) {
            err = reply_id_reused(req, in.feedback_id);
            goto out;
        }
        feedback_count_stored(in.action, 1);
        err = reply_stored(req, dup_entry, 1);
        goto out;
    }
    if (!found) {
        snprintf(msg, sizeof msg,
                 "no suggestion %s: unknown or expired (suggestions are kept 24 hours after they were made)", sid);
        err = http_reply_error(req, T_ERR_NOT_FOUND_ITEM, msg);
        goto out;
    }
    if (in.conversation_id && strcmp(in.conversation_id, sg.conversation_id) != 0) {
        err = http_reply_error(req, T_ERR_CONFLICT, "this suggestion belongs to another conversation");
        goto out;
    }
    err = feedback_entry_build(&in, &sg, now, &e);
    have_entry = 1;
    if (err)
        goto out;
    /* Learning before the entry: if the entry then fails, the client retries and the same reply
     * is added again, which the memory counts once (same suggestion, context and text). The other
     * order could store the feedback and lose what it teaches. */
    int learns = in.action != FEEDBACK_REJECTED && e.has_final && sg.context[0];
    if (learns) {
        err = learn(s, &sg, &e);
        if (err)
            goto out;
    }
    char entry_id[STREAM_ID_MAX];
    int dup;
    err = feedback_store(s, &e, quality_per_agent(), entry_id, &dup, dup_sid);
    if (err)
        goto out;
    if (dup && strcmp(dup_sid, sid) != 0) {
        err = reply_id_reused(req, in.feedback_id);
        goto out;
    }
    feedback_count_stored(in.action, dup);
    /* this sidecar ranks with its own rejection at once; others on their next computed answer */
    feedback_rejections_sync(s, NULL, NULL, in.action == FEEDBACK_REJECTED && !dup);
    log_info("feedback_stored", "req_id=%s suggestion_id=%s action=%s duplicate=%d edit_distance=%ld learned=%d",
             req->id, sid, feedback_action_name(in.action), dup, e.edit_distance, learns);
    err = reply_stored(req, entry_id, dup);
out:
    if (have_entry)
        feedback_entry_cleanup(&e);
    json_decref(body);
    return err;
}

int api_quality(struct request *req)
{
    const char *since = http_query(req, "since");
    int64_t since_ms = -1;
    if (since && quality_parse_since(since, &since_ms) != 0)
        return http_reply_error(req, T_ERR_BAD_REQUEST,
                                "'since' must be unix milliseconds or an ISO 8601 date or time, e.g. 2026-11-23 or "
                                "2026-11-23T10:00:00Z");
    struct store *s = store_thread();
    if (!s)
        return T_ERR_NOMEM;
    struct kb *kb = app_kb_acquire(req->app);
    json_t *o = NULL;
    int err = quality_json(s, kb, since_ms, clock_wall_ms(), &o);
    app_kb_release(kb);
    if (err)
        return err;
    return http_reply_json(req, 200, o);
}

/* A query number lo..hi; def when absent; 0 with *bad set when invalid. */
static long long query_num(struct request *req, const char *name, long long lo, long long hi, long long def, int *bad)
{
    const char *v = http_query(req, name);
    if (!v)
        return def;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || n < lo || n > hi) {
        *bad = 1;
        return 0;
    }
    return n;
}

int api_quality_report(struct request *req)
{
    int bad = 0;
    struct quality_report_opts o;
    o.min_actions = query_num(req, "min_actions", 1, 1000000, QUALITY_DEFAULT_MIN_ACTIONS, &bad);
    if (bad)
        return http_reply_error(req, T_ERR_BAD_REQUEST, "'min_actions' must be an integer from 1 to 1000000");
    o.min_cluster = (size_t)query_num(req, "min_cluster", 1, 1000000, QUALITY_DEFAULT_MIN_CLUSTER, &bad);
    if (bad)
        return http_reply_error(req, T_ERR_BAD_REQUEST, "'min_cluster' must be an integer from 1 to 1000000");
    o.limit = (size_t)query_num(req, "limit", 1, QUALITY_MAX_LIMIT, QUALITY_DEFAULT_LIMIT, &bad);
    if (bad)
        return http_reply_error(req, T_ERR_BAD_REQUEST, "'limit' must be an integer from 1 to 100");
    struct store *s = store_thread();
    if (!s)
        return T_ERR_NOMEM;
    struct app *app = req->app;
    struct kb *kb = app_kb_acquire(app);
    struct memory *mem = memory_store_acquire(app_memory(app), s, kb, 0);
    json_t *out = NULL;
    int err = quality_report(s, kb, mem, &o, clock_wall_ms(), &out);
    memory_unref(mem);
    app_kb_release(kb);
    if (err)
        return err;
    return http_reply_json(req, 200, out);
}
