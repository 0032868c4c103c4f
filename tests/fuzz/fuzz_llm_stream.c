/* libFuzzer target for llm_stream + answer validation: split-invariant, UTF-8 out, no PII passes. */
/*
 * Input: byte 0 seeds how the rest is cut into pieces; bytes 1.. are a response body as an
 * upstream would send it. Asserts: feeding it whole or in random pieces gives the same status,
 * content and finish_reason; finish is repeatable and later feeds change nothing; content is
 * NUL-free valid UTF-8; a complete answer either fails validation (with a reason, nothing
 * returned) or yields 1..k texts that are valid UTF-8, carry no PII the redactor would mask and
 * only a grounding kb_id. (tests/fuzz/fuzz_llm_chunks.c checks the parser's chunking alone; this
 * one follows the bytes through to what would be shown to the agent.)
 *
 *   scripts/fuzz.sh 60 llm_stream
 * or by hand, from the repository root after `make` generated build/gen/embedded_data.c:
 *   mkdir -p build-fuzz/corpus-llm_stream
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -std=c11 -D_GNU_SOURCE \
 *         -Iinclude tests/fuzz/fuzz_llm_stream.c src/llm_stream.c src/llm_prompt.c src/redact.c \
 *         src/buf.c src/error.c src/embedded.c build/gen/embedded_data.c -ljansson \
 *         -o build-fuzz/fuzz_llm_stream
 *   build-fuzz/fuzz_llm_stream -max_total_time=60 -max_len=8192 build-fuzz/corpus-llm_stream \
 *         tests/fuzz/corpus/llm_stream
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/buf.h"
#include "tandem/error.h"
#include "tandem/llm_prompt.h"
#include "tandem/llm_stream.h"
#include "tandem/redact.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                                \
    do {                                                                                                           \
        if (!(cond)) {                                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);                           \
            abort();                                                                                               \
        }                                                                                                          \
    } while (0)

struct result {
    enum llm_stream_status st;
    char *content;
    size_t len;
    char *finish;
};

static void run(const uint8_t *p, size_t n, unsigned seed, struct result *r)
{
    /* small caps so the fuzzer reaches the too-large paths too */
    struct llm_stream *s = llm_stream_new(1024, 512);
    CHECK(s);
    enum llm_stream_status st = LLM_STREAM_MORE;
    size_t at = 0;
    while (at < n) {
        size_t piece = seed ? 1 + (size_t)((seed = seed * 1103515245u + 12345u) >> 16) % 17 : n - at;
        if (piece > n - at)
            piece = n - at;
        st = llm_stream_feed(s, p + at, piece);
        at += piece;
    }
    if (st == LLM_STREAM_MORE || st == LLM_STREAM_DONE)
        st = llm_stream_finish(s);
    CHECK(st != LLM_STREAM_MORE);
    CHECK(llm_stream_finish(s) == st); /* finish is repeatable */
    size_t before;
    llm_stream_content(s, &before);
    CHECK(llm_stream_feed(s, "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\n", 49) == st);
    const char *c = llm_stream_content(s, &r->len);
    CHECK(r->len == before);
    r->st = st;
    r->content = malloc(r->len + 1);
    CHECK(r->content);
    memcpy(r->content, c, r->len + 1);
    const char *f = llm_stream_finish_reason(s);
    r->finish = f ? strdup(f) : NULL;
    llm_stream_free(s);
}

/* One prompt for every input: its KB text holds no PII, so no value may ever be restored. */
static struct llm_prompt *prompt(void)
{
    static struct llm_prompt *p;
    if (!p) {
        static const struct llm_msg m[] = {{"customer", "Where is my refund? See https://shop.example.org/o/1"}};
        static const struct llm_ground g[] = {
            {"kb-1", "Refunds", "Refunds take 5-7 days.", "https://help.example.com/r", 0}};
        struct llm_request req = {m, 1, g, 1, NULL, "en", 3, NULL, 0};
        struct llm_prompt_opts o = {"m", "sys", 1, 1, 0.2, 100};
        const char *why;
        CHECK(llm_prompt_build(&o, &req, &p, &why) == T_OK);
    }
    return p;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned seed = data[0] | 1u;
    const uint8_t *body = data + 1;
    size_t n = size - 1;
    struct result whole, split;
    run(body, n, 0, &whole);
    run(body, n, seed, &split);
    CHECK(whole.st == split.st);
    CHECK(whole.len == split.len && memcmp(whole.content, split.content, whole.len) == 0);
    CHECK((!whole.finish && !split.finish) || (whole.finish && split.finish && !strcmp(whole.finish, split.finish)));
    CHECK(strlen(whole.content) == whole.len);
    CHECK(valid_utf8((const unsigned char *)whole.content, whole.len));
    if (whole.st == LLM_STREAM_DONE) {
        struct llm_answer a;
        const char *why;
        if (llm_prompt_validate(prompt(), whole.content, whole.len, &a, &why) == T_OK) {
            CHECK(a.n >= 1 && a.n <= 3);
            for (size_t i = 0; i < a.n; i++) {
                size_t tl = strlen(a.items[i].text);
                CHECK(tl > 0);
                CHECK(valid_utf8((const unsigned char *)a.items[i].text, tl));
                CHECK(!a.items[i].kb_id || strcmp(a.items[i].kb_id, "kb-1") == 0);
                unsigned counts[REDACT__KINDS] = {0};
                struct buf b;
                buf_init(&b, 0);
                CHECK(redact_text(a.items[i].text, tl, NULL, &b, counts) == T_OK);
                for (size_t k = 0; k < REDACT__KINDS; k++)
                    CHECK(counts[k] == 0);
                buf_cleanup(&b);
            }
            llm_answer_cleanup(&a);
        } else {
            CHECK(why && a.n == 0 && !a.items);
        }
    }
    free(whole.content);
    free(split.content);
    free(whole.finish);
    free(split.finish);
    return 0;
}
