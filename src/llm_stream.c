/* Incremental parser of OpenAI-compatible chat-completion bodies: SSE chunks or one JSON object. */
#include "tandem/json_io.h"
#include "tandem/llm_stream.h"
#include "tandem/buf.h"
#include "tandem/error.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>

enum mode { MODE_UNDECIDED, MODE_SSE, MODE_JSON };



struct llm_stream {
    enum mode mode;
    enum llm_stream_status err; /* sticky error, or MORE */
    int done;                   /* saw data: [DONE] */
    int cr_pending;             /* last byte was CR: a following LF belongs to the same line end */
    int has_data;               /* the current event has at least one data: line */
    int bad_event_type;         /* current event's type is "error" */
    int saw_choices;            /* some document had a "choices" array */
    int finished;               /* llm_stream_finish() ran: its result is final */
    enum llm_stream_status final;
    struct buf prefix;          /* bytes seen while the format is undecided */
    struct buf line;            /* current SSE line, or the whole JSON body */
    struct buf data;            /* current event's data lines joined by '\n' */
    struct buf content;         /* the answer text */
    char *finish_reason;
    size_t max_event;
};

struct llm_stream *llm_stream_new(size_t max_event, size_t max_content)
{
    struct llm_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->max_event = max_event ? max_event : LLM_STREAM_DEFAULT_MAX_EVENT;
    buf_init(&s->prefix, s->max_event);
    buf_init(&s->line, s->max_event);
    buf_init(&s->data, s->max_event);
    buf_init(&s->content, max_content ? max_content : LLM_STREAM_DEFAULT_MAX_CONTENT);
    return s;
}

void llm_stream_free(struct llm_stream *s)
{
    if (!s)
        return;
    buf_cleanup(&s->prefix);
    buf_cleanup(&s->line);
    buf_cleanup(&s->data);
    buf_cleanup(&s->content);
    free(s->finish_reason);
    free(s);
}

static enum llm_stream_status from_buf_err(int err)
{
    return err == T_ERR_TOO_LARGE ? LLM_STREAM_TOO_LARGE : LLM_STREAM_NOMEM;
}

static enum llm_stream_status fail(struct llm_stream *s, enum llm_stream_status st)
{
    s->err = st;
    return st;
}

/* Takes the text of one choice: delta.content for chunks, message.content for whole answers. */
static enum llm_stream_status take_choice(struct llm_stream *s, json_t *choice)
{
    if (!json_is_object(choice))
        return LLM_STREAM_MALFORMED;
    json_t *index = json_object_get(choice, "index");
    if (index && json_is_integer(index) && json_integer_value(index) != 0)
        return LLM_STREAM_MORE; /* n > 1: only the first choice is ours */
    json_t *text = NULL;
    json_t *delta = json_object_get(choice, "delta");
    json_t *message = json_object_get(choice, "message");
    if (json_is_object(delta))
        text = json_object_get(delta, "content");
    if (!json_is_string(text) && json_is_object(message))
        text = json_object_get(message, "content");
    if (text && !json_is_string(text) && !json_is_null(text))
        return LLM_STREAM_MALFORMED;
    if (json_is_string(text)) {
        int err = buf_append(&s->content, json_string_value(text), json_string_length(text));
        if (err)
            return from_buf_err(err);
    }
    json_t *fr = json_object_get(choice, "finish_reason");
    if (json_is_string(fr) && !s->finish_reason) {
        s->finish_reason = strdup(json_string_value(fr));
        if (!s->finish_reason)
            return LLM_STREAM_NOMEM;
    }
    return LLM_STREAM_MORE;
}

/* One JSON document: a stream chunk or the whole non-streaming answer. */
static enum llm_stream_status take_json(struct llm_stream *s, const char *p, size_t n, int at_end)
{
    json_error_t jerr;
    json_t *root;
    int perr = json_parse(p, n, 0, &root, &jerr);
    if (perr == T_ERR_NOMEM)
        return LLM_STREAM_NOMEM;
    if (perr) {
        if (at_end && json_error_code(&jerr) == json_error_premature_end_of_input)
            return LLM_STREAM_TRUNCATED;
        return LLM_STREAM_MALFORMED;
    }
    enum llm_stream_status st = LLM_STREAM_MORE;
    if (!json_is_object(root)) {
        st = LLM_STREAM_MALFORMED;
    } else if (json_object_get(root, "error") && !json_is_null(json_object_get(root, "error"))) {
        st = LLM_STREAM_UPSTREAM_ERROR;
    } else {
        json_t *choices = json_object_get(root, "choices");
        if (choices && !json_is_array(choices)) {
            st = LLM_STREAM_MALFORMED;
        } else {
            s->saw_choices |= choices != NULL;
            size_t i;
            json_t *c;
            json_array_foreach(choices, i, c)
            {
                st = take_choice(s, c);
                if (st != LLM_STREAM_MORE)
                    break;
            }
        }
    }
    json_decref(root);
    return st;
}

