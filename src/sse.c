/* Server-Sent Events hub: per-conversation subscriber lists, refcounted shared events, bounded
 * per-subscriber queues, suspend/resume so an idle stream costs no CPU.
 *
 * Locking: hub_lock guards the lists; each subscriber's lock guards its queue and flags. MHD is
 * never called with hub_lock held. A suspended connection cannot be closed by MHD, so whoever
 * flips `suspended` from 1 to 0 owns the one MHD_resume_connection() call for it. */
#include "tandem/hash.h"
#include "tandem/sse.h"
#include "tandem/context.h"
#include "tandem/error.h"
#include "tandem/log.h"
#include "tandem/metrics.h"

#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define HUB_BUCKETS 1024

struct sse_event {
    atomic_uint refs;
    char id[STREAM_ID_MAX]; /* "" for comments and id-less events */
    int update;             /* sse_event_mark_update */
    size_t len;
    char data[];
};

#define SUB_QUEUE_START 8

struct sub {
    atomic_uint refs;
    pthread_mutex_t lock;
    struct MHD_Connection *conn;
    struct conv_entry *entry;
    struct sub *prev, *next;
    /* ring of queued events: starts in small[] and doubles up to SSE_MAX_QUEUED_EVENTS, since
     * nearly every stream is idle with nothing queued and 1,000 of them must stay small */
    struct sse_event **q;
    size_t cap, head, count, offset, bytes;
    int suspended, closing, dead;
    char after_id[STREAM_ID_MAX]; /* events with ids up to this are covered by the snapshot */
    struct request *req;
    struct sse_event *small[SUB_QUEUE_START];
};

struct conv_entry {
    char id[ID_MAX_LEN + 1];
    struct sub *subs;
    size_t n;
    struct conv_entry *next;
};

static pthread_mutex_t hub_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conv_entry *buckets[HUB_BUCKETS];
static size_t total_subs;
static int shutting_down;
static sse_watch_fn watch_hook;
static atomic_ulong stat_events, stat_dropped, stat_opened;

/* ---- events ---- */

static struct sse_event *event_alloc(size_t len)
{
    struct sse_event *ev = malloc(sizeof *ev + len + 1);
    if (!ev)
        return NULL;
    atomic_init(&ev->refs, 1);
    ev->id[0] = '\0';
    ev->update = 0;
    ev->len = len;
    return ev;
}

/* A stream whose state is at after_id has seen ev already: ev is older, or of that same state
 * and not an update of it (sse_event_mark_update). */
static int covered(const char *after_id, const struct sse_event *ev)
{
    if (!ev->id[0] || !after_id || !after_id[0])
        return 0;
    int cmp = context_stream_id_cmp(ev->id, after_id);
    return cmp < 0 || (cmp == 0 && !ev->update);
}

static int one_line(const char *s, size_t n) { return !memchr(s, '\n', n) && !memchr(s, '\r', n); }

struct sse_event *sse_event_new(const char *name, const char *id, const char *data, size_t len)
{
    if (!one_line(data, len) || !one_line(name, strlen(name)) || (id && (!one_line(id, strlen(id)) || strlen(id) >= STREAM_ID_MAX)))
        return NULL;
    size_t need = len + strlen(name) + (id ? strlen(id) : 0) + 32;
    struct sse_event *ev = event_alloc(need);
    if (!ev)
        return NULL;
    int n = id ? snprintf(ev->data, need + 1, "id: %s\nevent: %s\ndata: ", id, name)
               : snprintf(ev->data, need + 1, "event: %s\ndata: ", name);
    memcpy(ev->data + n, data, len);
    memcpy(ev->data + (size_t)n + len, "\n\n", 3);
    if (id)
        strcpy(ev->id, id);
    ev->len = (size_t)n + len + 2;
    return ev;
}

