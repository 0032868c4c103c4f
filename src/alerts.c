/* Alerts for the agent: rules from data/alert_rules.json (plus an operator's file), sentiment, history. */
#include "tandem/json_io.h"
#include "tandem/alerts.h"
#include "tandem/buf.h"
#include "tandem/embedded.h"
#include "tandem/error.h"
#include "tandem/log.h"
#include "tandem/redact.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RULES_BUILTIN_NAME "alert_rules.json"
#define RULES_ENV "TANDEM_ALERT_RULES"
/* An operator's rules file is configuration, not data: 4 MiB is far more than any sane one. */
#define RULES_FILE_MAX (4u << 20)
#define NEGATION_WINDOW_MAX 8
#define MATCHES_PER_TOKEN 16
#define DAY_MS 86400000LL
/* Bytes of context either side of a trigger phrase in an excerpt. */
#define EXCERPT_BEFORE 70
#define EXCERPT_AFTER 110

/* ---- rules ------------------------------------------------------------------------------ */

struct rule {
    char id[ALERT_RULE_ID_MAX];
    char type[ALERT_TYPE_MAX];
    enum alert_severity sev;
    char *reason;
    int negation;
    unsigned roles; /* 1 << enum msg_role */
    char **phrases;
    size_t n_phrases;
    char **exclude;
    size_t n_exclude;
    const char *source; /* file the rule came from, for errors */
};

struct alert_rules {
    struct rule *rules;
    size_t n;
    char **neg_words;
    size_t n_neg;
    unsigned neg_window;
    double frus_threshold, frus_high;
    unsigned rep_days, rep_min, rep_high;
    struct phrase_set *phrases;  /* tag: rule index */
    struct phrase_set *excludes; /* tag: rule index */
    struct phrase_set *negators; /* tag: 0 negator, 1 skipped word, 2 stop word */
    char **neg_skip, **neg_stop;
    size_t n_skip, n_stop;
    char *extra_source;          /* owned copy of the operator file's path */
};

static void strv_free(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static void rule_cleanup(struct rule *r)
{
    free(r->reason);
    strv_free(r->phrases, r->n_phrases);
    strv_free(r->exclude, r->n_exclude);
    memset(r, 0, sizeof *r);
}

void alert_rules_free(struct alert_rules *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        rule_cleanup(&r->rules[i]);
    free(r->rules);
    strv_free(r->neg_words, r->n_neg);
    strv_free(r->neg_skip, r->n_skip);
    strv_free(r->neg_stop, r->n_stop);
    phrase_set_free(r->phrases);
    phrase_set_free(r->excludes);
    phrase_set_free(r->negators);
    free(r->extra_source);
    free(r);
}

size_t alert_rules_count(const struct alert_rules *r)
{
    return r ? r->n : 0;
}

unsigned alert_rules_repeat_min(const struct alert_rules *r)
{
    return r ? r->rep_min : 2;
}

const char *alert_severity_name(enum alert_severity s)
{
    switch (s) {
    case ALERT_HIGH: return "high";
    case ALERT_MEDIUM: return "medium";
    default: return "low";
    }
}

static int valid_name(const char *s, size_t max, int allow_dash)
{
    size_t n = strlen(s);
    if (n == 0 || n >= max)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              (allow_dash && (c == '-' || c == '.'))))
            return 0;
    }
    return 1;
}

/* Copies a JSON array of non-empty strings into *out. */
static int strv_from_json(json_t *arr, char ***out, size_t *n, const char *what, const char *src,
                          const char *id, char *err, size_t errsz)
{
    if (!json_is_array(arr)) {
        snprintf(err, errsz, "%s: rule '%s': %s must be an array of strings", src, id, what);
        return T_ERR_CONFIG;
    }
    size_t cnt = json_array_size(arr);
    char **v = calloc(cnt ? cnt : 1, sizeof *v);
    if (!v)
        return T_ERR_NOMEM;
    for (size_t i = 0; i < cnt; i++) {
        json_t *s = json_array_get(arr, i);
        if (!json_is_string(s) || !json_string_length(s)) {
            snprintf(err, errsz, "%s: rule '%s': %s[%zu] must be a non-empty string", src, id,
                     what, i);
            strv_free(v, i);
            return T_ERR_CONFIG;
        }
        v[i] = strdup(json_string_value(s));
        if (!v[i]) {
            strv_free(v, i);
            return T_ERR_NOMEM;
        }
    }
    *out = v;
    *n = cnt;
    return T_OK;
}

static const char *const role_names[] = {"customer", "agent", "bot", "system", "note"};

