/* cmd_model.c: `japlaid model random|static|info` -- write generated
 * checkpoints (checkpoint.h) and show what a checkpoint directory loads as
 * (model.h). */
#include "cli.h"
#include "model/checkpoint.h"
#include "model/model.h"
#include "util/err.h"
#include "util/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const usage_text =
  "usage: japlaid model random --out DIR --vocab-file VOCAB [options]\n"
  "       japlaid model static --out DIR --vocab-file VOCAB [--dim N] [--seed S]\n"
  "       japlaid model info DIR [--dicdir D] [--no-lite-compat] [--json]\n"
  "\n"
  "random: a BERT + ColBERT checkpoint with seeded random weights, in the Hugging\n"
  "  Face layout JaColBERTv2 uses (config.json, model.safetensors, vocab.txt,\n"
  "  tokenizer_config.json, artifact.metadata). The same options always give the\n"
  "  same bytes. Options (defaults = bert-base-japanese-v3 + a 128-wide head):\n"
  "    --layers N (12)  --hidden N (768)  --heads N (12)  --intermediate N (3072)\n"
  "    --max-position N (512)  --dim N (128)  --seed S (1)\n"
  "    --dtype F32|F16|BF16 (F32)  --no-bert-prefix (tensor names without 'bert.')\n"
  "static: the lexical model: one seeded unit vector per vocabulary id; [PAD]\n"
  "  [MASK] [CLS] [SEP] and the two marker tokens map to zero. --dim (128), --seed (1).\n"
  "info: load DIR and print its kind, name, identity, dtype, BERT config, ColBERT\n"
  "  settings, the MeCab dictionary and lite-compat mode, and the parameter count\n"
  "  (--json: one JSON object).\n";

static int need_value(int i, int argc, char **argv)
{
  if (i + 1 >= argc) {
    cli_usage_error("model", "%s needs a value", argv[i]);
    return 0;
  }
  return 1;
}

static int parse_long(const char *opt, const char *s, long lo, long hi, int *out)
{
  long v;
  if (cli_parse_int("model", opt, s, lo, hi, &v) != 0) return CLI_USAGE;
  *out = (int)v;
  return 0;
}

static int cmd_random_or_static(int argc, char **argv, int is_static)
{
  struct jp_random_spec spec;
  const char *out = NULL, *vocab = NULL;
  long seed = 1;
  int dim = 128, rc;

  jp_random_spec_default(&spec);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int *target = NULL;
    long lo = 1, hi = 1 << 20;
    if (!strcmp(a, "--no-bert-prefix") && !is_static) {
      spec.bert_prefix = 0;
      continue;
    }
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    }
    if (!need_value(i, argc, argv)) return CLI_USAGE;
    const char *v = argv[++i];
    if (!strcmp(a, "--out")) out = v;
    else if (!strcmp(a, "--vocab-file")) vocab = v;
    else if (!strcmp(a, "--dim")) target = &dim;
    else if (!strcmp(a, "--seed")) {
      if (cli_parse_int("model", a, v, 0, 0x7fffffffffffffffL, &seed)) return CLI_USAGE;
    } else if (is_static) {
      return cli_usage_error("model", "unknown option %s for 'model static'", a);
    } else if (!strcmp(a, "--layers")) target = &spec.layers;
    else if (!strcmp(a, "--hidden")) target = &spec.hidden;
    else if (!strcmp(a, "--heads")) target = &spec.heads;
    else if (!strcmp(a, "--intermediate")) target = &spec.intermediate;
    else if (!strcmp(a, "--max-position")) target = &spec.max_position;
    else if (!strcmp(a, "--dtype")) {
      if (strcmp(v, "F32") && strcmp(v, "F16") && strcmp(v, "BF16"))
        return cli_usage_error("model", "--dtype must be F32, F16 or BF16, not '%s'", v);
      spec.dtype = v;
    } else return cli_usage_error("model", "unknown option %s", a);
    if (target && parse_long(a, v, lo, hi, target)) return CLI_USAGE;
  }
  if (!out || !vocab) return cli_usage_error("model", "--out and --vocab-file are required");
  spec.dim = dim;
  spec.seed = (uint64_t)seed;
  rc = is_static ? jp_checkpoint_write_static(out, vocab, dim, (uint64_t)seed)
                 : jp_checkpoint_write_random(out, vocab, &spec);
  if (rc) return cli_fail("model", rc);
  return CLI_OK;
}

/* Parameters the encoder uses (pooler excluded): embeddings, layers, head. */
static long long param_count(const struct jp_model_info *in)
{
  const struct bert_config *c = &in->bert;
  long long H = c->hidden, I = c->intermediate;
  if (in->kind == JP_MODEL_STATIC) return (long long)c->vocab_size * in->colbert.dim;
  long long emb = (long long)(c->vocab_size + c->max_position + c->type_vocab) * H + 2 * H;
  long long layer = 4 * (H * H + H) + 2 * (2 * H) + I * H + I + H * I + H;
  return emb + c->layers * layer + (long long)in->colbert.dim * H;
}

static const char *dict_name(enum jp_dict_kind k)
{
  return k == JP_DICT_UNIDIC ? "unidic" : k == JP_DICT_IPADIC ? "ipadic" : "other";
}

