/* The agent panel: its static files (panel/ in the repo, compiled into the binary) at /panel/. */
#ifndef TANDEM_PANEL_H
#define TANDEM_PANEL_H
#include <stddef.h>

#include "tandem/http.h"

/* The Content-Security-Policy of every panel response: no inline script or style, network
 * only to tandem itself, framed only by tandem or a browser extension (the side panel). */
#define PANEL_CSP                                                                                   \
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "                 \
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; "                                   \
    "frame-ancestors 'self' chrome-extension:"

/* One file the panel serves. */
struct panel_asset {
    const char *name;         /* the file name in panel/ and in the URL, e.g. "panel.js" */
    const char *content_type; /* with charset where it applies */
    const unsigned char *data; /* the embedded bytes; borrowed, static lifetime */
    size_t len;
};

/* The asset served for the last path segment seg ("" means index.html) into *out.
 * Only the panel's own files are served, never other embedded data.
 * Returns T_OK, or T_ERR_NOT_FOUND_ITEM for anything else (including "..", names with '/',
 * and a panel file this binary was built without). */
int panel_find_asset(const char *seg, struct panel_asset *out);

/* GET /panel/ and /panel/{file}: the file with PANEL_CSP. No auth: the page holds no data;
 * every API call it makes needs the token. */
int panel_serve(struct request *req);
/* GET /panel: 308 to /panel/ keeping the query string (relative URLs need the slash). */
int panel_redirect(struct request *req);
#endif
