/* The local engine: KB text match and what agents did (memory vote, brand citations), weighed by how well memory knows the situation; templates. */
#include "tandem/engine.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tandem/bm25.h"
#include "tandem/error.h"
#include "tandem/feedback.h"
#include "tandem/kb.h"
#include "tandem/memory.h"
#include "tandem/text.h"

/* ---- tuning ---------------------------------------------------------------------------------
 * Chosen on tests/eval/loo.c (leave-one-out over cdp's 416 transcripts: each one is asked with
 * the memory of all the others; `make eval` prints it) and checked on the dev cases of cdp and
 * abcd. The harness includes this file with ENGINE_TUNING_CONST empty to try other values; in
 * the server they are constants. */
#ifndef ENGINE_TUNING_CONST
#define ENGINE_TUNING_CONST const
#endif
static ENGINE_TUNING_CONST struct tuning {
    /* The query: the newest customer turn counts fully, older ones decay but never below a
     * floor (the first turn usually states the problem; later ones answer the agent's
     * questions). Agent and bot turns name the topic too ("I can help you with your refund")
     * but are not the customer's need: a small weight. */
    float q_decay, q_floor, q_agent;
    /* A bare number ("185111", "2") rarely names the topic; an @handle names an account. */
    float q_w_number, q_w_handle;
    /* Text match: scores are divided by max(best match, t_floor x the query's attainable
     * score), so a query that matches nothing well does not make its best weak match look
     * perfect. With a brand that has a section of its own in the KB, an entry without a brand
     * matches only this much as well (a brand with one special entry must not have that entry
     * outrank every generic answer). */
    float t_floor, unbranded;
    /* Memory: the mem_top most similar past situations of the brand vote for the entries their
     * replies cited, each by its share of their similarity; the brand's citation counts are
     * the prior. Both together say what agents did (w_vote : w_popular). */
    float mem_top, w_vote, w_popular;
    /* How far to trust what agents did over what the text says: memory only knows the entries
     * agents cited before, and a new conversation often needs one they never did. The trust is
     * a logistic function of the strongest vote (a clear majority of similar past situations)
     * and of the share of the brand's candidate entries memory has seen cited:
     *   trust = 1 / (1 + exp(-(gate_bias + gate_vote * best_vote + gate_cover * ln(coverage)))).
     * score = trust * w_seen * (agents' evidence) + (1 - trust) * (text match); without memory
     * it is the text match alone. */
    float gate_bias, gate_vote, gate_cover, w_seen;
} tuning = {
    .q_decay = 0.8f, .q_floor = 0.5f, .q_agent = 0.3f,
    .q_w_number = 0.3f, .q_w_handle = 1.0f,
    .t_floor = 0.3f, .unbranded = 0.3f,
    .mem_top = 30, .w_vote = 3.0f, .w_popular = 1.0f,
    .gate_bias = 0.5f, .gate_vote = 2.5f, .gate_cover = 1.0f, .w_seen = 2.0f,
};

/* Bounded work: only this many recent turns are read, whatever the conversation's length. */
#define Q_MAX_CUSTOMER_TURNS 16
#define Q_MAX_AGENT_TURNS 8
/* Bytes read per message: a pasted log or document must not make one request slow. */
#define Q_MAX_MESSAGE_BYTES 8192
/* Distinct query terms kept (the rest of a pasted log is ignored). */
#define Q_MAX_TERMS 1024
#define Q_POOL_BYTES (64u << 10)
/* Past situations that can vote (tuning.mem_top is capped by it). */
#define MEM_TOP_MAX 64
/* A brand "has a section of its own" with at least this many entries. */
#define BRAND_SECTION_MIN 10
/* coverage is floored here before its log: a brand with a big KB and one citation. */
#define COVER_FLOOR 1e-3

/* ---- suggestion ids -------------------------------------------------------------------------- */

