/* Server-Sent Events: subscribers per conversation, bounded queues, fan-out that never blocks. */
#ifndef TANDEM_SSE_H
#define TANDEM_SSE_H
#include <stddef.h>

#include "tandem/http.h"

#define SSE_RETRY_MS 3000           /* reconnect hint sent to every new stream */
#define SSE_HEARTBEAT_MS 15000      /* ": ping" interval */
#define SSE_MAX_QUEUED_EVENTS 256   /* a subscriber this far behind is told and dropped */
#define SSE_MAX_QUEUED_BYTES (4u << 20)
#define SSE_BLOCK_SIZE 256          /* the response's own buffer; chunked streams are written through the
                                       connection pool's write buffer (http.c), so this only bounds
                                       one read for HTTP/1.0 clients, and 1,000 streams keep it */

/* Called once before the server starts / after it stopped accepting. */
void sse_init(void);
/* Ends every stream (queued events are still sent first) so the server can stop. */
void sse_shutdown(void);
/* Waits up to ms for streams to finish after sse_shutdown(); returns how many remain. */
unsigned sse_wait_closed(unsigned ms);

/* A prepared event, shared by every subscriber it is queued for. */
struct sse_event;
/* New event "id: <id>\nevent: <name>\ndata: <data>\n\n". data must be one line (JSON from
 * Jansson's compact encoder is); a data containing CR or LF is refused (NULL), so text from
 * customers or a model can never forge an event. id may be NULL. */
struct sse_event *sse_event_new(const char *name, const char *id, const char *data, size_t len);
/* A comment line (": ping"), no id. */
struct sse_event *sse_comment_new(const char *text);
void sse_event_unref(struct sse_event *ev);
/* Marks ev, before it is published, as a newer version of the state at its id (the model's
 * wording of suggestions already pushed): it also reaches streams whose snapshot is at that id,
 * which skip events at or before it otherwise. */
void sse_event_mark_update(struct sse_event *ev);
/* Another reference to ev (events are immutable and shared). */
struct sse_event *sse_event_ref(struct sse_event *ev);

/* Subscribing is two steps so no message can fall between the snapshot and the live feed:
 * sse_subscribe() registers req as a text/event-stream subscriber of conv_id (events published
 * from now on are queued); the handler then computes the current state and calls sse_start()
 * with it, or sse_abort() to answer with an error instead. Both must run in the route handler. */
struct sse_sub;
/* Returns T_OK, T_ERR_NOMEM or T_ERR_SHUTTING_DOWN. */
int sse_subscribe(struct request *req, const char *conv_id, struct sse_sub **out);
/* Puts the retry hint and the initial events (the caller keeps its references; NULLs skipped)
 * in front of anything queued meanwhile, drops queued events whose id is not after from_id
 * (the newest message id the initial state covers, "" for none), and tells the watcher. */
void sse_start(struct sse_sub *sub, const char *from_id, struct sse_event *const *initial, size_t n);
/* Undoes sse_subscribe() so the handler can answer with an error. */
void sse_abort(struct request *req);

/* Queues ev for every subscriber of conv_id (all subscribers when conv_id is NULL); a subscriber
 * whose initial state already covers the event's id is skipped. Thread-safe; never blocks on a
 * client. Returns the number of subscribers reached. */
size_t sse_publish(const char *conv_id, struct sse_event *ev);

/* A parked (suspended) stream does not notice its client leaving; this polls their sockets and
 * ends the ones whose client hung up, so resources are freed within a tick, not a heartbeat. */
void sse_reap_disconnected(void);

/* Subscriber counts, for /metrics and the watcher. */
size_t sse_subscribers(const char *conv_id);
size_t sse_subscribers_total(void);

/* Watch-set change notifications (set by the watcher): called with the conversation id
 * when its first subscriber arrives (from_id = the newest id the stream already covers) and
 * when its last one leaves. Called without SSE locks held. */
typedef void (*sse_watch_fn)(const char *conv_id, const char *from_id, int subscribed);
void sse_set_watch_hook(sse_watch_fn fn);
#endif
