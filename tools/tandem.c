/* tandem: the command-line client for hotkey tools — suggestions, accept, summary, focus, status. */
#include "tandem/buf.h"
#include "tandem/token.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* Exit statuses: the contract with hotkey scripts (README, deploy/hotkeys/README.md). */
enum exit_code {
    EXIT_OK = 0,
    EXIT_USAGE = 1,
    EXIT_NOT_FOUND = 2,   /* no focus, no such suggestion, no such conversation */
    EXIT_AUTH = 3,        /* no token, or the token was rejected */
    EXIT_UNAVAILABLE = 4, /* tandem not reachable, or it cannot answer (Redis down) */
    EXIT_OTHER = 5,
};

#define DEFAULT_URL "http://127.0.0.1:8787"
#define TOKEN_LINE_MAX 512
#define RESPONSE_MAX (8u << 20)   /* far above any answer tandem gives */
#define CONNECT_TIMEOUT_MS 2000L
#define REQUEST_TIMEOUT_MS 30000L /* covers an LLM answer within its own budget */
#define MAX_SUGGESTION 10         /* the server's bound for /v1/focus/suggestions/N */

static const char usage_text[] =
    "usage: tandem COMMAND [ARGS]\n"
    "\n"
    "  suggest [N] [--copy]   the focused conversation's suggestions; with N only number N, as plain\n"
    "                         text (no trailing newline when piped); --copy puts it on the clipboard\n"
    "                         (N defaults to 1) instead of printing it\n"
    "  accept N [--copy]      like 'suggest N', and records that the agent accepted it\n"
    "  summary                the focused conversation's summary, alerts and customer history\n"
    "  focus [ID | --clear]   sets the focused conversation (no ID: shows it)\n"
    "  status                 is tandem up, is Redis ready, is the token right, what is focused\n"
    "  panel [--open]         the agent panel's address with the token (--open: in the browser)\n"
    "\n"
    "Environment: TANDEM_URL (default " DEFAULT_URL "), TANDEM_TOKEN, TANDEM_TOKEN_FILE\n"
    "(default: $XDG_RUNTIME_DIR/tandem/token, else ~/.local/state/tandem/token), TANDEM_AGENT_ID,\n"
    "TANDEM_CLIPBOARD (a command reading the text on stdin; default wl-copy, xclip, xsel or pbcopy).\n"
    "Exit status: 0 ok, 1 usage, 2 not found (no focus, no such suggestion), 3 token missing or\n"
    "rejected, 4 tandem unavailable, 5 other errors.\n";

struct client {
    char url[1024]; /* base URL without a trailing slash */
    char token[TOKEN_LINE_MAX];
    char token_from[4096];
    int has_token;
    CURL *curl;
};

struct reply {
    long status;      /* 0: no HTTP answer */
    struct buf body;
    json_t *json;     /* parsed body when it is JSON, else NULL */
};

static void die_usage(const char *msg)
{
    if (msg)
        fprintf(stderr, "tandem: %s\n", msg);
    fputs(usage_text, stderr);
    exit(EXIT_USAGE);
}

static int valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n < 1 || n > 128)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* ---- token ---- */

static int read_first_line(const char *path, char *out, size_t outsz)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = fgets(out, (int)outsz, f) != NULL;
    fclose(f);
    if (!ok)
        return -1;
    size_t n = strcspn(out, "\r\n");
    while (n && (out[n - 1] == ' ' || out[n - 1] == '\t'))
        n--;
    out[n] = '\0';
    return n ? 0 : -1;
}

static void load_token(struct client *c)
{
    const char *env = getenv("TANDEM_TOKEN");
    if (env && *env) {
        snprintf(c->token, sizeof c->token, "%s", env);
        snprintf(c->token_from, sizeof c->token_from, "TANDEM_TOKEN");
        c->has_token = 1;
        return;
    }
    const char *file = getenv("TANDEM_TOKEN_FILE");
    if (file && *file) {
        snprintf(c->token_from, sizeof c->token_from, "%s", file);
    } else if (token_default_path(c->token_from, sizeof c->token_from) != 0) {
        c->token_from[0] = '\0';
        return;
    }
    c->has_token = read_first_line(c->token_from, c->token, sizeof c->token) == 0;
}

