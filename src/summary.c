/* Extractive conversation and customer summaries (format documented in include/tandem/summary.h). */
#include "tandem/summary.h"
#include "tandem/alerts.h"
#include "tandem/buf.h"
#include "tandem/context.h"
#include "tandem/embedded.h"
#include "tandem/error.h"
#include "tandem/log.h"
#include "tandem/phrase.h"
#include "tandem/redact.h"
#include "tandem/sentiment.h"

#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define CUES_FILE "summary_cues_en.txt"
#define STOPWORDS_FILE "stopwords_en.txt"
#define DAY_MS 86400000LL
#define CUE_MATCHES 16
#define ITEMS_MAX 6           /* asked_for labels per sentence */
#define WANT_MIN_SCORE 0.3    /* below this a sentence says too little to summarise the request */
#define WANT_CUE_CAP 2.0      /* cue weight counted per sentence at most */
#define WANT_CONTENT_CAP 12   /* content words counted per sentence at most */
#define ID_MIN_LEN 4
#define ID_MAX_LEN_FACT 32
#define HANDOFF_FRUSTRATED (-0.25)
#define RELATIVE_DAYS_MAX 366

/* ---- cue lists -------------------------------------------------------------------------- */

enum cue_kind {
    CUE_WANT, CUE_FILLER, CUE_TRIED, CUE_ASKED, CUE_SUGGESTED, CUE_DID, CUE_PROMISED,
    CUE_SMALLTALK, CUE_ITEM, CUE_HANDOFF, CUE_BOTFAIL, CUE_ASKHUMAN, CUE_ASKHUMAN_SHORT, CUE__N
};

static const char *const cue_names[CUE__N] = {
    "want", "filler", "tried", "asked", "suggested", "did", "promised",
    "smalltalk", "item", "handoff", "botfail", "askhuman", "askhuman_short",
};

struct cue {
    enum cue_kind kind;
    double weight;
    char label[64]; /* item label, spaces restored */
};

struct cues {
    struct phrase_set *set;
    struct cue *v;
    size_t n;
    struct phrase_set *stop; /* stopwords; may be empty */
};

static struct cues *g_cues;
static pthread_once_t g_cues_once = PTHREAD_ONCE_INIT;

static int cues_parse(struct cues *c, const char *text, size_t len, char *err, size_t errsz)
{
    const char *p = text, *end = text + len;
    size_t lineno = 0, cap = 0;
    char line[2048];
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t ll = (size_t)(le - p);
        lineno++;
        if (ll >= sizeof line) {
            snprintf(err, errsz, "%s:%zu: line too long", CUES_FILE, lineno);
            return T_ERR_INTERNAL;
        }
        memcpy(line, p, ll);
        line[ll] = '\0';
        p = nl ? nl + 1 : end;
        char *s = line;
        while (*s == ' ' || *s == '\t')
            s++;
        if (!*s || *s == '#')
            continue;
        char kind[32], value[64];
        int used = 0;
        if (sscanf(s, "%31s %63s %n", kind, value, &used) != 2 || !s[used]) {
            snprintf(err, errsz, "%s:%zu: expected 'KIND VALUE PATTERN'", CUES_FILE, lineno);
            return T_ERR_INTERNAL;
        }
        size_t k = 0;
        while (k < CUE__N && strcmp(cue_names[k], kind))
            k++;
        if (k == CUE__N) {
            snprintf(err, errsz, "%s:%zu: unknown kind '%s'", CUES_FILE, lineno, kind);
            return T_ERR_INTERNAL;
        }
        if (c->n == cap) {
            cap = cap ? cap * 2 : 128;
            struct cue *nv = realloc(c->v, cap * sizeof *nv);
            if (!nv)
                return T_ERR_NOMEM;
            c->v = nv;
        }
        struct cue *cu = &c->v[c->n];
        memset(cu, 0, sizeof *cu);
        cu->kind = (enum cue_kind)k;
        cu->weight = strtod(value, NULL);
        snprintf(cu->label, sizeof cu->label, "%s", value);
        for (char *q = cu->label; *q; q++)
            if (*q == '_')
                *q = ' ';
        char perr[256];
        int rc = phrase_set_add(c->set, s + used, (int)c->n, perr, sizeof perr);
        if (rc) {
            snprintf(err, errsz, "%s:%zu: %s", CUES_FILE, lineno, perr);
            return rc == T_ERR_NOMEM ? rc : T_ERR_INTERNAL;
        }
        c->n++;
    }
    return T_OK;
}

static int stop_parse(struct phrase_set *set, const char *text, size_t len)
{
    const char *p = text, *end = text + len;
    char w[128], err[128];
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t ll = (size_t)(le - p);
        const char *q = p;
        p = nl ? nl + 1 : end;
        while (ll && (*q == ' ' || *q == '\t')) {
            q++;
            ll--;
        }
        while (ll && (q[ll - 1] == ' ' || q[ll - 1] == '\r' || q[ll - 1] == '\t'))
            ll--;
        if (!ll || *q == '#' || ll >= sizeof w || memchr(q, ' ', ll) || memchr(q, '|', ll))
            continue;
        memcpy(w, q, ll);
        w[ll] = '\0';
        /* a word the tokenizer would split is simply not a stopword for us */
        if (phrase_set_add(set, w, 0, err, sizeof err) == T_ERR_NOMEM)
            return T_ERR_NOMEM;
    }
    return T_OK;
}

static void cues_free(struct cues *c)
{
    if (!c)
        return;
    phrase_set_free(c->set);
    phrase_set_free(c->stop);
    free(c->v);
    free(c);
}

static void cues_load(void)
{
    char err[512] = "";
    struct cues *c = calloc(1, sizeof *c);
    int rc = T_ERR_NOMEM;
    if (c && (c->set = phrase_set_new()) && (c->stop = phrase_set_new())) {
        const struct embedded_file *f = embedded_find(CUES_FILE);
        if (!f) {
            snprintf(err, sizeof err, "%s is missing from the binary", CUES_FILE);
            rc = T_ERR_INTERNAL;
        } else {
            rc = cues_parse(c, (const char *)f->data, f->len, err, sizeof err);
        }
        const struct embedded_file *sw = embedded_find(STOPWORDS_FILE);
        if (!rc && sw)
            rc = stop_parse(c->stop, (const char *)sw->data, sw->len);
        if (!rc)
            rc = phrase_set_finish(c->set);
        if (!rc)
            rc = phrase_set_finish(c->stop);
    }
    if (rc) {
        log_error("summary_cues_failed", "error=%s detail=\"%s\"", tandem_err_code(rc), err);
        cues_free(c);
        return;
    }
    g_cues = c;
}

static const struct cues *cues_get(void)
{
    pthread_once(&g_cues_once, cues_load);
    return g_cues;
}

int summary_global_init(void)
{
    return cues_get() && sentiment_lexicon_default() ? T_OK : T_ERR_INTERNAL;
}

/* ---- small helpers ---------------------------------------------------------------------- */

/* JSON building with one out-of-memory flag instead of a check per call. */
struct jb {
    int oom;
};

static json_t *jb_str(struct jb *b, const char *s, size_t n)
{
    json_t *v = json_stringn(s, n);
    if (!v)
        b->oom = 1;
    return v;
}

/* Both steal v, also on failure (Jansson decrefs it), so nothing leaks when o is NULL. */
static void jb_set(struct jb *b, json_t *o, const char *key, json_t *v)
{
    if (!v || json_object_set_new(o, key, v))
        b->oom = 1;
}

static void jb_push(struct jb *b, json_t *a, json_t *v)
{
    if (!v || json_array_append_new(a, v))
        b->oom = 1;
}

static double round3(double x)
{
    return round(x * 1000.0) / 1000.0;
}

/* strcmp for short words, cheap when the first byte already differs (the common case). */
static int word_is(const char *a, const char *b)
{
    return a[0] == b[0] && !strcmp(a, b);
}

