/* Configuration: one table (name, env var, type, bounds, default), parsed from env then flags,
 * validated once; read-only afterwards. */
#include "tandem/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "tandem/llm.h" /* the LLM_DEFAULT_* values are the defaults here */

enum opt_type { OPT_STR, OPT_LONG };

#define OPT_SECRET 0x1

struct opt {
    const char *env;     /* TANDEM_X; the flag is --x (lower case, '_' -> '-') */
    enum opt_type type;
    size_t offset;
    const char *def;     /* default as text; NULL = unset */
    long min, max;       /* for OPT_LONG */
    unsigned flags;
    const char *help;    /* the accepted form, used in errors and --help */
};

#define XSTR(x) STR(x)
#define STR(x) #x
#define S(field) OPT_STR, offsetof(struct config, field)
#define L(field) OPT_LONG, offsetof(struct config, field)

static const struct opt opts[] = {
    {"TANDEM_LISTEN", S(listen), "127.0.0.1:8787", 0, 0, 0, "HOST:PORT, e.g. 127.0.0.1:8787 or [::1]:8787"},
    {"TANDEM_REDIS_URL", S(redis_url), "redis://127.0.0.1:6379/0", 0, 0, 0,
     "redis://[user:password@]host:port[/db], unix:///path/to/socket[?db=N] or "
     "redis-sentinel://host:port[,host:port]/master-name"},
    {"TANDEM_REDIS_PREFIX", S(redis_prefix), "tandem:", 0, 0, 0, "1-64 characters of [A-Za-z0-9:._-]"},
    {"TANDEM_TOKEN", S(token), NULL, 0, 0, OPT_SECRET, "16-256 printable ASCII characters without spaces"},
    {"TANDEM_TOKEN_FILE", S(token_file), NULL, 0, 0, 0, "path to a file holding the token"},
    {"TANDEM_ALLOWED_HOSTS", S(allowed_hosts), "", 0, 0, 0, "comma-separated host[:port] list"},
    {"TANDEM_ALLOWED_ORIGINS", S(allowed_origins), "", 0, 0, 0,
     "comma-separated origins, e.g. chrome-extension://abcdef,https://desk.example.com"},
    {"TANDEM_KB", S(kb), NULL, 0, 0, 0, "path to a .jsonl file or a directory of *.jsonl files"},
    {"TANDEM_ALERT_RULES", S(alert_rules), NULL, 0, 0, 0,
     "path to a JSON file of alert rules merged over the built-in ones (shape of data/alert_rules.json)"},
    {"TANDEM_LLM_URL", S(llm_url), NULL, 0, 0, 0,
     "base URL ending in /v1: https://..., or http:// for loopback and in-cluster model servers"},
    {"TANDEM_LLM_MODEL", S(llm_model), NULL, 0, 0, 0, "model name as the server knows it"},
    {"TANDEM_LLM_API_KEY", S(llm_api_key), NULL, 0, 0, OPT_SECRET, "the API key"},
    {"TANDEM_LLM_API_KEY_FILE", S(llm_api_key_file), NULL, 0, 0, 0, "path to a file holding the API key"},
    {"TANDEM_LLM_TIMEOUT_MS", L(llm_timeout_ms), XSTR(LLM_DEFAULT_TIMEOUT_MS), 100, 120000, 0,
     "milliseconds, 100-120000"},
    {"TANDEM_LLM_SYSTEM_PROMPT_FILE", S(llm_system_prompt_file), NULL, 0, 0, 0,
     "path to a UTF-8 text file replacing the built-in system prompt (data/llm_system_prompt.txt)"},
    {"TANDEM_LLM_STREAM", L(llm_stream), "1", 0, 1, 0, "1 (stream the answer) or 0"},
    {"TANDEM_LLM_JSON_MODE", L(llm_json_mode), "1", 0, 1, 0, "1 (ask for a JSON object response) or 0"},
    {"TANDEM_LLM_MAX_TOKENS", L(llm_max_tokens), XSTR(LLM_DEFAULT_MAX_TOKENS), 16, 32768, 0, "16-32768"},
    {"TANDEM_LLM_TEMPERATURE", S(llm_temperature_text), XSTR(LLM_DEFAULT_TEMPERATURE), 0, 0, 0, "a number 0-2"},
    {"TANDEM_LLM_FIRST_BYTE_MS", L(llm_first_byte_ms), "0", 0, 120000, 0,
     "milliseconds to the first byte per attempt, 50-120000, or 0: 2500 when streaming (at most the timeout), "
     "else the timeout"},
    {"TANDEM_LLM_STALL_MS", L(llm_stall_ms), XSTR(LLM_DEFAULT_STALL_MS), 50, 120000, 0,
     "milliseconds without a byte mid-answer before giving up, 50-120000"},
    {"TANDEM_LLM_BREAKER_FAILURES", L(llm_breaker_failures), XSTR(LLM_DEFAULT_BREAKER_FAILURES), 1, 1000, 0,
     "consecutive failed requests that open the circuit breaker, 1-1000"},
    {"TANDEM_LLM_BREAKER_COOLDOWN_MS", L(llm_breaker_cooldown_ms), XSTR(LLM_DEFAULT_BREAKER_COOLDOWN_MS), 100,
     3600000, 0, "milliseconds before the open breaker lets one probe through, 100-3600000"},
    {"TANDEM_LLM_PROXY", S(llm_proxy), NULL, 0, 0, 0, "http://, https:// or socks5h://[user:password@]host:port"},
    {"TANDEM_LLM_CA_FILE", S(llm_ca_file), NULL, 0, 0, 0, "path to a PEM file of CA certificates for the LLM server"},
    {"TANDEM_QUALITY_PER_AGENT", L(quality_per_agent), "0", 0, 1, 0, "1 keeps quality figures per agent too, or 0"},
    {"TANDEM_LOG_LEVEL", S(log_level_name), "info", 0, 0, 0, "debug, info, warn or error"},
    {"TANDEM_LOG_FORMAT", S(log_format), "json", 0, 0, 0, "json or text"},
    {"TANDEM_MAX_BODY", L(max_body), "1048576", 1024, 67108864, 0, "bytes, 1024-67108864"},
    {"TANDEM_MAX_TRANSCRIPTS_BODY", L(max_transcripts_body), "67108864", 1024, 1073741824, 0,
     "bytes, 1024-1073741824"},
    {"TANDEM_THREADS", L(threads), "0", 0, 256, 0, "worker threads, 1-256 (0: one per CPU, at least 2)"},
    {"TANDEM_MAX_CONNECTIONS", L(max_connections), "2048", 16, 65536, 0, "16-65536"},
    {"TANDEM_CONTEXT_MESSAGES", L(context_messages), "50", 1, 1000, 0, "messages per context, 1-1000"},
    {"TANDEM_HISTORY_ENTRIES", L(history_entries), "20", 0, 1000, 0, "past contacts per context, 0-1000"},
    {"TANDEM_REDIS_TIMEOUT_MS", L(redis_timeout_ms), "1000", 10, 60000, 0, "milliseconds, 10-60000"},
    {"TANDEM_IDLE_TIMEOUT_S", L(idle_timeout_s), "60", 1, 3600, 0, "seconds an idle connection is kept, 1-3600"},
};
#define N_OPTS (sizeof opts / sizeof opts[0])

