/* Knowledge base: JSONL loading with file:line errors, brand scoping, URL lookup, BM25F index, refcounted swaps. */
#include "tandem/json_io.h"
#include "tandem/kb.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "tandem/app.h"
#include "tandem/buf.h"
#include "tandem/error.h"
#include "tandem/text.h"

enum { F_TITLE, F_BODY, F_TAGS, F_URL, F__COUNT };

struct kb {
    atomic_int refs;
    uint64_t generation;
    uint64_t fingerprint;
    struct arena arena; /* every string and small array of the entries */
    struct kb_entry *entries;
    size_t n, cap;
    char **brands; /* brand names (arena), index = brand id */
    size_t *brand_entries; /* entries per brand id */
    size_t n_brands, brands_cap;
    uint32_t *id_slots; /* entry index + 1, open addressing by id */
    uint32_t *url_slots; /* entry index + 1, by url_norm */
    size_t nslots;
    struct bm25 *index;
    size_t text_bytes;
    size_t *lines; /* while loading: each entry's line number */
    size_t lines_cap;
};

static atomic_ulong kb_generations;
/* The installed kb's size, for /metrics (app_kb_swap keeps it current). */
static atomic_size_t installed_entries, installed_bytes;

static void set_err(char *err, size_t errsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errsz, const char *fmt, ...)
{
    if (!err || !errsz)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errsz, fmt, ap);
    va_end(ap);
}

/* ---- lookups -------------------------------------------------------------------------------- */

static uint64_t hash_str(const char *s) { return text_hash(TEXT_HASH_SEED, s, strlen(s)); }

static long slots_find(const struct kb *kb, const uint32_t *slots, const char *key, int by_url)
{
    if (!kb || !slots || !key || !kb->nslots)
        return -1;
    size_t i = (size_t)hash_str(key) & (kb->nslots - 1);
    while (slots[i]) {
        const struct kb_entry *e = &kb->entries[slots[i] - 1];
        const char *k = by_url ? e->url_norm : e->id;
        if (k && strcmp(k, key) == 0)
            return (long)slots[i] - 1;
        i = (i + 1) & (kb->nslots - 1);
    }
    return -1;
}

/* Inserts entry idx under key; returns the index already there (duplicate) or -1 when new. */
static long slots_put(struct kb *kb, uint32_t *slots, const char *key, size_t idx, int by_url)
{
    size_t i = (size_t)hash_str(key) & (kb->nslots - 1);
    while (slots[i]) {
        const struct kb_entry *e = &kb->entries[slots[i] - 1];
        const char *k = by_url ? e->url_norm : e->id;
        if (k && strcmp(k, key) == 0)
            return (long)slots[i] - 1;
        i = (i + 1) & (kb->nslots - 1);
    }
    slots[i] = (uint32_t)idx + 1;
    return -1;
}

long kb_find_id(const struct kb *kb, const char *id) { return slots_find(kb, kb ? kb->id_slots : NULL, id, 0); }

long kb_find_url(const struct kb *kb, const char *norm)
{
    return slots_find(kb, kb ? kb->url_slots : NULL, norm, 1);
}

static int url_start_at(const char *s, size_t i, size_t n)
{
    if (i > 0) {
        unsigned char p = (unsigned char)s[i - 1];
        if ((p >= '0' && p <= '9') || (p >= 'a' && p <= 'z') || (p >= 'A' && p <= 'Z'))
            return 0;
    }
    return (n - i >= 7 && strncasecmp(s + i, "http://", 7) == 0) ||
           (n - i >= 8 && strncasecmp(s + i, "https://", 8) == 0) ||
           (n - i >= 4 && strncasecmp(s + i, "www.", 4) == 0);
}