static int is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static int is_alnum(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* A copy of text[a..b) cut to SUMMARY_SENTENCE_MAX at a space, whitespace runs collapsed. */
static json_t *quote(struct jb *jb, const char *text, size_t a, size_t b)
{
    while (a < b && (text[a] == ' ' || text[a] == '\n' || text[a] == '\t' || text[a] == '\r'))
        a++;
    while (b > a && (text[b - 1] == ' ' || text[b - 1] == '\n' || text[b - 1] == '\t' ||
                     text[b - 1] == '\r'))
        b--;
    char tmp[SUMMARY_SENTENCE_MAX + 8];
    size_t w = 0;
    int cut = 0;
    for (size_t i = a; i < b; i++) {
        char c = text[i];
        if (c == '\n' || c == '\t' || c == '\r')
            c = ' ';
        if (c == ' ' && w && tmp[w - 1] == ' ')
            continue;
        if (w >= SUMMARY_SENTENCE_MAX) {
            cut = 1;
            break;
        }
        tmp[w++] = c;
    }
    if (cut) {
        size_t k = w;
        while (k > SUMMARY_SENTENCE_MAX / 2 && tmp[k - 1] != ' ')
            k--;
        if (k > SUMMARY_SENTENCE_MAX / 2)
            w = k - 1;
        while (w > 0 && ((unsigned char)tmp[w] & 0xC0) == 0x80)
            w--; /* do not end inside a UTF-8 sequence */
        memcpy(tmp + w, "\xE2\x80\xA6", 3);
        w += 3;
    }
    return jb_str(jb, tmp, w);
}

static int array_has_string(json_t *a, const char *s, size_t n)
{
    size_t i;
    json_t *v;
    json_array_foreach(a, i, v)
    {
        if (json_is_string(v) && json_string_length(v) == n && !memcmp(json_string_value(v), s, n))
            return 1;
        if (json_is_object(v)) {
            json_t *t = json_object_get(v, "text");
            if (!t)
                t = json_object_get(v, "value");
            if (json_is_string(t) && json_string_length(t) == n &&
                !memcmp(json_string_value(t), s, n))
                return 1;
        }
    }
    return 0;
}

/* ---- facts ------------------------------------------------------------------------------ */

json_t *summary_facts_new(void)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    if (json_object_set_new(o, "order_numbers", json_array()) ||
        json_object_set_new(o, "references", json_array()) ||
        json_object_set_new(o, "amounts", json_array()) ||
        json_object_set_new(o, "dates", json_array())) {
        json_decref(o);
        return NULL;
    }
    return o;
}

struct currency {
    const char *s;
    const char *iso;
    int word; /* 1: must stand as a word (codes, names), 0: a symbol */
};

/* Before the number. Longest first where one is a prefix of another. */
static const struct currency cur_prefix[] = {
    {"US$", "USD", 0}, {"CA$", "CAD", 0}, {"AU$", "AUD", 0}, {"C$", "CAD", 0},
    {"A$", "AUD", 0},  {"$", "USD", 0},   {"\xE2\x82\xAC", "EUR", 0}, /* € */
    {"\xC2\xA3", "GBP", 0},                                           /* £ */
    {"\xC2\xA5", "JPY", 0},                                           /* ¥ */
    {"\xE2\x82\xB9", "INR", 0},                                       /* ₹ */
    {"USD", "USD", 1}, {"EUR", "EUR", 1}, {"GBP", "GBP", 1}, {"SEK", "SEK", 1},
    {"NOK", "NOK", 1}, {"DKK", "DKK", 1}, {"CHF", "CHF", 1}, {"CAD", "CAD", 1},
    {"AUD", "AUD", 1}, {"JPY", "JPY", 1}, {"INR", "INR", 1}, {"Rs.", "INR", 1},
    {"Rs", "INR", 1},
};

/* After the number. */
static const struct currency cur_suffix[] = {
    {"\xE2\x82\xAC", "EUR", 0}, {"\xC2\xA3", "GBP", 0}, {"$", "USD", 0}, {":-", "SEK", 0},
    {"USD", "USD", 1}, {"usd", "USD", 1}, {"EUR", "EUR", 1}, {"eur", "EUR", 1},
    {"euros", "EUR", 1}, {"euro", "EUR", 1}, {"GBP", "GBP", 1}, {"pounds", "GBP", 1},
    {"quid", "GBP", 1}, {"SEK", "SEK", 1}, {"sek", "SEK", 1}, {"kronor", "SEK", 1},
    {"kr", "SEK", 1}, {"NOK", "NOK", 1}, {"DKK", "DKK", 1}, {"CHF", "CHF", 1},
    {"dollars", "USD", 1}, {"dollar", "USD", 1}, {"bucks", "USD", 1}, {"JPY", "JPY", 1},
    {"yen", "JPY", 1}, {"INR", "INR", 1}, {"rupees", "INR", 1},
};

/* Locales that write 1.234,56: a lone '.' followed by three digits groups thousands there. */
static int comma_decimal(const char *iso)
{
    return !strcmp(iso, "EUR") || !strcmp(iso, "SEK") || !strcmp(iso, "NOK") ||
           !strcmp(iso, "DKK");
}

/* The number at text[i..): digits with '.'/',' separators each followed by a digit. Returns its
 * end (i when none). */
static size_t number_end(const char *text, size_t len, size_t i)
{
    size_t k = i;
    if (k >= len || !is_digit(text[k]))
        return i;
    while (k < len) {
        if (is_digit(text[k]))
            k++;
        else if ((text[k] == '.' || text[k] == ',') && k + 1 < len && is_digit(text[k + 1]))
            k++;
        else
            break;
    }
    return k;
}

/* The value of the number text[a..b) given its currency's conventions. */
static double number_value(const char *text, size_t a, size_t b, const char *iso)
{
    size_t ndot = 0, ncomma = 0, last = b;
    for (size_t k = a; k < b; k++)
        if (text[k] == '.' || text[k] == ',') {
            ndot += text[k] == '.';
            ncomma += text[k] == ',';
            last = k;
        }
    char dec = 0; /* the decimal separator, 0 when none */
    if (ndot && ncomma)
        dec = text[last];
    else if (ndot + ncomma == 1) {
        size_t after = b - last - 1;
        if (after != 3)
            dec = text[last];
        else if (text[last] == '.' && !comma_decimal(iso))
            dec = '.';
    }
    char tmp[64];
    size_t w = 0;
    for (size_t k = a; k < b && w < sizeof tmp - 1; k++) {
        if (is_digit(text[k]))
            tmp[w++] = text[k];
        else if (text[k] == dec && k == last)
            tmp[w++] = '.';
    }
    tmp[w] = '\0';
    return strtod(tmp, NULL);
}

static size_t match_currency(const struct currency *tab, size_t n, const char *text, size_t len,
                             size_t i, const char **iso)
{
    /* every currency above starts with one of these bytes: skip the table for other text */
    static const unsigned char first[256] = {
        ['$'] = 1, [':'] = 1, ['U'] = 1, ['C'] = 1, ['A'] = 1, ['E'] = 1, ['G'] = 1, ['S'] = 1,
        ['N'] = 1, ['D'] = 1, ['J'] = 1, ['I'] = 1, ['R'] = 1, ['u'] = 1, ['d'] = 1, ['e'] = 1,
        ['q'] = 1, ['s'] = 1, ['k'] = 1, ['b'] = 1, ['y'] = 1, ['p'] = 1, ['r'] = 1, [0xE2] = 1,
        [0xC2] = 1,
    };
    if (!first[(unsigned char)text[i]])
        return 0;
    for (size_t c = 0; c < n; c++) {
        if (tab[c].s[0] != text[i])
            continue;
        size_t l = strlen(tab[c].s);
        if (i + l > len || memcmp(text + i, tab[c].s, l))
            continue;
        if (tab[c].word && ((i > 0 && is_alnum(text[i - 1])) || (i + l < len && is_alnum(text[i + l]))))
            continue;
        *iso = tab[c].iso;
        return l;
    }
    return 0;
}

static void add_amount(struct jb *jb, json_t *arr, const char *text, size_t a, size_t b,
                       double value, const char *iso)
{
    if (json_array_size(arr) >= SUMMARY_FACTS_MAX || array_has_string(arr, text + a, b - a))
        return;
    json_t *o = json_object();
    jb_push(jb, arr, o);
    jb_set(jb, o, "text", jb_str(jb, text + a, b - a));
    jb_set(jb, o, "value", json_real(round(value * 100.0) / 100.0));
    jb_set(jb, o, "currency", json_string(iso));
}

