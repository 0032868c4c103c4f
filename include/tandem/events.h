/* The state the agent sees for one moment of a conversation: suggestions, summary, alerts. */
#ifndef TANDEM_EVENTS_H
#define TANDEM_EVENTS_H
#include "tandem/app.h"
#include "tandem/context.h"

struct watch_answers;

/* Computes, as `what` (WATCH_SUGGESTIONS, WATCH_SUMMARY) asks, the suggestions answer
 * (WATCH_MAX_K, local engine, each suggestion recorded for feedback) and the summary answer
 * with its alerts for ctx; fields not asked for stay NULL. Uses the calling thread's Redis
 * connection (reply memory refresh, suggestion records). On T_OK out holds new references;
 * on error it holds none. The app->compute of the server. */
int events_compute(struct app *app, const struct context *ctx, struct watch_answers *out, unsigned what);
#endif
