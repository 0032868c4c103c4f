/* Reply memory: transcript parsing, Redis records, immutable indexed snapshots and their sync (layout in memory.h). */
#include "tandem/clock.h"
#include "tandem/memory.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "tandem/app.h"
#include "tandem/context.h"
#include "tandem/error.h"
#include "tandem/json_io.h"
#include "tandem/kb.h"
#include "tandem/log.h"
#include "tandem/store.h"
#include "tandem/text.h"

#define MEMORY_KEY "memory:replies"

/* ---- records -------------------------------------------------------------------------------- */

void memory_records_init(struct memory_records *r)
{
    r->v = NULL;
    r->n = r->cap = 0;
    arena_init(&r->arena);
}

void memory_records_cleanup(struct memory_records *r)
{
    free(r->v);
    r->v = NULL;
    r->n = r->cap = 0;
    arena_cleanup(&r->arena);
}

static struct memory_record *records_push(struct memory_records *r)
{
    if (r->n == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 64;
        struct memory_record *p = realloc(r->v, cap * sizeof *p);
        if (!p)
            return NULL;
        r->v = p;
        r->cap = cap;
    }
    struct memory_record *rec = &r->v[r->n++];
    memset(rec, 0, sizeof *rec);
    return rec;
}

static const char *role_of(json_t *m) { return json_string_value(json_object_get(m, "role")); }

static int known_role(const char *r)
{
    static const char *const roles[] = {"customer", "agent", "bot", "system", "note", NULL};
    for (size_t i = 0; roles[i]; i++)
        if (strcmp(r, roles[i]) == 0)
            return 1;
    return 0;
}

/* Checks one transcript's shape; NULL when fine, else a static reason. */
static const char *transcript_invalid(json_t *o)
{
    if (!json_is_object(o))
        return "a transcript must be a JSON object";
    json_t *id = json_object_get(o, "id");
    if (!json_is_string(id) || json_string_length(id) == 0 || json_string_length(id) > 256)
        return "'id' is required: a string of 1-256 characters";
    json_t *b = json_object_get(o, "brand");
    if (b && !json_is_null(b) && !json_is_string(b))
        return "'brand' must be a string";
    json_t *l = json_object_get(o, "lang");
    if (l && !json_is_null(l) && !json_is_string(l))
        return "'lang' must be a string (ISO 639-1)";
    json_t *ms = json_object_get(o, "messages");
    if (!json_is_array(ms))
        return "'messages' is required: an array of {\"role\", \"text\"}";
    size_t i;
    json_t *m;
    json_array_foreach(ms, i, m)
    {
        if (!json_is_object(m))
            return "each message must be an object {\"role\", \"text\"}";
        const char *role = role_of(m);
        if (!role)
            return "each message needs 'role': a string";
        if (!known_role(role))
            return "'role' must be customer, agent, bot, system or note";
        if (!json_is_string(json_object_get(m, "text")))
            return "each message needs 'text': a string";
    }
    return NULL;
}

/* l, shortened so that s[0..l) does not end inside a UTF-8 character. */
static size_t utf8_cut(const char *s, size_t l)
{
    while (l && ((unsigned char)s[l] & 0xC0) == 0x80)
        l--;
    return l;
}

/* The context of the reply at index upto: the last MEMORY_CONTEXT_TURNS customer turns before
 * it, within MEMORY_CONTEXT_BYTES (the newest turns win). NULL when there is none. */
