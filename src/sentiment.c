/* Lexicon sentiment: per-message scores in -1..1 with negation, intensifiers, sarcasm, and a trend. */
#include "tandem/sentiment.h"
#include "tandem/embedded.h"
#include "tandem/error.h"
#include "tandem/log.h"
#include "tandem/phrase.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The constants below follow VADER (Hutto & Gilbert, ICWSM 2014), whose values were fitted to
 * human ratings: a negated valence is scaled by -0.74, each '!' adds 0.292 (up to 4), and a sum is
 * squashed into -1..1 by x / sqrt(x^2 + 15). */
#define NEGATION_SCALE (-0.74)
#define EXCLAIM_BOOST 0.292
#define EXCLAIM_MAX 4
#define NORMALIZE_ALPHA 15.0
#define CAPS_SCALE 1.3           /* a word in CAPITALS */
#define SHOUT_PENALTY 1.0        /* a whole message in capitals reads as anger in support chats */
#define QUESTION_PENALTY 0.2     /* "???" per extra question mark, up to 3 */
#define SARCASM_SCALE (-0.75)    /* praise inside a sarcastic message */
#define BUT_BEFORE 0.5
#define BUT_AFTER 1.5
#define NEGATION_WINDOW 3        /* spans looked back for a negator */
#define BOOST_WINDOW 2           /* spans looked back for an intensifier */
#define LEXICON_MAX_VALENCE 4.0
#define RECENCY_DECAY 0.75       /* weight of each older message relative to the next newer one */

enum entry_kind { K_WORD, K_NEG, K_BOOST, K_DAMP, K_BUT, K_SARC, K_SARC_WEAK, K_NONE };

struct entry {
    enum entry_kind kind;
    double value;
};

struct sentiment_lexicon {
    struct phrase_set *set;
    struct entry *entries;
    size_t n, cap;
};

struct sentiment_lexicon *sentiment_lexicon_new(void)
{
    struct sentiment_lexicon *lx = calloc(1, sizeof *lx);
    if (!lx)
        return NULL;
    lx->set = phrase_set_new();
    if (!lx->set) {
        free(lx);
        return NULL;
    }
    return lx;
}

void sentiment_lexicon_free(struct sentiment_lexicon *lx)
{
    if (!lx)
        return;
    phrase_set_free(lx->set);
    free(lx->entries);
    free(lx);
}

static const struct {
    const char *name;
    enum entry_kind kind;
} kind_names[] = {
    {"w", K_WORD},       {"neg", K_NEG},   {"boost", K_BOOST},          {"damp", K_DAMP},
    {"but", K_BUT},      {"sarc", K_SARC}, {"sarc_weak", K_SARC_WEAK},
};

int sentiment_lexicon_add(struct sentiment_lexicon *lx, const char *text, size_t len,
                          const char *source, char *err, size_t errsz)
{
    size_t lineno = 0;
    const char *p = text, *end = text + len;
    char line[1024];
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        lineno++;
        size_t ll = (size_t)(le - p);
        if (ll >= sizeof line) {
            snprintf(err, errsz, "%s:%zu: line longer than %zu bytes", source, lineno,
                     sizeof line - 1);
            return T_ERR_CONFIG;
        }
        memcpy(line, p, ll);
        line[ll] = '\0';
        p = nl ? nl + 1 : end;
        while (ll && (line[ll - 1] == '\r' || line[ll - 1] == ' ' || line[ll - 1] == '\t'))
            line[--ll] = '\0';
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#')
            continue;
        char kind[16];
        double value;
        int used = 0;
        if (sscanf(s, "%15s %lf %n", kind, &value, &used) != 2 || !s[used]) {
            snprintf(err, errsz, "%s:%zu: expected 'KIND VALUE PATTERN'", source, lineno);
            return T_ERR_CONFIG;
        }
        enum entry_kind k = K_NONE;
        for (size_t i = 0; i < sizeof kind_names / sizeof kind_names[0]; i++)
            if (!strcmp(kind, kind_names[i].name))
                k = kind_names[i].kind;
        if (k == K_NONE) {
            snprintf(err, errsz, "%s:%zu: unknown kind '%s' (w, neg, boost, damp, but, sarc, "
                     "sarc_weak)", source, lineno, kind);
            return T_ERR_CONFIG;
        }
        if (!(value >= -LEXICON_MAX_VALENCE && value <= LEXICON_MAX_VALENCE) ||
            (k == K_DAMP && value > 0) || (k == K_BOOST && value < 0)) {
            snprintf(err, errsz, "%s:%zu: value %g out of range", source, lineno, value);
            return T_ERR_CONFIG;
        }
        if (lx->n == lx->cap) {
            size_t nc = lx->cap ? lx->cap * 2 : 128;
            struct entry *ne = realloc(lx->entries, nc * sizeof *ne);
            if (!ne)
                return T_ERR_NOMEM;
            lx->entries = ne;
            lx->cap = nc;
        }
        char perr[256];
        int rc = phrase_set_add(lx->set, s + used, (int)lx->n, perr, sizeof perr);
        if (rc == T_ERR_NOMEM)
            return rc;
        if (rc) {
            snprintf(err, errsz, "%s:%zu: %s", source, lineno, perr);
            return T_ERR_CONFIG;
        }
        lx->entries[lx->n].kind = k;
        lx->entries[lx->n].value = value;
        lx->n++;
    }
    return T_OK;
}

