/* Word tokens and phrase patterns over them: the matcher behind sentiment lexicons and alert rules. */
#include "tandem/phrase.h"
#include "tandem/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Patterns are short phrases; longer ones are almost certainly a mistake in a rules file. */
#define PHRASE_MAX_ELEMS 16
#define PHRASE_MAX_ALTS 64
/* Candidates examined per token: more patterns sharing one first word than this is not expected;
 * any beyond are still matched, only not reported in longest-first order. */
#define PHRASE_MAX_CANDIDATES 64

/* ---- characters ------------------------------------------------------------------------ */

static int is_ascii_alnum(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Length of the UTF-8 sequence at p when it is a well-formed one we know, else 1. */
static size_t utf8_len(const unsigned char *p, size_t rem)
{
    size_t n = 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF)
        n = 2;
    else if (p[0] >= 0xE0 && p[0] <= 0xEF)
        n = 3;
    else if (p[0] >= 0xF0 && p[0] <= 0xF4)
        n = 4;
    if (n > rem)
        return 1;
    for (size_t i = 1; i < n; i++)
        if ((p[i] & 0xC0) != 0x80)
            return 1;
    return n;
}

enum ch_class { CH_SPACE, CH_WORD, CH_APOS, CH_CLAUSE, CH_SENTENCE, CH_EMOJI, CH_OTHER };

/* Classifies the character at p; *n gets its byte length. */
static enum ch_class classify(const unsigned char *p, size_t rem, size_t *n)
{
    unsigned char c = p[0];
    *n = 1;
    if (c < 0x80) {
        if (is_ascii_alnum(c))
            return CH_WORD;
        if (c == '\n')
            return CH_SENTENCE;
        if (is_space(c))
            return CH_SPACE;
        if (c == '.' || c == '!' || c == '?')
            return CH_SENTENCE;
        if (c == ',' || c == ';' || c == ':' || c == '(' || c == ')' || c == '"' || c == '-')
            return CH_CLAUSE;
        if (c == '\'')
            return CH_APOS;
        return CH_OTHER;
    }
    size_t l = utf8_len(p, rem);
    *n = l;
    if (l == 1)
        return CH_OTHER; /* invalid byte: a separator */
    if (l == 2) {
        if (c == 0xC2) /* Latin-1 punctuation and symbols, no-break space */
            return p[1] == 0xA0 ? CH_SPACE : CH_OTHER;
        if (c == 0xC3 && (p[1] == 0x97 || p[1] == 0xB7)) /* multiplication, division signs */
            return CH_OTHER;
        return CH_WORD;
    }
    if (l == 3) {
        if (c == 0xE2 && p[1] == 0x80) {
            if (p[2] == 0x98 || p[2] == 0x99) /* curly apostrophes */
                return CH_APOS;
            if (p[2] == 0x93 || p[2] == 0x94 || p[2] == 0xA6) /* dashes, ellipsis */
                return CH_CLAUSE;
            if (p[2] <= 0x8B || p[2] == 0xAF)
                return CH_SPACE;
            return CH_OTHER;
        }
        if (c == 0xE2 && p[1] >= 0x98 && p[1] <= 0x9E) /* dingbats and symbols: many emoji */
            return CH_EMOJI;
        if (c == 0xE2 || (c == 0xE3 && p[1] == 0x80)) /* other symbols, CJK punctuation */
            return CH_OTHER;
        if (c == 0xEF && (p[1] == 0xBB || p[1] == 0xB8)) /* BOM, variation selectors */
            return CH_SPACE;
        return CH_WORD;
    }
    if (c == 0xF0 && p[1] == 0x9F) /* emoji planes */
        return CH_EMOJI;
    return CH_WORD;
}

/* ---- tokenising ------------------------------------------------------------------------- */

