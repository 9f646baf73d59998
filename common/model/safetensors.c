/* safetensors.c: the safetensors reader (mmap + full validation) and writer
 * (shared/reference/model.md §4).
 *
 * Why validate everything up front: tensor data pointers are handed out as
 * raw views into the mapping, so a header that lies about a range would let
 * a later reader run off the end of the file. After st_open() succeeds every
 * st_tensor's [data, data + nbytes) lies inside the mapped data area and no
 * two tensors share a byte.
 *
 * Thread-safety: an open st_file is immutable. Allocation: st_open allocates
 * the tensor table and names (freed by st_close); st_write allocates only the
 * header. The writer streams tensor bytes, so a checkpoint larger than memory
 * is not copied. */
#include "model/safetensors.h"

#include "util/err.h"
#include "util/fp16.h"
#include "util/json.h"
#include "util/mem.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader maps it without byte swapping"
#endif

/* The safetensors specification's own limit on the JSON header: anything
 * larger is refused before parsing, so a hostile length cannot make us
 * allocate or parse gigabytes. */
#define ST_HEADER_MAX ((uint64_t)100 * 1000 * 1000)

struct st_meta_kv {
  char *key;
  char *value;
};

struct st_file {
  char *path;
  void *map;                 /* the whole file, read-only; NULL for an empty map */
  size_t map_len;
  int n;
  struct st_tensor *t;       /* sorted by data offset */
  char *names;               /* one block holding every tensor name */
  int n_meta;
  struct st_meta_kv *meta;
};

/* ---- dtypes ---------------------------------------------------------------- */

static const struct {
  const char *name;
  size_t size;
} dtype_info[ST_DTYPE_COUNT] = {
  [ST_F32] = {"F32", 4},   [ST_F16] = {"F16", 2}, [ST_BF16] = {"BF16", 2},
  [ST_F64] = {"F64", 8},   [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},
  [ST_I16] = {"I16", 2},   [ST_I8] = {"I8", 1},   [ST_U8] = {"U8", 1},
  [ST_U16] = {"U16", 2},   [ST_U32] = {"U32", 4}, [ST_U64] = {"U64", 8},
  [ST_BOOL] = {"BOOL", 1},
};

/* Valid in the format (model.md §4) but not representable here: a file that
 * uses them is well-formed, just not loadable, so it gets UNSUPPORTED rather
 * than CORRUPT. */
static const char *const dtype_unsupported[] = {
  "F8_E5M2", "F8_E4M3", "F8_E8M0", "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F4", "F6_E2M3", "F6_E3M2",
  "C64",
};

const char *st_dtype_name(enum st_dtype t)
{
  return (unsigned)t < ST_DTYPE_COUNT ? dtype_info[t].name : "?";
}

size_t st_dtype_size(enum st_dtype t)
{
  return (unsigned)t < ST_DTYPE_COUNT ? dtype_info[t].size : 0;
}

static int dtype_parse(const char *s, enum st_dtype *out)
{
  for (int i = 0; i < ST_DTYPE_COUNT; i++)
    if (!strcmp(s, dtype_info[i].name)) {
      *out = (enum st_dtype)i;
      return 0;
    }
  for (size_t i = 0; i < sizeof dtype_unsupported / sizeof dtype_unsupported[0]; i++)
    if (!strcmp(s, dtype_unsupported[i])) return JP_EUNSUPPORTED;
  return JP_ECORRUPT;
}

int64_t st_numel(const struct st_tensor *t)
{
  int64_t n = 1;
  for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
  return n;
}

/* ---- reader ---------------------------------------------------------------- */

void st_close(st_file *f)
{
  if (!f) return;
  if (f->map) munmap(f->map, f->map_len);
  for (int i = 0; i < f->n_meta; i++) {
    jp_free(f->meta[i].key);
    jp_free(f->meta[i].value);
  }
  jp_free(f->meta);
  jp_free(f->t);
  jp_free(f->names);
  jp_free(f->path);
  jp_free(f);
}

int st_count(const st_file *f) { return f->n; }

const struct st_tensor *st_at(const st_file *f, int i)
{
  return i >= 0 && i < f->n ? &f->t[i] : NULL;
}

const struct st_tensor *st_find(const st_file *f, const char *name)
{
  /* Linear: a BERT checkpoint has ~200 tensors and each is looked up once
   * at load time, so an index would cost more than it saves. */
  for (int i = 0; i < f->n; i++)
    if (!strcmp(f->t[i].name, name)) return &f->t[i];
  return NULL;
}

