/* BM25F inverted index: built once from tokens, then scored lock-free by any number of threads. */
#include "tandem/bm25.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/error.h"
#include "tandem/text.h"

/* The term dictionary: strings in one pool, open addressing over term ids. */
struct dict {
    char *pool;
    size_t pool_len, pool_cap;
    uint32_t *off, *len; /* per term */
    size_t n, cap;       /* terms, capacity of off/len */
    uint32_t *slots;     /* term id + 1; 0 = empty */
    size_t nslots;       /* power of two */
};

struct ptf {
    uint32_t doc, term;
    float tf[BM25_MAX_FIELDS];
};

struct acc {
    uint32_t term;
    float tf[BM25_MAX_FIELDS];
};

struct bm25_builder {
    struct bm25_field fields[BM25_MAX_FIELDS];
    size_t nfields;
    struct dict d;
    /* the document being collected */
    uint32_t cur_doc;
    int has_cur;
    struct acc *acc;
    size_t nacc, acc_cap;
    int32_t *acc_slot; /* per term: index in acc, -1 when not in the current doc */
    size_t acc_slot_cap;
    /* finished documents */
    struct ptf *ptf;
    size_t nptf, ptf_cap;
    uint32_t *doclen; /* ndocs_seen * nfields */
    size_t doclen_cap; /* in docs */
    uint32_t ndocs_seen;
};

struct bm25 {
    struct dict d;
    uint32_t ndocs;
    float *idf;    /* per term */
    uint32_t *off; /* per term + 1: postings of term t are [off[t], off[t+1]) */
    uint32_t *pdoc;
    float *pw;     /* idf * saturated tf, precomputed */
    size_t npost;
};

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return T_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *q = realloc(*p, c * elem);
    if (!q)
        return T_ERR_NOMEM;
    *p = q;
    *cap = c;
    return T_OK;
}

static void dict_cleanup(struct dict *d)
{
    free(d->pool);
    free(d->off);
    free(d->len);
    free(d->slots);
    memset(d, 0, sizeof *d);
}

static long dict_find(const struct dict *d, const char *s, size_t len, size_t *slot_out)
{
    if (!d->nslots)
        return -1;
    size_t i = (size_t)text_hash(TEXT_HASH_SEED, s, len) & (d->nslots - 1);
    for (;;) {
        uint32_t v = d->slots[i];
        if (!v) {
            if (slot_out)
                *slot_out = i;
            return -1;
        }
        uint32_t t = v - 1;
        if (d->len[t] == len && memcmp(d->pool + d->off[t], s, len) == 0)
            return (long)t;
        i = (i + 1) & (d->nslots - 1);
    }
}

static int dict_rehash(struct dict *d, size_t nslots)
{
    uint32_t *slots = calloc(nslots, sizeof *slots);
    if (!slots)
        return T_ERR_NOMEM;
    for (size_t t = 0; t < d->n; t++) {
        size_t i = (size_t)text_hash(TEXT_HASH_SEED, d->pool + d->off[t], d->len[t]) & (nslots - 1);
        while (slots[i])
            i = (i + 1) & (nslots - 1);
        slots[i] = (uint32_t)t + 1;
    }
    free(d->slots);
    d->slots = slots;
    d->nslots = nslots;
    return T_OK;
}

/* Term id of s, added when new. -1 on OOM. */
static long dict_intern(struct dict *d, const char *s, size_t len)
{
    if (d->n + 1 > d->nslots / 2) {
        if (dict_rehash(d, d->nslots ? d->nslots * 2 : 1024))
            return -1;
    }
    size_t slot = 0;
    long t = dict_find(d, s, len, &slot);
    if (t >= 0)
        return t;
    if (d->n >= UINT32_MAX - 1 || d->pool_len + len + 1 > UINT32_MAX)
        return -1;
    size_t cap = d->cap;
    if (grow((void **)&d->off, &cap, d->n + 1, sizeof *d->off))
        return -1;
    cap = d->cap;
    if (grow((void **)&d->len, &cap, d->n + 1, sizeof *d->len))
        return -1;
    d->cap = cap;
    if (grow((void **)&d->pool, &d->pool_cap, d->pool_len + len + 1, 1))
        return -1;
    memcpy(d->pool + d->pool_len, s, len);
    d->pool[d->pool_len + len] = '\0';
    d->off[d->n] = (uint32_t)d->pool_len;
    d->len[d->n] = (uint32_t)len;
    d->pool_len += len + 1;
    d->slots[slot] = (uint32_t)d->n + 1;
    return (long)d->n++;
}

struct bm25_builder *bm25_builder_new(const struct bm25_field *fields, size_t nfields)
{
    if (!fields || nfields == 0 || nfields > BM25_MAX_FIELDS)
        return NULL;
    struct bm25_builder *b = calloc(1, sizeof *b);
    if (!b)
        return NULL;
    memcpy(b->fields, fields, nfields * sizeof *fields);
    b->nfields = nfields;
    return b;
}