struct sse_event *sse_comment_new(const char *text)
{
    size_t tl = strlen(text);
    if (!one_line(text, tl))
        return NULL;
    struct sse_event *ev = event_alloc(tl + 4);
    if (!ev)
        return NULL;
    ev->len = (size_t)snprintf(ev->data, tl + 5, ": %s\n\n", text);
    return ev;
}

static struct sse_event *event_ref(struct sse_event *ev)
{
    atomic_fetch_add(&ev->refs, 1);
    return ev;
}

struct sse_event *sse_event_ref(struct sse_event *ev) { return event_ref(ev); }

void sse_event_unref(struct sse_event *ev)
{
    if (ev && atomic_fetch_sub(&ev->refs, 1) == 1)
        free(ev);
}

/* ---- subscribers ---- */

static void sub_unref(struct sub *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    for (size_t i = 0; i < s->count; i++)
        sse_event_unref(s->q[(s->head + i) % s->cap]);
    if (s->q != s->small)
        free(s->q);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Caller holds s->lock. Doubles the ring when it is full; 0 when it is at its cap or out of
 * memory (either way the subscriber is too far behind to keep). */
static int sub_queue_room(struct sub *s)
{
    if (s->count < s->cap)
        return 1;
    if (s->cap >= SSE_MAX_QUEUED_EVENTS)
        return 0;
    size_t cap = s->cap * 2;
    struct sse_event **q = malloc(cap * sizeof *q);
    if (!q)
        return 0;
    for (size_t i = 0; i < s->count; i++)
        q[i] = s->q[(s->head + i) % s->cap];
    if (s->q != s->small)
        free(s->q);
    s->q = q;
    s->cap = cap;
    s->head = 0;
    return 1;
}

/* Caller holds s->lock. Returns 1 when the caller must resume the connection (after unlocking). */
static int sub_push_locked(struct sub *s, struct sse_event *ev)
{
    if (s->dead || s->closing)
        return 0;
    if (s->bytes + ev->len > SSE_MAX_QUEUED_BYTES || !sub_queue_room(s)) {
        /* too far behind: drop the backlog, tell the client why, end the stream */
        /* ...but finish the event the client already has the first bytes of */
        size_t keep = s->count && s->offset ? 1 : 0;
        for (size_t i = keep; i < s->count; i++)
            sse_event_unref(s->q[(s->head + i) % s->cap]);
        s->count = keep;
        s->bytes = keep ? s->q[s->head]->len : 0;
        if (!keep)
            s->head = s->offset = 0;
        static const char msg[] = "{\"error\":{\"code\":\"slow_consumer\",\"message\":\"the client fell too far "
                                  "behind; reconnect with Last-Event-ID to resume\"}}";
        struct sse_event *bye = sse_event_new("error", NULL, msg, sizeof msg - 1);
        if (bye) {
            s->q[(s->head + s->count) % s->cap] = bye; /* cap >= 2 > keep: there is room */
            s->count++;
            s->bytes += bye->len;
        }
        s->closing = 1;
        atomic_fetch_add(&stat_dropped, 1);
        log_warn("sse_slow_consumer", "conv=%s", s->entry ? s->entry->id : "-");
    } else {
        s->q[(s->head + s->count) % s->cap] = event_ref(ev);
        s->count++;
        s->bytes += ev->len;
    }
    if (s->suspended) {
        s->suspended = 0;
        return 1;
    }
    return 0;
}

static ssize_t reader(void *cls, uint64_t pos, char *out, size_t max)
{
    (void)pos;
    struct sub *s = cls;
    size_t n = 0;
    pthread_mutex_lock(&s->lock);
    while (s->count && n < max) {
        struct sse_event *ev = s->q[s->head];
        size_t take = ev->len - s->offset;
        if (take > max - n)
            take = max - n;
        memcpy(out + n, ev->data + s->offset, take);
        n += take;
        s->offset += take;
        if (s->offset == ev->len) {
            s->bytes -= ev->len;
            sse_event_unref(ev);
            s->head = (s->head + 1) % s->cap;
            s->count--;
            s->offset = 0;
        }
    }
    if (n) {
        pthread_mutex_unlock(&s->lock);
        return (ssize_t)n;
    }
    if (s->closing) {
        pthread_mutex_unlock(&s->lock);
        return MHD_CONTENT_READER_END_OF_STREAM;
    }
    /* Nothing to send: park the connection until sub_push_locked() wakes it. */
    s->suspended = 1;
    MHD_suspend_connection(s->conn);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static size_t bucket_of(const char *id) { return (size_t)(hash_str(id) % HUB_BUCKETS); }

static struct conv_entry *entry_find(const char *id, struct conv_entry ***link)
{
    struct conv_entry **pp = &buckets[bucket_of(id)];
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->id, id) == 0)
            break;
    if (link)
        *link = pp;
    return *pp;
}