const char *st_metadata(const st_file *f, const char *key)
{
  for (int i = 0; i < f->n_meta; i++)
    if (!strcmp(f->meta[i].key, key)) return f->meta[i].value;
  return NULL;
}

/* Data range of one tensor while parsing (offsets relative to the data area). */
struct st_range {
  uint64_t begin, end;
  int idx;
};

static int range_cmp(const void *a, const void *b)
{
  const struct st_range *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

/* A JSON value that must be a non-negative integer fitting in int64. */
static int json_u64(const json_t *v, uint64_t *out)
{
  if (!json_is_integer(v)) return -1;
  json_int_t x = json_integer_value(v);
  if (x < 0) return -1;
  *out = (uint64_t)x;
  return 0;
}

static int parse_metadata(st_file *f, const json_t *m)
{
  const char *key;
  json_t *v;
  if (!json_is_object(m))
    return JP_CORRUPT_AT("%s: \"__metadata__\" must be an object of strings", f->path);
  size_t n = json_object_size(m);
  f->meta = jp_calloc(n ? n : 1, sizeof *f->meta);
  if (!f->meta) return JP_ENOMEM;
  json_object_foreach((json_t *)m, key, v) {
    if (!json_is_string(v))
      return JP_CORRUPT_AT("%s: __metadata__ value of \"%s\" is not a string", f->path, key);
    struct st_meta_kv *kv = &f->meta[f->n_meta];
    kv->key = jp_strdup(key);
    kv->value = jp_strndup(json_string_value(v), json_string_length(v));
    if (!kv->key || !kv->value) {
      jp_free(kv->key);
      jp_free(kv->value);
      kv->key = kv->value = NULL;
      return JP_ENOMEM;
    }
    f->n_meta++;
  }
  return 0;
}

/* Validate one tensor entry and fill t (name is set by the caller). */
static int parse_tensor(const st_file *f, const char *name, const json_t *e, uint64_t data_len,
                        struct st_tensor *t, struct st_range *r)
{
  const json_t *jd, *js, *jo;
  uint64_t begin, end, numel = 1;
  size_t i;
  int rc;

  if (!json_is_object(e))
    return JP_CORRUPT_AT("%s: tensor '%s': entry is not an object", f->path, name);
  jd = json_object_get(e, "dtype");
  js = json_object_get(e, "shape");
  jo = json_object_get(e, "data_offsets");
  if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo))
    return JP_CORRUPT_AT("%s: tensor '%s': needs string \"dtype\", array \"shape\" and array "
                         "\"data_offsets\"", f->path, name);
  rc = dtype_parse(json_string_value(jd), &t->dtype);
  if (rc == JP_EUNSUPPORTED)
    return jp_err(JP_EUNSUPPORTED, "%s: tensor '%s': dtype %s is not supported", f->path, name,
                  json_string_value(jd));
  if (rc)
    return JP_CORRUPT_AT("%s: tensor '%s': unknown dtype \"%.32s\"", f->path, name,
                         json_string_value(jd));
  if (json_array_size(js) > ST_MAX_DIMS)
    return JP_CORRUPT_AT("%s: tensor '%s': %zu dimensions, at most %d supported", f->path, name,
                         json_array_size(js), ST_MAX_DIMS);
  t->ndim = (int)json_array_size(js);
  for (i = 0; i < json_array_size(js); i++) {
    uint64_t d;
    if (json_u64(json_array_get(js, i), &d) != 0)
      return JP_CORRUPT_AT("%s: tensor '%s': shape[%zu] is not a non-negative integer", f->path,
                           name, i);
    /* numel can only be compared with the byte range if it is exact. */
    if (d && numel > (uint64_t)INT64_MAX / d)
      return JP_CORRUPT_AT("%s: tensor '%s': shape overflows", f->path, name);
    numel *= d;
    t->shape[i] = (int64_t)d;
  }
  if (json_array_size(jo) != 2 || json_u64(json_array_get(jo, 0), &begin) != 0 ||
      json_u64(json_array_get(jo, 1), &end) != 0)
    return JP_CORRUPT_AT("%s: tensor '%s': data_offsets must be two non-negative integers",
                         f->path, name);
  if (begin > end)
    return JP_CORRUPT_AT("%s: tensor '%s': data_offsets [%llu, %llu] are reversed", f->path,
                         name, (unsigned long long)begin, (unsigned long long)end);
  if (end > data_len)
    return JP_CORRUPT_AT("%s: tensor '%s': data_offsets end %llu is past the end of the data "
                         "area (%llu bytes)", f->path, name, (unsigned long long)end,
                         (unsigned long long)data_len);
  if (numel > UINT64_MAX / st_dtype_size(t->dtype) ||
      numel * st_dtype_size(t->dtype) != end - begin)
    return JP_CORRUPT_AT("%s: tensor '%s': shape needs %llu x %zu bytes but data_offsets span "
                         "%llu bytes", f->path, name, (unsigned long long)numel,
                         st_dtype_size(t->dtype), (unsigned long long)(end - begin));
  t->nbytes = (size_t)(end - begin);
  r->begin = begin;
  r->end = end;
  return 0;
}