void bm25_builder_free(struct bm25_builder *b)
{
    if (!b)
        return;
    dict_cleanup(&b->d);
    free(b->acc);
    free(b->acc_slot);
    free(b->ptf);
    free(b->doclen);
    free(b);
}

/* Moves the current document's term frequencies into ptf. */
static int flush_doc(struct bm25_builder *b)
{
    if (grow((void **)&b->ptf, &b->ptf_cap, b->nptf + b->nacc, sizeof *b->ptf))
        return T_ERR_NOMEM;
    for (size_t i = 0; i < b->nacc; i++) {
        struct ptf *p = &b->ptf[b->nptf++];
        p->doc = b->cur_doc;
        p->term = b->acc[i].term;
        memcpy(p->tf, b->acc[i].tf, sizeof p->tf);
        b->acc_slot[b->acc[i].term] = -1;
    }
    b->nacc = 0;
    return T_OK;
}

static int ensure_doclen(struct bm25_builder *b, uint32_t doc)
{
    size_t old = b->doclen_cap;
    size_t cap = old;
    void *p = b->doclen;
    /* grow() counts elements of nfields uint32s each */
    if (grow(&p, &cap, (size_t)doc + 1, b->nfields * sizeof(uint32_t)))
        return T_ERR_NOMEM;
    b->doclen = p;
    if (cap > old)
        memset(b->doclen + old * b->nfields, 0, (cap - old) * b->nfields * sizeof(uint32_t));
    b->doclen_cap = cap;
    return T_OK;
}

int bm25_builder_add(struct bm25_builder *b, uint32_t doc, unsigned field, const char *term, size_t len)
{
    if (!b || field >= b->nfields || (b->has_cur && doc < b->cur_doc))
        return T_ERR_INTERNAL;
    if (len == 0)
        return T_OK;
    if (!b->has_cur || doc != b->cur_doc) {
        if (b->has_cur && flush_doc(b))
            return T_ERR_NOMEM;
        b->cur_doc = doc;
        b->has_cur = 1;
    }
    if (ensure_doclen(b, doc))
        return T_ERR_NOMEM;
    if (doc + 1 > b->ndocs_seen)
        b->ndocs_seen = doc + 1;
    long t = dict_intern(&b->d, term, len);
    if (t < 0)
        return T_ERR_NOMEM;
    if ((size_t)t >= b->acc_slot_cap) {
        size_t old = b->acc_slot_cap, cap = old;
        void *p = b->acc_slot;
        if (grow(&p, &cap, (size_t)t + 1, sizeof(int32_t)))
            return T_ERR_NOMEM;
        b->acc_slot = p;
        for (size_t i = old; i < cap; i++)
            b->acc_slot[i] = -1;
        b->acc_slot_cap = cap;
    }
    int32_t a = b->acc_slot[t];
    if (a < 0) {
        if (grow((void **)&b->acc, &b->acc_cap, b->nacc + 1, sizeof *b->acc))
            return T_ERR_NOMEM;
        a = (int32_t)b->nacc++;
        memset(&b->acc[a], 0, sizeof b->acc[a]);
        b->acc[a].term = (uint32_t)t;
        b->acc_slot[t] = a;
    }
    b->acc[a].tf[field] += 1.0f;
    b->doclen[(size_t)doc * b->nfields + field]++;
    return T_OK;
}

struct bm25 *bm25_build(struct bm25_builder *b, uint32_t ndocs)
{
    if (!b)
        return NULL;
    struct bm25 *ix = NULL;
    if (b->has_cur && flush_doc(b))
        goto fail;
    if (ndocs < b->ndocs_seen)
        ndocs = b->ndocs_seen;
    if (ensure_doclen(b, ndocs ? ndocs - 1 : 0))
        goto fail;
    ix = calloc(1, sizeof *ix);
    if (!ix)
        goto fail;
    size_t nt = b->d.n;
    ix->ndocs = ndocs;
    ix->idf = calloc(nt ? nt : 1, sizeof *ix->idf);
    ix->off = calloc(nt + 1, sizeof *ix->off);
    ix->pdoc = malloc((b->nptf ? b->nptf : 1) * sizeof *ix->pdoc);
    ix->pw = malloc((b->nptf ? b->nptf : 1) * sizeof *ix->pw);
    if (!ix->idf || !ix->off || !ix->pdoc || !ix->pw)
        goto fail;
    ix->npost = b->nptf;

