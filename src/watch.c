/* The live loop: one thread XREADs (BLOCK) the streams of watched conversations, recomputes the
 * state once per new message, caches it, and publishes events to the SSE hub.
 *
 * A conversation is watched while it has subscribers or is focused. When the watch set grows,
 * the thread is woken with CLIENT UNBLOCK so a new conversation is read at once. Across a Redis
 * outage the loop keeps each conversation's last id and resumes from it: nothing missed,
 * nothing pushed twice. */
#include "tandem/json_io.h"
#include "tandem/clock.h"
#include "tandem/watch.h"
#include "tandem/api.h"
#include "tandem/engine_llm.h"
#include "tandem/error.h"
#include "tandem/kb.h"
#include "tandem/llm.h"
#include "tandem/log.h"
#include "tandem/metrics.h"
#include "tandem/sse.h"
#include "tandem/store.h"

#include <hiredis/hiredis.h>
#include <malloc.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WATCH_READ_COUNT 64 /* entries per stream per XREAD: bounds one loop's work */
#define WATCH_BAD_KEY_RETRY_NS 5000000000u /* a key that is not a stream is looked at again after */
#define WATCH_PROBE_NS 2000000000u /* how often the watched keys' types are checked (probe_keys) */

struct watched {
    char conv[ID_MAX_LEN + 1];
    char last_id[STREAM_ID_MAX]; /* newest message processed; "" = not yet known */
    int subscribed, focused;
    struct watch_answers cache;  /* state at cache_id */
    char cache_id[STREAM_ID_MAX];
    struct sse_event *snap[16];  /* the cached state as events, built once, shared by new streams */
    size_t n_snap;
    unsigned long cache_gen;     /* bumped whenever the cache changes, even at the same id */
    unsigned long snap_gen;      /* the cache_gen the snapshot was built from; 0: none */
    char *sugg_json, *sum_json;  /* the first WATCH_EVENT_K suggestions and the summary,
                                    serialized, at snap_gen */
    size_t sugg_len, sum_len;
    uint64_t meta_digest;        /* of the meta the cached answers were computed with */
    unsigned long pub_gen;       /* bumped (under pub_lock) when new suggestions are pushed */
    json_t *pushed_alerts;       /* what the loop pushed (or found on the first load): a new
                                    message's alerts are new against these, never against a
                                    cache a stream primed out of turn */
    uint64_t skip_until_ns;      /* its key is not a stream: left out of XREAD until then */
    int redo;                    /* the state at last_id was pushed in part (out of memory):
                                    the probe recomputes it */
    uint64_t llm_handle;         /* the model call for the newest message, 0 when none */
    struct llm_push *llm_push;   /* its callback argument: freed by whoever wins llm_cancel() */
    struct watched *next;
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
/* Held while a conversation's newest state is settled and its suggestions published, so a late
 * model answer cannot overtake a newer message's. Taken before lock; MHD is called under it
 * (lock itself is never held across MHD calls). */
static pthread_mutex_t pub_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static struct watched *list;
static size_t n_watched;
static char focus[ID_MAX_LEN + 1];
static int running, redis_ok = 1, blocked;
static long long client_id = -1;
static pthread_t thread;
static struct app *gapp;
static atomic_ulong stat_recomputes, stat_errors;
static atomic_ullong stat_recompute_ns;


void watch_answers_cleanup(struct watch_answers *a)
{
    json_decref(a->suggestions);
    json_decref(a->summary);
    json_decref(a->alerts);
    a->suggestions = a->summary = a->alerts = NULL;
}

static void snap_clear(struct watched *w)
{
    for (size_t i = 0; i < w->n_snap; i++)
        sse_event_unref(w->snap[i]);
    w->n_snap = 0;
    w->snap_gen = 0;
    free(w->sugg_json);
    free(w->sum_json);
    w->sugg_json = w->sum_json = NULL;
    w->sugg_len = w->sum_len = 0;
}

static struct watched *find(const char *conv)
{
    for (struct watched *w = list; w; w = w->next)
        if (strcmp(w->conv, conv) == 0)
            return w;
    return NULL;
}

/* Caller holds lock; w's cache is current. Builds the shared forms of the cached state once per
 * state: the default suggestions answer and the summary, serialized, and the snapshot events,
 * which carry the same bytes. All or nothing: a part that could not be built (out of memory)
 * leaves none, so callers compute instead of serving a snapshot without it; tried again on the
 * next use. */
static void snap_refresh(struct watched *w)
{
    if (w->snap_gen == w->cache_gen)
        return;
    snap_clear(w);
    json_t *sl = watch_slice_suggestions(w->cache.suggestions, WATCH_EVENT_K);
    w->sugg_json = sl ? json_serialize(sl, JSON_COMPACT) : NULL;
    w->sugg_len = w->sugg_json ? strlen(w->sugg_json) : 0;
    json_decref(sl);
    w->sum_json = w->cache.summary ? json_serialize(w->cache.summary, JSON_COMPACT) : NULL;
    w->sum_len = w->sum_json ? strlen(w->sum_json) : 0;
    int whole = w->sugg_json && (!w->cache.summary || w->sum_json);
    /* the order of watch_build_events: suggestions, summary, then the alerts */
    const char *names[2] = {"suggestions", "summary"};
    const char *bodies[2] = {w->sugg_json, w->sum_json};
    const size_t lens[2] = {w->sugg_len, w->sum_len};
    for (size_t i = 0; i < 2 && whole; i++) {
        if (!bodies[i])
            continue;
        struct sse_event *ev = sse_event_new(names[i], w->cache_id, bodies[i], lens[i]);
        if (ev)
            w->snap[w->n_snap++] = ev;
        whole = ev != NULL;
    }
    const struct watch_answers alerts_only = {NULL, NULL, w->cache.alerts};
    size_t max = sizeof w->snap / sizeof *w->snap, na = 0;
    if (whole)
        whole = watch_build_events(&alerts_only, w->conv, w->cache_id, NULL, w->snap + w->n_snap,
                                   max - w->n_snap, &na) == T_OK;
    w->n_snap += na;
    if (!whole) {
        snap_clear(w);
        return;
    }
    w->snap_gen = w->cache_gen;
}

/* Caller holds lock. Forgets w's answers: the next GET or stream asks Redis. */
static void cache_drop(struct watched *w)
{
    watch_answers_cleanup(&w->cache);
    w->cache_id[0] = '\0';
    w->cache_gen++;
    snap_clear(w);
}

static int cache_current(const struct watched *w)
{
    return w && w->cache_id[0] && strcmp(w->cache_id, w->last_id) == 0 && w->cache.suggestions;
}

int watch_cached_json(const char *conv, unsigned what, struct buf *out)
{
    int hit = 0;
    pthread_mutex_lock(&lock);
    struct watched *w = redis_ok ? find(conv) : NULL;
    if (cache_current(w)) {
        snap_refresh(w);
        const char *j = what == WATCH_SUMMARY ? w->sum_json : w->sugg_json;
        size_t n = what == WATCH_SUMMARY ? w->sum_len : w->sugg_len;
        hit = j && buf_append(out, j, n) == T_OK;
    }
    pthread_mutex_unlock(&lock);
    return hit;
}

struct llm_push;
static void llm_push_free(struct llm_push *p);

/* Cancels a model call; its callback will not run when this wins, so its argument is freed here. */
static void push_cancel(uint64_t handle, struct llm_push *p)
{
    if (handle && llm_cancel(handle))
        llm_push_free(p);
}

static void watched_free(struct watched *w)
{
    watch_answers_cleanup(&w->cache);
    json_decref(w->pushed_alerts);
    snap_clear(w);
    free(w);
}

/* Caller holds lock. Drops w when nobody needs it any more. */
static uint64_t maybe_remove(struct watched *w, struct llm_push **push)
{
    *push = NULL;
    if (w->subscribed || w->focused)
        return 0;
    uint64_t pending = w->llm_handle;
    *push = w->llm_push;
    for (struct watched **pp = &list; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            break;
        }
    watched_free(w);
    n_watched--;
    return pending; /* the caller cancels it, outside the lock */
}

/* Caller holds lock. */
static struct watched *add(const char *conv, const char *from_id, int *created)
{
    struct watched *w = find(conv);
    *created = 0;
    if (w)
        return w;
    w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    snprintf(w->conv, sizeof w->conv, "%s", conv);
    snprintf(w->last_id, sizeof w->last_id, "%s", from_id ? from_id : "");
    w->next = list;
    list = w;
    n_watched++;
    *created = 1;
    return w;
}

/* Interrupts the watcher's XREAD BLOCK so it picks up a new conversation at once. */
static void wake_reader(void)
{
    pthread_mutex_lock(&lock);
    long long id = blocked ? client_id : -1;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
    if (id < 0)
        return;
    struct store *s = store_thread();
    if (!s)
        return;
    char ids[24];
    snprintf(ids, sizeof ids, "%lld", id);
    const char *argv[] = {"CLIENT", "UNBLOCK", ids};
    struct redisReply *r = NULL;
    if (store_command(s, &r, 3, argv, NULL) == T_OK)
        store_reply_free(r);
}

void watch_subscribed(const char *conv, const char *from_id, int subscribed)
{
    int created = 0;
    pthread_mutex_lock(&lock);
    struct watched *w = subscribed ? add(conv, from_id, &created) : find(conv);
    /* a new first subscriber may have come between the hub's "last one left" and this call */
    if (w && !subscribed && sse_subscribers(conv) > 0)
        w = NULL;
    uint64_t cancel = 0;
    struct llm_push *push = NULL;
    if (w) {
        w->subscribed = subscribed;
        if (!subscribed)
            cancel = maybe_remove(w, &push);
    }
    pthread_mutex_unlock(&lock);
    push_cancel(cancel, push); /* nobody is left to see the model's answer */
    if (created)
        wake_reader();
}

void watch_set_focus(const char *conv)
{
    int created = 0;
    pthread_mutex_lock(&lock);
    if (focus[0]) {
        struct watched *old = find(focus);
        if (old) {
            old->focused = 0;
            struct llm_push *push;
            uint64_t cancel = maybe_remove(old, &push);
            if (cancel) {
                pthread_mutex_unlock(&lock);
                push_cancel(cancel, push);
                pthread_mutex_lock(&lock);
            }
        }
    }
    snprintf(focus, sizeof focus, "%s", conv ? conv : "");
    if (focus[0]) {
        struct watched *w = add(focus, "", &created);
        if (w)
            w->focused = 1;
    }
    pthread_mutex_unlock(&lock);
    if (created)
        wake_reader();
}

void watch_prime(const char *conv, const struct watch_answers *a, const char *based_on, uint64_t meta_digest)
{
    pthread_mutex_lock(&lock);
    struct watched *w = find(conv);
    if (w && (!w->cache_id[0] || context_stream_id_cmp(based_on, w->cache_id) > 0)) {
        watch_answers_cleanup(&w->cache);
        w->cache.suggestions = json_incref(a->suggestions);
        w->cache.summary = json_incref(a->summary);
        w->cache.alerts = json_incref(a->alerts);
        snprintf(w->cache_id, sizeof w->cache_id, "%s", based_on);
        w->cache_gen++;
        w->meta_digest = meta_digest;
        /* a first subscriber's state is where the loop starts from (its last_id): what it
         * computed is what was pushed, to the one stream there is */
        if (!w->pushed_alerts && strcmp(based_on, w->last_id) == 0)
            w->pushed_alerts = json_incref(a->alerts);
    }
    pthread_mutex_unlock(&lock);
}

void watch_invalidate(void)
{
    pthread_mutex_lock(&lock);
    for (struct watched *w = list; w; w = w->next)
        cache_drop(w);
    pthread_mutex_unlock(&lock);
}

int watch_cached(const char *conv, struct watch_answers *out, char based_on[STREAM_ID_MAX])
{
    int hit = 0;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&lock);
    struct watched *w = redis_ok ? find(conv) : NULL;
    if (cache_current(w)) {
        out->suggestions = json_incref(w->cache.suggestions);
        out->summary = json_incref(w->cache.summary);
        out->alerts = json_incref(w->cache.alerts);
        memcpy(based_on, w->cache_id, STREAM_ID_MAX);
        hit = 1;
    }
    pthread_mutex_unlock(&lock);
    return hit;
}

