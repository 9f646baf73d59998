/* log.h: leveled logging. Library code logs through these macros only and
 * never writes to stdout/stderr itself; a program chooses the level and the
 * sink (default: stderr, one line per call, with an ISO-8601 UTC time).
 *
 * Thread-safety: safe from any thread; each line is written with one call.
 * The level and sink are process settings made in main() before threads
 * start. Allocation: none (lines are formatted on the stack, cut at 2 KiB). */
#ifndef JP_LOG_H
#define JP_LOG_H

enum jp_log_level {
  JP_LOG_LEVEL_ERROR = 0,
  JP_LOG_LEVEL_WARN = 1,
  JP_LOG_LEVEL_INFO = 2,
  JP_LOG_LEVEL_DEBUG = 3,
  JP_LOG_LEVEL_TRACE = 4,
};

typedef void (*jp_log_sink)(void *ud, int level, const char *line);

void jp_log_set_level(int level);
int  jp_log_get_level(void);
/* Parse "error|warn|info|debug|trace"; returns the level or -1. */
int  jp_log_parse_level(const char *s);
/* Read JAPLAID_LOG from the environment, if set. */
void jp_log_init_from_env(void);
/* NULL restores the stderr sink. */
void jp_log_set_sink(jp_log_sink sink, void *ud);
/* Prefix every line with a tag, e.g. "shard:2" or "rank 1" (copied, 31 chars). */
void jp_log_set_tag(const char *tag);

void jp_log_write(int level, const char *file, int line, const char *fmt, ...)
  __attribute__((format(printf, 4, 5)));

#define JP_LOG_ENABLED(lvl) ((lvl) <= jp_log_get_level())
#define JP_LOG_(lvl, ...) \
  do { if (JP_LOG_ENABLED(lvl)) jp_log_write((lvl), __FILE__, __LINE__, __VA_ARGS__); } while (0)
#define JP_LOG_ERROR(...) JP_LOG_(JP_LOG_LEVEL_ERROR, __VA_ARGS__)
#define JP_LOG_WARN(...)  JP_LOG_(JP_LOG_LEVEL_WARN, __VA_ARGS__)
#define JP_LOG_INFO(...)  JP_LOG_(JP_LOG_LEVEL_INFO, __VA_ARGS__)
#define JP_LOG_DEBUG(...) JP_LOG_(JP_LOG_LEVEL_DEBUG, __VA_ARGS__)
#define JP_LOG_TRACE(...) JP_LOG_(JP_LOG_LEVEL_TRACE, __VA_ARGS__)

#endif /* JP_LOG_H */
