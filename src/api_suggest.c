/* Handlers for suggestions, hotkey suggestions of the focused conversation, and transcript import.
 *
 * Redis keys written here (prefix TANDEM_REDIS_PREFIX, default "tandem:"):
 *   <prefix>conv:{ID}:sugg:<k>:<engine>  STRING, TTL 1 h: "<newest msg id> <state>\n<answer JSON without
 *                                        took_ms>"; <state> = KB fingerprint + memory version + meta
 *                                        digest, so a KB reload, a memory import or a meta change
 *                                        (brand, lang, agent...) invalidates it. A repeated call is
 *                                        one round trip (a script reads the newest id, this key and
 *                                        the meta). The customer profile (another slot) is not in it.
 *   <prefix>sugg:<SID>                   HASH, TTL 24 h: one suggestion for the feedback endpoint:
 *                                        suggestion_id, conversation_id, based_on, engine, source, rank,
 *                                        score, text, kb_id, title, memory_id (the last three only when
 *                                        set), brand, lang, context (the customer turns it answered,
 *                                        as memory_context_of() builds them), created_ms.
 * Reply memory keys: see memory.h. */
#include <hiredis/hiredis.h>
#include <microhttpd.h>
#include <poll.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tandem/json_io.h"
#include "tandem/clock.h"
#include "tandem/api.h"
#include "tandem/app.h"
#include "tandem/engine.h"
#include "tandem/engine_llm.h"
#include "tandem/llm.h"
#include "tandem/error.h"
#include "tandem/kb.h"
#include "tandem/log.h"
#include "tandem/memory.h"
#include "tandem/metrics.h"
#include "tandem/quality.h"
#include "tandem/store.h"
#include "tandem/watch.h"

#include <stdatomic.h>

#define SUGG_CACHE_TTL_S "3600"
#define SUGG_RECORD_TTL_S "86400"
/* A 64 MiB import is one RPUSH: Redis needs longer than a normal command for it. */
#define IMPORT_TIMEOUT_MS 30000u

static atomic_ulong stat_cache_hits, stat_live_hits, stat_computed, stat_compute_ns, stat_imports;

int api_suggest_metrics_render(struct buf *out)
{
    size_t kb_entries, kb_bytes;
    kb_installed_stats(&kb_entries, &kb_bytes);
    struct memory_stats ms;
    memory_stats(&ms);
    int err = metrics_header(out, "tandem_knowledge_base_entries", "gauge", "Entries of the loaded knowledge base.");
    err = err ? err : buf_printf(out, "tandem_knowledge_base_entries %zu\n", kb_entries);
    err = err ? err : metrics_header(out, "tandem_knowledge_base_bytes", "gauge", "Memory held by the knowledge base and its index.");
    err = err ? err : buf_printf(out, "tandem_knowledge_base_bytes %zu\n", kb_bytes);
    err = err ? err : metrics_header(out, "tandem_memory_replies", "gauge", "Past replies indexed from the shared reply memory.");
    err = err ? err : buf_printf(out, "tandem_memory_replies %zu\n", ms.replies);
    err = err ? err : metrics_header(out, "tandem_memory_bytes", "gauge", "Memory held by the reply memory snapshot and its index.");
    err = err ? err : buf_printf(out, "tandem_memory_bytes %zu\n", ms.bytes);
    err = err ? err : metrics_header(out, "tandem_memory_syncs_total", "counter", "Checks of the shared reply memory in Redis, by result.");
    err = err ? err : buf_printf(out, "tandem_memory_syncs_total{result=\"ok\"} %lu\ntandem_memory_syncs_total{result=\"error\"} %lu\n", ms.syncs, ms.sync_errors);
    err = err ? err : metrics_header(out, "tandem_memory_appended_total", "counter", "Replies this process added to the reply memory.");
    err = err ? err : buf_printf(out, "tandem_memory_appended_total %lu\n", ms.appended);
    err = err ? err : metrics_header(out, "tandem_transcript_imports_total", "counter", "Successful POST /v1/transcripts.");
    err = err ? err : buf_printf(out, "tandem_transcript_imports_total %lu\n", atomic_load(&stat_imports));
    err = err ? err : metrics_header(out, "tandem_suggestions_total", "counter", "Suggestion answers, from the Redis cache or computed.");
    err = err ? err : buf_printf(out, "tandem_suggestions_total{cache=\"live\"} %lu\ntandem_suggestions_total{cache=\"hit\"} %lu\ntandem_suggestions_total{cache=\"miss\"} %lu\n", atomic_load(&stat_live_hits), atomic_load(&stat_cache_hits), atomic_load(&stat_computed));
    err = err ? err : metrics_header(out, "tandem_suggestion_compute_seconds", "summary", "Local engine time of computed answers.");
    err = err ? err : buf_printf(out, "tandem_suggestion_compute_seconds_sum %.6f\ntandem_suggestion_compute_seconds_count %lu\n", (double)atomic_load(&stat_compute_ns) / 1e9, atomic_load(&stat_computed));
    return err;
}