size_t watch_snapshot(const char *conv, struct sse_event **evs, size_t max, char based_on[STREAM_ID_MAX])
{
    size_t n = 0;
    pthread_mutex_lock(&lock);
    struct watched *w = redis_ok ? find(conv) : NULL;
    if (cache_current(w)) {
        snap_refresh(w);
        for (; n < w->n_snap && n < max; n++)
            evs[n] = sse_event_ref(w->snap[n]);
        memcpy(based_on, w->cache_id, STREAM_ID_MAX);
        if (!n) /* nothing to say (no events could be built): let the caller compute */
            based_on[0] = '\0';
    }
    pthread_mutex_unlock(&lock);
    return n;
}

json_t *watch_slice_suggestions(const json_t *answer, size_t k)
{
    json_t *copy = json_copy_whole(answer); /* shallow: shares the suggestion objects */
    if (!copy)
        return NULL;
    json_t *arr = json_object_get(copy, "suggestions");
    if (json_is_array(arr) && json_array_size(arr) > k) {
        json_t *sliced = json_array();
        int bad = !sliced;
        for (size_t i = 0; i < k && !bad; i++)
            bad = json_array_append(sliced, json_array_get(arr, i));
        if (bad || json_object_set_new(copy, "suggestions", sliced)) {
            if (bad)
                json_decref(sliced);
            json_decref(copy); /* a shorter list than asked for would be a wrong answer */
            return NULL;
        }
    }
    return copy;
}

