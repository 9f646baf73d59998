/* config.c: reading a checkpoint's JSON files (config.json,
 * artifact.metadata, tokenizer_config.json) into the model's settings.
 *
 * Policy: refuse what we cannot encode faithfully, with a message naming the
 * file and key, instead of guessing -- a silently different model would
 * produce an index that no error ever points back to. Unknown keys are
 * ignored (real checkpoints carry dozens of training-only settings).
 *
 * Thread-safety: reentrant. Allocation: none (strings stay owned by the
 * jansson values passed in). */
#include "model/model_int.h"

#include "util/err.h"
#include "util/json.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* Upper bounds on BERT sizes: far above any BERT that exists (BERT-large is
 * 24 x 1024 x 4096, vocabularies are at most a few hundred thousand) and low
 * enough that no size computation overflows. */
#define CFG_MAX_LAYERS 256
#define CFG_MAX_HIDDEN 16384
#define CFG_MAX_INTER 131072
#define CFG_MAX_POS 65536
#define CFG_MAX_VOCAB 4000000
#define CFG_MAX_DIM 8192

/* Reads an integer key into [lo, hi]; `required` = absence is an error. */
static int get_int(const char *path, const json_t *o, const char *key, int required, int64_t def,
                   int64_t lo, int64_t hi, int *out)
{
  int64_t v;
  const json_t *j = json_object_get(o, key);
  if (required && (!j || json_is_null(j)))
    return jp_err(JP_EINVAL, "%s: required key \"%s\" is missing", path, key);
  if (jp_json_get_int(o, key, def, &v))
    return jp_err(JP_EINVAL, "%s: \"%s\" must be an integer", path, key);
  if (v < lo || v > hi)
    return jp_err(JP_EINVAL, "%s: \"%s\" is %lld, outside %lld..%lld", path, key, (long long)v,
                  (long long)lo, (long long)hi);
  *out = (int)v;
  return 0;
}

static int get_str(const char *path, const json_t *o, const char *key, const char *def,
                   const char **out)
{
  if (jp_json_get_str(o, key, def, out))
    return jp_err(JP_EINVAL, "%s: \"%s\" must be a string", path, key);
  return 0;
}

static void set_name(struct jp_model_info *info, const char *s)
{
  snprintf(info->name, sizeof info->name, "%s", s);
}

int model__parse_config(const char *path, const json_t *cfg, struct jp_model_info *info)
{
  const char *type, *s;
  int rc;

  if (!json_is_object(cfg)) return jp_err(JP_EINVAL, "%s: not a JSON object", path);
  rc = get_str(path, cfg, "model_type", NULL, &type);
  if (rc) return rc;
  if (!type)
    return jp_err(JP_EINVAL, "%s: no \"model_type\" (expected \"bert\" or \"japlaid-static\")",
                  path);
  rc = get_str(path, cfg, "_name_or_path", NULL, &s);
  if (rc) return rc;
  if (s && *s) set_name(info, s);

  if (!strcmp(type, "japlaid-static")) {
    info->kind = JP_MODEL_STATIC;
    if ((rc = get_int(path, cfg, "vocab_size", 1, 0, 1, CFG_MAX_VOCAB, &info->bert.vocab_size)) ||
        (rc = get_int(path, cfg, "dim", 1, 0, 1, CFG_MAX_DIM, &info->bert.out_dim)))
      return rc;
    return 0;
  }
  if (strcmp(type, "bert") != 0)
    return jp_err(JP_EUNSUPPORTED, "%s: model_type \"%s\" is not supported (only \"bert\" "
                  "and \"japlaid-static\")", path, type);

  struct bert_config *b = &info->bert;
  info->kind = JP_MODEL_BERT;
  if ((rc = get_int(path, cfg, "vocab_size", 1, 0, 1, CFG_MAX_VOCAB, &b->vocab_size)) ||
      (rc = get_int(path, cfg, "hidden_size", 1, 0, 1, CFG_MAX_HIDDEN, &b->hidden)) ||
      (rc = get_int(path, cfg, "num_hidden_layers", 1, 0, 1, CFG_MAX_LAYERS, &b->layers)) ||
      (rc = get_int(path, cfg, "num_attention_heads", 1, 0, 1, CFG_MAX_HIDDEN, &b->heads)) ||
      (rc = get_int(path, cfg, "intermediate_size", 1, 0, 1, CFG_MAX_INTER, &b->intermediate)) ||
      (rc = get_int(path, cfg, "max_position_embeddings", 1, 0, 1, CFG_MAX_POS,
                    &b->max_position)) ||
      /* HF BertConfig defaults for the rest. */
      (rc = get_int(path, cfg, "type_vocab_size", 0, 2, 1, 1024, &b->type_vocab)))
    return rc;
  if (b->hidden % b->heads != 0)
    return jp_err(JP_EINVAL, "%s: hidden_size %d is not a multiple of num_attention_heads %d",
                  path, b->hidden, b->heads);
  double eps;
  if (jp_json_get_real(cfg, "layer_norm_eps", 1e-12, &eps))
    return jp_err(JP_EINVAL, "%s: \"layer_norm_eps\" must be a number", path);
  if (!(eps > 0 && eps < 1))
    return jp_err(JP_EINVAL, "%s: layer_norm_eps %g must be in (0, 1)", path, eps);
  b->layer_norm_eps = (float)eps;

  /* HF maps "gelu" to the exact erf GELU; other activations ("gelu_new" is
   * the tanh approximation) would need other kernels. */
  rc = get_str(path, cfg, "hidden_act", "gelu", &s);
  if (rc) return rc;
  if (strcmp(s, "gelu") != 0)
    return jp_err(JP_EUNSUPPORTED, "%s: hidden_act \"%s\" is not supported (only \"gelu\")",
                  path, s);
  rc = get_str(path, cfg, "position_embedding_type", "absolute", &s);
  if (rc) return rc;
  if (strcmp(s, "absolute") != 0)
    return jp_err(JP_EUNSUPPORTED, "%s: position_embedding_type \"%s\" is not supported (only "
                  "\"absolute\")", path, s);
  int dec = 0;
  if (jp_json_get_bool(cfg, "is_decoder", 0, &dec) == 0 && dec)
    return jp_err(JP_EUNSUPPORTED, "%s: is_decoder BERT models are not supported", path);
  return 0;
}

