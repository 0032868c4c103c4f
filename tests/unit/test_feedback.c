/* Unit tests for src/feedback.c: edit distance, UTF-8, request validation, entries, names, the rejection table and its effect on ranking. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tandem/context.h"
#include "tandem/engine.h"
#include "tandem/error.h"
#include "tandem/feedback.h"
#include "tandem/kb.h"
#include "tandem/text.h"

#define NOW_MS 1795000000000LL

/* ---- edit distance ---------------------------------------------------------------------------- */

/* The rejection query for brand (T_OK asserted). */
static struct feedback_reject_query *rq_new(const char *brand, const struct bm25_qterm *q, size_t nq)
{
    struct feedback_reject_query *rq = NULL;
    assert_int_equal(feedback_reject_query_new(brand, q, nq, &rq), T_OK);
    return rq;
}

/* The context terms of text (T_OK asserted); returns how many. */
static size_t ctx_terms(const char *text, const char *lang, uint64_t *out, size_t max)
{
    size_t n = 99;
    assert_int_equal(feedback_context_terms(text, lang, out, max, &n), T_OK);
    return n;
}

static const struct {
    const char *a, *b;
    size_t want;
    const char *why;
} distances[] = {
    {"", "", 0, "both empty"},
    {"abc", "abc", 0, "equal"},
    {"", "abc", 3, "insertions"},
    {"abc", "", 3, "deletions"},
    {"kitten", "sitting", 3, "classic"},
    {"flaw", "lawn", 2, "delete + insert"},
    {"Hi Anna, your refund is on its way.", "Hi Anna, your refund is on the way!", 4, "a small edit in a sentence"},
    {"caf\xc3\xa9", "cafe", 1, "two-byte letter is one code point (bytes would say 2)"},
    {"na\xc3\xafve", "naive", 1, "i with diaeresis"},
    {"\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e", "\xe6\x97\xa5\xe6\x9c\xac", 1, "CJK: one of three characters removed"},
    {"ok \xf0\x9f\x98\x80", "ok ", 1, "an emoji (4 bytes) is one code point"},
    {"\xf0\x9f\x98\x80", "\xf0\x9f\x98\x83", 1, "one emoji for another"},
    {"\xf0\x9f\x91\x8d", "\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd", 1, "skin tone modifier is its own code point"},
    {"\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x92\xbb", "\xf0\x9f\x91\xa9", 2, "ZWJ sequence: ZWJ + laptop"},
    {"\xc3\xa9", "e\xcc\x81", 2, "precomposed vs combining: no normalisation"},
    {"e\xcc\x81", "e", 1, "a combining mark is one code point"},
    {"\xff", "\xfe", 1, "two different invalid bytes differ"},
    {"\xff", "", 1, "an invalid byte counts as one"},
    {"a\xc3", "a", 1, "a truncated sequence is one invalid byte"},
    {"\xc0\xaf", "/", 2, "an overlong '/' is two invalid bytes, not a slash"},
};

static void test_edit_distance_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof distances / sizeof distances[0]; i++) {
        size_t d = 99;
        int capped = -1;
        assert_int_equal(feedback_edit_distance(distances[i].a, strlen(distances[i].a), distances[i].b,
                                                strlen(distances[i].b), &d, &capped),
                         T_OK);
        if (d != distances[i].want)
            fail_msg("%s: distance %zu, want %zu", distances[i].why, d, distances[i].want);
        assert_int_equal(capped, 0);
        /* symmetric */
        size_t r = 99;
        feedback_edit_distance(distances[i].b, strlen(distances[i].b), distances[i].a, strlen(distances[i].a), &r,
                               &capped);
        assert_int_equal(r, d);
    }
}

static char *repeat(const char *head, char c, size_t n, const char *tail)
{
    size_t hl = strlen(head), tl = strlen(tail);
    char *s = malloc(hl + n + tl + 1);
    assert_non_null(s);
    memcpy(s, head, hl);
    memset(s + hl, c, n);
    memcpy(s + hl + n, tail, tl + 1);
    return s;
}

