/* Quality figures: Redis counters, their /metrics and JSON, figures since a date from the feedback stream, and the quality report. */
#include "tandem/quality.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <math.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/error.h"
#include "tandem/feedback.h"
#include "tandem/kb.h"
#include "tandem/log.h"
#include "tandem/memory.h"
#include "tandem/metrics.h"
#include "tandem/redact.h"
#include "tandem/store.h"
#include "tandem/text.h"

/* Feedback entries read per XREVRANGE: bounds the reply held in memory at once. */
#define SCAN_BATCH 1000
/* Words of a KB body compared with a macro candidate. */
#define KB_BODY_TERMS 512
/* A candidate needs this many words in common with an entry to be that entry. */
#define KB_MATCH_MIN_COMMON 3

/* ---- keys and settings ------------------------------------------------------------------------ */

int quality_key(char *out, size_t outsz, enum quality_dim d)
{
    static const char *const names[] = {"engine", "kb", "agent"};
    return feedback_key(out, outsz, "quality", names[d]);
}

static atomic_int per_agent_flag;

void quality_set_per_agent(int on) { atomic_store(&per_agent_flag, on != 0); }

int quality_per_agent(void) { return atomic_load(&per_agent_flag); }

/* ---- figures ----------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    size_t off;
} figure_fields[] = {
    {"shown", offsetof(struct quality_figures, shown)},
    {"accepted", offsetof(struct quality_figures, accepted)},
    {"edited", offsetof(struct quality_figures, edited)},
    {"rejected", offsetof(struct quality_figures, rejected)},
    {"dist_sum", offsetof(struct quality_figures, dist_sum)},
    {"dist_n", offsetof(struct quality_figures, dist_n)},
    {"ratio_sum", offsetof(struct quality_figures, ratio_sum)},
    {"tta_sum", offsetof(struct quality_figures, tta_sum)},
    {"tta_n", offsetof(struct quality_figures, tta_n)},
};

static json_t *ratio_json(double num, double den, double scale)
{
    if (den <= 0)
        return json_null();
    return json_real(round(num / den * scale * 1000.0) / 1000.0);
}

json_t *quality_figures_json(const struct quality_figures *f, int with_shown)
{
    long long used = f->accepted + f->edited, actions = used + f->rejected;
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = json_object_set_new(o, "shown", with_shown ? json_integer(f->shown) : json_null());
    bad |= json_object_set_new(o, "accepted", json_integer(f->accepted));
    bad |= json_object_set_new(o, "edited", json_integer(f->edited));
    bad |= json_object_set_new(o, "rejected", json_integer(f->rejected));
    bad |= json_object_set_new(o, "actions", json_integer(actions));
    bad |= json_object_set_new(o, "acceptance_rate", ratio_json((double)used, (double)actions, 1));
    bad |= json_object_set_new(o, "used_per_shown",
                               with_shown ? ratio_json((double)used, (double)f->shown, 1) : json_null());
    bad |= json_object_set_new(o, "mean_edit_distance", ratio_json((double)f->dist_sum, (double)f->dist_n, 1));
    bad |= json_object_set_new(o, "mean_edit_ratio", ratio_json((double)f->ratio_sum, (double)f->dist_n, 0.001));
    bad |= json_object_set_new(o, "mean_time_to_first_action_ms", ratio_json((double)f->tta_sum, (double)f->tta_n, 1));
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* ---- tables ------------------------------------------------------------------------------------- */

struct qrow {
    char *name;
    struct quality_figures f;
};

struct quality_table {
    struct qrow *rows;
    size_t n, cap;
    uint32_t *slots; /* row index + 1; 0 = empty */
    size_t nslots;
    struct arena arena;
};

struct quality_table *quality_table_new(void)
{
    struct quality_table *t = calloc(1, sizeof *t);
    if (t)
        arena_init(&t->arena);
    return t;
}

void quality_table_free(struct quality_table *t)
{
    if (!t)
        return;
    free(t->rows);
    free(t->slots);
    arena_cleanup(&t->arena);
    free(t);
}

static uint64_t name_hash(const char *s, size_t len) { return text_hash(TEXT_HASH_SEED, s, len); }

static int table_grow(struct quality_table *t)
{
    size_t ns = t->nslots ? t->nslots * 2 : 64;
    uint32_t *slots = calloc(ns, sizeof *slots);
    if (!slots)
        return T_ERR_NOMEM;
    for (size_t i = 0; i < t->n; i++) {
        size_t j = (size_t)name_hash(t->rows[i].name, strlen(t->rows[i].name)) & (ns - 1);
        while (slots[j])
            j = (j + 1) & (ns - 1);
        slots[j] = (uint32_t)(i + 1);
    }
    free(t->slots);
    t->slots = slots;
    t->nslots = ns;
    return T_OK;
}

/* The row of name, created when missing; NULL on OOM. */
static struct qrow *table_row(struct quality_table *t, const char *name, size_t len, int create)
{
    if (t->nslots) {
        size_t j = (size_t)name_hash(name, len) & (t->nslots - 1);
        while (t->slots[j]) {
            struct qrow *r = &t->rows[t->slots[j] - 1];
            if (strlen(r->name) == len && memcmp(r->name, name, len) == 0)
                return r;
            j = (j + 1) & (t->nslots - 1);
        }
    }
    if (!create)
        return NULL;
    if ((t->n + 1) * 2 > t->nslots && table_grow(t))
        return NULL;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 32;
        struct qrow *rows = realloc(t->rows, cap * sizeof *rows);
        if (!rows)
            return NULL;
        t->rows = rows;
        t->cap = cap;
    }
    char *copy = arena_strndup(&t->arena, name, len);
    if (!copy)
        return NULL;
    struct qrow *r = &t->rows[t->n];
    memset(r, 0, sizeof *r);
    r->name = copy;
    size_t j = (size_t)name_hash(name, len) & (t->nslots - 1);
    while (t->slots[j])
        j = (j + 1) & (t->nslots - 1);
    t->slots[j] = (uint32_t)(++t->n);
    return r;
}

