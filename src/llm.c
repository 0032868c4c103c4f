/* LLM client: one worker thread drives every upstream call through a curl multi handle. */
/*
 * Why one thread with curl multi: an LLM call can take seconds and a hung server must never hold
 * an HTTP worker, a Redis connection or another conversation hostage. Callers only build the
 * prompt (redaction must happen before anything is queued) and hand over a job; the worker owns
 * every curl handle, enforces the deadlines itself (total budget, first byte, stall) and reports
 * through a callback. The only shared state is the job registry and the breaker, under one mutex.
 */
#include "tandem/clock.h"
#include "tandem/llm.h"
#include "tandem/config.h"
#include "tandem/error.h"
#include "tandem/llm_stream.h"
#include "tandem/log.h"
#include "tandem/metrics.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#ifndef TANDEM_VERSION
#define TANDEM_VERSION "0.0.0"
#endif

#define MIN_ATTEMPT_MS 100   /* a retry needs at least this much budget left to be worth it */
#define POLL_MAX_MS 1000     /* the worker wakes at least this often */
#define KEY_MAX 4096         /* an API key file's first line */
#define MAX_TOTAL_CONNECTIONS 64 /* upstream sockets; more transfers queue inside curl */

/* ---- outcomes and metrics ---- */

enum outcome {
    O_OK, O_TIMEOUT, O_FIRST_BYTE, O_STALLED, O_HTTP_408, O_HTTP_429, O_HTTP_4XX, O_HTTP_5XX, O_HTTP_OTHER,
    O_CONNECT, O_TLS, O_TRANSPORT, O_MALFORMED, O_TRUNCATED, O_TOO_LARGE, O_UPSTREAM_ERROR, O_VALIDATION,
    O_SHUTDOWN, O_NOMEM, O_CIRCUIT_OPEN, O_OVERLOADED, O_REDACTION, O_BAD_REQUEST, O_DISABLED, O_CANCELLED,
    O__COUNT
};

static const char *const outcome_names[O__COUNT] = {
    "ok", "timeout", "first_byte_timeout", "stalled", "http_408", "http_429", "http_4xx", "http_5xx",
    "http_other", "connect", "tls", "transport", "malformed", "truncated", "too_large", "upstream_error",
    "validation_failed", "shutdown", "nomem", "circuit_open", "overloaded", "redaction_failed", "bad_request",
    "disabled", "cancelled"};

/* Failures that say something about the upstream's health (they move the breaker). */
static int outcome_is_upstream_failure(enum outcome o) { return o >= O_TIMEOUT && o <= O_UPSTREAM_ERROR; }

static const double lat_bounds[] = {0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 15, 30};
#define N_LAT (sizeof lat_bounds / sizeof lat_bounds[0])

static const char *const why_names[] = {"not_json", "bad_shape", "no_items", "empty_text", "too_long",
                                        "pii", "unknown_url", "pii_check_failed", "nomem"};
#define N_WHY (sizeof why_names / sizeof why_names[0])

static struct {
    atomic_ulong outcomes[O__COUNT];
    atomic_ulong lat[N_LAT + 1];
    atomic_ullong lat_sum_us;
    atomic_ulong attempts, retries, breaker_opens;
    atomic_ulong why[N_WHY];
    atomic_int breaker; /* mirror of the breaker state for lock-free rendering */
    atomic_int inflight;
} stats;

static void count_outcome(enum outcome o) { atomic_fetch_add_explicit(&stats.outcomes[o], 1, memory_order_relaxed); }

