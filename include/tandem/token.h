/* The bearer token: from TANDEM_TOKEN, TANDEM_TOKEN_FILE, or generated into a private file. */
#ifndef TANDEM_TOKEN_H
#define TANDEM_TOKEN_H
#include <stdio.h>

#include "tandem/app.h"

/* Fills app->token (and app->token_path) from cfg. With neither TANDEM_TOKEN nor
 * TANDEM_TOKEN_FILE, reuses or creates $XDG_RUNTIME_DIR/tandem/token (else
 * ~/.local/state/tandem/token): 32 random bytes as hex, mode 0600 in a 0700 directory.
 * Refuses (returns -1, message on err) a token file that others can read or that is not ours. */
int token_setup(struct app *app, const struct config *cfg, FILE *err);
/* The default token file path for this user into out; -1 when no location can be found. */
int token_default_path(char *out, size_t outsz);
#endif