size_t kb_link_all(const struct kb *kb, const char *text, size_t len, long *out, size_t max)
{
    size_t n = 0;
    if (!kb || !text || !kb->n)
        return 0;
    for (size_t i = 0; i < len && n < max; i++) {
        if (!url_start_at(text, i, len))
            continue;
        size_t j = i;
        while (j < len && (unsigned char)text[j] > ' ' && text[j] != '"' && text[j] != '<' && text[j] != '>' &&
               (unsigned char)text[j] < 0x80)
            j++;
        char norm[2048];
        if (text_url_normalize(text + i, j - i, norm, sizeof norm)) {
            long at = kb_find_url(kb, norm);
            if (at < 0) {
                char *q = strchr(norm, '?');
                if (q) {
                    *q = '\0';
                    at = kb_find_url(kb, norm);
                }
            }
            int dup = 0;
            for (size_t k = 0; k < n; k++)
                dup |= out[k] == at;
            if (at >= 0 && !dup)
                out[n++] = at;
        }
        i = j;
    }
    return n;
}

long kb_link_text(const struct kb *kb, const char *text, size_t len)
{
    long at;
    return kb_link_all(kb, text, len, &at, 1) ? at : -1;
}

int kb_brand_id(const struct kb *kb, const char *brand)
{
    if (!kb || !brand)
        return -1;
    for (size_t i = 0; i < kb->n_brands; i++)
        if (strcasecmp(kb->brands[i], brand) == 0)
            return (int)i;
    return -1;
}

size_t kb_brand_entries(const struct kb *kb, int brand_id)
{
    return kb && brand_id >= 0 && (size_t)brand_id < kb->n_brands ? kb->brand_entries[brand_id] : 0;
}

int kb_entry_allowed(const struct kb *kb, size_t i, int brand_id)
{
    const struct kb_entry *e = &kb->entries[i];
    if (brand_id == KB_ANY_BRAND || e->n_brands == 0)
        return 1;
    for (size_t b = 0; b < e->n_brands; b++)
        if ((int)e->brands[b] == brand_id)
            return 1;
    return 0;
}

size_t kb_count(const struct kb *kb) { return kb ? kb->n : 0; }
const struct kb_entry *kb_entry_at(const struct kb *kb, size_t i) { return &kb->entries[i]; }
const struct bm25 *kb_index(const struct kb *kb) { return kb ? kb->index : NULL; }
uint64_t kb_generation(const struct kb *kb) { return kb ? kb->generation : 0; }
uint64_t kb_fingerprint(const struct kb *kb) { return kb ? kb->fingerprint : 0; }

size_t kb_memory(const struct kb *kb)
{
    if (!kb)
        return 0;
    return sizeof *kb + kb->cap * sizeof *kb->entries + kb->text_bytes + 2 * kb->nslots * sizeof(uint32_t) +
           bm25_memory(kb->index);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

void kb_free(struct kb *kb)
{
    if (!kb)
        return;
    bm25_free(kb->index);
    free(kb->id_slots);
    free(kb->url_slots);
    free(kb->entries);
    free(kb->brands);
    free(kb->brand_entries);
    free(kb->lines);
    arena_cleanup(&kb->arena);
    free(kb);
}

struct kb *kb_ref(struct kb *kb)
{
    if (kb)
        atomic_fetch_add(&kb->refs, 1);
    return kb;
}

void kb_unref(struct kb *kb)
{
    if (kb && atomic_fetch_sub(&kb->refs, 1) == 1)
        kb_free(kb);
}

void kb_installed_stats(size_t *entries, size_t *bytes)
{
    *entries = atomic_load(&installed_entries);
    *bytes = atomic_load(&installed_bytes);
}

struct kb *app_kb_acquire(struct app *app)
{
    pthread_mutex_lock(&app->kb_lock);
    struct kb *kb = kb_ref(app->kb);
    pthread_mutex_unlock(&app->kb_lock);
    return kb;
}

void app_kb_release(struct kb *kb) { kb_unref(kb); }

int app_kb_swap(struct app *app, struct kb *new_kb)
{
    pthread_mutex_lock(&app->kb_lock);
    struct kb *old = app->kb;
    app->kb = new_kb;
    atomic_store(&installed_entries, kb_count(new_kb));
    atomic_store(&installed_bytes, kb_memory(new_kb));
    pthread_mutex_unlock(&app->kb_lock);
    kb_unref(old); /* freed here, or by the last request still holding it */
    return T_OK;
}

/* ---- loading -------------------------------------------------------------------------------- */

static char *kb_strdup(struct kb *kb, const char *s)
{
    size_t n = strlen(s);
    kb->text_bytes += n + 1;
    return arena_strndup(&kb->arena, s, n);
}

/* Brand id for name, added when new; -1 on OOM or too many brands. */
static int brand_intern(struct kb *kb, const char *name)
{
    int id = kb_brand_id(kb, name);
    if (id >= 0)
        return id;
    if (kb->n_brands >= KB_MAX_BRANDS)
        return -1;
    if (kb->n_brands == kb->brands_cap) {
        size_t cap = kb->brands_cap ? kb->brands_cap * 2 : 16;
        char **p = realloc(kb->brands, cap * sizeof *p);
        if (!p)
            return -1;
        kb->brands = p;
        size_t *c = realloc(kb->brand_entries, cap * sizeof *c);
        if (!c)
            return -1;
        kb->brand_entries = c;
        kb->brands_cap = cap;
    }
    kb->brand_entries[kb->n_brands] = 0;
    char *copy = kb_strdup(kb, name);
    if (!copy)
        return -1;
    kb->brands[kb->n_brands] = copy;
    return (int)kb->n_brands++;
}

static const char *opt_string(json_t *o, const char *key, const char **why)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return NULL;
    if (!json_is_string(v)) {
        *why = key;
        return NULL;
    }
    return json_string_value(v);
}

