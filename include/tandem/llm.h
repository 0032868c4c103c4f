/* LLM engine client: OpenAI-compatible chat completions via libcurl multi on one worker thread,
 * with a time budget, retries, a circuit breaker and metrics. Callers never block. */
#ifndef TANDEM_LLM_H
#define TANDEM_LLM_H
#include <stdint.h>
#include <stdio.h>

#include "tandem/buf.h"
#include "tandem/llm_prompt.h"

struct config;

#define LLM_DEFAULT_TIMEOUT_MS 4000          /* whole request, from llm_submit() to the callback */
#define LLM_DEFAULT_FIRST_BYTE_MS 2500       /* per attempt, capped by what is left of the budget */
#define LLM_DEFAULT_STALL_MS 1500            /* no body byte for this long mid-answer: give up */
#define LLM_DEFAULT_ATTEMPTS 3               /* 1 try + 2 retries, all inside the budget */
#define LLM_DEFAULT_BACKOFF_MS 100           /* first retry waits 50-100 ms, doubling */
#define LLM_DEFAULT_BREAKER_FAILURES 5       /* consecutive failed requests that open the breaker */
#define LLM_DEFAULT_BREAKER_COOLDOWN_MS 15000 /* open -> one half-open probe after this */
#define LLM_DEFAULT_MAX_RESPONSE (1024 * 1024) /* response body bytes; more fails as too_large */
#define LLM_DEFAULT_MAX_PENDING 256          /* queued + in-flight requests; more: overloaded */
#define LLM_DEFAULT_MAX_TOKENS 800           /* k short replies as JSON */
#define LLM_DEFAULT_TEMPERATURE 0.3

/* Settings; llm_start() copies every string, so the struct may be temporary. */
struct llm_config {
    const char *url;           /* base URL ending in /v1: POST {url}/chat/completions */
    const char *model;
    const char *api_key;       /* secret; NULL or "" sends no Authorization header */
    const char *system_prompt; /* NULL = compiled-in data/llm_system_prompt.txt */
    const char *proxy;         /* NULL = no proxy at all (proxy env vars are ignored) */
    const char *ca_file;       /* NULL = the system CA bundle; else a PEM file (private CA) */
    long timeout_ms;
    long first_byte_ms;        /* 0 = min(timeout_ms, LLM_DEFAULT_FIRST_BYTE_MS) */
    long stall_ms;
    long backoff_ms;
    unsigned max_attempts;
    unsigned breaker_failures;
    long breaker_cooldown_ms;
    int stream;                /* "stream": true (default 1) */
    int json_mode;             /* send response_format json_object (default 1; some servers reject it) */
    double temperature;
    unsigned max_tokens;
    size_t max_response;
    unsigned max_pending;
};

/* Fills c with the LLM_DEFAULT_* values and NULL strings. */
void llm_config_defaults(struct llm_config *c);

/* Starts the worker (and calls curl_global_init: call before other threads use libcurl).
 * Returns T_OK, T_ERR_CONFIG (no url/model) or T_ERR_NOMEM/T_ERR_INTERNAL. One instance per
 * process; after llm_stop() it may be started again. Registers the metrics renderer once. */
int llm_start(const struct llm_config *c);

/* From the program config: TANDEM_LLM_URL/MODEL/API_KEY(_FILE: first line)/TIMEOUT_MS, plus env vars
 * not (yet) in the config table: TANDEM_LLM_SYSTEM_PROMPT_FILE, TANDEM_LLM_STREAM (0|1),
 * TANDEM_LLM_JSON_MODE (0|1), TANDEM_LLM_MAX_TOKENS, TANDEM_LLM_TEMPERATURE, TANDEM_LLM_PROXY, TANDEM_LLM_CA_FILE,
 * TANDEM_LLM_FIRST_BYTE_MS, TANDEM_LLM_STALL_MS, TANDEM_LLM_BREAKER_FAILURES,
 * TANDEM_LLM_BREAKER_COOLDOWN_MS. Returns 0 when started, 1 when no TANDEM_LLM_URL is set (LLM
 * off; not an error), -1 after writing one line naming the variable and accepted form to err. */
