/* Unit tests for src/quality.c: since parsing, figures and rates, counter tables, reply clustering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/error.h"
#include "tandem/quality.h"
#include "tandem/text.h"

/* Expected values from Python's calendar.timegm. */
static const struct {
    const char *in;
    int ok;
    int64_t ms;
} sinces[] = {
    {"0", 1, 0},
    {"1795392000000", 1, 1795392000000LL},
    {"2026-11-23", 1, 1795392000000LL},
    {"2026-11-23T10:00", 1, 1795428000000LL},
    {"2026-11-23T10:00:00Z", 1, 1795428000000LL},
    {"2026-11-23t10:00:00z", 1, 1795428000000LL},
    {"2026-11-23 10:00:00", 1, 1795428000000LL},
    {"2026-11-23T10:00:00.5Z", 1, 1795428000500LL},
    {"2026-11-23T10:00:00.123456Z", 1, 1795428000123LL},
    {"2026-11-23T10:00:00+01:00", 1, 1795424400000LL},
    {"2026-11-23T10:00:00 01:00", 1, 1795424400000LL}, /* '+' decoded to ' ' in a query string */
    {"2026-11-23T10:00:00-00:30", 1, 1795429800000LL},
    {"2026-11-23T10:00:00+0100", 1, 1795424400000LL},
    {"2024-02-29", 1, 1709164800000LL},
    {"1970-01-01", 1, 0},
    {"", 0, 0},
    {"yesterday", 0, 0},
    {"2023-02-29", 0, 0},
    {"2026-13-01", 0, 0},
    {"2026-04-31", 0, 0},
    {"2026-11-23T24:00", 0, 0},
    {"2026-11-23T10:60", 0, 0},
    {"2026-11-23T10", 0, 0},
    {"2026-11-23T10:00:00.Z", 0, 0},
    {"2026-11-23T10:00:00+25:00", 0, 0},
    {"2026-11-23X", 0, 0},
    {"1969-12-31", 0, 0},
    {"26-11-23", 0, 0},
    {"-5", 0, 0},
    {"1234567890123456", 0, 0},
    {"17e12", 0, 0},
};

static void test_parse_since(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof sinces / sizeof sinces[0]; i++) {
        int64_t ms = -42;
        int rc = quality_parse_since(sinces[i].in, &ms);
        if (sinces[i].ok && (rc != 0 || ms != sinces[i].ms))
            fail_msg("'%s': rc %d ms %lld, want %lld", sinces[i].in, rc, (long long)ms, (long long)sinces[i].ms);
        if (!sinces[i].ok && rc == 0)
            fail_msg("'%s' accepted as %lld", sinces[i].in, (long long)ms);
    }
    assert_int_not_equal(quality_parse_since(NULL, NULL), 0);
}

static double num(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    assert_true(json_is_number(v));
    return json_number_value(v);
}

static void test_figures_json(void **state)
{
    (void)state;
    struct quality_figures f = {.shown = 40, .accepted = 6, .edited = 3, .rejected = 3, .dist_sum = 90,
                                .dist_n = 9, .ratio_sum = 1800, .tta_sum = 12000, .tta_n = 4};
    json_t *o = quality_figures_json(&f, 1);
    assert_non_null(o);
    assert_true(num(o, "shown") == 40);
    assert_true(num(o, "actions") == 12);
    assert_true(fabs(num(o, "acceptance_rate") - 0.75) < 1e-9);   /* (6 + 3) / 12 */
    assert_true(fabs(num(o, "used_per_shown") - 0.225) < 1e-9);   /* 9 / 40 */
    assert_true(fabs(num(o, "mean_edit_distance") - 10) < 1e-9); /* 90 / 9 */
    assert_true(fabs(num(o, "mean_edit_ratio") - 0.2) < 1e-9);   /* 1800 / 1000 / 9 */
    assert_true(fabs(num(o, "mean_time_to_first_action_ms") - 3000) < 1e-9);
    json_decref(o);

    /* nothing to divide by: null, never 0 or NaN; shown left out in since mode */
    struct quality_figures z = {0};
    o = quality_figures_json(&z, 0);
    static const char *const nulls[] = {"shown", "acceptance_rate", "used_per_shown", "mean_edit_distance",
                                        "mean_edit_ratio", "mean_time_to_first_action_ms"};
    for (size_t i = 0; i < sizeof nulls / sizeof nulls[0]; i++)
        if (!json_is_null(json_object_get(o, nulls[i])))
            fail_msg("%s should be null", nulls[i]);
    assert_true(num(o, "actions") == 0);
    json_decref(o);

    /* rounded to 3 decimals */
    struct quality_figures t = {.accepted = 1, .rejected = 2};
    o = quality_figures_json(&t, 1);
    assert_true(num(o, "acceptance_rate") == 0.333);
    json_decref(o);
}

