/* check.h: validation of request fields, shared by the servers' handlers.
 *
 * Every function returns 0 when the value is acceptable, else JP_EINVAL
 * with a detail (jp_err) that names the field, so the caller can answer
 * INVALID_ARGUMENT with a message a user can act on ("documents[3].metadata:
 * not a JSON object"). The field name is a printf format; it is only
 * formatted on failure, so checks cost nothing extra on good requests.
 *
 * Thread-safety: pure functions (the detail is thread-local).
 * Allocation: rpc_check_json_object parses with jansson and frees it. */
#ifndef JP_RPC_CHECK_H
#define JP_RPC_CHECK_H
#include <stddef.h>

#include <protobuf-c/protobuf-c.h>

/* 1 if s[0..len) is well-formed UTF-8 (no overlong forms, no surrogates,
 * nothing above U+10FFFF), else 0. */
int rpc_utf8_valid(const char *s, size_t len);

/* A string field: strlen(s) in [min_len, max_len] and valid UTF-8. NULL is
 * read as "" (protobuf-c uses a shared empty string for unset fields). */
int rpc_check_str(const char *s, size_t min_len, size_t max_len, const char *field_fmt, ...)
  __attribute__((format(printf, 4, 5)));

/* "" (no metadata) or the text of a JSON object of at most max_len bytes. */
int rpc_check_json_object(const char *s, size_t max_len, const char *field_fmt, ...)
  __attribute__((format(printf, 3, 4)));

/* A count (repeated field length or a size field) in [min, max]. */
int rpc_check_count(size_t n, size_t min, size_t max, const char *field_fmt, ...)
  __attribute__((format(printf, 4, 5)));

/* A `bytes` field holding exactly n_floats little-endian float32 values,
 * all finite. On success *out points at the floats inside the field (the
 * field must be 4-byte aligned, which arena-unpacked messages are; an
 * unaligned field is refused rather than copied, as it means a caller that
 * did not unpack through rpc_pb_*). n_floats 0 accepts an empty field and
 * sets *out to NULL. */
int rpc_check_f32(const ProtobufCBinaryData *b, size_t n_floats, const float **out,
                  const char *field_fmt, ...)
  __attribute__((format(printf, 4, 5)));

#endif /* JP_RPC_CHECK_H */
