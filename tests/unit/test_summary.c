/* Unit tests for summary: facts (amounts, order numbers, dates, PII masked), wants, tried, open
 * questions, sentiment section, bot handoff, customer history, empty conversations, determinism. */
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

#include "tandem/alerts.h"
#include "tandem/context.h"
#include "tandem/error.h"
#include "tandem/summary.h"

#define TS_MS 1715342400000LL  /* 2024-05-10 12:00 UTC */
#define NOW_MS 1717000000000LL /* 2024-05-29 */
#define DAY 86400000LL

/* ---- facts ---- */

static json_t *facts_of(const char *text)
{
    json_t *f = summary_facts_new();
    assert_non_null(f);
    assert_int_equal(summary_extract_facts(text, strlen(text), TS_MS, f), T_OK);
    return f;
}

static void test_amounts(void **state)
{
    (void)state;
    struct {
        const char *text, *amount_text;
        double value;
        const char *currency;
    } cases[] = {
        {"I paid $1,234.56 for it", "$1,234.56", 1234.56, "USD"},
        {"it cost 12,50 € yesterday", "12,50 €", 12.5, "EUR"},
        {"charged SEK 499 twice", "SEK 499", 499, "SEK"},
        {"the plan is 499 kr per month", "499 kr", 499, "SEK"},
        {"only 99:- on sale", "99:-", 99, "SEK"},
        {"refund £5 please", "£5", 5, "GBP"},
        {"EUR 1.234,50 was taken", "EUR 1.234,50", 1234.5, "EUR"},
        {"1.234 € is too much", "1.234 €", 1234, "EUR"},
        {"about 20 dollars", "20 dollars", 20, "USD"},
        {"€12.99 for shipping", "€12.99", 12.99, "EUR"},
        {"USD 12", "USD 12", 12, "USD"},
        {"$12.5", "$12.5", 12.5, "USD"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *f = facts_of(cases[i].text);
        json_t *a = json_array_get(json_object_get(f, "amounts"), 0);
        if (!a)
            fail_msg("case %zu \"%s\": no amount", i, cases[i].text);
        assert_string_equal(json_string_value(json_object_get(a, "text")), cases[i].amount_text);
        double v = json_number_value(json_object_get(a, "value"));
        if (fabs(v - cases[i].value) > 1e-9)
            fail_msg("case %zu: value %f, expected %f", i, v, cases[i].value);
        assert_string_equal(json_string_value(json_object_get(a, "currency")), cases[i].currency);
        json_decref(f);
    }
    const char *none[] = {"I have 3 kids", "version 12.5 crashes", "call me at 5", "a$5b",
                          "room 101 is free"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        json_t *f = facts_of(none[i]);
        if (json_array_size(json_object_get(f, "amounts")))
            fail_msg("\"%s\": unexpected amount", none[i]);
        json_decref(f);
    }
}

static void test_ids(void **state)
{
    (void)state;
    struct {
        const char *text;
        const char *order;    /* expected order number, or NULL */
        const char *ref_kind; /* expected reference kind, or NULL */
        const char *ref;
    } cases[] = {
        {"my order #A12345 never came", "A12345", NULL, NULL},
        {"order 123456789 is late", "123456789", NULL, NULL},
        {"My order number is 987654", "987654", NULL, NULL},
        {"Order no: AB-1234-5678", "AB-1234-5678", NULL, NULL},
        {"tracking number 1Z999AA10123456784", NULL, "tracking", "1Z999AA10123456784"},
        {"booking ref XK4411Z", NULL, "booking", "XK4411Z"},
        {"#blessed #fail", NULL, NULL, NULL},
        {"I ordered 2 shirts", NULL, NULL, NULL},
        {"order number is abc", NULL, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *f = facts_of(cases[i].text);
        json_t *orders = json_object_get(f, "order_numbers");
        json_t *refs = json_object_get(f, "references");
        if (cases[i].order) {
            if (json_array_size(orders) != 1)
                fail_msg("case %zu \"%s\": %zu orders", i, cases[i].text, json_array_size(orders));
            assert_string_equal(json_string_value(json_array_get(orders, 0)), cases[i].order);
        } else if (json_array_size(orders)) {
            fail_msg("case %zu \"%s\": unexpected order %s", i, cases[i].text,
                     json_string_value(json_array_get(orders, 0)));
        }
        if (cases[i].ref_kind) {
            json_t *r = json_array_get(refs, 0);
            assert_non_null(r);
            assert_string_equal(json_string_value(json_object_get(r, "kind")), cases[i].ref_kind);
            assert_string_equal(json_string_value(json_object_get(r, "value")), cases[i].ref);
        } else {
            assert_int_equal(json_array_size(refs), 0);
        }
        json_decref(f);
    }
}

static void test_dates(void **state)
{
    (void)state;
    struct {
        const char *text, *date_text, *iso; /* iso NULL: null expected */
    } cases[] = {
        {"it was due May 3", "May 3", "2024-05-03"},
        {"ordered on May 3rd, 2023", "May 3rd, 2023", "2023-05-03"},
        {"since 2024-05-01 nothing", "2024-05-01", "2024-05-01"},
        {"paid on 03/05/2024", "03/05/2024", NULL}, /* day-first or month-first: unknown */
        {"paid on 25/12/2023", "25/12/2023", "2023-12-25"},
        {"paid on 12/25/2023", "12/25/2023", "2023-12-25"},
        {"delivered 3 May", "3 May", "2024-05-03"},
        {"the 3rd of May", "3rd of May", "2024-05-03"},
        {"it broke yesterday", "yesterday", "2024-05-09"},
        {"I wrote 3 days ago", "3 days ago", "2024-05-07"},
        {"on Dec 24", "Dec 24", "2024-12-24"},
        {"on 31.01.24", "31.01.24", "2024-01-31"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *f = facts_of(cases[i].text);
        json_t *d = json_array_get(json_object_get(f, "dates"), 0);
        if (!d)
            fail_msg("case %zu \"%s\": no date", i, cases[i].text);
        assert_string_equal(json_string_value(json_object_get(d, "text")), cases[i].date_text);
        json_t *iso = json_object_get(d, "iso");
        if (cases[i].iso)
            assert_string_equal(json_string_value(iso), cases[i].iso);
        else
            assert_true(json_is_null(iso));
        json_decref(f);
    }
    const char *none[] = {"I may 3 times try", "version 1.2.3", "ip 10.0.0.1", "it is 12/50",
                          "march on"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        json_t *f = facts_of(none[i]);
        if (json_array_size(json_object_get(f, "dates")))
            fail_msg("\"%s\": unexpected date %s", none[i],
                     json_string_value(json_object_get(json_array_get(json_object_get(f, "dates"), 0), "text")));
        json_decref(f);
    }
}

/* ---- whole summaries ---- */

struct msg_spec {
    const char *role;
    const char *text;
};

static struct context *mk_ctx(const char *id, const struct msg_spec *m, size_t n)
{
    struct context *c = context_new(id);
    assert_non_null(c);
    c->messages = arena_alloc(&c->arena, (n ? n : 1) * sizeof *c->messages);
    for (size_t i = 0; i < n; i++) {
        struct ctx_message *cm = &c->messages[i];
        memset(cm, 0, sizeof *cm);
        snprintf(cm->id, sizeof cm->id, "1715342400000-%zu", i);
        cm->role = context_role_from_name(m[i].role);
        cm->role_name = m[i].role;
        cm->text = arena_strdup(&c->arena, m[i].text);
        cm->ts_ms = TS_MS + (int64_t)i * 1000;
    }
    c->n_messages = n;
    if (n)
        snprintf(c->newest_id, sizeof c->newest_id, "%s", c->messages[n - 1].id);
    return c;
}

static void set_meta(struct context *c, const char *k, const char *v)
{
    struct ctx_kv *nm = arena_alloc(&c->arena, (c->n_meta + 1) * sizeof *nm);
    if (c->n_meta)
        memcpy(nm, c->meta, c->n_meta * sizeof *nm);
    nm[c->n_meta].key = k;
    nm[c->n_meta].value = v;
    c->meta = nm;
    c->n_meta++;
}

static const struct alert_rules *rules(void)
{
    static struct alert_rules *r;
    if (!r) {
        char err[256];
        assert_int_equal(alert_rules_load(NULL, &r, err, sizeof err), T_OK);
    }
    return r;
}

static json_t *build(struct context *c)
{
    json_t *out = NULL;
    int rc = summary_build(c, rules(), NOW_MS, &out);
    if (rc)
        fail_msg("summary_build: %d", rc);
    return out;
}

static json_t *conv_of(json_t *s)
{
    return json_object_get(s, "conversation");
}

/* Any element of arr (objects) with field == value; NULL if none. */
static json_t *find_obj(json_t *arr, const char *field, const char *value)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *s = json_string_value(json_object_get(v, field));
        if (s && !strcmp(s, value))
            return v;
    }
    return NULL;
}

static void test_conversation(void **state)
{
    (void)state;
    struct msg_spec m[] = {
        {"customer", "Hi there"},
        {"customer", "I was charged twice for my order #A12345 and I need a refund of $49.99. "
                     "My email is jane.doe@example.com"},
        {"agent", "Hi Jane, sorry to hear that! Could you provide the email address on the "
                  "account?"},
        {"customer", "I already restarted the app and logged out, it didn't help"},
        {"agent", "Thanks. I have refunded the duplicate charge. Please try clearing the cache."},
        {"customer", "Thanks. When will the money be back on my card?"},
    };
    struct context *c = mk_ctx("c-42", m, sizeof m / sizeof m[0]);
    json_t *s = build(c);
    assert_string_equal(json_string_value(json_object_get(s, "conversation_id")), "c-42");
    assert_string_equal(json_string_value(json_object_get(s, "based_on")), "1715342400000-5");
    json_t *cv = conv_of(s);
    const char *wants = json_string_value(json_object_get(cv, "wants"));
    assert_non_null(wants);
    if (!strstr(wants, "charged twice"))
        fail_msg("wants: \"%s\"", wants);
    assert_null(strstr(wants, "Hi there"));
    assert_true(json_array_size(json_object_get(cv, "wants_ranked")) >= 1);

    json_t *tried = json_object_get(cv, "tried");
    json_t *asked = find_obj(tried, "kind", "asked");
    assert_non_null(asked);
    assert_string_equal(json_string_value(json_object_get(asked, "by")), "agent");
    char *items = json_dumps(json_object_get(asked, "asked_for"), 0);
    assert_non_null(strstr(items, "email"));
    free(items);
    json_t *did = find_obj(tried, "kind", "did");
    assert_non_null(did);
    assert_non_null(strstr(json_string_value(json_object_get(did, "text")), "refunded"));
    json_t *ctried = find_obj(tried, "by", "customer");
    assert_non_null(ctried);
    assert_non_null(strstr(json_string_value(json_object_get(ctried, "text")), "restarted"));
    assert_non_null(find_obj(tried, "kind", "suggested"));

    json_t *facts = json_object_get(cv, "facts");
    assert_string_equal(json_string_value(json_array_get(json_object_get(facts, "order_numbers"), 0)),
                        "A12345");
    json_t *amt = json_array_get(json_object_get(facts, "amounts"), 0);
    assert_true(fabs(json_number_value(json_object_get(amt, "value")) - 49.99) < 1e-9);

    json_t *oq = json_object_get(cv, "open_questions");
    assert_int_equal(json_array_size(oq), 1);
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(oq, 0), "text")),
                           "When will the money"));
    json_t *sent = json_object_get(cv, "sentiment");
    assert_int_equal(json_array_size(json_object_get(sent, "per_turn")), 4);
    assert_non_null(json_object_get(sent, "trend"));
    assert_non_null(find_obj(json_object_get(cv, "alerts"), "type", "billing_error"));
    assert_null(json_object_get(cv, "handoff"));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(cv, "counts"), "customer")), 4);

    /* no PII anywhere in the answer */
    char *dump = json_dumps(s, 0);
    assert_null(strstr(dump, "jane.doe@example.com"));
    free(dump);
    /* deterministic */
    json_t *s2 = build(c);
    assert_true(json_equal(s, s2));
    json_decref(s2);
    json_decref(s);
    context_free(c);
}

