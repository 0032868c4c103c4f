/* Feedback records: validation, code-point edit distance, the idempotent atomic write, and the rejection table. */
#include "tandem/clock.h"
#include "tandem/feedback.h"

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tandem/error.h"
#include "tandem/log.h"
#include "tandem/quality.h"
#include "tandem/redact.h"
#include "tandem/store.h"
#include "tandem/text.h"

/* Redaction output bound: placeholders can be longer than what they replace ("a@b.co" ->
 * "[EMAIL_1]"), and a default final text is the suggestion's, which the engine caps at 1 MiB. */
#define REDACTED_MAX_BYTES (4u << 20)
/* Rejections read per XRANGE while syncing. */
#define REJECT_FETCH_BATCH 1000

/* ---- validation -------------------------------------------------------------------------------- */

static const char *const action_names[] = {"accepted", "edited", "rejected"};

const char *feedback_action_name(enum feedback_action a)
{
    return (unsigned)a < 3 ? action_names[a] : "unknown";
}

static int is_hex_lower(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

int feedback_valid_sid(const char *s)
{
    if (!s || strncmp(s, "sg_", 3) != 0)
        return 0;
    for (size_t i = 3; i < 19; i++)
        if (!is_hex_lower(s[i]))
            return 0;
    return s[19] == '\0';
}

int feedback_valid_id(const char *s)
{
    size_t n = 0;
    if (!s)
        return 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                 c == ':' || c == '-';
        if (!ok || n >= FEEDBACK_MAX_ID_LEN)
            return 0;
    }
    return n > 0;
}

/* One code point from s[*i..len): its value, or 0x110000 + the byte for an invalid byte (so two
 * different invalid bytes stay different and never equal a real character). */
static uint32_t utf8_next(const unsigned char *s, size_t len, size_t *i)
{
    unsigned char c = s[*i];
    if (c < 0x80) {
        (*i)++;
        return c;
    }
    size_t n;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 1, cp = c & 0x1Fu, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 2, cp = c & 0x0Fu, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 3, cp = c & 0x07u, min = 0x10000;
    } else {
        goto bad;
    }
    if (*i + n >= len)
        goto bad; /* truncated */
    for (size_t k = 1; k <= n; k++) {
        unsigned char b = s[*i + k];
        if ((b & 0xC0) != 0x80)
            goto bad;
        cp = (cp << 6) | (b & 0x3Fu);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        goto bad;
    *i += n + 1;
    return cp;
bad:
    (*i)++;
    return 0x110000u + c;
}

int feedback_utf8_valid(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len)
        if (utf8_next((const unsigned char *)s, len, &i) >= 0x110000u)
            return 0;
    return 1;
}

static int blank(const char *s)
{
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
            return 0;
    return 1;
}

/* A string field: NULL with *present 0 when absent or null; else checks type, NUL bytes,
 * length and UTF-8. Returns NULL with msg set when invalid (*present then 1). */
static const char *string_field(const json_t *body, const char *name, size_t max, size_t *len, int *present,
                                char *msg, size_t msgsz)
{
    json_t *v = json_object_get(body, name);
    *present = 0;
    *len = 0;
    if (!v || json_is_null(v))
        return NULL;
    *present = 1;
    const char *s = json_string_value(v);
    if (!s) {
        snprintf(msg, msgsz, "'%s' must be a string", name);
        return NULL;
    }
    size_t n = json_string_length(v);
    if (strlen(s) != n) {
        snprintf(msg, msgsz, "'%s' must not contain NUL characters", name);
        return NULL;
    }
    if (n > max) {
        snprintf(msg, msgsz, "'%s' is too long: at most %zu bytes of UTF-8", name, max);
        return NULL;
    }
    if (!feedback_utf8_valid(s, n)) {
        snprintf(msg, msgsz, "'%s' is not valid UTF-8", name);
        return NULL;
    }
    *len = n;
    return s;
}

/* An integer field; 1 when present and valid, 0 when absent, -1 when invalid (msg set). */
static int int_field(const json_t *body, const char *name, int64_t lo, int64_t hi, int64_t *out, const char *what,
                     char *msg, size_t msgsz)
{
    json_t *v = json_object_get(body, name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(msg, msgsz, "'%s' must be %s", name, what);
        return -1;
    }
    *out = (int64_t)json_integer_value(v);
    return 1;
}

static const char *const known_fields[] = {"action", "final_text", "agent_id", "feedback_id", "reason",
                                           "conversation_id", "shown_at_ms", "time_to_action_ms", NULL};

