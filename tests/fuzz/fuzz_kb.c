/* libFuzzer target for knowledge-base JSONL lines (kb_load on a file holding the input).
 *
 * Build and run: scripts/fuzz.sh. The input is written to a private temporary file that kb_load
 * reads. Asserts: no crash, leak or UB; on success every entry has a non-empty id that
 * kb_find_id finds at its own index (ids unique), a body, a lang, tags and brands within their
 * counts, the strings valid UTF-8; loading the same bytes again gives the same fingerprint and
 * count; on failure the message names the file and, for a bad line, "<file>:<line>:". */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tandem/error.h"
#include "tandem/kb.h"

#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool str_utf8(const char *str) { return valid_utf8((const unsigned char *)str, strlen(str)); }

static char path[64];

static void cleanup(void)
{
    if (path[0])
        unlink(path);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0]) {
        snprintf(path, sizeof path, "/tmp/tandem-fuzz-kb-XXXXXX");
        int fd = mkstemp(path);
        CHECK(fd >= 0);
        close(fd);
        atexit(cleanup);
    }
    FILE *f = fopen(path, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(data, 1, size, f) == size || size == 0);
    CHECK(fclose(f) == 0);

    struct kb *kb = NULL;
    char err[1024] = "";
    int rc = kb_load(path, &kb, err, sizeof err);
    if (rc) {
        CHECK(kb == NULL);
        CHECK(rc == T_ERR_CONFIG || rc == T_ERR_IO || rc == T_ERR_NOMEM);
        CHECK(strncmp(err, path, strlen(path)) == 0 && err[strlen(path)] == ':');
        return 0;
    }
    CHECK(kb != NULL);
    size_t n = kb_count(kb);
    for (size_t i = 0; i < n; i++) {
        const struct kb_entry *e = kb_entry_at(kb, i);
        CHECK(e->id && e->id[0] && e->body && e->title && e->lang);
        CHECK(kb_find_id(kb, e->id) == (long)i);
        CHECK(str_utf8(e->id) && str_utf8(e->body) && str_utf8(e->title));
        for (size_t t = 0; t < e->n_tags; t++)
            CHECK(e->tags[t] != NULL);
        CHECK(e->n_brands <= KB_MAX_BRANDS);
        /* a url that does not normalise (e.g. "ht://") is kept but cannot be linked: NULL */
        if (e->url_norm)
            CHECK(e->url && e->url_norm[0]);
    }
    struct kb *again = NULL;
    CHECK(kb_load(path, &again, err, sizeof err) == T_OK);
    CHECK(kb_count(again) == n && kb_fingerprint(again) == kb_fingerprint(kb));
    kb_free(again);
    kb_free(kb);
    return 0;
}
