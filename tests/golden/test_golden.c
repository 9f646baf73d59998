/* test_golden.c: the C encoder against the PyTorch reference's goldens
 * (tests/golden/model_tiny.json, written by tools/reference/make_goldens.py).
 *
 * For each model in the golden file the checkpoint is regenerated from its
 * recorded spec (same seed) and must have the recorded identity -- so the
 * goldens are known to describe exactly these weights -- then:
 *   *_seqs:  the recorded token ids are encoded with jp_encode_seqs and
 *            compared with the reference vectors (tests the model alone);
 *   golden_reference_forward_matches: the scalar oracle bert_forward_ref()
 *            (which the fast backends are tested against) on the same ids;
 *   *_texts: the recorded texts are tokenised (ids must match the recorded
 *            ones) and encoded with jp_encode_queries / jp_encode_docs
 *            (the whole pipeline). Skipped when the MeCab dictionary the
 *            goldens were made with is not installed.
 * No Python is needed. */
#include "golden_common.h"
#include "model/bert.h"
#include "model/checkpoint.h"
#include "model/safetensors.h"
#include "model/model.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/mem.h"

struct gmodel {
  const json_t *g;          /* the model's golden entry */
  jp_model *m;
  jp_encoder *e;
  char dir[PATH_MAX];
  int same_dict;            /* the recorded dictionary is the one loaded */
};

static json_t *g_golden;
static char g_tmp[1024];
static struct gmodel g_models[2];

static int build_model(struct gmodel *gm, const json_t *entry, const char *vocab, int idx)
{
  const json_t *spec = json_object_get(entry, "spec");
  const char *kind = json_string_value(json_object_get(entry, "kind"));
  const json_t *tk = json_object_get(g_golden, "tokenizer");
  const char *dicdir = json_string_value(json_object_get(tk, "dicdir"));
  int rc;

  gm->g = entry;
  snprintf(gm->dir, sizeof gm->dir, "%s/m%d", g_tmp, idx);
  if (!strcmp(kind, "random")) {
    struct jp_random_spec s;
    jp_random_spec_default(&s);
    s.layers = (int)json_integer_value(json_object_get(spec, "layers"));
    s.hidden = (int)json_integer_value(json_object_get(spec, "hidden"));
    s.heads = (int)json_integer_value(json_object_get(spec, "heads"));
    s.intermediate = (int)json_integer_value(json_object_get(spec, "intermediate"));
    s.max_position = (int)json_integer_value(json_object_get(spec, "max_position"));
    s.dim = (int)json_integer_value(json_object_get(spec, "dim"));
    s.seed = (uint64_t)json_integer_value(json_object_get(spec, "seed"));
    s.dtype = json_string_value(json_object_get(spec, "dtype"));
    s.bert_prefix = json_is_true(json_object_get(spec, "bert_prefix"));
    rc = jp_checkpoint_write_random(gm->dir, vocab, &s);
  } else {
    rc = jp_checkpoint_write_static(gm->dir, vocab,
                                    (int)json_integer_value(json_object_get(spec, "dim")),
                                    (uint64_t)json_integer_value(json_object_get(spec, "seed")));
  }
  if (rc) {
    fprintf(stderr, "regenerating the %s checkpoint: %s\n", kind, jp_errmsg(rc));
    return -1;
  }
  struct jp_model_opts o;
  jp_model_opts_default(&o);
  gm->same_dict = dicdir && jp_is_dir(dicdir);
  if (gm->same_dict) {
    o.mecab_dicdir = dicdir;
    o.lite_compat = json_is_true(json_object_get(tk, "lite_compat"));
  }
  o.n_threads = 2;
  rc = jp_model_open(gm->dir, &o, &gm->m);
  if (!rc) rc = jp_encoder_create(gm->m, &gm->e);
  if (rc) {
    fprintf(stderr, "opening the %s checkpoint: %s\n", kind, jp_errmsg(rc));
    return -1;
  }
  return 0;
}