static void need_token(const struct client *c)
{
    if (c->has_token)
        return;
    if (c->token_from[0])
        fprintf(stderr, "tandem: no token: cannot read %s; set TANDEM_TOKEN or TANDEM_TOKEN_FILE\n", c->token_from);
    else
        fprintf(stderr, "tandem: no token: set TANDEM_TOKEN or TANDEM_TOKEN_FILE\n");
    exit(EXIT_AUTH);
}

/* ---- HTTP ---- */

static size_t on_body(char *data, size_t size, size_t n, void *cls)
{
    struct buf *b = cls;
    return buf_append(b, data, size * n) == 0 ? size * n : 0;
}

static void reply_cleanup(struct reply *r)
{
    buf_cleanup(&r->body);
    json_decref(r->json);
    r->json = NULL;
}

/* One request; body (JSON text) may be NULL. Exits with EXIT_UNAVAILABLE when tandem cannot
 * be reached; otherwise fills r (caller cleans up). */
static void call(struct client *c, const char *method, const char *path, const char *body, int auth, struct reply *r)
{
    memset(r, 0, sizeof *r);
    buf_init(&r->body, RESPONSE_MAX);
    char url[2048];
    snprintf(url, sizeof url, "%s%s", c->url, path);
    struct curl_slist *h = NULL;
    char authz[TOKEN_LINE_MAX + 32];
    if (auth) {
        snprintf(authz, sizeof authz, "Authorization: Bearer %s", c->token);
        h = curl_slist_append(h, authz);
    }
    if (body)
        h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Accept: application/json, text/plain");
    char errbuf[CURL_ERROR_SIZE] = "";
    CURL *e = c->curl;
    curl_easy_reset(e);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "tandem-cli");
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, REQUEST_TIMEOUT_MS);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*"); /* a desktop proxy must not see the token */
    CURLcode rc = curl_easy_perform(e);
    curl_slist_free_all(h);
    explicit_bzero(authz, sizeof authz);
    if (rc != CURLE_OK) {
        fprintf(stderr, "tandem: cannot reach tandem at %s: %s\n", c->url, errbuf[0] ? errbuf : curl_easy_strerror(rc));
        buf_cleanup(&r->body);
        exit(EXIT_UNAVAILABLE);
    }
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    char *ct = NULL;
    curl_easy_getinfo(e, CURLINFO_CONTENT_TYPE, &ct);
    if (ct && strstr(ct, "json") && r->body.len)
        r->json = json_loadb(r->body.data, r->body.len, 0, NULL);
}

static const char *error_code(const struct reply *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
}

/* Prints the server's error and exits with the matching status. item: a 404 "not_found" here
 * means the thing asked for (a suggestion number), not a missing endpoint. */
static void fail_item(struct reply *r, const char *what, int item)
{
    const char *code = error_code(r);
    const char *msg = json_string_value(json_object_get(json_object_get(r->json, "error"), "message"));
    fprintf(stderr, "tandem: %s: %s%s%s%s (HTTP %ld)\n", what, msg ? msg : "unexpected answer", code ? " [" : "",
            code ? code : "", code ? "]" : "", r->status);
    int ex = EXIT_OTHER;
    if (r->status == 401 || r->status == 403)
        ex = EXIT_AUTH;
    else if (r->status == 404 && code && strcmp(code, "not_found") != 0)
        ex = EXIT_NOT_FOUND; /* no_focus, conversation_not_found */
    else if (r->status == 404 && item)
        ex = EXIT_NOT_FOUND; /* no such suggestion number */
    else if (r->status == 503)
        ex = EXIT_UNAVAILABLE;
    reply_cleanup(r);
    exit(ex);
}

