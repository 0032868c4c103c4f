/* Words for retrieval: UTF-8 tokenizer, case folding, stopwords (embedded data files) and Snowball stems. */
#include "tandem/text.h"

#include <errno.h>
#include <libstemmer.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/embedded.h"

/* ---- hashing ------------------------------------------------------------------------------ */

uint64_t text_hash(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

/* ---- UTF-8 and character classes ------------------------------------------------------------ */

/* Decodes one code point; returns the bytes used (>= 1). Invalid or overlong sequences give
 * U+FFFD for one byte, so the caller always advances. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    uint32_t v, min;
    if ((c & 0xE0) == 0xC0) {
        need = 2, v = c & 0x1Fu, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        need = 3, v = c & 0x0Fu, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        need = 4, v = c & 0x07u, min = 0x10000;
    } else {
        *cp = 0xFFFD;
        return 1;
    }
    if (need > n) {
        *cp = 0xFFFD;
        return 1;
    }
    for (size_t i = 1; i < need; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0xFFFD;
            return 1;
        }
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
        *cp = 0xFFFD;
        return 1;
    }
    *cp = v;
    return need;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static int ascii_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Letters and digits of the scripts people write support requests in. Symbols, punctuation
 * and emoji are not words: they separate them. */
static int is_word_cp(uint32_t c)
{
    if (c < 0x80)
        return ascii_alnum((unsigned char)c);
    if (c >= 0xC0 && c <= 0x24F)
        return c != 0xD7 && c != 0xF7;
    return (c >= 0x250 && c <= 0x2AF) ||                 /* IPA */
           (c >= 0x300 && c <= 0x36F) ||                 /* combining marks */
           (c >= 0x370 && c <= 0x3FF && c != 0x37E && c != 0x387) || /* Greek */
           (c >= 0x400 && c <= 0x481) || (c >= 0x48A && c <= 0x52F) || /* Cyrillic */
           (c >= 0x531 && c <= 0x587) ||                 /* Armenian */
           (c >= 0x5D0 && c <= 0x5EA) ||                 /* Hebrew */
           (c >= 0x620 && c <= 0x64A) || (c >= 0x660 && c <= 0x669) ||
           (c >= 0x66E && c <= 0x6D3) ||                 /* Arabic */
           (c >= 0x900 && c <= 0x963) || (c >= 0x966 && c <= 0xDFF) || /* Indic */
           (c >= 0xE00 && c <= 0xE7F) ||                 /* Thai */
           (c >= 0x1E00 && c <= 0x1EFF) ||               /* Latin Extended Additional */
           (c >= 0x3040 && c <= 0x30FF && c != 0x30FB) || /* kana */
           (c >= 0x3400 && c <= 0x4DBF) || (c >= 0x4E00 && c <= 0x9FFF) || /* CJK */
           (c >= 0xAC00 && c <= 0xD7A3);                 /* Hangul */
}

static int is_upper_cp(uint32_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 0xC0 && c <= 0xDE && c != 0xD7);
}

static int is_lower_cp(uint32_t c)
{
    return (c >= 'a' && c <= 'z') || (c >= 0xDF && c <= 0xFF && c != 0xF7);
}

static uint32_t fold_cp(uint32_t c)
{
    if (c < 0x80)
        return (c >= 'A' && c <= 'Z') ? c + 32 : c;
    if (c >= 0xC0 && c <= 0xDE && c != 0xD7)
        return c + 32;
    if (c == 0x130)
        return 'i';
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14A && c <= 0x177))
        return (c & 1) ? c : c + 1;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17E))
        return (c & 1) ? c + 1 : c;
    if (c == 0x178)
        return 0xFF;
    if (c >= 0x391 && c <= 0x3A9 && c != 0x3A2)
        return c + 32;
    if (c == 0x386)
        return 0x3AC;
    if (c >= 0x388 && c <= 0x38A)
        return c + 37;
    if (c == 0x38C)
        return 0x3CC;
    if (c == 0x38E || c == 0x38F)
        return c + 63;
    if (c == 0x3C2) /* final sigma: the same letter for matching */
        return 0x3C3;
    if (c >= 0x410 && c <= 0x42F)
        return c + 32;
    if (c >= 0x400 && c <= 0x40F)
        return c + 80;
    if ((c >= 0x460 && c <= 0x481) || (c >= 0x48A && c <= 0x4BF) || (c >= 0x1E00 && c <= 0x1E95) ||
        (c >= 0x1EA0 && c <= 0x1EFF))
        return (c & 1) ? c : c + 1;
    return c;
}