static int push_token(struct phrase_text *t, size_t *cap, size_t off, size_t end, char *s,
                      size_t len, unsigned flags)
{
    if (t->n == *cap) {
        size_t nc = *cap ? *cap * 2 : 32;
        if (nc > PHRASE_MAX_TOKENS)
            nc = PHRASE_MAX_TOKENS;
        struct phrase_token *p = realloc(t->tok, nc * sizeof *p);
        if (!p)
            return T_ERR_NOMEM;
        t->tok = p;
        *cap = nc;
    }
    struct phrase_token *k = &t->tok[t->n++];
    k->s = s;
    k->len = (uint32_t)len;
    k->off = (uint32_t)off;
    k->end = (uint32_t)end;
    k->flags = flags;
    return T_OK;
}

static int starts_with_ci(const unsigned char *p, size_t rem, const char *lit)
{
    size_t n = strlen(lit);
    if (n > rem)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (c != (unsigned char)lit[i])
            return 0;
    }
    return 1;
}

/* Emoticon at p: its normalised form and byte length, or NULL. */
static const char *emoticon(const unsigned char *p, size_t rem, size_t *n)
{
    if (rem < 2 || (p[0] != ':' && p[0] != ';'))
        return NULL;
    size_t i = 1;
    int tear = 0;
    if (p[i] == '-' || p[i] == '\'') {
        tear = p[i] == '\'';
        i++;
    }
    if (i >= rem)
        return NULL;
    unsigned char m = p[i++];
    if (i < rem && (is_ascii_alnum(p[i]) || p[i] == '/'))
        return NULL; /* "http://", "a:b" */
    *n = i;
    if (p[0] == ';')
        return (m == ')') ? ";)" : NULL;
    switch (m) {
    case ')': case ']': return ":)";
    case '(': case '[': return tear ? ":'(" : ":(";
    case '/': case '\\': return ":/";
    case 'D': case 'd': return ":d";
    case 'P': case 'p': return ":p";
    default: return NULL;
    }
}