static char *build_context(struct arena *a, json_t *ms, size_t upto)
{
    size_t idx[MEMORY_CONTEXT_TURNS], n = 0, bytes = 0;
    for (size_t i = upto; i-- > 0 && n < MEMORY_CONTEXT_TURNS;) {
        json_t *m = json_array_get(ms, i);
        if (strcmp(role_of(m), "customer") != 0)
            continue;
        size_t l = json_string_length(json_object_get(m, "text"));
        if (l == 0)
            continue;
        if (n > 0 && bytes + l + 1 > MEMORY_CONTEXT_BYTES)
            break;
        idx[n++] = i;
        bytes += l + 1;
    }
    if (!n)
        return NULL;
    char *out = arena_alloc(a, bytes + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t k = n; k-- > 0;) {
        json_t *t = json_object_get(json_array_get(ms, idx[k]), "text");
        size_t l = json_string_length(t);
        if (o + l + 1 > MEMORY_CONTEXT_BYTES && o > 0)
            break;
        if (l > MEMORY_CONTEXT_BYTES)
            l = utf8_cut(json_string_value(t), MEMORY_CONTEXT_BYTES); /* one huge turn: keep its start */
        memcpy(out + o, json_string_value(t), l);
        o += l;
        out[o++] = '\n';
    }
    out[o ? o - 1 : 0] = '\0';
    return out;
}

int memory_context_of(const struct context *ctx, struct buf *out)
{
    size_t idx[MEMORY_CONTEXT_TURNS], n = 0, bytes = 0;
    for (size_t i = ctx->n_messages; i-- > 0 && n < MEMORY_CONTEXT_TURNS;) {
        const struct ctx_message *m = &ctx->messages[i];
        size_t l = strlen(m->text);
        if (m->role != ROLE_CUSTOMER || l == 0)
            continue;
        if (n > 0 && bytes + l + 1 > MEMORY_CONTEXT_BYTES)
            break;
        idx[n++] = i;
        bytes += l + 1;
    }
    int err = T_OK;
    for (size_t k = n; k-- > 0 && !err;) {
        const char *t = ctx->messages[idx[k]].text;
        size_t l = strlen(t);
        err = buf_append(out, t, l > MEMORY_CONTEXT_BYTES ? utf8_cut(t, MEMORY_CONTEXT_BYTES) : l);
        if (!err && k > 0)
            err = buf_putc(out, '\n');
    }
    return err;
}

int memory_parse_transcripts(const char *body, size_t len, struct memory_records *out, size_t *n_transcripts,
                             char *err, size_t errsz)
{
    size_t start_n = out->n, count = 0, lineno = 0;
    const char *p = body ? body : "", *end = p + (body ? len : 0);
    int rc = T_OK;
    while (p < end) {
        lineno++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t l = (size_t)(le - p);
        const char *line = p;
        p = le + 1;
        size_t k = 0;
        while (k < l && (line[k] == ' ' || line[k] == '\t' || line[k] == '\r'))
            k++;
        if (k == l)
            continue;
        json_error_t jerr;
        json_t *o;
        if (json_parse(line, l, JSON_REJECT_DUPLICATES, &o, &jerr) == T_ERR_NOMEM) {
            rc = T_ERR_NOMEM; /* not the client's fault: a 500 it may retry */
            break;
        }
        if (!o) {
            snprintf(err, errsz, "line %zu: invalid JSON at column %d: %s", lineno, jerr.column, jerr.text);
            rc = T_ERR_BAD_JSON;
            break;
        }
        const char *why = transcript_invalid(o);
        if (why) {
            snprintf(err, errsz, "line %zu: %s", lineno, why);
            json_decref(o);
            rc = T_ERR_BAD_JSON;
            break;
        }
        count++;
        const char *tid = arena_strdup(&out->arena, json_string_value(json_object_get(o, "id")));
        const char *brand = json_string_value(json_object_get(o, "brand"));
        const char *lang = json_string_value(json_object_get(o, "lang"));
        brand = arena_strdup(&out->arena, brand ? brand : "");
        lang = arena_strdup(&out->arena, lang && *lang ? lang : "en");
        if (!tid || !brand || !lang)
            rc = T_ERR_NOMEM;
        json_t *ms = json_object_get(o, "messages");
        for (size_t i = 0; i < json_array_size(ms) && !rc; i++) {
            json_t *m = json_array_get(ms, i);
            if (strcmp(role_of(m), "agent") != 0)
                continue;
            const char *reply = json_string_value(json_object_get(m, "text"));
            if (!reply[0])
                continue;
            char *ctx = build_context(&out->arena, ms, i);
            if (!ctx)
                continue; /* a greeting before the customer spoke answers nothing */
            struct memory_record *r = records_push(out);
            const char *rc_reply = arena_strdup(&out->arena, reply);
            if (!r || !rc_reply) {
                rc = T_ERR_NOMEM;
                break;
            }
            r->tid = tid;
            r->turn = (long)i;
            r->brand = brand;
            r->lang = lang;
            r->context = ctx;
            r->reply = rc_reply;
            r->kb_id = NULL;
            r->source = "transcript";
        }
        json_decref(o);
        if (rc) {
            snprintf(err, errsz, "line %zu: out of memory", lineno);
            break;
        }
    }
    if (!rc && count == 0) {
        snprintf(err, errsz, "the body holds no transcript: send one JSON object per line");
        rc = T_ERR_BAD_JSON;
    }
    if (rc)
        out->n = start_n; /* nothing from this call (its strings stay in the arena until cleanup) */
    else if (n_transcripts)
        *n_transcripts = count;
    return rc;
}

