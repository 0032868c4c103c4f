/* Unit tests for src/memory.c: transcript parsing and errors, records, URL->KB links, popularity, snapshots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tandem/context.h"
#include "tandem/error.h"
#include "tandem/kb.h"
#include "tandem/memory.h"
#include "tandem/text.h"

static char kb_path[64];
static struct kb *kb;

static int setup(void **state)
{
    (void)state;
    strcpy(kb_path, "/tmp/tandem-test-mem-XXXXXX");
    int fd = mkstemp(kb_path);
    assert_true(fd >= 0);
    static const char lines[] =
        "{\"id\":\"appeal\",\"title\":\"Appeal a suspension\",\"body\":\"b\",\"brand\":\"TeamYouTube\","
        "\"url\":\"https://web.archive.org/web/20200401224734/https://support.google.com/youtube/answer/185111\"}\n"
        "{\"id\":\"signin\",\"title\":\"Sign-in help\",\"body\":\"b\","
        "\"url\":\"https://accounts.google.com/signin/v2/recoveryidentifier?flowName=GlifWebSignIn\"}\n"
        "{\"id\":\"recover\",\"title\":\"Recover your account\",\"body\":\"b\",\"brand\":\"Google\","
        "\"url\":\"https://support.google.com/accounts/answer/7299973\"}\n";
    assert_int_equal(write(fd, lines, sizeof lines - 1), (ssize_t)(sizeof lines - 1));
    close(fd);
    char err[256];
    assert_int_equal(kb_load(kb_path, &kb, err, sizeof err), T_OK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kb_free(kb);
    unlink(kb_path);
    text_thread_cleanup();
    return 0;
}

static const char transcripts[] =
    "{\"id\":\"t-1\",\"brand\":\"TeamYouTube\",\"messages\":["
    "{\"role\":\"agent\",\"text\":\"Hi, how can I help?\"},"
    "{\"role\":\"customer\",\"text\":\"my channel got suspended\"},"
    "{\"role\":\"customer\",\"text\":\"please help\"},"
    "{\"role\":\"agent\",\"text\":\"@user1 You can appeal: "
    "https://web.archive.org/web/20200308122309/https://support.google.com/youtube/answer/185111.\"}]}\n"
    "\n"
    "{\"id\":\"t-2\",\"brand\":\"Google\",\"lang\":\"en\",\"messages\":["
    "{\"role\":\"customer\",\"text\":\"lost access to my gmail\"},"
    "{\"role\":\"agent\",\"text\":\"Try https://accounts.google.com/signin/v2/recoveryidentifier?flowName=GlifWebSignIn "
    "and https://support.google.com/accounts/answer/7299973\"},"
    "{\"role\":\"bot\",\"text\":\"survey\"},"
    "{\"role\":\"customer\",\"text\":\"thanks, it worked\"},"
    "{\"role\":\"agent\",\"text\":\"Glad to hear!\"}]}\n";

static void test_parse_good(void **state)
{
    (void)state;
    struct memory_records r;
    memory_records_init(&r);
    size_t n = 0;
    char err[256] = "";
    assert_int_equal(memory_parse_transcripts(transcripts, strlen(transcripts), &r, &n, err, sizeof err), T_OK);
    assert_int_equal(n, 2);
    assert_int_equal(r.n, 3); /* the greeting before the customer spoke is no reply to anything */
    assert_string_equal(r.v[0].tid, "t-1");
    assert_int_equal(r.v[0].turn, 3);
    assert_string_equal(r.v[0].brand, "TeamYouTube");
    assert_string_equal(r.v[0].context, "my channel got suspended\nplease help");
    assert_string_equal(r.v[0].lang, "en");
    assert_string_equal(r.v[2].context, "lost access to my gmail\nthanks, it worked");
    assert_string_equal(r.v[2].reply, "Glad to hear!");
    memory_records_cleanup(&r);
}

static void test_context_cap(void **state)
{
    (void)state;
    /* 10 customer turns: only the last MEMORY_CONTEXT_TURNS are kept, oldest first */
    char body[2048];
    size_t o = (size_t)snprintf(body, sizeof body, "{\"id\":\"x\",\"messages\":[");
    for (int i = 0; i < 10; i++)
        o += (size_t)snprintf(body + o, sizeof body - o, "{\"role\":\"customer\",\"text\":\"m%d\"},", i);
    snprintf(body + o, sizeof body - o, "{\"role\":\"agent\",\"text\":\"ok\"}]}");
    struct memory_records r;
    memory_records_init(&r);
    size_t n;
    char err[128];
    assert_int_equal(memory_parse_transcripts(body, strlen(body), &r, &n, err, sizeof err), T_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.v[0].context, "m2\nm3\nm4\nm5\nm6\nm7\nm8\nm9");
    memory_records_cleanup(&r);
}

