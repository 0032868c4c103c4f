/* Unit tests for llm_stream: SSE and JSON bodies, framing edge cases, caps, and random splits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/llm_stream.h"

/* One OpenAI chunk with the given delta JSON. */
#define CHUNK(delta)                                                                                              \
    "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","         \
    "\"choices\":[{\"index\":0,\"delta\":" delta ",\"logprobs\":null,\"finish_reason\":null}]}\n\n"
#define STOP "data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
#define DONE "data: [DONE]\n\n"

struct scase {
    const char *name;
    const char *body;
    size_t len; /* 0 = strlen(body) */
    enum llm_stream_status want;
    const char *content; /* expected answer text */
    const char *finish;  /* expected finish_reason or NULL */
};

static const struct scase cases[] = {
    {"openai_stream",
     CHUNK("{\"role\":\"assistant\",\"content\":\"\"}") CHUNK("{\"content\":\"{\\\"sugg\"}")
         CHUNK("{\"content\":\"estions\\\":[]}\"}") STOP DONE,
     0, LLM_STREAM_DONE, "{\"suggestions\":[]}", "stop"},
    {"crlf", "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\r\n\r\ndata: [DONE]\r\n\r\n",
     0, LLM_STREAM_DONE, "ab", NULL},
    {"crlf_multi_line_data", "data: {\"choices\":\r\ndata: [{\"delta\":{\"content\":\"j\"}}]}\r\n\r\ndata: [DONE]\r\n\r\n", 0,
     LLM_STREAM_DONE, "j", NULL},
    {"cr_only", "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\r\rdata: [DONE]\r\r", 0, LLM_STREAM_DONE, "x", NULL},
    {"comments_and_fields",
     ": keep-alive\n\nid: 7\nretry: 100\nevent: message\ndata: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n: ping\n\n" DONE,
     0, LLM_STREAM_DONE, "hi", NULL},
    {"no_space_after_colon", "data:{\"choices\":[{\"delta\":{\"content\":\"q\"}}]}\n\ndata:[DONE]\n\n", 0, LLM_STREAM_DONE, "q", NULL},
    {"multi_line_data", "data: {\"choices\":\ndata: [{\"delta\":{\"content\":\"joined\"}}]}\n\n" DONE, 0, LLM_STREAM_DONE,
     "joined", NULL},
    {"finish_without_done", CHUNK("{\"content\":\"ok\"}") STOP, 0, LLM_STREAM_DONE, "ok", "stop"},
    {"length_finish", CHUNK("{\"content\":\"cut\"}") "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"length\"}]}\n\n" DONE,
     0, LLM_STREAM_DONE, "cut", "length"},
    {"no_done_no_finish", CHUNK("{\"content\":\"half\"}"), 0, LLM_STREAM_TRUNCATED, "half", NULL},
    {"cut_mid_event", CHUNK("{\"content\":\"a\"}") "data: {\"choices\":[{\"delta\":{\"con", 0, LLM_STREAM_TRUNCATED, "a",
     NULL},
    {"last_line_without_newline", CHUNK("{\"content\":\"z\"}") "data: [DONE]", 0, LLM_STREAM_DONE, "z", NULL},
    {"garbage_after_done", CHUNK("{\"content\":\"z\"}") DONE "data: {broken\n\n\xff\xfe", 0, LLM_STREAM_DONE, "z", NULL},
    {"malformed_event", CHUNK("{\"content\":\"a\"}") "data: {\"choices\":[{\"delta\":{\"content\":\"b\"}\n\n" DONE, 0,
     LLM_STREAM_MALFORMED, "a", NULL},
    {"choices_not_array", "data: {\"choices\":{\"delta\":{}}}\n\n" DONE, 0, LLM_STREAM_MALFORMED, "", NULL},
    {"content_not_string", "data: {\"choices\":[{\"delta\":{\"content\":5}}]}\n\n" DONE, 0, LLM_STREAM_MALFORMED, "", NULL},
    {"data_not_object", "data: [1,2]\n\n" DONE, 0, LLM_STREAM_MALFORMED, "", NULL},
    {"error_object", "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n", 0,
     LLM_STREAM_UPSTREAM_ERROR, "", NULL},
    {"error_event_type", "event: error\ndata: {\"message\":\"x\"}\n\n", 0, LLM_STREAM_UPSTREAM_ERROR, "", NULL},
    {"usage_chunk_ignored", CHUNK("{\"content\":\"u\"}") "data: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n" DONE, 0,
     LLM_STREAM_DONE, "u", NULL},
    {"second_choice_ignored",
     "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"A\"}},{\"index\":1,\"delta\":{\"content\":\"B\"}}]}\n\n" DONE,
     0, LLM_STREAM_DONE, "A", NULL},
    {"null_content", "data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\n" CHUNK("{\"content\":\"n\"}") DONE,
     0, LLM_STREAM_DONE, "n", NULL},
    {"message_in_chunk", "data: {\"choices\":[{\"message\":{\"content\":\"whole\"},\"finish_reason\":\"stop\"}]}\n\n" DONE, 0,
     LLM_STREAM_DONE, "whole", "stop"},
    {"utf8_raw_and_escaped",
     CHUNK("{\"content\":\"r\xc3\xa4k \xe2\x80\x94 \xf0\x9f\x98\x80\"}") CHUNK("{\"content\":\" \\u00e5\\ud83d\\ude00\"}") DONE,
     0, LLM_STREAM_DONE, "r\xc3\xa4k \xe2\x80\x94 \xf0\x9f\x98\x80 \xc3\xa5\xf0\x9f\x98\x80", NULL},
    {"invalid_utf8_in_json", "data: {\"choices\":[{\"delta\":{\"content\":\"\xc3\"}}]}\n\n" DONE, 0, LLM_STREAM_MALFORMED, "",
     NULL},
    {"injection_stays_text", CHUNK("{\"content\":\"hi\\n\\nevent: alert\\ndata: {}\\n\\n\"}") DONE, 0, LLM_STREAM_DONE,
     "hi\n\nevent: alert\ndata: {}\n\n", NULL},
    {"bom_then_stream", "\xef\xbb\xbf" CHUNK("{\"content\":\"b\"}") DONE, 0, LLM_STREAM_DONE, "b", NULL},
    {"empty_body", "", 0, LLM_STREAM_TRUNCATED, "", NULL},
    {"blank_body", "\n\n\r\n", 0, LLM_STREAM_TRUNCATED, "", NULL},
    {"json_body",
     "{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
     "\"content\":\"{\\\"suggestions\\\":[\\\"a\\\"]}\"},\"finish_reason\":\"stop\"}],\"usage\":{}}",
     0, LLM_STREAM_DONE, "{\"suggestions\":[\"a\"]}", "stop"},
    {"json_body_bom_ws", "\xef\xbb\xbf \r\n {\"choices\":[{\"message\":{\"content\":\"w\"}}]}\n", 0, LLM_STREAM_DONE, "w", NULL},
    {"json_body_no_choices", "{\"id\":\"x\"}", 0, LLM_STREAM_MALFORMED, "", NULL},
    {"json_body_error", "{\"error\":{\"message\":\"bad key\"}}", 0, LLM_STREAM_UPSTREAM_ERROR, "", NULL},
    {"json_body_truncated", "{\"choices\":[{\"message\":{\"content\":\"w", 0, LLM_STREAM_TRUNCATED, "", NULL},
    {"json_body_bad", "{\"choices\":\"nope\"}", 0, LLM_STREAM_MALFORMED, "", NULL},
    {"nul_byte_in_event", "data: {\"choices\":[{\"delta\":{\"content\":\"a\0b\"}}]}\n\n" DONE, 60, LLM_STREAM_MALFORMED, "", NULL},
};
#define N_CASES (sizeof cases / sizeof cases[0])

