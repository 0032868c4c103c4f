/* Unit tests for alerts: each rule type on positive and negated/benign phrasing, roles, excerpts
 * (redacted), frustration from sentiment, repeat contact from history, and operator rule files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tandem/alerts.h"
#include "tandem/context.h"
#include "tandem/embedded.h"
#include "tandem/error.h"

#define NOW_MS 1717000000000LL /* 2024-05-29 */
#define DAY 86400000LL

struct msg_spec {
    const char *role;
    const char *text;
};

/* A context with the given messages (ids "1700000000000-<i>"). */
static struct context *mk_ctx(const struct msg_spec *m, size_t n)
{
    struct context *c = context_new("c-1");
    assert_non_null(c);
    c->messages = arena_alloc(&c->arena, (n ? n : 1) * sizeof *c->messages);
    assert_non_null(c->messages);
    for (size_t i = 0; i < n; i++) {
        struct ctx_message *cm = &c->messages[i];
        memset(cm, 0, sizeof *cm);
        snprintf(cm->id, sizeof cm->id, "1700000000000-%zu", i);
        cm->role = context_role_from_name(m[i].role);
        cm->role_name = m[i].role;
        cm->text = arena_strdup(&c->arena, m[i].text);
        cm->ts_ms = NOW_MS - (int64_t)(n - i) * 60000;
    }
    c->n_messages = n;
    if (n)
        snprintf(c->newest_id, sizeof c->newest_id, "%s", c->messages[n - 1].id);
    return c;
}

static void add_history(struct context *c, const int64_t *ages_days, const char *const *conv_ids,
                        size_t n)
{
    c->history = arena_alloc(&c->arena, n * sizeof *c->history);
    for (size_t i = 0; i < n; i++) {
        struct ctx_history *h = &c->history[i];
        memset(h, 0, sizeof *h);
        h->ts_ms = NOW_MS - ages_days[i] * DAY;
        snprintf(h->id, sizeof h->id, "%lld-0", (long long)h->ts_ms);
        h->conv_id = conv_ids[i];
        h->summary = "Refund not received; customer jane@example.com";
        h->outcome = "unresolved";
        h->tags = "refund";
    }
    c->n_history = n;
}

static const struct alert_rules *rules(void)
{
    static struct alert_rules *r;
    if (!r) {
        char err[512] = "";
        int rc = alert_rules_load(NULL, &r, err, sizeof err);
        if (rc)
            fail_msg("built-in rules: %s", err);
    }
    return r;
}

static int evaluate(struct context *c, struct alert_list *out)
{
    struct alert_input in;
    int rc = alert_input_init(&in, c, NULL);
    if (!rc)
        rc = alerts_evaluate(rules(), &in, NOW_MS, out);
    alert_input_cleanup(&in);
    return rc;
}

static const struct alert *find(const struct alert_list *l, const char *type)
{
    for (size_t i = 0; i < l->n; i++)
        if (!strcmp(l->items[i].type, type))
            return &l->items[i];
    return NULL;
}

/* One customer message; `fires` must be among the alerts (NULL: none expected of `quiet`), and
 * `quiet` must not be. */