struct bad_case {
    const char *body;
    const char *want;
};

static const struct bad_case bad_cases[] = {
    {"{\"id\":\"a\",\"messages\":[]}\n{\"id\":\"b\",\"messages\":[}\n", "line 2: invalid JSON"},
    {"{\"id\":\"a\",\"messages\":[]}\n\n{\"id\":3,\"messages\":[]}\n", "line 3: 'id' is required"},
    {"{\"messages\":[]}", "line 1: 'id' is required"},
    {"{\"id\":\"a\"}", "line 1: 'messages' is required"},
    {"{\"id\":\"a\",\"messages\":{}}", "line 1: 'messages' is required"},
    {"{\"id\":\"a\",\"brand\":5,\"messages\":[]}", "line 1: 'brand' must be a string"},
    {"{\"id\":\"a\",\"messages\":[{\"role\":\"customer\",\"text\":5}]}", "line 1: each message needs 'text'"},
    {"{\"id\":\"a\",\"messages\":[{\"role\":\"robot\",\"text\":\"x\"}]}", "line 1: 'role' must be"},
    {"{\"id\":\"a\",\"messages\":[{\"text\":\"x\"}]}", "line 1: each message needs 'role'"},
    {"{\"id\":\"a\",\"messages\":[\"hello\"]}", "line 1: each message must be an object"},
    {"[]", "line 1: a transcript must be a JSON object"},
    {"", "no transcript"},
    {"\n  \n\r\n", "no transcript"},
};

static void test_parse_bad(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        struct memory_records r;
        memory_records_init(&r);
        /* earlier content must survive a failed call untouched, and the call adds nothing */
        size_t n = 99;
        char err[256] = "";
        assert_int_equal(memory_parse_transcripts(transcripts, strlen(transcripts), &r, &n, err, sizeof err), T_OK);
        size_t before = r.n;
        n = 77;
        int rc = memory_parse_transcripts(bad_cases[i].body, strlen(bad_cases[i].body), &r, &n, err, sizeof err);
        assert_int_equal(rc, T_ERR_BAD_JSON);
        assert_int_equal(r.n, before);
        assert_int_equal(n, 77);
        if (!strstr(err, bad_cases[i].want))
            fail_msg("case %zu: \"%s\" lacks \"%s\"", i, err, bad_cases[i].want);
        memory_records_cleanup(&r);
    }
}

static void test_record_json(void **state)
{
    (void)state;
    struct memory_record in = {"t-9", 4, "Acme", "sv", "kund\xc3\xa4rende\n\"quoted\"", "svar", "kb-1", "feedback"};
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(memory_record_to_json(&in, &b), T_OK);
    struct memory_records r;
    memory_records_init(&r);
    assert_int_equal(memory_record_from_json(b.data, b.len, &r), T_OK);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.v[0].tid, "t-9");
    assert_int_equal(r.v[0].turn, 4);
    assert_string_equal(r.v[0].brand, "Acme");
    assert_string_equal(r.v[0].lang, "sv");
    assert_string_equal(r.v[0].context, in.context);
    assert_string_equal(r.v[0].reply, "svar");
    assert_string_equal(r.v[0].kb_id, "kb-1");
    assert_string_equal(r.v[0].source, "feedback");
    assert_int_equal(memory_record_from_json("{\"t\":\"x\"}", 9, &r), T_ERR_BAD_JSON);
    assert_int_equal(memory_record_from_json("nope", 4, &r), T_ERR_BAD_JSON);
    assert_int_equal(r.n, 1);
    memory_records_cleanup(&r);
    buf_cleanup(&b);
}

static long find_reply(const struct memory *m, const char *prefix)
{
    for (size_t i = 0; i < memory_count(m); i++)
        if (strncmp(memory_entry_at(m, i)->reply, prefix, strlen(prefix)) == 0)
            return (long)i;
    return -1;
}

