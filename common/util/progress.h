/* progress.h: progress reporting for long jobs (indexing, encoding).
 *
 * On a terminal it redraws one bar line with count, rate and ETA; otherwise
 * (logs, CI, mpirun output) it prints a plain line at most every
 * `interval_s` seconds and at the end. The caller owns the FILE (programs
 * pass stderr; library code never writes to the terminal by itself). */
#ifndef JP_PROGRESS_H
#define JP_PROGRESS_H
#include <stdint.h>
#include <stdio.h>

struct jp_progress {
  FILE *out;            /* where to draw; NULL disables output */
  char label[48];       /* "encoding", "k-means" ... */
  char unit[16];        /* "passages" ... */
  uint64_t total;       /* 0 if unknown */
  uint64_t done;
  double t_start;       /* monotonic seconds */
  double t_last;        /* last draw */
  double interval_s;    /* min seconds between plain lines (tty: 0.1) */
  int tty;              /* draw a bar in place */
};

void jp_progress_init(struct jp_progress *p, FILE *out, const char *label, const char *unit,
                      uint64_t total);
/* Set the count to `done` and redraw if due. */
void jp_progress_update(struct jp_progress *p, uint64_t done);
/* Final line (always printed), with the elapsed time and mean rate. */
void jp_progress_finish(struct jp_progress *p);

/* "1h02m", "3m05s", "12.3s" into buf. */
void jp_format_duration(char *buf, size_t cap, double seconds);

#endif /* JP_PROGRESS_H */