size_t text_fold(const char *word, size_t len, char *out, size_t outsz)
{
    const unsigned char *s = (const unsigned char *)word;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += utf8_decode(s + i, len - i, &cp);
        if (cp == 0x2019)
            cp = '\'';
        char tmp[4];
        size_t k = utf8_encode(fold_cp(cp), tmp);
        if (o + k + 1 > outsz)
            return 0;
        memcpy(out + o, tmp, k);
        o += k;
    }
    if (o + 1 > outsz)
        return 0;
    out[o] = '\0';
    return o;
}

/* ---- languages ------------------------------------------------------------------------------ */

/* Copies a usable language code (2-3 lower-case letters) into out; "en" for NULL/""/junk so
 * every text is analysed the same way as the default-language KB. */
static void lang_code(const char *lang, char out[TEXT_LANG_MAX])
{
    size_t n = 0;
    if (lang)
        while (n < 4 && lang[n] >= 'a' && lang[n] <= 'z')
            n++;
    if (!lang || (lang[n] != '\0' && lang[n] != '-' && lang[n] != '_') || n < 2 || n > 3) {
        memcpy(out, "en", 3);
        return;
    }
    memcpy(out, lang, n);
    out[n] = '\0';
    if (strcmp(out, "nb") == 0 || strcmp(out, "nn") == 0)
        memcpy(out, "no", 3); /* Snowball's Norwegian covers Bokmål and Nynorsk */
}

/* ---- stopwords ---------------------------------------------------------------------------- */

/* One language's stopwords: an open-addressing set over a private copy of the file's words. */
struct stopset {
    char lang[TEXT_LANG_MAX];
    char *words;        /* the folded words, NUL-separated */
    const char **slots; /* nslots entries, NULL = empty */
    size_t nslots;
};

#define MAX_STOPSETS 16 /* the embedded lists (data/stopwords_<lang>.txt) */

static struct stopset stopsets[MAX_STOPSETS];
static size_t n_stopsets;
static int stopsets_failed; /* out of memory while building them: analysis fails (not silently) */
static pthread_once_t stopsets_once = PTHREAD_ONCE_INIT;

static void stopset_insert(struct stopset *ss, const char *w)
{
    size_t len = strlen(w);
    size_t i = (size_t)text_hash(TEXT_HASH_SEED, w, len) & (ss->nslots - 1);
    while (ss->slots[i]) {
        if (strcmp(ss->slots[i], w) == 0)
            return;
        i = (i + 1) & (ss->nslots - 1);
    }
    ss->slots[i] = w;
}

/* Builds lang's set from the embedded file f: one word a line, '#' comments. -1 when out of memory. */
static int stopset_build(struct stopset *ss, const char *lang, const struct embedded_file *f)
{
    memcpy(ss->lang, lang, strlen(lang) + 1);
    size_t nlines = 1;
    for (size_t i = 0; i < f->len; i++)
        nlines += f->data[i] == '\n';
    size_t nslots = 16;
    while (nslots < nlines * 2)
        nslots *= 2;
    /* Folding can grow a word (at most 2x for the scripts we fold), so size the copy for it. */
    char *words = malloc(f->len * 2 + 2);
    const char **slots = calloc(nslots, sizeof *slots);
    if (!words || !slots) {
        free(words);
        free(slots);
        return -1;
    }
    ss->words = words;
    ss->slots = slots;
    ss->nslots = nslots;
    size_t o = 0;
    const char *p = (const char *)f->data, *end = p + f->len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        const char *a = p, *b = le;
        while (a < b && (*a == ' ' || *a == '\t' || *a == '\r'))
            a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '\r'))
            b--;
        if (a < b && *a != '#') {
            size_t k = text_fold(a, (size_t)(b - a), words + o, f->len * 2 + 2 - o);
            if (k) {
                stopset_insert(ss, words + o);
                o += k + 1;
            }
        }
        p = le + 1;
    }
    return 0;
}