/* PII inside a fact: the fact is the placeholder, never the value. */
static void test_fact_pii_masked(void **state)
{
    (void)state;
    struct msg_spec m[] = {
        {"customer", "my order number is 4111 1111 1111 1111 and my mail jane@example.com"},
        {"customer", "ticket id jane@example.com"},
    };
    struct context *c = mk_ctx("c-1", m, 2);
    json_t *s = build(c);
    json_t *facts = json_object_get(conv_of(s), "facts");
    char *dump = json_dumps(facts, 0);
    assert_null(strstr(dump, "4111"));
    assert_null(strstr(dump, "jane@"));
    json_t *orders = json_object_get(facts, "order_numbers");
    assert_int_equal(json_array_size(orders), 1);
    assert_string_equal(json_string_value(json_array_get(orders, 0)), "[CARD_1]");
    json_t *ref = json_array_get(json_object_get(facts, "references"), 0);
    assert_string_equal(json_string_value(json_object_get(ref, "value")), "[EMAIL_1]");
    free(dump);
    json_decref(s);
    context_free(c);
}

/* A bare id answering the agent's question about the order number. */
static void test_bare_order_number(void **state)
{
    (void)state;
    struct msg_spec m[] = {
        {"customer", "Where is my refund?"},
        {"agent", "May I have your order ID?"},
        {"customer", "A6730536"},
    };
    struct context *c = mk_ctx("c-1", m, 3);
    json_t *s = build(c);
    json_t *orders = json_object_get(json_object_get(conv_of(s), "facts"), "order_numbers");
    assert_int_equal(json_array_size(orders), 1);
    assert_string_equal(json_string_value(json_array_get(orders, 0)), "A6730536");
    json_decref(s);
    context_free(c);
}