static void observe_latency(double ms)
{
    size_t b = 0;
    while (b < N_LAT && ms / 1000.0 > lat_bounds[b])
        b++;
    atomic_fetch_add_explicit(&stats.lat[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&stats.lat_sum_us, (unsigned long long)(ms * 1000.0), memory_order_relaxed);
}

static void count_why(const char *why)
{
    for (size_t i = 0; why && i < N_WHY; i++)
        if (strcmp(why, why_names[i]) == 0)
            atomic_fetch_add_explicit(&stats.why[i], 1, memory_order_relaxed);
}

unsigned long llm_stat_outcome(const char *outcome)
{
    for (size_t i = 0; outcome && i < O__COUNT; i++)
        if (strcmp(outcome, outcome_names[i]) == 0)
            return atomic_load_explicit(&stats.outcomes[i], memory_order_relaxed);
    return 0;
}

int llm_breaker_state(void) { return atomic_load(&stats.breaker); }

int llm_metrics_render(struct buf *out)
{
    int err = metrics_header(out, "tandem_llm_requests_total", "counter",
                             "LLM requests by outcome (ok, or why the local answer was used).");
    for (size_t i = 0; !err && i < O__COUNT; i++)
        err = buf_printf(out, "tandem_llm_requests_total{outcome=\"%s\"} %lu\n", outcome_names[i],
                         atomic_load_explicit(&stats.outcomes[i], memory_order_relaxed));
    if (!err)
        err = metrics_header(out, "tandem_llm_validation_failures_total", "counter",
                             "LLM answers rejected by validation, by reason.");
    for (size_t i = 0; !err && i < N_WHY; i++)
        err = buf_printf(out, "tandem_llm_validation_failures_total{reason=\"%s\"} %lu\n", why_names[i],
                         atomic_load_explicit(&stats.why[i], memory_order_relaxed));
    if (!err)
        err = metrics_header(out, "tandem_llm_breaker_state", "gauge", "LLM circuit breaker: 0 closed, 1 open, 2 half-open.");
    if (!err)
        err = buf_printf(out, "tandem_llm_breaker_state %d\n", atomic_load(&stats.breaker));
    if (!err)
        err = metrics_header(out, "tandem_llm_breaker_opens_total", "counter", "Times the LLM circuit breaker opened.");
    if (!err)
        err = buf_printf(out, "tandem_llm_breaker_opens_total %lu\n", atomic_load(&stats.breaker_opens));
    if (!err)
        err = metrics_header(out, "tandem_llm_attempts_total", "counter", "HTTP attempts sent upstream (retries included).");
    if (!err)
        err = buf_printf(out, "tandem_llm_attempts_total %lu\n", atomic_load(&stats.attempts));
    if (!err)
        err = metrics_header(out, "tandem_llm_retries_total", "counter", "Retries after connect errors, 408, 429 or 5xx.");
    if (!err)
        err = buf_printf(out, "tandem_llm_retries_total %lu\n", atomic_load(&stats.retries));
    if (!err)
        err = metrics_header(out, "tandem_llm_inflight", "gauge", "LLM requests queued or in flight.");
    if (!err)
        err = buf_printf(out, "tandem_llm_inflight %d\n", atomic_load(&stats.inflight));
    if (!err)
        err = metrics_header(out, "tandem_llm_request_duration_seconds", "histogram",
                             "Time from submit to result, for requests that went upstream.");
    unsigned long acc = 0;
    for (size_t b = 0; !err && b < N_LAT; b++) {
        acc += atomic_load_explicit(&stats.lat[b], memory_order_relaxed);
        err = buf_printf(out, "tandem_llm_request_duration_seconds_bucket{le=\"%g\"} %lu\n", lat_bounds[b], acc);
    }
    acc += atomic_load_explicit(&stats.lat[N_LAT], memory_order_relaxed);
    if (!err)
        err = buf_printf(out,
                         "tandem_llm_request_duration_seconds_bucket{le=\"+Inf\"} %lu\n"
                         "tandem_llm_request_duration_seconds_sum %.6f\n"
                         "tandem_llm_request_duration_seconds_count %lu\n",
                         acc, (double)atomic_load(&stats.lat_sum_us) / 1e6, acc);
    return err;
}

/* ---- state ---- */

enum breaker { BR_CLOSED = 0, BR_OPEN = 1, BR_HALF_OPEN = 2 };
enum job_state { J_NEW, J_RUNNING, J_BACKOFF };

struct job {
    struct job *all_next; /* registry, under g.mu */
    struct job *next;     /* incoming queue (under g.mu) or the worker's own list */
    uint64_t id;
    llm_done_fn cb;
    void *arg;
    struct llm_prompt *prompt;
    atomic_int cancelled;
    int is_probe;
    /* worker thread only */
    enum job_state state;
    CURL *easy;
    struct llm_stream *stream;
    int64_t t_submit, deadline, attempt_start, first_byte_at, last_byte_at, retry_at;
    unsigned attempts, status;
    long retry_after_ms; /* from Retry-After / retry-after-ms, -1 when absent */
    int headers_done;    /* non-2xx status: stopped at the end of headers */
    int stream_done;     /* data: [DONE] seen: the answer is complete even if the socket is not */
    size_t body_bytes;
    enum outcome fail;   /* set by a callback that aborted the transfer; O_OK when none */
    char errbuf[CURL_ERROR_SIZE];
};

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cb_done;
    pthread_t thread;
    int running, stopping;
    CURLM *multi;
    struct job *all, *incoming;
    uint64_t next_id, cb_running;
    unsigned pending;
    unsigned building; /* llm_submit() calls between admission and enqueue: they read g.model etc. */
    /* breaker, under mu */
    enum breaker br;
    unsigned br_failures;
    int64_t br_opened_at;
    int br_probe;
    /* read-only while running */
    struct llm_config cfg;
    char *url, *model, *system_prompt, *proxy, *ca_file, *chat_url, *auth;
    struct curl_slist *headers;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER, .cb_done = PTHREAD_COND_INITIALIZER};

static int metrics_registered;

void llm_config_defaults(struct llm_config *c)
{
    memset(c, 0, sizeof *c);
    c->timeout_ms = LLM_DEFAULT_TIMEOUT_MS;
    c->stall_ms = LLM_DEFAULT_STALL_MS;
    c->backoff_ms = LLM_DEFAULT_BACKOFF_MS;
    c->max_attempts = LLM_DEFAULT_ATTEMPTS;
    c->breaker_failures = LLM_DEFAULT_BREAKER_FAILURES;
    c->breaker_cooldown_ms = LLM_DEFAULT_BREAKER_COOLDOWN_MS;
    c->stream = 1;
    c->json_mode = 1;
    c->temperature = LLM_DEFAULT_TEMPERATURE;
    c->max_tokens = LLM_DEFAULT_MAX_TOKENS;
    c->max_response = LLM_DEFAULT_MAX_RESPONSE;
    c->max_pending = LLM_DEFAULT_MAX_PENDING;
}

int llm_enabled(void)
{
    pthread_mutex_lock(&g.mu);
    int on = g.running && !g.stopping;
    pthread_mutex_unlock(&g.mu);
    return on;
}

void llm_result_free(struct llm_result *r)
{
    if (!r)
        return;
    llm_answer_cleanup(&r->answer);
    free(r);
}

/* ---- breaker (under g.mu) ---- */

static void breaker_set(enum breaker b, int64_t now)
{
    if (b == BR_OPEN) {
        g.br_opened_at = now;
        if (g.br != BR_OPEN)
            atomic_fetch_add(&stats.breaker_opens, 1);
    }
    if (b != g.br)
        log_warn("llm_breaker", "state=%s failures=%u", b == BR_OPEN ? "open" : b == BR_CLOSED ? "closed" : "half_open",
                 g.br_failures);
    g.br = b;
    atomic_store(&stats.breaker, (int)b);
}

