/* sse_latency: the load/latency client for what wrk cannot measure — XADD → SSE delivery, many
 * concurrent subscribers, and suggestions on a real cache miss — against a running tandemd.
 *
 * Modes (each prints one JSON object on stdout; progress and errors go to stderr):
 *   latency  one SSE subscriber on --conv; XADD --messages customer messages, one every
 *            --interval-us (or --sequential: the next only after the previous one's event, with
 *            --xdel deleting each message again so the conversation keeps its length); measures
 *            XADD → `suggestions` event carrying that message id, plus the server's own recompute
 *            time from /metrics (tandem_watch_recompute_seconds_total / _recomputes_total deltas).
 *   fanout   --subscribers SSE streams spread over --convs conversations (PREFIX-0 … PREFIX-(C-1));
 *            --rounds times one XADD per conversation (--interval-us apart), then with --burst one
 *            round with all XADDs at once (reported apart); checks every subscriber gets every event
 *            and reports delivery percentiles and the server's VmRSS (--pid) before and after.
 *   miss     one keep-alive HTTP connection: XADD a message to --conv, GET its suggestions (a
 *            guaranteed cache miss: the newest message is new), XDEL it; client latency and the
 *            answer's took_ms.
 *   hold     one SSE subscriber on --conv kept open until SIGTERM (keeps a conversation watched);
 *            prints "ready" once the first event arrived.
 *
 * Time is CLOCK_MONOTONIC taken just before the XADD is sent and when the event's bytes are read. The
 * client is single-threaded: epoll over non-blocking sockets for the streams, blocking hiredis for
 * XADD (a loopback round trip, ~0.1 ms, is part of every figure). */
#include <hiredis/hiredis.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define ID_MAX 64            /* Redis stream ids are at most 41 bytes */
#define HEADER_MAX 8192      /* response head of an event stream */
#define LINE_KEEP 128        /* bytes of an SSE line we look at (data lines are skipped) */
#define TEXTS_MAX 4096       /* distinct message texts read from --texts */
#define TEXT_MAX 2000
#define BODY_MAX (4u << 20)  /* a suggestions or metrics answer */
#define DEFAULT_TEXT "Hi, I was charged twice for my order and the refund has not arrived. Can you help?"

/* ---- options ---- */

static struct {
    const char *host;
    int port;
    const char *token;
    const char *redis_host;
    int redis_port;
    const char *prefix;
    const char *conv;
    const char *conv_prefix;
    int convs;
    int subscribers;
    int messages;
    long interval_us;
    int sequential;
    int xdel;
    int rounds;
    int burst;
    long pid;
    const char *texts_path;
    long timeout_ms;
} opt = {"127.0.0.1", 8787, NULL, "127.0.0.1", 6379, "tandem:", NULL, "bench-fan", 1, 1000, 1000, 3000, 0, 0, 3, 0, 0,
         NULL, 5000};

static char *texts[TEXTS_MAX];
static size_t n_texts;
static volatile sig_atomic_t stop_requested;

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sse_latency: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    printf("{\"error\":\"see stderr\"}\n");
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stop_requested)
        ;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

static void load_texts(void)
{
    if (opt.texts_path) {
        FILE *f = fopen(opt.texts_path, "r");
        if (!f)
            die("cannot open %s", opt.texts_path);
        char line[TEXT_MAX];
        while (n_texts < TEXTS_MAX && fgets(line, sizeof line, f)) {
            size_t l = strcspn(line, "\r\n");
            line[l] = '\0';
            if (l == 0)
                continue;
            texts[n_texts] = strdup(line);
            if (!texts[n_texts])
                die("out of memory");
            n_texts++;
        }
        fclose(f);
    }
    if (n_texts == 0)
        texts[n_texts++] = (char *)DEFAULT_TEXT;
}

/* ---- statistics ---- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted v[0..n). */
static double pct(const double *v, size_t n, double q)
{
    if (n == 0)
        return NAN;
    size_t r = (size_t)ceil(q * (double)n);
    if (r < 1)
        r = 1;
    return v[r > n ? n - 1 : r - 1];
}

/* Prints "name":{"n":..,"p50_ms":..} for the values in ms (sorted in place). */
static void print_dist(const char *name, double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    if (n == 0) {
        printf("\"%s\":{\"n\":0}", name);
        return;
    }
    printf("\"%s\":{\"n\":%zu,\"mean_ms\":%.4f,\"p50_ms\":%.4f,\"p90_ms\":%.4f,\"p99_ms\":%.4f,\"max_ms\":%.4f}", name,
           n, sum / (double)n, pct(v, n, 0.50), pct(v, n, 0.90), pct(v, n, 0.99), v[n - 1]);
}

/* ---- Redis ---- */