static void test_open_questions(void **state)
{
    (void)state;
    struct msg_spec m[] = {
        {"customer", "How do I change my delivery address?"},
        {"agent", "You can change it under Orders."},
        {"customer", "ok thanks. and why was I charged for shipping"},
        {"customer", "how are you?"},
    };
    struct context *c = mk_ctx("c-1", m, 4);
    json_t *s = build(c);
    json_t *oq = json_object_get(conv_of(s), "open_questions");
    assert_int_equal(json_array_size(oq), 1);
    assert_non_null(strstr(json_string_value(json_object_get(json_array_get(oq, 0), "text")),
                           "why was I charged"));
    assert_string_equal(json_string_value(json_object_get(json_array_get(oq, 0), "message_id")),
                        "1715342400000-2");
    json_decref(s);
    context_free(c);
}

static void test_sentiment_trend(void **state)
{
    (void)state;
    struct msg_spec m[] = {
        {"customer", "Hi, thanks for the quick reply, great service"},
        {"agent", "Happy to help"},
        {"customer", "Hmm it still doesn't work"},
        {"agent", "Please restart"},
        {"customer", "Still broken. This is ridiculous and I am really angry now!!!"},
    };
    struct context *c = mk_ctx("c-1", m, 5);
    json_t *s = build(c);
    json_t *sent = json_object_get(conv_of(s), "sentiment");
    assert_string_equal(json_string_value(json_object_get(sent, "trend")), "worsening");
    assert_string_equal(json_string_value(json_object_get(sent, "label")), "negative");
    json_t *last = json_array_get(json_object_get(sent, "per_turn"), 2);
    assert_string_equal(json_string_value(json_object_get(last, "message_id")), "1715342400000-4");
    assert_true(json_number_value(json_object_get(last, "score")) < -0.5);
    assert_non_null(find_obj(json_object_get(conv_of(s), "alerts"), "type", "frustration"));
    json_decref(s);
    context_free(c);
}

