/* LLM engine glue: ground the model on the local answer, turn its answer into suggestions,
 * remember the newest answer per conversation. */
#include "tandem/hash.h"
#include "tandem/engine_llm.h"
#include "tandem/error.h"
#include "tandem/kb.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

int engine_llm_request(const struct context *ctx, const json_t *local, const struct kb *kb, const char *summary,
                       size_t k, long budget_ms, struct arena *a, struct llm_request *req)
{
    memset(req, 0, sizeof *req);
    struct llm_msg *msgs = ctx->n_messages ? arena_alloc(a, ctx->n_messages * sizeof *msgs) : NULL;
    if (ctx->n_messages && !msgs)
        return T_ERR_NOMEM;
    for (size_t i = 0; i < ctx->n_messages; i++) {
        msgs[i].role = ctx->messages[i].role_name;
        msgs[i].text = ctx->messages[i].text;
    }
    const json_t *list = json_object_get(local, "suggestions");
    size_t ng = json_array_size(list);
    struct llm_ground *g = ng ? arena_alloc(a, ng * sizeof *g) : NULL;
    if (ng && !g)
        return T_ERR_NOMEM;
    size_t n = 0;
    for (size_t i = 0; i < ng; i++) {
        const json_t *s = json_array_get(list, i);
        const char *text = json_string_value(json_object_get(s, "text"));
        if (!text)
            continue;
        const char *kb_id = json_string_value(json_object_get(s, "kb_id"));
        long idx = kb && kb_id ? kb_find_id(kb, kb_id) : -1;
        const char *source = json_string_value(json_object_get(s, "source"));
        g[n].kb_id = kb_id;
        g[n].title = json_string_value(json_object_get(s, "title"));
        g[n].text = text;
        g[n].url = idx >= 0 ? kb_entry_at(kb, (size_t)idx)->url : NULL;
        g[n].is_memory = source && strcmp(source, "memory") == 0;
        n++;
    }
    req->msgs = msgs;
    req->n_msgs = ctx->n_messages;
    req->grounding = g;
    req->n_grounding = n;
    req->summary = summary;
    req->lang = context_meta(ctx, "lang");
    req->k = (unsigned)(k > LLM_MAX_K ? LLM_MAX_K : k);
    req->budget_ms = budget_ms > 0 ? budget_ms : 1;
    req->map = NULL; /* one map per request: placeholders never leave the process anyway */
    return T_OK;
}

static double local_score(const json_t *list, const char *kb_id)
{
    size_t i;
    json_t *s;
    double top = 0;
    json_array_foreach(list, i, s)
    {
        double v = json_number_value(json_object_get(s, "score"));
        if (i == 0)
            top = v;
        const char *id = json_string_value(json_object_get(s, "kb_id"));
        if (kb_id && id && strcmp(id, kb_id) == 0)
            return v;
    }
    return top;
}

static const char *local_title(const json_t *list, const char *kb_id)
{
    size_t i;
    json_t *s;
    json_array_foreach(list, i, s)
    {
        const char *id = json_string_value(json_object_get(s, "kb_id"));
        if (kb_id && id && strcmp(id, kb_id) == 0)
            return json_string_value(json_object_get(s, "title"));
    }
    return NULL;
}

int engine_llm_suggestions(const struct context *ctx, const json_t *local, const struct llm_result *res,
                           struct arena *a, struct suggestion *out, size_t *n_out)
{
    *n_out = 0;
    const json_t *list = json_object_get(local, "suggestions");
    struct buf text;
    buf_init(&text, 64 * 1024);
    for (size_t i = 0; i < res->answer.n && *n_out < ENGINE_MAX_K; i++) {
        const struct llm_suggestion *it = &res->answer.items[i];
        buf_reset(&text);
        /* the model keeps {{customer.name}}-style placeholders: fill them like a KB body */
        if (engine_fill_template(it->text, ctx, &text) != T_OK)
            continue;
        struct suggestion *s = &out[*n_out];
        memset(s, 0, sizeof *s);
        s->text = arena_strndup(a, text.data ? text.data : "", text.len);
        s->kb_id = it->kb_id ? arena_strdup(a, it->kb_id) : NULL;
        const char *title = local_title(list, it->kb_id);
        s->title = title ? arena_strdup(a, title) : NULL;
        char rank[24];
        snprintf(rank, sizeof rank, "llm-%zu", *n_out + 1);
        s->memory_id = NULL;
        s->source = "llm";
        s->rank = (unsigned)(*n_out + 1);
        s->score = local_score(list, it->kb_id);
        if (!s->text || (it->kb_id && !s->kb_id)) {
            buf_cleanup(&text);
            return T_ERR_NOMEM;
        }
        engine_suggestion_id(ctx->conv_id, ctx->newest_id, "llm", s->kb_id, rank, s->id);
        (*n_out)++;
    }
    buf_cleanup(&text);
    return T_OK;
}

/* ---- newest answer per conversation ---- */

#define LLM_CACHE_SLOTS 1024 /* a miss only costs a model call the local answer already covers */

static struct {
    char conv[ID_MAX_LEN + 1];
    char based_on[STREAM_ID_MAX];
    json_t *answer;
} cache[LLM_CACHE_SLOTS];
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t slot_of(const char *conv) { return (size_t)(hash_str(conv) % LLM_CACHE_SLOTS); }

void engine_llm_cache_put(const char *conv, const char *based_on, json_t *answer)
{
    size_t i = slot_of(conv);
    json_incref(answer);
    pthread_mutex_lock(&cache_lock);
    json_t *old = cache[i].answer;
    snprintf(cache[i].conv, sizeof cache[i].conv, "%s", conv);
    snprintf(cache[i].based_on, sizeof cache[i].based_on, "%s", based_on);
    cache[i].answer = answer;
    pthread_mutex_unlock(&cache_lock);
    json_decref(old);
}

json_t *engine_llm_cache_get(const char *conv, const char *based_on)
{
    size_t i = slot_of(conv);
    json_t *hit = NULL;
    pthread_mutex_lock(&cache_lock);
    if (cache[i].answer && strcmp(cache[i].conv, conv) == 0 && strcmp(cache[i].based_on, based_on) == 0)
        hit = json_incref(cache[i].answer);
    pthread_mutex_unlock(&cache_lock);
    return hit;
}