/* Exists? newest id, cached value, meta fields. Nil when the conversation has no stream.
 * KEYS: msgs, sugg cache, meta: one hash tag, so one slot in Cluster. */
static const char cache_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 0 then return false end "
    "local m = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) "
    "local newest = '' "
    "if #m > 0 then newest = m[1][1] end "
    "local v = redis.call('GET', KEYS[2]) "
    "if not v then v = '' end "
    "return {newest, v, redis.call('HGETALL', KEYS[3])}";

/* The <state> of a cached answer: what it was computed from besides the messages. */
static void cache_state(char *out, size_t size, unsigned long long kb_fp, size_t mem_ver, const struct ctx_kv *meta,
                        size_t n_meta)
{
    snprintf(out, size, "%016llx-%zu-%016llx", kb_fp, mem_ver, (unsigned long long)context_meta_digest(meta, n_meta));
}

/* HSET + EXPIRE of one suggestion record in one round trip. */
static const char record_script[] = "redis.call('HSET', KEYS[1], unpack(ARGV, 2)) "
                                    "redis.call('EXPIRE', KEYS[1], ARGV[1]) return 1";



/* k: absent -> default; else an integer 1..ENGINE_MAX_K written plainly. 0 when invalid. */
static size_t parse_k(const char *s)
{
    if (!s)
        return ENGINE_DEFAULT_K;
    size_t v = 0, n = 0;
    for (; s[n]; n++) {
        if (s[n] < '0' || s[n] > '9' || n >= 3)
            return 0;
        v = v * 10 + (size_t)(s[n] - '0');
    }
    return (n && v >= 1 && v <= ENGINE_MAX_K) ? v : 0;
}

static int llm_configured(const struct app *app) { return app->cfg && app->cfg->llm_url && app->cfg->llm_url[0]; }

/* What one computation produced; the JSON is the answer without took_ms. */
struct answer {
    json_t *json;
    int from_cache;
};

static json_t *suggestion_json(const struct suggestion *s)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = json_object_set_new(o, "id", json_string(s->id));
    bad |= json_object_set_new(o, "rank", json_integer(s->rank));
    bad |= json_object_set_new(o, "text", json_string(s->text));
    bad |= json_object_set_new(o, "source", json_string(s->source));
    if (s->kb_id)
        bad |= json_object_set_new(o, "kb_id", json_string(s->kb_id));
    if (s->title)
        bad |= json_object_set_new(o, "title", json_string(s->title));
    if (s->memory_id)
        bad |= json_object_set_new(o, "memory_id", json_string(s->memory_id));
    bad |= json_object_set_new(o, "score", json_real(round(s->score * 1000.0) / 1000.0));
    bad |= json_object_set_new(o, "ai_generated", json_true());
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* Stores each suggestion by id for the feedback endpoint, all in one round trip. Failures are
 * logged, not fatal: the agent still gets the suggestions (feedback on them then answers 404). */