static void test_edit_distance_bounds(void **state)
{
    (void)state;
    size_t d;
    int capped;
    /* a small edit in a long text stays exact: the common prefix and suffix are free */
    char *a = repeat("", 'a', 10000, "x"), *b = repeat("", 'a', 10000, "y");
    assert_int_equal(feedback_edit_distance(a, strlen(a), b, strlen(b), &d, &capped), T_OK);
    assert_int_equal(d, 1);
    assert_int_equal(capped, 0);
    free(a);
    free(b);
    /* everything differs, beyond the cap: exact part + the longer rest (here also the exact value) */
    a = repeat("", 'a', 5000, "");
    b = repeat("", 'b', 4500, "");
    assert_int_equal(feedback_edit_distance(a, strlen(a), b, strlen(b), &d, &capped), T_OK);
    assert_int_equal(d, 5000);
    assert_int_equal(capped, 1);
    free(a);
    free(b);
    /* an edit at each end of a 4501-long middle: exact is 2, the bound is lev(first 4000) + 501 */
    a = repeat("x", 'a', 4500, "");
    b = repeat("", 'a', 4500, "y");
    assert_int_equal(feedback_edit_distance(a, strlen(a), b, strlen(b), &d, &capped), T_OK);
    assert_int_equal(capped, 1);
    assert_int_equal(d, 1 + 501);
    assert_true(d >= 2); /* never below the true distance */
    free(a);
    free(b);
    /* multi-byte characters count once against the cap too */
    a = malloc(4 * 4100 + 1);
    assert_non_null(a);
    for (size_t i = 0; i < 4100; i++)
        memcpy(a + 4 * i, "\xf0\x9f\x98\x80", 4);
    a[4 * 4100] = '\0';
    assert_int_equal(feedback_codepoints(a, strlen(a)), 4100);
    assert_int_equal(feedback_edit_distance(a, strlen(a), "", 0, &d, &capped), T_OK);
    assert_int_equal(d, 4100);
    assert_int_equal(capped, 1);
    free(a);
}

static void test_utf8_valid(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        int ok;
    } t[] = {
        {"", 1},
        {"plain", 1},
        {"caf\xc3\xa9 \xe6\x97\xa5 \xf0\x9f\x98\x80", 1},
        {"\xc0\xaf", 0},          /* overlong */
        {"\xe0\x80\xaf", 0},      /* overlong, 3 bytes */
        {"\xed\xa0\x80", 0},      /* UTF-16 surrogate */
        {"\xf4\x90\x80\x80", 0},  /* past U+10FFFF */
        {"\xe6\x97", 0},          /* truncated */
        {"\x80", 0},              /* lone continuation */
        {"\xf4\x8f\xbf\xbf", 1},  /* U+10FFFF */
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++)
        if (feedback_utf8_valid(t[i].s, strlen(t[i].s)) != t[i].ok)
            fail_msg("case %zu: want %d", i, t[i].ok);
}

static void test_ids(void **state)
{
    (void)state;
    assert_true(feedback_valid_sid("sg_0123456789abcdef"));
    assert_false(feedback_valid_sid("sg_0123456789ABCDEF"));
    assert_false(feedback_valid_sid("sg_0123456789abcde"));
    assert_false(feedback_valid_sid("sg_0123456789abcdef0"));
    assert_false(feedback_valid_sid("xx_0123456789abcdef"));
    assert_false(feedback_valid_sid("sg_0123456789abcdeg"));
    assert_false(feedback_valid_sid(""));
    assert_false(feedback_valid_sid(NULL));
    assert_true(feedback_valid_id("2f1c7a9e-58b4-4b43-9d1e-0a4a7c1f2b3d"));
    assert_true(feedback_valid_id("agent-17:reply.3_x"));
    assert_false(feedback_valid_id(""));
    assert_false(feedback_valid_id("a b"));
    assert_false(feedback_valid_id("a{b}"));
    assert_false(feedback_valid_id("\xc3\xa9"));
    char long_id[FEEDBACK_MAX_ID_LEN + 2];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    assert_false(feedback_valid_id(long_id));
    long_id[FEEDBACK_MAX_ID_LEN] = '\0';
    assert_true(feedback_valid_id(long_id));
}

/* ---- request validation ----------------------------------------------------------------------- */

