/* The conversation model: ids, roles, lookups and the JSON of GET .../context. */
#include "tandem/context.h"
#include "tandem/json_io.h"
#include "tandem/error.h"
#include "tandem/text.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

int context_valid_id(const char *s)
{
    if (!s)
        return 0;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-';
        if (!ok || n >= ID_MAX_LEN)
            return 0;
    }
    return n > 0;
}

int context_valid_stream_id(const char *s)
{
    if (!s || !*s)
        return 0;
    size_t n = 0, digits = 0;
    int dash = 0;
    for (; s[n]; n++) {
        if (s[n] >= '0' && s[n] <= '9') {
            digits++;
        } else if (s[n] == '-' && !dash && digits > 0) {
            dash = 1;
            digits = 0;
        } else {
            return 0;
        }
        if (n >= STREAM_ID_MAX - 1)
            return 0;
    }
    return digits > 0;
}

int64_t context_stream_id_ms(const char *id)
{
    int64_t v = 0;
    const char *p = id;
    if (!p || *p < '0' || *p > '9')
        return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return (*p == '\0' || *p == '-') ? v : -1;
}

/* Length of the valid UTF-8 sequence at s (max n bytes), 0 when invalid. Rejects overlongs,
 * surrogates and code points past U+10FFFF. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return c ? 1 : 0;
    size_t len;
    unsigned cp;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, cp = c & 0x1Fu;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, cp = c & 0x0Fu;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, cp = c & 0x07u;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3Fu);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)))
        return 0;
    return len;
}

char *context_strdup_utf8(struct arena *a, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) { /* fast path: copy as is when all valid */
        size_t l = utf8_seq(u + i, n - i);
        if (!l)
            break;
        i += l;
    }
    if (i == n)
        return arena_strndup(a, s, n);
    char *out = arena_alloc(a, n * 3 + 1); /* each bad byte becomes 3 bytes of U+FFFD */
    if (!out)
        return NULL;
    size_t o = 0;
    for (i = 0; i < n;) {
        size_t l = utf8_seq(u + i, n - i);
        if (l) {
            memcpy(out + o, s + i, l);
            o += l;
            i += l;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    return out;
}

static void stream_id_parts(const char *id, uint64_t *ms, uint64_t *seq)
{
    *ms = *seq = 0;
    const char *p = id;
    for (; *p >= '0' && *p <= '9'; p++)
        *ms = *ms * 10 + (uint64_t)(*p - '0');
    if (*p == '-')
        for (p++; *p >= '0' && *p <= '9'; p++)
            *seq = *seq * 10 + (uint64_t)(*p - '0');
}

int context_stream_id_cmp(const char *a, const char *b)
{
    uint64_t am, as, bm, bs;
    stream_id_parts(a, &am, &as);
    stream_id_parts(b, &bm, &bs);
    if (am != bm)
        return am < bm ? -1 : 1;
    return as < bs ? -1 : as > bs ? 1 : 0;
}

static const char *role_names[] = {"customer", "agent", "bot", "system", "note", "other"};

enum msg_role context_role_from_name(const char *name)
{
    for (int i = 0; i < ROLE_OTHER; i++)
        if (name && strcmp(name, role_names[i]) == 0)
            return (enum msg_role)i;
    return ROLE_OTHER;
}

const char *context_role_name(enum msg_role r)
{
    return (r >= ROLE_CUSTOMER && r <= ROLE_OTHER) ? role_names[r] : "other";
}

struct context *context_new(const char *conv_id)
{
    struct context *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    arena_init(&c->arena);
    size_t n = strlen(conv_id);
    if (n > ID_MAX_LEN)
        n = ID_MAX_LEN;
    memcpy(c->conv_id, conv_id, n);
    c->conv_id[n] = '\0';
    return c;
}

void context_free(struct context *c)
{
    if (!c)
        return;
    arena_cleanup(&c->arena);
    free(c);
}

static const char *kv_find(const struct ctx_kv *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(kv[i].key, key) == 0)
            return kv[i].value;
    return NULL;
}

