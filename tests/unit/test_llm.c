/* Unit tests for the LLM client against tests/fake_llm/fake_openai.py (started here on a free port):
 * outcomes, budget, retries, breaker, cancel, shutdown, redaction before sending, metrics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tandem/buf.h"
#include "tandem/config.h"
#include "tandem/error.h"
#include "tandem/llm.h"
#include "tandem/log.h"
#include "tandem/metrics.h"
#include "tandem/redact.h"

#define BUDGET_MS 1500
#define SLACK_MS 250 /* scheduling noise on a shared 2-core box; budgets are still checked */

static pid_t fake_pid = -1;    /* our child (a pyenv-style shim may run python under another pid) */
static pid_t fake_server = -1; /* the pid the fake reports */
static int fake_out = -1;
static int fake_in = -1; /* the fake exits when this closes: also when this process dies */
static char fake_root[64]; /* http://127.0.0.1:PORT */
static char fake_v1[80];

/* ---- the fake server ---- */

static const char *fake_script(void)
{
    static const char *const candidates[] = {"tests/fake_llm/fake_openai.py", "../tests/fake_llm/fake_openai.py",
                                             "../../tests/fake_llm/fake_openai.py"};
    const char *env = getenv("TANDEM_FAKE_LLM");
    if (env)
        return env;
    for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++)
        if (access(candidates[i], R_OK) == 0)
            return candidates[i];
    return candidates[0];
}