int memory_record_to_json(const struct memory_record *r, struct buf *out)
{
    json_t *o = json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:s}", "t", r->tid, "i", (json_int_t)r->turn, "b",
                          r->brand ? r->brand : "", "l", r->lang ? r->lang : "en", "c", r->context, "r", r->reply,
                          "s", r->source ? r->source : "transcript");
    if (!o)
        return T_ERR_NOMEM;
    if (r->kb_id && json_object_set_new(o, "k", json_string(r->kb_id))) {
        json_decref(o);
        return T_ERR_NOMEM;
    }
    char *s = json_serialize(o, JSON_COMPACT);
    json_decref(o);
    if (!s)
        return T_ERR_NOMEM;
    int err = buf_puts(out, s);
    free(s);
    return err;
}

int memory_record_from_json(const char *json, size_t len, struct memory_records *out)
{
    json_error_t jerr;
    json_t *o;
    int perr = json_parse(json, len, 0, &o, &jerr);
    if (perr)
        return perr;
    int err = T_ERR_BAD_JSON;
    const char *t = json_string_value(json_object_get(o, "t"));
    const char *c = json_string_value(json_object_get(o, "c"));
    const char *rp = json_string_value(json_object_get(o, "r"));
    if (!t || !c || !rp)
        goto out;
    const char *b = json_string_value(json_object_get(o, "b"));
    const char *l = json_string_value(json_object_get(o, "l"));
    const char *k = json_string_value(json_object_get(o, "k"));
    const char *s = json_string_value(json_object_get(o, "s"));
    err = T_ERR_NOMEM;
    struct memory_record *r = records_push(out);
    if (!r)
        goto out;
    r->tid = arena_strdup(&out->arena, t);
    r->turn = (long)json_integer_value(json_object_get(o, "i"));
    r->brand = arena_strdup(&out->arena, b ? b : "");
    r->lang = arena_strdup(&out->arena, l && *l ? l : "en");
    r->context = arena_strdup(&out->arena, c);
    r->reply = arena_strdup(&out->arena, rp);
    r->kb_id = k && *k ? arena_strdup(&out->arena, k) : NULL;
    r->source = s && strcmp(s, "feedback") == 0 ? "feedback" : "transcript";
    if (!r->tid || !r->brand || !r->lang || !r->context || !r->reply || (k && *k && !r->kb_id)) {
        out->n--;
        goto out;
    }
    err = T_OK;
out:
    json_decref(o);
    return err;
}

/* ---- snapshots ------------------------------------------------------------------------------ */

struct pop_item {
    const char *brand;
    long kb_idx;
    uint32_t count;
    long rep; /* representative entry: the reply of this brand citing it with the smallest id */
};

struct brand_pop {
    const char *brand;
    size_t first, n; /* range in pop_kb/pop_count */
    uint32_t total;
};

