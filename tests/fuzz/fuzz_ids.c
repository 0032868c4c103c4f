/* libFuzzer target for ids and keys: context_valid_id, context_valid_stream_id,
 * context_stream_id_ms, context_stream_id_cmp and the key builders of store.c.
 *
 * Build and run: scripts/fuzz.sh. The input is split at the first NUL into two strings a and b.
 * Asserts, against independent reference implementations:
 *  - context_valid_id(a) iff a is 1-128 bytes of [A-Za-z0-9._-];
 *  - context_valid_stream_id(a) iff a is "<digits>" or "<digits>-<digits>" of at most 47 bytes;
 *  - context_stream_id_ms(a) is the millisecond part when it fits in int64, -1 when malformed;
 *  - for two valid stream ids whose parts fit in 64 bits, context_stream_id_cmp orders them
 *    numerically, is antisymmetric and 0 exactly for equal values;
 *  - store_key_conv/store_key_cust of a valid id give "tandem:conv:{<id>}:<suffix>" (the hash tag
 *    is exactly the id, so every key of a conversation is in one Redis Cluster slot) and -1 when
 *    the buffer is too small, never a truncated key. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/context.h"
#include "tandem/store.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int ref_valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-", s[i]))
            return 0;
    return 1;
}

static int isdig(char c) { return c >= '0' && c <= '9'; }

static int ref_valid_stream_id(const char *s)
{
    size_t n = strlen(s), i = 0, d1 = 0, d2 = 0;
    if (n == 0 || n > STREAM_ID_MAX - 1)
        return 0;
    while (isdig(s[i]))
        i++, d1++;
    if (!d1)
        return 0;
    if (s[i] == '\0')
        return 1;
    if (s[i] != '-')
        return 0;
    i++;
    while (isdig(s[i]))
        i++, d2++;
    return d2 > 0 && s[i] == '\0';
}

/* Parses digits into *v; 0 when they overflow 64 bits. Returns the end. */
static const char *ref_u64(const char *p, uint64_t *v, int *fits)
{
    *v = 0;
    *fits = 1;
    for (; isdig(*p); p++) {
        unsigned d = (unsigned)(*p - '0');
        if (*v > (UINT64_MAX - d) / 10)
            *fits = 0;
        *v = *v * 10 + d;
    }
    return p;
}

static int ref_parts(const char *s, uint64_t *ms, uint64_t *seq)
{
    int f1, f2 = 1;
    const char *p = ref_u64(s, ms, &f1);
    *seq = 0;
    if (*p == '-')
        ref_u64(p + 1, seq, &f2);
    return f1 && f2;
}

static int64_t ref_ms(const char *s)
{
    if (!isdig(s[0]))
        return -1;
    int64_t v = 0;
    const char *p = s;
    for (; isdig(*p); p++) {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return (*p == '\0' || *p == '-') ? v : -1;
}

static void check_one(const char *a)
{
    CHECK(context_valid_id(a) == ref_valid_id(a));
    CHECK(context_valid_stream_id(a) == ref_valid_stream_id(a));
    CHECK(context_stream_id_ms(a) == ref_ms(a));
    if (context_valid_id(a)) {
        char key[320], want[320];
        int n = store_key_conv(key, sizeof key, a, "msgs");
        snprintf(want, sizeof want, "tandem:conv:{%s}:msgs", a);
        CHECK(n == (int)strlen(want) && strcmp(key, want) == 0);
        /* the hash tag Redis Cluster uses: between the first '{' and the next '}' */
        const char *o = strchr(key, '{'), *c = strchr(o, '}');
        CHECK((size_t)(c - o - 1) == strlen(a) && memcmp(o + 1, a, strlen(a)) == 0);
        n = store_key_cust(key, sizeof key, a, "history");
        snprintf(want, sizeof want, "tandem:cust:{%s}:history", a);
        CHECK(n == (int)strlen(want) && strcmp(key, want) == 0);
        /* too small by one: refused, not truncated */
        char small[320];
        snprintf(want, sizeof want, "tandem:conv:{%s}:msgs", a);
        CHECK(store_key_conv(small, strlen(want), a, "msgs") == -1);
        CHECK(store_key_conv(small, strlen(want) + 1, a, "msgs") == (int)strlen(want));
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 512)
        return 0;
    char *buf = malloc(size + 2);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = buf[size + 1] = '\0';
    const char *a = buf, *b = buf + strlen(buf) + (strlen(buf) < size ? 1 : 0);
    check_one(a);
    check_one(b);
    if (context_valid_stream_id(a) && context_valid_stream_id(b)) {
        uint64_t am, as, bm, bs;
        if (ref_parts(a, &am, &as) && ref_parts(b, &bm, &bs)) {
            int want = am != bm ? (am < bm ? -1 : 1) : (as < bs ? -1 : as > bs ? 1 : 0);
            int got = context_stream_id_cmp(a, b);
            CHECK((got > 0) - (got < 0) == want);
            int rev = context_stream_id_cmp(b, a);
            CHECK((rev > 0) - (rev < 0) == -want);
            CHECK(context_stream_id_cmp(a, a) == 0);
        }
    }
    free(buf);
    return 0;
}