static struct sse_event *event_of(const char *name, const char *id, json_t *data)
{
    if (!data)
        return NULL;
    char *s = json_serialize(data, JSON_COMPACT); /* compact JSON never contains a raw newline */
    if (!s)
        return NULL;
    struct sse_event *ev = sse_event_new(name, id, s, strlen(s));
    free(s);
    return ev;
}

static int has_type(const json_t *alerts, const char *type)
{
    size_t i;
    json_t *a;
    json_array_foreach(alerts, i, a)
    {
        const char *t = json_string_value(json_object_get(a, "type"));
        if (t && strcmp(t, type) == 0)
            return 1;
    }
    return 0;
}

int watch_build_events(const struct watch_answers *a, const char *conv, const char *msg_id, const json_t *prev_alerts,
                       struct sse_event **evs, size_t max, size_t *n_out)
{
    size_t n = 0;
    int whole = 1;
    if (a->suggestions && n < max) {
        json_t *sl = watch_slice_suggestions(a->suggestions, WATCH_EVENT_K);
        evs[n] = event_of("suggestions", msg_id, sl);
        json_decref(sl);
        whole = evs[n] != NULL;
        n += whole;
    }
    if (whole && a->summary && n < max) {
        evs[n] = event_of("summary", msg_id, a->summary);
        whole = evs[n] != NULL;
        n += whole;
    }
    size_t i;
    json_t *al;
    json_array_foreach(a->alerts, i, al)
    {
        const char *t = json_string_value(json_object_get(al, "type"));
        if (!whole || n >= max || !t || (prev_alerts && has_type(prev_alerts, t)))
            continue;
        json_t *data = json_pack("{s:s, s:s, s:O}", "conversation_id", conv, "based_on", msg_id ? msg_id : "", "alert", al);
        evs[n] = event_of("alert", msg_id, data);
        json_decref(data);
        whole = evs[n] != NULL;
        n += whole;
    }
    if (!whole) {
        while (n)
            sse_event_unref(evs[--n]);
    }
    *n_out = n;
    return whole ? T_OK : T_ERR_NOMEM;
}

/* ---- the model's suggestions, pushed when they arrive ---- */