static int parse_header(st_file *f, const char *hdr, size_t hdr_len, const uint8_t *data,
                        uint64_t data_len)
{
  json_error_t je;
  json_t *root = json_loadb(hdr, hdr_len, JSON_REJECT_DUPLICATES, &je);
  struct st_tensor *tmp = NULL;
  struct st_range *ranges = NULL;
  const char *key;
  json_t *v;
  size_t names_len = 0, off = 0;
  int rc = 0, n = 0;

  if (!root)
    return JP_CORRUPT_AT("%s: header is not valid JSON (line %d column %d: %s)", f->path,
                         je.line, je.column, je.text);
  if (!json_is_object(root)) {
    rc = JP_CORRUPT_AT("%s: header is not a JSON object", f->path);
    goto out;
  }
  json_object_foreach(root, key, v) {
    if (!strcmp(key, "__metadata__")) continue;
    names_len += strlen(key) + 1;
    n++;
  }
  tmp = jp_calloc(n ? (size_t)n : 1, sizeof *tmp);
  ranges = jp_calloc(n ? (size_t)n : 1, sizeof *ranges);
  f->names = jp_malloc(names_len ? names_len : 1);
  if (!tmp || !ranges || !f->names) { rc = JP_ENOMEM; goto out; }

  int k = 0;
  json_object_foreach(root, key, v) {
    if (!strcmp(key, "__metadata__")) {
      rc = parse_metadata(f, v);
      if (rc) goto out;
      continue;
    }
    size_t kl = strlen(key) + 1;
    memcpy(f->names + off, key, kl);
    tmp[k].name = f->names + off;
    off += kl;
    rc = parse_tensor(f, key, v, data_len, &tmp[k], &ranges[k]);
    if (rc) goto out;
    ranges[k].idx = k;
    k++;
  }

  /* Overlap check on ranges sorted by start; empty tensors occupy no bytes
   * and so can never overlap anything. */
  qsort(ranges, (size_t)n, sizeof *ranges, range_cmp);
  uint64_t prev_end = 0;
  int prev = -1;
  for (int i = 0; i < n; i++) {
    if (ranges[i].begin == ranges[i].end) continue;
    if (prev >= 0 && ranges[i].begin < prev_end) {
      rc = JP_CORRUPT_AT("%s: tensor '%s' overlaps tensor '%s' in the data area", f->path,
                         tmp[ranges[i].idx].name, tmp[ranges[prev].idx].name);
      goto out;
    }
    prev = i;
    prev_end = ranges[i].end;
  }
  f->t = jp_calloc(n ? (size_t)n : 1, sizeof *f->t);
  if (!f->t) { rc = JP_ENOMEM; goto out; }
  for (int i = 0; i < n; i++) {
    f->t[i] = tmp[ranges[i].idx];
    f->t[i].data = data + ranges[i].begin;
  }
  f->n = n;
out:
  jp_free(tmp);
  jp_free(ranges);
  json_decref(root);
  return rc;
}

