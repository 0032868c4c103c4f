/* libFuzzer target for TANDEM_REDIS_URL parsing (config_parse_redis_url).
 *
 * Build and run: scripts/fuzz.sh (builds every tests/fuzz/fuzz_*.c against src/ with the fuzzer flags).
 * Asserts: no crash, leak or UB; on success every string field is NUL-terminated inside its array,
 * the kind matches the scheme, ports are 1..65535, the db is 0..65535, a sentinel URL has 1..8
 * sentinels and a non-empty master name, a unix URL has an absolute path; parsing is deterministic
 * (a second parse gives the same result). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tandem/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int terminated(const char *s, size_t cap) { return memchr(s, '\0', cap) != NULL; }

static void release(struct redis_target *t)
{
    free(t->user);
    free(t->password);
    t->user = t->password = NULL;
}

static int same_opt(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    char *url = malloc(size + 1);
    if (!url)
        return 0;
    memcpy(url, data, size);
    url[size] = '\0';
    struct redis_target t, u;
    int rc = config_parse_redis_url(url, &t);
    int rc2 = config_parse_redis_url(url, &u);
    CHECK(rc == rc2);
    if (rc == 0) {
        CHECK(t.kind == u.kind && t.db == u.db && same_opt(t.user, u.user) && same_opt(t.password, u.password));
        CHECK(t.db >= 0 && t.db <= 65535);
        if (t.kind == REDIS_TCP) {
            CHECK(strncmp(url, "redis://", 8) == 0);
            CHECK(terminated(t.tcp.host, sizeof t.tcp.host) && t.tcp.host[0]);
            CHECK(t.tcp.port >= 1 && t.tcp.port <= 65535);
            CHECK(strcmp(t.tcp.host, u.tcp.host) == 0 && t.tcp.port == u.tcp.port);
        } else if (t.kind == REDIS_UNIX) {
            CHECK(strncmp(url, "unix://", 7) == 0);
            CHECK(terminated(t.path, sizeof t.path) && t.path[0] == '/');
            CHECK(strcmp(t.path, u.path) == 0);
        } else {
            CHECK(t.kind == REDIS_SENTINEL && strncmp(url, "redis-sentinel://", 17) == 0);
            CHECK(t.n_sentinels >= 1 && t.n_sentinels <= REDIS_MAX_SENTINELS && t.n_sentinels == u.n_sentinels);
            for (size_t i = 0; i < t.n_sentinels; i++) {
                CHECK(terminated(t.sentinels[i].host, sizeof t.sentinels[i].host) && t.sentinels[i].host[0]);
                CHECK(t.sentinels[i].port >= 1 && t.sentinels[i].port <= 65535);
            }
            CHECK(terminated(t.master_name, sizeof t.master_name) && t.master_name[0]);
            CHECK(strchr(t.master_name, '/') == NULL);
        }
    }
    release(&t);
    release(&u);
    free(url);
    return 0;
}
