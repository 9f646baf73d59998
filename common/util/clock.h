/* clock.h: time sources. Monotonic for measuring and deadlines, wall clock
 * only for display. */
#ifndef JP_CLOCK_H
#define JP_CLOCK_H
#include <stdint.h>

uint64_t jp_now_ns(void);      /* CLOCK_MONOTONIC, nanoseconds */
double   jp_now_s(void);       /* CLOCK_MONOTONIC, seconds */
uint64_t jp_wall_ms(void);     /* CLOCK_REALTIME, milliseconds since the epoch */
void     jp_sleep_ms(unsigned ms);

/* Peak resident set size of this process in bytes (from /proc, VmHWM). */
uint64_t jp_peak_rss_bytes(void);

#endif /* JP_CLOCK_H */