void engine_suggestion_id(const char *conv_id, const char *based_on, const char *source, const char *kb_id,
                          const char *memory_id, char out[ENGINE_SUGGESTION_ID_LEN + 1])
{
    const char *parts[5] = {conv_id, based_on, source, kb_id, memory_id};
    uint64_t h = TEXT_HASH_SEED;
    for (size_t i = 0; i < 5; i++) {
        const char *p = parts[i] ? parts[i] : "";
        h = text_hash(h, p, strlen(p) + 1); /* the NUL separates the parts */
    }
    snprintf(out, ENGINE_SUGGESTION_ID_LEN + 1, "sg_%016llx", (unsigned long long)h);
}

/* ---- templates ------------------------------------------------------------------------------- */

static int name_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

/* Appends "[label]": the field with '_' and '-' as spaces. */
static int put_bracket(struct buf *out, const char *label, size_t n)
{
    int err = buf_putc(out, '[');
    for (size_t i = 0; i < n && !err; i++)
        err = buf_putc(out, (label[i] == '_' || label[i] == '-' || label[i] == '.') ? ' ' : label[i]);
    return err ? err : buf_putc(out, ']');
}

static const char *nonempty(const char *s) { return s && *s ? s : NULL; }

/* Value of ns.field from ctx, or NULL. first_word is set when only the first word of the value
 * is meant (customer.first_name from name). */
static const char *lookup_var(const struct context *ctx, const char *ns, const char *field, int *first_word)
{
    *first_word = 0;
    if (!ctx)
        return NULL;
    if (strcmp(ns, "customer") == 0) {
        const char *v = nonempty(context_profile(ctx, field));
        if (!v && strcmp(field, "first_name") == 0) {
            v = nonempty(context_profile(ctx, "name"));
            *first_word = v != NULL;
        }
        return v;
    }
    if (strcmp(ns, "agent") == 0) {
        char key[80];
        snprintf(key, sizeof key, "agent_%s", field);
        return nonempty(context_meta(ctx, key));
    }
    if (strcmp(ns, "conversation") == 0) {
        if (strcmp(field, "id") == 0)
            return ctx->conv_id;
        return nonempty(context_meta(ctx, field));
    }
    return NULL;
}

int engine_fill_template(const char *tmpl, const struct context *ctx, struct buf *out)
{
    const char *p = tmpl ? tmpl : "";
    int err = T_OK;
    while (*p && !err) {
        const char *open = strstr(p, "{{");
        if (!open)
            return buf_puts(out, p);
        err = buf_append(out, p, (size_t)(open - p));
        if (err)
            break;
        /* {{ ns.field }}: letters, digits, '_', '-'; one dot; optional spaces around */
        const char *q = open + 2;
        while (*q == ' ')
            q++;
        const char *ns = q;
        while (name_char(*q))
            q++;
        size_t nsl = (size_t)(q - ns);
        const char *field = NULL;
        size_t fl = 0;
        if (*q == '.' && nsl) {
            field = ++q;
            while (name_char(*q))
                q++;
            fl = (size_t)(q - field);
        }
        while (*q == ' ')
            q++;
        if (!field || !fl || nsl >= 32 || fl >= 64 || q[0] != '}' || q[1] != '}') {
            /* malformed: copied as written; the next brace may still open one ("{{{a.b}}}") */
            err = buf_putc(out, '{');
            p = open + 1;
            continue;
        }
        char nsb[32], fb[64];
        memcpy(nsb, ns, nsl);
        nsb[nsl] = '\0';
        memcpy(fb, field, fl);
        fb[fl] = '\0';
        int first_word = 0;
        const char *v = lookup_var(ctx, nsb, fb, &first_word);
        if (v && first_word) {
            size_t n = strcspn(v, " \t");
            err = buf_append(out, v, n);
        } else if (v) {
            err = buf_puts(out, v);
        } else if (strcmp(fb, "name") == 0 && (strcmp(nsb, "customer") == 0 || strcmp(nsb, "agent") == 0)) {
            err = buf_printf(out, "[%s name]", nsb);
        } else {
            err = put_bracket(out, fb, fl);
        }
        p = q + 2;
    }
    return err;
}