struct llm_push {
    char conv[ID_MAX_LEN + 1];
    char based_on[STREAM_ID_MAX];
    unsigned long pub_gen; /* the suggestions it words: still the newest pushed? */
    struct context *ctx;
    json_t *local;
};

static void llm_push_free(struct llm_push *p)
{
    context_free(p->ctx);
    json_decref(p->local);
    free(p);
}

/* Caller holds lock. The watched conversation when it still shows the suggestions p words:
 * no newer message and no recompute (meta) since; else NULL. */
static struct watched *push_target(const struct llm_push *p)
{
    struct watched *w = find(p->conv);
    return w && strcmp(w->last_id, p->based_on) == 0 && w->pub_gen == p->pub_gen ? w : NULL;
}

/* On the LLM worker: publish the model's answer if the conversation has not moved on. */
static void llm_push_done(struct llm_result *res, void *arg)
{
    struct llm_push *p = arg;
    int current = 0;
    pthread_mutex_lock(&lock);
    struct watched *w = push_target(p);
    if (w) {
        current = 1;
        w->llm_handle = 0;
        w->llm_push = NULL;
    }
    pthread_mutex_unlock(&lock);
    struct store *s = store_thread();
    json_t *answer = NULL;
    if (current && res && strcmp(res->outcome, "ok") == 0 && s &&
        api_suggest_llm_answer(s, p->ctx, p->local, res, &answer) == T_OK) {
        json_t *sl = watch_slice_suggestions(answer, WATCH_EVENT_K);
        struct sse_event *ev = event_of("suggestions", p->based_on, sl);
        if (ev) {
            sse_event_mark_update(ev);
            /* still current? checked again and published under pub_lock, which the loop holds
             * from moving last_id to publishing the next message's suggestions: this answer
             * cannot overtake them */
            pthread_mutex_lock(&pub_lock);
            pthread_mutex_lock(&lock);
            current = push_target(p) != NULL;
            pthread_mutex_unlock(&lock);
            if (current)
                sse_publish(p->conv, ev);
            pthread_mutex_unlock(&pub_lock);
            sse_event_unref(ev);
        }
        json_decref(sl);
        json_decref(answer);
    }
    llm_result_free(res);
    llm_push_free(p);
}

/* Asks the model for better wording of the state just pushed; takes ctx. Replaces (cancels)
 * the call for an older message of the same conversation. */
static void llm_push_start(const char *conv, const char *based_on, struct context *ctx, const struct watch_answers *a)
{
    struct llm_push *p = calloc(1, sizeof *p);
    if (!p) {
        context_free(ctx);
        return;
    }
    snprintf(p->conv, sizeof p->conv, "%s", conv);
    snprintf(p->based_on, sizeof p->based_on, "%s", based_on);
    p->ctx = ctx;
    p->local = watch_slice_suggestions(a->suggestions, WATCH_EVENT_K);
    const char *wants = json_string_value(json_object_get(json_object_get(a->summary, "conversation"), "wants"));
    struct kb *kb = app_kb_acquire(gapp);
    struct arena ar;
    arena_init(&ar);
    struct llm_request lr;
    uint64_t handle = 0;
    const char *reason = NULL;
    int err = p->local ? engine_llm_request(ctx, p->local, kb, wants, WATCH_EVENT_K, gapp->cfg->llm_timeout_ms, &ar, &lr)
                       : T_ERR_NOMEM;
    uint64_t old = 0;
    struct llm_push *old_push = NULL;
    pthread_mutex_lock(&lock); /* the callback may run before llm_submit returns: register first */
    struct watched *w = find(conv);
    if (w) {
        p->pub_gen = w->pub_gen;
        old = w->llm_handle;
        old_push = w->llm_push;
        w->llm_handle = 0;
        w->llm_push = NULL;
    }
    pthread_mutex_unlock(&lock);
    push_cancel(old, old_push);
    if (!err)
        err = llm_submit(&lr, llm_push_done, p, &handle, &reason);
    arena_cleanup(&ar);
    app_kb_release(kb);
    if (err) {
        log_debug("llm_push_skipped", "conv=%s reason=%s", conv, reason ? reason : "nomem");
        llm_push_free(p);
        return;
    }
    pthread_mutex_lock(&lock);
    w = push_target(p);
    if (w) {
        w->llm_handle = handle; /* if the call already ended, cancelling this stale handle returns 0 */
        w->llm_push = p;
    }
    pthread_mutex_unlock(&lock);
}

/* Computes the state at msg_id (or the newest when NULL: a first load, which pushes nothing),
 * caches it and pushes it. update: the state at an id already pushed, recomputed because the
 * meta changed (or its first computation ran out of memory half-way); its events also reach
 * streams whose snapshot is at that id. Returns T_OK, or an error when nothing was done and
 * the caller should try the same id again (Redis failed, memory ran out). */
