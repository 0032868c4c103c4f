/* Suggestion quality in process: leave-one-out (or k-fold) over imported transcripts, the dev cases, and engine latency.
 *
 * The server-level `make eval` (eval.py) scores 62 cdp dev cases: a two-case margin is noise.
 * This harness scores the engine itself on every transcript of cdp/transcripts.jsonl: for each
 * fold, the other transcripts become reply memory (memory_build, exactly as an import would
 * index them) and the held-out conversation minus its final agent reply is the query; gold is
 * the KB entry that reply cites (kb_link_text: text_url_normalize on both sides, first link).
 * The popularity baseline (each brand's most-cited entries in the fold's memory, ties by id as
 * eval.py breaks them) is computed from the same fold. Results are also split by whether the
 * fold's memory holds a citation of the gold entry by the brand's agents ("gold seen"): new
 * conversations often need an article nobody cited before, and the two halves move in opposite
 * directions when memory is trusted more or less. ROUGE-L of the top suggestion and of the best
 * of the top 3 is measured against the held-out reply (tokenized as eval.py does).
 * It also scores the dev cases of cdp (all transcripts as memory) and abcd (no memory) through
 * the same engine call (the figures `make eval` gets over HTTP), and times engine_local_suggest
 * on 50-message conversations with the cdp KB and every transcript loaded.
 *
 *   eval_loo [--data DIR] [--folds N] [--k K] [--json FILE|-] [--cases FILE] [--no-bench]
 *           [--set name=value]...
 *
 * --folds 0 (default) is leave-one-out; N > 1 assigns transcripts to N folds by a hash of their
 * id and prints each fold's R@3 next to popularity's. --cases writes one JSON line per scored
 * case (to look at failures, not to tune single cases). --set changes a ranking weight of the
 * engine for this run (see `tuning` in src/engine_local.c; the harness includes that file to
 * reach it): used to choose the weights, never needed to measure them.
 * Built and run by tests/eval/run.sh (`make eval`). */
#define ENGINE_TUNING_CONST /* writable here: --set */
#include "../../src/engine_local.c"

#include <ctype.h>
#include <jansson.h>
#include <time.h>

#define LOO_MAX_K 10
#define BENCH_MESSAGES 50
#define BENCH_REPS 4000
/* The server keeps this many newest messages per context (TANDEM_CONTEXT_MESSAGES default). */
#define CONTEXT_MESSAGES 50

/* ---- input ----------------------------------------------------------------------------------- */

struct conv {
    char *id, *brand, *gold; /* gold: kb id or NULL */
    const char *reply;       /* what the agent really wrote next (borrowed from text[] or owned), or NULL */
    char *reply_owned;
    size_t n, nall; /* messages in the query; read */
    char **role, **text;
    size_t rec_first, rec_n; /* its records in the memory_records (transcripts only) */
};

struct convs {
    struct conv *v;
    size_t n;
};

static char *xstrdup(const char *s)
{
    char *d = strdup(s ? s : "");
    if (!d) {
        fprintf(stderr, "eval_loo: out of memory\n");
        exit(2);
    }
    return d;
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    struct buf b;
    buf_init(&b, 0);
    char chunk[65536];
    size_t got;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
        if (buf_append(&b, chunk, got)) {
            fclose(f);
            buf_cleanup(&b);
            return NULL;
        }
    fclose(f);
    if (buf_putc(&b, '\0')) {
        buf_cleanup(&b);
        return NULL;
    }
    *len = b.len - 1;
    return b.data; /* handed over: buf_cleanup not called */
}

/* Reads a JSONL file of {"id", "brand", "messages", "gold_kb_id"?}. With recs, every line is also
 * parsed as a transcript into recs (memory_parse_transcripts, one call per line, so each
 * conversation knows its records) and the final agent reply is cut off and linked for gold. */