static int setup(void **state)
{
  char vocab[PATH_MAX];
  (void)state;
  g_golden = golden_load();
  const char *rel = json_string_value(json_object_get(g_golden, "vocab"));
  if (!jp_test_data(vocab, sizeof vocab, rel)) {
    fprintf(stderr, "skipped: %s not found under JP_DATA_DIR\n", rel);
    exit(JP_TEST_SKIP);
  }
  if (!jp_test_tmpdir(g_tmp, sizeof g_tmp)) return -1;
  const json_t *models = json_object_get(g_golden, "models");
  if (json_array_size(models) != 2) return -1;
  for (int i = 0; i < 2; i++)
    if (build_model(&g_models[i], json_array_get(models, (size_t)i), vocab, i)) return -1;
  return 0;
}

static int teardown(void **state)
{
  (void)state;
  for (int i = 0; i < 2; i++) {
    jp_encoder_destroy(g_models[i].e);
    jp_model_close(g_models[i].m);
  }
  jp_rm_rf(g_tmp);
  json_decref(g_golden);
  return 0;
}

static void check_identity(const struct gmodel *gm)
{
  const char *want = json_string_value(json_object_get(gm->g, "identity"));
  /* The checkpoint's own identity: the goldens do not depend on which MeCab
   * dictionary this machine has. */
  const char *got = jp_model_get_info(gm->m)->checkpoint_identity;
  if (strcmp(want, got) != 0)
    fail_msg("regenerated checkpoint has identity %s, the goldens were made from %s: "
             "checkpoint generation is not deterministic (or the vocab differs)", got, want);
}

/* Recorded ids -> jp_encode_seqs -> reference vectors. */
static void run_seqs(const struct gmodel *gm, int is_query)
{
  const json_t *set = json_object_get(gm->g, is_query ? "queries" : "docs");
  int n = (int)json_array_size(set), dim = jp_model_get_info(gm->m)->colbert.dim;
  struct jp_token_seq *seqs = calloc((size_t)n, sizeof *seqs);
  int32_t *lens = calloc((size_t)n, sizeof *lens);
  size_t cap = 0;
  assert_non_null(seqs);
  assert_non_null(lens);
  for (int i = 0; i < n; i++) {
    const json_t *x = json_array_get(set, (size_t)i);
    int32_t *ids;
    uint8_t *mask;
    seqs[i].len = golden_ints(json_object_get(x, "ids"), &ids, &mask, json_object_get(x, "mask"));
    seqs[i].ids = ids;
    seqs[i].mask = mask;
    cap += (size_t)seqs[i].len;
  }
  float *out = malloc(cap * (size_t)dim * sizeof *out);
  assert_non_null(out);
  int rc = jp_encode_seqs(gm->e, is_query, seqs, n, out, cap, lens);
  if (rc) fail_msg("jp_encode_seqs: %s", jp_errmsg(rc));
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    const json_t *x = json_array_get(set, (size_t)i);
    golden_compare(out + off * dim, json_object_get(x, "embeddings"), lens[i], dim,
                   is_query ? "query" : "doc", i);
    off += (size_t)lens[i];
    free((void *)seqs[i].ids);
    free((void *)seqs[i].mask);
  }
  free(out);
  free(lens);
  free(seqs);
}

