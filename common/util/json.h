/* json.h: JSON in and out.
 *
 * Parsing uses jansson; these wrappers turn its errors into JP_E* codes
 * with messages that name the source, line and column, and read typed
 * fields with defaults (a wrong type is an error, not a silent default).
 * Writing large outputs (embeddings, result lists) goes through jp_buf,
 * which is faster than building jansson trees and bounded in size. */
#ifndef JP_JSON_H
#define JP_JSON_H
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Parse a file / buffer. `what` names the source in error messages. */
int jp_json_load_file(const char *path, json_t **out);
int jp_json_loadb(const char *buf, size_t len, const char *what, json_t **out);

/* Typed getters: if `key` is absent (or JSON null) *out = def and 0 is
 * returned; a present value of the wrong type gives JP_EINVAL naming the
 * key. Integers accept JSON integers only; reals accept both. */
int jp_json_get_int(const json_t *obj, const char *key, int64_t def, int64_t *out);
int jp_json_get_real(const json_t *obj, const char *key, double def, double *out);
int jp_json_get_bool(const json_t *obj, const char *key, int def, int *out);
/* The string stays owned by obj. */
int jp_json_get_str(const json_t *obj, const char *key, const char *def, const char **out);

/* A growable byte buffer with a size limit (curl's dynbuf). */
struct jp_buf {
  char *data;       /* NUL-terminated when len > 0 or after any append */
  size_t len;       /* bytes used, excluding the NUL */
  size_t cap;       /* bytes allocated */
  size_t limit;     /* max len; appends past it fail with JP_ETOOBIG (0 = 1 GiB) */
};

void jp_buf_init(struct jp_buf *b, size_t limit);
void jp_buf_fini(struct jp_buf *b);
void jp_buf_reset(struct jp_buf *b);                 /* len = 0, keeps memory */
int  jp_buf_append(struct jp_buf *b, const void *data, size_t n);
int  jp_buf_puts(struct jp_buf *b, const char *s);
int  jp_buf_putc(struct jp_buf *b, char c);
int  jp_buf_printf(struct jp_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal, quotes included, with escapes. Invalid UTF-8 is
 * replaced by U+FFFD so the output is always valid JSON. */
int  jp_buf_json_str(struct jp_buf *b, const char *s, size_t n);
/* A float in the shortest form that reads back to the same float
 * (up to 9 significant digits); NaN/Inf become null. */
int  jp_buf_json_float(struct jp_buf *b, float v);
/* jansson value, compact. */
int  jp_buf_json_value(struct jp_buf *b, const json_t *v);

#endif /* JP_JSON_H */
