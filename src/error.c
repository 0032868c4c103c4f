/* Error codes: their text, their envelope code and their HTTP status, in one table. */
#include "tandem/error.h"

static const struct {
    const char *code;
    const char *text;
    unsigned status;
} errors[T_ERR__COUNT] = {
    [T_OK] = {"ok", "no error", 200},
    [T_ERR_NOMEM] = {"out_of_memory", "the server ran out of memory; retry later", 500},
    [T_ERR_INTERNAL] = {"internal_error", "unexpected internal error; see the server log for the request id", 500},
    [T_ERR_BAD_REQUEST] = {"bad_request", "the request is malformed", 400},
    [T_ERR_BAD_ID] = {"invalid_id", "ids are 1-128 characters of [A-Za-z0-9._-]", 400},
    [T_ERR_BAD_JSON] = {"invalid_json", "the body is not the JSON this endpoint expects", 400},
    [T_ERR_UNAUTHORIZED] = {"unauthorized", "send 'Authorization: Bearer <token>' with the token from TANDEM_TOKEN or the token file", 401},
    [T_ERR_FORBIDDEN_ORIGIN] = {"origin_not_allowed", "this Origin is not in TANDEM_ALLOWED_ORIGINS", 403},
    [T_ERR_NOT_FOUND] = {"not_found", "no such endpoint; see the README for the API", 404},
    [T_ERR_CONV_NOT_FOUND] = {"conversation_not_found", "no messages stream exists for this conversation id", 404},
    [T_ERR_METHOD] = {"method_not_allowed", "this method is not allowed here; see the Allow header", 405},
    [T_ERR_CONFLICT] = {"conflict", "the request conflicts with the current state", 409},
    [T_ERR_TOO_LARGE] = {"payload_too_large", "the request body is larger than allowed", 413},
    [T_ERR_MEDIA_TYPE] = {"unsupported_media_type", "send the body as application/json", 415},
    [T_ERR_MISDIRECTED] = {"host_not_allowed", "the Host header is not an allowed host:port of this server (TANDEM_ALLOWED_HOSTS)", 421},
    [T_ERR_RATE_LIMITED] = {"rate_limited", "too many requests; retry later", 429},
    [T_ERR_UNAVAILABLE] = {"redis_unavailable", "Redis is not reachable; tandem reconnects by itself, retry shortly", 503},
    [T_ERR_NO_FOCUS] = {"no_focus", "no conversation is focused; PUT /v1/focus first", 404},
    [T_ERR_SHUTTING_DOWN] = {"shutting_down", "the server is stopping; retry on another instance", 503},
    [T_ERR_IO] = {"io_error", "a file or system operation failed", 500},
    [T_ERR_CONFIG] = {"bad_config", "invalid configuration", 500},
    [T_ERR_NOT_FOUND_ITEM] = {"not_found", "the requested item does not exist", 404},
    [T_ERR_NOT_IMPLEMENTED] = {"not_implemented", "the server does not implement this feature of the request", 501},
};

static int valid(int err) { return err >= 0 && err < T_ERR__COUNT && errors[err].code; }

const char *tandem_strerror(int err) { return valid(err) ? errors[err].text : "unknown error"; }
const char *tandem_err_code(int err) { return valid(err) ? errors[err].code : "internal_error"; }
unsigned tandem_http_status(int err) { return valid(err) ? errors[err].status : 500; }