struct memory {
    atomic_int refs;
    struct arena arena;
    struct memory_entry *e;
    size_t n;
    struct bm25 *index;
    uint64_t kb_gen;
    size_t version;
    struct pop_item *pop; /* sorted by brand, then count desc, then kb_idx */
    long *pop_kb;
    uint32_t *pop_count;
    size_t npop;
    struct brand_pop *brands;
    size_t nbrands;
    size_t bytes;
};

static void memory_free(struct memory *m)
{
    if (!m)
        return;
    bm25_free(m->index);
    free(m->e);
    free(m->pop);
    free(m->pop_kb);
    free(m->pop_count);
    free(m->brands);
    arena_cleanup(&m->arena);
    free(m);
}

struct memory *memory_ref(struct memory *m)
{
    if (m)
        atomic_fetch_add(&m->refs, 1);
    return m;
}

void memory_unref(struct memory *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1)
        memory_free(m);
}

size_t memory_count(const struct memory *m) { return m ? m->n : 0; }
const struct memory_entry *memory_entry_at(const struct memory *m, size_t i) { return &m->e[i]; }
const struct bm25 *memory_index(const struct memory *m) { return m ? m->index : NULL; }
uint64_t memory_kb_generation(const struct memory *m) { return m ? m->kb_gen : 0; }
size_t memory_version(const struct memory *m) { return m ? m->version : 0; }
size_t memory_bytes(const struct memory *m) { return m ? m->bytes + bm25_memory(m->index) : 0; }

int memory_entry_brand_is(const struct memory *m, size_t i, const char *brand)
{
    return strcasecmp(m->e[i].brand, brand ? brand : "") == 0;
}

static int cmp_pop(const void *a, const void *b)
{
    const struct pop_item *x = a, *y = b;
    int c = strcasecmp(x->brand, y->brand);
    if (c)
        return c;
    if (x->kb_idx != y->kb_idx)
        return x->kb_idx < y->kb_idx ? -1 : 1;
    return x->rep < y->rep ? -1 : (x->rep > y->rep);
}

static int cmp_pop_count(const void *a, const void *b)
{
    const struct pop_item *x = a, *y = b;
    int c = strcasecmp(x->brand, y->brand);
    if (c)
        return c;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return x->kb_idx < y->kb_idx ? -1 : (x->kb_idx > y->kb_idx);
}

