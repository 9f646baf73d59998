/* log.c: see log.h. */
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static int g_level = JP_LOG_LEVEL_INFO;
static jp_log_sink g_sink;
static void *g_sink_ud;
static char g_tag[32];

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};
static const char level_chars[] = "EWIDT";

void jp_log_set_level(int level)
{
  if (level < JP_LOG_LEVEL_ERROR) level = JP_LOG_LEVEL_ERROR;
  if (level > JP_LOG_LEVEL_TRACE) level = JP_LOG_LEVEL_TRACE;
  g_level = level;
}

int jp_log_get_level(void) { return g_level; }

int jp_log_parse_level(const char *s)
{
  if (!s) return -1;
  for (int i = 0; i <= JP_LOG_LEVEL_TRACE; i++)
    if (strcasecmp(s, level_names[i]) == 0) return i;
  if (strcasecmp(s, "warning") == 0) return JP_LOG_LEVEL_WARN;
  return -1;
}

void jp_log_init_from_env(void)
{
  int l = jp_log_parse_level(getenv("JAPLAID_LOG"));
  if (l >= 0) g_level = l;
}

void jp_log_set_sink(jp_log_sink sink, void *ud)
{
  g_sink = sink;
  g_sink_ud = ud;
}

void jp_log_set_tag(const char *tag)
{
  snprintf(g_tag, sizeof g_tag, "%s", tag ? tag : "");
}

void jp_log_write(int level, const char *file, int line, const char *fmt, ...)
{
  char buf[2048];
  struct timespec ts;
  struct tm tm;
  size_t n;
  va_list ap;
  const char *base = strrchr(file, '/');

  base = base ? base + 1 : file;
  clock_gettime(CLOCK_REALTIME, &ts);
  gmtime_r(&ts.tv_sec, &tm);
  n = (size_t)snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %c %s%s[%s:%d] ",
                       tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                       tm.tm_sec, ts.tv_nsec / 1000000L,
                       level_chars[level < 0 ? 0 : level > 4 ? 4 : level], g_tag,
                       g_tag[0] ? " " : "", base, line);
  if (n < sizeof buf) {
    va_start(ap, fmt);
    vsnprintf(buf + n, sizeof buf - n, fmt, ap);
    va_end(ap);
  }
  if (g_sink) {
    g_sink(g_sink_ud, level, buf);
    return;
  }
  fprintf(stderr, "%s\n", buf);
}
