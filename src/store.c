/* Everything Redis: key schema, one connection per thread, timeouts, AUTH/SELECT after every
 * (re)connect, jittered reconnect backoff, Sentinel discovery, and the pipelined context fetch. */
#include "tandem/hash.h"
#include "tandem/clock.h"
#include "tandem/store.h"
#include "tandem/error.h"
#include "tandem/log.h"

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#define BACKOFF_MIN_MS 50    /* first retry soon: most outages are restarts */
#define BACKOFF_MAX_MS 2000  /* cap so recovery is noticed within ~2 s */
#define PING_TIMEOUT_MS 250  /* readiness must answer fast even when Redis hangs */
#define KEY_MAX 512

struct store {
    redisContext *ctx;
    unsigned long master_gen; /* sentinel: master_generation at the last connect attempt */
    unsigned long generation; /* bumped on every new connection */
    uint64_t next_attempt_ns; /* no reconnect before this (backoff) */
    unsigned long recovered_seen; /* recoveries when this thread last tried to connect */
    int unproven; /* connected, but no command has succeeded on it yet */
    unsigned backoff_ms;
    unsigned cmd_timeout_ms;
    uint64_t rng;
};

static const struct config *gcfg;
static atomic_ulong stat_errors, stat_reconnects;
/* Bumped when any thread's first command after a failure succeeds: Redis is back, so every
 * other thread may skip the rest of its backoff instead of answering 503 for up to
 * BACKOFF_MAX_MS more. A connect alone proves nothing (a proxy whose Redis is down accepts). */
static atomic_ulong recoveries;
static pthread_key_t thread_key;
/* Sentinel: the master's address as last seen, and a generation bumped when it moves, so every
 * thread's connection to a demoted master is dropped even while that master still accepts
 * writes (a manual or partitioned failover does not make it read-only at once). */
static pthread_mutex_t master_lock = PTHREAD_MUTEX_INITIALIZER;
static char master_addr[300];
static atomic_ulong master_generation;
static pthread_once_t thread_once = PTHREAD_ONCE_INIT;

unsigned long store_stat_errors(void) { return atomic_load(&stat_errors); }
unsigned long store_stat_reconnects(void) { return atomic_load(&stat_reconnects); }


static struct timeval ms_tv(unsigned ms)
{
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)((ms % 1000) * 1000)};
    return tv;
}

void store_global_init(const struct config *cfg) { gcfg = cfg; }

struct store *store_new(void)
{
    struct store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cmd_timeout_ms = gcfg ? (unsigned)gcfg->redis_timeout_ms : 1000;
    if (getrandom(&s->rng, sizeof s->rng, 0) != sizeof s->rng)
        s->rng = clock_mono_ns();
    s->rng |= 1;
    return s;
}

void store_free(struct store *s)
{
    if (!s)
        return;
    if (s->ctx)
        redisFree(s->ctx);
    free(s);
}

static void thread_key_make(void) { pthread_key_create(&thread_key, (void (*)(void *))store_free); }

struct store *store_thread(void)
{
    pthread_once(&thread_once, thread_key_make);
    struct store *s = pthread_getspecific(thread_key);
    if (!s) {
        s = store_new();
        if (s)
            pthread_setspecific(thread_key, s);
    }
    return s;
}

/* ---- keys ---- */

int store_key(char *out, size_t outsz, const char *name)
{
    int n = snprintf(out, outsz, "%s%s", gcfg ? gcfg->redis_prefix : "tandem:", name);
    return (n < 0 || (size_t)n >= outsz) ? -1 : n;
}

int store_key_conv(char *out, size_t outsz, const char *conv_id, const char *suffix)
{
    int n = snprintf(out, outsz, "%sconv:{%s}:%s", gcfg ? gcfg->redis_prefix : "tandem:", conv_id, suffix);
    return (n < 0 || (size_t)n >= outsz) ? -1 : n;
}

int store_key_cust(char *out, size_t outsz, const char *cust_id, const char *suffix)
{
    int n = snprintf(out, outsz, "%scust:{%s}:%s", gcfg ? gcfg->redis_prefix : "tandem:", cust_id, suffix);
    return (n < 0 || (size_t)n >= outsz) ? -1 : n;
}

