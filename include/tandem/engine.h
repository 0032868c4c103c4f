/* Suggestion engines: the interface, and the local engine (KB retrieval + reply memory + brand priors + templates). */
#ifndef TANDEM_ENGINE_H
#define TANDEM_ENGINE_H
#include <stddef.h>

#include "tandem/buf.h"
#include "tandem/context.h"

struct kb;
struct memory;

#define ENGINE_DEFAULT_K 3
#define ENGINE_MAX_K 10
#define ENGINE_SUGGESTION_ID_LEN 19 /* "sg_" + 16 hex */

/* One suggestion. Strings live in the arena passed to the engine (or are static). */
struct suggestion {
    char id[ENGINE_SUGGESTION_ID_LEN + 1];
    unsigned rank;         /* 1-based */
    const char *source;    /* "kb", "memory" or "llm" (static) */
    const char *kb_id;     /* the KB entry it came from or is grounded on; NULL when none */
    const char *title;     /* the KB entry's title; NULL when none */
    const char *memory_id; /* the memory entry whose reply it is; NULL when none */
    const char *text;      /* placeholders filled */
    double score;          /* 0..1 */
};

/* Why a score is what it is (for tests and debugging); filled when not NULL. */
struct engine_debug {
    size_t query_terms;
    size_t kb_matches;
    size_t memory_matches;
    int used_popularity;
};

/* The local engine: ranks KB entries by BM25F over the recent customer turns (weighted by
 * recency; agent and bot turns count a little), adds the evidence of reply memory (past
 * situations like this one and the entries their replies cited) and how often agents of the
 * conversation's brand cited each entry, and returns up to k suggestions, best first, ties by
 * id. KB entries of another brand are never suggested (meta brand; entries without a brand
 * serve all). A conversation without customer turns gets the brand's most-cited entries (or
 * nothing). kb and mem may be NULL. Deterministic for the same inputs. Thread-safe.
 * Writes up to k (<= ENGINE_MAX_K) suggestions to out and their number to *n_out.
 * Returns T_OK or T_ERR_NOMEM. */
int engine_local_suggest(const struct context *ctx, const struct kb *kb, const struct memory *mem, size_t k,
                         struct arena *a, struct suggestion *out, size_t *n_out, struct engine_debug *dbg);

/* Fills {{customer.<field>}} (profile), {{customer.first_name}} (profile first_name, else the
 * first word of name), {{agent.name}} (meta agent_name), {{agent.<f>}} (meta agent_<f>),
 * {{conversation.subject}} and other {{conversation.<f>}} (meta), {{conversation.id}}; spaces
 * inside the braces are allowed. What cannot be filled becomes visible bracket text for the
 * agent: {{customer.order_number}} -> "[order number]". Malformed braces are copied as they
 * are. ctx may be NULL (everything becomes bracket text). Appends to out; T_OK, T_ERR_NOMEM,
 * T_ERR_TOO_LARGE. */
int engine_fill_template(const char *tmpl, const struct context *ctx, struct buf *out);

/* "sg_" + 16 hex digits of a hash of (conversation id, based_on, source, kb id, memory id):
 * the same conversation state gives the same id on every sidecar. NULL parts count as "". */
void engine_suggestion_id(const char *conv_id, const char *based_on, const char *source, const char *kb_id,
                          const char *memory_id, char out[ENGINE_SUGGESTION_ID_LEN + 1]);
#endif