static void fail(struct reply *r, const char *what) { fail_item(r, what, 0); }

static int ok_status(long s) { return s >= 200 && s < 300; }

/* The focused conversation id into out; exits 2 when nothing is focused. */
static void focused(struct client *c, char *out, size_t outsz)
{
    struct reply r;
    call(c, "GET", "/v1/focus", NULL, 1, &r);
    if (!ok_status(r.status))
        fail(&r, "focus");
    const char *id = json_string_value(json_object_get(r.json, "conversation_id"));
    if (!id || !valid_id(id)) {
        reply_cleanup(&r);
        fprintf(stderr, "tandem: no conversation is focused\n");
        exit(EXIT_NOT_FOUND);
    }
    snprintf(out, outsz, "%s", id);
    reply_cleanup(&r);
}

/* ---- output ---- */

/* Prints text; a trailing newline only for a terminal, so `| xdotool type --file -` never
 * types an Enter (which would send the reply). */
static void print_text(const char *text)
{
    fputs(text, stdout);
    if (isatty(STDOUT_FILENO))
        fputc('\n', stdout);
}

/* Runs argv with text on its stdin, its stdout and stderr on /dev/null (a clipboard tool that
 * stays around to serve the selection must not hold our stdout open). 0 when it exited 0. */
static int run_with_stdin(char *const argv[], const char *text)
{
    int fds[2];
    if (pipe(fds) != 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[0], STDIN_FILENO);
    posix_spawn_file_actions_addclose(&fa, fds[0]);
    posix_spawn_file_actions_addclose(&fa, fds[1]);
    posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[0]);
    if (rc != 0) {
        close(fds[1]);
        return -1;
    }
    size_t len = strlen(text), off = 0;
    while (off < len) {
        ssize_t w = write(fds[1], text + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    close(fds[1]);
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return (off == len && WIFEXITED(st) && WEXITSTATUS(st) == 0) ? 0 : -1;
}

static int have_program(const char *name)
{
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/bin:/bin";
    char dir[4096];
    while (*path) {
        size_t n = strcspn(path, ":");
        if (n && n < sizeof dir - 1) {
            char full[4200];
            memcpy(dir, path, n);
            dir[n] = '\0';
            snprintf(full, sizeof full, "%s/%s", dir, name);
            if (access(full, X_OK) == 0)
                return 1;
        }
        path += n;
        if (*path == ':')
            path++;
    }
    return 0;
}

#define CLIP_MAX_ARGS 16

static void copy_to_clipboard(const char *text)
{
    char *argv[CLIP_MAX_ARGS + 1];
    const char *custom = getenv("TANDEM_CLIPBOARD");
    char custom_copy[1024];
    if (custom && *custom) {
        /* split on spaces: a program and plain arguments, no shell and so no quoting */
        snprintf(custom_copy, sizeof custom_copy, "%s", custom);
        size_t n = 0;
        char *save = NULL;
        for (char *t = strtok_r(custom_copy, " \t", &save); t && n < CLIP_MAX_ARGS; t = strtok_r(NULL, " \t", &save))
            argv[n++] = t;
        argv[n] = NULL;
        if (!n) {
            fprintf(stderr, "tandem: TANDEM_CLIPBOARD is empty\n");
            exit(EXIT_OTHER);
        }
    } else {
        static char *wl[] = {"wl-copy", NULL};
        static char *xclip[] = {"xclip", "-selection", "clipboard", "-in", NULL};
        static char *xsel[] = {"xsel", "--clipboard", "--input", NULL};
        static char *pb[] = {"pbcopy", NULL};
        char **pick = NULL;
        const char *wayland = getenv("WAYLAND_DISPLAY"), *x11 = getenv("DISPLAY");
        if (wayland && *wayland && have_program("wl-copy"))
            pick = wl;
        else if (x11 && *x11 && have_program("xclip"))
            pick = xclip;
        else if (x11 && *x11 && have_program("xsel"))
            pick = xsel;
        else if (have_program("pbcopy"))
            pick = pb;
        if (!pick) {
            fprintf(stderr, "tandem: no clipboard tool found: install wl-clipboard (Wayland), xclip or xsel (X11), "
                            "or set TANDEM_CLIPBOARD\n");
            exit(EXIT_OTHER);
        }
        size_t n = 0;
        while (pick[n] && n < CLIP_MAX_ARGS) {
            argv[n] = pick[n];
            n++;
        }
        argv[n] = NULL;
    }
    if (run_with_stdin(argv, text) != 0) {
        fprintf(stderr, "tandem: copying to the clipboard with %s failed\n", argv[0]);
        exit(EXIT_OTHER);
    }
}

/* ---- commands ---- */

static long parse_n(const char *s)
{
    char *end;
    errno = 0;
    long n = strtol(s, &end, 10);
    if (errno || *end || end == s || n < 1 || n > MAX_SUGGESTION)
        return 0;
    return n;
}

static const char *source_label(json_t *s, char *buf, size_t bufsz)
{
    const char *src = json_string_value(json_object_get(s, "source"));
    const char *title = json_string_value(json_object_get(s, "title"));
    if (!title)
        title = json_string_value(json_object_get(s, "kb_id"));
    const char *name = !src ? "?" : strcmp(src, "kb") == 0 ? "KB" : strcmp(src, "memory") == 0 ? "past reply"
                                   : strcmp(src, "llm") == 0 ? "LLM" : src;
    if (title)
        snprintf(buf, bufsz, "%s: %s", name, title);
    else
        snprintf(buf, bufsz, "%s", name);
    return buf;
}

static int cmd_suggest_list(struct client *c)
{
    char conv[129];
    focused(c, conv, sizeof conv);
    char path[256];
    snprintf(path, sizeof path, "/v1/conversations/%s/suggestions?k=3", conv);
    struct reply r;
    call(c, "GET", path, NULL, 1, &r);
    if (!ok_status(r.status))
        fail(&r, "suggestions");
    json_t *list = json_object_get(r.json, "suggestions");
    size_t i;
    json_t *s;
    printf("Conversation %s — machine-suggested replies (check before sending):\n", conv);
    if (!json_array_size(list))
        printf("(none)\n");
    json_array_foreach(list, i, s)
    {
        char label[512];
        json_t *score = json_object_get(s, "score");
        printf("\n%zu. [%s, score %.2f]\n%s\n", i + 1, source_label(s, label, sizeof label),
               json_is_number(score) ? json_number_value(score) : 0.0,
               json_string_value(json_object_get(s, "text")) ? json_string_value(json_object_get(s, "text")) : "");
    }
    reply_cleanup(&r);
    return EXIT_OK;
}

/* Suggestion n of the focused conversation as JSON (new reference); exits on errors. */
static json_t *get_suggestion(struct client *c, long n)
{
    char path[128];
    snprintf(path, sizeof path, "/v1/focus/suggestions/%ld?format=json", n);
    struct reply r;
    call(c, "GET", path, NULL, 1, &r);
    if (!ok_status(r.status))
        fail_item(&r, "suggestion", 1);
    json_t *o = json_incref(r.json);
    reply_cleanup(&r);
    if (!json_is_string(json_object_get(o, "text"))) {
        json_decref(o);
        fprintf(stderr, "tandem: suggestion %ld: unexpected answer from tandem\n", n);
        exit(EXIT_OTHER);
    }
    return o;
}

static void random_hex(char *out, size_t bytes)
{
    unsigned char raw[32];
    if (bytes > sizeof raw)
        bytes = sizeof raw;
    if (getrandom(raw, bytes, 0) != (ssize_t)bytes) {
        fprintf(stderr, "tandem: no randomness for the feedback id\n");
        exit(EXIT_OTHER);
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < bytes; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * bytes] = '\0';
}

static int cmd_suggest_one(struct client *c, long n, int copy, int accept)
{
    json_t *s = get_suggestion(c, n);
    const char *text = json_string_value(json_object_get(s, "text"));
    if (copy)
        copy_to_clipboard(text);
    else
        print_text(text);
    fflush(stdout);
    int ex = EXIT_OK;
    if (accept) {
        const char *sid = json_string_value(json_object_get(s, "id"));
        if (!sid || !valid_id(sid)) {
            fprintf(stderr, "tandem: suggestion %ld has no id; feedback not recorded\n", n);
            json_decref(s);
            return EXIT_OTHER;
        }
        char fid[2 * 16 + 4] = "cli-";
        random_hex(fid + 4, 14);
        json_t *body = json_pack("{s:s, s:s, s:s}", "action", "accepted", "final_text", text, "feedback_id", fid);
        const char *agent = getenv("TANDEM_AGENT_ID");
        if (body && agent && valid_id(agent))
            json_object_set_new(body, "agent_id", json_string(agent));
        char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
        json_decref(body);
        if (!payload) {
            json_decref(s);
            return EXIT_OTHER;
        }
        char path[256];
        snprintf(path, sizeof path, "/v1/suggestions/%s/feedback", sid);
        struct reply r;
        call(c, "POST", path, payload, 1, &r);
        free(payload);
        if (!ok_status(r.status)) {
            json_decref(s);
            fail(&r, "recording the acceptance");
        }
        reply_cleanup(&r);
    }
    json_decref(s);
    return ex;
}

static void print_list(const char *label, json_t *arr, const char *field)
{
    if (!json_array_size(arr))
        return;
    printf("%s:\n", label);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        const char *t = json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, field));
        if (t)
            printf("  - %s\n", t);
    }
}