static void test_handoff(void **state)
{
    (void)state;
    struct msg_spec m[] = {
        {"bot", "Hi! I'm the virtual assistant. How can I help?"},
        {"customer", "my package never arrived and I want my money back"},
        {"bot", "Sorry, I didn't understand that. Could you rephrase?"},
        {"customer", "package did not arrive"},
        {"bot", "Sorry, I didn't understand that. Could you rephrase?"},
        {"customer", "agent"},
        {"bot", "Connecting you to an agent now."},
        {"system", "handoff reason: intent_not_found"},
        {"agent", "Hi, I'm Anna. I see your package didn't arrive, let me check."},
    };
    struct context *c = mk_ctx("c-1", m, sizeof m / sizeof m[0]);
    set_meta(c, "handoff_from_bot", "1");
    json_t *s = build(c);
    json_t *h = json_object_get(conv_of(s), "handoff");
    assert_non_null(h);
    assert_int_equal(json_integer_value(json_object_get(h, "bot_messages")), 4);
    assert_int_equal(json_integer_value(json_object_get(h, "customer_messages")), 3);
    json_t *reasons = json_object_get(h, "reasons");
    assert_non_null(find_obj(reasons, "code", "customer_asked_for_human"));
    assert_non_null(find_obj(reasons, "code", "bot_could_not_help"));
    assert_non_null(find_obj(reasons, "code", "bot_repeated_itself"));
    assert_non_null(find_obj(reasons, "code", "bot_handed_over"));
    assert_null(find_obj(reasons, "code", "unknown"));
    const char *reason = json_string_value(json_object_get(h, "reason"));
    assert_non_null(strstr(reason, "asked for a person"));
    assert_non_null(strstr(json_string_value(json_object_get(h, "customer_said")), "package"));
    assert_string_equal(json_string_value(json_object_get(h, "first_agent_message_id")),
                        "1715342400000-8");
    assert_string_equal(json_string_value(json_object_get(h, "last_bot_message_id")),
                        "1715342400000-6");
    assert_non_null(strstr(json_string_value(json_object_get(h, "note")), "intent_not_found"));
    json_t *steps = json_object_get(h, "bot_steps");
    assert_true(json_array_size(steps) >= 2 && json_array_size(steps) <= 3); /* duplicates once */
    json_decref(s);

    /* a handoff with no evidence says so instead of inventing a reason */
    struct msg_spec m2[] = {{"bot", "Hello!"}, {"customer", "hi"}, {"agent", "Hi, Anna here"}};
    struct context *c2 = mk_ctx("c-2", m2, 3);
    set_meta(c2, "handoff_from_bot", "1");
    s = build(c2);
    h = json_object_get(conv_of(s), "handoff");
    assert_non_null(find_obj(json_object_get(h, "reasons"), "code", "unknown"));
    json_decref(s);
    context_free(c2);
    context_free(c);
}