    double avg[BM25_MAX_FIELDS] = {0};
    for (uint32_t d = 0; d < ndocs; d++)
        for (size_t f = 0; f < b->nfields; f++)
            avg[f] += b->doclen[(size_t)d * b->nfields + f];
    for (size_t f = 0; f < b->nfields; f++) {
        avg[f] = ndocs ? avg[f] / ndocs : 0;
        if (avg[f] <= 0)
            avg[f] = 1;
    }
    /* document frequencies -> offsets (counting sort by term; docs stay in order) */
    for (size_t i = 0; i < b->nptf; i++)
        ix->off[b->ptf[i].term + 1]++;
    for (size_t t = 0; t < nt; t++) {
        double df = ix->off[t + 1];
        ix->idf[t] = (float)log(1.0 + ((double)ndocs - df + 0.5) / (df + 0.5));
        ix->off[t + 1] += ix->off[t];
    }
    uint32_t *fill = malloc((nt ? nt : 1) * sizeof *fill);
    if (!fill)
        goto fail;
    memcpy(fill, ix->off, nt * sizeof *fill);
    for (size_t i = 0; i < b->nptf; i++) {
        const struct ptf *p = &b->ptf[i];
        double v = 0;
        for (size_t f = 0; f < b->nfields; f++) {
            if (p->tf[f] == 0)
                continue;
            double len = b->doclen[(size_t)p->doc * b->nfields + f];
            double norm = 1.0 - b->fields[f].b + b->fields[f].b * len / avg[f];
            v += b->fields[f].weight * p->tf[f] / norm;
        }
        uint32_t at = fill[p->term]++;
        ix->pdoc[at] = p->doc;
        ix->pw[at] = (float)(ix->idf[p->term] * v * (BM25_K1 + 1.0) / (v + BM25_K1));
    }
    free(fill);
    ix->d = b->d; /* the dictionary moves into the index */
    memset(&b->d, 0, sizeof b->d);
    bm25_builder_free(b);
    return ix;
fail:
    bm25_builder_free(b);
    bm25_free(ix);
    return NULL;
}

void bm25_free(struct bm25 *ix)
{
    if (!ix)
        return;
    dict_cleanup(&ix->d);
    free(ix->idf);
    free(ix->off);
    free(ix->pdoc);
    free(ix->pw);
    free(ix);
}

uint32_t bm25_ndocs(const struct bm25 *ix) { return ix ? ix->ndocs : 0; }
size_t bm25_nterms(const struct bm25 *ix) { return ix ? ix->d.n : 0; }

size_t bm25_memory(const struct bm25 *ix)
{
    if (!ix)
        return 0;
    return sizeof *ix + ix->d.pool_cap + ix->d.cap * 2 * sizeof(uint32_t) + ix->d.nslots * sizeof(uint32_t) +
           ix->d.n * (sizeof(float) + sizeof(uint32_t)) + ix->npost * (sizeof(uint32_t) + sizeof(float));
}

uint32_t bm25_df(const struct bm25 *ix, const char *term, size_t len)
{
    long t = ix ? dict_find(&ix->d, term, len, NULL) : -1;
    return t < 0 ? 0 : ix->off[t + 1] - ix->off[t];
}

float bm25_score(const struct bm25 *ix, const struct bm25_qterm *q, size_t nq, float *scores)
{
    if (!ix)
        return 0;
    float best = 0;
    for (size_t i = 0; i < nq; i++) {
        long t = dict_find(&ix->d, q[i].term, q[i].len, NULL);
        if (t < 0)
            continue;
        float w = q[i].weight;
        best += w * ix->idf[t] * (BM25_K1 + 1.0f);
        for (uint32_t p = ix->off[t]; p < ix->off[t + 1]; p++)
            scores[ix->pdoc[p]] += w * ix->pw[p];
    }
    return best;
}

float bm25_score_within(const struct bm25 *ix, const struct bm25_qterm *q, size_t nq, const unsigned char *in_scope,
                        uint32_t nscope, float *scores)
{
    if (!ix)
        return 0;
    float best = 0;
    for (size_t i = 0; i < nq; i++) {
        long t = dict_find(&ix->d, q[i].term, q[i].len, NULL);
        if (t < 0)
            continue;
        uint32_t df = 0;
        for (uint32_t p = ix->off[t]; p < ix->off[t + 1]; p++)
            df += in_scope[ix->pdoc[p]] != 0;
        if (!df)
            continue;
        double idf = log(1.0 + ((double)nscope - df + 0.5) / (df + 0.5));
        /* pw holds the index-wide idf times the saturated tf: swap the idf (which is > 0) */
        float w = q[i].weight, ratio = (float)(idf / ix->idf[t]);
        best += w * (float)idf * (BM25_K1 + 1.0f);
        for (uint32_t p = ix->off[t]; p < ix->off[t + 1]; p++)
            if (in_scope[ix->pdoc[p]])
                scores[ix->pdoc[p]] += w * ix->pw[p] * ratio;
    }
    return best;
}
