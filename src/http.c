/* The HTTP server on libmicrohttpd: request state, security gate, routing, responses.
 *
 * Concurrency model: MHD's internal thread pool (TANDEM_THREADS threads, epoll) with
 * suspend/resume allowed. Handlers run on the pool threads and may make blocking Redis calls:
 * Redis is a local dependency with a hard command timeout (TANDEM_REDIS_TIMEOUT_MS), each thread
 * owns its Redis connection, and a thread blocked on Redis only delays the connections it polls.
 * Nothing slower than that may run here: long-lived streams (SSE) are suspended connections fed
 * from other threads, and remote LLM calls run off the pool and resume their connection, so a
 * slow model never stalls other requests.
 *
 * Keep-alive: libmicrohttpd 0.9.75 closes the connection when a response is queued on the first
 * handler call of a request that may carry a body, so normal answers are queued on a later call.
 * Gate rejections of requests that announce a body are answered at once (and the connection
 * closed) so we never read a body we are going to refuse. */
#include "tandem/json_io.h"
#include "tandem/clock.h"
#include "tandem/http.h"
#include "tandem/app.h"
#include "tandem/error.h"
#include "tandem/log.h"
#include "tandem/metrics.h"
#include "tandem/sse.h"

#include <jansson.h>
#include <microhttpd.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* Per-connection pool: request line, headers and the write buffer. Every open event stream keeps
 * its pool, and MHD touches most of it, so this sets the memory of 1,000 subscribers (measured:
 * 16 KiB ~13 MB more than 8 KiB). 8 KiB leaves ~6 KiB for the request line and headers, bigger
 * gets 431; our clients send well under 1 KiB. */
#define CONNECTION_MEMORY_LIMIT (8 * 1024)
#define ACCESS_LOG_PATH_MAX 160

struct http_server {
    struct MHD_Daemon *daemon;
    struct app *app;
};

static atomic_uint inflight;
static atomic_int stopping; /* http_stop began: new requests are refused */
static atomic_ullong request_counter;
static uint64_t request_seed;

unsigned http_inflight(void) { return atomic_load(&inflight); }


/* splitmix64: request ids unique per process, not guessable from each other */
static uint64_t mix64(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static enum http_method parse_method(const char *m)
{
    static const struct {
        const char *name;
        enum http_method m;
    } tab[] = {{"GET", HTTP_GET},         {"HEAD", HTTP_HEAD},       {"POST", HTTP_POST}, {"PUT", HTTP_PUT},
               {"DELETE", HTTP_DELETE},   {"OPTIONS", HTTP_OPTIONS}, {"PATCH", HTTP_PATCH}};
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strcmp(m, tab[i].name) == 0)
            return tab[i].m;
    return HTTP_OTHER;
}

void http_suspend(struct request *req)
{
    req->suspended = 1;
    MHD_suspend_connection(req->conn);
}

void http_resume(struct MHD_Connection *conn) { MHD_resume_connection(conn); }

void http_mark_streaming(struct request *req)
{
    if (!req->streaming) {
        req->streaming = 1;
        atomic_fetch_sub(&inflight, 1);
    }
}

/* ---- queries and headers ---- */

const char *http_query(struct request *req, const char *key)
{
    return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, key);
}

