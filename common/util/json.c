/* json.c: see json.h. */
#include "util/json.h"
#include "util/err.h"
#include "util/mem.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int jp_json_load_file(const char *path, json_t **out)
{
  json_error_t e;
  *out = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
  if (!*out) {
    if (e.line <= 0 && e.position <= 0)
      return jp_err(JP_EIO, "cannot read JSON file %s: %s", path, e.text);
    return jp_err(JP_EINVAL, "%s:%d:%d: invalid JSON: %s", path, e.line, e.column, e.text);
  }
  return 0;
}

int jp_json_loadb(const char *buf, size_t len, const char *what, json_t **out)
{
  json_error_t e;
  *out = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &e);
  if (!*out)
    return jp_err(JP_EINVAL, "%s: invalid JSON at line %d column %d: %s", what ? what : "input",
                  e.line, e.column, e.text);
  return 0;
}

int jp_json_get_int(const json_t *obj, const char *key, int64_t def, int64_t *out)
{
  json_t *v = obj ? json_object_get(obj, key) : NULL;
  if (!v || json_is_null(v)) { *out = def; return 0; }
  if (!json_is_integer(v)) return jp_err(JP_EINVAL, "\"%s\" must be an integer", key);
  *out = (int64_t)json_integer_value(v);
  return 0;
}

int jp_json_get_real(const json_t *obj, const char *key, double def, double *out)
{
  json_t *v = obj ? json_object_get(obj, key) : NULL;
  if (!v || json_is_null(v)) { *out = def; return 0; }
  if (!json_is_number(v)) return jp_err(JP_EINVAL, "\"%s\" must be a number", key);
  *out = json_number_value(v);
  return 0;
}

int jp_json_get_bool(const json_t *obj, const char *key, int def, int *out)
{
  json_t *v = obj ? json_object_get(obj, key) : NULL;
  if (!v || json_is_null(v)) { *out = def; return 0; }
  if (!json_is_boolean(v)) return jp_err(JP_EINVAL, "\"%s\" must be true or false", key);
  *out = json_is_true(v);
  return 0;
}

int jp_json_get_str(const json_t *obj, const char *key, const char *def, const char **out)
{
  json_t *v = obj ? json_object_get(obj, key) : NULL;
  if (!v || json_is_null(v)) { *out = def; return 0; }
  if (!json_is_string(v)) return jp_err(JP_EINVAL, "\"%s\" must be a string", key);
  *out = json_string_value(v);
  return 0;
}

void jp_buf_init(struct jp_buf *b, size_t limit)
{
  b->data = NULL;
  b->len = b->cap = 0;
  b->limit = limit ? limit : (size_t)1 << 30;
}

void jp_buf_fini(struct jp_buf *b)
{
  jp_free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

void jp_buf_reset(struct jp_buf *b)
{
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}

static int reserve(struct jp_buf *b, size_t extra)
{
  size_t need;
  if (extra > b->limit || b->len > b->limit - extra)
    return jp_err(JP_ETOOBIG, "output exceeds the limit of %zu bytes", b->limit);
  need = b->len + extra + 1;
  if (need <= b->cap) return 0;
  size_t ncap = b->cap ? b->cap : 256;
  while (ncap < need) ncap *= 2;
  char *nd = jp_realloc(b->data, ncap);
  if (!nd) return JP_ENOMEM;
  b->data = nd;
  b->cap = ncap;
  return 0;
}

int jp_buf_append(struct jp_buf *b, const void *data, size_t n)
{
  int rc = reserve(b, n);
  if (rc) return rc;
  if (n) memcpy(b->data + b->len, data, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

int jp_buf_puts(struct jp_buf *b, const char *s) { return jp_buf_append(b, s, strlen(s)); }
int jp_buf_putc(struct jp_buf *b, char c) { return jp_buf_append(b, &c, 1); }

int jp_buf_printf(struct jp_buf *b, const char *fmt, ...)
{
  va_list ap;
  char small[256];
  int n;
  va_start(ap, fmt);
  n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return jp_err(JP_EINVAL, "format error");
  if ((size_t)n < sizeof small) return jp_buf_append(b, small, (size_t)n);
  int rc = reserve(b, (size_t)n);
  if (rc) return rc;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return 0;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
  unsigned c = s[0];
  size_t len;
  unsigned min;
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) { len = 2; min = 0x80; }
  else if (c >= 0xe0 && c <= 0xef) { len = 3; min = 0x800; }
  else if (c >= 0xf0 && c <= 0xf4) { len = 4; min = 0x10000; }
  else return 0;
  if (n < len) return 0;
  unsigned cp = c & (0x7f >> len);
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (s[i] & 0x3f);
  }
  if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
  return len;
}

int jp_buf_json_str(struct jp_buf *b, const char *s, size_t n)
{
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0, run = 0;
  int rc = reserve(b, n + 2);
  if (rc) return rc;
  if ((rc = jp_buf_putc(b, '"'))) return rc;
  while (i < n) {
    unsigned c = p[i];
    const char *esc = NULL;
    char ubuf[8];
    size_t sl = 1;
    if (c == '"') esc = "\\\"";
    else if (c == '\\') esc = "\\\\";
    else if (c == '\n') esc = "\\n";
    else if (c == '\r') esc = "\\r";
    else if (c == '\t') esc = "\\t";
    else if (c < 0x20) { snprintf(ubuf, sizeof ubuf, "\\u%04x", c); esc = ubuf; }
    else if (c >= 0x80) {
      sl = utf8_seq(p + i, n - i);
      if (sl == 0) { esc = "\xef\xbf\xbd"; sl = 1; }
    }
    if (esc) {
      if (run && (rc = jp_buf_append(b, s + i - run, run))) return rc;
      run = 0;
      if ((rc = jp_buf_puts(b, esc))) return rc;
      i += sl;
    } else {
      run += sl;
      i += sl;
    }
  }
  if (run && (rc = jp_buf_append(b, s + i - run, run))) return rc;
  return jp_buf_putc(b, '"');
}

int jp_buf_json_float(struct jp_buf *b, float v)
{
  char tmp[32];
  if (!isfinite(v)) return jp_buf_puts(b, "null");
  /* Shortest of %.6g..%.9g that round-trips: keeps embedding JSON small. */
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(tmp, sizeof tmp, "%.*g", prec, (double)v);
    if (strtof(tmp, NULL) == v) break;
  }
  return jp_buf_puts(b, tmp);
}

int jp_buf_json_value(struct jp_buf *b, const json_t *v)
{
  char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  if (!s) return JP_ENOMEM;
  int rc = jp_buf_puts(b, s);
  free(s);
  return rc;
}
