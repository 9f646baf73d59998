/* model.c: jp_model_open -- a checkpoint directory (config.json,
 * model.safetensors, vocab.txt, tokenizer_config.json, artifact.metadata)
 * loaded, validated and ready for encoders (model.h, DESIGN §6).
 *
 * Weights: F32 tensors are used in place from the read-only mapping (a
 * bert-base model then costs no copy and its pages are shared between
 * processes); F16/BF16 tensors (and F32 ones at an address a float cannot be
 * read from) are converted into one owned block, and when nothing points
 * into the mapping any more it is released at once.
 *
 * Every tensor shape is checked against config.json and artifact.metadata
 * before use, so the forward pass can trust its sizes.
 *
 * Thread-safety: open/close are not concurrent with use; an open model is
 * immutable. Allocation: at open only. */
#include "model/model_int.h"

#include "util/err.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/log.h"
#include "util/mem.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* A config or metadata file larger than this is not one (real ones are a
 * few kB); the bound keeps a wrong path from being read whole. */
#define MODEL_JSON_MAX ((size_t)16 << 20)
/* vocab.txt: bert-base-japanese's is 231 kB. */
#define MODEL_VOCAB_MAX ((size_t)64 << 20)
/* Converted tensors start on 64-byte boundaries (SIMD rows), i.e. every
 * 16 floats. */
#define MODEL_ALIGN_FLOATS 16

void jp_model_opts_default(struct jp_model_opts *o)
{
  memset(o, 0, sizeof *o);
  o->mecab_dicdir = NULL;
  o->lite_compat = -1;
  o->device = JP_DEVICE_CPU;
  o->gpu = 0;
  o->n_threads = 0;
  o->max_batch_tokens = 0;
}

void jp_model_close(jp_model *m)
{
  if (!m) return;
  jp_pool_destroy(m->pool);
  jp_tok_destroy(m->tok);
  jp_free(m->w.layer);
  jp_aligned_free(m->owned);
  st_close(m->st);
  jp_free(m);
}

const struct jp_model_info *jp_model_get_info(const jp_model *m) { return &m->info; }
const jp_tok *jp_model_tokenizer(const jp_model *m) { return m->tok; }

/* ---- tensors ----------------------------------------------------------------- */

struct want {
  char name[160];
  const float **dst;
  int ndim;
  int64_t shape[2];
  const struct st_tensor *t;
  size_t off;          /* offset in the owned block (floats), or SIZE_MAX: zero copy */
};

static void want_add(struct want *w, int *n, const char *prefix, const char *name,
                     const float **dst, int64_t d0, int64_t d1)
{
  struct want *x = &w[(*n)++];
  snprintf(x->name, sizeof x->name, "%s%s", prefix, name);
  x->dst = dst;
  x->ndim = d1 ? 2 : 1;
  x->shape[0] = d0;
  x->shape[1] = d1;
}

static int want_bert(struct jp_model *m, struct want *w, int *n, const char *p)
{
  const struct bert_config *c = &m->w.cfg;
  struct bert_weights *bw = &m->w;
  int H = c->hidden, I = c->intermediate;
  char b[128];

  want_add(w, n, p, "embeddings.word_embeddings.weight", &bw->word_emb, c->vocab_size, H);
  want_add(w, n, p, "embeddings.position_embeddings.weight", &bw->pos_emb, c->max_position, H);
  want_add(w, n, p, "embeddings.token_type_embeddings.weight", &bw->type_emb, c->type_vocab, H);
  want_add(w, n, p, "embeddings.LayerNorm.weight", &bw->emb_ln_g, H, 0);
  want_add(w, n, p, "embeddings.LayerNorm.bias", &bw->emb_ln_b, H, 0);
  for (int l = 0; l < c->layers; l++) {
    struct bert_layer_weights *L = &bw->layer[l];
#define W_(suffix, field, d0, d1)                                     \
    snprintf(b, sizeof b, "encoder.layer.%d.%s", l, suffix);          \
    want_add(w, n, p, b, &L->field, d0, d1)
    W_("attention.self.query.weight", q_w, H, H);
    W_("attention.self.query.bias", q_b, H, 0);
    W_("attention.self.key.weight", k_w, H, H);
    W_("attention.self.key.bias", k_b, H, 0);
    W_("attention.self.value.weight", v_w, H, H);
    W_("attention.self.value.bias", v_b, H, 0);
    W_("attention.output.dense.weight", ao_w, H, H);
    W_("attention.output.dense.bias", ao_b, H, 0);
    W_("attention.output.LayerNorm.weight", ln1_g, H, 0);
    W_("attention.output.LayerNorm.bias", ln1_b, H, 0);
    W_("intermediate.dense.weight", i_w, I, H);
    W_("intermediate.dense.bias", i_b, I, 0);
    W_("output.dense.weight", o_w, H, I);
    W_("output.dense.bias", o_b, H, 0);
    W_("output.LayerNorm.weight", ln2_g, H, 0);
    W_("output.LayerNorm.bias", ln2_b, H, 0);
#undef W_
  }
  /* The ColBERT head is never under the encoder's prefix (HF_ColBERT). */
  want_add(w, n, "", "linear.weight", &bw->proj_w, c->out_dim, H);
  return 0;
}