/* MHD destroys the response when the connection is done: unsubscribe. */
static void sub_closed(void *cls)
{
    struct sub *s = cls;
    char gone[ID_MAX_LEN + 1] = "";
    pthread_mutex_lock(&hub_lock);
    struct conv_entry *e = s->entry;
    if (e) {
        if (s->prev)
            s->prev->next = s->next;
        else
            e->subs = s->next;
        if (s->next)
            s->next->prev = s->prev;
        total_subs--;
        if (--e->n == 0) {
            struct conv_entry **link;
            entry_find(e->id, &link);
            *link = e->next;
            memcpy(gone, e->id, sizeof gone);
            free(e);
        }
        s->entry = NULL;
    }
    pthread_mutex_unlock(&hub_lock);
    pthread_mutex_lock(&s->lock);
    s->dead = 1;
    s->req = NULL;
    pthread_mutex_unlock(&s->lock);
    if (gone[0] && watch_hook)
        watch_hook(gone, NULL, 0);
    sub_unref(s);
}

int sse_subscribe(struct request *req, const char *conv_id, struct sse_sub **out)
{
    *out = NULL;
    struct sub *s = calloc(1, sizeof *s);
    if (!s)
        return T_ERR_NOMEM;
    atomic_init(&s->refs, 1);
    pthread_mutex_init(&s->lock, NULL);
    s->q = s->small;
    s->cap = SUB_QUEUE_START;
    s->conn = req->conn;
    s->req = req;
    struct MHD_Response *resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, SSE_BLOCK_SIZE, reader, s, sub_closed);
    if (!resp) {
        sub_unref(s);
        return T_ERR_NOMEM;
    }
    pthread_mutex_lock(&hub_lock);
    if (shutting_down) {
        pthread_mutex_unlock(&hub_lock);
        MHD_destroy_response(resp); /* calls sub_closed: not linked, just freed */
        return T_ERR_SHUTTING_DOWN;
    }
    struct conv_entry **link;
    struct conv_entry *e = entry_find(conv_id, &link);
    if (!e) {
        e = calloc(1, sizeof *e);
        if (!e) {
            pthread_mutex_unlock(&hub_lock);
            MHD_destroy_response(resp);
            return T_ERR_NOMEM;
        }
        snprintf(e->id, sizeof e->id, "%s", conv_id);
        *link = e;
    }
    s->entry = e;
    s->next = e->subs;
    if (e->subs)
        e->subs->prev = s;
    e->subs = s;
    e->n++;
    total_subs++;
    pthread_mutex_unlock(&hub_lock);
    req->response = resp;
    req->status = 200;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream; charset=utf-8");
    MHD_add_response_header(resp, "X-Accel-Buffering", "no");
    *out = (struct sse_sub *)s;
    return T_OK;
}