/* 0 when a request may go upstream (*probe set when it is the half-open probe), -1 otherwise. */
static int breaker_admit(int64_t now, int *probe)
{
    *probe = 0;
    if (g.br == BR_OPEN && now - g.br_opened_at >= g.cfg.breaker_cooldown_ms)
        breaker_set(BR_HALF_OPEN, now);
    if (g.br == BR_CLOSED)
        return 0;
    if (g.br == BR_HALF_OPEN && !g.br_probe) {
        g.br_probe = 1;
        *probe = 1;
        return 0;
    }
    return -1;
}

static void breaker_report(enum outcome o, int probe, int64_t now)
{
    if (probe)
        g.br_probe = 0;
    if (outcome_is_upstream_failure(o)) {
        g.br_failures++;
        if (probe || (g.br == BR_CLOSED && g.br_failures >= g.cfg.breaker_failures))
            breaker_set(BR_OPEN, now);
    } else if (o == O_OK || o == O_VALIDATION) {
        /* The server answered: it is healthy even when the answer was not usable. */
        g.br_failures = 0;
        if (probe || g.br == BR_HALF_OPEN)
            breaker_set(BR_CLOSED, now);
    }
}

/* ---- worker: transfers ---- */

static enum outcome stream_outcome(enum llm_stream_status st)
{
    switch (st) {
    case LLM_STREAM_MALFORMED: return O_MALFORMED;
    case LLM_STREAM_TOO_LARGE: return O_TOO_LARGE;
    case LLM_STREAM_TRUNCATED: return O_TRUNCATED;
    case LLM_STREAM_UPSTREAM_ERROR: return O_UPSTREAM_ERROR;
    case LLM_STREAM_NOMEM: return O_NOMEM;
    default: return O_OK;
    }
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct job *j = ud;
    size_t len = size * n;
    int64_t now = clock_mono_ms();
    if (!j->first_byte_at)
        j->first_byte_at = now;
    j->last_byte_at = now;
    if (len > g.cfg.max_response - j->body_bytes) {
        j->fail = O_TOO_LARGE;
        return 0;
    }
    j->body_bytes += len;
    if (j->status / 100 != 2 || j->stream_done)
        return len;
    enum llm_stream_status st = llm_stream_feed(j->stream, p, len);
    if (st == LLM_STREAM_DONE) {
        j->stream_done = 1;
    } else if (st != LLM_STREAM_MORE) {
        j->fail = stream_outcome(st);
        return 0;
    }
    return len;
}

static long parse_retry_after(const char *v, size_t n, int millis)
{
    char tmp[32];
    if (n >= sizeof tmp)
        return -1;
    memcpy(tmp, v, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    double d = strtod(tmp, &end);
    while (*end == ' ' || *end == '\t')
        end++;
    if (end == tmp || *end || errno || d < 0 || d > 86400.0 * 1000)
        return -2; /* an HTTP-date or junk: "later than we can wait" */
    return (long)(millis ? d : d * 1000.0);
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct job *j = ud;
    size_t len = size * n, l = len;
    while (l && (p[l - 1] == '\r' || p[l - 1] == '\n'))
        l--;
    if (l >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        const char *sp = memchr(p, ' ', l);
        j->status = sp ? (unsigned)strtoul(sp + 1, NULL, 10) : 0;
        j->retry_after_ms = -1;
        return len;
    }
    if (l == 0) {
        /* End of headers. A non-2xx body is of no use: stop here so a retry can start at once. */
        if (j->status >= 200 && j->status / 100 != 2) {
            j->headers_done = 1;
            return 0;
        }
        return len;
    }
    const char *colon = memchr(p, ':', l);
    if (!colon)
        return len;
    size_t nl = (size_t)(colon - p);
    const char *v = colon + 1;
    while (v < p + l && (*v == ' ' || *v == '\t'))
        v++;
    size_t vl = (size_t)(p + l - v);
    if (nl == 11 && strncasecmp(p, "retry-after", 11) == 0 && j->retry_after_ms < 0)
        j->retry_after_ms = parse_retry_after(v, vl, 0);
    else if (nl == 14 && strncasecmp(p, "retry-after-ms", 14) == 0)
        j->retry_after_ms = parse_retry_after(v, vl, 1);
    return len;
}

static CURL *easy_new(struct job *j)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    size_t blen;
    const char *body = llm_prompt_body(j->prompt, &blen);
    CURLcode rc = CURLE_OK;
#define SET(opt, val)                                                                                              \
    do {                                                                                                           \
        if (!rc)                                                                                                   \
            rc = curl_easy_setopt(e, opt, val);                                                                    \
    } while (0)
    SET(CURLOPT_URL, g.chat_url);
    SET(CURLOPT_POST, 1L);
    SET(CURLOPT_POSTFIELDS, body);
    SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)blen);
    SET(CURLOPT_HTTPHEADER, g.headers);
    SET(CURLOPT_USERAGENT, "tandem/" TANDEM_VERSION);
    SET(CURLOPT_WRITEFUNCTION, on_body);
    SET(CURLOPT_WRITEDATA, j);
    SET(CURLOPT_HEADERFUNCTION, on_header);
    SET(CURLOPT_HEADERDATA, j);
    SET(CURLOPT_PRIVATE, j);
    SET(CURLOPT_ERRORBUFFER, j->errbuf);
    SET(CURLOPT_NOSIGNAL, 1L);
    /* The key must never follow a redirect, and nothing but HTTP(S) may be spoken. */
    SET(CURLOPT_FOLLOWLOCATION, 0L);