/* All at once, so a lookup needs no lock and a failed allocation is not remembered as "this
 * language has no stopwords". A list that cannot be kept fails them all (start-up stops). */
static void stopsets_build(void)
{
    static const char prefix[] = "stopwords_", suffix[] = ".txt";
    const size_t np = sizeof prefix - 1, ns = sizeof suffix - 1;
    for (const struct embedded_file *f = embedded_files; f->name; f++) {
        size_t n = strlen(f->name);
        if (n <= np + ns || strncmp(f->name, prefix, np) != 0 || strcmp(f->name + n - ns, suffix) != 0)
            continue;
        if (n - np - ns >= TEXT_LANG_MAX || n_stopsets == MAX_STOPSETS) {
            stopsets_failed = 1; /* a new data file the table was not made for */
            return;
        }
        char lang[TEXT_LANG_MAX];
        memcpy(lang, f->name + np, n - np - ns);
        lang[n - np - ns] = '\0';
        if (stopset_build(&stopsets[n_stopsets], lang, f) < 0) {
            stopsets_failed = 1;
            return;
        }
        n_stopsets++;
    }
}

/* The set for lang (a clean code): an empty one when lang has no list; NULL when the lists
 * could not be built. Sets live until exit. */
static const struct stopset *stopset_get(const char *lang)
{
    static const struct stopset empty;
    pthread_once(&stopsets_once, stopsets_build);
    if (stopsets_failed)
        return NULL;
    for (size_t i = 0; i < n_stopsets; i++)
        if (strcmp(stopsets[i].lang, lang) == 0)
            return &stopsets[i];
    return &empty;
}

int text_init(void)
{
    pthread_once(&stopsets_once, stopsets_build);
    return stopsets_failed ? -1 : 0;
}

static int stopset_has(const struct stopset *ss, const char *w, size_t len)
{
    if (!ss->nslots)
        return 0;
    size_t i = (size_t)text_hash(TEXT_HASH_SEED, w, len) & (ss->nslots - 1);
    while (ss->slots[i]) {
        if (strncmp(ss->slots[i], w, len) == 0 && ss->slots[i][len] == '\0')
            return 1;
        i = (i + 1) & (ss->nslots - 1);
    }
    return 0;
}

int text_is_stopword(const char *lang, const char *word, size_t len)
{
    char code[TEXT_LANG_MAX];
    lang_code(lang, code);
    const struct stopset *ss = stopset_get(code);
    return ss && stopset_has(ss, word, len);
}

/* ---- stemming ----------------------------------------------------------------------------- */

/* Snowball stemmers keep per-call state, so each thread has its own, plus a small
 * direct-mapped cache: customer text repeats the same few hundred words and the cache turns
 * most stems into one hash and a compare. The state is thread-local storage, not allocated:
 * analysing a text allocates nothing of ours (only libstemmer may run out of memory). */
#define STEMMERS_PER_THREAD 4
#define STEM_CACHE_SLOTS 512 /* power of two */
#define STEM_CACHE_WORD 24   /* longer words are stemmed uncached */

struct stem_cache_slot {
    uint64_t h;
    char word[STEM_CACHE_WORD];
    char stem[STEM_CACHE_WORD];
};

struct stem_thread {
    struct {
        char lang[TEXT_LANG_MAX];
        struct sb_stemmer *st; /* NULL when the language has none */
    } slot[STEMMERS_PER_THREAD];
    size_t n, next;
    struct stem_cache_slot cache[STEM_CACHE_SLOTS];
};

