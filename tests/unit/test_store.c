/* Unit tests for store: key naming, and the context fetch against a real redis-server started
 * here on a free port (skipped when redis-server is not installed), including outage and recovery. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tandem/config.h"
#include "tandem/context.h"
#include "tandem/error.h"
#include "tandem/log.h"
#include "tandem/store.h"

/* ---- key naming (no Redis needed) ---- */

static void test_keys_default_prefix(void **state)
{
    (void)state;
    store_global_init(NULL);
    char k[128];
    assert_int_equal(store_key_conv(k, sizeof k, "c-42", "msgs"), (int)strlen("tandem:conv:{c-42}:msgs"));
    assert_string_equal(k, "tandem:conv:{c-42}:msgs");
    assert_int_equal(store_key_cust(k, sizeof k, "cu.7", "profile"), (int)strlen("tandem:cust:{cu.7}:profile"));
    assert_string_equal(k, "tandem:cust:{cu.7}:profile");
    assert_int_equal(store_key(k, sizeof k, "feedback"), (int)strlen("tandem:feedback"));
    assert_string_equal(k, "tandem:feedback");
}

static void test_keys_configured_prefix(void **state)
{
    (void)state;
    static struct config cfg; /* borrowed by the store for the rest of the process */
    cfg.redis_prefix = (char *)"helpdesk7:";
    store_global_init(&cfg);
    struct {
        int kind; /* 0 conv, 1 cust, 2 own */
        const char *id, *suffix, *want;
    } cases[] = {
        {0, "c-1", "msgs", "helpdesk7:conv:{c-1}:msgs"},
        {0, "c-1", "meta", "helpdesk7:conv:{c-1}:meta"},
        {0, "A.b_c", "suggestions", "helpdesk7:conv:{A.b_c}:suggestions"},
        {1, "cust-9", "profile", "helpdesk7:cust:{cust-9}:profile"},
        {1, "cust-9", "history", "helpdesk7:cust:{cust-9}:history"},
        {2, NULL, "feedback", "helpdesk7:feedback"},
        {2, NULL, "memory:idx", "helpdesk7:memory:idx"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char k[128];
        int n = cases[i].kind == 0   ? store_key_conv(k, sizeof k, cases[i].id, cases[i].suffix)
                : cases[i].kind == 1 ? store_key_cust(k, sizeof k, cases[i].id, cases[i].suffix)
                                     : store_key(k, sizeof k, cases[i].suffix);
        assert_int_equal(n, (int)strlen(cases[i].want));
        assert_string_equal(k, cases[i].want);
    }
    store_global_init(NULL);
}

static void test_keys_overflow(void **state)
{
    (void)state;
    store_global_init(NULL);
    const char *want = "tandem:conv:{c-42}:msgs"; /* 23 chars */
    size_t len = strlen(want);
    char k[64];
    /* exactly enough room (with the NUL), one byte short, far too short */
    assert_int_equal(store_key_conv(k, len + 1, "c-42", "msgs"), (int)len);
    assert_string_equal(k, want);
    assert_int_equal(store_key_conv(k, len, "c-42", "msgs"), -1);
    assert_int_equal(store_key_conv(k, 5, "c-42", "msgs"), -1);
    assert_int_equal(store_key_cust(k, 10, "customer", "profile"), -1);
    assert_int_equal(store_key(k, 7, "feedback"), -1);
    assert_int_equal(store_key(k, strlen("tandem:feedback") + 1, "feedback"), (int)strlen("tandem:feedback"));
    /* a 128-char id (the longest valid one) fits the store's own key buffers */
    char id[ID_MAX_LEN + 1], big[600];
    memset(id, 'x', ID_MAX_LEN);
    id[ID_MAX_LEN] = '\0';
    assert_true(store_key_conv(big, sizeof big, id, "msgs") > ID_MAX_LEN);
}

/* ---- a private redis-server ---- */

static pid_t redis_pid = -1;
static int redis_port;
static int have_redis;
static redisContext *admin;
static struct config live_cfg;

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t al = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &al) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return ntohs(a.sin_port);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void admin_close(void)
{
    if (admin)
        redisFree(admin);
    admin = NULL;
}

