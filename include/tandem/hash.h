/* One string hash for the in-process tables (caches, subscriber buckets). */
#ifndef TANDEM_HASH_H
#define TANDEM_HASH_H
#include <stddef.h>
#include <stdint.h>

/* FNV-1a of a NUL-terminated string: fast, well spread for short ids. Not for untrusted
 * flooding defence: the tables using it are bounded or keyed by validated ids. */
static inline uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}
#endif
