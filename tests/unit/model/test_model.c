/* test_model.c: generated checkpoints -> jp_model_open -> jp_encoder
 * (common/model/checkpoint.c, config.c, model.c, encoder.c, backend.c).
 *
 * Uses the real vocabulary ($JP_DATA_DIR) and the installed MeCab
 * dictionary; skipped (77) when either is missing. Models are tiny
 * (2 layers, hidden 32) so the whole file runs in seconds. */
#include "test_helpers.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/json.h"
#include "util/log.h"
#include "util/mem.h"

#include <limits.h>
#include <math.h>

static char g_vocab[PATH_MAX];
static char g_tmp[1024];
static char g_base[1200];   /* a tiny F32 checkpoint, written once */

static void tiny_spec(struct jp_random_spec *s, const char *dtype, int prefix, uint64_t seed)
{
  jp_random_spec_default(s);
  s->layers = 2;
  s->hidden = 32;
  s->heads = 2;
  s->intermediate = 64;
  s->max_position = 64;
  s->dim = 16;
  s->seed = seed;
  s->dtype = dtype;
  s->bert_prefix = prefix;
}

static void sub(char *buf, size_t cap, const char *name)
{
  assert_int_equal(jp_path_join(buf, cap, g_tmp, name), 0);
}

static jp_model *open_ok(const char *dir)
{
  struct jp_model_opts o;
  jp_model *m = NULL;
  jp_model_opts_default(&o);
  o.n_threads = 2;
  int rc = jp_model_open(dir, &o, &m);
  if (rc) fail_msg("jp_model_open(%s): %s", dir, jp_errmsg(rc));
  return m;
}

static int setup(void **state)
{
  (void)state;
  if (!jp_test_data(g_vocab, sizeof g_vocab, "bert-base-japanese-v3/vocab.txt")) {
    fprintf(stderr, "skipped: no vocab under JP_DATA_DIR\n");
    exit(JP_TEST_SKIP);
  }
  if (!jp_test_tmpdir(g_tmp, sizeof g_tmp)) return -1;
  snprintf(g_base, sizeof g_base, "%s/base", g_tmp);
  struct jp_random_spec s;
  tiny_spec(&s, "F32", 1, 11);
  if (jp_checkpoint_write_random(g_base, g_vocab, &s)) return -1;
  jp_model *m = NULL;
  int rc = jp_model_open(g_base, NULL, &m);
  if (rc == JP_ENOTFOUND || rc == JP_EIO) {   /* no MeCab dictionary here */
    fprintf(stderr, "skipped: %s\n", jp_errmsg(rc));
    jp_rm_rf(g_tmp);
    exit(JP_TEST_SKIP);
  }
  jp_model_close(m);
  return rc ? -1 : 0;
}

static int teardown(void **state)
{
  (void)state;
  jp_rm_rf(g_tmp);
  return 0;
}