int phrase_text_init(struct phrase_text *t, const char *text, size_t len)
{
    memset(t, 0, sizeof *t);
    if (!text)
        len = 0;
    t->norm = malloc(2 * len + 2);
    if (!t->norm)
        return T_ERR_NOMEM;
    const unsigned char *p = (const unsigned char *)text;
    char *w = t->norm;
    size_t cap = 0, i = 0;
    unsigned pending = PHRASE_TOK_CLAUSE | PHRASE_TOK_SENTENCE;
    size_t lettered = 0, capsed = 0;
    while (i < len && t->n < PHRASE_MAX_TOKENS) {
        size_t n;
        enum ch_class k = classify(p + i, len - i, &n);
        int at_start = i == 0 || is_space(p[i - 1]) || p[i - 1] == '(' || p[i - 1] == '"';
        if (p[i] == '!')
            t->exclaims++;
        if (p[i] == '?')
            t->questions++;
        /* URLs and @handles are skipped whole. */
        if (at_start && (starts_with_ci(p + i, len - i, "http://") ||
                         starts_with_ci(p + i, len - i, "https://") ||
                         starts_with_ci(p + i, len - i, "www."))) {
            while (i < len && !is_space(p[i]))
                i++;
            continue;
        }
        if (p[i] == '@' && i + 1 < len && (is_ascii_alnum(p[i + 1]) || p[i + 1] == '_')) {
            i++;
            while (i < len && (is_ascii_alnum(p[i]) || p[i] == '_' || p[i] == '.'))
                i++;
            continue;
        }
        size_t en;
        const char *emo = at_start ? emoticon(p + i, len - i, &en) : NULL;
        if (emo) {
            size_t el = strlen(emo);
            memcpy(w, emo, el + 1);
            if (push_token(t, &cap, i, i + en, w, el, pending))
                return T_ERR_NOMEM;
            w += el + 1;
            pending = 0;
            i += en;
            continue;
        }
        if (at_start && p[i] == '/' && i + 1 < len && (p[i + 1] == 's' || p[i + 1] == 'S') &&
            (i + 2 == len || !is_ascii_alnum(p[i + 2]))) {
            memcpy(w, "/s", 3);
            if (push_token(t, &cap, i, i + 2, w, 2, pending))
                return T_ERR_NOMEM;
            w += 3;
            pending = 0;
            i += 2;
            continue;
        }
        if (k == CH_EMOJI) {
            memcpy(w, p + i, n);
            w[n] = '\0';
            if (push_token(t, &cap, i, i + n, w, n, pending))
                return T_ERR_NOMEM;
            w += n + 1;
            pending = 0;
            i += n;
            continue;
        }
        if (k == CH_SENTENCE) {
            /* "example.com", "e.g" or "ok?yes": a stop glued to the next word is not the end of
             * a sentence (decimals such as 12.50 stay inside their word, handled below) */
            int glued = p[i] != '\n' && i + 1 < len && is_ascii_alnum(p[i + 1]);
            pending |= glued ? PHRASE_TOK_CLAUSE : PHRASE_TOK_CLAUSE | PHRASE_TOK_SENTENCE;
            i += n;
            continue;
        }
        if (k == CH_CLAUSE) {
            pending |= PHRASE_TOK_CLAUSE;
            i += n;
            continue;
        }
        if (k != CH_WORD) {
            i += n;
            continue;
        }
        /* a word */
        size_t start = i;
        char *ws = w;
        int has_lower = 0;
        size_t letters = 0;
        while (i < len) {
            k = classify(p + i, len - i, &n);
            if (k == CH_WORD) {
                for (size_t j = 0; j < n; j++) {
                    unsigned char c = p[i + j];
                    if (n == 1 && c >= 'A' && c <= 'Z') {
                        c = (unsigned char)(c + 32);
                        letters++;
                    } else if (n == 1 && c >= 'a' && c <= 'z') {
                        has_lower = 1;
                        letters++;
                    } else if (n == 2 && j == 1 && p[i] == 0xC3 && c >= 0x80 && c <= 0x9E) {
                        c = (unsigned char)(c + 0x20); /* Latin-1 capitals */
                        letters++;
                    } else if (n == 2 && j == 1 && p[i] == 0xC3 && c >= 0x9F) {
                        has_lower = 1;
                        letters++;
                    }
                    *w++ = (char)c;
                }
                i += n;
                continue;
            }
            /* inner apostrophe, hyphen, and digit separators keep the word together */
            size_t n2 = 0;
            int next_word = i + n < len && classify(p + i + n, len - i - n, &n2) == CH_WORD;
            if (k == CH_APOS && next_word && w > ws) {
                *w++ = '\'';
                i += n;
                continue;
            }
            if (next_word && w > ws && (p[i] == '-' || p[i] == '_')) {
                *w++ = (char)p[i];
                i += 1;
                continue;
            }
            if ((p[i] == '.' || p[i] == ',') && w > ws && w[-1] >= '0' && w[-1] <= '9' &&
                i + 1 < len && p[i + 1] >= '0' && p[i + 1] <= '9') {
                *w++ = (char)p[i];
                i += 1;
                continue;
            }
            break;
        }
        *w = '\0';
        unsigned flags = pending;
        if (letters >= 2) {
            lettered++;
            if (!has_lower) {
                flags |= PHRASE_TOK_CAPS;
                capsed++;
            }
        }
        if (push_token(t, &cap, start, i, ws, (size_t)(w - ws), flags))
            return T_ERR_NOMEM;
        w++;
        pending = 0;
    }
    t->shouting = lettered >= 3 && capsed == lettered;
    return T_OK;
}

void phrase_text_cleanup(struct phrase_text *t)
{
    free(t->tok);
    free(t->norm);
    memset(t, 0, sizeof *t);
}