static char **str_field(struct config *c, const struct opt *o) { return (char **)((char *)c + o->offset); }
static long *long_field(struct config *c, const struct opt *o) { return (long *)((char *)c + o->offset); }

static void flag_name(const struct opt *o, char *out, size_t n)
{
    const char *e = o->env + strlen("TANDEM_");
    size_t i = 0;
    for (; e[i] && i + 1 < n; i++)
        out[i] = e[i] == '_' ? '-' : (char)tolower((unsigned char)e[i]);
    out[i] = '\0';
}

static int set_value(struct config *c, const struct opt *o, const char *v, FILE *err)
{
    if (o->type == OPT_STR) {
        char **f = str_field(c, o);
        free(*f);
        *f = strdup(v);
        return *f ? 0 : -1;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || !isdigit((unsigned char)v[0]) || x < o->min || x > o->max) {
        fprintf(err, "tandemd: %s=%s is invalid: expected %s\n", o->env, v, o->help);
        return -1;
    }
    *long_field(c, o) = x;
    return 0;
}

void config_cleanup(struct config *c)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].type == OPT_STR) {
            char **f = str_field(c, &opts[i]);
            free(*f);
            *f = NULL;
        }
    free(c->redis.user);
    free(c->redis.password);
    for (size_t i = 0; i < c->n_hosts; i++)
        free(c->hosts[i]);
    free(c->hosts);
    for (size_t i = 0; i < c->n_origins; i++)
        free(c->origins[i]);
    free(c->origins);
    memset(c, 0, sizeof(*c));
}

