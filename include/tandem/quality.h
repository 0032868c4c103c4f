/* Quality figures of suggestions per engine, KB entry and agent, their /metrics and JSON, and the quality report.
 *
 * Redis (prefix P, tag T = {P feedback} as in feedback.h: the feedback script updates these in the
 * same atomic step as its stream entry):
 *   P quality:T:engine   HASH "<engine>|<figure>"  -> integer
 *   P quality:T:kb       HASH "<kb id>|<figure>"   (suggestions with a KB entry)
 *   P quality:T:agent    HASH "<agent id>|<figure>" (only while TANDEM_QUALITY_PER_AGENT=1)
 * Figures: shown (suggestions recorded for feedback: quality_note_shown), accepted, edited,
 * rejected, dist_sum and dist_n (edit distance of accepted and edited replies), ratio_sum (their
 * distance / length, per mille), tta_sum and tta_n (time to the first action on a suggestion,
 * ms). Field names are split at their last '|', so any id works. All-time totals: every sidecar
 * shares them; ?since= figures are computed from the feedback stream instead. */
#ifndef TANDEM_QUALITY_H
#define TANDEM_QUALITY_H
#include <stddef.h>
#include <stdint.h>

#include "tandem/buf.h"
#include "tandem/engine.h"

struct json_t;
struct store;
struct kb;
struct memory;

/* Feedback entries one ?since= query or report reads (newest first); the answer says when the
 * scan stopped there ("truncated"). */
#define QUALITY_SCAN_MAX 10000
/* Report: texts clustered (feedback finals + unlinked imported replies), groups compared pairwise,
 * examples per item and their length. */
#define QUALITY_REPORT_MAX_TEXTS 20000
#define QUALITY_REPORT_MAX_GROUPS 300
#define QUALITY_EXAMPLES 3
#define QUALITY_EXAMPLE_MAX_CPS 600
/* Report thresholds: a KB entry needs this many actions to be judged; then it is a rewrite
 * candidate when this share is rejected or its replies change this much on average. */
#define QUALITY_DEFAULT_MIN_ACTIONS 5
#define QUALITY_REJECT_RATE 0.3
#define QUALITY_EDIT_RATIO 0.3
/* Clustering: words kept per text, Jaccard similarity that joins two groups, and the least
 * words a text needs to be a macro ("ok, thanks!" is not one). */
#define QUALITY_CLUSTER_TERMS 64
#define QUALITY_CLUSTER_JACCARD 0.6
#define QUALITY_CLUSTER_MIN_TERMS 3
#define QUALITY_DEFAULT_MIN_CLUSTER 3
/* A cluster with this share of its words (and at least 3) in one KB entry's body is that entry, not a new macro. */
#define QUALITY_KB_MATCH_SHARE 0.6
#define QUALITY_DEFAULT_LIMIT 20
#define QUALITY_MAX_LIMIT 100

enum quality_dim { QUALITY_BY_ENGINE, QUALITY_BY_KB, QUALITY_BY_AGENT };

/* The Redis key of one dimension's hash. Returns the length or -1 when it does not fit. */
int quality_key(char *out, size_t outsz, enum quality_dim d);
/* Whether figures are kept per agent too (TANDEM_QUALITY_PER_AGENT, set at start-up; off by
 * default). */
void quality_set_per_agent(int on);
int quality_per_agent(void);

struct quality_figures {
    long long shown, accepted, edited, rejected;
    long long dist_sum, dist_n, ratio_sum, tta_sum, tta_n;
};
/* The figures as JSON: counts, actions, acceptance_rate ((accepted + edited) / actions),
 * used_per_shown ((accepted + edited) / shown), mean_edit_distance, mean_edit_ratio,
 * mean_time_to_first_action_ms; a rate without a denominator is null, and so is shown when
 * with_shown is 0. New reference, NULL on OOM. */
struct json_t *quality_figures_json(const struct quality_figures *f, int with_shown);

/* Figures by name. */
struct quality_table;
struct quality_table *quality_table_new(void);
void quality_table_free(struct quality_table *t);
/* Adds value to figure of name ("shown", "accepted", ... as in the hash fields; unknown figures
 * are ignored). T_OK or T_ERR_NOMEM. */
