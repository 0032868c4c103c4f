/* Unit tests for json_io: bad input is the client's fault (400), a failed allocation is ours
 * (500) even when Jansson reports it as a syntax error; an encoding that lost an allocation is
 * no answer, never a malformed one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tandem/error.h"
#include "tandem/json_io.h"

static long fail_from = -1; /* the allocation number that starts failing; -1: never */
static int fail_once;       /* only that one fails; the ones after it succeed again */
static long count;

static void *failing_malloc(size_t n)
{
    if (fail_from >= 0) {
        long at = count++;
        if (fail_once ? at == fail_from : at >= fail_from)
            return NULL;
    }
    return malloc(n);
}

static int setup(void **state)
{
    (void)state;
    json_io_init_with(failing_malloc);
    fail_from = -1;
    fail_once = 0;
    count = 0;
    return 0;
}

static void test_valid_and_invalid(void **state)
{
    (void)state;
    json_t *o;
    json_error_t e;
    const char *ok = "{\"a\":[1,2,{\"b\":\"x\"}]}";
    assert_int_equal(json_parse(ok, strlen(ok), 0, &o, &e), T_OK);
    assert_true(json_is_object(o));
    json_decref(o);
    const char *bad[] = {"", "{", "{\"a\":1,}", "[1 2]", "nul", "{\"a\":1,\"a\":2}"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(json_parse(bad[i], strlen(bad[i]), JSON_REJECT_DUPLICATES, &o, &e), T_ERR_BAD_JSON);
        assert_null(o);
        assert_true(e.text[0] != '\0');
    }
    /* NULL text is the empty body: bad input, not a crash */
    assert_int_equal(json_parse(NULL, 5, 0, &o, &e), T_ERR_BAD_JSON);
}

/* Every allocation point of a parse failing in turn: each outcome is the object or NOMEM, never
 * BAD_JSON, since the text is valid. */
static void test_each_failed_allocation_is_nomem(void **state)
{
    (void)state;
    const char *text = "{\"conversation_id\":\"c-1\",\"list\":[\"a long enough string to need a buffer\","
                       "{\"k\":[1,2,3,4,5,6,7,8,9,10]}],\"x\":\"\\u00e9\\u4e2d\"}";
    int saw_nomem = 0, saw_ok = 0;
    for (long at = 0; at < 200; at++) {
        fail_from = at;
        count = 0;
        json_t *o;
        json_error_t e;
        int err = json_parse(text, strlen(text), JSON_REJECT_DUPLICATES, &o, &e);
        if (err == T_OK) {
            saw_ok = 1;
            json_decref(o);
            break; /* at is past the parse's last allocation */
        }
        assert_int_equal(err, T_ERR_NOMEM);
        saw_nomem = 1;
    }
    fail_from = -1;
    assert_true(saw_nomem);
    assert_true(saw_ok);

    /* Only one allocation failing, the ones after it succeeding: the lexer drops the character
     * whose append failed and goes on, so a result that is not NOMEM must equal the text's. */
    json_t *want;
    json_error_t e;
    assert_int_equal(json_parse(text, strlen(text), JSON_REJECT_DUPLICATES, &want, &e), T_OK);
    fail_once = 1;
    int saw_whole = 0;
    for (long at = 0; at < 200 && !saw_whole; at++) {
        fail_from = at;
        count = 0;
        json_t *o;
        int err = json_parse(text, strlen(text), JSON_REJECT_DUPLICATES, &o, &e);
        if (err == T_OK) {
            assert_true(json_equal(o, want));
            saw_whole = count <= at; /* past the parse's last allocation */
            json_decref(o);
        } else {
            assert_int_equal(err, T_ERR_NOMEM);
        }
    }
    fail_from = -1;
    assert_true(saw_whole);
    json_decref(want);
}

/* One allocation of an encoding failing (the ones after it succeed, as under memory pressure):
 * the answer is the exact text or NULL. Jansson alone drops the closing quote of a key whose
 * append failed and returns {"error":{"code:"... */
static void test_serialize_is_whole_or_nothing(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:{s:s,s:s},s:[i,s,f]}", "error", "code", "out_of_memory", "message",
                          "the server ran out of memory; retry later, after a while", "list", 1,
                          "a string long enough to make the buffer grow more than once or twice", 2.5);
    assert_non_null(o);
    char *want = json_serialize(o, JSON_COMPACT);
    assert_non_null(want);
    int saw_null = 0, saw_whole = 0;
    fail_once = 1;
    for (long at = 0; at < 64; at++) {
        fail_from = at;
        count = 0;
        char *got = json_serialize(o, JSON_COMPACT);
        if (got) {
            assert_string_equal(got, want);
            saw_whole |= count <= at; /* at is past the encoding's last allocation */
        } else {
            saw_null = 1;
        }
        free(got);
    }
    fail_from = -1;
    assert_true(saw_null);
    assert_true(saw_whole);
    free(want);
    json_decref(o);
}

/* One allocation of a copy failing: the copy has every member or is NULL. Jansson alone
 * returns the object without the key whose insert failed (a 200 without "suggestions"). */
static void test_copy_is_whole_or_nothing(void **state)
{
    (void)state;
    json_t *arr = json_pack("[s,s,s,s,s,s,s,s,s,s]", "a", "b", "c", "d", "e", "f", "g", "h", "i", "j");
    json_t *o = json_pack("{s:s,s:s,s:o,s:i,s:f,s:s,s:s,s:s,s:s,s:s}", "conversation_id", "c-1", "based_on",
                          "1-0", "suggestions", arr, "k", 3, "took_ms", 0.5, "e", "x", "f", "x", "g", "x", "h",
                          "x", "i", "x");
    assert_non_null(o);
    for (int which = 0; which < 2; which++) {
        json_t *src = which ? arr : o;
        int saw_null = 0, saw_whole = 0;
        fail_once = 1;
        for (long at = 0; at < 64; at++) {
            fail_from = at;
            count = 0;
            json_t *got = json_copy_whole(src);
            if (got) {
                assert_true(json_equal(got, src));
                saw_whole |= count <= at;
                json_decref(got);
            } else {
                saw_null = 1;
            }
        }
        fail_from = -1;
        assert_true(saw_null);
        assert_true(saw_whole);
    }
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_valid_and_invalid, setup),
        cmocka_unit_test_setup(test_each_failed_allocation_is_nomem, setup),
        cmocka_unit_test_setup(test_serialize_is_whole_or_nothing, setup),
        cmocka_unit_test_setup(test_copy_is_whole_or_nothing, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