int quality_table_add(struct quality_table *t, const char *name, size_t name_len, const char *figure,
                      long long value)
{
    for (size_t i = 0; i < sizeof figure_fields / sizeof figure_fields[0]; i++) {
        if (strcmp(figure_fields[i].name, figure) != 0)
            continue;
        struct qrow *r = table_row(t, name, name_len, 1);
        if (!r)
            return T_ERR_NOMEM;
        *(long long *)((char *)&r->f + figure_fields[i].off) += value;
        return T_OK;
    }
    return T_OK;
}

int quality_table_add_field(struct quality_table *t, const char *field, size_t len, long long value)
{
    size_t bar = len;
    while (bar > 0 && field[bar - 1] != '|')
        bar--;
    if (bar == 0)
        return T_OK;
    char figure[16];
    size_t fl = len - bar;
    if (fl >= sizeof figure)
        return T_OK;
    memcpy(figure, field + bar, fl);
    figure[fl] = '\0';
    return quality_table_add(t, field, bar - 1, figure, value);
}

size_t quality_table_count(const struct quality_table *t) { return t ? t->n : 0; }
const char *quality_table_name(const struct quality_table *t, size_t i) { return t->rows[i].name; }
const struct quality_figures *quality_table_at(const struct quality_table *t, size_t i) { return &t->rows[i].f; }

const struct quality_figures *quality_table_find(const struct quality_table *t, const char *name)
{
    struct qrow *r = table_row((struct quality_table *)t, name, strlen(name), 0);
    return r ? &r->f : NULL;
}

/* Fills t from an HGETALL reply. */
static int table_from_hash(struct quality_table *t, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return T_ERR_INTERNAL;
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *k = r->element[i], *v = r->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        int err = quality_table_add_field(t, k->str, k->len, strtoll(v->str, NULL, 10));
        if (err)
            return err;
    }
    return T_OK;
}

/* ---- since --------------------------------------------------------------------------------------- */

static int digits(const char **p, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int days_in_month(int y, int m)
{
    static const int dm[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return m == 2 ? 28 + leap : dm[m - 1];
}

int quality_parse_since(const char *s, int64_t *ms)
{
    if (!s || !*s)
        return -1;
    size_t n = strspn(s, "0123456789");
    if (s[n] == '\0') {
        if (n > 15)
            return -1;
        *ms = strtoll(s, NULL, 10);
        return 0;
    }
    const char *p = s;
    int y, mo, d, h = 0, mi = 0, sec = 0, frac_ms = 0;
    if (digits(&p, 4, &y) || *p++ != '-' || digits(&p, 2, &mo) || *p++ != '-' || digits(&p, 2, &d))
        return -1;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo))
        return -1;
    int64_t offset_min = 0;
    if (*p == 'T' || *p == 't' || (*p == ' ' && p[1] >= '0' && p[1] <= '9')) {
        p++;
        if (digits(&p, 2, &h) || *p++ != ':' || digits(&p, 2, &mi))
            return -1;
        if (*p == ':') {
            p++;
            if (digits(&p, 2, &sec))
                return -1;
            if (*p == '.') {
                p++;
                int k = 0;
                for (; *p >= '0' && *p <= '9'; p++, k++)
                    if (k < 3)
                        frac_ms = frac_ms * 10 + (*p - '0');
                if (k == 0)
                    return -1;
                for (; k < 3; k++)
                    frac_ms *= 10;
            }
        }
        if (h > 23 || mi > 59 || sec > 60)
            return -1;
        /* a '+' that arrived unescaped in a query string reads as a space */
        if (*p == 'Z' || *p == 'z') {
            p++;
        } else if (*p == '+' || *p == '-' || *p == ' ') {
            int sign = *p == '-' ? -1 : 1, oh, om = 0;
            p++;
            if (digits(&p, 2, &oh))
                return -1;
            if (*p == ':')
                p++;
            if (*p && digits(&p, 2, &om))
                return -1;
            if (oh > 23 || om > 59)
                return -1;
            offset_min = sign * (oh * 60 + om);
        }
    }
    if (*p)
        return -1;
    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    *ms = secs * 1000 + frac_ms;
    return *ms < 0 ? -1 : 0;
}

/* ---- shown --------------------------------------------------------------------------------------- */

static const char shown_script[] =
    "redis.call('HINCRBY', KEYS[1], ARGV[1] .. '|shown', ARGV[2]) "
    "for i = 3, #ARGV do redis.call('HINCRBY', KEYS[2], ARGV[i] .. '|shown', 1) end "
    "local m = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1) "
    "local newest = '' "
    "if #m > 0 then newest = m[1][1] end "
    "return {newest, redis.call('GET', KEYS[4]) or ''}";

int quality_note_shown(struct store *s, const char *engine, const struct suggestion *sg, size_t n)
{
    if (!n)
        return T_OK;
    char k1[600], k2[600], k3[600], k4[600], count[24];
    if (quality_key(k1, sizeof k1, QUALITY_BY_ENGINE) < 0 || quality_key(k2, sizeof k2, QUALITY_BY_KB) < 0 ||
        feedback_key(k3, sizeof k3, "feedback", "rejections") < 0 ||
        feedback_key(k4, sizeof k4, "feedback", "rejections:epoch") < 0)
        return T_ERR_INTERNAL;
    snprintf(count, sizeof count, "%zu", n);
    const char *argv[9 + ENGINE_MAX_K];
    int argc = 0;
    argv[argc++] = "EVAL";
    argv[argc++] = shown_script;
    argv[argc++] = "4";
    argv[argc++] = k1;
    argv[argc++] = k2;
    argv[argc++] = k3;
    argv[argc++] = k4;
    argv[argc++] = engine;
    argv[argc++] = count;
    for (size_t i = 0; i < n && i < ENGINE_MAX_K; i++)
        if (sg[i].kb_id)
            argv[argc++] = sg[i].kb_id;
    redisReply *r = NULL;
    int err = store_command(s, &r, argc, argv, NULL);
    if (!err && (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_STRING ||
                 r->element[1]->type != REDIS_REPLY_STRING))
        err = T_ERR_INTERNAL;
    if (err) {
        log_warn("quality_shown_failed", "err=%s", tandem_err_code(err));
    } else {
        char newest[STREAM_ID_MAX], epoch[STREAM_ID_MAX];
        snprintf(newest, sizeof newest, "%s", r->element[0]->str);
        snprintf(epoch, sizeof epoch, "%s", r->element[1]->str);
        store_reply_free(r);
        r = NULL;
        feedback_rejections_sync(s, newest, epoch, 0);
    }
    store_reply_free(r);
    return err;
}

