/* Prometheus exposition: lock-free counters and histograms per route, method and status. */
#include "tandem/metrics.h"
#include "tandem/error.h"
#include "tandem/store.h"

#include <stdatomic.h>
#include <string.h>
#include <time.h>

#ifndef TANDEM_VERSION
#define TANDEM_VERSION "0.0.0"
#endif
#ifndef TANDEM_GITREV
#define TANDEM_GITREV "unknown"
#endif

static const unsigned statuses[] = {200, 201, 202, 204, 206, 304, 400, 401, 403, 404, 405, 406, 408, 409,
                                    411, 413, 414, 415, 421, 429, 431, 500, 501, 503, 505};
#define N_STATUS (sizeof statuses / sizeof statuses[0] + 1) /* last: any other */
static const char *methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "other"};
#define N_METHODS (sizeof methods / sizeof methods[0])
/* seconds; sub-millisecond resolution because the targets are sub-millisecond */
static const double bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,     10};
#define N_BOUNDS (sizeof bounds / sizeof bounds[0])

struct route_stats {
    atomic_ulong count[N_METHODS][N_STATUS];
    atomic_ulong bucket[N_BOUNDS + 1]; /* non-cumulative; last = over the top bound */
    atomic_ullong sum_ns;
};

static struct route_stats stats[METRICS_MAX_ROUTES];
static const char *names[METRICS_MAX_ROUTES];
static unsigned n_names;
static metrics_render_fn renderers[16];
static unsigned n_renderers;
static time_t start_time;

void metrics_init(const char *const *route_names, unsigned n_routes)
{
    if (n_routes > METRICS_MAX_ROUTES - 1)
        n_routes = METRICS_MAX_ROUTES - 1;
    for (unsigned i = 0; i < n_routes; i++)
        names[i] = route_names[i];
    names[n_routes] = "unmatched";
    n_names = n_routes + 1;
    start_time = time(NULL);
}

void metrics_register(metrics_render_fn fn)
{
    if (n_renderers < sizeof renderers / sizeof renderers[0])
        renderers[n_renderers++] = fn;
}

static size_t status_index(unsigned status)
{
    for (size_t i = 0; i + 1 < N_STATUS; i++)
        if (statuses[i] == status)
            return i;
    return N_STATUS - 1;
}

static size_t method_index(const char *m)
{
    for (size_t i = 0; m && i + 1 < N_METHODS; i++)
        if (strcmp(methods[i], m) == 0)
            return i;
    return N_METHODS - 1;
}

void metrics_observe_request(int route, const char *method, unsigned status, uint64_t duration_ns)
{
    if (!n_names)
        return;
    unsigned r = (route < 0 || (unsigned)route >= n_names - 1) ? n_names - 1 : (unsigned)route;
    struct route_stats *st = &stats[r];
    atomic_fetch_add_explicit(&st->count[method_index(method)][status_index(status)], 1, memory_order_relaxed);
    double secs = (double)duration_ns / 1e9;
    size_t b = 0;
    while (b < N_BOUNDS && secs > bounds[b])
        b++;
    atomic_fetch_add_explicit(&st->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->sum_ns, duration_ns, memory_order_relaxed);
}

int metrics_header(struct buf *out, const char *name, const char *type, const char *help)
{
    return buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static const char *status_label(size_t i, char *tmp)
{
    if (i + 1 == N_STATUS)
        return "other";
    tmp[0] = (char)('0' + statuses[i] / 100);
    tmp[1] = (char)('0' + statuses[i] / 10 % 10);
    tmp[2] = (char)('0' + statuses[i] % 10);
    tmp[3] = '\0';
    return tmp;
}

int metrics_render(struct buf *out)
{
    int err = metrics_header(out, "tandem_http_requests_total", "counter", "HTTP requests by route, method and status code.");
    for (unsigned r = 0; !err && r < n_names; r++)
        for (size_t m = 0; m < N_METHODS; m++)
            for (size_t s = 0; s < N_STATUS && !err; s++) {
                unsigned long v = atomic_load_explicit(&stats[r].count[m][s], memory_order_relaxed);
                char tmp[4];
                if (v)
                    err = buf_printf(out, "tandem_http_requests_total{route=\"%s\",method=\"%s\",code=\"%s\"} %lu\n",
                                     names[r], methods[m], status_label(s, tmp), v);
            }
    if (!err)
        err = metrics_header(out, "tandem_http_request_duration_seconds", "histogram",
                             "Time from the request's arrival to its response, by route.");
    for (unsigned r = 0; !err && r < n_names; r++) {
        unsigned long cum = 0, counts[N_BOUNDS + 1];
        for (size_t b = 0; b <= N_BOUNDS; b++)
            cum += counts[b] = atomic_load_explicit(&stats[r].bucket[b], memory_order_relaxed);
        if (!cum)
            continue;
        unsigned long acc = 0;
        for (size_t b = 0; b < N_BOUNDS && !err; b++) {
            acc += counts[b];
            err = buf_printf(out, "tandem_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %lu\n",
                             names[r], bounds[b], acc);
        }
        if (!err)
            err = buf_printf(out,
                             "tandem_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %lu\n"
                             "tandem_http_request_duration_seconds_sum{route=\"%s\"} %.9f\n"
                             "tandem_http_request_duration_seconds_count{route=\"%s\"} %lu\n",
                             names[r], cum, names[r],
                             (double)atomic_load_explicit(&stats[r].sum_ns, memory_order_relaxed) / 1e9,
                             names[r], cum);
    }
    if (!err)
        err = metrics_header(out, "tandem_redis_errors_total", "counter", "Redis commands or connects that failed.");
    if (!err)
        err = buf_printf(out, "tandem_redis_errors_total %lu\n", store_stat_errors());
    if (!err)
        err = metrics_header(out, "tandem_redis_reconnects_total", "counter", "Redis connections (re)established.");
    if (!err)
        err = buf_printf(out, "tandem_redis_reconnects_total %lu\n", store_stat_reconnects());
    if (!err)
        err = metrics_header(out, "tandem_build_info", "gauge", "Version and revision of this build.");
    if (!err)
        err = buf_printf(out, "tandem_build_info{version=\"%s\",revision=\"%s\"} 1\n", TANDEM_VERSION, TANDEM_GITREV);
    if (!err)
        err = metrics_header(out, "tandem_process_start_time_seconds", "gauge", "Start time of the process, unix seconds.");
    if (!err)
        err = buf_printf(out, "tandem_process_start_time_seconds %lld\n", (long long)start_time);
    for (unsigned i = 0; !err && i < n_renderers; i++)
        err = renderers[i](out);
    return err;
}