static _Thread_local struct stem_thread stem_tls;
static pthread_key_t stem_key; /* &stem_tls once the thread has a stemmer: frees them at exit */
static int stem_key_ok;        /* without the key, an exiting thread's stemmers are not freed */
static pthread_once_t stem_once = PTHREAD_ONCE_INIT;

static void stem_thread_free(void *p)
{
    struct stem_thread *t = p;
    for (size_t i = 0; i < t->n; i++)
        if (t->slot[i].st)
            sb_stemmer_delete(t->slot[i].st);
    memset(t, 0, sizeof *t);
}

static void stem_key_make(void) { stem_key_ok = pthread_key_create(&stem_key, stem_thread_free) == 0; }

void text_thread_cleanup(void)
{
    pthread_once(&stem_once, stem_key_make);
    if (stem_key_ok)
        pthread_setspecific(stem_key, NULL);
    stem_thread_free(&stem_tls);
}

/* The thread's stemmer for a clean language code in *st, NULL when the language has none.
 * -1 when libstemmer ran out of memory: not remembered, the next call tries again. */
static int stemmer_for(const char *lang, struct sb_stemmer **st)
{
    struct stem_thread *t = &stem_tls;
    for (size_t i = 0; i < t->n; i++)
        if (strcmp(t->slot[i].lang, lang) == 0) {
            *st = t->slot[i].st;
            return 0;
        }
    errno = 0;
    struct sb_stemmer *made = sb_stemmer_new(lang, "UTF_8");
    if (!made && errno == ENOMEM)
        return -1; /* an unknown language leaves errno alone */
    pthread_once(&stem_once, stem_key_make);
    if (stem_key_ok && !pthread_getspecific(stem_key) && pthread_setspecific(stem_key, t) != 0) {
        if (made)
            sb_stemmer_delete(made);
        return -1;
    }
    size_t i;
    if (t->n < STEMMERS_PER_THREAD) {
        i = t->n++;
    } else {
        i = t->next;
        t->next = (t->next + 1) % STEMMERS_PER_THREAD;
        if (t->slot[i].st)
            sb_stemmer_delete(t->slot[i].st);
        memset(t->cache, 0, sizeof t->cache); /* cached stems may be of the evicted language */
    }
    memcpy(t->slot[i].lang, lang, strlen(lang) + 1);
    t->slot[i].st = made;
    *st = made;
    return 0;
}

static size_t copy_word(const char *word, size_t len, char *out, size_t outsz)
{
    if (len + 1 > outsz)
        len = outsz - 1;
    memcpy(out, word, len);
    out[len] = '\0';
    return len;
}

/* Stems with a clean language code into out; returns the stem's length, or (size_t)-1 when
 * libstemmer ran out of memory. */
static size_t stem_code(const char *lang, const char *word, size_t len, char *out, size_t outsz)
{
    struct stem_thread *t = &stem_tls;
    uint64_t h = text_hash(text_hash(TEXT_HASH_SEED, lang, strlen(lang)), word, len);
    struct stem_cache_slot *c = NULL;
    if (len < STEM_CACHE_WORD) {
        c = &t->cache[h & (STEM_CACHE_SLOTS - 1)];
        if (c->h == h && strncmp(c->word, word, len) == 0 && c->word[len] == '\0')
            return copy_word(c->stem, strlen(c->stem), out, outsz);
    }
    struct sb_stemmer *st;
    if (stemmer_for(lang, &st) < 0)
        return (size_t)-1;
    size_t n;
    if (!st) {
        n = copy_word(word, len, out, outsz);
    } else {
        const sb_symbol *r = sb_stemmer_stem(st, (const sb_symbol *)word, (int)len);
        if (!r)
            return (size_t)-1; /* its buffer could not grow */
        n = copy_word((const char *)r, (size_t)sb_stemmer_length(st), out, outsz);
    }
    if (c && n < STEM_CACHE_WORD) {
        c->h = h;
        memcpy(c->word, word, len);
        c->word[len] = '\0';
        memcpy(c->stem, out, n + 1);
    }
    return n;
}

