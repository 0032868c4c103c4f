/* Unit tests for src/engine_local.c: ranking invariants, memory and popularity evidence, templates, ids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tandem/context.h"
#include "tandem/engine.h"
#include "tandem/error.h"
#include "tandem/kb.h"
#include "tandem/memory.h"
#include "tandem/text.h"

static char kb_path[64];
static struct kb *kb;

static const char kb_lines[] =
    "{\"id\":\"refund-status\",\"title\":\"Where is my refund?\",\"body\":\"Hi {{customer.first_name}}, the refund for "
    "order {{customer.order_number}} is on its way. {{agent.name}}\",\"tags\":[\"refund\",\"payments\"]}\n"
    "{\"id\":\"reset-password\",\"title\":\"Reset your password\",\"body\":\"Use the reset link on the sign-in page.\","
    "\"tags\":[\"login\"]}\n"
    "{\"id\":\"cancel\",\"title\":\"Cancel your subscription\",\"body\":\"You can cancel any time in settings.\"}\n"
    "{\"id\":\"acme-shipping\",\"title\":\"Shipping times\",\"body\":\"Acme ships in 2 days.\",\"brand\":\"Acme\"}\n"
    "{\"id\":\"bolt-shipping\",\"title\":\"Shipping times\",\"body\":\"Bolt ships in 3 days.\",\"brand\":\"Bolt\"}\n"
    "{\"id\":\"dup-b\",\"title\":\"Gift cards\",\"body\":\"Gift cards never expire.\"}\n"
    "{\"id\":\"dup-a\",\"title\":\"Gift cards\",\"body\":\"Gift cards never expire.\"}\n"
    "{\"id\":\"late-delivery\",\"title\":\"Late delivery\",\"body\":\"Sorry it is late.\",\"brand\":\"Acme\","
    "\"url\":\"https://help.acme.com/late\"}\n";

static int setup(void **state)
{
    (void)state;
    strcpy(kb_path, "/tmp/tandem-test-engine-XXXXXX");
    int fd = mkstemp(kb_path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, kb_lines, sizeof kb_lines - 1), (ssize_t)(sizeof kb_lines - 1));
    close(fd);
    char err[256];
    assert_int_equal(kb_load(kb_path, &kb, err, sizeof err), T_OK);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    kb_free(kb);
    unlink(kb_path);
    text_thread_cleanup();
    return 0;
}

/* A context from "c:text" / "a:text" / "b:text" messages (oldest first) and key=value meta and
 * profile pairs (NULL-terminated lists). */
static struct context *mkctx(const char *const *msgs, const char *const *meta, const char *const *profile)
{
    struct context *c = context_new("conv-1");
    assert_non_null(c);
    size_t n = 0;
    while (msgs && msgs[n])
        n++;
    c->messages = arena_alloc(&c->arena, (n ? n : 1) * sizeof *c->messages);
    for (size_t i = 0; i < n; i++) {
        struct ctx_message *m = &c->messages[i];
        memset(m, 0, sizeof *m);
        snprintf(m->id, sizeof m->id, "17000000000%02zu-0", i);
        m->role = msgs[i][0] == 'c' ? ROLE_CUSTOMER : msgs[i][0] == 'a' ? ROLE_AGENT : ROLE_BOT;
        m->text = msgs[i] + 2;
    }
    c->n_messages = n;
    if (n)
        snprintf(c->newest_id, sizeof c->newest_id, "%s", c->messages[n - 1].id);
    const char *const *lists[2] = {meta, profile};
    for (int l = 0; l < 2; l++) {
        size_t k = 0;
        while (lists[l] && lists[l][k])
            k++;
        struct ctx_kv *kv = arena_alloc(&c->arena, (k ? k : 1) * sizeof *kv);
        for (size_t i = 0; i < k; i++) {
            const char *eq = strchr(lists[l][i], '=');
            kv[i].key = arena_strndup(&c->arena, lists[l][i], (size_t)(eq - lists[l][i]));
            kv[i].value = eq + 1;
        }
        if (l == 0) {
            c->meta = kv;
            c->n_meta = k;
        } else {
            c->profile = kv;
            c->n_profile = k;
        }
    }
    return c;
}

