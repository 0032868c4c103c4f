/* Unit tests for buf and arena: caps (never truncate), printf growth, take, alignment, big blocks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/buf.h"
#include "tandem/error.h"

/* ---- buf caps ---- */

static void test_cap_exact_and_one_over(void **state)
{
    (void)state;
    struct {
        size_t max;
        size_t first;  /* bytes appended first */
        size_t second; /* then this many */
        int want2;     /* result of the second append */
    } cases[] = {
        {10, 10, 0, T_OK},          /* exactly the cap, then an empty append */
        {10, 10, 1, T_ERR_TOO_LARGE},
        {10, 5, 5, T_OK},
        {10, 5, 6, T_ERR_TOO_LARGE},
        {10, 0, 11, T_ERR_TOO_LARGE},
        {1, 1, 1, T_ERR_TOO_LARGE},
        {256, 255, 1, T_OK},        /* the NUL needs a byte past 256: must grow, not fail */
        {256, 256, 1, T_ERR_TOO_LARGE},
        {1000, 999, 1, T_OK},
        {1000, 999, 2, T_ERR_TOO_LARGE},
    };
    char src[2048];
    for (size_t i = 0; i < sizeof src; i++)
        src[i] = (char)('a' + i % 26);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct buf b;
        buf_init(&b, cases[i].max);
        int rc1 = buf_append(&b, src, cases[i].first);
        if (cases[i].first > cases[i].max) {
            assert_int_equal(rc1, T_ERR_TOO_LARGE);
        } else {
            assert_int_equal(rc1, T_OK);
        }
        size_t len_before = b.len;
        char *snapshot = b.data ? strdup(b.data) : NULL;
        int rc2 = buf_append(&b, "XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                             cases[i].second);
        if (rc2 != cases[i].want2)
            fail_msg("case %zu: second append returned %d, expected %d", i, rc2, cases[i].want2);
        if (rc2 == T_OK) {
            assert_int_equal(b.len, len_before + cases[i].second);
        } else {
            /* unchanged: same length, same bytes, still terminated */
            assert_int_equal(b.len, len_before);
            if (snapshot) {
                assert_memory_equal(b.data, snapshot, len_before + 1);
            }
        }
        assert_true(b.len <= cases[i].max);
        if (b.data)
            assert_int_equal(b.data[b.len], '\0');
        free(snapshot);
        buf_cleanup(&b);
    }
}

static void test_cap_putc_puts_printf(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 4);
    assert_int_equal(buf_puts(&b, "abc"), T_OK);
    assert_int_equal(buf_putc(&b, 'd'), T_OK);
    assert_int_equal(buf_putc(&b, 'e'), T_ERR_TOO_LARGE);
    assert_string_equal(b.data, "abcd");
    buf_reset(&b);
    assert_int_equal(buf_printf(&b, "%d", 1234), T_OK);
    assert_string_equal(b.data, "1234");
    buf_reset(&b);
    assert_int_equal(buf_printf(&b, "%s", "ab"), T_OK);
    assert_int_equal(buf_printf(&b, "%s", "cde"), T_ERR_TOO_LARGE);
    assert_string_equal(b.data, "ab");
    assert_int_equal(b.len, 2);
    assert_int_equal(buf_puts(&b, "xyz"), T_ERR_TOO_LARGE);
    assert_string_equal(b.data, "ab");
    buf_cleanup(&b);
}

static void test_size_overflow_is_too_large(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(buf_puts(&b, "abc"), T_OK);
    static const char dummy[1];
    /* lengths that would wrap size_t: refused before any copy */
    assert_int_equal(buf_append(&b, dummy, SIZE_MAX), T_ERR_TOO_LARGE);
    assert_int_equal(buf_append(&b, dummy, SIZE_MAX - 3), T_ERR_TOO_LARGE);
    assert_string_equal(b.data, "abc");
    buf_cleanup(&b);
}

/* ---- growth ---- */