/* A fixed mix of sequences: a query with [MASK] padding and two documents. */
static const int32_t seq_q[12] = {2, 5, 12569, 465, 12500, 464, 3, 4, 4, 4, 4, 4};
static const uint8_t seq_q_attn[12] = {1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
static const int32_t seq_d[9] = {2, 6, 28186, 18909, 457, 26697, 16, 385, 3};
static const uint8_t seq_d_keep[9] = {1, 1, 1, 1, 1, 1, 0, 1, 1};

/* Encodes the query (12 rows) then the document (8 kept rows) into out. */
static void encode_fixed(jp_model *m, float *out)
{
  jp_encoder *e;
  struct jp_token_seq q = {seq_q, seq_q_attn, 12}, d = {seq_d, seq_d_keep, 9};
  int32_t len;
  int dim = jp_model_get_info(m)->colbert.dim;
  assert_int_equal(jp_encoder_create(m, &e), 0);
  assert_int_equal(jp_encode_seqs(e, 1, &q, 1, out, 12, &len), 0);
  assert_int_equal(len, 12);
  assert_int_equal(jp_encode_seqs(e, 0, &d, 1, out + 12 * dim, 8, &len), 0);
  assert_int_equal(len, 8);
  jp_encoder_destroy(e);
}

static void vec_stats(const float *a, const float *b, size_t rows, int dim, double *max_abs,
                      double *min_cos)
{
  *max_abs = 0;
  *min_cos = 1;
  for (size_t r = 0; r < rows; r++) {
    double dot = 0, na = 0, nb = 0;
    for (int d = 0; d < dim; d++) {
      double x = a[r * dim + d], y = b[r * dim + d];
      dot += x * y;
      na += x * x;
      nb += y * y;
      if (fabs(x - y) > *max_abs) *max_abs = fabs(x - y);
    }
    double c = dot / sqrt(na * nb);
    if (c < *min_cos) *min_cos = c;
  }
}

/* ---- checkpoint -> open round trips ------------------------------------------------- */

static void random_checkpoint_opens_in_every_dtype_and_prefix(void **state)
{
  (void)state;
  static const char *const dtypes[] = {"F32", "F16", "BF16"};
  /* Bounds for weights rounded to the dtype, against the F32 original:
   * F16 keeps 11 significant bits, BF16 8. Measured: F16 ~1e-3, BF16 ~1e-2
   * max abs difference. */
  static const double min_cos[] = {1.0, 0.999, 0.99};
  const int dim = 16, rows = 20;
  float ref[20 * 16], out[20 * 16];
  char ids[6][33];
  int k = 0;

  for (int t = 0; t < 3; t++)
    for (int prefix = 1; prefix >= 0; prefix--, k++) {
      char dir[PATH_MAX], name[32];
      struct jp_random_spec s;
      snprintf(name, sizeof name, "rt-%s-%d", dtypes[t], prefix);
      sub(dir, sizeof dir, name);
      tiny_spec(&s, dtypes[t], prefix, 11);
      assert_int_equal(jp_checkpoint_write_random(dir, g_vocab, &s), 0);
      jp_model *m = open_ok(dir);
      const struct jp_model_info *in = jp_model_get_info(m);
      assert_int_equal(in->kind, JP_MODEL_BERT);
      assert_string_equal(in->dtype, dtypes[t]);
      assert_string_equal(in->name, "japlaid/random-L2-H32-s11");
      assert_int_equal(in->bert.vocab_size, 32768);
      assert_int_equal(in->bert.hidden, 32);
      assert_int_equal(in->bert.layers, 2);
      assert_int_equal(in->bert.heads, 2);
      assert_int_equal(in->bert.intermediate, 64);
      assert_int_equal(in->bert.max_position, 64);
      assert_int_equal(in->bert.type_vocab, 2);
      assert_true(in->bert.layer_norm_eps == 1e-12f);
      assert_int_equal(in->bert.out_dim, 16);
      assert_int_equal(in->colbert.dim, 16);
      assert_int_equal(in->colbert.query_maxlen, 32);
      assert_int_equal(in->colbert.doc_maxlen, 64);   /* capped at the position count */
      assert_int_equal(in->colbert.attend_to_mask_tokens, 0);
      assert_int_equal(in->colbert.mask_punctuation, 1);
      assert_int_equal(in->colbert.q_marker_id, 5);
      assert_int_equal(in->colbert.d_marker_id, 6);
      assert_int_equal(strlen(in->identity), 32);
      memcpy(ids[k], in->identity, 33);
      encode_fixed(m, t == 0 && prefix ? ref : out);
      if (k > 0) {
        double mx, mc;
        vec_stats(ref, out, rows, dim, &mx, &mc);
        if (t == 0) assert_memory_equal(ref, out, sizeof ref);   /* same weights, no prefix */
        else if (mc < min_cos[t]) fail_msg("%s: min cosine %f vs F32", dtypes[t], mc);
        if (t > 0 && mx == 0) fail_msg("%s gave bitwise F32 output: not converted?", dtypes[t]);
      }
      jp_model_close(m);
    }
  /* Every dtype is a different model (the bytes differ), and with the
   * prefix stripped config.json is the same, so prefix variants of one
   * dtype share the identity. */
  assert_string_not_equal(ids[0], ids[2]);
  assert_string_not_equal(ids[2], ids[4]);
  assert_string_equal(ids[0], ids[1]);
}

static void static_checkpoint_opens(void **state)
{
  (void)state;
  char dir[PATH_MAX];
  sub(dir, sizeof dir, "static-open");
  assert_int_equal(jp_checkpoint_write_static(dir, g_vocab, 24, 5), 0);
  jp_model *m = open_ok(dir);
  const struct jp_model_info *in = jp_model_get_info(m);
  assert_int_equal(in->kind, JP_MODEL_STATIC);
  assert_string_equal(in->dtype, "F32");
  assert_string_equal(in->name, "japlaid/static-d24-s5");
  assert_int_equal(in->colbert.dim, 24);
  assert_int_equal(in->bert.vocab_size, 32768);
  assert_int_equal(in->bert.out_dim, 24);
  assert_int_equal(in->bert.layers, 0);
  assert_int_equal(in->colbert.doc_maxlen, 256);
  jp_model_close(m);
}

static void identity_is_deterministic_and_tells_models_apart(void **state)
{
  (void)state;
  char a[PATH_MAX], b[PATH_MAX], c[PATH_MAX], s1[PATH_MAX], s2[PATH_MAX], p[PATH_MAX + 32];
  struct jp_random_spec s;
  char ida[33], idb[33], idc[33], ids1[33], ids2[33];
  sub(a, sizeof a, "id-a");
  sub(b, sizeof b, "id-b");
  sub(c, sizeof c, "id-c");
  sub(s1, sizeof s1, "id-s1");
  sub(s2, sizeof s2, "id-s2");
  tiny_spec(&s, "F32", 1, 99);
  assert_int_equal(jp_checkpoint_write_random(a, g_vocab, &s), 0);
  assert_int_equal(jp_checkpoint_write_random(b, g_vocab, &s), 0);
  s.seed = 100;
  assert_int_equal(jp_checkpoint_write_random(c, g_vocab, &s), 0);
  assert_int_equal(jp_checkpoint_write_static(s1, g_vocab, 16, 99), 0);
  assert_int_equal(jp_checkpoint_write_static(s2, g_vocab, 16, 100), 0);

  /* Same spec, same bytes. */
  char *x, *y;
  size_t nx, ny;
  snprintf(p, sizeof p, "%s/model.safetensors", a);
  assert_int_equal(jp_read_file(p, 0, &x, &nx), 0);
  snprintf(p, sizeof p, "%s/model.safetensors", b);
  assert_int_equal(jp_read_file(p, 0, &y, &ny), 0);
  assert_int_equal(nx, ny);
  assert_memory_equal(x, y, nx);
  jp_free(x);
  jp_free(y);

  const char *dirs[5] = {a, b, c, s1, s2};
  char *out[5] = {ida, idb, idc, ids1, ids2};
  for (int i = 0; i < 5; i++) {
    jp_model *m = open_ok(dirs[i]);
    memcpy(out[i], jp_model_get_info(m)->identity, 33);
    jp_model_close(m);
  }
  assert_string_equal(ida, idb);
  assert_string_not_equal(ida, idc);     /* another seed */
  assert_string_not_equal(ida, ids1);    /* static vs random */
  assert_string_not_equal(ids1, ids2);   /* static seeds */

  /* The tokenizer set-up is part of the identity, not of the checkpoint's:
   * lite-compat on and off encode differently. */
  char lite_on[33], lite_off[33], ck_on[33], ck_off[33];
  for (int lite = 0; lite <= 1; lite++) {
    struct jp_model_opts o;
    jp_model_opts_default(&o);
    o.lite_compat = lite;
    jp_model *m;
    assert_int_equal(jp_model_open(a, &o, &m), 0);
    memcpy(lite ? lite_on : lite_off, jp_model_get_info(m)->identity, 33);
    memcpy(lite ? ck_on : ck_off, jp_model_get_info(m)->checkpoint_identity, 33);
    jp_model_close(m);
  }
  assert_string_not_equal(lite_on, lite_off);
  assert_string_equal(ck_on, ck_off);
  assert_string_not_equal(ck_on, lite_on);
}

/* ---- the static model ------------------------------------------------------------------ */

static int is_zero(const float *v, int dim)
{
  for (int d = 0; d < dim; d++)
    if (v[d] != 0.0f) return 0;
  return 1;
}

static double norm(const float *v, int dim)
{
  double s = 0;
  for (int d = 0; d < dim; d++) s += (double)v[d] * v[d];
  return sqrt(s);
}

static void static_model_zeroes_special_tokens_and_repeats_words(void **state)
{
  (void)state;
  char dir[PATH_MAX];
  sub(dir, sizeof dir, "static-zero");
  assert_int_equal(jp_checkpoint_write_static(dir, g_vocab, 32, 3), 0);
  jp_model *m = open_ok(dir);
  jp_encoder *e;
  assert_int_equal(jp_encoder_create(m, &e), 0);
  const int dim = 32, qml = 32;
  float *q = malloc((size_t)qml * dim * sizeof *q);
  assert_non_null(q);

  /* Query "東京 東京": [CLS] [Q] 東京 東京 [SEP] [MASK]x27. */
  const char *txt = "東京 東京";
  assert_int_equal(jp_encode_queries(e, &txt, NULL, 1, q), 0);
  int32_t ids[32];
  uint8_t attn[32];
  assert_int_equal(jp_tok_query(jp_encoder_tok(e), txt, strlen(txt), ids, attn, NULL), 0);
  assert_int_equal(ids[2], ids[3]);   /* the word repeats */
  assert_true(is_zero(q + 0 * dim, dim));    /* [CLS] */
  assert_true(is_zero(q + 1 * dim, dim));    /* [Q] marker */
  assert_true(is_zero(q + 4 * dim, dim));    /* [SEP] */
  for (int r = 5; r < qml; r++) assert_true(is_zero(q + (size_t)r * dim, dim));   /* [MASK] */
  assert_memory_equal(q + 2 * dim, q + 3 * dim, (size_t)dim * sizeof *q);
  assert_true(fabs(norm(q + 2 * dim, dim) - 1.0) < 1e-5);

  /* Document: [CLS] [D] 東京 東京 東京 [SEP]; [UNK] keeps a vector, [PAD] is zero. */
  float d[8 * 32];
  int32_t dl;
  txt = "東京東京東京";
  assert_int_equal(jp_encode_docs(e, &txt, NULL, 1, d, 8, &dl), 0);
  assert_true(dl >= 5);
  assert_true(is_zero(d, dim) && is_zero(d + dim, dim) && is_zero(d + (size_t)(dl - 1) * dim, dim));
  for (int r = 3; r < dl - 1; r++)
    assert_memory_equal(d + 2 * dim, d + (size_t)r * dim, (size_t)dim * sizeof *d);
  const int32_t sp[4] = {1, 0, 4, 2};   /* [UNK] [PAD] [MASK] [CLS] */
  struct jp_token_seq s = {sp, NULL, 4};
  assert_int_equal(jp_encode_seqs(e, 1, &s, 1, d, 4, &dl), 0);
  assert_true(fabs(norm(d, dim) - 1.0) < 1e-5);
  assert_true(is_zero(d + dim, dim) && is_zero(d + 2 * dim, dim) && is_zero(d + 3 * dim, dim));
  free(q);
  jp_encoder_destroy(e);
  jp_model_close(m);
}

/* ---- config validation ---------------------------------------------------------------- */

/* Copies the base checkpoint to a fresh directory. */
static void copy_base(const char *dir)
{
  static const char *const files[] = {"config.json", "artifact.metadata", "vocab.txt",
                                      "tokenizer_config.json", "model.safetensors"};
  assert_int_equal(jp_mkdir_p(dir), 0);
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    char src[PATH_MAX], dst[PATH_MAX], *buf;
    size_t n;
    assert_int_equal(jp_path_join(src, sizeof src, g_base, files[i]), 0);
    assert_int_equal(jp_path_join(dst, sizeof dst, dir, files[i]), 0);
    assert_int_equal(jp_read_file(src, 0, &buf, &n), 0);
    assert_int_equal(jp_write_file_atomic(dst, buf, n), 0);
    jp_free(buf);
  }
}

