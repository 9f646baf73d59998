/* cli.h: what the japlaid subcommands share: option parsing helpers and
 * error reporting. Output contract: results go to stdout (one JSON object
 * per line where the command says so); diagnostics go to stderr. Exit
 * status: 0 ok, 1 runtime error, 2 usage error. */
#ifndef JP_CLI_H
#define JP_CLI_H
#include <stdint.h>

#define JP_CMD(name, fn, summary) int fn(int argc, char **argv);
#include "commands.def"
#undef JP_CMD

enum { CLI_OK = 0, CLI_ERR = 1, CLI_USAGE = 2 };

/* Print "japlaid <cmd>: <message of rc>" to stderr and return CLI_ERR. */
int cli_fail(const char *cmd, int rc);
/* Print "japlaid <cmd>: <formatted>" to stderr and return CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Strict number parsing for option values: the whole string must parse and
 * lie in [min, max]; else a usage message naming the option. */
int cli_parse_int(const char *cmd, const char *opt, const char *s, long min, long max, long *out);
int cli_parse_float(const char *cmd, const char *opt, const char *s, double min, double max,
                    double *out);

#endif /* JP_CLI_H */
