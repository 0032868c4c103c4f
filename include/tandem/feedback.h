/* Feedback on suggestions: validation, edit distance, the idempotent stream write, and the rejection table.
 *
 * Redis keys (prefix P = TANDEM_REDIS_PREFIX, default "tandem:"). Every key the feedback script
 * touches carries the hash tag {P feedback}, i.e. it lives in the Redis Cluster slot of the
 * contract's stream P"feedback", so the write is one atomic script on a cluster too:
 *   P feedback                                  STREAM (CONTRACT.md): one entry per stored feedback
 *                                               call: suggestion_id, conversation_id, kb_id, engine,
 *                                               action, final_text (redacted), edit_distance, agent_id,
 *                                               ts; extras: source, memory_id, brand, lang, feedback_id,
 *                                               reason (redacted), time_to_action_ms, first_action
 *                                               ("1" for the first action on that suggestion),
 *                                               suggestion_chars, edit_distance_capped ("1" when the
 *                                               distance is an upper bound, see below). Never trimmed.
 *   P feedback:{P feedback}:id:<feedback_id>    STRING "<entry id> <suggestion id>", TTL 7 days: a
 *                                               retried feedback_id answers with the first entry
 *   P feedback:{P feedback}:acted:<SID>         STRING "1", TTL 2 days: the suggestion has had an
 *                                               action (time to first action counts once)
 *   P feedback:{P feedback}:rejections          STREAM, MAXLEN ~ FEEDBACK_REJECT_MAX_RECORDS: one
 *                                               entry per rejection: target (kb id, else memory id),
 *                                               brand, terms (hex hashes of the stemmed words of the
 *                                               customer turns it answered; never the text)
 *   P feedback:{P feedback}:rejections:epoch    STRING: the id of the entry that (re)created that
 *                                               stream; a new value tells sidecars to reload
 *   P quality:{P feedback}:engine|kb|agent      HASHes of quality counters: see quality.h
 * Read, never written: P sugg:<SID> (api_suggest.c), P memory:replies (memory.h, via
 * memory_add_reply). */
#ifndef TANDEM_FEEDBACK_H
#define TANDEM_FEEDBACK_H
#include <stddef.h>
#include <stdint.h>

#include "tandem/bm25.h"
#include "tandem/buf.h"
#include "tandem/context.h"

struct json_t;
struct store;

/* ---- limits ---------------------------------------------------------------------------------- */

/* final_text: far above any reply an agent sends, small enough to redact and compare quickly. */
#define FEEDBACK_MAX_TEXT_BYTES (32u << 10)
#define FEEDBACK_MAX_REASON_BYTES 1000
#define FEEDBACK_MAX_AGENT_ID_BYTES 128
#define FEEDBACK_MAX_ID_LEN 128 /* feedback_id: 1-128 of [A-Za-z0-9._:-] (UUIDs fit) */
#define FEEDBACK_SID_BUF 20      /* "sg_" + 16 hex + NUL */
/* Edit distance work bound: quadratic in this (16 M cells, a few ms). */
#define FEEDBACK_DISTANCE_MAX_CPS 4000
/* time_to_action_ms and derived times are capped at the suggestion record's life (24 h). */
#define FEEDBACK_MAX_TTA_MS 86400000LL
/* A client clock this far ahead of ours still counts as "now" for shown_at_ms. */
#define FEEDBACK_CLOCK_SKEW_MS 300000LL
#define FEEDBACK_ID_TTL_S 604800    /* retries of a feedback_id are recognised for 7 days */
#define FEEDBACK_ACTED_TTL_S 172800 /* outlives the 24 h suggestion record */
/* Rejection table: records kept (Redis and in process), words per record, records per target
 * and brand that are compared per request. Bounds memory (~3 MB) and per-request work. */
#define FEEDBACK_REJECT_MAX_RECORDS 8192
#define FEEDBACK_REJECT_MAX_TERMS 48
#define FEEDBACK_REJECT_MAX_PER_TARGET 32
/* A rejection counts for situations at least this similar (weighted cosine of words, 0..1); the
 * score of a rejected target is divided by 1 + FEEDBACK_REJECT_WEIGHT * (sum of similarities):
 * one rejection in the same situation halves it. */
#define FEEDBACK_REJECT_SIM_MIN 0.2
#define FEEDBACK_REJECT_WEIGHT 1.0
/* Other sidecars' rejections are read at most this often from the feedback paths (the suggestion
 * path reads them whenever quality_note_shown() sees a new one). */
#define FEEDBACK_REJECT_CHECK_MS 1000

/* ---- request validation ---------------------------------------------------------------------- */

enum feedback_action { FEEDBACK_ACCEPTED, FEEDBACK_EDITED, FEEDBACK_REJECTED };

/* "accepted", "edited", "rejected" (static). */
const char *feedback_action_name(enum feedback_action a);

