/* tandemd: configuration, signals, start-up and orderly shutdown. */
#include "tandem/alerts.h"
#include "tandem/api.h"
#include "tandem/app.h"
#include "tandem/events.h"
#include "tandem/kb.h"
#include "tandem/llm.h"
#include "tandem/memory.h"
#include "tandem/metrics.h"
#include "tandem/quality.h"
#include "tandem/text.h"
#include "tandem/watch.h"
#include "tandem/config.h"
#include "tandem/json_io.h"
#include "tandem/http.h"
#include "tandem/log.h"
#include "tandem/store.h"
#include "tandem/summary.h"
#include "tandem/token.h"

#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHUTDOWN_GRACE_MS 3000 /* in-flight requests get this long; all of shutdown stays under 5 s */

extern char **environ;

int main(int argc, char **argv)
{
    /* Signals are taken synchronously by this thread only: block them before any thread starts
     * (they inherit the mask). Explicit handling also makes SIGTERM work as PID 1. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    /* One malloc arena: per-thread arenas each keep the free memory a burst of event streams
     * or recomputes leaves behind (measured, 1,000 streams: 4 arenas +6 MB, 2 arenas +3 MB after
     * delivery). Our threads allocate little per request; the bench shows no loss of speed. */
    mallopt(M_ARENA_MAX, 1);
    json_io_init();
    if (text_init() != 0) {
        fprintf(stderr, "tandemd: the stopword lists could not be loaded (out of memory, or more than the table holds)\n");
        return 1;
    }
    static struct config cfg;
    static struct app app;
    char action = 0;
    if (config_load(&cfg, argc, argv, environ, &action, stderr) != 0) {
        config_cleanup(&cfg);
        return 2;
    }
    if (action == 'h') {
        config_print_help(stdout);
        config_cleanup(&cfg);
        return 0;
    }
    if (action == 'v') {
        printf("tandemd %s (%s)\n", TANDEM_VERSION, TANDEM_GITREV);
        config_cleanup(&cfg);
        return 0;
    }
    if (action == 'p') {
        config_print(&cfg, stdout);
        config_cleanup(&cfg);
        return 0;
    }
    log_setup(cfg.log_level, cfg.log_json);
    app.cfg = &cfg;
    pthread_mutex_init(&app.focus_lock, NULL);
    pthread_mutex_init(&app.kb_lock, NULL);
    int rc = 2;
    struct http_server *srv = NULL;
    if (token_setup(&app, &cfg, stderr) != 0)
        goto out;
    store_global_init(&cfg);
    char errbuf[512] = "";
    if (alert_rules_global_init(cfg.alert_rules ? cfg.alert_rules : "", errbuf, sizeof errbuf) != 0 ||
        summary_global_init() != 0) {
        fprintf(stderr, "tandemd: %s\n", errbuf[0] ? errbuf : "cannot load the summary data");
        goto out;
    }

    if (cfg.kb && cfg.kb[0]) {
        char kb_err[1024];
        struct kb *kb = NULL;
        if (kb_load(cfg.kb, &kb, kb_err, sizeof kb_err) != 0) {
            fprintf(stderr, "tandemd: TANDEM_KB: %s\n", kb_err);
            goto out;
        }
        app_kb_swap(&app, kb);
        log_info("kb_loaded", "entries=%zu bytes=%zu", kb_count(kb), kb_memory(kb));
        /* loading parses every line and grows the index in steps: hand the garbage back now
         * (a 10,000-entry KB: 37 MB resident before, 26 MB after) */
        malloc_trim(0);
    }
    quality_set_per_agent(cfg.quality_per_agent != 0);
    if (llm_start_from_config(&cfg, stderr) < 0)
        goto out;
    app.memory = memory_store_new();
    if (!app.memory)
        goto out;
    metrics_register(api_suggest_metrics_render);
    metrics_register(quality_metrics_render);
    app.compute = events_compute;

    /* the live loop (and the SSE hub's watch hook) before the first stream can be accepted */
    if (watch_start(&app) != 0) {
        log_error("watch_start_failed", "%s", "");
        goto out;
    }
    srv = http_start(&app);
    if (!srv) {
        watch_stop();
        goto out;
    }
    log_info("started", "version=%s redis=%s", TANDEM_VERSION,
             cfg.redis.kind == REDIS_UNIX ? "unix" : cfg.redis.kind == REDIS_SENTINEL ? "sentinel" : "tcp");
    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            /* reload the KB; on a bad file keep serving the old one */
            if (cfg.kb && cfg.kb[0]) {
                char kb_err[1024];
                struct kb *kb = NULL;
                if (kb_load(cfg.kb, &kb, kb_err, sizeof kb_err) != 0) {
                    log_error("kb_reload_failed", "reason='%s'", kb_err);
                } else {
                    log_info("kb_reloaded", "entries=%zu bytes=%zu", kb_count(kb), kb_memory(kb));
                    app_kb_swap(&app, kb);
                    watch_invalidate();
                }
            }
            continue;
        }
        log_info("stopping", "signal=%d", sig);
        break;
    }
    http_stop(srv, SHUTDOWN_GRACE_MS, llm_stop);
    srv = NULL;
    watch_stop();
    log_info("stopped", "%s", "");
    rc = 0;
out:
    if (srv) /* failed after listening */
        http_stop(srv, 0, llm_stop);
    llm_stop();
    app_kb_swap(&app, NULL);
    memory_store_free(app.memory);
    app.memory = NULL;
    text_thread_cleanup();
    pthread_mutex_destroy(&app.kb_lock);
    explicit_bzero(app.token, sizeof app.token);
    pthread_mutex_destroy(&app.focus_lock);
    config_cleanup(&cfg);
    return rc;
}