const char *context_meta(const struct context *c, const char *key) { return kv_find(c->meta, c->n_meta, key); }
const char *context_profile(const struct context *c, const char *key)
{
    return kv_find(c->profile, c->n_profile, key);
}

/* These builders return NULL when any part failed: a field lost to a failed allocation would be a
 * wrong answer, where NULL becomes a 500 the client retries. */
static json_t *kv_object(const struct ctx_kv *kv, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++)
        if (json_object_set_new(o, kv[i].key, json_string(kv[i].value))) {
            json_decref(o);
            o = NULL;
        }
    return o;
}

static json_t *tags_array(const char *tags)
{
    json_t *a = json_array();
    const char *p = tags;
    while (a && p && *p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        while (n && (*p == ' ' || *p == '\t'))
            p++, n--;
        while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
            n--;
        if (n && json_array_append_new(a, json_stringn(p, n))) {
            json_decref(a);
            return NULL;
        }
        if (!e)
            break;
        p = e + 1;
    }
    return a;
}

/* Appends item (stolen, may be NULL) to *arr; on failure drops *arr and sets it to NULL. */
static void append_or_drop(json_t **arr, json_t *item)
{
    if (json_array_append_new(*arr, item)) {
        json_decref(*arr);
        *arr = NULL;
    }
}

int context_render_json(const struct context *c, struct buf *out)
{
    json_t *msgs = json_array();
    for (size_t i = 0; msgs && i < c->n_messages; i++) {
        const struct ctx_message *m = &c->messages[i];
        json_t *o = json_pack("{s:s, s:s, s:s, s:I}", "id", m->id, "role", m->role_name, "text", m->text,
                              "ts", (json_int_t)m->ts_ms);
        if (o && m->author && json_object_set_new(o, "author", json_string(m->author))) {
            json_decref(o);
            o = NULL;
        }
        append_or_drop(&msgs, o);
    }
    json_t *hist = json_array();
    for (size_t i = 0; hist && i < c->n_history; i++) {
        const struct ctx_history *h = &c->history[i];
        append_or_drop(&hist, json_pack("{s:s, s:I, s:s, s:s, s:s, s:o}", "id", h->id, "ts", (json_int_t)h->ts_ms,
                                        "conv_id", h->conv_id, "summary", h->summary, "outcome", h->outcome,
                                        "tags", tags_array(h->tags)));
    }
    /* json_pack takes the "o" references even when it fails, and fails on a NULL one */
    json_t *cust = json_pack("{s:o, s:o, s:o}", "id", c->customer_id ? json_string(c->customer_id) : json_null(),
                             "profile", kv_object(c->profile, c->n_profile), "history", hist);
    json_t *root = json_pack("{s:s, s:o, s:o, s:o, s:o}", "conversation_id", c->conv_id, "based_on",
                             c->newest_id[0] ? json_string(c->newest_id) : json_null(), "messages", msgs,
                             "meta", kv_object(c->meta, c->n_meta), "customer", cust);
    if (!root)
        return T_ERR_NOMEM;
    char *s = json_serialize(root, JSON_COMPACT);
    json_decref(root);
    if (!s)
        return T_ERR_NOMEM;
    int err = buf_puts(out, s);
    free(s);
    return err;
}

/* One meta field's share of context_meta_digest(): FNV-1a over the length-prefixed key and
 * the value, then a splitmix64 finish so the sum spreads well. */
static uint64_t meta_field_hash(const char *key, const char *value)
{
    size_t kl = strlen(key);
    uint64_t h = text_hash(TEXT_HASH_SEED, &kl, sizeof kl);
    h = text_hash(text_hash(h, key, kl), value, strlen(value));
    h = (h ^ (h >> 30)) * 0xbf58476d1ce4e5b9ULL;
    h = (h ^ (h >> 27)) * 0x94d049bb133111ebULL;
    return h ^ (h >> 31);
}

/* A sum, so field order (HGETALL's hash order, the context's copy) cannot matter; keys are
 * unique, so no two fields cancel. */
uint64_t context_meta_digest(const struct ctx_kv *kv, size_t n)
{
    uint64_t d = n;
    for (size_t i = 0; i < n; i++)
        d += meta_field_hash(kv[i].key, kv[i].value);
    return d;
}