static int parse_rule(json_t *o, struct rule *r, const char *src, int *disabled, char *err,
                      size_t errsz)
{
    memset(r, 0, sizeof *r);
    r->source = src;
    *disabled = 0;
    if (!json_is_object(o)) {
        snprintf(err, errsz, "%s: every entry of \"rules\" must be an object", src);
        return T_ERR_CONFIG;
    }
    const char *id = json_string_value(json_object_get(o, "id"));
    if (!id || !valid_name(id, ALERT_RULE_ID_MAX, 1)) {
        snprintf(err, errsz, "%s: a rule needs \"id\": 1-%d of [a-z0-9_.-]", src,
                 ALERT_RULE_ID_MAX - 1);
        return T_ERR_CONFIG;
    }
    snprintf(r->id, sizeof r->id, "%s", id);
    const char *key;
    json_t *val;
    json_object_foreach(o, key, val)
    {
        static const char *const known[] = {"id",      "type",  "severity", "reason", "phrases",
                                            "exclude", "negation", "roles", "disabled", "about"};
        int ok = 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= !strcmp(key, known[i]);
        if (!ok) {
            snprintf(err, errsz, "%s: rule '%s': unknown field \"%s\"", src, id, key);
            return T_ERR_CONFIG;
        }
    }
    json_t *dis = json_object_get(o, "disabled");
    if (dis && !json_is_boolean(dis)) {
        snprintf(err, errsz, "%s: rule '%s': \"disabled\" must be true or false", src, id);
        return T_ERR_CONFIG;
    }
    if (json_is_true(dis)) {
        *disabled = 1;
        return T_OK;
    }
    const char *type = json_string_value(json_object_get(o, "type"));
    if (!type || !valid_name(type, ALERT_TYPE_MAX, 0)) {
        snprintf(err, errsz, "%s: rule '%s': \"type\" must be snake_case, e.g. \"fraud\"", src, id);
        return T_ERR_CONFIG;
    }
    snprintf(r->type, sizeof r->type, "%s", type);
    const char *sev = json_string_value(json_object_get(o, "severity"));
    if (sev && !strcmp(sev, "low"))
        r->sev = ALERT_LOW;
    else if (sev && !strcmp(sev, "medium"))
        r->sev = ALERT_MEDIUM;
    else if (sev && !strcmp(sev, "high"))
        r->sev = ALERT_HIGH;
    else {
        snprintf(err, errsz, "%s: rule '%s': \"severity\" must be \"low\", \"medium\" or \"high\"",
                 src, id);
        return T_ERR_CONFIG;
    }
    const char *reason = json_string_value(json_object_get(o, "reason"));
    if (!reason || !*reason) {
        snprintf(err, errsz, "%s: rule '%s': \"reason\" (text shown to the agent) is required", src,
                 id);
        return T_ERR_CONFIG;
    }
    r->reason = strdup(reason);
    if (!r->reason)
        return T_ERR_NOMEM;
    int rc = strv_from_json(json_object_get(o, "phrases"), &r->phrases, &r->n_phrases, "phrases",
                            src, id, err, errsz);
    if (rc)
        return rc;
    if (!r->n_phrases) {
        snprintf(err, errsz, "%s: rule '%s': \"phrases\" is empty", src, id);
        return T_ERR_CONFIG;
    }
    json_t *ex = json_object_get(o, "exclude");
    if (ex) {
        rc = strv_from_json(ex, &r->exclude, &r->n_exclude, "exclude", src, id, err, errsz);
        if (rc)
            return rc;
    }
    json_t *neg = json_object_get(o, "negation");
    if (neg && !json_is_boolean(neg)) {
        snprintf(err, errsz, "%s: rule '%s': \"negation\" must be true or false", src, id);
        return T_ERR_CONFIG;
    }
    r->negation = neg ? json_is_true(neg) : 1;
    json_t *roles = json_object_get(o, "roles");
    if (!roles) {
        r->roles = 1u << ROLE_CUSTOMER;
    } else {
        if (!json_is_array(roles) || !json_array_size(roles)) {
            snprintf(err, errsz, "%s: rule '%s': \"roles\" must be a non-empty array", src, id);
            return T_ERR_CONFIG;
        }
        size_t i;
        json_t *v;
        json_array_foreach(roles, i, v)
        {
            const char *name = json_string_value(v);
            size_t k = 0;
            while (name && k < sizeof role_names / sizeof role_names[0] && strcmp(name, role_names[k]))
                k++;
            if (!name || k == sizeof role_names / sizeof role_names[0]) {
                snprintf(err, errsz, "%s: rule '%s': roles[%zu] must be customer, agent, bot, "
                         "system or note", src, id, i);
                return T_ERR_CONFIG;
            }
            r->roles |= 1u << context_role_from_name(name);
        }
    }
    return T_OK;
}