size_t text_stem(const char *lang, const char *word, size_t len, char *out, size_t outsz)
{
    char code[TEXT_LANG_MAX];
    lang_code(lang, code);
    return stem_code(code, word, len, out, outsz);
}

int text_lang_has_stemmer(const char *lang)
{
    char code[TEXT_LANG_MAX];
    lang_code(lang, code);
    struct sb_stemmer *st;
    return stemmer_for(code, &st) == 0 && st != NULL;
}

/* ---- tokenizer ---------------------------------------------------------------------------- */

struct tk {
    const char *lang; /* clean code */
    const struct stopset *stop;
    unsigned opts;
    text_token_fn fn;
    void *ud;
    int failed; /* a word could not be stemmed (out of memory) */
};

/* Finishes one folded word: drops single letters, stopwords and overlong runs, stems, emits. */
static void word_done(struct tk *t, char *w, size_t len, unsigned flags)
{
    if (len == 0)
        return;
    int digits = 1;
    for (size_t i = 0; i < len; i++)
        if (w[i] < '0' || w[i] > '9') {
            digits = 0;
            break;
        }
    if (digits) {
        flags |= TEXT_TOK_NUMBER;
    } else {
        if (len == 1) /* a lone Latin letter says nothing; one CJK character is a word */
            return;
        if (!(t->opts & TEXT_OPT_KEEP_STOPWORDS) && stopset_has(t->stop, w, len))
            return;
    }
    w[len] = '\0';
    if (!digits && !(t->opts & TEXT_OPT_NO_STEM)) {
        char st[TEXT_MAX_WORD * 2];
        size_t n = stem_code(t->lang, w, len, st, sizeof st);
        if (n == (size_t)-1)
            t->failed = 1;
        if (n == 0 || n == (size_t)-1)
            return;
        t->fn(t->ud, st, n, flags);
    } else {
        t->fn(t->ud, w, len, flags);
    }
}

/* Plain words of s[0..n): no URL/handle detection. camel splits "checkRefundStatus" (URL paths). */
static void emit_words(struct tk *t, const char *s, size_t n, unsigned flags, int camel)
{
    const unsigned char *u = (const unsigned char *)s;
    char w[TEXT_MAX_WORD + 8];
    size_t len = 0;
    int overlong = 0;
    uint32_t prev = 0;
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        size_t k = utf8_decode(u + i, n - i, &cp);
        if (cp == '%' && camel && i + 2 < n && ascii_alnum(u[i + 1]) && ascii_alnum(u[i + 2])) {
            k = 3; /* a percent escape in a URL separates words */
            cp = ' ';
        }
        if (is_word_cp(cp)) {
            if (camel && len > 0 && is_upper_cp(cp)) {
                uint32_t next = 0;
                if (i + k < n)
                    utf8_decode(u + i + k, n - i - k, &next);
                if (is_lower_cp(prev) || (is_upper_cp(prev) && is_lower_cp(next))) {
                    if (!overlong)
                        word_done(t, w, len, flags);
                    len = 0;
                    overlong = 0;
                }
            }
            char enc[4];
            size_t e = utf8_encode(fold_cp(cp), enc);
            if (len + e > TEXT_MAX_WORD)
                overlong = 1;
            else {
                memcpy(w + len, enc, e);
                len += e;
            }
        } else if ((cp == '\'' || cp == 0x2019) && len > 0 && i + k < n) {
            uint32_t next;
            utf8_decode(u + i + k, n - i - k, &next);
            if (is_word_cp(next) && len + 1 <= TEXT_MAX_WORD) {
                w[len++] = '\'';
            } else {
                if (!overlong)
                    word_done(t, w, len, flags);
                len = 0;
                overlong = 0;
            }
        } else if (len > 0 || overlong) {
            if (!overlong)
                word_done(t, w, len, flags);
            len = 0;
            overlong = 0;
        }
        prev = cp;
        i += k;
    }
    if (len > 0 && !overlong)
        word_done(t, w, len, flags);
}