static redisContext *redis_open(void)
{
    struct timeval tv = {2, 0};
    redisContext *r = redisConnectWithTimeout(opt.redis_host, opt.redis_port, tv);
    if (!r || r->err)
        die("cannot connect to Redis at %s:%d: %s", opt.redis_host, opt.redis_port, r ? r->errstr : "oom");
    redisSetTimeout(r, tv);
    return r;
}

static void msgs_key(char *out, size_t n, const char *conv) { snprintf(out, n, "%sconv:{%s}:msgs", opt.prefix, conv); }

/* XADD a customer message; writes the new id. */
static void redis_xadd(redisContext *r, const char *conv, const char *text, char id[ID_MAX])
{
    char key[512];
    msgs_key(key, sizeof key, conv);
    const char *argv[] = {"XADD", key, "*", "role", "customer", "text", text};
    redisReply *rep = redisCommandArgv(r, 7, argv, NULL);
    if (!rep || rep->type != REDIS_REPLY_STRING || rep->len >= ID_MAX)
        die("XADD failed: %s", rep && rep->type == REDIS_REPLY_ERROR ? rep->str : r->errstr);
    memcpy(id, rep->str, rep->len + 1);
    freeReplyObject(rep);
}

static void redis_xdel(redisContext *r, const char *conv, const char *id)
{
    char key[512];
    msgs_key(key, sizeof key, conv);
    const char *argv[] = {"XDEL", key, id};
    redisReply *rep = redisCommandArgv(r, 3, argv, NULL);
    if (!rep || rep->type != REDIS_REPLY_INTEGER)
        die("XDEL failed");
    freeReplyObject(rep);
}

/* ---- sockets ---- */

static int tcp_connect(int nonblocking)
{
    int fd = socket(AF_INET, SOCK_STREAM | (nonblocking ? SOCK_NONBLOCK : 0) | SOCK_CLOEXEC, 0);
    if (fd < 0)
        die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &a.sin_addr) != 1)
        die("--host must be an IPv4 address");
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0 && errno != EINPROGRESS)
        die("connect to %s:%d: %s", opt.host, opt.port, strerror(errno));
    return fd;
}

static int write_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

/* ---- blocking HTTP/1.1 GET with keep-alive (metrics, suggestions) ---- */

struct http_client {
    int fd;
    char *buf; /* unread bytes */
    size_t len;
};

static void http_client_init(struct http_client *c)
{
    c->fd = -1;
    c->len = 0;
    c->buf = malloc(BODY_MAX + HEADER_MAX + 1);
    if (!c->buf)
        die("out of memory");
}

static void http_client_cleanup(struct http_client *c)
{
    if (c->fd >= 0)
        close(c->fd);
    free(c->buf);
    c->buf = NULL;
}

static int fill(struct http_client *c)
{
    if (c->len >= BODY_MAX + HEADER_MAX)
        return -1;
    ssize_t n;
    do
        n = read(c->fd, c->buf + c->len, BODY_MAX + HEADER_MAX - c->len);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    c->len += (size_t)n;
    return 0;
}