static int admin_connect(void)
{
    admin_close();
    struct timeval tv = {1, 0};
    admin = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
    if (!admin || admin->err) {
        admin_close();
        return -1;
    }
    redisReply *r = redisCommand(admin, "PING");
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (r)
        freeReplyObject(r);
    if (!ok)
        admin_close();
    return ok ? 0 : -1;
}

static int redis_start(void)
{
    char port[16];
    snprintf(port, sizeof port, "%d", redis_port);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a crashed test */
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly",
               "no", "--dir", "/tmp", (char *)NULL);
        _exit(127);
    }
    redis_pid = pid;
    for (int i = 0; i < 250; i++) { /* up to 5 s */
        if (admin_connect() == 0)
            return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            redis_pid = -1;
            return -1;
        }
        sleep_ms(20);
    }
    return -1;
}

static void redis_kill(void)
{
    admin_close();
    if (redis_pid > 0) {
        kill(redis_pid, SIGCONT);
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
    }
    redis_pid = -1;
}

static int live_setup(void **state)
{
    (void)state;
    log_setup(LOG_ERROR, 0); /* disconnect warnings are expected here */
    have_redis = system("command -v redis-server >/dev/null 2>&1") == 0;
    if (!have_redis)
        return 0;
    redis_port = free_port();
    if (redis_port <= 0 || redis_start() != 0)
        return -1;
    char url[64];
    snprintf(url, sizeof url, "TANDEM_REDIS_URL=redis://127.0.0.1:%d/0", redis_port);
    char *envp[] = {url, (char *)"TANDEM_REDIS_PREFIX=ut:", (char *)"TANDEM_REDIS_TIMEOUT_MS=500", NULL};
    char *argv[] = {(char *)"test_store", NULL};
    char action;
    if (config_load(&live_cfg, 1, argv, envp, &action, stderr) != 0)
        return -1;
    store_global_init(&live_cfg);
    return 0;
}

static int live_teardown(void **state)
{
    (void)state;
    redis_kill();
    store_global_init(NULL);
    config_cleanup(&live_cfg);
    return 0;
}

#define NEED_REDIS()                                                                                               \
    do {                                                                                                           \
        if (!have_redis)                                                                                           \
            skip();                                                                                                \
    } while (0)

/* One admin command from a NULL-terminated list of strings; the reply is freed, its type returned. */
static int rcmd(const char *first, ...)
{
    const char *argv[32];
    int argc = 0;
    va_list ap;
    va_start(ap, first);
    for (const char *a = first; a && argc < 32; a = va_arg(ap, const char *))
        argv[argc++] = a;
    va_end(ap);
    if (!admin && admin_connect() != 0)
        fail_msg("admin connection to redis failed");
    redisReply *r = redisCommandArgv(admin, argc, argv, NULL);
    if (!r)
        fail_msg("admin command %s failed: %s", first, admin->errstr);
    int type = r->type;
    if (type == REDIS_REPLY_ERROR && strncmp(r->str, "WRONGTYPE", 9) != 0)
        fail_msg("admin command %s: %s", first, r->str);
    freeReplyObject(r);
    return type;
}

static void key(char *out, const char *kind, const char *id, const char *suffix)
{
    snprintf(out, 256, "ut:%s:{%s}:%s", kind, id, suffix);
}

/* A conversation with n messages with ids 1000-0, 1001-0, ... and text "m0", "m1", ... */
static void make_conv(const char *conv, int n)
{
    char k[256];
    key(k, "conv", conv, "msgs");
    rcmd("DEL", k, NULL);
    for (int i = 0; i < n; i++) {
        char id[32], text[32];
        snprintf(id, sizeof id, "%d-0", 1000 + i);
        snprintf(text, sizeof text, "m%d", i);
        rcmd("XADD", k, id, "role", i % 2 ? "agent" : "customer", "text", text, NULL);
    }
}

static char *render(const struct context *c)
{
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(context_render_json(c, &b), T_OK);
    return buf_take(&b);
}