static void facts_amounts(struct jb *jb, json_t *arr, const char *text, size_t len)
{
    for (size_t i = 0; i < len;) {
        const char *iso = NULL;
        int word_start = i == 0 || !is_alnum(text[i - 1]);
        size_t pl = word_start ? match_currency(cur_prefix, sizeof cur_prefix / sizeof *cur_prefix,
                                                text, len, i, &iso)
                               : 0;
        if (pl) {
            size_t j = i + pl;
            if (j < len && text[j] == ' ')
                j++;
            size_t e = number_end(text, len, j);
            if (e > j && (e == len || !is_alnum(text[e]))) {
                add_amount(jb, arr, text, i, e, number_value(text, j, e, iso), iso);
                i = e;
                continue;
            }
        }
        if (is_digit(text[i]) && (i == 0 || (!is_alnum(text[i - 1]) && text[i - 1] != '.' &&
                                             text[i - 1] != ','))) {
            size_t e = number_end(text, len, i);
            size_t j = e;
            if (j < len && text[j] == ' ')
                j++;
            size_t sl = match_currency(cur_suffix, sizeof cur_suffix / sizeof *cur_suffix, text,
                                       len, j, &iso);
            if (sl) {
                add_amount(jb, arr, text, i, j + sl, number_value(text, i, e, iso), iso);
                i = j + sl;
                continue;
            }
            i = e > i ? e : i + 1;
            continue;
        }
        i++;
    }
}

static const char *const month_names[12][2] = {
    {"january", "jan"}, {"february", "feb"}, {"march", "mar"},    {"april", "apr"},
    {"may", "may"},     {"june", "jun"},     {"july", "jul"},     {"august", "aug"},
    {"september", "sep"}, {"october", "oct"}, {"november", "nov"}, {"december", "dec"},
};

static int month_of(const struct phrase_token *t, const char *text)
{
    if (t->len < 3 || t->len > 9 || !strchr("jfmasond", t->s[0]))
        return 0;
    for (int m = 0; m < 12; m++) {
        if (word_is(t->s, month_names[m][0]) || word_is(t->s, month_names[m][1]) ||
            (m == 8 && word_is(t->s, "sept"))) {
            /* "may" and "mar" are also words: only capitalised they read as months */
            if ((m == 4 || (m == 2 && t->len == 3)) && text[t->off] != 'M')
                return 0;
            return m + 1;
        }
    }
    return 0;
}

/* Day of month from "3", "03", "3rd", "21st"; 0 when not one. */
static int day_of(const struct phrase_token *t)
{
    const char *s = t->s;
    size_t n = t->len, d = 0;
    while (d < n && d < 2 && is_digit(s[d]))
        d++;
    if (d == 0 || (d < n && is_digit(s[d])))
        return 0;
    const char *suf = s + d;
    if (*suf && strcmp(suf, "st") && strcmp(suf, "nd") && strcmp(suf, "rd") && strcmp(suf, "th"))
        return 0;
    int v = atoi(s);
    return v >= 1 && v <= 31 ? v : 0;
}

static int year_of(const struct phrase_token *t)
{
    if (t->len != 4)
        return 0;
    for (size_t k = 0; k < 4; k++)
        if (!is_digit(t->s[k]))
            return 0;
    int y = atoi(t->s);
    return y >= 1970 && y <= 2100 ? y : 0;
}

static void civil_from_ms(int64_t ms, int *y, int *m, int *d)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    *y = tm.tm_year + 1900;
    *m = tm.tm_mon + 1;
    *d = tm.tm_mday;
}

static int valid_date(int y, int m, int d)
{
    static const int mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
        return 0;
    if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 0;
    return 1;
}

static void add_date(struct jb *jb, json_t *arr, const char *text, size_t a, size_t b, int y,
                     int m, int d)
{
    if (json_array_size(arr) >= SUMMARY_FACTS_MAX || array_has_string(arr, text + a, b - a))
        return;
    json_t *o = json_object();
    jb_push(jb, arr, o);
    jb_set(jb, o, "text", jb_str(jb, text + a, b - a));
    if (y && valid_date(y, m, d)) {
        char iso[16];
        snprintf(iso, sizeof iso, "%04d-%02d-%02d", y, m, d);
        jb_set(jb, o, "iso", json_string(iso));
    } else {
        jb_set(jb, o, "iso", json_null());
    }
}

static int digits_at(const char *text, size_t len, size_t i, size_t n)
{
    if (i + n > len)
        return 0;
    for (size_t k = 0; k < n; k++)
        if (!is_digit(text[i + k]))
            return 0;
    return 1;
}

/* Numeric dates: 2024-05-01 and 03/05/2024 (day-first or month-first, null iso when both read). */
static void facts_numeric_dates(struct jb *jb, json_t *arr, const char *text, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!is_digit(text[i]) || (i > 0 && (is_alnum(text[i - 1]) || text[i - 1] == '.' ||
                                             text[i - 1] == '/' || text[i - 1] == '-')))
            continue;
        if (digits_at(text, len, i, 4) && i + 10 <= len && text[i + 4] == '-' &&
            digits_at(text, len, i + 5, 2) && text[i + 7] == '-' && digits_at(text, len, i + 8, 2) &&
            (i + 10 == len || !is_alnum(text[i + 10]))) {
            int y = atoi(text + i), m = atoi(text + i + 5), d = atoi(text + i + 8);
            if (valid_date(y, m, d))
                add_date(jb, arr, text, i, i + 10, y, m, d);
            i += 9;
            continue;
        }
        size_t k = i, l1 = 0;
        while (k < len && is_digit(text[k]) && l1 < 3) {
            k++;
            l1++;
        }
        if (l1 < 1 || l1 > 2 || k >= len)
            continue;
        char sep = text[k];
        if (sep != '/' && sep != '.' && sep != '-')
            continue;
        size_t k2 = k + 1, l2 = 0;
        while (k2 < len && is_digit(text[k2]) && l2 < 3) {
            k2++;
            l2++;
        }
        if (l2 < 1 || l2 > 2 || k2 >= len || text[k2] != sep)
            continue;
        size_t k3 = k2 + 1, l3 = 0;
        while (k3 < len && is_digit(text[k3]) && l3 < 5) {
            k3++;
            l3++;
        }
        if ((l3 != 2 && l3 != 4) || (k3 < len && (is_alnum(text[k3]) ||
                                                   ((text[k3] == '.' || text[k3] == '/') &&
                                                    k3 + 1 < len && is_digit(text[k3 + 1])))))
            continue;
        int a = atoi(text + i), b = atoi(text + k + 1), y = atoi(text + k2 + 1);
        if (l3 == 2)
            y += 2000;
        int m = 0, d = 0;
        if (a > 12 && b <= 12) {
            d = a;
            m = b;
        } else if (b > 12 && a <= 12) {
            m = a;
            d = b;
        } else if (a == b && a <= 12) {
            m = d = a;
        }
        if (a < 1 || b < 1 || (a > 12 && b > 12) || a > 31 || b > 31)
            continue;
        add_date(jb, arr, text, i, k3, m ? y : 0, m, d);
        i = k3 - 1;
    }
}

/* Dates in words, from tokens: "May 3", "May 3rd, 2024", "3 May", "3rd of May", "yesterday",
 * "tomorrow", "5 days ago". */