static int group_setup(void **state)
{
    (void)state;
    log_setup(LOG_ERROR, 0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int p[2], in[2];
    if (pipe2(p, O_CLOEXEC) || pipe2(in, O_CLOEXEC))
        return -1;
    fake_pid = fork();
    if (fake_pid == 0) {
        dup2(p[1], 1);
        dup2(in[0], 0);
        execlp("python3", "python3", fake_script(), "--port", "0", "--exit-on-stdin-eof", (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    close(in[0]);
    fake_out = p[0];
    fake_in = in[1];
    char line[64] = "";
    size_t n = 0;
    struct pollfd pfd = {fake_out, POLLIN, 0};
    while (n + 1 < sizeof line && poll(&pfd, 1, 10000) == 1) {
        ssize_t r = read(fake_out, line + n, 1);
        if (r <= 0 || line[n] == '\n')
            break;
        n++;
    }
    line[n] = '\0';
    int port = 0, pid = 0;
    if (sscanf(line, "PORT %d PID %d", &port, &pid) != 2 || port <= 0) {
        fprintf(stderr, "fake server did not start (%s): got \"%s\"\n", fake_script(), line);
        return -1;
    }
    fake_server = pid;
    snprintf(fake_root, sizeof fake_root, "http://127.0.0.1:%d", port);
    snprintf(fake_v1, sizeof fake_v1, "%s/v1", fake_root);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    llm_stop();
    if (fake_in >= 0)
        close(fake_in);
    if (fake_server > 0)
        kill(fake_server, SIGTERM);
    if (fake_pid > 0)
        waitpid(fake_pid, NULL, 0);
    if (fake_out >= 0)
        close(fake_out);
    curl_global_cleanup();
    return 0;
}

/* A failed assertion leaves the test early: never let the worker outlive its test. */
static int stop_llm(void **state)
{
    (void)state;
    llm_stop();
    llm_prompt_redact_fn = redact_text;
    return 0;
}

static size_t collect(char *p, size_t size, size_t n, void *ud)
{
    return buf_append(ud, p, size * n) ? 0 : size * n;
}

/* A control call to the fake; returns the body (new), fails the test on a transport error. */
static char *fake_call(const char *path, const char *post_json)
{
    char url[160];
    snprintf(url, sizeof url, "%s%s", fake_root, path);
    CURL *e = curl_easy_init();
    struct buf b;
    buf_init(&b, 0);
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    if (post_json)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, post_json);
    CURLcode rc = curl_easy_perform(e);
    long status = 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
    curl_slist_free_all(h);
    curl_easy_cleanup(e);
    if (rc != CURLE_OK || status != 200)
        fail_msg("fake %s: %s, status %ld", path, curl_easy_strerror(rc), status);
    return buf_take(&b);
}

static void fake_control(const char *json) { free(fake_call("/_control", json)); }
static void fake_reset(void) { free(fake_call("/_reset", "{}")); }

static json_t *fake_prompts(void)
{
    char *s = fake_call("/_prompts", NULL);
    json_t *root = json_loads(s, 0, NULL);
    free(s);
    assert_non_null(root);
    json_t *arr = json_incref(json_object_get(root, "prompts"));
    json_decref(root);
    assert_true(json_is_array(arr));
    return arr;
}

static int fake_requests(void)
{
    char *s = fake_call("/_stats", NULL);
    json_t *root = json_loads(s, 0, NULL);
    free(s);
    int n = (int)json_integer_value(json_object_get(root, "requests"));
    json_decref(root);
    return n;
}

/* ---- requests ---- */

static const char *const pii[] = {"4111 1111 1111 1111", "4111111111111111", "anna.svensson@example.com",
                                  "+46 70 123 45 67", "46701234567"};

static const struct llm_msg convo[] = {
    {"customer", "I was charged twice on 4111 1111 1111 1111, write to anna.svensson@example.com"},
    {"agent", "Sorry to hear that! Which order?"},
    {"customer", "Order A-1. Or call +46 70 123 45 67."},
};
static const struct llm_ground ground[] = {
    {"refund-status", "Where is my refund?", "Refunds take 5-7 days.", "https://help.acme.com/refunds", 0},
};

static struct llm_request std_req(void)
{
    struct llm_request r = {convo, 3, ground, 1, "Second contact.", "en", 3, NULL, 0};
    return r;
}

static void std_cfg(struct llm_config *c)
{
    llm_config_defaults(c);
    c->url = fake_v1;
    c->model = "fake";
    c->api_key = "test-key-123";
    c->timeout_ms = BUDGET_MS;
    c->first_byte_ms = 500;
    c->stall_ms = 300;
    c->backoff_ms = 20;
    c->breaker_failures = 1000;
    c->breaker_cooldown_ms = 300;
}

static void start_with(const struct llm_config *c)
{
    fake_reset();
    assert_int_equal(llm_start(c), T_OK);
    assert_int_equal(llm_enabled(), 1);
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1000.0 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Callback collector for the asynchronous tests. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int calls;
    struct llm_result *res;
    struct timespec at;
};
#define WAITER_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, NULL, {0, 0}}

static void on_done(struct llm_result *res, void *arg)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->calls++;
    llm_result_free(w->res);
    w->res = res;
    clock_gettime(CLOCK_MONOTONIC, &w->at);
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int wait_calls(struct waiter *w, int calls, long timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&w->mu);
    while (w->calls < calls && pthread_cond_timedwait(&w->cv, &w->mu, &until) == 0)
        ;
    int n = w->calls;
    pthread_mutex_unlock(&w->mu);
    return n;
}

static struct llm_result *run_sync(void)
{
    struct llm_request r = std_req();
    struct llm_result *res = NULL;
    llm_complete_sync(&r, &res);
    assert_non_null(res);
    return res;
}

/* ---- tests ---- */

static void test_ok_stream_and_no_pii_sent(void **state)
{
    (void)state;
    struct llm_config c;
    std_cfg(&c);
    start_with(&c);
    unsigned long ok_before = llm_stat_outcome("ok");
    struct llm_result *res = run_sync();
    assert_string_equal(res->outcome, "ok");
    assert_int_equal(res->attempts, 1);
    assert_int_equal(res->http_status, 200);
    assert_int_equal(res->answer.n, 3);
    assert_string_equal(res->answer.items[0].text, "Thanks for your patience \xe2\x80\x94 I'm looking into this for you right now.");
    assert_string_equal(res->answer.items[0].kb_id, "refund-status");
    assert_null(res->answer.items[1].kb_id);
    assert_true(res->took_ms < BUDGET_MS);
    llm_result_free(res);
    assert_int_equal(llm_stat_outcome("ok"), ok_before + 1);

    json_t *prompts = fake_prompts();
    assert_int_equal(json_array_size(prompts), 1);
    json_t *p0 = json_array_get(prompts, 0);
    assert_string_equal(json_string_value(json_object_get(p0, "auth")), "Bearer test-key-123");
    assert_true(json_is_true(json_object_get(p0, "stream")));
    assert_string_equal(json_string_value(json_object_get(p0, "path")), "/v1/chat/completions");
    const char *body = json_string_value(json_object_get(p0, "body"));
    for (size_t i = 0; i < sizeof pii / sizeof pii[0]; i++)
        if (strstr(body, pii[i]))
            fail_msg("the fake server received %s", pii[i]);
    assert_non_null(strstr(body, "[CARD_1]"));
    assert_non_null(strstr(body, "[EMAIL_1]"));
    assert_non_null(strstr(body, "[PHONE_1]"));
    assert_non_null(strstr(body, "\"response_format\":{\"type\":\"json_object\"}"));
    json_decref(prompts);
    llm_stop();
    assert_int_equal(llm_enabled(), 0);
}

static void test_ok_variants(void **state)
{
    (void)state;
    static const char *const modes[] = {"nonstream", "crlf", "keepalive", "fragment", "fence", "strings", "no_done",
                                        "done_then_hang:3000"};
    struct llm_config c;
    std_cfg(&c);
    start_with(&c);
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        char ctl[128];
        snprintf(ctl, sizeof ctl, "{\"default\":\"%s\"}", modes[i]);
        fake_control(ctl);
        struct llm_result *res = run_sync();
        if (strcmp(res->outcome, "ok") != 0)
            fail_msg("mode %s: %s (%s)", modes[i], res->outcome, res->detail ? res->detail : "-");
        assert_int_equal(res->answer.n, 3);
        assert_string_equal(res->answer.items[0].text, "Thanks for your patience \xe2\x80\x94 I'm looking into this for you right now.");
        /* [DONE] completes the answer even when the server keeps the response open (3 s) */
        if (strncmp(modes[i], "done_then_hang", 14) == 0 && res->took_ms > 1000)
            fail_msg("mode %s took %.0f ms", modes[i], res->took_ms);
        llm_result_free(res);
    }
    llm_stop();

    /* non-streaming requests */
    c.stream = 0;
    c.json_mode = 0;
    start_with(&c);
    struct llm_result *res = run_sync();
    assert_string_equal(res->outcome, "ok");
    assert_int_equal(res->answer.n, 3);
    llm_result_free(res);
    json_t *prompts = fake_prompts();
    json_t *p0 = json_array_get(prompts, 0);
    assert_true(json_is_false(json_object_get(p0, "stream")));
    assert_null(strstr(json_string_value(json_object_get(p0, "body")), "response_format"));
    json_decref(prompts);
    llm_stop();
}

static void test_failures_fall_back_within_budget(void **state)
{
    (void)state;
    struct {
        const char *mode, *outcome, *detail;
        unsigned attempts; /* 0 = don't check */
    } t[] = {
        {"slow_first_byte:1200", "first_byte_timeout", NULL, 1},
        {"stall:2000", "stalled", NULL, 1},
        {"500", "http_5xx", NULL, 3},
        {"503", "http_5xx", NULL, 3},
        {"408", "http_408", NULL, 3},
        {"401", "http_4xx", NULL, 1},
        {"429:5", "http_429", NULL, 1},      /* Retry-After beyond the budget: give up at once */
        {"429:date", "http_429", NULL, 1},
        {"malformed", "malformed", NULL, 1},
        {"truncated", "truncated", NULL, 1},
        {"error_event", "upstream_error", NULL, 1},
        {"huge:300000", "too_large", NULL, 1},
        {"not_json", "validation_failed", "not_json", 1},
        {"leak_card", "validation_failed", "pii", 1},
        {"bad_url", "validation_failed", "unknown_url", 1},
        {"inject", "ok", NULL, 1},
    };
    struct llm_config c;
    std_cfg(&c);
    start_with(&c);
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        char ctl[128];
        snprintf(ctl, sizeof ctl, "{\"default\":\"%s\"}", t[i].mode);
        fake_control(ctl);
        unsigned long before = llm_stat_outcome(t[i].outcome);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        struct llm_result *res = run_sync();
        double wall = ms_since(&t0);
        if (strcmp(res->outcome, t[i].outcome) != 0)
            fail_msg("mode %s: outcome %s (%s), expected %s", t[i].mode, res->outcome, res->detail ? res->detail : "-",
                     t[i].outcome);
        if (t[i].detail)
            assert_string_equal(res->detail ? res->detail : "(null)", t[i].detail);
        if (t[i].attempts && res->attempts != t[i].attempts)
            fail_msg("mode %s: %u attempts, expected %u", t[i].mode, res->attempts, t[i].attempts);
        if (wall > BUDGET_MS + SLACK_MS)
            fail_msg("mode %s: answered after %.0f ms, budget %d", t[i].mode, wall, BUDGET_MS);
        if (strcmp(t[i].outcome, "ok") != 0)
            assert_int_equal(res->answer.n, 0);
        assert_int_equal(llm_stat_outcome(t[i].outcome), before + 1);
        if (strcmp(t[i].mode, "inject") == 0) {
            /* the injected SSE event stays inside the text; one-line JSON encoding is the SSE layer's job */
            assert_non_null(strstr(res->answer.items[0].text, "\n\nevent: alert\ndata: "));
        }
        if (strcmp(t[i].mode, "429:5") == 0 || strcmp(t[i].mode, "401") == 0)
            assert_true(wall < 400);
        llm_result_free(res);
    }
    llm_stop();

    /* a hung server with the whole budget as first-byte deadline: the total budget fires */
    c.first_byte_ms = BUDGET_MS;
    start_with(&c);
    fake_control("{\"default\":\"hang\"}");
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct llm_result *res = run_sync();
    double wall = ms_since(&t0);
    assert_string_equal(res->outcome, "timeout");
    assert_true(wall >= BUDGET_MS - 20 && wall <= BUDGET_MS + SLACK_MS);
    llm_result_free(res);
    llm_stop();

    /* the response cap fails the request, it does not truncate the answer */
    std_cfg(&c);
    c.max_response = 2000;
    start_with(&c);
    res = run_sync();
    assert_string_equal(res->outcome, "too_large");
    llm_result_free(res);
    llm_stop();
}