static void test_build_links(void **state)
{
    (void)state;
    struct memory_records r;
    memory_records_init(&r);
    size_t n;
    char err[256];
    assert_int_equal(memory_parse_transcripts(transcripts, strlen(transcripts), &r, &n, err, sizeof err), T_OK);
    /* the same transcript imported twice counts once */
    assert_int_equal(memory_parse_transcripts(transcripts, strlen(transcripts), &r, &n, err, sizeof err), T_OK);
    /* an accepted suggestion linked explicitly */
    struct memory_record *fb = NULL;
    struct memory_records extra;
    memory_records_init(&extra);
    static const char fbjson[] = "{\"t\":\"sg_1\",\"i\":0,\"b\":\"google\",\"l\":\"en\",\"c\":\"forgot password\","
                                 "\"r\":\"Use the recovery page\",\"k\":\"recover\",\"s\":\"feedback\"}";
    assert_int_equal(memory_record_from_json(fbjson, strlen(fbjson), &extra), T_OK);
    fb = &extra.v[0];
    struct memory_record all[8];
    size_t na = 0;
    for (size_t i = 0; i < r.n; i++)
        all[na++] = r.v[i];
    all[na++] = *fb;
    struct memory *m = memory_build(all, na, kb);
    assert_non_null(m);
    assert_int_equal(memory_count(m), 4);
    assert_int_equal(memory_kb_generation(m), kb_generation(kb));

    long appeal = find_reply(m, "@user1 You can appeal");
    assert_true(appeal >= 0);
    const struct memory_entry *e = memory_entry_at(m, (size_t)appeal);
    assert_string_equal(e->kb_id, "appeal"); /* archive prefix, trailing '.', other snapshot date */
    assert_int_equal(e->n_links, 1);
    assert_int_equal(strncmp(e->id, "m_", 2), 0);
    assert_int_equal(strlen(e->id), 18);

    long both = find_reply(m, "Try https://");
    e = memory_entry_at(m, (size_t)both);
    assert_int_equal(e->n_links, 2);
    assert_string_equal(e->kb_id, "recover"); /* the Google entry beats the brandless one */
    assert_null(memory_entry_at(m, (size_t)find_reply(m, "Glad"))->kb_id);
    assert_string_equal(memory_entry_at(m, (size_t)find_reply(m, "Use the recovery"))->kb_id, "recover");

    /* popularity: Google cited "recover" twice (link + feedback), "signin" once; brand case-blind */
    const long *pk;
    const uint32_t *pc;
    uint32_t total;
    size_t np = memory_popularity(m, "GOOGLE", &pk, &pc, &total);
    assert_int_equal(np, 2);
    assert_int_equal(total, 3);
    assert_string_equal(kb_entry_at(kb, (size_t)pk[0])->id, "recover");
    assert_int_equal(pc[0], 2);
    assert_int_equal(pc[1], 1);
    assert_int_equal(memory_popularity(m, "Nobody", &pk, &pc, &total), 0);
    assert_int_equal(memory_representative(m, "TeamYouTube", kb_find_id(kb, "appeal")), appeal);
    assert_int_equal(memory_representative(m, "Google", kb_find_id(kb, "appeal")), -1);
    assert_true(memory_entry_brand_is(m, (size_t)appeal, "teamyoutube"));
    assert_false(memory_entry_brand_is(m, (size_t)appeal, "Google"));

    /* ids do not depend on import order */
    struct memory_record rev[8];
    for (size_t i = 0; i < na; i++)
        rev[i] = all[na - 1 - i];
    struct memory *m2 = memory_build(rev, na, kb);
    for (size_t i = 0; i < memory_count(m); i++)
        assert_string_equal(memory_entry_at(m, i)->id, memory_entry_at(m2, i)->id);
    memory_unref(m2);

    /* without a KB nothing is linked */
    struct memory *m3 = memory_build(all, na, NULL);
    for (size_t i = 0; i < memory_count(m3); i++)
        assert_null(memory_entry_at(m3, i)->kb_id);
    memory_unref(m3);

    assert_ptr_equal(memory_ref(m), m);
    memory_unref(m);
    memory_unref(m);
    memory_records_cleanup(&extra);
    memory_records_cleanup(&r);
}

static void test_context_of(void **state)
{
    (void)state;
    struct context *c = context_new("c-1");
    assert_non_null(c);
    static const struct {
        enum msg_role role;
        const char *text;
    } msgs[] = {{ROLE_AGENT, "hello"}, {ROLE_CUSTOMER, "my order"}, {ROLE_BOT, "bot"},
                {ROLE_CUSTOMER, ""},   {ROLE_CUSTOMER, "is late"}};
    c->messages = arena_alloc(&c->arena, sizeof msgs / sizeof msgs[0] * sizeof *c->messages);
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++) {
        memset(&c->messages[i], 0, sizeof c->messages[i]);
        c->messages[i].role = msgs[i].role;
        c->messages[i].text = msgs[i].text;
    }
    c->n_messages = sizeof msgs / sizeof msgs[0];
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(memory_context_of(c, &b), T_OK);
    assert_string_equal(b.data, "my order\nis late");
    buf_cleanup(&b);
    context_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),  cmocka_unit_test(test_context_cap), cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_record_json), cmocka_unit_test(test_build_links), cmocka_unit_test(test_context_of),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
