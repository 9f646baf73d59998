/* err.c: the error table and the per-thread detail message. */
#include "util/err.h"
#include "util/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define JP_ERRMSG_CAP 512

static _Thread_local int tls_code;
static _Thread_local char tls_msg[JP_ERRMSG_CAP];

const char *jp_strerror(int code)
{
  switch (code) {
  case JP_OK: return "success";
#define JP__ERR_STR(name, val, msg) case JP_E##name: return msg;
  JP_ERR_MAP(JP__ERR_STR)
#undef JP__ERR_STR
  default: return "unknown error";
  }
}

const char *jp_errname(int code)
{
  switch (code) {
  case JP_OK: return "JP_OK";
#define JP__ERR_NAME(name, val, msg) case JP_E##name: return "JP_E" #name;
  JP_ERR_MAP(JP__ERR_NAME)
#undef JP__ERR_NAME
  default: return "JP_E?";
  }
}

static int set_detail(int code, const char *fmt, va_list ap)
{
  tls_code = code;
  vsnprintf(tls_msg, sizeof tls_msg, fmt, ap);
  return code;
}

int jp_err(int code, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  set_detail(code, fmt, ap);
  va_end(ap);
  return code;
}

int jp_err_at(int code, const char *file, int line, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  set_detail(code, fmt, ap);
  va_end(ap);
  jp_log_write(JP_LOG_LEVEL_ERROR, file, line, "%s: %s", jp_errname(code), tls_msg);
  return code;
}

const char *jp_errmsg(int code)
{
  if (code != 0 && tls_code == code && tls_msg[0])
    return tls_msg;
  return jp_strerror(code);
}

void jp_err_clear(void)
{
  tls_code = 0;
  tls_msg[0] = '\0';
}