/* ---- connection ---- */

static uint64_t rng_next(struct store *s)
{
    s->rng ^= s->rng << 13;
    s->rng ^= s->rng >> 7;
    s->rng ^= s->rng << 17;
    return s->rng;
}

static void drop(struct store *s, const char *why)
{
    if (s->ctx) {
        log_warn("redis_disconnected", "reason='%s'", why);
        redisFree(s->ctx);
        s->ctx = NULL;
    }
    atomic_fetch_add(&stat_errors, 1);
}

static void schedule_retry(struct store *s)
{
    s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : BACKOFF_MIN_MS;
    if (s->backoff_ms > BACKOFF_MAX_MS)
        s->backoff_ms = BACKOFF_MAX_MS;
    /* full jitter in [backoff/2, backoff] so many workers don't reconnect in lockstep */
    uint64_t half = s->backoff_ms / 2;
    uint64_t wait_ms = half + (half ? rng_next(s) % (half + 1) : 0);
    s->next_attempt_ns = clock_mono_ns() + wait_ms * 1000000u;
}

static redisContext *connect_to(const char *host, unsigned port, const char *path, unsigned timeout_ms)
{
    struct timeval tv = ms_tv(timeout_ms);
    redisContext *c = path ? redisConnectUnixWithTimeout(path, tv) : redisConnectWithTimeout(host, (int)port, tv);
    if (!c)
        return NULL;
    if (c->err || redisSetTimeout(c, tv) != REDIS_OK) {
        redisFree(c);
        return NULL;
    }
    return c;
}

static int reply_ok(redisReply *r)
{
    return r && r->type != REDIS_REPLY_ERROR;
}

/* Asks the sentinels for the master's address. */
static int sentinel_resolve(const struct redis_target *t, unsigned timeout_ms, char *host, size_t hostsz,
                            unsigned *port)
{
    for (size_t i = 0; i < t->n_sentinels; i++) {
        redisContext *c = connect_to(t->sentinels[i].host, t->sentinels[i].port, NULL, timeout_ms);
        if (!c)
            continue;
        const char *argv[] = {"SENTINEL", "get-master-addr-by-name", t->master_name};
        redisReply *r = redisCommandArgv(c, 3, argv, NULL);
        int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
                 r->element[0]->type == REDIS_REPLY_STRING && r->element[1]->type == REDIS_REPLY_STRING &&
                 r->element[0]->len < hostsz;
        if (ok) {
            memcpy(host, r->element[0]->str, r->element[0]->len);
            host[r->element[0]->len] = '\0';
            *port = (unsigned)strtoul(r->element[1]->str, NULL, 10);
        }
        if (r)
            freeReplyObject(r);
        redisFree(c);
        if (ok && *port)
            return 0;
    }
    return -1;
}

static int do_connect(struct store *s)
{
    const struct redis_target *t = &gcfg->redis;
    unsigned tmo = s->cmd_timeout_ms;
    redisContext *c = NULL;
    if (t->kind == REDIS_UNIX) {
        c = connect_to(NULL, 0, t->path, tmo);
    } else if (t->kind == REDIS_TCP) {
        c = connect_to(t->tcp.host, t->tcp.port, NULL, tmo);
    } else {
        char host[256];
        unsigned port = 0;
        s->master_gen = atomic_load(&master_generation);
        if (sentinel_resolve(t, tmo, host, sizeof host, &port) == 0)
            c = connect_to(host, port, NULL, tmo);
    }
    if (!c)
        return -1;
    redisReply *r;
    /* hiredis does not replay AUTH/SELECT on reconnect: do it on every new connection. */
    if (t->password) {
        if (t->user) {
            const char *argv[] = {"AUTH", t->user, t->password};
            r = redisCommandArgv(c, 3, argv, NULL);
        } else {
            const char *argv[] = {"AUTH", t->password};
            r = redisCommandArgv(c, 2, argv, NULL);
        }
        int ok = reply_ok(r);
        if (r)
            freeReplyObject(r);
        if (!ok) {
            log_error("redis_auth_failed", "hint='check the user and password in TANDEM_REDIS_URL'");
            redisFree(c);
            return -1;
        }
    }
    if (t->db) {
        char db[16];
        snprintf(db, sizeof db, "%d", t->db);
        const char *argv[] = {"SELECT", db};
        r = redisCommandArgv(c, 2, argv, NULL);
        int ok = reply_ok(r);
        if (r)
            freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return -1;
        }
    }
    if (t->kind == REDIS_SENTINEL) {
        /* The sentinel's answer may be stale during a failover: make sure this is the master. */
        const char *argv[] = {"ROLE"};
        r = redisCommandArgv(c, 1, argv, NULL);
        int ok = r && r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                 r->element[0]->type == REDIS_REPLY_STRING && strcmp(r->element[0]->str, "master") == 0;
        if (r)
            freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return -1;
        }
    }
    s->ctx = c;
    return 0;
}