static const struct {
    const char *json;
    int ok;
    const char *msg_has; /* for errors: a piece of the message */
} bodies[] = {
    {"{\"action\":\"accepted\"}", 1, NULL},
    {"{\"action\":\"rejected\",\"final_text\":null,\"reason\":null,\"agent_id\":null}", 1, NULL},
    {"{\"action\":\"edited\",\"final_text\":\"Hi \\u00e9 \\ud83d\\ude00\",\"agent_id\":\"anna@acme.example\","
     "\"feedback_id\":\"2f1c7a9e-58b4\",\"reason\":\"tone\",\"conversation_id\":\"c-1\","
     "\"shown_at_ms\":1794999990000,\"time_to_action_ms\":1200}",
     1, NULL},
    {"{}", 0, "'action' is required"},
    {"{\"action\":\"ACCEPTED\"}", 0, "'action' is required"},
    {"{\"action\":1}", 0, "'action' is required"},
    {"{\"action\":\"edited\"}", 0, "'final_text' is required"},
    {"{\"action\":\"edited\",\"final_text\":\" \\n \"}", 0, "must not be empty"},
    {"{\"action\":\"edited\",\"final_text\":5}", 0, "'final_text' must be a string"},
    {"{\"action\":\"edited\",\"final_text\":\"a\\u0000b\"}", 0, "NUL"},
    {"{\"action\":\"accepted\",\"agent_id\":\"\"}", 0, "'agent_id'"},
    {"{\"action\":\"accepted\",\"agent_id\":\"a\\nb\"}", 0, "'agent_id'"},
    {"{\"action\":\"accepted\",\"agent_id\":[]}", 0, "'agent_id' must be a string"},
    {"{\"action\":\"accepted\",\"feedback_id\":\"a b\"}", 0, "'feedback_id'"},
    {"{\"action\":\"accepted\",\"feedback_id\":7}", 0, "'feedback_id'"},
    {"{\"action\":\"accepted\",\"conversation_id\":\"c/1\"}", 0, "'conversation_id'"},
    {"{\"action\":\"accepted\",\"shown_at_ms\":1895000000000}", 0, "'shown_at_ms'"},
    {"{\"action\":\"accepted\",\"shown_at_ms\":-5}", 0, "'shown_at_ms'"},
    {"{\"action\":\"accepted\",\"shown_at_ms\":\"1794999990000\"}", 0, "'shown_at_ms'"},
    {"{\"action\":\"accepted\",\"time_to_action_ms\":-1}", 0, "'time_to_action_ms'"},
    {"{\"action\":\"accepted\",\"time_to_action_ms\":86400001}", 0, "'time_to_action_ms'"},
    {"{\"action\":\"accepted\",\"time_to_action_ms\":1.5}", 0, "'time_to_action_ms'"},
    {"{\"action\":\"accepted\",\"finalText\":\"x\"}", 0, "unknown field 'finalText'"},
    {"[]", 0, "JSON object"},
};

static void test_parse_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        json_error_t jerr;
        json_t *o = json_loads(bodies[i].json, JSON_ALLOW_NUL, &jerr);
        if (!o)
            fail_msg("case %zu: test JSON invalid: %s", i, jerr.text);
        struct feedback_input in;
        char msg[400];
        int err = feedback_parse(o, NOW_MS, &in, msg, sizeof msg);
        if (bodies[i].ok && err != T_OK)
            fail_msg("case %zu (%s): unexpected error: %s", i, bodies[i].json, msg);
        if (!bodies[i].ok) {
            if (err != T_ERR_BAD_JSON)
                fail_msg("case %zu (%s): accepted", i, bodies[i].json);
            if (!strstr(msg, bodies[i].msg_has))
                fail_msg("case %zu: message '%s' lacks '%s'", i, msg, bodies[i].msg_has);
        }
        json_decref(o);
    }
}