/* ---- parsing helpers ---- */

static int parse_port(const char *s, size_t n, unsigned *port)
{
    if (n == 0 || n > 5)
        return -1;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v == 0 || v > 65535)
        return -1;
    *port = v;
    return 0;
}

/* "host:port" or "[v6]:port" into host (without brackets) and port. */
static int split_host_port(const char *s, char *host, size_t hostsz, unsigned *port, int port_required)
{
    const char *colon;
    size_t hl;
    const char *hs = s;
    if (*s == '[') {
        const char *rb = strchr(s, ']');
        if (!rb)
            return -1;
        hs = s + 1;
        hl = (size_t)(rb - hs);
        colon = rb[1] == ':' ? rb + 1 : NULL;
        if (rb[1] && !colon)
            return -1;
    } else {
        colon = strrchr(s, ':');
        if (colon && strchr(s, ':') != colon)
            return -1; /* bare IPv6 needs brackets */
        hl = colon ? (size_t)(colon - s) : strlen(s);
    }
    if (hl == 0 || hl >= hostsz)
        return -1;
    memcpy(host, hs, hl);
    host[hl] = '\0';
    if (!colon)
        return port_required ? -1 : 0;
    return parse_port(colon + 1, strlen(colon + 1), port);
}

static int parse_listen(struct config *c)
{
    char host[256];
    unsigned port = 0;
    if (split_host_port(c->listen, host, sizeof host, &port, 1))
        return -1;
    memset(&c->listen_addr, 0, sizeof c->listen_addr);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&c->listen_addr;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&c->listen_addr;
    if (strcmp(host, "localhost") == 0)
        strcpy(host, "127.0.0.1");
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        c->listen_addr_len = sizeof *a4;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        c->listen_addr_len = sizeof *a6;
    } else {
        return -1; /* an address, not a name: no DNS at start-up */
    }
    c->port = port;
    return 0;
}

static int pct_decode(const char *s, size_t n, char **out)
{
    char *d = malloc(n + 1);
    if (!d)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%' && i + 2 < n && isxdigit((unsigned char)s[i + 1]) && isxdigit((unsigned char)s[i + 2])) {
            char hex[3] = {s[i + 1], s[i + 2], 0};
            d[o++] = (char)strtol(hex, NULL, 16);
            i += 2;
        } else {
            d[o++] = s[i];
        }
    }
    d[o] = '\0';
    *out = d;
    return 0;
}

static int parse_db(const char *s, int *db)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 65535)
        return -1;
    *db = (int)v;
    return 0;
}