/* Makes sure s has a live connection, respecting the backoff. */
static int ensure(struct store *s, int force)
{
    if (s->ctx && gcfg && gcfg->redis.kind == REDIS_SENTINEL && s->master_gen != atomic_load(&master_generation)) {
        log_info("redis_master_moved", "%s", "");
        redisFree(s->ctx);
        s->ctx = NULL;
        force = 1;
    }
    if (s->ctx)
        return T_OK;
    if (!gcfg)
        return T_ERR_UNAVAILABLE;
    /* the backoff stands only while nothing changed: no other thread got through since, and
     * the sentinel names the master it named when this thread last tried */
    if (!force && clock_mono_ns() < s->next_attempt_ns && s->recovered_seen == atomic_load(&recoveries) &&
        (gcfg->redis.kind != REDIS_SENTINEL || s->master_gen == atomic_load(&master_generation)))
        return T_ERR_UNAVAILABLE;
    /* before the attempt: a recovery elsewhere while this one waits for its time-out counts */
    s->recovered_seen = atomic_load(&recoveries);
    if (do_connect(s) != 0) {
        atomic_fetch_add(&stat_errors, 1);
        schedule_retry(s);
        return T_ERR_UNAVAILABLE;
    }
    atomic_fetch_add(&stat_reconnects, 1);
    s->generation++;
    s->unproven = 1; /* the backoff is reset by the first command that succeeds */
    return T_OK;
}

/* The first command on a new connection succeeded: Redis is usable again. */
static void proven(struct store *s)
{
    s->unproven = 0;
    if (s->backoff_ms || s->next_attempt_ns) {
        log_info("redis_reconnected", "%s", "");
        s->recovered_seen = atomic_fetch_add(&recoveries, 1) + 1; /* not news to this thread */
    }
    s->backoff_ms = 0;
    s->next_attempt_ns = 0;
}

/* Error replies after which this connection is no use: a replica after failover, a restarted
 * server that lost our AUTH. Reconnecting (re-resolving via Sentinel) is the fix. */
static int reply_means_reconnect(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR &&
           (strncmp(r->str, "READONLY", 8) == 0 || strncmp(r->str, "MASTERDOWN", 10) == 0 ||
            strncmp(r->str, "NOAUTH", 6) == 0);
}

/* Error replies that mean "Redis is up but cannot serve now". */
static int reply_means_unavailable(const redisReply *r)
{
    return r && r->type == REDIS_REPLY_ERROR &&
           (strncmp(r->str, "LOADING", 7) == 0 || strncmp(r->str, "BUSY", 4) == 0 ||
            strncmp(r->str, "OOM", 3) == 0 || strncmp(r->str, "MISCONF", 7) == 0 ||
            strncmp(r->str, "NOPERM", 6) == 0);
}

static void free_replies(redisReply *replies[], size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (replies[i])
            freeReplyObject(replies[i]);
        replies[i] = NULL;
    }
}

/* Sends n pipelined commands and reads n replies into replies[]. On failure frees what it got,
 * drops the connection and returns T_ERR_UNAVAILABLE. A connection that was already open may be
 * stale (Redis restarted while we idled, or failed over): it gets one retry on a fresh one. */