#define RECORD_ARGS 40
static void store_records(struct store *s, const struct context *ctx, const char *engine,
                          const struct suggestion *sg, size_t n)
{
    if (!n)
        return;
    struct buf cbuf;
    buf_init(&cbuf, 0);
    if (memory_context_of(ctx, &cbuf))
        buf_reset(&cbuf);
    const char *brand = context_meta(ctx, "brand");
    const char *lang = context_meta(ctx, "lang");
    char created[24];
    snprintf(created, sizeof created, "%lld", (long long)clock_wall_ms());
    char key[ENGINE_MAX_K][256], rank[ENGINE_MAX_K][16], score[ENGINE_MAX_K][32];
    const char *argv[ENGINE_MAX_K][RECORD_ARGS];
    const char **argvs[ENGINE_MAX_K];
    int argcs[ENGINE_MAX_K];
    const size_t *lens[ENGINE_MAX_K];
    redisReply *replies[ENGINE_MAX_K];
    size_t m = 0;
    for (size_t i = 0; i < n && m < ENGINE_MAX_K; i++) {
        char name[64];
        snprintf(name, sizeof name, "sugg:%.*s", ENGINE_SUGGESTION_ID_LEN, sg[i].id);
        if (store_key(key[m], sizeof key[m], name) < 0)
            continue;
        snprintf(rank[m], sizeof rank[m], "%u", sg[i].rank);
        snprintf(score[m], sizeof score[m], "%.3f", sg[i].score);
        const char **av = argv[m];
        int argc = 0;
        av[argc++] = "EVAL";
        av[argc++] = record_script;
        av[argc++] = "1";
        av[argc++] = key[m];
        av[argc++] = SUGG_RECORD_TTL_S;
#define FIELD(k, v)                                                                                                    \
    do {                                                                                                               \
        av[argc++] = (k);                                                                                              \
        av[argc++] = (v);                                                                                              \
    } while (0)
        FIELD("suggestion_id", sg[i].id);
        FIELD("conversation_id", ctx->conv_id);
        FIELD("based_on", ctx->newest_id);
        FIELD("engine", engine);
        FIELD("source", sg[i].source);
        FIELD("rank", rank[m]);
        FIELD("score", score[m]);
        FIELD("text", sg[i].text);
        if (sg[i].kb_id)
            FIELD("kb_id", sg[i].kb_id);
        if (sg[i].title)
            FIELD("title", sg[i].title);
        if (sg[i].memory_id)
            FIELD("memory_id", sg[i].memory_id);
        FIELD("brand", brand ? brand : "");
        FIELD("lang", lang ? lang : "");
        FIELD("context", cbuf.data ? cbuf.data : "");
        FIELD("created_ms", created);
#undef FIELD
        argvs[m] = av;
        argcs[m] = argc;
        lens[m] = NULL;
        m++;
    }
    int err = store_pipeline(s, m, argcs, argvs, lens, replies);
    if (err) {
        log_warn("suggestion_record_failed", "err=%s", tandem_err_code(err));
    } else {
        for (size_t i = 0; i < m; i++) {
            if (replies[i]->type == REDIS_REPLY_ERROR)
                log_warn("suggestion_record_failed", "err=redis_error_reply");
            store_reply_free(replies[i]);
        }
        quality_note_shown(s, engine, sg, n); /* shown counters, rejection table sync */
    }
    buf_cleanup(&cbuf);
}