static void facts_word_dates(struct jb *jb, json_t *arr, const char *text,
                             const struct phrase_text *t, int64_t ts_ms)
{
    int ty, tm, td;
    civil_from_ms(ts_ms, &ty, &tm, &td);
    for (size_t i = 0; i < t->n; i++) {
        const struct phrase_token *k = &t->tok[i];
        int m = month_of(k, text);
        if (m) {
            int d = 0, y = 0;
            size_t last = i;
            if (i + 1 < t->n && !(t->tok[i + 1].flags & PHRASE_TOK_SENTENCE) &&
                (d = day_of(&t->tok[i + 1]))) {
                last = i + 1;
                if (i + 2 < t->n && !(t->tok[i + 2].flags & PHRASE_TOK_SENTENCE) &&
                    (y = year_of(&t->tok[i + 2])))
                    last = i + 2;
            } else {
                size_t j = i;
                if (j >= 1 && word_is(t->tok[j - 1].s, "of") && !(t->tok[j].flags & PHRASE_TOK_SENTENCE))
                    j--;
                if (j >= 1 && !(t->tok[j].flags & PHRASE_TOK_SENTENCE) &&
                    (d = day_of(&t->tok[j - 1]))) {
                    size_t first = j - 1;
                    if (i + 1 < t->n && !(t->tok[i + 1].flags & PHRASE_TOK_SENTENCE))
                        y = year_of(&t->tok[i + 1]);
                    last = y ? i + 1 : i;
                    add_date(jb, arr, text, t->tok[first].off, t->tok[last].end, y ? y : ty, m, d);
                    i = last;
                    continue;
                }
            }
            if (d) {
                add_date(jb, arr, text, k->off, t->tok[last].end, y ? y : ty, m, d);
                i = last;
            }
            continue;
        }
        int64_t delta_days = 0;
        size_t last = i;
        int rel = 1;
        if (word_is(k->s, "yesterday"))
            delta_days = -1;
        else if (word_is(k->s, "tomorrow"))
            delta_days = 1;
        else if (i + 2 < t->n && digits_at(k->s, k->len, 0, k->len) && k->len <= 3 &&
                 word_is(t->tok[i + 2].s, "ago") &&
                 (!strcmp(t->tok[i + 1].s, "days") || !strcmp(t->tok[i + 1].s, "day") ||
                  !strcmp(t->tok[i + 1].s, "weeks") || !strcmp(t->tok[i + 1].s, "week"))) {
            long n = atol(k->s);
            delta_days = -(int64_t)n * (t->tok[i + 1].s[0] == 'w' ? 7 : 1);
            last = i + 2;
            if (-delta_days > RELATIVE_DAYS_MAX)
                rel = 0;
        } else
            rel = 0;
        if (!rel)
            continue;
        int y, mo, d;
        civil_from_ms(ts_ms + delta_days * DAY_MS, &y, &mo, &d);
        add_date(jb, arr, text, k->off, t->tok[last].end, y, mo, d);
        i = last;
    }
}

/* An order or reference id: 4-32 of letters, digits and '-', with at least 3 digits. */
static int id_like(const struct phrase_token *k)
{
    if (k->len < ID_MIN_LEN || k->len > ID_MAX_LEN_FACT)
        return 0;
    size_t digits = 0;
    for (size_t i = 0; i < k->len; i++) {
        char c = k->s[i];
        if (is_digit(c))
            digits++;
        else if (!((c >= 'a' && c <= 'z') || c == '-'))
            return 0;
    }
    return digits >= 3;
}

/* An id that is mostly digits (5 or more, at least half of it): "6730536166", "A6730536". */
static int numeric_id(const struct phrase_token *k)
{
    size_t digits = 0;
    for (size_t i = 0; i < k->len; i++)
        digits += is_digit(k->s[i]);
    return id_like(k) && digits >= 5 && 2 * digits >= k->len;
}

/* A redaction placeholder such as [PHONE_1] around token k: its byte range, or 0. */
static int placeholder_at(const char *text, size_t len, const struct phrase_token *k, size_t *a,
                          size_t *b)
{
    if (k->off == 0 || text[k->off - 1] != '[' || k->end >= len || text[k->end] != ']')
        return 0;
    const char *us = memchr(k->s, '_', k->len);
    if (!us || !(k->flags & PHRASE_TOK_CAPS))
        return 0;
    *a = k->off - 1;
    *b = k->end + 1;
    return 1;
}

static const struct {
    const char *word;
    const char *kind; /* NULL: an order */
} id_keywords[] = {
    {"order", NULL},          {"orders", NULL},          {"ordernumber", NULL},
    {"purchase", NULL},       {"booking", "booking"},    {"reservation", "booking"},
    {"confirmation", "confirmation"}, {"invoice", "invoice"}, {"receipt", "receipt"},
    {"reference", "reference"}, {"ref", "reference"},    {"ticket", "ticket"},
    {"case", "case"},         {"tracking", "tracking"},  {"transaction", "transaction"},
    {"claim", "claim"},
};

static const char *const id_fillers[] = {"number", "no", "nr", "num", "id", "is", "was", "code",
                                         "reference", "ref", "the", "my", "our", "of", "it's",
                                         "its", "are", "numbers"};

static void add_order(struct jb *jb, json_t *orders, json_t *refs, const char *kind,
                      const char *text, size_t a, size_t b)
{
    json_t *arr = kind ? refs : orders;
    if (json_array_size(arr) >= SUMMARY_FACTS_MAX || array_has_string(arr, text + a, b - a))
        return;
    /* a value already listed as an order is not also a reference, and the reverse */
    if (array_has_string(kind ? orders : refs, text + a, b - a))
        return;
    if (!kind) {
        jb_push(jb, arr, jb_str(jb, text + a, b - a));
        return;
    }
    json_t *o = json_object();
    jb_push(jb, arr, o);
    jb_set(jb, o, "kind", json_string(kind));
    jb_set(jb, o, "value", jb_str(jb, text + a, b - a));
}

static void facts_ids(struct jb *jb, json_t *orders, json_t *refs, const char *text, size_t len,
                      const struct phrase_text *t)
{
    for (size_t i = 0; i < t->n; i++) {
        const struct phrase_token *k = &t->tok[i];
        size_t kw = 0, nkw = sizeof id_keywords / sizeof *id_keywords;
        while (kw < nkw && !word_is(k->s, id_keywords[kw].word))
            kw++;
        if (kw < nkw) {
            for (size_t j = i + 1; j < t->n && j <= i + 4; j++) {
                const struct phrase_token *v = &t->tok[j];
                if (v->flags & PHRASE_TOK_SENTENCE)
                    break;
                size_t a, b;
                if (placeholder_at(text, len, v, &a, &b)) {
                    add_order(jb, orders, refs, id_keywords[kw].kind, text, a, b);
                    break;
                }
                if (id_like(v)) {
                    add_order(jb, orders, refs, id_keywords[kw].kind, text, v->off, v->end);
                    break;
                }
                size_t f = 0, nf = sizeof id_fillers / sizeof *id_fillers;
                while (f < nf && !word_is(v->s, id_fillers[f]))
                    f++;
                if (f == nf)
                    break;
            }
            continue;
        }
        if (k->off > 0 && text[k->off - 1] == '#' && id_like(k))
            add_order(jb, orders, refs, NULL, text, k->off, k->end);
    }
}

static int facts_from_tokens(json_t *facts, const char *text, size_t len,
                             const struct phrase_text *t, int64_t ts_ms)
{
    struct jb jb = {0};
    json_t *orders = json_object_get(facts, "order_numbers");
    json_t *refs = json_object_get(facts, "references");
    json_t *amounts = json_object_get(facts, "amounts");
    json_t *dates = json_object_get(facts, "dates");
    if (!orders || !refs || !amounts || !dates)
        return T_ERR_INTERNAL;
    facts_ids(&jb, orders, refs, text, len, t);
    facts_amounts(&jb, amounts, text, len);
    facts_numeric_dates(&jb, dates, text, len);
    facts_word_dates(&jb, dates, text, t, ts_ms);
    return jb.oom ? T_ERR_NOMEM : T_OK;
}

int summary_extract_facts(const char *text, size_t len, int64_t ts_ms, json_t *facts)
{
    struct phrase_text t;
    int rc = phrase_text_init(&t, text, len);
    if (!rc)
        rc = facts_from_tokens(facts, text, len, &t, ts_ms);
    phrase_text_cleanup(&t);
    return rc;
}

/* ---- sentences -------------------------------------------------------------------------- */

struct sent {
    size_t msg;      /* message index */
    size_t t0, t1;   /* token range */
    size_t a, b;     /* byte range in the redacted text, terminal punctuation included */
    unsigned kinds;  /* 1 << enum cue_kind */
    double want;     /* want-cue weight, capped */
    size_t content;  /* words that are neither stopwords nor filler */
    int question;
    const char *items[ITEMS_MAX];
    size_t n_items;
    double score;    /* wants ranking */
};