/* Parses one line into a new entry. Returns T_OK, T_ERR_CONFIG (msg filled) or T_ERR_NOMEM. */
static int parse_entry(struct kb *kb, const char *line, size_t len, char *msg, size_t msgsz)
{
    json_error_t jerr;
    json_t *o;
    int perr = json_parse(line, len, JSON_REJECT_DUPLICATES, &o, &jerr);
    if (perr == T_ERR_NOMEM)
        return perr;
    if (perr) {
        set_err(msg, msgsz, "invalid JSON (column %d): %s", jerr.column, jerr.text);
        return T_ERR_CONFIG;
    }
    int err = T_ERR_CONFIG;
    if (!json_is_object(o)) {
        set_err(msg, msgsz, "an entry must be a JSON object");
        goto out;
    }
    json_t *jid = json_object_get(o, "id");
    if (!json_is_string(jid) || json_string_length(jid) == 0) {
        set_err(msg, msgsz, "\"id\" is required and must be a non-empty string");
        goto out;
    }
    json_t *jbody = json_object_get(o, "body");
    if (!json_is_string(jbody)) {
        set_err(msg, msgsz, "\"body\" is required and must be a string");
        goto out;
    }
    const char *bad = NULL;
    const char *title = opt_string(o, "title", &bad);
    const char *url = opt_string(o, "url", &bad);
    const char *lang = opt_string(o, "lang", &bad);
    const char *brand = opt_string(o, "brand", &bad);
    if (bad) {
        set_err(msg, msgsz, "\"%s\" must be a string", bad);
        goto out;
    }
    json_t *jtags = json_object_get(o, "tags");
    json_t *jbrands = json_object_get(o, "brands");
    const char *arrays[2] = {"tags", "brands"};
    json_t *arrv[2] = {jtags, jbrands};
    for (int a = 0; a < 2; a++) {
        if (!arrv[a] || json_is_null(arrv[a]))
            continue;
        if (!json_is_array(arrv[a])) {
            set_err(msg, msgsz, "\"%s\" must be an array of strings", arrays[a]);
            goto out;
        }
        size_t i;
        json_t *v;
        json_array_foreach(arrv[a], i, v)
        {
            if (!json_is_string(v)) {
                set_err(msg, msgsz, "\"%s\" must be an array of strings", arrays[a]);
                goto out;
            }
        }
    }
    if (kb->n == kb->cap) {
        size_t cap = kb->cap ? kb->cap * 2 : 256;
        struct kb_entry *p = realloc(kb->entries, cap * sizeof *p);
        if (!p) {
            err = T_ERR_NOMEM;
            goto out;
        }
        kb->entries = p;
        kb->cap = cap;
    }
    struct kb_entry *e = &kb->entries[kb->n];
    memset(e, 0, sizeof *e);
    err = T_ERR_NOMEM;
    e->id = kb_strdup(kb, json_string_value(jid));
    e->body = kb_strdup(kb, json_string_value(jbody));
    e->title = kb_strdup(kb, title ? title : "");
    e->lang = kb_strdup(kb, lang && *lang ? lang : "en");
    if (!e->id || !e->body || !e->title || !e->lang)
        goto out;
    if (url && *url) {
        e->url = kb_strdup(kb, url);
        if (!e->url)
            goto out;
        char norm[4096];
        if (text_url_normalize(url, strlen(url), norm, sizeof norm)) {
            e->url_norm = kb_strdup(kb, norm);
            if (!e->url_norm)
                goto out;
        }
    }
    size_t nt = jtags && json_is_array(jtags) ? json_array_size(jtags) : 0;
    if (nt) {
        const char **tags = arena_alloc(&kb->arena, nt * sizeof *tags);
        if (!tags)
            goto out;
        for (size_t i = 0; i < nt; i++) {
            tags[i] = kb_strdup(kb, json_string_value(json_array_get(jtags, i)));
            if (!tags[i])
                goto out;
        }
        e->tags = tags;
        e->n_tags = nt;
    }
    size_t nb = (jbrands && json_is_array(jbrands) ? json_array_size(jbrands) : 0) + (brand && *brand ? 1 : 0);
    if (nb) {
        uint16_t *ids = arena_alloc(&kb->arena, nb * sizeof *ids);
        if (!ids)
            goto out;
        size_t k = 0;
        for (size_t i = 0; i < nb; i++) {
            const char *name = (brand && *brand && i == 0)
                                   ? brand
                                   : json_string_value(json_array_get(jbrands, i - (brand && *brand ? 1 : 0)));
            if (!*name)
                continue;
            int id = brand_intern(kb, name);
            if (id < 0) {
                set_err(msg, msgsz, "too many brands (at most %u)", KB_MAX_BRANDS);
                err = T_ERR_CONFIG;
                goto out;
            }
            int dup = 0;
            for (size_t j = 0; j < k; j++)
                dup |= ids[j] == (uint16_t)id;
            if (!dup) {
                ids[k++] = (uint16_t)id;
                kb->brand_entries[id]++;
            }
        }
        e->brands = ids;
        e->n_brands = k;
    }
    kb->n++;
    err = T_OK;
out:
    json_decref(o);
    return err;
}