int phrase_text_clause_between(const struct phrase_text *t, size_t a, size_t b)
{
    for (size_t i = a + 1; i <= b && i < t->n; i++)
        if (t->tok[i].flags & PHRASE_TOK_CLAUSE)
            return 1;
    return 0;
}

/* ---- patterns --------------------------------------------------------------------------- */

struct alt {
    char *s;
    size_t len;
    int prefix;
};

struct elem {
    struct alt *alts;
    size_t n_alts;
    unsigned gap; /* > 0: this element skips 0..gap words */
};

struct pattern {
    struct elem *elems;
    size_t n;
    int tag;
};

struct index_entry {
    const char *key;
    size_t len;
    size_t pattern;
};

/* Hash from a key to its run of equal keys in a sorted index_entry array: every token of every
 * message is looked up in several sets, so this is the hot path (a binary search was 3x slower). */
struct key_group {
    uint32_t lo, hi;
};

struct keyhash {
    uint32_t *slot; /* group index + 1; 0 = empty */
    size_t mask;
    struct key_group *groups;
    size_t min_len, max_len; /* of the keys, to bound prefix lookups */
};

struct phrase_set {
    struct pattern *pats;
    size_t n, cap;
    struct index_entry *exact; /* sorted by key */
    size_t n_exact;
    struct index_entry *prefix; /* sorted by key */
    size_t n_prefix;
    struct keyhash hexact, hprefix;
    int finished;
};

static uint32_t fnv1a(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static void keyhash_free(struct keyhash *k)
{
    free(k->slot);
    free(k->groups);
    memset(k, 0, sizeof *k);
}

static int keyhash_build(struct keyhash *k, const struct index_entry *arr, size_t n)
{
    keyhash_free(k);
    size_t cap = 16;
    while (cap < 2 * n + 1)
        cap *= 2;
    k->slot = calloc(cap, sizeof *k->slot);
    k->groups = calloc(n ? n : 1, sizeof *k->groups);
    if (!k->slot || !k->groups)
        return T_ERR_NOMEM;
    k->mask = cap - 1;
    k->min_len = SIZE_MAX;
    size_t ng = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && arr[j].len == arr[i].len && !memcmp(arr[j].key, arr[i].key, arr[i].len))
            j++;
        k->groups[ng].lo = (uint32_t)i;
        k->groups[ng].hi = (uint32_t)j;
        size_t h = fnv1a(arr[i].key, arr[i].len) & k->mask;
        while (k->slot[h])
            h = (h + 1) & k->mask;
        k->slot[h] = (uint32_t)(ng + 1);
        ng++;
        if (arr[i].len < k->min_len)
            k->min_len = arr[i].len;
        if (arr[i].len > k->max_len)
            k->max_len = arr[i].len;
        i = j;
    }
    return T_OK;
}

/* [lo, hi) of the entries whose key is s[0..len); lo == hi when none. */
static void keyhash_find(const struct keyhash *k, const struct index_entry *arr, const char *s,
                         size_t len, size_t *lo, size_t *hi)
{
    *lo = *hi = 0;
    if (!k->slot || len < k->min_len || len > k->max_len)
        return;
    for (size_t h = fnv1a(s, len) & k->mask; k->slot[h]; h = (h + 1) & k->mask) {
        const struct key_group *g = &k->groups[k->slot[h] - 1];
        if (arr[g->lo].len == len && !memcmp(arr[g->lo].key, s, len)) {
            *lo = g->lo;
            *hi = g->hi;
            return;
        }
    }
}

struct phrase_set *phrase_set_new(void)
{
    return calloc(1, sizeof(struct phrase_set));
}

static void pattern_cleanup(struct pattern *p)
{
    for (size_t e = 0; e < p->n; e++) {
        for (size_t a = 0; a < p->elems[e].n_alts; a++)
            free(p->elems[e].alts[a].s);
        free(p->elems[e].alts);
    }
    free(p->elems);
}

