/* One error enum for the whole program, with its HTTP mapping (like curl's CURLcode). */
#ifndef TANDEM_ERROR_H
#define TANDEM_ERROR_H

/* 0 = OK. Append only: values are stable. */
enum tandem_err {
    T_OK = 0,
    T_ERR_NOMEM,            /* 500 out of memory */
    T_ERR_INTERNAL,         /* 500 a bug or an unexpected library failure */
    T_ERR_BAD_REQUEST,      /* 400 malformed input (generic) */
    T_ERR_BAD_ID,           /* 400 an id that is not 1-128 of [A-Za-z0-9._-] */
    T_ERR_BAD_JSON,         /* 400 body is not valid JSON / wrong shape */
    T_ERR_UNAUTHORIZED,     /* 401 missing or wrong token */
    T_ERR_FORBIDDEN_ORIGIN, /* 403 Origin not allowed */
    T_ERR_NOT_FOUND,        /* 404 no such route */
    T_ERR_CONV_NOT_FOUND,   /* 404 conversation stream does not exist */
    T_ERR_METHOD,           /* 405 method not allowed on this route */
    T_ERR_CONFLICT,         /* 409 */
    T_ERR_TOO_LARGE,        /* 413 body (or anything client-sized) over its cap */
    T_ERR_MEDIA_TYPE,       /* 415 wrong Content-Type */
    T_ERR_MISDIRECTED,      /* 421 Host header not ours */
    T_ERR_RATE_LIMITED,     /* 429 */
    T_ERR_UNAVAILABLE,      /* 503 Redis (or another dependency) is down */
    T_ERR_NO_FOCUS,         /* 404 no conversation is focused */
    T_ERR_SHUTTING_DOWN,    /* 503 the server is stopping */
    T_ERR_IO,               /* 500 file or system call failed */
    T_ERR_CONFIG,           /* bad configuration value (start-up only) */
    T_ERR_NOT_FOUND_ITEM,   /* 404 a named item (suggestion, entry) does not exist */
    T_ERR_NOT_IMPLEMENTED,  /* 501 a protocol feature we do not support (a transfer coding) */
    T_ERR__COUNT
};

/* Human sentence for err; static storage. */
const char *tandem_strerror(int err);
/* snake_case code for the error envelope; static storage. */
const char *tandem_err_code(int err);
/* HTTP status for err (500 for unknown values). */
unsigned tandem_http_status(int err);
#endif
