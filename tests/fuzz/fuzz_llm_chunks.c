/* libFuzzer target for the LLM response parser (llm_stream_*), chunking invariance: OpenAI-compatible SSE chunks or
 * one JSON body, from a server tandem does not control.
 *
 * Build and run: scripts/fuzz.sh. The first input byte seeds the chunking; the rest is the body.
 * Asserts: no crash, leak or UB; the outcome (status at finish, content, finish_reason, SSE or
 * not) is the same whether the body arrives in one piece, byte by byte, or in pseudo-random
 * chunks; errors are sticky (feeding more after an error returns the same error); the content is
 * NUL-terminated, valid UTF-8, its reported length is its strlen, and it stays within the
 * content cap; finish never returns MORE. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/llm_stream.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

#define MAX_EVENT 2048u
#define MAX_CONTENT 1024u

struct outcome {
    enum llm_stream_status st;
    char *content;
    size_t len;
    char *finish;
    int sse;
};

static int is_error(enum llm_stream_status st) { return st != LLM_STREAM_MORE && st != LLM_STREAM_DONE; }

/* mode 0: one piece; 1: byte by byte; 2: chunks from a xorshift seeded by seed. */
static void run(const uint8_t *body, size_t n, int mode, uint8_t seed, struct outcome *o)
{
    struct llm_stream *s = llm_stream_new(MAX_EVENT, MAX_CONTENT);
    CHECK(s != NULL);
    uint32_t x = 0x9E3779B9u ^ seed;
    size_t pos = 0;
    enum llm_stream_status first_err = LLM_STREAM_MORE;
    while (pos < n) {
        size_t take = n - pos;
        if (mode == 1) {
            take = 1;
        } else if (mode == 2) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            take = 1 + x % 17;
            if (take > n - pos)
                take = n - pos;
        }
        enum llm_stream_status st = llm_stream_feed(s, body + pos, take);
        if (is_error(first_err))
            CHECK(st == first_err); /* sticky */
        else if (is_error(st))
            first_err = st;
        pos += take;
    }
    o->st = llm_stream_finish(s);
    CHECK(o->st != LLM_STREAM_MORE);
    if (is_error(first_err))
        CHECK(o->st == first_err);
    size_t len = 12345;
    const char *c = llm_stream_content(s, &len);
    CHECK(c != NULL && strlen(c) == len);
    CHECK(len <= MAX_CONTENT);
    CHECK(valid_utf8((const unsigned char *)c, len));
    o->content = strdup(c);
    o->len = len;
    const char *fr = llm_stream_finish_reason(s);
    o->finish = fr ? strdup(fr) : NULL;
    o->sse = llm_stream_is_sse(s);
    CHECK(llm_stream_status_name(o->st) != NULL);
    llm_stream_free(s);
}

static void same(const struct outcome *a, const struct outcome *b)
{
    CHECK(a->st == b->st);
    CHECK(a->sse == b->sse);
    CHECK((!a->finish && !b->finish) || (a->finish && b->finish && strcmp(a->finish, b->finish) == 0));
    if (!is_error(a->st))
        CHECK(a->len == b->len && strcmp(a->content, b->content) == 0);
}

static void release(struct outcome *o)
{
    free(o->content);
    free(o->finish);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 8192)
        return 0;
    uint8_t seed = data[0];
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    struct outcome whole, bytes, chunks;
    run(body, n, 0, seed, &whole);
    run(body, n, 1, seed, &bytes);
    run(body, n, 2, seed, &chunks);
    same(&whole, &bytes);
    same(&whole, &chunks);
    release(&whole);
    release(&bytes);
    release(&chunks);
    return 0;
}