static int load_convs(const char *path, const struct kb *kb, struct memory_records *recs, struct convs *out)
{
    size_t len = 0;
    char *body = read_file(path, &len);
    if (!body) {
        fprintf(stderr, "eval_loo: cannot read %s\n", path);
        return -1;
    }
    out->v = NULL;
    out->n = 0;
    size_t cap = 0, lineno = 0;
    for (char *p = body; p < body + len;) {
        char *nl = memchr(p, '\n', (size_t)(body + len - p));
        size_t l = nl ? (size_t)(nl - p) : (size_t)(body + len - p);
        char *line = p;
        p += l + 1;
        lineno++;
        if (l == 0)
            continue;
        json_error_t jerr;
        json_t *o = json_loadb(line, l, 0, &jerr);
        json_t *ms = o ? json_object_get(o, "messages") : NULL;
        if (!json_is_array(ms)) {
            fprintf(stderr, "eval_loo: %s:%zu: not a conversation\n", path, lineno);
            json_decref(o);
            free(body);
            return -1;
        }
        if (out->n == cap) {
            cap = cap ? cap * 2 : 256;
            out->v = realloc(out->v, cap * sizeof *out->v);
            if (!out->v)
                return -1;
        }
        struct conv *c = &out->v[out->n];
        memset(c, 0, sizeof *c);
        c->id = xstrdup(json_string_value(json_object_get(o, "id")));
        c->brand = xstrdup(json_string_value(json_object_get(o, "brand")));
        size_t nm = json_array_size(ms);
        c->role = calloc(nm ? nm : 1, sizeof *c->role);
        c->text = calloc(nm ? nm : 1, sizeof *c->text);
        for (size_t i = 0; i < nm; i++) {
            json_t *m = json_array_get(ms, i);
            c->role[i] = xstrdup(json_string_value(json_object_get(m, "role")));
            c->text[i] = xstrdup(json_string_value(json_object_get(m, "text")));
        }
        c->n = c->nall = nm;
        if (recs) {
            c->rec_first = recs->n;
            size_t nt;
            char err[256];
            if (memory_parse_transcripts(line, l, recs, &nt, err, sizeof err) != T_OK) {
                fprintf(stderr, "eval_loo: %s:%zu: %s\n", path, lineno, err);
                json_decref(o);
                free(body);
                return -1;
            }
            c->rec_n = recs->n - c->rec_first;
            if (nm && strcmp(c->role[nm - 1], "agent") == 0) {
                long at = kb_link_text(kb, c->text[nm - 1], strlen(c->text[nm - 1]));
                if (at >= 0)
                    c->gold = xstrdup(kb_entry_at(kb, (size_t)at)->id);
                c->n = nm - 1; /* the query: everything before the reply */
                c->reply = c->text[nm - 1];
            }
        } else {
            const char *g = json_string_value(json_object_get(o, "gold_kb_id"));
            c->gold = g && *g ? xstrdup(g) : NULL;
            const char *r = json_string_value(json_object_get(o, "next_agent_reply"));
            c->reply = c->reply_owned = r && *r ? xstrdup(r) : NULL;
        }
        json_decref(o);
        out->n++;
    }
    free(body);
    return 0;
}

static void free_convs(struct convs *cs)
{
    for (size_t i = 0; i < cs->n; i++) {
        struct conv *c = &cs->v[i];
        for (size_t j = 0; j < c->nall; j++) {
            free(c->role[j]);
            free(c->text[j]);
        }
        free(c->id);
        free(c->brand);
        free(c->gold);
        free(c->reply_owned);
        free(c->role);
        free(c->text);
    }
    free(cs->v);
}

/* A context of c's first n messages with meta brand and lang "en", as the server builds it from
 * the stream (newest TANDEM_CONTEXT_MESSAGES kept). */
static struct context *conv_context(const struct conv *c, size_t n, const char *conv_id)
{
    struct context *ctx = context_new(conv_id);
    if (!ctx)
        return NULL;
    size_t first = n > CONTEXT_MESSAGES ? n - CONTEXT_MESSAGES : 0;
    ctx->messages = arena_alloc(&ctx->arena, (n - first ? n - first : 1) * sizeof *ctx->messages);
    for (size_t i = first; i < n; i++) {
        struct ctx_message *m = &ctx->messages[i - first];
        memset(m, 0, sizeof *m);
        snprintf(m->id, sizeof m->id, "%lld-0", 1600000000000LL + (long long)i);
        m->role = context_role_from_name(c->role[i]);
        m->role_name = c->role[i];
        m->text = c->text[i];
        m->ts_ms = 1600000000000LL + (long long)i;
    }
    ctx->n_messages = n - first;
    if (ctx->n_messages)
        snprintf(ctx->newest_id, sizeof ctx->newest_id, "%s", ctx->messages[ctx->n_messages - 1].id);
    struct ctx_kv *kv = arena_alloc(&ctx->arena, 2 * sizeof *kv);
    kv[0] = (struct ctx_kv){"lang", "en"};
    kv[1] = (struct ctx_kv){"brand", c->brand};
    ctx->meta = kv;
    ctx->n_meta = c->brand[0] ? 2 : 1;
    return ctx;
}

/* ---- scoring --------------------------------------------------------------------------------- */

struct hits {
    size_t n;         /* cases with gold */
    size_t at[LOO_MAX_K + 1]; /* at[r]: gold found at rank r (1-based) */
};