int store_pipeline(struct store *s, size_t n, int argcs[], const char **argvs[], const size_t *lens[],
                   redisReply *replies[])
{
    for (int attempt = 0; attempt < 2; attempt++) {
        int had_conn = s->ctx != NULL;
        int err = ensure(s, attempt > 0);
        if (err)
            return err;
        size_t got = 0;
        int io_failed = 0, reconnect = 0, unavailable = 0, noperm = 0;
        for (size_t i = 0; i < n && !io_failed; i++)
            if (redisAppendCommandArgv(s->ctx, argcs[i], argvs[i], lens[i]) != REDIS_OK)
                io_failed = 1;
        for (; got < n && !io_failed; got++) {
            void *r = NULL;
            if (redisGetReply(s->ctx, &r) != REDIS_OK || !r) {
                io_failed = 1;
                break;
            }
            replies[got] = r;
            reconnect |= reply_means_reconnect(r);
            unavailable |= reply_means_unavailable(r);
            noperm |= ((redisReply *)r)->type == REDIS_REPLY_ERROR && strncmp(((redisReply *)r)->str, "NOPERM", 6) == 0;
        }
        if (!io_failed && !reconnect && !unavailable) {
            if (s->unproven)
                proven(s);
            return T_OK;
        }
        free_replies(replies, got);
        if (unavailable && !io_failed && !reconnect) {
            if (noperm)
                log_error("redis_permission_denied", "hint='the Redis ACL user lacks a key pattern or command tandem needs (deploy/k8s/redis/users.acl)'");
            atomic_fetch_add(&stat_errors, 1);
            return T_ERR_UNAVAILABLE; /* the connection is fine; Redis is busy/loading */
        }
        drop(s, io_failed ? (s->ctx->errstr[0] ? s->ctx->errstr : "io error") : "server refused our role or auth");
        if (!had_conn || attempt == 1)
            break;
    }
    schedule_retry(s);
    return T_ERR_UNAVAILABLE;
}

int store_command(struct store *s, struct redisReply **reply, int argc, const char **argv, const size_t *argvlen)
{
    int argcs[1] = {argc};
    const char **argvs[1] = {argv};
    const size_t *lens[1] = {argvlen};
    redisReply *r[1] = {NULL};
    int err = store_pipeline(s, 1, argcs, argvs, lens, r);
    *reply = err ? NULL : r[0];
    return err;
}

void store_sentinel_check(void)
{
    if (!gcfg || gcfg->redis.kind != REDIS_SENTINEL)
        return;
    static _Atomic uint64_t last_ns;
    uint64_t now = clock_mono_ns(), prev = atomic_load(&last_ns);
    if (now - prev < 1000000000u || !atomic_compare_exchange_strong(&last_ns, &prev, now))
        return; /* at most once a second */
    char host[256], addr[300];
    unsigned port = 0;
    unsigned tmo = (unsigned)gcfg->redis_timeout_ms;
    if (sentinel_resolve(&gcfg->redis, tmo < PING_TIMEOUT_MS ? tmo : PING_TIMEOUT_MS, host, sizeof host, &port) != 0)
        return;
    snprintf(addr, sizeof addr, "%s:%u", host, port);
    pthread_mutex_lock(&master_lock);
    int moved = master_addr[0] && strcmp(master_addr, addr) != 0;
    memcpy(master_addr, addr, sizeof addr);
    pthread_mutex_unlock(&master_lock);
    if (moved) {
        log_warn("redis_failover_seen", "master=%s", addr);
        atomic_fetch_add(&master_generation, 1);
    }
}

unsigned long store_generation(const struct store *s) { return s->generation; }
int store_connected(const struct store *s) { return s->ctx != NULL; }

void store_set_timeout(struct store *s, unsigned ms)
{
    s->cmd_timeout_ms = ms;
    if (s->ctx)
        redisSetTimeout(s->ctx, ms_tv(ms));
}

void store_reply_free(struct redisReply *r)
{
    if (r)
        freeReplyObject(r);
}

