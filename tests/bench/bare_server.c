/* bare_server: the benchmark baseline — libmicrohttpd answering every GET with a fixed 1 KB JSON body.
 *
 * It starts the daemon exactly as tandemd's http_start() does (same flags, thread-pool size,
 * connection limit, timeout and memory limit) and, like tandemd, queues the answer on the second
 * handler call so keep-alive connections stay open. What is left is the cost of libmicrohttpd
 * itself: `make bench` reports tandem's throughput as a fraction of this server's, measured in
 * the same run on the same machine.
 *
 * Usage: bare_server PORT        (TANDEM_THREADS as for tandemd: 0 or unset = one per CPU, >= 2)
 * Prints "ready PORT" on stdout once listening; stops on SIGTERM or SIGINT. */
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BODY_BYTES 1024
#define MAX_CONNECTIONS 2048       /* TANDEM_MAX_CONNECTIONS default */
#define IDLE_TIMEOUT_S 60          /* TANDEM_IDLE_TIMEOUT_S default */
#define CONNECTION_MEMORY_LIMIT (8 * 1024) /* as src/http.c */

static char body[BODY_BYTES + 1];

/* A valid JSON object of exactly BODY_BYTES bytes. */
static void fill_body(void)
{
    static const char head[] = "{\"status\":\"ok\",\"pad\":\"";
    static const char tail[] = "\"}";
    size_t pad = BODY_BYTES - (sizeof head - 1) - (sizeof tail - 1);
    memcpy(body, head, sizeof head - 1);
    memset(body + sizeof head - 1, 'x', pad);
    memcpy(body + sizeof head - 1 + pad, tail, sizeof tail);
}

static unsigned thread_count(void)
{
    const char *env = getenv("TANDEM_THREADS");
    long n = env && *env ? strtol(env, NULL, 10) : 0;
    if (n <= 0) { /* the same rule as config.c */
        n = sysconf(_SC_NPROCESSORS_ONLN);
        n = n < 2 ? 2 : (n > 64 ? 64 : n);
    }
    return (unsigned)n;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size,
                                  void **req_cls)
{
    (void)cls;
    (void)url;
    (void)version;
    (void)upload_data;
    /* first call: headers only; answering now would make 0.9.75 close the connection */
    if (!*req_cls) {
        *req_cls = (void *)1;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    int is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    struct MHD_Response *r = MHD_create_response_from_buffer(is_get ? BODY_BYTES : 0, body, MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    enum MHD_Result ret = MHD_queue_response(conn, is_get ? MHD_HTTP_OK : MHD_HTTP_METHOD_NOT_ALLOWED, r);
    MHD_destroy_response(r);
    return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **req_cls, enum MHD_RequestTerminationCode toe)
{
    (void)cls;
    (void)conn;
    (void)toe;
    *req_cls = NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s PORT\n", argv[0]);
        return 2;
    }
    long port = strtol(argv[1], NULL, 10);
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "bare_server: bad port %s\n", argv[1]);
        return 2;
    }
    fill_body();
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    unsigned threads = thread_count();
    /* the flags and options of src/http.c http_start() */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG;
    struct MHD_Daemon *d = MHD_start_daemon(
        flags, (uint16_t)port, NULL, NULL, on_request, NULL, MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT, (unsigned)MAX_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)CONNECTION_MEMORY_LIMIT, MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_STRICT_FOR_CLIENT,
        (int)0, MHD_OPTION_LISTENING_ADDRESS_REUSE, (unsigned)1, MHD_OPTION_END);
    if (!d) {
        fprintf(stderr, "bare_server: cannot listen on 127.0.0.1:%ld\n", port);
        return 1;
    }
    printf("ready %ld threads=%u\n", port, threads);
    fflush(stdout);
    int sig = 0;
    while (sigwait(&sigs, &sig) != 0)
        ;
    MHD_stop_daemon(d);
    return 0;
}
