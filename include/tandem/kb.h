/* The knowledge base: entries loaded from JSONL (file or directory), brand scoping, and the search index. */
#ifndef TANDEM_KB_H
#define TANDEM_KB_H
#include <stddef.h>
#include <stdint.h>

#include "tandem/bm25.h"

struct app;

/* One entry. All strings are owned by the kb and live as long as it does. */
struct kb_entry {
    const char *id;
    const char *title;    /* "" when absent */
    const char *body;
    const char *url;      /* NULL when absent */
    const char *url_norm; /* text_url_normalize(url), NULL when absent */
    const char *lang;     /* "en" when absent */
    const char *const *tags;
    size_t n_tags;
    const uint16_t *brands; /* brand ids (kb_brand_id); none = the entry serves every brand */
    size_t n_brands;
};

/* Field weights of the index: an entry's title and URL words say what it is about; a long
 * body mentions many things in passing, so one body word counts for little. */
#define KB_W_TITLE 3.0f
#define KB_W_BODY 0.2f
#define KB_W_TAGS 1.0f
#define KB_W_URL 2.0f

/* Hard limits: a KB is operator-supplied, but a wrong path (a log file, a dump) must fail
 * clearly rather than eat the machine. */
#define KB_MAX_FILE_BYTES (512u << 20)
#define KB_MAX_LINE_BYTES (8u << 20)
#define KB_MAX_BRANDS 65535

struct kb;

/* Loads path: a JSONL file, or a directory whose *.jsonl files are read in byte-wise sorted
 * order. One entry per line: "id" (non-empty string, unique) and "body" (string) required;
 * optional "title", "url", "lang" (strings), "tags" (array of strings), "brand" (string) or
 * "brands" (array of strings). Blank lines are skipped. On T_OK *out is a new kb with one
 * reference (kb_unref() or kb_free()). On error (T_ERR_IO, T_ERR_CONFIG for a bad line,
 * T_ERR_NOMEM) writes "<file>:<line>: <reason>" (or "<path>: <reason>") to err and loads
 * nothing. */
int kb_load(const char *path, struct kb **out, char *err, size_t errsz);
/* Frees kb at once, whatever its references (start-up failure paths, tests). NULL no-op. */
void kb_free(struct kb *kb);
/* Reference counting for SIGHUP reloads: requests hold a reference while they use a kb; the
 * last kb_unref() frees it. Thread-safe. kb_ref returns kb; both accept NULL. */
struct kb *kb_ref(struct kb *kb);
void kb_unref(struct kb *kb);

/* Read-only accessors; thread-safe. */
size_t kb_count(const struct kb *kb);
const struct kb_entry *kb_entry_at(const struct kb *kb, size_t i); /* borrowed; i < kb_count */
/* Index of the entry with this id, or -1. */
long kb_find_id(const struct kb *kb, const char *id);
/* Index of the entry whose normalised url equals norm (see text_url_normalize), or -1. When
 * several entries share a url, the first in load order. */
long kb_find_url(const struct kb *kb, const char *norm);
/* Finds the KB entry that a text links to: the first URL in text whose normalised form (or,
 * failing that, the form without its query string) is an entry's url. -1 when none. */
long kb_link_text(const struct kb *kb, const char *text, size_t len);
/* Every KB entry text links to, in order of appearance, without repeats: writes up to max
 * indexes to out and returns how many were written. */
size_t kb_link_all(const struct kb *kb, const char *text, size_t len, long *out, size_t max);
/* Brand id for a brand name (compared case-blind), or -1 when no entry names that brand. */
int kb_brand_id(const struct kb *kb, const char *brand);
/* Number of entries that name brand_id (0 for an unknown id). */
size_t kb_brand_entries(const struct kb *kb, int brand_id);
/* 1 when entry i may be suggested in a conversation of brand_id: it has no brand, or has
 * that one. brand_id -1 (unknown brand) allows only entries without a brand; use
 * KB_ANY_BRAND for conversations without a brand (everything allowed). */
#define KB_ANY_BRAND (-2)
int kb_entry_allowed(const struct kb *kb, size_t i, int brand_id);
/* The search index over title, body, tags and URL path words (stemmed in each entry's lang). */
const struct bm25 *kb_index(const struct kb *kb);
/* Bytes used by entries and index, for /metrics and the bench. */
size_t kb_memory(const struct kb *kb);
/* Load generation: differs between two kbs loaded by one process. */
uint64_t kb_generation(const struct kb *kb);
/* Hash of the files' names and bytes: the same KB gives the same value on every sidecar (shared
 * caches are keyed by it). 0 for NULL. */
uint64_t kb_fingerprint(const struct kb *kb);

/* The app's current kb (app.h: kb, kb_lock). acquire returns a new reference or NULL when no
 * KB is loaded; release drops it (NULL ok). swap installs new_kb (taking over its reference;
 * may be NULL) and drops the app's reference to the old one, which is freed once the last
 * request using it releases it. Returns T_OK. */
struct kb *app_kb_acquire(struct app *app);
void app_kb_release(struct kb *kb);
int app_kb_swap(struct app *app, struct kb *new_kb);
/* Entries and bytes of the kb installed by the last app_kb_swap (0 when none). Thread-safe. */
void kb_installed_stats(size_t *entries, size_t *bytes);
#endif