const char *http_header(struct request *req, const char *name)
{
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

struct header_count {
    const char *name;
    unsigned n;
};

static enum MHD_Result count_header(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    (void)value;
    struct header_count *hc = cls;
    if (strcasecmp(key, hc->name) == 0)
        hc->n++;
    return MHD_YES;
}

static unsigned header_count(struct MHD_Connection *c, const char *name)
{
    struct header_count hc = {name, 0};
    MHD_get_connection_values(c, MHD_HEADER_KIND, count_header, &hc);
    return hc.n;
}

/* ---- replies ---- */

void http_add_header(struct request *req, const char *name, const char *value)
{
    if (req->n_hdrs < REQUEST_MAX_HEADERS) {
        req->hdr_names[req->n_hdrs] = name;
        req->hdr_values[req->n_hdrs] = value;
        req->n_hdrs++;
    }
}

/* Caller checked there is no response yet. */
static int reply_buffer(struct request *req, unsigned status, const char *content_type, void *data, size_t len,
                        enum MHD_ResponseMemoryMode mode)
{
    req->response = MHD_create_response_from_buffer(len, data, mode);
    if (!req->response)
        return T_ERR_NOMEM;
    req->status = status;
    if (content_type)
        MHD_add_response_header(req->response, MHD_HTTP_HEADER_CONTENT_TYPE, content_type);
    return T_OK;
}

int http_reply_data(struct request *req, unsigned status, const char *content_type, const void *data, size_t len)
{
    if (req->response)
        return T_OK;
    return reply_buffer(req, status, content_type, (void *)(uintptr_t)data, len, MHD_RESPMEM_MUST_COPY);
}

int http_reply_take(struct request *req, unsigned status, const char *content_type, char *data, size_t len)
{
    int err = T_OK;
    if (!req->response) {
        err = reply_buffer(req, status, content_type, data, len, MHD_RESPMEM_MUST_FREE);
        if (!err)
            return T_OK; /* MHD frees data with the response */
    }
    free(data);
    return err;
}

int http_reply_json(struct request *req, unsigned status, struct json_t *body)
{
    if (!body)
        return T_ERR_NOMEM;
    char *s = json_serialize(body, JSON_COMPACT); /* malloc()ed (json_io.c): MHD frees it */
    json_decref(body);
    if (!s)
        return T_ERR_NOMEM;
    return http_reply_take(req, status, "application/json", s, strlen(s));
}

int http_reply_error(struct request *req, int err, const char *message)
{
    if (req->response)
        return T_OK;
    unsigned status = tandem_http_status(err);
    json_t *body = json_pack("{s:{s:s, s:s}}", "error", "code", tandem_err_code(err), "message",
                             message ? message : tandem_strerror(err));
    if (!body) /* message was not valid UTF-8: fall back to the standard text */
        body = json_pack("{s:{s:s, s:s}}", "error", "code", tandem_err_code(err), "message", tandem_strerror(err));
    return http_reply_json(req, status, body);
}

/* ---- the gate ---- */

/* A header's value, NULL when absent or when it holds a NUL byte (which would make the C string
 * shorter than what the client sent: "127.0.0.1:8787\0.evil.example"). */
static const char *header_exact(struct request *req, const char *name)
{
    const char *v = NULL;
    size_t len = 0;
    if (MHD_lookup_connection_value_n(req->conn, MHD_HEADER_KIND, name, strlen(name), &v, &len) != MHD_YES || !v)
        return NULL;
    return strlen(v) == len ? v : NULL;
}

static int host_allowed(const struct config *cfg, const char *host)
{
    size_t n = strlen(host);
    for (size_t i = 0; i < cfg->n_hosts; i++)
        if (strlen(cfg->hosts[i]) == n && strncasecmp(cfg->hosts[i], host, n) == 0)
            return 1;
    return 0;
}

static int origin_allowed(const struct config *cfg, const char *origin)
{
    for (size_t i = 0; i < cfg->n_origins; i++)
        if (strcmp(cfg->origins[i], origin) == 0)
            return 1;
    return 0;
}

/* Constant time in the length of the expected token. */
static int token_equal(const char *got, size_t got_len, const char *want, size_t want_len)
{
    unsigned char diff = (unsigned char)(got_len != want_len);
    for (size_t i = 0; i < want_len; i++)
        diff |= (unsigned char)(want[i] ^ (i < got_len ? got[i] : 0));
    return diff == 0;
}

static int authorized(struct request *req)
{
    struct app *app = req->app;
    const char *auth = http_header(req, MHD_HTTP_HEADER_AUTHORIZATION);
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *t = auth + 7;
        while (*t == ' ')
            t++;
        return token_equal(t, strlen(t), app->token, app->token_len);
    }
    if (!auth && req->route && (req->route->flags & ROUTE_TOKEN_IN_QUERY)) {
        const char *t = http_query(req, "token");
        if (t)
            return token_equal(t, strlen(t), app->token, app->token_len);
    }
    return 0;
}