/* ---- /metrics ------------------------------------------------------------------------------------ */

static atomic_ulong stat_read_errors;

/* A Prometheus label value: \, " and newline escaped. */
static int put_label(struct buf *out, const char *v)
{
    int err = T_OK;
    for (; *v && !err; v++) {
        if (*v == '\\' || *v == '"')
            err = buf_printf(out, "\\%c", *v);
        else if (*v == '\n')
            err = buf_puts(out, "\\n");
        else
            err = buf_putc(out, *v);
    }
    return err;
}

/* name{engine="e"[,action="a"]} value */
static int series(struct buf *out, const char *name, const char *engine, const char *action, double v, int integer)
{
    int err = buf_printf(out, "%s{engine=\"", name);
    err = err ? err : put_label(out, engine);
    if (!err && action)
        err = buf_printf(out, "\",action=\"%s", action);
    if (!err)
        err = integer ? buf_printf(out, "\"} %.0f\n", v) : buf_printf(out, "\"} %.6g\n", v);
    return err;
}

/* The fleet-wide per-engine figures; t may be NULL (Redis unreadable: headers only). */
static int render_engines(struct buf *out, const struct quality_table *t)
{
    static const char *const note = " Fleet-wide, read from Redis: every sidecar reports the same value.";
    static const struct {
        const char *name, *type, *help;
    } hdr[] = {
        {"tandem_quality_shown", "gauge", "Suggestions recorded for feedback, by engine."},
        {"tandem_quality_feedback", "gauge", "Feedback actions on suggestions, by engine and action."},
        {"tandem_quality_acceptance_ratio", "gauge", "Accepted and edited over all actions, by engine."},
        {"tandem_quality_edit_distance_mean", "gauge",
         "Mean edit distance (code points) of accepted and edited replies, by engine."},
        {"tandem_quality_edit_ratio_mean", "gauge", "Mean edit distance over reply length (0-1), by engine."},
        {"tandem_quality_time_to_first_action_seconds_mean", "gauge",
         "Mean time from a suggestion to its first action, by engine."},
    };
    int err = T_OK;
    for (size_t h = 0; h < sizeof hdr / sizeof hdr[0] && !err; h++) {
        char help[256];
        snprintf(help, sizeof help, "%s%s", hdr[h].help, note);
        err = metrics_header(out, hdr[h].name, hdr[h].type, help);
        for (size_t i = 0; t && i < quality_table_count(t) && !err; i++) {
            const char *e = quality_table_name(t, i);
            const struct quality_figures *f = quality_table_at(t, i);
            long long used = f->accepted + f->edited, actions = used + f->rejected;
            switch (h) {
            case 0:
                err = series(out, hdr[h].name, e, NULL, (double)f->shown, 1);
                break;
            case 1:
                err = series(out, hdr[h].name, e, "accepted", (double)f->accepted, 1);
                err = err ? err : series(out, hdr[h].name, e, "edited", (double)f->edited, 1);
                err = err ? err : series(out, hdr[h].name, e, "rejected", (double)f->rejected, 1);
                break;
            case 2:
                if (actions)
                    err = series(out, hdr[h].name, e, NULL, (double)used / (double)actions, 0);
                break;
            case 3:
                if (f->dist_n)
                    err = series(out, hdr[h].name, e, NULL, (double)f->dist_sum / (double)f->dist_n, 0);
                break;
            case 4:
                if (f->dist_n)
                    err = series(out, hdr[h].name, e, NULL, (double)f->ratio_sum / 1000.0 / (double)f->dist_n, 0);
                break;
            default:
                if (f->tta_n)
                    err = series(out, hdr[h].name, e, NULL, (double)f->tta_sum / 1000.0 / (double)f->tta_n, 0);
                break;
            }
        }
    }
    return err;
}

int quality_metrics_render(struct buf *out)
{
    struct quality_table *t = quality_table_new();
    struct store *s = store_thread();
    char key[600];
    redisReply *r = NULL;
    int ok = t && s && quality_key(key, sizeof key, QUALITY_BY_ENGINE) >= 0;
    if (ok) {
        const char *argv[2] = {"HGETALL", key};
        ok = store_command(s, &r, 2, argv, NULL) == T_OK && table_from_hash(t, r) == T_OK;
        store_reply_free(r);
    }
    if (!ok)
        atomic_fetch_add(&stat_read_errors, 1);
    int err = render_engines(out, ok ? t : NULL);
    quality_table_free(t);

    struct feedback_stats st;
    feedback_stats(&st);
    err = err ? err : metrics_header(out, "tandem_feedback_stored_total", "counter",
                                     "Feedback calls this process stored, by action.");
    for (int a = 0; a < 3 && !err; a++)
        err = buf_printf(out, "tandem_feedback_stored_total{action=\"%s\"} %lu\n",
                         feedback_action_name((enum feedback_action)a), st.stored[a]);
    err = err ? err : metrics_header(out, "tandem_feedback_duplicates_total", "counter",
                                     "Feedback calls answered with an earlier entry (repeated feedback_id).");
    err = err ? err : buf_printf(out, "tandem_feedback_duplicates_total %lu\n", st.duplicates);
    err = err ? err : metrics_header(out, "tandem_feedback_learned_total", "counter",
                                     "Accepted and edited replies this process added to the reply memory.");
    err = err ? err : buf_printf(out, "tandem_feedback_learned_total %lu\n", st.learned);
    err = err ? err : metrics_header(out, "tandem_feedback_rejections_indexed", "gauge",
                                     "Rejections in this process's table (they rank suggestions lower).");
    err = err ? err : buf_printf(out, "tandem_feedback_rejections_indexed %zu\n", feedback_rejections_count());
    err = err ? err : metrics_header(out, "tandem_quality_read_errors_total", "counter",
                                     "Scrapes whose quality figures could not be read from Redis.");
    err = err ? err : buf_printf(out, "tandem_quality_read_errors_total %lu\n", atomic_load(&stat_read_errors));
    return err;
}