int st_open(const char *path, st_file **out)
{
  struct stat st;
  st_file *f;
  uint64_t hlen, size;
  int fd, rc;

  *out = NULL;
  f = jp_calloc(1, sizeof *f);
  if (!f) return JP_ENOMEM;
  f->path = jp_strdup(path);
  if (!f->path) { jp_free(f); return JP_ENOMEM; }

  fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    rc = jp_err(errno == ENOENT ? JP_ENOTFOUND : JP_EIO, "cannot open %s: %s", path,
                strerror(errno));
    goto fail;
  }
  if (fstat(fd, &st) != 0) {
    rc = jp_err(JP_EIO, "cannot stat %s: %s", path, strerror(errno));
    close(fd);
    goto fail;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = jp_err(JP_EINVAL, "%s is not a regular file", path);
    close(fd);
    goto fail;
  }
  size = (uint64_t)st.st_size;
  if (size < 8) {
    rc = JP_CORRUPT_AT("%s: file is %llu bytes, shorter than the 8-byte header length", path,
                       (unsigned long long)size);
    close(fd);
    goto fail;
  }
  if (size > SIZE_MAX) {
    rc = jp_err(JP_ETOOBIG, "%s: file too large to map", path);
    close(fd);
    goto fail;
  }
  f->map_len = (size_t)size;
  f->map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);   /* the mapping keeps the file alive */
  if (f->map == MAP_FAILED) {
    f->map = NULL;
    rc = jp_err(errno == ENOMEM ? JP_ENOMEM : JP_EIO, "cannot map %s: %s", path,
                strerror(errno));
    goto fail;
  }

  const uint8_t *b = f->map;
  hlen = 0;
  for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | b[i];
  if (hlen > ST_HEADER_MAX) {
    rc = JP_CORRUPT_AT("%s: header length %llu exceeds the 100 MB limit", path,
                       (unsigned long long)hlen);
    goto fail;
  }
  if (hlen > size - 8) {
    rc = JP_CORRUPT_AT("%s: header length %llu runs past the end of the file (%llu bytes)",
                       path, (unsigned long long)hlen, (unsigned long long)size);
    goto fail;
  }
  rc = parse_header(f, (const char *)b + 8, (size_t)hlen, b + 8 + hlen, size - 8 - hlen);
  if (rc) goto fail;
  *out = f;
  return 0;
fail:
  st_close(f);
  return rc;
}

/* ---- conversion ------------------------------------------------------------ */

int st_to_f32(const struct st_tensor *t, float *dst)
{
  size_t n = (size_t)st_numel(t);
  const uint8_t *src = t->data;
  switch (t->dtype) {
  case ST_F32:
    memcpy(dst, src, n * 4);   /* memcpy: the source may be unaligned in the mapping */
    return 0;
  case ST_F16:
  case ST_BF16: {
    int half = t->dtype == ST_F16;
    if (((uintptr_t)src & 1) == 0) {
      if (half) jp_f16_to_f32_n((const uint16_t *)src, dst, n);
      else jp_bf16_to_f32_n((const uint16_t *)src, dst, n);
      return 0;
    }
    for (size_t i = 0; i < n; i++) {   /* odd address: read each half through memcpy */
      uint16_t h;
      memcpy(&h, src + 2 * i, 2);
      dst[i] = half ? jp_f16_to_f32(h) : jp_bf16_to_f32(h);
    }
    return 0;
  }
  default:
    return jp_err(JP_EUNSUPPORTED, "tensor '%s': cannot convert %s to float32",
                  t->name ? t->name : "?", st_dtype_name(t->dtype));
  }
}

/* ---- writer ---------------------------------------------------------------- */