int sentiment_lexicon_finish(struct sentiment_lexicon *lx)
{
    return phrase_set_finish(lx->set);
}

static struct sentiment_lexicon *default_lx;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void default_load(void)
{
    struct sentiment_lexicon *lx = sentiment_lexicon_new();
    char err[512] = "";
    int rc = lx ? T_OK : T_ERR_NOMEM;
    for (const struct embedded_file *f = embedded_files; !rc && f->name; f++) {
        size_t nl = strlen(f->name);
        if (strncmp(f->name, "sentiment_", 10) || nl < 4 || strcmp(f->name + nl - 4, ".txt"))
            continue;
        rc = sentiment_lexicon_add(lx, (const char *)f->data, f->len, f->name, err, sizeof err);
    }
    if (!rc)
        rc = sentiment_lexicon_finish(lx);
    if (rc) {
        log_error("sentiment_lexicon_failed", "error=%s detail=\"%s\"", tandem_err_code(rc), err);
        sentiment_lexicon_free(lx);
        return;
    }
    default_lx = lx;
}

const struct sentiment_lexicon *sentiment_lexicon_default(void)
{
    pthread_once(&default_once, default_load);
    return default_lx;
}

/* ---- scoring ---------------------------------------------------------------------------- */

struct span {
    size_t start, n;
    enum entry_kind kind;
    double value;
};

/* Spans kept per message; the tokens beyond are not scored (PHRASE_MAX_TOKENS bounds them). */
#define SPANS_MAX PHRASE_MAX_TOKENS

const char *sentiment_label(double score)
{
    if (score >= SENTIMENT_LABEL_THRESHOLD)
        return "positive";
    if (score <= -SENTIMENT_LABEL_THRESHOLD)
        return "negative";
    return "neutral";
}