/* ---- the feedback stream ------------------------------------------------------------------------ */

/* One feedback entry as read; strings borrowed from the reply (valid during the callback). */
struct fb_entry {
    int64_t ts_ms;
    const char *engine, *kb_id, *agent_id, *action, *final_text, *reason, *lang;
    size_t final_len, reason_len;
    long dist, sugg_chars, tta;
    int first;
};

typedef int (*scan_fn)(void *ud, const struct fb_entry *e);

static void id_before(const char *id, char *out, size_t outsz)
{
    unsigned long long ms = 0, seq = 0;
    sscanf(id, "%llu-%llu", &ms, &seq);
    if (seq > 0)
        snprintf(out, outsz, "%llu-%llu", ms, seq - 1);
    else if (ms > 0)
        snprintf(out, outsz, "%llu-18446744073709551615", ms - 1);
    else
        out[0] = '\0';
}

static void entry_from_fields(const redisReply *fv, struct fb_entry *e)
{
    memset(e, 0, sizeof *e);
    e->engine = e->kb_id = e->agent_id = e->action = e->final_text = e->reason = "";
    e->lang = "en";
    e->dist = e->sugg_chars = e->tta = -1;
    for (size_t i = 0; i + 1 < fv->elements; i += 2) {
        const redisReply *k = fv->element[i], *v = fv->element[i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        const char *f = k->str;
        if (strcmp(f, "engine") == 0)
            e->engine = v->str;
        else if (strcmp(f, "kb_id") == 0)
            e->kb_id = v->str;
        else if (strcmp(f, "agent_id") == 0)
            e->agent_id = v->str;
        else if (strcmp(f, "action") == 0)
            e->action = v->str;
        else if (strcmp(f, "final_text") == 0)
            e->final_text = v->str, e->final_len = v->len;
        else if (strcmp(f, "reason") == 0)
            e->reason = v->str, e->reason_len = v->len;
        else if (strcmp(f, "lang") == 0 && v->len)
            e->lang = v->str;
        else if (strcmp(f, "edit_distance") == 0 && v->len)
            e->dist = strtol(v->str, NULL, 10);
        else if (strcmp(f, "suggestion_chars") == 0 && v->len)
            e->sugg_chars = strtol(v->str, NULL, 10);
        else if (strcmp(f, "time_to_action_ms") == 0 && v->len)
            e->tta = strtol(v->str, NULL, 10);
        else if (strcmp(f, "first_action") == 0)
            e->first = strcmp(v->str, "1") == 0;
    }
}

struct scan_result {
    size_t scanned;
    int truncated;
    int64_t oldest_ms; /* time of the oldest entry read, -1 when none */
};

/* Calls fn for each feedback entry from the newest back to since_ms (inclusive), at most
 * QUALITY_SCAN_MAX of them, SCAN_BATCH per round trip. */
static int scan_feedback(struct store *s, int64_t since_ms, scan_fn fn, void *ud, struct scan_result *res)
{
    char key[256], end[64] = "+", start[32], count[24];
    res->scanned = 0;
    res->truncated = 0;
    res->oldest_ms = -1;
    if (store_key(key, sizeof key, "feedback") < 0)
        return T_ERR_INTERNAL;
    snprintf(start, sizeof start, "%lld", (long long)(since_ms > 0 ? since_ms : 0));
    for (;;) {
        size_t want = QUALITY_SCAN_MAX - res->scanned;
        /* one more than we may read tells whether the scan stops early */
        snprintf(count, sizeof count, "%zu", want < SCAN_BATCH ? want + 1 : (size_t)SCAN_BATCH);
        const char *argv[6] = {"XREVRANGE", key, end, start, "COUNT", count};
        redisReply *r = NULL;
        int err = store_command(s, &r, 6, argv, NULL);
        if (err)
            return err;
        if (r->type != REDIS_REPLY_ARRAY) {
            store_reply_free(r);
            return T_ERR_INTERNAL;
        }
        size_t got = r->elements;
        for (size_t i = 0; i < got && !err; i++) {
            if (res->scanned == QUALITY_SCAN_MAX) {
                res->truncated = 1;
                break;
            }
            const redisReply *ent = r->element[i];
            if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 || ent->element[0]->type != REDIS_REPLY_STRING ||
                ent->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            struct fb_entry e;
            entry_from_fields(ent->element[1], &e);
            e.ts_ms = context_stream_id_ms(ent->element[0]->str);
            res->oldest_ms = e.ts_ms;
            res->scanned++;
            err = fn(ud, &e);
        }
        int more = got == (size_t)atoi(count) && !res->truncated;
        if (more && got)
            id_before(r->element[got - 1]->element[0]->str, end, sizeof end);
        store_reply_free(r);
        if (err)
            return err;
        if (!more || !end[0] || res->truncated)
            return T_OK;
    }
}

struct since_ctx {
    struct quality_table *t[3];
    int per_agent;
};

static int add_entry(struct quality_table *t, const char *name, const struct fb_entry *e)
{
    size_t nl = strlen(name);
    int err = quality_table_add(t, name, nl, e->action, 1);
    int used = strcmp(e->action, "accepted") == 0 || strcmp(e->action, "edited") == 0;
    if (!err && used && e->dist >= 0) {
        size_t fc = feedback_codepoints(e->final_text, e->final_len);
        long long longest = (long long)(e->sugg_chars > (long)fc ? (size_t)e->sugg_chars : fc);
        long long d = e->dist > longest ? longest : e->dist;
        err = quality_table_add(t, name, nl, "dist_sum", e->dist);
        err = err ? err : quality_table_add(t, name, nl, "dist_n", 1);
        err = err ? err : quality_table_add(t, name, nl, "ratio_sum", longest ? d * 1000 / longest : 0);
    }
    if (!err && e->first && e->tta >= 0) {
        err = quality_table_add(t, name, nl, "tta_sum", e->tta);
        err = err ? err : quality_table_add(t, name, nl, "tta_n", 1);
    }
    return err;
}

static int since_entry(void *ud, const struct fb_entry *e)
{
    struct since_ctx *c = ud;
    if (strcmp(e->action, "accepted") != 0 && strcmp(e->action, "edited") != 0 && strcmp(e->action, "rejected") != 0)
        return T_OK;
    int err = add_entry(c->t[0], e->engine[0] ? e->engine : "local", e);
    if (!err && e->kb_id[0])
        err = add_entry(c->t[1], e->kb_id, e);
    if (!err && c->per_agent && e->agent_id[0])
        err = add_entry(c->t[2], e->agent_id, e);
    return err;
}

/* ---- JSON ------------------------------------------------------------------------------------------ */

static int cmp_rows(const void *a, const void *b)
{
    const struct qrow *x = *(const struct qrow *const *)a, *y = *(const struct qrow *const *)b;
    long long ax = x->f.accepted + x->f.edited + x->f.rejected, ay = y->f.accepted + y->f.edited + y->f.rejected;
    if (ax != ay)
        return ax > ay ? -1 : 1;
    if (x->f.shown != y->f.shown)
        return x->f.shown > y->f.shown ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* [{"<idname>": name, ("title": ...), figures...}], most actions first. */
static json_t *rows_json(const struct quality_table *t, const char *idname, const struct kb *kb, int with_shown)
{
    json_t *arr = json_array();
    size_t n = quality_table_count(t);
    const struct qrow **order = malloc((n ? n : 1) * sizeof *order);
    if (!arr || !order) {
        json_decref(arr);
        free(order);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        order[i] = &t->rows[i];
    qsort(order, n, sizeof *order, cmp_rows);
    for (size_t i = 0; i < n; i++) {
        json_t *o = quality_figures_json(&order[i]->f, with_shown);
        json_t *id = o ? json_string(order[i]->name) : NULL;
        /* the stored name: valid UTF-8 from our own writes, but check before Jansson sees it */
        if (!id && o)
            id = json_string(context_strdup_utf8(&((struct quality_table *)t)->arena, order[i]->name,
                                                 strlen(order[i]->name)));
        if (!o || !id || json_object_set_new(o, idname, id) || json_array_append_new(arr, o)) {
            json_decref(o);
            json_decref(arr);
            free(order);
            return NULL;
        }
        long at = kb ? kb_find_id(kb, order[i]->name) : -1;
        if (at >= 0 && json_object_set_new(o, "title", json_string(kb_entry_at(kb, (size_t)at)->title))) {
            json_decref(arr);
            free(order);
            return NULL;
        }
    }
    free(order);
    return arr;
}

static json_t *engines_json(const struct quality_table *t, int with_shown)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < quality_table_count(t); i++) {
        json_t *f = quality_figures_json(quality_table_at(t, i), with_shown);
        if (!f || json_object_set_new(o, quality_table_name(t, i), f)) {
            json_decref(o);
            return NULL;
        }
    }
    return o;
}

int quality_json(struct store *s, const struct kb *kb, int64_t since_ms, int64_t now_ms, json_t **out)
{
    *out = NULL;
    int per_agent = quality_per_agent();
    struct quality_table *t[3] = {quality_table_new(), quality_table_new(), quality_table_new()};
    json_t *o = json_object();
    int err = T_ERR_NOMEM;
    if (!t[0] || !t[1] || !t[2] || !o)
        goto out;
    struct scan_result res = {0, 0, -1};
    if (since_ms < 0) {
        char keys[3][600];
        const char *argv[3][2];
        const char **argvs[3];
        int argcs[3] = {2, 2, 2};
        const size_t *lens[3] = {NULL, NULL, NULL};
        redisReply *r[3] = {NULL, NULL, NULL};
        size_t n = per_agent ? 3 : 2;
        for (size_t i = 0; i < n; i++) {
            if (quality_key(keys[i], sizeof keys[i], (enum quality_dim)i) < 0) {
                err = T_ERR_INTERNAL;
                goto out;
            }
            argv[i][0] = "HGETALL";
            argv[i][1] = keys[i];
            argvs[i] = argv[i];
        }
        err = store_pipeline(s, n, argcs, argvs, lens, r);
        if (err)
            goto out;
        for (size_t i = 0; i < n; i++) {
            if (!err)
                err = table_from_hash(t[i], r[i]);
            store_reply_free(r[i]);
        }
        if (err)
            goto out;
    } else {
        struct since_ctx c = {{t[0], t[1], t[2]}, per_agent};
        err = scan_feedback(s, since_ms, since_entry, &c, &res);
        if (err)
            goto out;
    }
    err = T_ERR_NOMEM;
    int with_shown = since_ms < 0;
    json_t *eng = engines_json(t[0], with_shown), *kbs = rows_json(t[1], "kb_id", kb, with_shown);
    int bad = json_object_set_new(o, "scope", json_string(since_ms < 0 ? "all_time" : "since"));
    bad |= json_object_set_new(o, "engines", eng);
    bad |= json_object_set_new(o, "kb_entries", kbs);
    bad |= json_object_set_new(o, "per_agent", json_boolean(per_agent));
    if (per_agent)
        bad |= json_object_set_new(o, "agents", rows_json(t[2], "agent_id", NULL, 0));
    if (since_ms >= 0) {
        bad |= json_object_set_new(o, "since_ms", json_integer(since_ms));
        bad |= json_object_set_new(o, "until_ms", json_integer(now_ms));
        bad |= json_object_set_new(o, "scanned", json_integer((json_int_t)res.scanned));
        bad |= json_object_set_new(o, "scan_limit", json_integer(QUALITY_SCAN_MAX));
        bad |= json_object_set_new(o, "truncated", json_boolean(res.truncated));
        /* with truncated, only entries from covered_from_ms on were counted */
        bad |= json_object_set_new(o, "covered_from_ms",
                                   res.truncated ? json_integer(res.oldest_ms) : json_integer(since_ms));
        bad |= json_object_set_new(o, "note",
                                   json_string("computed from the feedback stream (newest entries first, at most "
                                               "scan_limit); 'shown' is only counted all-time, so it is null here"));
    }
    if (bad || !eng || !kbs)
        goto out;
    *out = o;
    o = NULL;
    err = T_OK;
out:
    json_decref(o);
    for (int i = 0; i < 3; i++)
        quality_table_free(t[i]);
    return err;
}

/* ---- clustering ------------------------------------------------------------------------------------ */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : (x > y);
}