void phrase_set_free(struct phrase_set *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++)
        pattern_cleanup(&s->pats[i]);
    free(s->pats);
    free(s->exact);
    free(s->prefix);
    keyhash_free(&s->hexact);
    keyhash_free(&s->hprefix);
    free(s);
}

size_t phrase_set_count(const struct phrase_set *s)
{
    return s ? s->n : 0;
}

static int add_alt(struct elem *e, const char *s, size_t len, int prefix)
{
    if (e->n_alts >= PHRASE_MAX_ALTS)
        return T_ERR_BAD_REQUEST;
    for (size_t i = 0; i < e->n_alts; i++)
        if (e->alts[i].prefix == prefix && e->alts[i].len == len && !memcmp(e->alts[i].s, s, len))
            return T_OK;
    struct alt *na = realloc(e->alts, (e->n_alts + 1) * sizeof *na);
    if (!na)
        return T_ERR_NOMEM;
    e->alts = na;
    char *c = malloc(len + 1);
    if (!c)
        return T_ERR_NOMEM;
    memcpy(c, s, len);
    c[len] = '\0';
    e->alts[e->n_alts].s = c;
    e->alts[e->n_alts].len = len;
    e->alts[e->n_alts].prefix = prefix;
    e->n_alts++;
    return T_OK;
}

/* Normalises one alternative the way the tokenizer normalises text, so both agree. */
static int compile_alt(struct elem *e, const char *s, size_t len, char *err, size_t errsz)
{
    int prefix = 0;
    if (len && s[len - 1] == '*') {
        prefix = 1;
        len--;
    }
    struct phrase_text t;
    if (phrase_text_init(&t, s, len))
        return T_ERR_NOMEM;
    int rc = T_OK;
    if (t.n != 1 || t.tok[0].off != 0 || t.tok[0].end != len) {
        snprintf(err, errsz, "'%.*s' is not one word (write words separated by spaces)", (int)len,
                 s);
        rc = T_ERR_BAD_REQUEST;
    } else if (prefix && t.tok[0].len < PHRASE_MIN_PREFIX) {
        snprintf(err, errsz, "prefix '%.*s*' is shorter than %d letters", (int)len, s,
                 PHRASE_MIN_PREFIX);
        rc = T_ERR_BAD_REQUEST;
    } else {
        const char *w = t.tok[0].s;
        size_t wl = t.tok[0].len;
        rc = add_alt(e, w, wl, prefix);
        if (!rc && memchr(w, '\'', wl)) {
            /* customers drop apostrophes: "didnt", "cant" */
            char tmp[256];
            size_t k = 0;
            for (size_t i = 0; i < wl && k < sizeof tmp; i++)
                if (w[i] != '\'')
                    tmp[k++] = w[i];
            rc = add_alt(e, tmp, k, prefix);
        }
        if (rc == T_ERR_BAD_REQUEST)
            snprintf(err, errsz, "more than %d alternatives in one word", PHRASE_MAX_ALTS);
    }
    phrase_text_cleanup(&t);
    return rc;
}