static void test_fetch_order_and_window(void **state)
{
    (void)state;
    NEED_REDIS();
    make_conv("order", 8);
    struct store *s = store_new();
    struct context *c = NULL;
    assert_int_equal(store_fetch_context(s, "order", 50, 20, &c), T_OK);
    assert_non_null(c);
    assert_string_equal(c->conv_id, "order");
    assert_int_equal(c->n_messages, 8);
    for (size_t i = 0; i < 8; i++) { /* oldest first */
        char id[32], text[32];
        snprintf(id, sizeof id, "%zu-0", 1000 + i);
        snprintf(text, sizeof text, "m%zu", i);
        assert_string_equal(c->messages[i].id, id);
        assert_string_equal(c->messages[i].text, text);
    }
    assert_string_equal(c->newest_id, "1007-0");
    context_free(c);
    /* a window of 3: the last three, still oldest first */
    struct {
        size_t window;
        size_t n;
        const char *first;
    } cases[] = {{3, 3, "m5"}, {1, 1, "m7"}, {8, 8, "m0"}, {9, 8, "m0"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(store_fetch_context(s, "order", cases[i].window, 20, &c), T_OK);
        assert_int_equal(c->n_messages, cases[i].n);
        assert_string_equal(c->messages[0].text, cases[i].first);
        assert_string_equal(c->messages[c->n_messages - 1].text, "m7");
        assert_string_equal(c->newest_id, "1007-0");
        context_free(c);
    }
    store_free(s);
}

static void test_fetch_fields_ts_roles(void **state)
{
    (void)state;
    NEED_REDIS();
    char k[256];
    key(k, "conv", "fields", "msgs");
    rcmd("DEL", k, NULL);
    rcmd("XADD", k, "1732368000000-0", "role", "customer", "text", "hello", "ts", "1732367999123", NULL);
    rcmd("XADD", k, "1732368001000-0", "role", "agent", "text", "hi", "author", "Sam", NULL);
    rcmd("XADD", k, "1732368002000-0", "role", "bot", "text", "beep", "ts", "not-a-number", NULL);
    rcmd("XADD", k, "1732368003000-3", "role", "supervisor", "text", "psst", NULL);
    rcmd("XADD", k, "1732368004000-0", "text", "no role", NULL);
    rcmd("XADD", k, "1732368005000-0", "role", "note", NULL);
    struct store *s = store_new();
    struct context *c = NULL;
    assert_int_equal(store_fetch_context(s, "fields", 50, 20, &c), T_OK);
    assert_int_equal(c->n_messages, 6);
    struct {
        enum msg_role role;
        const char *role_name, *text, *author;
        int64_t ts;
    } want[] = {
        {ROLE_CUSTOMER, "customer", "hello", NULL, INT64_C(1732367999123)}, /* ts from the field */
        {ROLE_AGENT, "agent", "hi", "Sam", INT64_C(1732368001000)},         /* ts from the id */
        {ROLE_BOT, "bot", "beep", NULL, INT64_C(1732368002000)},            /* bad ts: the id's */
        {ROLE_OTHER, "supervisor", "psst", NULL, INT64_C(1732368003000)},   /* unknown role kept as stored */
        {ROLE_OTHER, "other", "no role", NULL, INT64_C(1732368004000)},
        {ROLE_NOTE, "note", "", NULL, INT64_C(1732368005000)},              /* missing text: "" */
    };
    for (size_t i = 0; i < 6; i++) {
        const struct ctx_message *m = &c->messages[i];
        assert_int_equal(m->role, want[i].role);
        assert_string_equal(m->role_name, want[i].role_name);
        assert_string_equal(m->text, want[i].text);
        if (want[i].author)
            assert_string_equal(m->author, want[i].author);
        else
            assert_null(m->author);
        if (m->ts_ms != want[i].ts)
            fail_msg("message %zu ts %lld, expected %lld", i, (long long)m->ts_ms, (long long)want[i].ts);
    }
    assert_string_equal(c->messages[3].id, "1732368003000-3");
    context_free(c);
    store_free(s);
}

static void make_customer(const char *cust, const char *name)
{
    char k[256];
    key(k, "cust", cust, "profile");
    rcmd("DEL", k, NULL);
    rcmd("HSET", k, "name", name, "tier", "gold", "country", "SE", NULL);
    key(k, "cust", cust, "history");
    rcmd("DEL", k, NULL);
    rcmd("XADD", k, "1700000000000-0", "conv_id", "old-1", "summary", "first contact", "outcome", "resolved", "tags",
         "refund, payments", NULL);
    rcmd("XADD", k, "1710000000000-0", "conv_id", "old-2", "summary", "second contact", "outcome", "escalated", NULL);
    rcmd("XADD", k, "1720000000000-0", "conv_id", "old-3", "summary", "third contact", NULL);
}

static void test_fetch_customer_data_and_cache(void **state)
{
    (void)state;
    NEED_REDIS();
    make_conv("withcust", 3);
    make_customer("cu-1", "Anna");
    char k[256];
    key(k, "conv", "withcust", "meta");
    rcmd("DEL", k, NULL);
    rcmd("HSET", k, "customer_id", "cu-1", "brand", "acme", "subject", "Double charge", NULL);
    struct store *s = store_new();
    struct context *c = NULL;
    assert_int_equal(store_fetch_context(s, "withcust", 50, 20, &c), T_OK);
    assert_string_equal(c->customer_id, "cu-1");
    assert_string_equal(context_meta(c, "brand"), "acme");
    assert_string_equal(context_meta(c, "subject"), "Double charge");
    assert_string_equal(context_profile(c, "name"), "Anna");
    assert_string_equal(context_profile(c, "country"), "SE");
    assert_int_equal(c->n_history, 3);
    /* newest first */
    assert_string_equal(c->history[0].conv_id, "old-3");
    assert_string_equal(c->history[2].conv_id, "old-1");
    assert_string_equal(c->history[2].summary, "first contact");
    assert_string_equal(c->history[2].tags, "refund, payments");
    assert_string_equal(c->history[0].outcome, ""); /* missing: "" */
    assert_int_equal(c->history[1].ts_ms, INT64_C(1710000000000));
    char *first = render(c);
    context_free(c);

    /* second fetch: the customer id is cached, the answer is the same */
    assert_int_equal(store_fetch_context(s, "withcust", 50, 20, &c), T_OK);
    char *second = render(c);
    assert_string_equal(first, second);
    context_free(c);
    /* also from another connection (the cache is process-wide) */
    struct store *s2 = store_new();
    assert_int_equal(store_fetch_context(s2, "withcust", 50, 20, &c), T_OK);
    char *third = render(c);
    assert_string_equal(first, third);
    context_free(c);
    /* the history limit */
    assert_int_equal(store_fetch_context(s2, "withcust", 50, 2, &c), T_OK);
    assert_int_equal(c->n_history, 2);
    assert_string_equal(c->history[0].conv_id, "old-3");
    context_free(c);
    assert_int_equal(store_fetch_context(s2, "withcust", 50, 0, &c), T_OK);
    assert_int_equal(c->n_history, 0);
    assert_string_equal(context_profile(c, "name"), "Anna");
    context_free(c);
    free(first);
    free(second);
    free(third);
    store_free(s2);
    store_free(s);
}

static void test_fetch_customer_change(void **state)
{
    (void)state;
    NEED_REDIS();
    make_conv("custchange", 2);
    make_customer("cu-a", "Anna");
    make_customer("cu-b", "Bo");
    char k[256];
    key(k, "conv", "custchange", "meta");
    rcmd("DEL", k, NULL);
    rcmd("HSET", k, "customer_id", "cu-a", NULL);
    struct store *s = store_new();
    struct context *c = NULL;
    assert_int_equal(store_fetch_context(s, "custchange", 50, 20, &c), T_OK);
    assert_string_equal(context_profile(c, "name"), "Anna");
    context_free(c);
    assert_int_equal(store_fetch_context(s, "custchange", 50, 20, &c), T_OK); /* now cached */
    assert_string_equal(context_profile(c, "name"), "Anna");
    context_free(c);
    /* the connector re-assigns the conversation: picked up on the next fetch */
    rcmd("HSET", k, "customer_id", "cu-b", NULL);
    assert_int_equal(store_fetch_context(s, "custchange", 50, 20, &c), T_OK);
    assert_string_equal(c->customer_id, "cu-b");
    assert_string_equal(context_profile(c, "name"), "Bo");
    context_free(c);
    /* removed: no customer */
    rcmd("HDEL", k, "customer_id", NULL);
    assert_int_equal(store_fetch_context(s, "custchange", 50, 20, &c), T_OK);
    assert_null(c->customer_id);
    assert_int_equal(c->n_profile, 0);
    assert_int_equal(c->n_history, 0);
    context_free(c);
    /* an invalid customer id in meta is treated as unknown (never used in a key) */
    rcmd("HSET", k, "customer_id", "cu-a}:x", NULL);
    assert_int_equal(store_fetch_context(s, "custchange", 50, 20, &c), T_OK);
    assert_null(c->customer_id);
    assert_int_equal(c->n_profile, 0);
    context_free(c);
    /* and back */
    rcmd("HSET", k, "customer_id", "cu-a", NULL);
    assert_int_equal(store_fetch_context(s, "custchange", 50, 20, &c), T_OK);
    assert_string_equal(context_profile(c, "name"), "Anna");
    context_free(c);
    store_free(s);
}

static void test_fetch_missing_conversation(void **state)
{
    (void)state;
    NEED_REDIS();
    char k[256];
    key(k, "conv", "nobody", "msgs");
    rcmd("DEL", k, NULL);
    /* meta alone does not make a conversation */
    key(k, "conv", "nobody", "meta");
    rcmd("HSET", k, "customer_id", "cu-1", NULL);
    struct store *s = store_new();
    struct context *c = (struct context *)&c; /* must be reset to NULL */
    assert_int_equal(store_fetch_context(s, "nobody", 50, 20, &c), T_ERR_CONV_NOT_FOUND);
    assert_null(c);
    assert_int_equal(store_fetch_context(s, "never-existed", 50, 20, &c), T_ERR_CONV_NOT_FOUND);
    assert_null(c);
    store_free(s);
}

static void test_fetch_bad_ids_never_reach_redis(void **state)
{
    (void)state;
    NEED_REDIS();
    char too_long[ID_MAX_LEN + 2];
    memset(too_long, 'a', ID_MAX_LEN + 1);
    too_long[ID_MAX_LEN + 1] = '\0'; /* 129 */
    const char *bad[] = {"a:*", "x\r\nFLUSHALL", "", "a b", "caf\xc3\xa9", "{x}", too_long, NULL};
    struct store *s = store_new();
    rcmd("CONFIG", "RESETSTAT", NULL);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct context *c = NULL;
        assert_int_equal(store_fetch_context(s, bad[i], 50, 20, &c), T_ERR_BAD_ID);
        assert_null(c);
    }
    redisReply *r = redisCommand(admin, "INFO commandstats");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    if (strstr(r->str, "cmdstat_exists") || strstr(r->str, "cmdstat_xrevrange") || strstr(r->str, "cmdstat_hgetall"))
        fail_msg("a bad id reached Redis:\n%s", r->str);
    freeReplyObject(r);
    store_free(s);
}

