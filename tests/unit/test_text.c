/* Unit tests for src/text.c: tokenizing, folding, stopwords, stemming, URL normalisation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tandem/text.h"

struct collect {
    char out[1024];
    size_t len;
    unsigned flags[64];
    size_t n;
};

static void collect_token(void *ud, const char *term, size_t len, unsigned flags)
{
    struct collect *c = ud;
    assert_int_equal(strlen(term), len); /* NUL-terminated at len */
    if (c->len)
        c->out[c->len++] = ' ';
    memcpy(c->out + c->len, term, len);
    c->len += len;
    c->out[c->len] = '\0';
    if (c->n < 64)
        c->flags[c->n] = flags;
    c->n++;
}

static void tokens(const char *text, const char *lang, unsigned opts, struct collect *c)
{
    memset(c, 0, sizeof *c);
    assert_int_equal(text_tokenize(text, strlen(text), lang, opts, collect_token, c), 0);
}

struct tok_case {
    const char *name;
    const char *lang;
    unsigned opts;
    const char *in;
    const char *want; /* space-joined terms */
};

static const struct tok_case tok_cases[] = {
    {"stopwords and contractions", "en", 0, "Hello, I can't log in to my account!!", "log account"},
    {"curly apostrophe is a stopword too", "en", 0, "It hasn\xe2\x80\x99t arrived", "arriv"},
    {"emoji separate words", "en", 0, "refund\xf0\x9f\x98\xa1please\xf0\x9f\x99\x8f now", "refund"},
    {"numbers kept, single letters dropped", "en", 0, "error 1006 on step b", "error 1006 step"},
    {"mixed letters and digits stay one word", "en", 0, "PS4 error CE-34878-0", "ps4 error ce 34878 0"},
    {"archived URL: host and path words", "en", 0,
     "see https://web.archive.org/web/20200401224734/https://support.google.com/youtube/answer/185111 ok",
     "see support googl youtub answer 185111"},
    {"URL query and fragment ignored", "en", 0, "go to http://www.example.com/billing/refunds?utm_source=x#top",
     "go exampl bill refund"},
    {"camelCase in URL paths", "en", 0, "https://www.delta.com/refunds/checkRefundsStatusAction.action",
     "delta refund check refund status action action"},
    {"handles are words", "en", 0, "@AdobeCare premiere crashes", "adobecar premier crash"},
    {"e-mail addresses are skipped", "en", 0, "mail me at john.doe@example.com soon", "mail soon"},
    {"hashtags", "en", 0, "#StayHome with premium", "stayhom premium"},
    {"scheme with a stray space", "en", 0, "link: https: //www.youtube.com/channel/UCW97", "link youtub channel ucw97"},
    {"punctuation runs", "en", 0, "...why?!?! billing---broken", "bill broken"},
    {"case folding Latin-1 and Greek, unstemmed", "xx", TEXT_OPT_NO_STEM,
     "\xc3\x85" "RE \xce\xa3\xce\x8a\xce\xa3\xce\xa5\xce\xa6\xce\x9f\xce\xa3",
     "\xc3\xa5re \xcf\x83\xce\xaf\xcf\x83\xcf\x85\xcf\x86\xce\xbf\xcf\x83"},
    {"Cyrillic folding, unstemmed", "ru", TEXT_OPT_NO_STEM | TEXT_OPT_KEEP_STOPWORDS,
     "\xd0\x9f\xd0\xa0\xd0\x98\xd0\x92\xd0\x95\xd0\xa2 \xd0\xbc\xd0\xb8\xd1\x80",
     "\xd0\xbf\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xd0\xbc\xd0\xb8\xd1\x80"},
    {"invalid UTF-8 separates", "en", 0, "bill\xff\xfeing refund\xc3", "bill ing refund"},
    {"overlong runs are skipped", "en", 0, "token aGVsbG8gd29ybGQgdGhpcyBpcyBhIHZlcnkgbG9uZyBiYXNlNjQgc3RyaW5n done",
     "token done"},
    {"German stopwords and stems", "de", 0, "Die H\xc3\xa4user und die K\xc3\xbcndigung", "haus kundig"},
    {"Swedish stopwords and stems", "sv", 0, "Jag vill avbryta min prenumeration", "vill avbryt prenumeration"},
    {"URL only (KB url field)", "en", TEXT_OPT_URL_ONLY, "help.dropbox.com/installs-integrations/desktop",
     "help dropbox instal integr desktop"},
    {"empty", "en", 0, "", ""},
};