/* Finds, validates and binds every wanted tensor (see the top comment). */
static int bind_tensors(struct jp_model *m, const char *st_path, struct want *w, int n)
{
  size_t total = 0;
  for (int i = 0; i < n; i++) {
    struct want *x = &w[i];
    x->t = st_find(m->st, x->name);
    if (!x->t) {
      if (!strcmp(x->name, "linear.weight"))
        return jp_err(JP_ECORRUPT, "%s: tensor linear.weight (the ColBERT projection) is "
                      "missing: not a ColBERT checkpoint", st_path);
      return jp_err(JP_ECORRUPT, "%s: tensor %s is missing", st_path, x->name);
    }
    if (x->t->dtype != ST_F32 && x->t->dtype != ST_F16 && x->t->dtype != ST_BF16)
      return jp_err(JP_EUNSUPPORTED, "%s: tensor %s has dtype %s (only F32, F16, BF16)",
                    st_path, x->name, st_dtype_name(x->t->dtype));
    if (x->t->ndim != x->ndim || x->t->shape[0] != x->shape[0] ||
        (x->ndim == 2 && x->t->shape[1] != x->shape[1])) {
      char got[64] = "", want[48];
      size_t gl = 0;
      for (int d = 0; d < x->t->ndim && gl < sizeof got - 24; d++)
        gl += (size_t)snprintf(got + gl, sizeof got - gl, "%s%lld", d ? ", " : "",
                               (long long)x->t->shape[d]);
      if (x->ndim == 2)
        snprintf(want, sizeof want, "%lld, %lld", (long long)x->shape[0], (long long)x->shape[1]);
      else
        snprintf(want, sizeof want, "%lld", (long long)x->shape[0]);
      return jp_err(JP_ECORRUPT, "%s: tensor %s has shape [%s], config says [%s]", st_path,
                    x->name, got, want);
    }
    if (x->t->dtype == ST_F32 && ((uintptr_t)x->t->data % sizeof(float)) == 0) {
      x->off = SIZE_MAX;
    } else {
      x->off = total;
      total += ((size_t)st_numel(x->t) + MODEL_ALIGN_FLOATS - 1) / MODEL_ALIGN_FLOATS *
               MODEL_ALIGN_FLOATS;
    }
  }
  if (total) {
    m->owned = jp_aligned_alloc(total * sizeof(float));
    if (!m->owned) return JP_ENOMEM;
  }
  for (int i = 0; i < n; i++) {
    struct want *x = &w[i];
    if (x->off == SIZE_MAX) {
      *x->dst = x->t->data;
    } else {
      int rc = st_to_f32(x->t, m->owned + x->off);
      if (rc) return rc;
      *x->dst = m->owned + x->off;
    }
  }
  return 0;
}

/* ---- identity ------------------------------------------------------------------ */

static void hash_part(struct jp_hasher *h, const char *label, const void *data, size_t len)
{
  uint8_t lb[8];
  for (int i = 0; i < 8; i++) lb[i] = (uint8_t)((uint64_t)len >> (8 * i));
  /* Label and length first, so no two different part lists hash the same
   * byte stream. */
  jp_hasher_update(h, label, strlen(label) + 1);
  jp_hasher_update(h, lb, 8);
  jp_hasher_update(h, data, len);
}

/* The tokenizer's part of the identity: dictionary family, lite-compat, the
 * dictionary's dicrc and the sizes of its compiled files (hashing the files
 * themselves would read ~800 MB of UniDic at every open; a different build
 * of a dictionary changes their sizes). */