/* A validated request body. Strings are borrowed from the JSON it was parsed from. */
struct feedback_input {
    enum feedback_action action;
    const char *final_text;      /* NULL when absent */
    size_t final_len;
    const char *agent_id;        /* NULL when absent */
    const char *feedback_id;     /* NULL when absent: every call is an entry */
    const char *reason;          /* NULL when absent */
    const char *conversation_id; /* NULL when absent; else must be the suggestion's */
    int64_t shown_at_ms;         /* -1 when absent */
    int64_t time_to_action_ms;   /* -1 when absent */
};

/* 1 when s is "sg_" followed by 16 lowercase hex digits (the engine's suggestion ids). */
int feedback_valid_sid(const char *s);
/* 1 when s is a valid feedback_id. */
int feedback_valid_id(const char *s);
/* 1 when s[0..len) is valid UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
int feedback_utf8_valid(const char *s, size_t len);

/* Validates the body of POST /v1/suggestions/{SID}/feedback (body is a JSON object):
 * action (required: accepted|edited|rejected), final_text (required for edited; optional
 * otherwise; non-blank, <= FEEDBACK_MAX_TEXT_BYTES, UTF-8 without NUL), agent_id (optional,
 * 1-128 bytes, no control characters), feedback_id (optional, feedback_valid_id), reason
 * (optional, <= FEEDBACK_MAX_REASON_BYTES), conversation_id (optional, a conversation id),
 * shown_at_ms (optional unix ms, not after now_ms + FEEDBACK_CLOCK_SKEW_MS), time_to_action_ms
 * (optional, 0..FEEDBACK_MAX_TTA_MS). null counts as absent; any other field is an error.
 * Returns T_OK, or T_ERR_BAD_JSON with a sentence for the client in msg. */
int feedback_parse(const struct json_t *body, int64_t now_ms, struct feedback_input *out, char *msg,
                   size_t msgsz);

/* ---- edit distance --------------------------------------------------------------------------- */

/* Code points of s[0..len) (an invalid byte counts as one). */
size_t feedback_codepoints(const char *s, size_t len);

/* Levenshtein distance between a and b counted in Unicode code points (not bytes, not grapheme
 * clusters: "é" precomposed vs "e" + U+0301 is 2; an emoji is 1, a ZWJ sequence is each of its
 * code points; no normalisation). An invalid UTF-8 byte is one code point of its own. The common
 * prefix and suffix are free; of what differs, the first FEEDBACK_DISTANCE_MAX_CPS code points of
 * each side are compared exactly and the rest adds the longer remainder: the result is then an
 * upper bound and *capped is set to 1 (else 0). Returns T_OK or T_ERR_NOMEM. Thread-safe. */
int feedback_edit_distance(const char *a, size_t alen, const char *b, size_t blen, size_t *dist, int *capped);

/* ---- records ----------------------------------------------------------------------------------- */

/* A suggestion as recorded in P sugg:<SID>. Strings borrowed from whoever filled it; "" when the
 * field was missing (kb_id, memory_id: NULL). */
struct feedback_suggestion {
    const char *sid;
    const char *conversation_id;
    const char *engine;
    const char *source;
    const char *text;
    const char *kb_id;
    const char *memory_id;
    const char *brand;
    const char *lang;
    const char *context;
    int64_t created_ms; /* -1 when missing */
};

/* The entry one feedback call writes, derived from the input and the suggestion. */
struct feedback_entry {
    const struct feedback_input *in;     /* borrowed */
    const struct feedback_suggestion *sg; /* borrowed */
    struct buf final_redacted;           /* final text (default: the suggestion's for accepted), redacted */
    int has_final;
    struct buf reason_redacted;
    long edit_distance;                  /* -1 when there is no final text (rejected without one) */
    int distance_capped;
    unsigned edit_ratio_permille;        /* distance / max(code points of both), 0..1000 */
    size_t suggestion_chars;
    int64_t time_to_action_ms;           /* client's, else now - shown_at, else now - created; -1 unknown */
    int64_t ts_ms;
    struct buf terms;                    /* rejected: space-separated hex term hashes of the context */
};

/* Builds e (caller storage; feedback_entry_cleanup() after any return). The final text is
 * redacted (redact.h) before it goes anywhere. Returns T_OK, T_ERR_NOMEM or T_ERR_TOO_LARGE. */
int feedback_entry_build(const struct feedback_input *in, const struct feedback_suggestion *sg, int64_t now_ms,
                         struct feedback_entry *e);
void feedback_entry_cleanup(struct feedback_entry *e);

/* The reply as the reply memory should keep it: text with the customer's full name, first name
 * and the agent's name (whole words, >= 2 bytes; any may be NULL) turned back into
 * {{customer.name}}, {{customer.first_name}} and {{agent.name}}, so the next customer gets their
 * own name. Appends to out; T_OK, T_ERR_NOMEM, T_ERR_TOO_LARGE. */
int feedback_templatize(const char *text, const char *full_name, const char *first_name, const char *agent_name,
                        struct buf *out);