static const char *const question_starts[] = {
    "how", "why", "what", "what's", "whats", "when", "where", "who", "which", "can", "could",
    "would", "will", "is", "are", "do", "does", "did", "should", "any", "anyone", "has", "have",
};

static int one_word_match(const struct phrase_set *set, const struct phrase_text *t, size_t j)
{
    struct phrase_match m[4];
    size_t n = phrase_set_match_at(set, t, j, m, 4);
    for (size_t i = 0; i < n && i < 4; i++)
        if (m[i].n == 1)
            return 1;
    return 0;
}

static void classify_sentence(const struct cues *cu, const struct phrase_text *t,
                              const char *text, size_t len, struct sent *s)
{
    unsigned char filler[64] = {0}; /* per token, for the first 64 tokens of a sentence */
    for (size_t j = s->t0; j < s->t1; j++) {
        struct phrase_match ms[CUE_MATCHES];
        size_t n = phrase_set_match_at(cu->set, t, j, ms, CUE_MATCHES);
        for (size_t x = 0; x < n && x < CUE_MATCHES; x++) {
            const struct cue *c = &cu->v[ms[x].tag];
            s->kinds |= 1u << c->kind;
            if (c->kind == CUE_WANT)
                s->want += c->weight;
            else if (c->kind == CUE_FILLER && ms[x].n == 1 && j - s->t0 < sizeof filler)
                filler[j - s->t0] = 1;
            else if (c->kind == CUE_ITEM && s->n_items < ITEMS_MAX) {
                int dup = 0;
                for (size_t k = 0; k < s->n_items; k++)
                    dup |= !strcmp(s->items[k], c->label);
                if (!dup)
                    s->items[s->n_items++] = c->label;
            }
        }
        const struct phrase_token *k = &t->tok[j];
        int is_filler = j - s->t0 < sizeof filler && filler[j - s->t0];
        if (!is_filler && k->len >= 2 && !one_word_match(cu->stop, t, j))
            s->content++;
    }
    if (s->want > WANT_CUE_CAP)
        s->want = WANT_CUE_CAP;
    /* the question mark, or a question word first in a longer sentence without a full stop */
    size_t last_end = t->tok[s->t1 - 1].end;
    s->question = memchr(text + last_end, '?', s->b - last_end) != NULL;
    if (!s->question && s->t1 - s->t0 >= 4 && (s->b == last_end || text[s->b - 1] != '.') &&
        (s->b == last_end || text[s->b - 1] != '!')) {
        /* "and why was I charged": a conjunction or interjection may come first */
        static const char *const lead_ins[] = {"and", "so", "but", "also", "then", "ok", "okay",
                                               "oh", "hi", "hey", "well", "plus", "or"};
        size_t first = s->t0;
        for (size_t q = 0; q < sizeof lead_ins / sizeof *lead_ins; q++)
            if (!strcmp(t->tok[s->t0].s, lead_ins[q]))
                first = s->t0 + 1;
        for (size_t q = 0; q < sizeof question_starts / sizeof *question_starts; q++)
            if (!strcmp(t->tok[first].s, question_starts[q]))
                s->question = 1;
    }
    (void)len;
}

/* Splits message mi into sentences (by the tokenizer's sentence breaks) appended to *v. */
static int split_sentences(const struct cues *cu, const struct alert_msg *am, size_t mi,
                           struct sent **v, size_t *n, size_t *cap)
{
    const struct phrase_text *t = &am->tok;
    size_t t0 = 0;
    while (t0 < t->n) {
        size_t t1 = t0 + 1;
        while (t1 < t->n && !(t->tok[t1].flags & PHRASE_TOK_SENTENCE))
            t1++;
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            struct sent *nv = realloc(*v, nc * sizeof *nv);
            if (!nv)
                return T_ERR_NOMEM;
            *v = nv;
            *cap = nc;
        }
        struct sent *s = &(*v)[(*n)++];
        memset(s, 0, sizeof *s);
        s->msg = mi;
        s->t0 = t0;
        s->t1 = t1;
        s->a = t->tok[t0].off;
        size_t b = t->tok[t1 - 1].end;
        while (b < am->red_len && strchr(".!?)\"'", am->red[b]) && am->red[b] != '\0')
            b++;
        s->b = b;
        classify_sentence(cu, t, am->red, am->red_len, s);
        t0 = t1;
    }
    return T_OK;
}

/* ---- sections --------------------------------------------------------------------------- */

struct build {
    struct jb jb;
    const struct context *ctx;
    const struct cues *cu;
    struct alert_input in;
    struct alert_list alerts;
    struct sent *sents;
    size_t n_sents, cap_sents;
    size_t first_agent; /* index of the first agent message, or n */
    int64_t now_ms;
};

static int sent_rank_cmp(const void *x, const void *y)
{
    const struct sent *a = *(const struct sent *const *)x, *b = *(const struct sent *const *)y;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    if (a->msg != b->msg)
        return a->msg < b->msg ? -1 : 1;
    return a->t0 < b->t0 ? -1 : (a->t0 > b->t0);
}

static double want_score(const struct build *bd, const struct sent *s, size_t cust_rank)
{
    double score = (double)(s->content < WANT_CONTENT_CAP ? s->content : WANT_CONTENT_CAP) * 0.1;
    score += s->want;
    if (s->question)
        score += 0.3;
    if (cust_rank == 0)
        score += 0.4;
    else if (cust_rank == 1)
        score += 0.2;
    if (bd->in.msgs[s->msg].sent.score <= -SENTIMENT_LABEL_THRESHOLD)
        score += 0.2;
    return score;
}

/* Ranks customer sentences among messages [from, to); writes the best (up to max) to best[]. */
static size_t rank_wants(struct build *bd, size_t from, size_t to, const struct sent **best,
                         size_t max)
{
    const struct sent **cand = malloc((bd->n_sents ? bd->n_sents : 1) * sizeof *cand);
    if (!cand) {
        bd->jb.oom = 1;
        return 0;
    }
    size_t nc = 0, cust_rank = 0, last_msg = SIZE_MAX;
    for (size_t i = 0; i < bd->n_sents; i++) {
        struct sent *s = &bd->sents[i];
        if (s->msg < from || s->msg >= to || bd->in.msgs[s->msg].m->role != ROLE_CUSTOMER)
            continue;
        if (s->content < 2 && !(s->content >= 1 && s->want > 0))
            continue;
        if (last_msg != SIZE_MAX && s->msg != last_msg)
            cust_rank++;
        last_msg = s->msg;
        s->score = want_score(bd, s, cust_rank);
        if (s->score >= WANT_MIN_SCORE)
            cand[nc++] = s;
    }
    qsort(cand, nc, sizeof *cand, sent_rank_cmp);
    size_t n = nc < max ? nc : max;
    for (size_t i = 0; i < n; i++)
        best[i] = cand[i];
    free(cand);
    return n;
}

static json_t *section_wants(struct build *bd, json_t *conv)
{
    const struct sent *best[SUMMARY_WANTS_MAX];
    size_t n = rank_wants(bd, 0, bd->in.n, best, SUMMARY_WANTS_MAX);
    json_t *ranked = json_array();
    for (size_t i = 0; i < n; i++) {
        const struct alert_msg *am = &bd->in.msgs[best[i]->msg];
        json_t *o = json_object();
        jb_push(&bd->jb, ranked, o);
        jb_set(&bd->jb, o, "text", quote(&bd->jb, am->red, best[i]->a, best[i]->b));
        jb_set(&bd->jb, o, "message_id", json_string(am->m->id));
        jb_set(&bd->jb, o, "score", json_real(round3(best[i]->score)));
    }
    /* the text reads in conversation order */
    const struct sent *ord[SUMMARY_WANTS_MAX];
    memcpy(ord, best, n * sizeof *best);
    if (n == 2 && (ord[0]->msg > ord[1]->msg || (ord[0]->msg == ord[1]->msg && ord[0]->t0 > ord[1]->t0))) {
        const struct sent *tmp = ord[0];
        ord[0] = ord[1];
        ord[1] = tmp;
    }
    struct buf b;
    buf_init(&b, 0);
    for (size_t i = 0; i < n; i++) {
        json_t *q = quote(&bd->jb, bd->in.msgs[ord[i]->msg].red, ord[i]->a, ord[i]->b);
        if (q && ((b.len && buf_putc(&b, ' ')) || buf_append(&b, json_string_value(q), json_string_length(q))))
            bd->jb.oom = 1;
        json_decref(q);
    }
    jb_set(&bd->jb, conv, "wants", jb_str(&bd->jb, b.data ? b.data : "", b.len));
    buf_cleanup(&b);
    return ranked;
}