static int write_all(int fd, const void *data, size_t len, const char *path)
{
  const char *p = data;
  while (len > 0) {
    /* Cap each call: Linux write() moves at most ~2 GiB at a time anyway. */
    size_t chunk = len > ((size_t)1 << 30) ? ((size_t)1 << 30) : len;
    ssize_t w = write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      return jp_err(JP_EIO, "cannot write %s: %s", path, strerror(errno));
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

static int build_header(const struct st_tensor *tensors, int n, const char *metadata_json,
                        char **out, size_t *out_len)
{
  json_t *root = json_object(), *meta = NULL;
  uint64_t off = 0;
  int rc = 0;
  char *s = NULL;

  *out = NULL;
  if (!root) return JP_ENOMEM;
  if (metadata_json) {
    const char *k;
    json_t *v;
    rc = jp_json_loadb(metadata_json, strlen(metadata_json), "safetensors metadata", &meta);
    if (rc) goto out;
    if (!json_is_object(meta)) {
      rc = jp_err(JP_EINVAL, "safetensors metadata must be a JSON object");
      goto out;
    }
    json_object_foreach(meta, k, v) {
      if (!json_is_string(v)) {
        rc = jp_err(JP_EINVAL, "safetensors metadata value of \"%s\" must be a string", k);
        goto out;
      }
    }
    if (json_object_set(root, "__metadata__", meta)) { rc = JP_ENOMEM; goto out; }
  }
  for (int i = 0; i < n; i++) {
    const struct st_tensor *t = &tensors[i];
    json_t *e, *shape, *offs;
    uint64_t numel = 1;
    if (!t->name || !*t->name || !strcmp(t->name, "__metadata__")) {
      rc = jp_err(JP_EINVAL, "tensor %d: invalid name", i);
      goto out;
    }
    if (json_object_get(root, t->name)) {
      rc = jp_err(JP_EINVAL, "tensor '%s' is given twice", t->name);
      goto out;
    }
    if ((unsigned)t->dtype >= ST_DTYPE_COUNT || t->ndim < 0 || t->ndim > ST_MAX_DIMS) {
      rc = jp_err(JP_EINVAL, "tensor '%s': bad dtype or rank", t->name);
      goto out;
    }
    for (int d = 0; d < t->ndim; d++) {
      if (t->shape[d] < 0 || (t->shape[d] && numel > (uint64_t)INT64_MAX / (uint64_t)t->shape[d])) {
        rc = jp_err(JP_EINVAL, "tensor '%s': bad shape", t->name);
        goto out;
      }
      numel *= (uint64_t)t->shape[d];
    }
    if (numel > SIZE_MAX / st_dtype_size(t->dtype) ||
        numel * st_dtype_size(t->dtype) != t->nbytes || (t->nbytes && !t->data)) {
      rc = jp_err(JP_EINVAL, "tensor '%s': nbytes %zu does not match its shape and dtype",
                  t->name, t->nbytes);
      goto out;
    }
    /* Built bottom-up, attaching each piece as soon as it exists, so one
     * json_decref(root) frees everything on any failure. */
    e = json_object();
    if (!e || json_object_set_new(root, t->name, e)) { rc = JP_ENOMEM; goto out; }
    if (json_object_set_new(e, "dtype", json_string(st_dtype_name(t->dtype))) ||
        json_object_set_new(e, "shape", shape = json_array()) ||
        json_object_set_new(e, "data_offsets", offs = json_array())) {
      rc = JP_ENOMEM;
      goto out;
    }
    for (int d = 0; d < t->ndim; d++)
      if (json_array_append_new(shape, json_integer(t->shape[d]))) { rc = JP_ENOMEM; goto out; }
    if (json_array_append_new(offs, json_integer((json_int_t)off)) ||
        json_array_append_new(offs, json_integer((json_int_t)(off + t->nbytes)))) {
      rc = JP_ENOMEM;
      goto out;
    }
    off += t->nbytes;
  }
  s = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!s) { rc = JP_ENOMEM; goto out; }
  size_t len = strlen(s);
  /* Pad with spaces so the data area starts 8-byte aligned (8 + len). */
  size_t padded = (len + 7) & ~(size_t)7;
  char *h = jp_malloc(padded);
  if (!h) { rc = JP_ENOMEM; goto out; }
  memcpy(h, s, len);
  memset(h + len, ' ', padded - len);
  *out = h;
  *out_len = padded;
out:
  free(s);   /* json_dumps allocates with jansson's allocator (malloc) */
  json_decref(meta);
  json_decref(root);
  return rc;
}

int st_write(const char *path, const struct st_tensor *tensors, int n, const char *metadata_json)
{
  char tmp[PATH_MAX], dir[PATH_MAX];
  char *hdr = NULL;
  size_t hlen = 0;
  uint8_t lenbuf[8];
  int fd, rc;

  if (n < 0 || (n && !tensors)) return jp_err(JP_EINVAL, "st_write: bad tensor list");
  rc = build_header(tensors, n, metadata_json, &hdr, &hlen);
  if (rc) return rc;
  if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
    jp_free(hdr);
    return jp_err(JP_ETOOBIG, "path too long: %s", path);
  }
  fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    jp_free(hdr);
    return jp_err(JP_EIO, "cannot create %s: %s", tmp, strerror(errno));
  }
  for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)((uint64_t)hlen >> (8 * i));
  rc = write_all(fd, lenbuf, 8, tmp);
  if (!rc) rc = write_all(fd, hdr, hlen, tmp);
  for (int i = 0; i < n && !rc; i++)
    if (tensors[i].nbytes) rc = write_all(fd, tensors[i].data, tensors[i].nbytes, tmp);
  if (!rc && fsync(fd) != 0) rc = jp_err(JP_EIO, "fsync %s: %s", tmp, strerror(errno));
  close(fd);
  jp_free(hdr);
  if (!rc && rename(tmp, path) != 0)
    rc = jp_err(JP_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
  if (rc) {
    unlink(tmp);
    return rc;
  }
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = strrchr(dir, '/');
  if (slash == dir) dir[1] = '\0';
  else if (slash) *slash = '\0';
  else snprintf(dir, sizeof dir, ".");
  int fd_dir = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd_dir >= 0) {   /* best effort, as jp_write_file_atomic: the data itself is synced */
    (void)fsync(fd_dir);
    close(fd_dir);
  }
  return 0;
}