static int load_file(struct kb *kb, const char *file, char *err, size_t errsz)
{
    FILE *f = fopen(file, "rb");
    if (!f) {
        set_err(err, errsz, "%s: cannot open: %s", file, strerror(errno));
        return T_ERR_IO;
    }
    struct buf data;
    buf_init(&data, KB_MAX_FILE_BYTES);
    char chunk[65536];
    size_t got;
    int rc = T_OK;
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        rc = buf_append(&data, chunk, got);
        if (rc) {
            set_err(err, errsz, "%s: %s", file,
                    rc == T_ERR_TOO_LARGE ? "file too large for a knowledge base (over 512 MiB)" : "out of memory");
            break;
        }
    }
    if (!rc && ferror(f)) {
        set_err(err, errsz, "%s: read error: %s", file, strerror(errno));
        rc = T_ERR_IO;
    }
    fclose(f);
    if (rc) {
        buf_cleanup(&data);
        return rc == T_ERR_TOO_LARGE ? T_ERR_CONFIG : rc;
    }
    const char *p = data.data ? data.data : "", *end = p + data.len;
    const char *base = strrchr(file, '/');
    base = base ? base + 1 : file;
    kb->fingerprint = text_hash(text_hash(kb->fingerprint, base, strlen(base) + 1), p, data.len);
    size_t lineno = 0;
    while (p < end && !rc) {
        lineno++;
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        size_t len = (size_t)(le - p);
        if (len && p[len - 1] == '\r')
            len--;
        size_t k = 0;
        while (k < len && (p[k] == ' ' || p[k] == '\t'))
            k++;
        if (k < len) {
            char msg[512];
            if (len > KB_MAX_LINE_BYTES) {
                set_err(err, errsz, "%s:%zu: line too long (over %u bytes)", file, lineno, KB_MAX_LINE_BYTES);
                rc = T_ERR_CONFIG;
            } else {
                rc = parse_entry(kb, p, len, msg, sizeof msg);
                if (rc == T_ERR_CONFIG) {
                    set_err(err, errsz, "%s:%zu: %s", file, lineno, msg);
                } else if (rc) {
                    set_err(err, errsz, "%s:%zu: out of memory", file, lineno);
                } else if (kb->n >= UINT32_MAX - 1) {
                    set_err(err, errsz, "%s:%zu: too many entries", file, lineno);
                    rc = T_ERR_CONFIG;
                }
                if (!rc) {
                    /* remember the line for a duplicate-id error */
                    if (kb->n > kb->lines_cap) {
                        size_t cap = kb->lines_cap ? kb->lines_cap * 2 : 256;
                        size_t *q = realloc(kb->lines, cap * sizeof *q);
                        if (!q) {
                            set_err(err, errsz, "%s:%zu: out of memory", file, lineno);
                            rc = T_ERR_NOMEM;
                            break;
                        }
                        kb->lines = q;
                        kb->lines_cap = cap;
                    }
                    kb->lines[kb->n - 1] = lineno;
                }
            }
        }
        p = le + 1;
    }
    buf_cleanup(&data);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The *.jsonl files of dir, sorted byte-wise so every machine loads the same order. */