static void test_rule_table(void **state)
{
    (void)state;
    struct {
        const char *text;
        const char *fires;    /* type expected, or NULL */
        const char *severity; /* expected severity of `fires`, or NULL */
        const char *quiet;    /* type that must not fire, or NULL */
    } cases[] = {
        /* fraud */
        {"I didn't make this purchase", "fraud", "high", NULL},
        {"someone used my card to buy stuff", "fraud", "high", NULL},
        {"There's an unauthorized charge on my statement", "fraud", "high", NULL},
        {"I don't recognise this transaction", "fraud", NULL, NULL},
        {"my account was hacked", "fraud", NULL, NULL},
        {"this is not fraud, just a question about my bill", NULL, NULL, "fraud"},
        {"Please turn on fraud protection for me", NULL, NULL, "fraud"},
        /* billing */
        {"I was charged twice for the same order", "billing_error", "medium", NULL},
        {"you charged me the wrong amount", "billing_error", NULL, NULL},
        {"I was overcharged", "billing_error", NULL, NULL},
        {"I'm still being charged after cancelling", "billing_error", NULL, NULL},
        {"I was not charged twice, just once", NULL, NULL, "billing_error"},
        {"Is there an extra charge for express shipping?", NULL, NULL, "billing_error"},
        {"I don't know why you charged me twice", "billing_error", NULL, NULL},
        /* cancellation */
        {"I want to cancel my subscription", "cancellation", "medium", NULL},
        {"Please close my account", "cancellation", NULL, NULL},
        {"I'm switching to a competitor", "cancellation", NULL, NULL},
        {"I don't want to cancel my subscription, just pause it", NULL, NULL, "cancellation"},
        {"I'm not going to cancel my account", NULL, NULL, "cancellation"},
        {"I'm not sure but I want to cancel my account", "cancellation", NULL, NULL},
        {"See https://example.com/cancel-subscription for details", NULL, NULL, "cancellation"},
        /* legal */
        {"I will be contacting my lawyer", "legal", "high", NULL},
        {"I'm going to report you to the FTC", "legal", NULL, NULL},
        {"Jag anmäler er till Finansinspektionen", "legal", NULL, NULL},
        {"I'll just do a chargeback then", "legal", "medium", NULL},
        {"Sue from your team was very helpful", NULL, NULL, "legal"},
        {"I don't want to involve lawyers", NULL, NULL, "legal"},
        /* vulnerable */
        {"my husband passed away last month", "vulnerable_customer", "high", NULL},
        {"my mum died and I need to close her account", "vulnerable_customer", NULL, NULL},
        {"I lost my job and can't afford the payments", "vulnerable_customer", NULL, NULL},
        {"I'm in hospital right now", "vulnerable_customer", NULL, NULL},
        {"My phone died so I couldn't reply", NULL, NULL, "vulnerable_customer"},
        {"the battery died again", NULL, NULL, "vulnerable_customer"},
        /* repeat contact, stated */
        {"This is the third time I'm contacting you about this", "repeat_contact", NULL, NULL},
        {"It's still not fixed", "repeat_contact", NULL, NULL},
        {"I already reported this last week", "repeat_contact", NULL, NULL},
        {"I've contacted you several times", "repeat_contact", NULL, NULL},
        {"This is the first time I'm contacting you", NULL, NULL, "repeat_contact"},
        /* frustration: escalation */
        {"I want to speak to a manager", "frustration", "high", NULL},
        {"Let me talk to a real person please", "frustration", "high", NULL},
        {"I'm the account manager for our team", NULL, NULL, "frustration"},
        {"I don't need to speak to a manager, you've been great", NULL, NULL, "frustration"},
        /* benign */
        {"Can you help me reset my password?", NULL, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct msg_spec m[] = {{"customer", cases[i].text}};
        struct context *c = mk_ctx(m, 1);
        struct alert_list l;
        assert_int_equal(evaluate(c, &l), T_OK);
        if (cases[i].fires) {
            const struct alert *a = find(&l, cases[i].fires);
            if (!a)
                fail_msg("case %zu \"%s\": %s did not fire", i, cases[i].text, cases[i].fires);
            if (cases[i].severity && strcmp(alert_severity_name(a->severity), cases[i].severity))
                fail_msg("case %zu: severity %s, expected %s", i,
                         alert_severity_name(a->severity), cases[i].severity);
            assert_string_equal(a->message_id, "1700000000000-0");
            assert_true(a->reason && a->reason[0]);
            assert_non_null(a->excerpt);
        }
        if (cases[i].quiet && find(&l, cases[i].quiet))
            fail_msg("case %zu \"%s\": %s fired (rule %s)", i, cases[i].text, cases[i].quiet,
                     find(&l, cases[i].quiet)->rule);
        if (!cases[i].fires && !cases[i].quiet && l.n)
            fail_msg("case %zu \"%s\": unexpected %s alert", i, cases[i].text, l.items[0].type);
        alert_list_cleanup(&l);
        context_free(c);
    }
}

/* Rules look at customer messages only: an agent repeating the words raises nothing. */
static void test_roles(void **state)
{
    (void)state;
    struct msg_spec m[] = {{"agent", "I see you were charged twice, and you want to cancel "
                                      "your subscription"},
                           {"bot", "If you didn't make this purchase, tell us"}};
    struct context *c = mk_ctx(m, 2);
    struct alert_list l;
    assert_int_equal(evaluate(c, &l), T_OK);
    assert_int_equal(l.n, 0);
    alert_list_cleanup(&l);
    context_free(c);
}

/* The excerpt quotes the trigger, redacted, and ids point at the right message. */
static void test_excerpt_redacted(void **state)
{
    (void)state;
    struct msg_spec m[] = {
        {"customer", "hello"},
        {"agent", "Hi, how can I help?"},
        {"customer", "My email is jane.doe@example.com and someone used my card 4111 1111 1111 "
                     "1111 last night, please block it"},
    };
    struct context *c = mk_ctx(m, 3);
    struct alert_list l;
    assert_int_equal(evaluate(c, &l), T_OK);
    const struct alert *a = find(&l, "fraud");
    assert_non_null(a);
    assert_string_equal(a->message_id, "1700000000000-2");
    assert_non_null(strstr(a->excerpt, "someone used my card"));
    assert_null(strstr(a->excerpt, "jane.doe"));
    assert_null(strstr(a->excerpt, "4111"));
    assert_non_null(strstr(a->excerpt, "[EMAIL_1]"));
    json_t *j = alert_list_to_json(&l);
    assert_non_null(j);
    json_t *o = json_array_get(j, 0);
    assert_string_equal(json_string_value(json_object_get(o, "type")), "fraud");
    assert_string_equal(json_string_value(json_object_get(o, "severity")), "high");
    assert_string_equal(json_string_value(json_object_get(o, "message_id")), "1700000000000-2");
    assert_non_null(json_object_get(o, "reason"));
    json_decref(j);
    alert_list_cleanup(&l);
    context_free(c);
}

/* One alert per type: the most severe; severities order the list. */
static void test_one_per_type(void **state)
{
    (void)state;
    struct msg_spec m[] = {
        {"customer", "I want to cancel my subscription"},
        {"customer", "I'm trying to cancel"},
        {"customer", "also I was charged twice"},
        {"customer", "I'm calling my lawyer"},
    };
    struct context *c = mk_ctx(m, 4);
    struct alert_list l;
    assert_int_equal(evaluate(c, &l), T_OK);
    size_t n_cancel = 0;
    for (size_t i = 0; i < l.n; i++)
        n_cancel += !strcmp(l.items[i].type, "cancellation");
    assert_int_equal(n_cancel, 1);
    const struct alert *a = find(&l, "cancellation");
    assert_string_equal(alert_severity_name(a->severity), "medium");
    assert_string_equal(a->message_id, "1700000000000-0");
    assert_string_equal(l.items[0].type, "legal"); /* high first */
    for (size_t i = 1; i < l.n; i++)
        assert_true(l.items[i - 1].severity >= l.items[i].severity);
    alert_list_cleanup(&l);
    context_free(c);
}

static void test_frustration_from_sentiment(void **state)
{
    (void)state;
    struct msg_spec angry[] = {
        {"customer", "My order hasn't arrived"},
        {"agent", "Sorry about that, could you share the order number?"},
        {"customer", "This is ridiculous, absolutely useless service"},
        {"agent", "I understand."},
        {"customer", "I am furious. Worst experience ever!!!"},
    };
    struct context *c = mk_ctx(angry, 5);
    struct alert_list l;
    assert_int_equal(evaluate(c, &l), T_OK);
    const struct alert *a = find(&l, "frustration");
    assert_non_null(a);
    assert_string_equal(a->rule, "sentiment");
    assert_true(a->severity >= ALERT_MEDIUM);
    assert_non_null(strstr(a->reason, "negative"));
    assert_true(!strcmp(a->message_id, "1700000000000-4") ||
                !strcmp(a->message_id, "1700000000000-2"));
    alert_list_cleanup(&l);
    context_free(c);

    struct msg_spec calm[] = {
        {"customer", "Hi, my order hasn't arrived yet"},
        {"agent", "Let me check"},
        {"customer", "Thanks, that's great, really appreciate it!"},
    };
    c = mk_ctx(calm, 3);
    assert_int_equal(evaluate(c, &l), T_OK);
    assert_null(find(&l, "frustration"));
    alert_list_cleanup(&l);
    context_free(c);
}

static void test_repeat_contact_history(void **state)
{
    (void)state;
    struct msg_spec m[] = {{"customer", "hello"}};
    struct {
        int64_t ages[4];
        const char *convs[4];
        size_t n;
        const char *severity; /* NULL: no alert */
        size_t count30;
    } cases[] = {
        {{2, 10}, {"a", "b"}, 2, "medium", 2},
        {{2, 10, 20}, {"a", "b", "d"}, 3, "high", 3},
        {{2, 40}, {"a", "b"}, 2, NULL, 1},          /* one is older than 30 days */
        {{2, 10}, {"a", "a"}, 2, NULL, 1},          /* the same conversation twice */
        {{1, 3}, {"c-1", "b"}, 2, NULL, 1},         /* this conversation is no earlier contact */
        {{0}, {NULL}, 0, NULL, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct context *c = mk_ctx(m, 1);
        add_history(c, cases[i].ages, cases[i].convs, cases[i].n);
        assert_int_equal(alert_count_contacts(c, NOW_MS, 30), cases[i].count30);
        struct alert_list l;
        assert_int_equal(evaluate(c, &l), T_OK);
        const struct alert *a = find(&l, "repeat_contact");
        if (!cases[i].severity) {
            if (a)
                fail_msg("case %zu: unexpected repeat_contact", i);
        } else {
            if (!a)
                fail_msg("case %zu: no repeat_contact", i);
            assert_string_equal(alert_severity_name(a->severity), cases[i].severity);
            assert_string_equal(a->rule, "history");
            assert_string_equal(a->message_id, "");
            assert_null(strstr(a->excerpt, "jane@example.com")); /* history text is redacted */
        }
        alert_list_cleanup(&l);
        context_free(c);
    }
}

static const char *builtin(void)
{
    const struct embedded_file *f = embedded_find("alert_rules.json");
    assert_non_null(f);
    return (const char *)f->data;
}

/* An operator's file: replaces a rule by id, disables one, adds a type, changes numbers. */
static void test_operator_merge(void **state)
{
    (void)state;
    const char *extra =
        "{\"rules\": ["
        " {\"id\": \"cancellation\", \"type\": \"cancellation\", \"severity\": \"high\","
        "  \"reason\": \"Churn risk\", \"phrases\": [\"leave ... for good\"]},"
        " {\"id\": \"chargeback\", \"disabled\": true},"
        " {\"id\": \"competitor\", \"type\": \"competitor_mention\", \"severity\": \"low\","
        "  \"reason\": \"Mentions a competitor\", \"phrases\": [\"acmecorp\"], \"roles\": [\"customer\", \"agent\"]}"
        "], \"repeat_contact\": {\"min_contacts\": 5}}";
    struct alert_rules *r;
    char err[256] = "";
    int rc = alert_rules_load_json(builtin(), extra, &r, err, sizeof err);
    if (rc)
        fail_msg("merge failed: %s", err);
    struct alert_rules *base;
    assert_int_equal(alert_rules_load_json(builtin(), NULL, &base, err, sizeof err), T_OK);
    assert_int_equal(alert_rules_count(r), alert_rules_count(base)); /* -1 disabled +1 new */
    assert_int_equal(alert_rules_repeat_min(r), 5);
    assert_int_equal(alert_rules_repeat_min(base), 2);
    struct msg_spec m[] = {{"customer", "I want to cancel my subscription"},
                           {"customer", "I will leave you for good"},
                           {"agent", "AcmeCorp is not better"},
                           {"customer", "fine, chargeback it is"}};
    struct context *c = mk_ctx(m, 4);
    struct alert_input in;
    assert_int_equal(alert_input_init(&in, c, NULL), T_OK);
    struct alert_list l;
    assert_int_equal(alerts_evaluate(r, &in, NOW_MS, &l), T_OK);
    const struct alert *a = find(&l, "cancellation");
    assert_non_null(a);
    assert_string_equal(a->reason, "Churn risk");
    assert_string_equal(a->message_id, "1700000000000-1"); /* the replaced rule's phrase */
    assert_non_null(find(&l, "competitor_mention"));
    assert_null(find(&l, "legal")); /* chargeback disabled */
    alert_list_cleanup(&l);
    assert_int_equal(alerts_evaluate(base, &in, NOW_MS, &l), T_OK);
    assert_non_null(find(&l, "legal"));
    assert_null(find(&l, "competitor_mention"));
    alert_list_cleanup(&l);
    alert_input_cleanup(&in);
    context_free(c);
    alert_rules_free(r);
    alert_rules_free(base);
    alert_rules_free(NULL);
}

static void test_bad_rules(void **state)
{
    (void)state;
    struct {
        const char *extra;
        const char *needle;
    } cases[] = {
        {"{", "(extra rules):1"},
        {"[]", "top level"},
        {"{\"rulez\": []}", "unknown field \"rulez\""},
        {"{\"rules\": [{\"id\": \"x\", \"type\": \"t\", \"severity\": \"urgent\", \"reason\": \"r\","
         " \"phrases\": [\"a\"]}]}", "severity"},
        {"{\"rules\": [{\"id\": \"x\", \"type\": \"t\", \"severity\": \"low\", \"reason\": \"r\","
         " \"phrases\": [\"a ...\"]}]}", "rule 'x'"},
        {"{\"rules\": [{\"id\": \"x\", \"type\": \"t\", \"severity\": \"low\", \"reason\": \"r\","
         " \"phrases\": []}]}", "empty"},
        {"{\"rules\": [{\"id\": \"x\", \"type\": \"Bad Type\", \"severity\": \"low\", \"reason\": \"r\","
         " \"phrases\": [\"a\"]}]}", "type"},
        {"{\"rules\": [{\"id\": \"x\", \"type\": \"t\", \"severity\": \"low\", \"phrases\": [\"a\"]}]}",
         "reason"},
        {"{\"rules\": [{\"id\": \"x\", \"type\": \"t\", \"severity\": \"low\", \"reason\": \"r\","
         " \"phrases\": [\"a\"], \"roles\": [\"robot\"]}]}", "roles"},
        {"{\"frustration\": {\"threshold\": 5}}", "frustration.threshold"},
        {"{\"negation\": {\"words\": [\"not really\"]}}", "negation word"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct alert_rules *r = NULL;
        char err[512] = "";
        int rc = alert_rules_load_json(builtin(), cases[i].extra, &r, err, sizeof err);
        if (rc != T_ERR_CONFIG || !strstr(err, cases[i].needle))
            fail_msg("case %zu: rc %d err \"%s\", expected \"%s\"", i, rc, err, cases[i].needle);
        assert_null(r);
    }
}

static void test_rules_file(void **state)
{
    (void)state;
    char path[] = "/tmp/tandem_rules_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *doc = "{\"rules\": [{\"id\": \"x\", \"type\": \"t\", \"severity\": \"low\","
                      " \"reason\": \"r\", \"phrases\": [\"bad ...\"]}]}";
    assert_int_equal(write(fd, doc, strlen(doc)), (ssize_t)strlen(doc));
    close(fd);
    struct alert_rules *r = NULL;
    char err[512] = "";
    assert_int_equal(alert_rules_load(path, &r, err, sizeof err), T_ERR_CONFIG);
    assert_non_null(strstr(err, path)); /* names the file */
    unlink(path);
    assert_int_equal(alert_rules_load(path, &r, err, sizeof err), T_ERR_IO);
    assert_non_null(strstr(err, "TANDEM_ALERT_RULES"));
    assert_int_equal(alert_rules_load("", &r, err, sizeof err), T_OK);
    alert_rules_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rule_table),
        cmocka_unit_test(test_roles),
        cmocka_unit_test(test_excerpt_redacted),
        cmocka_unit_test(test_one_per_type),
        cmocka_unit_test(test_frustration_from_sentiment),
        cmocka_unit_test(test_repeat_contact_history),
        cmocka_unit_test(test_operator_merge),
        cmocka_unit_test(test_bad_rules),
        cmocka_unit_test(test_rules_file),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