static void consume(struct http_client *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

/* GET path; returns the status and a malloc'd NUL-terminated body in *body (or -1 on a transport
 * error). Reconnects once when the kept-alive connection was closed. */
static int http_get(struct http_client *c, const char *path, char **body)
{
    *body = NULL;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (c->fd < 0) {
            c->fd = tcp_connect(0);
            c->len = 0;
        }
        char req[1024];
        int rl = snprintf(req, sizeof req,
                          "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\nAccept: application/json\r\n\r\n",
                          path, opt.host, opt.port, opt.token);
        if (rl < 0 || (size_t)rl >= sizeof req)
            die("path too long");
        char *end = NULL;
        if (write_all(c->fd, req, (size_t)rl) == 0) {
            for (;;) {
                if (c->len) {
                    c->buf[c->len] = '\0';
                    end = strstr(c->buf, "\r\n\r\n");
                    if (end)
                        break;
                }
                if (fill(c) != 0)
                    break;
            }
        }
        if (!end) {
            close(c->fd);
            c->fd = -1;
            continue;
        }
        size_t head = (size_t)(end - c->buf) + 4;
        int status = 0;
        sscanf(c->buf, "HTTP/1.%*d %d", &status);
        long clen = -1;
        int chunked = 0, closing = 0;
        for (char *p = c->buf; p && p < end; p = strstr(p, "\r\n"), p = p ? p + 2 : NULL) {
            if (strncasecmp(p, "Content-Length:", 15) == 0)
                clen = strtol(p + 15, NULL, 10);
            else if (strncasecmp(p, "Transfer-Encoding:", 18) == 0 && strstr(p, "chunked") && strstr(p, "chunked") < end)
                chunked = 1;
            else if (strncasecmp(p, "Connection:", 11) == 0 && strncasecmp(p + 11, " close", 6) == 0)
                closing = 1;
        }
        consume(c, head);
        char *out = malloc(BODY_MAX + 1);
        size_t olen = 0;
        if (!out)
            die("out of memory");
        if (chunked) {
            for (;;) {
                char *nl;
                while (!(c->len && (c->buf[c->len] = '\0', nl = strstr(c->buf, "\r\n"))))
                    if (fill(c) != 0)
                        die("truncated chunked answer");
                size_t sz = strtoul(c->buf, NULL, 16);
                consume(c, (size_t)(nl - c->buf) + 2);
                while (c->len < sz + 2)
                    if (fill(c) != 0)
                        die("truncated chunked answer");
                if (olen + sz > BODY_MAX)
                    die("answer too large");
                memcpy(out + olen, c->buf, sz);
                olen += sz;
                consume(c, sz + 2);
                if (sz == 0)
                    break;
            }
        } else if (clen >= 0) {
            if ((size_t)clen > BODY_MAX)
                die("answer too large");
            while (c->len < (size_t)clen)
                if (fill(c) != 0)
                    die("truncated answer");
            memcpy(out, c->buf, (size_t)clen);
            olen = (size_t)clen;
            consume(c, (size_t)clen);
        } else { /* until close */
            while (fill(c) == 0)
                ;
            olen = c->len < BODY_MAX ? c->len : BODY_MAX;
            memcpy(out, c->buf, olen);
            c->len = 0;
            closing = 1;
        }
        out[olen] = '\0';
        if (closing) {
            close(c->fd);
            c->fd = -1;
        }
        *body = out;
        return status;
    }
    return -1;
}

/* Server-side recompute counters from /metrics (NAN when absent). */
static void read_recompute_metrics(struct http_client *c, double *count, double *seconds)
{
    *count = *seconds = NAN;
    char *body;
    int st = http_get(c, "/metrics", &body);
    if (st == 200 && body) {
        const char *p = strstr(body, "\ntandem_watch_recomputes_total ");
        if (p)
            *count = strtod(p + strlen("\ntandem_watch_recomputes_total "), NULL);
        p = strstr(body, "\ntandem_watch_recompute_seconds_total ");
        if (p)
            *seconds = strtod(p + strlen("\ntandem_watch_recompute_seconds_total "), NULL);
    }
    free(body);
}

static long read_rss_kb(const char *field)
{
    if (opt.pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", opt.pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':')
            kb = strtol(line + fl + 1, NULL, 10);
    fclose(f);
    return kb;
}

/* ---- SSE streams over non-blocking sockets ---- */

enum { ST_CONNECTING, ST_HEAD, ST_BODY, ST_CLOSED };
enum { CH_SIZE, CH_DATA, CH_CRLF };

struct stream {
    int fd;
    int conv; /* index into the conversation list */
    int state, status, chunked, chunk_state;
    size_t chunk_left;
    char head[HEADER_MAX];
    size_t head_len;
    char sizeline[32];
    size_t sizeline_len;
    char line[LINE_KEEP];
    size_t line_len;
    char ev_id[ID_MAX], ev_name[32];
    int events; /* events received */
    int last_round; /* fanout: the last round whose event arrived */
};

/* Called for every complete event (name "message" when none was given). */
typedef void (*event_fn)(struct stream *s, const char *name, const char *id, uint64_t t);
static event_fn on_event;

static void sse_line(struct stream *s, uint64_t t)
{
    char *l = s->line;
    size_t n = s->line_len < LINE_KEEP ? s->line_len : LINE_KEEP - 1; /* longer lines were cut */
    if (n && l[n - 1] == '\r')
        l[--n] = '\0';
    if (n == 0) { /* blank line: dispatch */
        if (s->ev_name[0] || s->ev_id[0]) {
            s->events++;
            on_event(s, s->ev_name[0] ? s->ev_name : "message", s->ev_id, t);
        }
        s->ev_name[0] = s->ev_id[0] = '\0';
        return;
    }
    const char *v = strchr(l, ':');
    if (v == l)
        return; /* comment (": ping") */
    size_t fl = v ? (size_t)(v - l) : n;
    v = v ? v + 1 : l + n;
    if (*v == ' ')
        v++;
    if (fl == 2 && strncmp(l, "id", 2) == 0)
        snprintf(s->ev_id, sizeof s->ev_id, "%s", v);
    else if (fl == 5 && strncmp(l, "event", 5) == 0)
        snprintf(s->ev_name, sizeof s->ev_name, "%s", v);
}

static void sse_bytes(struct stream *s, const char *p, size_t n, uint64_t t)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '\n') {
            s->line[s->line_len < LINE_KEEP ? s->line_len : LINE_KEEP - 1] = '\0';
            sse_line(s, t);
            s->line_len = 0;
        } else {
            if (s->line_len < LINE_KEEP - 1)
                s->line[s->line_len] = p[i];
            s->line_len++;
        }
    }
}

