/* progress.c: see progress.h. */
#include "util/progress.h"
#include "util/clock.h"

#include <string.h>
#include <unistd.h>

void jp_format_duration(char *buf, size_t cap, double s)
{
  if (s < 0 || s != s) s = 0;
  if (s < 60) snprintf(buf, cap, "%.1fs", s);
  else if (s < 3600) snprintf(buf, cap, "%dm%02ds", (int)(s / 60), (int)s % 60);
  else snprintf(buf, cap, "%dh%02dm", (int)(s / 3600), ((int)s % 3600) / 60);
}

void jp_progress_init(struct jp_progress *p, FILE *out, const char *label, const char *unit,
                      uint64_t total)
{
  memset(p, 0, sizeof *p);
  p->out = out;
  snprintf(p->label, sizeof p->label, "%s", label ? label : "");
  snprintf(p->unit, sizeof p->unit, "%s", unit ? unit : "items");
  p->total = total;
  p->t_start = p->t_last = jp_now_s();
  p->tty = out && isatty(fileno(out));
  p->interval_s = p->tty ? 0.1 : 5.0;
}

static void draw(struct jp_progress *p, double now, int final)
{
  double el = now - p->t_start;
  double rate = el > 0 ? (double)p->done / el : 0;
  char eta[32] = "?", elapsed[32];

  jp_format_duration(elapsed, sizeof elapsed, el);
  if (p->total && rate > 0 && p->done <= p->total)
    jp_format_duration(eta, sizeof eta, (double)(p->total - p->done) / rate);
  if (p->tty) {
    char bar[31];
    int fill = p->total ? (int)(30.0 * (double)p->done / (double)p->total) : 0;
    if (fill > 30) fill = 30;
    memset(bar, '#', (size_t)fill);
    memset(bar + fill, '.', (size_t)(30 - fill));
    bar[30] = '\0';
    if (p->total)
      fprintf(p->out, "\r%s [%s] %llu/%llu %s %.1f/s %s %s\x1b[K", p->label, bar,
              (unsigned long long)p->done, (unsigned long long)p->total, p->unit, rate,
              final ? "in" : "ETA", final ? elapsed : eta);
    else
      fprintf(p->out, "\r%s %llu %s %.1f/s %s\x1b[K", p->label, (unsigned long long)p->done,
              p->unit, rate, elapsed);
    if (final) fputc('\n', p->out);
  } else {
    if (p->total)
      fprintf(p->out, "%s: %llu/%llu %s (%.1f%%), %.1f/s, %s %s\n", p->label,
              (unsigned long long)p->done, (unsigned long long)p->total, p->unit,
              100.0 * (double)p->done / (double)p->total, rate, final ? "took" : "ETA",
              final ? elapsed : eta);
    else
      fprintf(p->out, "%s: %llu %s, %.1f/s, %s\n", p->label, (unsigned long long)p->done,
              p->unit, rate, elapsed);
  }
  fflush(p->out);
  p->t_last = now;
}

void jp_progress_update(struct jp_progress *p, uint64_t done)
{
  double now;
  p->done = done;
  if (!p->out) return;
  now = jp_now_s();
  if (now - p->t_last >= p->interval_s) draw(p, now, 0);
}

void jp_progress_finish(struct jp_progress *p)
{
  if (!p->out) return;
  draw(p, jp_now_s(), 1);
}