static int cmd_summary(struct client *c)
{
    char conv[129];
    focused(c, conv, sizeof conv);
    char path[256];
    snprintf(path, sizeof path, "/v1/conversations/%s/summary", conv);
    struct reply r;
    call(c, "GET", path, NULL, 1, &r);
    if (!ok_status(r.status))
        fail(&r, "summary");
    json_t *cv = json_object_get(r.json, "conversation");
    json_t *cu = json_object_get(r.json, "customer");
    printf("Conversation %s\n", conv);
    json_t *alerts = json_object_get(cv, "alerts");
    size_t i;
    json_t *v;
    json_array_foreach(alerts, i, v)
    {
        const char *sev = json_string_value(json_object_get(v, "severity"));
        const char *type = json_string_value(json_object_get(v, "type"));
        const char *reason = json_string_value(json_object_get(v, "reason"));
        printf("! ALERT %s %s: %s\n", sev ? sev : "", type ? type : "", reason ? reason : "");
    }
    const char *wants = json_string_value(json_object_get(cv, "wants"));
    if (wants && *wants)
        printf("Wants: %s\n", wants);
    json_t *tried = json_object_get(cv, "tried");
    if (json_array_size(tried)) {
        printf("Already tried:\n");
        json_array_foreach(tried, i, v)
        {
            const char *by = json_string_value(json_object_get(v, "by"));
            const char *kind = json_string_value(json_object_get(v, "kind"));
            const char *t = json_string_value(json_object_get(v, "text"));
            printf("  - %s %s: %s\n", by ? by : "", kind ? kind : "", t ? t : "");
        }
    }
    json_t *facts = json_object_get(cv, "facts");
    print_list("Orders", json_object_get(facts, "order_numbers"), "text");
    print_list("References", json_object_get(facts, "references"), "text");
    print_list("Amounts", json_object_get(facts, "amounts"), "text");
    print_list("Dates", json_object_get(facts, "dates"), "text");
    json_t *sent = json_object_get(cv, "sentiment");
    if (json_is_object(sent)) {
        const char *label = json_string_value(json_object_get(sent, "label"));
        const char *trend = json_string_value(json_object_get(sent, "trend"));
        printf("Sentiment: %s (%.2f)%s%s\n", label ? label : "?", json_number_value(json_object_get(sent, "score")),
               trend ? ", trend " : "", trend ? trend : "");
    }
    print_list("Open questions", json_object_get(cv, "open_questions"), "text");
    json_t *ho = json_object_get(cv, "handoff");
    const char *hreason = json_string_value(json_object_get(ho, "reason"));
    if (hreason)
        printf("Handoff from bot: %s\n", hreason);
    json_t *prof = json_object_get(cu, "profile");
    const char *name = json_string_value(json_object_get(prof, "name"));
    if (name || json_object_get(cu, "id")) {
        const char *tier = json_string_value(json_object_get(prof, "tier"));
        const char *country = json_string_value(json_object_get(prof, "country"));
        printf("Customer: %s%s%s%s%s\n", name ? name : json_string_value(json_object_get(cu, "id")),
               tier ? ", " : "", tier ? tier : "", country ? ", " : "", country ? country : "");
    }
    const char *hist = json_string_value(json_object_get(cu, "history_summary"));
    if (hist && *hist)
        printf("History: %s\n", hist);
    reply_cleanup(&r);
    return EXIT_OK;
}

