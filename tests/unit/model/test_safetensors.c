/* test_safetensors.c: the safetensors reader and writer (common/model/
 * safetensors.c): round trip, every kind of corruption refused with
 * JP_ECORRUPT naming the file, and a deterministic byte-flipping loop that
 * must never crash the reader. */
#include "test_helpers.h"
#include "model/safetensors.h"
#include "util/err.h"
#include "util/fp16.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/mem.h"

#include <limits.h>
#include <stdint.h>

static char g_dir[PATH_MAX];

static int setup(void **state)
{
  (void)state;
  return jp_test_tmpdir(g_dir, sizeof g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
  (void)state;
  jp_rm_rf(g_dir);
  return 0;
}

static void path_in(char *buf, size_t cap, const char *name)
{
  assert_int_equal(jp_path_join(buf, cap, g_dir, name), 0);
}

/* Writes 8-byte length + header + data, exactly as given (no padding). */
static void write_raw(const char *path, uint64_t hlen, const char *hdr, size_t hdr_bytes,
                      const void *data, size_t dlen)
{
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  uint8_t lb[8];
  for (int i = 0; i < 8; i++) lb[i] = (uint8_t)(hlen >> (8 * i));
  assert_int_equal(fwrite(lb, 1, 8, f), 8);
  if (hdr_bytes) assert_int_equal(fwrite(hdr, 1, hdr_bytes, f), hdr_bytes);
  if (dlen) assert_int_equal(fwrite(data, 1, dlen, f), dlen);
  fclose(f);
}

static void write_hdr(const char *path, const char *hdr, const void *data, size_t dlen)
{
  write_raw(path, strlen(hdr), hdr, strlen(hdr), data, dlen);
}

/* st_open must refuse with `code` and a message that names the file and,
 * when given, contains `needle`. */
static void expect_refused(const char *path, int code, const char *needle)
{
  st_file *f = (st_file *)0x1;
  int rc = st_open(path, &f);
  assert_int_equal(rc, code);
  assert_null(f);
  const char *msg = jp_errmsg(rc);
  if (!strstr(msg, path)) fail_msg("message does not name the file: %s", msg);
  if (needle && !strstr(msg, needle)) fail_msg("message lacks '%s': %s", needle, msg);
}

/* ---- round trip ------------------------------------------------------------------ */

static void write_then_read_returns_same_tensors(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "rt.safetensors");
  float a[6] = {1.5f, -2.0f, 0.25f, 3.0f, -0.125f, 1e-3f};
  uint16_t h[4], bf[4];
  float hv[4] = {1.0f, -0.5f, 65504.0f, 0.0f};            /* exact in F16 */
  float bv[4] = {1.0f, -3.0f, 0x1p100f, -0.0078125f};     /* exact in BF16 */
  for (int i = 0; i < 4; i++) {
    h[i] = jp_f32_to_f16(hv[i]);
    bf[i] = jp_f32_to_bf16(bv[i]);
  }
  int64_t ix[3] = {-1, 0, INT64_MAX};
  float scalar = 42.0f;
  struct st_tensor t[] = {
    {.name = "a.weight", .dtype = ST_F32, .ndim = 2, .shape = {2, 3}, .data = a, .nbytes = 24},
    {.name = "half", .dtype = ST_F16, .ndim = 1, .shape = {4}, .data = h, .nbytes = 8},
    {.name = "brain", .dtype = ST_BF16, .ndim = 2, .shape = {2, 2}, .data = bf, .nbytes = 8},
    {.name = "ids", .dtype = ST_I64, .ndim = 2, .shape = {1, 3}, .data = ix, .nbytes = 24},
    {.name = "empty", .dtype = ST_U8, .ndim = 1, .shape = {0}, .data = NULL, .nbytes = 0},
    {.name = "scalar", .dtype = ST_F32, .ndim = 0, .data = &scalar, .nbytes = 4},
  };
  int n = (int)(sizeof t / sizeof t[0]);
  assert_int_equal(st_write(p, t, n, "{\"format\": \"pt\", \"note\": \"x\"}"), 0);

  /* Header length is a multiple of 8 and padded with spaces. */
  char *raw;
  size_t rawlen;
  assert_int_equal(jp_read_file(p, 0, &raw, &rawlen), 0);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = (hl << 8) | (uint8_t)raw[i];
  assert_int_equal(hl % 8, 0);
  assert_int_equal(rawlen, 8 + hl + 24 + 8 + 8 + 24 + 4);
  size_t last = 8 + hl - 1;
  while (raw[last] == ' ') last--;
  assert_int_equal(raw[last], '}');
  jp_free(raw);

  st_file *f;
  assert_int_equal(st_open(p, &f), 0);
  assert_int_equal(st_count(f), n);
  assert_string_equal(st_metadata(f, "format"), "pt");
  assert_string_equal(st_metadata(f, "note"), "x");
  assert_null(st_metadata(f, "absent"));
  /* st_at is in data-offset order = the written order; the empty tensor
   * sits between "ids" and "scalar". */
  for (int i = 0; i < n; i++) {
    const struct st_tensor *r = st_find(f, t[i].name);
    assert_non_null(r);
    assert_int_equal(r->dtype, t[i].dtype);
    assert_int_equal(r->ndim, t[i].ndim);
    for (int d = 0; d < r->ndim; d++) assert_int_equal(r->shape[d], t[i].shape[d]);
    assert_int_equal(r->nbytes, t[i].nbytes);
    if (r->nbytes) assert_memory_equal(r->data, t[i].data, r->nbytes);
  }
  assert_string_equal(st_at(f, 0)->name, "a.weight");
  assert_string_equal(st_at(f, 1)->name, "half");
  assert_string_equal(st_at(f, 3)->name, "ids");
  assert_null(st_at(f, n));
  assert_null(st_find(f, "nope"));
  assert_int_equal(st_numel(st_find(f, "scalar")), 1);
  assert_int_equal(st_numel(st_find(f, "empty")), 0);

  float out[6];
  assert_int_equal(st_to_f32(st_find(f, "a.weight"), out), 0);
  assert_memory_equal(out, a, sizeof a);
  assert_int_equal(st_to_f32(st_find(f, "half"), out), 0);
  for (int i = 0; i < 4; i++) assert_true(out[i] == hv[i]);
  assert_int_equal(st_to_f32(st_find(f, "brain"), out), 0);
  for (int i = 0; i < 4; i++) assert_true(out[i] == bv[i]);
  assert_int_equal(st_to_f32(st_find(f, "ids"), out), JP_EUNSUPPORTED);
  st_close(f);
  st_close(NULL);

  assert_string_equal(st_dtype_name(ST_BF16), "BF16");
  assert_int_equal(st_dtype_size(ST_F64), 8);
  assert_int_equal(st_dtype_size(ST_BOOL), 1);
}

