/* checkpoint.c: writing generated `random` and `static` checkpoints in the
 * Hugging Face layout (checkpoint.h, DESIGN §6).
 *
 * Determinism: every tensor is drawn from its own PRNG stream, seeded from
 * the spec's seed and the tensor's bare name (without "bert."), and nothing
 * time- or host-dependent is written. So the same spec always produces the
 * same bytes (golden tests regenerate checkpoints and compare identities),
 * and the F32/F16/BF16 and prefixed/bare variants of one seed hold the same
 * weights up to rounding.
 *
 * This file does not use the tokenizer: it only needs the vocabulary's line
 * count and a few exact token lines, which it reads itself, so checkpoints
 * can be written by tools that do not link MeCab.
 *
 * Thread-safety: reentrant (two writers must not target the same directory).
 * Allocation: the whole checkpoint is held in memory while it is written
 * (about 445 MB for a bert-base F32 model). */
#include "model/checkpoint.h"

#include "model/safetensors.h"
#include "util/err.h"
#include "util/fp16.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/mem.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Initialisation scale of every random matrix and bias: BERT's
 * initializer_range (0.02), so activations have realistic magnitudes. */
#define CKPT_INIT_STD 0.02f
/* Noise on LayerNorm gamma (around 1) and beta (around 0): enough that a
 * backend which ignored them would fail parity, small enough to keep the
 * network well conditioned. */
#define CKPT_LN_NOISE 0.02f
/* A vocabulary file larger than this is not a WordPiece vocab (bert-base's
 * is 231 kB). */
#define CKPT_VOCAB_MAX ((size_t)64 << 20)

/* Sanity bounds on generated shapes: well above BERT-large (24 layers,
 * 1024 hidden, 4096 intermediate) and small enough that sizes cannot
 * overflow. */
#define CKPT_MAX_LAYERS 64
#define CKPT_MAX_HIDDEN 8192
#define CKPT_MAX_INTER 65536
#define CKPT_MAX_POS 8192
#define CKPT_MAX_DIM 4096

/* The ColBERT settings written to artifact.metadata: JaColBERTv2's values
 * (shared/reference/plaid.md §1.7, model.md §3). */
#define CKPT_QUERY_MAXLEN 32
#define CKPT_DOC_MAXLEN 256
#define CKPT_NBITS 2

void jp_random_spec_default(struct jp_random_spec *s)
{
  /* bert-base-japanese-v3 + JaColBERTv2's 128-wide projection. */
  s->layers = 12;
  s->hidden = 768;
  s->heads = 12;
  s->intermediate = 3072;
  s->max_position = 512;
  s->dim = 128;
  s->seed = 1;   /* any fixed value: the default must be reproducible */
  s->dtype = "F32";
  s->bert_prefix = 1;
}

/* ---- vocabulary ------------------------------------------------------------ */

struct vocab_file {
  char *data;
  size_t len;
  int n_lines;
};

static int vocab_read(const char *path, struct vocab_file *v)
{
  int rc = jp_read_file(path, CKPT_VOCAB_MAX, &v->data, &v->len);
  if (rc) return rc;
  v->n_lines = 0;
  for (size_t i = 0; i < v->len; i++)
    if (v->data[i] == '\n') v->n_lines++;
  if (v->len && v->data[v->len - 1] != '\n') v->n_lines++;   /* last line without "\n" */
  if (v->n_lines == 0) return jp_err(JP_EINVAL, "%s: empty vocabulary", path);
  return 0;
}

/* Line number of the exact token (line terminator "\n" or "\r\n" removed),
 * or -1. */
static int vocab_find(const struct vocab_file *v, const char *tok)
{
  size_t tl = strlen(tok), start = 0;
  for (int line = 0; start < v->len; line++) {
    const char *nl = memchr(v->data + start, '\n', v->len - start);
    size_t end = nl ? (size_t)(nl - v->data) : v->len, l = end - start;
    if (l && v->data[end - 1] == '\r') l--;
    if (l == tl && !memcmp(v->data + start, tok, tl)) return line;
    start = end + 1;
  }
  return -1;
}

/* ---- small JSON files ------------------------------------------------------ */

static int write_json(const char *dir, const char *name, json_t *root, size_t flags)
{
  char path[PATH_MAX];
  int rc;
  char *s;
  if (!root) return JP_ENOMEM;
  s = json_dumps(root, flags | JSON_REAL_PRECISION(15));
  json_decref(root);
  if (!s) return JP_ENOMEM;
  rc = jp_path_join(path, sizeof path, dir, name);
  if (!rc) {
    size_t n = strlen(s);
    /* json_dumps leaves no final newline; HF's files end with one. */
    char *t = jp_malloc(n + 2);
    if (!t) rc = JP_ENOMEM;
    else {
      memcpy(t, s, n);
      t[n] = '\n';
      rc = jp_write_file_atomic(path, t, n + 1);
      jp_free(t);
    }
  }
  free(s);
  return rc;
}