static int list_dir(const char *dir, char ***out, size_t *n_out, char *err, size_t errsz)
{
    DIR *d = opendir(dir);
    if (!d) {
        set_err(err, errsz, "%s: cannot open directory: %s", dir, strerror(errno));
        return T_ERR_IO;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    int rc = T_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        if (l < 7 || strcmp(de->d_name + l - 6, ".jsonl") != 0 || de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **p = realloc(names, cap * sizeof *p);
            if (!p) {
                rc = T_ERR_NOMEM;
                break;
            }
            names = p;
        }
        size_t need = strlen(dir) + 1 + l + 1;
        names[n] = malloc(need);
        if (!names[n]) {
            rc = T_ERR_NOMEM;
            break;
        }
        snprintf(names[n], need, "%s/%s", dir, de->d_name);
        n++;
    }
    closedir(d);
    if (rc) {
        for (size_t i = 0; i < n; i++)
            free(names[i]);
        free(names);
        set_err(err, errsz, "%s: out of memory", dir);
        return rc;
    }
    if (n)
        qsort(names, n, sizeof *names, cmp_str);
    *out = names;
    *n_out = n;
    return T_OK;
}

struct index_ctx {
    struct bm25_builder *b;
    uint32_t doc;
    unsigned field;
    int err;
};

static void index_token(void *ud, const char *term, size_t len, unsigned flags)
{
    struct index_ctx *ix = ud;
    /* In the url field only path words count: the host is the same for a whole help centre. */
    if (ix->field == F_URL && (flags & TEXT_TOK_HOST))
        return;
    if (!ix->err)
        ix->err = bm25_builder_add(ix->b, ix->doc, ix->field, term, len);
}

static int build_index(struct kb *kb)
{
    static const struct bm25_field fields[F__COUNT] = {
        [F_TITLE] = {KB_W_TITLE, 0.5f},
        [F_BODY] = {KB_W_BODY, 0.75f},
        [F_TAGS] = {KB_W_TAGS, 0.3f},
        [F_URL] = {KB_W_URL, 0.5f},
    };
    struct index_ctx ix = {.b = bm25_builder_new(fields, F__COUNT)};
    if (!ix.b)
        return T_ERR_NOMEM;
    for (size_t i = 0; i < kb->n && !ix.err; i++) {
        const struct kb_entry *e = &kb->entries[i];
        ix.doc = (uint32_t)i;
        int failed = 0;
        ix.field = F_TITLE;
        failed |= text_tokenize(e->title, strlen(e->title), e->lang, 0, index_token, &ix);
        ix.field = F_BODY;
        failed |= text_tokenize(e->body, strlen(e->body), e->lang, 0, index_token, &ix);
        ix.field = F_TAGS;
        for (size_t t = 0; t < e->n_tags; t++)
            failed |= text_tokenize(e->tags[t], strlen(e->tags[t]), e->lang, 0, index_token, &ix);
        ix.field = F_URL;
        if (e->url)
            failed |= text_tokenize(e->url, strlen(e->url), e->lang, TEXT_OPT_URL_ONLY, index_token, &ix);
        if (failed && !ix.err)
            ix.err = T_ERR_NOMEM;
    }
    if (ix.err) {
        bm25_builder_free(ix.b);
        return ix.err;
    }
    kb->index = bm25_build(ix.b, (uint32_t)kb->n);
    return kb->index ? T_OK : T_ERR_NOMEM;
}

