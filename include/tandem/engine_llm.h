/* The LLM engine's glue: a request grounded on the local answer, and the model's answer turned
 * into suggestions. The transport is llm.h; this never blocks. */
#ifndef TANDEM_ENGINE_LLM_H
#define TANDEM_ENGINE_LLM_H
#include <stddef.h>

#include "tandem/buf.h"
#include "tandem/context.h"
#include "tandem/engine.h"
#include "tandem/llm.h"

struct json_t;
struct kb;

/* Fills req for ctx: the conversation (oldest first), the local answer's suggestions as
 * grounding (their KB url looked up in kb, which may be NULL), summary (may be NULL), k and the
 * budget. Everything is borrowed from ctx, local and kb or allocated in a; req is only valid
 * while they live. Returns T_OK or T_ERR_NOMEM. */
int engine_llm_request(const struct context *ctx, const struct json_t *local, const struct kb *kb,
                       const char *summary, size_t k, long budget_ms, struct arena *a, struct llm_request *req);

/* Turns an "ok" result into up to ENGINE_MAX_K suggestions (source "llm", placeholders filled
 * from ctx, kb_id/title when the model named a grounding entry, score from the local
 * suggestion of that entry or the local top score, ids stable for the conversation state).
 * Strings live in a. Returns T_OK or T_ERR_NOMEM. */
int engine_llm_suggestions(const struct context *ctx, const struct json_t *local, const struct llm_result *res,
                           struct arena *a, struct suggestion *out, size_t *n_out);

/* In-process cache of the newest LLM answer per conversation, so engine=auto and the event
 * stream's next reader get it without another model call. put takes its own reference;
 * get returns a new reference when conv's cached answer is for based_on, else NULL. */
void engine_llm_cache_put(const char *conv, const char *based_on, struct json_t *answer);
struct json_t *engine_llm_cache_get(const char *conv, const char *based_on);
#endif