static void test_uncapped_growth(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    char chunk[1000];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (char)('0' + i % 10);
    for (int i = 0; i < 3000; i++)
        assert_int_equal(buf_append(&b, chunk, sizeof chunk), T_OK);
    assert_int_equal(b.len, 3000 * sizeof chunk);
    assert_true(b.cap > b.len);
    for (size_t i = 0; i < b.len; i += 997)
        assert_int_equal(b.data[i], (char)('0' + (i % 1000) % 10));
    assert_int_equal(b.data[b.len], '\0');
    buf_cleanup(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

static void test_printf_growth(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 1 << 20);
    char *expect = calloc(1, 200000);
    size_t el = 0;
    for (int i = 0; i < 5000; i++) {
        assert_int_equal(buf_printf(&b, "%05d:%s,", i, i % 7 ? "x" : "seven"), T_OK);
        el += (size_t)sprintf(expect + el, "%05d:%s,", i, i % 7 ? "x" : "seven");
    }
    assert_int_equal(b.len, el);
    assert_string_equal(b.data, expect);
    /* one printf bigger than the initial capacity in one go */
    buf_reset(&b);
    char big[5000];
    memset(big, 'q', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    assert_int_equal(buf_printf(&b, "<%s>", big), T_OK);
    assert_int_equal(b.len, sizeof big + 1);
    assert_int_equal(b.data[0], '<');
    assert_int_equal(b.data[b.len - 1], '>');
    assert_int_equal(b.data[b.len], '\0');
    free(expect);
    buf_cleanup(&b);
}

static void test_reset_keeps_memory(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(buf_puts(&b, "hello world"), T_OK);
    char *p = b.data;
    size_t cap = b.cap;
    buf_reset(&b);
    assert_int_equal(b.len, 0);
    assert_ptr_equal(b.data, p);
    assert_int_equal(b.cap, cap);
    assert_string_equal(b.data, "");
    assert_int_equal(buf_puts(&b, "x"), T_OK);
    assert_string_equal(b.data, "x");
    buf_cleanup(&b);
    /* reset and cleanup of a never-used buffer */
    buf_init(&b, 0);
    buf_reset(&b);
    buf_cleanup(&b);
}

static void test_take(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 100);
    assert_int_equal(buf_puts(&b, "abc"), T_OK);
    char *s = buf_take(&b);
    assert_string_equal(s, "abc");
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(b.cap, 0);
    /* the buffer is usable again, with its cap */
    assert_int_equal(buf_puts(&b, "def"), T_OK);
    assert_string_equal(b.data, "def");
    char over[101];
    memset(over, 'z', sizeof over);
    assert_int_equal(buf_append(&b, over, sizeof over), T_ERR_TOO_LARGE);
    buf_cleanup(&b);
    free(s);
    /* take of an empty buffer: a "" the caller frees */
    buf_init(&b, 0);
    s = buf_take(&b);
    assert_non_null(s);
    assert_string_equal(s, "");
    free(s);
    buf_cleanup(&b);
}

static void test_binary_data(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 0);
    const char bin[] = {'a', '\0', 'b', '\xff', '\0'};
    assert_int_equal(buf_append(&b, bin, sizeof bin), T_OK);
    assert_int_equal(b.len, sizeof bin);
    assert_memory_equal(b.data, bin, sizeof bin);
    assert_int_equal(buf_append(&b, NULL, 0), T_OK);
    assert_int_equal(b.len, sizeof bin);
    buf_cleanup(&b);
}

/* ---- arena ---- */

static void test_arena_alignment(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a);
    const size_t sizes[] = {1, 3, 15, 16, 17, 31, 100, 1, 8000, 7, 9000, 2, 100000, 5, 0, 33};
    void *ptrs[sizeof sizes / sizeof sizes[0]];
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        ptrs[i] = arena_alloc(&a, sizes[i]);
        assert_non_null(ptrs[i]);
        if ((uintptr_t)ptrs[i] % 16 != 0)
            fail_msg("allocation %zu (%zu bytes) at %p is not 16-byte aligned", i, sizes[i], ptrs[i]);
        memset(ptrs[i], (int)(i + 1), sizes[i]);
    }
    /* nothing overlapped: every block still holds its own pattern */
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (size_t k = 0; k < sizes[i]; k++)
            if (((unsigned char *)ptrs[i])[k] != (unsigned char)(i + 1))
                fail_msg("allocation %zu byte %zu was overwritten", i, k);
    arena_cleanup(&a);
    assert_null(a.head);
}