static int cmd_info(int argc, char **argv)
{
  struct jp_model_opts o;
  const char *dir = NULL;
  int as_json = 0, rc;
  jp_model *m;

  jp_model_opts_default(&o);
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      fputs(usage_text, stdout);
      return CLI_OK;
    }
    if (!strcmp(a, "--json")) as_json = 1;
    else if (!strcmp(a, "--no-lite-compat")) o.lite_compat = 0;
    else if (!strcmp(a, "--dicdir")) {
      if (!need_value(i, argc, argv)) return CLI_USAGE;
      o.mecab_dicdir = argv[++i];
    } else if (a[0] == '-') return cli_usage_error("model", "unknown option %s", a);
    else if (!dir) dir = a;
    else return cli_usage_error("model", "more than one directory given");
  }
  if (!dir) return cli_usage_error("model", "'model info' needs a checkpoint directory");
  o.n_threads = 1;   /* nothing is encoded */
  rc = jp_model_open(dir, &o, &m);
  if (rc) return cli_fail("model", rc);

  const struct jp_model_info *in = jp_model_get_info(m);
  const jp_tok *t = jp_model_tokenizer(m);
  const jp_vocab *v = jp_tok_vocab(t);
  const struct bert_config *c = &in->bert;
  const struct jp_colbert_cfg *cb = &in->colbert;
  const char *qtok = jp_vocab_token(v, cb->q_marker_id), *dtok = jp_vocab_token(v, cb->d_marker_id);
  if (as_json) {
    /* The float eps printed as written (1e-12), not as its double widening. */
    char eb[32];
    snprintf(eb, sizeof eb, "%g", (double)c->layer_norm_eps);
    double eps = strtod(eb, NULL);
    json_t *j = json_pack(
      "{s:s, s:s, s:s, s:s, s:s, s:{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f}, "
      "s:{s:i, s:i, s:i, s:s, s:i, s:s, s:i, s:b, s:b}, s:{s:s, s:s, s:b}, s:I}",
      "kind", in->kind == JP_MODEL_BERT ? "bert" : "static", "name", in->name, "identity",
      in->identity, "checkpoint_identity", in->checkpoint_identity, "dtype", in->dtype,
      "config", "vocab_size", c->vocab_size, "hidden", c->hidden, "layers", c->layers, "heads",
      c->heads, "intermediate", c->intermediate, "max_position", c->max_position, "type_vocab",
      c->type_vocab, "layer_norm_eps", eps,
      "colbert", "dim", cb->dim, "query_maxlen", cb->query_maxlen, "doc_maxlen", cb->doc_maxlen,
      "query_token", qtok ? qtok : "?", "query_token_id", cb->q_marker_id, "doc_token",
      dtok ? dtok : "?", "doc_token_id", cb->d_marker_id, "attend_to_mask_tokens",
      cb->attend_to_mask_tokens, "mask_punctuation", cb->mask_punctuation,
      "tokenizer", "dicdir", jp_tok_dicdir(t), "dictionary", dict_name(jp_tok_dict_kind(t)),
      "lite_compat", jp_tok_lite_compat(t),
      "parameters", (json_int_t)param_count(in));
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!s) {
      jp_model_close(m);
      return cli_fail("model", JP_ENOMEM);
    }
    printf("%s\n", s);
    free(s);
  } else {
    printf("kind:        %s\n", in->kind == JP_MODEL_BERT ? "bert" : "static");
    printf("name:        %s\n", in->name);
    printf("identity:    %s (checkpoint %s)\n", in->identity, in->checkpoint_identity);
    printf("dtype:       %s\n", in->dtype);
    if (in->kind == JP_MODEL_BERT)
      printf("config:      vocab %d, hidden %d, layers %d, heads %d, intermediate %d, "
             "max_position %d, type_vocab %d, layer_norm_eps %g\n",
             c->vocab_size, c->hidden, c->layers, c->heads, c->intermediate, c->max_position,
             c->type_vocab, (double)c->layer_norm_eps);
    else
      printf("config:      vocab %d (static lookup table, no transformer)\n", c->vocab_size);
    printf("colbert:     dim %d, query_maxlen %d, doc_maxlen %d, query marker %s (%d), doc "
           "marker %s (%d), attend_to_mask_tokens %s, mask_punctuation %s\n",
           cb->dim, cb->query_maxlen, cb->doc_maxlen, qtok ? qtok : "?", cb->q_marker_id,
           dtok ? dtok : "?", cb->d_marker_id, cb->attend_to_mask_tokens ? "true" : "false",
           cb->mask_punctuation ? "true" : "false");
    printf("tokenizer:   MeCab dictionary %s (%s), lite-compat %s\n", jp_tok_dicdir(t),
           dict_name(jp_tok_dict_kind(t)), jp_tok_lite_compat(t) ? "on" : "off");
    printf("parameters:  %lld\n", param_count(in));
  }
  jp_model_close(m);
  return CLI_OK;
}

int cmd_model(int argc, char **argv)
{
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fputs(usage_text, argc < 2 ? stderr : stdout);
    return argc < 2 ? CLI_USAGE : CLI_OK;
  }
  if (!strcmp(argv[1], "random")) return cmd_random_or_static(argc - 1, argv + 1, 0);
  if (!strcmp(argv[1], "static")) return cmd_random_or_static(argc - 1, argv + 1, 1);
  if (!strcmp(argv[1], "info")) return cmd_info(argc - 1, argv + 1);
  return cli_usage_error("model", "unknown subcommand '%s' (random, static, info)", argv[1]);
}