static void test_fetch_wrongtype(void **state)
{
    (void)state;
    NEED_REDIS();
    char k[256];
    key(k, "conv", "wt", "msgs");
    rcmd("DEL", k, NULL);
    rcmd("SET", k, "a connector wrote a string here", NULL);
    struct store *s = store_new();
    struct context *c = NULL;
    int err = store_fetch_context(s, "wt", 50, 20, &c);
    assert_int_not_equal(err, T_OK);
    assert_int_not_equal(err, T_ERR_CONV_NOT_FOUND);
    assert_null(c);
    /* a wrongly typed meta key reads as no meta: the messages are still served */
    make_conv("wtmeta", 2);
    key(k, "conv", "wtmeta", "meta");
    rcmd("DEL", k, NULL);
    rcmd("SET", k, "x", NULL);
    err = store_fetch_context(s, "wtmeta", 50, 20, &c);
    assert_int_equal(err, T_OK);
    assert_non_null(c);
    assert_int_equal(c->n_messages, 2);
    assert_int_equal(c->n_meta, 0);
    context_free(c);
    c = NULL;
    /* a wrongly typed customer key degrades to "no profile" */
    make_conv("wtcust", 2);
    key(k, "conv", "wtcust", "meta");
    rcmd("DEL", k, NULL);
    rcmd("HSET", k, "customer_id", "cu-wt", NULL);
    key(k, "cust", "cu-wt", "profile");
    rcmd("DEL", k, NULL);
    rcmd("SET", k, "x", NULL);
    key(k, "cust", "cu-wt", "history");
    rcmd("DEL", k, NULL);
    rcmd("SET", k, "x", NULL);
    for (int round = 0; round < 2; round++) { /* uncached, then cached */
        assert_int_equal(store_fetch_context(s, "wtcust", 50, 20, &c), T_OK);
        assert_int_equal(c->n_messages, 2);
        assert_int_equal(c->n_profile, 0);
        assert_int_equal(c->n_history, 0);
        context_free(c);
    }
    /* the connection is still good for the next request */
    make_conv("afterwt", 1);
    assert_int_equal(store_fetch_context(s, "afterwt", 50, 20, &c), T_OK);
    assert_int_equal(c->n_messages, 1);
    context_free(c);
    store_free(s);
}

