/* libFuzzer target for the SSE encoder (sse_event_new, sse_comment_new).
 *
 * Build and run: scripts/fuzz.sh. Includes src/sse.c to read the encoded bytes of the opaque
 * struct sse_event. The input is split at the first two NUL bytes into name, id and data (id
 * empty = no id). Asserts: the encoder refuses (NULL) exactly when a field holds CR or LF or
 * the id is too long; otherwise the bytes, read by an independent parser that follows the
 * WHATWG event-stream rules (lines end at CR, LF or CRLF; a blank line dispatches), give exactly
 * one event whose name, id and data are the input's, the data being one line; a comment is one
 * comment line and no event. So text from a customer or a model can never forge an event. */
#include "../../src/sse.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond);           \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct parsed {
    int events, comments, data_lines;
    char name[256], id[256], data[4096];
    size_t data_len;
};

/* The event-stream parser of the HTML standard, reduced to what the checks need. */
static void parse_stream(const char *s, size_t n, struct parsed *p)
{
    memset(p, 0, sizeof *p);
    int have_data = 0;
    char name[256] = "", id[256] = "";
    size_t i = 0;
    while (i < n) {
        size_t e = i;
        while (e < n && s[e] != '\r' && s[e] != '\n')
            e++;
        CHECK(e < n); /* every line is terminated */
        size_t len = e - i;
        const char *line = s + i;
        i = e + 1;
        if (s[e] == '\r' && i < n && s[i] == '\n')
            i++;
        if (len == 0) { /* dispatch */
            if (have_data) {
                p->events++;
                snprintf(p->name, sizeof p->name, "%s", name[0] ? name : "message");
                snprintf(p->id, sizeof p->id, "%s", id);
            }
            have_data = 0;
            name[0] = '\0';
            continue;
        }
        if (line[0] == ':') {
            p->comments++;
            continue;
        }
        const char *colon = memchr(line, ':', len);
        size_t fl = colon ? (size_t)(colon - line) : len;
        const char *v = colon ? colon + 1 : line + len;
        size_t vl = colon ? len - fl - 1 : 0;
        if (vl && *v == ' ')
            v++, vl--;
        if (fl == 4 && memcmp(line, "data", 4) == 0) {
            p->data_lines++;
            have_data = 1;
            CHECK(vl < sizeof p->data);
            memcpy(p->data, v, vl);
            p->data_len = vl;
        } else if (fl == 5 && memcmp(line, "event", 5) == 0) {
            CHECK(vl < sizeof name);
            memcpy(name, v, vl);
            name[vl] = '\0';
        } else if (fl == 2 && memcmp(line, "id", 2) == 0) {
            CHECK(vl < sizeof id);
            memcpy(id, v, vl);
            id[vl] = '\0';
        }
    }
}

static int has_crlf(const char *s, size_t n) { return memchr(s, '\n', n) || memchr(s, '\r', n); }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 3000)
        return 0;
    char *buf = malloc(size + 1);
    if (!buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    const char *name = buf;
    size_t nl = strnlen(buf, size);
    size_t pos = nl < size ? nl + 1 : size;
    const char *id = buf + pos;
    size_t il = strnlen(id, size - pos);
    size_t pos2 = pos + il < size ? pos + il + 1 : size;
    const char *d = buf + pos2; /* may hold NUL bytes: the encoder takes a length */
    size_t dl = size - pos2;
    if (nl > 200) {
        free(buf);
        return 0;
    }
    /* an empty name would be dispatched as "message": the encoder's callers never pass one */
    if (nl == 0)
        name = "suggestions", nl = strlen(name);

    int want_ok = !has_crlf(name, nl) && !has_crlf(d, dl) && (!il || (!has_crlf(id, il) && il < STREAM_ID_MAX));
    struct sse_event *ev = sse_event_new(name, il ? id : NULL, d, dl);
    CHECK((ev != NULL) == want_ok);
    if (ev) {
        CHECK(ev->len >= 2 && ev->data[ev->len - 1] == '\n' && ev->data[ev->len - 2] == '\n');
        struct parsed p;
        parse_stream(ev->data, ev->len, &p);
        CHECK(p.comments == 0);
        CHECK(p.data_lines == 1);
        CHECK(p.events == 1);
        CHECK(strcmp(p.name, name) == 0);
        CHECK(strcmp(p.id, il ? id : "") == 0);
        CHECK(p.data_len == dl && memcmp(p.data, d, dl) == 0);
        CHECK(strcmp(ev->id, il ? id : "") == 0);
        sse_event_unref(ev);
    }
    struct sse_event *c = sse_comment_new(name);
    CHECK((c != NULL) == !has_crlf(name, nl));
    if (c) {
        struct parsed p;
        parse_stream(c->data, c->len, &p);
        CHECK(p.events == 0 && p.comments == 1);
        sse_event_unref(c);
    }
    free(buf);
    return 0;
}
