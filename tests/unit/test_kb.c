/* Unit tests for src/kb.c and src/bm25.c: loading, errors with file:line, brands, URL links, index, swaps. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tandem/app.h"
#include "tandem/bm25.h"
#include "tandem/error.h"
#include "tandem/kb.h"
#include "tandem/text.h"

static char dir[64];

static void write_file(const char *name, const char *content)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(content, f);
    fclose(f);
}

static int setup(void **state)
{
    (void)state;
    strcpy(dir, "/tmp/tandem-test-kb-XXXXXX");
    assert_non_null(mkdtemp(dir));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    text_thread_cleanup();
    return 0;
}

static const char good[] =
    "{\"id\": \"refund-status\", \"title\": \"Where is my refund?\", \"body\": \"Hi {{customer.name}}, refunds take 5 days.\", "
    "\"tags\": [\"refund\", \"payments\"], \"lang\": \"en\", \"url\": "
    "\"https://web.archive.org/web/20200401224734/https://help.acme.com/refunds/status\"}\n"
    "\n"
    "{\"id\": \"reset-password\", \"title\": \"Reset your password\", \"body\": \"Use the reset link.\", \"brand\": \"Acme\"}\n"
    "{\"id\": \"both\", \"body\": \"Shared entry\", \"brands\": [\"Acme\", \"Bolt\", \"acme\"]}\r\n";

static void test_load_file(void **state)
{
    (void)state;
    write_file("kb.jsonl", good);
    char path[256], err[256] = "";
    snprintf(path, sizeof path, "%s/kb.jsonl", dir);
    struct kb *kb = NULL;
    assert_int_equal(kb_load(path, &kb, err, sizeof err), T_OK);
    assert_int_equal(kb_count(kb), 3);
    const struct kb_entry *e = kb_entry_at(kb, 0);
    assert_string_equal(e->id, "refund-status");
    assert_string_equal(e->title, "Where is my refund?");
    assert_int_equal(e->n_tags, 2);
    assert_string_equal(e->tags[1], "payments");
    assert_string_equal(e->url_norm, "help.acme.com/refunds/status");
    assert_int_equal(e->n_brands, 0);
    e = kb_entry_at(kb, 1);
    assert_string_equal(e->lang, "en"); /* default */
    assert_string_equal(e->title, "Reset your password");
    assert_null(e->url);
    /* brands: "acme" is "Acme" (case-blind), listed once */
    assert_int_equal(kb_entry_at(kb, 2)->n_brands, 2);
    int acme = kb_brand_id(kb, "ACME"), bolt = kb_brand_id(kb, "Bolt");
    assert_true(acme >= 0 && bolt >= 0 && acme != bolt);
    assert_int_equal(kb_brand_id(kb, "Other"), -1);
    assert_int_equal(kb_brand_entries(kb, acme), 2);
    assert_int_equal(kb_brand_entries(kb, bolt), 1);
    assert_int_equal(kb_brand_entries(kb, -1), 0);
    assert_true(kb_entry_allowed(kb, 0, bolt));  /* no brand: everyone's */
    assert_false(kb_entry_allowed(kb, 1, bolt)); /* Acme only */
    assert_true(kb_entry_allowed(kb, 1, acme));
    assert_false(kb_entry_allowed(kb, 1, -1));   /* an unknown brand sees only generic entries */
    assert_true(kb_entry_allowed(kb, 1, KB_ANY_BRAND));
    assert_int_equal(kb_find_id(kb, "both"), 2);
    assert_int_equal(kb_find_id(kb, "nope"), -1);
    assert_true(kb_fingerprint(kb) != 0);
    assert_true(kb_memory(kb) > 0);
    kb_free(kb);
}

static void test_link_text(void **state)
{
    (void)state;
    write_file("kb.jsonl", good);
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/kb.jsonl", dir);
    struct kb *kb = NULL;
    assert_int_equal(kb_load(path, &kb, err, sizeof err), T_OK);
    static const struct {
        const char *text;
        long want;
    } cases[] = {
        {"See https://help.acme.com/refunds/status.", 0},
        {"See https://web.archive.org/web/20190101000000/http://www.help.acme.com/refunds/status#top thanks", 0},
        {"Here: https://help.acme.com/refunds/status?utm_source=twitter", 0}, /* query dropped as fallback */
        {"Here: https://help.acme.com/refunds/status/ (and more)", 0},
        {"Here: HTTPS://HELP.ACME.COM/refunds/status", 0},
        {"Other: https://help.acme.com/refunds", -1},
        {"no link at all", -1},
        {"xhttps://help.acme.com/refunds/status", -1}, /* not at a word start */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        long got = kb_link_text(kb, cases[i].text, strlen(cases[i].text));
        if (got != cases[i].want)
            fail_msg("%s: got %ld want %ld", cases[i].text, got, cases[i].want);
    }
    kb_free(kb);
}

