/* Unit tests for src/bm25.c: scoring within a subset of documents (bm25_score_within) against plain bm25_score. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/bm25.h"
#include "tandem/error.h"

/* Documents as space-separated terms (already folded/stemmed: the index takes terms as given).
 * Docs 0-2 are one brand's past situations, 3-7 another's. */
static const char *const docs[] = {
    "acme acme parcel late",     /* 0 */
    "acme refund money",         /* 1 */
    "acme jacket size",          /* 2 */
    "parcel late bolt",          /* 3 */
    "parcel bolt",               /* 4 */
    "parcel bolt",               /* 5 */
    "refund bolt",               /* 6 */
    "bolt",                      /* 7 */
};
#define NDOCS (sizeof docs / sizeof docs[0])

static struct bm25 *build(void)
{
    static const struct bm25_field f = {1.0f, 0.75f};
    struct bm25_builder *b = bm25_builder_new(&f, 1);
    assert_non_null(b);
    for (uint32_t d = 0; d < NDOCS; d++) {
        const char *p = docs[d];
        while (*p) {
            size_t n = strcspn(p, " ");
            assert_int_equal(bm25_builder_add(b, d, 0, p, n), T_OK);
            p += n;
            p += *p == ' ';
        }
    }
    struct bm25 *ix = bm25_build(b, NDOCS);
    assert_non_null(ix);
    return ix;
}

static struct bm25_qterm qterm(const char *t, float w) { return (struct bm25_qterm){t, (uint32_t)strlen(t), w}; }

static void test_all_docs_in_scope_is_plain_bm25(void **state)
{
    (void)state;
    struct bm25 *ix = build();
    struct bm25_qterm q[] = {qterm("parcel", 1.0f), qterm("late", 0.5f), qterm("acme", 0.3f), qterm("nope", 1.0f)};
    unsigned char all[NDOCS];
    memset(all, 1, sizeof all);
    float a[NDOCS] = {0}, b[NDOCS] = {0};
    float best_a = bm25_score(ix, q, 4, a);
    float best_b = bm25_score_within(ix, q, 4, all, NDOCS, b);
    assert_true(fabsf(best_a - best_b) < 1e-4f * best_a);
    for (size_t d = 0; d < NDOCS; d++)
        if (fabsf(a[d] - b[d]) > 1e-4f * (a[d] + 1e-6f))
            fail_msg("doc %zu: %g vs %g", d, (double)a[d], (double)b[d]);
    bm25_free(ix);
}

static void test_scope_limits_scoring(void **state)
{
    (void)state;
    struct bm25 *ix = build();
    unsigned char acme[NDOCS] = {1, 1, 1, 0, 0, 0, 0, 0};
    struct bm25_qterm q[] = {qterm("parcel", 1.0f), qterm("refund", 1.0f)};
    float s[NDOCS] = {0};
    bm25_score_within(ix, q, 2, acme, 3, s);
    assert_true(s[0] > 0 && s[1] > 0);
    assert_true(s[2] == 0); /* in scope, no match */
    for (size_t d = 3; d < NDOCS; d++)
        assert_true(s[d] == 0); /* out of scope, matches or not */
    /* a term no document of the scope holds adds nothing, not even to the attainable score */
    struct bm25_qterm bolt = qterm("bolt", 1.0f);
    float z[NDOCS] = {0};
    assert_true(bm25_score_within(ix, &bolt, 1, acme, 3, z) == 0);
    for (size_t d = 0; d < NDOCS; d++)
        assert_true(z[d] == 0);
    bm25_free(ix);
}

/* The point of the scope: a word every document of the subset shares ("acme" among acme's)
 * weighs next to nothing there, though it is rare in the whole index; a word common in the
 * whole index but rare in the subset ("parcel") tells the subset's documents apart. */
static void test_idf_is_counted_in_scope(void **state)
{
    (void)state;
    struct bm25 *ix = build();
    unsigned char acme[NDOCS] = {1, 1, 1, 0, 0, 0, 0, 0};
    struct bm25_qterm brand = qterm("acme", 1.0f), parcel = qterm("parcel", 1.0f);
    float g_brand[NDOCS] = {0}, g_parcel[NDOCS] = {0}, w_brand[NDOCS] = {0}, w_parcel[NDOCS] = {0};
    bm25_score(ix, &brand, 1, g_brand);
    bm25_score(ix, &parcel, 1, g_parcel);
    bm25_score_within(ix, &brand, 1, acme, 3, w_brand);
    bm25_score_within(ix, &parcel, 1, acme, 3, w_parcel);
    /* doc 0 holds both words: index-wide the brand word counts more, within the brand less */
    assert_true(g_brand[0] > g_parcel[0]);
    assert_true(w_brand[0] < w_parcel[0]);
    assert_true(w_brand[0] > 0); /* small, never negative */
    /* so the brand word no longer decides between two of the brand's documents: a question that
     * says the brand's name loudly and "refund" once finds doc 0 (which repeats the name)
     * index-wide, doc 1 (the refund) within the brand */
    struct bm25_qterm q[] = {qterm("acme", 5.0f), qterm("refund", 1.0f)};
    float g[NDOCS] = {0}, s[NDOCS] = {0};
    bm25_score(ix, q, 2, g);
    bm25_score_within(ix, q, 2, acme, 3, s);
    assert_true(g[0] > g[1]);
    assert_true(s[1] > s[0]);
    /* weights scale scores linearly, as in bm25_score */
    struct bm25_qterm half = qterm("parcel", 0.5f);
    float h[NDOCS] = {0};
    bm25_score_within(ix, &half, 1, acme, 3, h);
    assert_true(fabsf(2 * h[0] - w_parcel[0]) < 1e-5f);
    bm25_free(ix);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_all_docs_in_scope_is_plain_bm25),
        cmocka_unit_test(test_scope_limits_scoring),
        cmocka_unit_test(test_idf_is_counted_in_scope),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
