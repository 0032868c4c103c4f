/* Unit tests for sentiment: lexicon scoring with negation, intensifiers, sarcasm, other languages,
 * the conversation aggregate and trend, and lexicon parse errors. Also covers the phrase matcher. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "tandem/error.h"
#include "tandem/phrase.h"
#include "tandem/sentiment.h"

static double score_of(const char *text, struct sentiment_score *out)
{
    const struct sentiment_lexicon *lx = sentiment_lexicon_default();
    assert_non_null(lx);
    struct sentiment_score s;
    assert_int_equal(sentiment_score_text(lx, text, strlen(text), &s), T_OK);
    if (out)
        *out = s;
    return s.score;
}

/* Label and flags of single messages. */
static void test_labels(void **state)
{
    (void)state;
    struct {
        const char *text;
        const char *label;
        int sarcasm;  /* -1: don't care */
        int negated;  /* -1: don't care */
    } cases[] = {
        {"Thank you so much, that was really helpful!", "positive", 0, -1},
        {"I am happy with the service", "positive", 0, 0},
        {"I am not happy with the service", "negative", 0, 1},
        {"It is not bad at all", "positive", -1, 1},
        {"I never received my order", "negative", -1, -1},
        {"I haven't received my refund yet", "negative", -1, -1},
        {"the app doesnt work", "negative", -1, -1},
        {"This is extremely frustrating", "negative", 0, 0},
        {"Great, another delay. Wonderful service.", "negative", 1, -1},
        {"Thanks for nothing", "negative", 1, -1},
        {"thanks a lot, it's still broken", "negative", 1, -1},
        {"thanks a lot, you solved it!", "positive", 0, -1},
        {"Oh great, it works now", "positive", 0, -1},
        {"Oh great, it's broken again", "negative", 1, -1},
        {"I love how I've been waiting on hold for 3 hours", "negative", 1, -1},
        {"I love how easy this was", "positive", 0, -1},
        {"yeah right", "negative", 1, -1},
        {"Amazing service as always /s", "negative", 1, -1},
        {"WHERE IS MY ORDER", "negative", -1, -1},
        {"I want to speak to a manager", "negative", -1, -1},
        {"😡😡", "negative", -1, -1},
        {"thanks 👍", "positive", -1, -1},
        {"it crashed :(", "negative", -1, -1},
        {"My order number is 12345", "neutral", 0, 0},
        {"", "neutral", 0, 0},
        {"Can you check the status of my order?", "neutral", -1, -1},
        /* other languages: a few frustration words each, else neutral */
        {"Jag är väldigt besviken, det fungerar inte", "negative", -1, -1},
        {"Das ist eine Frechheit, ich bin sehr enttäuscht", "negative", -1, -1},
        {"Estoy muy enojado, no funciona", "negative", -1, -1},
        {"Tack, det var toppen!", "positive", -1, -1},
        {"Hola, quiero saber el estado de mi pedido", "neutral", 0, 0},
        {"我的订单在哪里", "neutral", 0, 0},
        {"Где мой заказ", "neutral", 0, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sentiment_score s;
        double sc = score_of(cases[i].text, &s);
        if (strcmp(sentiment_label(sc), cases[i].label))
            fail_msg("case %zu \"%s\": score %.3f is %s, expected %s", i, cases[i].text, sc,
                     sentiment_label(sc), cases[i].label);
        if (cases[i].sarcasm >= 0 && s.sarcasm != cases[i].sarcasm)
            fail_msg("case %zu \"%s\": sarcasm %d, expected %d", i, cases[i].text, s.sarcasm,
                     cases[i].sarcasm);
        if (cases[i].negated >= 0 && s.negated != cases[i].negated)
            fail_msg("case %zu \"%s\": negated %d, expected %d", i, cases[i].text, s.negated,
                     cases[i].negated);
        assert_true(sc >= -1.0 && sc <= 1.0);
    }
}

/* Pairs where the first must score strictly lower than the second. */
static void test_orderings(void **state)
{
    (void)state;
    struct {
        const char *lower, *higher;
    } cases[] = {
        {"This is extremely frustrating", "This is frustrating"},
        {"This is TERRIBLE", "This is terrible"},
        {"This is terrible!!!", "This is terrible"},
        {"I am NOT happy!!!", "I am not happy"},
        {"I am not happy", "I am happy"},
        {"This is frustrating", "This is slightly frustrating"},
        {"where is my order???", "where is my order?"},
        {"Your support is great but the app keeps crashing", "The app crashes but your support was great"},
        {"very helpful, thanks. still broken though", "very helpful, thanks"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double lo = score_of(cases[i].lower, NULL), hi = score_of(cases[i].higher, NULL);
        if (!(lo < hi))
            fail_msg("case %zu: \"%s\" (%.3f) should score below \"%s\" (%.3f)", i,
                     cases[i].lower, lo, cases[i].higher, hi);
    }
}

static void test_contrast_but(void **state)
{
    (void)state;
    assert_true(score_of("The app crashes but your support was great", NULL) > 0);
    assert_true(score_of("Your support is great but the app keeps crashing", NULL) < 0);
}

static struct sentiment_score sc(double v, unsigned hits)
{
    struct sentiment_score s = {v, hits, 0, 0};
    return s;
}

static void test_aggregate(void **state)
{
    (void)state;
    struct sentiment_summary m;
    sentiment_aggregate(NULL, 0, &m);
    assert_string_equal(m.label, "neutral");
    assert_string_equal(m.trend, "steady");
    assert_true(m.score == 0);

    struct sentiment_score up[] = {sc(-0.8, 1), sc(-0.6, 1), sc(-0.5, 1),
                                   sc(0.2, 1),  sc(0.5, 1),  sc(0.7, 1)};
    sentiment_aggregate(up, 6, &m);
    assert_string_equal(m.trend, "improving");
    assert_int_equal(m.n, 6);
    assert_int_equal(m.worst, 0);

    struct sentiment_score down[] = {sc(0.7, 1), sc(0.5, 1), sc(0.2, 1),
                                     sc(-0.5, 1), sc(-0.6, 1), sc(-0.8, 1)};
    sentiment_aggregate(down, 6, &m);
    assert_string_equal(m.trend, "worsening");
    assert_string_equal(m.label, "negative"); /* the newest weigh most */
    assert_int_equal(m.worst, 5);

    struct sentiment_score flat[] = {sc(-0.1, 1), sc(0.1, 1), sc(-0.1, 1), sc(0.1, 1)};
    sentiment_aggregate(flat, 4, &m);
    assert_string_equal(m.trend, "steady");
    assert_string_equal(m.label, "neutral");

    /* only the last SENTIMENT_WINDOW messages count */
    struct sentiment_score old[10] = {sc(-1, 1), sc(-1, 1), sc(-1, 1), sc(-1, 1)};
    for (size_t i = 4; i < 10; i++)
        old[i] = sc(0.5, 1);
    sentiment_aggregate(old, 10, &m);
    assert_int_equal(m.n, SENTIMENT_WINDOW);
    assert_true(m.score > 0.49 && m.score < 0.51);

    /* recency: the same two scores in the other order */
    struct sentiment_score a[] = {sc(-0.9, 1), sc(0.1, 1)}, b[] = {sc(0.1, 1), sc(-0.9, 1)};
    struct sentiment_summary ma, mb;
    sentiment_aggregate(a, 2, &ma);
    sentiment_aggregate(b, 2, &mb);
    assert_true(mb.score < ma.score);

    /* a message without lexicon hits (an order number) weighs half */
    struct sentiment_score c[] = {sc(-0.8, 2), sc(0, 0)}, d[] = {sc(-0.8, 2), sc(0, 1)};
    struct sentiment_summary mc, md;
    sentiment_aggregate(c, 2, &mc);
    sentiment_aggregate(d, 2, &md);
    assert_true(mc.score < md.score);
}

static void test_lexicon_errors(void **state)
{
    (void)state;
    struct {
        const char *text;
        const char *needle; /* must appear in the error */
    } cases[] = {
        {"w abc foo\n", "lex.txt:1"},
        {"# ok\nbogus 1 foo\n", "lex.txt:2: unknown kind"},
        {"w 1 ok\nw -1 bad ...\n", "lex.txt:2"},
        {"w 9 huge\n", "out of range"},
        {"boost -0.5 very\n", "out of range"},
        {"w 1\n", "lex.txt:1"},
        {"w 1 a|\n", "empty alternative"},
        {"w 1 ab*\n", "prefix"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct sentiment_lexicon *lx = sentiment_lexicon_new();
        assert_non_null(lx);
        char err[256] = "";
        int rc = sentiment_lexicon_add(lx, cases[i].text, strlen(cases[i].text), "lex.txt", err,
                                       sizeof err);
        if (rc != T_ERR_CONFIG || !strstr(err, cases[i].needle))
            fail_msg("case %zu: rc %d err \"%s\", expected \"%s\"", i, rc, err, cases[i].needle);
        sentiment_lexicon_free(lx);
    }
    sentiment_lexicon_free(NULL);
}

/* A lexicon of one's own: the format works beyond the built-in files. */
static void test_custom_lexicon(void **state)
{
    (void)state;
    const char *text = "neg 0 not\nw 2 yay\nw -2 boo\nboost 0.5 mega\n";
    struct sentiment_lexicon *lx = sentiment_lexicon_new();
    char err[128];
    assert_int_equal(sentiment_lexicon_add(lx, text, strlen(text), "t", err, sizeof err), T_OK);
    assert_int_equal(sentiment_lexicon_finish(lx), T_OK);
    struct sentiment_score a, b, c;
    assert_int_equal(sentiment_score_text(lx, "yay", 3, &a), T_OK);
    assert_int_equal(sentiment_score_text(lx, "mega yay", 8, &b), T_OK);
    assert_int_equal(sentiment_score_text(lx, "not yay", 7, &c), T_OK);
    assert_true(a.score > 0 && b.score > a.score && c.score < 0);
    sentiment_lexicon_free(lx);
}

/* The phrase matcher under the lexicon and the alert rules. */
static void test_phrase_matcher(void **state)
{
    (void)state;
    struct {
        const char *pattern, *text;
        int match; /* expected: matches somewhere */
    } cases[] = {
        {"charged ... twice", "you charged my card twice", 1},
        {"charged ... twice", "you charged me, my wife and my son twice", 0}, /* gap > 3 */
        {"charged ...5 twice", "you charged me, my wife and son twice", 1},
        {"charged twice", "I was charged. Twice is too much", 0}, /* sentence break */
        {"didn't make this purchase", "I DIDN’T make this purchase!", 1}, /* curly, caps */
        {"didn't make this purchase", "i didnt make this purchase", 1},
        {"frustrat*", "so frustrating", 1},
        {"frustrat*", "frustum", 0},
        {"cancel|close my account", "please close my account", 1},
        {"cancel", "see https://example.com/cancel now", 0}, /* URLs are skipped */
        {"support", "@support hello", 0},                    /* handles too */
        {"finansinspektionen", "Jag anmäler er till Finansinspektionen", 1},
        {"ärger*", "ÄRGERLICH", 1},
        {":(", "it broke :(", 1},
        {"/s", "best day ever /s", 1},
        {"great another", "great, another outage", 1},
        {"e-mail", "my e-mail is down", 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct phrase_set *s = phrase_set_new();
        char err[128] = "";
        if (phrase_set_add(s, cases[i].pattern, 7, err, sizeof err))
            fail_msg("case %zu: pattern \"%s\": %s", i, cases[i].pattern, err);
        assert_int_equal(phrase_set_finish(s), T_OK);
        struct phrase_text t;
        assert_int_equal(phrase_text_init(&t, cases[i].text, strlen(cases[i].text)), T_OK);
        int found = 0;
        for (size_t j = 0; j < t.n; j++) {
            struct phrase_match m;
            if (phrase_set_match_at(s, &t, j, &m, 1)) {
                assert_int_equal(m.tag, 7);
                found = 1;
            }
        }
        if (found != cases[i].match)
            fail_msg("case %zu: \"%s\" in \"%s\": %d, expected %d", i, cases[i].pattern,
                     cases[i].text, found, cases[i].match);
        phrase_text_cleanup(&t);
        phrase_set_free(s);
    }
}

static void test_phrase_bad_patterns(void **state)
{
    (void)state;
    const char *bad[] = {"", "   ", "... start", "end ...", "a|", "|b", "ab*", "x ...0 y", "a b c d e f g h i j k l m n o p q"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct phrase_set *s = phrase_set_new();
        char err[128] = "";
        int rc = phrase_set_add(s, bad[i], 0, err, sizeof err);
        if (rc != T_ERR_BAD_REQUEST || !err[0])
            fail_msg("case %zu: \"%s\" accepted (rc %d)", i, bad[i], rc);
        phrase_set_free(s);
    }
    phrase_set_free(NULL);
}

/* Long input is bounded, not rejected. */
static void test_long_text(void **state)
{
    (void)state;
    static char big[64 * 1024];
    for (size_t i = 0; i + 9 < sizeof big; i += 9)
        memcpy(big + i, "terrible ", 9);
    big[sizeof big - 1] = '\0';
    struct phrase_text t;
    assert_int_equal(phrase_text_init(&t, big, strlen(big)), T_OK);
    assert_int_equal(t.n, PHRASE_MAX_TOKENS);
    phrase_text_cleanup(&t);
    double s = score_of(big, NULL);
    assert_true(s < -0.9 && s >= -1.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_labels),          cmocka_unit_test(test_orderings),
        cmocka_unit_test(test_contrast_but),    cmocka_unit_test(test_aggregate),
        cmocka_unit_test(test_lexicon_errors),  cmocka_unit_test(test_custom_lexicon),
        cmocka_unit_test(test_phrase_matcher),  cmocka_unit_test(test_phrase_bad_patterns),
        cmocka_unit_test(test_long_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