/* Rewrites dir/file (JSON) with key set to `value` (NULL: deleted). */
static void edit_json(const char *dir, const char *file, const char *key, json_t *value)
{
  char p[PATH_MAX];
  json_t *j;
  assert_int_equal(jp_path_join(p, sizeof p, dir, file), 0);
  assert_int_equal(jp_json_load_file(p, &j), 0);
  if (value) json_object_set_new(j, key, value);
  else json_object_del(j, key);
  assert_int_equal(json_dump_file(j, p, JSON_INDENT(2)), 0);
  json_decref(j);
}

/* Opening must fail with `code` and a message containing both needles. */
static void expect_open_fails(const char *dir, int code, const char *n1, const char *n2)
{
  jp_model *m = (jp_model *)0x1;
  int rc = jp_model_open(dir, NULL, &m);
  if (rc != code)
    fail_msg("%s: expected %s, got %s (%s)", dir, jp_errname(code), jp_errname(rc),
             jp_errmsg(rc));
  assert_null(m);
  const char *msg = jp_errmsg(rc);
  if ((n1 && !strstr(msg, n1)) || (n2 && !strstr(msg, n2)))
    fail_msg("message lacks '%s'/'%s': %s", n1 ? n1 : "", n2 ? n2 : "", msg);
}

static void bad_configs_are_refused_with_clear_errors(void **state)
{
  (void)state;
  char d[PATH_MAX];
  jp_log_set_sink(NULL, NULL);

  sub(d, sizeof d, "cfg-missing-key");
  copy_base(d);
  edit_json(d, "config.json", "hidden_size", NULL);
  expect_open_fails(d, JP_EINVAL, "config.json", "hidden_size");

  sub(d, sizeof d, "cfg-heads");
  copy_base(d);
  edit_json(d, "config.json", "num_attention_heads", json_integer(5));
  expect_open_fails(d, JP_EINVAL, "config.json", "not a multiple of num_attention_heads");

  sub(d, sizeof d, "cfg-type");
  copy_base(d);
  edit_json(d, "config.json", "model_type", json_string("roberta"));
  expect_open_fails(d, JP_EUNSUPPORTED, "config.json", "roberta");

  sub(d, sizeof d, "cfg-no-type");
  copy_base(d);
  edit_json(d, "config.json", "model_type", NULL);
  expect_open_fails(d, JP_EINVAL, "config.json", "model_type");

  sub(d, sizeof d, "cfg-act");
  copy_base(d);
  edit_json(d, "config.json", "hidden_act", json_string("gelu_new"));
  expect_open_fails(d, JP_EUNSUPPORTED, "config.json", "gelu_new");

  sub(d, sizeof d, "cfg-pos");
  copy_base(d);
  edit_json(d, "config.json", "position_embedding_type", json_string("relative_key"));
  expect_open_fails(d, JP_EUNSUPPORTED, "config.json", "relative_key");

  sub(d, sizeof d, "cfg-bad-int");
  copy_base(d);
  edit_json(d, "config.json", "num_hidden_layers", json_string("2"));
  expect_open_fails(d, JP_EINVAL, "config.json", "num_hidden_layers");

  /* Wrong shapes: the config and the tensors disagree. */
  sub(d, sizeof d, "cfg-shape");
  copy_base(d);
  edit_json(d, "config.json", "intermediate_size", json_integer(96));
  expect_open_fails(d, JP_ECORRUPT, "intermediate.dense.weight", "[64, 32]");

  sub(d, sizeof d, "cfg-layers");
  copy_base(d);
  edit_json(d, "config.json", "num_hidden_layers", json_integer(3));
  expect_open_fails(d, JP_ECORRUPT, "encoder.layer.2.", "missing");

  sub(d, sizeof d, "meta-dim");
  copy_base(d);
  edit_json(d, "artifact.metadata", "dim", json_integer(20));
  expect_open_fails(d, JP_ECORRUPT, "linear.weight", "[20, 32]");

  sub(d, sizeof d, "meta-marker");
  copy_base(d);
  edit_json(d, "artifact.metadata", "query_token_id", json_string("[nope]"));
  expect_open_fails(d, JP_EINVAL, "artifact.metadata", "[nope]");

  sub(d, sizeof d, "meta-qlen");
  copy_base(d);
  edit_json(d, "artifact.metadata", "query_maxlen", json_integer(100));
  expect_open_fails(d, JP_EINVAL, "artifact.metadata", "64 positions");

  sub(d, sizeof d, "meta-sim");
  copy_base(d);
  edit_json(d, "artifact.metadata", "similarity", json_string("l2"));
  expect_open_fails(d, JP_EUNSUPPORTED, "artifact.metadata", "l2");

  sub(d, sizeof d, "tok-lower");
  copy_base(d);
  edit_json(d, "tokenizer_config.json", "do_lower_case", json_true());
  expect_open_fails(d, JP_EUNSUPPORTED, "tokenizer_config.json", "do_lower_case");

  char p[PATH_MAX + 32];
  sub(d, sizeof d, "no-meta");
  copy_base(d);
  snprintf(p, sizeof p, "%s/artifact.metadata", d);
  unlink(p);
  expect_open_fails(d, JP_ENOTFOUND, "artifact.metadata", NULL);

  sub(d, sizeof d, "bad-json");
  copy_base(d);
  snprintf(p, sizeof p, "%s/config.json", d);
  assert_int_equal(jp_write_file_atomic(p, "{\"model_type\": ", 15), 0);
  expect_open_fails(d, JP_EINVAL, "config.json", "invalid JSON");

  sub(d, sizeof d, "trunc-st");
  copy_base(d);
  snprintf(p, sizeof p, "%s/model.safetensors", d);
  assert_int_equal(truncate(p, 4000), 0);
  expect_open_fails(d, JP_ECORRUPT, "model.safetensors", NULL);

  /* No projection: not a ColBERT checkpoint. */
  sub(d, sizeof d, "no-linear");
  copy_base(d);
  {
    st_file *f;
    char src[PATH_MAX + 32];
    snprintf(src, sizeof src, "%s/model.safetensors", g_base);
    assert_int_equal(st_open(src, &f), 0);
    int n = st_count(f), k = 0;
    struct st_tensor *t = calloc((size_t)n, sizeof *t);
    for (int i = 0; i < n; i++)
      if (strcmp(st_at(f, i)->name, "linear.weight") != 0) t[k++] = *st_at(f, i);
    snprintf(p, sizeof p, "%s/model.safetensors", d);
    assert_int_equal(st_write(p, t, k, NULL), 0);
    free(t);
    st_close(f);
  }
  expect_open_fails(d, JP_ECORRUPT, "linear.weight", "not a ColBERT checkpoint");

  expect_open_fails("/nonexistent/japlaid/model", JP_ENOTFOUND, "/nonexistent", NULL);

  /* Settings nested under "config" (some exports) are read the same. */
  sub(d, sizeof d, "meta-nested");
  copy_base(d);
  {
    char mp[PATH_MAX + 32];
    json_t *j, *w;
    snprintf(mp, sizeof mp, "%s/artifact.metadata", d);
    assert_int_equal(jp_json_load_file(mp, &j), 0);
    json_object_set_new(j, "doc_maxlen", json_integer(48));
    w = json_pack("{s:o, s:{s:s}}", "config", j, "meta", "version", "x");
    assert_int_equal(json_dump_file(w, mp, 0), 0);
    json_decref(w);
    jp_model *m = open_ok(d);
    assert_int_equal(jp_model_get_info(m)->colbert.doc_maxlen, 48);
    assert_int_equal(jp_model_get_info(m)->colbert.q_marker_id, 5);
    jp_model_close(m);
  }
}