int store_ping(struct store *s, const char **why)
{
    *why = "ok";
    int err = ensure(s, 1);
    if (err) {
        *why = "cannot connect to Redis";
        return err;
    }
    struct timeval tv = ms_tv(PING_TIMEOUT_MS < s->cmd_timeout_ms ? PING_TIMEOUT_MS : s->cmd_timeout_ms);
    redisSetTimeout(s->ctx, tv);
    const char *argv[] = {"PING"};
    redisReply *r = NULL;
    err = store_command(s, &r, 1, argv, NULL);
    if (s->ctx)
        redisSetTimeout(s->ctx, ms_tv(s->cmd_timeout_ms));
    if (err) {
        *why = "Redis did not answer PING";
        return err;
    }
    int ok = r->type == REDIS_REPLY_STATUS && strcasecmp(r->str, "PONG") == 0;
    if (!ok)
        *why = r->type == REDIS_REPLY_ERROR ? "Redis answered PING with an error" : "unexpected PING reply";
    freeReplyObject(r);
    return ok ? T_OK : T_ERR_UNAVAILABLE;
}

/* ---- customer id cache: saves a round trip per context fetch ---- */

#define CUST_CACHE_SLOTS 4096 /* ~1 MB; a miss only costs one extra round trip */

struct cust_slot {
    char conv[ID_MAX_LEN + 1];
    char cust[ID_MAX_LEN + 1];
};
static struct cust_slot cust_cache[CUST_CACHE_SLOTS];
static pthread_mutex_t cust_lock = PTHREAD_MUTEX_INITIALIZER;

static size_t slot_of(const char *conv) { return (size_t)(hash_str(conv) % CUST_CACHE_SLOTS); }

static int cust_cache_get(const char *conv, char *cust)
{
    size_t i = slot_of(conv);
    pthread_mutex_lock(&cust_lock);
    int hit = strcmp(cust_cache[i].conv, conv) == 0;
    if (hit)
        strcpy(cust, cust_cache[i].cust);
    pthread_mutex_unlock(&cust_lock);
    return hit;
}

static void cust_cache_put(const char *conv, const char *cust)
{
    size_t i = slot_of(conv);
    pthread_mutex_lock(&cust_lock);
    strcpy(cust_cache[i].conv, conv);
    strcpy(cust_cache[i].cust, cust ? cust : "");
    pthread_mutex_unlock(&cust_lock);
}

/* ---- reply parsing into the context ---- */

static const char *dup_reply(struct context *c, const redisReply *r)
{
    return context_strdup_utf8(&c->arena, r->str, r->len);
}

int store_kv_from_hash(struct arena *a, const struct redisReply *r, struct ctx_kv **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (r->type != REDIS_REPLY_ARRAY || r->elements % 2)
        return r->type == REDIS_REPLY_ARRAY ? T_ERR_INTERNAL : T_OK;
    size_t pairs = r->elements / 2;
    if (!pairs)
        return T_OK;
    struct ctx_kv *kv = arena_alloc(a, pairs * sizeof *kv);
    if (!kv)
        return T_ERR_NOMEM;
    for (size_t i = 0; i < pairs; i++) {
        const redisReply *k = r->element[2 * i], *v = r->element[2 * i + 1];
        if (k->type != REDIS_REPLY_STRING || v->type != REDIS_REPLY_STRING)
            continue;
        kv[*n].key = context_strdup_utf8(a, k->str, k->len);
        kv[*n].value = context_strdup_utf8(a, v->str, v->len);
        if (!kv[*n].key || !kv[*n].value)
            return T_ERR_NOMEM;
        (*n)++;
    }
    *out = kv;
    return T_OK;
}

/* A stream entry is [id, [field, value, ...]]; calls fn for each field. */
static const redisReply *entry_fields(const redisReply *e, const char **id)
{
    if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 || e->element[0]->type != REDIS_REPLY_STRING ||
        e->element[0]->len >= STREAM_ID_MAX)
        return NULL;
    *id = e->element[0]->str;
    const redisReply *f = e->element[1];
    return (f->type == REDIS_REPLY_ARRAY && f->elements % 2 == 0) ? f : NULL;
}