struct run {
    struct arena a;
    struct suggestion s[ENGINE_MAX_K];
    size_t n;
};

static void suggest(const struct context *c, const struct memory *mem, size_t k, struct run *r)
{
    arena_init(&r->a);
    assert_int_equal(engine_local_suggest(c, kb, mem, k, &r->a, r->s, &r->n, NULL), T_OK);
    for (size_t i = 0; i < r->n; i++) {
        assert_true(r->s[i].score >= 0.0 && r->s[i].score <= 1.0);
        assert_int_equal(r->s[i].rank, i + 1);
        if (i)
            assert_true(r->s[i].score <= r->s[i - 1].score);
        assert_int_equal(strncmp(r->s[i].id, "sg_", 3), 0);
    }
}

static int has(const struct run *r, const char *kb_id)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->s[i].kb_id && strcmp(r->s[i].kb_id, kb_id) == 0)
            return 1;
    return 0;
}

static void test_title_match_wins(void **state)
{
    (void)state;
    static const struct {
        const char *msg, *want;
    } cases[] = {
        {"c:Where is my refund? It has been a week", "refund-status"},
        {"c:I forgot my password and cannot sign in", "reset-password"},
        {"c:How do I cancel my subscriptions?", "cancel"}, /* stemming: subscriptions ~ subscription */
        {"c:REFUNDS!!! where are they", "refund-status"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *msgs[] = {cases[i].msg, NULL};
        struct context *c = mkctx(msgs, NULL, NULL);
        struct run r;
        suggest(c, NULL, 3, &r);
        assert_true(r.n >= 1);
        if (strcmp(r.s[0].kb_id, cases[i].want) != 0)
            fail_msg("%s: top is %s, want %s", cases[i].msg, r.s[0].kb_id, cases[i].want);
        assert_string_equal(r.s[0].source, "kb");
        arena_cleanup(&r.a);
        context_free(c);
    }
}

static void test_brand_scoping(void **state)
{
    (void)state;
    const char *msgs[] = {"c:what are your shipping times?", NULL};
    const char *acme[] = {"brand=Acme", NULL}, *bolt[] = {"brand=bolt", NULL}, *zed[] = {"brand=Zed", NULL};
    struct run r;
    struct context *c = mkctx(msgs, acme, NULL);
    suggest(c, NULL, 10, &r);
    assert_true(has(&r, "acme-shipping"));
    assert_false(has(&r, "bolt-shipping"));
    arena_cleanup(&r.a);
    context_free(c);
    c = mkctx(msgs, bolt, NULL); /* brand names compare case-blind */
    suggest(c, NULL, 10, &r);
    assert_true(has(&r, "bolt-shipping"));
    assert_false(has(&r, "acme-shipping"));
    arena_cleanup(&r.a);
    context_free(c);
    c = mkctx(msgs, zed, NULL); /* a brand the KB does not know: generic entries only */
    suggest(c, NULL, 10, &r);
    assert_false(has(&r, "bolt-shipping") || has(&r, "acme-shipping") || has(&r, "late-delivery"));
    arena_cleanup(&r.a);
    context_free(c);
    c = mkctx(msgs, NULL, NULL); /* no brand: everything */
    suggest(c, NULL, 10, &r);
    assert_true(has(&r, "bolt-shipping") && has(&r, "acme-shipping"));
    arena_cleanup(&r.a);
    context_free(c);
}

static void test_brand_section_preferred(void **state)
{
    (void)state;
    /* "Big" has a section of its own (10+ entries): its answer beats an identical generic one.
     * "Small" has one special entry: it does not outrank generic answers. */
    char path[64] = "/tmp/tandem-test-brand-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("{\"id\":\"a-returns\",\"title\":\"Returns policy\",\"body\":\"How to return an item.\"}\n", f);
    fputs("{\"id\":\"big-returns\",\"title\":\"Returns policy\",\"body\":\"How to return an item.\",\"brand\":\"Big\"}\n", f);
    for (int i = 0; i < 9; i++)
        fprintf(f, "{\"id\":\"big-%d\",\"title\":\"Topic %d\",\"body\":\"Other thing.\",\"brand\":\"Big\"}\n", i, i);
    fputs("{\"id\":\"small-returns\",\"title\":\"Returns policy\",\"body\":\"How to return an item.\",\"brand\":\"Small\"}\n", f);
    fclose(f);
    struct kb *bkb = NULL;
    char err[256];
    assert_int_equal(kb_load(path, &bkb, err, sizeof err), T_OK);
    unlink(path);
    const char *msgs[] = {"c:what is your returns policy?", NULL};
    const char *big[] = {"brand=Big", NULL}, *small[] = {"brand=Small", NULL};
    struct arena a;
    struct suggestion s[3];
    size_t n;
    struct context *c = mkctx(msgs, big, NULL);
    arena_init(&a);
    assert_int_equal(engine_local_suggest(c, bkb, NULL, 3, &a, s, &n, NULL), T_OK);
    assert_true(n >= 2);
    assert_string_equal(s[0].kb_id, "big-returns");
    assert_string_equal(s[1].kb_id, "a-returns");
    assert_true(s[0].score > s[1].score);
    arena_cleanup(&a);
    context_free(c);
    c = mkctx(msgs, small, NULL);
    arena_init(&a);
    assert_int_equal(engine_local_suggest(c, bkb, NULL, 3, &a, s, &n, NULL), T_OK);
    assert_int_equal(n, 2);
    assert_string_equal(s[0].kb_id, "a-returns"); /* a tie, broken by id */
    assert_string_equal(s[1].kb_id, "small-returns");
    assert_true(s[0].score == s[1].score);
    arena_cleanup(&a);
    context_free(c);
    kb_free(bkb);
}

static void test_deterministic_ties(void **state)
{
    (void)state;
    const char *msgs[] = {"c:do gift cards expire?", NULL};
    struct context *c = mkctx(msgs, NULL, NULL);
    struct run r1, r2;
    suggest(c, NULL, 3, &r1);
    suggest(c, NULL, 3, &r2);
    assert_true(r1.n >= 2);
    assert_int_equal(r1.n, r2.n);
    for (size_t i = 0; i < r1.n; i++) {
        assert_string_equal(r1.s[i].id, r2.s[i].id);
        assert_true(r1.s[i].score == r2.s[i].score);
    }
    /* identical entries score the same: the smaller id first */
    assert_string_equal(r1.s[0].kb_id, "dup-a");
    assert_string_equal(r1.s[1].kb_id, "dup-b");
    assert_true(r1.s[0].score == r1.s[1].score);
    assert_true(r1.s[0].score > 0.5); /* a full match of the question is a confident one */
    arena_cleanup(&r1.a);
    arena_cleanup(&r2.a);
    context_free(c);
}

static void test_recency(void **state)
{
    (void)state;
    const char *a[] = {"c:I want to cancel my subscription", "a:Sure, one moment", "c:also my password reset fails", NULL};
    const char *b[] = {"c:also my password reset fails", "a:Sure, one moment", "c:I want to cancel my subscription", NULL};
    struct run r;
    struct context *c = mkctx(a, NULL, NULL);
    suggest(c, NULL, 3, &r);
    assert_string_equal(r.s[0].kb_id, "reset-password");
    assert_true(has(&r, "cancel")); /* older turns still count */
    arena_cleanup(&r.a);
    context_free(c);
    c = mkctx(b, NULL, NULL);
    suggest(c, NULL, 3, &r);
    assert_string_equal(r.s[0].kb_id, "cancel");
    arena_cleanup(&r.a);
    context_free(c);
}

static void test_k_and_empty(void **state)
{
    (void)state;
    const char *msgs[] = {"c:refund password subscription shipping gift delivery", NULL};
    struct context *c = mkctx(msgs, NULL, NULL);
    struct run r;
    suggest(c, NULL, 1, &r);
    assert_int_equal(r.n, 1);
    arena_cleanup(&r.a);
    suggest(c, NULL, 50, &r); /* capped */
    assert_true(r.n <= ENGINE_MAX_K);
    arena_cleanup(&r.a);
    context_free(c);
    /* nothing the KB knows about */
    const char *none[] = {"c:zzzz qqqq", NULL};
    c = mkctx(none, NULL, NULL);
    suggest(c, NULL, 3, &r);
    assert_int_equal(r.n, 0);
    arena_cleanup(&r.a);
    context_free(c);
    /* the customer has not spoken: without history there is nothing to suggest */
    const char *agent_only[] = {"a:Hello, how can I help with your refund?", NULL};
    c = mkctx(agent_only, NULL, NULL);
    suggest(c, NULL, 3, &r);
    assert_int_equal(r.n, 0);
    arena_cleanup(&r.a);
    context_free(c);
    c = mkctx(NULL, NULL, NULL);
    suggest(c, NULL, 3, &r);
    assert_int_equal(r.n, 0);
    arena_cleanup(&r.a);
    context_free(c);
    assert_int_equal(engine_local_suggest(c = mkctx(msgs, NULL, NULL), NULL, NULL, 3, &r.a, r.s, &r.n, NULL), T_OK);
    assert_int_equal(r.n, 0); /* no KB, no memory */
    context_free(c);
}

static struct memory *acme_memory(void)
{
    static const char tr[] =
        "{\"id\":\"t1\",\"brand\":\"Acme\",\"messages\":[{\"role\":\"customer\",\"text\":\"my parcel has not arrived, "
        "tracking shows nothing\"},{\"role\":\"agent\",\"text\":\"@user7 So sorry! Details here: "
        "https://help.acme.com/late.\"}]}\n"
        "{\"id\":\"t2\",\"brand\":\"Acme\",\"messages\":[{\"role\":\"customer\",\"text\":\"parcel still not arrived\"},"
        "{\"role\":\"agent\",\"text\":\"Please DM us your order number.\"}]}\n"
        "{\"id\":\"t3\",\"brand\":\"Bolt\",\"messages\":[{\"role\":\"customer\",\"text\":\"parcel not arrived\"},"
        "{\"role\":\"agent\",\"text\":\"Bolt reply\"}]}\n";
    struct memory_records recs;
    memory_records_init(&recs);
    size_t n;
    char err[128];
    assert_int_equal(memory_parse_transcripts(tr, strlen(tr), &recs, &n, err, sizeof err), T_OK);
    struct memory *m = memory_build(recs.v, recs.n, kb);
    memory_records_cleanup(&recs);
    assert_non_null(m);
    return m;
}

static void test_memory_evidence(void **state)
{
    (void)state;
    struct memory *m = acme_memory();
    const char *msgs[] = {"c:hi, my parcel has not arrived yet", NULL};
    const char *acme[] = {"brand=Acme", NULL};
    struct context *c = mkctx(msgs, acme, NULL);
    struct run r;
    suggest(c, m, 3, &r);
    assert_true(r.n >= 2);
    /* the past reply that cited late-delivery, shown as that agent wrote it, minus the old @handle */
    assert_string_equal(r.s[0].kb_id, "late-delivery");
    assert_string_equal(r.s[0].source, "memory");
    assert_non_null(r.s[0].memory_id);
    assert_string_equal(r.s[0].title, "Late delivery");
    assert_int_equal(strncmp(r.s[0].text, "So sorry!", 9), 0);
    /* the unlinked past reply of the same brand is offered too; the other brand's never */
    int dm = 0;
    for (size_t i = 0; i < r.n; i++) {
        dm |= strcmp(r.s[i].text, "Please DM us your order number.") == 0 && r.s[i].kb_id == NULL;
        assert_true(strcmp(r.s[i].text, "Bolt reply") != 0);
    }
    assert_true(dm);
    arena_cleanup(&r.a);
    context_free(c);

    /* no customer turn yet: the brand's most cited entries */
    const char *agent_only[] = {"a:Hello!", NULL};
    c = mkctx(agent_only, acme, NULL);
    suggest(c, m, 3, &r);
    assert_int_equal(r.n, 1);
    assert_string_equal(r.s[0].kb_id, "late-delivery");
    arena_cleanup(&r.a);
    context_free(c);
    memory_unref(m);
}

static void test_ids_stable(void **state)
{
    (void)state;
    char a[ENGINE_SUGGESTION_ID_LEN + 1], b[ENGINE_SUGGESTION_ID_LEN + 1], d[ENGINE_SUGGESTION_ID_LEN + 1];
    engine_suggestion_id("c-1", "1-0", "kb", "refund", NULL, a);
    engine_suggestion_id("c-1", "1-0", "kb", "refund", "", b);
    assert_string_equal(a, b); /* NULL and "" are the same */
    assert_int_equal(strlen(a), ENGINE_SUGGESTION_ID_LEN);
    assert_int_equal(strspn(a + 3, "0123456789abcdef"), 16);
    engine_suggestion_id("c-1", "2-0", "kb", "refund", NULL, d);
    assert_string_not_equal(a, d); /* a new message, a new id */
    engine_suggestion_id("c-1", "1-0", "kbr", "efund", NULL, d);
    assert_string_not_equal(a, d); /* parts do not run into each other */

    /* the engine gives the same ids for the same state, new ones after a new message */
    const char *m1[] = {"c:where is my refund", NULL};
    const char *m2[] = {"c:where is my refund", "c:any news?", NULL};
    struct context *c1 = mkctx(m1, NULL, NULL), *c2 = mkctx(m2, NULL, NULL);
    struct run r1, r2;
    suggest(c1, NULL, 1, &r1);
    suggest(c2, NULL, 1, &r2);
    engine_suggestion_id("conv-1", c1->newest_id, "kb", "refund-status", NULL, a);
    assert_string_equal(r1.s[0].id, a);
    assert_string_not_equal(r1.s[0].id, r2.s[0].id);
    arena_cleanup(&r1.a);
    arena_cleanup(&r2.a);
    context_free(c1);
    context_free(c2);
}

struct tmpl_case {
    const char *in, *want;
};

static const struct tmpl_case tmpl_cases[] = {
    {"Hi {{customer.name}}!", "Hi Anna Berg!"},
    {"Hi {{customer.first_name}}", "Hi Anna"},               /* from name */
    {"Hi {{ customer.tier }}", "Hi gold"},                   /* spaces inside */
    {"Order {{customer.order_number}} ships", "Order [order number] ships"},
    {"{{agent.name}} here", "Sam here"},
    {"Re: {{conversation.subject}}", "Re: Late parcel"},
    {"Case {{conversation.id}}", "Case conv-1"},
    {"{{conversation.channel}}", "[channel]"},
    {"{{weather.today}}", "[today]"},
    {"{{customer.name", "{{customer.name"},                  /* unclosed */
    {"{{customer}} {{}} {{ }}", "{{customer}} {{}} {{ }}"},   /* no field */
    {"{customer.name} }}{{", "{customer.name} }}{{"},
    {"{{customer.na me}}", "{{customer.na me}}"},
    {"{{{customer.tier}}}", "{gold}"},
    {"no placeholders", "no placeholders"},
    {"", ""},
};

static void test_templates(void **state)
{
    (void)state;
    const char *meta[] = {"agent_name=Sam", "subject=Late parcel", NULL};
    const char *profile[] = {"name=Anna Berg", "tier=gold", NULL};
    struct context *c = mkctx(NULL, meta, profile);
    for (size_t i = 0; i < sizeof tmpl_cases / sizeof tmpl_cases[0]; i++) {
        struct buf b;
        buf_init(&b, 0);
        assert_int_equal(engine_fill_template(tmpl_cases[i].in, c, &b), T_OK);
        const char *got = b.data ? b.data : "";
        if (strcmp(got, tmpl_cases[i].want) != 0)
            fail_msg("%s: got \"%s\", want \"%s\"", tmpl_cases[i].in, got, tmpl_cases[i].want);
        buf_cleanup(&b);
    }
    context_free(c);
    /* first_name wins over name when present; nothing known -> brackets */
    const char *profile2[] = {"name=Anna Berg", "first_name=Annie", NULL};
    c = mkctx(NULL, NULL, profile2);
    struct buf b;
    buf_init(&b, 0);
    assert_int_equal(engine_fill_template("{{customer.first_name}} / {{agent.name}} / {{customer.name}}", c, &b), T_OK);
    assert_string_equal(b.data, "Annie / [agent name] / Anna Berg");
    buf_reset(&b);
    assert_int_equal(engine_fill_template("{{customer.name}}", NULL, &b), T_OK);
    assert_string_equal(b.data, "[customer name]");
    buf_cleanup(&b);
    context_free(c);

    /* suggestions come out filled */
    const char *msgs[] = {"c:where is my refund", NULL};
    const char *meta3[] = {"agent_name=Sam", NULL};
    const char *profile3[] = {"name=Anna Berg", NULL};
    c = mkctx(msgs, meta3, profile3);
    struct run r;
    suggest(c, NULL, 1, &r);
    assert_string_equal(r.s[0].text, "Hi Anna, the refund for order [order number] is on its way. Sam");
    arena_cleanup(&r.a);
    context_free(c);
}


/* ---- memory vote and trust ------------------------------------------------------------------
 * A help centre with a section of its own for "Shop" (10 entries) and one generic entry, and the
 * history of Shop's agents: three late parcels answered with the delays article, one refund,
 * one size question, one request for a human answered with the generic contact page. */
static const char shop_kb[] =
    "{\"id\":\"delayed\",\"title\":\"Delayed orders\",\"body\":\"Busy weeks take longer.\",\"brand\":\"Shop\","
    "\"url\":\"https://help.shop.com/delayed\"}\n"
    "{\"id\":\"money-back\",\"title\":\"Getting your money back\",\"body\":\"Returns are free.\",\"brand\":\"Shop\","
    "\"url\":\"https://help.shop.com/money-back\"}\n"
    "{\"id\":\"size-guide\",\"title\":\"Size guide\",\"body\":\"Measure twice.\",\"brand\":\"Shop\","
    "\"url\":\"https://help.shop.com/size-guide\"}\n"
    "{\"id\":\"tracking\",\"title\":\"Tracking your parcel\",\"body\":\"The tracking page updates daily.\","
    "\"brand\":\"Shop\",\"url\":\"https://help.shop.com/tracking\"}\n"
    "{\"id\":\"gift-cards\",\"title\":\"Gift cards never expire\",\"body\":\"Use them any time.\","
    "\"brand\":\"Shop\",\"url\":\"https://help.shop.com/gift-cards\"}\n"
    "{\"id\":\"contact\",\"title\":\"Contact us\",\"body\":\"Write to us.\",\"url\":\"https://help.shop.com/contact\"}\n"
    "{\"id\":\"shop-0\",\"title\":\"Topic zero\",\"body\":\"Other thing.\",\"brand\":\"Shop\"}\n"
    "{\"id\":\"shop-1\",\"title\":\"Topic one\",\"body\":\"Other thing.\",\"brand\":\"Shop\"}\n"
    "{\"id\":\"shop-2\",\"title\":\"Topic two\",\"body\":\"Other thing.\",\"brand\":\"Shop\"}\n"
    "{\"id\":\"shop-3\",\"title\":\"Topic three\",\"body\":\"Other thing.\",\"brand\":\"Shop\"}\n"
    "{\"id\":\"shop-4\",\"title\":\"Topic four\",\"body\":\"Other thing.\",\"brand\":\"Shop\"}\n";

#define SHOP_T(id, cust, reply)                                                                                  \
    "{\"id\":\"" id "\",\"brand\":\"Shop\",\"messages\":[{\"role\":\"customer\",\"text\":\"@ShopHelp " cust        \
    "\"},{\"role\":\"agent\",\"text\":\"" reply "\"}]}\n"
static const char shop_history[] =
    SHOP_T("t1", "my parcel is late and the tracking shows nothing", "@user1 Sorry! See https://help.shop.com/delayed")
    SHOP_T("t2", "parcel late, tracking page empty", "@user2 Busy week: https://help.shop.com/delayed")
    SHOP_T("t3", "still no parcel, tracking not updated, it is late", "@user3 See https://help.shop.com/delayed.")
    SHOP_T("t4", "the jacket arrived broken and I want my money back", "@user4 Of course: https://help.shop.com/money-back")
    SHOP_T("t5", "which size do I need for the jacket", "@user5 Our guide: https://help.shop.com/size-guide")
    SHOP_T("t6", "how do I reach a human being", "@user6 Right here: https://help.shop.com/contact")
    "{\"id\":\"b1\",\"brand\":\"Bolt\",\"messages\":[{\"role\":\"customer\",\"text\":\"my parcel is late\"},"
    "{\"role\":\"agent\",\"text\":\"Bolt reply\"}]}\n";

static struct kb *kb_from(const char *lines)
{
    char path[64] = "/tmp/tandem-test-engine-kb-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, lines, strlen(lines)), (ssize_t)strlen(lines));
    close(fd);
    struct kb *k = NULL;
    char err[256];
    assert_int_equal(kb_load(path, &k, err, sizeof err), T_OK);
    unlink(path);
    return k;
}

static struct memory *memory_from(const char *ndjson, const struct kb *k)
{
    struct memory_records recs;
    memory_records_init(&recs);
    size_t n;
    char err[128];
    assert_int_equal(memory_parse_transcripts(ndjson, strlen(ndjson), &recs, &n, err, sizeof err), T_OK);
    struct memory *m = memory_build(recs.v, recs.n, k);
    memory_records_cleanup(&recs);
    assert_non_null(m);
    return m;
}

/* suggest() against another kb */
static void suggest_kb(const char *customer, const struct kb *k, const struct memory *mem, struct run *r)
{
    const char *msgs[] = {customer, NULL};
    const char *meta[] = {"brand=Shop", NULL};
    struct context *c = mkctx(msgs, meta, NULL);
    arena_init(&r->a);
    assert_int_equal(engine_local_suggest(c, k, mem, 3, &r->a, r->s, &r->n, NULL), T_OK);
    for (size_t i = 0; i < r->n; i++) {
        assert_true(r->s[i].score >= 0.0 && r->s[i].score <= 1.0);
        if (i)
            assert_true(r->s[i].score <= r->s[i - 1].score);
    }
    context_free(c);
}

static const char *top_id(const struct run *r) { return r->n && r->s[0].kb_id ? r->s[0].kb_id : "(none)"; }

/* The most similar past situations decide, through the articles their replies cited; the text
 * shown is the reply of the most similar one (titles share no word with these questions). */
static void test_memory_vote_follows_similarity(void **state)
{
    (void)state;
    struct kb *k = kb_from(shop_kb);
    struct memory *m = memory_from(shop_history, k);
    static const struct {
        const char *msg, *want, *text;
    } cases[] = {
        {"c:my jacket came broken, I want my money back", "money-back", "Of course:"},
        {"c:what size should I take for this jacket?", "size-guide", "Our guide:"},
        {"c:I need to reach a human being please", "contact", "Right here:"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct run r;
        suggest_kb(cases[i].msg, k, m, &r);
        if (strcmp(top_id(&r), cases[i].want) != 0)
            fail_msg("%s: top is %s, want %s", cases[i].msg, top_id(&r), cases[i].want);
        assert_string_equal(r.s[0].source, "memory");
        assert_int_equal(strncmp(r.s[0].text, cases[i].text, strlen(cases[i].text)), 0);
        arena_cleanup(&r.a);
    }
    memory_unref(m);
    kb_free(k);
}

/* Memory only knows articles agents cited before. Where past situations agree, what agents did
 * wins over a title that matches; where none resembles the question, a title that answers it
 * wins over what agents usually cite. */
static void test_trust_between_memory_and_text(void **state)
{
    (void)state;
    struct kb *k = kb_from(shop_kb);
    struct memory *m = memory_from(shop_history, k);
    struct run r;
    const char *late = "c:my parcel is late and the tracking shows nothing";
    suggest_kb(late, k, NULL, &r); /* no history: the title that matches */
    assert_string_equal(top_id(&r), "tracking");
    arena_cleanup(&r.a);
    suggest_kb(late, k, m, &r); /* three agents answered exactly this with the delays article */
    assert_string_equal(top_id(&r), "delayed");
    assert_string_equal(r.s[0].source, "memory");
    int kept = 0;
    for (size_t i = 0; i < r.n; i++)
        kept |= r.s[i].kb_id && strcmp(r.s[i].kb_id, "tracking") == 0;
    assert_true(kept); /* the text evidence still gets a place */
    arena_cleanup(&r.a);

    suggest_kb("c:do gift cards expire?", k, m, &r); /* never cited, nothing similar in memory */
    assert_string_equal(top_id(&r), "gift-cards");
    assert_string_equal(r.s[0].source, "kb");
    assert_true(r.s[0].score > 0.5); /* a full title match stays a confident one */
    for (size_t i = 1; i < r.n; i++)
        assert_true(r.s[i].score < r.s[0].score);
    arena_cleanup(&r.a);
    memory_unref(m);
    kb_free(k);
}

/* The brand's own @handle (in every one of its past situations) and another brand's history
 * do not move the ranking; an entry without a brand that the brand's agents cite ranks on that
 * evidence like one of the brand's own. */
static void test_memory_brand_words_and_unbranded(void **state)
{
    (void)state;
    struct kb *k = kb_from(shop_kb);
    struct memory *m = memory_from(shop_history, k);
    struct run a, b;
    suggest_kb("c:my parcel is late", k, m, &a);
    suggest_kb("c:@ShopHelp @ShopHelp my parcel is late", k, m, &b);
    assert_int_equal(a.n, b.n);
    for (size_t i = 0; i < a.n; i++) {
        assert_string_equal(a.s[i].kb_id ? a.s[i].kb_id : "-", b.s[i].kb_id ? b.s[i].kb_id : "-");
        assert_true(strcmp(b.s[i].text, "Bolt reply") != 0);
    }
    arena_cleanup(&a.a);
    arena_cleanup(&b.a);
    /* "Contact us" has no brand: as text it matches a third of a Shop entry's match ... */
    suggest_kb("c:contact us", k, NULL, &a);
    assert_string_equal(top_id(&a), "contact");
    assert_true(a.s[0].score < 0.5);
    arena_cleanup(&a.a);
    /* ... as what Shop's agents answered, it is as strong as any of Shop's own */
    suggest_kb("c:how can I reach a human being?", k, m, &b);
    assert_string_equal(top_id(&b), "contact");
    assert_true(b.s[0].score > 0.5);
    arena_cleanup(&b.a);
    memory_unref(m);
    kb_free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_title_match_wins), cmocka_unit_test(test_brand_scoping),
        cmocka_unit_test(test_brand_section_preferred),
        cmocka_unit_test(test_deterministic_ties), cmocka_unit_test(test_recency),
        cmocka_unit_test(test_k_and_empty),       cmocka_unit_test(test_memory_evidence),
        cmocka_unit_test(test_ids_stable),         cmocka_unit_test(test_templates),
        cmocka_unit_test(test_memory_vote_follows_similarity),
        cmocka_unit_test(test_trust_between_memory_and_text),
        cmocka_unit_test(test_memory_brand_words_and_unbranded),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
