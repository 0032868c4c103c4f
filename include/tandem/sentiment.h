/* Lexicon sentiment: per-message scores in -1..1 with negation, intensifiers, sarcasm, and a trend. */
#ifndef TANDEM_SENTIMENT_H
#define TANDEM_SENTIMENT_H
#include <stddef.h>

struct phrase_text;

/* Customer messages the conversation-level score looks at: the mood now, not an hour ago. */
#define SENTIMENT_WINDOW 6
/* |score| at or above this is labelled positive/negative, below it neutral. */
#define SENTIMENT_LABEL_THRESHOLD 0.25
/* A trend needs the newer half of the window to differ from the older half by this much. */
#define SENTIMENT_TREND_DELTA 0.3

/* A lexicon: words and phrases with valences, negators, intensifiers, sarcasm markers (format in
 * data/sentiment_en.txt). Read-only after sentiment_lexicon_finish(): thread-safe to share. */
struct sentiment_lexicon;

/* New empty lexicon; NULL on OOM. sentiment_lexicon_free(NULL) is a no-op. */
struct sentiment_lexicon *sentiment_lexicon_new(void);
void sentiment_lexicon_free(struct sentiment_lexicon *lx);
/* Adds the entries in text[0..len) (one file's content; source names it in errors). Returns T_OK,
 * T_ERR_NOMEM, or T_ERR_CONFIG with "source:line: reason" in err (size errsz). */
int sentiment_lexicon_add(struct sentiment_lexicon *lx, const char *text, size_t len,
                          const char *source, char *err, size_t errsz);
/* Builds the index; call once after the last add. T_OK or T_ERR_NOMEM. */
int sentiment_lexicon_finish(struct sentiment_lexicon *lx);
/* The built-in lexicon: every embedded data/sentiment_*.txt, loaded on first use (thread-safe).
 * Borrowed, lives until exit. NULL only if the embedded files are broken or on OOM (logged). */
const struct sentiment_lexicon *sentiment_lexicon_default(void);

struct sentiment_score {
    double score; /* -1..1 */
    unsigned hits;    /* lexicon entries that contributed */
    int sarcasm;      /* 1 when a sarcasm marker turned the praise around */
    int negated;      /* 1 when at least one valence was negated */
};

/* Scores one message. lx NULL scores 0. Never fails: text is tokenised into t by the caller
 * (phrase_text_init) so that other modules can reuse the tokens. */
void sentiment_score_tokens(const struct sentiment_lexicon *lx, const struct phrase_text *t,
                            struct sentiment_score *out);
/* Convenience: tokenises and scores text[0..len). T_OK or T_ERR_NOMEM. */
int sentiment_score_text(const struct sentiment_lexicon *lx, const char *text, size_t len,
                         struct sentiment_score *out);

struct sentiment_summary {
    double score;      /* recency-weighted mean over the last SENTIMENT_WINDOW messages */
    const char *label; /* "negative" | "neutral" | "positive" (static) */
    const char *trend; /* "improving" | "worsening" | "steady" (static) */
    size_t n;          /* messages in the window */
    size_t worst;      /* index (into the array given) of the most negative message in the window */
};

/* Aggregates per-message scores of customer messages, oldest first. n may be 0 (neutral,
 * steady). The newest message weighs most; messages with no lexicon hit weigh half (an order
 * number does not make an angry customer calm). */
void sentiment_aggregate(const struct sentiment_score *msgs, size_t n,
                         struct sentiment_summary *out);
/* "negative" | "neutral" | "positive" for a score (static). */
const char *sentiment_label(double score);
#endif