static void test_tokenize_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof tok_cases / sizeof tok_cases[0]; i++) {
        const struct tok_case *tc = &tok_cases[i];
        struct collect c;
        tokens(tc->in, tc->lang, tc->opts, &c);
        if (strcmp(c.out, tc->want) != 0)
            fail_msg("%s: got \"%s\", want \"%s\"", tc->name, c.out, tc->want);
    }
}

static void test_token_flags(void **state)
{
    (void)state;
    struct collect c;
    tokens("@TeamYouTube see https://support.google.com/youtube/answer/185111", "en", 0, &c);
    /* teamyoutub(handle) see support(host) googl(host) youtub(url) answer(url) 185111(url,number) */
    assert_int_equal(c.n, 7);
    assert_true(c.flags[0] & TEXT_TOK_HANDLE);
    assert_int_equal(c.flags[1], 0);
    assert_true(c.flags[2] & TEXT_TOK_HOST);
    assert_true(c.flags[4] & TEXT_TOK_URL);
    assert_false(c.flags[4] & TEXT_TOK_NUMBER);
    assert_true(c.flags[6] & TEXT_TOK_URL);
    assert_true(c.flags[6] & TEXT_TOK_NUMBER);
}

struct stem_case {
    const char *lang, *word, *want;
};

static const struct stem_case stem_cases[] = {
    {"en", "running", "run"},
    {"en", "connections", "connect"},
    {"en", "refunds", "refund"},
    {"en", "generously", "generous"},
    {NULL, "cancelled", "cancel"}, /* default language is English */
    {"de", "h\xc3\xa4user", "haus"},
    {"sv", "flickorna", "flick"},
    {"sv", "prenumerationer", "prenumeration"},
    {"zz", "running", "running"}, /* a language without a stemmer is left unstemmed */
    {"EN!", "running", "run"},    /* junk is the default language */
    {"en-GB", "running", "run"},  /* region suffix ignored */
};

static void test_stem_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof stem_cases / sizeof stem_cases[0]; i++) {
        char out[64];
        size_t n = text_stem(stem_cases[i].lang, stem_cases[i].word, strlen(stem_cases[i].word), out, sizeof out);
        assert_int_equal(n, strlen(out));
        if (strcmp(out, stem_cases[i].want) != 0)
            fail_msg("%s/%s: got %s want %s", stem_cases[i].lang ? stem_cases[i].lang : "-",
                     stem_cases[i].word, out, stem_cases[i].want);
    }
    assert_true(text_lang_has_stemmer("sv"));
    assert_true(text_lang_has_stemmer("nb"));
}

static void test_stopwords(void **state)
{
    (void)state;
    assert_true(text_is_stopword("en", "the", 3));
    assert_true(text_is_stopword("en", "don't", 5));
    assert_false(text_is_stopword("en", "refund", 6));
    assert_true(text_is_stopword("sv", "och", 3));
    assert_false(text_is_stopword("sv", "the", 3)); /* per language */
    assert_true(text_is_stopword("de", "und", 3));
    assert_false(text_is_stopword("fi", "ja", 2)); /* no list: nothing is a stopword */
}

/* Every embedded list is loaded at once (text_init), so a language's list cannot go missing
 * because memory was short the first time it was asked for. */
static void test_stopword_lists_all_loaded(void **state)
{
    (void)state;
    assert_int_equal(text_init(), 0);
    assert_true(text_is_stopword("es", "que", 3));
    assert_true(text_is_stopword("fr", "les", 3));
}

struct stem_job {
    const char *lang, *word;
    char got[sizeof ((struct collect *)0)->out];
    int rc;
};

static void *stem_in_thread(void *p)
{
    struct stem_job *j = p;
    struct collect c;
    memset(&c, 0, sizeof c);
    j->rc = text_tokenize(j->word, strlen(j->word), j->lang, 0, collect_token, &c);
    snprintf(j->got, sizeof j->got, "%s", c.out);
    return NULL; /* the thread's stemmers are freed as it exits (valgrind/ASan check it) */
}

