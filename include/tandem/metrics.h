/* Prometheus metrics: request counts and latency by route, plus what modules register. */
#ifndef TANDEM_METRICS_H
#define TANDEM_METRICS_H
#include <stdint.h>

#include "tandem/buf.h"

#define METRICS_MAX_ROUTES 48 /* route table rows + 1 for "unmatched" */

/* Call once before threads start, with the route names (route i -> names[i]); route index
 * n_routes is "unmatched". Names are borrowed for the life of the process. */
void metrics_init(const char *const *route_names, unsigned n_routes);
/* Counts one finished request. route may be -1 (unmatched). Thread-safe, lock-free. */
void metrics_observe_request(int route, const char *method, unsigned status, uint64_t duration_ns);

/* A module's own metrics, appended to the exposition (HELP/TYPE lines included by fn).
 * Register before threads start; at most 16. fn must be thread-safe. */
typedef int (*metrics_render_fn)(struct buf *out);
void metrics_register(metrics_render_fn fn);

/* Whole exposition in Prometheus text format 0.0.4 into out. */
int metrics_render(struct buf *out);

/* Appends "# HELP name help\n# TYPE name type\n". */
int metrics_header(struct buf *out, const char *name, const char *type, const char *help);
#endif