static void test_parse_fields_and_limits(void **state)
{
    (void)state;
    json_t *o = json_loads(bodies[2].json, 0, NULL);
    struct feedback_input in;
    char msg[400];
    assert_int_equal(feedback_parse(o, NOW_MS, &in, msg, sizeof msg), T_OK);
    assert_int_equal(in.action, FEEDBACK_EDITED);
    assert_string_equal(in.final_text, "Hi \xc3\xa9 \xf0\x9f\x98\x80");
    assert_int_equal(in.final_len, strlen(in.final_text));
    assert_string_equal(in.agent_id, "anna@acme.example");
    assert_string_equal(in.feedback_id, "2f1c7a9e-58b4");
    assert_string_equal(in.reason, "tone");
    assert_string_equal(in.conversation_id, "c-1");
    assert_int_equal(in.shown_at_ms, 1794999990000LL);
    assert_int_equal(in.time_to_action_ms, 1200);
    json_decref(o);

    /* absent numbers are -1; lengths at and past the caps */
    char *big = repeat("", 'x', FEEDBACK_MAX_TEXT_BYTES, "");
    o = json_pack("{s:s, s:s}", "action", "accepted", "final_text", big);
    assert_int_equal(feedback_parse(o, NOW_MS, &in, msg, sizeof msg), T_OK);
    assert_int_equal(in.shown_at_ms, -1);
    assert_int_equal(in.time_to_action_ms, -1);
    json_decref(o);
    free(big);
    big = repeat("", 'x', FEEDBACK_MAX_TEXT_BYTES + 1, "");
    o = json_pack("{s:s, s:s}", "action", "accepted", "final_text", big);
    assert_int_equal(feedback_parse(o, NOW_MS, &in, msg, sizeof msg), T_ERR_BAD_JSON);
    assert_non_null(strstr(msg, "too long"));
    json_decref(o);
    free(big);
    big = repeat("", 'r', FEEDBACK_MAX_REASON_BYTES + 1, "");
    o = json_pack("{s:s, s:s}", "action", "rejected", "reason", big);
    assert_int_equal(feedback_parse(o, NOW_MS, &in, msg, sizeof msg), T_ERR_BAD_JSON);
    json_decref(o);
    free(big);
    /* a client clock a little ahead of ours is fine */
    o = json_pack("{s:s, s:I}", "action", "accepted", "shown_at_ms", (json_int_t)(NOW_MS + 1000));
    assert_int_equal(feedback_parse(o, NOW_MS, &in, msg, sizeof msg), T_OK);
    json_decref(o);
    /* invalid UTF-8 cannot come through Jansson; the validator still says no */
    o = json_pack("{s:s}", "action", "accepted");
    json_object_set_new(o, "final_text", json_stringn_nocheck("ab\xff", 3));
    assert_int_equal(feedback_parse(o, NOW_MS, &in, msg, sizeof msg), T_ERR_BAD_JSON);
    assert_non_null(strstr(msg, "UTF-8"));
    json_decref(o);
}

/* ---- entries ------------------------------------------------------------------------------------ */

static struct feedback_suggestion sample_sugg(void)
{
    struct feedback_suggestion sg = {
        .sid = "sg_0123456789abcdef",
        .conversation_id = "c-1",
        .engine = "local",
        .source = "kb",
        .text = "Hi Anna, your refund is on its way.",
        .kb_id = "refund-status",
        .memory_id = NULL,
        .brand = "acme",
        .lang = "en",
        .context = "Where is my refund for order 4711?\nI returned the shoes last week",
        .created_ms = NOW_MS - 5000,
    };
    return sg;
}