int feedback_parse(const struct json_t *body, int64_t now_ms, struct feedback_input *out, char *msg, size_t msgsz)
{
    memset(out, 0, sizeof *out);
    out->shown_at_ms = -1;
    out->time_to_action_ms = -1;
    msg[0] = '\0';
    if (!json_is_object(body)) {
        snprintf(msg, msgsz, "the body must be a JSON object");
        return T_ERR_BAD_JSON;
    }
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)body, key, val)
    {
        size_t i = 0;
        while (known_fields[i] && strcmp(known_fields[i], key) != 0)
            i++;
        if (!known_fields[i]) {
            snprintf(msg, msgsz,
                     "unknown field '%.64s'; the fields are action, final_text, agent_id, feedback_id, reason, "
                     "conversation_id, shown_at_ms and time_to_action_ms",
                     key);
            return T_ERR_BAD_JSON;
        }
    }
    json_t *a = json_object_get(body, "action");
    const char *as = json_string_value(a);
    size_t ai = 0;
    while (as && ai < 3 && strcmp(as, action_names[ai]) != 0)
        ai++;
    if (!as || ai == 3) {
        snprintf(msg, msgsz, "'action' is required: \"accepted\", \"edited\" or \"rejected\"");
        return T_ERR_BAD_JSON;
    }
    out->action = (enum feedback_action)ai;

    size_t len;
    int present;
    out->final_text = string_field(body, "final_text", FEEDBACK_MAX_TEXT_BYTES, &len, &present, msg, msgsz);
    if (present && !out->final_text)
        return T_ERR_BAD_JSON;
    if (out->final_text && blank(out->final_text)) {
        snprintf(msg, msgsz, "'final_text' must not be empty; leave it out to mean the suggestion as shown");
        return T_ERR_BAD_JSON;
    }
    out->final_len = len;
    if (out->action == FEEDBACK_EDITED && !out->final_text) {
        snprintf(msg, msgsz, "'final_text' is required for \"edited\": the reply as the agent sent it");
        return T_ERR_BAD_JSON;
    }

    out->agent_id = string_field(body, "agent_id", FEEDBACK_MAX_AGENT_ID_BYTES, &len, &present, msg, msgsz);
    if (present && !out->agent_id)
        return T_ERR_BAD_JSON;
    if (out->agent_id) {
        int bad = len == 0;
        for (const unsigned char *p = (const unsigned char *)out->agent_id; *p && !bad; p++)
            bad = *p < 0x20 || *p == 0x7f;
        if (bad) {
            snprintf(msg, msgsz, "'agent_id' must be 1-%d bytes without control characters",
                     FEEDBACK_MAX_AGENT_ID_BYTES);
            return T_ERR_BAD_JSON;
        }
    }

    json_t *fid = json_object_get(body, "feedback_id");
    if (fid && !json_is_null(fid)) {
        out->feedback_id = json_string_value(fid);
        if (!out->feedback_id || json_string_length(fid) != strlen(out->feedback_id) ||
            !feedback_valid_id(out->feedback_id)) {
            snprintf(msg, msgsz, "'feedback_id' must be 1-%d characters of [A-Za-z0-9._:-] (a UUID fits)",
                     FEEDBACK_MAX_ID_LEN);
            return T_ERR_BAD_JSON;
        }
    }

    out->reason = string_field(body, "reason", FEEDBACK_MAX_REASON_BYTES, &len, &present, msg, msgsz);
    if (present && !out->reason)
        return T_ERR_BAD_JSON;

    json_t *cid = json_object_get(body, "conversation_id");
    if (cid && !json_is_null(cid)) {
        out->conversation_id = json_string_value(cid);
        if (!out->conversation_id || json_string_length(cid) != strlen(out->conversation_id) ||
            !context_valid_id(out->conversation_id)) {
            snprintf(msg, msgsz, "'conversation_id' must be 1-128 characters of [A-Za-z0-9._-]");
            return T_ERR_BAD_JSON;
        }
    }

    if (int_field(body, "shown_at_ms", 1, now_ms + FEEDBACK_CLOCK_SKEW_MS, &out->shown_at_ms,
                  "unix time in milliseconds, not in the future", msg, msgsz) < 0)
        return T_ERR_BAD_JSON;
    if (int_field(body, "time_to_action_ms", 0, FEEDBACK_MAX_TTA_MS, &out->time_to_action_ms,
                  "an integer from 0 to 86400000 (milliseconds)", msg, msgsz) < 0)
        return T_ERR_BAD_JSON;
    return T_OK;
}

/* ---- edit distance ----------------------------------------------------------------------------- */

size_t feedback_codepoints(const char *s, size_t len)
{
    size_t i = 0, n = 0;
    while (i < len) {
        utf8_next((const unsigned char *)s, len, &i);
        n++;
    }
    return n;
}

/* Decodes s into a new array of code points (*n of them). NULL on OOM. */
static uint32_t *decode(const char *s, size_t len, size_t *n)
{
    uint32_t *v = malloc((len ? len : 1) * sizeof *v);
    *n = 0;
    if (!v)
        return NULL;
    size_t i = 0;
    while (i < len)
        v[(*n)++] = utf8_next((const unsigned char *)s, len, &i);
    return v;
}