static const char *role_by(enum msg_role r)
{
    return r == ROLE_CUSTOMER ? "customer" : r == ROLE_BOT ? "bot" : "agent";
}

/* What the sentence says was done, or NULL when it is not such a sentence. */
static const char *tried_kind(const struct sent *s, enum msg_role role)
{
    if (role == ROLE_CUSTOMER) /* "what else can I try?" asks, it does not report */
        return (s->kinds & (1u << CUE_TRIED)) && !s->question ? "tried" : NULL;
    if (role != ROLE_AGENT && role != ROLE_BOT)
        return NULL;
    if (s->kinds & (1u << CUE_DID))
        return "did";
    if (s->kinds & (1u << CUE_PROMISED))
        return "promised";
    if ((s->kinds & (1u << CUE_ASKED)) || (s->question && !(s->kinds & (1u << CUE_SMALLTALK))))
        return "asked";
    if (s->kinds & (1u << CUE_SUGGESTED))
        return "suggested";
    return NULL;
}

static json_t *section_tried(struct build *bd)
{
    json_t *all = json_array();
    if (!all) {
        bd->jb.oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < bd->n_sents; i++) {
        const struct sent *s = &bd->sents[i];
        const struct alert_msg *am = &bd->in.msgs[s->msg];
        const char *kind = tried_kind(s, am->m->role);
        if (!kind || (s->content == 0 && !s->n_items))
            continue;
        json_t *text = quote(&bd->jb, am->red, s->a, s->b);
        if (!text)
            continue;
        if (array_has_string(all, json_string_value(text), json_string_length(text))) {
            json_decref(text);
            continue;
        }
        json_t *o = json_object();
        jb_push(&bd->jb, all, o);
        jb_set(&bd->jb, o, "by", json_string(role_by(am->m->role)));
        jb_set(&bd->jb, o, "kind", json_string(kind));
        jb_set(&bd->jb, o, "text", text);
        jb_set(&bd->jb, o, "message_id", json_string(am->m->id));
        if (!strcmp(kind, "asked") && s->n_items) {
            json_t *items = json_array();
            for (size_t k = 0; k < s->n_items; k++)
                jb_push(&bd->jb, items, json_string(s->items[k]));
            jb_set(&bd->jb, o, "asked_for", items);
        }
    }
    /* the newest SUMMARY_TRIED_MAX, still in conversation order */
    while (json_array_size(all) > SUMMARY_TRIED_MAX)
        json_array_remove(all, 0);
    return all;
}

static json_t *section_facts(struct build *bd)
{
    json_t *facts = summary_facts_new();
    if (!facts) {
        bd->jb.oom = 1;
        return NULL;
    }
    int asked_order = 0;
    for (size_t i = 0; i < bd->in.n; i++) {
        const struct alert_msg *am = &bd->in.msgs[i];
        if (am->m->role == ROLE_NOTE)
            continue;
        int rc = facts_from_tokens(facts, am->red, am->red_len, &am->tok, am->m->ts_ms);
        if (rc)
            bd->jb.oom = 1;
        if (am->m->role == ROLE_AGENT || am->m->role == ROLE_BOT) {
            asked_order = 0;
            for (size_t k = 0; k < bd->n_sents; k++)
                if (bd->sents[k].msg == i)
                    for (size_t x = 0; x < bd->sents[k].n_items; x++)
                        asked_order |= !strcmp(bd->sents[k].items[x], "order number");
        } else if (am->m->role == ROLE_CUSTOMER && asked_order && am->tok.n <= 3) {
            /* a bare id answering "what is your order number?"; the same message often holds
             * the user name and e-mail asked for with it, so only number-like ids count, and a
             * masked value only when it was masked as a number (phone, card) */
            for (size_t j = 0; j < am->tok.n; j++) {
                const struct phrase_token *k = &am->tok.tok[j];
                size_t a, b;
                if (placeholder_at(am->red, am->red_len, k, &a, &b)) {
                    if (!strncmp(k->s, "phone_", 6) || !strncmp(k->s, "card_", 5))
                        add_order(&bd->jb, json_object_get(facts, "order_numbers"),
                                  json_object_get(facts, "references"), NULL, am->red, a, b);
                } else if (numeric_id(k)) {
                    add_order(&bd->jb, json_object_get(facts, "order_numbers"),
                              json_object_get(facts, "references"), NULL, am->red, k->off, k->end);
                }
            }
        }
    }
    return facts;
}

static json_t *section_sentiment(struct build *bd)
{
    json_t *o = json_object();
    const struct sentiment_summary *md = &bd->in.mood;
    jb_set(&bd->jb, o, "score", json_real(round3(md->score)));
    jb_set(&bd->jb, o, "label", json_string(md->label));
    jb_set(&bd->jb, o, "trend", json_string(md->trend));
    jb_set(&bd->jb, o, "window", json_integer((json_int_t)md->n));
    json_t *per = json_array();
    for (size_t i = 0; i < bd->in.n_cust; i++) {
        const struct sentiment_score *s = &bd->in.cust_sent[i];
        json_t *t = json_object();
        jb_push(&bd->jb, per, t);
        jb_set(&bd->jb, t, "message_id", json_string(bd->in.msgs[bd->in.cust[i]].m->id));
        jb_set(&bd->jb, t, "score", json_real(round3(s->score)));
        jb_set(&bd->jb, t, "label", json_string(sentiment_label(s->score)));
        if (s->sarcasm)
            jb_set(&bd->jb, t, "sarcasm", json_true());
    }
    jb_set(&bd->jb, o, "per_turn", per);
    return o;
}

static json_t *section_questions(struct build *bd)
{
    size_t last_agent = SIZE_MAX;
    for (size_t i = 0; i < bd->in.n; i++)
        if (bd->in.msgs[i].m->role == ROLE_AGENT)
            last_agent = i;
    json_t *arr = json_array();
    for (size_t i = 0; i < bd->n_sents; i++) {
        const struct sent *s = &bd->sents[i];
        const struct alert_msg *am = &bd->in.msgs[s->msg];
        if (am->m->role != ROLE_CUSTOMER || !s->question || s->content == 0)
            continue;
        if (last_agent != SIZE_MAX && last_agent > s->msg)
            continue;
        json_t *o = json_object();
        jb_push(&bd->jb, arr, o);
        jb_set(&bd->jb, o, "text", quote(&bd->jb, am->red, s->a, s->b));
        jb_set(&bd->jb, o, "message_id", json_string(am->m->id));
    }
    while (json_array_size(arr) > SUMMARY_QUESTIONS_MAX)
        json_array_remove(arr, 0);
    return arr;
}

static void add_reason(struct build *bd, json_t *reasons, struct buf *line, const char *code,
                       json_t *detail, const char *words)
{
    json_t *o = json_object();
    jb_push(&bd->jb, reasons, o);
    jb_set(&bd->jb, o, "code", json_string(code));
    jb_set(&bd->jb, o, "detail", detail ? detail : json_null());
    if (buf_printf(line, "%s%s", line->len ? ", " : "", words))
        bd->jb.oom = 1;
}

