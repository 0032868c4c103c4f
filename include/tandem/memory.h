/* Reply memory: past agent replies with the customer turns before them, shared through Redis, indexed in process.
 *
 * Redis layout (all under TANDEM_REDIS_PREFIX, default "tandem:"):
 *   <prefix>memory:replies   LIST, one JSON record per reply, appended with one RPUSH per import
 *                            (a single command, so an import is all or nothing):
 *                            {"t":"<transcript or feedback id>","i":<turn>,"b":"<brand>","l":"<lang>",
 *                             "c":"<customer turns before the reply>","r":"<reply>","k":"<kb id>"|absent,
 *                             "s":"transcript"|"feedback"}
 * Its length is the version: each sidecar remembers how many records it has indexed and, at most
 * once per MEMORY_CHECK_MS, compares with LLEN; new records are fetched with LRANGE and the
 * in-process index is rebuilt (suggestion requests never scan Redis). A shorter list (trimmed
 * or deleted by an operator) triggers a full reload.
 * Links to KB entries are made when indexing (against the KB loaded at that time): the record's
 * "k" and every URL in the reply that is a KB entry's url (text_url_normalize on both sides). */
#ifndef TANDEM_MEMORY_H
#define TANDEM_MEMORY_H
#include <stddef.h>
#include <stdint.h>

#include "tandem/bm25.h"
#include "tandem/buf.h"

struct kb;
struct store;
struct app;
struct context;

/* How often a sidecar looks for replies imported by others. */
#define MEMORY_CHECK_MS 1000
/* Context kept per reply: the last customer turns before it, capped in count and bytes. */
#define MEMORY_CONTEXT_TURNS 8
#define MEMORY_CONTEXT_BYTES 4000
/* KB entries one reply can cite (a reply may link a sign-in page and an article). */
#define MEMORY_MAX_LINKS 4
/* Records fetched per LRANGE while syncing. */
#define MEMORY_FETCH_BATCH 5000

/* One reply as stored. Strings are borrowed from whatever holds the record (an arena). */
struct memory_record {
    const char *tid;     /* transcript (or feedback) id */
    long turn;           /* index of the reply in its transcript */
    const char *brand;   /* "" when none */
    const char *lang;    /* "en" default */
    const char *context; /* customer turns before the reply, oldest first, "\n"-joined */
    const char *reply;
    const char *kb_id;   /* explicit link (feedback) or NULL */
    const char *source;  /* "transcript" or "feedback" */
};

/* A growable list of records whose strings live in its arena. Caller storage. */
struct memory_records {
    struct memory_record *v;
    size_t n, cap;
    struct arena arena;
};
void memory_records_init(struct memory_records *r);
void memory_records_cleanup(struct memory_records *r);

/* Parses a POST /v1/transcripts body (application/x-ndjson, one transcript per line:
 * {"id": "...", "brand": "...", "lang": "..", "messages": [{"role": "...", "text": "..."}]})
 * and appends one record per agent reply that has at least one customer turn before it.
 * Blank lines are skipped. On the first bad line returns T_ERR_BAD_JSON with
 * "line N: <reason>" in err and removes every record this call added. An empty body (no
 * transcript at all) is T_ERR_BAD_JSON too. *n_transcripts gets the transcripts read. */
int memory_parse_transcripts(const char *body, size_t len, struct memory_records *out, size_t *n_transcripts,
                             char *err, size_t errsz);
/* The context of a live conversation as memory stores it (the last MEMORY_CONTEXT_TURNS
 * customer turns, oldest first, "\n"-joined, within MEMORY_CONTEXT_BYTES): what the feedback
 * module passes to memory_add_reply. Appends to out; T_OK, T_ERR_NOMEM, T_ERR_TOO_LARGE. */
int memory_context_of(const struct context *ctx, struct buf *out);
/* Serialises r as the Redis record JSON into out. T_OK, T_ERR_NOMEM or T_ERR_TOO_LARGE. */
int memory_record_to_json(const struct memory_record *r, struct buf *out);
/* Parses a Redis record and appends it to out; T_OK, T_ERR_BAD_JSON (skipped by callers), T_ERR_NOMEM. */
int memory_record_from_json(const char *json, size_t len, struct memory_records *out);