static int get_number(json_t *o, const char *key, double lo, double hi, double *out,
                      const char *src, const char *section, char *err, size_t errsz)
{
    json_t *v = json_object_get(o, key);
    if (!v)
        return T_OK;
    if (!json_is_number(v) || json_number_value(v) < lo || json_number_value(v) > hi) {
        snprintf(err, errsz, "%s: %s.%s must be a number in %g..%g", src, section, key, lo, hi);
        return T_ERR_CONFIG;
    }
    *out = json_number_value(v);
    return T_OK;
}

/* Merges one document into r (rules by id; negation words added; numbers overridden). */
static int merge_doc(struct alert_rules *r, const char *text, const char *src, char *err,
                     size_t errsz)
{
    json_error_t jerr;
    json_t *root;
    int perr = json_parse(text, strlen(text), JSON_REJECT_DUPLICATES, &root, &jerr);
    if (perr == T_ERR_NOMEM) {
        snprintf(err, errsz, "%s: out of memory", src);
        return perr;
    }
    if (perr) {
        snprintf(err, errsz, "%s:%d:%d: %s", src, jerr.line, jerr.column, jerr.text);
        return T_ERR_CONFIG;
    }
    int rc = T_OK;
    if (!json_is_object(root)) {
        snprintf(err, errsz, "%s: the top level must be an object", src);
        rc = T_ERR_CONFIG;
        goto out;
    }
    const char *key;
    json_t *val;
    json_object_foreach(root, key, val)
    {
        static const char *const known[] = {"about", "version", "negation", "frustration",
                                            "repeat_contact", "rules"};
        int ok = 0;
        for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
            ok |= !strcmp(key, known[i]);
        if (!ok) {
            snprintf(err, errsz, "%s: unknown field \"%s\" (known: negation, frustration, "
                     "repeat_contact, rules)", src, key);
            rc = T_ERR_CONFIG;
            goto out;
        }
    }
    json_t *neg = json_object_get(root, "negation");
    if (neg) {
        double w = r->neg_window;
        rc = get_number(neg, "window", 0, NEGATION_WINDOW_MAX, &w, src, "negation", err, errsz);
        if (rc)
            goto out;
        r->neg_window = (unsigned)w;
        static const char *const lists[] = {"words", "skip", "stop"};
        char ***dst[] = {&r->neg_words, &r->neg_skip, &r->neg_stop};
        size_t *cnt[] = {&r->n_neg, &r->n_skip, &r->n_stop};
        for (size_t li = 0; li < 3; li++) {
            json_t *words = json_object_get(neg, lists[li]);
            if (!words)
                continue;
            char **v;
            size_t n;
            char what[32];
            snprintf(what, sizeof what, "negation.%s", lists[li]);
            rc = strv_from_json(words, &v, &n, what, src, "-", err, errsz);
            if (rc)
                goto out;
            char **nv = realloc(*dst[li], (*cnt[li] + n + 1) * sizeof *nv);
            if (!nv) {
                strv_free(v, n);
                rc = T_ERR_NOMEM;
                goto out;
            }
            *dst[li] = nv;
            memcpy(nv + *cnt[li], v, n * sizeof *v);
            *cnt[li] += n;
            free(v);
        }
    }
    json_t *fr = json_object_get(root, "frustration");
    if (fr) {
        rc = get_number(fr, "threshold", -1, 1, &r->frus_threshold, src, "frustration", err, errsz);
        if (!rc)
            rc = get_number(fr, "high", -1, 1, &r->frus_high, src, "frustration", err, errsz);
        if (rc)
            goto out;
    }
    json_t *rp = json_object_get(root, "repeat_contact");
    if (rp) {
        double d = r->rep_days, mn = r->rep_min, hi = r->rep_high;
        rc = get_number(rp, "days", 1, 3650, &d, src, "repeat_contact", err, errsz);
        if (!rc)
            rc = get_number(rp, "min_contacts", 1, 1000, &mn, src, "repeat_contact", err, errsz);
        if (!rc)
            rc = get_number(rp, "high_contacts", 1, 1000, &hi, src, "repeat_contact", err, errsz);
        if (rc)
            goto out;
        r->rep_days = (unsigned)d;
        r->rep_min = (unsigned)mn;
        r->rep_high = (unsigned)hi;
    }
    json_t *rules = json_object_get(root, "rules");
    if (rules && !json_is_array(rules)) {
        snprintf(err, errsz, "%s: \"rules\" must be an array", src);
        rc = T_ERR_CONFIG;
        goto out;
    }
    size_t i;
    json_t *ro;
    json_array_foreach(rules, i, ro)
    {
        struct rule nr;
        int disabled;
        rc = parse_rule(ro, &nr, src, &disabled, err, errsz);
        if (rc) {
            rule_cleanup(&nr);
            goto out;
        }
        size_t at = 0;
        while (at < r->n && strcmp(r->rules[at].id, nr.id))
            at++;
        if (disabled) {
            if (at < r->n) {
                rule_cleanup(&r->rules[at]);
                memmove(&r->rules[at], &r->rules[at + 1], (r->n - at - 1) * sizeof *r->rules);
                r->n--;
            }
            rule_cleanup(&nr);
            continue;
        }
        if (at < r->n) {
            rule_cleanup(&r->rules[at]);
            r->rules[at] = nr;
            continue;
        }
        struct rule *nrs = realloc(r->rules, (r->n + 1) * sizeof *nrs);
        if (!nrs) {
            rule_cleanup(&nr);
            rc = T_ERR_NOMEM;
            goto out;
        }
        r->rules = nrs;
        r->rules[r->n++] = nr;
    }
out:
    json_decref(root);
    return rc;
}