static void test_entry_build(void **state)
{
    (void)state;
    struct feedback_suggestion sg = sample_sugg();
    struct feedback_input in = {.action = FEEDBACK_ACCEPTED, .shown_at_ms = -1, .time_to_action_ms = -1};
    struct feedback_entry e;

    /* accepted without a text: the suggestion as shown, distance 0, time from when it was made */
    assert_int_equal(feedback_entry_build(&in, &sg, NOW_MS, &e), T_OK);
    assert_true(e.has_final);
    assert_string_equal(e.final_redacted.data, sg.text);
    assert_int_equal(e.edit_distance, 0);
    assert_int_equal(e.edit_ratio_permille, 0);
    assert_int_equal(e.time_to_action_ms, 5000);
    assert_int_equal(e.suggestion_chars, strlen(sg.text));
    assert_int_equal(e.terms.len, 0);
    feedback_entry_cleanup(&e);

    /* edited: the final text is redacted; the distance is measured on what the agent sent */
    static const char card_text[] = "Hi Anna, refund sent to card 4111 1111 1111 1111.";
    in = (struct feedback_input){.action = FEEDBACK_EDITED, .final_text = card_text, .final_len = sizeof card_text - 1,
                                 .shown_at_ms = NOW_MS - 2000, .time_to_action_ms = -1};
    assert_int_equal(feedback_entry_build(&in, &sg, NOW_MS, &e), T_OK);
    assert_null(strstr(e.final_redacted.data, "4111"));
    assert_non_null(strstr(e.final_redacted.data, "[CARD_1]"));
    size_t d;
    int capped;
    feedback_edit_distance(sg.text, strlen(sg.text), card_text, strlen(card_text), &d, &capped);
    assert_int_equal(e.edit_distance, (long)d);
    assert_true(e.edit_ratio_permille > 0 && e.edit_ratio_permille <= 1000);
    assert_int_equal(e.time_to_action_ms, 2000); /* shown_at beats created */
    feedback_entry_cleanup(&e);

    /* the client's own measure beats both; the reason is redacted too */
    in = (struct feedback_input){.action = FEEDBACK_REJECTED, .reason = "customer wrote from bob@example.com",
                                 .shown_at_ms = NOW_MS - 2000, .time_to_action_ms = 750};
    assert_int_equal(feedback_entry_build(&in, &sg, NOW_MS, &e), T_OK);
    assert_false(e.has_final);
    assert_int_equal(e.edit_distance, -1);
    assert_int_equal(e.time_to_action_ms, 750);
    assert_null(strstr(e.reason_redacted.data, "bob@"));
    assert_non_null(strstr(e.reason_redacted.data, "[EMAIL_1]"));
    /* rejected: the situation's words as hashes, never its text */
    assert_true(e.terms.len > 0);
    assert_null(strstr(e.terms.data, "refund"));
    uint64_t t[FEEDBACK_REJECT_MAX_TERMS];
    size_t nt = ctx_terms(sg.context, "en", t, FEEDBACK_REJECT_MAX_TERMS);
    assert_true(nt >= 4); /* refund, order, return, shoe, week ... (numbers and stopwords dropped) */
    char first[20];
    snprintf(first, sizeof first, "%016llx", (unsigned long long)t[0]);
    assert_memory_equal(e.terms.data, first, 16);
    assert_int_equal(e.terms.len, nt * 17 - 1);
    feedback_entry_cleanup(&e);

    /* a time in the future (client clock ahead) counts as 0; a missing created_ms leaves it unknown */
    in = (struct feedback_input){.action = FEEDBACK_ACCEPTED, .shown_at_ms = NOW_MS + 100, .time_to_action_ms = -1};
    assert_int_equal(feedback_entry_build(&in, &sg, NOW_MS, &e), T_OK);
    assert_int_equal(e.time_to_action_ms, 0);
    feedback_entry_cleanup(&e);
    sg.created_ms = -1;
    in.shown_at_ms = -1;
    assert_int_equal(feedback_entry_build(&in, &sg, NOW_MS, &e), T_OK);
    assert_int_equal(e.time_to_action_ms, -1);
    feedback_entry_cleanup(&e);
}

static void test_context_terms(void **state)
{
    (void)state;
    uint64_t a[8], b[8];
    /* case, inflection, numbers and word order do not matter */
    size_t na = ctx_terms("Where is my REFUND for order 123?", "en", a, 8);
    size_t nb = ctx_terms("refunds: where? order 999", "en", b, 8);
    assert_true(na >= 2);
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        int found = 0;
        for (size_t j = 0; j < nb; j++)
            found |= a[i] == b[j];
        assert_true(found);
    }
    /* capped */
    assert_int_equal(ctx_terms("alpha beta gamma delta epsilon", "en", a, 2), 2);
    assert_int_equal(ctx_terms(NULL, "en", a, 8), 0);
}

static void test_templatize(void **state)
{
    (void)state;
    static const struct {
        const char *text, *full, *first, *agent, *want;
    } t[] = {
        {"Hi Anna, Jordan here.", "Anna Berg", "Anna", "Jordan", "Hi {{customer.first_name}}, {{agent.name}} here."},
        {"Dear Anna Berg,", "Anna Berg", "Anna", NULL, "Dear {{customer.name}},"},
        {"Annabel and Hanna are not Anna.", NULL, "Anna", NULL,
         "Annabel and Hanna are not {{customer.first_name}}."},
        {"Hi Ann", NULL, "Ann", NULL, "Hi {{customer.first_name}}"},
        {"Hi A, all set", NULL, "A", NULL, "Hi A, all set"}, /* one letter: too risky */
        {"Hej Åsa!", NULL, "Åsa", NULL, "Hej {{customer.first_name}}!"},
        {"Åsaö", NULL, "Åsa", NULL, "Åsaö"}, /* not a whole word */
        {"No names here.", NULL, NULL, NULL, "No names here."},
        {"", "Anna Berg", "Anna", "Jordan", ""},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct buf b;
        buf_init(&b, 0);
        assert_int_equal(feedback_templatize(t[i].text, t[i].full, t[i].first, t[i].agent, &b), T_OK);
        if (strcmp(b.data, t[i].want) != 0)
            fail_msg("case %zu: '%s', want '%s'", i, b.data, t[i].want);
        buf_cleanup(&b);
    }
}