static void hits_add(struct hits *h, const char *gold, const char *const *ids, size_t nids)
{
    h->n++;
    for (size_t r = 0; r < nids && r < LOO_MAX_K; r++)
        if (ids[r] && strcmp(ids[r], gold) == 0) {
            h->at[r + 1]++;
            return;
        }
}

static double recall(const struct hits *h, size_t k)
{
    size_t got = 0;
    for (size_t r = 1; r <= k && r <= LOO_MAX_K; r++)
        got += h->at[r];
    return h->n ? (double)got / (double)h->n : 0;
}

/* ROUGE-L F1 as eval.py computes it, close enough to tune with: @handles and URLs removed,
 * words are runs of ASCII letters and digits and of non-ASCII characters other than the
 * general punctuation block (U+2000-206F: quotes, dashes, ellipsis) and emoji, lower-cased.
 * The figure `make eval` reports is eval.py's. */
#define ROUGE_MAX_WORDS 512

/* Bytes of the (possibly truncated) UTF-8 sequence at p, 1 at least, never past the NUL. */
static size_t utf8_len(const unsigned char *p)
{
    size_t k = *p >= 0xF0 ? 4 : *p >= 0xE0 ? 3 : *p >= 0xC0 ? 2 : 1;
    for (size_t i = 1; i < k; i++)
        if (!p[i])
            return i;
    return k;
}

/* 1 when the character at p (k bytes) is white space for Python's \s beyond ASCII: U+00A0,
 * U+2000-200A, U+2028/2029, U+202F, U+205F, U+3000. */
static int rouge_uspace(const unsigned char *p, size_t k)
{
    if (k == 2)
        return p[0] == 0xC2 && p[1] == 0xA0;
    if (k != 3)
        return 0;
    if (p[0] == 0xE2 && p[1] == 0x80)
        return p[2] <= 0x8A || p[2] == 0xA8 || p[2] == 0xA9 || p[2] == 0xAF;
    return (p[0] == 0xE2 && p[1] == 0x81 && p[2] == 0x9F) || (p[0] == 0xE3 && p[1] == 0x80 && p[2] == 0x80);
}

static int rouge_word_char(const unsigned char *p, size_t k)
{
    if (*p < 0x80)
        return isalnum(*p);
    if (k == 2 && p[0] == 0xC2) /* Latin-1 symbols: only ª ² ³ µ ¹ º ¼ ½ ¾ are alphanumeric */
        return strchr("\xAA\xB2\xB3\xB5\xB9\xBA\xBC\xBD\xBE", p[1]) != NULL;
    if (k == 2 && p[0] == 0xC3) /* Latin-1 letters, minus x and / */
        return p[1] != 0x97 && p[1] != 0xB7;
    if (k == 3 && p[0] == 0xE2 && (p[1] == 0x80 || (p[1] == 0x81 && p[2] < 0xB0)))
        return 0; /* U+2000-206F: spaces, quotes, dashes, ellipsis */
    if (k == 3 && p[0] == 0xE2 && p[1] >= 0x84 && p[1] <= 0xAF)
        return 0; /* U+2100-2BFF: arrows, maths, dingbats, the symbols emoji are built from */
    if (k == 3 && ((p[0] == 0xE3 && p[1] == 0x80) || (p[0] == 0xEF && p[1] == 0xB8)))
        return 0; /* CJK punctuation, variation selectors */
    return *p < 0xF0 && !rouge_uspace(p, k); /* emoji and other astral symbols separate words */
}

static size_t rouge_words(const char *s, uint64_t *out)
{
    size_t n = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p && n < ROUGE_MAX_WORDS) {
        if (*p == '@' && (isalnum(p[1]) || p[1] == '_')) { /* @\w+ */
            p++;
            while (isalnum(*p) || *p == '_')
                p++;
            continue;
        }
        if (strncasecmp((const char *)p, "http://", 7) == 0 || strncasecmp((const char *)p, "https://", 8) == 0 ||
            strncasecmp((const char *)p, "www.", 4) == 0) { /* (?:https?://|www\.)\S+ */
            while (*p && !isspace(*p) && !rouge_uspace(p, utf8_len(p)))
                p += utf8_len(p);
            continue;
        }
        uint64_t h = TEXT_HASH_SEED;
        size_t len = 0;
        for (;;) {
            size_t k = utf8_len(p);
            if (!rouge_word_char(p, k))
                break;
            for (size_t i = 0; i < k; i++) {
                unsigned char b = (unsigned char)tolower(p[i]);
                h = text_hash(h, &b, 1);
            }
            len += k;
            p += k;
        }
        if (len)
            out[n++] = h;
        else
            p += utf8_len(p);
    }
    return n;
}

