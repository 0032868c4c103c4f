/* Clocks: monotonic for durations and deadlines, wall time for timestamps others read. */
#ifndef TANDEM_CLOCK_H
#define TANDEM_CLOCK_H
#include <stdint.h>
#include <time.h>

static inline uint64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Monotonic milliseconds, for deadlines and intervals. */
static inline int64_t clock_mono_ms(void) { return (int64_t)(clock_mono_ns() / 1000000u); }

/* Unix time in milliseconds. */
static inline int64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds since a clock_mono_ns() reading, rounded to microseconds (for took_ms). */
static inline double clock_ms_since(uint64_t start_ns)
{
    uint64_t now = clock_mono_ns();
    double ms = now > start_ns ? (double)(now - start_ns) / 1e6 : 0.0;
    return (double)(int64_t)(ms * 1000.0 + 0.5) / 1000.0;
}
#endif