static void test_customer(void **state)
{
    (void)state;
    struct msg_spec m[] = {{"customer", "hello"}};
    struct context *c = mk_ctx("c-now", m, 1);
    c->customer_id = "cust-7";
    struct ctx_kv prof[] = {{"name", "Anna"}, {"tier", "gold"}, {"country", "SE"},
                            {"since", "2019"}, {"secret_note", "x"}};
    c->profile = prof;
    c->n_profile = 5;
    struct {
        int64_t age;
        const char *conv, *outcome, *summary, *tags;
    } h[] = {
        {2, "a", "unresolved", "Refund not received, mail anna@example.com", "refund,payments"},
        {1, "c-now", "open", "this one", "refund"}, /* the current conversation: not history */
        {20, "b", "resolved", "Address change", "account"},
        {60, "d", "resolved", "Refund delay", "refund"},
        {200, "e", "resolved", "Old", "other"},
    };
    c->history = arena_alloc(&c->arena, sizeof h / sizeof h[0] * sizeof *c->history);
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
        struct ctx_history *e = &c->history[i];
        memset(e, 0, sizeof *e);
        e->ts_ms = NOW_MS - h[i].age * DAY;
        e->conv_id = h[i].conv;
        e->outcome = h[i].outcome;
        e->summary = h[i].summary;
        e->tags = h[i].tags;
    }
    c->n_history = sizeof h / sizeof h[0];
    json_t *s = build(c);
    json_t *cu = json_object_get(s, "customer");
    assert_string_equal(json_string_value(json_object_get(cu, "id")), "cust-7");
    assert_string_equal(json_string_value(json_object_get(cu, "tier")), "gold");
    json_t *prof_j = json_object_get(cu, "profile");
    assert_string_equal(json_string_value(json_object_get(prof_j, "name")), "Anna");
    assert_null(json_object_get(prof_j, "secret_note"));
    assert_int_equal(json_integer_value(json_object_get(cu, "contacts_30d")), 2);
    assert_int_equal(json_integer_value(json_object_get(cu, "contacts_90d")), 3);
    assert_true(json_is_true(json_object_get(cu, "repeat_contact")));
    assert_string_equal(json_string_value(json_object_get(cu, "repeat_contact_source")), "history");
    json_t *outs = json_object_get(cu, "last_outcomes");
    assert_int_equal(json_array_size(outs), 3);
    assert_string_equal(json_string_value(json_object_get(json_array_get(outs, 0), "outcome")),
                        "unresolved");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(outs, 0), "days_ago")), 2);
    assert_string_equal(json_string_value(json_array_get(json_object_get(cu, "top_tags"), 0)),
                        "refund");
    const char *line = json_string_value(json_object_get(cu, "history_summary"));
    if (!strstr(line, "3 contacts in the last 90 days (2 in the last 30)") ||
        !strstr(line, "unresolved") || strstr(line, "anna@example.com"))
        fail_msg("history_summary: %s", line);
    assert_non_null(find_obj(json_object_get(conv_of(s), "alerts"), "type", "repeat_contact"));
    json_decref(s);

    /* the same history a year later: nothing recent */
    json_t *later = NULL;
    assert_int_equal(summary_build(c, rules(), NOW_MS + 365 * DAY, &later), T_OK);
    cu = json_object_get(later, "customer");
    assert_int_equal(json_integer_value(json_object_get(cu, "contacts_30d")), 0);
    assert_true(json_is_false(json_object_get(cu, "repeat_contact")));
    json_decref(later);
    context_free(c);
}