/* Recorded texts -> tokenizer (ids must match) -> jp_encode_queries/docs. */
static void run_texts(const struct gmodel *gm, int is_query)
{
  const json_t *set = json_object_get(gm->g, is_query ? "queries" : "docs");
  const struct jp_model_info *in = jp_model_get_info(gm->m);
  int n = (int)json_array_size(set), dim = in->colbert.dim, qml = in->colbert.query_maxlen;
  int cap_tok = is_query ? qml : in->colbert.doc_maxlen;
  if (!gm->same_dict) skip();   /* tokenisation depends on the dictionary the goldens used */
  const char **texts = calloc((size_t)n, sizeof *texts);
  int32_t *ids = malloc((size_t)cap_tok * sizeof *ids), *doclens = calloc((size_t)n, sizeof *doclens);
  uint8_t *mask = malloc((size_t)cap_tok);
  assert_non_null(texts);
  assert_non_null(ids);
  assert_non_null(doclens);
  assert_non_null(mask);
  for (int i = 0; i < n; i++) {
    const json_t *x = json_array_get(set, (size_t)i);
    const json_t *want = json_object_get(x, "ids"), *wmask = json_object_get(x, "mask");
    int len = qml, rc;
    texts[i] = json_string_value(json_object_get(x, "text"));
    rc = is_query ? jp_tok_query(jp_encoder_tok(gm->e), texts[i], strlen(texts[i]), ids, mask, NULL)
                  : jp_tok_doc(jp_encoder_tok(gm->e), texts[i], strlen(texts[i]), ids, mask, &len,
                               NULL);
    if (rc) fail_msg("tokenising text %d: %s", i, jp_errmsg(rc));
    if ((size_t)len != json_array_size(want))
      fail_msg("text %d: %d tokens, golden has %zu", i, len, json_array_size(want));
    for (int p = 0; p < len; p++) {
      if (ids[p] != json_integer_value(json_array_get(want, (size_t)p)))
        fail_msg("text %d position %d: id %d, golden %lld", i, p, ids[p],
                 (long long)json_integer_value(json_array_get(want, (size_t)p)));
      if (mask[p] != json_integer_value(json_array_get(wmask, (size_t)p)))
        fail_msg("text %d position %d: mask differs", i, p);
    }
  }
  size_t cap = (size_t)n * (size_t)cap_tok;
  float *out = malloc(cap * (size_t)dim * sizeof *out);
  assert_non_null(out);
  int rc = is_query ? jp_encode_queries(gm->e, texts, NULL, n, out)
                    : jp_encode_docs(gm->e, texts, NULL, n, out, cap, doclens);
  if (rc) fail_msg("encoding: %s", jp_errmsg(rc));
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    int rows = is_query ? qml : doclens[i];
    golden_compare(out + off * dim, json_object_get(json_array_get(set, (size_t)i), "embeddings"),
                   rows, dim, is_query ? "query" : "doc", i);
    off += (size_t)rows;
  }
  free(out);
  free(texts);
  free(ids);
  free(doclens);
  free(mask);
}

/* ---- bert_forward_ref, bound straight to the regenerated F32 file ---------- */

/* <suffix>, or "bert.encoder.layer.<layer>.<suffix>" when layer >= 0. */
static const float *tensor(st_file *f, const char *suffix, int layer)
{
  char name[160];
  if (layer >= 0) snprintf(name, sizeof name, "bert.encoder.layer.%d.%s", layer, suffix);
  else snprintf(name, sizeof name, "%s", suffix);
  const struct st_tensor *t = st_find(f, name);
  if (!t || t->dtype != ST_F32) fail_msg("tensor %s missing or not F32", name);
  return t->data;
}