static int media_type_is(const char *ct, const char *want)
{
    if (!ct)
        return 0;
    size_t n = strlen(want);
    while (*ct == ' ')
        ct++;
    if (strncasecmp(ct, want, n) != 0)
        return 0;
    ct += n;
    while (*ct == ' ')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* Splits path into segments and matches route patterns; '*' takes one segment (maybe empty,
 * so that "/v1/conversations//context" is a 400 for the id, not a 404). */
static const struct route *match_route(struct request *req, int *path_known)
{
    *path_known = 0;
    for (const struct route *r = api_routes; r->pattern; r++) {
        const char *p = r->pattern, *u = req->path;
        size_t np = 0;
        const char *caps[REQUEST_MAX_PARAMS];
        size_t caplen[REQUEST_MAX_PARAMS];
        int ok = 1;
        while (ok && *p && *u) {
            if (*p == '*') {
                const char *e = strchr(u, '/');
                size_t l = e ? (size_t)(e - u) : strlen(u);
                if (np < REQUEST_MAX_PARAMS) {
                    caps[np] = u;
                    caplen[np] = l;
                    np++;
                }
                u += l;
                p++;
            } else if (*p == *u) {
                p++, u++;
            } else {
                ok = 0;
            }
        }
        /* a trailing '*' may match an empty last segment */
        if (ok && *p == '*' && !*u && p[1] == '\0' && np < REQUEST_MAX_PARAMS) {
            caps[np] = u;
            caplen[np] = 0;
            np++;
            p++;
        }
        if (!ok || *p || *u)
            continue;
        *path_known = 1;
        if (!(r->methods & req->method) && !(req->method == HTTP_HEAD && (r->methods & HTTP_GET)) &&
            req->method != HTTP_OPTIONS)
            continue; /* maybe another row has the same path with this method */
        req->n_params = 0;
        for (size_t i = 0; i < np; i++) {
            req->params[i] = arena_strndup(&req->arena, caps[i], caplen[i]);
            if (!req->params[i]) {
                req->oom = 1;
                return NULL;
            }
            req->n_params++;
        }
        return r;
    }
    return NULL;
}

/* "GET, HEAD, PUT" for every row whose pattern matches the path. */
static const char *allowed_methods(struct request *req)
{
    static const struct {
        unsigned bit;
        const char *name;
    } names[] = {{HTTP_GET, "GET"}, {HTTP_HEAD, "HEAD"}, {HTTP_POST, "POST"}, {HTTP_PUT, "PUT"},
                 {HTTP_DELETE, "DELETE"}, {HTTP_PATCH, "PATCH"}};
    unsigned bits = 0;
    enum http_method saved = req->method;
    for (const struct route *r = api_routes; r->pattern; r++) {
        req->method = (enum http_method)r->methods;
        /* reuse the matcher with this row's methods */
        int known;
        const struct route *save_route = req->route;
        const struct route *m = match_route(req, &known);
        req->route = save_route;
        if (m == r)
            bits |= r->methods;
    }
    req->method = saved;
    if (bits & HTTP_GET)
        bits |= HTTP_HEAD;
    char *out = arena_alloc(&req->arena, 64);
    if (!out)
        return "OPTIONS";
    out[0] = '\0';
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (bits & names[i].bit) {
            strcat(out, names[i].name);
            strcat(out, ", ");
        }
    strcat(out, "OPTIONS");
    return out;
}

/* Decides what the gate says about this request: T_OK to go on, or the error to answer with.
 * May set req->route. */
static int gate(struct request *req, const char **message)
{
    const struct config *cfg = req->app->cfg;
    *message = NULL;
    /* 1. Host: exactly one, and one of ours (DNS rebinding defence) */
    if (header_count(req->conn, "Host") != 1)
        return *message = "exactly one Host header is required", T_ERR_MISDIRECTED;
    const char *host = header_exact(req, "Host");
    if (!host || !host_allowed(cfg, host))
        return T_ERR_MISDIRECTED;
    /* 2. headers whose repeat changes the meaning: MHD reads the first copy, a proxy in front may
     * read another (two lengths frame the body twice: request smuggling; two tokens). Like Host,
     * exactly one is accepted. */
    static const struct {
        const char *name, *message;
    } once[] = {{MHD_HTTP_HEADER_CONTENT_LENGTH, "send Content-Length at most once"},
                {MHD_HTTP_HEADER_TRANSFER_ENCODING, "send Transfer-Encoding at most once"},
                {MHD_HTTP_HEADER_AUTHORIZATION, "send Authorization at most once"}};
    for (size_t i = 0; i < sizeof once / sizeof once[0]; i++)
        if (header_count(req->conn, once[i].name) > 1)
            return *message = once[i].message, T_ERR_BAD_REQUEST;
    /* 3. framing: Content-Length or chunked, never both (RFC 9112 6.1, 6.3). MHD 0.9.75 would read
     * an unknown coding until the client closes (it hangs), and both together is the request
     * smuggling shape: refuse before anyone reads a byte of the body. */
    const char *te = http_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    if (te && http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH))
        return *message = "send Content-Length or Transfer-Encoding, not both", T_ERR_BAD_REQUEST;
    if (te && strcasecmp(te, "chunked") != 0)
        return *message = "the only Transfer-Encoding supported is chunked; or send Content-Length",
               T_ERR_NOT_IMPLEMENTED;
    /* 4. Origin: when present, must be allowed ("null" never is) */
    unsigned n_origin = header_count(req->conn, "Origin");
    const char *origin = http_header(req, "Origin");
    if (n_origin > 1 || (origin && (!header_exact(req, "Origin") || !origin_allowed(cfg, origin))))
        return T_ERR_FORBIDDEN_ORIGIN;
    /* 5. route (needed for auth flags and preflight) */
    int path_known;
    req->route = match_route(req, &path_known);
    if (req->oom)
        return T_ERR_NOMEM;
    /* 6. preflight: no token (browsers send none), answered by the caller */
    if (req->method == HTTP_OPTIONS)
        return path_known ? T_OK : T_ERR_NOT_FOUND;
    /* 7. token for everything under /v1/ (known path or not: don't reveal the API to strangers) */
    int is_v1 = strncmp(req->path, "/v1/", 4) == 0 || strcmp(req->path, "/v1") == 0;
    if (is_v1 || (req->route && !(req->route->flags & ROUTE_NO_AUTH))) {
        if (!authorized(req))
            return T_ERR_UNAUTHORIZED;
    }
    if (!path_known)
        return T_ERR_NOT_FOUND;
    if (!req->route)
        return T_ERR_METHOD;
    /* 8. bodies: JSON (or NDJSON) only, so a cross-site <form> can never reach a handler */
    if (req->method & (HTTP_POST | HTTP_PUT | HTTP_PATCH)) {
        const char *want = (req->route->flags & ROUTE_NDJSON) ? "application/x-ndjson" : "application/json";
        if (!media_type_is(http_header(req, MHD_HTTP_HEADER_CONTENT_TYPE), want))
            return *message = (req->route->flags & ROUTE_NDJSON) ? "send the body as application/x-ndjson" : NULL,
                   T_ERR_MEDIA_TYPE;
    }
    /* 9. declared size */
    const char *cl = http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH);
    /* bulk imports (NDJSON) have their own, larger cap: TANDEM_MAX_TRANSCRIPTS_BODY */
    size_t cap = req->route->max_body                 ? req->route->max_body
                 : (req->route->flags & ROUTE_NDJSON) ? (size_t)cfg->max_transcripts_body
                                                      : (size_t)cfg->max_body;
    req->body.max = cap;
    if (cl) {
        char *end;
        unsigned long long v = strtoull(cl, &end, 10);
        if (*end == '\0' && v > cap)
            return T_ERR_TOO_LARGE;
    }
    return T_OK;
}