static int compile_rules(struct alert_rules *r, char *err, size_t errsz)
{
    r->phrases = phrase_set_new();
    r->excludes = phrase_set_new();
    r->negators = phrase_set_new();
    if (!r->phrases || !r->excludes || !r->negators)
        return T_ERR_NOMEM;
    char perr[256];
    for (size_t i = 0; i < r->n; i++) {
        const struct rule *ru = &r->rules[i];
        for (int pass = 0; pass < 2; pass++) {
            char **v = pass ? ru->exclude : ru->phrases;
            size_t n = pass ? ru->n_exclude : ru->n_phrases;
            for (size_t k = 0; k < n; k++) {
                int rc = phrase_set_add(pass ? r->excludes : r->phrases, v[k], (int)i, perr,
                                        sizeof perr);
                if (rc == T_ERR_NOMEM)
                    return rc;
                if (rc) {
                    snprintf(err, errsz, "%s: rule '%s': %s \"%s\": %s", ru->source, ru->id,
                             pass ? "exclude" : "phrase", v[k], perr);
                    return T_ERR_CONFIG;
                }
            }
        }
    }
    for (int li = 0; li < 3; li++) {
        char **v = li == 0 ? r->neg_words : li == 1 ? r->neg_skip : r->neg_stop;
        size_t n = li == 0 ? r->n_neg : li == 1 ? r->n_skip : r->n_stop;
        for (size_t k = 0; k < n; k++) {
            int rc = phrase_set_add(r->negators, v[k], li, perr, sizeof perr);
            if (rc == T_ERR_NOMEM)
                return rc;
            if (rc || strchr(v[k], ' ')) {
                snprintf(err, errsz, "negation word \"%s\": %s", v[k],
                         rc ? perr : "must be one word");
                return T_ERR_CONFIG;
            }
        }
    }
    if (r->frus_high > r->frus_threshold) {
        snprintf(err, errsz, "frustration.high (%g) must not be above frustration.threshold (%g)",
                 r->frus_high, r->frus_threshold);
        return T_ERR_CONFIG;
    }
    int rc = phrase_set_finish(r->phrases);
    if (!rc)
        rc = phrase_set_finish(r->excludes);
    if (!rc)
        rc = phrase_set_finish(r->negators);
    return rc;
}

static int load_docs(const char *builtin, const char *extra, const char *extra_name,
                     struct alert_rules **out, char *err, size_t errsz)
{
    *out = NULL;
    struct alert_rules *r = calloc(1, sizeof *r);
    if (!r)
        return T_ERR_NOMEM;
    /* defaults for documents that leave the numbers out */
    r->neg_window = 3;
    r->frus_threshold = -0.45;
    r->frus_high = -0.7;
    r->rep_days = 30;
    r->rep_min = 2;
    r->rep_high = 3;
    int rc = merge_doc(r, builtin, RULES_BUILTIN_NAME " (built-in)", err, errsz);
    if (!rc && extra) {
        r->extra_source = strdup(extra_name);
        rc = r->extra_source ? merge_doc(r, extra, r->extra_source, err, errsz) : T_ERR_NOMEM;
    }
    if (!rc)
        rc = compile_rules(r, err, errsz);
    if (rc) {
        alert_rules_free(r);
        return rc;
    }
    *out = r;
    return T_OK;
}

int alert_rules_load_json(const char *builtin, const char *extra, struct alert_rules **out,
                          char *err, size_t errsz)
{
    return load_docs(builtin, extra, "(extra rules)", out, err, errsz);
}