#if LIBCURL_VERSION_NUM >= 0x075500
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
#else
    SET(CURLOPT_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
    SET(CURLOPT_REDIR_PROTOCOLS, (long)(CURLPROTO_HTTP | CURLPROTO_HTTPS));
#endif
    SET(CURLOPT_SSL_VERIFYPEER, 1L);
    SET(CURLOPT_SSL_VERIFYHOST, 2L);
    if (g.ca_file)
        SET(CURLOPT_CAINFO, g.ca_file); /* a private CA for an in-cluster model server */
    /* "" disables proxies, including http_proxy/https_proxy from the environment. */
    SET(CURLOPT_PROXY, g.proxy ? g.proxy : "");
    SET(CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)g.cfg.max_response);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
#undef SET
    if (rc) {
        curl_easy_cleanup(e);
        return NULL;
    }
    return e;
}

static int start_attempt(struct job *j, int64_t now)
{
    if (!j->easy)
        j->easy = easy_new(j);
    llm_stream_free(j->stream);
    j->stream = llm_stream_new(0, 0);
    if (!j->easy || !j->stream)
        return -1;
    long left = (long)(j->deadline - now);
    long fb = g.cfg.first_byte_ms < left ? g.cfg.first_byte_ms : left;
    if (left < 1 || fb < 1)
        return -1;
    curl_easy_setopt(j->easy, CURLOPT_TIMEOUT_MS, left); /* backstop: the worker checks first */
    curl_easy_setopt(j->easy, CURLOPT_CONNECTTIMEOUT_MS, fb);
    j->attempts++;
    j->status = 0;
    j->retry_after_ms = -1;
    j->headers_done = j->stream_done = 0;
    j->first_byte_at = j->last_byte_at = 0;
    j->body_bytes = 0;
    j->fail = O_OK;
    j->errbuf[0] = '\0';
    j->attempt_start = now;
    if (curl_multi_add_handle(g.multi, j->easy) != CURLM_OK)
        return -1;
    j->state = J_RUNNING;
    atomic_fetch_add(&stats.attempts, 1);
    return 0;
}

static void detach(struct job *j)
{
    if (j->state == J_RUNNING && j->easy)
        curl_multi_remove_handle(g.multi, j->easy);
    j->state = J_BACKOFF;
}

/* Ends a job: result to the callback (unless cancelled), breaker, metrics, log; frees it. */
static void job_finish(struct job *j, enum outcome o, const char *detail, struct llm_answer *answer)
{
    int64_t now = clock_mono_ms();
    detach(j);
    pthread_mutex_lock(&g.mu);
    for (struct job **pp = &g.all; *pp; pp = &(*pp)->all_next)
        if (*pp == j) {
            *pp = j->all_next;
            break;
        }
    g.pending--;
    int call = !atomic_load(&j->cancelled);
    if (!call)
        o = O_CANCELLED;
    breaker_report(o, j->is_probe, now);
    if (call)
        g.cb_running = j->id;
    pthread_mutex_unlock(&g.mu);
    atomic_fetch_sub(&stats.inflight, 1);

    double took = (double)(now - j->t_submit);
    count_outcome(o);
    observe_latency(took);
    if (o == O_VALIDATION)
        count_why(detail);
    if (o == O_OK)
        log_debug("llm_request", "llm_id=%llu outcome=%s status=%u attempts=%u took_ms=%.0f bytes=%zu",
                  (unsigned long long)j->id, outcome_names[o], j->status, j->attempts, took, j->body_bytes);
    else
        log_info("llm_request", "llm_id=%llu outcome=%s detail=%s status=%u attempts=%u took_ms=%.0f bytes=%zu",
                 (unsigned long long)j->id, outcome_names[o], detail ? detail : "-", j->status, j->attempts, took,
                 j->body_bytes);

    if (call) {
        struct llm_result *r = calloc(1, sizeof *r);
        if (r) {
            r->outcome = outcome_names[o];
            r->detail = detail;
            if (answer) {
                r->answer = *answer;
                memset(answer, 0, sizeof *answer);
            }
            r->http_status = j->status;
            r->attempts = j->attempts;
            r->took_ms = took;
        }
        /* On OOM the callback still runs (with NULL) so a waiting connection is resumed. */
        j->cb(r, j->arg);
        pthread_mutex_lock(&g.mu);
        g.cb_running = 0;
        pthread_cond_broadcast(&g.cb_done);
        pthread_mutex_unlock(&g.mu);
    }
    if (answer)
        llm_answer_cleanup(answer);
    if (j->easy)
        curl_easy_cleanup(j->easy);
    llm_stream_free(j->stream);
    llm_prompt_free(j->prompt);
    free(j);
}

static enum outcome status_outcome(unsigned s)
{
    if (s == 408)
        return O_HTTP_408;
    if (s == 429)
        return O_HTTP_429;
    if (s >= 500 && s <= 599)
        return O_HTTP_5XX;
    if (s >= 400 && s <= 499)
        return O_HTTP_4XX;
    return O_HTTP_OTHER;
}

/* Retries only what never produced an answer byte: connect errors, 408, 429, 5xx. Returns 1 when
 * a retry was scheduled inside the budget. */
