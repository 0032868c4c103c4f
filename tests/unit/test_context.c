/* Unit tests for context: id and stream-id validation, roles, UTF-8 sanitising, the context JSON. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/context.h"
#include "tandem/error.h"

/* ---- ids ---- */

static void test_valid_id(void **state)
{
    (void)state;
    char max[ID_MAX_LEN + 2];
    memset(max, 'a', sizeof max);
    max[ID_MAX_LEN] = '\0'; /* 128 chars */
    char over[ID_MAX_LEN + 2];
    memset(over, 'b', sizeof over);
    over[ID_MAX_LEN + 1] = '\0'; /* 129 chars */
    struct {
        const char *id;
        int ok;
    } cases[] = {
        {"a", 1},
        {"c-42", 1},
        {"A.b_C-9", 1},
        {"...", 1},
        {"0", 1},
        {max, 1},
        {over, 0},
        {"", 0},
        {NULL, 0},
        {"a:*", 0},
        {"a:b", 0},
        {"*", 0},
        {"x\r\nFLUSHALL", 0},
        {"a\n", 0},
        {"a b", 0},
        {" a", 0},
        {"a\tb", 0},
        {"caf\xc3\xa9", 0},  /* non-ASCII */
        {"\xff", 0},
        {"a/b", 0},
        {"{a}", 0},
        {"a?b", 0},
        {"a%20", 0},
        {"a\"", 0},
        {"a\\b", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (context_valid_id(cases[i].id) != cases[i].ok)
            fail_msg("context_valid_id(case %zu '%s') != %d", i, cases[i].id ? cases[i].id : "(null)", cases[i].ok);
}

static void test_valid_stream_id(void **state)
{
    (void)state;
    char longest[STREAM_ID_MAX];
    memset(longest, '1', sizeof longest);
    longest[STREAM_ID_MAX - 1] = '\0'; /* 47 chars: fits with its NUL */
    char too_long[STREAM_ID_MAX + 1];
    memset(too_long, '1', sizeof too_long);
    too_long[STREAM_ID_MAX] = '\0';
    struct {
        const char *id;
        int ok;
    } cases[] = {
        {"0", 1},
        {"0-0", 1},
        {"1732368000000-0", 1},
        {"1732368000000-15", 1},
        {"1732368000000", 1},
        {longest, 1},
        {too_long, 0},
        {"", 0},
        {NULL, 0},
        {"-", 0},
        {"-1", 0},
        {"1-", 0},
        {"1--2", 0},
        {"1-2-3", 0},
        {"a-1", 0},
        {"1-a", 0},
        {" 1-0", 0},
        {"1-0 ", 0},
        {"+", 0},
        {"$", 0},
        {"1.5-0", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (context_valid_stream_id(cases[i].id) != cases[i].ok)
            fail_msg("context_valid_stream_id('%s') != %d", cases[i].id ? cases[i].id : "(null)", cases[i].ok);
}

static void test_stream_id_ms(void **state)
{
    (void)state;
    struct {
        const char *id;
        int64_t ms;
    } cases[] = {
        {"1732368000123-7", INT64_C(1732368000123)},
        {"1732368000123", INT64_C(1732368000123)},
        {"0-0", 0},
        {"42-1", 42},
        {"", -1},
        {NULL, -1},
        {"abc", -1},
        {"12x-0", -1},
        {"-5", -1},
        {" 1-0", -1},
        {"18446744073709551615-0", -1}, /* does not fit int64 */
        {"99999999999999999999999-0", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t got = context_stream_id_ms(cases[i].id);
        if (got != cases[i].ms)
            fail_msg("context_stream_id_ms('%s') = %lld, expected %lld", cases[i].id ? cases[i].id : "(null)",
                     (long long)got, (long long)cases[i].ms);
    }
}

/* ---- roles ---- */

static void test_roles(void **state)
{
    (void)state;
    struct {
        const char *name;
        enum msg_role role;
    } cases[] = {
        {"customer", ROLE_CUSTOMER}, {"agent", ROLE_AGENT}, {"bot", ROLE_BOT},     {"system", ROLE_SYSTEM},
        {"note", ROLE_NOTE},         {"Customer", ROLE_OTHER}, {"AGENT", ROLE_OTHER}, {"", ROLE_OTHER},
        {NULL, ROLE_OTHER},          {"other", ROLE_OTHER}, {"customers", ROLE_OTHER}, {"cust", ROLE_OTHER},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (context_role_from_name(cases[i].name) != cases[i].role)
            fail_msg("role of '%s'", cases[i].name ? cases[i].name : "(null)");
    struct {
        enum msg_role role;
        const char *name;
    } names[] = {{ROLE_CUSTOMER, "customer"}, {ROLE_AGENT, "agent"}, {ROLE_BOT, "bot"},
                 {ROLE_SYSTEM, "system"},     {ROLE_NOTE, "note"},   {ROLE_OTHER, "other"},
                 {(enum msg_role)99, "other"}, {(enum msg_role)-1, "other"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_string_equal(context_role_name(names[i].role), names[i].name);
}

/* ---- UTF-8 ---- */

#define FFFD "\xEF\xBF\xBD"

static void test_strdup_utf8(void **state)
{
    (void)state;
    struct {
        const char *in;
        size_t n;
        const char *out;
    } cases[] = {
        /* valid: passed through byte for byte */
        {"", 0, ""},
        {"plain ascii", 11, "plain ascii"},
        {"h\xC3\xA9llo", 6, "h\xC3\xA9llo"},              /* U+00E9 */
        {"\xE2\x82\xAC 5", 5, "\xE2\x82\xAC 5"},          /* U+20AC */
        {"\xF0\x9F\x98\x80", 4, "\xF0\x9F\x98\x80"},      /* U+1F600 */
        {"\xEF\xBF\xBF", 3, "\xEF\xBF\xBF"},              /* U+FFFF */
        {"\xF4\x8F\xBF\xBF", 4, "\xF4\x8F\xBF\xBF"},      /* U+10FFFF, the last one */
        {"\xED\x9F\xBF", 3, "\xED\x9F\xBF"},              /* U+D7FF, just below surrogates */
        {"\xC2\x80", 2, "\xC2\x80"},                      /* U+0080, smallest 2-byte */
        {"\xE0\xA0\x80", 3, "\xE0\xA0\x80"},              /* U+0800, smallest 3-byte */
        {"\xF0\x90\x80\x80", 4, "\xF0\x90\x80\x80"},      /* U+10000, smallest 4-byte */
        /* invalid bytes */
        {"\xFF", 1, FFFD},
        {"a\x80" "b", 3, "a" FFFD "b"},                   /* lone continuation */
        {"\xFE\xFF", 2, FFFD FFFD},
        {"\xF5\x80\x80\x80", 4, FFFD FFFD FFFD FFFD},     /* lead byte past U+10FFFF */
        /* overlongs */
        {"\xC0\xAF", 2, FFFD FFFD},                       /* '/' as 2 bytes */
        {"\xC1\xBF", 2, FFFD FFFD},
        {"\xE0\x80\xAF", 3, FFFD FFFD FFFD},
        {"\xE0\x9F\xBF", 3, FFFD FFFD FFFD},
        {"\xF0\x8F\xBF\xBF", 4, FFFD FFFD FFFD FFFD},
        /* surrogates */
        {"\xED\xA0\x80", 3, FFFD FFFD FFFD},              /* U+D800 */
        {"\xED\xBF\xBF", 3, FFFD FFFD FFFD},              /* U+DFFF */
        {"x\xED\xB0\x80y", 5, "x" FFFD FFFD FFFD "y"},
        /* beyond U+10FFFF */
        {"\xF4\x90\x80\x80", 4, FFFD FFFD FFFD FFFD},
        /* NUL bytes */
        {"a\0b", 3, "a" FFFD "b"},
        {"\0", 1, FFFD},
        /* truncated at the end of the input (n cuts a valid sequence) */
        {"ok\xE2\x82\xAC", 4, "ok" FFFD FFFD},
        {"\xF0\x9F\x98\x80", 3, FFFD FFFD FFFD},
        /* only n bytes are read: the rest of the C string is ignored */
        {"abcdef", 3, "abc"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct arena a;
        arena_init(&a);
        char *out = context_strdup_utf8(&a, cases[i].in, cases[i].n);
        assert_non_null(out);
        if (strcmp(out, cases[i].out) != 0)
            fail_msg("case %zu: got %zu bytes, expected %zu", i, strlen(out), strlen(cases[i].out));
        /* always usable as a JSON string */
        json_t *j = json_string(out);
        if (!j)
            fail_msg("case %zu: output is not valid UTF-8", i);
        json_decref(j);
        arena_cleanup(&a);
    }
}

/* ---- JSON of GET /v1/conversations/{ID}/context ---- */

static struct ctx_kv *kv_array(struct arena *a, const char *const *pairs, size_t n)
{
    struct ctx_kv *kv = arena_alloc(a, n * sizeof *kv);
    for (size_t i = 0; i < n; i++) {
        kv[i].key = arena_strdup(a, pairs[2 * i]);
        kv[i].value = arena_strdup(a, pairs[2 * i + 1]);
    }
    return kv;
}

static struct context *build_context(void)
{
    struct context *c = context_new("c-42");
    assert_non_null(c);
    c->n_messages = 3;
    c->messages = arena_alloc(&c->arena, 3 * sizeof *c->messages);
    memset(c->messages, 0, 3 * sizeof *c->messages);
    strcpy(c->messages[0].id, "1732368000000-0");
    c->messages[0].role = ROLE_CUSTOMER;
    c->messages[0].role_name = "customer";
    c->messages[0].text = arena_strdup(&c->arena, "I was charged \"twice\"\nfor order #123 \xE2\x82\xAC");
    c->messages[0].author = NULL;
    c->messages[0].ts_ms = INT64_C(1732368000000);
    strcpy(c->messages[1].id, "1732368005000-0");
    c->messages[1].role = ROLE_AGENT;
    c->messages[1].role_name = "agent";
    c->messages[1].text = "Let me check.";
    c->messages[1].author = arena_strdup(&c->arena, "Sam");
    c->messages[1].ts_ms = INT64_C(1732368004999);
    strcpy(c->messages[2].id, "1732368009000-1");
    c->messages[2].role = ROLE_OTHER;
    c->messages[2].role_name = "supervisor";
    c->messages[2].text = "";
    c->messages[2].ts_ms = INT64_C(1732368009000);
    strcpy(c->newest_id, "1732368009000-1");
    const char *meta[] = {"customer_id", "cu-1", "brand", "acme", "subject", "Double charge"};
    c->meta = kv_array(&c->arena, meta, 3);
    c->n_meta = 3;
    c->customer_id = "cu-1";
    const char *prof[] = {"name", "Anna Berg", "tier", "gold"};
    c->profile = kv_array(&c->arena, prof, 2);
    c->n_profile = 2;
    c->n_history = 2;
    c->history = arena_alloc(&c->arena, 2 * sizeof *c->history);
    strcpy(c->history[0].id, "1731000000000-0");
    c->history[0].ts_ms = INT64_C(1731000000000);
    c->history[0].conv_id = "c-41";
    c->history[0].summary = "Asked about refund";
    c->history[0].outcome = "resolved";
    c->history[0].tags = " refund , payments,, ,vip\t,";
    strcpy(c->history[1].id, "1730000000000-0");
    c->history[1].ts_ms = INT64_C(1730000000000);
    c->history[1].conv_id = c->history[1].summary = c->history[1].outcome = c->history[1].tags = "";
    return c;
}

static json_t *render(const struct context *c)
{
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(context_render_json(c, &b), T_OK);
    json_error_t jerr;
    json_t *root = json_loadb(b.data, b.len, 0, &jerr);
    if (!root)
        fail_msg("render output is not JSON: %s: %s", jerr.text, b.data);
    buf_cleanup(&b);
    return root;
}

static void test_render_json_full(void **state)
{
    (void)state;
    struct context *c = build_context();
    json_t *root = render(c);
    assert_string_equal(json_string_value(json_object_get(root, "conversation_id")), "c-42");
    assert_string_equal(json_string_value(json_object_get(root, "based_on")), "1732368009000-1");

    json_t *msgs = json_object_get(root, "messages");
    assert_true(json_is_array(msgs));
    assert_int_equal(json_array_size(msgs), 3);
    json_t *m0 = json_array_get(msgs, 0), *m1 = json_array_get(msgs, 1), *m2 = json_array_get(msgs, 2);
    assert_string_equal(json_string_value(json_object_get(m0, "id")), "1732368000000-0");
    assert_string_equal(json_string_value(json_object_get(m0, "role")), "customer");
    assert_string_equal(json_string_value(json_object_get(m0, "text")),
                        "I was charged \"twice\"\nfor order #123 \xE2\x82\xAC");
    assert_true(json_is_integer(json_object_get(m0, "ts")));
    assert_int_equal(json_integer_value(json_object_get(m0, "ts")), INT64_C(1732368000000));
    assert_null(json_object_get(m0, "author")); /* only when set */
    assert_string_equal(json_string_value(json_object_get(m1, "author")), "Sam");
    assert_int_equal(json_integer_value(json_object_get(m1, "ts")), INT64_C(1732368004999));
    assert_string_equal(json_string_value(json_object_get(m2, "role")), "supervisor");
    assert_string_equal(json_string_value(json_object_get(m2, "text")), "");

    json_t *meta = json_object_get(root, "meta");
    assert_true(json_is_object(meta));
    assert_int_equal(json_object_size(meta), 3);
    assert_string_equal(json_string_value(json_object_get(meta, "brand")), "acme");
    assert_string_equal(json_string_value(json_object_get(meta, "subject")), "Double charge");

    json_t *cust = json_object_get(root, "customer");
    assert_true(json_is_object(cust));
    assert_string_equal(json_string_value(json_object_get(cust, "id")), "cu-1");
    json_t *prof = json_object_get(cust, "profile");
    assert_string_equal(json_string_value(json_object_get(prof, "name")), "Anna Berg");
    assert_string_equal(json_string_value(json_object_get(prof, "tier")), "gold");
    json_t *hist = json_object_get(cust, "history");
    assert_int_equal(json_array_size(hist), 2);
    json_t *h0 = json_array_get(hist, 0);
    assert_string_equal(json_string_value(json_object_get(h0, "id")), "1731000000000-0");
    assert_int_equal(json_integer_value(json_object_get(h0, "ts")), INT64_C(1731000000000));
    assert_string_equal(json_string_value(json_object_get(h0, "conv_id")), "c-41");
    assert_string_equal(json_string_value(json_object_get(h0, "summary")), "Asked about refund");
    assert_string_equal(json_string_value(json_object_get(h0, "outcome")), "resolved");
    json_t *tags = json_object_get(h0, "tags");
    assert_true(json_is_array(tags));
    const char *want_tags[] = {"refund", "payments", "vip"}; /* split, trimmed, empties dropped */
    assert_int_equal(json_array_size(tags), 3);
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(json_string_value(json_array_get(tags, i)), want_tags[i]);
    json_t *h1 = json_array_get(hist, 1);
    assert_int_equal(json_array_size(json_object_get(h1, "tags")), 0);
    assert_string_equal(json_string_value(json_object_get(h1, "summary")), "");
    json_decref(root);
    context_free(c);
}

static void test_render_json_empty(void **state)
{
    (void)state;
    struct context *c = context_new("empty.conv");
    json_t *root = render(c);
    assert_string_equal(json_string_value(json_object_get(root, "conversation_id")), "empty.conv");
    assert_true(json_is_null(json_object_get(root, "based_on")));
    assert_int_equal(json_array_size(json_object_get(root, "messages")), 0);
    assert_true(json_is_array(json_object_get(root, "messages")));
    assert_true(json_is_object(json_object_get(root, "meta")));
    assert_int_equal(json_object_size(json_object_get(root, "meta")), 0);
    json_t *cust = json_object_get(root, "customer");
    assert_true(json_is_null(json_object_get(cust, "id")));
    assert_int_equal(json_object_size(json_object_get(cust, "profile")), 0);
    assert_int_equal(json_array_size(json_object_get(cust, "history")), 0);
    json_decref(root);
    context_free(c);
}

static void test_render_json_tags(void **state)
{
    (void)state;
    struct {
        const char *tags;
        const char *want[4];
        size_t n;
    } cases[] = {
        {"a,b", {"a", "b"}, 2},
        {"  a  ", {"a"}, 1},
        {"", {NULL}, 0},
        {",,,", {NULL}, 0},
        {"one tag with spaces", {"one tag with spaces"}, 1},
        {"x ,\ty, z\t", {"x", "y", "z"}, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct context *c = context_new("t");
        c->n_history = 1;
        c->history = arena_alloc(&c->arena, sizeof *c->history);
        strcpy(c->history[0].id, "1-0");
        c->history[0].ts_ms = 1;
        c->history[0].conv_id = c->history[0].summary = c->history[0].outcome = "";
        c->history[0].tags = cases[i].tags;
        json_t *root = render(c);
        json_t *tags = json_object_get(json_array_get(json_object_get(json_object_get(root, "customer"), "history"), 0),
                                       "tags");
        if (json_array_size(tags) != cases[i].n)
            fail_msg("tags '%s': %zu elements, expected %zu", cases[i].tags, json_array_size(tags), cases[i].n);
        for (size_t k = 0; k < cases[i].n; k++)
            assert_string_equal(json_string_value(json_array_get(tags, k)), cases[i].want[k]);
        json_decref(root);
        context_free(c);
    }
}

static void test_render_json_respects_cap(void **state)
{
    (void)state;
    struct context *c = build_context();
    struct buf b;
    buf_init(&b, 64);
    assert_int_equal(context_render_json(c, &b), T_ERR_TOO_LARGE);
    buf_cleanup(&b);
    context_free(c);
}

static void test_lookups_and_new(void **state)
{
    (void)state;
    struct context *c = build_context();
    assert_string_equal(context_meta(c, "brand"), "acme");
    assert_null(context_meta(c, "lang"));
    assert_string_equal(context_profile(c, "tier"), "gold");
    assert_null(context_profile(c, "brand"));
    context_free(c);
    context_free(NULL);
    /* an over-long id is cut to the buffer, never overflowing it */
    char longid[300];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = '\0';
    c = context_new(longid);
    assert_int_equal(strlen(c->conv_id), ID_MAX_LEN);
    context_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_id),
        cmocka_unit_test(test_valid_stream_id),
        cmocka_unit_test(test_stream_id_ms),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_strdup_utf8),
        cmocka_unit_test(test_render_json_full),
        cmocka_unit_test(test_render_json_empty),
        cmocka_unit_test(test_render_json_tags),
        cmocka_unit_test(test_render_json_respects_cap),
        cmocka_unit_test(test_lookups_and_new),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
