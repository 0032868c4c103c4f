/* Unit tests for config: defaults, env and flags, every bad value, Redis URLs, hosts, origins,
 * LLM URL rules and secret masking in --print-config. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tandem/config.h"
#include "tandem/llm.h"

#define MAX_ARGS 16

/* One config_load() call with argv/envp given as NULL-terminated lists of literals; captures
 * the error stream. */
struct load {
    struct config cfg;
    char action;
    int rc;
    char *err;   /* captured error text, malloc'd */
    size_t errlen;
};

static void load_run(struct load *l, const char *const *args, const char *const *env)
{
    char *argv[MAX_ARGS + 2];
    char *envp[MAX_ARGS + 1];
    int argc = 0;
    argv[argc++] = (char *)"tandemd";
    for (size_t i = 0; args && args[i]; i++)
        argv[argc++] = (char *)args[i];
    argv[argc] = NULL;
    size_t ne = 0;
    for (size_t i = 0; env && env[i]; i++)
        envp[ne++] = (char *)env[i];
    envp[ne] = NULL;
    l->err = NULL;
    l->errlen = 0;
    FILE *err = open_memstream(&l->err, &l->errlen);
    assert_non_null(err);
    l->rc = config_load(&l->cfg, argc, argv, envp, &l->action, err);
    fclose(err);
}

static void load_done(struct load *l)
{
    config_cleanup(&l->cfg);
    free(l->err);
    l->err = NULL;
}

static int has_host(const struct config *c, const char *h)
{
    for (size_t i = 0; i < c->n_hosts; i++)
        if (strcmp(c->hosts[i], h) == 0)
            return 1;
    return 0;
}

static int has_origin(const struct config *c, const char *o)
{
    for (size_t i = 0; i < c->n_origins; i++)
        if (strcmp(c->origins[i], o) == 0)
            return 1;
    return 0;
}

/* Fails with the collected text when n > 0; frees text first so a failing test leaks nothing
 * (the sanitizer build checks for leaks). A macro so the failure points at the test's line. */
#define fail_collected(n, what, text)                                                                              \
    do {                                                                                                           \
        char msg_[4096];                                                                                           \
        size_t n_ = (n);                                                                                           \
        char *text_ = (text);                                                                                      \
        snprintf(msg_, sizeof msg_, "%s", text_ ? text_ : "");                                                     \
        free(text_);                                                                                               \
        if (n_)                                                                                                    \
            fail_msg("%zu %s:\n%s", n_, what, msg_);                                                               \
    } while (0)

/* A readable file for TANDEM_KB / TANDEM_LLM_API_KEY_FILE values. */
static char tmp_file[64];

static int group_setup(void **state)
{
    (void)state;
    strcpy(tmp_file, "/tmp/tandem-test-config-XXXXXX");
    int fd = mkstemp(tmp_file);
    if (fd < 0)
        return -1;
    if (write(fd, "k\n", 2) != 2) {
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    unlink(tmp_file);
    return 0;
}

/* ---- defaults ---- */

static void test_defaults(void **state)
{
    (void)state;
    struct load l;
    load_run(&l, NULL, NULL);
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.action, 0);
    assert_string_equal(l.cfg.listen, "127.0.0.1:8787");
    assert_int_equal(l.cfg.port, 8787);
    assert_int_equal(l.cfg.listen_addr.ss_family, AF_INET);
    assert_int_equal(l.cfg.redis.kind, REDIS_TCP);
    assert_string_equal(l.cfg.redis.tcp.host, "127.0.0.1");
    assert_int_equal(l.cfg.redis.tcp.port, 6379);
    assert_int_equal(l.cfg.redis.db, 0);
    assert_null(l.cfg.redis.password);
    assert_null(l.cfg.redis.user);
    assert_string_equal(l.cfg.redis_prefix, "tandem:");
    assert_null(l.cfg.token);
    assert_null(l.cfg.token_file);
    assert_null(l.cfg.kb);
    assert_null(l.cfg.llm_url);
    assert_int_equal(l.cfg.max_body, 1048576);
    assert_int_equal(l.cfg.max_transcripts_body, 67108864);
    assert_int_equal(l.cfg.context_messages, 50);
    assert_int_equal(l.cfg.llm_timeout_ms, 4000);
    assert_true(l.cfg.threads >= 2);
    assert_int_equal(l.cfg.log_level, LOG_INFO);
    assert_int_equal(l.cfg.log_json, 1);
    assert_int_equal(l.cfg.n_hosts, 3);
    assert_true(has_host(&l.cfg, "localhost:8787"));
    assert_true(has_host(&l.cfg, "127.0.0.1:8787"));
    assert_true(has_host(&l.cfg, "[::1]:8787"));
    assert_int_equal(l.cfg.n_origins, 3);
    assert_int_equal(l.errlen, 0);
    load_done(&l);
}

/* ---- env and flags ---- */

