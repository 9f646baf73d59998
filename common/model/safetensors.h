/* safetensors.h: reading (mmap) and writing the safetensors format
 * (shared/reference/model.md §4).
 *
 * The reader maps the file read-only and validates everything before any
 * tensor is handed out: header length within the file and under 100 MB,
 * valid JSON, known dtypes, shapes whose element count times the dtype size
 * equals the byte range, ranges inside the data area, no overlaps. A
 * truncated or lying file is refused with JP_ECORRUPT and a message naming
 * the file and tensor. Tensor data pointers stay valid until st_close().
 *
 * Thread-safety: an open st_file is immutable and may be read from any
 * thread. */
#ifndef JP_SAFETENSORS_H
#define JP_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>

enum st_dtype {
  ST_F32, ST_F16, ST_BF16, ST_F64, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_U16, ST_U32,
  ST_U64, ST_BOOL,
  ST_DTYPE_COUNT
};

#define ST_MAX_DIMS 8

struct st_tensor {
  const char *name;                 /* NUL-terminated */
  enum st_dtype dtype;
  int ndim;
  int64_t shape[ST_MAX_DIMS];
  const void *data;                 /* into the mapping (reader) or caller memory (writer) */
  size_t nbytes;
};

typedef struct st_file st_file;

int  st_open(const char *path, st_file **out);
void st_close(st_file *f);                                   /* NULL is a no-op */
int  st_count(const st_file *f);
const struct st_tensor *st_at(const st_file *f, int i);      /* in data-offset order */
const struct st_tensor *st_find(const st_file *f, const char *name);   /* NULL if absent */
/* "__metadata__" value for key, or NULL. */
const char *st_metadata(const st_file *f, const char *key);

const char *st_dtype_name(enum st_dtype t);                  /* "F32" */
size_t st_dtype_size(enum st_dtype t);
int64_t st_numel(const struct st_tensor *t);

/* Convert a F32/F16/BF16 tensor to float32 into dst (numel floats). */
int st_to_f32(const struct st_tensor *t, float *dst);

/* Write tensors (in the given order, header padded with spaces to a multiple
 * of 8) atomically to path. metadata_json is NULL or a JSON object of
 * string values written as "__metadata__". */
int st_write(const char *path, const struct st_tensor *tensors, int n,
             const char *metadata_json);

#endif /* JP_SAFETENSORS_H */