static int hash_tokenizer(struct jp_hasher *h, const jp_tok *t)
{
  static const char *const files[] = {"sys.dic", "matrix.bin", "char.bin", "unk.dic"};
  const char *dir = jp_tok_dicdir(t);
  char path[4096], line[64];
  char *rc_b = NULL;
  size_t rc_n = 0;
  int n = snprintf(line, sizeof line, "kind=%d lite=%d", (int)jp_tok_dict_kind(t),
                   jp_tok_lite_compat(t));
  hash_part(h, "tokenizer", line, (size_t)n);
  if (jp_path_join(path, sizeof path, dir, "dicrc") == 0 &&
      jp_read_file(path, 1 << 20, &rc_b, &rc_n) == 0) {
    hash_part(h, "dicrc", rc_b, rc_n);
    jp_free(rc_b);
  }
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    struct stat st;
    if (jp_path_join(path, sizeof path, dir, files[i]) != 0 || stat(path, &st) != 0) continue;
    n = snprintf(line, sizeof line, "%lld", (long long)st.st_size);
    hash_part(h, files[i], line, (size_t)n);
  }
  jp_err_clear();   /* a missing optional file is not this open's error */
  return 0;
}

/* ---- open ---------------------------------------------------------------------- */

static int read_json(const char *dir, const char *name, int required, char **bytes,
                     size_t *len, json_t **out)
{
  char path[PATH_MAX];
  int rc = jp_path_join(path, sizeof path, dir, name);
  *out = NULL;
  *bytes = NULL;
  if (rc) return rc;
  rc = jp_read_file(path, MODEL_JSON_MAX, bytes, len);
  if (rc == JP_ENOTFOUND && !required) return 0;
  if (rc == JP_ENOTFOUND)
    return jp_err(JP_ENOTFOUND, "%s is missing: not a checkpoint directory", path);
  if (rc) return rc;
  rc = jp_json_loadb(*bytes, *len, path, out);
  return rc;
}

static int resolve_marker(const jp_vocab *v, const char *path, const char *key, const char *s,
                          int32_t num, int32_t *out)
{
  if (s) {
    int32_t id = jp_vocab_id(v, s, strlen(s));
    if (id < 0)
      return jp_err(JP_EINVAL, "%s: %s \"%s\" is not in vocab.txt", path, key, s);
    *out = id;
    return 0;
  }
  if (num >= jp_vocab_size(v))
    return jp_err(JP_EINVAL, "%s: %s %d is outside the vocabulary (%d entries)", path, key,
                  num, jp_vocab_size(v));
  *out = num;
  return 0;
}