int config_parse_redis_url(const char *url, struct redis_target *t)
{
    memset(t, 0, sizeof *t);
    const char *rest;
    if (strncmp(url, "redis://", 8) == 0) {
        t->kind = REDIS_TCP;
        rest = url + 8;
    } else if (strncmp(url, "unix://", 7) == 0) {
        t->kind = REDIS_UNIX;
        rest = url + 7;
    } else if (strncmp(url, "redis-sentinel://", 17) == 0) {
        t->kind = REDIS_SENTINEL;
        rest = url + 17;
    } else {
        return -1;
    }
    /* userinfo: everything before the last '@' that precedes the path */
    const char *slash = strchr(rest, '/');
    const char *at = NULL;
    for (const char *p = rest; *p && (!slash || p < slash || t->kind == REDIS_UNIX); p++)
        if (*p == '@')
            at = p;
    if (t->kind == REDIS_UNIX && at && slash && at > slash)
        at = NULL; /* '@' inside the socket path */
    if (at) {
        const char *colon = memchr(rest, ':', (size_t)(at - rest));
        if (colon) {
            if (colon > rest && pct_decode(rest, (size_t)(colon - rest), &t->user))
                return -1;
            if (pct_decode(colon + 1, (size_t)(at - colon - 1), &t->password))
                return -1;
        } else if (at > rest && pct_decode(rest, (size_t)(at - rest), &t->password)) {
            return -1; /* redis://secret@host: password only, as redis-cli does */
        }
        rest = at + 1;
    }
    if (t->kind == REDIS_UNIX) {
        const char *q = strchr(rest, '?');
        size_t pl = q ? (size_t)(q - rest) : strlen(rest);
        if (pl == 0 || rest[0] != '/' || pl >= sizeof t->path)
            return -1;
        memcpy(t->path, rest, pl);
        t->path[pl] = '\0';
        if (q) {
            if (strncmp(q + 1, "db=", 3) != 0 || parse_db(q + 4, &t->db))
                return -1;
        }
        return 0;
    }
    slash = strchr(rest, '/');
    size_t hl = slash ? (size_t)(slash - rest) : strlen(rest);
    char hosts[1024];
    if (hl == 0 || hl >= sizeof hosts)
        return -1;
    memcpy(hosts, rest, hl);
    hosts[hl] = '\0';
    if (t->kind == REDIS_TCP) {
        t->tcp.port = 6379;
        if (split_host_port(hosts, t->tcp.host, sizeof t->tcp.host, &t->tcp.port, 0))
            return -1;
        if (slash && slash[1] && parse_db(slash + 1, &t->db))
            return -1;
        return 0;
    }
    /* sentinel: host:port[,host:port]/master-name[/db] */
    char *save = NULL;
    for (char *h = strtok_r(hosts, ",", &save); h; h = strtok_r(NULL, ",", &save)) {
        if (t->n_sentinels == REDIS_MAX_SENTINELS)
            return -1;
        struct redis_endpoint *e = &t->sentinels[t->n_sentinels++];
        e->port = 26379;
        if (split_host_port(h, e->host, sizeof e->host, &e->port, 0))
            return -1;
    }
    if (!t->n_sentinels || !slash || !slash[1])
        return -1;
    const char *name = slash + 1;
    const char *dbs = strchr(name, '/');
    size_t nl = dbs ? (size_t)(dbs - name) : strlen(name);
    if (nl == 0 || nl >= sizeof t->master_name)
        return -1;
    memcpy(t->master_name, name, nl);
    t->master_name[nl] = '\0';
    if (dbs && dbs[1] && parse_db(dbs + 1, &t->db))
        return -1;
    return 0;
}

static int list_push(char ***list, size_t *n, const char *s, size_t len)
{
    char **l = realloc(*list, (*n + 1) * sizeof *l);
    if (!l)
        return -1;
    *list = l;
    l[*n] = strndup(s, len);
    if (!l[*n])
        return -1;
    (*n)++;
    return 0;
}

