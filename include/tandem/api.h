/* The API handlers: thin; they parse, call the core, and render JSON. */
#ifndef TANDEM_API_H
#define TANDEM_API_H
#include "tandem/http.h"

int api_healthz(struct request *req);
int api_readyz(struct request *req);
int api_metrics(struct request *req);
int api_context(struct request *req);
int api_focus_get(struct request *req);
int api_focus_put(struct request *req);
int api_events(struct request *req);
/* Suggestions (api_suggest.c). */
int api_suggestions(struct request *req);
int api_focus_suggestion(struct request *req);
int api_transcripts(struct request *req);
/* The suggestions answer (without took_ms) for ctx: runs the local engine for k suggestions and
 * records each one for feedback. kb and mem may be NULL; fallback (e.g. "llm_not_configured")
 * is added as fallback_reason when not NULL. On T_OK *out is a new reference. */
struct kb;
struct memory;
struct store;
struct context;
int api_suggest_compute(struct store *s, const struct context *ctx, struct kb *kb,
                        struct memory *mem, size_t k, const char *fallback, struct arena *a, struct json_t **out);
/* An "ok" LLM result as the suggestions answer (engine "llm", new reference in *out), each
 * suggestion recorded for feedback and the answer remembered (engine_llm_cache_put). local is
 * the local answer the model was grounded on. T_ERR_BAD_JSON when nothing usable is left. */
struct llm_result;
int api_suggest_llm_answer(struct store *s, const struct context *ctx, const struct json_t *local,
                           const struct llm_result *res, struct json_t **out);
/* Ends the model calls of parked suggestion requests whose client hung up (called each tick of
 * the live loop). */
void api_suggest_reap_parked(void);
/* /metrics part for KB, reply memory and suggestions (metrics_register it at start-up). */
int api_suggest_metrics_render(struct buf *out);
/* Summary and alerts (api_summary.c). */
int api_summary(struct request *req);
/* Feedback and quality (api_feedback.c): POST /v1/suggestions/{SID}/feedback, GET /v1/quality,
 * GET /v1/quality/report. */
int api_feedback(struct request *req);
int api_quality(struct request *req);
int api_quality_report(struct request *req);

/* Helpers shared by handlers. */
/* Parses req->body as a JSON object; on failure replies 400 with Jansson's line/column and
 * returns NULL. New reference. */
struct json_t *api_parse_body_object(struct request *req);
/* The cached answers' fast path: when conv is watched and current, replies 200 with its cached
 * `what` answer (watch_cached_json) plus a last member "took_ms" and returns 1, with *err the
 * reply's result; 0 on a miss (nothing replied). */
int api_reply_cached(struct request *req, const char *conv, unsigned what, int *err);
/* Validates req->params[i] as a conversation id; replies 400 and returns 0 when invalid. */
int api_param_id(struct request *req, size_t i, const char **out);
#endif