int quality_table_add(struct quality_table *t, const char *name, size_t name_len, const char *figure,
                      long long value);
/* Adds one hash field "name|figure" (split at the last '|'; a field without one is ignored). */
int quality_table_add_field(struct quality_table *t, const char *field, size_t len, long long value);
size_t quality_table_count(const struct quality_table *t);
/* Entry i (in insertion order): name (borrowed, valid for t's life) and figures. */
const char *quality_table_name(const struct quality_table *t, size_t i);
const struct quality_figures *quality_table_at(const struct quality_table *t, size_t i);
/* NULL when name has no entry. */
const struct quality_figures *quality_table_find(const struct quality_table *t, const char *name);

/* since: unix milliseconds (digits) or an ISO 8601 date / UTC time: "2026-11-23",
 * "2026-11-23T10:00", "2026-11-23T10:00:00.5Z", "2026-11-23T10:00:00+01:00". 0 on success. */
int quality_parse_since(const char *s, int64_t *ms);

/* Counts n suggestions of engine as shown (engine and each one's KB entry), in one round trip
 * that also returns the newest rejection id, with which the process's rejection table is
 * brought up to date (feedback_rejections_sync): call it where suggestions are recorded for
 * feedback. Errors are logged and returned; the suggestions are served either way. */
int quality_note_shown(struct store *s, const char *engine, const struct suggestion *sg, size_t n);

/* /metrics part (metrics_register it at start-up): per engine, the fleet-wide figures read from
 * Redis (the same on every sidecar), and this process's feedback counters. Per-KB figures stay
 * out of /metrics (cardinality); they are in GET /v1/quality. */
int quality_metrics_render(struct buf *out);

/* GET /v1/quality: all-time figures from the counters (since_ms < 0), or the figures of the
 * feedback entries since since_ms (newest QUALITY_SCAN_MAX at most; shown is then null). kb (may
 * be NULL) adds titles. On T_OK *out is a new reference. Redis errors as store_command. */
int quality_json(struct store *s, const struct kb *kb, int64_t since_ms, int64_t now_ms, struct json_t **out);

struct quality_report_opts {
    long long min_actions; /* rewrite candidates: least actions on an entry */
    size_t min_cluster;     /* macro candidates: least replies in a cluster */
    size_t limit;           /* items per list */
};
/* GET /v1/quality/report: rewrite candidates (KB entries often rejected or heavily edited, with
 * up to QUALITY_EXAMPLES redacted examples from the newest QUALITY_SCAN_MAX feedback entries)
 * and macro candidates (clusters of agents' final texts and imported replies that match no KB
 * entry, with redacted examples). mem and kb may be NULL. On T_OK *out is a new reference. */
int quality_report(struct store *s, const struct kb *kb, const struct memory *mem,
                   const struct quality_report_opts *o, int64_t now_ms, struct json_t **out);

/* Clustering of replies (pure; for the report and tests). */
struct quality_text {
    const char *text;
    size_t len;
    const char *lang;
    unsigned source; /* 0: feedback, 1: imported transcript */
};
struct quality_cluster {
    size_t count;
    size_t by_source[2];
    size_t examples[QUALITY_EXAMPLES]; /* indexes into the texts, distinct texts, first seen first */
    size_t n_examples;
    uint64_t terms[QUALITY_CLUSTER_TERMS]; /* the representative's word hashes, sorted */
    size_t n_terms;
};
/* Groups texts whose word sets (stemmed, stopwords and numbers dropped, order and case
 * ignored) are equal, then joins the QUALITY_REPORT_MAX_GROUPS largest groups whose word sets
 * have Jaccard similarity >= QUALITY_CLUSTER_JACCARD with a larger one. Texts with fewer than
 * QUALITY_CLUSTER_MIN_TERMS words are skipped. Returns clusters of at least min_count texts,
 * largest first, in *out (new array, free()) and their number in *n_out. T_OK or T_ERR_NOMEM. */
int quality_cluster_texts(const struct quality_text *t, size_t n, size_t min_count, struct quality_cluster **out,
                          size_t *n_out);
/* Jaccard similarity of two sorted hash sets. */
double quality_jaccard(const uint64_t *a, size_t na, const uint64_t *b, size_t nb);
#endif