static void test_retries(void **state)
{
    (void)state;
    struct {
        const char *script;
        unsigned attempts;
        double min_ms;
    } t[] = {
        {"[\"500\",\"normal\"]", 2, 0},
        {"[\"429:0\",\"normal\"]", 2, 0},
        {"[\"503\",\"408\",\"normal\"]", 3, 0},
        {"[\"429:1\",\"normal\"]", 2, 990}, /* Retry-After: 1 fits in 1.5 s and is honoured */
    };
    struct llm_config c;
    std_cfg(&c);
    start_with(&c);
    unsigned long retries_before = 0;
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (t[i].min_ms > 0) {
            /* room for the 1 s wait whatever the first attempt cost (sanitizers, a busy box) */
            llm_stop();
            c.timeout_ms = 3000;
            assert_int_equal(llm_start(&c), T_OK);
        }
        fake_reset();
        char ctl[128];
        snprintf(ctl, sizeof ctl, "{\"script\":%s}", t[i].script);
        fake_control(ctl);
        struct llm_result *res = run_sync();
        if (strcmp(res->outcome, "ok") != 0 || res->attempts != t[i].attempts)
            fail_msg("script %s: %s after %u attempts", t[i].script, res->outcome, res->attempts);
        if (res->took_ms < t[i].min_ms || res->took_ms > (double)(c.timeout_ms + SLACK_MS))
            fail_msg("script %s: took %.0f ms", t[i].script, res->took_ms);
        assert_int_equal(fake_requests(), (int)t[i].attempts);
        llm_result_free(res);
    }
    struct buf m;
    buf_init(&m, 0);
    assert_int_equal(llm_metrics_render(&m), T_OK);
    assert_int_equal(sscanf(strstr(m.data, "\ntandem_llm_retries_total ") + 1, "tandem_llm_retries_total %lu", &retries_before), 1);
    assert_true(retries_before >= 5);
    buf_cleanup(&m);
    llm_stop();

    /* nothing listens: connect errors are retried, then reported, inside the budget */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/v1", ntohs(a.sin_port));
    c.url = url;
    c.timeout_ms = BUDGET_MS;
    assert_int_equal(llm_start(&c), T_OK);
    struct llm_result *res = run_sync();
    assert_string_equal(res->outcome, "connect");
    assert_int_equal(res->attempts, 3);
    assert_true(res->took_ms < BUDGET_MS);
    llm_result_free(res);
    llm_stop();
}