static int process(struct store *s, const char *conv, const char *msg_id, int update)
{
    const struct config *cfg = gapp->cfg;
    struct context *c = NULL;
    uint64_t t0 = clock_mono_ns();
    int err = store_fetch_context_until(s, conv, msg_id, (size_t)cfg->context_messages,
                                        (size_t)cfg->history_entries, &c);
    if (err == T_ERR_CONV_NOT_FOUND) {
        /* not created yet (focus set early) or deleted: nothing to say, nothing to keep */
        pthread_mutex_lock(&lock);
        struct watched *w = find(conv);
        if (w && w->cache_id[0])
            cache_drop(w);
        if (w)
            w->redo = 0;
        pthread_mutex_unlock(&lock);
        return T_OK;
    }
    if (err == T_ERR_UNAVAILABLE || err == T_ERR_NOMEM)
        return err; /* passing: this message is tried again */
    if (err) {
        /* lasting (a key of the wrong type): retrying would spin on it and stall the others */
        atomic_fetch_add(&stat_errors, 1);
        log_warn("recompute_failed", "conv=%s err=%s", conv, tandem_err_code(err));
        return T_OK;
    }
    char id[STREAM_ID_MAX];
    snprintf(id, sizeof id, "%s", c->newest_id[0] ? c->newest_id : "0-0");
    struct sse_event *evs[16];
    size_t n = 0;
    /* suggestions first: the agent sees them before the summary is computed */
    struct watch_answers a = {0};
    err = gapp->compute(gapp, c, &a, WATCH_SUGGESTIONS);
    if (!err && msg_id)
        err = watch_build_events(&a, conv, id, NULL, evs, 1, &n);
    if (err == T_ERR_NOMEM) {
        /* nothing published or cached yet: the caller tries this message again */
        watch_answers_cleanup(&a);
        context_free(c);
        return err;
    }
    if (!err && msg_id) {
        /* from here the cached state (the previous message's) is no longer current: a stream
         * opened now must not take it as its snapshot, or it would miss these suggestions */
        for (size_t i = 0; update && i < n; i++)
            sse_event_mark_update(evs[i]);
        pthread_mutex_lock(&pub_lock);
        pthread_mutex_lock(&lock);
        struct watched *w0 = find(conv);
        if (w0 && (!w0->last_id[0] || context_stream_id_cmp(id, w0->last_id) > 0))
            memcpy(w0->last_id, id, sizeof id);
        if (w0 && update)
            cache_drop(w0); /* recomputed: the old answers are no snapshot any more either */
        if (w0)
            w0->pub_gen++;
        pthread_mutex_unlock(&lock);
        for (size_t i = 0; i < n; i++) {
            sse_publish(conv, evs[i]);
            sse_event_unref(evs[i]);
        }
        pthread_mutex_unlock(&pub_lock);
    }
    struct watch_answers rest = {0};
    if (!err)
        err = gapp->compute(gapp, c, &rest, WATCH_SUMMARY);
    a.summary = rest.summary;
    a.alerts = rest.alerts;
    rest.suggestions = NULL;
    json_t *prev_alerts = NULL;
    pthread_mutex_lock(&lock);
    struct watched *w = find(conv);
    if (w)
        prev_alerts = json_incref(w->pushed_alerts);
    pthread_mutex_unlock(&lock);
    n = 0;
    if (!err && msg_id) /* a new message: push; an initial load only fills the cache */
        err = watch_build_events(&rest, conv, id, prev_alerts, evs, 16, &n);
    if (err) {
        atomic_fetch_add(&stat_errors, 1);
        log_warn("recompute_failed", "conv=%s err=%s", conv, tandem_err_code(err));
        pthread_mutex_lock(&lock);
        w = find(conv);
        if (w && msg_id && strcmp(w->last_id, id) == 0)
            w->redo = err == T_ERR_NOMEM; /* its suggestions are out, the rest is not: the probe
                                             recomputes it (not a lasting error: that would spin) */
        else if (w && !msg_id && err != T_ERR_NOMEM)
            memcpy(w->last_id, id, sizeof id); /* a first load that cannot succeed goes on from
                                                  the newest message (else it is tried again) */
        pthread_mutex_unlock(&lock);
        json_decref(prev_alerts);
        watch_answers_cleanup(&a);
        context_free(c);
        /* a lasting compute error must not stall the stream; a first load that ran out of
         * memory is tried again */
        return err == T_ERR_NOMEM && !msg_id ? err : T_OK;
    }
    /* remember the alerts now pushed, update the cache */
    pthread_mutex_lock(&lock);
    w = find(conv);
    if (w) {
        if (!w->last_id[0] || context_stream_id_cmp(id, w->last_id) >= 0) { /* never backwards */
            json_decref(w->pushed_alerts);
            w->pushed_alerts = json_incref(a.alerts);
        }
        if (!w->cache_id[0] || context_stream_id_cmp(id, w->cache_id) >= 0) {
            watch_answers_cleanup(&w->cache);
            w->cache.suggestions = json_incref(a.suggestions);
            w->cache.summary = json_incref(a.summary);
            w->cache.alerts = json_incref(a.alerts);
            memcpy(w->cache_id, id, sizeof id);
            w->cache_gen++;
            w->meta_digest = context_meta_digest(c->meta, c->n_meta);
        }
        if (!w->last_id[0] || context_stream_id_cmp(id, w->last_id) > 0)
            memcpy(w->last_id, id, sizeof id);
        if (strcmp(w->last_id, id) == 0)
            w->redo = 0; /* the newest state is whole */
    }
    pthread_mutex_unlock(&lock);
    for (size_t i = 0; i < n; i++) {
        if (update)
            sse_event_mark_update(evs[i]);
        sse_publish(conv, evs[i]);
        sse_event_unref(evs[i]);
    }
    json_decref(prev_alerts);
    if (msg_id && strcmp(id, msg_id) == 0 && llm_enabled() && sse_subscribers(conv) > 0) {
        llm_push_start(conv, id, c, &a); /* takes c */
        c = NULL;
    }
    watch_answers_cleanup(&a);
    context_free(c);
    atomic_fetch_add(&stat_recomputes, 1);
    atomic_fetch_add(&stat_recompute_ns, clock_mono_ns() - t0);
    return T_OK;
}