/* The suggestions answer for ctx (without took_ms): new reference, NULL on OOM. */
static json_t *answer_json(const struct context *ctx, const char *engine, const char *fallback,
                           const struct suggestion *sg, size_t n)
{
    json_t *list = json_array();
    json_t *o = json_object();
    if (!list || !o) {
        json_decref(list);
        json_decref(o);
        return NULL;
    }
    /* every set checked: a key lost to a failed allocation would be a wrong answer, not an error */
    int bad = json_object_set_new(o, "conversation_id", json_string(ctx->conv_id));
    bad |= json_object_set_new(o, "based_on", ctx->newest_id[0] ? json_string(ctx->newest_id) : json_null());
    bad |= json_object_set_new(o, "engine", json_string(engine));
    if (fallback)
        bad |= json_object_set_new(o, "fallback_reason", json_string(fallback));
    for (size_t i = 0; i < n && !bad; i++) {
        json_t *j = suggestion_json(&sg[i]);
        bad |= !j || json_array_append_new(list, j);
    }
    if (bad) {
        json_decref(list);
        json_decref(o);
        return NULL;
    }
    if (json_object_set_new(o, "suggestions", list)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

int api_suggest_llm_answer(struct store *s, const struct context *ctx, const json_t *local,
                           const struct llm_result *res, json_t **out)
{
    *out = NULL;
    struct suggestion sg[ENGINE_MAX_K];
    size_t n = 0;
    struct arena a;
    arena_init(&a);
    int err = engine_llm_suggestions(ctx, local, res, &a, sg, &n);
    if (!err && n == 0)
        err = T_ERR_BAD_JSON; /* nothing usable survived the template step */
    if (!err) {
        *out = answer_json(ctx, "llm", NULL, sg, n);
        if (!*out)
            err = T_ERR_NOMEM;
    }
    if (!err) {
        store_records(s, ctx, "llm", sg, n);
        engine_llm_cache_put(ctx->conv_id, ctx->newest_id, *out);
    }
    arena_cleanup(&a);
    return err;
}

int api_suggest_compute(struct store *s, const struct context *ctx, struct kb *kb,
                        struct memory *mem, size_t k, const char *fallback, struct arena *a, json_t **out)
{
    *out = NULL;
    struct suggestion sg[ENGINE_MAX_K];
    size_t n = 0;
    uint64_t t0 = clock_mono_ns();
    int err = engine_local_suggest(ctx, kb, mem, k, a, sg, &n, NULL);
    if (err)
        return err;
    atomic_fetch_add(&stat_compute_ns, clock_mono_ns() - t0);
    atomic_fetch_add(&stat_computed, 1);
    json_t *o = answer_json(ctx, "local", fallback, sg, n);
    if (!o)
        return T_ERR_NOMEM;
    store_records(s, ctx, "local", sg, n);
    *out = o;
    return T_OK;
}

/* The answer for conv_id: from the cache when the conversation has not changed, else computed,
 * cached and recorded. On error returns the code (the caller replies). */
static int suggestions_for(struct request *req, const char *conv_id, size_t k, const char *engine_req,
                           struct answer *ans)
{
    struct app *app = req->app;
    ans->json = NULL;
    ans->from_cache = 0;
    struct store *s = store_thread();
    if (!s)
        return T_ERR_NOMEM;
    /* engine: local is the only one built in; llm asked for without one configured falls back */
    const char *fallback = NULL;
    if (strcmp(engine_req, "llm") == 0)
        fallback = llm_configured(app) ? "llm_unavailable" : "llm_not_configured";

    /* a watched conversation: the live loop's answer for its newest message, no Redis at all */
    struct watch_answers live;
    char live_id[STREAM_ID_MAX];
    if (!fallback && k <= WATCH_MAX_K && watch_cached(conv_id, &live, live_id)) {
        ans->json = watch_slice_suggestions(live.suggestions, k);
        watch_answers_cleanup(&live);
        if (ans->json) {
            ans->from_cache = 1;
            atomic_fetch_add(&stat_live_hits, 1);
            return T_OK;
        }
    }

    struct kb *kb = app_kb_acquire(app);
    struct memory *mem = NULL;
    struct context *ctx = NULL;
    int err;
    char state[64], msgs_key[300], meta_key[300], cache_key[300], suffix[64];
    snprintf(suffix, sizeof suffix, "sugg:%zu:%s", k, engine_req);
    if (store_key_conv(msgs_key, sizeof msgs_key, conv_id, "msgs") < 0 ||
        store_key_conv(meta_key, sizeof meta_key, conv_id, "meta") < 0 ||
        store_key_conv(cache_key, sizeof cache_key, conv_id, suffix) < 0) {
        err = T_ERR_BAD_ID;
        goto out;
    }
    /* memory first: its version is part of the cache state, with the KB's and the meta's */
    mem = memory_store_acquire(app_memory(app), s, kb, 0);
    unsigned long long kb_fp = kb_fingerprint(kb);
    size_t mem_ver = memory_version(mem);

    const char *argv[7] = {"EVAL", cache_script, "3", msgs_key, cache_key, meta_key};
    redisReply *r = NULL;
    err = store_command(s, &r, 6, argv, NULL);
    if (err)
        goto out;
    if (!r || r->type == REDIS_REPLY_NIL) {
        store_reply_free(r);
        err = T_ERR_CONV_NOT_FOUND;
        goto out;
    }
    /* the script's meta read as the context reads it, so both digests hash the same bytes */
    struct ctx_kv *meta = NULL;
    size_t n_meta = 0;
    int meta_err = r->type == REDIS_REPLY_ARRAY && r->elements == 3
                       ? store_kv_from_hash(&req->arena, r->element[2], &meta, &n_meta)
                       : T_ERR_INTERNAL;
    if (meta_err || r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING) {
        /* e.g. an ACL without EVAL: answer without the shared cache rather than fail */
        log_warn("suggestion_cache_unusable", "type=%d", r->type);
        store_reply_free(r);
        r = NULL;
    }
    /* cached: "<newest> <state>\n<json>" */
    const char *newest = r ? r->element[0]->str : "";
    const char *v = r ? r->element[1]->str : "";
    size_t vlen = r ? r->element[1]->len : 0;
    const char *nl = vlen ? memchr(v, '\n', vlen) : NULL;
    if (nl) {
        char head[160];
        cache_state(state, sizeof state, kb_fp, mem_ver, meta, n_meta);
        snprintf(head, sizeof head, "%s %s", newest, state);
        if ((size_t)(nl - v) == strlen(head) && memcmp(v, head, strlen(head)) == 0) {
            json_error_t jerr;
            /* unreadable: computed afresh below; no memory to read it: no memory to compute */
            err = json_parse(nl + 1, vlen - (size_t)(nl - v) - 1, 0, &ans->json, &jerr);
            ans->from_cache = ans->json != NULL;
            if (err == T_ERR_NOMEM) {
                store_reply_free(r);
                goto out;
            }
        }
    }
    store_reply_free(r);
    if (ans->from_cache) {
        atomic_fetch_add(&stat_cache_hits, 1);
        err = T_OK;
        goto out;
    }

    const struct config *cfg = app->cfg;
    err = store_fetch_context(s, conv_id, (size_t)cfg->context_messages, (size_t)cfg->history_entries, &ctx);
    if (err)
        goto out;
    json_t *o = NULL;
    err = api_suggest_compute(s, ctx, kb, mem, k, fallback, &req->arena, &o);
    if (err)
        goto out;
    ans->json = o;

    /* cache (keyed by the newest id and the meta the context saw) and per-suggestion records.
     * The meta digest is the context's, not the script's: when the meta changed between the
     * two, the entry still names exactly what the answer was computed from, so a later read
     * whose meta differs misses (a recompute) and one whose meta matches gets the right answer;
     * even a change and a change back (A, B, A) cannot pair B's answer with A. */
    cache_state(state, sizeof state, kb_fp, mem_ver, ctx->meta, ctx->n_meta);
    char *body = json_serialize(o, JSON_COMPACT);
    if (body) {
        struct buf cv;
        buf_init(&cv, 0);
        if (!buf_printf(&cv, "%s %s\n%s", ctx->newest_id, state, body)) {
            const char *sv[6] = {"SET", cache_key, cv.data, "EX", SUGG_CACHE_TTL_S};
            size_t lens[5] = {3, strlen(cache_key), cv.len, 2, strlen(SUGG_CACHE_TTL_S)};
            redisReply *w = NULL;
            if (store_command(s, &w, 5, sv, lens) || !w || w->type == REDIS_REPLY_ERROR)
                log_warn("suggestion_cache_write_failed", "conv_id=%s", conv_id);
            store_reply_free(w);
        }
        buf_cleanup(&cv);
        free(body);
    }
    err = T_OK;
out:
    context_free(ctx);
    memory_unref(mem);
    app_kb_release(kb);
    return err;
}

static int reply_answer(struct request *req, struct answer *ans)
{
    json_t *o = ans->json;
    ans->json = NULL;
    if (json_object_set_new(o, "took_ms", json_real(clock_ms_since(req->start_ns)))) {
        json_decref(o);
        return T_ERR_NOMEM;
    }
    return http_reply_json(req, 200, o);
}

/* ---- engine=llm|auto: the local answer at once in hand, the model's within the budget ----
 * The request parks its connection while the LLM worker (llm.h) talks to the model; the
 * worker's callback stores the result and resumes the connection, and the handler runs again. */

struct llm_wait {
    pthread_mutex_t lock;
    struct MHD_Connection *conn;
    struct llm_result *res;
    int done;            /* the callback ran (or never will) */
    int parked;          /* the connection is suspended and waits for the callback */
    uint64_t handle;
    json_t *local;       /* the local answer: grounding, and the fallback */
    struct context *ctx; /* placeholders for the model's texts */
    const char *why;     /* set when the wait ended without a result (client gone) */
    struct llm_wait *next_parked, *prev_parked; /* in `parked` while parked */
};

/* Parked requests, so their sockets can be watched: MHD does not notice a client hanging up
 * while its connection is suspended, and its model call should stop when it does. */
static pthread_mutex_t parked_lock = PTHREAD_MUTEX_INITIALIZER;
static struct llm_wait *parked;

static void park_link(struct llm_wait *w)
{
    pthread_mutex_lock(&parked_lock);
    w->prev_parked = NULL;
    w->next_parked = parked;
    if (parked)
        parked->prev_parked = w;
    parked = w;
    pthread_mutex_unlock(&parked_lock);
}

static void park_unlink_locked(struct llm_wait *w)
{
    if (w->prev_parked)
        w->prev_parked->next_parked = w->next_parked;
    else if (parked == w)
        parked = w->next_parked;
    if (w->next_parked)
        w->next_parked->prev_parked = w->prev_parked;
    w->next_parked = w->prev_parked = NULL;
}

static void park_unlink(struct llm_wait *w)
{
    pthread_mutex_lock(&parked_lock);
    park_unlink_locked(w);
    pthread_mutex_unlock(&parked_lock);
}

void api_suggest_reap_parked(void)
{
    /* collect hung-up clients under the lock, cancel outside it (llm_cancel may wait for a
     * callback that itself takes w->lock) */
    enum { MAX_REAP = 64 };
    struct llm_wait *gone[MAX_REAP];
    size_t n = 0;
    pthread_mutex_lock(&parked_lock);
    for (struct llm_wait *w = parked; w && n < MAX_REAP; w = w->next_parked) {
        pthread_mutex_lock(&w->lock);
        int still = w->parked && !w->done;
        pthread_mutex_unlock(&w->lock);
        if (!still)
            continue;
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(w->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct pollfd p = {ci ? ci->connect_fd : -1, POLLRDHUP, 0};
        if (p.fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR)))
            gone[n++] = w;
    }
    for (size_t i = 0; i < n; i++)
        park_unlink_locked(gone[i]); /* parked connections cannot close: gone[i] stays valid */
    pthread_mutex_unlock(&parked_lock);
    for (size_t i = 0; i < n; i++) {
        struct llm_wait *w = gone[i];
        if (!llm_cancel(w->handle))
            continue; /* it finished meanwhile: its callback resumed the connection */
        pthread_mutex_lock(&w->lock);
        int wake = w->parked;
        w->parked = 0;
        w->done = 1;
        w->why = "cancelled";
        pthread_mutex_unlock(&w->lock);
        if (wake)
            http_resume(w->conn);
    }
}

static void llm_wait_free(void *p)
{
    struct llm_wait *w = p;
    park_unlink(w);
    pthread_mutex_lock(&w->lock);
    int done = w->done;
    pthread_mutex_unlock(&w->lock);
    if (!done && w->handle)
        llm_cancel(w->handle); /* the client went away first: drop the upstream call */
    llm_result_free(w->res);
    json_decref(w->local);
    context_free(w->ctx);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

static void llm_wait_done(struct llm_result *res, void *arg)
{
    struct llm_wait *w = arg;
    pthread_mutex_lock(&w->lock);
    w->res = res;
    w->done = 1;
    int wake = w->parked;
    w->parked = 0;
    pthread_mutex_unlock(&w->lock);
    park_unlink(w);
    if (wake) /* the connection cannot close while parked, so conn is still valid here */
        http_resume(w->conn);
}

static int reply_local(struct request *req, json_t *local, const char *reason)
{
    json_t *o = json_copy_whole(local);
    if (!o)
        return T_ERR_NOMEM;
    if (json_object_set_new(o, "fallback_reason", json_string(reason))) {
        json_decref(o);
        return T_ERR_NOMEM;
    }
    struct answer ans = {o, 0};
    return reply_answer(req, &ans);
}

static int llm_wait_finish(struct request *req)
{
    struct llm_wait *w = req->ext;
    pthread_mutex_lock(&w->lock);
    struct llm_result *res = w->res;
    w->res = NULL;
    pthread_mutex_unlock(&w->lock);
    int err;
    park_unlink(w);
    if (!res || strcmp(res->outcome, "ok") != 0) {
        err = reply_local(req, w->local, res ? res->outcome : (w->why ? w->why : "nomem"));
    } else {
        json_t *o = NULL;
        struct store *s = store_thread();
        err = s ? api_suggest_llm_answer(s, w->ctx, w->local, res, &o) : T_ERR_NOMEM;
        if (err) {
            err = reply_local(req, w->local, err == T_ERR_NOMEM ? "nomem" : "validation_failed");
        } else {
            struct answer ans = {watch_slice_suggestions(o, json_array_size(json_object_get(w->local, "suggestions"))), 0};
            json_decref(o);
            err = ans.json ? reply_answer(req, &ans) : T_ERR_NOMEM;
        }
    }
    llm_result_free(res);
    return err;
}

static int llm_wait_start(struct request *req, const char *conv_id, size_t k, struct answer *ans)
{
    struct app *app = req->app;
    const char *based_on = json_string_value(json_object_get(ans->json, "based_on"));
    json_t *hit = engine_llm_cache_get(conv_id, based_on ? based_on : "");
    if (hit) {
        json_decref(ans->json);
        ans->json = watch_slice_suggestions(hit, k);
        json_decref(hit);
        return ans->json ? reply_answer(req, ans) : T_ERR_NOMEM;
    }
    struct llm_wait *w = calloc(1, sizeof *w);
    if (!w) {
        json_decref(ans->json);
        return T_ERR_NOMEM;
    }
    pthread_mutex_init(&w->lock, NULL);
    w->conn = req->conn;
    w->local = ans->json;
    ans->json = NULL;
    req->ext = w;
    req->ext_free = llm_wait_free;
    struct store *s = store_thread();
    const struct config *cfg = app->cfg;
    int err = s ? store_fetch_context(s, conv_id, (size_t)cfg->context_messages, (size_t)cfg->history_entries, &w->ctx)
                : T_ERR_NOMEM;
    if (err)
        return reply_local(req, w->local, "context_unavailable");
    /* the summary's "what the customer wants" helps the model when the live loop has it */
    struct watch_answers live;
    char live_id[STREAM_ID_MAX];
    const char *wants = NULL;
    json_t *summary = NULL;
    if (watch_cached(conv_id, &live, live_id)) {
        summary = json_incref(live.summary);
        watch_answers_cleanup(&live);
        wants = json_string_value(json_object_get(json_object_get(summary, "conversation"), "wants"));
    }
    struct kb *kb = app_kb_acquire(app);
    struct llm_request lr;
    long budget = (long)cfg->llm_timeout_ms - (long)clock_ms_since(req->start_ns);
    err = engine_llm_request(w->ctx, w->local, kb, wants, k, budget, &req->arena, &lr);
    const char *reason = "nomem";
    if (!err)
        err = llm_submit(&lr, llm_wait_done, w, &w->handle, &reason);
    app_kb_release(kb);
    json_decref(summary);
    if (err) {
        pthread_mutex_lock(&w->lock);
        w->done = 1; /* never queued: nothing to cancel */
        pthread_mutex_unlock(&w->lock);
        return reply_local(req, w->local, reason);
    }
    /* park unless the callback already ran (it may, even before llm_submit returns) */
    pthread_mutex_lock(&w->lock);
    int done = w->done;
    if (!done) {
        w->parked = 1;
        http_suspend(req);
    }
    pthread_mutex_unlock(&w->lock);
    if (!done)
        park_link(w);
    return done ? llm_wait_finish(req) : T_OK;
}

int api_suggestions(struct request *req)
{
    const char *id;
    if (!api_param_id(req, 0, &id))
        return T_OK;
    size_t k = parse_k(http_query(req, "k"));
    if (!k)
        return http_reply_error(req, T_ERR_BAD_REQUEST, "'k' must be an integer from 1 to 10");
    const char *engine = http_query(req, "engine");
    if (!engine || !*engine)
        engine = "auto";
    if (strcmp(engine, "auto") != 0 && strcmp(engine, "local") != 0 && strcmp(engine, "llm") != 0)
        return http_reply_error(req, T_ERR_BAD_REQUEST, "'engine' must be auto, local or llm");
    if (req->ext) /* resumed: the model answered (or gave up) */
        return llm_wait_finish(req);
    int want_llm = strcmp(engine, "local") != 0 && llm_enabled();
    if (!want_llm && strcmp(engine, "llm") != 0 && k == WATCH_EVENT_K) {
        /* the hot path: a watched conversation's default answer, serialized once per message */
        int err;
        if (api_reply_cached(req, id, WATCH_SUGGESTIONS, &err)) {
            atomic_fetch_add(&stat_live_hits, 1);
            return err;
        }
    }
    struct answer ans;
    int err = suggestions_for(req, id, k, want_llm ? "local" : engine, &ans);
    if (err || !want_llm)
        return err ? err : reply_answer(req, &ans);
    return llm_wait_start(req, id, k, &ans);
}

int api_focus_suggestion(struct request *req)
{
    const char *ns = req->n_params ? req->params[0] : NULL;
    size_t n = parse_k(ns ? ns : "");
    if (!n)
        return http_reply_error(req, T_ERR_BAD_REQUEST, "the suggestion number must be an integer from 1 to 10");
    const char *format = http_query(req, "format");
    if (format && strcmp(format, "text") != 0 && strcmp(format, "json") != 0)
        return http_reply_error(req, T_ERR_BAD_REQUEST, "'format' must be text or json");
    struct app *app = req->app;
    char id[ID_MAX_LEN + 1];
    pthread_mutex_lock(&app->focus_lock);
    memcpy(id, app->focus_id, sizeof id);
    pthread_mutex_unlock(&app->focus_lock);
    if (!id[0])
        return T_ERR_NO_FOCUS;
    /* the default list (k=3, auto) when N fits in it, so hotkeys share the extension's cache */
    size_t k = n > ENGINE_DEFAULT_K ? n : ENGINE_DEFAULT_K;
    struct answer ans;
    int err = suggestions_for(req, id, k, "auto", &ans);
    if (err)
        return err;
    json_t *list = json_object_get(ans.json, "suggestions");
    json_t *one = json_array_get(list, n - 1);
    if (!one) {
        char msg[160];
        snprintf(msg, sizeof msg, "the focused conversation has %zu suggestion%s; there is no number %zu",
                 json_array_size(list), json_array_size(list) == 1 ? "" : "s", n);
        json_decref(ans.json);
        return http_reply_error(req, T_ERR_NOT_FOUND_ITEM, msg);
    }
    if (format && strcmp(format, "text") == 0) {
        const char *text = json_string_value(json_object_get(one, "text"));
        err = http_reply_data(req, 200, "text/plain; charset=utf-8", text ? text : "", text ? strlen(text) : 0);
        json_decref(ans.json);
        return err;
    }
    json_t *o = json_copy_whole(one); /* shallow: only keys are added */
    if (o && (json_object_set(o, "conversation_id", json_object_get(ans.json, "conversation_id")) ||
              json_object_set(o, "based_on", json_object_get(ans.json, "based_on")) ||
              json_object_set(o, "engine", json_object_get(ans.json, "engine")))) {
        json_decref(o);
        o = NULL;
    }
    json_decref(ans.json);
    if (!o)
        return T_ERR_NOMEM;
    return http_reply_json(req, 200, o);
}

int api_transcripts(struct request *req)
{
    struct app *app = req->app;
    struct memory_records recs;
    memory_records_init(&recs);
    size_t nconv = 0;
    char msg[512];
    int err = memory_parse_transcripts(req->body.data, req->body.len, &recs, &nconv, msg, sizeof msg);
    if (err) {
        memory_records_cleanup(&recs);
        if (err == T_ERR_BAD_JSON)
            return http_reply_error(req, err, msg);
        return err;
    }
    struct store *s = store_thread();
    if (!s) {
        memory_records_cleanup(&recs);
        return T_ERR_NOMEM;
    }
    store_set_timeout(s, IMPORT_TIMEOUT_MS);
    err = memory_store_append(s, &recs);
    store_set_timeout(s, app->cfg ? (unsigned)app->cfg->redis_timeout_ms : 1000u);
    size_t nreplies = recs.n;
    memory_records_cleanup(&recs);
    if (err)
        return err;
    /* this sidecar sees the import at once; the others within MEMORY_CHECK_MS */
    struct kb *kb = app_kb_acquire(app);
    memory_unref(memory_store_acquire(app_memory(app), s, kb, 1));
    app_kb_release(kb);
    atomic_fetch_add(&stat_imports, 1);
    log_info("transcripts_imported", "req_id=%s transcripts=%zu replies=%zu", req->id, nconv, nreplies);
    json_t *o = json_pack("{s:I, s:I}", "imported", (json_int_t)nconv, "replies", (json_int_t)nreplies);
    if (!o)
        return T_ERR_NOMEM;
    return http_reply_json(req, 200, o);
}