static void body_bytes(struct stream *s, const char *p, size_t n, uint64_t t)
{
    if (!s->chunked) {
        sse_bytes(s, p, n, t);
        return;
    }
    while (n) {
        if (s->chunk_state == CH_SIZE) {
            if (*p == '\n') {
                s->sizeline[s->sizeline_len < sizeof s->sizeline ? s->sizeline_len : sizeof s->sizeline - 1] = '\0';
                s->chunk_left = strtoul(s->sizeline, NULL, 16);
                s->sizeline_len = 0;
                s->chunk_state = s->chunk_left ? CH_DATA : CH_CRLF;
                if (!s->chunk_left)
                    s->state = ST_CLOSED; /* last chunk: the stream ended */
            } else if (s->sizeline_len < sizeof s->sizeline - 1) {
                s->sizeline[s->sizeline_len++] = *p;
            }
            p++, n--;
        } else if (s->chunk_state == CH_DATA) {
            size_t k = n < s->chunk_left ? n : s->chunk_left;
            sse_bytes(s, p, k, t);
            p += k, n -= k;
            s->chunk_left -= k;
            if (!s->chunk_left)
                s->chunk_state = CH_CRLF;
        } else {
            if (*p == '\n')
                s->chunk_state = CH_SIZE;
            p++, n--;
        }
    }
}

static void head_bytes(struct stream *s, const char *p, size_t n, uint64_t t)
{
    size_t room = HEADER_MAX - 1 - s->head_len;
    size_t k = n < room ? n : room;
    memcpy(s->head + s->head_len, p, k);
    s->head_len += k;
    s->head[s->head_len] = '\0';
    char *end = strstr(s->head, "\r\n\r\n");
    if (!end) {
        if (s->head_len >= HEADER_MAX - 1)
            s->state = ST_CLOSED;
        return;
    }
    size_t head = (size_t)(end - s->head) + 4;
    *end = '\0';
    sscanf(s->head, "HTTP/1.%*d %d", &s->status);
    for (char *q = s->head; q; q = strstr(q, "\r\n"), q = q ? q + 2 : NULL)
        if (strncasecmp(q, "Transfer-Encoding:", 18) == 0 && strstr(q, "chunked"))
            s->chunked = 1;
    s->state = ST_BODY;
    /* bytes after the head that were in this read */
    size_t used_before = s->head_len - k; /* head bytes from earlier reads */
    size_t from_this = head - used_before;
    if (from_this < n)
        body_bytes(s, p + from_this, n - from_this, t);
}

static void stream_open(struct stream *s, int conv_index, int epfd)
{
    memset(s, 0, sizeof *s);
    s->conv = conv_index;
    s->last_round = -1;
    s->fd = tcp_connect(1);
    s->state = ST_CONNECTING;
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = s};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, s->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
}

static const char *conv_name(int i)
{
    static char name[160];
    if (opt.conv)
        return opt.conv;
    snprintf(name, sizeof name, "%s-%d", opt.conv_prefix, i);
    return name;
}

static void stream_close(struct stream *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    s->state = ST_CLOSED;
}

static void stream_ready(struct stream *s, int epfd)
{
    if (s->state == ST_CONNECTING) {
        int err = 0;
        socklen_t el = sizeof err;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &el);
        if (err) {
            fprintf(stderr, "sse_latency: connect: %s\n", strerror(err));
            stream_close(s);
            return;
        }
        char req[1024];
        int rl = snprintf(req, sizeof req,
                          "GET /v1/conversations/%s/events HTTP/1.1\r\nHost: %s:%d\r\nAuthorization: Bearer %s\r\n"
                          "Accept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n",
                          conv_name(s->conv), opt.host, opt.port, opt.token);
        /* a few hundred bytes always fit an empty socket buffer */
        if (rl < 0 || (size_t)rl >= sizeof req || write(s->fd, req, (size_t)rl) != rl) {
            stream_close(s);
            return;
        }
        s->state = ST_HEAD;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = s};
        epoll_ctl(epfd, EPOLL_CTL_MOD, s->fd, &ev);
        return;
    }
    char buf[65536];
    for (;;) {
        ssize_t n = read(s->fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            stream_close(s);
            return;
        }
        uint64_t t = now_ns();
        if (s->state == ST_HEAD)
            head_bytes(s, buf, (size_t)n, t);
        else if (s->state == ST_BODY)
            body_bytes(s, buf, (size_t)n, t);
        if (s->state == ST_CLOSED) {
            stream_close(s);
            return;
        }
    }
}