/* An immutable snapshot: entries, a BM25 index over their contexts, per-brand citation counts.
 * Thread-safe to read; reference counted. */
struct memory_entry {
    char id[20];         /* "m_" + 16 hex: stable for the same record on every sidecar */
    const char *brand;
    const char *lang;
    const char *context;
    const char *reply;
    const char *kb_id;   /* the main linked KB entry's id (one of the reply's brand if any), NULL when none */
    long kb_idx;         /* its index in the kb the snapshot was built with, -1 when none */
    long links[MEMORY_MAX_LINKS]; /* every KB entry the reply cites (kb indexes), kb_idx among them */
    size_t n_links;
    const char *source;
};
struct memory;

/* Builds a snapshot from records (copied), linking to kb (may be NULL). Records with the same
 * id (a transcript imported twice) count once. New reference or NULL on OOM. */
struct memory *memory_build(const struct memory_record *recs, size_t n, const struct kb *kb);
struct memory *memory_ref(struct memory *m);
void memory_unref(struct memory *m);

size_t memory_count(const struct memory *m);
const struct memory_entry *memory_entry_at(const struct memory *m, size_t i);
const struct bm25 *memory_index(const struct memory *m);
/* The kb generation the links were made with (kb_generation), 0 for none. */
uint64_t memory_kb_generation(const struct memory *m);
/* Records indexed (the Redis list length this snapshot reflects). */
size_t memory_version(const struct memory *m);
size_t memory_bytes(const struct memory *m);
/* 1 when entry i belongs to brand (case-blind; "" or NULL brand = entries without a brand). */
int memory_entry_brand_is(const struct memory *m, size_t i, const char *brand);

/* How often agents of brand cited each KB entry: kb indexes and counts, most cited first
 * (ties by kb index). Borrowed arrays, valid for the snapshot's life; *total gets the sum.
 * Returns the number of distinct entries (0 when none). */
size_t memory_popularity(const struct memory *m, const char *brand, const long **kb_idx, const uint32_t **counts,
                         uint32_t *total);
/* A reply of brand linked to kb entry kb_idx (the one with the smallest id, so every sidecar
 * picks the same); -1 when none. */
long memory_representative(const struct memory *m, const char *brand, long kb_idx);

/* The process's view of the shared memory: the current snapshot and the sync state. */
struct memory_store;
struct memory_store *memory_store_new(void);
void memory_store_free(struct memory_store *ms);
/* app->memory, or the process-wide default store when the app has none. Never NULL (OOM aborts
 * nothing: the default store is static). */
struct memory_store *app_memory(struct app *app);

/* The current snapshot (new reference; memory_unref), brought up to date first when the last
 * check is older than MEMORY_CHECK_MS (or force), or when kb is not the kb the snapshot was
 * linked with. Redis errors keep the old snapshot. s may be NULL (no sync). Returns NULL only
 * on OOM. Thread-safe; one thread syncs at a time, the others use the previous snapshot. */
struct memory *memory_store_acquire(struct memory_store *ms, struct store *s, const struct kb *kb, int force);

/* Process-wide figures for /metrics. */
struct memory_stats {
    size_t replies;           /* entries of the newest snapshot */
    size_t bytes;             /* its size, index included */
    unsigned long syncs;      /* checks of the shared list */
    unsigned long sync_errors;
    unsigned long appended;   /* replies this process wrote (imports, feedback) */
};
void memory_stats(struct memory_stats *st);

/* Appends records to Redis in one RPUSH (all or nothing). A big batch can take Redis longer
 * than the usual command timeout: callers raise it (store_set_timeout) around the call.
 * T_OK, T_ERR_UNAVAILABLE, T_ERR_NOMEM, T_ERR_INTERNAL (Redis refused). */
int memory_store_append(struct store *s, const struct memory_records *recs);

/* Adds one reply (an accepted or edited suggestion) to the shared memory. ref_id names it (the
 * suggestion or feedback id); context is the customer turns it answered; kb_id may be NULL.
 * Same errors as memory_store_append. */
int memory_add_reply(struct store *s, const char *ref_id, const char *brand, const char *lang, const char *context,
                     const char *reply, const char *kb_id);
#endif