struct bad_case {
    const char *content;
    const char *want; /* substring of the error after "<dir>/bad.jsonl" */
};

static const struct bad_case bad_cases[] = {
    {"{\"id\":\"a\",\"body\":\"x\"}\n{\"id\":\"b\",\"body\":\"y\"}\n{\"id\": \"c\", \"body\": }\n", ":3: invalid JSON"},
    {"{\"body\":\"x\"}\n", ":1: \"id\" is required"},
    {"{\"id\":\"\",\"body\":\"x\"}\n", ":1: \"id\" is required"},
    {"{\"id\":\"a\"}\n", ":1: \"body\" is required"},
    {"{\"id\":\"a\",\"body\":3}\n", ":1: \"body\" is required"},
    {"\n\n{\"id\":\"a\",\"body\":\"x\",\"tags\":\"refund\"}\n", ":3: \"tags\" must be an array of strings"},
    {"{\"id\":\"a\",\"body\":\"x\",\"brands\":[\"A\", 2]}\n", ":1: \"brands\" must be an array of strings"},
    {"{\"id\":\"a\",\"body\":\"x\",\"title\":[]}\n", ":1: \"title\" must be a string"},
    {"[1,2]\n", ":1: an entry must be a JSON object"},
    {"{\"id\":\"a\",\"body\":\"x\"}\n{\"id\":\"a\",\"body\":\"y\"}\n", ":2: duplicate id \"a\""},
    {"{\"id\":\"a\",\"body\":\"x\",\"id\":\"b\"}\n", ":1: invalid JSON"},
};

static void test_bad_lines(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        write_file("bad.jsonl", bad_cases[i].content);
        char path[256], err[512] = "", want[512];
        snprintf(path, sizeof path, "%s/bad.jsonl", dir);
        snprintf(want, sizeof want, "%s%s", path, bad_cases[i].want);
        struct kb *kb = (struct kb *)1;
        int rc = kb_load(path, &kb, err, sizeof err);
        assert_int_not_equal(rc, T_OK);
        assert_null(kb);
        if (!strstr(err, want))
            fail_msg("case %zu: error \"%s\" lacks \"%s\"", i, err, want);
    }
    char path[256], err[256] = "";
    struct kb *kb = NULL;
    snprintf(path, sizeof path, "%s/missing.jsonl", dir);
    assert_int_equal(kb_load(path, &kb, err, sizeof err), T_ERR_IO);
    assert_non_null(strstr(err, "missing.jsonl"));
}

static void test_load_dir(void **state)
{
    (void)state;
    char sub[128];
    snprintf(sub, sizeof sub, "%s/d", dir);
    assert_int_equal(mkdir(sub, 0700), 0);
    write_file("d/b.jsonl", "{\"id\":\"from-b\",\"body\":\"b\"}\n");
    write_file("d/a.jsonl", "{\"id\":\"from-a\",\"body\":\"a\"}\n");
    write_file("d/notes.txt", "not json at all\n");
    char err[256] = "";
    struct kb *kb = NULL;
    assert_int_equal(kb_load(sub, &kb, err, sizeof err), T_OK);
    assert_int_equal(kb_count(kb), 2);
    assert_string_equal(kb_entry_at(kb, 0)->id, "from-a"); /* sorted order */
    assert_string_equal(kb_entry_at(kb, 1)->id, "from-b");
    kb_free(kb);
    /* a bad line in the second file names that file */
    write_file("d/c.jsonl", "{\"id\":\"x\",\"body\":\"c\"}\n{oops\n");
    assert_int_not_equal(kb_load(sub, &kb, err, sizeof err), T_OK);
    assert_non_null(strstr(err, "/d/c.jsonl:2:"));
    /* duplicate across files names the later one */
    write_file("d/c.jsonl", "{\"id\":\"from-a\",\"body\":\"again\"}\n");
    assert_int_not_equal(kb_load(sub, &kb, err, sizeof err), T_OK);
    assert_non_null(strstr(err, "/d/c.jsonl:1: duplicate id"));
}

