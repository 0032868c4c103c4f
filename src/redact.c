/* PII redaction: cards, IBANs, e-mails, phones, SSNs, personnummer become stable placeholders. */
#include "tandem/redact.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/error.h"

/* How it works, and why this way:
 * 1. Normalise: decode the UTF-8 once into one byte-sized class per code point. Full-width forms
 *    fold to ASCII, unusual spaces to ' ', dashes to '-'; zero-width characters and the soft hyphen
 *    are dropped, so "4111<ZWSP>1111..." reads as digits. Each class keeps the byte offset of its
 *    code point, so a replaced span covers the original bytes, hidden characters included.
 * 2. E-mails first (anchored on '@'), then URLs (digits in a URL are ids, not PII, except a query
 *    value after '='), then one left-to-right pass for the number-shaped kinds. Each kind is a small
 *    hand-written matcher with a bounded look-ahead: no regex, no backtracking, linear time.
 * 3. An accepted span is overwritten in the class array with the shape of its placeholder
 *    ("[XX...X]"), so every later boundary check sees what a second pass over the output would
 *    see. Boundary rules are mirrored (what stops a match on its right also stops the next one on
 *    its left). Together that makes redacting the output again a no-op. */

/* Limits. */
#define REDACT_MAP_MAX_ENTRIES (1u << 20) /* distinct values per map: bounds what one conversation pins */
#define REDACT_MAP_SLOTS_MIN 64           /* first hash table size; doubles at 3/4 load */
#define REDACT_PLACEHOLDER_MAX 32         /* "[EMAIL_1048576]" and friends fit easily */
#define CARD_MIN_DIGITS 13                /* ISO/IEC 7812 PAN lengths */
#define CARD_MAX_DIGITS 19
#define CARD_MAX_GROUPS 8
#define PHONE_MIN_E164 8           /* shorter "+" numbers exist (tiny islands) but collide with amounts */
#define PHONE_MAX_E164 15          /* ITU-T E.164 */
#define PHONE_MAX_DIGITS 17        /* E.164 plus a dialled "00" international prefix */
#define PHONE_MAX_GROUPS 12
#define IBAN_MAX_CHARS 34          /* ISO 13616 */
#define EMAIL_TLD_MAX 63           /* one DNS label */

static const char *const kind_names[REDACT__KINDS] = {"CARD", "IBAN", "EMAIL", "PHONE", "SSN", "PNR"};

const char *redact_kind_name(enum redact_kind kind)
{
    return (unsigned)kind < REDACT__KINDS ? kind_names[kind] : "UNKNOWN";
}

/* ---- the map: (kind, normalised value) -> number, and back ---------------------------------- */

struct redact_entry {
    struct redact_entry *next; /* hash chain */
    uint64_t hash;
    size_t key_len;
    unsigned num;
    unsigned char kind;
    const char *orig; /* points into data: the value as first written */
    char data[];      /* key, NUL, original, NUL */
};

struct redact_map {
    struct redact_entry **slots;
    size_t nslots; /* power of two */
    size_t count;
    struct redact_entry **by_num[REDACT__KINDS]; /* by_num[k][i] is the entry numbered i + 1 */
    size_t by_cap[REDACT__KINDS];
    unsigned by_len[REDACT__KINDS];
};

