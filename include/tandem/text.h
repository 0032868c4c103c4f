/* Words for retrieval: UTF-8 tokenizing, case folding, stopwords and Snowball stemming per language. */
#ifndef TANDEM_TEXT_H
#define TANDEM_TEXT_H
#include <stddef.h>
#include <stdint.h>

/* Longest word kept, in bytes after folding; longer runs (hashes, base64, pasted keys) are
 * skipped: they never match an article and would only bloat the index. */
#define TEXT_MAX_WORD 48
/* A language is an ISO 639-1 code ("en", "sv"); longer strings are not languages. */
#define TEXT_LANG_MAX 8

/* Flags of one token (text_token_fn). */
enum {
    TEXT_TOK_NUMBER = 1 << 0, /* digits only ("185111"): weak evidence */
    TEXT_TOK_HANDLE = 1 << 1, /* came from an @handle */
    TEXT_TOK_URL = 1 << 2,    /* a word of a URL's path */
    TEXT_TOK_HOST = 1 << 3,   /* a label of a URL's host name (minus "www" and the TLD) */
};

/* Options of text_tokenize(). */
enum {
    TEXT_OPT_KEEP_STOPWORDS = 1 << 0, /* emit stopwords too */
    TEXT_OPT_NO_STEM = 1 << 1,        /* emit folded words, unstemmed */
    TEXT_OPT_URL_ONLY = 1 << 2,       /* the whole input is one URL (a KB entry's url field) */
};

/* Called once per token, in text order. term is the folded (and, unless TEXT_OPT_NO_STEM,
 * stemmed) word, NUL-terminated, borrowed for the duration of the call only. */
typedef void (*text_token_fn)(void *ud, const char *term, size_t len, unsigned flags);

/* Splits text[0..len) into words and calls fn for each one that is not a stopword of lang.
 * Rules: words are runs of letters and digits (ASCII, Latin, Greek, Cyrillic and other
 * alphabetic scripts; CJK and kana count as letters too); inner apostrophes (' and U+2019) stay
 * in a word ("don't"); everything else (punctuation, symbols, emoji, invalid UTF-8) separates
 * words. Case folding covers ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic. URLs
 * (http://, https://, www.) yield their host labels (TEXT_TOK_HOST) and path words
 * (TEXT_TOK_URL); a web.archive.org/web/<stamp>/ prefix, the query string and the fragment are
 * ignored. @handles yield their name (TEXT_TOK_HANDLE); #hashtags their word.
 * lang: ISO 639-1 code; NULL or "" means "en". A language without a Snowball stemmer is not
 * stemmed; one without a stopword file (data/stopwords_<lang>.txt) keeps all words.
 * Thread-safe (stemmers are per thread). Returns 0, or -1 when a word could not be analysed
 * for want of memory (the words emitted are then incomplete: callers must not use them). */
int text_tokenize(const char *text, size_t len, const char *lang, unsigned opts, text_token_fn fn, void *ud);

/* Up to max distinct hashes (text_hash of each term text_tokenize emits, numbers left out: order
 * numbers and amounts differ between otherwise identical texts) of text[0..len), in text order;
 * *n of them. Returns 0, or -1 as text_tokenize (then *n is 0). */
int text_word_hashes(const char *text, size_t len, const char *lang, uint64_t *out, size_t max, size_t *n);

/* Case-folds one UTF-8 word into out (size outsz, NUL-terminated); returns its length, or 0 when
 * it does not fit. For tests and callers that compare words. */
size_t text_fold(const char *word, size_t len, char *out, size_t outsz);

/* 1 when word (already folded) is a stopword of lang. */
int text_is_stopword(const char *lang, const char *word, size_t len);

/* Stems a folded word with lang's Snowball stemmer into out (size outsz); returns the stem's
 * length, or copies the word unchanged when lang has no stemmer; (size_t)-1 when out of
 * memory. Thread-safe. */
size_t text_stem(const char *lang, const char *word, size_t len, char *out, size_t outsz);

/* 1 when lang names a language with a Snowball stemmer. */
int text_lang_has_stemmer(const char *lang);

/* Builds the stopword sets (otherwise built on first use). -1 when they could not be (out of
 * memory, or more lists than the table holds): call at start-up so that fails rather than
 * every later analysis. */
int text_init(void);

/* Frees the calling thread's stemmers (threads that exit free theirs automatically; the main
 * thread calls this before exit so leak checkers stay quiet). */
void text_thread_cleanup(void);

/* Normalises a URL for comparing links: drops a web-archive prefix
 * ("https://web.archive.org/web/20200401224734/"), the scheme, "www.", the fragment, trailing
 * punctuation and slashes, and a default port; lower-cases the host. The query string is kept
 * (callers compare with and without it). Writes at most outsz-1 bytes + NUL to out; returns
 * the length, or 0 when the result is empty or does not fit. */
size_t text_url_normalize(const char *url, size_t len, char *out, size_t outsz);

/* 64-bit FNV-1a over data, continuing from h (start with TEXT_HASH_SEED). */
#define TEXT_HASH_SEED 0xcbf29ce484222325ULL
uint64_t text_hash(uint64_t h, const void *data, size_t len);
#endif