void sse_start(struct sse_sub *sub, const char *from_id, struct sse_event *const *initial, size_t n)
{
    struct sub *s = (struct sub *)sub;
    char retry[32];
    snprintf(retry, sizeof retry, "retry: %d\n\n", SSE_RETRY_MS);
    struct sse_event *hint = event_alloc(strlen(retry));
    pthread_mutex_lock(&s->lock);
    /* keep what was published while the snapshot was computed, minus what it covers */
    struct sse_event *kept[SSE_MAX_QUEUED_EVENTS];
    size_t nk = 0;
    for (size_t i = 0; i < s->count; i++) {
        struct sse_event *ev = s->q[(s->head + i) % s->cap];
        if (covered(from_id, ev))
            sse_event_unref(ev);
        else
            kept[nk++] = ev;
    }
    s->head = s->count = s->offset = s->bytes = 0;
    snprintf(s->after_id, sizeof s->after_id, "%s", from_id ? from_id : "");
    if (hint) {
        memcpy(hint->data, retry, hint->len + 1);
        sub_push_locked(s, hint);
        sse_event_unref(hint);
    }
    for (size_t i = 0; i < n; i++)
        if (initial[i] && s->count + nk + 1 < SSE_MAX_QUEUED_EVENTS)
            sub_push_locked(s, initial[i]);
    for (size_t i = 0; i < nk; i++) {
        sub_push_locked(s, kept[i]);
        sse_event_unref(kept[i]);
    }
    char conv[ID_MAX_LEN + 1] = "";
    if (s->entry)
        memcpy(conv, s->entry->id, sizeof conv);
    pthread_mutex_unlock(&s->lock);
    http_mark_streaming(s->req);
    atomic_fetch_add(&stat_opened, 1);
    if (watch_hook && conv[0])
        watch_hook(conv, from_id ? from_id : "", 1);
}

void sse_abort(struct request *req)
{
    if (req->response) {
        MHD_destroy_response(req->response); /* sub_closed() unlinks and frees */
        req->response = NULL;
        req->status = 0;
    }
}

static size_t collect_entry(struct conv_entry *e, struct sub **arr, size_t n, size_t cap)
{
    for (struct sub *s = e->subs; s && n < cap; s = s->next) {
        atomic_fetch_add(&s->refs, 1);
        arr[n++] = s;
    }
    return n;
}

/* Referenced subscribers of one conversation (or of all when conv_id is NULL), taken under
 * hub_lock so that they can be used after it is released. Free the array, unref each. */
static struct sub **collect(const char *conv_id, size_t *n_out)
{
    *n_out = 0;
    pthread_mutex_lock(&hub_lock);
    struct conv_entry *one = conv_id ? entry_find(conv_id, NULL) : NULL;
    size_t cap = conv_id ? (one ? one->n : 0) : total_subs;
    struct sub **arr = cap ? malloc(cap * sizeof *arr) : NULL;
    size_t n = 0;
    if (arr && one) {
        n = collect_entry(one, arr, 0, cap);
    } else if (arr) {
        for (size_t b = 0; b < HUB_BUCKETS; b++)
            for (struct conv_entry *e = buckets[b]; e; e = e->next)
                n = collect_entry(e, arr, n, cap);
    }
    pthread_mutex_unlock(&hub_lock);
    *n_out = n;
    return arr;
}

void sse_event_mark_update(struct sse_event *ev) { ev->update = 1; }

size_t sse_publish(const char *conv_id, struct sse_event *ev)
{
    size_t n;
    struct sub **arr = collect(conv_id, &n);
    size_t reached = 0;
    for (size_t i = 0; i < n; i++) {
        struct sub *s = arr[i];
        pthread_mutex_lock(&s->lock);
        int seen = covered(s->after_id, ev);
        int alive = !s->dead && !s->closing && !seen;
        int wake = seen ? 0 : sub_push_locked(s, ev);
        pthread_mutex_unlock(&s->lock);
        if (wake)
            MHD_resume_connection(s->conn);
        reached += (size_t)alive;
        sub_unref(s);
    }
    free(arr);
    atomic_fetch_add(&stat_events, reached);
    return reached;
}

size_t sse_subscribers(const char *conv_id)
{
    pthread_mutex_lock(&hub_lock);
    struct conv_entry *e = entry_find(conv_id, NULL);
    size_t n = e ? e->n : 0;
    pthread_mutex_unlock(&hub_lock);
    return n;
}