/* Waits up to timeout_ns for stream activity; returns after one epoll round. */
static void pump(int epfd, uint64_t timeout_ns)
{
    struct epoll_event evs[256];
    int ms = (int)((timeout_ns + 999999u) / 1000000u);
    int n = epoll_wait(epfd, evs, 256, ms);
    for (int i = 0; i < n; i++)
        stream_ready(evs[i].data.ptr, epfd);
}

/* Single-stream variant with sub-millisecond timeouts (ppoll). */
static void pump_one(struct stream *s, int epfd, uint64_t timeout_ns)
{
    if (s->fd < 0) {
        sleep_ns(timeout_ns);
        return;
    }
    struct pollfd p = {.fd = s->fd, .events = (short)(s->state == ST_CONNECTING ? POLLOUT : POLLIN)};
    struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
    if (ppoll(&p, 1, &ts, NULL) > 0)
        stream_ready(s, epfd);
}

static void raise_nofile(rlim_t want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    if (rl.rlim_cur < want) {
        rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < want)
        fprintf(stderr, "sse_latency: RLIMIT_NOFILE is %lu, fewer than %lu: raise the hard limit\n",
                (unsigned long)rl.rlim_cur, (unsigned long)want);
}

/* ---- mode latency ---- */

struct sent {
    char id[ID_MAX];
    uint64_t t_sent, t_recv;
};

static struct sent *sent;
static size_t n_sent, match_cursor;
static int first_event_seen;

/* Stream ids compare as (ms, seq) pairs. */
static int id_cmp(const char *a, const char *b)
{
    unsigned long long am = strtoull(a, NULL, 10), bm = strtoull(b, NULL, 10);
    const char *ad = strchr(a, '-'), *bd = strchr(b, '-');
    unsigned long long as = ad ? strtoull(ad + 1, NULL, 10) : 0, bs = bd ? strtoull(bd + 1, NULL, 10) : 0;
    if (am != bm)
        return am < bm ? -1 : 1;
    return as < bs ? -1 : as > bs;
}

static void latency_event(struct stream *s, const char *name, const char *id, uint64_t t)
{
    (void)s;
    if (strcmp(name, "suggestions") != 0)
        return;
    first_event_seen = 1;
    for (size_t j = match_cursor; j < n_sent; j++) {
        int c = id_cmp(sent[j].id, id);
        if (c == 0) {
            if (!sent[j].t_recv)
                sent[j].t_recv = t;
            match_cursor = j + 1;
            return;
        }
        if (c > 0)
            return; /* an older id: the snapshot or a repeat */
    }
}

/* Opens the stream and waits for its first suggestions event (the snapshot). */
static void open_and_wait_first(struct stream *s, int epfd)
{
    stream_open(s, 0, epfd);
    uint64_t deadline = now_ns() + (uint64_t)opt.timeout_ms * 1000000u;
    while (!first_event_seen && s->state != ST_CLOSED && now_ns() < deadline && !stop_requested)
        pump_one(s, epfd, 10000000u);
    if (!first_event_seen)
        die("no first suggestions event on %s (HTTP status %d): is /events implemented and the conversation "
            "present?",
            conv_name(0), s->status);
}