int alert_rules_load(const char *extra_path, struct alert_rules **out, char *err, size_t errsz)
{
    *out = NULL;
    const struct embedded_file *f = embedded_find(RULES_BUILTIN_NAME);
    if (!f) {
        snprintf(err, errsz, "built-in %s is missing from the binary", RULES_BUILTIN_NAME);
        return T_ERR_INTERNAL;
    }
    if (!extra_path || !*extra_path)
        return load_docs((const char *)f->data, NULL, NULL, out, err, errsz);
    FILE *fp = fopen(extra_path, "rb");
    if (!fp) {
        snprintf(err, errsz, "%s=%s: cannot open: %s", RULES_ENV, extra_path, strerror(errno));
        return T_ERR_IO;
    }
    struct buf b;
    buf_init(&b, RULES_FILE_MAX);
    char chunk[8192];
    size_t n;
    int rc = T_OK;
    while (!rc && (n = fread(chunk, 1, sizeof chunk, fp)) > 0)
        rc = buf_append(&b, chunk, n);
    if (!rc && ferror(fp)) {
        snprintf(err, errsz, "%s=%s: read error", RULES_ENV, extra_path);
        rc = T_ERR_IO;
    } else if (rc == T_ERR_TOO_LARGE) {
        snprintf(err, errsz, "%s=%s: larger than %u bytes", RULES_ENV, extra_path, RULES_FILE_MAX);
        rc = T_ERR_CONFIG;
    }
    fclose(fp);
    if (!rc && b.len != strlen(b.data ? b.data : "")) {
        snprintf(err, errsz, "%s=%s: contains a NUL byte", RULES_ENV, extra_path);
        rc = T_ERR_CONFIG;
    }
    if (!rc)
        rc = load_docs((const char *)f->data, b.data ? b.data : "", extra_path, out, err, errsz);
    buf_cleanup(&b);
    return rc;
}

static struct alert_rules *global_rules;
static int global_state; /* 0 not loaded, 1 loaded, -1 failed */
static pthread_mutex_t global_lock = PTHREAD_MUTEX_INITIALIZER;

int alert_rules_global_init(const char *path, char *err, size_t errsz)
{
    if (!path)
        path = getenv(RULES_ENV);
    struct alert_rules *r;
    int rc = alert_rules_load(path, &r, err, errsz);
    pthread_mutex_lock(&global_lock);
    if (!rc) {
        alert_rules_free(global_rules);
        global_rules = r;
        global_state = 1;
    } else if (!global_state) {
        global_state = -1;
    }
    pthread_mutex_unlock(&global_lock);
    return rc;
}

const struct alert_rules *alert_rules_global(void)
{
    pthread_mutex_lock(&global_lock);
    int state = global_state;
    pthread_mutex_unlock(&global_lock);
    if (state == 0) {
        char err[512];
        int rc = alert_rules_global_init(NULL, err, sizeof err);
        if (rc)
            log_error("alert_rules_failed", "error=%s detail=\"%s\"", tandem_err_code(rc), err);
    }
    pthread_mutex_lock(&global_lock);
    const struct alert_rules *r = global_rules;
    pthread_mutex_unlock(&global_lock);
    return r;
}

/* ---- analysis --------------------------------------------------------------------------- */

void alert_input_cleanup(struct alert_input *in)
{
    if (in->msgs)
        for (size_t i = 0; i < in->n; i++) {
            free(in->msgs[i].red);
            phrase_text_cleanup(&in->msgs[i].tok);
        }
    free(in->msgs);
    free(in->cust);
    free(in->cust_sent);
    redact_map_free(in->map);
    memset(in, 0, sizeof *in);
}

int alert_input_init(struct alert_input *in, const struct context *ctx,
                     const struct sentiment_lexicon *lx)
{
    memset(in, 0, sizeof *in);
    in->ctx = ctx;
    if (!lx)
        lx = sentiment_lexicon_default();
    size_t n = ctx->n_messages;
    in->msgs = calloc(n ? n : 1, sizeof *in->msgs);
    in->cust = calloc(n ? n : 1, sizeof *in->cust);
    in->cust_sent = calloc(n ? n : 1, sizeof *in->cust_sent);
    in->map = redact_map_new();
    if (!in->msgs || !in->cust || !in->cust_sent || !in->map)
        return T_ERR_NOMEM;
    struct buf b;
    buf_init(&b, 0);
    int rc = T_OK;
    for (size_t i = 0; i < n && !rc; i++) {
        struct alert_msg *am = &in->msgs[i];
        const struct ctx_message *m = &ctx->messages[i];
        am->m = m;
        in->n = i + 1;
        const char *text = m->text ? m->text : "";
        buf_reset(&b);
        rc = redact_text(text, strlen(text), in->map, &b, NULL);
        if (rc)
            break;
        am->red_len = b.len;
        am->red = malloc(b.len + 1);
        if (!am->red) {
            rc = T_ERR_NOMEM;
            break;
        }
        memcpy(am->red, b.data ? b.data : "", b.len);
        am->red[b.len] = '\0';
        rc = phrase_text_init(&am->tok, am->red, am->red_len);
        if (rc)
            break;
        if (m->role == ROLE_CUSTOMER) {
            sentiment_score_tokens(lx, &am->tok, &am->sent);
            in->cust[in->n_cust] = i;
            in->cust_sent[in->n_cust] = am->sent;
            in->n_cust++;
        }
    }
    buf_cleanup(&b);
    if (rc)
        return rc;
    sentiment_aggregate(in->cust_sent, in->n_cust, &in->mood);
    return T_OK;
}

