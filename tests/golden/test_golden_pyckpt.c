/* test_golden_pyckpt.c: a checkpoint made by another program loads in C and
 * encodes like that program says it should.
 *
 * tools/reference/colbert_ref.py writes a tiny BERT checkpoint with its own
 * safetensors writer and numpy generator -- F16, tensor names without the
 * "bert." prefix, tensors stored in reverse order, a legacy position_ids
 * tensor, artifact.metadata nested under "config" -- and encodes the golden
 * file's token ids with its PyTorch forward. The C side loads the directory
 * and must reproduce those vectors (cosine >= 0.9999, |diff| <= 1e-4).
 * Skipped (77) when /usr/bin/python3 has no torch. */
#include "golden_common.h"
#include "model/model.h"
#include "util/err.h"
#include "util/fs.h"

#define PYTHON "/usr/bin/python3"

static void py_checkpoint_loads_and_matches_python(void **state)
{
  char vocab[PATH_MAX], tmp[1024], cmd[4 * PATH_MAX], path[PATH_MAX];
  const char *src = getenv("JP_SOURCE_DIR");
  (void)state;
  if (!jp_test_data(vocab, sizeof vocab, "bert-base-japanese-v3/vocab.txt")) skip();
  assert_non_null(src);
  assert_non_null(jp_test_tmpdir(tmp, sizeof tmp));

  /* 1. The other program writes the checkpoint. */
  snprintf(cmd, sizeof cmd,
           PYTHON " '%s/tools/reference/colbert_ref.py' write-random --out '%s/py' --vocab '%s' "
           "--dtype F16 --no-bert-prefix --layers 2 --hidden 48 --heads 3 --intermediate 96 "
           "--dim 24 --seed 7",
           src, tmp, vocab);
  if (system(cmd) != 0) fail_msg("failed: %s", cmd);

  /* 2. Inputs: the golden file's token ids (queries with their attention
   * masks, documents with their keep masks). */
  json_t *g = golden_load();
  const json_t *m0 = json_array_get(json_object_get(g, "models"), 0);
  const json_t *qs = json_object_get(m0, "queries"), *ds = json_object_get(m0, "docs");
  int nq = (int)json_array_size(qs), nd = (int)json_array_size(ds), n = nq + nd;
  json_t *seqs = json_array();
  for (int i = 0; i < n; i++) {
    const json_t *x = i < nq ? json_array_get(qs, (size_t)i) : json_array_get(ds, (size_t)(i - nq));
    json_array_append_new(seqs, json_pack("{s:O, s:O}", "ids", json_object_get(x, "ids"),
                                          i < nq ? "attn" : "keep", json_object_get(x, "mask")));
  }
  json_t *in = json_pack("{s:o}", "sequences", seqs);
  snprintf(path, sizeof path, "%s/in.json", tmp);
  assert_int_equal(json_dump_file(in, path, 0), 0);
  json_decref(in);

  /* 3. The other program's forward. */
  snprintf(cmd, sizeof cmd,
           PYTHON " '%s/tools/reference/colbert_ref.py' encode --model '%s/py' --input '%s/in.json' "
           "--output '%s/out.json'", src, tmp, tmp, tmp);
  if (system(cmd) != 0) fail_msg("failed: %s", cmd);
  json_t *ref = NULL;
  snprintf(path, sizeof path, "%s/out.json", tmp);
  assert_int_equal(jp_json_load_file(path, &ref), 0);
  const json_t *embs = json_object_get(ref, "embeddings");
  assert_int_equal(json_array_size(embs), n);

  /* 4. C loads it and encodes the same ids. */
  jp_model *m;
  jp_encoder *e;
  struct jp_model_opts o;
  jp_model_opts_default(&o);
  o.n_threads = 2;
  snprintf(path, sizeof path, "%s/py", tmp);
  int rc = jp_model_open(path, &o, &m);
  if (rc) fail_msg("jp_model_open: %s", jp_errmsg(rc));
  const struct jp_model_info *info = jp_model_get_info(m);
  assert_int_equal(info->kind, JP_MODEL_BERT);
  assert_string_equal(info->dtype, "F16");
  assert_string_equal(info->name, "colbert_ref/random-s7");
  assert_int_equal(info->bert.hidden, 48);
  assert_int_equal(info->bert.heads, 3);
  assert_int_equal(info->colbert.dim, 24);
  assert_int_equal(info->colbert.doc_maxlen, 300);   /* from the nested "config" */
  assert_int_equal(info->colbert.q_marker_id, 5);
  assert_int_equal(info->colbert.d_marker_id, 6);
  assert_int_equal(jp_encoder_create(m, &e), 0);

  for (int part = 0; part < 2; part++) {
    const json_t *set = part ? ds : qs;
    int cnt = part ? nd : nq, dim = info->colbert.dim;
    struct jp_token_seq *sq = calloc((size_t)cnt, sizeof *sq);
    int32_t *lens = calloc((size_t)cnt, sizeof *lens);
    size_t cap = 0;
    for (int i = 0; i < cnt; i++) {
      const json_t *x = json_array_get(set, (size_t)i);
      int32_t *ids;
      uint8_t *mask;
      sq[i].len = golden_ints(json_object_get(x, "ids"), &ids, &mask, json_object_get(x, "mask"));
      sq[i].ids = ids;
      sq[i].mask = mask;
      cap += (size_t)sq[i].len;
    }
    float *out = malloc(cap * (size_t)dim * sizeof *out);
    assert_non_null(out);
    rc = jp_encode_seqs(e, !part, sq, cnt, out, cap, lens);
    if (rc) fail_msg("jp_encode_seqs: %s", jp_errmsg(rc));
    size_t off = 0;
    for (int i = 0; i < cnt; i++) {
      golden_compare(out + off * dim, json_array_get(embs, (size_t)(part ? nq + i : i)), lens[i],
                     dim, part ? "doc" : "query", i);
      off += (size_t)lens[i];
      free((void *)sq[i].ids);
      free((void *)sq[i].mask);
    }
    free(out);
    free(lens);
    free(sq);
  }
  jp_encoder_destroy(e);
  jp_model_close(m);
  json_decref(ref);
  json_decref(g);
  jp_rm_rf(tmp);
}

int main(void)
{
  if (system(PYTHON " -c 'import torch, numpy' >/dev/null 2>&1") != 0) {
    fprintf(stderr, "skipped: " PYTHON " has no torch/numpy\n");
    return JP_TEST_SKIP;
  }
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(py_checkpoint_loads_and_matches_python),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