static void writer_refuses_inconsistent_tensors(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "bad-write.safetensors");
  float a[4] = {0};
  struct st_tensor dup[2] = {
    {.name = "x", .dtype = ST_F32, .ndim = 1, .shape = {4}, .data = a, .nbytes = 16},
    {.name = "x", .dtype = ST_F32, .ndim = 1, .shape = {4}, .data = a, .nbytes = 16},
  };
  assert_int_equal(st_write(p, dup, 2, NULL), JP_EINVAL);
  struct st_tensor sz = {.name = "x", .dtype = ST_F32, .ndim = 1, .shape = {3}, .data = a,
                         .nbytes = 16};
  assert_int_equal(st_write(p, &sz, 1, NULL), JP_EINVAL);
  struct st_tensor meta = {.name = "__metadata__", .dtype = ST_F32, .ndim = 1, .shape = {4},
                           .data = a, .nbytes = 16};
  assert_int_equal(st_write(p, &meta, 1, NULL), JP_EINVAL);
  assert_int_equal(st_write(p, &sz, 0, "{\"k\": 1}"), JP_EINVAL);   /* non-string metadata */
  assert_int_equal(jp_path_exists(p), 0);   /* nothing left behind */
}

/* A file whose tensors are misaligned in the mapping (header length not a
 * multiple of 8, as another writer may produce): conversion still works. */