int phrase_set_add(struct phrase_set *s, const char *pattern, int tag, char *err, size_t errsz)
{
    if (s->finished) {
        snprintf(err, errsz, "set already finished");
        return T_ERR_INTERNAL;
    }
    struct pattern p = {0};
    p.tag = tag;
    int rc = T_OK;
    const char *q = pattern;
    while (*q) {
        while (*q && is_space((unsigned char)*q))
            q++;
        if (!*q)
            break;
        const char *ws = q;
        while (*q && !is_space((unsigned char)*q))
            q++;
        size_t wl = (size_t)(q - ws);
        if (p.n == PHRASE_MAX_ELEMS) {
            snprintf(err, errsz, "more than %d words", PHRASE_MAX_ELEMS);
            rc = T_ERR_BAD_REQUEST;
            goto out;
        }
        struct elem *ne = realloc(p.elems, (p.n + 1) * sizeof *ne);
        if (!ne) {
            rc = T_ERR_NOMEM;
            goto out;
        }
        p.elems = ne;
        struct elem *e = &p.elems[p.n++];
        memset(e, 0, sizeof *e);
        if (wl >= 3 && !memcmp(ws, "...", 3)) {
            if (wl == 3)
                e->gap = PHRASE_DEFAULT_GAP;
            else if (wl == 4 && ws[3] >= '1' && ws[3] <= '9')
                e->gap = (unsigned)(ws[3] - '0');
            else {
                snprintf(err, errsz, "'%.*s': a gap is '...' or '...N' with N 1-9", (int)wl, ws);
                rc = T_ERR_BAD_REQUEST;
                goto out;
            }
            continue;
        }
        const char *a = ws;
        while (a <= q) {
            const char *b = a;
            while (b < q && *b != '|')
                b++;
            if (b == a) {
                snprintf(err, errsz, "empty alternative in '%.*s'", (int)wl, ws);
                rc = T_ERR_BAD_REQUEST;
                goto out;
            }
            rc = compile_alt(e, a, (size_t)(b - a), err, errsz);
            if (rc)
                goto out;
            a = b + 1;
        }
    }
    if (p.n == 0) {
        snprintf(err, errsz, "empty pattern");
        rc = T_ERR_BAD_REQUEST;
        goto out;
    }
    if (p.elems[0].gap || p.elems[p.n - 1].gap) {
        snprintf(err, errsz, "a pattern cannot start or end with '...'");
        rc = T_ERR_BAD_REQUEST;
        goto out;
    }
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 64;
        struct pattern *np = realloc(s->pats, nc * sizeof *np);
        if (!np) {
            rc = T_ERR_NOMEM;
            goto out;
        }
        s->pats = np;
        s->cap = nc;
    }
    s->pats[s->n++] = p;
    return T_OK;
out:
    pattern_cleanup(&p);
    return rc;
}

static int entry_cmp(const void *a, const void *b)
{
    const struct index_entry *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->key, y->key, n);
    if (c)
        return c;
    if (x->len != y->len)
        return x->len < y->len ? -1 : 1;
    return x->pattern < y->pattern ? -1 : (x->pattern > y->pattern);
}

int phrase_set_finish(struct phrase_set *s)
{
    size_t ne = 0, np = 0;
    for (size_t i = 0; i < s->n; i++)
        for (size_t a = 0; a < s->pats[i].elems[0].n_alts; a++) {
            if (s->pats[i].elems[0].alts[a].prefix)
                np++;
            else
                ne++;
        }
    free(s->exact);
    free(s->prefix);
    s->exact = calloc(ne ? ne : 1, sizeof *s->exact);
    s->prefix = calloc(np ? np : 1, sizeof *s->prefix);
    if (!s->exact || !s->prefix)
        return T_ERR_NOMEM;
    s->n_exact = s->n_prefix = 0;
    for (size_t i = 0; i < s->n; i++)
        for (size_t a = 0; a < s->pats[i].elems[0].n_alts; a++) {
            const struct alt *al = &s->pats[i].elems[0].alts[a];
            struct index_entry en = {al->s, al->len, i};
            if (al->prefix)
                s->prefix[s->n_prefix++] = en;
            else
                s->exact[s->n_exact++] = en;
        }
    qsort(s->exact, s->n_exact, sizeof *s->exact, entry_cmp);
    qsort(s->prefix, s->n_prefix, sizeof *s->prefix, entry_cmp);
    if (keyhash_build(&s->hexact, s->exact, s->n_exact) ||
        keyhash_build(&s->hprefix, s->prefix, s->n_prefix))
        return T_ERR_NOMEM;
    s->finished = 1;
    return T_OK;
}