/* Sorted distinct word hashes of text (at most max; numbers left out: the same reply with other
 * values), *n of them; T_ERR_NOMEM when the text could not be analysed. */
static int sorted_terms(const char *text, size_t len, const char *lang, uint64_t *out, size_t max, size_t *n)
{
    if (text_word_hashes(text, len, lang, out, max, n) < 0)
        return T_ERR_NOMEM;
    qsort(out, *n, sizeof *out, cmp_u64);
    return T_OK;
}

double quality_jaccard(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    size_t i = 0, j = 0, common = 0;
    while (i < na && j < nb) {
        if (a[i] == b[j])
            common++, i++, j++;
        else if (a[i] < b[j])
            i++;
        else
            j++;
    }
    size_t uni = na + nb - common;
    return uni ? (double)common / (double)uni : 0;
}

static size_t common_terms(const uint64_t *a, size_t na, const uint64_t *b, size_t nb)
{
    size_t i = 0, j = 0, common = 0;
    while (i < na && j < nb) {
        if (a[i] == b[j])
            common++, i++, j++;
        else if (a[i] < b[j])
            i++;
        else
            j++;
    }
    return common;
}

struct group {
    uint64_t sig;
    size_t count, first, order;
    size_t by_source[2];
    size_t examples[QUALITY_EXAMPLES];
    size_t n_examples;
};

