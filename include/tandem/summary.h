/* Extractive conversation and customer summaries: what the customer wants, what was tried, facts,
 * sentiment, open questions, alerts, bot handoff, and the customer's contact history. */
#ifndef TANDEM_SUMMARY_H
#define TANDEM_SUMMARY_H
#include <stddef.h>
#include <stdint.h>

struct json_t;
struct context;
struct alert_rules;

/* Sentences quoted in a summary are cut to this many bytes (at a space, with an ellipsis). */
#define SUMMARY_SENTENCE_MAX 240
#define SUMMARY_WANTS_MAX 2          /* sentences in "wants" */
#define SUMMARY_TRIED_MAX 8          /* newest items in "tried" */
#define SUMMARY_QUESTIONS_MAX 5      /* newest open questions */
#define SUMMARY_FACTS_MAX 10         /* values per fact list */
#define SUMMARY_OUTCOMES_MAX 3       /* newest past contacts in "last_outcomes" */
#define SUMMARY_BOT_STEPS_MAX 6

/*
 * The answer of GET /v1/conversations/{ID}/summary (the handler adds "took_ms"):
 *
 * {"conversation_id": "c-42", "based_on": "<newest message id>" | null,
 *  "conversation": {
 *    "wants": "sentences, in conversation order",            extractive; "" when nothing fits
 *    "wants_ranked": [{"text", "message_id", "score"}],      best first (at most 2)
 *    "tried": [{"by": "customer|agent|bot", "kind": "tried|asked|suggested|did|promised",
 *               "text", "message_id", "asked_for": ["order number", ...] (kind asked only)}],
 *    "facts": {"order_numbers": ["A12345"], "references": [{"kind": "tracking", "value"}],
 *              "amounts": [{"text": "$1,234.56", "value": 1234.56, "currency": "USD"}],
 *              "dates": [{"text": "May 3", "iso": "2024-05-03" | null}]},
 *    "sentiment": {"score": -1..1, "label": "negative|neutral|positive",
 *                  "trend": "improving|worsening|steady", "window": n,
 *                  "per_turn": [{"message_id", "score", "label", "sarcasm"?}]},
 *    "open_questions": [{"text", "message_id"}],   customer questions no agent message followed
 *    "alerts": [{"type", "severity", "reason", "message_id", "excerpt", "rule"}],
 *    "handoff": {...}                               only when meta handoff_from_bot=1, see below
 *    "counts": {"messages", "customer", "agent", "bot"}},
 *  "customer": {"id" | null, "tier" | null, "profile": {"name", "tier", "country", "since"},
 *    "contacts_30d", "contacts_90d", "last_outcomes": [{"conv_id", "outcome", "summary",
 *    "days_ago", "at"}], "repeat_contact": bool, "repeat_contact_source": "history|stated"|null,
 *    "top_tags": [...], "history_summary": "one line"}}
 *
 * "handoff": {"bot_messages", "customer_messages" (before the first agent message),
 *   "bot_steps": ["first sentence of each distinct bot message", ...],
 *   "customer_said": "the customer's most informative sentence to the bot" | null,
 *   "reasons": [{"code": "customer_asked_for_human|bot_could_not_help|bot_repeated_itself|
 *                customer_frustrated|bot_handed_over|sensitive_topic|unknown", "detail"}],
 *   "reason": "one sentence", "note": "the system message at the handoff" (when present),
 *   "last_bot_message_id", "first_agent_message_id" | null}
 *
 * Every quoted text is redacted (one placeholder map per conversation). Deterministic.
 */

/* Loads the built-in cue list and sentiment lexicon now (they otherwise load on first use), so a
 * broken build fails at start-up and the first request is not the slow one. T_OK or
 * T_ERR_INTERNAL (logged). Thread-safe, idempotent. */
int summary_global_init(void);

/* Builds the summary of ctx (borrowed). rules may be NULL (no phrase alerts). now_ms is the
 * current time (a parameter so that tests are repeatable). On T_OK *out is a new JSON object.
 * Errors: T_ERR_NOMEM, T_ERR_TOO_LARGE (a message too large to redact), T_ERR_INTERNAL (the
 * built-in cue files are broken). Thread-safe. */
int summary_build(const struct context *ctx, const struct alert_rules *rules, int64_t now_ms,
                  struct json_t **out);

/* Facts of one (already redacted) text: appends order numbers, references, amounts and dates
 * to facts (an object from summary_facts_new()). ts_ms dates relative words ("yesterday") and
 * gives month-day dates their year. T_OK or T_ERR_NOMEM. */
struct json_t *summary_facts_new(void);
int summary_extract_facts(const char *text, size_t len, int64_t ts_ms, struct json_t *facts);
#endif
