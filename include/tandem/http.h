/* The HTTP server: request state, security gate, routing, and the one JSON error envelope. */
#ifndef TANDEM_HTTP_H
#define TANDEM_HTTP_H
#include <stddef.h>
#include <stdint.h>

#include "tandem/buf.h"

struct MHD_Connection;
struct MHD_Response;
struct app;
struct json_t;

enum http_method {
    HTTP_GET = 1 << 0,
    HTTP_HEAD = 1 << 1,
    HTTP_POST = 1 << 2,
    HTTP_PUT = 1 << 3,
    HTTP_DELETE = 1 << 4,
    HTTP_OPTIONS = 1 << 5,
    HTTP_PATCH = 1 << 6,
    HTTP_OTHER = 1 << 7,
};

#define REQUEST_MAX_PARAMS 2
#define REQUEST_ID_LEN 16
#define REQUEST_MAX_HEADERS 8

struct route;

/* One per request, in MHD's *req_cls; freed only when MHD reports the request completed.
 * Handlers read it and answer through http_reply_*(). */
struct request {
    struct MHD_Connection *conn;
    struct app *app;
    const struct route *route;  /* NULL until routed */
    enum http_method method;
    const char *method_name;
    const char *path;          /* borrowed from MHD, valid for the request */
    char *params[REQUEST_MAX_PARAMS]; /* captured '*' path segments (arena) */
    size_t n_params;
    struct buf body;           /* request body (capped) */
    int body_error;            /* gate verdict or T_ERR_TOO_LARGE once the body went over its cap */
    const char *reject_message; /* message for body_error, NULL for the standard one */
    char id[REQUEST_ID_LEN + 1];
    uint64_t start_ns;
    unsigned calls;            /* access-handler calls so far */
    struct arena arena;        /* request-scoped memory */
    /* response */
    unsigned status;
    struct MHD_Response *response;
    const char *hdr_names[REQUEST_MAX_HEADERS];
    const char *hdr_values[REQUEST_MAX_HEADERS];
    size_t n_hdrs;
    int streaming;             /* 1 for long-lived responses (SSE): not counted as in flight */
    int oom;                   /* request-scoped allocation failed while routing */
    int suspended;             /* the handler parked the connection (http_suspend) and will answer
                                  when it is resumed: the handler is then called again */
    void *ext;                 /* a handler's own state across suspend/resume */
    void (*ext_free)(void *ext); /* called once when the request completes */
};

/* Handler: answer with one of http_reply_*() and return T_OK, or return an error code to get
 * the standard envelope for it. */
typedef int (*route_handler)(struct request *req);

#define ROUTE_NO_AUTH 0x1  /* outside /v1: no token needed */
#define ROUTE_TOKEN_IN_QUERY 0x2 /* accepts ?token= (EventSource cannot send headers) */
#define ROUTE_NDJSON 0x4   /* body is application/x-ndjson (capped by TANDEM_MAX_TRANSCRIPTS_BODY) */

struct route {
    const char *pattern;   /* "/v1/conversations/ * /context": '*' matches one segment */
    unsigned methods;      /* HTTP_* bits */
    route_handler handler;
    const char *name;      /* label for metrics and logs */
    unsigned flags;        /* ROUTE_* */
    size_t max_body;       /* 0: the configured TANDEM_MAX_BODY */
};

/* The route table (api.c); terminated by a NULL pattern. */
extern const struct route api_routes[];

/* Replies. Each returns T_OK or T_ERR_NOMEM; only the first reply of a request counts. */
/* Takes ownership of body (a json_t*), serialises it compactly. */
int http_reply_json(struct request *req, unsigned status, struct json_t *body);
/* Copies len bytes. */
int http_reply_data(struct request *req, unsigned status, const char *content_type,
                    const void *data, size_t len);
/* Takes data (malloc'd; freed by the response, or here on failure) instead of copying it. */
int http_reply_take(struct request *req, unsigned status, const char *content_type, char *data, size_t len);
/* The error envelope for err; message NULL means the standard text for err. */
int http_reply_error(struct request *req, int err, const char *message);
/* Adds a response header; name and value must outlive the request (static or req->arena). */
void http_add_header(struct request *req, const char *name, const char *value);

/* Parks the connection until http_resume() (from any thread); the route handler is then called
 * again with req->ext as it left it. Only from within a handler. */
void http_suspend(struct request *req);
void http_resume(struct MHD_Connection *conn);

/* Marks req as a long-lived stream: it no longer counts as in flight for graceful shutdown. */
void http_mark_streaming(struct request *req);

/* Query argument or request header; borrowed until the request completes; NULL when absent. */
const char *http_query(struct request *req, const char *key);
const char *http_header(struct request *req, const char *name);

/* Server lifecycle (main.c). */
struct http_server;
/* Starts listening per app->cfg. NULL on failure (logged). */
struct http_server *http_start(struct app *app);
/* Stops accepting, ends streams, waits up to grace_ms for requests in flight, calls
 * before_stop (may be NULL: e.g. llm_stop, whose callbacks resume parked requests) and gives
 * those a moment to answer, then stops the daemon. */
void http_stop(struct http_server *srv, unsigned grace_ms, void (*before_stop)(void));
/* Requests currently in flight (not counting streams). */
unsigned http_inflight(void);
#endif
