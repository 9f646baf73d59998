/* clock.c: see clock.h. */
#include "util/clock.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

uint64_t jp_now_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

double jp_now_s(void) { return (double)jp_now_ns() * 1e-9; }

uint64_t jp_wall_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000ull + (uint64_t)ts.tv_nsec / 1000000ull;
}

void jp_sleep_ms(unsigned ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {}
}

uint64_t jp_peak_rss_bytes(void)
{
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  unsigned long long kb = 0;
  if (!f) return 0;
  while (fgets(line, sizeof line, f))
    if (strncmp(line, "VmHWM:", 6) == 0) { sscanf(line + 6, "%llu", &kb); break; }
  fclose(f);
  return kb * 1024ull;
}