static void publish_status(int ok)
{
    const char *data = ok ? "{\"redis\":\"ok\"}"
                          : "{\"redis\":\"unavailable\",\"message\":\"Redis is not reachable; events resume "
                            "when it is back, without gaps\"}";
    struct sse_event *ev = sse_event_new("status", NULL, data, strlen(data));
    if (ev) {
        sse_publish(NULL, ev);
        sse_event_unref(ev);
    }
}

static void set_redis_ok(int ok)
{
    pthread_mutex_lock(&lock);
    int changed = redis_ok != ok;
    redis_ok = ok;
    pthread_mutex_unlock(&lock);
    if (changed) {
        log_info(ok ? "watch_redis_ok" : "watch_redis_down", "%s", "");
        publish_status(ok);
    }
}

/* Conversation id from a key "<prefix>conv:{ID}:msgs". */
static int conv_of_key(const char *key, char *conv)
{
    const char *a = strchr(key, '{'), *b = a ? strchr(a, '}') : NULL;
    if (!a || !b || (size_t)(b - a - 1) > ID_MAX_LEN)
        return -1;
    memcpy(conv, a + 1, (size_t)(b - a - 1));
    conv[b - a - 1] = '\0';
    return context_valid_id(conv) ? 0 : -1;
}

/* Hands freed memory back to the system now and then: a burst of streams or events leaves
 * free heap behind that malloc would otherwise keep. */
static void trim_memory(uint64_t *last)
{
    uint64_t now = clock_mono_ns();
    if (now - *last < 5000000000u)
        return;
    *last = now;
    malloc_trim(0);
}

static void heartbeat(uint64_t *last_ping)
{
    uint64_t now = clock_mono_ns();
    if (now - *last_ping < (uint64_t)SSE_HEARTBEAT_MS * 1000000u)
        return;
    *last_ping = now;
    struct sse_event *ev = sse_comment_new("ping");
    if (ev) {
        sse_publish(NULL, ev);
        sse_event_unref(ev);
    }
}

/* Digest of a conversation's meta from its HGETALL reply, read as the context reads it. */
static int meta_digest_of(const struct redisReply *r, uint64_t *out)
{
    struct arena a;
    arena_init(&a);
    struct ctx_kv *kv;
    size_t n;
    int err = store_kv_from_hash(&a, r, &kv, &n);
    if (!err)
        *out = context_meta_digest(kv, n);
    arena_cleanup(&a);
    return err;
}

/* One round trip over every watched conversation: TYPE of its messages key and its meta.
 * - A key that is gone (the conversation was deleted, perhaps to erase it) drops the cached
 *   answers, which would otherwise be served until a next message that never comes.
 * - A key that is not a stream (a connector's mistake; XREAD refuses the whole call for it) is
 *   left out of XREAD for WATCH_BAD_KEY_RETRY_NS, so the others keep their events.
 * - Meta that changed since the cached answers were computed (a connector that writes brand,
 *   lang or the agent after the first message) has the state recomputed and pushed again.
 * Run now and then, and when XREAD says WRONGTYPE. */
static int probe_keys(struct store *s)
{
    pthread_mutex_lock(&lock);
    size_t n = n_watched, i = 0;
    char(*keys)[2][320] = calloc(n ? n : 1, sizeof *keys);
    for (struct watched *w = list; keys && w && i < n; w = w->next, i++) {
        store_key_conv(keys[i][0], sizeof keys[i][0], w->conv, "msgs");
        store_key_conv(keys[i][1], sizeof keys[i][1], w->conv, "meta");
    }
    pthread_mutex_unlock(&lock);
    n = i;
    size_t nc = 2 * n;
    int *argcs = calloc(nc + 1, sizeof *argcs);
    const char ***argvs = calloc(nc + 1, sizeof *argvs);
    const char **args = calloc(2 * nc + 1, sizeof *args);
    const size_t **lens = calloc(nc + 1, sizeof *lens);
    struct redisReply **rep = calloc(nc + 1, sizeof *rep);
    struct {
        char conv[ID_MAX_LEN + 1], at[STREAM_ID_MAX];
    } *stale = calloc(n ? n : 1, sizeof *stale); /* to recompute, once the lock is released */
    size_t n_stale = 0;
    int err = T_ERR_NOMEM;
    if (keys && argcs && argvs && args && lens && rep && stale) {
        for (i = 0; i < nc; i++) {
            args[2 * i] = i % 2 ? "HGETALL" : "TYPE";
            args[2 * i + 1] = keys[i / 2][i % 2];
            argcs[i] = 2;
            argvs[i] = &args[2 * i];
        }
        err = n ? store_pipeline(s, nc, argcs, argvs, lens, rep) : T_OK;
    }
    uint64_t now = clock_mono_ns();
    for (i = 0; !err && i < n; i++) {
        const struct redisReply *t = rep[2 * i];
        char conv[ID_MAX_LEN + 1];
        uint64_t md = 0;
        int gone = t->type == REDIS_REPLY_STATUS && !strcmp(t->str, "none");
        int wrong = t->type == REDIS_REPLY_STATUS && !gone && strcmp(t->str, "stream") != 0;
        int have_md = meta_digest_of(rep[2 * i + 1], &md) == T_OK;
        if (conv_of_key(keys[i][0], conv) != 0)
            continue;
        pthread_mutex_lock(&lock);
        struct watched *w = find(conv);
        if (w && gone && w->cache_id[0]) {
            cache_drop(w);
            log_info("watch_conversation_gone", "conv=%s", conv);
        }
        if (w && wrong) {
            if (w->skip_until_ns <= now)
                log_warn("watch_not_a_stream", "conv=%s type=%s", conv, t->str);
            w->skip_until_ns = now + WATCH_BAD_KEY_RETRY_NS;
            atomic_fetch_add(&stat_errors, 1);
        }
        if (w && !gone && !wrong &&
            ((have_md && cache_current(w) && md != w->meta_digest) || (w->redo && context_valid_stream_id(w->last_id)))) {
            memcpy(stale[n_stale].conv, conv, sizeof conv);
            memcpy(stale[n_stale].at, w->last_id, STREAM_ID_MAX);
            n_stale++;
        }
        pthread_mutex_unlock(&lock);
    }
    for (i = 0; !err && i < nc; i++)
        store_reply_free(rep[i]);
    for (i = 0; !err && i < n_stale; i++)
        err = process(s, stale[i].conv, stale[i].at, 1);
    free(keys), free(argcs), free(argvs), free(args), free(lens), free(rep), free(stale);
    return err;
}