static double rouge_l(const char *cand, const char *ref)
{
    static uint64_t a[ROUGE_MAX_WORDS], b[ROUGE_MAX_WORDS];
    static unsigned prev[ROUGE_MAX_WORDS + 1], cur[ROUGE_MAX_WORDS + 1];
    size_t na = rouge_words(cand, a), nb = rouge_words(ref, b);
    if (!na || !nb)
        return 0;
    memset(prev, 0, sizeof prev);
    for (size_t i = 0; i < na; i++) {
        cur[0] = 0;
        for (size_t j = 1; j <= nb; j++)
            cur[j] = a[i] == b[j - 1] ? prev[j - 1] + 1 : (prev[j] > cur[j - 1] ? prev[j] : cur[j - 1]);
        memcpy(prev, cur, (nb + 1) * sizeof *cur);
    }
    double lcs = prev[nb];
    if (lcs == 0)
        return 0;
    double pr = lcs / (double)na, rc = lcs / (double)nb;
    return 2 * pr * rc / (pr + rc);
}

struct rouge {
    double top1, best3;
    size_t n;
};

static double rouge_mean(const struct rouge *r, int best3) { return r->n ? (best3 ? r->best3 : r->top1) / (double)r->n : 0; }

/* Rank (1-based) of gold among ids, 0 when absent. */
static size_t rank_of(const char *gold, const char *const *ids, size_t nids)
{
    for (size_t r = 0; r < nids; r++)
        if (ids[r] && strcmp(ids[r], gold) == 0)
            return r + 1;
    return 0;
}

/* The engine's top k kb ids for c's query. Returns how many (ids borrowed from kb). With rg and a
 * reply to compare with, adds the ROUGE-L of the top suggestion and of the best of the top 3. */
static size_t run_engine(const struct conv *c, const struct kb *kb, const struct memory *mem, size_t k,
                         const char **ids, struct rouge *rg)
{
    struct context *ctx = conv_context(c, c->n, "eval-case");
    struct arena a;
    arena_init(&a);
    struct suggestion sg[ENGINE_MAX_K];
    size_t n = 0;
    if (!ctx || engine_local_suggest(ctx, kb, mem, k, &a, sg, &n, NULL) != T_OK) {
        fprintf(stderr, "eval_loo: engine failed on %s\n", c->id);
        exit(2);
    }
    for (size_t i = 0; i < n; i++) {
        long at = sg[i].kb_id ? kb_find_id(kb, sg[i].kb_id) : -1;
        ids[i] = at >= 0 ? kb_entry_at(kb, (size_t)at)->id : NULL;
    }
    if (rg && c->reply) {
        double best = 0;
        for (size_t i = 0; i < n && i < 3; i++) {
            double r = rouge_l(sg[i].text, c->reply);
            if (i == 0)
                rg->top1 += r;
            if (r > best)
                best = r;
        }
        rg->best3 += best;
        rg->n++;
    }
    arena_cleanup(&a);
    context_free(ctx);
    return n;
}

struct pop_pair {
    uint32_t count;
    const char *id;
};

static int cmp_pop_pair(const void *a, const void *b)
{
    const struct pop_pair *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->id, y->id);
}

/* eval.py's popularity baseline: the brand's most-cited entries, ties by id. */
static size_t run_popularity(const char *brand, const struct kb *kb, const struct memory *mem, size_t k,
                             const char **ids)
{
    const long *pk;
    const uint32_t *pc;
    uint32_t total;
    size_t n = memory_popularity(mem, brand, &pk, &pc, &total);
    struct pop_pair *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return 0;
    for (size_t i = 0; i < n; i++)
        v[i] = (struct pop_pair){pc[i], kb_entry_at(kb, (size_t)pk[i])->id};
    qsort(v, n, sizeof *v, cmp_pop_pair);
    size_t m = n < k ? n : k;
    for (size_t i = 0; i < m; i++)
        ids[i] = v[i].id;
    free(v);
    return m;
}

static uint64_t fold_of(const char *id, size_t folds) { return text_hash(TEXT_HASH_SEED, id, strlen(id)) % folds; }

struct loo_result {
    struct hits tandem, pop;
    struct hits seen, unseen; /* tandem, split by whether the brand's agents cited gold in memory */
    struct rouge rouge;       /* tandem against the held-out reply */
    size_t folds;
    size_t only_tandem, only_pop; /* paired R@3: gold in one top 3 and not the other */
    double fold_r3_t[64], fold_r3_p[64];
    size_t fold_n[64];
};