static void test_fetch_invalid_utf8_and_empty_stream(void **state)
{
    (void)state;
    NEED_REDIS();
    char k[256];
    key(k, "conv", "bytes", "msgs");
    rcmd("DEL", k, NULL);
    char text[] = "bad \xff\xfe and\0nul"; /* invalid bytes and a NUL inside */
    const char *argv[] = {"XADD", k, "5-0", "role", "customer", "text", text};
    size_t lens[] = {4, strlen(k), 3, 4, 8, 4, sizeof text - 1};
    redisReply *r = redisCommandArgv(admin, 7, argv, lens);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    freeReplyObject(r);
    key(k, "conv", "bytes", "meta");
    rcmd("DEL", k, NULL);
    rcmd("HSET", k, "subject", "caf\xc3\xa9 \xc0\xaf", NULL);
    struct store *s = store_new();
    struct context *c = NULL;
    assert_int_equal(store_fetch_context(s, "bytes", 50, 20, &c), T_OK);
    assert_string_equal(c->messages[0].text, "bad \xEF\xBF\xBD\xEF\xBF\xBD and\xEF\xBF\xBDnul");
    assert_string_equal(context_meta(c, "subject"), "caf\xc3\xa9 \xEF\xBF\xBD\xEF\xBF\xBD");
    char *json = render(c);
    assert_non_null(strstr(json, "\"text\":\"bad \xEF\xBF\xBD\xEF\xBF\xBD and\xEF\xBF\xBDnul\""));
    free(json);
    context_free(c);

    /* a stream that exists but is empty (all entries deleted): a conversation with no messages */
    key(k, "conv", "emptied", "msgs");
    rcmd("DEL", k, NULL);
    rcmd("XADD", k, "7-0", "role", "customer", "text", "x", NULL);
    rcmd("XDEL", k, "7-0", NULL);
    assert_int_equal(store_fetch_context(s, "emptied", 50, 20, &c), T_OK);
    assert_int_equal(c->n_messages, 0);
    assert_string_equal(c->newest_id, "");
    json = render(c);
    assert_non_null(strstr(json, "\"based_on\":null"));
    free(json);
    context_free(c);
    store_free(s);
}