static int mode_latency(void)
{
    if (!opt.conv)
        die("--conv is required");
    load_texts();
    sent = calloc((size_t)opt.messages, sizeof *sent);
    if (!sent)
        die("out of memory");
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    redisContext *r = redis_open();
    struct http_client hc;
    http_client_init(&hc);
    on_event = latency_event;
    struct stream s;
    open_and_wait_first(&s, epfd);
    /* let the live loop take the new conversation into its XREAD */
    uint64_t settle = now_ns() + 300000000u;
    while (now_ns() < settle)
        pump_one(&s, epfd, settle - now_ns());
    double rc0, rs0, rc1, rs1;
    read_recompute_metrics(&hc, &rc0, &rs0);
    uint64_t interval = (uint64_t)opt.interval_us * 1000u;
    uint64_t next = now_ns();
    for (int i = 0; i < opt.messages && !stop_requested && s.state != ST_CLOSED; i++) {
        struct sent *m = &sent[n_sent];
        m->t_sent = now_ns();
        redis_xadd(r, opt.conv, texts[(size_t)i % n_texts], m->id);
        n_sent++;
        if (opt.sequential) {
            uint64_t deadline = now_ns() + (uint64_t)opt.timeout_ms * 1000000u;
            while (!m->t_recv && s.state != ST_CLOSED && now_ns() < deadline)
                pump_one(&s, epfd, deadline - now_ns());
            if (opt.xdel)
                redis_xdel(r, opt.conv, m->id);
            next = now_ns() + interval;
        } else {
            next += interval;
        }
        uint64_t t;
        while ((t = now_ns()) < next && s.state != ST_CLOSED)
            pump_one(&s, epfd, next - t);
    }
    /* the tail */
    uint64_t deadline = now_ns() + (uint64_t)opt.timeout_ms * 1000000u;
    while (n_sent && !sent[n_sent - 1].t_recv && s.state != ST_CLOSED && now_ns() < deadline)
        pump_one(&s, epfd, 5000000u);
    read_recompute_metrics(&hc, &rc1, &rs1);
    double *lat = calloc(n_sent + 1, sizeof *lat);
    size_t n = 0;
    for (size_t i = 0; i < n_sent; i++)
        if (sent[i].t_recv)
            lat[n++] = (double)(sent[i].t_recv - sent[i].t_sent) / 1e6;
    printf("{\"mode\":\"latency\",\"conv\":\"%s\",\"sent\":%zu,\"received\":%zu,\"interval_us\":%ld,\"sequential\":%d,",
           opt.conv, n_sent, n, opt.interval_us, opt.sequential);
    print_dist("xadd_to_event", lat, n);
    double dn = rc1 - rc0, ds = rs1 - rs0;
    if (!isnan(dn) && !isnan(ds) && dn > 0)
        printf(",\"server_recomputes\":%.0f,\"server_recompute_ms_mean\":%.4f", dn, ds * 1000.0 / dn);
    printf("}\n");
    free(lat);
    free(sent);
    stream_close(&s);
    http_client_cleanup(&hc);
    redisFree(r);
    return n == n_sent && n > 0 ? 0 : 1;
}

/* ---- mode fanout ---- */

static struct stream *streams;
static char (*round_ids)[ID_MAX]; /* per conversation: the id of this round's message */
static uint64_t *round_sent;
static double *fan_lat;
static size_t fan_n;
static int cur_round = -1;
static long n_first; /* streams that got their first event */

static void fanout_event(struct stream *s, const char *name, const char *id, uint64_t t)
{
    if (strcmp(name, "suggestions") != 0)
        return;
    if (s->last_round == -1) { /* the first event: the snapshot */
        s->last_round = -2;
        n_first++;
    }
    if (cur_round < 0 || s->last_round >= cur_round)
        return;
    if (strcmp(round_ids[s->conv], id) == 0) {
        s->last_round = cur_round;
        fan_lat[fan_n++] = (double)(t - round_sent[s->conv]) / 1e6;
    }
}