/* How often the agents of brand cited kb id gold in mem (0: an article memory has never seen). */
static unsigned times_cited(const struct kb *kb, const struct memory *mem, const char *brand, const char *gold)
{
    long g = kb_find_id(kb, gold);
    const long *pk;
    const uint32_t *pc;
    uint32_t total;
    size_t n = mem ? memory_popularity(mem, brand, &pk, &pc, &total) : 0;
    for (size_t i = 0; i < n; i++)
        if (pk[i] == g)
            return pc[i];
    return 0;
}

/* --cases FILE: one JSON line per scored case (for looking at failures, not for tuning single cases) */
static FILE *cases_out;

static void case_dump(const char *set, const struct conv *c, const struct kb *kb, const struct memory *mem,
                      const char *const *ti, size_t nt, const char *const *pi, size_t np)
{
    if (!cases_out)
        return;
    long g = kb_find_id(kb, c->gold);
    unsigned cited = times_cited(kb, mem, c->brand, c->gold);
    json_t *t = json_array(), *p = json_array();
    for (size_t i = 0; i < nt; i++)
        json_array_append_new(t, ti[i] ? json_string(ti[i]) : json_null());
    for (size_t i = 0; i < np; i++)
        json_array_append_new(p, json_string(pi[i]));
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:o, s:o}", "set", set, "id", c->id, "brand",
                          c->brand, "gold", c->gold, "gold_title", g >= 0 ? kb_entry_at(kb, (size_t)g)->title : "",
                          "gold_cited", (json_int_t)cited, "rank", (json_int_t)rank_of(c->gold, ti, nt), "pop_rank",
                          (json_int_t)rank_of(c->gold, pi, np), "tandem", t, "popularity", p);
    json_dumpf(o, cases_out, JSON_COMPACT);
    fputc('\n', cases_out);
    json_decref(o);
}

static int run_loo(const struct convs *tr, const struct memory_records *recs, const struct kb *kb, size_t folds,
                   size_t k, struct loo_result *res)
{
    memset(res, 0, sizeof *res);
    size_t nf = folds ? folds : tr->n;
    res->folds = nf;
    struct memory_record *sub = malloc((recs->n ? recs->n : 1) * sizeof *sub);
    if (!sub)
        return -1;
    for (size_t f = 0; f < nf; f++) {
        /* memory: every transcript outside the fold */
        size_t ns = 0;
        for (size_t i = 0; i < tr->n; i++) {
            int held = folds ? fold_of(tr->v[i].id, folds) == f : i == f;
            if (!held)
                for (size_t r = 0; r < tr->v[i].rec_n; r++)
                    sub[ns++] = recs->v[tr->v[i].rec_first + r];
        }
        struct memory *mem = memory_build(sub, ns, kb);
        if (!mem)
            return -1;
        struct hits ft = {0}, fp = {0};
        for (size_t i = 0; i < tr->n; i++) {
            const struct conv *c = &tr->v[i];
            int held = folds ? fold_of(c->id, folds) == f : i == f;
            if (!held || !c->gold)
                continue;
            const char *ti[LOO_MAX_K] = {0}, *pi[LOO_MAX_K] = {0};
            size_t nt = run_engine(c, kb, mem, k, ti, &res->rouge);
            size_t np = run_popularity(c->brand, kb, mem, k, pi);
            case_dump("loo", c, kb, mem, ti, nt, pi, np);
            hits_add(&res->tandem, c->gold, ti, nt);
            hits_add(times_cited(kb, mem, c->brand, c->gold) ? &res->seen : &res->unseen, c->gold, ti, nt);
            hits_add(&res->pop, c->gold, pi, np);
            hits_add(&ft, c->gold, ti, nt);
            hits_add(&fp, c->gold, pi, np);
            size_t rt = rank_of(c->gold, ti, nt), rp = rank_of(c->gold, pi, np);
            int t3 = rt && rt <= 3, p3 = rp && rp <= 3;
            res->only_tandem += t3 && !p3;
            res->only_pop += p3 && !t3;
        }
        if (folds && f < 64) {
            res->fold_n[f] = ft.n;
            res->fold_r3_t[f] = recall(&ft, 3);
            res->fold_r3_p[f] = recall(&fp, 3);
        }
        memory_unref(mem);
    }
    free(sub);
    return 0;
}