static int lower_eq(const char *s, size_t n, const char *lit)
{
    size_t m = strlen(lit);
    if (n < m)
        return 0;
    for (size_t i = 0; i < m; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != lit[i])
            return 0;
    }
    return 1;
}

/* Length of "scheme://" at s, 0 when none. */
static size_t scheme_len(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && i < 10 && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')))
        i++;
    if (i > 0 && i + 2 < n && s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/')
        return i + 3;
    return 0;
}

/* After the scheme: "web.archive.org/web/<stamp>/" (and variants like "<stamp>id_/") hides the
 * real address; returns its length so the caller can skip it, 0 when absent. */
static size_t archive_prefix_len(const char *s, size_t n)
{
    size_t i = 0;
    if (lower_eq(s, n, "www."))
        i = 4;
    if (!lower_eq(s + i, n - i, "web.archive.org/web/"))
        return 0;
    i += strlen("web.archive.org/web/");
    size_t d = i;
    while (i < n && s[i] != '/')
        i++;
    if (i == d || i >= n)
        return 0;
    return i + 1;
}

/* Where the real address starts in a (possibly archived) URL. */
static size_t url_start(const char *s, size_t n)
{
    size_t off = 0;
    for (int hop = 0; hop < 3; hop++) {
        off += scheme_len(s + off, n - off);
        size_t a = archive_prefix_len(s + off, n - off);
        if (!a)
            break;
        off += a;
        /* The archived address may come as "http:/x" after slash merging. */
        size_t sl = scheme_len(s + off, n - off);
        if (!sl && lower_eq(s + off, n - off, "http:/"))
            off += lower_eq(s + off, n - off, "https:/") ? 7 : 6;
    }
    return off;
}

static int host_label_generic(const char *s, size_t n)
{
    static const char *const generic[] = {"www", "www2", "www3", "m", "mobile", NULL};
    for (size_t i = 0; generic[i]; i++)
        if (strlen(generic[i]) == n && lower_eq(s, n, generic[i]))
            return 1;
    return 0;
}

static int second_level_generic(const char *s, size_t n)
{
    static const char *const sl[] = {"co", "com", "org", "net", "ac", "gov", "edu", "ne", "or", NULL};
    for (size_t i = 0; sl[i]; i++)
        if (strlen(sl[i]) == n && lower_eq(s, n, sl[i]))
            return 1;
    return 0;
}

/* Host labels and path words of the URL s[0..n). */
static void emit_url(struct tk *t, const char *s, size_t n)
{
    size_t p = url_start(s, n);
    /* host: up to '/', '?', '#'; minus userinfo and port */
    size_t h0 = p, h1 = p;
    while (h1 < n && s[h1] != '/' && s[h1] != '?' && s[h1] != '#')
        h1++;
    for (size_t i = h0; i < h1; i++)
        if (s[i] == '@')
            h0 = i + 1;
    size_t he = h0;
    while (he < h1 && s[he] != ':')
        he++;
    /* labels */
    size_t lab_start[16], lab_len[16], nl = 0;
    for (size_t i = h0; i < he && nl < 16;) {
        size_t j = i;
        while (j < he && s[j] != '.')
            j++;
        if (j > i) {
            lab_start[nl] = i;
            lab_len[nl] = j - i;
            nl++;
        }
        i = j + 1;
    }
    size_t keep = nl;
    if (keep >= 2) {
        keep--; /* the TLD */
        if (keep >= 2 && lab_len[nl - 1] == 2 && second_level_generic(s + lab_start[keep - 1], lab_len[keep - 1]))
            keep--; /* co.uk, com.au */
    }
    for (size_t i = 0; i < keep; i++)
        if (!host_label_generic(s + lab_start[i], lab_len[i]))
            emit_words(t, s + lab_start[i], lab_len[i], TEXT_TOK_HOST, 0);
    /* path, without query and fragment */
    size_t q = h1;
    while (q < n && s[q] != '?' && s[q] != '#')
        q++;
    if (q > h1)
        emit_words(t, s + h1, q - h1, TEXT_TOK_URL, 1);
}

static int url_char(unsigned char c)
{
    return c > ' ' && c < 0x7F && c != '<' && c != '>' && c != '"' && c != '`' && c != '{' &&
           c != '}' && c != '|' && c != '\\' && c != '^';
}

/* Length of a URL starting at s (http://, https://, www.), trailing punctuation excluded; 0
 * when s does not start one. */
static size_t url_len(const char *s, size_t n)
{
    size_t i;
    if (lower_eq(s, n, "http://"))
        i = 7;
    else if (lower_eq(s, n, "https://"))
        i = 8;
    else if (lower_eq(s, n, "www.") && n > 4 && ascii_alnum((unsigned char)s[4]))
        i = 4;
    else
        return 0;
    while (i < n && url_char((unsigned char)s[i]))
        i++;
    while (i > 0 && strchr(".,;:!?)]}'*", s[i - 1]))
        i--;
    return i;
}

static int email_local_char(unsigned char c) { return ascii_alnum(c) || strchr("._%+-", c) != NULL; }

/* Length of an e-mail address starting at s, 0 when none: addresses are identifiers, not
 * words about the problem. */
static size_t email_len(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && email_local_char((unsigned char)s[i]) && s[i] != '\0')
        i++;
    if (i == 0 || i >= n || s[i] != '@')
        return 0;
    size_t d = ++i;
    int dots = 0;
    while (i < n && (ascii_alnum((unsigned char)s[i]) || s[i] == '-' || s[i] == '.')) {
        dots += s[i] == '.';
        i++;
    }
    while (i > d && s[i - 1] == '.') {
        i--;
        dots--;
    }
    return (dots > 0 && i > d) ? i : 0;
}