static void test_breaker_opens_and_recovers(void **state)
{
    (void)state;
    struct llm_config c;
    std_cfg(&c);
    c.breaker_failures = 3;
    c.breaker_cooldown_ms = 300;
    c.max_attempts = 1;
    start_with(&c);
    fake_control("{\"default\":\"500\"}");
    for (int i = 0; i < 3; i++) {
        assert_int_equal(llm_breaker_state(), 0);
        struct llm_result *res = run_sync();
        assert_string_equal(res->outcome, "http_5xx");
        llm_result_free(res);
    }
    assert_int_equal(llm_breaker_state(), 1);
    assert_int_equal(fake_requests(), 3);
    /* open: refused at submit, nothing sent, no callback */
    struct waiter w = WAITER_INIT;
    struct llm_request r = std_req();
    const char *reason = NULL;
    uint64_t h = 99;
    assert_int_equal(llm_submit(&r, on_done, &w, &h, &reason), T_ERR_UNAVAILABLE);
    assert_string_equal(reason, "circuit_open");
    assert_int_equal(h, 0);
    assert_int_equal(fake_requests(), 3);
    /* after the cool-down one probe goes out; while it runs, others are refused */
    sleep_ms(320);
    fake_control("{\"default\":\"slow_first_byte:150\"}");
    assert_int_equal(llm_submit(&r, on_done, &w, &h, &reason), T_OK);
    assert_int_equal(llm_breaker_state(), 2);
    struct llm_result *res = run_sync();
    assert_string_equal(res->outcome, "circuit_open");
    llm_result_free(res);
    assert_int_equal(wait_calls(&w, 1, 3000), 1);
    assert_string_equal(w.res->outcome, "ok");
    assert_int_equal(llm_breaker_state(), 0);
    /* a failed probe opens it again */
    fake_control("{\"default\":\"500\"}");
    for (int i = 0; i < 3; i++)
        llm_result_free(run_sync());
    assert_int_equal(llm_breaker_state(), 1);
    sleep_ms(320);
    res = run_sync();
    assert_string_equal(res->outcome, "http_5xx");
    llm_result_free(res);
    assert_int_equal(llm_breaker_state(), 1);

    struct buf m;
    buf_init(&m, 0);
    assert_int_equal(llm_metrics_render(&m), T_OK);
    assert_non_null(strstr(m.data, "# TYPE tandem_llm_requests_total counter\n"));
    assert_non_null(strstr(m.data, "tandem_llm_breaker_state 1\n"));
    assert_non_null(strstr(m.data, "tandem_llm_requests_total{outcome=\"circuit_open\"} "));
    assert_non_null(strstr(m.data, "tandem_llm_request_duration_seconds_bucket{le=\"+Inf\"} "));
    unsigned long opens = 0;
    assert_int_equal(sscanf(strstr(m.data, "\ntandem_llm_breaker_opens_total ") + 1, "tandem_llm_breaker_opens_total %lu", &opens), 1);
    assert_true(opens >= 2);
    /* the renderer is registered with the process exposition */
    struct buf all;
    buf_init(&all, 0);
    metrics_render(&all);
    assert_non_null(strstr(all.data, "tandem_llm_breaker_state 1\n"));
    buf_cleanup(&all);
    buf_cleanup(&m);
    llm_result_free(w.res);
    llm_stop();
}