static void run_dev(const struct convs *dev, const struct kb *kb, const struct memory *mem, size_t k,
                    struct hits *t, struct hits *p, struct hits *seen, struct hits *unseen, struct rouge *rg)
{
    memset(t, 0, sizeof *t);
    memset(p, 0, sizeof *p);
    memset(seen, 0, sizeof *seen);
    memset(unseen, 0, sizeof *unseen);
    memset(rg, 0, sizeof *rg);
    for (size_t i = 0; i < dev->n; i++) {
        const struct conv *c = &dev->v[i];
        const char *ti[LOO_MAX_K] = {0}, *pi[LOO_MAX_K] = {0};
        size_t nt = run_engine(c, kb, mem, k, ti, rg);
        if (!c->gold)
            continue;
        size_t np = mem ? run_popularity(c->brand, kb, mem, k, pi) : 0;
        hits_add(t, c->gold, ti, nt);
        hits_add(times_cited(kb, mem, c->brand, c->gold) ? seen : unseen, c->gold, ti, nt);
        if (mem)
            hits_add(p, c->gold, pi, np);
        case_dump(mem ? "cdp-dev" : "abcd-dev", c, kb, mem, ti, nt, pi, np);
    }
}

/* ---- latency --------------------------------------------------------------------------------- */

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* 50-message conversations: each dev case's brand, its messages followed by transcripts of the
 * same brand (customer and agent turns alternate as they were written) until 50. */
static void run_bench(const struct convs *dev, const struct convs *tr, const struct kb *kb, const struct memory *mem,
                      double *p50, double *p99)
{
    double *t = malloc(BENCH_REPS * sizeof *t);
    size_t nt = 0;
    struct conv big = {0};
    big.role = calloc(BENCH_MESSAGES, sizeof *big.role);
    big.text = calloc(BENCH_MESSAGES, sizeof *big.text);
    struct context **ctxs = calloc(dev->n ? dev->n : 1, sizeof *ctxs);
    size_t nctx = 0;
    for (size_t d = 0; d < dev->n; d++) {
        const struct conv *c = &dev->v[d];
        big.brand = c->brand;
        size_t n = 0;
        for (size_t i = 0; i < c->n && n < BENCH_MESSAGES; i++, n++) {
            big.role[n] = c->role[i];
            big.text[n] = c->text[i];
        }
        for (size_t j = 0; j < tr->n && n < BENCH_MESSAGES; j++) {
            const struct conv *o = &tr->v[(d * 7 + j) % tr->n];
            if (strcasecmp(o->brand, c->brand) != 0)
                continue;
            for (size_t i = 0; i < o->nall && n < BENCH_MESSAGES; i++, n++) {
                big.role[n] = o->role[i];
                big.text[n] = o->text[i];
            }
        }
        big.n = n;
        if (n == BENCH_MESSAGES)
            ctxs[nctx++] = conv_context(&big, n, "bench");
    }
    struct arena a;
    for (size_t r = 0; r < BENCH_REPS && nctx; r++) {
        struct suggestion sg[ENGINE_MAX_K];
        size_t n;
        arena_init(&a);
        double t0 = now_us();
        engine_local_suggest(ctxs[r % nctx], kb, mem, ENGINE_DEFAULT_K, &a, sg, &n, NULL);
        double t1 = now_us();
        arena_cleanup(&a);
        if (r >= BENCH_REPS / 10) /* warm-up */
            t[nt++] = (t1 - t0) / 1000.0;
    }
    qsort(t, nt, sizeof *t, cmp_double);
    *p50 = nt ? t[nt / 2] : 0;
    *p99 = nt ? t[nt * 99 / 100] : 0;
    for (size_t i = 0; i < nctx; i++)
        context_free(ctxs[i]);
    free(ctxs);
    free(big.role);
    free(big.text);
    free(t);
}

/* ---- --set ------------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    float *v;
} knobs[] = {
    {"q_decay", &tuning.q_decay},     {"q_floor", &tuning.q_floor},       {"q_agent", &tuning.q_agent},
    {"q_w_number", &tuning.q_w_number}, {"q_w_handle", &tuning.q_w_handle}, {"t_floor", &tuning.t_floor},
    {"unbranded", &tuning.unbranded}, {"mem_top", &tuning.mem_top},       {"w_vote", &tuning.w_vote},
    {"w_popular", &tuning.w_popular}, {"gate_bias", &tuning.gate_bias},   {"gate_vote", &tuning.gate_vote},
    {"gate_cover", &tuning.gate_cover}, {"w_seen", &tuning.w_seen},
};

/* "name=value": sets one knob; -1 when the name is unknown or the value not a number. */
static int tuning_set(const char *s)
{
    const char *eq = strchr(s, '=');
    if (!eq)
        return -1;
    char *end;
    float v = strtof(eq + 1, &end);
    if (end == eq + 1 || *end)
        return -1;
    for (size_t i = 0; i < sizeof knobs / sizeof knobs[0]; i++)
        if (strlen(knobs[i].name) == (size_t)(eq - s) && strncmp(knobs[i].name, s, (size_t)(eq - s)) == 0) {
            *knobs[i].v = v;
            return 0;
        }
    return -1;
}