/* ---- the encoder ----------------------------------------------------------------------- */

static const char *const docs7[7] = {
  "東京は日本の首都です。",
  "富士山",
  "アップルストアでiPhone８が発売された。人々は長い列を作った！",
  "",
  "東北大学は宮城県仙台市にある国立大学である。多くの学部と研究科を持ち、研究に力を入れている。",
  "猫が好き？",
  "日本語の文章を単語に分割する形態素解析は、検索エンジンで重要な役割を果たす。",
};

static void encode_docs_with(int max_batch_tokens, float *out, size_t cap, int32_t *lens,
                             int one_by_one)
{
  struct jp_model_opts o;
  jp_model *m;
  jp_encoder *e;
  jp_model_opts_default(&o);
  o.n_threads = 2;
  o.max_batch_tokens = max_batch_tokens;
  assert_int_equal(jp_model_open(g_base, &o, &m), 0);
  assert_int_equal(jp_encoder_create(m, &e), 0);
  int dim = jp_model_get_info(m)->colbert.dim;
  if (!one_by_one) {
    assert_int_equal(jp_encode_docs(e, docs7, NULL, 7, out, cap, lens), 0);
  } else {
    size_t off = 0;
    for (int i = 0; i < 7; i++) {
      assert_int_equal(jp_encode_docs(e, &docs7[i], NULL, 1, out + off * dim, cap - off, &lens[i]),
                       0);
      off += (size_t)lens[i];
    }
  }
  jp_encoder_destroy(e);
  jp_model_close(m);
}

