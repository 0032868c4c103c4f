/* Word tokens and phrase patterns over them: the matcher behind sentiment lexicons and alert rules. */
#ifndef TANDEM_PHRASE_H
#define TANDEM_PHRASE_H
#include <stddef.h>
#include <stdint.h>

/* Bounded work per message: a text is analysed in its first PHRASE_MAX_TOKENS words. Customer
 * messages are far shorter; a pasted log must not make one request slow. */
#define PHRASE_MAX_TOKENS 2048
/* "..." in a pattern skips up to this many words ("charged ... twice"); "...N" sets N (1-9). */
#define PHRASE_DEFAULT_GAP 3
/* Prefix alternatives ("frustrat*") must keep at least this many letters, so that one short
 * prefix cannot match half the language. */
#define PHRASE_MIN_PREFIX 3

enum {
    PHRASE_TOK_CAPS = 1 << 0,     /* written in capitals (2+ letters, no lower case) */
    PHRASE_TOK_CLAUSE = 1 << 1,   /* a clause break (, ; : - ( ) or a sentence break) precedes */
    PHRASE_TOK_SENTENCE = 1 << 2, /* a sentence break (. ! ? newline) precedes */
};

struct phrase_token {
    const char *s;     /* normalised: lower case, ’ -> ', NUL-terminated; owned by the text */
    uint32_t len;
    uint32_t off, end; /* byte range in the original text */
    unsigned flags;    /* PHRASE_TOK_* */
};

/* A text split into words. Caller storage: phrase_text_init() then phrase_text_cleanup().
 * Words are runs of letters/digits (any non-ASCII letter counts), inner apostrophes and hyphens;
 * each emoji and each emoticon (":(" ":-)") is a word of its own; URLs and @handles are skipped
 * (a pasted help-centre URL must not read as the customer's words). */
struct phrase_text {
    struct phrase_token *tok;
    size_t n;
    char *norm;          /* storage for the normalised words */
    unsigned exclaims;   /* '!' count */
    unsigned questions;  /* '?' count */
    int shouting;        /* 1 when 3+ words have letters and all of them are in capitals */
};

/* Tokenises text[0..len). Returns T_OK or T_ERR_NOMEM (t is then empty but safe to clean up). */
int phrase_text_init(struct phrase_text *t, const char *text, size_t len);
void phrase_text_cleanup(struct phrase_text *t);

/* A set of patterns, each with a caller tag. Pattern syntax: words separated by spaces; a word
 * may list alternatives "cancel|close"; a trailing '*' makes an alternative a prefix
 * ("frustrat*"); "..." skips 0-3 words (must sit between words). Apostrophes are optional in
 * the text ("didn't" also matches "didnt"). Matching is case-insensitive (ASCII and Latin-1) and
 * never crosses a sentence break. Not thread-safe while adding; read-only use after
 * phrase_set_finish() is thread-safe. */
struct phrase_set;

struct phrase_match {
    size_t start; /* first token */
    size_t n;     /* tokens covered */
    int tag;      /* as given to phrase_set_add() */
};

/* New empty set; NULL on OOM. Free with phrase_set_free() (NULL is a no-op). */
struct phrase_set *phrase_set_new(void);
void phrase_set_free(struct phrase_set *s);
/* Compiles pattern and adds it. Returns T_OK, T_ERR_NOMEM, or T_ERR_BAD_REQUEST with a reason
 * in err (size errsz) for a malformed pattern. Must not be called after phrase_set_finish(). */
int phrase_set_add(struct phrase_set *s, const char *pattern, int tag, char *err, size_t errsz);
/* Builds the lookup index. T_OK or T_ERR_NOMEM. */
int phrase_set_finish(struct phrase_set *s);
size_t phrase_set_count(const struct phrase_set *s);

/* Every pattern matching at token i: writes up to max matches to out (longest first, then in
 * order of addition) and returns how many matched (may exceed max; only max are written). */
size_t phrase_set_match_at(const struct phrase_set *s, const struct phrase_text *t, size_t i,
                           struct phrase_match *out, size_t max);

/* 1 when a clause break lies between tokens a < b (i.e. some token in (a, b] starts a clause). */
int phrase_text_clause_between(const struct phrase_text *t, size_t a, size_t b);
#endif