static void map_cleanup(struct redact_map *m)
{
    for (size_t i = 0; i < m->nslots; i++) {
        struct redact_entry *e = m->slots[i];
        while (e) {
            struct redact_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->slots);
    for (unsigned k = 0; k < REDACT__KINDS; k++)
        free(m->by_num[k]);
    memset(m, 0, sizeof(*m));
}

struct redact_map *redact_map_new(void) { return calloc(1, sizeof(struct redact_map)); }

void redact_map_free(struct redact_map *m)
{
    if (!m)
        return;
    map_cleanup(m);
    free(m);
}

static uint64_t map_hash(unsigned kind, const char *key, size_t len)
{
    uint64_t h = 1469598103934665603ull ^ kind; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int map_grow(struct redact_map *m)
{
    size_t n = m->nslots ? m->nslots * 2 : REDACT_MAP_SLOTS_MIN;
    struct redact_entry **slots = calloc(n, sizeof(*slots));
    if (!slots)
        return T_ERR_NOMEM;
    for (size_t i = 0; i < m->nslots; i++) {
        struct redact_entry *e = m->slots[i];
        while (e) {
            struct redact_entry *next = e->next;
            size_t j = (size_t)e->hash & (n - 1);
            e->next = slots[j];
            slots[j] = e;
            e = next;
        }
    }
    free(m->slots);
    m->slots = slots;
    m->nslots = n;
    return T_OK;
}

/* The number of (kind, key); a new one (remembering orig) when the value is new. */
static int map_intern(struct redact_map *m, unsigned kind, const char *key, size_t key_len,
                      const char *orig, size_t orig_len, unsigned *num)
{
    uint64_t h = map_hash(kind, key, key_len);
    if (m->nslots) {
        for (struct redact_entry *e = m->slots[(size_t)h & (m->nslots - 1)]; e; e = e->next) {
            if (e->hash == h && e->kind == kind && e->key_len == key_len &&
                memcmp(e->data, key, key_len) == 0) {
                *num = e->num;
                return T_OK;
            }
        }
    }
    if (m->count >= REDACT_MAP_MAX_ENTRIES)
        return T_ERR_TOO_LARGE;
    if (m->count + 1 > m->nslots / 4 * 3) {
        int err = map_grow(m);
        if (err)
            return err;
    }
    if (m->by_len[kind] == m->by_cap[kind]) {
        size_t cap = m->by_cap[kind] ? m->by_cap[kind] * 2 : 8;
        struct redact_entry **v = realloc(m->by_num[kind], cap * sizeof(*v));
        if (!v)
            return T_ERR_NOMEM;
        m->by_num[kind] = v;
        m->by_cap[kind] = cap;
    }
    struct redact_entry *e = malloc(sizeof(*e) + key_len + orig_len + 2);
    if (!e)
        return T_ERR_NOMEM;
    e->hash = h;
    e->key_len = key_len;
    e->kind = (unsigned char)kind;
    e->num = m->by_len[kind] + 1;
    memcpy(e->data, key, key_len);
    e->data[key_len] = '\0';
    memcpy(e->data + key_len + 1, orig, orig_len);
    e->data[key_len + 1 + orig_len] = '\0';
    e->orig = e->data + key_len + 1;
    size_t j = (size_t)h & (m->nslots - 1);
    e->next = m->slots[j];
    m->slots[j] = e;
    m->by_num[kind][m->by_len[kind]++] = e;
    m->count++;
    *num = e->num;
    return T_OK;
}

/* Parses "[KIND_N]" at s (at most len bytes); returns its length and sets kind/num, or 0. */
static size_t placeholder_parse(const char *s, size_t len, unsigned *kind, unsigned *num)
{
    if (len < 4 || s[0] != '[')
        return 0;
    for (unsigned k = 0; k < REDACT__KINDS; k++) {
        size_t nl = strlen(kind_names[k]);
        if (len < nl + 4 || memcmp(s + 1, kind_names[k], nl) != 0 || s[1 + nl] != '_')
            continue;
        size_t i = nl + 2;
        unsigned long v = 0;
        if (s[i] < '1' || s[i] > '9') /* no leading zeros: one spelling per placeholder */
            return 0;
        while (i < len && s[i] >= '0' && s[i] <= '9') {
            v = v * 10 + (unsigned long)(s[i] - '0');
            if (v > REDACT_MAP_MAX_ENTRIES)
                return 0;
            i++;
        }
        if (i >= len || s[i] != ']')
            return 0;
        *kind = k;
        *num = (unsigned)v;
        return i + 1;
    }
    return 0;
}

static const char *map_find_num(const struct redact_map *m, unsigned kind, unsigned num)
{
    if (!m || kind >= REDACT__KINDS || num == 0 || num > m->by_len[kind])
        return NULL;
    return m->by_num[kind][num - 1]->orig;
}

const char *redact_map_lookup(const struct redact_map *m, const char *placeholder)
{
    if (!m || !placeholder)
        return NULL;
    size_t len = strlen(placeholder);
    unsigned kind = 0, num = 0;
    if (len == 0 || placeholder_parse(placeholder, len, &kind, &num) != len)
        return NULL;
    return map_find_num(m, kind, num);
}

unsigned redact_map_count(const struct redact_map *m, enum redact_kind kind)
{
    return m && (unsigned)kind < REDACT__KINDS ? m->by_len[kind] : 0;
}

/* ---- UTF-8 ----------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1-4 bytes) with its code point; for invalid input the
 * length of the maximal invalid subpart (Unicode's recommended U+FFFD substitution) and UINT32_MAX. */
static size_t utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    size_t need;
    uint32_t v;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
        v = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        v = c & 0x0Fu;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        else if (c == 0xED)
            hi = 0x9F; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        v = c & 0x07u;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        else if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else {
        *cp = UINT32_MAX;
        return 1;
    }
    size_t i = 1;
    for (; i <= need && i < n; i++) {
        if (s[i] < lo || s[i] > hi)
            break;
        lo = 0x80;
        hi = 0xBF;
        v = (v << 6) | (s[i] & 0x3Fu);
    }
    if (i <= need) {
        *cp = UINT32_MAX;
        return i;
    }
    *cp = v;
    return need + 1;
}

/* Appends s[0..len) with invalid sequences replaced by U+FFFD. */
static int put_sanitized(struct buf *out, const unsigned char *s, size_t len)
{
    size_t run = 0, i = 0;
    while (i < len) {
        uint32_t cp;
        size_t n = utf8_next(s + i, len - i, &cp);
        if (cp != UINT32_MAX) {
            i += n;
            continue;
        }
        int err = buf_append(out, s + run, i - run);
        if (!err)
            err = buf_append(out, "\xEF\xBF\xBD", 3);
        if (err)
            return err;
        i += n;
        run = i;
    }
    return buf_append(out, s + run, len - run);
}

/* ---- normalisation --------------------------------------------------------------------------- */

/* Classes above ASCII; ASCII code points are their own class. */
enum {
    C_OTHER = 0x80,    /* any other non-ASCII code point (CJK, symbols, punctuation); also invalid
                        * UTF-8, which must read exactly like the U+FFFD that replaces it in the
                        * output, or a second pass could decide differently */
    C_LETTER = 0x82,   /* a letter of an alphabetic script (Latin, Greek, Cyrillic): part of words */
    C_CURRENCY = 0x83, /* a currency sign: what precedes amounts, never phone numbers */
};

#define DROP (-1)

static int classify(uint32_t cp)
{
    if (cp < 0x80)
        return (int)cp;
    if (cp == UINT32_MAX)
        return C_OTHER;
    if (cp == 0x00AD || (cp >= 0x200B && cp <= 0x200D) || cp == 0x2060 || cp == 0xFEFF)
        return DROP; /* soft hyphen, zero-width space/joiners, word joiner, BOM */
    if (cp >= 0xFF01 && cp <= 0xFF5E)
        return (int)(cp - 0xFF01 + 0x21); /* full-width ASCII: digits, '@', '+', letters */
    if (cp == 0x00A0 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x202F || cp == 0x205F || cp == 0x3000)
        return ' ';
    if ((cp >= 0x2010 && cp <= 0x2013) || cp == 0x2212 || cp == 0xFE63)
        return '-';
    if ((cp >= 0x00A2 && cp <= 0x00A5) || (cp >= 0x20A0 && cp <= 0x20CF))
        return C_CURRENCY;
    if ((cp >= 0x00C0 && cp <= 0x024F && cp != 0x00D7 && cp != 0x00F7) || (cp >= 0x0370 && cp <= 0x052F))
        return C_LETTER;
    return C_OTHER;
}

struct match {
    uint32_t start, end; /* units [start, end) */
    unsigned num;
    unsigned char kind;
};

struct scan {
    const unsigned char *src;
    unsigned char *ch;  /* class per unit (see classify) */
    uint32_t *off;      /* byte offset of each unit in src */
    unsigned char *len; /* byte length of each unit | IN_URL */
    size_t n;
    struct match *m;
    size_t nm, mcap;
    struct redact_map *map;
    struct buf key; /* scratch: the normalised value of a match */
};

#define IN_URL 0x80u
#define LEN_MASK 0x07u

static unsigned char at(const struct scan *s, size_t i) { return i < s->n ? s->ch[i] : 0; }
static unsigned char before(const struct scan *s, size_t i, size_t k) { return i >= k ? s->ch[i - k] : 0; }
static bool in_url(const struct scan *s, size_t i) { return (s->len[i] & IN_URL) != 0; }

static bool is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static bool is_alpha(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
static bool is_alnum(unsigned char c) { return is_digit(c) || is_alpha(c); }
static bool is_word(unsigned char c) { return is_alnum(c) || c == '_' || c == C_LETTER; }
static unsigned char upper(unsigned char c) { return c >= 'a' && c <= 'z' ? (unsigned char)(c - 32) : c; }
static unsigned char lower(unsigned char c) { return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c; }

static int scan_init(struct scan *s, const char *text, size_t len, struct redact_map *map)
{
    memset(s, 0, sizeof(*s));
    s->src = (const unsigned char *)text;
    s->map = map;
    buf_init(&s->key, 0);
    if (len == 0)
        return T_OK;
    if (len > UINT32_MAX || len > SIZE_MAX / 8)
        return T_ERR_TOO_LARGE; /* unit offsets are 32-bit */
    unsigned char *mem = malloc(len * (sizeof(uint32_t) + 2));
    if (!mem)
        return T_ERR_NOMEM;
    s->off = (uint32_t *)(void *)mem;
    s->ch = mem + len * sizeof(uint32_t);
    s->len = s->ch + len;
    size_t i = 0, n = 0;
    while (i < len) {
        uint32_t cp;
        size_t k = utf8_next(s->src + i, len - i, &cp);
        int c = classify(cp);
        if (c != DROP) {
            s->ch[n] = (unsigned char)c;
            s->off[n] = (uint32_t)i;
            s->len[n] = (unsigned char)k;
            n++;
        }
        i += k;
    }
    s->n = n;
    return T_OK;
}

static void scan_cleanup(struct scan *s)
{
    free(s->off);
    free(s->m);
    buf_cleanup(&s->key);
}

/* Builds the value the map keys on: equal for the same card written with spaces or dashes, the same
 * e-mail in other case, the same personnummer with or without the century. */
static int make_key(struct scan *s, size_t a, size_t b, unsigned kind)
{
    struct buf *k = &s->key;
    buf_reset(k);
    int err = T_OK;
    for (size_t i = a; i < b && !err; i++) {
        unsigned char c = s->ch[i];
        switch (kind) {
        case REDACT_EMAIL:
            if (c < 0x80)
                err = buf_putc(k, (char)lower(c));
            else
                err = buf_append(k, s->src + s->off[i], s->len[i] & LEN_MASK);
            break;
        case REDACT_IBAN:
            if (is_alnum(c))
                err = buf_putc(k, (char)upper(c));
            break;
        case REDACT_PHONE:
            if (is_digit(c) || c == '+')
                err = buf_putc(k, (char)c);
            break;
        default:
            if (is_digit(c))
                err = buf_putc(k, (char)c);
            break;
        }
    }
    if (err)
        return err;
    if (kind == REDACT_PHONE && k->len > 2 && k->data[0] == '0' && k->data[1] == '0') {
        k->data[1] = '+'; /* "0046..." dials "+46..." */
        memmove(k->data, k->data + 1, k->len);
        k->len--;
    }
    if (kind == REDACT_PNR && k->len == 12) {
        memmove(k->data, k->data + 2, k->len - 1); /* the century is optional in writing */
        k->len -= 2;
    }
    return T_OK;
}

/* Records units [a, b) as a match of kind and overwrites them with the placeholder's shape. */
static int scan_accept(struct scan *s, size_t a, size_t b, unsigned kind)
{
    int err = make_key(s, a, b, kind);
    if (err)
        return err;
    size_t ob = s->off[a], oe = s->off[b - 1] + (s->len[b - 1] & LEN_MASK);
    unsigned num;
    err = map_intern(s->map, kind, s->key.data, s->key.len, (const char *)s->src + ob, oe - ob, &num);
    if (err)
        return err;
    if (s->nm == s->mcap) {
        size_t cap = s->mcap ? s->mcap * 2 : 16;
        struct match *m = realloc(s->m, cap * sizeof(*m));
        if (!m)
            return T_ERR_NOMEM;
        s->m = m;
        s->mcap = cap;
    }
    s->m[s->nm++] = (struct match){(uint32_t)a, (uint32_t)b, num, (unsigned char)kind};
    s->ch[a] = '[';
    for (size_t i = a + 1; i + 1 < b; i++)
        s->ch[i] = 'X';
    s->ch[b - 1] = ']';
    return T_OK;
}

/* ---- e-mail ------------------------------------------------------------------------------- */

static bool is_local(unsigned char c)
{
    return is_alnum(c) || c == C_LETTER || c == '.' || c == '_' || c == '%' || c == '+' || c == '-';
}
static bool is_label(unsigned char c) { return is_alnum(c) || c == C_LETTER || c == '-'; }

/* End of the longest domain after '@' at i whose last label is a plausible TLD, or 0. The longest
 * prefix ending at a label boundary (not the whole run) so that "a@b.com.4111..." still finds
 * the address and what follows it is judged on its own. */
static size_t email_domain_end(const struct scan *s, size_t i)
{
    size_t j = i + 1, valid = 0;
    unsigned labels = 0;
    for (;;) {
        size_t ls = j;
        bool alpha = true;
        while (j < s->n && is_label(s->ch[j])) {
            alpha = alpha && (is_alpha(s->ch[j]) || s->ch[j] == C_LETTER);
            j++;
        }
        if (j == ls)
            break;
        labels++;
        if (labels >= 2 && alpha && j - ls >= 2 && j - ls <= EMAIL_TLD_MAX)
            valid = j;
        if (at(s, j) != '.')
            break;
        j++;
    }
    return valid;
}

static int scan_emails(struct scan *s)
{
    for (size_t i = 0; i < s->n; i++) {
        if (s->ch[i] != '@')
            continue;
        /* the local part runs back to anything that cannot be in one, which includes a previous
         * match's ']' and '@' itself: every unit is walked at most twice over all '@'s */
        size_t a = i;
        while (a > 0 && is_local(s->ch[a - 1]))
            a--;
        while (a < i && s->ch[a] == '.')
            a++;
        if (a == i)
            continue;
        size_t e = email_domain_end(s, i);
        if (!e)
            continue;
        int err = scan_accept(s, a, e, REDACT_EMAIL);
        if (err)
            return err;
        i = e - 1;
    }
    return T_OK;
}

/* ---- URLs: where digits are ids ----------------------------------------------------------- */

static bool is_scheme(unsigned char c) { return is_alnum(c) || c == '+' || c == '.' || c == '-'; }
static bool is_url_end(unsigned char c)
{
    return c <= ' ' || c == '<' || c == '>' || c == '"';
}

static void scan_urls(struct scan *s)
{
    size_t i = 0;
    while (i < s->n) {
        unsigned char c = s->ch[i];
        size_t start = SIZE_MAX;
        if (c == ':' && at(s, i + 1) == '/' && at(s, i + 2) == '/') {
            size_t a = i;
            while (a > 0 && is_scheme(s->ch[a - 1]))
                a--;
            if (a < i && is_alpha(s->ch[a]))
                start = a;
        } else if (lower(c) == 'w' && lower(at(s, i + 1)) == 'w' && lower(at(s, i + 2)) == 'w' &&
                   at(s, i + 3) == '.') {
            unsigned char p = before(s, i, 1);
            if (!is_word(p) && p != '.' && p != '-' && p != '@')
                start = i;
        }
        if (start == SIZE_MAX) {
            i++;
            continue;
        }
        size_t e = i;
        while (e < s->n && !is_url_end(s->ch[e]))
            e++;
        for (size_t k = start; k < e; k++)
            s->len[k] |= IN_URL;
        i = e > i ? e : i + 1;
    }
}

/* ---- boundaries shared by the number-shaped kinds ---------------------------------------------- */

static bool is_glue(unsigned char c) { return c == '.' || c == ',' || c == '-' || c == '/'; }

/* A value may not continue a word or a longer number: "abc4111...", "12.4111...", "v-0701...". */
static bool left_ok(const struct scan *s, size_t p)
{
    unsigned char a = before(s, p, 1), b = before(s, p, 2);
    if (is_word(a) || a == '+' || a == '@')
        return false;
    if (is_glue(a) && (is_alnum(b) || b == C_LETTER))
        return false;
    if (a == ':' && is_digit(b)) /* "12:070..." */
        return false;
    return true;
}

/* Mirror of left_ok: a value may not run into a word or a decimal/longer number. */
static bool right_ok(const struct scan *s, size_t e)
{
    unsigned char a = at(s, e), b = at(s, e + 1);
    if (is_word(a))
        return false;
    if (is_glue(a) && is_digit(b))
        return false;
    return true;
}

/* Words after which a number is an id, not a phone number ("Order ID: 0258746938"). */
static const char *const id_words[] = {
    "order",   "orders",  "id",          "ref",     "reference", "invoice",     "ticket",
    "case",    "tracking", "confirmation", "booking", "transaction", "receipt", "account",
    "acct",    "customer", "member",      "serial",  "sku",       "item",        "package",
    "parcel",  "shipment", "ordernummer", "ordernr", "kundnummer", "faktura",    "referens",
};

#define ID_WORDS_BACK 3  /* "order id is 0701..." */
#define ID_WORD_MAX 16   /* longer words are not in the list */
#define ID_LOOK_BACK 48  /* units; keeps the look-back bounded */

/* Whether one of the ID_WORDS_BACK words before p is an id word. Stops at ']' (the end of a
 * placeholder or of an accepted match) so that a second pass over the output decides the same. */
static bool after_id_word(const struct scan *s, size_t p)
{
    size_t i = p, stop = p > ID_LOOK_BACK ? p - ID_LOOK_BACK : 0;
    for (unsigned w = 0; w < ID_WORDS_BACK; w++) {
        while (i > stop && (s->ch[i - 1] == ' ' || s->ch[i - 1] == ':' || s->ch[i - 1] == '#' ||
                            s->ch[i - 1] == '.' || s->ch[i - 1] == '-' || s->ch[i - 1] == '='))
            i--;
        size_t e = i;
        while (i > stop && is_alpha(s->ch[i - 1]))
            i--;
        if (i == e || (i > 0 && is_word(s->ch[i - 1])))
            return false;
        char word[ID_WORD_MAX + 1];
        size_t n = e - i;
        if (n <= ID_WORD_MAX) {
            for (size_t k = 0; k < n; k++)
                word[k] = (char)lower(s->ch[i + k]);
            word[n] = '\0';
            for (size_t k = 0; k < sizeof(id_words) / sizeof(id_words[0]); k++)
                if (strcmp(word, id_words[k]) == 0)
                    return true;
        }
    }
    return false;
}

/* Phone numbers are not what follows '#' (order ids) or a currency sign (amounts), and do not
 * start inside a space-grouped number ("ref 1234 0567 8901") unless they start with '+'. */
static bool phone_left_ok(const struct scan *s, size_t p)
{
    unsigned char a = before(s, p, 1);
    if (a == '#' || a == '$' || a == C_CURRENCY)
        return false;
    return s->ch[p] == '+' || a != ' ' || !is_digit(before(s, p, 2));
}

/* Number of digits from i, stopping at max + 1. */
static size_t digit_run(const struct scan *s, size_t i, size_t max)
{
    size_t k = 0;
    while (k <= max && is_digit(at(s, i + k)))
        k++;
    return k;
}

static bool luhn_ok(const char *d, size_t n)
{
    unsigned sum = 0;
    bool dbl = false;
    for (size_t i = n; i-- > 0;) {
        unsigned x = (unsigned)(d[i] - '0');
        if (dbl) {
            x *= 2;
            if (x > 9)
                x -= 9;
        }
        sum += x;
        dbl = !dbl;
    }
    return sum % 10 == 0;
}

static unsigned num_at(const char *d, size_t n)
{
    unsigned v = 0;
    for (size_t i = 0; i < n; i++)
        v = v * 10 + (unsigned)(d[i] - '0');
    return v;
}

/* ---- payment cards ----------------------------------------------------------------------------- */

/* Issuer prefixes of the networks that use 13-19 digit PANs; others (0, 1, 7-9, most of 2 and
 * 31-33) are ids, tweet numbers and the like that happen to pass Luhn one time in ten. */
static bool card_iin_ok(const char *d)
{
    unsigned p2 = num_at(d, 2), p4 = num_at(d, 4);
    switch (d[0]) {
    case '4': /* Visa */
    case '5': /* Mastercard 51-55, Maestro 50, 56-59 */
    case '6': /* Discover, UnionPay, Maestro, RuPay */
        return true;
    case '3': /* Amex 34/37, Diners 30/36/38/39, JCB 35 */
        return p2 != 31 && p2 != 32 && p2 != 33;
    case '2': /* Mastercard 2-series, Mir */
        return (p4 >= 2221 && p4 <= 2720) || (p4 >= 2200 && p4 <= 2204);
    default:
        return false;
    }
}

/* Digits in groups separated by one kind of ' ', '-' or '.'; every group after the first has at
 * least 3 digits so phone numbers and lists of small numbers never add up to a card. */
static size_t match_card(const struct scan *s, size_t p)
{
    char d[CARD_MAX_DIGITS];
    size_t ends[CARD_MAX_GROUPS];
    unsigned cnt[CARD_MAX_GROUPS];
    unsigned ng = 0, nd = 0;
    unsigned char sep = 0;
    size_t i = p;
    for (;;) {
        size_t glen = digit_run(s, i, CARD_MAX_DIGITS);
        if (nd + glen > CARD_MAX_DIGITS || (ng > 0 && glen < 3))
            break;
        for (size_t k = 0; k < glen; k++)
            d[nd++] = (char)s->ch[i + k];
        ends[ng] = i + glen;
        cnt[ng] = nd;
        if (++ng == CARD_MAX_GROUPS)
            break;
        unsigned char c = at(s, i + glen);
        if ((c == ' ' || c == '-' || c == '.') && (!sep || sep == c) && is_digit(at(s, i + glen + 1))) {
            sep = c;
            i += glen + 1;
            continue;
        }
        break;
    }
    for (unsigned k = ng; k-- > 0;) {
        if (cnt[k] < CARD_MIN_DIGITS)
            break;
        if (card_iin_ok(d) && luhn_ok(d, cnt[k]) && right_ok(s, ends[k]))
            return ends[k];
    }
    return 0;
}

/* ---- IBAN ------------------------------------------------------------------------------------------ */

/* IBAN lengths per country from the SWIFT IBAN registry (plus the partner countries that use the
 * format); an unknown country is no IBAN. */
static const struct {
    char cc[3];
    unsigned char len;
} iban_countries[] = {
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AO", 25}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16},
    {"BF", 28}, {"BG", 22}, {"BH", 22}, {"BI", 27}, {"BJ", 28}, {"BR", 29}, {"BY", 28}, {"CF", 27},
    {"CG", 27}, {"CH", 21}, {"CI", 28}, {"CM", 27}, {"CR", 22}, {"CV", 25}, {"CY", 28}, {"CZ", 24},
    {"DE", 22}, {"DJ", 27}, {"DK", 18}, {"DO", 28}, {"DZ", 26}, {"EE", 20}, {"EG", 29}, {"ES", 24},
    {"FI", 18}, {"FK", 18}, {"FO", 18}, {"FR", 27}, {"GA", 27}, {"GB", 22}, {"GE", 22}, {"GI", 23},
    {"GL", 18}, {"GQ", 27}, {"GR", 27}, {"GT", 28}, {"GW", 25}, {"HN", 28}, {"HR", 21}, {"HU", 28},
    {"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IR", 26}, {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KM", 27},
    {"KW", 30}, {"KZ", 20}, {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21},
    {"LY", 25}, {"MA", 28}, {"MC", 27}, {"MD", 24}, {"ME", 22}, {"MG", 27}, {"MK", 19}, {"ML", 28},
    {"MN", 20}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"MZ", 25}, {"NE", 28}, {"NI", 28}, {"NL", 18},
    {"NO", 15}, {"OM", 23}, {"PK", 24}, {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24},
    {"RS", 22}, {"RU", 33}, {"SA", 24}, {"SC", 31}, {"SD", 18}, {"SE", 24}, {"SI", 19}, {"SK", 24},
    {"SM", 27}, {"SN", 28}, {"SO", 23}, {"ST", 25}, {"SV", 28}, {"TD", 27}, {"TG", 28}, {"TL", 23},
    {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20}, {"YE", 30},
};

static unsigned iban_length(unsigned char a, unsigned char b)
{
    for (size_t i = 0; i < sizeof(iban_countries) / sizeof(iban_countries[0]); i++)
        if (iban_countries[i].cc[0] == a && iban_countries[i].cc[1] == b)
            return iban_countries[i].len;
    return 0;
}

/* Country, check digits and BBAN, contiguous or in groups of four separated by single spaces.
 * *shaped gets the end of a token that has the form but fails the check, so the caller skips it
 * whole instead of finding a phone number in the tail of a mistyped IBAN. */
static size_t match_iban(const struct scan *s, size_t p, size_t *shaped)
{
    unsigned char a = upper(at(s, p)), b = upper(at(s, p + 1));
    if (!is_alpha(a) || !is_alpha(b) || !is_digit(at(s, p + 2)) || !is_digit(at(s, p + 3)))
        return 0;
    unsigned want = iban_length(a, b);
    if (!want)
        return 0;
    char v[IBAN_MAX_CHARS];
    unsigned nv = 0;
    size_t i = p;
    while (nv < want) {
        unsigned char c = at(s, i);
        if (is_alnum(c))
            v[nv++] = (char)upper(c);
        else if (!(c == ' ' && nv % 4 == 0 && is_alnum(at(s, i + 1))))
            return 0;
        i++;
    }
    if (!right_ok(s, i))
        return 0;
    *shaped = i;
    unsigned r = 0; /* ISO 7064 mod 97-10 over BBAN + country + check digits */
    for (unsigned k = 0; k < nv; k++) {
        unsigned char c = (unsigned char)v[(k + 4) % nv];
        r = is_digit(c) ? (r * 10 + (unsigned)(c - '0')) % 97 : (r * 100 + (unsigned)(c - 'A' + 10)) % 97;
    }
    return r == 1 ? i : 0;
}

/* ---- US SSN -------------------------------------------------------------------------------------- */

/* AAA-GG-SSSS (or with spaces); the SSA never issues area 000, 666 or 9xx, group 00, serial 0000. */
static size_t match_ssn(const struct scan *s, size_t p, unsigned char sep)
{
    if (digit_run(s, p, 3) != 3 || at(s, p + 3) != sep || digit_run(s, p + 4, 2) != 2 ||
        at(s, p + 6) != sep || digit_run(s, p + 7, 4) != 4)
        return 0;
    char d[9];
    for (size_t i = 0, k = 0; i < 11; i++)
        if (i != 3 && i != 6)
            d[k++] = (char)s->ch[p + i];
    unsigned area = num_at(d, 3), group = num_at(d + 3, 2), serial = num_at(d + 5, 4);
    if (area == 0 || area == 666 || area >= 900 || group == 0 || serial == 0)
        return 0;
    return right_ok(s, p + 11) ? p + 11 : 0;
}

/* ---- Swedish personnummer / samordningsnummer ------------------------------------------------------ */

static bool is_leap(unsigned y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* century 0 when unknown (10-digit forms); plus: the '+' separator of people aged 100 or more. */
static bool pnr_date_ok(unsigned century, unsigned yy, unsigned mm, unsigned dd, bool plus)
{
    static const unsigned char mdays[12] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (dd > 60)
        dd -= 60; /* samordningsnummer: day + 60 */
    if (mm < 1 || mm > 12 || dd < 1 || dd > mdays[mm - 1])
        return false;
    if (mm != 2 || dd != 29)
        return true;
    if (century)
        return is_leap(century * 100 + yy);
    /* without the century, 29 February needs a year divisible by 4 in some century the writer
     * could mean: yy 00 is 2000 (leap) unless '+' says 1900 or earlier (not leap) */
    return yy % 4 == 0 && !(plus && yy == 0);
}

/* YYMMDD-NNNN, YYMMDD+NNNN, YYYYMMDD-NNNN, YYYYMMDDNNNN, YYMMDDNNNN; Luhn over YYMMDDNNNN. */
static size_t match_pnr(const struct scan *s, size_t p)
{
    size_t l1 = digit_run(s, p, 12), end;
    unsigned char sep = at(s, p + l1);
    char d[12];
    size_t nd = 0;
    if ((l1 == 6 && (sep == '-' || sep == '+')) || (l1 == 8 && sep == '-')) {
        if (digit_run(s, p + l1 + 1, 4) != 4)
            return 0;
        end = p + l1 + 5;
    } else if (l1 == 10 || l1 == 12) {
        end = p + l1;
        sep = 0;
    } else {
        return 0;
    }
    for (size_t i = p; i < end; i++)
        if (is_digit(s->ch[i]))
            d[nd++] = (char)s->ch[i];
    unsigned century = 0;
    const char *t = d;
    if (nd == 12) {
        century = num_at(d, 2);
        if (century < 18 || century > 20)
            return 0;
        t = d + 2;
    }
    if (!pnr_date_ok(century, num_at(t, 2), num_at(t + 2, 2), num_at(t + 4, 2), sep == '+'))
        return 0;
    if (!luhn_ok(t, 10))
        return 0;
    return right_ok(s, end) ? end : 0;
}

/* ---- phone numbers -------------------------------------------------------------------------------- */

struct phone_group {
    size_t end;        /* unit after the group's last digit */
    unsigned digits;   /* digits up to and including this group */
    unsigned char len; /* digits in this group */
    bool open;         /* a '(' is still open after this group */
    bool dot, other;   /* separators so far include '.' / something else */
};

/* Whether groups g[0..k) read as a phone number: E.164 after '+', "00" international, a national
 * number with trunk prefix 0 (Europe), or North American NXX NXX XXXX written with separators.
 * Everything else (bare digit runs, dates, amounts, versions) is not. */
static bool phone_valid(const char *d, const struct phone_group *g, unsigned k, bool plus)
{
    const struct phone_group *last = &g[k - 1];
    unsigned n = last->digits;
    if (n < PHONE_MIN_E164) /* no valid form is shorter; also keeps d[0..2] initialised below */
        return false;
    if (last->open || (last->dot && last->other))
        return false;
    if (plus)
        return n >= PHONE_MIN_E164 && n <= PHONE_MAX_E164 && d[0] != '0';
    if (d[0] == '0') {
        if (d[1] == '0') /* "00" + country code: a bare run needs more digits to beat order ids */
            return n >= (k == 1 ? 12u : 11u) && n <= PHONE_MAX_DIGITS && d[2] != '0';
        /* bare runs are what order and account ids look like: only mobile prefixes written that
         * way are taken (06/07: SE, UK, FR, NL, NO...; 015-017: DE) at their 10-11 digits */
        if (k == 1)
            return (n == 10 || n == 11) &&
                   (d[1] == '6' || d[1] == '7' || (d[1] == '1' && d[2] >= '5' && d[2] <= '7'));
        if (k == 3 && ((g[0].len == 2 && g[1].len == 2 && g[2].len == 4) ||
                       (g[0].len == 4 && g[1].len == 2 && g[2].len == 2)))
            return false; /* 01-05-2024, 0024.05.01: dates */
        if (k == 2 && g[0].len == 6 && g[1].len == 4)
            return false; /* 030229-5555: the shape of a personnummer that failed its checks */
        return n >= 8 && n <= 12;
    }
    unsigned f = 0;
    if (k == 4 && g[0].len == 1 && d[0] == '1')
        f = 1;
    else if (k != 3)
        return false;
    return g[f].len == 3 && g[f + 1].len == 3 && g[f + 2].len == 4 && d[f] >= '2' && d[f + 3] >= '2';
}

static size_t match_phone(const struct scan *s, size_t p)
{
    struct phone_group g[PHONE_MAX_GROUPS];
    char d[PHONE_MAX_DIGITS];
    unsigned ng = 0, nd = 0;
    bool plus = false, open = false, used = false, dot = false, other = false;
    size_t i = p;
    if (at(s, i) == '+') {
        plus = true;
        i++;
    } else if (at(s, i) == '(') {
        open = used = true;
        i++;
    }
    if (!is_digit(at(s, i)))
        return 0;
    for (;;) {
        size_t glen = digit_run(s, i, PHONE_MAX_DIGITS);
        if (nd + glen > PHONE_MAX_DIGITS)
            break;
        for (size_t k = 0; k < glen; k++)
            d[nd++] = (char)s->ch[i + k];
        g[ng] = (struct phone_group){i + glen, nd, (unsigned char)glen, open, dot, other};
        if (++ng == PHONE_MAX_GROUPS)
            break;
        /* a separator: up to three of ' ', '-', '.', '(' and ')', then a digit */
        size_t j = i + glen, k = j;
        unsigned sp = 0, dash = 0, dots = 0;
        bool o = open, u = used, paren = false;
        while (k - j < 3) {
            unsigned char c = at(s, k);
            if (c == ' ')
                sp++;
            else if (c == '-')
                dash++;
            else if (c == '.')
                dots++;
            else if (c == '(' && !o && !u)
                o = u = paren = true;
            else if (c == ')' && o) {
                o = false;
                paren = true;
            } else
                break;
            k++;
        }
        if (k == j || !is_digit(at(s, k)) || sp > 2 || dash > 1 || dots > 1 ||
            (dots && (sp || dash || paren)))
            break;
        if (dots)
            dot = true;
        else
            other = true;
        open = o;
        used = u;
        i = k;
    }
    for (unsigned k = ng; k-- > 0;) {
        if (phone_valid(d, g, k + 1, plus) && right_ok(s, g[k].end))
            return plus || !after_id_word(s, p) ? g[k].end : 0;
    }
    return 0;
}

/* ---- the number pass ------------------------------------------------------------------------------- */

static int scan_numbers(struct scan *s)
{
    size_t p = 0;
    while (p < s->n) {
        unsigned char c = s->ch[p];
        bool digit = is_digit(c);
        if ((!digit && !is_alpha(c) && c != '+' && c != '(') ||
            (in_url(s, p) && before(s, p, 1) != '=') || !left_ok(s, p)) {
            p++;
            continue;
        }
        size_t end = 0;
        unsigned kind = 0;
        if (is_alpha(c)) {
            size_t shaped = 0;
            end = match_iban(s, p, &shaped);
            kind = REDACT_IBAN;
            if (!end && shaped) {
                p = shaped;
                continue;
            }
        } else if (digit) {
            /* most specific first: checksummed and dated forms before the loose phone shapes */
            if ((end = match_pnr(s, p)) != 0)
                kind = REDACT_PNR;
            else if ((end = match_ssn(s, p, '-')) != 0)
                kind = REDACT_SSN;
            else if ((end = match_card(s, p)) != 0)
                kind = REDACT_CARD;
            else if (phone_left_ok(s, p) && (end = match_phone(s, p)) != 0)
                kind = REDACT_PHONE;
            else if ((end = match_ssn(s, p, ' ')) != 0)
                kind = REDACT_SSN;
        } else if (phone_left_ok(s, p)) {
            end = match_phone(s, p);
            kind = REDACT_PHONE;
        }
        /* a value may not run into a URL it does not start in: a second pass would no longer
         * see that URL (its scheme would be inside the placeholder) and judge its digits anew */
        for (size_t i = p; end && !in_url(s, p) && i < end; i++)
            if (in_url(s, i))
                end = 0;
        if (!end) {
            p++;
            continue;
        }
        int err = scan_accept(s, p, end, kind);
        if (err)
            return err;
        p = end;
    }
    return T_OK;
}

/* ---- output ---------------------------------------------------------------------------------------- */

static int put_placeholder(struct buf *out, unsigned kind, unsigned num)
{
    char ph[REDACT_PLACEHOLDER_MAX];
    int n = snprintf(ph, sizeof(ph), "[%s_%u]", kind_names[kind], num);
    if (n < 0 || (size_t)n >= sizeof(ph))
        return T_ERR_INTERNAL;
    return buf_append(out, ph, (size_t)n);
}

static int scan_output(const struct scan *s, size_t len, size_t nemail, struct buf *out,
                       unsigned counts[REDACT__KINDS])
{
    /* e-mails are s->m[0..nemail), the number kinds follow; each part is sorted */
    size_t a = 0, b = nemail, pos = 0;
    while (a < nemail || b < s->nm) {
        const struct match *m;
        if (b >= s->nm || (a < nemail && s->m[a].start < s->m[b].start))
            m = &s->m[a++];
        else
            m = &s->m[b++];
        size_t ob = s->off[m->start];
        size_t oe = s->off[m->end - 1] + (s->len[m->end - 1] & LEN_MASK);
        int err = put_sanitized(out, s->src + pos, ob - pos);
        if (!err)
            err = put_placeholder(out, m->kind, m->num);
        if (err)
            return err;
        if (counts)
            counts[m->kind]++;
        pos = oe;
    }
    return put_sanitized(out, s->src + pos, len - pos);
}

int redact_text(const char *text, size_t len, struct redact_map *map, struct buf *out,
                unsigned counts[REDACT__KINDS])
{
    if (len == 0) /* text may be NULL then; out still ends up with a (NUL-terminated) buffer */
        return buf_append(out, "", 0);
    struct redact_map local;
    memset(&local, 0, sizeof(local));
    struct scan s;
    size_t mark = out->len;
    unsigned added[REDACT__KINDS] = {0};
    int err = scan_init(&s, text, len, map ? map : &local);
    if (!err)
        err = scan_emails(&s);
    size_t nemail = s.nm;
    if (!err) {
        scan_urls(&s);
        err = scan_numbers(&s);
    }
    if (!err)
        err = scan_output(&s, len, nemail, out, added);
    if (err) {
        out->len = mark; /* nothing half-redacted may leave */
        if (out->data)
            out->data[mark] = '\0';
    } else if (counts) {
        for (unsigned k = 0; k < REDACT__KINDS; k++)
            counts[k] += added[k];
    }
    scan_cleanup(&s);
    map_cleanup(&local);
    return err;
}

int redact_restore(const char *text, size_t len, const struct redact_map *map, struct buf *out)
{
    if (len == 0)
        return buf_append(out, "", 0);
    size_t mark = out->len, run = 0, i = 0;
    const unsigned char *t = (const unsigned char *)text;
    int err = T_OK;
    while (i < len && !err) {
        const char *orig = NULL;
        size_t n = 0;
        if (t[i] == '[') {
            unsigned kind = 0, num = 0;
            n = placeholder_parse(text + i, len - i, &kind, &num);
            if (n)
                orig = map_find_num(map, kind, num);
        }
        if (!orig) {
            i++;
            continue;
        }
        err = put_sanitized(out, t + run, i - run);
        if (!err)
            err = buf_puts(out, orig);
        i += n;
        run = i;
    }
    if (!err)
        err = put_sanitized(out, t + run, len - run);
    if (err) {
        out->len = mark;
        if (out->data)
            out->data[mark] = '\0';
    }
    return err;
}