static void test_env_parsing(void **state)
{
    (void)state;
    const char *env[] = {"PATH=/usr/bin",
                         "TANDEM_LISTEN=[::1]:9000",
                         "TANDEM_REDIS_URL=redis://r.example:6380/2",
                         "TANDEM_REDIS_PREFIX=t2:",
                         "TANDEM_TOKEN=0123456789abcdef0123",
                         "TANDEM_MAX_BODY=2048",
                         "TANDEM_THREADS=3",
                         "TANDEM_CONTEXT_MESSAGES=7",
                         "TANDEM_LOG_LEVEL=debug",
                         "TANDEM_LOG_FORMAT=text",
                         "TANDEM_KB=", /* empty optional = unset */
                         "NOT_TANDEM_LISTEN=junk",
                         NULL};
    struct load l;
    load_run(&l, NULL, env);
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.cfg.port, 9000);
    assert_int_equal(l.cfg.listen_addr.ss_family, AF_INET6);
    assert_string_equal(l.cfg.redis.tcp.host, "r.example");
    assert_int_equal(l.cfg.redis.tcp.port, 6380);
    assert_int_equal(l.cfg.redis.db, 2);
    assert_string_equal(l.cfg.redis_prefix, "t2:");
    assert_string_equal(l.cfg.token, "0123456789abcdef0123");
    assert_int_equal(l.cfg.max_body, 2048);
    assert_int_equal(l.cfg.threads, 3);
    assert_int_equal(l.cfg.context_messages, 7);
    assert_int_equal(l.cfg.log_level, LOG_DEBUG);
    assert_int_equal(l.cfg.log_json, 0);
    assert_null(l.cfg.kb);
    assert_true(has_host(&l.cfg, "[::1]:9000"));
    assert_true(has_host(&l.cfg, "localhost:9000"));
    load_done(&l);
}

static void test_file_settings(void **state)
{
    (void)state;
    char kb[128], keyfile[128];
    snprintf(kb, sizeof kb, "TANDEM_KB=%s", tmp_file);
    snprintf(keyfile, sizeof keyfile, "TANDEM_LLM_API_KEY_FILE=%s", tmp_file);
    const char *env[] = {kb, keyfile, "TANDEM_TOKEN_FILE=/run/secrets/tandem-token", NULL};
    struct load l;
    load_run(&l, NULL, env);
    assert_int_equal(l.rc, 0);
    assert_string_equal(l.cfg.kb, tmp_file);
    assert_string_equal(l.cfg.llm_api_key_file, tmp_file);
    assert_string_equal(l.cfg.token_file, "/run/secrets/tandem-token");
    load_done(&l);
}