static int cmd_focus(struct client *c, const char *id, int clear)
{
    if (!id && !clear) {
        char conv[129];
        focused(c, conv, sizeof conv);
        printf("%s\n", conv);
        return EXIT_OK;
    }
    if (id && !valid_id(id))
        die_usage("a conversation id is 1-128 characters of A-Z a-z 0-9 . _ -");
    json_t *body = json_pack("{s:o}", "conversation_id", clear ? json_null() : json_string(id));
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!payload)
        return EXIT_OTHER;
    struct reply r;
    call(c, "PUT", "/v1/focus", payload, 1, &r);
    free(payload);
    if (!ok_status(r.status))
        fail(&r, "focus");
    if (clear)
        printf("focus cleared\n");
    else
        printf("focus: %s\n", id);
    reply_cleanup(&r);
    return EXIT_OK;
}

static int cmd_status(struct client *c)
{
    struct reply r;
    call(c, "GET", "/healthz", NULL, 0, &r); /* exits 4 when nothing answers */
    int up = r.status == 200;
    reply_cleanup(&r);
    printf("tandem   %s (%s)\n", up ? "up" : "not healthy", c->url);
    if (!up)
        return EXIT_UNAVAILABLE;
    call(c, "GET", "/readyz", NULL, 0, &r);
    int ready = r.status == 200;
    const char *why = json_string_value(json_object_get(json_object_get(r.json, "error"), "message"));
    printf("redis    %s%s%s\n", ready ? "ready" : "not ready", why ? ": " : "", why ? why : "");
    reply_cleanup(&r);
    if (!c->has_token) {
        printf("token    missing (%s)\n", c->token_from[0] ? c->token_from : "set TANDEM_TOKEN");
        return EXIT_AUTH;
    }
    call(c, "GET", "/v1/focus", NULL, 1, &r);
    if (r.status == 401 || r.status == 403) {
        printf("token    rejected (%s)\n", c->token_from);
        reply_cleanup(&r);
        return EXIT_AUTH;
    }
    printf("token    ok (%s)\n", c->token_from);
    const char *id = r.status == 200 ? json_string_value(json_object_get(r.json, "conversation_id")) : NULL;
    printf("focus    %s\n", id ? id : "none");
    reply_cleanup(&r);
    return ready ? EXIT_OK : EXIT_UNAVAILABLE;
}