static enum llm_stream_status dispatch_event(struct llm_stream *s, int at_end)
{
    enum llm_stream_status st = LLM_STREAM_MORE;
    if (s->has_data) {
        const char *d = s->data.data ? s->data.data : "";
        size_t n = s->data.len;
        while (n && (d[n - 1] == ' ' || d[n - 1] == '\t'))
            n--;
        if (s->bad_event_type)
            st = LLM_STREAM_UPSTREAM_ERROR;
        else if (n == 6 && memcmp(d, "[DONE]", 6) == 0)
            s->done = 1;
        else
            st = take_json(s, d, n, at_end);
    }
    buf_reset(&s->data);
    s->has_data = 0;
    s->bad_event_type = 0;
    return st;
}

/* One complete SSE line (terminator removed), per the WHATWG event-stream rules. */
static enum llm_stream_status take_line(struct llm_stream *s, const char *p, size_t n, int at_end)
{
    if (n == 0)
        return dispatch_event(s, at_end);
    if (p[0] == ':')
        return LLM_STREAM_MORE; /* comment / keep-alive */
    const char *colon = memchr(p, ':', n);
    size_t flen = colon ? (size_t)(colon - p) : n;
    const char *v = colon ? colon + 1 : p + n;
    size_t vlen = (size_t)(p + n - v);
    if (vlen && v[0] == ' ') {
        v++;
        vlen--;
    }
    if (flen == 4 && memcmp(p, "data", 4) == 0) {
        int err = s->has_data ? buf_putc(&s->data, '\n') : T_OK;
        if (!err)
            err = buf_append(&s->data, v, vlen);
        if (err)
            return from_buf_err(err);
        s->has_data = 1;
    } else if (flen == 5 && memcmp(p, "event", 5) == 0) {
        s->bad_event_type = vlen == 5 && memcmp(v, "error", 5) == 0;
    }
    return LLM_STREAM_MORE; /* id:, retry: and unknown fields are ignored */
}

static enum llm_stream_status feed_sse(struct llm_stream *s, const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && !s->done) {
        if (s->cr_pending) {
            s->cr_pending = 0;
            if (p[i] == '\n') {
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < n && p[j] != '\r' && p[j] != '\n')
            j++;
        int err = buf_append(&s->line, p + i, j - i);
        if (err)
            return fail(s, from_buf_err(err));
        if (j == n)
            break;
        s->cr_pending = p[j] == '\r';
        enum llm_stream_status st = take_line(s, s->line.data ? s->line.data : "", s->line.len, 0);
        buf_reset(&s->line);
        if (st != LLM_STREAM_MORE)
            return fail(s, st);
        i = j + 1;
    }
    return s->done ? LLM_STREAM_DONE : LLM_STREAM_MORE;
}

static enum llm_stream_status feed_decided(struct llm_stream *s, const char *p, size_t n)
{
    if (s->mode == MODE_SSE)
        return feed_sse(s, p, n);
    int err = buf_append(&s->line, p, n);
    return err ? fail(s, from_buf_err(err)) : LLM_STREAM_MORE;
}

/* Looks at the buffered prefix: a UTF-8 BOM and blank bytes are skipped, then '{' means JSON. */
static enum llm_stream_status decide(struct llm_stream *s, int at_end)
{
    const unsigned char *p = (const unsigned char *)(s->prefix.data ? s->prefix.data : "");
    size_t n = s->prefix.len, i = 0;
    static const unsigned char bom[3] = {0xef, 0xbb, 0xbf};
    size_t b = n < 3 ? n : 3;
    if (memcmp(p, bom, b) == 0) {
        if (n < 3 && !at_end)
            return LLM_STREAM_MORE;
        i = b;
    }
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    if (i == n && !at_end)
        return LLM_STREAM_MORE;
    s->mode = i < n && p[i] == '{' ? MODE_JSON : MODE_SSE;
    /* SSE keeps the blank lines (they are event boundaries); JSON does not need them. */
    size_t from = s->mode == MODE_JSON ? i : (memcmp(p, bom, b) == 0 ? b : 0);
    enum llm_stream_status st = feed_decided(s, (const char *)p + from, n - from);
    buf_cleanup(&s->prefix);
    return st;
}