static int64_t parse_ms(const char *s, size_t n)
{
    int64_t v = 0;
    if (n == 0 || n > 18)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

static int parse_messages(struct context *c, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY)
        return T_ERR_INTERNAL;
    if (!r->elements)
        return T_OK;
    c->messages = arena_alloc(&c->arena, r->elements * sizeof *c->messages);
    if (!c->messages)
        return T_ERR_NOMEM;
    /* XREVRANGE gives newest first; the model keeps oldest first. */
    for (size_t k = r->elements; k-- > 0;) {
        const char *id;
        const redisReply *f = entry_fields(r->element[k], &id);
        if (!f)
            continue;
        struct ctx_message *m = &c->messages[c->n_messages];
        memset(m, 0, sizeof *m);
        strcpy(m->id, id);
        m->text = "";
        m->role_name = "other";
        m->role = ROLE_OTHER;
        m->ts_ms = context_stream_id_ms(id);
        for (size_t i = 0; i < f->elements; i += 2) {
            const redisReply *fk = f->element[i], *fv = f->element[i + 1];
            if (fk->type != REDIS_REPLY_STRING || fv->type != REDIS_REPLY_STRING)
                continue;
            if (strcmp(fk->str, "text") == 0) {
                m->text = dup_reply(c, fv);
            } else if (strcmp(fk->str, "role") == 0) {
                m->role = context_role_from_name(fv->str);
                m->role_name = m->role == ROLE_OTHER ? dup_reply(c, fv) : context_role_name(m->role);
            } else if (strcmp(fk->str, "author") == 0) {
                if (!(m->author = dup_reply(c, fv)))
                    return T_ERR_NOMEM;
            } else if (strcmp(fk->str, "ts") == 0) {
                int64_t ts = parse_ms(fv->str, fv->len);
                if (ts >= 0)
                    m->ts_ms = ts;
            }
            if (!m->text || !m->role_name)
                return T_ERR_NOMEM;
        }
        c->n_messages++;
    }
    if (c->n_messages)
        strcpy(c->newest_id, c->messages[c->n_messages - 1].id);
    return T_OK;
}

static int parse_history(struct context *c, const redisReply *r)
{
    if (r->type != REDIS_REPLY_ARRAY || !r->elements)
        return T_OK;
    c->history = arena_alloc(&c->arena, r->elements * sizeof *c->history);
    if (!c->history)
        return T_ERR_NOMEM;
    for (size_t k = 0; k < r->elements; k++) {
        const char *id;
        const redisReply *f = entry_fields(r->element[k], &id);
        if (!f)
            continue;
        struct ctx_history *h = &c->history[c->n_history];
        strcpy(h->id, id);
        h->ts_ms = context_stream_id_ms(id);
        h->conv_id = h->summary = h->outcome = h->tags = "";
        for (size_t i = 0; i < f->elements; i += 2) {
            const redisReply *fk = f->element[i], *fv = f->element[i + 1];
            if (fk->type != REDIS_REPLY_STRING || fv->type != REDIS_REPLY_STRING)
                continue;
            const char **dst = strcmp(fk->str, "conv_id") == 0   ? &h->conv_id
                               : strcmp(fk->str, "summary") == 0 ? &h->summary
                               : strcmp(fk->str, "outcome") == 0 ? &h->outcome
                               : strcmp(fk->str, "tags") == 0    ? &h->tags
                                                                 : NULL;
            if (dst && !(*dst = dup_reply(c, fv)))
                return T_ERR_NOMEM;
        }
        c->n_history++;
    }
    return T_OK;
}

int store_fetch_context(struct store *s, const char *conv_id, size_t window, size_t history, struct context **out)
{
    return store_fetch_context_until(s, conv_id, NULL, window, history, out);
}

