/* Alerts for the agent: frustration, fraud, billing errors, cancellation, legal, vulnerable customers,
 * repeat contact; each with a reason and the (redacted) message that triggered it. */
#ifndef TANDEM_ALERTS_H
#define TANDEM_ALERTS_H
#include <stddef.h>
#include <stdint.h>

#include "tandem/context.h"
#include "tandem/phrase.h"
#include "tandem/sentiment.h"

struct json_t;
struct redact_map;

#define ALERT_TYPE_MAX 48     /* "vulnerable_customer", or an operator's own snake_case type */
#define ALERT_RULE_ID_MAX 64
#define ALERT_EXCERPT_MAX 200 /* bytes of context kept around the trigger, before the ellipses */

enum alert_severity { ALERT_LOW = 0, ALERT_MEDIUM, ALERT_HIGH };

/* ---- rules ------------------------------------------------------------------------------ */

/* Alert rules: data/alert_rules.json (compiled in), optionally merged with an operator's file of
 * the same shape. Immutable once loaded; thread-safe to share. */
struct alert_rules;

/* Loads the built-in rules, then merges the file at extra_path when it is not NULL or "".
 * On T_OK *out is new (alert_rules_free()). Errors: T_ERR_CONFIG with a message naming the file
 * (and the JSON line/column, rule id or phrase) in err (size errsz), T_ERR_IO when the file
 * cannot be read, T_ERR_NOMEM. */
int alert_rules_load(const char *extra_path, struct alert_rules **out, char *err, size_t errsz);
/* Same, from in-memory JSON documents (for tests): builtin is required, extra may be NULL. */
int alert_rules_load_json(const char *builtin, const char *extra, struct alert_rules **out,
                          char *err, size_t errsz);
void alert_rules_free(struct alert_rules *r);
size_t alert_rules_count(const struct alert_rules *r);
/* Contacts in its window that make a repeat contact (repeat_contact.min_contacts; 2 for NULL). */
unsigned alert_rules_repeat_min(const struct alert_rules *r);

/* Process-wide rules. alert_rules_global_init() is meant for start-up (main): it loads the
 * built-in rules merged with path (the TANDEM_ALERT_RULES setting; NULL reads the env var
 * itself) and fails with err filled when they are bad, so a broken file stops start-up.
 * alert_rules_global() returns them, loading them on first use if init was never called; it
 * returns NULL when loading failed (logged once). Borrowed until exit. Call the init before
 * worker threads start: a second call frees the rules it replaces (no reload while serving). */
int alert_rules_global_init(const char *path, char *err, size_t errsz);
const struct alert_rules *alert_rules_global(void);

/* ---- one conversation, analysed once ---------------------------------------------------- */

/* Each message redacted (one redact map for the conversation, so placeholders agree), tokenised
 * and, for customer messages, scored. The summary and the alerts share this work. */
struct alert_msg {
    const struct ctx_message *m; /* borrowed from the context */
    char *red;                    /* redacted text (owned) */
    size_t red_len;
    struct phrase_text tok;       /* tokens of red */
    struct sentiment_score sent;  /* customer messages only (else zeros) */
};

struct alert_input {
    const struct context *ctx; /* borrowed */
    struct alert_msg *msgs;    /* same order as ctx->messages (oldest first) */
    size_t n;
    struct redact_map *map;    /* owned */
    size_t *cust;              /* indexes of customer messages, oldest first */
    size_t n_cust;
    struct sentiment_score *cust_sent; /* their scores, same order */
    struct sentiment_summary mood;     /* over the last SENTIMENT_WINDOW customer messages */
};

/* Analyses ctx (borrowed: must outlive in). T_OK, T_ERR_NOMEM or T_ERR_TOO_LARGE (redaction).
 * Call alert_input_cleanup() either way. lx NULL means the built-in lexicon. */
int alert_input_init(struct alert_input *in, const struct context *ctx,
                     const struct sentiment_lexicon *lx);
void alert_input_cleanup(struct alert_input *in);

/* ---- contacts from history -------------------------------------------------------------- */

/* Past contacts within days before now_ms (entries for this very conversation and repeated
 * conv_ids counted once). */
size_t alert_count_contacts(const struct context *ctx, int64_t now_ms, unsigned days);

/* ---- alerts ----------------------------------------------------------------------------- */

struct alert {
    char type[ALERT_TYPE_MAX];
    enum alert_severity severity;
    char rule[ALERT_RULE_ID_MAX];   /* rule id, or "sentiment" / "history" */
    char *reason;                   /* owned */
    char message_id[STREAM_ID_MAX]; /* "" when not tied to one message (history) */
    char *excerpt;                  /* redacted snippet, owned; "" when none */
};

struct alert_list {
    struct alert *items; /* highest severity first, then by type order of the rules */
    size_t n;
};

/* Evaluates rules over in: phrase rules on messages of the rules' roles (negation-aware, newest
 * match per type wins among equal severities), frustration from in->mood, repeat contact from
 * the history (now_ms is "now", a parameter for testability). One alert per type, the most
 * severe. out is caller storage, filled on T_OK (alert_list_cleanup() it); T_ERR_NOMEM. */
int alerts_evaluate(const struct alert_rules *rules, const struct alert_input *in, int64_t now_ms,
                    struct alert_list *out);
void alert_list_cleanup(struct alert_list *l);
/* "low" | "medium" | "high" (static). */
const char *alert_severity_name(enum alert_severity s);
/* JSON array [{"type","severity","reason","message_id","excerpt","rule"}] (message_id null when
 * none). New reference; NULL on OOM. */
struct json_t *alert_list_to_json(const struct alert_list *l);
#endif