static void test_command_and_ping(void **state)
{
    (void)state;
    NEED_REDIS();
    struct store *s = store_new();
    const char *why = NULL;
    assert_int_equal(store_ping(s, &why), T_OK);
    struct redisReply *r = NULL;
    const char *set[] = {"SET", "ut:plain", "v a l\r\nue"}; /* argv, never formatted: CRLF is data */
    assert_int_equal(store_command(s, &r, 3, set, NULL), T_OK);
    assert_int_equal(r->type, REDIS_REPLY_STATUS);
    store_reply_free(r);
    const char *get[] = {"GET", "ut:plain"};
    assert_int_equal(store_command(s, &r, 2, get, NULL), T_OK);
    assert_string_equal(r->str, "v a l\r\nue");
    store_reply_free(r);
    /* a Redis error reply is T_OK with the error in the reply */
    const char *bad[] = {"HGET", "ut:plain", "f"};
    assert_int_equal(store_command(s, &r, 3, bad, NULL), T_OK);
    assert_int_equal(r->type, REDIS_REPLY_ERROR);
    store_reply_free(r);
    store_reply_free(NULL);
    store_free(s);
    store_free(NULL);
    /* the per-thread store is reused */
    assert_ptr_equal(store_thread(), store_thread());
}

/* A hung Redis (SIGSTOP) answers nothing: the command timeout turns that into UNAVAILABLE. */
static void test_hung_redis_times_out(void **state)
{
    (void)state;
    NEED_REDIS();
    make_conv("hung", 2);
    struct store *s = store_new();
    struct context *c = NULL;
    assert_int_equal(store_fetch_context(s, "hung", 50, 20, &c), T_OK);
    context_free(c);
    admin_close();
    kill(redis_pid, SIGSTOP);
    double t0 = now_s();
    int err = store_fetch_context(s, "hung", 50, 20, &c);
    double took = now_s() - t0;
    const char *why;
    double t1 = now_s();
    int perr = store_ping(s, &why);
    double ping_took = now_s() - t1;
    kill(redis_pid, SIGCONT);
    assert_int_equal(err, T_ERR_UNAVAILABLE);
    assert_null(c);
    /* the configured timeout is 500 ms; one retry on a fresh connection is allowed */
    if (took > 2.0)
        fail_msg("fetch against a hung Redis took %.2f s", took);
    assert_int_equal(perr, T_ERR_UNAVAILABLE);
    if (ping_took > 2.0)
        fail_msg("PING against a hung Redis took %.2f s", ping_took);
    /* resumed: works again within the backoff */
    double t2 = now_s();
    while ((err = store_fetch_context(s, "hung", 50, 20, &c)) != T_OK && now_s() - t2 < 5)
        sleep_ms(50);
    assert_int_equal(err, T_OK);
    context_free(c);
    store_free(s);
    assert_int_equal(admin_connect(), 0);
}