enum llm_stream_status llm_stream_feed(struct llm_stream *s, const void *data, size_t len)
{
    if (s->finished)
        return s->final;
    if (s->err != LLM_STREAM_MORE)
        return s->err;
    if (s->done)
        return LLM_STREAM_DONE;
    const char *p = data;
    size_t i = 0;
    /* Undecided: buffer only up to the first byte that decides, so the prefix cap depends on the
     * body, never on how it was cut into pieces. decide() runs on the first bytes (a BOM) and on a
     * non-blank byte, which always decides: linear overall. */
    while (i < len && s->mode == MODE_UNDECIDED) {
        unsigned char c = (unsigned char)p[i++];
        int err = buf_append(&s->prefix, &c, 1);
        if (err)
            return fail(s, from_buf_err(err));
        if (s->prefix.len > 3 && (c == ' ' || c == '\t' || c == '\r' || c == '\n'))
            continue;
        enum llm_stream_status st = decide(s, 0);
        if (st != LLM_STREAM_MORE && st != LLM_STREAM_DONE)
            return st;
    }
    if (s->mode == MODE_UNDECIDED)
        return LLM_STREAM_MORE;
    if (s->done)
        return LLM_STREAM_DONE;
    return i < len ? feed_decided(s, p + i, len - i) : (s->err != LLM_STREAM_MORE ? s->err : LLM_STREAM_MORE);
}

static enum llm_stream_status finish_once(struct llm_stream *s)
{
    if (s->err != LLM_STREAM_MORE)
        return s->err;
    if (s->mode == MODE_UNDECIDED) {
        enum llm_stream_status st = decide(s, 1);
        if (st != LLM_STREAM_MORE && st != LLM_STREAM_DONE)
            return st;
    }
    if (s->done)
        return LLM_STREAM_DONE;
    if (s->mode == MODE_JSON) {
        enum llm_stream_status st = take_json(s, s->line.data ? s->line.data : "", s->line.len, 1);
        if (st != LLM_STREAM_MORE)
            return fail(s, st);
        return s->saw_choices ? LLM_STREAM_DONE : fail(s, LLM_STREAM_MALFORMED);
    }
    /* Lenient about the very end: a last line without newline, an event without blank line. */
    if (s->line.len) {
        enum llm_stream_status st = take_line(s, s->line.data, s->line.len, 1);
        buf_reset(&s->line);
        if (st != LLM_STREAM_MORE)
            return fail(s, st);
    }
    enum llm_stream_status st = dispatch_event(s, 1);
    if (st != LLM_STREAM_MORE)
        return fail(s, st);
    if (s->done || s->finish_reason)
        return LLM_STREAM_DONE;
    return fail(s, LLM_STREAM_TRUNCATED);
}

enum llm_stream_status llm_stream_finish(struct llm_stream *s)
{
    if (!s->finished) {
        s->final = finish_once(s);
        s->finished = 1;
    }
    return s->final;
}

const char *llm_stream_content(const struct llm_stream *s, size_t *len)
{
    if (len)
        *len = s->content.len;
    return s->content.data ? s->content.data : "";
}

const char *llm_stream_finish_reason(const struct llm_stream *s) { return s->finish_reason; }

int llm_stream_is_sse(const struct llm_stream *s) { return s->mode == MODE_SSE; }

const char *llm_stream_status_name(enum llm_stream_status st)
{
    switch (st) {
    case LLM_STREAM_MORE: return "more";
    case LLM_STREAM_DONE: return "done";
    case LLM_STREAM_MALFORMED: return "malformed";
    case LLM_STREAM_TOO_LARGE: return "too_large";
    case LLM_STREAM_TRUNCATED: return "truncated";
    case LLM_STREAM_UPSTREAM_ERROR: return "upstream_error";
    case LLM_STREAM_NOMEM: return "nomem";
    }
    return "unknown";
}
