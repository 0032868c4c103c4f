/* Structured logs (JSON lines or text) on stderr. Never log message text, bodies or secrets. */
#ifndef TANDEM_LOG_H
#define TANDEM_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Set once at start-up, before threads start. */
void log_setup(enum log_level level, int json);
int log_enabled(enum log_level level);
/* Parse "debug|info|warn|error" into *out; returns 0 on success, -1 otherwise. */
int log_parse_level(const char *s, enum log_level *out);

/* One line per event: msg is a short fixed event name; fields is an optional printf format of
 * `key=value` pairs separated by spaces, e.g. "req_id=%s status=%u". Values are written as JSON
 * strings (or numbers when they look like numbers) in json mode. Thread-safe. */
void log_event(enum log_level level, const char *msg, const char *fields, ...)
    __attribute__((format(printf, 3, 4)));

#define LOG_AT(lvl, msg, ...)                                                                      \
    do {                                                                                           \
        if (log_enabled(lvl))                                                                      \
            log_event(lvl, msg, __VA_ARGS__);                                                      \
    } while (0)
#define log_debug(msg, ...) LOG_AT(LOG_DEBUG, msg, __VA_ARGS__)
#define log_info(msg, ...) LOG_AT(LOG_INFO, msg, __VA_ARGS__)
#define log_warn(msg, ...) LOG_AT(LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) LOG_AT(LOG_ERROR, msg, __VA_ARGS__)
#endif