static size_t case_len(const struct scase *c) { return c->len ? c->len : strlen(c->body); }

struct outcome {
    enum llm_stream_status st;
    char content[512];
    char finish[32];
};

/* Feeds body in pieces ending at the given cut positions (ascending, within len). */
static void run_split(const char *body, size_t len, const size_t *cuts, size_t n_cuts, struct outcome *o)
{
    struct llm_stream *s = llm_stream_new(0, 0);
    assert_non_null(s);
    size_t at = 0;
    enum llm_stream_status st = LLM_STREAM_MORE;
    for (size_t i = 0; i <= n_cuts; i++) {
        size_t end = i < n_cuts ? cuts[i] : len;
        st = llm_stream_feed(s, body + at, end - at);
        at = end;
    }
    if (st == LLM_STREAM_MORE || st == LLM_STREAM_DONE)
        st = llm_stream_finish(s);
    o->st = st;
    size_t cl, cl2;
    const char *c = llm_stream_content(s, &cl);
    /* finishing again (or feeding after the end) changes nothing */
    assert_int_equal(llm_stream_finish(s), st);
    assert_int_equal(llm_stream_feed(s, "data: {\"choices\":[{\"delta\":{\"content\":\"more\"}}]}\n\n", 49), st);
    c = llm_stream_content(s, &cl2);
    assert_int_equal(cl, cl2);
    assert_true(cl < sizeof o->content);
    memcpy(o->content, c, cl + 1);
    const char *f = llm_stream_finish_reason(s);
    snprintf(o->finish, sizeof o->finish, "%s", f ? f : "");
    llm_stream_free(s);
}

