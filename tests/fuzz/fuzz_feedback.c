/* libFuzzer target for the feedback request (POST /v1/suggestions/{SID}/feedback): body
 * validation (feedback_parse) and the edit distance between the suggestion and the agent's text.
 *
 * Build and run: scripts/fuzz.sh. The input is split at the first NUL: the part before is the
 * body (parsed as the handler does, json_loadb with JSON_REJECT_DUPLICATES), the part after is a
 * second text for the distance. Asserts: a body feedback_parse accepts has a known action, a
 * final_text (when present) of valid UTF-8 without NUL within FEEDBACK_MAX_TEXT_BYTES, an
 * agent_id of 1-128 bytes without control characters, a valid feedback_id, time fields in range;
 * a refused body gets a non-empty message. feedback_edit_distance: 0 exactly for equal inputs,
 * symmetric, at most the longer side's code points, at least their difference, and exact (not
 * capped) for inputs under the bound. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/error.h"
#include "tandem/feedback.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define NOW_MS 1732368000000LL

static void check_parse(const char *body, size_t len)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        json_decref(root);
        return;
    }
    struct feedback_input in;
    char msg[512] = "";
    int rc = feedback_parse(root, NOW_MS, &in, msg, sizeof msg);
    if (rc == T_OK) {
        CHECK(in.action == FEEDBACK_ACCEPTED || in.action == FEEDBACK_EDITED || in.action == FEEDBACK_REJECTED);
        CHECK(feedback_action_name(in.action) != NULL);
        if (in.action == FEEDBACK_EDITED)
            CHECK(in.final_text != NULL);
        if (in.final_text) {
            CHECK(in.final_len <= FEEDBACK_MAX_TEXT_BYTES);
            CHECK(memchr(in.final_text, '\0', in.final_len) == NULL);
            CHECK(feedback_utf8_valid(in.final_text, in.final_len));
        }
        if (in.agent_id) {
            size_t n = strlen(in.agent_id);
            CHECK(n >= 1 && n <= FEEDBACK_MAX_AGENT_ID_BYTES);
            for (size_t i = 0; i < n; i++)
                CHECK((unsigned char)in.agent_id[i] >= 0x20 && in.agent_id[i] != 0x7f);
        }
        if (in.feedback_id)
            CHECK(feedback_valid_id(in.feedback_id));
        if (in.reason)
            CHECK(strlen(in.reason) <= FEEDBACK_MAX_REASON_BYTES);
        CHECK(in.time_to_action_ms == -1 || (in.time_to_action_ms >= 0 && in.time_to_action_ms <= FEEDBACK_MAX_TTA_MS));
        CHECK(in.shown_at_ms == -1 || in.shown_at_ms <= NOW_MS + FEEDBACK_CLOCK_SKEW_MS);
    } else {
        CHECK(rc == T_ERR_BAD_JSON);
        CHECK(msg[0] != '\0');
    }
    json_decref(root);
}

static void check_distance(const char *a, size_t al, const char *b, size_t bl)
{
    size_t d1 = 0, d2 = 0;
    int c1 = 0, c2 = 0;
    if (feedback_edit_distance(a, al, b, bl, &d1, &c1) != T_OK || feedback_edit_distance(b, bl, a, al, &d2, &c2) != T_OK)
        return; /* out of memory */
    size_t na = feedback_codepoints(a, al), nb = feedback_codepoints(b, bl);
    size_t hi = na > nb ? na : nb, lo = na > nb ? nb : na;
    CHECK(d1 <= hi);
    CHECK(d1 >= hi - lo);
    CHECK((d1 == 0) == (al == bl && memcmp(a, b, al) == 0) || c1);
    if (!c1 && !c2)
        CHECK(d1 == d2);
    if (na <= FEEDBACK_DISTANCE_MAX_CPS && nb <= FEEDBACK_DISTANCE_MAX_CPS)
        CHECK(!c1 && !c2);
    size_t z = 1;
    int cz = 1;
    CHECK(feedback_edit_distance(a, al, a, al, &z, &cz) == T_OK && z == 0 && !cz);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    const char *nul = memchr(s, '\0', size);
    size_t bl = nul ? (size_t)(nul - s) : size;
    check_parse(s, bl);
    const char *t = nul ? nul + 1 : s + size;
    size_t tl = nul ? size - bl - 1 : 0;
    check_distance(s, bl, t, tl);
    return 0;
}