static int add_host(struct config *c, const char *host, unsigned port)
{
    char tmp[300];
    int is_v6 = strchr(host, ':') != NULL;
    int n = snprintf(tmp, sizeof tmp, is_v6 ? "[%s]:%u" : "%s:%u", host, port);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -1;
    for (char *p = tmp; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    if (list_push(&c->hosts, &c->n_hosts, tmp, (size_t)n))
        return -1;
    /* A client on port 80 may omit the port. */
    if (port == 80)
        return list_push(&c->hosts, &c->n_hosts, tmp, strlen(tmp) - 3);
    return 0;
}

static int parse_hosts(struct config *c, FILE *err)
{
    if (add_host(c, "localhost", c->port) || add_host(c, "127.0.0.1", c->port) || add_host(c, "::1", c->port))
        return -1;
    char *copy = strdup(c->allowed_hosts), *save = NULL;
    if (!copy)
        return -1;
    int rc = 0;
    for (char *h = strtok_r(copy, ", ", &save); h && !rc; h = strtok_r(NULL, ", ", &save)) {
        char host[256];
        unsigned port = c->port;
        if (split_host_port(h, host, sizeof host, &port, 0) || strpbrk(host, "/@?#*")) {
            fprintf(err, "tandemd: TANDEM_ALLOWED_HOSTS entry '%s' is invalid: expected %s\n", h,
                    "comma-separated host[:port] list");
            rc = -1;
        } else {
            rc = add_host(c, host, port);
        }
    }
    free(copy);
    return rc;
}

static int valid_origin(const char *o)
{
    const char *sep = strstr(o, "://");
    if (!sep || sep == o || !sep[3])
        return 0;
    for (const char *p = o; p < sep; p++)
        if (!isalnum((unsigned char)*p) && *p != '-' && *p != '+' && *p != '.')
            return 0;
    if (strchr(sep + 3, '/') || strcmp(o, "null") == 0)
        return 0; /* an origin has no path */
    return 1;
}

static int parse_origins(struct config *c, FILE *err)
{
    /* our own origin is any Host we answer to (loopback forms and TANDEM_ALLOWED_HOSTS): the
     * panel served at http://tandem.local:PORT/panel/ sends that as Origin. parse_hosts ran first. */
    char own[320];
    for (size_t i = 0; i < c->n_hosts; i++) {
        int n = snprintf(own, sizeof own, "http://%s", c->hosts[i]);
        if (n < 0 || (size_t)n >= sizeof own || list_push(&c->origins, &c->n_origins, own, (size_t)n))
            return -1;
    }
    char *copy = strdup(c->allowed_origins), *save = NULL;
    if (!copy)
        return -1;
    int rc = 0;
    for (char *o = strtok_r(copy, ", ", &save); o && !rc; o = strtok_r(NULL, ", ", &save)) {
        size_t n = strlen(o);
        while (n && o[n - 1] == '/')
            o[--n] = '\0';
        /* browsers send scheme and host in lower case */
        for (char *p = o; *p; p++)
            *p = (char)tolower((unsigned char)*p);
        if (!valid_origin(o)) {
            fprintf(err, "tandemd: TANDEM_ALLOWED_ORIGINS entry '%s' is invalid: expected %s\n", o,
                    "scheme://host[:port], e.g. chrome-extension://abcdef or https://desk.example.com");
            rc = -1;
        } else {
            rc = list_push(&c->origins, &c->n_origins, o, n);
        }
    }
    free(copy);
    return rc;
}

/* Plain http:// is only for loopback and in-cluster model servers: a single-label name, *.svc or
 * *.cluster.local, 127.0.0.0/8 or ::1. No userinfo (it would travel in clear). */
static int is_loopback_or_cluster_host(const char *url)
{
    const char *h = url + strlen("http://");
    size_t alen = strcspn(h, "/?#");
    if (alen == 0 || memchr(h, '@', alen))
        return 0;
    char host[256];
    if (h[0] == '[') {
        const char *rb = memchr(h, ']', alen);
        if (!rb || (size_t)(rb - h - 1) >= sizeof host)
            return 0;
        memcpy(host, h + 1, (size_t)(rb - h - 1));
        host[rb - h - 1] = '\0';
        struct in6_addr a6;
        return inet_pton(AF_INET6, host, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
    }
    size_t n = strcspn(h, ":/?#");
    if (n == 0 || n >= sizeof host)
        return 0;
    memcpy(host, h, n);
    host[n] = '\0';
    for (char *p = host; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    struct in_addr a4;
    if (inet_pton(AF_INET, host, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    if (strcmp(host, "localhost") == 0)
        return 1;
    if (strspn(host, "abcdefghijklmnopqrstuvwxyz0123456789-.") != n || host[0] == '.' || host[0] == '-')
        return 0;
    if (!strchr(host, '.'))
        return 1;
    return (n > 4 && strcmp(host + n - 4, ".svc") == 0) || (n > 14 && strcmp(host + n - 14, ".cluster.local") == 0);
}

/* url with the password of its userinfo replaced by ***, into out. */
static void mask_url(const char *url, char *out, size_t outsz)
{
    const char *scheme = strstr(url, "://");
    const char *auth = scheme ? scheme + 3 : url;
    size_t alen = strcspn(auth, "/?#");
    const char *at = NULL;
    for (const char *p = auth; p < auth + alen; p++)
        if (*p == '@')
            at = p;
    if (!at && strncmp(url, "unix://", 7) == 0)
        at = strrchr(url, '@');
    if (!at) {
        snprintf(out, outsz, "%s", url);
        return;
    }
    const char *colon = memchr(auth, ':', (size_t)(at - auth));
    if (colon)
        snprintf(out, outsz, "%.*s:***%s", (int)(colon - url), url, at);
    else
        snprintf(out, outsz, "%.*s***%s", (int)(auth - url), url, at);
}

static int fail(FILE *err, const char *env, const char *value, const char *form)
{
    fprintf(err, "tandemd: %s=%s is invalid: expected %s\n", env, value ? value : "", form);
    return -1;
}

static const struct opt *find_opt(const char *env)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (strcmp(opts[i].env, env) == 0)
            return &opts[i];
    return NULL;
}

static int validate(struct config *c, FILE *err)
{
    if (parse_listen(c))
        return fail(err, "TANDEM_LISTEN", c->listen, find_opt("TANDEM_LISTEN")->help);
    char masked[1024];
    if (config_parse_redis_url(c->redis_url, &c->redis)) {
        mask_url(c->redis_url, masked, sizeof masked);
        return fail(err, "TANDEM_REDIS_URL", masked, find_opt("TANDEM_REDIS_URL")->help);
    }
    size_t pl = strlen(c->redis_prefix);
    if (pl == 0 || pl > 64 || strspn(c->redis_prefix, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789:._-") != pl)
        return fail(err, "TANDEM_REDIS_PREFIX", c->redis_prefix, find_opt("TANDEM_REDIS_PREFIX")->help);
    if (c->token && c->token_file) {
        fprintf(err, "tandemd: TANDEM_TOKEN and TANDEM_TOKEN_FILE are both set: set only one\n");
        return -1;
    }
    if (c->token) {
        size_t tl = strlen(c->token);
        int ok = tl >= 16 && tl <= 256;
        for (size_t i = 0; ok && i < tl; i++)
            ok = c->token[i] > 0x20 && c->token[i] < 0x7f;
        if (!ok)
            return fail(err, "TANDEM_TOKEN", "***", find_opt("TANDEM_TOKEN")->help);
    }
    if (c->token_file && !*c->token_file)
        return fail(err, "TANDEM_TOKEN_FILE", c->token_file, "a path to a file holding the token");
    if (parse_hosts(c, err) || parse_origins(c, err))
        return -1;
    if (c->kb && access(c->kb, R_OK) != 0)
        return fail(err, "TANDEM_KB", c->kb, "a readable .jsonl file or directory");
    if (c->alert_rules && access(c->alert_rules, R_OK) != 0)
        return fail(err, "TANDEM_ALERT_RULES", c->alert_rules, "a readable JSON file of alert rules");
    if (c->llm_url) {
        size_t ul = strlen(c->llm_url);
        int https = strncmp(c->llm_url, "https://", 8) == 0, http = strncmp(c->llm_url, "http://", 7) == 0;
        if ((!https && !http) || ul < 4 || strcmp(c->llm_url + ul - 3, "/v1") != 0 ||
            (http && !is_loopback_or_cluster_host(c->llm_url))) {
            mask_url(c->llm_url, masked, sizeof masked);
            return fail(err, "TANDEM_LLM_URL", masked, find_opt("TANDEM_LLM_URL")->help);
        }
        if (!c->llm_model)
            return fail(err, "TANDEM_LLM_MODEL", "", "a model name (required when TANDEM_LLM_URL is set)");
    }
    if (c->llm_api_key && c->llm_api_key_file) {
        fprintf(err, "tandemd: TANDEM_LLM_API_KEY and TANDEM_LLM_API_KEY_FILE are both set: set only one\n");
        return -1;
    }
    if (c->llm_api_key_file && access(c->llm_api_key_file, R_OK) != 0)
        return fail(err, "TANDEM_LLM_API_KEY_FILE", c->llm_api_key_file, "a readable file holding the API key");
    if (c->llm_first_byte_ms > 0 && c->llm_first_byte_ms < 50) {
        char v[24];
        snprintf(v, sizeof v, "%ld", c->llm_first_byte_ms);
        return fail(err, "TANDEM_LLM_FIRST_BYTE_MS", v, find_opt("TANDEM_LLM_FIRST_BYTE_MS")->help);
    }
    char *end;
    errno = 0;
    c->llm_temperature = strtod(c->llm_temperature_text, &end);
    if (errno || end == c->llm_temperature_text || *end || !(c->llm_temperature >= 0 && c->llm_temperature <= 2))
        return fail(err, "TANDEM_LLM_TEMPERATURE", c->llm_temperature_text, find_opt("TANDEM_LLM_TEMPERATURE")->help);
    if (c->llm_proxy && strncmp(c->llm_proxy, "http://", 7) != 0 && strncmp(c->llm_proxy, "https://", 8) != 0 &&
        strncmp(c->llm_proxy, "socks5h://", 10) != 0) {
        mask_url(c->llm_proxy, masked, sizeof masked);
        return fail(err, "TANDEM_LLM_PROXY", masked, find_opt("TANDEM_LLM_PROXY")->help);
    }
    if (c->llm_ca_file && access(c->llm_ca_file, R_OK) != 0)
        return fail(err, "TANDEM_LLM_CA_FILE", c->llm_ca_file, "a readable PEM file of CA certificates");
    if (c->llm_system_prompt_file && access(c->llm_system_prompt_file, R_OK) != 0)
        return fail(err, "TANDEM_LLM_SYSTEM_PROMPT_FILE", c->llm_system_prompt_file, "a readable UTF-8 text file");
    if (log_parse_level(c->log_level_name, &c->log_level))
        return fail(err, "TANDEM_LOG_LEVEL", c->log_level_name, "debug, info, warn or error");
    if (strcmp(c->log_format, "json") == 0)
        c->log_json = 1;
    else if (strcmp(c->log_format, "text") == 0)
        c->log_json = 0;
    else
        return fail(err, "TANDEM_LOG_FORMAT", c->log_format, "json or text");
    if (c->threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        c->threads = n < 2 ? 2 : (n > 64 ? 64 : n);
    }
    return 0;
}

int config_load(struct config *c, int argc, char **argv, char **envp, char *action, FILE *err)
{
    memset(c, 0, sizeof *c);
    *action = 0;
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].def && set_value(c, &opts[i], opts[i].def, err))
            return -1;
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, "TANDEM_", 7) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        for (size_t i = 0; i < N_OPTS; i++) {
            size_t nl = strlen(opts[i].env);
            if ((size_t)(eq - *e) == nl && strncmp(*e, opts[i].env, nl) == 0) {
                /* An empty variable means "not set" for optional strings (docker-compose habit). */
                if (!eq[1] && opts[i].type == OPT_STR && !opts[i].def)
                    break;
                if (set_value(c, &opts[i], eq + 1, err))
                    return -1;
                break;
            }
        }
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            *action = 'h';
            return 0;
        }
        if (!strcmp(arg, "--version")) {
            *action = 'v';
            return 0;
        }
        if (!strcmp(arg, "--print-config")) {
            *action = 'p';
            continue;
        }
        if (strncmp(arg, "--", 2) != 0) {
            fprintf(err, "tandemd: unexpected argument '%s' (see --help)\n", arg);
            return -1;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const struct opt *o = NULL;
        char fn[64];
        for (size_t i = 0; i < N_OPTS && !o; i++) {
            flag_name(&opts[i], fn, sizeof fn);
            if (strlen(fn) == nl && strncmp(fn, name, nl) == 0)
                o = &opts[i];
        }
        if (!o) {
            fprintf(err, "tandemd: unknown option '%s' (see --help)\n", arg);
            return -1;
        }
        const char *val = eq ? eq + 1 : (a + 1 < argc ? argv[++a] : NULL);
        if (!val) {
            fprintf(err, "tandemd: option --%.*s needs a value: %s\n", (int)nl, name, o->help);
            return -1;
        }
        if (set_value(c, o, val, err))
            return -1;
    }
    return validate(c, err);
}

void config_print_help(FILE *out)
{
    fprintf(out, "usage: tandemd [--flag value ...] [--print-config] [--help] [--version]\n\n"
                 "Every setting is an environment variable and a flag (flags win):\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        char fn[64];
        flag_name(&opts[i], fn, sizeof fn);
        fprintf(out, "  --%-30s %-31s %s", fn, opts[i].env, opts[i].help);
        if (opts[i].def && *opts[i].def)
            fprintf(out, " (default %s)", opts[i].def);
        fputc('\n', out);
    }
}

void config_print(const struct config *c, FILE *out)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const struct opt *o = &opts[i];
        if (o->type == OPT_LONG) {
            fprintf(out, "%s=%ld\n", o->env, *long_field((struct config *)c, o));
            continue;
        }
        const char *v = *str_field((struct config *)c, o);
        if (!v) {
            fprintf(out, "%s=\n", o->env);
        } else if (o->flags & OPT_SECRET) {
            fprintf(out, "%s=***\n", o->env);
        } else if (strcmp(o->env, "TANDEM_REDIS_URL") == 0 || strcmp(o->env, "TANDEM_LLM_URL") == 0 ||
                   strcmp(o->env, "TANDEM_LLM_PROXY") == 0) {
            char masked[1024];
            mask_url(v, masked, sizeof masked);
            fprintf(out, "%s=%s\n", o->env, masked);
        } else {
            fprintf(out, "%s=%s\n", o->env, v);
        }
    }
}
