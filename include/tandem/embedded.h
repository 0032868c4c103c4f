/* Data files compiled into the binary by scripts/embed.sh (the files live in data/). */
#ifndef TANDEM_EMBEDDED_H
#define TANDEM_EMBEDDED_H
#include <stddef.h>

struct embedded_file {
    const char *name;          /* base name, e.g. "stopwords_en.txt" */
    const unsigned char *data; /* NUL-terminated (the NUL is not counted in len) */
    size_t len;
};

/* Terminated by an entry whose name is NULL. */
extern const struct embedded_file embedded_files[];

/* Returns the embedded file called name, or NULL. Borrowed, static lifetime. */
const struct embedded_file *embedded_find(const char *name);
#endif