static void odd_header_length_is_read_correctly(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "odd.safetensors");
  uint16_t h[3] = {jp_f32_to_f16(1.0f), jp_f32_to_f16(2.0f), jp_f32_to_f16(-4.0f)};
  float fl[1] = {7.0f};
  uint8_t data[10];
  memcpy(data, h, 6);
  memcpy(data + 6, fl, 4);
  /* 'x' header of odd length: data area starts at an odd address. */
  const char *hdr = "{\"h\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                    "\"f\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[6,10]}} ";
  assert_true(strlen(hdr) % 2 == 1);
  write_hdr(p, hdr, data, sizeof data);
  st_file *f;
  assert_int_equal(st_open(p, &f), 0);
  float out[3];
  assert_int_equal(st_to_f32(st_find(f, "h"), out), 0);
  assert_true(out[0] == 1.0f && out[1] == 2.0f && out[2] == -4.0f);
  assert_int_equal(st_to_f32(st_find(f, "f"), out), 0);
  assert_true(out[0] == 7.0f);
  st_close(f);
}

/* ---- corruption ------------------------------------------------------------------ */

static void truncated_files_are_refused(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "trunc.safetensors");
  FILE *fp = fopen(p, "wb");
  fwrite("\x10\0\0", 1, 3, fp);
  fclose(fp);
  expect_refused(p, JP_ECORRUPT, "shorter than");

  fp = fopen(p, "wb");
  fclose(fp);
  expect_refused(p, JP_ECORRUPT, "shorter than");

  /* Header cut short: the length says 100, 10 bytes follow. */
  write_raw(p, 100, "{\"a\":{\"dty", 10, NULL, 0);
  expect_refused(p, JP_ECORRUPT, "past the end");

  /* Data area cut short. */
  float d[2] = {1, 2};
  write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", d, 8);
  expect_refused(p, JP_ECORRUPT, "past the end of the data");
}

static void header_length_beyond_eof_is_refused(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "hlen.safetensors");
  const char *h = "{}      ";
  write_raw(p, 9, h, 8, NULL, 0);   /* one byte more than the file has */
  expect_refused(p, JP_ECORRUPT, "header length 9");
}

static void huge_header_length_is_refused(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "huge.safetensors");
  write_raw(p, (uint64_t)1 << 40, "{}", 2, NULL, 0);
  expect_refused(p, JP_ECORRUPT, "100 MB");
  write_raw(p, UINT64_MAX, "{}", 2, NULL, 0);   /* would wrap 8 + N */
  expect_refused(p, JP_ECORRUPT, "100 MB");
}

static void bad_json_is_refused(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "json.safetensors");
  write_hdr(p, "{\"a\": {\"dtype\": \"F32\", ", NULL, 0);
  expect_refused(p, JP_ECORRUPT, "not valid JSON");
  write_hdr(p, "[1, 2, 3]", NULL, 0);
  expect_refused(p, JP_ECORRUPT, "not a JSON object");
  write_hdr(p, "{\"a\": 5}", NULL, 0);
  expect_refused(p, JP_ECORRUPT, "'a'");
  write_hdr(p, "{\"a\": {\"dtype\": \"F32\", \"shape\": [1]}}", NULL, 0);
  expect_refused(p, JP_ECORRUPT, "data_offsets");
  /* Duplicate keys would let two entries describe one name. */
  float d[1] = {0};
  write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", d, 4);
  expect_refused(p, JP_ECORRUPT, NULL);
  write_hdr(p, "{\"__metadata__\": {\"format\": 1}}", NULL, 0);
  expect_refused(p, JP_ECORRUPT, "__metadata__");
  write_hdr(p, "{\"__metadata__\": [\"x\"]}", NULL, 0);
  expect_refused(p, JP_ECORRUPT, "__metadata__");
}

static void offsets_past_end_are_refused(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "offs.safetensors");
  float d[4] = {0};
  write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[250],\"data_offsets\":[0,1000]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "'w'");
  write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "past the end of the data");
  write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "reversed");
  write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "non-negative");
  write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "non-negative");
}

static void overlapping_ranges_are_refused(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "overlap.safetensors");
  float d[4] = {0};
  write_hdr(p, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "overlaps");
  /* The same range twice also overlaps; listed out of offset order. */
  write_hdr(p, "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"c\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[8,16]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "overlaps");
  /* Adjacent ranges and an empty tensor inside another are fine. */
  write_hdr(p, "{\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]},"
               "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", d, 16);
  st_file *f;
  assert_int_equal(st_open(p, &f), 0);
  assert_int_equal(st_count(f), 3);
  assert_string_equal(st_at(f, 0)->name, "a");
  assert_string_equal(st_at(f, 2)->name, "b");
  st_close(f);
}