/* Stemmer state is per thread (thread-local storage): threads stem alike, in parallel, and a
 * thread that cleaned up stems again on its next call. */
static void test_stemming_per_thread(void **state)
{
    (void)state;
    struct stem_job jobs[4] = {{"en", "refunds charged", "", -1},
                               {"sv", "beställningar", "", -1},
                               {"de", "Rückerstattungen", "", -1},
                               {"en", "refunds charged", "", -1}};
    pthread_t th[4];
    for (size_t i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, stem_in_thread, &jobs[i]), 0);
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(jobs[i].rc, 0);
        struct collect c;
        tokens(jobs[i].word, jobs[i].lang, 0, &c); /* the same on this thread */
        assert_string_equal(jobs[i].got, c.out);
    }
    assert_string_equal(jobs[0].got, "refund charg");
    text_thread_cleanup();
    struct collect c;
    tokens("refunds charged", "en", 0, &c);
    assert_string_equal(c.out, "refund charg");
}

static void test_fold(void **state)
{
    (void)state;
    char out[32];
    assert_int_equal(text_fold("\xc3\x84PPLE", 6, out, sizeof out), 6);
    assert_string_equal(out, "\xc3\xa4pple");
    assert_int_equal(text_fold("ABCDEFGHIJ", 10, out, 8), 0); /* does not fit */
}

struct url_case {
    const char *in, *want;
};

static const struct url_case url_cases[] = {
    {"https://web.archive.org/web/20200401224734/https://support.google.com/youtube/answer/185111",
     "support.google.com/youtube/answer/185111"},
    {"http://www.Example.com/a/b/?x=1#frag", "example.com/a/b?x=1"},
    {"https://support.zoom.us/hc/en-us/articles/201362463-Wireless-WiFi-Connection-Issues.",
     "support.zoom.us/hc/en-us/articles/201362463-wireless-wifi-connection-issues"},
    {"https://community.adobe.com:443/t5/premiere-pro/x", "community.adobe.com/t5/premiere-pro/x"},
    {"https://web.archive.org/web/20110622025728/http://www.youtube.com/watch?v=8BPfk-zwk1g",
     "youtube.com/watch?v=8bpfk-zwk1g"},
    {"(https://x.org/a),", "x.org/a"},
    {"https://help.netflix.com/en/node/12232\xe2\x80\xa6", "help.netflix.com/en/node/12232"},
    {"https://web.archive.org/web/2019id_/http:/example.com/p", "example.com/p"},
    {"https://", ""},
};

static void test_url_normalize(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof url_cases / sizeof url_cases[0]; i++) {
        char out[256];
        size_t n = text_url_normalize(url_cases[i].in, strlen(url_cases[i].in), out, sizeof out);
        if (!url_cases[i].want[0]) {
            assert_int_equal(n, 0);
            continue;
        }
        assert_int_equal(n, strlen(out));
        if (strcmp(out, url_cases[i].want) != 0)
            fail_msg("%s: got %s want %s", url_cases[i].in, out, url_cases[i].want);
    }
    char small[8];
    assert_int_equal(text_url_normalize("https://example.com/long", 24, small, sizeof small), 0);
}

static void test_hash(void **state)
{
    (void)state;
    /* FNV-1a 64 reference values */
    assert_true(text_hash(TEXT_HASH_SEED, "", 0) == 0xcbf29ce484222325ULL);
    assert_true(text_hash(TEXT_HASH_SEED, "a", 1) == 0xaf63dc4c8601ec8cULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tokenize_table), cmocka_unit_test(test_token_flags),
        cmocka_unit_test(test_stem_table),     cmocka_unit_test(test_stopwords),
        cmocka_unit_test(test_fold),           cmocka_unit_test(test_url_normalize),
        cmocka_unit_test(test_hash),           cmocka_unit_test(test_stopword_lists_all_loaded),
        cmocka_unit_test(test_stemming_per_thread),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    text_thread_cleanup();
    return rc;
}