size_t sse_subscribers_total(void)
{
    pthread_mutex_lock(&hub_lock);
    size_t n = total_subs;
    pthread_mutex_unlock(&hub_lock);
    return n;
}

void sse_set_watch_hook(sse_watch_fn fn) { watch_hook = fn; }

static int render_metrics(struct buf *out)
{
    int err = metrics_header(out, "tandem_sse_subscribers", "gauge", "Open event streams.");
    if (!err)
        err = buf_printf(out, "tandem_sse_subscribers %zu\n", sse_subscribers_total());
    if (!err)
        err = metrics_header(out, "tandem_sse_streams_opened_total", "counter", "Event streams opened.");
    if (!err)
        err = buf_printf(out, "tandem_sse_streams_opened_total %lu\n", atomic_load(&stat_opened));
    if (!err)
        err = metrics_header(out, "tandem_sse_events_total", "counter", "Events queued to subscribers.");
    if (!err)
        err = buf_printf(out, "tandem_sse_events_total %lu\n", atomic_load(&stat_events));
    if (!err)
        err = metrics_header(out, "tandem_sse_dropped_total", "counter", "Subscribers dropped for falling behind.");
    if (!err)
        err = buf_printf(out, "tandem_sse_dropped_total %lu\n", atomic_load(&stat_dropped));
    return err;
}

void sse_init(void)
{
    static int registered;
    if (!registered) {
        metrics_register(render_metrics);
        registered = 1;
    }
    pthread_mutex_lock(&hub_lock);
    shutting_down = 0;
    pthread_mutex_unlock(&hub_lock);
}

void sse_shutdown(void)
{
    pthread_mutex_lock(&hub_lock);
    shutting_down = 1;
    pthread_mutex_unlock(&hub_lock);
    size_t n;
    struct sub **arr = collect(NULL, &n);
    for (size_t i = 0; i < n; i++) {
        struct sub *s = arr[i];
        pthread_mutex_lock(&s->lock);
        s->closing = 1;
        int wake = s->suspended && !s->dead;
        s->suspended = 0;
        pthread_mutex_unlock(&s->lock);
        if (wake)
            MHD_resume_connection(s->conn);
        sub_unref(s);
    }
    free(arr);
}

void sse_reap_disconnected(void)
{
    size_t n;
    struct sub **arr = collect(NULL, &n);
    struct pollfd *fds = n ? calloc(n, sizeof *fds) : NULL;
    for (size_t i = 0; fds && i < n; i++) {
        struct sub *s = arr[i];
        fds[i].fd = -1;
        pthread_mutex_lock(&s->lock);
        if (s->suspended && !s->dead) {
            const union MHD_ConnectionInfo *ci = MHD_get_connection_info(s->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
            if (ci)
                fds[i].fd = ci->connect_fd;
        }
        pthread_mutex_unlock(&s->lock);
        fds[i].events = POLLRDHUP;
    }
    if (fds && poll(fds, (nfds_t)n, 0) > 0) {
        for (size_t i = 0; i < n; i++) {
            if (fds[i].fd < 0 || !(fds[i].revents & (POLLRDHUP | POLLHUP | POLLERR)))
                continue;
            struct sub *s = arr[i];
            pthread_mutex_lock(&s->lock);
            int wake = s->suspended && !s->dead; /* still parked: the fd is still this client's */
            if (wake) {
                s->suspended = 0;
                s->closing = 1;
            }
            pthread_mutex_unlock(&s->lock);
            if (wake)
                MHD_resume_connection(s->conn);
        }
    }
    for (size_t i = 0; i < n; i++)
        sub_unref(arr[i]);
    free(fds);
    free(arr);
}

unsigned sse_wait_closed(unsigned ms)
{
    for (unsigned waited = 0;; waited += 10) {
        size_t n = sse_subscribers_total();
        if (!n || waited >= ms)
            return (unsigned)n;
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
}
