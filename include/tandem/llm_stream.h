/* Incremental parser of an OpenAI-compatible chat-completion response body: the `stream: true`
 * server-sent events (`data: {...}` ... `data: [DONE]`) or one plain JSON object. */
#ifndef TANDEM_LLM_STREAM_H
#define TANDEM_LLM_STREAM_H
#include <stddef.h>

/* Outcome of feeding bytes. Errors are sticky: once returned, every later call returns the same. */
enum llm_stream_status {
    LLM_STREAM_MORE = 0,       /* fine so far; the answer is not complete yet */
    LLM_STREAM_DONE,           /* complete: `data: [DONE]` (feed), or at finish a finish_reason or a whole JSON body */
    LLM_STREAM_MALFORMED,      /* an event or the body is not the JSON we expect */
    LLM_STREAM_TOO_LARGE,      /* an event, the body or the assembled content is over its cap */
    LLM_STREAM_TRUNCATED,      /* the body ended before the answer was complete */
    LLM_STREAM_UPSTREAM_ERROR, /* the server sent an {"error": ...} object or an `event: error` */
    LLM_STREAM_NOMEM
};

#define LLM_STREAM_DEFAULT_MAX_EVENT (256u * 1024u)  /* one SSE event or the whole JSON body */
#define LLM_STREAM_DEFAULT_MAX_CONTENT (64u * 1024u) /* the assembled answer text: k short replies */

struct llm_stream;

/* New parser; caps of 0 take the defaults above. NULL on OOM. Free with llm_stream_free(). One
 * parser per response; not thread-safe (one transfer, one thread). */
struct llm_stream *llm_stream_new(size_t max_event, size_t max_content);
void llm_stream_free(struct llm_stream *s);

/* Feeds the next len bytes of the response body; chunk boundaries may fall anywhere (inside a UTF-8
 * character, inside "\r\n", inside "data:"). The format is detected from the first non-blank byte:
 * '{' means one JSON object (`choices[0].message.content`), anything else SSE
 * (`choices[0].delta.content`, and `message.content` when a server puts it in a chunk). Comments
 * (`: keep-alive`), `event:`/`id:`/`retry:` fields and chunks without choices are ignored; bytes
 * after `data: [DONE]` are ignored. */
enum llm_stream_status llm_stream_feed(struct llm_stream *s, const void *data, size_t len);

/* Call at the end of the body (again: same result; later feeds return it too). A last line
 * without its newline is still parsed. Returns DONE
 * when the answer is complete ([DONE], a finish_reason, or a whole JSON body), TRUNCATED when the
 * body ended early, or the sticky error. */
enum llm_stream_status llm_stream_finish(struct llm_stream *s);

/* The answer text assembled so far, NUL-terminated valid UTF-8 (Jansson decoded it); *len gets its
 * length when len is not NULL. Borrowed: valid until the next feed/finish or llm_stream_free(). */
const char *llm_stream_content(const struct llm_stream *s, size_t *len);
/* The first finish_reason the server sent ("stop", "length", ...) or NULL. Borrowed. */
const char *llm_stream_finish_reason(const struct llm_stream *s);
/* 1 once the body was detected as SSE, 0 for a JSON body or when undecided. */
int llm_stream_is_sse(const struct llm_stream *s);

/* "more", "done", "malformed", "too_large", "truncated", "upstream_error", "nomem". Static. */
const char *llm_stream_status_name(enum llm_stream_status st);
#endif
