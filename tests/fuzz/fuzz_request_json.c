/* libFuzzer target for request JSON bodies, the way the handlers read them (api.c
 * api_parse_body_object + api_focus_put: json_loadb with JSON_REJECT_DUPLICATES, an object
 * required, "conversation_id" a valid id or null).
 *
 * Build and run: scripts/fuzz.sh. Asserts: no crash, leak, UB or stack exhaustion (10,000 '['
 * must fail cleanly); a body accepted with JSON_REJECT_DUPLICATES is accepted without it too and
 * both parses are equal; the error text the 400 body is built from is NUL-terminated within
 * its array and the line/column are not negative; the compact re-encoding used for SSE data has
 * no raw CR or LF and parses back to an equal value; the focus verdict agrees with an
 * independent check of the id.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/context.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int ref_id(const char *s, size_t n)
{
    if (n < 1 || n > ID_MAX_LEN)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *root = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        CHECK(memchr(jerr.text, '\0', sizeof jerr.text) != NULL);
        CHECK(jerr.line >= -1 && jerr.column >= -1);
        char msg[300];
        snprintf(msg, sizeof msg, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
        return 0;
    }
    json_t *lax = json_loadb((const char *)data, size, 0, &jerr);
    CHECK(lax != NULL && json_equal(root, lax));
    json_decref(lax);

    char *compact = json_dumps(root, JSON_COMPACT | JSON_ENCODE_ANY);
    if (compact) {
        size_t n = strlen(compact);
        CHECK(!memchr(compact, '\n', n) && !memchr(compact, '\r', n));
        json_t *back = json_loadb(compact, n, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        CHECK(back != NULL);
        CHECK(json_equal(root, back));
        json_decref(back);
        free(compact);
    }

    if (json_is_object(root)) {
        json_t *v = json_object_get(root, "conversation_id");
        if (v && json_is_string(v)) {
            const char *id = json_string_value(v);
            size_t n = json_string_length(v);
            /* what api_focus_put accepts (it checks json_string_value, which stops at a NUL:
             * safe only because Jansson refuses "\u0000" without JSON_ALLOW_NUL) */
            CHECK(context_valid_id(id) == ref_id(id, n));
        }
    }
    json_decref(root);
    return 0;
}