static void test_cancel(void **state)
{
    (void)state;
    struct llm_config c;
    std_cfg(&c);
    c.first_byte_ms = 1200;
    start_with(&c);
    fake_control("{\"default\":\"slow_first_byte:600\"}");
    struct waiter w = WAITER_INIT;
    struct llm_request r = std_req();
    const char *reason;
    uint64_t h = 0;
    unsigned long cancelled = llm_stat_outcome("cancelled");
    assert_int_equal(llm_submit(&r, on_done, &w, &h, &reason), T_OK);
    assert_true(h != 0);
    sleep_ms(50);
    assert_int_equal(llm_cancel(h), 1);
    assert_int_equal(llm_cancel(h), 0);
    assert_int_equal(wait_calls(&w, 1, 900), 0); /* the callback never runs */
    assert_int_equal(llm_stat_outcome("cancelled"), cancelled + 1);

    /* after completion cancel is a no-op */
    fake_control("{\"default\":\"normal\"}");
    assert_int_equal(llm_submit(&r, on_done, &w, &h, &reason), T_OK);
    assert_int_equal(wait_calls(&w, 1, 2000), 1);
    assert_int_equal(llm_cancel(h), 0);
    assert_int_equal(llm_cancel(0), 0);
    assert_int_equal(llm_cancel(987654321), 0);
    llm_result_free(w.res);
    llm_stop();
}