static json_t *section_handoff(struct build *bd)
{
    const struct alert_input *in = &bd->in;
    size_t end = bd->first_agent;
    json_t *o = json_object();
    size_t n_bot = 0, n_cust = 0, last_bot = SIZE_MAX;
    for (size_t i = 0; i < end; i++) {
        if (in->msgs[i].m->role == ROLE_BOT) {
            n_bot++;
            last_bot = i;
        } else if (in->msgs[i].m->role == ROLE_CUSTOMER)
            n_cust++;
    }
    jb_set(&bd->jb, o, "bot_messages", json_integer((json_int_t)n_bot));
    jb_set(&bd->jb, o, "customer_messages", json_integer((json_int_t)n_cust));
    /* what the bot did: the first informative sentence of each distinct bot message */
    json_t *steps = json_array();
    size_t repeats = 0;
    for (size_t i = 0; i < end; i++) {
        const struct alert_msg *am = &in->msgs[i];
        if (am->m->role != ROLE_BOT)
            continue;
        for (size_t k = 0; k < i; k++)
            if (in->msgs[k].m->role == ROLE_BOT && !strcasecmp(in->msgs[k].red, am->red)) {
                repeats++;
                break;
            }
        const struct sent *pick = NULL;
        for (size_t k = 0; k < bd->n_sents && !pick; k++) {
            const struct sent *s = &bd->sents[k];
            if (s->msg == i && s->content > 0 && s->kinds != (1u << CUE_SMALLTALK))
                pick = s;
        }
        for (size_t k = 0; k < bd->n_sents && !pick; k++)
            if (bd->sents[k].msg == i)
                pick = &bd->sents[k];
        if (!pick)
            continue;
        json_t *q = quote(&bd->jb, am->red, pick->a, pick->b);
        if (q && !array_has_string(steps, json_string_value(q), json_string_length(q)))
            jb_push(&bd->jb, steps, q);
        else
            json_decref(q);
    }
    while (json_array_size(steps) > SUMMARY_BOT_STEPS_MAX)
        json_array_remove(steps, 0);
    jb_set(&bd->jb, o, "bot_steps", steps);
    const struct sent *said[1];
    size_t ns = rank_wants(bd, 0, end, said, 1);
    jb_set(&bd->jb, o, "customer_said",
           ns ? quote(&bd->jb, in->msgs[said[0]->msg].red, said[0]->a, said[0]->b) : json_null());

    /* why it handed over */
    json_t *reasons = json_array();
    struct buf line;
    buf_init(&line, 0);
    const struct sent *ask = NULL, *fail = NULL, *hand = NULL;
    size_t n_fail = 0;
    for (size_t k = 0; k < bd->n_sents; k++) {
        const struct sent *s = &bd->sents[k];
        if (s->msg >= end)
            break;
        enum msg_role role = in->msgs[s->msg].m->role;
        if (role == ROLE_CUSTOMER && ((s->kinds & (1u << CUE_ASKHUMAN)) ||
                                      ((s->kinds & (1u << CUE_ASKHUMAN_SHORT)) &&
                                       in->msgs[s->msg].tok.n <= 3)))
            ask = s;
        if (role == ROLE_BOT && (s->kinds & (1u << CUE_BOTFAIL))) {
            fail = s;
            n_fail++;
        }
        if (role == ROLE_BOT && (s->kinds & (1u << CUE_HANDOFF)))
            hand = s;
    }
    if (ask)
        add_reason(bd, reasons, &line, "customer_asked_for_human",
                   quote(&bd->jb, in->msgs[ask->msg].red, ask->a, ask->b),
                   "the customer asked for a person");
    if (fail) {
        char words[64];
        snprintf(words, sizeof words, "the bot could not help (%zu time%s)", n_fail,
                 n_fail == 1 ? "" : "s");
        add_reason(bd, reasons, &line, "bot_could_not_help",
                   quote(&bd->jb, in->msgs[fail->msg].red, fail->a, fail->b), words);
    }
    if (repeats) {
        char words[64];
        snprintf(words, sizeof words, "the bot repeated itself (%zu time%s)", repeats,
                 repeats == 1 ? "" : "s");
        add_reason(bd, reasons, &line, "bot_repeated_itself", NULL, words);
    }
    struct sentiment_score *bs = calloc(n_cust ? n_cust : 1, sizeof *bs);
    size_t nb = 0;
    if (bs)
        for (size_t i = 0; i < in->n_cust && in->cust[i] < end; i++)
            bs[nb++] = in->cust_sent[i];
    else
        bd->jb.oom = 1;
    struct sentiment_summary bm;
    sentiment_aggregate(bs, nb, &bm);
    free(bs);
    if (nb && bm.score <= HANDOFF_FRUSTRATED) {
        char words[64];
        snprintf(words, sizeof words, "the customer was frustrated (%.2f)", bm.score);
        add_reason(bd, reasons, &line, "customer_frustrated", json_real(round3(bm.score)), words);
    }
    json_t *topics = json_array();
    for (size_t a = 0; a < bd->alerts.n; a++) {
        const struct alert *al = &bd->alerts.items[a];
        if (!strcmp(al->type, "frustration") || !strcmp(al->type, "repeat_contact") ||
            !al->message_id[0])
            continue;
        for (size_t i = 0; i < end; i++)
            if (!strcmp(in->msgs[i].m->id, al->message_id))
                jb_push(&bd->jb, topics, json_string(al->type));
    }
    if (json_array_size(topics)) {
        char words[128];
        snprintf(words, sizeof words, "a sensitive topic came up (%s)",
                 json_string_value(json_array_get(topics, 0)));
        add_reason(bd, reasons, &line, "sensitive_topic", topics, words);
    } else {
        json_decref(topics);
    }
    if (hand)
        add_reason(bd, reasons, &line, "bot_handed_over",
                   quote(&bd->jb, in->msgs[hand->msg].red, hand->a, hand->b),
                   "the bot transferred the conversation");
    if (!json_array_size(reasons))
        add_reason(bd, reasons, &line, "unknown", NULL, "no reason found in the conversation");
    jb_set(&bd->jb, o, "reasons", reasons);
    char *sentence = malloc(line.len + 32);
    if (sentence) {
        snprintf(sentence, line.len + 32, "Handed over: %s.", line.data ? line.data : "");
        jb_set(&bd->jb, o, "reason", json_string(sentence));
        free(sentence);
    } else {
        bd->jb.oom = 1;
    }
    buf_cleanup(&line);
    /* a connector may note the handoff as a system message */
    for (size_t i = end < in->n ? end + 1 : in->n; i-- > 0;) {
        const struct alert_msg *am = &in->msgs[i];
        if (am->m->role == ROLE_SYSTEM && am->red_len) {
            jb_set(&bd->jb, o, "note", quote(&bd->jb, am->red, 0, am->red_len));
            break;
        }
    }
    jb_set(&bd->jb, o, "last_bot_message_id",
           last_bot != SIZE_MAX ? json_string(in->msgs[last_bot].m->id) : json_null());
    jb_set(&bd->jb, o, "first_agent_message_id",
           end < in->n ? json_string(in->msgs[end].m->id) : json_null());
    return o;
}

static json_t *redacted_quote(struct build *bd, const char *s)
{
    struct buf b;
    buf_init(&b, 0);
    json_t *q = NULL;
    if (redact_text(s, strlen(s), bd->in.map, &b, NULL) == T_OK)
        q = quote(&bd->jb, b.data ? b.data : "", 0, b.len);
    else
        bd->jb.oom = 1;
    buf_cleanup(&b);
    return q;
}