static int maybe_retry(struct job *j, enum outcome o, int64_t now)
{
    if (o != O_CONNECT && o != O_HTTP_408 && o != O_HTTP_429 && o != O_HTTP_5XX)
        return 0;
    if (j->attempts >= g.cfg.max_attempts || (j->status / 100 == 2 && j->first_byte_at))
        return 0;
    long delay;
    if (j->retry_after_ms >= 0) {
        delay = j->retry_after_ms;
    } else if (j->retry_after_ms == -2) {
        return 0;
    } else {
        long base = g.cfg.backoff_ms << (j->attempts - 1 < 10 ? j->attempts - 1 : 10);
        delay = base / 2 + (long)((unsigned long)random() % (unsigned long)(base / 2 + 1)); /* jitter: 50-100% */
    }
    if (now + delay + MIN_ATTEMPT_MS > j->deadline)
        return 0; /* Retry-After (or the backoff) does not fit in the budget: fail now, not later */
    detach(j);
    j->retry_at = now + delay;
    atomic_fetch_add(&stats.retries, 1);
    return 1;
}

/* Classifies a finished transfer. Returns 1 when the job lives on (a retry is scheduled), 0 when
 * it was finished (and freed). */
static int transfer_done(struct job *j, CURLcode rc)
{
    int64_t now = clock_mono_ms();
    enum outcome o;
    const char *detail = NULL;
    if (j->stream_done || (rc == CURLE_OK && j->status / 100 == 2)) {
        enum llm_stream_status st = llm_stream_finish(j->stream);
        if (st != LLM_STREAM_DONE) {
            job_finish(j, stream_outcome(st), llm_stream_status_name(st), NULL);
            return 0;
        }
        size_t n;
        const char *content = llm_stream_content(j->stream, &n);
        struct llm_answer a;
        const char *why;
        const char *fr = llm_stream_finish_reason(j->stream);
        if (llm_prompt_validate(j->prompt, content, n, &a, &why) == T_OK)
            job_finish(j, O_OK, fr && strcmp(fr, "length") == 0 ? "finish_length" : NULL, &a);
        else
            job_finish(j, O_VALIDATION, why, NULL);
        return 0;
    }
    if (j->fail != O_OK) {
        o = j->fail;
    } else if (j->headers_done || (rc == CURLE_OK && j->status)) {
        o = status_outcome(j->status);
    } else {
        switch (rc) {
        case CURLE_COULDNT_RESOLVE_HOST:
        case CURLE_COULDNT_RESOLVE_PROXY:
        case CURLE_COULDNT_CONNECT:
        case CURLE_GOT_NOTHING:
        case CURLE_SEND_ERROR:
            o = O_CONNECT;
            break;
        case CURLE_RECV_ERROR:
        case CURLE_PARTIAL_FILE:
            o = j->status ? O_TRUNCATED : O_CONNECT;
            break;
        case CURLE_OPERATION_TIMEDOUT:
            o = now >= j->deadline - 5 ? O_TIMEOUT : j->first_byte_at ? O_STALLED : O_FIRST_BYTE;
            break;
        case CURLE_FILESIZE_EXCEEDED:
            o = O_TOO_LARGE;
            break;
        case CURLE_SSL_CONNECT_ERROR:
        case CURLE_PEER_FAILED_VERIFICATION:
        case CURLE_SSL_CERTPROBLEM:
        case CURLE_SSL_CIPHER:
        case CURLE_SSL_CACERT_BADFILE:
        case CURLE_SSL_ISSUER_ERROR:
            o = O_TLS;
            break;
        default:
            o = O_TRANSPORT;
        }
        detail = curl_easy_strerror(rc);
    }
    if (maybe_retry(j, o, now))
        return 1;
    job_finish(j, o, detail, NULL);
    return 0;
}

/* ---- worker: loop ---- */

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* Deadlines the worker enforces itself; returns when it next needs to look. */
static int64_t check_jobs(struct job **list, int64_t now)
{
    int64_t wake = now + POLL_MAX_MS;
    for (struct job **pp = list; *pp;) {
        struct job *j = *pp;
        enum outcome o = O_OK;
        int finished = 0;
        if (atomic_load(&j->cancelled)) {
            o = O_CANCELLED;
        } else if (j->state == J_RUNNING && j->stream_done) {
            *pp = j->next;
            transfer_done(j, CURLE_OK); /* [DONE] seen: no need to wait for the socket; never retried */
            continue;
        } else if (now >= j->deadline) {
            o = O_TIMEOUT;
        } else if (j->state == J_RUNNING && !j->first_byte_at && !j->headers_done &&
                   now >= j->attempt_start + g.cfg.first_byte_ms) {
            o = O_FIRST_BYTE;
        } else if (j->state == J_RUNNING && j->first_byte_at && now - j->last_byte_at >= g.cfg.stall_ms) {
            o = O_STALLED;
        } else if (j->state != J_RUNNING && now >= j->retry_at) {
            if (start_attempt(j, now))
                o = O_NOMEM;
        }
        if (o != O_OK) {
            *pp = j->next;
            job_finish(j, o, NULL, NULL);
            finished = 1;
        }
        if (finished)
            continue;
        wake = min64(wake, j->deadline);
        if (j->state == J_RUNNING && !j->first_byte_at)
            wake = min64(wake, j->attempt_start + g.cfg.first_byte_ms);
        else if (j->state == J_RUNNING)
            wake = min64(wake, j->last_byte_at + g.cfg.stall_ms);
        else
            wake = min64(wake, j->retry_at);
        pp = &j->next;
    }
    return wake;
}

