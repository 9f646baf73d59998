/* main.c: the japlaid command-line tool: dispatch to a subcommand.
 *
 * Every feature is a library call first (common/); the subcommands parse
 * options, call the library, and print. */
#include "cli.h"
#include "jp_config.h"
#include "util/err.h"
#include "util/log.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct command {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *summary;
};

static const struct command commands[] = {
#define JP_CMD(name, fn, summary) {#name, fn, summary},
#include "commands.def"
#undef JP_CMD
};

static void usage(FILE *f)
{
  fprintf(f, "usage: japlaid <command> [options]\n\ncommands:\n");
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
  fprintf(f, "\n'japlaid <command> --help' describes a command. "
             "JAPLAID_LOG=error|warn|info|debug sets the log level.\n");
}

int cli_fail(const char *cmd, int rc)
{
  fprintf(stderr, "japlaid %s: %s\n", cmd, jp_errmsg(rc));
  return CLI_ERR;
}

int cli_usage_error(const char *cmd, const char *fmt, ...)
{
  va_list ap;
  fprintf(stderr, "japlaid %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see 'japlaid %s --help')\n", cmd);
  return CLI_USAGE;
}

int cli_parse_int(const char *cmd, const char *opt, const char *s, long min, long max, long *out)
{
  char *end;
  long v;
  if (!s) return cli_usage_error(cmd, "%s needs a value", opt);
  errno = 0;
  v = strtol(s, &end, 10);
  if (errno || end == s || *end || v < min || v > max)
    return cli_usage_error(cmd, "%s must be an integer in %ld..%ld, got '%s'", opt, min, max, s);
  *out = v;
  return 0;
}

int cli_parse_float(const char *cmd, const char *opt, const char *s, double min, double max,
                    double *out)
{
  char *end;
  double v;
  if (!s) return cli_usage_error(cmd, "%s needs a value", opt);
  errno = 0;
  v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v) || v < min || v > max)
    return cli_usage_error(cmd, "%s must be a number in %g..%g, got '%s'", opt, min, max, s);
  *out = v;
  return 0;
}

int cmd_version(int argc, char **argv)
{
  (void)argc;
  (void)argv;
  printf("japlaid %s (cuda backend: %s, avx2 kernels: %s)\n", JP_VERSION_STRING,
         JP_HAVE_CUDA ? "built" : "not built", JP_HAVE_AVX2 ? "built" : "not built");
  return CLI_OK;
}

int main(int argc, char **argv)
{
  jp_log_set_level(JP_LOG_LEVEL_WARN);
  jp_log_init_from_env();
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
      !strcmp(argv[1], "help")) {
    usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? CLI_USAGE : CLI_OK;
  }
  if (!strcmp(argv[1], "--version")) return cmd_version(argc - 1, argv + 1);
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "japlaid: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return CLI_USAGE;
}