int store_fetch_context_until(struct store *s, const char *conv_id, const char *until_id, size_t window,
                              size_t history, struct context **out)
{
    *out = NULL;
    char kmsgs[KEY_MAX], kmeta[KEY_MAX], kprof[KEY_MAX], khist[KEY_MAX];
    char cust[ID_MAX_LEN + 1] = "", count[24], hcount[24];
    if (!context_valid_id(conv_id) || store_key_conv(kmsgs, sizeof kmsgs, conv_id, "msgs") < 0 ||
        store_key_conv(kmeta, sizeof kmeta, conv_id, "meta") < 0)
        return T_ERR_BAD_ID;
    snprintf(count, sizeof count, "%zu", window);
    snprintf(hcount, sizeof hcount, "%zu", history ? history : 1);
    int have_cust = cust_cache_get(conv_id, cust) && cust[0];
    if (have_cust && (store_key_cust(kprof, sizeof kprof, cust, "profile") < 0 ||
                      store_key_cust(khist, sizeof khist, cust, "history") < 0))
        have_cust = 0;

    const char *a_exists[] = {"EXISTS", kmsgs};
    if (until_id && !context_valid_stream_id(until_id))
        return T_ERR_BAD_REQUEST;
    const char *a_msgs[] = {"XREVRANGE", kmsgs, until_id ? until_id : "+", "-", "COUNT", count};
    const char *a_meta[] = {"HGETALL", kmeta};
    const char *a_prof[] = {"HGETALL", kprof};
    const char *a_hist[] = {"XREVRANGE", khist, "+", "-", "COUNT", hcount};
    int argcs[5] = {2, 6, 2, 2, 6};
    const char **argvs[5] = {a_exists, a_msgs, a_meta, a_prof, a_hist};
    const size_t *lens[5] = {NULL, NULL, NULL, NULL, NULL};
    redisReply *rep[5] = {NULL, NULL, NULL, NULL, NULL};
    size_t n = have_cust ? 5 : 3;
    struct context *c = NULL;

    int err = store_pipeline(s, n, argcs, argvs, lens, rep);
    if (err)
        goto out;
    for (size_t i = 0; i < 3; i++)
        if (rep[i]->type == REDIS_REPLY_ERROR) {
            /* e.g. WRONGTYPE: a connector wrote something else under our key */
            log_warn("redis_error_reply", "conv=%s cmd=%s key=%s", conv_id, argvs[i][0], i == 2 ? "meta" : "msgs");
            atomic_fetch_add(&stat_errors, 1);
            if (i < 2) {
                err = T_ERR_INTERNAL;
                goto out;
            }
        }
    if (rep[0]->type != REDIS_REPLY_INTEGER || rep[0]->integer == 0) {
        err = T_ERR_CONV_NOT_FOUND;
        goto out;
    }
    c = context_new(conv_id);
    if (!c) {
        err = T_ERR_NOMEM;
        goto out;
    }
    err = parse_messages(c, rep[1]);
    if (!err) /* a wrongly typed meta (an error reply) reads as none, like the customer keys */
        err = store_kv_from_hash(&c->arena, rep[2], &c->meta, &c->n_meta);
    if (err)
        goto out;
    const char *meta_cust = context_meta(c, "customer_id");
    if (meta_cust && !context_valid_id(meta_cust))
        meta_cust = NULL; /* a connector wrote garbage: treat as unknown customer */
    c->customer_id = meta_cust;
    if (!meta_cust || strcmp(meta_cust, cust) != 0 || !have_cust) {
        /* customer unknown or changed: second round trip (and remember it for next time) */
        cust_cache_put(conv_id, meta_cust);
        if (n == 5) {
            freeReplyObject(rep[3]);
            freeReplyObject(rep[4]);
            rep[3] = rep[4] = NULL;
        }
        n = 3;
        if (meta_cust) {
            store_key_cust(kprof, sizeof kprof, meta_cust, "profile");
            store_key_cust(khist, sizeof khist, meta_cust, "history");
            err = store_pipeline(s, 2, argcs + 3, argvs + 3, lens + 3, rep + 3);
            if (err)
                goto out;
            n = 5;
        }
    }
    if (n == 5) {
        /* A wrongly typed customer key degrades to "no profile/history" rather than failing. */
        err = store_kv_from_hash(&c->arena, rep[3], &c->profile, &c->n_profile);
        if (!err && history && rep[4]->type == REDIS_REPLY_ARRAY)
            err = parse_history(c, rep[4]);
    }
out:
    for (size_t i = 0; i < 5; i++)
        if (rep[i])
            freeReplyObject(rep[i]);
    if (err) {
        context_free(c);
        return err;
    }
    *out = c;
    return T_OK;
}