size_t alert_count_contacts(const struct context *ctx, int64_t now_ms, unsigned days)
{
    int64_t since = now_ms - (int64_t)days * DAY_MS;
    size_t count = 0;
    for (size_t i = 0; i < ctx->n_history; i++) {
        const struct ctx_history *h = &ctx->history[i];
        if (h->ts_ms < since || h->ts_ms > now_ms)
            continue;
        if (h->conv_id && *h->conv_id) {
            if (!strcmp(h->conv_id, ctx->conv_id))
                continue; /* the conversation we are in is not an earlier contact */
            int seen = 0;
            for (size_t k = 0; k < i && !seen; k++) {
                const struct ctx_history *o = &ctx->history[k];
                seen = o->ts_ms >= since && o->ts_ms <= now_ms && o->conv_id &&
                       !strcmp(o->conv_id, h->conv_id);
            }
            if (seen)
                continue;
        }
        count++;
    }
    return count;
}

/* ---- evaluation ------------------------------------------------------------------------- */

/* A snippet of text[0..len) around [a, b): cut at spaces, ellipses where cut, newlines as
 * spaces. text is already redacted, so cutting cannot expose part of a masked value. */
static char *excerpt(const char *text, size_t len, size_t a, size_t b)
{
    if (b > len)
        b = len;
    if (a > b)
        a = b;
    size_t s = a > EXCERPT_BEFORE ? a - EXCERPT_BEFORE : 0;
    size_t e = len - b > EXCERPT_AFTER ? b + EXCERPT_AFTER : len;
    if (s > 0) {
        size_t k = s;
        while (k < a && text[k] != ' ' && text[k] != '\n')
            k++;
        s = k < a ? k + 1 : s;
    }
    if (e < len) {
        size_t k = e;
        while (k > b && text[k] != ' ' && text[k] != '\n')
            k--;
        e = k > b ? k : e;
    }
    /* never start or end inside a UTF-8 sequence */
    while (s < a && ((unsigned char)text[s] & 0xC0) == 0x80)
        s++;
    while (e < len && e > b && ((unsigned char)text[e] & 0xC0) == 0x80)
        e--;
    size_t n = e - s;
    char *out = malloc(n + 8);
    if (!out)
        return NULL;
    size_t w = 0;
    if (s > 0) {
        memcpy(out, "\xE2\x80\xA6", 3);
        w = 3;
    }
    for (size_t i = s; i < e; i++) {
        char c = text[i];
        out[w++] = (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
    }
    if (e < len) {
        memcpy(out + w, "\xE2\x80\xA6", 3);
        w += 3;
    }
    out[w] = '\0';
    return out;
}

/* The newest earlier contact as "summary (outcome)", redacted with the conversation's map. */
static char *history_excerpt(const struct alert_input *in)
{
    const struct context *c = in->ctx;
    const struct ctx_history *h = NULL;
    for (size_t i = 0; c && i < c->n_history && !h; i++)
        if (!c->history[i].conv_id || strcmp(c->history[i].conv_id, c->conv_id))
            h = &c->history[i];
    struct buf raw, red;
    buf_init(&raw, 0);
    buf_init(&red, 0);
    char *out = NULL;
    int rc = T_OK;
    if (h && h->summary && *h->summary)
        rc = buf_puts(&raw, h->summary);
    if (!rc && h && h->outcome && *h->outcome)
        rc = buf_printf(&raw, raw.len ? " (%s)" : "%s", h->outcome);
    if (!rc)
        rc = redact_text(raw.data ? raw.data : "", raw.len, in->map, &red, NULL);
    if (!rc)
        out = excerpt(red.data ? red.data : "", red.len, 0, 0);
    buf_cleanup(&raw);
    buf_cleanup(&red);
    return out;
}

struct best {
    const char *type;
    size_t order;     /* first rule index of the type: the output order among equal severity */
    enum alert_severity sev;
    const char *rule; /* rule id */
    const char *reason_static;
    char *reason;     /* owned when formatted */
    size_t msg;       /* message index, or SIZE_MAX */
    size_t a, b;      /* byte range of the trigger */
    int set;
};

static struct best *slot_for(struct best *slots, size_t *n, const char *type, size_t order)
{
    for (size_t i = 0; i < *n; i++)
        if (!strcmp(slots[i].type, type))
            return &slots[i];
    struct best *s = &slots[(*n)++];
    memset(s, 0, sizeof *s);
    s->type = type;
    s->order = order;
    s->msg = SIZE_MAX;
    return s;
}

/* A negator within neg_window words before token j, in the same clause. Skip words ("want",
 * "to") do not count towards the window; stop words ("but") end the search like a comma. */
static int negated_before(const struct alert_rules *r, const struct phrase_text *t, size_t j)
{
    unsigned counted = 0;
    for (size_t k = j; k-- > 0 && counted < r->neg_window;) {
        if (t->tok[k + 1].flags & PHRASE_TOK_CLAUSE)
            return 0;
        struct phrase_match m[3];
        size_t n = phrase_set_match_at(r->negators, t, k, m, 3);
        int tag = -1;
        for (size_t x = 0; x < n && x < 3; x++)
            if (m[x].n == 1 && (tag < 0 || m[x].tag < tag))
                tag = m[x].tag;
        if (tag == 0)
            return 1;
        if (tag == 2)
            return 0;
        if (tag != 1)
            counted++;
    }
    return 0;
}

static int best_cmp(const void *x, const void *y)
{
    const struct best *a = x, *b = y;
    if (a->sev != b->sev)
        return a->sev > b->sev ? -1 : 1;
    return a->order < b->order ? -1 : (a->order > b->order);
}

int alerts_evaluate(const struct alert_rules *rules, const struct alert_input *in, int64_t now_ms,
                    struct alert_list *out)
{
    memset(out, 0, sizeof *out);
    if (!rules)
        return T_OK;
    /* at most one slot per rule plus the two computed ones */
    struct best *slots = calloc(rules->n + 2, sizeof *slots);
    unsigned char *excluded = calloc(rules->n ? rules->n : 1, 1);
    int rc = T_OK;
    if (!slots || !excluded) {
        rc = T_ERR_NOMEM;
        goto out;
    }
    size_t ns = 0;
    unsigned all_roles = 0;
    for (size_t i = 0; i < rules->n; i++)
        all_roles |= rules->rules[i].roles;
    for (size_t mi = 0; mi < in->n; mi++) {
        const struct alert_msg *am = &in->msgs[mi];
        if (!(all_roles & (1u << am->m->role)) || !am->tok.n)
            continue;
        const struct phrase_text *t = &am->tok;
        memset(excluded, 0, rules->n);
        struct phrase_match ms[MATCHES_PER_TOKEN];
        for (size_t j = 0; j < t->n; j++) {
            size_t k = phrase_set_match_at(rules->excludes, t, j, ms, MATCHES_PER_TOKEN);
            for (size_t x = 0; x < k && x < MATCHES_PER_TOKEN; x++)
                excluded[ms[x].tag] = 1;
        }
        for (size_t j = 0; j < t->n; j++) {
            size_t k = phrase_set_match_at(rules->phrases, t, j, ms, MATCHES_PER_TOKEN);
            int neg_known = 0, neg = 0;
            for (size_t x = 0; x < k && x < MATCHES_PER_TOKEN; x++) {
                size_t ri = (size_t)ms[x].tag;
                const struct rule *ru = &rules->rules[ri];
                if (excluded[ri] || !(ru->roles & (1u << am->m->role)))
                    continue;
                if (ru->negation) {
                    if (!neg_known) {
                        neg = negated_before(rules, t, j);
                        neg_known = 1;
                    }
                    if (neg)
                        continue;
                }
                size_t first = 0;
                while (strcmp(rules->rules[first].type, ru->type))
                    first++;
                struct best *s = slot_for(slots, &ns, ru->type, first);
                /* more severe wins; among equals the newest message (what matters now) */
                if (s->set && (s->sev > ru->sev || (s->sev == ru->sev && s->msg == mi)))
                    continue;
                s->set = 1;
                s->sev = ru->sev;
                s->rule = ru->id;
                s->reason_static = ru->reason;
                s->msg = mi;
                s->a = t->tok[j].off;
                s->b = t->tok[j + ms[x].n - 1].end;
            }
        }
    }
    /* frustration from the mood of the last customer messages, or a very angry latest one
     * (an hour of calm does not cancel "this is ridiculous, I am furious" now) */
    double newest = in->n_cust ? in->cust_sent[in->n_cust - 1].score : 0;
    if (in->n_cust && (in->mood.score <= rules->frus_threshold || newest <= rules->frus_high)) {
        enum alert_severity sev = in->mood.score <= rules->frus_high ? ALERT_HIGH : ALERT_MEDIUM;
        int by_newest = in->mood.score > rules->frus_threshold;
        size_t first = 0;
        while (first < rules->n && strcmp(rules->rules[first].type, "frustration"))
            first++;
        struct best *s = slot_for(slots, &ns, "frustration", first);
        if (!s->set || s->sev < sev) {
            size_t mi = by_newest ? in->cust[in->n_cust - 1] : in->cust[in->mood.worst];
            char buf[200];
            if (by_newest)
                snprintf(buf, sizeof buf, "The customer's latest message is very negative (score "
                         "%.2f; last %zu messages %.2f, %s)", newest, in->mood.n, in->mood.score,
                         in->mood.trend);
            else
                snprintf(buf, sizeof buf, "Customer sentiment is negative over the last %zu "
                         "customer message%s (score %.2f, %s)", in->mood.n,
                         in->mood.n == 1 ? "" : "s", in->mood.score, in->mood.trend);
            free(s->reason);
            s->reason = strdup(buf);
            if (!s->reason) {
                rc = T_ERR_NOMEM;
                goto out;
            }
            s->set = 1;
            s->sev = sev;
            s->rule = "sentiment";
            s->msg = mi;
            s->a = 0;
            s->b = 0;
        }
    }
    /* repeat contact from the history stream */
    if (in->ctx) {
        size_t contacts = alert_count_contacts(in->ctx, now_ms, rules->rep_days);
        if (contacts >= rules->rep_min) {
            enum alert_severity sev = contacts >= rules->rep_high ? ALERT_HIGH : ALERT_MEDIUM;
            size_t first = 0;
            while (first < rules->n && strcmp(rules->rules[first].type, "repeat_contact"))
                first++;
            struct best *s = slot_for(slots, &ns, "repeat_contact", first);
            if (!s->set || s->sev < sev) {
                char buf[200];
                snprintf(buf, sizeof buf, "%zu earlier contacts in the last %u days", contacts,
                         rules->rep_days);
                free(s->reason);
                s->reason = strdup(buf);
                if (!s->reason) {
                    rc = T_ERR_NOMEM;
                    goto out;
                }
                s->set = 1;
                s->sev = sev;
                s->rule = "history";
                s->msg = SIZE_MAX;
            }
        }
    }
    qsort(slots, ns, sizeof *slots, best_cmp);
    out->items = calloc(ns ? ns : 1, sizeof *out->items);
    if (!out->items) {
        rc = T_ERR_NOMEM;
        goto out;
    }
    for (size_t i = 0; i < ns; i++) {
        const struct best *s = &slots[i];
        if (!s->set)
            continue;
        struct alert *al = &out->items[out->n];
        snprintf(al->type, sizeof al->type, "%s", s->type);
        snprintf(al->rule, sizeof al->rule, "%s", s->rule);
        al->severity = s->sev;
        al->reason = strdup(s->reason ? s->reason : s->reason_static);
        if (s->msg != SIZE_MAX) {
            const struct alert_msg *am = &in->msgs[s->msg];
            snprintf(al->message_id, sizeof al->message_id, "%s", am->m->id);
            al->excerpt = excerpt(am->red, am->red_len, s->a, s->b);
        } else {
            al->excerpt = history_excerpt(in);
        }
        out->n++;
        if (!al->reason || !al->excerpt) {
            rc = T_ERR_NOMEM;
            goto out;
        }
    }
out:
    if (slots)
        for (size_t i = 0; i < rules->n + 2; i++)
            free(slots[i].reason);
    free(slots);
    free(excluded);
    if (rc)
        alert_list_cleanup(out);
    return rc;
}

void alert_list_cleanup(struct alert_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        free(l->items[i].reason);
        free(l->items[i].excerpt);
    }
    free(l->items);
    memset(l, 0, sizeof *l);
}

json_t *alert_list_to_json(const struct alert_list *l)
{
    json_t *arr = json_array();
    if (!arr)
        return NULL;
    for (size_t i = 0; i < l->n; i++) {
        const struct alert *a = &l->items[i];
        json_t *o = json_object();
        if (!o || json_array_append_new(arr, o) ||
            json_object_set_new(o, "type", json_string(a->type)) ||
            json_object_set_new(o, "severity", json_string(alert_severity_name(a->severity))) ||
            json_object_set_new(o, "reason", json_string(a->reason)) ||
            json_object_set_new(o, "message_id",
                                a->message_id[0] ? json_string(a->message_id) : json_null()) ||
            json_object_set_new(o, "excerpt", json_string(a->excerpt ? a->excerpt : "")) ||
            json_object_set_new(o, "rule", json_string(a->rule))) {
            json_decref(arr);
            return NULL;
        }
    }
    return arr;
}