int llm_start_from_config(const struct config *cfg, FILE *err);

/* Stops the worker: in-flight and queued requests get their callback with outcome "shutdown"
 * (except cancelled ones), then it joins. Submits racing with it are refused ("disabled"). Call
 * it before MHD_stop_daemon(): the callbacks resume suspended connections. Not concurrently with
 * llm_start(). No-op when not started. */
void llm_stop(void);

/* 1 between llm_start() and llm_stop(). */
int llm_enabled(void);

/* What a request ended with. Owned by whoever receives it; free with llm_result_free(). */
struct llm_result {
    const char *outcome;       /* "ok" or a failure reason (static): "timeout", "first_byte_timeout",
                                  "stalled", "http_408", "http_429", "http_4xx", "http_5xx",
                                  "http_other", "connect", "tls", "transport", "malformed",
                                  "truncated", "too_large", "upstream_error", "validation_failed",
                                  "shutdown", "nomem" and, from llm_submit() only, "circuit_open",
                                  "overloaded", "redaction_failed", "bad_request", "disabled" */
    const char *detail;        /* static, no message text: the validation reason ("pii",
                                  "unknown_url", ...), the stream error, a curl error text, or
                                  "finish_length" for an ok answer cut by max_tokens; may be NULL */
    struct llm_answer answer;  /* 1..k items when outcome is "ok", else empty */
    unsigned http_status;      /* last HTTP status seen, 0 when none */
    unsigned attempts;
    double took_ms;            /* llm_submit() to the result */
};
void llm_result_free(struct llm_result *r);

/* Runs on the LLM worker thread, once per accepted request (unless llm_cancel() returned 1 first);
 * takes ownership of res, which is NULL only when memory ran out (treat as a failure). Must not
 * block for long: store the result and wake the waiter (e.g.
 * MHD_resume_connection). May call llm_submit()/llm_cancel(). */
typedef void (*llm_done_fn)(struct llm_result *res, void *arg);

/* Builds the redacted prompt now, in the caller's thread (req and req->map are only used during
 * this call), and queues it; never waits for the network. On T_OK, *handle (if not NULL) gets a
 * non-zero id for llm_cancel() and cb will run exactly once, possibly before llm_submit() returns.
 * Otherwise nothing is queued, cb never runs, and *reason (static) says why: "disabled",
 * "circuit_open", "overloaded" (T_ERR_UNAVAILABLE), "redaction_failed", "bad_request"
 * (T_ERR_BAD_REQUEST), "nomem" (T_ERR_NOMEM) — the caller answers from the local engine at once.
 * Thread-safe. */
int llm_submit(const struct llm_request *req, llm_done_fn cb, void *cb_arg, uint64_t *handle,
               const char **reason);

/* Cancels a request (e.g. its HTTP client went away): its upstream transfer is dropped and its
 * callback will not run. Returns 1 when cancelled in time, 0 when the request had already
 * finished. Either way, once it returns the callback is not running (it waits for a callback in
 * progress, except when called from the worker thread itself): the caller may free cb_arg. Do not
 * hold a lock the callback takes while calling it. Thread-safe; unknown handles return 0. */
int llm_cancel(uint64_t handle);

/* Convenience for tests and tools: submit and wait. Always sets *out to a new result (the
 * submit-time reason as outcome when it was not queued). Returns T_OK when the outcome is "ok". */
int llm_complete_sync(const struct llm_request *req, struct llm_result **out);

/* 0 closed, 1 open, 2 half-open. */
int llm_breaker_state(void);
/* How many requests ended with outcome so far (0 for unknown names). */
unsigned long llm_stat_outcome(const char *outcome);

/* Prometheus text for tandem_llm_* (registered with metrics_register() by llm_start()). */
int llm_metrics_render(struct buf *out);
#endif