static void add_example(const struct quality_text *t, size_t *ex, size_t *nex, size_t idx)
{
    if (*nex >= QUALITY_EXAMPLES)
        return;
    for (size_t k = 0; k < *nex; k++)
        if (t[ex[k]].len == t[idx].len && memcmp(t[ex[k]].text, t[idx].text, t[idx].len) == 0)
            return;
    ex[(*nex)++] = idx;
}

static int cmp_group(const void *a, const void *b)
{
    const struct group *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return x->first < y->first ? -1 : (x->first > y->first);
}

static int cmp_cluster(const void *a, const void *b)
{
    const struct quality_cluster *x = a, *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return x->examples[0] < y->examples[0] ? -1 : (x->examples[0] > y->examples[0]);
}

int quality_cluster_texts(const struct quality_text *t, size_t n, size_t min_count, struct quality_cluster **out,
                          size_t *n_out)
{
    *out = NULL;
    *n_out = 0;
    size_t nslots = 16;
    while (nslots < n * 2)
        nslots *= 2;
    struct group *g = malloc((n ? n : 1) * sizeof *g);
    uint32_t *slots = calloc(nslots, sizeof *slots);
    struct quality_cluster *c = NULL;
    size_t ng = 0, nc = 0;
    int err = T_ERR_NOMEM;
    if (!g || !slots)
        goto out;
    /* 1. equal word sets: one group */
    for (size_t i = 0; i < n; i++) {
        uint64_t terms[QUALITY_CLUSTER_TERMS];
        size_t nt;
        if (sorted_terms(t[i].text, t[i].len, t[i].lang, terms, QUALITY_CLUSTER_TERMS, &nt))
            goto out;
        if (nt < QUALITY_CLUSTER_MIN_TERMS)
            continue;
        uint64_t sig = text_hash(TEXT_HASH_SEED, terms, nt * sizeof *terms);
        size_t j = (size_t)sig & (nslots - 1);
        while (slots[j] && g[slots[j] - 1].sig != sig)
            j = (j + 1) & (nslots - 1);
        if (!slots[j]) {
            g[ng] = (struct group){.sig = sig, .first = i};
            slots[j] = (uint32_t)(++ng);
        }
        struct group *gr = &g[slots[j] - 1];
        gr->count++;
        gr->by_source[t[i].source ? 1 : 0]++;
        add_example(t, gr->examples, &gr->n_examples, i);
    }
    /* 2. the largest groups join a larger similar one (a name or a word changed) */
    qsort(g, ng, sizeof *g, cmp_group);
    size_t top = ng < QUALITY_REPORT_MAX_GROUPS ? ng : QUALITY_REPORT_MAX_GROUPS;
    c = calloc(top ? top : 1, sizeof *c);
    if (!c)
        goto out;
    for (size_t k = 0; k < top; k++) {
        uint64_t terms[QUALITY_CLUSTER_TERMS];
        const struct quality_text *rep = &t[g[k].first];
        size_t nt;
        if (sorted_terms(rep->text, rep->len, rep->lang, terms, QUALITY_CLUSTER_TERMS, &nt))
            goto out;
        size_t into = nc;
        for (size_t m = 0; m < nc && into == nc; m++)
            if (quality_jaccard(c[m].terms, c[m].n_terms, terms, nt) >= QUALITY_CLUSTER_JACCARD)
                into = m;
        struct quality_cluster *cl = &c[into];
        if (into == nc) {
            nc++;
            memcpy(cl->terms, terms, nt * sizeof *terms);
            cl->n_terms = nt;
        }
        cl->count += g[k].count;
        cl->by_source[0] += g[k].by_source[0];
        cl->by_source[1] += g[k].by_source[1];
        for (size_t e = 0; e < g[k].n_examples; e++)
            add_example(t, cl->examples, &cl->n_examples, g[k].examples[e]);
    }
    size_t w = 0;
    for (size_t k = 0; k < nc; k++)
        if (c[k].count >= min_count && c[k].count > 0)
            c[w++] = c[k];
    qsort(c, w, sizeof *c, cmp_cluster);
    *out = c;
    *n_out = w;
    c = NULL;
    err = T_OK;
out:
    free(g);
    free(slots);
    free(c);
    return err;
}

/* ---- the report --------------------------------------------------------------------------------------- */

/* The text redacted and cut to QUALITY_EXAMPLE_MAX_CPS code points (with "…" when cut). NULL
 * when redaction failed: then nothing is shown. */