static void test_cases_whole(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        struct outcome o;
        run_split(cases[i].body, case_len(&cases[i]), NULL, 0, &o);
        if (o.st != cases[i].want)
            fail_msg("%s: status %s, expected %s", cases[i].name, llm_stream_status_name(o.st),
                     llm_stream_status_name(cases[i].want));
        if (strcmp(o.content, cases[i].content) != 0)
            fail_msg("%s: content \"%s\", expected \"%s\"", cases[i].name, o.content, cases[i].content);
        if (strcmp(o.finish, cases[i].finish ? cases[i].finish : "") != 0)
            fail_msg("%s: finish_reason \"%s\"", cases[i].name, o.finish);
    }
}

/* Every two-piece split gives the same result as the whole body (covers a cut inside "\r\n",
 * inside "data:", inside every UTF-8 sequence and inside the BOM). */
static void test_every_single_cut(void **state)
{
    (void)state;
    for (size_t i = 0; i < N_CASES; i++) {
        size_t len = case_len(&cases[i]);
        for (size_t cut = 0; cut <= len; cut++) {
            struct outcome o;
            run_split(cases[i].body, len, &cut, 1, &o);
            if (o.st != cases[i].want || strcmp(o.content, cases[i].content) != 0)
                fail_msg("%s: cut at %zu gives %s \"%s\"", cases[i].name, cut, llm_stream_status_name(o.st), o.content);
        }
    }
}

/* Random splits into many pieces (1-byte pieces included), fixed seed: deterministic. */
static void test_random_splits(void **state)
{
    (void)state;
    unsigned seed = 12345;
    for (size_t i = 0; i < N_CASES; i++) {
        size_t len = case_len(&cases[i]);
        for (int round = 0; round < 200; round++) {
            size_t cuts[64], n = 0, at = 0;
            while (n < 64) {
                at += 1 + (size_t)rand_r(&seed) % (round % 3 == 0 ? 2 : 12);
                if (at >= len)
                    break;
                cuts[n++] = at;
            }
            struct outcome o;
            run_split(cases[i].body, len, cuts, n, &o);
            if (o.st != cases[i].want || strcmp(o.content, cases[i].content) != 0 ||
                strcmp(o.finish, cases[i].finish ? cases[i].finish : "") != 0)
                fail_msg("%s: round %d split into %zu pieces gives %s \"%s\"", cases[i].name, round, n + 1,
                         llm_stream_status_name(o.st), o.content);
        }
    }
}