/* One XREAD round over the current watch set. */
static int read_round(struct store *s, unsigned long *gen)
{
    /* conversations whose starting point is unknown: load their newest state first */
    char pending[ID_MAX_LEN + 1];
    for (;;) {
        pending[0] = '\0';
        pthread_mutex_lock(&lock);
        for (struct watched *w = list; w; w = w->next)
            if (!w->last_id[0]) {
                memcpy(pending, w->conv, sizeof pending);
                snprintf(w->last_id, sizeof w->last_id, "0-0"); /* provisional: empty stream */
                break;
            }
        pthread_mutex_unlock(&lock);
        if (!pending[0])
            break;
        int err = process(s, pending, NULL, 0);
        if (err) {
            pthread_mutex_lock(&lock);
            struct watched *w = find(pending);
            if (w && strcmp(w->last_id, "0-0") == 0)
                w->last_id[0] = '\0';
            pthread_mutex_unlock(&lock);
            return err;
        }
    }
    if (!store_connected(s) || store_generation(s) != *gen) {
        const char *argv[] = {"CLIENT", "ID"};
        struct redisReply *r = NULL;
        int err = store_command(s, &r, 2, argv, NULL);
        if (err)
            return err;
        pthread_mutex_lock(&lock);
        client_id = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        pthread_mutex_unlock(&lock);
        store_reply_free(r);
        *gen = store_generation(s);
    }
    pthread_mutex_lock(&lock);
    uint64_t now = clock_mono_ns();
    size_t n = 0;
    for (struct watched *w = list; w; w = w->next)
        n += w->skip_until_ns <= now;
    if (!n) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_nsec += (long)WATCH_BLOCK_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cond, &lock, &until);
        pthread_mutex_unlock(&lock);
        return T_OK;
    }
    const char **argv = calloc(6 + 2 * n, sizeof *argv);
    char(*keys)[320] = calloc(n, sizeof *keys);
    char(*ids)[STREAM_ID_MAX] = calloc(n, sizeof *ids);
    if (!argv || !keys || !ids) {
        pthread_mutex_unlock(&lock);
        free(argv), free(keys), free(ids);
        return T_ERR_NOMEM;
    }
    size_t i = 0;
    for (struct watched *w = list; w && i < n; w = w->next) {
        if (w->skip_until_ns > now)
            continue;
        store_key_conv(keys[i], sizeof keys[i], w->conv, "msgs");
        memcpy(ids[i], w->last_id, STREAM_ID_MAX);
        i++;
    }
    blocked = 1;
    pthread_mutex_unlock(&lock);
    char count[16], block[16];
    snprintf(count, sizeof count, "%d", WATCH_READ_COUNT);
    snprintf(block, sizeof block, "%d", WATCH_BLOCK_MS);
    int argc = 0;
    argv[argc++] = "XREAD";
    argv[argc++] = "COUNT";
    argv[argc++] = count;
    argv[argc++] = "BLOCK";
    argv[argc++] = block;
    argv[argc++] = "STREAMS";
    for (size_t k = 0; k < n; k++)
        argv[argc++] = keys[k];
    for (size_t k = 0; k < n; k++)
        argv[argc++] = ids[k];
    struct redisReply *r = NULL;
    int err = store_command(s, &r, argc, argv, NULL);
    pthread_mutex_lock(&lock);
    blocked = 0;
    pthread_mutex_unlock(&lock);
    free(argv);
    free(keys);
    free(ids);
    if (err)
        return err;
    if (r->type == REDIS_REPLY_ERROR) {
        /* UNBLOCKED (our own wake-up) is normal; WRONGTYPE names no key, so find the ones that
         * are not streams and leave them out for a while; anything else is logged and retried */
        int normal = strncmp(r->str, "UNBLOCKED", 9) == 0;
        int wrongtype = strncmp(r->str, "WRONGTYPE", 9) == 0;
        store_reply_free(r);
        if (wrongtype)
            return probe_keys(s);
        if (!normal)
            log_warn("watch_xread_error", "%s", "");
        return normal ? T_OK : T_ERR_UNAVAILABLE;
    }
    set_redis_ok(1);
    /* [[key, [[id, fields], ...]], ...] */
    for (size_t k = 0; r->type == REDIS_REPLY_ARRAY && k < r->elements; k++) {
        struct redisReply *st = r->element[k];
        char conv[ID_MAX_LEN + 1];
        if (st->type != REDIS_REPLY_ARRAY || st->elements != 2 || st->element[0]->type != REDIS_REPLY_STRING ||
            conv_of_key(st->element[0]->str, conv) != 0)
            continue;
        struct redisReply *entries = st->element[1];
        for (size_t e = 0; entries->type == REDIS_REPLY_ARRAY && e < entries->elements; e++) {
            struct redisReply *ent = entries->element[e];
            if (ent->type != REDIS_REPLY_ARRAY || ent->elements < 1 || ent->element[0]->type != REDIS_REPLY_STRING)
                continue;
            const char *id = ent->element[0]->str;
            err = process(s, conv, id, 0);
            if (err) {
                store_reply_free(r);
                return err;
            }
            pthread_mutex_lock(&lock); /* advance even if the state could not be computed */
            struct watched *w = find(conv);
            if (w && context_stream_id_cmp(id, w->last_id) > 0)
                snprintf(w->last_id, sizeof w->last_id, "%s", id);
            pthread_mutex_unlock(&lock);
        }
    }
    store_reply_free(r);
    return T_OK;
}