static void batching_does_not_change_document_vectors(void **state)
{
  (void)state;
  const int dim = 16;
  size_t cap = 7 * 64;
  float *all = calloc(cap * dim, sizeof *all), *alone = calloc(cap * dim, sizeof *alone);
  float *small = calloc(cap * dim, sizeof *small);
  int32_t la[7], lb[7], lc[7];
  assert_non_null(all);
  assert_non_null(alone);
  assert_non_null(small);
  encode_docs_with(0, all, cap, la, 0);
  encode_docs_with(0, alone, cap, lb, 1);
  encode_docs_with(64, small, cap, lc, 0);   /* one document per forward call */
  size_t total = 0;
  for (int i = 0; i < 7; i++) {
    assert_int_equal(la[i], lb[i]);
    assert_int_equal(la[i], lc[i]);
    total += (size_t)la[i];
  }
  assert_int_equal(la[3], 3);   /* the empty document: [CLS] [D] [SEP] */
  double mx, mc;
  vec_stats(all, alone, total, dim, &mx, &mc);
  if (mx > 1e-6) fail_msg("batched vs alone differ by %g", mx);
  vec_stats(all, small, total, dim, &mx, &mc);
  if (mx > 1e-6) fail_msg("large vs small batches differ by %g", mx);
  for (size_t r = 0; r < total; r++) assert_true(fabs(norm(all + r * dim, dim) - 1.0) < 1e-5);
  free(all);
  free(alone);
  free(small);
}