static void shape_size_mismatch_is_refused(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "shape.safetensors");
  float d[4] = {0};
  write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "shape needs");
  write_hdr(p, "{\"w\":{\"dtype\":\"F16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "shape needs");
  write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,16]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "shape[0]");
  /* An element count that overflows int64 must not wrap into a match. */
  write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],"
               "\"data_offsets\":[0,16]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "overflow");
  write_hdr(p, "{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],"
               "\"data_offsets\":[0,4]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "dimensions");
}

static void unknown_dtype_is_refused(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "dtype.safetensors");
  float d[4] = {0};
  write_hdr(p, "{\"w\":{\"dtype\":\"F33\",\"shape\":[4],\"data_offsets\":[0,16]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "unknown dtype");
  write_hdr(p, "{\"w\":{\"dtype\":7,\"shape\":[4],\"data_offsets\":[0,16]}}", d, 16);
  expect_refused(p, JP_ECORRUPT, "dtype");
  /* A dtype the format defines but this reader cannot represent is not
   * corruption: it is refused as unsupported, still naming the file. */
  write_hdr(p, "{\"w\":{\"dtype\":\"F8_E4M3\",\"shape\":[16],\"data_offsets\":[0,16]}}", d, 16);
  expect_refused(p, JP_EUNSUPPORTED, "F8_E4M3");
}

static void missing_file_is_not_found(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "absent.safetensors");
  st_file *f;
  assert_int_equal(st_open(p, &f), JP_ENOTFOUND);
  assert_int_equal(st_open(g_dir, &f), JP_EINVAL);   /* a directory */
}

/* ---- fuzz-ish ---------------------------------------------------------------------- */

static void drop_log(void *ud, int level, const char *line)
{
  (void)ud;
  (void)level;
  (void)line;
}

/* Every tensor the reader accepts must lie inside the file (touching each
 * byte would fault otherwise) and convert. */
static void check_accepted(st_file *f)
{
  for (int i = 0; i < st_count(f); i++) {
    const struct st_tensor *t = st_at(f, i);
    volatile uint8_t sink = 0;
    assert_true((size_t)st_numel(t) * st_dtype_size(t->dtype) == t->nbytes);
    for (size_t b = 0; b < t->nbytes; b++) sink ^= ((const uint8_t *)t->data)[b];
    (void)sink;
    if (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16) {
      float *buf = jp_malloc((size_t)st_numel(t) * sizeof(float) + 1);
      assert_non_null(buf);
      assert_int_equal(st_to_f32(t, buf), 0);
      jp_free(buf);
    }
    if (i > 0) {
      const struct st_tensor *prev = st_at(f, i - 1);
      assert_true((const uint8_t *)prev->data <= (const uint8_t *)t->data);
    }
  }
}

/* Flips bytes of a small valid file (and sometimes rewrites a digit of the
 * header or truncates), a fixed number of times with a fixed seed: st_open
 * must either refuse cleanly or return tensors that stay inside the file. */