static int mode_fanout(void)
{
    load_texts();
    raise_nofile((rlim_t)opt.subscribers + 64);
    int n = opt.subscribers, nc = opt.convs;
    streams = calloc((size_t)n, sizeof *streams);
    round_ids = calloc((size_t)nc, sizeof *round_ids);
    round_sent = calloc((size_t)nc, sizeof *round_sent);
    fan_lat = calloc((size_t)n * (size_t)(opt.rounds + 1) + 1, sizeof *fan_lat);
    if (!streams || !round_ids || !round_sent || !fan_lat)
        die("out of memory");
    on_event = fanout_event;
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    redisContext *r = redis_open();
    long rss_before = read_rss_kb("VmRSS");
    uint64_t t_open = now_ns();
    /* open in batches so the listen backlog never overflows */
    const int batch = 100;
    for (int i = 0; i < n && !stop_requested; i += batch) {
        int end = i + batch < n ? i + batch : n;
        for (int j = i; j < end; j++)
            stream_open(&streams[j], j % nc, epfd);
        uint64_t deadline = now_ns() + (uint64_t)opt.timeout_ms * 1000000u;
        while (n_first < end && now_ns() < deadline && !stop_requested)
            pump(epfd, 10000000u);
    }
    double open_s = (double)(now_ns() - t_open) / 1e9;
    long open = 0, bad_status = 0;
    for (int i = 0; i < n; i++) {
        open += streams[i].state == ST_BODY;
        bad_status += streams[i].status && streams[i].status != 200;
    }
    fprintf(stderr, "sse_latency: %ld of %d streams open (%ld got a snapshot) in %.2f s\n", open, n, n_first, open_s);
    /* let the live loop add every conversation to its XREAD */
    uint64_t settle = now_ns() + 500000000u;
    while (now_ns() < settle)
        pump(epfd, settle - now_ns());
    long rss_subscribed = read_rss_kb("VmRSS");
    size_t expected = 0, paced_n = 0, expected_burst = 0;
    int total_rounds = opt.rounds + opt.burst;
    for (int round = 0; round < total_rounds && !stop_requested; round++) {
        int burst = round >= opt.rounds; /* the extra round: every XADD at once */
        if (burst && !paced_n)
            paced_n = fan_n;
        cur_round = round;
        uint64_t next = now_ns();
        for (int c = 0; c < nc; c++) {
            uint64_t t;
            while ((t = now_ns()) < next) /* paced: deliveries are read while the round goes on */
                pump(epfd, next - t);
            round_sent[c] = now_ns();
            redis_xadd(r, conv_name(c), texts[((size_t)round * (size_t)nc + (size_t)c) % n_texts], round_ids[c]);
            next += burst ? 0 : (uint64_t)opt.interval_us * 1000u;
        }
        for (int i = 0; i < n; i++) {
            if (burst)
                expected_burst += streams[i].state == ST_BODY;
            else
                expected += streams[i].state == ST_BODY;
        }
        uint64_t deadline = now_ns() + (uint64_t)opt.timeout_ms * 1000000u;
        for (;;) {
            int missing = 0;
            for (int i = 0; i < n && !missing; i++)
                missing = streams[i].state == ST_BODY && streams[i].last_round < round;
            if (!missing || now_ns() >= deadline)
                break;
            pump(epfd, 5000000u);
        }
        uint64_t gap = now_ns() + 200000000u;
        while (now_ns() < gap)
            pump(epfd, gap - now_ns());
    }
    if (!opt.burst)
        paced_n = fan_n;
    long rss_after = read_rss_kb("VmRSS"), hwm = read_rss_kb("VmHWM");
    long still_open = 0;
    for (int i = 0; i < n; i++)
        still_open += streams[i].state == ST_BODY;
    printf("{\"mode\":\"fanout\",\"subscribers\":%d,\"conversations\":%d,\"open\":%ld,\"non_200\":%ld,"
           "\"open_seconds\":%.3f,\"rounds\":%d,\"expected\":%zu,\"delivered\":%zu,\"still_open\":%ld,"
           "\"rss_kb_before\":%ld,\"rss_kb_subscribed\":%ld,\"rss_kb_after\":%ld,\"hwm_kb\":%ld,"
           "\"interval_us\":%ld,",
           n, nc, open, bad_status, open_s, opt.rounds, expected, paced_n, still_open, rss_before, rss_subscribed,
           rss_after, hwm, opt.interval_us);
    print_dist("delivery", fan_lat, paced_n);
    if (opt.burst) {
        printf(",\"burst_expected\":%zu,\"burst_delivered\":%zu,", expected_burst, fan_n - paced_n);
        print_dist("burst_delivery", fan_lat + paced_n, fan_n - paced_n);
    }
    printf("}\n");
    for (int i = 0; i < n; i++)
        stream_close(&streams[i]);
    free(streams);
    free(round_ids);
    free(round_sent);
    free(fan_lat);
    redisFree(r);
    return fan_n == expected + expected_burst && open == n ? 0 : 1;
}

/* ---- mode miss ---- */

static int mode_miss(void)
{
    if (!opt.conv)
        die("--conv is required");
    load_texts();
    redisContext *r = redis_open();
    struct http_client hc;
    http_client_init(&hc);
    char path[512];
    snprintf(path, sizeof path, "/v1/conversations/%s/suggestions?k=3", opt.conv);
    double *lat = calloc((size_t)opt.messages + 1, sizeof *lat), *took = calloc((size_t)opt.messages + 1, sizeof *took);
    if (!lat || !took)
        die("out of memory");
    size_t n = 0, nt = 0, fresh = 0;
    int bad = 0, last_status = 0;
    for (int i = 0; i < opt.messages && !stop_requested; i++) {
        char id[ID_MAX];
        redis_xadd(r, opt.conv, texts[(size_t)i % n_texts], id);
        char *body = NULL;
        uint64_t t0 = now_ns();
        int st = http_get(&hc, path, &body);
        uint64_t t1 = now_ns();
        last_status = st;
        if (st == 200 && body) {
            lat[n++] = (double)(t1 - t0) / 1e6;
            const char *p = strstr(body, "\"took_ms\":");
            if (p)
                took[nt++] = strtod(p + 10, NULL);
            char want[ID_MAX + 16];
            snprintf(want, sizeof want, "\"based_on\":\"%s\"", id);
            fresh += strstr(body, want) != NULL;
        } else {
            bad++;
        }
        free(body);
        redis_xdel(r, opt.conv, id);
        if (opt.interval_us > 0)
            sleep_ns((uint64_t)opt.interval_us * 1000u);
    }
    printf("{\"mode\":\"miss\",\"conv\":\"%s\",\"requests\":%d,\"ok\":%zu,\"fresh\":%zu,\"failed\":%d,\"last_status\":%d,",
           opt.conv, opt.messages, n, fresh, bad, last_status);
    print_dist("latency", lat, n);
    printf(",");
    print_dist("took", took, nt);
    printf("}\n");
    free(lat);
    free(took);
    http_client_cleanup(&hc);
    redisFree(r);
    return bad == 0 ? 0 : 1;
}

