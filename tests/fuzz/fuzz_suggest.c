/* libFuzzer target for the suggestion parsers: tokenizer, URL normalisation, templates, transcript NDJSON.
 *
 * Build and run (see README.md):
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c11 -D_GNU_SOURCE \
 *         -Iinclude -Ibuild/gen tests/fuzz/fuzz_suggest.c src/text.c src/memory.c src/kb.c src/bm25.c \
 *         src/engine_local.c src/context.c src/buf.c src/error.c src/embedded.c src/log.c src/store.c \
 *         src/config.c build/gen/embedded_data.c -ljansson -lhiredis -lstemmer -lpthread -lm \
 *         -o build-fuzz/fuzz_suggest
 *   build-fuzz/fuzz_suggest -max_len=4096 -max_total_time=60 build-fuzz/corpus-suggest tests/fuzz/corpus/suggest
 * Asserts: tokens are non-empty, NUL-terminated at their length, bounded and valid UTF-8; URL
 * normalisation stays in its buffer and drops fragments; filling a template that is valid UTF-8
 * gives valid UTF-8, also with the input as a profile value; a transcript body either yields
 * records with non-empty context and reply or fails adding nothing. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/buf.h"
#include "tandem/context.h"
#include "tandem/engine.h"
#include "tandem/error.h"
#include "tandem/memory.h"
#include "tandem/text.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void on_token(void *ud, const char *term, size_t len, unsigned flags)
{
    (void)ud;
    (void)flags;
    CHECK(len > 0 && len <= TEXT_MAX_WORD * 2);
    CHECK(term[len] == '\0' && strlen(term) == len);
    CHECK(valid_utf8((const unsigned char *)term, len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned sel = data[0] % 4;
    const char *text = (const char *)data + 1;
    size_t n = size - 1;
    char *z = malloc(n + 1); /* NUL-terminated copy */
    CHECK(z != NULL);
    memcpy(z, text, n);
    z[n] = '\0';
    if (sel == 0) {
        static const char *const langs[] = {"en", "sv", "de", "xx", NULL};
        for (size_t l = 0; l < 5; l++)
            CHECK(text_tokenize(text, n, langs[l], l == 3 ? TEXT_OPT_NO_STEM : 0, on_token, NULL) == 0);
        CHECK(text_tokenize(text, n, "en", TEXT_OPT_URL_ONLY, on_token, NULL) == 0);
    } else if (sel == 1) {
        char out[256];
        size_t got = text_url_normalize(text, n, out, sizeof out);
        CHECK(got < sizeof out);
        if (got) {
            CHECK(strlen(out) == got);
            CHECK(strchr(out, '#') == NULL);
        }
    } else if (sel == 2) {
        size_t zl = strlen(z); /* templates are C strings */
        struct context *c = context_new("fuzz");
        CHECK(c != NULL);
        struct ctx_kv kv[2] = {{"name", z}, {"order_number", z}};
        c->profile = kv;
        c->n_profile = 2;
        struct buf b;
        buf_init(&b, 1u << 20);
        int err = engine_fill_template(z, c, &b);
        CHECK(err == T_OK || err == T_ERR_TOO_LARGE);
        if (!err && valid_utf8((const unsigned char *)z, zl))
            CHECK(valid_utf8((const unsigned char *)(b.data ? b.data : ""), b.len));
        buf_cleanup(&b);
        c->profile = NULL;
        c->n_profile = 0;
        context_free(c);
    } else {
        struct memory_records r;
        memory_records_init(&r);
        size_t nt = 12345;
        char err[256];
        int rc = memory_parse_transcripts(text, n, &r, &nt, err, sizeof err);
        if (rc) {
            CHECK(r.n == 0 && nt == 12345);
            CHECK(strlen(err) > 0);
        } else {
            CHECK(nt >= 1);
            for (size_t i = 0; i < r.n; i++) {
                CHECK(r.v[i].context[0] != '\0' && r.v[i].reply[0] != '\0');
                struct buf b;
                buf_init(&b, 0);
                CHECK(memory_record_to_json(&r.v[i], &b) == T_OK);
                buf_cleanup(&b);
            }
        }
        memory_records_cleanup(&r);
    }
    free(z);
    return 0;
}