static void queries_output_exactly_query_maxlen_rows(void **state)
{
  (void)state;
  jp_model *m = open_ok(g_base);
  jp_encoder *e;
  assert_int_equal(jp_encoder_create(m, &e), 0);
  const int dim = 16, qml = 32, n = 3;
  const char *qs[3] = {"東京の人口は？", "",
                       "とても長い質問文で、三十二トークンを確実に超えるように、いくつもの単語と"
                       "句読点を並べて、切り詰めが起きることを確かめるための文章です。"};
  size_t want = (size_t)n * qml * dim, guard = 64;
  float *out = malloc((want + guard) * sizeof *out);
  assert_non_null(out);
  for (size_t i = 0; i < want + guard; i++) out[i] = NAN;
  assert_int_equal(jp_encode_queries(e, qs, NULL, n, out), 0);
  for (size_t i = 0; i < want; i++) assert_false(isnan(out[i]));
  for (size_t i = want; i < want + guard; i++) assert_true(isnan(out[i]));   /* untouched */
  for (int r = 0; r < n * qml; r++) assert_true(fabs(norm(out + (size_t)r * dim, dim) - 1.0) < 1e-5);
  /* Query augmentation: the [MASK] rows are real outputs, not copies. */
  assert_true(memcmp(out + 10 * dim, out + 20 * dim, (size_t)dim * sizeof *out) != 0);
  free(out);
  jp_encoder_destroy(e);
  jp_model_close(m);
}