static void *worker_main(void *unused)
{
    (void)unused;
    struct job *list = NULL;
    srandom((unsigned)(clock_mono_ms() ^ (int64_t)getpid()));
    for (;;) {
        pthread_mutex_lock(&g.mu);
        int stopping = g.stopping;
        struct job *in = g.incoming;
        g.incoming = NULL;
        pthread_mutex_unlock(&g.mu);
        while (in) {
            struct job *j = in;
            in = in->next;
            j->state = J_NEW;
            j->retry_at = 0;
            j->next = list;
            list = j;
        }
        if (stopping)
            break;
        int still;
        curl_multi_perform(g.multi, &still);
        CURLMsg *msg;
        int left;
        while ((msg = curl_multi_info_read(g.multi, &left))) {
            if (msg->msg != CURLMSG_DONE)
                continue;
            struct job *j = NULL;
            CURLcode rc = msg->data.result;
            curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&j);
            if (!j || j->state != J_RUNNING)
                continue;
            int cancelled = atomic_load(&j->cancelled);
            /* Unlink first: job_finish frees it, a retry keeps it in the list. */
            for (struct job **pp = &list; *pp; pp = &(*pp)->next)
                if (*pp == j) {
                    *pp = j->next;
                    break;
                }
            if (cancelled) {
                job_finish(j, O_CANCELLED, NULL, NULL);
            } else if (transfer_done(j, rc)) {
                j->next = list;
                list = j;
            }
        }
        int64_t now = clock_mono_ms();
        int64_t wake = check_jobs(&list, now);
        /* No curl_multi_perform() here: a transfer it finished would sit in the info queue until
         * the next wake-up. Handles check_jobs() added make curl_multi_timeout() return 0. */
        long wait = (long)(wake - clock_mono_ms());
        long ct = -1;
        curl_multi_timeout(g.multi, &ct);
        if (ct >= 0 && ct < wait)
            wait = ct;
        if (wait < 0)
            wait = 0;
        curl_multi_poll(g.multi, NULL, 0, (int)wait, NULL);
    }
    while (list) {
        struct job *j = list;
        list = j->next;
        job_finish(j, O_SHUTDOWN, NULL, NULL);
    }
    return NULL;
}

/* ---- lifecycle ---- */

static char *dup_or_null(const char *s) { return s && *s ? strdup(s) : NULL; }

static void wipe_free(char *s)
{
    if (s) {
        explicit_bzero(s, strlen(s));
        free(s);
    }
}

static void release_settings(void)
{
    for (struct curl_slist *h = g.headers; h; h = h->next)
        explicit_bzero(h->data, strlen(h->data)); /* one of them is a copy of the Authorization line */
    curl_slist_free_all(g.headers);
    g.headers = NULL;
    wipe_free(g.auth);
    free(g.url);
    free(g.model);
    free(g.system_prompt);
    free(g.proxy);
    free(g.ca_file);
    free(g.chat_url);
    g.auth = g.url = g.model = g.system_prompt = g.proxy = g.ca_file = g.chat_url = NULL;
    if (g.multi)
        curl_multi_cleanup(g.multi);
    g.multi = NULL;
}

int llm_start(const struct llm_config *c)
{
    if (!c->url || !*c->url || !c->model || !*c->model)
        return T_ERR_CONFIG;
    pthread_mutex_lock(&g.mu);
    int already = g.running || g.stopping;
    pthread_mutex_unlock(&g.mu);
    if (already)
        return T_ERR_INTERNAL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        return T_ERR_INTERNAL;
    g.cfg = *c;
    if (g.cfg.timeout_ms <= 0)
        g.cfg.timeout_ms = LLM_DEFAULT_TIMEOUT_MS;
    /* Without streaming the first byte comes with the whole answer: only the budget applies. */
    if (g.cfg.first_byte_ms <= 0)
        g.cfg.first_byte_ms = !g.cfg.stream || g.cfg.timeout_ms < LLM_DEFAULT_FIRST_BYTE_MS ? g.cfg.timeout_ms
                                                                                           : LLM_DEFAULT_FIRST_BYTE_MS;
    if (g.cfg.stall_ms <= 0)
        g.cfg.stall_ms = LLM_DEFAULT_STALL_MS;
    if (g.cfg.backoff_ms <= 0)
        g.cfg.backoff_ms = LLM_DEFAULT_BACKOFF_MS;
    if (!g.cfg.max_attempts)
        g.cfg.max_attempts = 1;
    if (!g.cfg.breaker_failures)
        g.cfg.breaker_failures = LLM_DEFAULT_BREAKER_FAILURES;
    if (g.cfg.breaker_cooldown_ms < 0)
        g.cfg.breaker_cooldown_ms = LLM_DEFAULT_BREAKER_COOLDOWN_MS;
    if (!g.cfg.max_response)
        g.cfg.max_response = LLM_DEFAULT_MAX_RESPONSE;
    if (!g.cfg.max_pending)
        g.cfg.max_pending = LLM_DEFAULT_MAX_PENDING;
    if (!g.cfg.max_tokens)
        g.cfg.max_tokens = LLM_DEFAULT_MAX_TOKENS;
    g.url = strdup(c->url);
    g.model = strdup(c->model);
    g.system_prompt = dup_or_null(c->system_prompt);
    g.proxy = dup_or_null(c->proxy);
    g.ca_file = dup_or_null(c->ca_file);
    g.cfg.url = g.cfg.model = g.cfg.api_key = g.cfg.system_prompt = g.cfg.proxy = g.cfg.ca_file = NULL;
    int err = T_ERR_NOMEM;
    struct buf b;
    buf_init(&b, 0);
    if (!g.url || !g.model || (c->system_prompt && *c->system_prompt && !g.system_prompt) ||
        (c->proxy && *c->proxy && !g.proxy) || (c->ca_file && *c->ca_file && !g.ca_file))
        goto fail;
    size_t ul = strlen(g.url);
    while (ul && g.url[ul - 1] == '/')
        g.url[--ul] = '\0';
    if (buf_printf(&b, "%s/chat/completions", g.url))
        goto fail;
    g.chat_url = buf_take(&b);
    struct curl_slist *h = NULL, *t;
    const char *fixed[] = {"Content-Type: application/json",
                           g.cfg.stream ? "Accept: text/event-stream" : "Accept: application/json",
                           "Expect:" /* no 100-continue round trip on big prompts */};
    for (size_t i = 0; i < 3; i++) {
        t = curl_slist_append(h, fixed[i]);
        if (!t)
            goto fail_headers;
        h = t;
    }
    if (c->api_key && *c->api_key) {
        if (buf_printf(&b, "Authorization: Bearer %s", c->api_key))
            goto fail_headers;
        g.auth = buf_take(&b);
        t = g.auth ? curl_slist_append(h, g.auth) : NULL;
        if (!t)
            goto fail_headers;
        h = t;
    }
    g.headers = h;
    g.multi = curl_multi_init();
    if (!g.multi)
        goto fail;
    curl_multi_setopt(g.multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)MAX_TOTAL_CONNECTIONS);
    pthread_mutex_lock(&g.mu);
    g.br = BR_CLOSED;
    g.br_failures = 0;
    g.br_probe = 0;
    atomic_store(&stats.breaker, BR_CLOSED);
    g.stopping = 0;
    g.running = 1;
    g.all = g.incoming = NULL;
    g.pending = 0;
    pthread_mutex_unlock(&g.mu);
    if (pthread_create(&g.thread, NULL, worker_main, NULL) != 0) {
        pthread_mutex_lock(&g.mu);
        g.running = 0;
        pthread_mutex_unlock(&g.mu);
        err = T_ERR_INTERNAL;
        goto fail;
    }
    if (!metrics_registered) {
        metrics_registered = 1;
        metrics_register(llm_metrics_render);
    }
    log_info("llm_start", "stream=%d json_mode=%d timeout_ms=%ld first_byte_ms=%ld stall_ms=%ld attempts=%u key=%s",
             g.cfg.stream, g.cfg.json_mode, g.cfg.timeout_ms, g.cfg.first_byte_ms, g.cfg.stall_ms,
             g.cfg.max_attempts, g.auth ? "set" : "none");
    return T_OK;