/* ---- queueing ---- */

static void add_common_headers(struct request *req, struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Cache-Control", "no-store");
    MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(resp, "X-Request-Id", req->id);
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    const char *origin = http_header(req, "Origin");
    if (origin && origin_allowed(req->app->cfg, origin)) {
        MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
        MHD_add_response_header(resp, "Access-Control-Expose-Headers", "X-Request-Id");
    }
    MHD_add_response_header(resp, "Vary", "Origin");
    for (size_t i = 0; i < req->n_hdrs; i++)
        MHD_add_response_header(resp, req->hdr_names[i], req->hdr_values[i]);
}

static enum MHD_Result queue(struct request *req)
{
    if (!req->response) {
        /* the handler set nothing: a bug; still answer with the envelope */
        if (http_reply_error(req, T_ERR_INTERNAL, NULL) != T_OK || !req->response)
            return MHD_NO;
    }
    add_common_headers(req, req->response);
    enum MHD_Result r = MHD_queue_response(req->conn, req->status, req->response);
    MHD_destroy_response(req->response);
    req->response = NULL;
    return r;
}

/* Out of memory even for the envelope: a response made at start-up, shared by every request. */
static struct MHD_Response *oom_response;

static enum MHD_Result answer_oom(struct request *req)
{
    if (!oom_response)
        return MHD_NO;
    return MHD_queue_response(req->conn, 500, oom_response);
}

