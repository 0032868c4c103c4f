/* LLM prompt building (redacted, grounded, customer text quoted as data) and answer validation. */
#ifndef TANDEM_LLM_PROMPT_H
#define TANDEM_LLM_PROMPT_H
#include <stddef.h>

struct buf;
struct redact_map;

#define LLM_DEFAULT_K 3
#define LLM_MAX_K 10                   /* reply options per answer: the UI shows a handful */
#define LLM_TEXT_MAX_CHARS 2000        /* one suggestion, in characters (code points) */
#define LLM_PROMPT_MAX_MESSAGES 50     /* newest messages quoted; older ones are left out */
#define LLM_PROMPT_MAX_CONV_BYTES 24000 /* conversation text in the prompt (~6k tokens) */
#define LLM_PROMPT_MAX_MSG_BYTES 4000  /* one message; longer ones are cut with a visible marker */
#define LLM_PROMPT_MAX_GROUNDING 8     /* KB entries + past replies */
#define LLM_PROMPT_MAX_EXCERPT 800     /* bytes of one grounding body */
#define LLM_PROMPT_MAX_SUMMARY 4000    /* bytes of the customer summary */

/* One conversation message. role: "customer", "agent", "bot", "system" or "note" (anything else
 * is quoted as "other"); text: UTF-8 (invalid bytes become U+FFFD). Both borrowed. */
struct llm_msg {
    const char *role;
    const char *text;
};

/* One grounding item from the local engine, best first. All strings borrowed, may be NULL except
 * text. A KB entry has kb_id/title/url; a past reply (is_memory = 1) may carry the kb_id of the
 * entry it is linked to. Only these kb_ids are accepted back from the model. */
struct llm_ground {
    const char *kb_id;
    const char *title;
    const char *text;
    const char *url;
    int is_memory;
};

/* What to ask for. Everything is borrowed and only read during llm_prompt_build() /
 * llm_submit(), in the caller's thread: the caller may free it as soon as that call returns. */
struct llm_request {
    const struct llm_msg *msgs;       /* oldest first */
    size_t n_msgs;
    const struct llm_ground *grounding;
    size_t n_grounding;
    const char *summary;              /* customer/conversation summary, or NULL */
    const char *lang;                 /* ISO 639-1 hint, or NULL */
    unsigned k;                       /* 1..LLM_MAX_K; 0 = LLM_DEFAULT_K */
    struct redact_map *map;           /* the conversation's map (not thread-safe: the caller must
                                         not use it concurrently), or NULL for a map of this
                                         request only */
    long budget_ms;                   /* 0 = the configured budget; counted from llm_submit() */
};

/* Request-body settings. Strings borrowed during llm_prompt_build(). */
struct llm_prompt_opts {
    const char *model;
    const char *system_prompt; /* NULL = the embedded data/llm_system_prompt.txt */
    int stream;                /* "stream": true */
    int json_mode;             /* "response_format": {"type": "json_object"} */
    double temperature;
    unsigned max_tokens;
};

/* One validated reply option. Both strings owned by the answer. */
struct llm_suggestion {
    char *text;  /* placeholders such as [CARD_1] kept; KB-origin values restored */
    char *kb_id; /* one of the grounding ids, or NULL */
};

struct llm_answer {
    struct llm_suggestion *items;
    size_t n;
};

/* The built request body plus what validating its answer needs (allowed kb_ids and URLs, the
 * placeholders that came from KB text). Immutable after build: safe to read from another thread. */
struct llm_prompt;

/* Builds the chat-completions body: system prompt, then one user message with the redacted KB
 * entries, past replies, summary and conversation as JSON inside delimited blocks, with the
 * instruction that block content is data. Every text is redacted with req->map (or a map of its
 * own) before it is placed; if any redaction fails nothing is built. On success *out is new (free
 * with llm_prompt_free) and returns T_OK. On failure *out is NULL and *reason (static) is
 * "redaction_failed", "bad_request" (k out of range, NULL text) or "nomem"; the return is the
 * T_ERR_* code. */
int llm_prompt_build(const struct llm_prompt_opts *o, const struct llm_request *req,
                     struct llm_prompt **out, const char **reason);
void llm_prompt_free(struct llm_prompt *p);
/* The JSON body; borrowed until llm_prompt_free(). */
const char *llm_prompt_body(const struct llm_prompt *p, size_t *len);
/* The k that was asked for. */
unsigned llm_prompt_k(const struct llm_prompt *p);

/* Checks the model's answer text (the assembled content): one JSON object, optionally inside a
 * ```json fence, {"suggestions": [{"text": "...", "kb_id": "..."}]} or {"suggestions": ["..."]};
 * 1..k items are used (extra ones are ignored); each text non-empty and at most
 * LLM_TEXT_MAX_CHARS; no PII the redactor would mask; no URL that is not in the sent KB entries,
 * past replies, summary or conversation. A kb_id that is not a grounding id is dropped (the text
 * stays). Texts are kept byte for byte (newlines and control characters included: they stay JSON
 * string content). On success fills *out (release with llm_answer_cleanup) and returns T_OK; else
 * returns T_ERR_BAD_JSON (or T_ERR_NOMEM), *out empty, *why (static) one of "not_json",
 * "bad_shape", "no_items", "empty_text", "too_long", "pii", "unknown_url", "pii_check_failed",
 * "nomem". Thread-safe for a given immutable p. */
int llm_prompt_validate(const struct llm_prompt *p, const char *answer, size_t len,
                        struct llm_answer *out, const char **why);
void llm_answer_cleanup(struct llm_answer *a);

/* Fault seam for tests: the redactor used for the prompt and the answer check (default
 * redact_text). Set it only while no prompt is being built or validated. */
extern int (*llm_prompt_redact_fn)(const char *text, size_t len, struct redact_map *map, struct buf *out,
                                   unsigned *counts);

/* The compiled-in default system prompt (data/llm_system_prompt.txt). Static storage. */
const char *llm_prompt_default_system(void);
/* Reads an operator's system prompt file (UTF-8 text, 1 byte .. 64 KiB) into *out (new, free()).
 * Returns T_OK, or T_ERR_IO / T_ERR_TOO_LARGE / T_ERR_CONFIG with a one-line reason in err. */
int llm_prompt_load_system(const char *path, char **out, char *err, size_t errlen);
#endif