static const struct brand_pop *brand_find(const struct memory *m, const char *brand)
{
    size_t lo = 0, hi = m->nbrands;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcasecmp(m->brands[mid].brand, brand ? brand : "");
        if (c == 0)
            return &m->brands[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

size_t memory_popularity(const struct memory *m, const char *brand, const long **kb_idx, const uint32_t **counts,
                         uint32_t *total)
{
    const struct brand_pop *b = m ? brand_find(m, brand) : NULL;
    if (!b) {
        *kb_idx = NULL;
        *counts = NULL;
        *total = 0;
        return 0;
    }
    *kb_idx = m->pop_kb + b->first;
    *counts = m->pop_count + b->first;
    *total = b->total;
    return b->n;
}

long memory_representative(const struct memory *m, const char *brand, long kb_idx)
{
    const struct brand_pop *b = m ? brand_find(m, brand) : NULL;
    if (!b)
        return -1;
    for (size_t i = b->first; i < b->first + b->n; i++)
        if (m->pop[i].kb_idx == kb_idx)
            return m->pop[i].rep;
    return -1;
}

struct mem_index_ctx {
    struct bm25_builder *b;
    uint32_t doc;
    int err;
};

static void mem_index_token(void *ud, const char *term, size_t len, unsigned flags)
{
    (void)flags;
    struct mem_index_ctx *c = ud;
    if (!c->err)
        c->err = bm25_builder_add(c->b, c->doc, 0, term, len);
}

static void entry_id(const struct memory_record *r, char out[20])
{
    char turn[24];
    int tl = snprintf(turn, sizeof turn, "%ld", r->turn);
    uint64_t h = TEXT_HASH_SEED;
    const char *parts[] = {r->tid, turn, r->brand, r->context, r->reply};
    size_t lens[] = {strlen(r->tid), (size_t)tl, strlen(r->brand), strlen(r->context), strlen(r->reply)};
    for (size_t i = 0; i < 5; i++) {
        h = text_hash(h, parts[i], lens[i]);
        h = text_hash(h, "", 1); /* separator: ("ab","c") differs from ("a","bc") */
    }
    snprintf(out, 20, "m_%016llx", (unsigned long long)h);
}

static int cmp_entry_id(const void *a, const void *b)
{
    return strcmp(((const struct memory_entry *)a)->id, ((const struct memory_entry *)b)->id);
}

struct memory *memory_build(const struct memory_record *recs, size_t n, const struct kb *kb)
{
    struct memory *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    atomic_init(&m->refs, 1);
    arena_init(&m->arena);
    m->kb_gen = kb_generation(kb);
    m->version = n;
    if (n) {
        m->e = calloc(n, sizeof *m->e);
        if (!m->e)
            goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        const struct memory_record *r = &recs[i];
        struct memory_entry *e = &m->e[m->n];
        entry_id(r, e->id);
        e->brand = arena_strdup(&m->arena, r->brand ? r->brand : "");
        e->lang = arena_strdup(&m->arena, r->lang ? r->lang : "en");
        e->context = arena_strdup(&m->arena, r->context);
        e->reply = arena_strdup(&m->arena, r->reply);
        e->source = r->source && strcmp(r->source, "feedback") == 0 ? "feedback" : "transcript";
        if (!e->brand || !e->lang || !e->context || !e->reply)
            goto fail;
        m->bytes += strlen(e->context) + strlen(e->reply) + sizeof *e;
        e->kb_idx = -1;
        if (kb) {
            long at = r->kb_id ? kb_find_id(kb, r->kb_id) : -1;
            if (at >= 0)
                e->links[e->n_links++] = at;
            long found[MEMORY_MAX_LINKS];
            size_t nf = kb_link_all(kb, r->reply, strlen(r->reply), found, MEMORY_MAX_LINKS);
            for (size_t j = 0; j < nf && e->n_links < MEMORY_MAX_LINKS; j++)
                if (found[j] != at)
                    e->links[e->n_links++] = found[j];
            /* the main link: the explicit one, else the first entry of the reply's brand, else the first */
            if (e->n_links) {
                e->kb_idx = e->links[0];
                int bid = e->brand[0] && at < 0 ? kb_brand_id(kb, e->brand) : -1;
                for (size_t j = 0; bid >= 0 && j < e->n_links; j++) {
                    const struct kb_entry *ke = kb_entry_at(kb, (size_t)e->links[j]);
                    if (ke->n_brands && kb_entry_allowed(kb, (size_t)e->links[j], bid)) {
                        e->kb_idx = e->links[j];
                        break;
                    }
                }
                e->kb_id = arena_strdup(&m->arena, kb_entry_at(kb, (size_t)e->kb_idx)->id);
                if (!e->kb_id)
                    goto fail;
            }
        }
        m->n++;
    }
    /* Same id = the same reply imported twice: keep the first. Sorting by id also makes the
     * snapshot independent of import order, so every sidecar ranks ties the same way. */
    if (m->n > 1) {
        qsort(m->e, m->n, sizeof *m->e, cmp_entry_id);
        size_t w = 1;
        for (size_t i = 1; i < m->n; i++)
            if (strcmp(m->e[i].id, m->e[w - 1].id) != 0)
                m->e[w++] = m->e[i];
        m->n = w;
    }
    /* index over the contexts */
    static const struct bm25_field field = {1.0f, 0.75f};
    struct mem_index_ctx ix = {.b = bm25_builder_new(&field, 1)};
    if (!ix.b)
        goto fail;
    for (size_t i = 0; i < m->n && !ix.err; i++) {
        ix.doc = (uint32_t)i;
        if (text_tokenize(m->e[i].context, strlen(m->e[i].context), m->e[i].lang, 0, mem_index_token, &ix) < 0)
            ix.err = T_ERR_NOMEM;
    }
    if (ix.err) {
        bm25_builder_free(ix.b);
        goto fail;
    }
    m->index = bm25_build(ix.b, (uint32_t)m->n);
    if (!m->index)
        goto fail;
    /* popularity: linked replies per (brand, entry) */
    size_t nl = 0;
    for (size_t i = 0; i < m->n; i++)
        nl += m->e[i].n_links;
    if (nl) {
        struct pop_item *items = calloc(nl, sizeof *items);
        if (!items)
            goto fail;
        size_t k = 0;
        for (size_t i = 0; i < m->n; i++)
            for (size_t j = 0; j < m->e[i].n_links; j++)
                items[k++] = (struct pop_item){m->e[i].brand, m->e[i].links[j], 1, (long)i};
        qsort(items, nl, sizeof *items, cmp_pop);
        size_t w = 0;
        for (size_t i = 0; i < nl; i++) {
            if (w && strcasecmp(items[w - 1].brand, items[i].brand) == 0 && items[w - 1].kb_idx == items[i].kb_idx)
                items[w - 1].count++;
            else
                items[w++] = items[i];
        }
        qsort(items, w, sizeof *items, cmp_pop_count);
        m->pop = items;
        m->npop = w;
        m->pop_kb = malloc(w * sizeof *m->pop_kb);
        m->pop_count = malloc(w * sizeof *m->pop_count);
        m->brands = calloc(w, sizeof *m->brands);
        if (!m->pop_kb || !m->pop_count || !m->brands)
            goto fail;
        for (size_t i = 0; i < w; i++) {
            m->pop_kb[i] = items[i].kb_idx;
            m->pop_count[i] = items[i].count;
            if (!m->nbrands || strcasecmp(m->brands[m->nbrands - 1].brand, items[i].brand) != 0)
                m->brands[m->nbrands++] = (struct brand_pop){items[i].brand, i, 0, 0};
            m->brands[m->nbrands - 1].n++;
            m->brands[m->nbrands - 1].total += items[i].count;
        }
    }
    return m;
fail:
    memory_free(m);
    return NULL;
}

/* ---- the shared store ----------------------------------------------------------------------- */

struct memory_store {
    pthread_mutex_t snap_lock; /* guards snap (held only to swap or take a reference) */
    pthread_mutex_t sync_lock; /* one syncing thread at a time; guards recs */
    struct memory *snap;
    struct memory_records recs; /* everything read from Redis so far */
    atomic_llong last_check_ms;
};

struct memory_store *memory_store_new(void)
{
    struct memory_store *ms = calloc(1, sizeof *ms);
    if (!ms)
        return NULL;
    pthread_mutex_init(&ms->snap_lock, NULL);
    pthread_mutex_init(&ms->sync_lock, NULL);
    memory_records_init(&ms->recs);
    atomic_init(&ms->last_check_ms, INT64_MIN / 2);
    return ms;
}

void memory_store_free(struct memory_store *ms)
{
    if (!ms)
        return;
    memory_unref(ms->snap);
    memory_records_cleanup(&ms->recs);
    pthread_mutex_destroy(&ms->snap_lock);
    pthread_mutex_destroy(&ms->sync_lock);
    free(ms);
}

/* For /metrics: the newest snapshot any store installed, and activity counters. */
static atomic_size_t stat_replies, stat_bytes;
static atomic_ulong stat_syncs, stat_sync_errors, stat_appended;

void memory_stats(struct memory_stats *st)
{
    st->replies = atomic_load(&stat_replies);
    st->bytes = atomic_load(&stat_bytes);
    st->syncs = atomic_load(&stat_syncs);
    st->sync_errors = atomic_load(&stat_sync_errors);
    st->appended = atomic_load(&stat_appended);
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static struct memory_store *default_store;
static void default_make(void) { default_store = memory_store_new(); }

struct memory_store *app_memory(struct app *app)
{
    if (app && app->memory)
        return app->memory;
    pthread_once(&default_once, default_make);
    return default_store;
}

static struct memory *snap_get(struct memory_store *ms)
{
    pthread_mutex_lock(&ms->snap_lock);
    struct memory *m = memory_ref(ms->snap);
    pthread_mutex_unlock(&ms->snap_lock);
    return m;
}

static void snap_set(struct memory_store *ms, struct memory *m)
{
    pthread_mutex_lock(&ms->snap_lock);
    struct memory *old = ms->snap;
    ms->snap = m;
    atomic_store(&stat_replies, memory_count(m));
    atomic_store(&stat_bytes, memory_bytes(m));
    pthread_mutex_unlock(&ms->snap_lock);
    memory_unref(old);
}

/* Reads new records from Redis into ms->recs. Returns 1 when recs changed, 0 when not, -1 on a
 * Redis error. Caller holds sync_lock. */
static int fetch_new(struct memory_store *ms, struct store *s)
{
    char key[512];
    if (store_key(key, sizeof key, MEMORY_KEY) < 0)
        return -1;
    const char *argv[4] = {"LLEN", key};
    redisReply *r = NULL;
    if (store_command(s, &r, 2, argv, NULL) || !r || r->type != REDIS_REPLY_INTEGER) {
        store_reply_free(r);
        return -1;
    }
    size_t len = (size_t)(r->integer > 0 ? r->integer : 0);
    store_reply_free(r);
    int changed = 0;
    if (len < ms->recs.n) {
        /* the list was trimmed or deleted: start over */
        memory_records_cleanup(&ms->recs);
        memory_records_init(&ms->recs);
        changed = 1;
    }
    while (ms->recs.n < len) {
        char from[24], to[24];
        size_t last = ms->recs.n + MEMORY_FETCH_BATCH - 1;
        if (last >= len)
            last = len - 1;
        snprintf(from, sizeof from, "%zu", ms->recs.n);
        snprintf(to, sizeof to, "%zu", last);
        const char *av[4] = {"LRANGE", key, from, to};
        if (store_command(s, &r, 4, av, NULL) || !r || r->type != REDIS_REPLY_ARRAY) {
            store_reply_free(r);
            return changed ? 1 : -1;
        }
        if (r->elements == 0) {
            store_reply_free(r);
            break;
        }
        for (size_t i = 0; i < r->elements; i++) {
            const redisReply *e = r->element[i];
            int err = (e->type == REDIS_REPLY_STRING) ? memory_record_from_json(e->str, e->len, &ms->recs)
                                                      : T_ERR_BAD_JSON;
            if (err == T_ERR_BAD_JSON) {
                /* keep positions aligned with the list: an unreadable record becomes a blank one */
                struct memory_record *blank = records_push(&ms->recs);
                if (blank) {
                    blank->tid = "";
                    blank->context = "";
                    blank->reply = "";
                    blank->brand = "";
                    blank->lang = "en";
                    blank->source = "invalid";
                }
                log_warn("memory_bad_record", "index=%zu", ms->recs.n - 1);
            } else if (err) {
                store_reply_free(r);
                return changed ? 1 : -1;
            }
        }
        changed = 1;
        store_reply_free(r);
    }
    return changed;
}

struct memory *memory_store_acquire(struct memory_store *ms, struct store *s, const struct kb *kb, int force)
{
    if (!ms)
        return NULL;
    int64_t now = clock_mono_ms();
    struct memory *cur = snap_get(ms);
    int stale_kb = !cur || memory_kb_generation(cur) != kb_generation(kb);
    int due = s && (force || now - atomic_load(&ms->last_check_ms) >= MEMORY_CHECK_MS);
    if (!stale_kb && !due)
        return cur;
    /* Only one thread syncs; the others go on with the snapshot they have (unless there is
     * none yet or it was linked against another kb: then they wait for the sync). */
    int locked;
    if (force || stale_kb) {
        pthread_mutex_lock(&ms->sync_lock);
        locked = 1;
    } else {
        locked = pthread_mutex_trylock(&ms->sync_lock) == 0;
    }
    if (!locked)
        return cur;
    int changed = 0;
    if (due) {
        atomic_store(&ms->last_check_ms, now);
        int got = fetch_new(ms, s);
        changed = got > 0;
        atomic_fetch_add(got < 0 ? &stat_sync_errors : &stat_syncs, 1);
    }
    memory_unref(cur);
    cur = snap_get(ms);
    if (changed || !cur || memory_kb_generation(cur) != kb_generation(kb)) {
        /* skip blank placeholders of unreadable records */
        struct memory *m = NULL;
        size_t nvalid = 0;
        for (size_t i = 0; i < ms->recs.n; i++)
            nvalid += ms->recs.v[i].reply[0] != '\0';
        if (nvalid == ms->recs.n) {
            m = memory_build(ms->recs.v, ms->recs.n, kb);
        } else {
            struct memory_record *tmp = malloc((nvalid ? nvalid : 1) * sizeof *tmp);
            if (tmp) {
                size_t k = 0;
                for (size_t i = 0; i < ms->recs.n; i++)
                    if (ms->recs.v[i].reply[0])
                        tmp[k++] = ms->recs.v[i];
                m = memory_build(tmp, k, kb);
                free(tmp);
            }
        }
        if (m) {
            m->version = ms->recs.n;
            snap_set(ms, m);
            memory_unref(cur);
            cur = snap_get(ms);
            log_info("memory_indexed", "replies=%zu bytes=%zu", memory_count(cur), memory_bytes(cur));
        }
    }
    pthread_mutex_unlock(&ms->sync_lock);
    return cur;
}

int memory_store_append(struct store *s, const struct memory_records *recs)
{
    if (!recs->n)
        return T_OK;
    char key[512];
    if (store_key(key, sizeof key, MEMORY_KEY) < 0)
        return T_ERR_INTERNAL;
    size_t argc = recs->n + 2;
    const char **argv = calloc(argc, sizeof *argv);
    size_t *lens = calloc(argc, sizeof *lens);
    struct buf *bufs = calloc(recs->n, sizeof *bufs);
    int err = T_ERR_NOMEM;
    if (!argv || !lens || !bufs)
        goto out;
    argv[0] = "RPUSH";
    lens[0] = 5;
    argv[1] = key;
    lens[1] = strlen(key);
    for (size_t i = 0; i < recs->n; i++) {
        buf_init(&bufs[i], 0);
        err = memory_record_to_json(&recs->v[i], &bufs[i]);
        if (err)
            goto out;
        argv[i + 2] = bufs[i].data;
        lens[i + 2] = bufs[i].len;
    }
    redisReply *r = NULL;
    err = store_command(s, &r, (int)argc, argv, lens);
    if (!err && (!r || r->type != REDIS_REPLY_INTEGER)) {
        log_error("memory_write_refused", "reason=%s", r && r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        err = T_ERR_INTERNAL;
    }
    if (!err)
        atomic_fetch_add(&stat_appended, recs->n);
    store_reply_free(r);
out:
    if (bufs)
        for (size_t i = 0; i < recs->n; i++)
            buf_cleanup(&bufs[i]);
    free(bufs);
    free(argv);
    free(lens);
    return err;
}

int memory_add_reply(struct store *s, const char *ref_id, const char *brand, const char *lang, const char *context,
                     const char *reply, const char *kb_id)
{
    if (!ref_id || !context || !reply || !*reply)
        return T_ERR_BAD_REQUEST;
    struct memory_records one;
    memory_records_init(&one);
    struct memory_record *r = records_push(&one);
    int err = T_ERR_NOMEM;
    if (r) {
        *r = (struct memory_record){ref_id, 0, brand ? brand : "", lang && *lang ? lang : "en", context, reply,
                                    kb_id && *kb_id ? kb_id : NULL, "feedback"};
        err = memory_store_append(s, &one);
    }
    memory_records_cleanup(&one);
    return err;
}