/* ---- mode hold ---- */

static void hold_event(struct stream *s, const char *name, const char *id, uint64_t t)
{
    (void)s, (void)id, (void)t;
    if (strcmp(name, "suggestions") == 0)
        first_event_seen = 1;
}

static int mode_hold(void)
{
    if (!opt.conv)
        die("--conv is required");
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    on_event = hold_event;
    struct stream s;
    open_and_wait_first(&s, epfd);
    printf("ready\n");
    fflush(stdout);
    while (!stop_requested && s.state != ST_CLOSED)
        pump_one(&s, epfd, 200000000u);
    stream_close(&s);
    return 0;
}

/* ---- main ---- */

static void usage(void)
{
    fprintf(stderr,
            "usage: sse_latency latency|fanout|miss|hold --port P --token T --redis-port R [options]\n"
            "  --host A (127.0.0.1) --redis-host A --prefix tandem: --texts FILE (one message per line)\n"
            "  latency: --conv ID --messages N --interval-us U [--sequential [--xdel]]\n"
            "  fanout:  --conv-prefix P --convs C --subscribers N --rounds R --pid PID [--interval-us U]\n"
            "           [--burst] (U: pause between the XADDs of one round, 0 = all at once;\n"
            "           --burst: one more round with every XADD at once, reported apart)\n"
            "  miss:    --conv ID --messages N [--interval-us U]\n"
            "  hold:    --conv ID\n"
            "  --timeout-ms T: how long to wait for an event (5000)\n");
    exit(2);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        usage();
    const char *mode = argv[1];
    static const struct option longs[] = {
        {"host", required_argument, 0, 'h'},        {"port", required_argument, 0, 'p'},
        {"token", required_argument, 0, 't'},       {"redis-host", required_argument, 0, 'H'},
        {"redis-port", required_argument, 0, 'P'},  {"prefix", required_argument, 0, 'x'},
        {"conv", required_argument, 0, 'c'},        {"conv-prefix", required_argument, 0, 'C'},
        {"convs", required_argument, 0, 'n'},       {"subscribers", required_argument, 0, 's'},
        {"messages", required_argument, 0, 'm'},    {"interval-us", required_argument, 0, 'i'},
        {"sequential", no_argument, 0, 'q'},        {"xdel", no_argument, 0, 'd'},
        {"rounds", required_argument, 0, 'r'},      {"pid", required_argument, 0, 'k'},
        {"burst", no_argument, 0, 'b'},
        {"texts", required_argument, 0, 'T'},       {"timeout-ms", required_argument, 0, 'o'},
        {0, 0, 0, 0}};
    int ch;
    optind = 2;
    while ((ch = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 't': opt.token = optarg; break;
        case 'H': opt.redis_host = optarg; break;
        case 'P': opt.redis_port = atoi(optarg); break;
        case 'x': opt.prefix = optarg; break;
        case 'c': opt.conv = optarg; break;
        case 'C': opt.conv_prefix = optarg; break;
        case 'n': opt.convs = atoi(optarg); break;
        case 's': opt.subscribers = atoi(optarg); break;
        case 'm': opt.messages = atoi(optarg); break;
        case 'i': opt.interval_us = atol(optarg); break;
        case 'q': opt.sequential = 1; break;
        case 'd': opt.xdel = 1; break;
        case 'r': opt.rounds = atoi(optarg); break;
        case 'b': opt.burst = 1; break;
        case 'k': opt.pid = atol(optarg); break;
        case 'T': opt.texts_path = optarg; break;
        case 'o': opt.timeout_ms = atol(optarg); break;
        default: usage();
        }
    }
    if (!opt.token) {
        opt.token = getenv("TANDEM_TOKEN");
        if (!opt.token)
            die("--token or TANDEM_TOKEN is required");
    }
    if (opt.messages < 1 || opt.subscribers < 1 || opt.convs < 1 || opt.rounds < 1 || opt.convs > opt.subscribers)
        die("counts must be >= 1 and --convs <= --subscribers");
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal; /* no SA_RESTART: a blocking wait returns at once */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (strcmp(mode, "latency") == 0)
        return mode_latency();
    if (strcmp(mode, "fanout") == 0) {
        opt.conv = NULL;
        return mode_fanout();
    }
    if (strcmp(mode, "miss") == 0)
        return mode_miss();
    if (strcmp(mode, "hold") == 0)
        return mode_hold();
    usage();
}
