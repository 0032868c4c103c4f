/* Unit tests for metrics: counter values, cumulative histogram buckets, and promtool's verdict. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tandem/buf.h"
#include "tandem/error.h"
#include "tandem/metrics.h"

#define PROMTOOL "/usr/bin/promtool"

static const char *const routes[] = {"healthz", "readyz", "context", "focus_put"};

#define US 1000ull      /* ns per microsecond */
#define MS 1000000ull   /* ns per millisecond */
#define SEC 1000000000ull

/* What every test below observes, once (the counters are process-wide). */
static const struct obs {
    int route;
    const char *method;
    unsigned status;
    uint64_t ns;
} observations[] = {
    {0, "GET", 200, 50 * US},      /* healthz: le 0.0001 */
    {0, "GET", 200, 100 * US},     /* exactly on a bound: counts in that bucket (le = less or equal) */
    {0, "GET", 200, 300 * US},     /* le 0.0005 */
    {0, "GET", 503, 2 * MS},       /* le 0.0025 */
    {0, "HEAD", 200, 1 * MS},      /* le 0.001 */
    {2, "GET", 404, 20 * SEC},     /* context: past the top bound, only +Inf */
    {2, "GET", 200, 7 * MS},       /* le 0.01 */
    {3, "PUT", 200, 400 * MS},     /* focus_put: le 0.5 */
    {-1, "GET", 404, 1 * MS},      /* unmatched */
    {99, "BREW", 418, 1 * US},     /* out-of-range route, odd method and status */
};

static int custom_renderer(struct buf *out)
{
    int err = metrics_header(out, "tandem_test_widgets_total", "counter", "Widgets made by the test.");
    if (!err)
        err = buf_printf(out, "tandem_test_widgets_total 42\n");
    return err;
}

static char *exposition;

static int group_setup(void **state)
{
    (void)state;
    metrics_init(routes, sizeof routes / sizeof routes[0]);
    metrics_register(custom_renderer);
    for (size_t i = 0; i < sizeof observations / sizeof observations[0]; i++)
        metrics_observe_request(observations[i].route, observations[i].method, observations[i].status,
                                observations[i].ns);
    struct buf b;
    buf_init(&b, 1 << 20);
    if (metrics_render(&b) != T_OK)
        return -1;
    exposition = buf_take(&b);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(exposition);
    return 0;
}

/* The value of the sample whose name+labels are exactly `series`; -1 when absent. */
static double sample(const char *series)
{
    size_t n = strlen(series);
    for (const char *p = exposition; p && *p;) {
        const char *eol = strchr(p, '\n');
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = eol ? eol + 1 : NULL;
    }
    return -1;
}

static size_t count_lines_starting(const char *prefix)
{
    size_t n = 0, pl = strlen(prefix);
    for (const char *p = exposition; p && *p;) {
        if (strncmp(p, prefix, pl) == 0)
            n++;
        const char *eol = strchr(p, '\n');
        p = eol ? eol + 1 : NULL;
    }
    return n;
}