/* Up to max distinct hashes (text_hash of each stemmed term) of text's words in lang, in text
 * order, *n of them; T_ERR_NOMEM when the text could not be analysed. The rejection table
 * compares situations with these. */
int feedback_context_terms(const char *text, const char *lang, uint64_t *out, size_t max, size_t *n);

/* ---- Redis --------------------------------------------------------------------------------------- */

/* "<P><kind>:{<P>feedback}:<name>": a key in the feedback stream's cluster slot. Returns the
 * length, or -1 when it does not fit. */
int feedback_key(char *out, size_t outsz, const char *kind, const char *name);

/* Reads the suggestion record of sid and, when feedback_id is not NULL, the entry it was already
 * stored as, in one round trip. *found is 0 when the suggestion is unknown or expired. When the
 * feedback_id was seen, dup_entry gets its entry id and dup_sid the suggestion it was for
 * (else both ""). Strings of sg live in a. T_OK, T_ERR_UNAVAILABLE, T_ERR_NOMEM, T_ERR_INTERNAL. */
int feedback_fetch(struct store *s, const char *sid, const char *feedback_id, struct arena *a,
                   struct feedback_suggestion *sg, int *found, char dup_entry[STREAM_ID_MAX],
                   char dup_sid[FEEDBACK_SID_BUF]);

/* Stores e atomically (one script): unless its feedback_id was stored already, XADD to the
 * feedback stream, remember the feedback_id, bump the quality counters of the engine, the KB
 * entry and (per_agent) the agent, and for a rejection with a target add it to the rejection
 * stream. Either all of that happens or nothing (the first write is the one Redis refuses when out
 * of memory or read-only). entry_id gets the stream entry id (the first one for a duplicate;
 * *duplicate = 1, dup_sid = the suggestion it was stored for). Errors: T_ERR_UNAVAILABLE (Redis
 * down, OOM, read-only, loading), T_ERR_INTERNAL (an unexpected reply), T_ERR_NOMEM. */
int feedback_store(struct store *s, const struct feedback_entry *e, int per_agent, char entry_id[STREAM_ID_MAX],
                   int *duplicate, char dup_sid[FEEDBACK_SID_BUF]);

/* Process-wide counters for /metrics. */
struct feedback_stats {
    unsigned long stored[3]; /* by action */
    unsigned long duplicates;
    unsigned long learned;   /* replies added to the reply memory */
    unsigned long rejections_loaded;
};
void feedback_stats(struct feedback_stats *st);
void feedback_count_stored(enum feedback_action a, int duplicate);
void feedback_count_learned(void);

/* ---- the rejection table: rejected suggestions rank lower in similar situations ---------------- */

/* One rejection as the table holds it (terms sorted or not; copied). */
struct feedback_rejection {
    const char *brand;  /* "" for none; compared case-blind */
    const char *target; /* kb id, or memory id for unlinked memory replies */
    const uint64_t *terms;
    size_t n_terms;
};

/* Replaces the process's table with recs (the newest last; only the last
 * FEEDBACK_REJECT_MAX_RECORDS are kept). For tests and the sync. T_OK or T_ERR_NOMEM. */
int feedback_rejections_install(const struct feedback_rejection *recs, size_t n);
/* Empties the table and forgets what was read from Redis (tests). */
void feedback_rejections_reset(void);
/* Records in the current table. */
size_t feedback_rejections_count(void);

/* Brings the table up to date with P feedback:{..}:rejections: the first time the newest
 * FEEDBACK_REJECT_MAX_RECORDS, then what came after the last entry seen. newest_id and epoch
 * (NULL: "") are the stream's newest entry id and its epoch key when the caller knows them
 * (quality_note_shown): nothing is read when the table has them already; "" (no stream) or another
 * epoch (the stream was deleted and written again) empties the table first. newest_id NULL: both
 * are read here, at most once per FEEDBACK_REJECT_CHECK_MS unless force. One thread syncs at a
 * time; the others return at once. Redis errors keep the old table. T_OK or the Redis error. */
int feedback_rejections_sync(struct store *s, const char *newest_id, const char *epoch, int force);

/* Per request (the local engine): the rejections of brand, compared with the request's weighted
 * query terms, in *out; *out is NULL when the table has none for brand or nq is 0 (nothing is
 * then penalised). T_ERR_NOMEM when memory is short: an answer that ignored what agents
 * rejected would be a wrong one. No I/O; thread-safe. */
struct feedback_reject_query;
int feedback_reject_query_new(const char *brand, const struct bm25_qterm *q, size_t nq,
                              struct feedback_reject_query **out);
/* Factor in (0, 1] for a candidate whose kb id (or memory id) is target: 1 / (1 + W * sum of the
 * similarities >= FEEDBACK_REJECT_SIM_MIN of its newest FEEDBACK_REJECT_MAX_PER_TARGET rejections). */
double feedback_reject_factor(const struct feedback_reject_query *rq, const char *target);
void feedback_reject_query_free(struct feedback_reject_query *rq);
#endif