static int alt_matches(const struct alt *a, const struct phrase_token *t)
{
    if (a->prefix)
        return t->len >= a->len && !memcmp(t->s, a->s, a->len);
    return t->len == a->len && !memcmp(t->s, a->s, a->len);
}

static int elem_matches(const struct elem *e, const struct phrase_token *t)
{
    for (size_t i = 0; i < e->n_alts; i++)
        if (alt_matches(&e->alts[i], t))
            return 1;
    return 0;
}

/* Matches p's elements from k on at token j; *end gets one past the last token. Gaps are
 * tried shortest first, so the reported match is the tightest. */
static int match_from(const struct pattern *p, size_t k, const struct phrase_text *t, size_t j,
                      size_t *end)
{
    if (k == p->n) {
        *end = j;
        return 1;
    }
    const struct elem *e = &p->elems[k];
    if (e->gap) {
        for (unsigned g = 0; g <= e->gap; g++) {
            if (j + g > t->n)
                break;
            if (g > 0 && (t->tok[j + g - 1].flags & PHRASE_TOK_SENTENCE))
                break;
            if (match_from(p, k + 1, t, j + g, end))
                return 1;
        }
        return 0;
    }
    if (j >= t->n)
        return 0;
    if (k > 0 && (t->tok[j].flags & PHRASE_TOK_SENTENCE))
        return 0;
    if (!elem_matches(e, &t->tok[j]))
        return 0;
    return match_from(p, k + 1, t, j + 1, end);
}

static int match_cmp(const void *a, const void *b)
{
    const struct phrase_match *x = a, *y = b;
    if (x->n != y->n)
        return x->n > y->n ? -1 : 1;
    return x->start < y->start ? -1 : (x->start > y->start);
}

size_t phrase_set_match_at(const struct phrase_set *s, const struct phrase_text *t, size_t i,
                           struct phrase_match *out, size_t max)
{
    if (!s || !s->finished || i >= t->n)
        return 0;
    const struct phrase_token *tk = &t->tok[i];
    size_t cand[PHRASE_MAX_CANDIDATES];
    size_t nc = 0, total = 0;
    size_t lo, hi;
    keyhash_find(&s->hexact, s->exact, tk->s, tk->len, &lo, &hi);
    for (size_t x = lo; x < hi && nc < PHRASE_MAX_CANDIDATES; x++)
        cand[nc++] = s->exact[x].pattern;
    size_t lmax = tk->len < s->hprefix.max_len ? tk->len : s->hprefix.max_len;
    for (size_t l = s->hprefix.min_len; l <= lmax && s->n_prefix; l++) {
        keyhash_find(&s->hprefix, s->prefix, tk->s, l, &lo, &hi);
        for (size_t x = lo; x < hi && nc < PHRASE_MAX_CANDIDATES; x++)
            cand[nc++] = s->prefix[x].pattern;
    }
    /* ascending pattern order, duplicates removed (several first alternatives can match) */
    for (size_t a = 1; a < nc; a++) {
        size_t v = cand[a], b = a;
        while (b > 0 && cand[b - 1] > v) {
            cand[b] = cand[b - 1];
            b--;
        }
        cand[b] = v;
    }
    struct phrase_match found[PHRASE_MAX_CANDIDATES];
    size_t nf = 0;
    for (size_t a = 0; a < nc; a++) {
        if (a > 0 && cand[a] == cand[a - 1])
            continue;
        const struct pattern *p = &s->pats[cand[a]];
        size_t end;
        if (!match_from(p, 0, t, i, &end))
            continue;
        found[nf].start = cand[a]; /* pattern index for ordering; replaced below */
        found[nf].n = end - i;
        found[nf].tag = p->tag;
        nf++;
        total++;
    }
    if (nf > 1)
        qsort(found, nf, sizeof *found, match_cmp);
    for (size_t a = 0; a < nf && a < max; a++) {
        out[a] = found[a];
        out[a].start = i;
    }
    return total;
}