static void test_refcount_and_swap(void **state)
{
    (void)state;
    write_file("kb.jsonl", good);
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/kb.jsonl", dir);
    struct kb *a = NULL, *b = NULL;
    assert_int_equal(kb_load(path, &a, err, sizeof err), T_OK);
    assert_int_equal(kb_load(path, &b, err, sizeof err), T_OK);
    assert_true(kb_generation(a) != kb_generation(b));
    assert_true(kb_fingerprint(a) == kb_fingerprint(b)); /* same files, same fingerprint */
    struct app app;
    memset(&app, 0, sizeof app);
    pthread_mutex_init(&app.kb_lock, NULL);
    assert_null(app_kb_acquire(&app));
    app_kb_swap(&app, a);
    struct kb *held = app_kb_acquire(&app); /* a request in flight */
    assert_ptr_equal(held, a);
    app_kb_swap(&app, b);                   /* SIGHUP: a stays alive for the request */
    assert_string_equal(kb_entry_at(held, 0)->id, "refund-status");
    app_kb_release(held);                   /* last reference: a is freed (valgrind/asan check) */
    struct kb *now = app_kb_acquire(&app);
    assert_ptr_equal(now, b);
    app_kb_release(now);
    app_kb_swap(&app, NULL);
    pthread_mutex_destroy(&app.kb_lock);
}

static void test_index_fields(void **state)
{
    (void)state;
    /* the same word in a title outweighs it in a long body; url path words count */
    write_file("kb.jsonl",
               "{\"id\":\"t\",\"title\":\"Refund status\",\"body\":\"General text about orders and shipping.\"}\n"
               "{\"id\":\"b\",\"title\":\"Orders\",\"body\":\"Many words about orders, shipping, delivery and a refund "
               "mentioned in passing among other things.\"}\n"
               "{\"id\":\"u\",\"title\":\"Help\",\"body\":\"x\",\"url\":\"https://help.acme.com/articles/123-refund-status\"}\n");
    char path[256], err[256];
    snprintf(path, sizeof path, "%s/kb.jsonl", dir);
    struct kb *kb = NULL;
    assert_int_equal(kb_load(path, &kb, err, sizeof err), T_OK);
    const struct bm25 *ix = kb_index(kb);
    assert_int_equal(bm25_ndocs(ix), 3);
    assert_int_equal(bm25_df(ix, "refund", 6), 3);
    assert_int_equal(bm25_df(ix, "acm", 3), 0); /* host labels of the url field are not indexed */
    float scores[3] = {0};
    struct bm25_qterm q = {"refund", 6, 1.0f};
    float best = bm25_score(ix, &q, 1, scores);
    assert_true(scores[0] > scores[1]);
    assert_true(scores[2] > scores[1]);
    assert_true(best >= scores[0] && best >= scores[2]);
    kb_free(kb);
}

static void test_bm25_builder(void **state)
{
    (void)state;
    struct bm25_field f = {1.0f, 0.75f};
    struct bm25_builder *b = bm25_builder_new(&f, 1);
    assert_non_null(b);
    assert_int_equal(bm25_builder_add(b, 0, 0, "cat", 3), T_OK);
    assert_int_equal(bm25_builder_add(b, 2, 0, "dog", 3), T_OK);
    assert_int_equal(bm25_builder_add(b, 1, 0, "cat", 3), T_ERR_INTERNAL); /* docs go forward only */
    assert_int_equal(bm25_builder_add(b, 2, 1, "dog", 3), T_ERR_INTERNAL); /* no field 1 */
    struct bm25 *ix = bm25_build(b, 4);
    assert_non_null(ix);
    assert_int_equal(bm25_ndocs(ix), 4);
    assert_int_equal(bm25_nterms(ix), 2);
    float s[4] = {0};
    struct bm25_qterm q[2] = {{"dog", 3, 1.0f}, {"unknown", 7, 5.0f}};
    float best = bm25_score(ix, q, 2, s);
    assert_true(s[2] > 0 && s[0] == 0 && s[1] == 0 && s[3] == 0);
    assert_true(best > 0 && s[2] <= best); /* unknown terms add nothing to the attainable score */
    bm25_free(ix);
    assert_null(bm25_builder_new(&f, 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_load_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_link_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refcount_and_swap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_fields, setup, teardown),
        cmocka_unit_test(test_bm25_builder),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    text_thread_cleanup();
    return rc;
}