/* A marker may be given as a vocabulary string ("[unused0]", ColBERT's
 * form) or, in some exports, as an integer id. */
static int get_marker(const char *path, const json_t *o, const char *key, const char *def,
                      const char **str, int32_t *num)
{
  const json_t *j = json_object_get(o, key);
  *str = NULL;
  *num = -1;
  if (!j || json_is_null(j)) { *str = def; return 0; }
  if (json_is_string(j)) { *str = json_string_value(j); return 0; }
  if (json_is_integer(j) && json_integer_value(j) >= 0 && json_integer_value(j) <= INT32_MAX) {
    *num = (int32_t)json_integer_value(j);
    return 0;
  }
  return jp_err(JP_EINVAL, "%s: \"%s\" must be a token string or a token id", path, key);
}

int model__parse_colbert(const char *path, const json_t *meta, struct jp_colbert_cfg *c,
                         const char **q_marker, const char **d_marker, int32_t *q_marker_num,
                         int32_t *d_marker_num)
{
  int rc;
  if (!json_is_object(meta)) return jp_err(JP_EINVAL, "%s: not a JSON object", path);
  /* Some exports nest the settings under "config" (plaid.md §1.7). */
  const json_t *inner = json_object_get(meta, "config");
  if (json_is_object(inner)) meta = inner;

  /* Absent keys take ColBERT's own defaults (settings.py, plaid.md §1.1),
   * which is what ColBERT itself does with such a file. */
  if ((rc = get_int(path, meta, "query_maxlen", 0, 32, 3, CFG_MAX_POS, &c->query_maxlen)) ||
      (rc = get_int(path, meta, "doc_maxlen", 0, 220, 3, CFG_MAX_POS, &c->doc_maxlen)) ||
      (rc = get_int(path, meta, "dim", 0, 0, 1, CFG_MAX_DIM, &c->dim)))
    return rc;
  if (jp_json_get_bool(meta, "attend_to_mask_tokens", 0, &c->attend_to_mask_tokens))
    return jp_err(JP_EINVAL, "%s: \"attend_to_mask_tokens\" must be true or false", path);
  if (jp_json_get_bool(meta, "mask_punctuation", 1, &c->mask_punctuation))
    return jp_err(JP_EINVAL, "%s: \"mask_punctuation\" must be true or false", path);
  const char *sim;
  rc = get_str(path, meta, "similarity", "cosine", &sim);
  if (rc) return rc;
  if (strcmp(sim, "cosine") != 0)
    return jp_err(JP_EUNSUPPORTED, "%s: similarity \"%s\" is not supported (only \"cosine\")",
                  path, sim);
  if ((rc = get_marker(path, meta, "query_token_id", "[unused0]", q_marker, q_marker_num)) ||
      (rc = get_marker(path, meta, "doc_token_id", "[unused1]", d_marker, d_marker_num)))
    return rc;
  return 0;
}

int model__check_tokenizer_config(const char *path, const json_t *tc)
{
  const char *s;
  int lower = 0, rc;
  if (!json_is_object(tc)) return jp_err(JP_EINVAL, "%s: not a JSON object", path);
  if (jp_json_get_bool(tc, "do_lower_case", 0, &lower))
    return jp_err(JP_EINVAL, "%s: \"do_lower_case\" must be true or false", path);
  if (lower)
    return jp_err(JP_EUNSUPPORTED, "%s: do_lower_case is true; the tokenizer implements the "
                  "cased BertJapaneseTokenizer only", path);
  rc = get_str(path, tc, "word_tokenizer_type", "mecab", &s);
  if (rc) return rc;
  if (strcmp(s, "mecab") != 0)
    return jp_err(JP_EUNSUPPORTED, "%s: word_tokenizer_type \"%s\" is not supported (only "
                  "\"mecab\")", path, s);
  rc = get_str(path, tc, "subword_tokenizer_type", "wordpiece", &s);
  if (rc) return rc;
  if (strcmp(s, "wordpiece") != 0)
    return jp_err(JP_EUNSUPPORTED, "%s: subword_tokenizer_type \"%s\" is not supported (only "
                  "\"wordpiece\")", path, s);
  return 0;
}
