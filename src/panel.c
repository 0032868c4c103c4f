/* The agent panel's static files at /panel/, served from the copies compiled into the binary. */
#include "tandem/panel.h"
#include "tandem/buf.h"
#include "tandem/embedded.h"
#include "tandem/error.h"

#include <microhttpd.h>
#include <string.h>

/* A whitelist, not a directory: the embedded table also holds prompts and lexicons, which are
 * none of a browser's business. */
static const struct {
    const char *name;
    const char *content_type;
} panel_files[] = {
    {"index.html", "text/html; charset=utf-8"},
    {"panel.js", "text/javascript; charset=utf-8"},
    {"panel.css", "text/css; charset=utf-8"},
};

#define REDIRECT_MAX 2048 /* "/panel/?" plus the re-encoded query; longer ones lose the query */

int panel_find_asset(const char *seg, struct panel_asset *out)
{
    if (!seg)
        return T_ERR_NOT_FOUND_ITEM;
    const char *name = *seg ? seg : "index.html";
    for (size_t i = 0; i < sizeof panel_files / sizeof panel_files[0]; i++) {
        if (strcmp(panel_files[i].name, name) != 0)
            continue;
        const struct embedded_file *f = embedded_find(name);
        if (!f)
            return T_ERR_NOT_FOUND_ITEM; /* built without panel/ in EMBED_SRCS */
        out->name = panel_files[i].name;
        out->content_type = panel_files[i].content_type;
        out->data = f->data;
        out->len = f->len;
        return T_OK;
    }
    return T_ERR_NOT_FOUND_ITEM;
}

int panel_serve(struct request *req)
{
    struct panel_asset a;
    const char *seg = req->n_params ? req->params[0] : NULL;
    if (panel_find_asset(seg, &a) != T_OK)
        return http_reply_error(req, T_ERR_NOT_FOUND_ITEM, "no such panel file; the panel is at /panel/");
    int err = http_reply_data(req, 200, a.content_type, a.data, a.len);
    if (err)
        return err;
    http_add_header(req, "Content-Security-Policy", PANEL_CSP);
    /* the page may be framed by the extension (frame-ancestors); its files are for it alone */
    http_add_header(req, "Cross-Origin-Resource-Policy", "same-origin");
    if (strcmp(a.name, "index.html") == 0)
        http_add_header(req, "Cross-Origin-Opener-Policy", "same-origin");
    return T_OK;
}

struct query_out {
    struct buf *b;
    int n;
    int err;
};

static void append_encoded(struct query_out *q, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s && !q->err; s++) {
        unsigned char c = (unsigned char)*s;
        char enc[3];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("-._~", c)) {
            q->err = buf_append(q->b, (const char *)&c, 1);
        } else {
            enc[0] = '%';
            enc[1] = hex[c >> 4];
            enc[2] = hex[c & 15];
            q->err = buf_append(q->b, enc, 3);
        }
    }
}

static enum MHD_Result add_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    struct query_out *q = cls;
    if (!q->err)
        q->err = buf_append(q->b, q->n++ ? "&" : "?", 1);
    append_encoded(q, key);
    if (value) {
        if (!q->err)
            q->err = buf_append(q->b, "=", 1);
        append_encoded(q, value);
    }
    return q->err ? MHD_NO : MHD_YES;
}

int panel_redirect(struct request *req)
{
    struct buf loc;
    buf_init(&loc, REDIRECT_MAX);
    int err = buf_append(&loc, "/panel/", 7);
    if (!err) {
        /* the arguments come decoded; encode them again, each byte that is not unreserved */
        struct query_out q = {&loc, 0, 0};
        MHD_get_connection_values(req->conn, MHD_GET_ARGUMENT_KIND, add_arg, &q);
        if (q.err) { /* too long: the page without the query still works */
            loc.len = 7;
        }
    }
    char *location = err ? NULL : arena_strndup(&req->arena, loc.data, loc.len);
    buf_cleanup(&loc);
    if (!location)
        return T_ERR_NOMEM;
    static const char body[] = "the agent panel is at /panel/\n";
    err = http_reply_data(req, 308, "text/plain; charset=utf-8", body, sizeof body - 1);
    if (!err)
        http_add_header(req, "Location", location);
    return err;
}
