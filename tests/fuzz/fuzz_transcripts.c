/* libFuzzer target for POST /v1/transcripts bodies (memory_parse_transcripts) and the reply
 * memory's Redis record format (memory_record_to_json / memory_record_from_json).
 *
 * Build and run: scripts/fuzz.sh (-max_len=8192: a context is capped at MEMORY_CONTEXT_BYTES).
 * Asserts: no crash, leak or UB; a record already in the list survives a failed parse and a
 * failed parse adds nothing and names the line ("line N: ..."), or says the body holds no
 * transcript; every record has a non-empty reply and context, both valid UTF-8 without NUL and
 * the context within MEMORY_CONTEXT_BYTES; every record serialises (memory_record_to_json) and
 * reads back (memory_record_from_json) equal; memory_build indexes them without duplicates.
 *
 * Known bug (reported, src not changed here): build_context() in src/memory.c keeps the first
 * MEMORY_CONTEXT_BYTES bytes of one huge customer turn, which can cut a UTF-8 character; the
 * record then fails to serialise (json_pack refuses invalid UTF-8 -> T_ERR_NOMEM) and the import
 * answers 500. corpus/transcripts/regress_context_cut_utf8.jsonl reproduces it.
 * TANDEM_FUZZ_SKIP_KNOWN=1 skips records whose context is cut that way, so the rest can still be
 * explored. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/buf.h"
#include "tandem/error.h"
#include "tandem/memory.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool str_utf8(const char *s) { return valid_utf8((const unsigned char *)s, strlen(s)); }

static bool eq(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int skip_known = -1;
    if (skip_known < 0)
        skip_known = getenv("TANDEM_FUZZ_SKIP_KNOWN") && strcmp(getenv("TANDEM_FUZZ_SKIP_KNOWN"), "1") == 0;
    struct memory_records recs;
    memory_records_init(&recs);
    /* one record from an earlier call must survive whatever this body does */
    static const char seed[] = "{\"id\":\"seed\",\"messages\":[{\"role\":\"customer\",\"text\":\"hi\"},"
                               "{\"role\":\"agent\",\"text\":\"hello\"}]}";
    char seed_err[128];
    CHECK(memory_parse_transcripts(seed, sizeof seed - 1, &recs, NULL, seed_err, sizeof seed_err) == T_OK);
    CHECK(recs.n == 1);
    size_t before = recs.n;
    char err[512] = "";
    size_t nconv = 12345;
    int rc = memory_parse_transcripts((const char *)data, size, &recs, &nconv, err, sizeof err);
    if (rc) {
        CHECK(rc == T_ERR_BAD_JSON || rc == T_ERR_NOMEM);
        CHECK(recs.n == before);
        CHECK(nconv == 12345);
        CHECK(strncmp(err, "line ", 5) == 0 || strstr(err, "no transcript") != NULL);
        CHECK(str_utf8(err) || strncmp(err, "line ", 5) == 0);
    } else {
        CHECK(nconv >= 1);
        CHECK(recs.n >= before);
    }
    struct memory_records back;
    memory_records_init(&back);
    for (size_t i = 0; i < recs.n; i++) {
        const struct memory_record *r = &recs.v[i];
        CHECK(r->reply && r->reply[0] && r->context && r->context[0] && r->tid && r->tid[0]);
        CHECK(strlen(r->context) <= MEMORY_CONTEXT_BYTES);
        CHECK(str_utf8(r->reply) && str_utf8(r->tid));
        if (!str_utf8(r->context)) {
            if (!skip_known) {
                fprintf(stderr, "%s:%d: invariant failed: record context is not valid UTF-8 (cut inside a "
                                "character: the known build_context bug, see the top of this file)\n",
                        __FILE__, __LINE__);
                abort();
            }
            continue;
        }
        struct buf js;
        buf_init(&js, 0);
        CHECK(memory_record_to_json(r, &js) == T_OK);
        CHECK(memory_record_from_json(js.data, js.len, &back) == T_OK);
        const struct memory_record *b = &back.v[back.n - 1];
        CHECK(eq(b->tid, r->tid) && b->turn == r->turn && eq(b->brand, r->brand) && eq(b->lang, r->lang) &&
              eq(b->context, r->context) && eq(b->reply, r->reply) && eq(b->kb_id, r->kb_id) && eq(b->source, r->source));
        buf_cleanup(&js);
    }
    struct memory *m = memory_build(back.v, back.n, NULL);
    if (m) {
        CHECK(memory_count(m) <= back.n);
        for (size_t i = 0; i < memory_count(m); i++)
            for (size_t j = i + 1; j < memory_count(m); j++)
                CHECK(strcmp(memory_entry_at(m, i)->id, memory_entry_at(m, j)->id) != 0);
        memory_unref(m);
    }
    memory_records_cleanup(&back);
    memory_records_cleanup(&recs);
    return 0;
}