static void test_done_reported_by_feed(void **state)
{
    (void)state;
    struct llm_stream *s = llm_stream_new(0, 0);
    assert_int_equal(llm_stream_feed(s, CHUNK("{\"content\":\"a\"}"), strlen(CHUNK("{\"content\":\"a\"}"))), LLM_STREAM_MORE);
    assert_int_equal(llm_stream_feed(s, "data: [DO", 9), LLM_STREAM_MORE);
    /* an event is dispatched at the blank line that ends it, as in the SSE spec */
    assert_int_equal(llm_stream_feed(s, "NE]\n", 4), LLM_STREAM_MORE);
    assert_int_equal(llm_stream_feed(s, "\n", 1), LLM_STREAM_DONE);
    /* later bytes are ignored, even broken ones */
    assert_int_equal(llm_stream_feed(s, "\ndata: {{{\n\n", 12), LLM_STREAM_DONE);
    assert_int_equal(llm_stream_finish(s), LLM_STREAM_DONE);
    assert_string_equal(llm_stream_content(s, NULL), "a");
    assert_int_equal(llm_stream_is_sse(s), 1);
    llm_stream_free(s);
}

static void test_errors_are_sticky(void **state)
{
    (void)state;
    struct llm_stream *s = llm_stream_new(0, 0);
    assert_int_equal(llm_stream_feed(s, "data: {nope}\n\n", 14), LLM_STREAM_MALFORMED);
    const char *good = CHUNK("{\"content\":\"a\"}") DONE;
    assert_int_equal(llm_stream_feed(s, good, strlen(good)), LLM_STREAM_MALFORMED);
    assert_int_equal(llm_stream_finish(s), LLM_STREAM_MALFORMED);
    assert_string_equal(llm_stream_content(s, NULL), "");
    llm_stream_free(s);
}

static void test_caps(void **state)
{
    (void)state;
    struct {
        size_t max_event, max_content;
        const char *body;
        enum llm_stream_status want;
    } t[] = {
        /* content over its cap: fail, never truncate */
        {0, 4, CHUNK("{\"content\":\"abc\"}") CHUNK("{\"content\":\"de\"}") DONE, LLM_STREAM_TOO_LARGE},
        {0, 5, CHUNK("{\"content\":\"abc\"}") CHUNK("{\"content\":\"de\"}") DONE, LLM_STREAM_DONE},
        /* one line over the event cap */
        {40, 0, "data: {\"choices\":[{\"delta\":{\"content\":\"0123456789\"}}]}\n\n", LLM_STREAM_TOO_LARGE},
        /* many small lines of one event over the cap */
        {30, 0, "data: 1\ndata: 2\ndata: 3\ndata: 4\ndata: 5\ndata: 6\ndata: 7\ndata: 8\ndata: 9\ndata: 10\ndata: 11\ndata: 12\ndata: 13\ndata: 14\ndata: 15\ndata: 16\n\n",
         LLM_STREAM_TOO_LARGE},
        /* a JSON body over the cap */
        {20, 0, "{\"choices\":[{\"message\":{\"content\":\"long enough\"}}]}", LLM_STREAM_TOO_LARGE},
        /* a body longer than the event cap, fed whole, whose every line fits (regression: the
         * format sniffing once buffered the whole first feed against the event cap) */
        {64, 0,
         "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n"
         "data: [DONE]\n\n",
         LLM_STREAM_DONE},
        /* endless comment line: still capped */
        {16, 0, ": aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", LLM_STREAM_TOO_LARGE},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        struct llm_stream *s = llm_stream_new(t[i].max_event, t[i].max_content);
        enum llm_stream_status st = llm_stream_feed(s, t[i].body, strlen(t[i].body));
        if (st == LLM_STREAM_MORE || st == LLM_STREAM_DONE)
            st = llm_stream_finish(s);
        if (st != t[i].want)
            fail_msg("cap case %zu: %s", i, llm_stream_status_name(st));
        llm_stream_free(s);
    }
}

static void test_status_names(void **state)
{
    (void)state;
    const char *want[] = {"more", "done", "malformed", "too_large", "truncated", "upstream_error", "nomem"};
    for (int i = 0; i <= LLM_STREAM_NOMEM; i++)
        assert_string_equal(llm_stream_status_name((enum llm_stream_status)i), want[i]);
    llm_stream_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases_whole),      cmocka_unit_test(test_every_single_cut),
        cmocka_unit_test(test_random_splits),    cmocka_unit_test(test_done_reported_by_feed),
        cmocka_unit_test(test_errors_are_sticky), cmocka_unit_test(test_caps),
        cmocka_unit_test(test_status_names),
    };
    return cmocka_run_group_tests_name("llm_stream", tests, NULL, NULL);
}