static void bad_inputs_are_refused_without_writing(void **state)
{
  (void)state;
  jp_model *m = open_ok(g_base);
  jp_encoder *e;
  assert_int_equal(jp_encoder_create(m, &e), 0);
  float out[64 * 16];
  int32_t lens[2];
  for (size_t i = 0; i < 64 * 16; i++) out[i] = 7.0f;
  const int32_t good[3] = {2, 6, 3}, bad[3] = {2, 40000, 3};
  struct jp_token_seq s[2] = {{good, NULL, 3}, {bad, NULL, 3}};
  assert_int_equal(jp_encode_seqs(e, 0, s, 2, out, 64, lens), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "sequence 1"));
  s[1] = (struct jp_token_seq){good, NULL, 0};
  assert_int_equal(jp_encode_seqs(e, 0, s, 2, out, 64, lens), JP_EINVAL);
  s[1] = (struct jp_token_seq){good, NULL, 65};   /* more than max_position */
  assert_int_equal(jp_encode_seqs(e, 0, s, 2, out, 64, lens), JP_EINVAL);
  s[1] = s[0];
  assert_int_equal(jp_encode_seqs(e, 0, s, 2, out, 5, lens), JP_ETOOBIG);   /* needs 6 */
  for (size_t i = 0; i < 64 * 16; i++) assert_true(out[i] == 7.0f);
  assert_int_equal(jp_encode_seqs(e, 0, s, 2, out, 6, lens), 0);

  const char *texts[2] = {"正しい文", "\xff\xfe"};
  assert_int_equal(jp_encode_docs(e, texts, NULL, 2, out, 64, lens), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "document 1"));
  texts[1] = "もう一つの正しい文";
  assert_int_equal(jp_encode_docs(e, texts, NULL, 2, out, 4, lens), JP_ETOOBIG);
  jp_encoder_destroy(e);
  jp_model_close(m);
}

static void cuda_request_fails_cleanly_or_works(void **state)
{
  (void)state;
  struct jp_model_opts o;
  jp_model *m = NULL;
  jp_model_opts_default(&o);
  o.device = JP_DEVICE_CUDA;
  int rc = jp_model_open(g_base, &o, &m);
  if (rc == 0) {
    jp_encoder *e = NULL;
    rc = jp_encoder_create(m, &e);
    assert_true(rc == 0 || rc == JP_ENODEVICE || rc == JP_EDEVICE);
    jp_encoder_destroy(e);
    jp_model_close(m);
  } else {
    assert_int_equal(rc, JP_ENODEVICE);
    assert_null(m);
  }
}