int kb_load(const char *path, struct kb **out, char *err, size_t errsz)
{
    *out = NULL;
    if (!path || !*path) {
        set_err(err, errsz, "no knowledge base path given");
        return T_ERR_CONFIG;
    }
    struct stat st;
    if (stat(path, &st) != 0) {
        set_err(err, errsz, "%s: %s", path, strerror(errno));
        return T_ERR_IO;
    }
    struct kb *kb = calloc(1, sizeof *kb);
    if (!kb) {
        set_err(err, errsz, "%s: out of memory", path);
        return T_ERR_NOMEM;
    }
    atomic_init(&kb->refs, 1);
    arena_init(&kb->arena);
    kb->fingerprint = TEXT_HASH_SEED;
    kb->generation = atomic_fetch_add(&kb_generations, 1) + 1;
    char **files = NULL;
    size_t nfiles = 0;
    int rc;
    /* where each file's entries start, for naming the file of a duplicate id */
    size_t *starts = NULL;
    if (S_ISDIR(st.st_mode)) {
        rc = list_dir(path, &files, &nfiles, err, errsz);
        if (rc)
            goto fail;
    } else {
        files = malloc(sizeof *files);
        if (files)
            files[0] = strdup(path);
        if (!files || !files[0]) {
            free(files);
            files = NULL;
            rc = T_ERR_NOMEM;
            set_err(err, errsz, "%s: out of memory", path);
            goto fail;
        }
        nfiles = 1;
    }
    starts = calloc(nfiles + 1, sizeof *starts);
    if (!starts) {
        rc = T_ERR_NOMEM;
        set_err(err, errsz, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < nfiles; i++) {
        starts[i] = kb->n;
        rc = load_file(kb, files[i], err, errsz);
        if (rc)
            goto fail;
    }
    starts[nfiles] = kb->n;
    /* lookup tables: ids must be unique (kb_id is how suggestions and feedback name entries) */
    kb->nslots = 16;
    while (kb->nslots < kb->n * 2 + 2)
        kb->nslots *= 2;
    kb->id_slots = calloc(kb->nslots, sizeof *kb->id_slots);
    kb->url_slots = calloc(kb->nslots, sizeof *kb->url_slots);
    if (!kb->id_slots || !kb->url_slots) {
        rc = T_ERR_NOMEM;
        set_err(err, errsz, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < kb->n; i++) {
        long dup = slots_put(kb, kb->id_slots, kb->entries[i].id, i, 0);
        if (dup >= 0) {
            size_t f = 0;
            while (f + 1 < nfiles && starts[f + 1] <= i)
                f++;
            set_err(err, errsz, "%s:%zu: duplicate id \"%s\"", files[f], kb->lines[i], kb->entries[i].id);
            rc = T_ERR_CONFIG;
            goto fail;
        }
        if (kb->entries[i].url_norm)
            slots_put(kb, kb->url_slots, kb->entries[i].url_norm, i, 1);
    }
    rc = build_index(kb);
    if (rc) {
        set_err(err, errsz, "%s: out of memory while indexing", path);
        goto fail;
    }
    for (size_t i = 0; i < nfiles; i++)
        free(files[i]);
    free(files);
    free(starts);
    free(kb->lines);
    kb->lines = NULL;
    kb->lines_cap = 0;
    *out = kb;
    return T_OK;
fail:
    for (size_t i = 0; i < nfiles; i++)
        free(files[i]);
    free(files);
    free(starts);
    kb_free(kb);
    return rc;
}