static enum MHD_Result answer_error(struct request *req, int err, const char *message)
{
    if (err == T_ERR_METHOD)
        http_add_header(req, "Allow", allowed_methods(req));
    if (err == T_ERR_UNAUTHORIZED)
        http_add_header(req, "WWW-Authenticate", "Bearer realm=\"tandem\"");
    if (http_reply_error(req, err, message) != T_OK || !req->response)
        return answer_oom(req);
    return queue(req);
}

static enum MHD_Result answer_preflight(struct request *req)
{
    if (http_reply_data(req, 204, NULL, "", 0) != T_OK)
        return MHD_NO;
    const char *allow = allowed_methods(req);
    http_add_header(req, "Allow", allow);
    http_add_header(req, "Access-Control-Allow-Methods", allow);
    http_add_header(req, "Access-Control-Allow-Headers", "Authorization, Content-Type, Last-Event-ID, X-Request-Id");
    http_add_header(req, "Access-Control-Allow-Private-Network", "true");
    http_add_header(req, "Access-Control-Max-Age", "600");
    return queue(req);
}

static enum MHD_Result dispatch(struct request *req)
{
    req->suspended = 0;
    int err = req->route->handler(req);
    if (!err && req->suspended && !req->response)
        return MHD_YES; /* parked: answered when resumed */
    if (err && !req->response)
        return answer_error(req, err, NULL);
    return queue(req);
}