static void test_table(void **state)
{
    (void)state;
    struct quality_table *t = quality_table_new();
    assert_non_null(t);
    static const struct {
        const char *field;
        long long v;
    } fields[] = {
        {"refund-status|shown", 10}, {"refund-status|accepted", 2}, {"a|b|rejected", 1}, {"refund-status|shown", 5},
        {"no-separator", 7},         {"refund-status|bogus", 3},    {"|edited", 4},      {"x|", 1},
    };
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        assert_int_equal(quality_table_add_field(t, fields[i].field, strlen(fields[i].field), fields[i].v), T_OK);
    const struct quality_figures *f = quality_table_find(t, "refund-status");
    assert_non_null(f);
    assert_int_equal(f->shown, 15);
    assert_int_equal(f->accepted, 2);
    f = quality_table_find(t, "a|b"); /* split at the last '|' */
    assert_non_null(f);
    assert_int_equal(f->rejected, 1);
    f = quality_table_find(t, ""); /* an empty name is a name */
    assert_non_null(f);
    assert_int_equal(f->edited, 4);
    assert_null(quality_table_find(t, "no-separator"));
    assert_null(quality_table_find(t, "x")); /* empty figure: ignored */
    assert_int_equal(quality_table_count(t), 3);
    assert_string_equal(quality_table_name(t, 0), "refund-status");
    /* many names: the index grows */
    char name[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(name, sizeof name, "kb-%d", i);
        assert_int_equal(quality_table_add(t, name, strlen(name), "rejected", i), T_OK);
    }
    assert_int_equal(quality_table_count(t), 5003);
    assert_int_equal(quality_table_find(t, "kb-4321")->rejected, 4321);
    quality_table_free(t);
    quality_table_free(NULL);
}

static void test_jaccard(void **state)
{
    (void)state;
    uint64_t a[] = {1, 2, 3, 4}, b[] = {2, 3, 4, 5}, c[] = {9};
    assert_true(fabs(quality_jaccard(a, 4, b, 4) - 0.6) < 1e-9);
    assert_true(quality_jaccard(a, 4, a, 4) == 1.0);
    assert_true(quality_jaccard(a, 4, c, 1) == 0.0);
    assert_true(quality_jaccard(a, 0, c, 0) == 0.0);
}

static void test_cluster(void **state)
{
    (void)state;
    static const char *const texts[] = {
        /* 0-4: one macro, with other names and numbers and small rewordings */
        "Hi Anna, your parcel is delayed at the carrier; we refunded the shipping fee of 4.95.",
        "Hi Bob, your parcel is delayed at the carrier; we refunded the shipping fee of 6.50.",
        "Hi Anna, your parcel is delayed at the carrier; we refunded the shipping fee of 4.95.",
        "hi CARLA!! Your parcel is DELAYED at the carrier - we refunded the shipping fee (3.00)",
        "Hi Dan, your parcel is delayed with the carrier; we have refunded the shipping fee.",
        /* 5-7: another */
        "You can download your invoice from the orders page in your account.",
        "Your invoice can be downloaded from the orders page of your account.",
        "You can download the invoice on the orders page in your account settings.",
        /* 8-9: too short to be a macro */
        "ok thanks!",
        "Thanks!",
        /* 10: alone */
        "We opened a warranty claim with the manufacturer for your broken blender.",
    };
    size_t n = sizeof texts / sizeof texts[0];
    struct quality_text t[16];
    for (size_t i = 0; i < n; i++)
        t[i] = (struct quality_text){texts[i], strlen(texts[i]), "en", i == 6 || i == 7 ? 1u : 0u};
    struct quality_cluster *c = NULL;
    size_t nc = 99;
    assert_int_equal(quality_cluster_texts(t, n, 3, &c, &nc), T_OK);
    assert_int_equal(nc, 2);
    assert_int_equal(c[0].count, 5);
    assert_int_equal(c[0].by_source[0], 5);
    assert_int_equal(c[0].by_source[1], 0);
    /* examples are distinct texts (0 and 2 are the same), first seen first */
    assert_int_equal(c[0].n_examples, 3);
    assert_int_equal(c[0].examples[0], 0);
    for (size_t k = 0; k < c[0].n_examples; k++)
        assert_int_not_equal(c[0].examples[k], 2);
    assert_int_equal(c[1].count, 3);
    assert_int_equal(c[1].by_source[1], 2);
    for (size_t k = 0; k < c[1].n_examples; k++)
        assert_true(c[1].examples[k] >= 5 && c[1].examples[k] <= 7);
    assert_true(c[0].n_terms >= QUALITY_CLUSTER_MIN_TERMS);
    free(c);

    /* min_count filters; nothing in, nothing out */
    assert_int_equal(quality_cluster_texts(t, n, 4, &c, &nc), T_OK);
    assert_int_equal(nc, 1);
    free(c);
    assert_int_equal(quality_cluster_texts(t, 0, 1, &c, &nc), T_OK);
    assert_int_equal(nc, 0);
    free(c);
    /* min_count 1: singletons too, but never the too-short texts */
    assert_int_equal(quality_cluster_texts(t, n, 1, &c, &nc), T_OK);
    assert_int_equal(nc, 3);
    for (size_t i = 0; i < nc; i++)
        for (size_t k = 0; k < c[i].n_examples; k++)
            assert_true(c[i].examples[k] != 8 && c[i].examples[k] != 9);
    free(c);
}

static int teardown(void **state)
{
    (void)state;
    text_thread_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_since), cmocka_unit_test(test_figures_json), cmocka_unit_test(test_table),
        cmocka_unit_test(test_jaccard),     cmocka_unit_test(test_cluster),
    };
    return cmocka_run_group_tests(tests, NULL, teardown);
}