static int cmd_panel(struct client *c, int open)
{
    need_token(c);
    char *tok = curl_easy_escape(c->curl, c->token, 0);
    if (!tok)
        return EXIT_OTHER;
    char url[2048];
    /* the fragment never reaches a server or a log; the page moves it to sessionStorage */
    snprintf(url, sizeof url, "%s/panel/#token=%s", c->url, tok);
    curl_free(tok);
    if (!open) {
        printf("%s\n", url);
        return EXIT_OK;
    }
    char *argv[] = {have_program("xdg-open") ? "xdg-open" : "open", url, NULL};
    int rc = run_with_stdin(argv, "");
    explicit_bzero(url, sizeof url);
    if (rc != 0) {
        fprintf(stderr, "tandem: could not open a browser (xdg-open); run 'tandem panel' and open the address\n");
        return EXIT_OTHER;
    }
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        die_usage(NULL);
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return EXIT_OK;
    }
    /* arguments after the command: numbers/ids and flags in any order */
    const char *pos[2] = {NULL, NULL};
    size_t npos = 0;
    int copy = 0, clear = 0, open = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--copy") == 0)
            copy = 1;
        else if (strcmp(argv[i], "--clear") == 0)
            clear = 1;
        else if (strcmp(argv[i], "--open") == 0)
            open = 1;
        else if (argv[i][0] == '-' && argv[i][1] == '-')
            die_usage("unknown option");
        else if (npos < 2)
            pos[npos++] = argv[i];
        else
            die_usage("too many arguments");
    }

    static struct client c;
    const char *url = getenv("TANDEM_URL");
    snprintf(c.url, sizeof c.url, "%s", url && *url ? url : DEFAULT_URL);
    size_t ul = strlen(c.url);
    while (ul && c.url[ul - 1] == '/')
        c.url[--ul] = '\0';
    if (strncmp(c.url, "http://", 7) != 0 && strncmp(c.url, "https://", 8) != 0) {
        fprintf(stderr, "tandem: TANDEM_URL must start with http:// or https://, e.g. %s\n", DEFAULT_URL);
        return EXIT_USAGE;
    }
    load_token(&c);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0 || !(c.curl = curl_easy_init())) {
        fprintf(stderr, "tandem: libcurl failed to start\n");
        return EXIT_OTHER;
    }

    int ex;
    long n = 0;
    if (strcmp(cmd, "suggest") == 0) {
        if (npos > 1 || clear || open)
            die_usage("suggest takes one number and --copy");
        if (pos[0] && !(n = parse_n(pos[0])))
            die_usage("the suggestion number must be from 1 to 10");
        need_token(&c);
        ex = (n || copy) ? cmd_suggest_one(&c, n ? n : 1, copy, 0) : cmd_suggest_list(&c);
    } else if (strcmp(cmd, "accept") == 0) {
        if (npos != 1 || clear || open)
            die_usage("accept takes the suggestion number, e.g. tandem accept 1");
        if (!(n = parse_n(pos[0])))
            die_usage("the suggestion number must be from 1 to 10");
        need_token(&c);
        ex = cmd_suggest_one(&c, n, copy, 1);
    } else if (strcmp(cmd, "summary") == 0) {
        if (npos || copy || clear || open)
            die_usage("summary takes no arguments");
        need_token(&c);
        ex = cmd_summary(&c);
    } else if (strcmp(cmd, "focus") == 0) {
        if (npos > 1 || copy || open || (clear && npos))
            die_usage("focus takes one conversation id, or --clear");
        need_token(&c);
        ex = cmd_focus(&c, pos[0], clear);
    } else if (strcmp(cmd, "status") == 0) {
        if (npos || copy || clear || open)
            die_usage("status takes no arguments");
        ex = cmd_status(&c);
    } else if (strcmp(cmd, "panel") == 0) {
        if (npos || copy || clear)
            die_usage("panel takes only --open");
        ex = cmd_panel(&c, open);
    } else {
        die_usage("unknown command");
        ex = EXIT_USAGE;
    }
    explicit_bzero(c.token, sizeof c.token);
    curl_easy_cleanup(c.curl);
    curl_global_cleanup();
    fflush(stdout);
    return ferror(stdout) ? EXIT_OTHER : ex;
}