/* ---- MHD callbacks ---- */

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)version;
    struct request *req = *req_cls;
    if (!req) {
        req = calloc(1, sizeof *req);
        if (!req) /* no request state at all: the prepared answer, then MHD closes */
            return oom_response ? MHD_queue_response(conn, 500, oom_response) : MHD_NO;
        *req_cls = req;
        atomic_fetch_add(&inflight, 1);
        req->conn = conn;
        req->app = cls;
        req->start_ns = clock_mono_ns();
        req->path = url;
        req->method_name = method;
        req->method = parse_method(method);
        arena_init(&req->arena);
        buf_init(&req->body, (size_t)req->app->cfg->max_body);
        uint64_t v = mix64(request_seed + atomic_fetch_add(&request_counter, 1));
        static const char hex[] = "0123456789abcdef";
        for (int i = 0; i < REQUEST_ID_LEN; i++)
            req->id[i] = hex[(v >> (4 * i)) & 0xF];
        req->id[REQUEST_ID_LEN] = '\0';
        const char *message;
        req->calls = 1;
        int err = gate(req, &message);
        if (!err && atomic_load(&stopping)) {
            /* a request that arrives while the server drains: elsewhere, please */
            err = T_ERR_SHUTTING_DOWN;
            message = NULL;
            http_add_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
        }
        if (err) {
            req->body_error = err;
            req->reject_message = message;
            /* a body is coming that we will not read: answer now and close, since what follows on
             * the connection is that body (or, with bad framing, bytes of unknown meaning) */
            if (http_header(req, MHD_HTTP_HEADER_CONTENT_LENGTH) ||
                http_header(req, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
                http_add_header(req, MHD_HTTP_HEADER_CONNECTION, "close");
                return answer_error(req, err, message);
            }
        }
        return MHD_YES;
    }
    req->calls++;
    if (*upload_data_size) {
        if (req->body_error && req->body_error != T_ERR_TOO_LARGE)
            return answer_error(req, req->body_error, req->reject_message);
        if (!req->body_error) {
            int err = buf_append(&req->body, upload_data, *upload_data_size);
            if (err)
                req->body_error = err; /* keep draining; answer on the final call */
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->response) /* already queued */
        return MHD_YES;
    if (req->body_error)
        return answer_error(req, req->body_error, req->reject_message);
    if (req->method == HTTP_OPTIONS)
        return answer_preflight(req);
    return dispatch(req);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    struct request *req = *req_cls;
    if (!req)
        return;
    uint64_t dur = clock_mono_ns() - req->start_ns;
    int route_index = req->route ? (int)(req->route - api_routes) : -1;
    unsigned status = req->status ? req->status : 499; /* no answer: client went away */
    metrics_observe_request(route_index, req->method_name, status, dur);
    if (log_enabled(LOG_INFO)) {
        char path[ACCESS_LOG_PATH_MAX + 1];
        size_t pl = strlen(req->path);
        if (pl > ACCESS_LOG_PATH_MAX)
            pl = ACCESS_LOG_PATH_MAX;
        for (size_t i = 0; i < pl; i++) /* control bytes and quotes out: a log line is one line */
            path[i] = ((unsigned char)req->path[i] < 0x20 || req->path[i] == '\'') ? '?' : req->path[i];
        path[pl] = '\0';
        log_event(LOG_INFO, "request", "req_id=%s method=%s path='%s' route=%s status=%u dur_ms=%.3f%s", req->id,
                  req->method_name, path, req->route ? req->route->name : "-", status, (double)dur / 1e6,
                  toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " aborted=1");
    }
    if (req->ext_free)
        req->ext_free(req->ext);
    if (req->response)
        MHD_destroy_response(req->response);
    if (!req->streaming)
        atomic_fetch_sub(&inflight, 1);
    buf_cleanup(&req->body);
    arena_cleanup(&req->arena);
    free(req);
    *req_cls = NULL;
}

/* A client going away mid-response (an event stream closed by its tab) is routine. MHD 0.9.75 ends
 * such messages with the reason ("Failed to send the footers for the request for `URL'. Error: The
 * socket is no longer available for sending"); matching the end keeps a URL from demoting a real
 * error. */
static int is_peer_gone(const char *msg, size_t n)
{
    static const char *const reasons[] = {
        "closed by remote peer",         "reset by remote",
        "Connection reset by peer",      "The socket is no longer available for sending",
        "The socket is not connected",   "Socket has been disconnected when reading request",
        "closed by remote side with incomplete request",
    };
    while (n && (msg[n - 1] == '.' || msg[n - 1] == ' '))
        n--;
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        size_t rl = strlen(reasons[i]);
        if (n >= rl && memcmp(msg + n - rl, reasons[i], rl) == 0)
            return 1;
    }
    return 0;
}

/* Makes libmicrohttpd's text fit a log value in quotes: no trailing line break, no quote or
 * control character. Returns the length. */
static size_t quotable(char *msg)
{
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (msg[i] == '\'' || (unsigned char)msg[i] < 0x20)
            msg[i] = ' ';
    return n;
}

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = quotable(msg);
    if (is_peer_gone(msg, n))
        log_debug("http_server", "detail='%s'", msg);
    else
        log_warn("http_server", "detail='%s'", msg);
}