/* ---- main ------------------------------------------------------------------------------------ */

static void print_row(const char *data, const char *sys, const struct hits *h, const struct rouge *rg)
{
    printf("%-9s %-11s %5zu  %5.3f  %5.3f  %5.3f", data, sys, h->n, recall(h, 1), recall(h, 3), recall(h, 5));
    if (rg && rg->n)
        printf("   %6.3f   %6.3f", rouge_mean(rg, 0), rouge_mean(rg, 1));
    putchar('\n');
}

static json_t *hits_json(const struct hits *h, const struct rouge *rg)
{
    json_t *o = json_pack("{s:I, s:f, s:f, s:f}", "cases_with_gold", (json_int_t)h->n, "R@1", recall(h, 1), "R@3",
                          recall(h, 3), "R@5", recall(h, 5));
    if (rg && rg->n) {
        json_object_set_new(o, "rougeL_top1", json_real(rouge_mean(rg, 0)));
        json_object_set_new(o, "rougeL_best3", json_real(rouge_mean(rg, 1)));
        json_object_set_new(o, "cases_with_reply", json_integer((json_int_t)rg->n));
    }
    return o;
}

static struct kb *load_kb(const char *path)
{
    struct kb *kb = NULL;
    char err[512];
    if (kb_load(path, &kb, err, sizeof err) != T_OK) {
        fprintf(stderr, "eval_loo: %s\n", err);
        exit(2);
    }
    return kb;
}