void sentiment_score_tokens(const struct sentiment_lexicon *lx, const struct phrase_text *t,
                            struct sentiment_score *out)
{
    memset(out, 0, sizeof *out);
    if (!lx || !t->n)
        return;
    struct span *sp = malloc(t->n * sizeof *sp);
    if (!sp)
        return; /* scoring is advisory: neutral rather than an error */
    size_t ns = 0;
    for (size_t i = 0; i < t->n;) {
        struct phrase_match m;
        if (phrase_set_match_at(lx->set, t, i, &m, 1)) {
            const struct entry *e = &lx->entries[m.tag];
            sp[ns++] = (struct span){i, m.n, e->kind, e->value};
            i += m.n;
        } else {
            sp[ns++] = (struct span){i, 1, K_NONE, 0};
            i++;
        }
    }
    size_t but_at = ns;
    int strong = 0, weak = 0;
    for (size_t s = 0; s < ns; s++) {
        if (sp[s].kind == K_BUT && but_at == ns && s > 0)
            but_at = s;
        strong |= sp[s].kind == K_SARC;
        weak |= sp[s].kind == K_SARC_WEAK;
    }
    /* contributions before sarcasm is decided */
    double *contrib = calloc(ns, sizeof *contrib);
    if (!contrib) {
        free(sp);
        return;
    }
    int any_negative = 0;
    for (size_t s = 0; s < ns; s++) {
        if (sp[s].kind != K_WORD && sp[s].kind != K_SARC && sp[s].kind != K_SARC_WEAK)
            continue;
        double v = sp[s].value;
        if (v == 0)
            continue;
        for (size_t k = sp[s].start; k < sp[s].start + sp[s].n; k++)
            if (t->tok[k].flags & PHRASE_TOK_CAPS) {
                v *= CAPS_SCALE;
                break;
            }
        int negated = 0;
        double factor = 1.0;
        for (size_t j = 1; j <= NEGATION_WINDOW && j <= s; j++) {
            /* a clause break before the span we came from ends the scope */
            if (t->tok[sp[s - j + 1].start].flags & PHRASE_TOK_CLAUSE)
                break;
            const struct span *pv = &sp[s - j];
            if (pv->kind == K_NEG)
                negated = 1;
            else if ((pv->kind == K_BOOST || pv->kind == K_DAMP) && j <= BOOST_WINDOW)
                factor *= 1.0 + pv->value * (j == 1 ? 1.0 : 0.9);
        }
        v *= factor;
        /* a sarcasm marker is never itself negated: "not" before "thanks for nothing" is rare */
        if (negated && sp[s].kind == K_WORD) {
            v *= NEGATION_SCALE;
            out->negated = 1;
        }
        if (but_at < ns)
            v *= s < but_at ? BUT_BEFORE : BUT_AFTER;
        contrib[s] = v;
        out->hits++;
        if (v < 0 && sp[s].kind != K_SARC)
            any_negative = 1;
    }
    int sarcastic = strong || (weak && any_negative);
    double sum = 0;
    for (size_t s = 0; s < ns; s++) {
        double v = contrib[s];
        if (sarcastic && v > 0 && sp[s].kind != K_SARC)
            v *= SARCASM_SCALE;
        sum += v;
    }
    out->sarcasm = sarcastic;
    if (sum != 0) {
        unsigned ex = t->exclaims < EXCLAIM_MAX ? t->exclaims : EXCLAIM_MAX;
        sum += (sum > 0 ? 1 : -1) * EXCLAIM_BOOST * ex;
    }
    if (t->questions >= 2 && sum <= 0) {
        unsigned q = t->questions - 1 < 3 ? t->questions - 1 : 3;
        sum -= QUESTION_PENALTY * q;
    }
    if (t->shouting && sum <= 0)
        sum -= SHOUT_PENALTY;
    double score = sum / sqrt(sum * sum + NORMALIZE_ALPHA);
    if (score > 1)
        score = 1;
    if (score < -1)
        score = -1;
    out->score = score;
    free(contrib);
    free(sp);
}

int sentiment_score_text(const struct sentiment_lexicon *lx, const char *text, size_t len,
                         struct sentiment_score *out)
{
    struct phrase_text t;
    int rc = phrase_text_init(&t, text, len);
    if (rc) {
        memset(out, 0, sizeof *out);
        phrase_text_cleanup(&t);
        return rc;
    }
    sentiment_score_tokens(lx, &t, out);
    phrase_text_cleanup(&t);
    return T_OK;
}

void sentiment_aggregate(const struct sentiment_score *msgs, size_t n,
                         struct sentiment_summary *out)
{
    memset(out, 0, sizeof *out);
    out->label = "neutral";
    out->trend = "steady";
    if (!n)
        return;
    size_t first = n > SENTIMENT_WINDOW ? n - SENTIMENT_WINDOW : 0;
    size_t m = n - first;
    double wsum = 0, acc = 0, w = 1.0;
    out->worst = n - 1;
    for (size_t i = n; i-- > first;) {
        double wi = msgs[i].hits ? w : w * 0.5;
        acc += wi * msgs[i].score;
        wsum += wi;
        w *= RECENCY_DECAY;
        if (msgs[i].score < msgs[out->worst].score)
            out->worst = i;
    }
    out->score = wsum > 0 ? acc / wsum : 0;
    out->n = m;
    out->label = sentiment_label(out->score);
    if (m >= 2) {
        size_t half = m / 2;
        double older = 0, newer = 0;
        for (size_t i = 0; i < half; i++)
            older += msgs[first + i].score;
        for (size_t i = half; i < m; i++)
            newer += msgs[first + i].score;
        older /= (double)half;
        newer /= (double)(m - half);
        if (newer - older >= SENTIMENT_TREND_DELTA)
            out->trend = "improving";
        else if (older - newer >= SENTIMENT_TREND_DELTA)
            out->trend = "worsening";
    }
}
