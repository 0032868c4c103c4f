/* Text analysis when libstemmer runs out of memory: the tokenizer says so (-1) instead of
 * emitting unstemmed words, and nothing of the failure is remembered (the next call stems
 * again). This binary replaces malloc/calloc/realloc, for every library, with versions that
 * fail the N-th call of an armed thread; not with ASan or valgrind, which own malloc (skipped
 * there). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/text.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

#ifndef UNDER_ASAN
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t a, size_t b);
extern void *__libc_realloc(void *p, size_t n);

static _Thread_local int armed; /* this thread's allocations are counted */
static _Thread_local long calls, fail_at;

static int fail_now(void)
{
    if (!armed || calls++ != fail_at)
        return 0;
    errno = ENOMEM;
    return 1;
}

void *malloc(size_t n) { return fail_now() ? NULL : __libc_malloc(n); }
void *calloc(size_t a, size_t b) { return fail_now() ? NULL : __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { return fail_now() ? NULL : __libc_realloc(p, n); }

struct collect {
    char out[256];
    size_t len;
};

static void collect_token(void *ud, const char *term, size_t len, unsigned flags)
{
    (void)flags;
    struct collect *c = ud;
    if (c->len + len + 2 > sizeof c->out)
        return;
    if (c->len)
        c->out[c->len++] = ' ';
    memcpy(c->out + c->len, term, len);
    c->len += len;
    c->out[c->len] = '\0';
}

/* A word longer than libstemmer's first buffer, so stemming itself allocates too. */
#define TEXT "Refunds charged twice, internationalisations"

struct run {
    long fail_at;
    int rc, rc_after;
    long used; /* allocations counted */
    struct collect first, after;
};

static void *run_in_thread(void *p)
{
    struct run *r = p;
    fail_at = r->fail_at;
    calls = 0;
    armed = 1;
    r->rc = text_tokenize(TEXT, strlen(TEXT), "en", 0, collect_token, &r->first);
    armed = 0;
    r->used = calls;
    r->rc_after = text_tokenize(TEXT, strlen(TEXT), "en", 0, collect_token, &r->after);
    return NULL; /* the thread's stemmers are freed at exit */
}

static void test_stemmer_out_of_memory(void **state)
{
    (void)state;
    struct collect want = {0};
    assert_int_equal(text_tokenize(TEXT, strlen(TEXT), "en", 0, collect_token, &want), 0);
    assert_string_equal(want.out, "refund charg twice internationalis");
    int saw_fail = 0, saw_whole = 0;
    long counted = 0;
    for (long at = 0; at < 64 && !saw_whole; at++) {
        struct run r = {.fail_at = at};
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, run_in_thread, &r), 0);
        assert_int_equal(pthread_join(th, NULL), 0);
        counted += r.used;
        if (!counted)
            skip(); /* another allocator took malloc's place (valgrind): nothing to fail */
        if (r.rc == 0) {
            assert_string_equal(r.first.out, want.out); /* never unstemmed words */
            saw_whole = r.used <= at;                 /* at is past the last allocation */
        } else {
            assert_int_equal(r.rc, -1);
            saw_fail = 1;
        }
        assert_int_equal(r.rc_after, 0); /* the failure is not remembered */
        assert_string_equal(r.after.out, want.out);
    }
    assert_true(saw_fail);
    assert_true(saw_whole);
}
#else
static void test_stemmer_out_of_memory(void **state)
{
    (void)state;
    skip(); /* ASan owns malloc */
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stemmer_out_of_memory),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    text_thread_cleanup();
    return rc;
}
