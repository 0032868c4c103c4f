/* Unit tests for src/panel.c: which files /panel/ serves, with which type, and what it refuses. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "tandem/embedded.h"
#include "tandem/error.h"
#include "tandem/panel.h"

struct asset_case {
    const char *seg;          /* last path segment after /panel/ */
    const char *want_name;    /* NULL: must be refused */
    const char *want_ctype_prefix;
};

static const struct asset_case asset_cases[] = {
    {"", "index.html", "text/html; charset=utf-8"},
    {"index.html", "index.html", "text/html; charset=utf-8"},
    {"panel.js", "panel.js", "text/javascript; charset=utf-8"},
    {"panel.css", "panel.css", "text/css; charset=utf-8"},
    /* other embedded data is never served, though embedded_find() knows it */
    {"stopwords_en.txt", NULL, NULL},
    {"alert_rules.json", NULL, NULL},
    {"..", NULL, NULL},
    {"../panel.js", NULL, NULL},
    {"panel.js/", NULL, NULL},
    {"PANEL.JS", NULL, NULL},
    {"panel.js%00", NULL, NULL},
    {".", NULL, NULL},
};

static void test_find_asset_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof asset_cases / sizeof asset_cases[0]; i++) {
        const struct asset_case *c = &asset_cases[i];
        struct panel_asset a;
        memset(&a, 0, sizeof a);
        int err = panel_find_asset(c->seg, &a);
        if (!c->want_name) {
            if (err != T_ERR_NOT_FOUND_ITEM)
                fail_msg("segment '%s' should be refused, got %d", c->seg, err);
            continue;
        }
        if (err != T_OK)
            fail_msg("segment '%s' should be served (is panel/ in EMBED_SRCS?), got %d", c->seg, err);
        assert_string_equal(a.name, c->want_name);
        assert_string_equal(a.content_type, c->want_ctype_prefix);
        /* the bytes are the embedded file's */
        const struct embedded_file *f = embedded_find(c->want_name);
        assert_non_null(f);
        assert_ptr_equal(a.data, f->data);
        assert_int_equal(a.len, f->len);
        assert_true(a.len > 0);
    }
}

static void test_null_segment(void **state)
{
    (void)state;
    struct panel_asset a;
    assert_int_equal(panel_find_asset(NULL, &a), T_ERR_NOT_FOUND_ITEM);
}

/* A non-panel file really is embedded: otherwise the refusal above proves nothing. */
static void test_refused_file_exists(void **state)
{
    (void)state;
    assert_non_null(embedded_find("stopwords_en.txt"));
}

/* The page follows its own CSP: no inline script or style, no event-handler attributes. */
static void test_index_has_no_inline_code(void **state)
{
    (void)state;
    struct panel_asset a;
    assert_int_equal(panel_find_asset("", &a), T_OK);
    const char *html = (const char *)a.data;
    assert_null(strstr(html, "<style"));
    assert_null(strstr(html, " style="));
    assert_null(strstr(html, " onclick="));
    assert_null(strstr(html, " onload="));
    assert_null(strstr(html, "javascript:"));
    /* every <script has a src */
    for (const char *p = strstr(html, "<script"); p; p = strstr(p + 1, "<script")) {
        const char *end = strchr(p, '>');
        assert_non_null(end);
        const char *src = strstr(p, " src=");
        assert_true(src && src < end);
    }
}

/* No HTML sinks in the script: customer and model text go in as text only. */
static void test_script_has_no_html_sinks(void **state)
{
    (void)state;
    struct panel_asset a;
    assert_int_equal(panel_find_asset("panel.js", &a), T_OK);
    const char *js = (const char *)a.data;
    static const char *const sinks[] = {"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write",
                                        "eval(", "new Function", "srcdoc", "createContextualFragment"};
    for (size_t i = 0; i < sizeof sinks / sizeof sinks[0]; i++)
        if (strstr(js, sinks[i]))
            fail_msg("panel.js uses %s", sinks[i]);
}

static void test_csp_is_strict(void **state)
{
    (void)state;
    const char *csp = PANEL_CSP;
    assert_non_null(strstr(csp, "default-src 'none'"));
    assert_non_null(strstr(csp, "script-src 'self';"));
    assert_non_null(strstr(csp, "style-src 'self';"));
    assert_null(strstr(csp, "unsafe"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_find_asset_table),      cmocka_unit_test(test_null_segment),
        cmocka_unit_test(test_refused_file_exists),   cmocka_unit_test(test_index_has_no_inline_code),
        cmocka_unit_test(test_script_has_no_html_sinks), cmocka_unit_test(test_csp_is_strict),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