int feedback_edit_distance(const char *a, size_t alen, const char *b, size_t blen, size_t *dist, int *capped)
{
    *dist = 0;
    *capped = 0;
    size_t na, nb;
    uint32_t *va = decode(a, alen, &na), *vb = decode(b, blen, &nb);
    uint32_t *row = NULL;
    int err = T_ERR_NOMEM;
    if (!va || !vb)
        goto out;
    /* the common prefix and suffix cost nothing: a small edit of a long text stays exact */
    size_t pre = 0;
    while (pre < na && pre < nb && va[pre] == vb[pre])
        pre++;
    size_t suf = 0;
    while (suf < na - pre && suf < nb - pre && va[na - 1 - suf] == vb[nb - 1 - suf])
        suf++;
    const uint32_t *x = va + pre, *y = vb + pre;
    size_t mx = na - pre - suf, my = nb - pre - suf;
    size_t cx = mx < FEEDBACK_DISTANCE_MAX_CPS ? mx : FEEDBACK_DISTANCE_MAX_CPS;
    size_t cy = my < FEEDBACK_DISTANCE_MAX_CPS ? my : FEEDBACK_DISTANCE_MAX_CPS;
    /* beyond the cap: turning the rest of one into the rest of the other costs at most the
     * longer rest (substitutions plus insertions or deletions) */
    size_t rest = (mx - cx) > (my - cy) ? (mx - cx) : (my - cy);
    *capped = rest > 0;
    row = malloc((cy + 1) * sizeof *row);
    if (!row)
        goto out;
    for (size_t j = 0; j <= cy; j++)
        row[j] = (uint32_t)j;
    for (size_t i = 1; i <= cx; i++) {
        uint32_t diag = row[0];
        row[0] = (uint32_t)i;
        for (size_t j = 1; j <= cy; j++) {
            uint32_t up = row[j];
            uint32_t best = diag + (x[i - 1] != y[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    *dist = row[cy] + rest;
    err = T_OK;
out:
    free(va);
    free(vb);
    free(row);
    return err;
}

/* ---- entries ------------------------------------------------------------------------------------- */

int feedback_context_terms(const char *text, const char *lang, uint64_t *out, size_t max, size_t *n)
{
    *n = 0;
    if (!text)
        return T_OK;
    return text_word_hashes(text, strlen(text), lang, out, max, n) < 0 ? T_ERR_NOMEM : T_OK;
}

static int64_t clamp_tta(int64_t v)
{
    if (v < 0)
        return 0;
    return v > FEEDBACK_MAX_TTA_MS ? FEEDBACK_MAX_TTA_MS : v;
}

int feedback_entry_build(const struct feedback_input *in, const struct feedback_suggestion *sg, int64_t now_ms,
                         struct feedback_entry *e)
{
    memset(e, 0, sizeof *e);
    e->in = in;
    e->sg = sg;
    e->ts_ms = now_ms;
    e->edit_distance = -1;
    buf_init(&e->final_redacted, REDACTED_MAX_BYTES);
    buf_init(&e->reason_redacted, REDACTED_MAX_BYTES);
    buf_init(&e->terms, 0);
    const char *stext = sg->text ? sg->text : "";
    size_t slen = strlen(stext);
    e->suggestion_chars = feedback_codepoints(stext, slen);

    const char *final = in->final_text;
    size_t flen = in->final_len;
    if (!final && in->action == FEEDBACK_ACCEPTED) {
        final = stext; /* accepted as shown */
        flen = slen;
    }
    int err = T_OK;
    if (final) {
        e->has_final = 1;
        size_t d;
        err = feedback_edit_distance(stext, slen, final, flen, &d, &e->distance_capped);
        if (err)
            return err;
        e->edit_distance = (long)d;
        size_t longest = feedback_codepoints(final, flen);
        if (e->suggestion_chars > longest)
            longest = e->suggestion_chars;
        e->edit_ratio_permille = longest ? (unsigned)((d > longest ? longest : d) * 1000 / longest) : 0;
        err = redact_text(final, flen, NULL, &e->final_redacted, NULL);
        if (err)
            return err;
    }
    if (in->reason) {
        err = redact_text(in->reason, strlen(in->reason), NULL, &e->reason_redacted, NULL);
        if (err)
            return err;
    }
    /* the client's measure when it sent one; else from when it was shown; else from when the
     * suggestion was computed (an upper bound: it may have waited before the agent looked) */
    if (in->time_to_action_ms >= 0)
        e->time_to_action_ms = in->time_to_action_ms;
    else if (in->shown_at_ms >= 0)
        e->time_to_action_ms = clamp_tta(now_ms - in->shown_at_ms);
    else if (sg->created_ms >= 0)
        e->time_to_action_ms = clamp_tta(now_ms - sg->created_ms);
    else
        e->time_to_action_ms = -1;

    if (in->action == FEEDBACK_REJECTED) {
        uint64_t t[FEEDBACK_REJECT_MAX_TERMS];
        size_t n = 0;
        err = feedback_context_terms(sg->context, sg->lang, t, FEEDBACK_REJECT_MAX_TERMS, &n);
        for (size_t i = 0; i < n && !err; i++)
            err = buf_printf(&e->terms, "%s%016llx", i ? " " : "", (unsigned long long)t[i]);
    }
    return err;
}

void feedback_entry_cleanup(struct feedback_entry *e)
{
    buf_cleanup(&e->final_redacted);
    buf_cleanup(&e->reason_redacted);
    buf_cleanup(&e->terms);
}

/* A letter or digit for word boundaries: ASCII alnum or any byte of a multi-byte character. */
static int word_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c >= 0x80;
}

int feedback_templatize(const char *text, const char *full_name, const char *first_name, const char *agent_name,
                        struct buf *out)
{
    /* longest first: the full name before the first name it starts with */
    const char *names[3] = {full_name, first_name, agent_name};
    static const char *const vars[3] = {"{{customer.name}}", "{{customer.first_name}}", "{{agent.name}}"};
    size_t lens[3];
    for (size_t k = 0; k < 3; k++)
        lens[k] = names[k] ? strlen(names[k]) : 0;
    const char *p = text;
    int err = T_OK;
    while (*p && !err) {
        int hit = -1;
        if (word_byte((unsigned char)*p) && (p == text || !word_byte((unsigned char)p[-1]))) {
            for (int k = 0; k < 3 && hit < 0; k++)
                if (lens[k] >= 2 && strncmp(p, names[k], lens[k]) == 0 && !word_byte((unsigned char)p[lens[k]]))
                    hit = k;
        }
        if (hit >= 0) {
            err = buf_puts(out, vars[hit]);
            p += lens[hit];
        } else {
            err = buf_putc(out, *p++);
        }
    }
    if (!err && !out->data)
        err = buf_append(out, "", 0);
    return err;
}

/* ---- Redis ----------------------------------------------------------------------------------------- */

int feedback_key(char *out, size_t outsz, const char *kind, const char *name)
{
    char stream[256];
    if (store_key(stream, sizeof stream, "feedback") < 0)
        return -1;
    char tail[512];
    int n = snprintf(tail, sizeof tail, "%s:{%s}:%s", kind, stream, name);
    if (n < 0 || (size_t)n >= sizeof tail)
        return -1;
    return store_key(out, outsz, tail);
}

static const char *reply_str(const redisReply *r)
{
    return r && (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS) ? r->str : NULL;
}

int feedback_fetch(struct store *s, const char *sid, const char *feedback_id, struct arena *a,
                   struct feedback_suggestion *sg, int *found, char dup_entry[STREAM_ID_MAX],
                   char dup_sid[FEEDBACK_SID_BUF])
{
    memset(sg, 0, sizeof *sg);
    sg->created_ms = -1;
    *found = 0;
    dup_entry[0] = dup_sid[0] = '\0';
    char skey[128], ikey[512], name[160];
    snprintf(name, sizeof name, "sugg:%s", sid);
    if (store_key(skey, sizeof skey, name) < 0)
        return T_ERR_INTERNAL;
    snprintf(name, sizeof name, "id:%s", feedback_id ? feedback_id : "");
    if (feedback_key(ikey, sizeof ikey, "feedback", name) < 0)
        return T_ERR_INTERNAL;
    const char *hv[2] = {"HGETALL", skey}, *gv[2] = {"GET", ikey};
    const char **argvs[2] = {hv, gv};
    int argcs[2] = {2, 2};
    const size_t *lens[2] = {NULL, NULL};
    redisReply *r[2] = {NULL, NULL};
    size_t n = feedback_id ? 2 : 1;
    int err = store_pipeline(s, n, argcs, argvs, lens, r);
    if (err)
        return err;
    err = T_ERR_INTERNAL;
    if (!r[0] || r[0]->type != REDIS_REPLY_ARRAY || (n == 2 && (!r[1] || (r[1]->type != REDIS_REPLY_STRING &&
                                                                         r[1]->type != REDIS_REPLY_NIL)))) {
        log_error("feedback_fetch_reply", "type=%d", r[0] ? r[0]->type : -1);
        goto out;
    }
    err = T_ERR_NOMEM;
    for (size_t i = 0; i + 1 < r[0]->elements; i += 2) {
        const char *k = reply_str(r[0]->element[i]);
        const redisReply *v = r[0]->element[i + 1];
        if (!k || !reply_str(v))
            continue;
        /* stored by us, but still Redis data: make it safe JSON material */
        char *copy = context_strdup_utf8(a, v->str, v->len);
        if (!copy)
            goto out;
        if (strcmp(k, "suggestion_id") == 0)
            sg->sid = copy;
        else if (strcmp(k, "conversation_id") == 0)
            sg->conversation_id = copy;
        else if (strcmp(k, "engine") == 0)
            sg->engine = copy;
        else if (strcmp(k, "source") == 0)
            sg->source = copy;
        else if (strcmp(k, "text") == 0)
            sg->text = copy;
        else if (strcmp(k, "kb_id") == 0)
            sg->kb_id = *copy ? copy : NULL;
        else if (strcmp(k, "memory_id") == 0)
            sg->memory_id = *copy ? copy : NULL;
        else if (strcmp(k, "brand") == 0)
            sg->brand = copy;
        else if (strcmp(k, "lang") == 0)
            sg->lang = copy;
        else if (strcmp(k, "context") == 0)
            sg->context = copy;
        else if (strcmp(k, "created_ms") == 0)
            sg->created_ms = strtoll(copy, NULL, 10);
    }
    /* a record without its text is not one we wrote: treat as unknown */
    *found = r[0]->elements > 0 && sg->text != NULL;
    if (!sg->sid)
        sg->sid = arena_strdup(a, sid);
    const char **fill[] = {&sg->conversation_id, &sg->engine, &sg->source, &sg->brand, &sg->lang, &sg->context};
    for (size_t i = 0; i < sizeof fill / sizeof fill[0]; i++)
        if (!*fill[i])
            *fill[i] = "";
    if (!sg->engine[0])
        sg->engine = "local";
    if (n == 2 && r[1]->type == REDIS_REPLY_STRING) {
        /* "<entry id> <sid>" */
        const char *sp = memchr(r[1]->str, ' ', r[1]->len);
        size_t il = sp ? (size_t)(sp - r[1]->str) : r[1]->len;
        if (il < STREAM_ID_MAX) {
            memcpy(dup_entry, r[1]->str, il);
            dup_entry[il] = '\0';
        }
        if (sp)
            snprintf(dup_sid, FEEDBACK_SID_BUF, "%.*s", (int)(r[1]->len - il - 1), sp + 1);
    }
    err = sg->sid ? T_OK : T_ERR_NOMEM;
out:
    store_reply_free(r[0]);
    store_reply_free(r[1]);
    return err;
}

/* All or nothing: the first write (SET NX of the acted marker) is the one Redis refuses when out
 * of memory or read-only, and once a script has written Redis runs it to the end. A duplicate
 * feedback_id returns before any write. See the key list in feedback.h. */
static const char store_script[] =
    "if ARGV[1] == '1' then "
    "  local v = redis.call('GET', KEYS[2]) "
    "  if v then return {0, v} end "
    "end "
    "local first = redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[4]) "
    "local f = {KEYS[1], '*'} "
    "for i = 16, #ARGV do f[#f + 1] = ARGV[i] end "
    "f[#f + 1] = 'first_action' "
    "f[#f + 1] = first and '1' or '0' "
    "local id = redis.call('XADD', unpack(f)) "
    "if ARGV[1] == '1' then redis.call('SET', KEYS[2], id .. ' ' .. ARGV[2], 'EX', ARGV[3]) end "
    "local function bump(key, who) "
    "  redis.call('HINCRBY', key, who .. '|' .. ARGV[8], 1) "
    "  if ARGV[9] ~= '' then "
    "    redis.call('HINCRBY', key, who .. '|dist_sum', ARGV[9]) "
    "    redis.call('HINCRBY', key, who .. '|dist_n', 1) "
    "    redis.call('HINCRBY', key, who .. '|ratio_sum', ARGV[10]) "
    "  end "
    "  if first and ARGV[11] ~= '' then "
    "    redis.call('HINCRBY', key, who .. '|tta_sum', ARGV[11]) "
    "    redis.call('HINCRBY', key, who .. '|tta_n', 1) "
    "  end "
    "end "
    "bump(KEYS[4], ARGV[5]) "
    "if ARGV[6] ~= '' then bump(KEYS[5], ARGV[6]) end "
    "if ARGV[7] ~= '' then bump(KEYS[6], ARGV[7]) end "
    "if ARGV[12] ~= '' then "
    "  local fresh = redis.call('EXISTS', KEYS[7]) == 0 or redis.call('EXISTS', KEYS[8]) == 0 "
    "  local rid = redis.call('XADD', KEYS[7], 'MAXLEN', '~', ARGV[15], '*', 'target', ARGV[12], 'brand', "
    "                         ARGV[13], 'terms', ARGV[14]) "
    "  if fresh then redis.call('SET', KEYS[8], rid) end "
    "end "
    "return {1, id}";

#define STORE_KEYS 8
#define STORE_MAX_ARGS 64

int feedback_store(struct store *s, const struct feedback_entry *e, int per_agent, char entry_id[STREAM_ID_MAX],
                   int *duplicate, char dup_sid[FEEDBACK_SID_BUF])
{
    const struct feedback_input *in = e->in;
    const struct feedback_suggestion *sg = e->sg;
    entry_id[0] = dup_sid[0] = '\0';
    *duplicate = 0;
    char keys[STORE_KEYS][600], name[200];
    int bad = store_key(keys[0], sizeof keys[0], "feedback") < 0;
    snprintf(name, sizeof name, "id:%s", in->feedback_id ? in->feedback_id : "");
    bad |= feedback_key(keys[1], sizeof keys[1], "feedback", name) < 0;
    snprintf(name, sizeof name, "acted:%s", sg->sid);
    bad |= feedback_key(keys[2], sizeof keys[2], "feedback", name) < 0;
    bad |= quality_key(keys[3], sizeof keys[3], QUALITY_BY_ENGINE) < 0;
    bad |= quality_key(keys[4], sizeof keys[4], QUALITY_BY_KB) < 0;
    bad |= quality_key(keys[5], sizeof keys[5], QUALITY_BY_AGENT) < 0;
    bad |= feedback_key(keys[6], sizeof keys[6], "feedback", "rejections") < 0;
    bad |= feedback_key(keys[7], sizeof keys[7], "feedback", "rejections:epoch") < 0;
    if (bad)
        return T_ERR_INTERNAL;

    char idem_ttl[16], acted_ttl[16], dist[24] = "", ratio[16] = "", tta[24] = "", ts[24], maxlen[16];
    char sugg_chars[24];
    snprintf(idem_ttl, sizeof idem_ttl, "%d", FEEDBACK_ID_TTL_S);
    snprintf(acted_ttl, sizeof acted_ttl, "%d", FEEDBACK_ACTED_TTL_S);
    snprintf(maxlen, sizeof maxlen, "%d", FEEDBACK_REJECT_MAX_RECORDS);
    snprintf(ts, sizeof ts, "%lld", (long long)e->ts_ms);
    snprintf(sugg_chars, sizeof sugg_chars, "%zu", e->suggestion_chars);
    if (e->edit_distance >= 0)
        snprintf(dist, sizeof dist, "%ld", e->edit_distance);
    if (e->time_to_action_ms >= 0)
        snprintf(tta, sizeof tta, "%lld", (long long)e->time_to_action_ms);
    int counts_distance = e->edit_distance >= 0 && in->action != FEEDBACK_REJECTED;
    if (counts_distance)
        snprintf(ratio, sizeof ratio, "%u", e->edit_ratio_permille);
    /* a rejection ranks its KB entry lower, or the memory reply when it was not from an entry */
    const char *target = in->action != FEEDBACK_REJECTED ? "" : sg->kb_id ? sg->kb_id : sg->memory_id ? sg->memory_id : "";
    const char *agent = in->agent_id ? in->agent_id : "";

    const char *argv[STORE_MAX_ARGS];
    size_t lens[STORE_MAX_ARGS];
    int argc = 0;
#define ARG(v) (argv[argc] = (v), lens[argc] = strlen(argv[argc]), argc++)
#define ARGN(v, n) (argv[argc] = (v), lens[argc] = (n), argc++)
#define FIELD(k, v) (ARG(k), ARG(v))
    ARG("EVAL");
    ARG(store_script);
    ARG("8");
    for (int i = 0; i < STORE_KEYS; i++)
        ARG(keys[i]);
    ARG(in->feedback_id ? "1" : "0");
    ARG(sg->sid);
    ARG(idem_ttl);
    ARG(acted_ttl);
    ARG(sg->engine);
    ARG(sg->kb_id ? sg->kb_id : "");
    ARG(per_agent ? agent : "");
    ARG(feedback_action_name(in->action));
    ARG(counts_distance ? dist : "");
    ARG(ratio);
    ARG(tta);
    ARG(target);
    ARG(sg->brand);
    ARGN(e->terms.data ? e->terms.data : "", e->terms.len);
    ARG(maxlen);
    /* the stream entry: the contract's fields first, then ours */
    FIELD("suggestion_id", sg->sid);
    FIELD("conversation_id", sg->conversation_id);
    FIELD("kb_id", sg->kb_id ? sg->kb_id : "");
    FIELD("engine", sg->engine);
    FIELD("action", feedback_action_name(in->action));
    ARG("final_text");
    ARGN(e->final_redacted.data ? e->final_redacted.data : "", e->final_redacted.len);
    FIELD("edit_distance", dist);
    FIELD("agent_id", agent);
    FIELD("ts", ts);
    FIELD("source", sg->source);
    FIELD("memory_id", sg->memory_id ? sg->memory_id : "");
    FIELD("brand", sg->brand);
    FIELD("lang", sg->lang);
    FIELD("suggestion_chars", sugg_chars);
    if (e->distance_capped)
        FIELD("edit_distance_capped", "1");
    if (in->feedback_id)
        FIELD("feedback_id", in->feedback_id);
    if (in->reason) {
        ARG("reason");
        ARGN(e->reason_redacted.data ? e->reason_redacted.data : "", e->reason_redacted.len);
    }
    if (tta[0])
        FIELD("time_to_action_ms", tta);
#undef FIELD
#undef ARGN
#undef ARG

    redisReply *r = NULL;
    int err = store_command(s, &r, argc, argv, lens);
    if (err)
        return err;
    err = T_ERR_INTERNAL;
    if (r->type == REDIS_REPLY_ERROR) {
        /* OOM, READONLY, LOADING and friends came back as T_ERR_UNAVAILABLE already */
        log_error("feedback_write_refused", "reason=%.120s", r->str);
        goto out;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 || r->element[0]->type != REDIS_REPLY_INTEGER ||
        r->element[1]->type != REDIS_REPLY_STRING) {
        log_error("feedback_write_reply", "type=%d", r->type);
        goto out;
    }
    const redisReply *v = r->element[1];
    const char *sp = memchr(v->str, ' ', v->len);
    size_t il = sp ? (size_t)(sp - v->str) : v->len;
    if (il == 0 || il >= STREAM_ID_MAX)
        goto out;
    memcpy(entry_id, v->str, il);
    entry_id[il] = '\0';
    *duplicate = r->element[0]->integer == 0;
    if (*duplicate && sp)
        snprintf(dup_sid, FEEDBACK_SID_BUF, "%.*s", (int)(v->len - il - 1), sp + 1);
    err = T_OK;
out:
    store_reply_free(r);
    return err;
}

/* ---- counters ------------------------------------------------------------------------------------ */

static atomic_ulong stat_stored[3], stat_dups, stat_learned, stat_rej_loaded;

void feedback_count_stored(enum feedback_action a, int duplicate)
{
    if (duplicate)
        atomic_fetch_add(&stat_dups, 1);
    else if ((unsigned)a < 3)
        atomic_fetch_add(&stat_stored[a], 1);
}

void feedback_count_learned(void) { atomic_fetch_add(&stat_learned, 1); }

void feedback_stats(struct feedback_stats *st)
{
    for (int i = 0; i < 3; i++)
        st->stored[i] = atomic_load(&stat_stored[i]);
    st->duplicates = atomic_load(&stat_dups);
    st->learned = atomic_load(&stat_learned);
    st->rejections_loaded = atomic_load(&stat_rej_loaded);
}

/* ---- the rejection table --------------------------------------------------------------------------- */

/* One record as read; owned. */
struct rj_rec {
    uint64_t key; /* brand (folded) + target */
    uint64_t brand;
    uint32_t n_terms;
    uint64_t terms[FEEDBACK_REJECT_MAX_TERMS];
};

struct rj_entry {
    uint64_t key;
    uint32_t order; /* higher = newer */
    uint32_t n_terms;
    const uint64_t *terms;
};

/* Immutable, reference counted; readers never lock beyond taking a reference. */
struct rj_snap {
    atomic_int refs;
    struct rj_entry *e; /* by key, newest first within a key */
    size_t n;
    uint64_t *brands; /* sorted, distinct */
    size_t nbrands;
    struct rj_rec *recs; /* the records the entries point into */
};

static struct {
    pthread_mutex_t sync_lock; /* one syncing thread; guards recs, n, cap, last_id */
    pthread_mutex_t snap_lock; /* guards snap (swap and reference only) */
    struct rj_snap *snap;
    struct rj_rec *recs; /* oldest first; up to 2x the cap between trims */
    size_t n, cap;
    char last_id[STREAM_ID_MAX];
    char epoch[STREAM_ID_MAX]; /* the stream's incarnation the records came from */
    atomic_llong last_check_ms;
} rj = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_MUTEX_INITIALIZER, NULL, NULL, 0, 0, "", "", 0};

static uint64_t brand_hash(const char *brand)
{
    uint64_t h = TEXT_HASH_SEED;
    for (const char *p = brand ? brand : ""; *p; p++) {
        char c = (*p >= 'A' && *p <= 'Z') ? (char)(*p + 32) : *p; /* case-blind like memory's strcasecmp */
        h = text_hash(h, &c, 1);
    }
    return h;
}

static uint64_t target_key(uint64_t brand_h, const char *target)
{
    uint64_t h = text_hash(brand_h, "", 1);
    return text_hash(h, target, strlen(target));
}

static void snap_unref(struct rj_snap *s)
{
    if (s && atomic_fetch_sub(&s->refs, 1) == 1) {
        free(s->e);
        free(s->brands);
        free(s->recs);
        free(s);
    }
}

static struct rj_snap *snap_get(void)
{
    pthread_mutex_lock(&rj.snap_lock);
    struct rj_snap *s = rj.snap;
    if (s)
        atomic_fetch_add(&s->refs, 1);
    pthread_mutex_unlock(&rj.snap_lock);
    return s;
}

static void snap_set(struct rj_snap *s)
{
    pthread_mutex_lock(&rj.snap_lock);
    struct rj_snap *old = rj.snap;
    rj.snap = s;
    pthread_mutex_unlock(&rj.snap_lock);
    snap_unref(old);
}

static int cmp_entry(const void *a, const void *b)
{
    const struct rj_entry *x = a, *y = b;
    if (x->key != y->key)
        return x->key < y->key ? -1 : 1;
    return x->order > y->order ? -1 : (x->order < y->order);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : (x > y);
}

/* Keeps the newest FEEDBACK_REJECT_MAX_RECORDS (caller holds sync_lock): one move per batch. */
static void trim(void)
{
    if (rj.n <= FEEDBACK_REJECT_MAX_RECORDS)
        return;
    memmove(rj.recs, rj.recs + (rj.n - FEEDBACK_REJECT_MAX_RECORDS), FEEDBACK_REJECT_MAX_RECORDS * sizeof *rj.recs);
    rj.n = FEEDBACK_REJECT_MAX_RECORDS;
}

/* Builds and installs a snapshot of rj.recs (caller holds sync_lock). NULL table when empty. */
static int rebuild(void)
{
    trim();
    if (!rj.n) {
        snap_set(NULL);
        return T_OK;
    }
    struct rj_snap *s = calloc(1, sizeof *s);
    if (!s)
        return T_ERR_NOMEM;
    atomic_init(&s->refs, 1);
    s->recs = malloc(rj.n * sizeof *s->recs);
    s->e = malloc(rj.n * sizeof *s->e);
    s->brands = malloc(rj.n * sizeof *s->brands);
    if (!s->recs || !s->e || !s->brands) {
        snap_unref(s);
        return T_ERR_NOMEM;
    }
    memcpy(s->recs, rj.recs, rj.n * sizeof *s->recs);
    for (size_t i = 0; i < rj.n; i++) {
        s->e[i] = (struct rj_entry){s->recs[i].key, (uint32_t)i, s->recs[i].n_terms, s->recs[i].terms};
        s->brands[i] = s->recs[i].brand;
    }
    s->n = rj.n;
    qsort(s->e, s->n, sizeof *s->e, cmp_entry);
    qsort(s->brands, s->n, sizeof *s->brands, cmp_u64);
    size_t w = 0;
    for (size_t i = 0; i < s->n; i++)
        if (!w || s->brands[w - 1] != s->brands[i])
            s->brands[w++] = s->brands[i];
    s->nbrands = w;
    snap_set(s);
    return T_OK;
}

/* Appends one record (caller holds sync_lock). The array grows to twice the cap; the oldest
 * beyond the cap go in one trim() (per batch, not per record). */
static int rec_append(const char *brand, const char *target, const uint64_t *terms, size_t n_terms)
{
    if (!target || !*target)
        return T_OK;
    if (rj.n == rj.cap) {
        if (rj.cap >= 2 * FEEDBACK_REJECT_MAX_RECORDS) {
            trim();
        } else {
            size_t cap = rj.cap ? rj.cap * 2 : 64;
            struct rj_rec *p = realloc(rj.recs, cap * sizeof *p);
            if (!p)
                return T_ERR_NOMEM;
            rj.recs = p;
            rj.cap = cap;
        }
    }
    struct rj_rec *r = &rj.recs[rj.n++];
    r->brand = brand_hash(brand);
    r->key = target_key(r->brand, target);
    r->n_terms = (uint32_t)(n_terms > FEEDBACK_REJECT_MAX_TERMS ? FEEDBACK_REJECT_MAX_TERMS : n_terms);
    memcpy(r->terms, terms, r->n_terms * sizeof *terms);
    return T_OK;
}

static void recs_clear(void)
{
    free(rj.recs);
    rj.recs = NULL;
    rj.n = rj.cap = 0;
    rj.last_id[0] = '\0';
}

int feedback_rejections_install(const struct feedback_rejection *recs, size_t n)
{
    pthread_mutex_lock(&rj.sync_lock);
    recs_clear();
    int err = T_OK;
    for (size_t i = 0; i < n && !err; i++)
        err = rec_append(recs[i].brand, recs[i].target, recs[i].terms, recs[i].n_terms);
    if (!err)
        err = rebuild();
    pthread_mutex_unlock(&rj.sync_lock);
    return err;
}

void feedback_rejections_reset(void)
{
    pthread_mutex_lock(&rj.sync_lock);
    recs_clear();
    rj.epoch[0] = '\0';
    snap_set(NULL);
    atomic_store(&rj.last_check_ms, 0);
    pthread_mutex_unlock(&rj.sync_lock);
}

size_t feedback_rejections_count(void)
{
    struct rj_snap *s = snap_get();
    size_t n = s ? s->n : 0;
    snap_unref(s);
    return n;
}

/* "<ms>-<seq>" -> the smallest id after it (XRANGE's exclusive start without Redis 6.2's '('). */
static void id_after(const char *id, char *out, size_t outsz)
{
    unsigned long long ms = 0, seq = 0;
    if (sscanf(id, "%llu-%llu", &ms, &seq) < 1)
        ms = 0, seq = 0;
    if (seq == ~0ull)
        snprintf(out, outsz, "%llu-0", ms + 1);
    else
        snprintf(out, outsz, "%llu-%llu", ms, seq + 1);
}

/* Appends the entries of an XRANGE/XREVRANGE reply (in the given order). Returns how many entries
 * the reply held, -1 on a malformed reply. */
static long append_entries(const redisReply *r, int reverse)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return -1;
    for (size_t k = 0; k < r->elements; k++) {
        const redisReply *ent = r->element[reverse ? r->elements - 1 - k : k];
        if (ent->type != REDIS_REPLY_ARRAY || ent->elements != 2 || ent->element[0]->type != REDIS_REPLY_STRING ||
            ent->element[1]->type != REDIS_REPLY_ARRAY)
            return -1;
        const redisReply *fv = ent->element[1];
        const char *brand = "", *target = NULL, *terms = "";
        for (size_t i = 0; i + 1 < fv->elements; i += 2) {
            const char *f = reply_str(fv->element[i]), *v = reply_str(fv->element[i + 1]);
            if (!f || !v)
                continue;
            if (strcmp(f, "target") == 0)
                target = v;
            else if (strcmp(f, "brand") == 0)
                brand = v;
            else if (strcmp(f, "terms") == 0)
                terms = v;
        }
        uint64_t t[FEEDBACK_REJECT_MAX_TERMS];
        size_t nt = 0;
        for (const char *p = terms; *p && nt < FEEDBACK_REJECT_MAX_TERMS;) {
            char *end;
            unsigned long long h = strtoull(p, &end, 16);
            if (end == p)
                break;
            t[nt++] = h;
            p = end;
            while (*p == ' ')
                p++;
        }
        if (rec_append(brand, target, t, nt))
            return -1;
        snprintf(rj.last_id, sizeof rj.last_id, "%s", ent->element[0]->str);
        atomic_fetch_add(&stat_rej_loaded, 1);
    }
    return (long)r->elements;
}

/* The stream's newest entry id and its epoch ("" when missing), in one round trip. */
static int read_head(struct store *s, const char *key, const char *ekey, char newest[STREAM_ID_MAX],
                     char epoch[STREAM_ID_MAX])
{
    const char *xv[6] = {"XREVRANGE", key, "+", "-", "COUNT", "1"}, *gv[2] = {"GET", ekey};
    const char **argvs[2] = {xv, gv};
    int argcs[2] = {6, 2};
    const size_t *lens[2] = {NULL, NULL};
    redisReply *r[2] = {NULL, NULL};
    int err = store_pipeline(s, 2, argcs, argvs, lens, r);
    if (err)
        return err;
    newest[0] = epoch[0] = '\0';
    err = T_ERR_INTERNAL;
    if (r[0]->type == REDIS_REPLY_ARRAY && (r[1]->type == REDIS_REPLY_STRING || r[1]->type == REDIS_REPLY_NIL)) {
        if (r[0]->elements && r[0]->element[0]->type == REDIS_REPLY_ARRAY && r[0]->element[0]->elements == 2 &&
            r[0]->element[0]->element[0]->type == REDIS_REPLY_STRING)
            snprintf(newest, STREAM_ID_MAX, "%s", r[0]->element[0]->element[0]->str);
        if (r[1]->type == REDIS_REPLY_STRING)
            snprintf(epoch, STREAM_ID_MAX, "%s", r[1]->str);
        err = T_OK;
    }
    store_reply_free(r[0]);
    store_reply_free(r[1]);
    return err;
}

int feedback_rejections_sync(struct store *s, const char *newest_id, const char *epoch, int force)
{
    int64_t now = clock_mono_ms();
    if (!newest_id && !force && now - atomic_load(&rj.last_check_ms) < FEEDBACK_REJECT_CHECK_MS)
        return T_OK;
    if (force)
        pthread_mutex_lock(&rj.sync_lock);
    else if (pthread_mutex_trylock(&rj.sync_lock) != 0)
        return T_OK; /* another thread is at it */
    int err = T_OK, changed = 0;
    if (!epoch)
        epoch = "";
    if (newest_id && strcmp(newest_id, rj.last_id) == 0 && strcmp(epoch, rj.epoch) == 0)
        goto out;
    atomic_store(&rj.last_check_ms, now);
    char key[600], ekey[600], nbuf[STREAM_ID_MAX], ebuf[STREAM_ID_MAX];
    if (feedback_key(key, sizeof key, "feedback", "rejections") < 0 ||
        feedback_key(ekey, sizeof ekey, "feedback", "rejections:epoch") < 0) {
        err = T_ERR_INTERNAL;
        goto out;
    }
    if (!newest_id) {
        err = read_head(s, key, ekey, nbuf, ebuf);
        if (err)
            goto out;
        newest_id = nbuf;
        epoch = ebuf;
    }
    if (strcmp(epoch, rj.epoch) != 0 || !*newest_id) {
        /* no stream, or another one than the records came from (deleted and written again): its
         * rejections are gone, start over */
        changed = rj.n > 0;
        recs_clear();
        snprintf(rj.epoch, sizeof rj.epoch, "%s", epoch);
    }
    if (!*newest_id || strcmp(newest_id, rj.last_id) == 0)
        goto out;
    for (int pass = 0; pass < 2; pass++) {
        redisReply *r = NULL;
        char count[16];
        if (!rj.last_id[0]) {
            /* first read (or a new stream): the newest records, up to the cap */
            snprintf(count, sizeof count, "%d", FEEDBACK_REJECT_MAX_RECORDS);
            const char *av[6] = {"XREVRANGE", key, "+", "-", "COUNT", count};
            err = store_command(s, &r, 6, av, NULL);
            if (err)
                goto out;
            long got = append_entries(r, 1);
            store_reply_free(r);
            if (got < 0) {
                err = T_ERR_INTERNAL;
                goto out;
            }
            changed |= got > 0;
            break;
        }
        snprintf(count, sizeof count, "%d", REJECT_FETCH_BATCH);
        long got = 0, total = 0;
        /* bounded: at most the table's size in one sync */
        for (int batch = 0; batch <= FEEDBACK_REJECT_MAX_RECORDS / REJECT_FETCH_BATCH; batch++) {
            char from[STREAM_ID_MAX + 8];
            id_after(rj.last_id, from, sizeof from);
            const char *av[6] = {"XRANGE", key, from, "+", "COUNT", count};
            err = store_command(s, &r, 6, av, NULL);
            if (err)
                goto out;
            got = append_entries(r, 0);
            store_reply_free(r);
            if (got < 0) {
                err = T_ERR_INTERNAL;
                goto out;
            }
            total += got;
            if (got < REJECT_FETCH_BATCH)
                break;
        }
        changed |= total > 0;
        /* nothing after our last id although the newest differs (ids went backwards without a
         * new epoch): read it again from scratch */
        if (total == 0 && pass == 0) {
            recs_clear();
            changed = 1;
            continue;
        }
        break;
    }
out:
    if (changed && !err)
        err = rebuild();
    else if (changed)
        rebuild();
    pthread_mutex_unlock(&rj.sync_lock);
    if (err)
        log_warn("rejections_sync_failed", "err=%s", tandem_err_code(err));
    return err;
}

/* ---- per request ------------------------------------------------------------------------------------ */

struct rq_slot {
    uint64_t h;
    float w;
    int used;
};

struct feedback_reject_query {
    struct rj_snap *snap;
    uint64_t brand;
    struct rq_slot *slots;
    size_t mask;
    double norm;
};

int feedback_reject_query_new(const char *brand, const struct bm25_qterm *q, size_t nq,
                              struct feedback_reject_query **out)
{
    *out = NULL;
    if (!nq)
        return T_OK;
    struct rj_snap *s = snap_get();
    if (!s)
        return T_OK;
    uint64_t bh = brand_hash(brand);
    if (!bsearch(&bh, s->brands, s->nbrands, sizeof *s->brands, cmp_u64)) {
        snap_unref(s);
        return T_OK; /* nothing rejected in this brand: the common case costs one lookup */
    }
    struct feedback_reject_query *rq = calloc(1, sizeof *rq);
    size_t cap = 16;
    while (cap < nq * 2)
        cap *= 2;
    if (rq)
        rq->slots = calloc(cap, sizeof *rq->slots);
    if (!rq || !rq->slots) {
        free(rq);
        snap_unref(s);
        return T_ERR_NOMEM;
    }
    rq->snap = s;
    rq->brand = bh;
    rq->mask = cap - 1;
    double sq = 0;
    for (size_t i = 0; i < nq; i++) {
        uint64_t h = text_hash(TEXT_HASH_SEED, q[i].term, q[i].len);
        size_t j = (size_t)h & rq->mask;
        while (rq->slots[j].used && rq->slots[j].h != h)
            j = (j + 1) & rq->mask;
        if (!rq->slots[j].used) {
            rq->slots[j] = (struct rq_slot){h, 0, 1};
        }
        rq->slots[j].w += q[i].weight;
    }
    for (size_t j = 0; j <= rq->mask; j++)
        if (rq->slots[j].used)
            sq += (double)rq->slots[j].w * (double)rq->slots[j].w;
    rq->norm = sqrt(sq);
    *out = rq;
    return T_OK;
}

static float query_weight(const struct feedback_reject_query *rq, uint64_t h)
{
    size_t j = (size_t)h & rq->mask;
    while (rq->slots[j].used) {
        if (rq->slots[j].h == h)
            return rq->slots[j].w;
        j = (j + 1) & rq->mask;
    }
    return 0;
}

double feedback_reject_factor(const struct feedback_reject_query *rq, const char *target)
{
    if (!rq || !target || rq->norm <= 0)
        return 1.0;
    const struct rj_snap *s = rq->snap;
    uint64_t key = target_key(rq->brand, target);
    /* first entry with this key */
    size_t lo = 0, hi = s->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (s->e[mid].key < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    double acc = 0;
    for (size_t i = lo, k = 0; i < s->n && s->e[i].key == key && k < FEEDBACK_REJECT_MAX_PER_TARGET; i++, k++) {
        const struct rj_entry *e = &s->e[i];
        if (!e->n_terms)
            continue;
        double dot = 0;
        for (uint32_t t = 0; t < e->n_terms; t++)
            dot += query_weight(rq, e->terms[t]);
        /* cosine between the weighted query and the rejected situation's word set */
        double sim = dot / (rq->norm * sqrt((double)e->n_terms));
        if (sim >= FEEDBACK_REJECT_SIM_MIN)
            acc += sim > 1 ? 1 : sim;
    }
    return 1.0 / (1.0 + FEEDBACK_REJECT_WEIGHT * acc);
}

void feedback_reject_query_free(struct feedback_reject_query *rq)
{
    if (!rq)
        return;
    snap_unref(rq->snap);
    free(rq->slots);
    free(rq);
}