/* ---- the rejection table -------------------------------------------------------------------------- */

struct qbuild {
    struct bm25_qterm q[64];
    char pool[2048];
    size_t n, used;
};

static void qtoken(void *ud, const char *term, size_t len, unsigned flags)
{
    (void)flags;
    struct qbuild *b = ud;
    if (b->n == 64 || b->used + len + 1 > sizeof b->pool)
        return;
    memcpy(b->pool + b->used, term, len);
    b->pool[b->used + len] = '\0';
    b->q[b->n++] = (struct bm25_qterm){b->pool + b->used, (uint32_t)len, 1.0f};
    b->used += len + 1;
}

static void query_of(const char *text, struct qbuild *b)
{
    memset(b, 0, sizeof *b);
    assert_int_equal(text_tokenize(text, strlen(text), "en", 0, qtoken, b), 0);
}

static void install_one(const char *brand, const char *target, const char *situation, size_t times)
{
    uint64_t t[FEEDBACK_REJECT_MAX_TERMS];
    size_t nt = ctx_terms(situation, "en", t, FEEDBACK_REJECT_MAX_TERMS);
    struct feedback_rejection r[8];
    for (size_t i = 0; i < times; i++)
        r[i] = (struct feedback_rejection){brand, target, t, nt};
    assert_int_equal(feedback_rejections_install(r, times), T_OK);
}

static void test_reject_factor(void **state)
{
    (void)state;
    struct qbuild qb;
    static const char situation[] = "Where is my refund? I returned the shoes last week";
    query_of("my refund for the shoes I returned has not arrived", &qb);

    feedback_rejections_reset();
    assert_null(rq_new("acme", qb.q, qb.n)); /* nothing rejected: no cost */

    install_one("Acme", "refund-status", situation, 1);
    assert_int_equal(feedback_rejections_count(), 1);
    assert_null(rq_new("other-brand", qb.q, qb.n));
    assert_null(rq_new("acme", qb.q, 0));
    struct feedback_reject_query *rq = rq_new("acme", qb.q, qb.n); /* brand case-blind */
    assert_non_null(rq);
    double similar = feedback_reject_factor(rq, "refund-status");
    assert_true(similar < 0.8 && similar >= 0.5);
    assert_true(feedback_reject_factor(rq, "refund-timeline") == 1.0); /* another target */
    feedback_reject_query_free(rq);

    /* the same rejection does nothing in an unrelated situation */
    struct qbuild other;
    query_of("I cannot log in, please reset my password", &other);
    rq = rq_new("acme", other.q, other.n);
    assert_non_null(rq);
    assert_true(feedback_reject_factor(rq, "refund-status") == 1.0);
    feedback_reject_query_free(rq);

    /* the identical situation: one rejection halves the score; more rejections, lower still */
    struct qbuild same;
    query_of(situation, &same);
    rq = rq_new("acme", same.q, same.n);
    double one = feedback_reject_factor(rq, "refund-status");
    assert_true(one > 0.49 && one < 0.51);
    feedback_reject_query_free(rq);
    install_one("acme", "refund-status", situation, 3);
    rq = rq_new("acme", same.q, same.n);
    double three = feedback_reject_factor(rq, "refund-status");
    assert_true(three > 0.24 && three < 0.26);
    feedback_reject_query_free(rq);
    feedback_rejections_reset();
    assert_int_equal(feedback_rejections_count(), 0);
}

static void test_reject_table_caps(void **state)
{
    (void)state;
    static const char situation[] = "refund shoes returned week";
    uint64_t t[FEEDBACK_REJECT_MAX_TERMS];
    size_t nt = ctx_terms(situation, "en", t, FEEDBACK_REJECT_MAX_TERMS);
    size_t n = FEEDBACK_REJECT_MAX_RECORDS + 10;
    struct feedback_rejection *r = calloc(n, sizeof *r);
    assert_non_null(r);
    for (size_t i = 0; i < n; i++)
        r[i] = (struct feedback_rejection){"", i < 10 ? "old" : "new", t, nt};
    assert_int_equal(feedback_rejections_install(r, n), T_OK);
    free(r);
    /* the oldest are dropped */
    assert_int_equal(feedback_rejections_count(), FEEDBACK_REJECT_MAX_RECORDS);
    struct qbuild qb;
    query_of(situation, &qb);
    struct feedback_reject_query *rq = rq_new(NULL, qb.q, qb.n);
    assert_non_null(rq);
    assert_true(feedback_reject_factor(rq, "old") == 1.0);
    /* a target's newest FEEDBACK_REJECT_MAX_PER_TARGET rejections count, no more */
    double f = feedback_reject_factor(rq, "new");
    double want = 1.0 / (1.0 + FEEDBACK_REJECT_WEIGHT * FEEDBACK_REJECT_MAX_PER_TARGET);
    assert_true(f > want * 0.99 && f < want * 1.01);
    feedback_reject_query_free(rq);
    feedback_rejections_reset();
}