static void test_flags(void **state)
{
    (void)state;
    const char *env[] = {"TANDEM_LISTEN=127.0.0.1:9000", "TANDEM_REDIS_PREFIX=fromenv:", "TANDEM_MAX_BODY=4096",
                         NULL};
    struct {
        const char *args[6];
        unsigned port;
        const char *prefix;
        long max_body;
        char action;
    } cases[] = {
        {{"--listen", "127.0.0.1:9100", NULL}, 9100, "fromenv:", 4096, 0},
        {{"--listen=127.0.0.1:9101", NULL}, 9101, "fromenv:", 4096, 0},
        {{"--redis-prefix=flag:", "--max-body", "8192", NULL}, 9000, "flag:", 8192, 0},
        {{"--print-config", "--listen=127.0.0.1:9102", NULL}, 9102, "fromenv:", 4096, 'p'},
        /* the last one wins */
        {{"--listen=127.0.0.1:9103", "--listen=127.0.0.1:9104", NULL}, 9104, "fromenv:", 4096, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct load l;
        load_run(&l, cases[i].args, env);
        assert_int_equal(l.rc, 0);
        assert_int_equal(l.cfg.port, cases[i].port);
        assert_string_equal(l.cfg.redis_prefix, cases[i].prefix);
        assert_int_equal(l.cfg.max_body, cases[i].max_body);
        assert_int_equal(l.action, cases[i].action);
        load_done(&l);
    }
}

static void test_actions(void **state)
{
    (void)state;
    struct {
        const char *arg;
        char action;
    } cases[] = {{"--help", 'h'}, {"-h", 'h'}, {"--version", 'v'}, {"--print-config", 'p'}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[] = {cases[i].arg, NULL};
        struct load l;
        load_run(&l, args, NULL);
        assert_int_equal(l.rc, 0);
        assert_int_equal(l.action, cases[i].action);
        load_done(&l);
    }
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct {
        const char *args[4];
        const char *needle;
    } cases[] = {
        {{"--no-such-flag=1", NULL}, "--no-such-flag"},
        {{"positional", NULL}, "positional"},
        {{"--listen", NULL}, "--listen"},
        {{"--max-body", "12x", NULL}, "TANDEM_MAX_BODY"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct load l;
        load_run(&l, cases[i].args, NULL);
        assert_int_equal(l.rc, -1);
        assert_non_null(l.err);
        if (!strstr(l.err, cases[i].needle))
            fail_msg("case %zu: error '%s' does not mention '%s'", i, l.err, cases[i].needle);
        load_done(&l);
    }
}

/* ---- every bad value: -1 and a message naming the variable ---- */

static void test_bad_values(void **state)
{
    (void)state;
    char keyfile_env[128];
    snprintf(keyfile_env, sizeof keyfile_env, "TANDEM_LLM_API_KEY_FILE=%s", tmp_file);
    struct {
        const char *env[4];
        const char *var; /* must appear in the message */
    } cases[] = {
        {{"TANDEM_LISTEN=nope"}, "TANDEM_LISTEN"},
        {{"TANDEM_LISTEN=127.0.0.1"}, "TANDEM_LISTEN"},
        {{"TANDEM_LISTEN=127.0.0.1:0"}, "TANDEM_LISTEN"},
        {{"TANDEM_LISTEN=127.0.0.1:65536"}, "TANDEM_LISTEN"},
        {{"TANDEM_LISTEN=127.0.0.1:80x"}, "TANDEM_LISTEN"},
        {{"TANDEM_LISTEN=example.com:8787"}, "TANDEM_LISTEN"},
        {{"TANDEM_LISTEN=::1:8787"}, "TANDEM_LISTEN"},
        {{"TANDEM_LISTEN="}, "TANDEM_LISTEN"},
        {{"TANDEM_REDIS_URL=http://localhost:6379"}, "TANDEM_REDIS_URL"},
        {{"TANDEM_REDIS_URL=redis://"}, "TANDEM_REDIS_URL"},
        {{"TANDEM_REDIS_URL=redis://h:1/x"}, "TANDEM_REDIS_URL"},
        {{"TANDEM_REDIS_PREFIX=has space"}, "TANDEM_REDIS_PREFIX"},
        {{"TANDEM_REDIS_PREFIX={x}"}, "TANDEM_REDIS_PREFIX"},
        {{"TANDEM_REDIS_PREFIX=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, "TANDEM_REDIS_PREFIX"},
        {{"TANDEM_REDIS_PREFIX="}, "TANDEM_REDIS_PREFIX"},
        {{"TANDEM_TOKEN=short"}, "TANDEM_TOKEN"},
        {{"TANDEM_TOKEN=0123456789 abcdef0123"}, "TANDEM_TOKEN"},
        {{"TANDEM_TOKEN=0123456789abcdef0123", "TANDEM_TOKEN_FILE=/tmp/x"}, "TANDEM_TOKEN_FILE"},
        {{"TANDEM_ALLOWED_HOSTS=ok.example,bad/host"}, "TANDEM_ALLOWED_HOSTS"},
        {{"TANDEM_ALLOWED_HOSTS=evil.example:99999"}, "TANDEM_ALLOWED_HOSTS"},
        {{"TANDEM_ALLOWED_HOSTS=*.example.com"}, "TANDEM_ALLOWED_HOSTS"},
        {{"TANDEM_ALLOWED_ORIGINS=null"}, "TANDEM_ALLOWED_ORIGINS"},
        {{"TANDEM_ALLOWED_ORIGINS=https://desk.example.com/app"}, "TANDEM_ALLOWED_ORIGINS"},
        {{"TANDEM_ALLOWED_ORIGINS=desk.example.com"}, "TANDEM_ALLOWED_ORIGINS"},
        {{"TANDEM_KB=/nonexistent/kb.jsonl"}, "TANDEM_KB"},
        {{"TANDEM_LLM_URL=ftp://llm.example/v1", "TANDEM_LLM_MODEL=m"}, "TANDEM_LLM_URL"},
        {{"TANDEM_LLM_URL=https://llm.example/v1"}, "TANDEM_LLM_MODEL"},
        {{"TANDEM_LLM_API_KEY=k", keyfile_env}, "TANDEM_LLM_API_KEY_FILE"},
        {{"TANDEM_LLM_API_KEY_FILE=/nonexistent/key"}, "TANDEM_LLM_API_KEY_FILE"},
        {{"TANDEM_LLM_TIMEOUT_MS=99"}, "TANDEM_LLM_TIMEOUT_MS"},
        {{"TANDEM_LLM_TIMEOUT_MS=120001"}, "TANDEM_LLM_TIMEOUT_MS"},
        {{"TANDEM_LLM_TIMEOUT_MS=abc"}, "TANDEM_LLM_TIMEOUT_MS"},
        {{"TANDEM_LOG_LEVEL=verbose"}, "TANDEM_LOG_LEVEL"},
        {{"TANDEM_LOG_FORMAT=xml"}, "TANDEM_LOG_FORMAT"},
        {{"TANDEM_MAX_BODY=1023"}, "TANDEM_MAX_BODY"},
        {{"TANDEM_MAX_BODY=67108865"}, "TANDEM_MAX_BODY"},
        {{"TANDEM_MAX_BODY=1k"}, "TANDEM_MAX_BODY"},
        {{"TANDEM_MAX_BODY=99999999999999999999999"}, "TANDEM_MAX_BODY"},
        {{"TANDEM_MAX_TRANSCRIPTS_BODY=1073741825"}, "TANDEM_MAX_TRANSCRIPTS_BODY"},
        {{"TANDEM_THREADS=257"}, "TANDEM_THREADS"},
        {{"TANDEM_THREADS=-1"}, "TANDEM_THREADS"},
        {{"TANDEM_MAX_CONNECTIONS=15"}, "TANDEM_MAX_CONNECTIONS"},
        {{"TANDEM_CONTEXT_MESSAGES=0"}, "TANDEM_CONTEXT_MESSAGES"},
        {{"TANDEM_CONTEXT_MESSAGES=1001"}, "TANDEM_CONTEXT_MESSAGES"},
        {{"TANDEM_HISTORY_ENTRIES=-1"}, "TANDEM_HISTORY_ENTRIES"},
        {{"TANDEM_REDIS_TIMEOUT_MS=9"}, "TANDEM_REDIS_TIMEOUT_MS"},
        {{"TANDEM_IDLE_TIMEOUT_S=0"}, "TANDEM_IDLE_TIMEOUT_S"},
        {{"TANDEM_IDLE_TIMEOUT_S="}, "TANDEM_IDLE_TIMEOUT_S"},
        {{"TANDEM_LLM_STREAM=2"}, "TANDEM_LLM_STREAM"},
        {{"TANDEM_LLM_JSON_MODE=yes"}, "TANDEM_LLM_JSON_MODE"},
        {{"TANDEM_LLM_MAX_TOKENS=15"}, "TANDEM_LLM_MAX_TOKENS"},
        {{"TANDEM_LLM_TEMPERATURE=2.5"}, "TANDEM_LLM_TEMPERATURE"},
        {{"TANDEM_LLM_TEMPERATURE=warm"}, "TANDEM_LLM_TEMPERATURE"},
        {{"TANDEM_LLM_TEMPERATURE=nan"}, "TANDEM_LLM_TEMPERATURE"},
        {{"TANDEM_LLM_FIRST_BYTE_MS=120001"}, "TANDEM_LLM_FIRST_BYTE_MS"},
        {{"TANDEM_LLM_FIRST_BYTE_MS=49"}, "TANDEM_LLM_FIRST_BYTE_MS=49"},
        {{"TANDEM_LLM_STALL_MS=49"}, "TANDEM_LLM_STALL_MS"},
        {{"TANDEM_LLM_BREAKER_FAILURES=0"}, "TANDEM_LLM_BREAKER_FAILURES"},
        {{"TANDEM_LLM_BREAKER_COOLDOWN_MS=99"}, "TANDEM_LLM_BREAKER_COOLDOWN_MS"},
        {{"TANDEM_LLM_PROXY=ftp://proxy:21"}, "TANDEM_LLM_PROXY"},
        {{"TANDEM_LLM_CA_FILE=/nonexistent/ca.pem"}, "TANDEM_LLM_CA_FILE"},
        {{"TANDEM_LLM_SYSTEM_PROMPT_FILE=/nonexistent/prompt.txt"}, "TANDEM_LLM_SYSTEM_PROMPT_FILE"},
        {{"TANDEM_QUALITY_PER_AGENT=true"}, "TANDEM_QUALITY_PER_AGENT"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct load l;
        load_run(&l, NULL, cases[i].env);
        if (l.rc != -1)
            fail_msg("case %zu (%s): accepted", i, cases[i].env[0]);
        if (!l.err || !strstr(l.err, cases[i].var))
            fail_msg("case %zu (%s): message '%s' does not name %s", i, cases[i].env[0], l.err ? l.err : "",
                     cases[i].var);
        /* one line, so it reads well in a container log */
        const char *nl = strchr(l.err, '\n');
        assert_true(nl && nl[1] == '\0');
        load_done(&l);
    }
}

/* The same values through flags fail the same way (flags go through the same table). */
static void test_bad_values_as_flags(void **state)
{
    (void)state;
    struct {
        const char *args[3];
        const char *var;
    } cases[] = {
        {{"--listen=nope"}, "TANDEM_LISTEN"},
        {{"--llm-timeout-ms", "5"}, "TANDEM_LLM_TIMEOUT_MS"},
        {{"--log-format=yaml"}, "TANDEM_LOG_FORMAT"},
        {{"--token-file="}, "TANDEM_TOKEN_FILE"},
        {{"--redis-url=redis://h:70000"}, "TANDEM_REDIS_URL"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct load l;
        load_run(&l, cases[i].args, NULL);
        assert_int_equal(l.rc, -1);
        if (!l.err || !strstr(l.err, cases[i].var))
            fail_msg("case %zu: message '%s' does not name %s", i, l.err ? l.err : "", cases[i].var);
        load_done(&l);
    }
}

/* A rejected secret must not be echoed into the (logged) error message. */
static void test_bad_values_do_not_echo_secrets(void **state)
{
    (void)state;
    struct {
        const char *env[3];
        const char *secret;
    } cases[] = {
        {{"TANDEM_TOKEN=s3cr3t tok3n with spaces"}, "s3cr3t"},
        {{"TANDEM_TOKEN=tooshortsecret"}, "tooshortsecret"},
        {{"TANDEM_REDIS_URL=redis://:hunter2pw@redis.example:99999/0"}, "hunter2pw"},
        {{"TANDEM_REDIS_URL=redis://tandem:hunter3pw@redis.example:6379/notadb"}, "hunter3pw"},
    };
    char *wrong_text = NULL;
    size_t wrong_len = 0, n_wrong = 0;
    FILE *wrong = open_memstream(&wrong_text, &wrong_len);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct load l;
        load_run(&l, NULL, cases[i].env);
        assert_int_equal(l.rc, -1);
        assert_non_null(l.err);
        if (strstr(l.err, cases[i].secret))
            n_wrong += (size_t)fprintf(wrong, "  %s reveals the secret: %s", cases[i].env[0], l.err) > 0;
        load_done(&l);
    }
    fclose(wrong);
    fail_collected(n_wrong, "messages reveal a secret", wrong_text);
}

static void test_token_and_token_file_together(void **state)
{
    (void)state;
    const char *env[] = {"TANDEM_TOKEN=0123456789abcdef0123", "TANDEM_TOKEN_FILE=/tmp/tok", NULL};
    struct load l;
    load_run(&l, NULL, env);
    assert_int_equal(l.rc, -1);
    assert_non_null(strstr(l.err, "TANDEM_TOKEN"));
    assert_non_null(strstr(l.err, "TANDEM_TOKEN_FILE"));
    load_done(&l);
    /* one from env, one from a flag: still both */
    const char *args[] = {"--token-file=/tmp/tok", NULL};
    const char *env2[] = {"TANDEM_TOKEN=0123456789abcdef0123", NULL};
    load_run(&l, args, env2);
    assert_int_equal(l.rc, -1);
    load_done(&l);
}

/* ---- Redis URL forms ---- */

struct url_case {
    const char *url;
    int ok;
    enum redis_kind kind;
    const char *host; /* tcp host, unix path, or first sentinel host */
    unsigned port;
    int db;
    const char *user, *password;
    size_t n_sentinels;
    const char *master;
};

static void test_redis_urls(void **state)
{
    (void)state;
    static const struct url_case cases[] = {
        {"redis://h:1/2", 1, REDIS_TCP, "h", 1, 2, NULL, NULL, 0, NULL},
        {"redis://h", 1, REDIS_TCP, "h", 6379, 0, NULL, NULL, 0, NULL},
        {"redis://h:6380", 1, REDIS_TCP, "h", 6380, 0, NULL, NULL, 0, NULL},
        {"redis://h:6380/", 1, REDIS_TCP, "h", 6380, 0, NULL, NULL, 0, NULL},
        {"redis://user:p%40ss@h:1/0", 1, REDIS_TCP, "h", 1, 0, "user", "p@ss", 0, NULL},
        {"redis://:pw@h", 1, REDIS_TCP, "h", 6379, 0, NULL, "pw", 0, NULL},
        {"redis://:p@ss@h:7/1", 1, REDIS_TCP, "h", 7, 1, NULL, "p@ss", 0, NULL},
        {"redis://:a%3Ab%2Fc@h", 1, REDIS_TCP, "h", 6379, 0, NULL, "a:b/c", 0, NULL},
        {"redis://[::1]:6380/3", 1, REDIS_TCP, "::1", 6380, 3, NULL, NULL, 0, NULL},
        {"redis://[::1]", 1, REDIS_TCP, "::1", 6379, 0, NULL, NULL, 0, NULL},
        {"redis://tandem:pw@10.0.0.7:6379/15", 1, REDIS_TCP, "10.0.0.7", 6379, 15, "tandem", "pw", 0, NULL},
        {"unix:///tmp/r.sock?db=4", 1, REDIS_UNIX, "/tmp/r.sock", 0, 4, NULL, NULL, 0, NULL},
        {"unix:///tmp/r.sock", 1, REDIS_UNIX, "/tmp/r.sock", 0, 0, NULL, NULL, 0, NULL},
        {"unix:///tmp/a@b.sock", 1, REDIS_UNIX, "/tmp/a@b.sock", 0, 0, NULL, NULL, 0, NULL},
        {"unix://:pw@/tmp/r.sock", 1, REDIS_UNIX, "/tmp/r.sock", 0, 0, NULL, "pw", 0, NULL},
        {"redis-sentinel://a:1,b:2/mymaster", 1, REDIS_SENTINEL, "a", 1, 0, NULL, NULL, 2, "mymaster"},
        {"redis-sentinel://a/m", 1, REDIS_SENTINEL, "a", 26379, 0, NULL, NULL, 1, "m"},
        {"redis-sentinel://:pw@a:1/m/2", 1, REDIS_SENTINEL, "a", 1, 2, NULL, "pw", 1, "m"},
        /* junk */
        {"", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"h:6379", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"http://h:6379", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"rediss://h:6379", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://:pw@", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis:///0", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://h:0", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://h:65536", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://h:port", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://h:", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://h:1/x", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://h:1/-1", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://h:1/2/3", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://::1:6379", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://[::1:6379", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis://[::1]x", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"unix://", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"unix://relative.sock", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"unix:///tmp/r.sock?db=x", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"unix:///tmp/r.sock?foo=1", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis-sentinel://a:1", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis-sentinel://a:1/", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis-sentinel:///m", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis-sentinel://a:1,b:x/m", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
        {"redis-sentinel://a,b,c,d,e,f,g,h,i/m", 0, 0, NULL, 0, 0, NULL, NULL, 0, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const struct url_case *c = &cases[i];
        struct redis_target t;
        int rc = config_parse_redis_url(c->url, &t);
        if (rc != (c->ok ? 0 : -1))
            fail_msg("'%s': rc %d, expected %s", c->url, rc, c->ok ? "ok" : "rejected");
        if (c->ok) {
            assert_int_equal(t.kind, c->kind);
            assert_int_equal(t.db, c->db);
            if (c->kind == REDIS_TCP) {
                assert_string_equal(t.tcp.host, c->host);
                assert_int_equal(t.tcp.port, c->port);
            } else if (c->kind == REDIS_UNIX) {
                assert_string_equal(t.path, c->host);
            } else {
                assert_int_equal(t.n_sentinels, c->n_sentinels);
                assert_string_equal(t.sentinels[0].host, c->host);
                assert_int_equal(t.sentinels[0].port, c->port);
                assert_string_equal(t.master_name, c->master);
            }
            if (c->user)
                assert_string_equal(t.user, c->user);
            else
                assert_null(t.user);
            if (c->password)
                assert_string_equal(t.password, c->password);
            else
                assert_null(t.password);
        }
        free(t.user);
        free(t.password);
    }
    /* second sentinel of the two-sentinel form */
    struct redis_target t;
    assert_int_equal(config_parse_redis_url("redis-sentinel://a:1,b:2/mymaster", &t), 0);
    assert_string_equal(t.sentinels[1].host, "b");
    assert_int_equal(t.sentinels[1].port, 2);
    /* unix path at the sun_path limit */
    char url[200];
    char path[120];
    memset(path, 'p', sizeof path);
    path[0] = '/';
    path[107] = '\0'; /* 107 chars + NUL = 108: fits */
    snprintf(url, sizeof url, "unix://%s", path);
    assert_int_equal(config_parse_redis_url(url, &t), 0);
    path[107] = 'p';
    path[108] = '\0'; /* 108 chars: does not fit */
    snprintf(url, sizeof url, "unix://%s", path);
    assert_int_equal(config_parse_redis_url(url, &t), -1);
}

/* ---- allowed hosts and origins ---- */

static void test_allowed_hosts(void **state)
{
    (void)state;
    const char *env[] = {"TANDEM_LISTEN=127.0.0.1:9000",
                         "TANDEM_ALLOWED_HOSTS=Desk.Example.com, 10.0.0.5:9001,[fe80::1]:7000,[fd00::2]", NULL};
    struct load l;
    load_run(&l, NULL, env);
    assert_int_equal(l.rc, 0);
    const char *want[] = {"localhost:9000",         "127.0.0.1:9000",  "[::1]:9000",
                          "desk.example.com:9000", /* no port: the listen port, lower-cased */
                          "10.0.0.5:9001",          "[fe80::1]:7000", "[fd00::2]:9000"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!has_host(&l.cfg, want[i]))
            fail_msg("allowed hosts lack %s", want[i]);
    assert_int_equal(l.cfg.n_hosts, sizeof want / sizeof want[0]);
    assert_false(has_host(&l.cfg, "desk.example.com:8787"));
    assert_false(has_host(&l.cfg, "desk.example.com"));
    load_done(&l);

    /* on port 80 a client may omit the port */
    const char *env80[] = {"TANDEM_LISTEN=127.0.0.1:80", NULL};
    load_run(&l, NULL, env80);
    assert_int_equal(l.rc, 0);
    assert_true(has_host(&l.cfg, "localhost:80"));
    assert_true(has_host(&l.cfg, "localhost"));
    assert_true(has_host(&l.cfg, "[::1]"));
    load_done(&l);
}

static void test_allowed_origins(void **state)
{
    (void)state;
    const char *env[] = {"TANDEM_LISTEN=127.0.0.1:9000",
                         "TANDEM_ALLOWED_ORIGINS=chrome-extension://abcdef, https://desk.example.com/,moz-extension://x-y",
                         NULL};
    struct load l;
    load_run(&l, NULL, env);
    assert_int_equal(l.rc, 0);
    const char *want[] = {"http://127.0.0.1:9000", "http://localhost:9000", "http://[::1]:9000",
                          "chrome-extension://abcdef", "https://desk.example.com", "moz-extension://x-y"};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!has_origin(&l.cfg, want[i]))
            fail_msg("allowed origins lack %s", want[i]);
    assert_int_equal(l.cfg.n_origins, sizeof want / sizeof want[0]);
    assert_false(has_origin(&l.cfg, "https://desk.example.com/"));
    assert_false(has_origin(&l.cfg, "null"));
    load_done(&l);

    /* every allowed host is an own origin too (the panel served under that name) */
    const char *envh[] = {"TANDEM_LISTEN=127.0.0.1:9000", "TANDEM_ALLOWED_HOSTS=Tandem.Local,[fd00::2],gw:9001", NULL};
    load_run(&l, NULL, envh);
    assert_int_equal(l.rc, 0);
    assert_true(has_origin(&l.cfg, "http://tandem.local:9000"));
    assert_true(has_origin(&l.cfg, "http://[fd00::2]:9000"));
    assert_true(has_origin(&l.cfg, "http://gw:9001"));
    assert_true(has_origin(&l.cfg, "http://localhost:9000"));
    assert_int_equal(l.cfg.n_origins, 6);
    assert_false(has_origin(&l.cfg, "http://gw:9000"));
    assert_false(has_origin(&l.cfg, "https://tandem.local:9000"));
    load_done(&l);

    /* on port 80 a browser omits the port from Origin */
    const char *env80[] = {"TANDEM_LISTEN=127.0.0.1:80", NULL};
    load_run(&l, NULL, env80);
    assert_int_equal(l.rc, 0);
    assert_true(has_origin(&l.cfg, "http://localhost"));
    assert_true(has_origin(&l.cfg, "http://[::1]"));
    load_done(&l);

    /* own origins are there even when none are configured */
    const char *env2[] = {"TANDEM_LISTEN=127.0.0.1:9001", NULL};
    load_run(&l, NULL, env2);
    assert_int_equal(l.rc, 0);
    assert_true(has_origin(&l.cfg, "http://localhost:9001"));
    assert_false(has_origin(&l.cfg, "null"));
    load_done(&l);

    const char *bad[] = {"null", "https://desk.example.com/app", "https://desk.example.com/app/", "://x", "https://",
                         "desk.example.com", "ht tp://x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char e[128];
        snprintf(e, sizeof e, "TANDEM_ALLOWED_ORIGINS=%s", bad[i]);
        const char *envb[] = {e, NULL};
        load_run(&l, NULL, envb);
        if (l.rc != -1)
            fail_msg("origin '%s' accepted", bad[i]);
        assert_non_null(strstr(l.err, "TANDEM_ALLOWED_ORIGINS"));
        load_done(&l);
    }
}

/* ---- TANDEM_LLM_URL ---- */

static void test_llm_url(void **state)
{
    (void)state;
    struct {
        const char *url;
        int ok;
    } cases[] = {
        {"https://api.openai.com/v1", 1},
        {"https://llm.example.com:8443/openai/v1", 1},
        {"http://localhost:11434/v1", 1},
        {"http://127.0.0.1:8000/v1", 1},
        {"http://127.1.2.3/v1", 1},
        {"http://[::1]:8000/v1", 1},
        {"http://vllm:8000/v1", 1},                        /* single label: in-cluster service */
        {"http://vllm.models.svc/v1", 1},
        {"http://vllm.models.svc.cluster.local:8000/v1", 1},
        {"http://api.example.com/v1", 0},                  /* plain http to the internet */
        {"http://10.0.0.5:8000/v1", 0},
        {"http://svc/v2", 0},
        {"https://api.openai.com/v1/", 0},
        {"https://api.openai.com", 0},
        {"ftp://localhost/v1", 0},
        {"localhost/v1", 0},
        {"http:///v1", 0},
        {"http://evil.svc.example.com/v1", 0},
        {"http://localhost.evil.com/v1", 0},
        /* names that only look local */
        {"http://127.0.0.1.attacker.example/v1", 0},
        {"http://127.attacker.example/v1", 0},
        /* userinfo: curl connects to the host after '@' */
        {"http://user:pw@api.example.com/v1", 0},
        {"http://localhost:80@api.example.com/v1", 0},
        {"http://127.0.0.1@api.example.com/v1", 0},
        /* query/fragment: the host is before '?' / '#' */
        {"http://api.example.com?.svc/v1", 0},
        {"http://api.example.com#.cluster.local/v1", 0},
    };
    char *wrong_text = NULL;
    size_t wrong_len = 0, n_wrong = 0;
    FILE *wrong = open_memstream(&wrong_text, &wrong_len);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char e[200];
        snprintf(e, sizeof e, "TANDEM_LLM_URL=%s", cases[i].url);
        const char *env[] = {e, "TANDEM_LLM_MODEL=m", NULL};
        struct load l;
        load_run(&l, NULL, env);
        /* collect every wrong verdict so one run shows them all */
        if (l.rc != (cases[i].ok ? 0 : -1))
            n_wrong += (size_t)fprintf(wrong, "  TANDEM_LLM_URL=%s: %s, expected %s\n", cases[i].url,
                                       l.rc ? "rejected" : "accepted", cases[i].ok ? "accepted" : "rejected") > 0;
        else if (!cases[i].ok && !strstr(l.err, "TANDEM_LLM_URL"))
            n_wrong += (size_t)fprintf(wrong, "  TANDEM_LLM_URL=%s: message does not name it\n", cases[i].url) > 0;
        load_done(&l);
    }
    fclose(wrong);
    fail_collected(n_wrong, "wrong verdicts", wrong_text);
    /* the model is required with a URL */
    const char *env[] = {"TANDEM_LLM_URL=https://api.openai.com/v1", NULL};
    struct load l;
    load_run(&l, NULL, env);
    assert_int_equal(l.rc, -1);
    assert_non_null(strstr(l.err, "TANDEM_LLM_MODEL"));
    load_done(&l);
}

/* ---- --print-config masks secrets ---- */

static char *print_config(const struct config *c)
{
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    assert_non_null(f);
    config_print(c, f);
    fclose(f);
    return out;
}

static void test_print_config_masks_secrets(void **state)
{
    (void)state;
    struct {
        const char *redis_url;
        const char *redis_secret; /* must not appear */
        const char *redis_line;   /* expected TANDEM_REDIS_URL line, NULL = only check masking */
    } cases[] = {
        {"redis://user:hunter2pw@redis.example:6380/2", "hunter2pw",
         "TANDEM_REDIS_URL=redis://user:***@redis.example:6380/2\n"},
        {"redis://:hunter2pw@redis.example", "hunter2pw", "TANDEM_REDIS_URL=redis://:***@redis.example\n"},
        {"redis://hunter2pw@redis.example", "hunter2pw", "TANDEM_REDIS_URL=redis://***@redis.example\n"},
        {"redis://user:p%40sswd@redis.example:1/0", "sswd", "TANDEM_REDIS_URL=redis://user:***@redis.example:1/0\n"},
        {"redis://:a@b@redis.example:1/0", "a@b", "TANDEM_REDIS_URL=redis://:***@redis.example:1/0\n"},
        {"unix://:hunter2pw@/tmp/r.sock?db=3", "hunter2pw", "TANDEM_REDIS_URL=unix://:***@/tmp/r.sock?db=3\n"},
        {"redis-sentinel://:hunter2pw@s1:26379,s2:26379/mymaster", "hunter2pw", NULL},
        {"redis://redis.example:6379/0", "\x01", "TANDEM_REDIS_URL=redis://redis.example:6379/0\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char e[200];
        snprintf(e, sizeof e, "TANDEM_REDIS_URL=%s", cases[i].redis_url);
        const char *env[] = {e,
                             "TANDEM_TOKEN=tokensecret-0123456789",
                             "TANDEM_LLM_URL=https://llm.example.com/v1",
                             "TANDEM_LLM_MODEL=model-x",
                             "TANDEM_LLM_API_KEY=sk-apikeysecret",
                             NULL};
        const char *args[] = {"--print-config", NULL};
        struct load l;
        load_run(&l, args, env);
        assert_int_equal(l.rc, 0);
        assert_int_equal(l.action, 'p');
        char *out = print_config(&l.cfg);
        if (strstr(out, cases[i].redis_secret))
            fail_msg("Redis password visible:\n%s", out);
        assert_null(strstr(out, "tokensecret"));
        assert_null(strstr(out, "sk-apikeysecret"));
        assert_non_null(strstr(out, "TANDEM_TOKEN=***\n"));
        assert_non_null(strstr(out, "TANDEM_LLM_API_KEY=***\n"));
        assert_non_null(strstr(out, "TANDEM_LLM_MODEL=model-x\n"));
        if (cases[i].redis_line && !strstr(out, cases[i].redis_line))
            fail_msg("expected line %s in:\n%s", cases[i].redis_line, out);
        free(out);
        load_done(&l);
    }
}

static void test_print_config_shows_settings(void **state)
{
    (void)state;
    const char *env[] = {"TANDEM_LISTEN=127.0.0.1:9999", "TANDEM_MAX_BODY=4096", NULL};
    struct load l;
    load_run(&l, NULL, env);
    assert_int_equal(l.rc, 0);
    char *out = print_config(&l.cfg);
    assert_non_null(strstr(out, "TANDEM_LISTEN=127.0.0.1:9999\n"));
    assert_non_null(strstr(out, "TANDEM_MAX_BODY=4096\n"));
    assert_non_null(strstr(out, "TANDEM_REDIS_URL=redis://127.0.0.1:6379/0\n"));
    assert_non_null(strstr(out, "TANDEM_TOKEN=\n")); /* unset stays visibly unset */
    free(out);
    load_done(&l);
}

/* Credentials inside the LLM URL are as secret as the API key. */
static void test_print_config_masks_llm_url_credentials(void **state)
{
    (void)state;
    const char *env[] = {"TANDEM_LLM_URL=https://user:llmurlsecret@llm.example.com/v1", "TANDEM_LLM_MODEL=m", NULL};
    struct load l;
    load_run(&l, NULL, env);
    assert_int_equal(l.rc, 0);
    char *out = print_config(&l.cfg);
    load_done(&l);
    fail_collected(strstr(out, "llmurlsecret") != NULL, "credentials of TANDEM_LLM_URL visible in --print-config",
                   out);
}

/* The LLM and quality knobs are settings like the others: flags win over the environment,
 * --print-config shows them, a proxy's password is masked there and in errors. */
static void test_llm_and_quality_knobs(void **state)
{
    (void)state;
    const char *env[] = {"TANDEM_LLM_MAX_TOKENS=200", "TANDEM_LLM_TEMPERATURE=0", "TANDEM_QUALITY_PER_AGENT=1",
                         "TANDEM_LLM_PROXY=socks5h://me:proxysecret@proxy.internal:1080", NULL};
    const char *args[] = {"--llm-max-tokens", "300", "--llm-stream=0", "--llm-temperature", "1.25", NULL};
    struct load l;
    load_run(&l, args, env);
    assert_int_equal(l.rc, 0);
    assert_int_equal(l.cfg.llm_max_tokens, 300);
    assert_int_equal(l.cfg.llm_stream, 0);
    assert_int_equal(l.cfg.llm_json_mode, 1);
    assert_true(l.cfg.llm_temperature == 1.25);
    assert_int_equal(l.cfg.quality_per_agent, 1);
    assert_int_equal(l.cfg.llm_stall_ms, LLM_DEFAULT_STALL_MS);
    char *out = print_config(&l.cfg);
    load_done(&l);
    int shown = strstr(out, "TANDEM_LLM_MAX_TOKENS=300\n") && strstr(out, "TANDEM_QUALITY_PER_AGENT=1\n") &&
                strstr(out, "TANDEM_LLM_PROXY=socks5h://me:***@proxy.internal:1080\n");
    fail_collected(!shown || strstr(out, "proxysecret") != NULL, "knobs not shown, or the proxy password shown", out);
    const char *bad[] = {"TANDEM_LLM_PROXY=ftp://me:proxysecret@proxy:21", NULL};
    load_run(&l, NULL, bad);
    assert_int_equal(l.rc, -1);
    int leaked = l.err && strstr(l.err, "proxysecret") != NULL;
    load_done(&l);
    assert_false(leaked);
}

static void test_help_lists_every_variable(void **state)
{
    (void)state;
    char *out = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&out, &n);
    config_print_help(f);
    fclose(f);
    const char *vars[] = {"TANDEM_LISTEN",   "TANDEM_REDIS_URL",        "TANDEM_REDIS_PREFIX",  "TANDEM_TOKEN",
                          "TANDEM_TOKEN_FILE", "TANDEM_ALLOWED_HOSTS",  "TANDEM_ALLOWED_ORIGINS", "TANDEM_KB",
                          "TANDEM_LLM_URL",  "TANDEM_LLM_MODEL",        "TANDEM_LLM_API_KEY",   "TANDEM_LLM_API_KEY_FILE",
                          "TANDEM_LLM_TIMEOUT_MS", "TANDEM_LOG_LEVEL",  "TANDEM_LOG_FORMAT",    "--listen",
                          "--redis-url"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++)
        if (!strstr(out, vars[i]))
            fail_msg("--help lacks %s", vars[i]);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_env_parsing),
        cmocka_unit_test(test_file_settings),
        cmocka_unit_test(test_flags),
        cmocka_unit_test(test_actions),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_values_as_flags),
        cmocka_unit_test(test_bad_values_do_not_echo_secrets),
        cmocka_unit_test(test_token_and_token_file_together),
        cmocka_unit_test(test_redis_urls),
        cmocka_unit_test(test_allowed_hosts),
        cmocka_unit_test(test_allowed_origins),
        cmocka_unit_test(test_llm_url),
        cmocka_unit_test(test_print_config_masks_secrets),
        cmocka_unit_test(test_print_config_shows_settings),
        cmocka_unit_test(test_print_config_masks_llm_url_credentials),
        cmocka_unit_test(test_llm_and_quality_knobs),
        cmocka_unit_test(test_help_lists_every_variable),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