static void *loop(void *arg)
{
    (void)arg;
    struct store *s = store_new();
    if (!s) {
        log_error("watch_start_failed", "reason=oom");
        return NULL;
    }
    store_set_timeout(s, (unsigned)(WATCH_BLOCK_MS + gapp->cfg->redis_timeout_ms));
    unsigned long gen = (unsigned long)-1;
    uint64_t last_ping = clock_mono_ns(), last_trim = last_ping, last_probe = last_ping;
    for (;;) {
        pthread_mutex_lock(&lock);
        int go = running;
        pthread_mutex_unlock(&lock);
        if (!go)
            break;
        int err = read_round(s, &gen);
        if (!err && clock_mono_ns() - last_probe >= WATCH_PROBE_NS) {
            last_probe = clock_mono_ns();
            err = probe_keys(s);
        }
        heartbeat(&last_ping);
        sse_reap_disconnected();
        api_suggest_reap_parked();
        trim_memory(&last_trim);
        store_sentinel_check();
        if (err == T_ERR_UNAVAILABLE)
            set_redis_ok(0);
        if (err) {
            /* store_* back off by themselves, and a lack of memory passes: don't spin meanwhile */
            struct timespec ts = {0, 100 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    store_free(s);
    return NULL;
}

static int render_metrics(struct buf *out)
{
    pthread_mutex_lock(&lock);
    size_t n = n_watched;
    int ok = redis_ok;
    pthread_mutex_unlock(&lock);
    int err = metrics_header(out, "tandem_watch_conversations", "gauge", "Conversations the live loop follows.");
    if (!err)
        err = buf_printf(out, "tandem_watch_conversations %zu\n", n);
    if (!err)
        err = metrics_header(out, "tandem_watch_redis_up", "gauge", "1 when the live loop reads Redis.");
    if (!err)
        err = buf_printf(out, "tandem_watch_redis_up %d\n", ok);
    if (!err)
        err = metrics_header(out, "tandem_watch_recomputes_total", "counter", "States recomputed for new messages.");
    if (!err)
        err = buf_printf(out, "tandem_watch_recomputes_total %lu\n", atomic_load(&stat_recomputes));
    if (!err)
        err = metrics_header(out, "tandem_watch_recompute_seconds_total", "counter",
                             "Time spent fetching and recomputing states.");
    if (!err)
        err = buf_printf(out, "tandem_watch_recompute_seconds_total %.6f\n", (double)atomic_load(&stat_recompute_ns) / 1e9);
    if (!err)
        err = metrics_header(out, "tandem_watch_compute_errors_total", "counter", "Recomputes that failed.");
    if (!err)
        err = buf_printf(out, "tandem_watch_compute_errors_total %lu\n", atomic_load(&stat_errors));
    return err;
}

int watch_start(struct app *app)
{
    gapp = app;
    running = 1;
    metrics_register(render_metrics);
    sse_set_watch_hook(watch_subscribed);
    if (pthread_create(&thread, NULL, loop, NULL) != 0) {
        running = 0;
        return T_ERR_INTERNAL;
    }
    return T_OK;
}

void watch_stop(void)
{
    pthread_mutex_lock(&lock);
    if (!running) {
        pthread_mutex_unlock(&lock);
        return;
    }
    running = 0;
    pthread_cond_signal(&cond);
    pthread_mutex_unlock(&lock);
    wake_reader();
    pthread_join(thread, NULL);
    sse_set_watch_hook(NULL);
    pthread_mutex_lock(&lock);
    while (list) {
        struct watched *w = list;
        list = w->next;
        watched_free(w);
    }
    n_watched = 0;
    focus[0] = '\0';
    pthread_mutex_unlock(&lock);
}