/* Killed Redis: fast UNAVAILABLE, then recovery by itself once it is back on the same port. */
static void test_redis_down_and_back(void **state)
{
    (void)state;
    NEED_REDIS();
    make_conv("outage", 3);
    struct store *s = store_new();
    struct context *c = NULL;
    assert_int_equal(store_fetch_context(s, "outage", 50, 20, &c), T_OK);
    context_free(c);
    unsigned long errors_before = store_stat_errors(), reconnects_before = store_stat_reconnects();

    redis_kill();
    double t0 = now_s();
    int err = store_fetch_context(s, "outage", 50, 20, &c);
    double took = now_s() - t0;
    assert_int_equal(err, T_ERR_UNAVAILABLE);
    assert_null(c);
    if (took >= 2.0)
        fail_msg("fetch with Redis down took %.2f s", took);
    const char *why = NULL;
    t0 = now_s();
    assert_int_equal(store_ping(s, &why), T_ERR_UNAVAILABLE);
    assert_true(now_s() - t0 < 2.0);
    assert_non_null(why);
    assert_true(store_stat_errors() > errors_before);
    /* during backoff a fresh store connects independently */
    struct store *other = store_new();
    assert_int_equal(store_fetch_context(other, "outage", 50, 20, &c), T_ERR_UNAVAILABLE);
    store_free(other);

    /* back on the same port (data is gone: the connector writes it again) */
    assert_int_equal(redis_start(), 0);
    make_conv("outage", 3);
    double t1 = now_s();
    while ((err = store_fetch_context(s, "outage", 50, 20, &c)) != T_OK && now_s() - t1 < 5)
        sleep_ms(50);
    if (err != T_OK)
        fail_msg("no recovery within 5 s after Redis came back (err %d)", err);
    assert_int_equal(c->n_messages, 3);
    context_free(c);
    assert_true(store_stat_reconnects() > reconnects_before);
    assert_int_equal(store_ping(s, &why), T_OK);
    store_free(s);
}

int main(void)
{
    const struct CMUnitTest key_tests[] = {
        cmocka_unit_test(test_keys_default_prefix),
        cmocka_unit_test(test_keys_configured_prefix),
        cmocka_unit_test(test_keys_overflow),
    };
    const struct CMUnitTest live_tests[] = {
        cmocka_unit_test(test_fetch_order_and_window),
        cmocka_unit_test(test_fetch_fields_ts_roles),
        cmocka_unit_test(test_fetch_customer_data_and_cache),
        cmocka_unit_test(test_fetch_customer_change),
        cmocka_unit_test(test_fetch_missing_conversation),
        cmocka_unit_test(test_fetch_bad_ids_never_reach_redis),
        cmocka_unit_test(test_fetch_wrongtype),
        cmocka_unit_test(test_fetch_invalid_utf8_and_empty_stream),
        cmocka_unit_test(test_command_and_ping),
        cmocka_unit_test(test_hung_redis_times_out),
        cmocka_unit_test(test_redis_down_and_back),
    };
    signal(SIGPIPE, SIG_IGN); /* writes to a killed Redis must fail with EPIPE, not kill the test */
    int failed = cmocka_run_group_tests_name("store_keys", key_tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("store_live", live_tests, live_setup, live_teardown);
    return failed;
}