/* A customer who says it is their third contact, with no history on file. */
static void test_stated_repeat(void **state)
{
    (void)state;
    struct msg_spec m[] = {{"customer", "This is the third time I'm contacting you about this"}};
    struct context *c = mk_ctx("c-1", m, 1);
    json_t *s = build(c);
    json_t *cu = json_object_get(s, "customer");
    assert_true(json_is_true(json_object_get(cu, "repeat_contact")));
    assert_string_equal(json_string_value(json_object_get(cu, "repeat_contact_source")), "stated");
    assert_true(json_is_null(json_object_get(cu, "id")));
    json_decref(s);
    context_free(c);
}

static void test_empty(void **state)
{
    (void)state;
    struct context *c = mk_ctx("c-empty", NULL, 0);
    json_t *s = build(c);
    json_t *cv = conv_of(s);
    assert_true(json_is_null(json_object_get(s, "based_on")));
    assert_string_equal(json_string_value(json_object_get(cv, "wants")), "");
    assert_int_equal(json_array_size(json_object_get(cv, "tried")), 0);
    assert_int_equal(json_array_size(json_object_get(cv, "open_questions")), 0);
    assert_int_equal(json_array_size(json_object_get(cv, "alerts")), 0);
    json_t *facts = json_object_get(cv, "facts");
    assert_int_equal(json_array_size(json_object_get(facts, "order_numbers")), 0);
    assert_int_equal(json_array_size(json_object_get(facts, "amounts")), 0);
    assert_int_equal(json_array_size(json_object_get(facts, "dates")), 0);
    json_t *sent = json_object_get(cv, "sentiment");
    assert_string_equal(json_string_value(json_object_get(sent, "label")), "neutral");
    assert_string_equal(json_string_value(json_object_get(sent, "trend")), "steady");
    assert_int_equal(json_array_size(json_object_get(sent, "per_turn")), 0);
    json_t *cu = json_object_get(s, "customer");
    assert_int_equal(json_integer_value(json_object_get(cu, "contacts_30d")), 0);
    assert_true(json_is_false(json_object_get(cu, "repeat_contact")));
    json_decref(s);
    /* without rules: no phrase alerts, everything else still there */
    json_t *out = NULL;
    assert_int_equal(summary_build(c, NULL, NOW_MS, &out), T_OK);
    assert_non_null(json_object_get(conv_of(out), "sentiment"));
    json_decref(out);
    context_free(c);
}

/* Odd input: invalid UTF-8, empty texts, a huge message, unknown roles. */
static void test_odd_input(void **state)
{
    (void)state;
    static char big[100000];
    memset(big, 'a', sizeof big - 1);
    for (size_t i = 50; i < sizeof big - 1; i += 51)
        big[i] = i % 500 < 51 ? '.' : ' ';
    big[sizeof big - 1] = '\0';
    struct msg_spec m[] = {
        {"customer", "bad \xff\xfe utf8 \xc3"}, {"customer", ""}, {"note", "internal"},
        {"whatever", "hm"},                     {"customer", big},
    };
    struct context *c = mk_ctx("c-1", m, sizeof m / sizeof m[0]);
    json_t *s = build(c);
    char *dump = json_dumps(s, 0);
    assert_non_null(dump); /* serialisable: valid UTF-8 throughout */
    free(dump);
    json_decref(s);
    context_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amounts),       cmocka_unit_test(test_ids),
        cmocka_unit_test(test_dates),         cmocka_unit_test(test_conversation),
        cmocka_unit_test(test_fact_pii_masked), cmocka_unit_test(test_bare_order_number),
        cmocka_unit_test(test_open_questions), cmocka_unit_test(test_sentiment_trend),
        cmocka_unit_test(test_handoff),       cmocka_unit_test(test_customer),
        cmocka_unit_test(test_stated_repeat), cmocka_unit_test(test_empty),
        cmocka_unit_test(test_odd_input),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
