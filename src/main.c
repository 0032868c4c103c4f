/* tandemd: configuration, signals, start-up and orderly shutdown. */
#include "tandem/app.h"
#include "tandem/config.h"
#include "tandem/http.h"
#include "tandem/log.h"
#include "tandem/store.h"
#include "tandem/token.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHUTDOWN_GRACE_MS 4000 /* in-flight requests get this long; k8s default grace is 30 s, ours < 5 s */

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
    int rc = 2;
    if (token_setup(&app, &cfg, stderr) != 0)
        goto out;
    store_global_init(&cfg);

    struct http_server *srv = http_start(&app);
    if (!srv)
        goto out;
    log_info("started", "version=%s redis=%s", TANDEM_VERSION,
             cfg.redis.kind == REDIS_UNIX ? "unix" : cfg.redis.kind == REDIS_SENTINEL ? "sentinel" : "tcp");
    for (;;) {
        int sig = 0;
        if (sigwait(&sigs, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            log_info("sighup", "%s", "");
            continue;
        }
        log_info("stopping", "signal=%d", sig);
        break;
    }
    http_stop(srv, SHUTDOWN_GRACE_MS);
    log_info("stopped", "%s", "");
    rc = 0;
out:
    explicit_bzero(app.token, sizeof app.token);
    pthread_mutex_destroy(&app.focus_lock);
    config_cleanup(&cfg);
    return rc;
}