static int handle_char(unsigned char c) { return ascii_alnum(c) || c == '_'; }

int text_tokenize(const char *text, size_t len, const char *lang, unsigned opts, text_token_fn fn, void *ud)
{
    if (!text || !fn)
        return 0;
    char code[TEXT_LANG_MAX];
    lang_code(lang, code);
    struct tk t = {.lang = code, .opts = opts, .fn = fn, .ud = ud};
    t.stop = stopset_get(code);
    if (!t.stop)
        return -1;
    if (opts & TEXT_OPT_URL_ONLY) {
        emit_url(&t, text, len);
        return t.failed ? -1 : 0;
    }
    const unsigned char *u = (const unsigned char *)text;
    size_t seg = 0, i = 0;
    while (i < len) {
        unsigned char c = u[i];
        unsigned char pc = i ? u[i - 1] : ' ';
        size_t k = 0;
        if (!ascii_alnum(pc) && (c == 'h' || c == 'H' || c == 'w' || c == 'W'))
            k = url_len(text + i, len - i);
        if (k > 0) {
            emit_words(&t, text + seg, i - seg, 0, 0);
            emit_url(&t, text + i, k);
            i += k;
            seg = i;
            continue;
        }
        if (c == '@' && !ascii_alnum(pc) && i + 1 < len && handle_char(u[i + 1])) {
            emit_words(&t, text + seg, i - seg, 0, 0);
            size_t j = i + 1;
            while (j < len && handle_char(u[j]))
                j++;
            emit_words(&t, text + i + 1, j - i - 1, TEXT_TOK_HANDLE, 0);
            i = j;
            seg = i;
            continue;
        }
        if (ascii_alnum(c) && !email_local_char(pc))
            k = email_len(text + i, len - i);
        if (k > 0) {
            emit_words(&t, text + seg, i - seg, 0, 0);
            i += k;
            seg = i;
            continue;
        }
        /* "https: //host/..." (a space slipped in): the scheme word is not a word about anything */
        if ((c == 'h' || c == 'H') && !ascii_alnum(pc) &&
            (lower_eq(text + i, len - i, "http:") || lower_eq(text + i, len - i, "https:"))) {
            emit_words(&t, text + seg, i - seg, 0, 0);
            i += lower_eq(text + i, len - i, "https:") ? 6 : 5;
            seg = i;
            continue;
        }
        i++;
    }
    emit_words(&t, text + seg, len - seg, 0, 0);
    return t.failed ? -1 : 0;
}