/* json_pack with a NULL check: jansson returns NULL on OOM or a format bug. */
static int write_common_files(const char *dir, const struct vocab_file *v, int max_len, int dim,
                              const char *name)
{
  /* A model with fewer positions than JaColBERTv2's doc_maxlen (tiny test
   * models) gets doc_maxlen = its position count, so the file never
   * promises sequences the model cannot take. */
  int doc_maxlen = max_len < CKPT_DOC_MAXLEN ? max_len : CKPT_DOC_MAXLEN;
  char path[PATH_MAX];
  int rc = jp_path_join(path, sizeof path, dir, "vocab.txt");
  if (rc) return rc;
  /* Byte for byte: id 15 of the JaColBERT vocab is a single space, so no
   * normalisation of any kind. */
  rc = jp_write_file_atomic(path, v->data, v->len);
  if (rc) return rc;

  /* bert-base-japanese-v3's tokenizer_config.json (model.md §2). */
  rc = write_json(dir, "tokenizer_config.json",
                  json_pack("{s:s, s:s, s:s, s:s, s:s, s:i, s:b, s:s, s:s, s:{s:s}, s:s}",
                            "cls_token", "[CLS]", "mask_token", "[MASK]", "pad_token", "[PAD]",
                            "sep_token", "[SEP]", "unk_token", "[UNK]",
                            "model_max_length", max_len, "do_lower_case", 0,
                            "word_tokenizer_type", "mecab", "subword_tokenizer_type",
                            "wordpiece", "mecab_kwargs", "mecab_dic", "unidic_lite",
                            "tokenizer_class", "BertJapaneseTokenizer"),
                  JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (rc) return rc;
  rc = write_json(dir, "special_tokens_map.json",
                  json_pack("{s:s, s:s, s:s, s:s, s:s}", "cls_token", "[CLS]", "mask_token",
                            "[MASK]", "pad_token", "[PAD]", "sep_token", "[SEP]", "unk_token",
                            "[UNK]"),
                  JSON_INDENT(2) | JSON_PRESERVE_ORDER);
  if (rc) return rc;

  /* artifact.metadata: ColBERT's config export (flat, indent 4, as
   * colbert-v0.4 writes it) with JaColBERTv2's values. No host name or
   * date: the file is part of the model identity and must be reproducible. */
  json_t *meta = json_pack(
    "{s:s, s:s, s:s, s:s, s:n, s:n, s:n, s:b, s:n, s:i, s:i, s:i, s:b, s:s, s:i, s:i, s:f, "
    "s:b, s:s, s:i, s:i, s:b, s:b, s:i, s:b, s:s, s:i, s:b, s:s}",
    "query_token_id", "[unused0]", "doc_token_id", "[unused1]",
    "query_token", "[質問s]", "doc_token", "[文書]",
    "ncells", "centroid_score_threshold", "ndocs",
    "load_index_with_mmap", 0, "index_path",
    "index_bsize", 64, "nbits", CKPT_NBITS, "kmeans_niters", 4, "resume", 0,
    "similarity", "cosine", "bsize", 32, "accumsteps", 1, "lr", 1e-5,
    "relu", 0, "interaction", "colbert", "nway", 32, "query_maxlen", CKPT_QUERY_MAXLEN,
    "use_ib_negatives", 1, "attend_to_mask_tokens", 0, "dim", dim, "mask_punctuation", 1,
    "model_name", name, "doc_maxlen", doc_maxlen, "ignore_scores", 0,
    "checkpoint", name);
  if (meta) {
    json_t *m = json_pack("{s:s, s:s}", "version", "colbert-v0.4", "generator", "japlaid");
    if (!m || json_object_set_new(meta, "meta", m)) {
      json_decref(meta);
      meta = NULL;
    }
  }
  return write_json(dir, "artifact.metadata", meta, JSON_INDENT(4) | JSON_PRESERVE_ORDER);
}

/* ---- random BERT ----------------------------------------------------------- */

enum init_kind { INIT_MATRIX, INIT_BIAS, INIT_LN_GAMMA, INIT_LN_BETA };

struct gen_tensor {
  char name[128];        /* bare name (no "bert.") */
  int prefixed;          /* 1: gets "bert." when the spec asks for it */
  int ndim;
  int64_t shape[2];
  enum init_kind kind;
};

static void gen_add(struct gen_tensor *t, int *n, const char *name, int prefixed, int64_t d0,
                    int64_t d1, enum init_kind kind)
{
  struct gen_tensor *g = &t[(*n)++];
  snprintf(g->name, sizeof g->name, "%s", name);
  g->prefixed = prefixed;
  g->ndim = d1 ? 2 : 1;
  g->shape[0] = d0;
  g->shape[1] = d1;
  g->kind = kind;
}

static void gen_layer(struct gen_tensor *t, int *n, int l, int H, int I)
{
  static const struct {
    const char *suffix;
    int out_is_inter, in_is_inter;
  } dense[] = {
    {"attention.self.query", 0, 0}, {"attention.self.key", 0, 0},
    {"attention.self.value", 0, 0}, {"attention.output.dense", 0, 0},
    {"intermediate.dense", 1, 0},   {"output.dense", 0, 1},
  };
  char b[128];
  for (size_t i = 0; i < sizeof dense / sizeof dense[0]; i++) {
    int64_t out = dense[i].out_is_inter ? I : H, in = dense[i].in_is_inter ? I : H;
    snprintf(b, sizeof b, "encoder.layer.%d.%s.weight", l, dense[i].suffix);
    gen_add(t, n, b, 1, out, in, INIT_MATRIX);
    snprintf(b, sizeof b, "encoder.layer.%d.%s.bias", l, dense[i].suffix);
    gen_add(t, n, b, 1, out, 0, INIT_BIAS);
    if (i == 3 || i == 5) {   /* after attention.output.dense and output.dense */
      const char *ln = i == 3 ? "attention.output.LayerNorm" : "output.LayerNorm";
      snprintf(b, sizeof b, "encoder.layer.%d.%s.weight", l, ln);
      gen_add(t, n, b, 1, H, 0, INIT_LN_GAMMA);
      snprintf(b, sizeof b, "encoder.layer.%d.%s.bias", l, ln);
      gen_add(t, n, b, 1, H, 0, INIT_LN_BETA);
    }
  }
}

static void gen_fill(const struct gen_tensor *g, uint64_t seed, float *x, size_t n)
{
  uint64_t st = seed ^ jp_hash64(g->name, strlen(g->name));
  for (size_t i = 0; i < n; i++) {
    float r = jp_randn(&st);
    switch (g->kind) {
    case INIT_MATRIX:
    case INIT_BIAS: x[i] = CKPT_INIT_STD * r; break;
    case INIT_LN_GAMMA: x[i] = 1.0f + CKPT_LN_NOISE * r; break;
    case INIT_LN_BETA: x[i] = CKPT_LN_NOISE * r; break;
    }
  }
}

static int spec_check(const struct jp_random_spec *s, enum st_dtype *dt)
{
  if (s->layers < 1 || s->layers > CKPT_MAX_LAYERS)
    return jp_err(JP_EINVAL, "layers must be in 1..%d", CKPT_MAX_LAYERS);
  if (s->hidden < 1 || s->hidden > CKPT_MAX_HIDDEN)
    return jp_err(JP_EINVAL, "hidden must be in 1..%d", CKPT_MAX_HIDDEN);
  if (s->heads < 1 || s->hidden % s->heads != 0)
    return jp_err(JP_EINVAL, "hidden (%d) must be a multiple of heads (%d)", s->hidden, s->heads);
  if (s->intermediate < 1 || s->intermediate > CKPT_MAX_INTER)
    return jp_err(JP_EINVAL, "intermediate must be in 1..%d", CKPT_MAX_INTER);
  if (s->max_position < CKPT_QUERY_MAXLEN || s->max_position > CKPT_MAX_POS)
    return jp_err(JP_EINVAL, "max_position must be in %d..%d", CKPT_QUERY_MAXLEN, CKPT_MAX_POS);
  if (s->dim < 1 || s->dim > CKPT_MAX_DIM)
    return jp_err(JP_EINVAL, "dim must be in 1..%d", CKPT_MAX_DIM);
  const char *d = s->dtype ? s->dtype : "F32";
  if (!strcmp(d, "F32")) *dt = ST_F32;
  else if (!strcmp(d, "F16")) *dt = ST_F16;
  else if (!strcmp(d, "BF16")) *dt = ST_BF16;
  else return jp_err(JP_EINVAL, "dtype must be F32, F16 or BF16, not '%s'", d);
  return 0;
}

static const char *torch_dtype_name(enum st_dtype t)
{
  return t == ST_F16 ? "float16" : t == ST_BF16 ? "bfloat16" : "float32";
}

int jp_checkpoint_write_random(const char *out_dir, const char *vocab_path,
                               const struct jp_random_spec *spec)
{
  struct vocab_file v = {0};
  struct gen_tensor *gen = NULL;
  struct st_tensor *st = NULL;
  char (*names)[136] = NULL;
  float *tmp = NULL;
  enum st_dtype dt = ST_F32;
  char name[96];
  int rc, n = 0, max_n;
  size_t max_numel = 0;

  rc = spec_check(spec, &dt);
  if (rc) return rc;
  rc = vocab_read(vocab_path, &v);
  if (rc) goto out;
  if (v.n_lines < 2) {
    rc = jp_err(JP_EINVAL, "%s: a vocabulary needs at least 2 entries", vocab_path);
    goto out;
  }

  int H = spec->hidden, I = spec->intermediate;
  max_n = 5 + 16 * spec->layers + 2 + 1;
  gen = jp_calloc((size_t)max_n, sizeof *gen);
  st = jp_calloc((size_t)max_n, sizeof *st);
  names = jp_calloc((size_t)max_n, sizeof *names);
  if (!gen || !st || !names) { rc = JP_ENOMEM; goto out; }
  /* HF's state-dict order: embeddings, layers, pooler, then the head. */
  gen_add(gen, &n, "embeddings.word_embeddings.weight", 1, v.n_lines, H, INIT_MATRIX);
  gen_add(gen, &n, "embeddings.position_embeddings.weight", 1, spec->max_position, H,
          INIT_MATRIX);
  gen_add(gen, &n, "embeddings.token_type_embeddings.weight", 1, 2, H, INIT_MATRIX);
  gen_add(gen, &n, "embeddings.LayerNorm.weight", 1, H, 0, INIT_LN_GAMMA);
  gen_add(gen, &n, "embeddings.LayerNorm.bias", 1, H, 0, INIT_LN_BETA);
  for (int l = 0; l < spec->layers; l++) gen_layer(gen, &n, l, H, I);
  /* The pooler is unused by ColBERT but present in real checkpoints, so the
   * loader's "ignore what is not needed" path is exercised. */
  gen_add(gen, &n, "pooler.dense.weight", 1, H, H, INIT_MATRIX);
  gen_add(gen, &n, "pooler.dense.bias", 1, H, 0, INIT_BIAS);
  gen_add(gen, &n, "linear.weight", 0, spec->dim, H, INIT_MATRIX);

  for (int i = 0; i < n; i++) {
    size_t numel = (size_t)gen[i].shape[0] * (size_t)(gen[i].ndim == 2 ? gen[i].shape[1] : 1);
    if (numel > max_numel) max_numel = numel;
  }
  tmp = jp_malloc(max_numel * sizeof(float));
  if (!tmp) { rc = JP_ENOMEM; goto out; }
  for (int i = 0; i < n; i++) {
    struct gen_tensor *g = &gen[i];
    size_t numel = (size_t)g->shape[0] * (size_t)(g->ndim == 2 ? g->shape[1] : 1);
    void *buf = jp_malloc(numel * st_dtype_size(dt));
    if (!buf) { rc = JP_ENOMEM; goto out; }
    gen_fill(g, spec->seed, dt == ST_F32 ? buf : tmp, numel);
    if (dt == ST_F16) jp_f32_to_f16_n(tmp, buf, numel);
    else if (dt == ST_BF16) jp_f32_to_bf16_n(tmp, buf, numel);
    snprintf(names[i], sizeof names[i], "%s%s", g->prefixed && spec->bert_prefix ? "bert." : "",
             g->name);
    st[i].name = names[i];
    st[i].dtype = dt;
    st[i].ndim = g->ndim;
    st[i].shape[0] = g->shape[0];
    st[i].shape[1] = g->shape[1];
    st[i].data = buf;
    st[i].nbytes = numel * st_dtype_size(dt);
  }

  rc = jp_mkdir_p(out_dir);
  if (rc) goto out;
  snprintf(name, sizeof name, "japlaid/random-L%d-H%d-s%llu", spec->layers, spec->hidden,
           (unsigned long long)spec->seed);
  rc = write_common_files(out_dir, &v, spec->max_position, spec->dim, name);
  if (rc) goto out;
  /* config.json as transformers writes it for BERT (sorted keys, indent 2). */
  rc = write_json(out_dir, "config.json",
                  json_pack("{s:s, s:[s], s:f, s:n, s:s, s:f, s:i, s:f, s:i, s:f, s:i, s:s, "
                            "s:i, s:i, s:i, s:s, s:s, s:i, s:b, s:i}",
                            "_name_or_path", name, "architectures", "HF_ColBERT",
                            "attention_probs_dropout_prob", 0.1, "classifier_dropout",
                            "hidden_act", "gelu", "hidden_dropout_prob", 0.1,
                            "hidden_size", H, "initializer_range", 0.02,
                            "intermediate_size", I, "layer_norm_eps", 1e-12,
                            "max_position_embeddings", spec->max_position, "model_type", "bert",
                            "num_attention_heads", spec->heads, "num_hidden_layers",
                            spec->layers, "pad_token_id", 0, "position_embedding_type",
                            "absolute", "torch_dtype", torch_dtype_name(dt), "type_vocab_size",
                            2, "use_cache", 1, "vocab_size", v.n_lines),
                  JSON_INDENT(2) | JSON_SORT_KEYS);
  if (rc) goto out;
  {
    char path[PATH_MAX];
    rc = jp_path_join(path, sizeof path, out_dir, "model.safetensors");
    if (!rc) rc = st_write(path, st, n, "{\"format\": \"pt\"}");
  }
out:
  if (st)
    for (int i = 0; i < n; i++) jp_free((void *)st[i].data);
  jp_free(st);
  jp_free(gen);
  jp_free(names);
  jp_free(tmp);
  jp_free(v.data);
  return rc;
}

/* ---- static lexical model --------------------------------------------------- */

int jp_checkpoint_write_static(const char *out_dir, const char *vocab_path, int dim,
                               uint64_t seed)
{
  /* Tokens with no lexical meaning get the zero vector (checkpoint.h). The
   * markers are JaColBERTv2's, the ones this writer's artifact.metadata
   * names. */
  static const char *const zero_tokens[] = {"[PAD]", "[MASK]", "[CLS]", "[SEP]", "[unused0]",
                                            "[unused1]"};
  struct vocab_file v = {0};
  float *emb = NULL;
  char name[96];
  int rc;

  if (dim < 1 || dim > CKPT_MAX_DIM) return jp_err(JP_EINVAL, "dim must be in 1..%d", CKPT_MAX_DIM);
  rc = vocab_read(vocab_path, &v);
  if (rc) goto out;
  emb = jp_malloc((size_t)v.n_lines * (size_t)dim * sizeof(float));
  if (!emb) { rc = JP_ENOMEM; goto out; }
  uint64_t st = seed ^ jp_hash64("embedding", 9);
  for (int r = 0; r < v.n_lines; r++) {
    float *row = emb + (size_t)r * dim;
    double n2 = 0;
    /* A normal draw normalised is uniform on the sphere; a (vanishingly
     * unlikely) all-zero draw is redrawn so every kept row has norm 1. */
    do {
      n2 = 0;
      for (int d = 0; d < dim; d++) {
        row[d] = jp_randn(&st);
        n2 += (double)row[d] * row[d];
      }
    } while (n2 == 0);
    double inv = 1.0 / sqrt(n2);
    for (int d = 0; d < dim; d++) row[d] = (float)(row[d] * inv);
  }
  for (size_t i = 0; i < sizeof zero_tokens / sizeof zero_tokens[0]; i++) {
    int id = vocab_find(&v, zero_tokens[i]);
    if (id < 0) {
      rc = jp_err(JP_EINVAL, "%s: token %s is missing from the vocabulary", vocab_path,
                  zero_tokens[i]);
      goto out;
    }
    memset(emb + (size_t)id * dim, 0, (size_t)dim * sizeof(float));
  }

  rc = jp_mkdir_p(out_dir);
  if (rc) goto out;
  snprintf(name, sizeof name, "japlaid/static-d%d-s%llu", dim, (unsigned long long)seed);
  rc = write_common_files(out_dir, &v, CKPT_DOC_MAXLEN, dim, name);
  if (rc) goto out;
  rc = write_json(out_dir, "config.json",
                  json_pack("{s:s, s:s, s:i, s:i, s:s}", "_name_or_path", name, "model_type",
                            "japlaid-static", "vocab_size", v.n_lines, "dim", dim, "torch_dtype",
                            "float32"),
                  JSON_INDENT(2) | JSON_SORT_KEYS);
  if (rc) goto out;
  {
    char path[PATH_MAX];
    struct st_tensor t = {.name = "embedding", .dtype = ST_F32, .ndim = 2,
                          .shape = {v.n_lines, dim}, .data = emb,
                          .nbytes = (size_t)v.n_lines * dim * sizeof(float)};
    rc = jp_path_join(path, sizeof path, out_dir, "model.safetensors");
    if (!rc) rc = st_write(path, &t, 1, "{\"format\": \"pt\"}");
  }
out:
  jp_free(emb);
  jp_free(v.data);
  return rc;
}