/* A hung upstream call does not delay another conversation's call. */
static void test_slow_call_does_not_block_others(void **state)
{
    (void)state;
    struct llm_config c;
    std_cfg(&c);
    c.first_byte_ms = 1400;
    start_with(&c);
    fake_control("{\"script\":[\"slow_first_byte:900\",\"normal\"]}");
    struct waiter slow = WAITER_INIT, fast = WAITER_INIT;
    struct llm_request r = std_req();
    const char *reason;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(llm_submit(&r, on_done, &slow, NULL, &reason), T_OK);
    sleep_ms(60); /* the slow one reaches the fake first and takes the script's first entry */
    assert_int_equal(llm_submit(&r, on_done, &fast, NULL, &reason), T_OK);
    assert_int_equal(wait_calls(&fast, 1, 2000), 1);
    double fast_ms = ms_since(&t0);
    assert_string_equal(fast.res->outcome, "ok");
    assert_int_equal(slow.calls, 0);
    assert_true(fast_ms < 600);
    assert_int_equal(wait_calls(&slow, 1, 2000), 1);
    assert_string_equal(slow.res->outcome, "ok");
    llm_result_free(slow.res);
    llm_result_free(fast.res);
    llm_stop();
}

static void test_shutdown_disabled_overloaded(void **state)
{
    (void)state;
    struct llm_request r = std_req();
    struct waiter w = WAITER_INIT;
    const char *reason = NULL;
    /* not started */
    assert_int_equal(llm_submit(&r, on_done, &w, NULL, &reason), T_ERR_UNAVAILABLE);
    assert_string_equal(reason, "disabled");

    struct llm_config c;
    std_cfg(&c);
    c.max_pending = 1;
    c.first_byte_ms = 1400;
    start_with(&c);
    fake_control("{\"default\":\"slow_first_byte:1000\"}");
    assert_int_equal(llm_submit(&r, on_done, &w, NULL, &reason), T_OK);
    struct waiter w2 = WAITER_INIT;
    assert_int_equal(llm_submit(&r, on_done, &w2, NULL, &reason), T_ERR_UNAVAILABLE);
    assert_string_equal(reason, "overloaded");
    sleep_ms(50);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    llm_stop(); /* in-flight requests are answered, not dropped */
    assert_true(ms_since(&t0) < 500);
    assert_int_equal(w.calls, 1);
    assert_string_equal(w.res->outcome, "shutdown");
    assert_int_equal(w2.calls, 0);
    llm_result_free(w.res);
    llm_stop(); /* twice is fine */
}

struct racer {
    atomic_int accepted, refused, callbacks;
    atomic_int stop;
};

static void race_done(struct llm_result *res, void *arg)
{
    struct racer *r = arg;
    atomic_fetch_add(&r->callbacks, 1);
    llm_result_free(res);
}

