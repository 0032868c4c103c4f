/* Structured logging: one line per event, JSON or logfmt-like text, level-filtered before formatting. */
#include "tandem/log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static enum log_level min_level = LOG_INFO;
static int json_format = 1;

void log_setup(enum log_level level, int json)
{
    min_level = level;
    json_format = json;
}

int log_enabled(enum log_level level) { return level >= min_level; }

int log_parse_level(const char *s, enum log_level *out)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    if (strcasecmp(s, "warning") == 0) {
        *out = LOG_WARN;
        return 0;
    }
    return -1;
}

static const char *level_name(enum log_level l)
{
    switch (l) {
    case LOG_DEBUG: return "debug";
    case LOG_INFO: return "info";
    case LOG_WARN: return "warn";
    default: return "error";
    }
}

static void put_json_string(char **p, char *end, const char *s, size_t n)
{
    for (size_t i = 0; i < n && *p < end - 8; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *(*p)++ = '\\';
            *(*p)++ = (char)c;
        } else if (c < 0x20) {
            *p += snprintf(*p, (size_t)(end - *p), "\\u%04x", c);
        } else {
            *(*p)++ = (char)c;
        }
    }
}

static int looks_numeric(const char *s, size_t n)
{
    if (n == 0 || n > 20)
        return 0;
    size_t i = s[0] == '-' ? 1 : 0;
    int dot = 0, digits = 0;
    for (; i < n; i++) {
        if (s[i] == '.' && !dot)
            dot = 1;
        else if (isdigit((unsigned char)s[i]))
            digits++;
        else
            return 0;
    }
    return digits > 0 && !(n > 1 && s[0] == '0' && s[1] != '.');
}

void log_event(enum log_level level, const char *msg, const char *fields, ...)
{
    char kv[2048] = "";
    if (fields && *fields) {
        va_list ap;
        va_start(ap, fields);
        vsnprintf(kv, sizeof kv, fields, ap);
        va_end(ap);
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[40];
    size_t wl = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + wl, sizeof when - wl, ".%03ldZ", ts.tv_nsec / 1000000);

    char line[4096];
    char *p = line, *end = line + sizeof line;
    if (!json_format) {
        p += snprintf(p, (size_t)(end - p), "%s %-5s %s %s\n", when, level_name(level), msg, kv);
        if (p >= end)
            p = end - 1, p[-1] = '\n';
        fwrite(line, 1, (size_t)(p - line), stderr);
        return;
    }
    p += snprintf(p, (size_t)(end - p), "{\"ts\":\"%s\",\"level\":\"%s\",\"msg\":\"", when, level_name(level));
    put_json_string(&p, end, msg, strlen(msg));
    *p++ = '"';
    /* kv is "k=v k=v"; a value may be quoted with '' to contain spaces. */
    const char *s = kv;
    while (*s && p < end - 64) {
        while (*s == ' ')
            s++;
        const char *eq = strchr(s, '=');
        if (!eq)
            break;
        const char *v = eq + 1, *ve;
        if (*v == '\'') {
            v++;
            ve = strchr(v, '\'');
            if (!ve)
                ve = v + strlen(v);
        } else {
            ve = strchr(v, ' ');
            if (!ve)
                ve = v + strlen(v);
        }
        *p++ = ',';
        *p++ = '"';
        put_json_string(&p, end, s, (size_t)(eq - s));
        *p++ = '"';
        *p++ = ':';
        if (looks_numeric(v, (size_t)(ve - v))) {
            put_json_string(&p, end, v, (size_t)(ve - v));
        } else {
            *p++ = '"';
            put_json_string(&p, end, v, (size_t)(ve - v));
            *p++ = '"';
        }
        s = *ve == '\'' ? ve + 1 : ve;
    }
    *p++ = '}';
    *p++ = '\n';
    fwrite(line, 1, (size_t)(p - line), stderr);
}