/* ---- the query ------------------------------------------------------------------------------- */

struct qslot {
    uint64_t h;
    uint32_t off, len;
    float w;
    int turn; /* last turn that added to it: a word repeated in one turn counts once */
    int used;
};

struct query {
    struct qslot *slots; /* Q_MAX_TERMS * 2, open addressing */
    char *pool;
    size_t pool_len;
    size_t n;
    int turn;
    float turn_w;
};

static void query_token(void *ud, const char *term, size_t len, unsigned flags)
{
    struct query *q = ud;
    float w = q->turn_w;
    if (flags & TEXT_TOK_NUMBER)
        w *= tuning.q_w_number;
    else if (flags & TEXT_TOK_HANDLE)
        w *= tuning.q_w_handle;
    uint64_t h = text_hash(TEXT_HASH_SEED, term, len);
    size_t mask = Q_MAX_TERMS * 2 - 1, i = (size_t)h & mask;
    while (q->slots[i].used) {
        struct qslot *s = &q->slots[i];
        if (s->h == h && s->len == len && memcmp(q->pool + s->off, term, len) == 0) {
            if (s->turn != q->turn) {
                s->w += w;
                s->turn = q->turn;
            }
            return;
        }
        i = (i + 1) & mask;
    }
    if (q->n >= Q_MAX_TERMS || q->pool_len + len + 1 > Q_POOL_BYTES)
        return;
    memcpy(q->pool + q->pool_len, term, len);
    q->pool[q->pool_len + len] = '\0';
    q->slots[i] = (struct qslot){h, (uint32_t)q->pool_len, (uint32_t)len, w, q->turn, 1};
    q->pool_len += len + 1;
    q->n++;
}

/* Builds the weighted terms of the recent turns; *cust_turns is the number of customer turns
 * read. -1 when a turn could not be analysed (out of memory). */
static int query_build(struct query *q, const struct context *ctx, const char *lang, size_t *cust_turns)
{
    size_t cust = 0, agent = 0;
    for (size_t i = ctx->n_messages; i-- > 0;) {
        const struct ctx_message *m = &ctx->messages[i];
        float w;
        if (m->role == ROLE_CUSTOMER) {
            if (cust >= Q_MAX_CUSTOMER_TURNS)
                continue;
            w = powf(tuning.q_decay, (float)cust++);
        } else if (m->role == ROLE_AGENT || m->role == ROLE_BOT) {
            if (agent >= Q_MAX_AGENT_TURNS)
                continue;
            w = tuning.q_agent * powf(tuning.q_decay, (float)agent++);
            if (w < tuning.q_agent * tuning.q_floor)
                w = tuning.q_agent * tuning.q_floor;
            goto add;
        } else {
            continue;
        }
        if (w < tuning.q_floor)
            w = tuning.q_floor;
    add:
        q->turn++;
        q->turn_w = w;
        if (text_tokenize(m->text, strnlen(m->text, Q_MAX_MESSAGE_BYTES), lang, 0, query_token, q) < 0)
            return -1;
    }
    *cust_turns = cust;
    return 0;
}

/* ---- ranking --------------------------------------------------------------------------------- */

struct cand {
    double score;
    const char *id; /* tie-break key: kb id or memory id */
    long kb;        /* kb index or -1 */
    long mem;       /* memory index for the text, -1 for the KB body */
};

/* a ranks before b */
static int cand_before(const struct cand *a, const struct cand *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    return strcmp(a->id, b->id) < 0;
}

/* Keeps the best k candidates in top[0..*n) sorted, by insertion (k <= ENGINE_MAX_K). */
static void top_insert(struct cand *top, size_t *n, size_t k, const struct cand *c)
{
    if (*n == k && !cand_before(c, &top[k - 1]))
        return;
    size_t i = *n < k ? (*n)++ : k - 1;
    while (i > 0 && cand_before(c, &top[i - 1])) {
        top[i] = top[i - 1];
        i--;
    }
    top[i] = *c;
}

