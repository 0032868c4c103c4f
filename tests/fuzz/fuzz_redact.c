/* libFuzzer target for redact_text/redact_restore: valid UTF-8 out, nothing out on error, idempotent. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/buf.h"
#include "tandem/error.h"
#include "tandem/redact.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);   \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct redact_map *map = redact_map_new();
    CHECK(map != NULL);
    unsigned counts[REDACT__KINDS] = {0};

    /* 1. plain run: valid UTF-8, counts match the placeholders' numbering */
    struct buf out;
    buf_init(&out, 0);
    buf_puts(&out, "prefix:"); /* redaction appends; what was there stays */
    int err = redact_text(text, size, map, &out, counts);
    CHECK(err == T_OK);
    CHECK(out.len >= 7 && memcmp(out.data, "prefix:", 7) == 0);
    const char *r1 = out.data + 7;
    size_t r1len = out.len - 7;
    CHECK(valid_utf8((const unsigned char *)r1, r1len));
    CHECK(strlen(r1) == r1len || memchr(data, 0, size) != NULL);
    for (unsigned k = 0; k < REDACT__KINDS; k++)
        CHECK(redact_map_count(map, (enum redact_kind)k) <= counts[k]);

    /* 2. idempotence: the output redacts to itself with the same map and with none */
    struct buf again;
    buf_init(&again, 0);
    unsigned c2[REDACT__KINDS] = {0};
    CHECK(redact_text(r1, r1len, map, &again, c2) == T_OK);
    CHECK(again.data != NULL); /* T_OK always leaves a terminated buffer, even for "" */
    if (again.len != r1len || memcmp(again.data, r1, r1len) != 0) {
        fprintf(stderr, "not idempotent:\n  in:  %.*s\n  1st: %.*s\n  2nd: %.*s\n", (int)size, text,
                (int)r1len, r1, (int)again.len, again.data);
        abort();
    }
    for (unsigned k = 0; k < REDACT__KINDS; k++)
        CHECK(c2[k] == 0);
    buf_reset(&again);
    CHECK(redact_text(r1, r1len, NULL, &again, NULL) == T_OK);
    CHECK(again.len == r1len && memcmp(again.data, r1, r1len) == 0);

    /* 3. restoring gives valid UTF-8 and every placeholder in r1 is known to the map */
    buf_reset(&again);
    CHECK(redact_restore(r1, r1len, map, &again) == T_OK);
    CHECK(valid_utf8((const unsigned char *)again.data, again.len));
    for (const char *p = memchr(r1, '[', r1len); p; p = memchr(p + 1, '[', r1len - (size_t)(p + 1 - r1))) {
        const char *q = memchr(p, ']', r1len - (size_t)(p - r1));
        if (!q || q - p > 30)
            continue;
        char ph[32];
        memcpy(ph, p, (size_t)(q - p + 1));
        ph[q - p + 1] = '\0';
        bool ours = false;
        for (unsigned k = 0; k < REDACT__KINDS && !ours; k++) {
            const char *name = redact_kind_name((enum redact_kind)k);
            size_t nl = strlen(name), i = nl + 2;
            if (strncmp(ph + 1, name, nl) != 0 || ph[1 + nl] != '_' || ph[i] < '1' || ph[i] > '9')
                continue;
            while (ph[i] >= '0' && ph[i] <= '9')
                i++;
            ours = ph[i] == ']';
        }
        /* a placeholder-shaped string in the input may be unknown; one we made never is */
        if (ours && !memmem(data, size, ph, strlen(ph)))
            CHECK(redact_map_lookup(map, ph) != NULL);
    }

    /* 4. the placeholder parser on raw bytes: never a crash, only placeholders we made resolve */
    char *z = malloc(size + 1);
    CHECK(z != NULL);
    memcpy(z, data, size);
    z[size] = '\0';
    const char *orig = redact_map_lookup(map, z);
    CHECK(!orig || (z[0] == '[' && z[strlen(z) - 1] == ']'));
    free(z);

    /* 5. a cap too small: an error and nothing appended, never a truncated half-redaction */
    if (r1len > 0) {
        struct buf small;
        buf_init(&small, r1len - 1 + 3);
        buf_puts(&small, "abc");
        err = redact_text(text, size, map, &small, NULL);
        CHECK(err == T_ERR_TOO_LARGE);
        CHECK(small.len == 3 && memcmp(small.data, "abc", 4) == 0);
        buf_cleanup(&small);
    }

    buf_cleanup(&again);
    buf_cleanup(&out);
    redact_map_free(map);
    return 0;
}