static void *race_submit(void *arg)
{
    struct racer *r = arg;
    struct llm_request req = std_req();
    while (!atomic_load(&r->stop)) {
        const char *reason;
        if (llm_submit(&req, race_done, r, NULL, &reason) == T_OK)
            atomic_fetch_add(&r->accepted, 1);
        else
            atomic_fetch_add(&r->refused, 1);
        sleep_ms(2);
    }
    return NULL;
}

/* Submits racing with llm_stop(): each is refused or gets exactly one callback. */
static void test_stop_races_submit(void **state)
{
    (void)state;
    struct llm_config c;
    std_cfg(&c);
    start_with(&c);
    fake_control("{\"default\":\"slow_first_byte:50\"}");
    struct racer r;
    atomic_init(&r.accepted, 0);
    atomic_init(&r.refused, 0);
    atomic_init(&r.callbacks, 0);
    atomic_init(&r.stop, 0);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, race_submit, &r), 0);
    sleep_ms(150);
    llm_stop();
    sleep_ms(30);
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    assert_true(atomic_load(&r.accepted) > 0);
    assert_true(atomic_load(&r.refused) > 0);
    assert_int_equal(atomic_load(&r.callbacks), atomic_load(&r.accepted));
}

static int failing_redact(const char *text, size_t len, struct redact_map *map, struct buf *out, unsigned *counts)
{
    (void)text;
    (void)len;
    (void)map;
    (void)out;
    (void)counts;
    return T_ERR_NOMEM;
}

static void test_redaction_failure_sends_nothing(void **state)
{
    (void)state;
    struct llm_config c;
    std_cfg(&c);
    start_with(&c);
    llm_prompt_redact_fn = failing_redact;
    struct llm_request r = std_req();
    struct waiter w = WAITER_INIT;
    const char *reason = NULL;
    int err = llm_submit(&r, on_done, &w, NULL, &reason);
    llm_prompt_redact_fn = redact_text;
    assert_int_not_equal(err, T_OK);
    assert_string_equal(reason, "redaction_failed");
    sleep_ms(50);
    assert_int_equal(fake_requests(), 0);
    assert_int_equal(w.calls, 0);
    /* a conversation-wide map is used and keeps its numbering across requests */
    struct redact_map *m = redact_map_new();
    r.map = m;
    struct llm_result *res = NULL;
    assert_int_equal(llm_complete_sync(&r, &res), T_OK);
    llm_result_free(res);
    assert_string_equal(redact_map_lookup(m, "[CARD_1]"), "4111 1111 1111 1111");
    redact_map_free(m);
    llm_stop();
}

static void test_no_key_no_header(void **state)
{
    (void)state;
    struct llm_config c;
    std_cfg(&c);
    c.api_key = NULL;
    start_with(&c);
    struct llm_result *res = run_sync();
    assert_string_equal(res->outcome, "ok");
    llm_result_free(res);
    json_t *prompts = fake_prompts();
    assert_true(json_is_null(json_object_get(json_array_get(prompts, 0), "auth")));
    json_decref(prompts);
    llm_stop();
}

/* A configuration as tandemd loads it: defaults, then the environment env (NULL-terminated). */
static int load_config(struct config *cfg, char **env, FILE *err)
{
    char action = 0;
    char *argv[] = {"tandemd", NULL};
    memset(cfg, 0, sizeof *cfg);
    return config_load(cfg, 1, argv, env, &action, err);
}