struct mem_hit {
    float s;
    uint32_t i;
};

/* Replies on Twitter-like channels start with the past customer's @handle: not for this one. */
static const char *strip_handles(const char *s)
{
    for (;;) {
        while (*s == ' ')
            s++;
        if (*s != '@')
            return s;
        const char *p = s + 1;
        while (name_char(*p))
            p++;
        if (p == s + 1)
            return s;
        s = p;
    }
}

static char *fill_to_arena(struct arena *a, const char *tmpl, const struct context *ctx, int *err)
{
    struct buf b;
    buf_init(&b, 1u << 20);
    *err = engine_fill_template(tmpl, ctx, &b);
    char *s = NULL;
    if (!*err) {
        s = arena_strndup(a, b.data ? b.data : "", b.len);
        if (!s)
            *err = T_ERR_NOMEM;
    }
    buf_cleanup(&b);
    return s;
}

int engine_local_suggest(const struct context *ctx, const struct kb *kb, const struct memory *mem, size_t k,
                         struct arena *a, struct suggestion *out, size_t *n_out, struct engine_debug *dbg)
{
    *n_out = 0;
    if (k == 0)
        return T_OK;
    if (k > ENGINE_MAX_K)
        k = ENGINE_MAX_K;
    const char *lang = context_meta(ctx, "lang");
    const char *brand = nonempty(context_meta(ctx, "brand"));
    size_t nkb = kb_count(kb), nmem = memory_count(mem);
    int mem_links = mem && kb && memory_kb_generation(mem) == kb_generation(kb);
    int brand_id = brand ? kb_brand_id(kb, brand) : KB_ANY_BRAND;

    int err = T_ERR_NOMEM;
    struct query q = {0};
    struct bm25_qterm *qt = NULL;
    float *ts = NULL, *ev = NULL, *ms = NULL;
    unsigned char *scope = NULL;
    long *best_mem = NULL;
    struct mem_hit hits[MEM_TOP_MAX];
    size_t nhits = 0;
    struct feedback_reject_query *rq = NULL;
    q.slots = calloc(Q_MAX_TERMS * 2, sizeof *q.slots);
    q.pool = malloc(Q_POOL_BYTES);
    if (!q.slots || !q.pool)
        goto out;
    size_t cust_turns;
    if (query_build(&q, ctx, lang, &cust_turns) < 0)
        goto out;
    qt = malloc((q.n ? q.n : 1) * sizeof *qt);
    if (!qt)
        goto out;
    size_t nq = 0;
    for (size_t i = 0; i < Q_MAX_TERMS * 2; i++)
        if (q.slots[i].used)
            qt[nq++] = (struct bm25_qterm){q.pool + q.slots[i].off, q.slots[i].len, q.slots[i].w};
    if (dbg) {
        memset(dbg, 0, sizeof *dbg);
        dbg->query_terms = nq;
    }
    if (cust_turns == 0)
        nq = 0; /* nothing asked yet: only the brand's habits can say anything */

    /* two kinds of evidence per entry, each 0..1: the text match ts[] and what agents did ev[] */
    ts = calloc(nkb ? nkb : 1, sizeof *ts);
    ev = calloc(nkb ? nkb : 1, sizeof *ev);
    best_mem = malloc((nkb ? nkb : 1) * sizeof *best_mem);
    if (!ts || !ev || !best_mem)
        goto out;
    for (size_t i = 0; i < nkb; i++)
        best_mem[i] = -1;
    float attainable = nq ? bm25_score(kb_index(kb), qt, nq, ts) : 0;
    float top = 0;
    for (size_t i = 0; i < nkb; i++)
        if (ts[i] > top && kb_entry_allowed(kb, i, brand_id))
            top = ts[i];
    float scale = top > tuning.t_floor * attainable ? top : tuning.t_floor * attainable;
    int prefer_brand = brand && kb_brand_entries(kb, brand_id) >= BRAND_SECTION_MIN;
    size_t pool = 0; /* entries this conversation may be offered */
    for (size_t i = 0; i < nkb; i++) {
        if (!kb_entry_allowed(kb, i, brand_id)) {
            ts[i] = 0;
            continue;
        }
        const struct kb_entry *e = kb_entry_at(kb, i);
        pool += !prefer_brand || e->n_brands > 0;
        if (ts[i] > 0) {
            ts[i] = scale > 0 ? ts[i] / scale : 0;
            if (prefer_brand && e->n_brands == 0)
                ts[i] *= tuning.unbranded;
            if (dbg)
                dbg->kb_matches++;
        }
    }