static void iso_time(int64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static json_t *section_customer(struct build *bd, int stated_repeat, unsigned rep_min)
{
    const struct context *c = bd->ctx;
    json_t *o = json_object();
    jb_set(&bd->jb, o, "id", c->customer_id ? json_string(c->customer_id) : json_null());
    const char *tier = context_profile(c, "tier");
    jb_set(&bd->jb, o, "tier", tier ? jb_str(&bd->jb, tier, strlen(tier)) : json_null());
    json_t *prof = json_object();
    static const char *const fields[] = {"name", "tier", "country", "since"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        const char *v = context_profile(c, fields[i]);
        if (v)
            jb_set(&bd->jb, prof, fields[i], jb_str(&bd->jb, v, strlen(v)));
    }
    jb_set(&bd->jb, o, "profile", prof);
    size_t c30 = alert_count_contacts(c, bd->now_ms, 30);
    size_t c90 = alert_count_contacts(c, bd->now_ms, 90);
    jb_set(&bd->jb, o, "contacts_30d", json_integer((json_int_t)c30));
    jb_set(&bd->jb, o, "contacts_90d", json_integer((json_int_t)c90));
    json_t *outs = json_array();
    const struct ctx_history *newest = NULL;
    for (size_t i = 0; i < c->n_history && json_array_size(outs) < SUMMARY_OUTCOMES_MAX; i++) {
        const struct ctx_history *h = &c->history[i];
        if (h->conv_id && !strcmp(h->conv_id, c->conv_id))
            continue;
        if (!newest)
            newest = h;
        json_t *e = json_object();
        jb_push(&bd->jb, outs, e);
        jb_set(&bd->jb, e, "conv_id", h->conv_id && *h->conv_id ? json_string(h->conv_id) : json_null());
        jb_set(&bd->jb, e, "outcome", h->outcome && *h->outcome ? jb_str(&bd->jb, h->outcome, strlen(h->outcome)) : json_null());
        jb_set(&bd->jb, e, "summary", h->summary && *h->summary ? redacted_quote(bd, h->summary) : json_null());
        int64_t age = bd->now_ms - h->ts_ms;
        jb_set(&bd->jb, e, "days_ago", json_integer((json_int_t)(age > 0 ? age / DAY_MS : 0)));
        char at[32];
        iso_time(h->ts_ms, at);
        jb_set(&bd->jb, e, "at", json_string(at));
    }
    jb_set(&bd->jb, o, "last_outcomes", outs);
    int by_history = c30 >= rep_min;
    jb_set(&bd->jb, o, "repeat_contact", json_boolean(by_history || stated_repeat));
    jb_set(&bd->jb, o, "repeat_contact_source",
           by_history ? json_string("history") : stated_repeat ? json_string("stated") : json_null());
    /* most frequent tags of the last 90 days */
    struct tagc {
        char tag[48];
        size_t n;
    } tags[16];
    size_t nt = 0;
    for (size_t i = 0; i < c->n_history; i++) {
        const struct ctx_history *h = &c->history[i];
        if (!h->tags || (h->conv_id && !strcmp(h->conv_id, c->conv_id)) ||
            h->ts_ms < bd->now_ms - 90 * DAY_MS || h->ts_ms > bd->now_ms)
            continue;
        const char *p = h->tags;
        while (*p) {
            while (*p == ',' || *p == ' ')
                p++;
            const char *q = p;
            while (*q && *q != ',')
                q++;
            size_t l = (size_t)(q - p);
            while (l && p[l - 1] == ' ')
                l--;
            if (l && l < sizeof tags[0].tag) {
                size_t k = 0;
                while (k < nt && (strlen(tags[k].tag) != l || strncmp(tags[k].tag, p, l)))
                    k++;
                if (k < nt)
                    tags[k].n++;
                else if (nt < sizeof tags / sizeof *tags) {
                    memcpy(tags[nt].tag, p, l);
                    tags[nt].tag[l] = '\0';
                    tags[nt++].n = 1;
                }
            }
            p = q;
        }
    }
    json_t *top = json_array();
    for (size_t r = 0; r < 3; r++) {
        size_t best = SIZE_MAX;
        for (size_t k = 0; k < nt; k++)
            if (tags[k].n && (best == SIZE_MAX || tags[k].n > tags[best].n))
                best = k;
        if (best == SIZE_MAX)
            break;
        jb_push(&bd->jb, top, jb_str(&bd->jb, tags[best].tag, strlen(tags[best].tag)));
        tags[best].n = 0;
    }
    /* one line for the agent */
    struct buf line;
    buf_init(&line, 0);
    int rc = T_OK;
    if (!c->customer_id && !c->n_history)
        rc = buf_puts(&line, "Unknown customer: no history.");
    else if (!newest)
        rc = buf_puts(&line, "No earlier contacts on record.");
    else {
        rc = buf_printf(&line, "%zu contact%s in the last 90 days (%zu in the last 30)", c90,
                        c90 == 1 ? "" : "s", c30);
        int64_t days = (bd->now_ms - newest->ts_ms) / DAY_MS;
        if (!rc)
            rc = buf_printf(&line, "; last %s", days <= 0 ? "today" : "");
        if (!rc && days > 0)
            rc = buf_printf(&line, "%lld day%s ago", (long long)days, days == 1 ? "" : "s");
        json_t *q = newest->summary && *newest->summary ? redacted_quote(bd, newest->summary) : NULL;
        if (!rc && q)
            rc = buf_printf(&line, ": \"%s\"", json_string_value(q));
        json_decref(q);
        if (!rc && newest->outcome && *newest->outcome)
            rc = buf_printf(&line, " (%s)", newest->outcome);
        for (size_t k = 0; !rc && k < json_array_size(top); k++)
            rc = buf_printf(&line, "%s%s", k ? ", " : "; frequent topics: ",
                            json_string_value(json_array_get(top, k)));
        if (!rc)
            rc = buf_putc(&line, '.');
    }
    if (rc)
        bd->jb.oom = 1;
    jb_set(&bd->jb, o, "top_tags", top);
    jb_set(&bd->jb, o, "history_summary", jb_str(&bd->jb, line.data ? line.data : "", line.len));
    buf_cleanup(&line);
    return o;
}

int summary_build(const struct context *ctx, const struct alert_rules *rules, int64_t now_ms,
                  json_t **out)
{
    *out = NULL;
    struct build bd;
    memset(&bd, 0, sizeof bd);
    bd.ctx = ctx;
    bd.now_ms = now_ms;
    bd.cu = cues_get();
    if (!bd.cu)
        return T_ERR_INTERNAL;
    int rc = alert_input_init(&bd.in, ctx, NULL);
    if (!rc)
        rc = alerts_evaluate(rules, &bd.in, now_ms, &bd.alerts);
    for (size_t i = 0; !rc && i < bd.in.n; i++)
        rc = split_sentences(bd.cu, &bd.in.msgs[i], i, &bd.sents, &bd.n_sents, &bd.cap_sents);
    if (rc)
        goto out;
    bd.first_agent = bd.in.n;
    for (size_t i = 0; i < bd.in.n; i++)
        if (bd.in.msgs[i].m->role == ROLE_AGENT) {
            bd.first_agent = i;
            break;
        }
    json_t *root = json_object();
    json_t *conv = json_object();
    jb_set(&bd.jb, root, "conversation_id", json_string(ctx->conv_id));
    jb_set(&bd.jb, root, "based_on", ctx->newest_id[0] ? json_string(ctx->newest_id) : json_null());
    jb_set(&bd.jb, root, "conversation", conv);
    json_t *ranked = section_wants(&bd, conv);
    jb_set(&bd.jb, conv, "wants_ranked", ranked);
    jb_set(&bd.jb, conv, "tried", section_tried(&bd));
    jb_set(&bd.jb, conv, "facts", section_facts(&bd));
    jb_set(&bd.jb, conv, "sentiment", section_sentiment(&bd));
    jb_set(&bd.jb, conv, "open_questions", section_questions(&bd));
    json_t *alerts = alert_list_to_json(&bd.alerts);
    jb_set(&bd.jb, conv, "alerts", alerts);
    const char *hf = context_meta(ctx, "handoff_from_bot");
    if (hf && !strcmp(hf, "1"))
        jb_set(&bd.jb, conv, "handoff", section_handoff(&bd));
    size_t counts[ROLE_OTHER + 1] = {0};
    for (size_t i = 0; i < bd.in.n; i++)
        counts[bd.in.msgs[i].m->role]++;
    json_t *cnt = json_object();
    jb_set(&bd.jb, cnt, "messages", json_integer((json_int_t)bd.in.n));
    jb_set(&bd.jb, cnt, "customer", json_integer((json_int_t)counts[ROLE_CUSTOMER]));
    jb_set(&bd.jb, cnt, "agent", json_integer((json_int_t)counts[ROLE_AGENT]));
    jb_set(&bd.jb, cnt, "bot", json_integer((json_int_t)counts[ROLE_BOT]));
    jb_set(&bd.jb, conv, "counts", cnt);
    int stated = 0;
    for (size_t a = 0; a < bd.alerts.n; a++)
        stated |= !strcmp(bd.alerts.items[a].type, "repeat_contact") &&
                  strcmp(bd.alerts.items[a].rule, "history");
    jb_set(&bd.jb, root, "customer", section_customer(&bd, stated, alert_rules_repeat_min(rules)));
    if (bd.jb.oom || !root) {
        json_decref(root);
        rc = T_ERR_NOMEM;
        goto out;
    }
    *out = root;
out:
    free(bd.sents);
    alert_list_cleanup(&bd.alerts);
    alert_input_cleanup(&bd.in);
    return rc;
}