static void test_start_from_config(void **state)
{
    (void)state;
    char keypath[] = "/tmp/tandem-llm-key-XXXXXX";
    int fd = mkstemp(keypath);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "sk-from-file-42\nsecond line\n", 28), 28);
    close(fd);
    struct config cfg;
    char errbuf[512];
    FILE *err = fmemopen(errbuf, sizeof errbuf, "w");
    setvbuf(err, NULL, _IONBF, 0);
    char url[128], keyfile[128], budget[64];
    snprintf(url, sizeof url, "TANDEM_LLM_URL=%s", fake_v1);
    snprintf(keyfile, sizeof keyfile, "TANDEM_LLM_API_KEY_FILE=%s", keypath);
    snprintf(budget, sizeof budget, "TANDEM_LLM_TIMEOUT_MS=%d", BUDGET_MS);
    /* no URL: the LLM is off, not an error */
    char *none[] = {NULL};
    assert_int_equal(load_config(&cfg, none, err), 0);
    assert_int_equal(llm_start_from_config(&cfg, err), 1);
    config_cleanup(&cfg);
    /* bad knobs stop start-up with the configuration, naming the variable */
    char *bad_stream[] = {url, "TANDEM_LLM_MODEL=fake", "TANDEM_LLM_STREAM=2", NULL};
    rewind(err);
    assert_int_equal(load_config(&cfg, bad_stream, err), -1);
    assert_non_null(strstr(errbuf, "TANDEM_LLM_STREAM=2"));
    config_cleanup(&cfg);
    char *bad_prompt[] = {url, "TANDEM_LLM_MODEL=fake", "TANDEM_LLM_SYSTEM_PROMPT_FILE=/nonexistent/prompt.txt", NULL};
    rewind(err);
    assert_int_equal(load_config(&cfg, bad_prompt, err), -1);
    assert_non_null(strstr(errbuf, "TANDEM_LLM_SYSTEM_PROMPT_FILE"));
    config_cleanup(&cfg);
    assert_int_equal(llm_enabled(), 0);
    /* good: the key is the file's first line; the knobs reach the request */
    fake_reset();
    char *good[] = {url, "TANDEM_LLM_MODEL=fake", keyfile, budget, "TANDEM_LLM_STREAM=0", "TANDEM_LLM_MAX_TOKENS=123",
                    "TANDEM_LLM_TEMPERATURE=1.5", NULL};
    assert_int_equal(load_config(&cfg, good, err), 0);
    assert_int_equal(llm_start_from_config(&cfg, err), 0);
    struct llm_result *res = run_sync();
    assert_string_equal(res->outcome, "ok");
    llm_result_free(res);
    json_t *prompts = fake_prompts();
    json_t *p0 = json_array_get(prompts, 0);
    assert_string_equal(json_string_value(json_object_get(p0, "auth")), "Bearer sk-from-file-42");
    assert_true(json_is_false(json_object_get(p0, "stream")));
    json_t *body = json_loads(json_string_value(json_object_get(p0, "body")), 0, NULL);
    assert_non_null(body);
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 123);
    assert_true(json_real_value(json_object_get(body, "temperature")) == 1.5);
    json_decref(body);
    json_decref(prompts);
    llm_stop();
    /* an empty key file is refused */
    fd = open(keypath, O_WRONLY | O_TRUNC);
    assert_int_equal(write(fd, "\n", 1), 1);
    close(fd);
    rewind(err);
    assert_int_equal(llm_start_from_config(&cfg, err), -1);
    assert_non_null(strstr(errbuf, "TANDEM_LLM_API_KEY_FILE"));
    config_cleanup(&cfg);
    fclose(err);
    unlink(keypath);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_ok_stream_and_no_pii_sent, stop_llm),
        cmocka_unit_test_teardown(test_ok_variants, stop_llm),
        cmocka_unit_test_teardown(test_failures_fall_back_within_budget, stop_llm),
        cmocka_unit_test_teardown(test_retries, stop_llm),
        cmocka_unit_test_teardown(test_breaker_opens_and_recovers, stop_llm),
        cmocka_unit_test_teardown(test_cancel, stop_llm),
        cmocka_unit_test_teardown(test_slow_call_does_not_block_others, stop_llm),
        cmocka_unit_test_teardown(test_shutdown_disabled_overloaded, stop_llm),
        cmocka_unit_test_teardown(test_stop_races_submit, stop_llm),
        cmocka_unit_test_teardown(test_redaction_failure_sends_nothing, stop_llm),
        cmocka_unit_test_teardown(test_no_key_no_header, stop_llm),
        cmocka_unit_test_teardown(test_start_from_config, stop_llm),
    };
    return cmocka_run_group_tests_name("llm", tests, group_setup, group_teardown);
}