static void test_arena_big_allocation_keeps_current_chunk(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a);
    char *small1 = arena_alloc(&a, 64);
    assert_non_null(small1);
    struct arena_chunk *head = a.head;
    char *big = arena_alloc(&a, 1 << 20);
    assert_non_null(big);
    memset(big, 0x5a, 1 << 20);
    /* the chunk with free space stays in front; the next small block comes from it */
    assert_ptr_equal(a.head, head);
    char *small2 = arena_alloc(&a, 64);
    assert_ptr_equal(small2, small1 + 64);
    /* a big block as the very first allocation */
    struct arena b;
    arena_init(&b);
    char *first = arena_alloc(&b, 50000);
    assert_non_null(first);
    memset(first, 1, 50000);
    char *after = arena_alloc(&b, 10);
    assert_non_null(after);
    assert_true(after + 10 <= first || after >= first + 50000);
    arena_cleanup(&b);
    arena_cleanup(&a);
}

static void test_arena_many_small(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a);
    enum { N = 20000 };
    char **p = calloc(N, sizeof *p);
    for (int i = 0; i < N; i++) {
        char tmp[32];
        int n = snprintf(tmp, sizeof tmp, "s%d", i);
        p[i] = arena_strndup(&a, tmp, (size_t)n);
        assert_non_null(p[i]);
    }
    for (int i = 0; i < N; i++) {
        char tmp[32];
        snprintf(tmp, sizeof tmp, "s%d", i);
        assert_string_equal(p[i], tmp);
    }
    free(p);
    arena_cleanup(&a);
    /* cleanup twice and of an unused arena is fine */
    arena_cleanup(&a);
    struct arena e;
    arena_init(&e);
    arena_cleanup(&e);
}

static void test_arena_strdup(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a);
    const char src[] = "hello, world";
    char *p = arena_strndup(&a, src, 5);
    assert_string_equal(p, "hello");
    char *q = arena_strdup(&a, src);
    assert_string_equal(q, src);
    assert_ptr_not_equal(q, src);
    char *e = arena_strndup(&a, "", 0);
    assert_string_equal(e, "");
    /* embedded NUL is copied as is, and the copy is terminated after len */
    char *z = arena_strndup(&a, "a\0b", 3);
    assert_memory_equal(z, "a\0b\0", 4);
    arena_cleanup(&a);
}

/* Sizes near SIZE_MAX must fail with NULL, not wrap into a tiny block. */
static void test_arena_huge_sizes_fail(void **state)
{
    (void)state;
    struct arena a;
    arena_init(&a);
    const size_t sizes[] = {SIZE_MAX, SIZE_MAX - 7, SIZE_MAX - 20, SIZE_MAX - 40, SIZE_MAX - 64, SIZE_MAX / 2 + 1};
    char *wrong_text = NULL;
    size_t wrong_len = 0, n_wrong = 0;
    FILE *wrong = open_memstream(&wrong_text, &wrong_len);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = arena_alloc(&a, sizes[i]);
        if (p) {
            fprintf(wrong, "  arena_alloc(SIZE_MAX - %zu) returned %p instead of NULL\n", SIZE_MAX - sizes[i], p);
            n_wrong++;
        }
    }
    fclose(wrong);
    arena_cleanup(&a);
    if (n_wrong)
        fail_msg("%zu huge sizes did not fail:\n%s", n_wrong, wrong_text);
    free(wrong_text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cap_exact_and_one_over),
        cmocka_unit_test(test_cap_putc_puts_printf),
        cmocka_unit_test(test_size_overflow_is_too_large),
        cmocka_unit_test(test_uncapped_growth),
        cmocka_unit_test(test_printf_growth),
        cmocka_unit_test(test_reset_keeps_memory),
        cmocka_unit_test(test_take),
        cmocka_unit_test(test_binary_data),
        cmocka_unit_test(test_arena_alignment),
        cmocka_unit_test(test_arena_big_allocation_keeps_current_chunk),
        cmocka_unit_test(test_arena_many_small),
        cmocka_unit_test(test_arena_strdup),
        cmocka_unit_test(test_arena_huge_sizes_fail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