static void test_request_counters(void **state)
{
    (void)state;
    struct {
        const char *series;
        double value;
    } cases[] = {
        {"tandem_http_requests_total{route=\"healthz\",method=\"GET\",code=\"200\"}", 3},
        {"tandem_http_requests_total{route=\"healthz\",method=\"GET\",code=\"503\"}", 1},
        {"tandem_http_requests_total{route=\"healthz\",method=\"HEAD\",code=\"200\"}", 1},
        {"tandem_http_requests_total{route=\"context\",method=\"GET\",code=\"404\"}", 1},
        {"tandem_http_requests_total{route=\"context\",method=\"GET\",code=\"200\"}", 1},
        {"tandem_http_requests_total{route=\"focus_put\",method=\"PUT\",code=\"200\"}", 1},
        {"tandem_http_requests_total{route=\"unmatched\",method=\"GET\",code=\"404\"}", 1},
        {"tandem_http_requests_total{route=\"unmatched\",method=\"other\",code=\"other\"}", 1},
        /* never observed: no series at all */
        {"tandem_http_requests_total{route=\"readyz\",method=\"GET\",code=\"200\"}", -1},
        {"tandem_http_requests_total{route=\"healthz\",method=\"POST\",code=\"200\"}", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        double v = sample(cases[i].series);
        if (v != cases[i].value)
            fail_msg("%s = %g, expected %g\n%s", cases[i].series, v, cases[i].value, exposition);
    }
    assert_int_equal(count_lines_starting("# TYPE tandem_http_requests_total counter\n"), 1);
    assert_int_equal(count_lines_starting("# HELP tandem_http_requests_total "), 1);
}

static void test_histogram_buckets(void **state)
{
    (void)state;
    /* cumulative counts per upper bound, worked out by hand from `observations` */
    struct {
        const char *route;
        const char *le;
        double count;
    } cases[] = {
        {"healthz", "0.0001", 2},  {"healthz", "0.00025", 2}, {"healthz", "0.0005", 3}, {"healthz", "0.001", 4},
        {"healthz", "0.0025", 5},  {"healthz", "0.005", 5},   {"healthz", "1", 5},      {"healthz", "10", 5},
        {"healthz", "+Inf", 5},
        {"context", "0.005", 0},   {"context", "0.01", 1},    {"context", "10", 1},     {"context", "+Inf", 2},
        {"focus_put", "0.25", 0},  {"focus_put", "0.5", 1},   {"focus_put", "+Inf", 1},
        {"unmatched", "0.0001", 1}, {"unmatched", "0.001", 2}, {"unmatched", "+Inf", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char series[200];
        snprintf(series, sizeof series, "tandem_http_request_duration_seconds_bucket{route=\"%s\",le=\"%s\"}",
                 cases[i].route, cases[i].le);
        double v = sample(series);
        if (v != cases[i].count)
            fail_msg("%s = %g, expected %g\n%s", series, v, cases[i].count, exposition);
    }
    assert_true(sample("tandem_http_request_duration_seconds_count{route=\"healthz\"}") == 5);
    assert_true(sample("tandem_http_request_duration_seconds_count{route=\"context\"}") == 2);
    double sum = sample("tandem_http_request_duration_seconds_sum{route=\"healthz\"}");
    /* 50us + 100us + 300us + 2ms + 1ms */
    assert_true(sum > 0.003449 && sum < 0.003451);
    double csum = sample("tandem_http_request_duration_seconds_sum{route=\"context\"}");
    assert_true(csum > 20.006999 && csum < 20.007001);
    /* a route never seen has no histogram series */
    assert_true(sample("tandem_http_request_duration_seconds_count{route=\"readyz\"}") == -1);
    assert_int_equal(count_lines_starting("# TYPE tandem_http_request_duration_seconds histogram\n"), 1);
}

/* Buckets must be non-decreasing in le order, ending at _count. */
static void test_histogram_is_cumulative(void **state)
{
    (void)state;
    const char *rs[] = {"healthz", "context", "focus_put", "unmatched"};
    for (size_t r = 0; r < sizeof rs / sizeof rs[0]; r++) {
        char prefix[160];
        int pl = snprintf(prefix, sizeof prefix, "tandem_http_request_duration_seconds_bucket{route=\"%s\",le=\"", rs[r]);
        double prev = -1, last = -1, prev_le = -1;
        size_t n = 0;
        for (const char *p = exposition; p && *p;) {
            const char *eol = strchr(p, '\n');
            if (strncmp(p, prefix, (size_t)pl) == 0) {
                const char *le = p + pl;
                double lev = strncmp(le, "+Inf", 4) == 0 ? 1e300 : strtod(le, NULL);
                const char *sp = strchr(le, ' ');
                double v = strtod(sp + 1, NULL);
                assert_true(lev > prev_le);
                assert_true(v >= prev);
                prev = last = v;
                prev_le = lev;
                n++;
            }
            p = eol ? eol + 1 : NULL;
        }
        assert_int_equal(n, 17); /* 16 bounds + +Inf */
        char cnt[128];
        snprintf(cnt, sizeof cnt, "tandem_http_request_duration_seconds_count{route=\"%s\"}", rs[r]);
        assert_true(sample(cnt) == last);
    }
}

static void test_other_families(void **state)
{
    (void)state;
    assert_true(sample("tandem_redis_errors_total") >= 0);
    assert_true(sample("tandem_redis_reconnects_total") >= 0);
    assert_int_equal(count_lines_starting("tandem_build_info{version=\""), 1);
    assert_true(sample("tandem_process_start_time_seconds") > 1.6e9);
    assert_true(sample("tandem_test_widgets_total") == 42); /* registered renderer appended */
    assert_int_equal(count_lines_starting("# TYPE tandem_test_widgets_total counter\n"), 1);
    /* every line is a comment or a sample; the text ends with a newline */
    size_t len = strlen(exposition);
    assert_true(len > 0 && exposition[len - 1] == '\n');
    assert_null(strstr(exposition, "\n\n"));
}

static void test_render_cap(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b, 100);
    assert_int_equal(metrics_render(&b), T_ERR_TOO_LARGE);
    buf_cleanup(&b);
}

static void test_promtool(void **state)
{
    (void)state;
    if (access(PROMTOOL, X_OK) != 0)
        skip();
    char path[] = "/tmp/tandem-test-metrics-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(exposition);
    assert_int_equal(write(fd, exposition, len), (ssize_t)len);
    close(fd);
    char cmd[256], outpath[] = "/tmp/tandem-test-promtool-XXXXXX";
    int ofd = mkstemp(outpath);
    assert_true(ofd >= 0);
    close(ofd);
    snprintf(cmd, sizeof cmd, PROMTOOL " check metrics < %s > %s 2>&1", path, outpath);
    int st = system(cmd);
    char out[4096] = {0};
    FILE *f = fopen(outpath, "r");
    if (f) {
        size_t n = fread(out, 1, sizeof out - 1, f);
        out[n] = '\0';
        fclose(f);
    }
    unlink(path);
    unlink(outpath);
    if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("promtool check metrics failed (status %d):\n%s\n--- exposition ---\n%s", st, out, exposition);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_counters),
        cmocka_unit_test(test_histogram_buckets),
        cmocka_unit_test(test_histogram_is_cumulative),
        cmocka_unit_test(test_other_families),
        cmocka_unit_test(test_render_cap),
        cmocka_unit_test(test_promtool),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