    /* memory: the most similar past situations of this brand, compared by the words that tell
     * this brand's situations apart (idf among the brand's own past situations: its @handle and
     * product names, in nearly all of them, say nothing there) */
    size_t mem_top = (size_t)tuning.mem_top;
    if (mem_top > MEM_TOP_MAX)
        mem_top = MEM_TOP_MAX;
    float mem_sum = 0;
    if (nmem && nq && mem_top) {
        ms = calloc(nmem, sizeof *ms);
        scope = malloc(nmem);
        if (!ms || !scope)
            goto out;
        uint32_t nscope = 0;
        for (size_t i = 0; i < nmem; i++) {
            scope[i] = (unsigned char)(!brand || memory_entry_brand_is(mem, i, brand));
            nscope += scope[i];
        }
        bm25_score_within(memory_index(mem), qt, nq, scope, nscope, ms);
        for (size_t i = 0; i < nmem; i++) {
            if (ms[i] <= 0 || !scope[i])
                continue;
            struct mem_hit h = {ms[i], (uint32_t)i};
            if (nhits == mem_top && !(h.s > hits[mem_top - 1].s))
                continue; /* ties keep the lower index: entries are sorted by id */
            size_t j = nhits < mem_top ? nhits++ : mem_top - 1;
            while (j > 0 && h.s > hits[j - 1].s) {
                hits[j] = hits[j - 1];
                j--;
            }
            hits[j] = h;
        }
        for (size_t j = 0; j < nhits; j++)
            mem_sum += hits[j].s;
        if (dbg)
            dbg->memory_matches = nhits;
    }
    /* the vote: each neighbour's share of the similarity goes to the entries its reply cited */
    float best_vote = 0;
    for (size_t j = 0; j < nhits && mem_links; j++) {
        const struct memory_entry *e = memory_entry_at(mem, hits[j].i);
        for (size_t l = 0; l < e->n_links; l++) {
            long at = e->links[l];
            if (at < 0 || (size_t)at >= nkb || !kb_entry_allowed(kb, (size_t)at, brand_id))
                continue;
            ev[at] += hits[j].s / mem_sum;
            if (ev[at] > best_vote)
                best_vote = ev[at];
            if (best_mem[at] < 0)
                best_mem[at] = (long)hits[j].i; /* hits are best first */
        }
    }
    float w_agents = tuning.w_vote + tuning.w_popular;
    for (size_t i = 0; i < nkb; i++)
        ev[i] *= tuning.w_vote / w_agents;

    /* popularity: how often this brand's agents cited each entry, the vote's prior */
    const long *pk = NULL;
    const uint32_t *pc = NULL;
    uint32_t ptotal = 0;
    size_t npop = mem_links ? memory_popularity(mem, brand ? brand : "", &pk, &pc, &ptotal) : 0;
    size_t ncited = 0;
    for (size_t j = 0; j < npop && ptotal; j++)
        if (pk[j] >= 0 && (size_t)pk[j] < nkb && kb_entry_allowed(kb, (size_t)pk[j], brand_id)) {
            ev[pk[j]] += tuning.w_popular / w_agents * (float)pc[j] / (float)ptotal;
            ncited++;
        }
    if (dbg)
        dbg->used_popularity = ncited > 0;