/* ---- URL normalisation -------------------------------------------------------------------- */

size_t text_url_normalize(const char *url, size_t len, char *out, size_t outsz)
{
    if (!url || outsz == 0)
        return 0;
    while (len > 0 && (url[len - 1] == ' ' || url[len - 1] == '\n' || url[len - 1] == '\r' ||
                       url[len - 1] == '\t'))
        len--;
    while (len > 0 && (*url == ' ' || *url == '\t' || *url == '<' || *url == '('))
        url++, len--;
    /* a URL ends at the first space or control byte (NUL included) */
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)url[i] <= ' ' || url[i] == 0x7F) {
            len = i;
            break;
        }
    size_t p = url_start(url, len);
    const char *s = url + p;
    size_t n = len - p;
    if (lower_eq(s, n, "www."))
        s += 4, n -= 4;
    /* fragment */
    for (size_t i = 0; i < n; i++)
        if (s[i] == '#') {
            n = i;
            break;
        }
    /* trailing punctuation (sentence ends, closing brackets, quotes, ellipses) */
    for (;;) {
        if (n > 0 && strchr(".,;:!?)]}>'\"*/", s[n - 1])) {
            n--;
            continue;
        }
        if (n >= 3 && (unsigned char)s[n - 3] == 0xE2 && (unsigned char)s[n - 2] == 0x80 &&
            ((unsigned char)s[n - 1] == 0xA6 || (unsigned char)s[n - 1] == 0x9D ||
             (unsigned char)s[n - 1] == 0x99)) {
            n -= 3; /* … ” ’ */
            continue;
        }
        break;
    }
    /* an empty query string is no query string */
    if (n > 0 && s[n - 1] == '?')
        n--;
    while (n > 0 && s[n - 1] == '/')
        n--;
    if (n == 0)
        return 0;
    size_t o = 0;
    int in_host = 1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '/' || c == '?')
            in_host = 0;
        if (in_host && c == ':') {
            /* drop a port: ":443", ":80" */
            size_t j = i + 1;
            while (j < n && s[j] >= '0' && s[j] <= '9')
                j++;
            if (j > i + 1 && (j == n || s[j] == '/' || s[j] == '?')) {
                i = j - 1;
                continue;
            }
        }
        if (c >= 'A' && c <= 'Z') /* links are compared case-blind: agents retype them */
            c = (char)(c + 32);
        if (o + 1 >= outsz)
            return 0;
        out[o++] = c;
    }
    out[o] = '\0';
    /* "host/path/?q" -> the slash before '?' carries nothing */
    char *qm = strchr(out, '?');
    if (qm && qm > out && qm[-1] == '/') {
        memmove(qm - 1, qm, strlen(qm) + 1);
        o--;
    }
    return o;
}

struct hash_acc {
    uint64_t *out;
    size_t n, max;
};

static void hash_token(void *ud, const char *term, size_t len, unsigned flags)
{
    struct hash_acc *a = ud;
    if ((flags & TEXT_TOK_NUMBER) || a->n >= a->max)
        return;
    uint64_t h = text_hash(TEXT_HASH_SEED, term, len);
    for (size_t i = 0; i < a->n; i++)
        if (a->out[i] == h)
            return;
    a->out[a->n++] = h;
}

int text_word_hashes(const char *text, size_t len, const char *lang, uint64_t *out, size_t max, size_t *n)
{
    struct hash_acc a = {out, 0, max};
    *n = 0;
    if (max && text_tokenize(text, len, lang, 0, hash_token, &a) < 0)
        return -1;
    *n = a.n;
    return 0;
}