static json_t *example_text(const char *text, size_t len)
{
    struct buf b;
    buf_init(&b, 4u << 20);
    json_t *j = NULL;
    if (redact_text(text, len, NULL, &b, NULL) == T_OK) {
        size_t cps = 0, i = 0;
        for (; i < b.len; i++)
            if (((unsigned char)b.data[i] & 0xC0) != 0x80 && ++cps > QUALITY_EXAMPLE_MAX_CPS)
                break;
        if (i < b.len) {
            b.len = i;
            if (buf_puts(&b, "\xe2\x80\xa6") == T_OK)
                j = json_stringn(b.data, b.len);
        } else {
            j = json_stringn(b.data ? b.data : "", b.len);
        }
    }
    buf_cleanup(&b);
    return j;
}

struct candidate {
    const char *kb_id;
    const struct quality_figures *f;
    double problem, reject_rate, edit_ratio;
    json_t *examples;
};

static int cmp_candidate(const void *a, const void *b)
{
    const struct candidate *x = a, *y = b;
    if (x->problem != y->problem)
        return x->problem > y->problem ? -1 : 1;
    long long ax = x->f->accepted + x->f->edited + x->f->rejected, ay = y->f->accepted + y->f->edited + y->f->rejected;
    if (ax != ay)
        return ax > ay ? -1 : 1;
    return strcmp(x->kb_id, y->kb_id);
}

struct report_ctx {
    struct candidate *cand;
    size_t ncand;
    struct quality_text *texts;
    size_t ntexts;
    struct arena arena;
};

static int report_entry(void *ud, const struct fb_entry *e)
{
    struct report_ctx *c = ud;
    int edited = strcmp(e->action, "edited") == 0, rejected = strcmp(e->action, "rejected") == 0;
    int accepted = strcmp(e->action, "accepted") == 0;
    /* examples for the rewrite candidates: what agents wrote instead, and why they said no */
    for (size_t i = 0; e->kb_id[0] && i < c->ncand; i++) {
        struct candidate *cd = &c->cand[i];
        if (strcmp(cd->kb_id, e->kb_id) != 0 || json_array_size(cd->examples) >= QUALITY_EXAMPLES)
            continue;
        if (!(edited && e->final_len) && !(rejected && (e->reason_len || e->final_len)))
            break;
        json_t *ex = json_pack("{s:s}", "action", e->action);
        if (!ex)
            return T_ERR_NOMEM;
        int bad = e->final_len && json_object_set_new(ex, "text", example_text(e->final_text, e->final_len));
        bad |= e->reason_len && json_object_set_new(ex, "reason", example_text(e->reason, e->reason_len));
        if (bad) {
            json_decref(ex);
            return T_ERR_NOMEM;
        }
        if (json_array_append_new(cd->examples, ex))
            return T_ERR_NOMEM;
        break;
    }
    /* macro material: replies agents used that came from no KB entry, and what they wrote
     * instead of a rejected suggestion */
    int macro = ((accepted || edited) && !e->kb_id[0]) || (rejected && e->final_len);
    if (macro && e->final_len && c->ntexts < QUALITY_REPORT_MAX_TEXTS) {
        char *copy = arena_strndup(&c->arena, e->final_text, e->final_len);
        char *lang = arena_strdup(&c->arena, e->lang);
        if (!copy || !lang)
            return T_ERR_NOMEM;
        c->texts[c->ntexts++] = (struct quality_text){copy, e->final_len, lang, 0};
    }
    return T_OK;
}

/* Sorted word hashes of every KB body (computed once per report, only when needed). */
struct kb_terms {
    uint64_t *v;
    size_t *off, *n;
};

static int kb_terms_build(const struct kb *kb, struct kb_terms *kt)
{
    size_t n = kb_count(kb);
    kt->v = malloc((n ? n : 1) * KB_BODY_TERMS * sizeof *kt->v);
    kt->off = malloc((n ? n : 1) * sizeof *kt->off);
    kt->n = malloc((n ? n : 1) * sizeof *kt->n);
    if (!kt->v || !kt->off || !kt->n)
        return T_ERR_NOMEM;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        const struct kb_entry *e = kb_entry_at(kb, i);
        kt->off[i] = at;
        if (sorted_terms(e->body, strlen(e->body), e->lang, kt->v + at, KB_BODY_TERMS, &kt->n[i]))
            return T_ERR_NOMEM;
        at += kt->n[i];
    }
    return T_OK;
}

/* 1 when most of the cluster's words are in one KB entry's body: it is that entry. */
static int matches_kb(const struct kb *kb, const struct kb_terms *kt, const struct quality_cluster *c)
{
    for (size_t i = 0; i < kb_count(kb); i++) {
        size_t common = common_terms(c->terms, c->n_terms, kt->v + kt->off[i], kt->n[i]);
        if (common >= KB_MATCH_MIN_COMMON && (double)common >= QUALITY_KB_MATCH_SHARE * (double)c->n_terms)
            return 1;
    }
    return 0;
}