    /* how far agents' evidence is trusted over the text (see tuning) */
    double trust = 0;
    if (ncited || nhits) {
        double cover = pool ? (double)ncited / (double)pool : 0;
        if (cover > 1)
            cover = 1;
        if (cover < COVER_FLOOR)
            cover = COVER_FLOOR;
        double z = tuning.gate_bias + tuning.gate_vote * best_vote + tuning.gate_cover * log(cover);
        trust = 1 / (1 + exp(-z));
    }
    double w_ev = trust * tuning.w_seen, w_ts = 1 - trust;

    /* one ranking over KB entries and unlinked past replies; what agents rejected in situations
     * like this one ranks lower (feedback.h; NULL, no cost, when the brand has no rejections) */
    if (feedback_reject_query_new(brand, qt, nq, &rq))
        goto out;
    struct cand topk[ENGINE_MAX_K];
    size_t ntop = 0;
    for (size_t i = 0; i < nkb; i++) {
        double sc = w_ev * ev[i] + w_ts * ts[i];
        if (sc <= 0)
            continue; /* not allowed entries have neither */
        const struct kb_entry *e = kb_entry_at(kb, i);
        if (rq)
            sc *= feedback_reject_factor(rq, e->id);
        struct cand c = {sc, e->id, (long)i, best_mem[i]};
        top_insert(topk, &ntop, k, &c);
    }
    for (size_t j = 0; j < nhits; j++) {
        const struct memory_entry *e = memory_entry_at(mem, hits[j].i);
        if (mem_links && e->n_links)
            continue; /* counted for its entries above */
        struct cand c = {w_ev * tuning.w_vote / w_agents * hits[j].s / mem_sum, e->id, -1, (long)hits[j].i};
        if (rq)
            c.score *= feedback_reject_factor(rq, e->id);
        top_insert(topk, &ntop, k, &c);
    }

    /* render */
    const char *based_on = ctx->newest_id;
    for (size_t r = 0; r < ntop; r++) {
        const struct cand *c = &topk[r];
        struct suggestion *sg = &out[r];
        memset(sg, 0, sizeof *sg);
        const struct kb_entry *e = c->kb >= 0 ? kb_entry_at(kb, (size_t)c->kb) : NULL;
        long mi = c->mem;
        if (mi < 0 && e && mem_links)
            mi = memory_representative(mem, brand ? brand : "", c->kb); /* how agents used this entry */
        const struct memory_entry *me = mi >= 0 ? memory_entry_at(mem, (size_t)mi) : NULL;
        sg->rank = (unsigned)r + 1;
        sg->source = me ? "memory" : "kb";
        sg->kb_id = e ? e->id : NULL;
        sg->title = e && e->title[0] ? e->title : NULL;
        sg->memory_id = me ? me->id : NULL;
        int ferr = T_OK;
        sg->text = fill_to_arena(a, me ? strip_handles(me->reply) : e->body, ctx, &ferr);
        if (ferr) {
            err = ferr;
            goto out;
        }
        sg->score = c->score > 1 ? 1 : c->score;
        engine_suggestion_id(ctx->conv_id, based_on, sg->source, sg->kb_id, sg->memory_id, sg->id);
        /* kb_id/title/memory_id point into kb/mem: copy, so the answer outlives the references */
        const char *kid = sg->kb_id, *title = sg->title, *mid = sg->memory_id;
        sg->kb_id = kid ? arena_strdup(a, kid) : NULL;
        sg->title = title ? arena_strdup(a, title) : NULL;
        sg->memory_id = mid ? arena_strdup(a, mid) : NULL;
        if ((kid && !sg->kb_id) || (title && !sg->title) || (mid && !sg->memory_id))
            goto out;
    }
    *n_out = ntop;
    err = T_OK;
out:
    feedback_reject_query_free(rq);
    free(q.slots);
    free(q.pool);
    free(qt);
    free(ts);
    free(ev);
    free(ms);
    free(scope);
    free(best_mem);
    return err;
}
