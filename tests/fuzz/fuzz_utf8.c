/* libFuzzer target for context_strdup_utf8, the sanitiser every Redis string goes through before
 * it reaches JSON (messages, meta, profile, history).
 *
 * Build and run: scripts/fuzz.sh. Asserts: the output is valid UTF-8 under an independent strict
 * decoder (no overlongs, surrogates or code points past U+10FFFF), has no NUL byte before its
 * terminator, is at most 3 bytes per input byte, equals the input when the input was valid UTF-8
 * without NUL, and sanitising it again changes nothing; Jansson accepts it as a JSON string. */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/buf.h"
#include "tandem/context.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct arena a;
    arena_init(&a);
    const char *in = (const char *)data;
    char *out = context_strdup_utf8(&a, in, size);
    if (out) {
        size_t n = strlen(out);
        CHECK(n <= 3 * size);
        CHECK(valid_utf8((const unsigned char *)out, n));
        if (valid_utf8(data, size) && !memchr(data, 0, size)) /* NUL is replaced too */
            CHECK(n == size && memcmp(out, in, size) == 0);
        char *again = context_strdup_utf8(&a, out, n);
        CHECK(again && strcmp(again, out) == 0);
        json_t *js = json_stringn(out, n);
        CHECK(js != NULL);
        json_decref(js);
    }
    arena_cleanup(&a);
    return 0;
}