fail_headers:
    curl_slist_free_all(h);
fail:
    buf_cleanup(&b);
    release_settings();
    return err;
}

void llm_stop(void)
{
    pthread_mutex_lock(&g.mu);
    if (!g.running || g.stopping) {
        pthread_mutex_unlock(&g.mu);
        return;
    }
    g.stopping = 1;
    curl_multi_wakeup(g.multi);
    pthread_mutex_unlock(&g.mu);
    pthread_join(g.thread, NULL);
    /* A concurrent llm_submit() may still be building a prompt with g.model/g.system_prompt:
     * wait for it (it then sees "stopping" and answers "disabled") before freeing them. */
    pthread_mutex_lock(&g.mu);
    g.running = 0;
    while (g.building)
        pthread_cond_wait(&g.cb_done, &g.mu);
    pthread_mutex_unlock(&g.mu);
    release_settings();
    pthread_mutex_lock(&g.mu);
    g.stopping = 0;
    pthread_mutex_unlock(&g.mu);
}

/* ---- submit / cancel ---- */

int llm_submit(const struct llm_request *req, llm_done_fn cb, void *cb_arg, uint64_t *handle, const char **reason)
{
    int64_t t0 = clock_mono_ms();
    if (handle)
        *handle = 0;
    enum outcome refuse = O_OK;
    int probe = 0;
    pthread_mutex_lock(&g.mu);
    if (!g.running || g.stopping)
        refuse = O_DISABLED;
    else if (g.pending >= g.cfg.max_pending)
        refuse = O_OVERLOADED;
    else if (breaker_admit(t0, &probe))
        refuse = O_CIRCUIT_OPEN;
    struct llm_prompt_opts po = {0};
    long budget = 0;
    if (!refuse) {
        /* settings stay valid while building > 0: llm_stop() waits for it */
        po = (struct llm_prompt_opts){g.model, g.system_prompt, g.cfg.stream, g.cfg.json_mode, g.cfg.temperature,
                                      g.cfg.max_tokens};
        budget = req->budget_ms > 0 ? req->budget_ms : g.cfg.timeout_ms;
        g.pending++; /* reserve the slot before the (unlocked) prompt build */
        g.building++;
    }
    pthread_mutex_unlock(&g.mu);
    if (refuse) {
        count_outcome(refuse);
        *reason = outcome_names[refuse];
        return T_ERR_UNAVAILABLE;
    }

    struct llm_prompt *prompt = NULL;
    const char *why = NULL;
    int err = cb ? llm_prompt_build(&po, req, &prompt, &why) : T_ERR_BAD_REQUEST;
    struct job *j = err ? NULL : calloc(1, sizeof *j);
    if (!err && !j)
        err = T_ERR_NOMEM;
    if (err) {
        enum outcome o = !cb || (why && strcmp(why, "bad_request") == 0) ? O_BAD_REQUEST
                         : why && strcmp(why, "redaction_failed") == 0   ? O_REDACTION
                                                                         : O_NOMEM;
        llm_prompt_free(prompt);
        pthread_mutex_lock(&g.mu);
        g.pending--;
        g.building--;
        pthread_cond_broadcast(&g.cb_done);
        if (probe)
            g.br_probe = 0; /* the probe never went out: let the next request probe */
        pthread_mutex_unlock(&g.mu);
        count_outcome(o);
        *reason = outcome_names[o];
        return o == O_BAD_REQUEST ? T_ERR_BAD_REQUEST : o == O_NOMEM ? T_ERR_NOMEM : err;
    }
    j->cb = cb;
    j->arg = cb_arg;
    j->prompt = prompt;
    j->is_probe = probe;
    j->t_submit = t0;
    j->deadline = t0 + budget;
    atomic_init(&j->cancelled, 0);
    pthread_mutex_lock(&g.mu);
    g.building--;
    pthread_cond_broadcast(&g.cb_done);
    if (!g.running || g.stopping) {
        g.pending--;
        pthread_mutex_unlock(&g.mu);
        llm_prompt_free(prompt);
        free(j);
        count_outcome(O_DISABLED);
        *reason = outcome_names[O_DISABLED];
        return T_ERR_UNAVAILABLE;
    }
    j->id = ++g.next_id;
    if (handle)
        *handle = j->id;
    j->all_next = g.all;
    g.all = j;
    j->next = g.incoming;
    g.incoming = j;
    atomic_fetch_add(&stats.inflight, 1);
    curl_multi_wakeup(g.multi); /* under the lock: llm_stop cannot free the multi meanwhile */
    pthread_mutex_unlock(&g.mu);
    *reason = NULL;
    return T_OK;
}