/* The engine ranks a rejected entry lower in the situation it was rejected in, and only there. */
static const char kb_lines[] =
    "{\"id\":\"refund-status\",\"title\":\"Where is my refund?\",\"body\":\"Your refund is on its way.\","
    "\"tags\":[\"refund\"]}\n"
    "{\"id\":\"refund-timeline\",\"title\":\"How long does a refund take?\",\"body\":\"Refunds take 5 days.\","
    "\"tags\":[\"refund\"]}\n"
    "{\"id\":\"reset-password\",\"title\":\"Reset your password\",\"body\":\"Use the reset link.\"}\n";

static struct context *one_turn(const char *text)
{
    struct context *c = context_new("c-1");
    assert_non_null(c);
    c->messages = arena_alloc(&c->arena, sizeof *c->messages);
    memset(c->messages, 0, sizeof *c->messages);
    snprintf(c->messages[0].id, sizeof c->messages[0].id, "1700000000000-0");
    c->messages[0].role = ROLE_CUSTOMER;
    c->messages[0].text = text;
    c->n_messages = 1;
    snprintf(c->newest_id, sizeof c->newest_id, "1700000000000-0");
    return c;
}

static const char *top_of(const struct kb *kb, const char *text, double *score)
{
    static char id[64];
    struct context *c = one_turn(text);
    struct arena a;
    arena_init(&a);
    struct suggestion s[ENGINE_MAX_K];
    size_t n = 0;
    assert_int_equal(engine_local_suggest(c, kb, NULL, 3, &a, s, &n, NULL), T_OK);
    assert_true(n > 0);
    snprintf(id, sizeof id, "%s", s[0].kb_id);
    *score = s[0].score;
    arena_cleanup(&a);
    context_free(c);
    return id;
}

static void test_engine_ranks_rejected_lower(void **state)
{
    (void)state;
    char path[64] = "/tmp/tandem-test-feedback-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, kb_lines, sizeof kb_lines - 1), (ssize_t)(sizeof kb_lines - 1));
    close(fd);
    struct kb *kb = NULL;
    char err[256];
    assert_int_equal(kb_load(path, &kb, err, sizeof err), T_OK);
    feedback_rejections_reset();

    static const char q[] = "where is my refund";
    double s0, s1, s2;
    const char *before = top_of(kb, q, &s0);
    char rejected[64];
    snprintf(rejected, sizeof rejected, "%s", before);
    /* rejected in another situation: no change */
    install_one("", rejected, "I forgot my password and cannot sign in", 3);
    assert_string_equal(top_of(kb, q, &s1), rejected);
    assert_true(s1 == s0);
    /* rejected in this situation: the other refund entry leads now */
    install_one("", rejected, "where is my refund?", 2);
    const char *after = top_of(kb, q, &s2);
    assert_string_not_equal(after, rejected);
    assert_non_null(strstr(after, "refund"));
    feedback_rejections_reset();
    assert_string_equal(top_of(kb, q, &s1), rejected);
    kb_free(kb);
    unlink(path);
}

static int teardown(void **state)
{
    (void)state;
    feedback_rejections_reset();
    text_thread_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edit_distance_table),
        cmocka_unit_test(test_edit_distance_bounds),
        cmocka_unit_test(test_utf8_valid),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_parse_table),
        cmocka_unit_test(test_parse_fields_and_limits),
        cmocka_unit_test(test_entry_build),
        cmocka_unit_test(test_context_terms),
        cmocka_unit_test(test_templatize),
        cmocka_unit_test(test_reject_factor),
        cmocka_unit_test(test_reject_table_caps),
        cmocka_unit_test(test_engine_ranks_rejected_lower),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