static void random_corruption_never_crashes(void **state)
{
  (void)state;
  char p[PATH_MAX], q[PATH_MAX];
  path_in(p, sizeof p, "fuzz-base.safetensors");
  path_in(q, sizeof q, "fuzz.safetensors");
  float a[6] = {1, 2, 3, 4, 5, 6};
  uint16_t h[4] = {0x3c00, 0xbc00, 0x4000, 0};
  int32_t ix[2] = {7, -7};
  struct st_tensor t[] = {
    {.name = "a", .dtype = ST_F32, .ndim = 2, .shape = {2, 3}, .data = a, .nbytes = 24},
    {.name = "h", .dtype = ST_F16, .ndim = 1, .shape = {4}, .data = h, .nbytes = 8},
    {.name = "i", .dtype = ST_I32, .ndim = 1, .shape = {2}, .data = ix, .nbytes = 8},
  };
  assert_int_equal(st_write(p, t, 3, "{\"format\":\"pt\"}"), 0);
  char *base;
  size_t len;
  assert_int_equal(jp_read_file(p, 0, &base, &len), 0);
  uint8_t *buf = jp_malloc(len);
  assert_non_null(buf);

  jp_log_set_sink(drop_log, NULL);   /* thousands of expected corruption reports */
  uint64_t rng = 0x5eedf00dull;
  int accepted = 0, refused = 0;
  for (int it = 0; it < 3000; it++) {
    size_t n = len;
    memcpy(buf, base, len);
    int mode = (int)(jp_rand64(&rng) % 4);
    if (mode == 0) {
      /* Rewrite one header digit: keeps the JSON valid, changes a number. */
      size_t tries = 0, pos;
      do pos = 8 + jp_rand64(&rng) % (len - 8);
      while ((buf[pos] < '0' || buf[pos] > '9') && ++tries < 64);
      if (buf[pos] >= '0' && buf[pos] <= '9') buf[pos] = (uint8_t)('0' + jp_rand64(&rng) % 10);
    } else if (mode == 1) {
      n = (size_t)(jp_rand64(&rng) % len);   /* truncate */
    } else {
      int flips = 1 + (int)(jp_rand64(&rng) % 4);
      for (int k = 0; k < flips; k++) {
        /* Bias towards the length prefix and header, where parsing lives. */
        size_t pos = (jp_rand64(&rng) & 1) ? jp_rand64(&rng) % 16 : jp_rand64(&rng) % len;
        buf[pos] ^= (uint8_t)(1u << (jp_rand64(&rng) % 8));
      }
    }
    FILE *fp = fopen(q, "wb");
    assert_non_null(fp);
    if (n) assert_int_equal(fwrite(buf, 1, n, fp), n);
    fclose(fp);
    st_file *f = NULL;
    int rc = st_open(q, &f);
    if (rc == 0) {
      check_accepted(f);
      st_close(f);
      accepted++;
    } else {
      assert_null(f);
      assert_true(rc == JP_ECORRUPT || rc == JP_EUNSUPPORTED);
      refused++;
    }
  }
  jp_log_set_sink(NULL, NULL);
  /* Both outcomes must occur, or the loop is not exercising the reader. */
  assert_true(accepted > 0);
  assert_true(refused > 0);
  jp_free(buf);
  jp_free(base);
}

static void open_oom_is_clean(void **state)
{
  (void)state;
  char p[PATH_MAX];
  path_in(p, sizeof p, "oom.safetensors");
  float a[2] = {1, 2};
  struct st_tensor t[] = {
    {.name = "a", .dtype = ST_F32, .ndim = 1, .shape = {2}, .data = a, .nbytes = 8},
    {.name = "b", .dtype = ST_F32, .ndim = 1, .shape = {1}, .data = a, .nbytes = 4},
  };
  assert_int_equal(st_write(p, t, 2, "{\"format\":\"pt\"}"), 0);
  for (long k = 1; k < 100; k++) {
    st_file *f = NULL;
    jp_mem_fail_after(k);
    int rc = st_open(p, &f);
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      assert_non_null(st_find(f, "b"));
      st_close(f);
      assert_true(made < k);
      return;
    }
    assert_int_equal(rc, JP_ENOMEM);
    assert_null(f);
  }
  fail_msg("st_open never succeeded");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(write_then_read_returns_same_tensors),
    cmocka_unit_test(writer_refuses_inconsistent_tensors),
    cmocka_unit_test(odd_header_length_is_read_correctly),
    cmocka_unit_test(truncated_files_are_refused),
    cmocka_unit_test(header_length_beyond_eof_is_refused),
    cmocka_unit_test(huge_header_length_is_refused),
    cmocka_unit_test(bad_json_is_refused),
    cmocka_unit_test(offsets_past_end_are_refused),
    cmocka_unit_test(overlapping_ranges_are_refused),
    cmocka_unit_test(shape_size_mismatch_is_refused),
    cmocka_unit_test(unknown_dtype_is_refused),
    cmocka_unit_test(missing_file_is_not_found),
    cmocka_unit_test(random_corruption_never_crashes),
    cmocka_unit_test(open_oom_is_clean),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