int main(int argc, char **argv)
{
    const char *data = "../shared/data", *json_out = NULL;
    size_t folds = 0, k = 5;
    int bench = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
            data = argv[++i];
        } else if (strcmp(argv[i], "--folds") == 0 && i + 1 < argc) {
            folds = strtoul(argv[++i], NULL, 10);
            if (folds == 1 || folds > 64) {
                fprintf(stderr, "eval_loo: --folds is 0 (leave-one-out) or 2-64\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--k") == 0 && i + 1 < argc) {
            k = strtoul(argv[++i], NULL, 10);
            if (k < 1 || k > LOO_MAX_K)
                k = 5;
        } else if (strcmp(argv[i], "--json") == 0 && i + 1 < argc) {
            json_out = argv[++i];
        } else if (strcmp(argv[i], "--cases") == 0 && i + 1 < argc) {
            cases_out = fopen(argv[++i], "w");
            if (!cases_out) {
                fprintf(stderr, "eval_loo: cannot write %s\n", argv[i]);
                return 2;
            }
        } else if (strcmp(argv[i], "--no-bench") == 0) {
            bench = 0;
        } else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc) {
            if (tuning_set(argv[++i]) != 0) {
                fprintf(stderr, "eval_loo: unknown or bad --set %s\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "usage: eval_loo [--data DIR] [--folds N] [--k K] [--json FILE|-] [--cases FILE] [--no-bench] "
                            "[--set name=value]...\n");
            return 2;
        }
    }
    char path[4096];
    json_t *js = json_object();

    /* cdp: leave-one-out over the transcripts, then the dev cases with all of them */
    snprintf(path, sizeof path, "%s/cdp/kb.jsonl", data);
    struct kb *kb = load_kb(path);
    struct memory_records recs;
    memory_records_init(&recs);
    struct convs tr, dev;
    snprintf(path, sizeof path, "%s/cdp/transcripts.jsonl", data);
    if (load_convs(path, kb, &recs, &tr))
        return 2;
    snprintf(path, sizeof path, "%s/cdp/dev_cases.jsonl", data);
    if (load_convs(path, kb, NULL, &dev))
        return 2;
    double t0 = now_us();
    struct loo_result lr;
    if (run_loo(&tr, &recs, kb, folds, k, &lr))
        return 2;
    double loo_s = (now_us() - t0) / 1e6;
    struct memory *all = memory_build(recs.v, recs.n, kb);
    struct hits dt, dp, dseen, dunseen;
    struct rouge drg, arg;
    run_dev(&dev, kb, all, k, &dt, &dp, &dseen, &dunseen, &drg);
    double p50 = 0, p99 = 0;
    if (bench)
        run_bench(&dev, &tr, kb, all, &p50, &p99);

    printf("\n%-9s %-11s %5s  %5s  %5s  %5s  %8s %8s\n", "data", "system", "n", "R@1", "R@3", "R@5", "RL-top1",
           "RL-best3");
    printf("--------------------------------------------------------------------\n");
    char name[32];
    snprintf(name, sizeof name, folds ? "cdp-%zuf" : "cdp-loo", folds);
    print_row(name, "tandem", &lr.tandem, &lr.rouge);
    print_row(name, "popularity", &lr.pop, NULL);
    print_row(name, " gold seen", &lr.seen, NULL);
    print_row(name, " unseen", &lr.unseen, NULL);
    double n = (double)lr.tandem.n;
    double diff = n > 0 ? ((double)lr.only_tandem - (double)lr.only_pop) / n : 0;
    /* paired standard error of the R@3 difference (McNemar-style: only discordant cases vary) */
    double se = n > 0 ? sqrt(((double)lr.only_tandem + (double)lr.only_pop) / (n * n) - diff * diff / n) : 0;
    printf("%-9s R@3 - popularity %+.3f (paired s.e. %.3f; %zu cases only tandem, %zu only popularity)\n", name,
           diff, se, lr.only_tandem, lr.only_pop);
    if (folds) {
        for (size_t f = 0; f < folds; f++)
            printf("%-9s fold %2zu: n %3zu  R@3 tandem %5.3f  popularity %5.3f\n", name, f, lr.fold_n[f],
                   lr.fold_r3_t[f], lr.fold_r3_p[f]);
    }
    print_row("cdp-dev", "tandem", &dt, &drg);
    print_row("cdp-dev", "popularity", &dp, NULL);
    print_row("cdp-dev", " gold seen", &dseen, NULL);
    print_row("cdp-dev", " unseen", &dunseen, NULL);

    snprintf(path, sizeof path, "%s/abcd/kb.jsonl", data);
    struct kb *akb = load_kb(path);
    struct convs adev;
    snprintf(path, sizeof path, "%s/abcd/dev_cases.jsonl", data);
    if (load_convs(path, akb, NULL, &adev))
        return 2;
    struct hits at, ap, aseen, aunseen;
    run_dev(&adev, akb, NULL, k, &at, &ap, &aseen, &aunseen, &arg);
    print_row("abcd-dev", "tandem", &at, &arg);
    if (bench)
        printf("engine latency, 50 messages, cdp KB (%zu entries) + %zu replies: p50 %.3f ms  p99 %.3f ms\n",
               kb_count(kb), memory_count(all), p50, p99);
    printf("(%s: %.2f s)\n", folds ? "k-fold" : "leave-one-out", loo_s);

    json_t *loo = json_pack("{s:s, s:I, s:o, s:o, s:o, s:o, s:f, s:f, s:I, s:I}", "mode",
                            folds ? "k-fold" : "leave-one-out", "folds", (json_int_t)lr.folds, "tandem",
                            hits_json(&lr.tandem, &lr.rouge), "popularity", hits_json(&lr.pop, NULL),
                            "tandem_gold_seen", hits_json(&lr.seen, NULL), "tandem_gold_unseen",
                            hits_json(&lr.unseen, NULL),
                            "R@3_minus_popularity", diff, "paired_se", se, "only_tandem", (json_int_t)lr.only_tandem,
                            "only_popularity", (json_int_t)lr.only_pop);
    json_object_set_new(js, "cdp_transcripts", loo);
    json_object_set_new(js, "cdp_dev", json_pack("{s:o, s:o, s:o, s:o}", "tandem", hits_json(&dt, &drg),
                                                 "popularity", hits_json(&dp, NULL), "tandem_gold_seen",
                                                 hits_json(&dseen, NULL), "tandem_gold_unseen",
                                                 hits_json(&dunseen, NULL)));
    json_object_set_new(js, "abcd_dev", json_pack("{s:o}", "tandem", hits_json(&at, &arg)));
    if (bench)
        json_object_set_new(js, "engine_ms_50_messages",
                            json_pack("{s:f, s:f, s:I, s:I}", "p50", p50, "p99", p99, "kb_entries",
                                      (json_int_t)kb_count(kb), "replies", (json_int_t)memory_count(all)));
    if (json_out) {
        int rc = strcmp(json_out, "-") == 0 ? json_dumpf(js, stdout, JSON_INDENT(2))
                                            : json_dump_file(js, json_out, JSON_INDENT(2));
        if (rc) {
            fprintf(stderr, "eval_loo: cannot write %s\n", json_out);
            return 2;
        }
    }
    json_decref(js);
    if (cases_out)
        fclose(cases_out);
    memory_unref(all);
    memory_records_cleanup(&recs);
    free_convs(&tr);
    free_convs(&dev);
    free_convs(&adev);
    kb_free(kb);
    kb_free(akb);
    text_thread_cleanup();
    return 0;
}
