/* check.c: request field validation (see check.h). */
#include "rpc/check.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "util/err.h"

/* The wire format is little-endian float32; reading it in place assumes the
 * host is too (every target of this project is). */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "japlaid reads float32 vectors from the wire in place: little-endian hosts only"
#endif

int rpc_utf8_valid(const char *str, size_t len)
{
  const unsigned char *s = (const unsigned char *)str;
  size_t i = 0;
  while (i < len) {
    unsigned c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    unsigned cp, min;
    if ((c & 0xE0) == 0xC0) { n = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { n = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { n = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;                                /* stray continuation or 0xF8.. */
    if (len - i < n) return 0;
    for (size_t k = 1; k < n; k++) {
      if ((s[i + k] & 0xC0) != 0x80) return 0;
      cp = (cp << 6) | (s[i + k] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    i += n;
  }
  return 1;
}

/* Format the field name and record the detail. */
static int fail(const char *field_fmt, va_list ap, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));

static int fail(const char *field_fmt, va_list ap, const char *fmt, ...)
{
  char field[160], what[256];
  vsnprintf(field, sizeof field, field_fmt, ap);
  va_list ap2;
  va_start(ap2, fmt);
  vsnprintf(what, sizeof what, fmt, ap2);
  va_end(ap2);
  return jp_err(JP_EINVAL, "%s: %s", field, what);
}

int rpc_check_str(const char *s, size_t min_len, size_t max_len, const char *field_fmt, ...)
{
  size_t n = s ? strlen(s) : 0;
  int rc = 0;
  va_list ap;
  va_start(ap, field_fmt);
  if (n < min_len) {
    rc = n == 0 ? fail(field_fmt, ap, "must not be empty")
                : fail(field_fmt, ap, "%zu bytes, at least %zu required", n, min_len);
  } else if (n > max_len) {
    rc = fail(field_fmt, ap, "%zu bytes, the limit is %zu", n, max_len);
  } else if (!rpc_utf8_valid(s, n)) {
    rc = fail(field_fmt, ap, "not valid UTF-8");
  }
  va_end(ap);
  return rc;
}

int rpc_check_json_object(const char *s, size_t max_len, const char *field_fmt, ...)
{
  size_t n = s ? strlen(s) : 0;
  if (n == 0) return 0;
  int rc = 0;
  va_list ap;
  va_start(ap, field_fmt);
  if (n > max_len) {
    rc = fail(field_fmt, ap, "%zu bytes, the limit is %zu", n, max_len);
  } else {
    json_error_t e;
    /* JSON_REJECT_DUPLICATES: {"a":1,"a":2} has no single meaning for a
     * filter, so it is refused rather than resolved silently. */
    json_t *j = json_loadb(s, n, JSON_REJECT_DUPLICATES, &e);
    if (!j) rc = fail(field_fmt, ap, "invalid JSON at column %d: %s", e.column, e.text);
    else if (!json_is_object(j)) rc = fail(field_fmt, ap, "not a JSON object");
    json_decref(j);
  }
  va_end(ap);
  return rc;
}

int rpc_check_count(size_t n, size_t min, size_t max, const char *field_fmt, ...)
{
  if (n >= min && n <= max) return 0;
  va_list ap;
  va_start(ap, field_fmt);
  int rc = fail(field_fmt, ap, "%zu is outside %zu..%zu", n, min, max);
  va_end(ap);
  return rc;
}

int rpc_check_f32(const ProtobufCBinaryData *b, size_t n_floats, const float **out,
                  const char *field_fmt, ...)
{
  int rc = 0;
  va_list ap;
  va_start(ap, field_fmt);
  *out = NULL;
  if (n_floats > SIZE_MAX / sizeof(float) || b->len != n_floats * sizeof(float)) {
    rc = fail(field_fmt, ap, "%zu bytes, expected %zu (%zu float32 values)", b->len,
              n_floats * sizeof(float), n_floats);
  } else if (n_floats > 0 && ((uintptr_t)b->data % _Alignof(float)) != 0) {
    rc = fail(field_fmt, ap, "not aligned for float32 (unpack it with rpc_pb_*)");
  } else if (n_floats > 0) {
    const float *f = (const float *)(const void *)b->data;
    for (size_t i = 0; i < n_floats; i++) {
      if (!isfinite(f[i])) {
        rc = fail(field_fmt, ap, "value %zu is not finite", i);
        break;
      }
    }
    if (rc == 0) *out = f;
  }
  va_end(ap);
  return rc;
}