static void golden_reference_forward_matches(void **state)
{
  (void)state;
  const struct gmodel *gm = &g_models[0];
  const struct jp_model_info *in = jp_model_get_info(gm->m);
  char path[PATH_MAX + 32];
  st_file *f;
  snprintf(path, sizeof path, "%s/model.safetensors", gm->dir);
  assert_int_equal(st_open(path, &f), 0);
  struct bert_weights w = {.cfg = in->bert};
  struct bert_layer_weights *lw = calloc((size_t)in->bert.layers, sizeof *lw);
  assert_non_null(lw);
  w.word_emb = tensor(f, "bert.embeddings.word_embeddings.weight", -1);
  w.pos_emb = tensor(f, "bert.embeddings.position_embeddings.weight", -1);
  w.type_emb = tensor(f, "bert.embeddings.token_type_embeddings.weight", -1);
  w.emb_ln_g = tensor(f, "bert.embeddings.LayerNorm.weight", -1);
  w.emb_ln_b = tensor(f, "bert.embeddings.LayerNorm.bias", -1);
  w.proj_w = tensor(f, "linear.weight", -1);
  w.layer = lw;
  for (int l = 0; l < in->bert.layers; l++) {
#define T_(field, suffix) lw[l].field = tensor(f, suffix, l)
    T_(q_w, "attention.self.query.weight");
    T_(q_b, "attention.self.query.bias");
    T_(k_w, "attention.self.key.weight");
    T_(k_b, "attention.self.key.bias");
    T_(v_w, "attention.self.value.weight");
    T_(v_b, "attention.self.value.bias");
    T_(ao_w, "attention.output.dense.weight");
    T_(ao_b, "attention.output.dense.bias");
    T_(ln1_g, "attention.output.LayerNorm.weight");
    T_(ln1_b, "attention.output.LayerNorm.bias");
    T_(i_w, "intermediate.dense.weight");
    T_(i_b, "intermediate.dense.bias");
    T_(o_w, "output.dense.weight");
    T_(o_b, "output.dense.bias");
    T_(ln2_g, "output.LayerNorm.weight");
    T_(ln2_b, "output.LayerNorm.bias");
#undef T_
  }
  int dim = in->colbert.dim;
  for (int part = 0; part < 2; part++) {
    const json_t *set = json_object_get(gm->g, part ? "docs" : "queries");
    for (size_t i = 0; i < json_array_size(set); i++) {
      const json_t *x = json_array_get(set, i);
      int32_t *ids;
      uint8_t *mask;
      int L = golden_ints(json_object_get(x, "ids"), &ids, &mask, json_object_get(x, "mask"));
      uint8_t *attn = malloc((size_t)L);
      float *y = malloc((size_t)L * dim * sizeof *y);
      assert_non_null(attn);
      assert_non_null(y);
      /* Queries: the mask is the attention; documents attend everything and
       * output the kept rows. */
      for (int p = 0; p < L; p++) attn[p] = part ? 1 : mask[p];
      int rc = bert_forward_ref(&w, ids, attn, 1, L, y);
      if (rc) fail_msg("bert_forward_ref: %s", jp_errmsg(rc));
      int rows = 0;
      for (int p = 0; p < L; p++)
        if (!part || mask[p]) memmove(y + (size_t)rows++ * dim, y + (size_t)p * dim,
                                      (size_t)dim * sizeof *y);
      golden_compare(y, json_object_get(x, "embeddings"), rows, dim,
                     part ? "ref doc" : "ref query", (int)i);
      free(attn);
      free(y);
      free(ids);
      free(mask);
    }
  }
  free(lw);
  st_close(f);
}

static void golden_random_identity_matches(void **s) { (void)s; check_identity(&g_models[0]); }
static void golden_random_query_seqs(void **s) { (void)s; run_seqs(&g_models[0], 1); }
static void golden_random_doc_seqs(void **s) { (void)s; run_seqs(&g_models[0], 0); }
static void golden_random_query_texts(void **s) { (void)s; run_texts(&g_models[0], 1); }
static void golden_random_doc_texts(void **s) { (void)s; run_texts(&g_models[0], 0); }
static void golden_static_identity_matches(void **s) { (void)s; check_identity(&g_models[1]); }
static void golden_static_query_seqs(void **s) { (void)s; run_seqs(&g_models[1], 1); }
static void golden_static_doc_seqs(void **s) { (void)s; run_seqs(&g_models[1], 0); }
static void golden_static_query_texts(void **s) { (void)s; run_texts(&g_models[1], 1); }
static void golden_static_doc_texts(void **s) { (void)s; run_texts(&g_models[1], 0); }

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(golden_random_identity_matches),
    cmocka_unit_test(golden_random_query_seqs),
    cmocka_unit_test(golden_random_doc_seqs),
    cmocka_unit_test(golden_reference_forward_matches),
    cmocka_unit_test(golden_random_query_texts),
    cmocka_unit_test(golden_random_doc_texts),
    cmocka_unit_test(golden_static_identity_matches),
    cmocka_unit_test(golden_static_query_seqs),
    cmocka_unit_test(golden_static_doc_seqs),
    cmocka_unit_test(golden_static_query_texts),
    cmocka_unit_test(golden_static_doc_texts),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