int jp_model_open(const char *dir, const struct jp_model_opts *opts, jp_model **out)
{
  struct jp_model_opts defaults;
  struct jp_model *m = NULL;
  struct want *w = NULL;
  json_t *cfg = NULL, *meta = NULL, *tcfg = NULL;
  char *cfg_b = NULL, *meta_b = NULL, *tcfg_b = NULL, *vocab_b = NULL;
  size_t cfg_n = 0, meta_n = 0, tcfg_n = 0, vocab_n = 0;
  char path[PATH_MAX], st_path[PATH_MAX], meta_path[PATH_MAX];
  const char *qm = NULL, *dm = NULL;
  int32_t qm_num = -1, dm_num = -1;
  jp_vocab *vocab = NULL;
  struct jp_hasher *h = NULL;
  int rc, n = 0;

  *out = NULL;
  if (!opts) {
    jp_model_opts_default(&defaults);
    opts = &defaults;
  }
  if (opts->device != JP_DEVICE_CPU && opts->device != JP_DEVICE_CUDA)
    return jp_err(JP_EINVAL, "unknown device %d", (int)opts->device);
  if (opts->max_batch_tokens < 0)
    return jp_err(JP_EINVAL, "max_batch_tokens must be >= 0 (0 = default)");
  if (!jp_is_dir(dir))
    return jp_err(JP_ENOTFOUND, "model directory %s does not exist", dir);

  m = jp_calloc(1, sizeof *m);
  if (!m) return JP_ENOMEM;
  m->opts = *opts;
  m->opts.mecab_dicdir = NULL;   /* not kept: the caller's string need not outlive open */

  /* config.json */
  rc = read_json(dir, "config.json", 1, &cfg_b, &cfg_n, &cfg);
  if (rc) goto out;
  jp_path_join(path, sizeof path, dir, "config.json");
  rc = model__parse_config(path, cfg, &m->info);
  if (rc) goto out;
  m->w.cfg = m->info.bert;

  /* artifact.metadata */
  rc = read_json(dir, "artifact.metadata", 1, &meta_b, &meta_n, &meta);
  if (rc) goto out;
  jp_path_join(meta_path, sizeof meta_path, dir, "artifact.metadata");
  rc = model__parse_colbert(meta_path, meta, &m->info.colbert, &qm, &dm, &qm_num, &dm_num);
  if (rc) goto out;
  if (!m->info.name[0]) {
    const json_t *mm = json_object_get(meta, "config");
    const char *mn = NULL;
    jp_json_get_str(json_is_object(mm) ? mm : meta, "model_name", NULL, &mn);
    if (mn && *mn) snprintf(m->info.name, sizeof m->info.name, "%s", mn);
  }
  if (!m->info.name[0]) {   /* the directory's own name, trailing slashes ignored */
    char d[PATH_MAX];
    snprintf(d, sizeof d, "%s", dir);
    size_t dl = strlen(d);
    while (dl > 1 && d[dl - 1] == '/') d[--dl] = '\0';
    const char *base = strrchr(d, '/');
    snprintf(m->info.name, sizeof m->info.name, "%s", base && base[1] ? base + 1 : d);
  }

  /* tokenizer_config.json (optional: the tokenizer's behaviour is fixed) */
  rc = read_json(dir, "tokenizer_config.json", 0, &tcfg_b, &tcfg_n, &tcfg);
  if (rc) goto out;
  if (tcfg) {
    jp_path_join(path, sizeof path, dir, "tokenizer_config.json");
    rc = model__check_tokenizer_config(path, tcfg);
    if (rc) goto out;
  }

  /* Sequence limits against the position table. */
  struct jp_colbert_cfg *cb = &m->info.colbert;
  int max_pos = m->info.kind == JP_MODEL_BERT ? m->w.cfg.max_position : JP_MODEL_STATIC_MAX_LEN;
  if (cb->query_maxlen > max_pos || cb->doc_maxlen > max_pos) {
    rc = jp_err(JP_EINVAL, "%s: query_maxlen %d / doc_maxlen %d exceed the model's %d positions",
                meta_path, cb->query_maxlen, cb->doc_maxlen, max_pos);
    goto out;
  }
  m->max_len = cb->query_maxlen > cb->doc_maxlen ? cb->query_maxlen : cb->doc_maxlen;

  /* model.safetensors */
  rc = jp_path_join(st_path, sizeof st_path, dir, "model.safetensors");
  if (rc) goto out;
  rc = st_open(st_path, &m->st);
  if (rc == JP_ENOTFOUND) rc = jp_err(JP_ENOTFOUND, "%s is missing", st_path);
  if (rc) goto out;

  const struct st_tensor *proj;
  if (m->info.kind == JP_MODEL_BERT) {
    const char *prefix;
    if (st_find(m->st, "bert.embeddings.word_embeddings.weight")) prefix = "bert.";
    else if (st_find(m->st, "embeddings.word_embeddings.weight")) prefix = "";
    else {
      rc = jp_err(JP_ECORRUPT, "%s: no BERT word embeddings (expected "
                  "bert.embeddings.word_embeddings.weight or embeddings.word_embeddings.weight)",
                  st_path);
      goto out;
    }
    proj = st_find(m->st, "linear.weight");
    if (cb->dim == 0 && proj && proj->ndim == 2) cb->dim = (int)proj->shape[0];
    if (cb->dim == 0) cb->dim = 128;   /* ColBERT's default; the shape check then reports */
    m->w.cfg.out_dim = cb->dim;
    m->w.layer = jp_calloc((size_t)m->w.cfg.layers, sizeof *m->w.layer);
    w = jp_calloc((size_t)(6 + 16 * m->w.cfg.layers), sizeof *w);
    if (!m->w.layer || !w) { rc = JP_ENOMEM; goto out; }
    want_bert(m, w, &n, prefix);
  } else {
    if (cb->dim && cb->dim != m->info.bert.out_dim) {
      rc = jp_err(JP_EINVAL, "%s: dim %d differs from config.json's dim %d", meta_path, cb->dim,
                  m->info.bert.out_dim);
      goto out;
    }
    cb->dim = m->info.bert.out_dim;
    w = jp_calloc(1, sizeof *w);
    if (!w) { rc = JP_ENOMEM; goto out; }
    want_add(w, &n, "", "embedding", &m->static_emb, m->info.bert.vocab_size, cb->dim);
  }
  rc = bind_tensors(m, st_path, w, n);
  if (rc) goto out;
  proj = w[n - 1].t;   /* linear.weight, or the static table */
  snprintf(m->info.dtype, sizeof m->info.dtype, "%s", st_dtype_name(w[0].t->dtype));
  m->info.bert.out_dim = cb->dim;
  if (m->info.kind == JP_MODEL_BERT) m->info.bert = m->w.cfg;
  for (int i = 0; i < n; i++) m->n_params += st_numel(w[i].t);

  /* vocab.txt, then the identity over the four parts model.h names. */
  rc = jp_path_join(path, sizeof path, dir, "vocab.txt");
  if (rc) goto out;
  rc = jp_read_file(path, MODEL_VOCAB_MAX, &vocab_b, &vocab_n);
  if (rc) goto out;
  h = jp_hasher_create();
  if (!h) { rc = JP_ENOMEM; goto out; }
  hash_part(h, "config.json", cfg_b, cfg_n);
  hash_part(h, "vocab.txt", vocab_b, vocab_n);
  hash_part(h, "artifact.metadata", meta_b, meta_n);
  hash_part(h, m->info.kind == JP_MODEL_BERT ? "linear.weight" : "embedding", proj->data,
            proj->nbytes);
  {
    /* The files alone: a copy of the state so far, finished now. */
    struct jp_hasher *hc = jp_hasher_copy(h);
    if (!hc) { rc = JP_ENOMEM; goto out; }
    jp_hasher_hex(hc, m->info.checkpoint_identity);
    jp_hasher_destroy(hc);
  }

  /* Nothing points into the mapping any more: give it back. */
  int views = 0;
  for (int i = 0; i < n; i++) views |= w[i].off == SIZE_MAX;
  if (!views) {
    st_close(m->st);
    m->st = NULL;
  }

  rc = jp_vocab_load(path, &vocab);
  if (rc) goto out;
  if (jp_vocab_size(vocab) > m->info.bert.vocab_size) {
    rc = jp_err(JP_ECORRUPT, "%s has %d entries but the model's embedding has only %d rows",
                path, jp_vocab_size(vocab), m->info.bert.vocab_size);
    goto out;
  }
  if ((rc = resolve_marker(vocab, meta_path, "query_token_id", qm, qm_num, &cb->q_marker_id)) ||
      (rc = resolve_marker(vocab, meta_path, "doc_token_id", dm, dm_num, &cb->d_marker_id)))
    goto out;

  struct jp_tok_opts to;
  jp_tok_opts_default(&to);
  to.mecab_dicdir = opts->mecab_dicdir;
  to.lite_compat = opts->lite_compat;
  to.query_maxlen = cb->query_maxlen;
  to.doc_maxlen = cb->doc_maxlen;
  to.q_marker_id = cb->q_marker_id;
  to.d_marker_id = cb->d_marker_id;
  to.attend_to_mask_tokens = cb->attend_to_mask_tokens;
  to.mask_punctuation = cb->mask_punctuation;
  rc = jp_tok_create(vocab, &to, &m->tok);   /* owns vocab from here, also on failure */
  vocab = NULL;
  if (rc) goto out;
  /* The identity covers the tokenizer too: the same checkpoint with another
   * MeCab dictionary or without lite-compat produces other ids, and an
   * index built one way must not be searched the other way. */
  rc = hash_tokenizer(h, m->tok);
  if (rc) goto out;
  jp_hasher_hex(h, m->info.identity);

  rc = model__backend_prepare(m);
  if (rc) goto out;
  JP_LOG_INFO("model %s: %s, %s, identity %s, %lld parameters", dir, m->info.name,
              m->info.kind == JP_MODEL_BERT ? "bert" : "static", m->info.identity,
              (long long)m->n_params);
  *out = m;
  m = NULL;
out:
  jp_hasher_destroy(h);
  jp_vocab_free(vocab);
  jp_free(w);
  json_decref(cfg);
  json_decref(meta);
  json_decref(tcfg);
  jp_free(cfg_b);
  jp_free(meta_b);
  jp_free(tcfg_b);
  jp_free(vocab_b);
  jp_model_close(m);
  return rc;
}