int llm_cancel(uint64_t handle)
{
    if (!handle)
        return 0;
    int found = 0;
    pthread_mutex_lock(&g.mu);
    for (struct job *j = g.all; j; j = j->all_next)
        if (j->id == handle) {
            found = !atomic_exchange(&j->cancelled, 1);
            break;
        }
    if (found && g.multi)
        curl_multi_wakeup(g.multi);
    if (!found && g.running)
        while (g.cb_running == handle && !pthread_equal(pthread_self(), g.thread))
            pthread_cond_wait(&g.cb_done, &g.mu);
    pthread_mutex_unlock(&g.mu);
    return found;
}

/* ---- synchronous wrapper ---- */

struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct llm_result *res;
    int done;
};

static void sync_done(struct llm_result *res, void *arg)
{
    struct sync_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->res = res;
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int llm_complete_sync(const struct llm_request *req, struct llm_result **out)
{
    struct sync_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
    const char *reason = NULL;
    *out = NULL;
    int err = llm_submit(req, sync_done, &w, NULL, &reason);
    if (err) {
        struct llm_result *r = calloc(1, sizeof *r);
        if (!r)
            return T_ERR_NOMEM;
        r->outcome = reason;
        *out = r;
        return err;
    }
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    *out = w.res;
    if (!w.res)
        return T_ERR_NOMEM;
    return strcmp(w.res->outcome, "ok") == 0 ? T_OK : T_ERR_UNAVAILABLE;
}

/* ---- from the program config ---- */

static int read_key_file(const char *path, char **out, FILE *err)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(err, "tandemd: TANDEM_LLM_API_KEY_FILE=%s: cannot open: %s\n", path, strerror(errno));
        return -1;
    }
    char *line = calloc(1, KEY_MAX + 2);
    int ok = line && fgets(line, KEY_MAX + 2, f) != NULL;
    fclose(f);
    size_t n = ok ? strlen(line) : 0;
    int too_long = n > KEY_MAX;
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
        line[--n] = '\0';
    if (!ok || n == 0 || too_long) {
        fprintf(err, "tandemd: TANDEM_LLM_API_KEY_FILE=%s: %s\n", path,
                too_long ? "the key (first line) is longer than 4096 bytes" : "the first line holds no key");
        wipe_free(line);
        return -1;
    }
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)line[i] < 0x21 || (unsigned char)line[i] > 0x7e) {
            fprintf(err, "tandemd: TANDEM_LLM_API_KEY_FILE=%s: the key must be printable ASCII without spaces\n", path);
            wipe_free(line);
            return -1;
        }
    *out = line;
    return 0;
}

int llm_start_from_config(const struct config *cfg, FILE *err)
{
    if (!cfg->llm_url)
        return 1;
    struct llm_config c;
    llm_config_defaults(&c);
    c.url = cfg->llm_url;
    c.model = cfg->llm_model;
    c.api_key = cfg->llm_api_key;
    c.timeout_ms = cfg->llm_timeout_ms > 0 ? cfg->llm_timeout_ms : LLM_DEFAULT_TIMEOUT_MS;
    /* the knobs were validated, defaults filled in, with the rest of the configuration (config.c) */
    c.temperature = cfg->llm_temperature;
    c.stream = cfg->llm_stream != 0;
    c.json_mode = cfg->llm_json_mode != 0;
    c.max_tokens = (unsigned)cfg->llm_max_tokens;
    c.first_byte_ms = cfg->llm_first_byte_ms; /* 0: llm_start derives it */
    c.stall_ms = cfg->llm_stall_ms;
    c.breaker_failures = (unsigned)cfg->llm_breaker_failures;
    c.breaker_cooldown_ms = cfg->llm_breaker_cooldown_ms;
    c.proxy = cfg->llm_proxy;
    c.ca_file = cfg->llm_ca_file;
    char *key = NULL, *prompt = NULL;
    int rc = -1;
    if (cfg->llm_api_key_file) {
        if (read_key_file(cfg->llm_api_key_file, &key, err))
            goto out;
        c.api_key = key;
    }
    if (cfg->llm_system_prompt_file) {
        char why[512];
        if (llm_prompt_load_system(cfg->llm_system_prompt_file, &prompt, why, sizeof why)) {
            fprintf(err, "tandemd: TANDEM_LLM_SYSTEM_PROMPT_FILE=%s: %s\n", cfg->llm_system_prompt_file, why);
            goto out;
        }
        c.system_prompt = prompt;
    }
    int e = llm_start(&c);
    if (e) {
        fprintf(err, "tandemd: cannot start the LLM client: %s\n", tandem_strerror(e));
        goto out;
    }
    rc = 0;
out:
    wipe_free(key);
    free(prompt);
    return rc;
}