/* libmicrohttpd aborts on an internal inconsistency; say where first, in our log. */
static void on_mhd_panic(void *cls, const char *file, unsigned int line, const char *reason)
{
    (void)cls;
    char msg[512];
    snprintf(msg, sizeof msg, "%s", reason ? reason : "");
    quotable(msg);
    log_error("http_server_panic", "file=%s line=%u reason='%s'", file ? file : "?", line, msg);
    abort();
}

struct http_server *http_start(struct app *app)
{
    const struct config *cfg = app->cfg;
    struct http_server *srv = calloc(1, sizeof *srv);
    if (!srv)
        return NULL;
    srv->app = app;
    if (getrandom(&request_seed, sizeof request_seed, 0) != sizeof request_seed)
        request_seed = clock_mono_ns();
    const char *names[METRICS_MAX_ROUTES];
    unsigned n = 0;
    for (const struct route *r = api_routes; r->pattern && n < METRICS_MAX_ROUTES - 1; r++)
        names[n++] = r->name;
    metrics_init(names, n);
    sse_init();
    if (!oom_response) {
        static const char body[] = "{\"error\":{\"code\":\"out_of_memory\",\"message\":\"the server ran out of "
                                   "memory; retry later\"}}";
        oom_response = MHD_create_response_from_buffer(sizeof body - 1, (void *)(uintptr_t)body, MHD_RESPMEM_PERSISTENT);
        if (oom_response) {
            MHD_add_response_header(oom_response, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
            MHD_add_response_header(oom_response, "Cache-Control", "no-store");
            MHD_add_response_header(oom_response, "Retry-After", "1");
        }
    }

    MHD_set_panic_func(on_mhd_panic, NULL);
    atomic_store(&stopping, 0);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    if (cfg->listen_addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* the logger must be the first option, or MHD logs its own complaint about that to stderr.
     * STRICT_FOR_CLIENT 0: a request without Host must reach our gate (421 with the envelope);
     * at 1, MHD 0.9.75 answers it itself with a malformed HTML 400. */
    srv->daemon = MHD_start_daemon(
        flags, (uint16_t)cfg->port, NULL, NULL, on_request, app, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, app,
        MHD_OPTION_SOCK_ADDR,
        (const struct sockaddr *)&cfg->listen_addr, MHD_OPTION_THREAD_POOL_SIZE, (unsigned)cfg->threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONNECTION_MEMORY_LIMIT,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, app, MHD_OPTION_STRICT_FOR_CLIENT, (int)0, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (!srv->daemon) {
        log_error("listen_failed", "listen=%s hint='is the port in use? set TANDEM_LISTEN'", cfg->listen);
        free(srv);
        return NULL;
    }
    log_info("listening", "listen=%s threads=%ld", cfg->listen, cfg->threads);
    return srv;
}

void http_stop(struct http_server *srv, unsigned grace_ms, void (*before_stop)(void))
{
    if (!srv)
        return;
    /* New requests get 503 shutting_down with the connection closed. Not MHD_quiesce_daemon:
     * in libmicrohttpd 0.9.75 with a thread pool and epoll it races the workers that take the
     * listening socket out of their epoll sets themselves, and aborts the process ("Failed to
     * remove listen FD from epoll set", seen in make test). */
    atomic_store(&stopping, 1);
    /* streams end at once (clients reconnect elsewhere with Last-Event-ID) */
    sse_shutdown();
    uint64_t deadline = clock_mono_ns() + (uint64_t)grace_ms * 1000000u;
    while (http_inflight() > 0 && clock_mono_ns() < deadline) {
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    if (before_stop) {
        before_stop();
        uint64_t until = clock_mono_ns() + 500u * 1000000u; /* parked requests answer now */
        while (http_inflight() > 0 && clock_mono_ns() < until) {
            struct timespec ts = {0, 5 * 1000000};
            nanosleep(&ts, NULL);
        }
    }
    if (http_inflight())
        log_warn("shutdown_grace_expired", "inflight=%u", http_inflight());
    unsigned streams = sse_wait_closed(1000);
    if (streams)
        log_warn("shutdown_streams_open", "streams=%u", streams);
    MHD_stop_daemon(srv->daemon);
    free(srv);
}