static void model_open_oom_is_clean(void **state)
{
  (void)state;
  char dir[PATH_MAX];
  struct jp_random_spec s;
  sub(dir, sizeof dir, "oom-f16");
  /* F16 also exercises the conversion buffer. */
  tiny_spec(&s, "F16", 0, 5);
  assert_int_equal(jp_checkpoint_write_random(dir, g_vocab, &s), 0);
  jp_log_set_level(JP_LOG_LEVEL_ERROR);
  for (long k = 1; k < 10000; k++) {
    jp_model *m = NULL;
    jp_mem_fail_after(k);
    int rc = jp_model_open(dir, NULL, &m);
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      /* made >= k: the failed allocation was absorbed by a fallback (the
       * tokenizer's dictionary-kind probe does that); the open is still
       * clean, so keep walking the later allocations. */
      jp_encoder *e;
      assert_int_equal(jp_encoder_create(m, &e), 0);
      jp_encoder_destroy(e);
      jp_model_close(m);
      if (made < k) return;
      continue;
    }
    if (rc != JP_ENOMEM) fail_msg("k=%ld: %s (%s)", k, jp_errname(rc), jp_errmsg(rc));
    assert_null(m);
  }
  fail_msg("jp_model_open never succeeded");
}

static void encoder_create_oom_is_clean(void **state)
{
  (void)state;
  jp_model *m = open_ok(g_base);
  for (long k = 1; k < 10000; k++) {
    jp_encoder *e = NULL;
    jp_mem_fail_after(k);
    int rc = jp_encoder_create(m, &e);
    long made = jp_mem_fail_after(0);
    if (rc == 0) {
      assert_true(made < k);
      jp_encoder_destroy(e);
      jp_model_close(m);
      return;
    }
    assert_int_equal(rc, JP_ENOMEM);
    assert_null(e);
  }
  fail_msg("jp_encoder_create never succeeded");
}

static void checkpoint_writer_refuses_bad_specs(void **state)
{
  (void)state;
  char dir[PATH_MAX];
  struct jp_random_spec s;
  sub(dir, sizeof dir, "bad-spec");
  tiny_spec(&s, "F32", 1, 1);
  s.heads = 3;   /* 32 % 3 != 0 */
  assert_int_equal(jp_checkpoint_write_random(dir, g_vocab, &s), JP_EINVAL);
  tiny_spec(&s, "F64", 1, 1);
  assert_int_equal(jp_checkpoint_write_random(dir, g_vocab, &s), JP_EINVAL);
  tiny_spec(&s, "F32", 1, 1);
  s.max_position = 16;   /* cannot hold a 32-token query */
  assert_int_equal(jp_checkpoint_write_random(dir, g_vocab, &s), JP_EINVAL);
  tiny_spec(&s, "F32", 1, 1);
  assert_int_equal(jp_checkpoint_write_random(dir, "/nonexistent/vocab.txt", &s), JP_ENOTFOUND);
  assert_int_equal(jp_checkpoint_write_static(dir, g_vocab, 0, 1), JP_EINVAL);
  assert_int_equal(jp_path_exists(dir), 0);
  /* A vocabulary without the marker tokens cannot make a static model. */
  char v[PATH_MAX];
  sub(v, sizeof v, "tiny-vocab.txt");
  assert_int_equal(jp_write_file_atomic(v, "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nx\n", 32), 0);
  assert_int_equal(jp_checkpoint_write_static(dir, v, 8, 1), JP_EINVAL);
  assert_non_null(strstr(jp_errmsg(JP_EINVAL), "[unused0]"));
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(random_checkpoint_opens_in_every_dtype_and_prefix),
    cmocka_unit_test(static_checkpoint_opens),
    cmocka_unit_test(identity_is_deterministic_and_tells_models_apart),
    cmocka_unit_test(static_model_zeroes_special_tokens_and_repeats_words),
    cmocka_unit_test(bad_configs_are_refused_with_clear_errors),
    cmocka_unit_test(batching_does_not_change_document_vectors),
    cmocka_unit_test(queries_output_exactly_query_maxlen_rows),
    cmocka_unit_test(bad_inputs_are_refused_without_writing),
    cmocka_unit_test(cuda_request_fails_cleanly_or_works),
    cmocka_unit_test(model_open_oom_is_clean),
    cmocka_unit_test(encoder_create_oom_is_clean),
    cmocka_unit_test(checkpoint_writer_refuses_bad_specs),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