int quality_report(struct store *s, const struct kb *kb, const struct memory *mem,
                   const struct quality_report_opts *o, int64_t now_ms, json_t **out)
{
    *out = NULL;
    struct report_ctx c = {0};
    arena_init(&c.arena);
    struct quality_table *t = quality_table_new();
    struct quality_cluster *cl = NULL;
    struct kb_terms kt = {0};
    size_t ncl = 0;
    json_t *rw = NULL, *mc = NULL, *root = NULL;
    int err = T_ERR_NOMEM;
    c.texts = malloc(QUALITY_REPORT_MAX_TEXTS * sizeof *c.texts);
    if (!t || !c.texts)
        goto out;

    /* rewrite candidates from the all-time counters */
    char key[600];
    if (quality_key(key, sizeof key, QUALITY_BY_KB) < 0) {
        err = T_ERR_INTERNAL;
        goto out;
    }
    const char *argv[2] = {"HGETALL", key};
    redisReply *r = NULL;
    err = store_command(s, &r, 2, argv, NULL);
    if (err)
        goto out;
    err = table_from_hash(t, r);
    store_reply_free(r);
    if (err)
        goto out;
    err = T_ERR_NOMEM;
    size_t nt = quality_table_count(t);
    c.cand = calloc(nt ? nt : 1, sizeof *c.cand);
    if (!c.cand)
        goto out;
    for (size_t i = 0; i < nt; i++) {
        const struct quality_figures *f = quality_table_at(t, i);
        long long actions = f->accepted + f->edited + f->rejected;
        if (actions < o->min_actions || actions == 0)
            continue;
        double rej = (double)f->rejected / (double)actions;
        double ratio = f->dist_n ? (double)f->ratio_sum / 1000.0 / (double)f->dist_n : 0;
        if (rej < QUALITY_REJECT_RATE && ratio < QUALITY_EDIT_RATIO)
            continue;
        c.cand[c.ncand++] = (struct candidate){quality_table_name(t, i), f,
                                               ((double)f->rejected + (double)f->ratio_sum / 1000.0) / (double)actions,
                                               rej, ratio, NULL};
    }
    qsort(c.cand, c.ncand, sizeof *c.cand, cmp_candidate);
    if (c.ncand > o->limit)
        c.ncand = o->limit;
    for (size_t i = 0; i < c.ncand; i++)
        if (!(c.cand[i].examples = json_array()))
            goto out;

    /* examples and macro material from the newest feedback */
    struct scan_result res;
    err = scan_feedback(s, 0, report_entry, &c, &res);
    if (err)
        goto out;
    err = T_ERR_NOMEM;
    /* imported replies that cite no KB entry (feedback replies in memory are in the stream already) */
    size_t nmem = memory_count(mem), mem_used = 0;
    int sampled = 0;
    for (size_t i = 0; i < nmem; i++) {
        const struct memory_entry *e = memory_entry_at(mem, i);
        if (strcmp(e->source, "transcript") != 0 || e->n_links)
            continue;
        if (c.ntexts == QUALITY_REPORT_MAX_TEXTS) {
            sampled = 1;
            break;
        }
        c.texts[c.ntexts++] = (struct quality_text){e->reply, strlen(e->reply), e->lang, 1};
        mem_used++;
    }
    err = quality_cluster_texts(c.texts, c.ntexts, o->min_cluster, &cl, &ncl);
    if (err)
        goto out;
    err = T_ERR_NOMEM;
    if (ncl && kb && kb_count(kb) && kb_terms_build(kb, &kt))
        goto out;

    rw = json_array();
    mc = json_array();
    root = json_object();
    if (!rw || !mc || !root)
        goto out;
    for (size_t i = 0; i < c.ncand; i++) {
        struct candidate *cd = &c.cand[i];
        json_t *item = quality_figures_json(cd->f, 1);
        json_t *why = json_array();
        if (!item || !why) {
            json_decref(item);
            json_decref(why);
            goto out;
        }
        int bad = cd->reject_rate >= QUALITY_REJECT_RATE && json_array_append_new(why, json_string("often_rejected"));
        bad |= cd->edit_ratio >= QUALITY_EDIT_RATIO && json_array_append_new(why, json_string("heavily_edited"));
        long at = kb ? kb_find_id(kb, cd->kb_id) : -1;
        bad |= json_object_set_new(item, "kb_id", json_string(cd->kb_id));
        bad |= at >= 0 && json_object_set_new(item, "title", json_string(kb_entry_at(kb, (size_t)at)->title));
        bad |= json_object_set_new(item, "in_knowledge_base", at >= 0 ? json_true() : json_false());
        bad |= json_object_set_new(item, "why", why);
        bad |= json_object_set_new(item, "examples", cd->examples);
        cd->examples = NULL;
        if (bad || json_array_append_new(rw, item)) {
            if (bad)
                json_decref(item);
            goto out;
        }
    }
    size_t shown = 0;
    for (size_t i = 0; i < ncl && shown < o->limit; i++) {
        if (kt.v && matches_kb(kb, &kt, &cl[i]))
            continue;
        json_t *ex = json_array();
        for (size_t k = 0; ex && k < cl[i].n_examples; k++) {
            /* an example that cannot be redacted (x NULL) is left out */
            json_t *x = example_text(c.texts[cl[i].examples[k]].text, c.texts[cl[i].examples[k]].len);
            if (x && json_array_append_new(ex, x)) {
                json_decref(ex);
                ex = NULL;
            }
        }
        json_t *item = json_pack("{s:I, s:I, s:I, s:o}", "count", (json_int_t)cl[i].count, "from_feedback",
                                 (json_int_t)cl[i].by_source[0], "from_transcripts", (json_int_t)cl[i].by_source[1],
                                 "examples", ex);
        if (!item || json_array_append_new(mc, item))
            goto out;
        shown++;
    }
    json_t *th = json_pack("{s:I, s:f, s:f, s:I, s:I}", "min_actions", (json_int_t)o->min_actions, "rejection_rate",
                           QUALITY_REJECT_RATE, "edit_ratio", QUALITY_EDIT_RATIO, "min_cluster",
                           (json_int_t)o->min_cluster, "limit", (json_int_t)o->limit);
    int bad = json_object_set_new(root, "generated_ms", json_integer(now_ms));
    bad |= json_object_set_new(root, "thresholds", th ? th : json_null());
    bad |= json_object_set_new(root, "rewrite_candidates", rw);
    rw = NULL;
    bad |= json_object_set_new(root, "macro_candidates", mc);
    mc = NULL;
    bad |= json_object_set_new(root, "feedback_scanned", json_integer((json_int_t)res.scanned));
    bad |= json_object_set_new(root, "scan_limit", json_integer(QUALITY_SCAN_MAX));
    bad |= json_object_set_new(root, "truncated", json_boolean(res.truncated));
    bad |= json_object_set_new(root, "memory_replies_scanned", json_integer((json_int_t)mem_used));
    bad |= json_object_set_new(root, "memory_sampled", json_boolean(sampled));
    if (bad)
        goto out;
    *out = root;
    root = NULL;
    err = T_OK;
out:
    for (size_t i = 0; c.cand && i < c.ncand; i++)
        json_decref(c.cand[i].examples);
    free(c.cand);
    free(c.texts);
    arena_cleanup(&c.arena);
    quality_table_free(t);
    free(cl);
    free(kt.v);
    free(kt.off);
    free(kt.n);
    json_decref(rw);
    json_decref(mc);
    json_decref(root);
    return err;
}
