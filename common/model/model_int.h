/* model_int.h: what model.c, config.c, backend.c and encoder.c share inside
 * common/model (not part of the public API; see model.h).
 *
 * Thread-safety: a jp_model is immutable once jp_model_open() returns.
 * Allocation: everything hanging off a jp_model is freed by jp_model_close. */
#ifndef JP_MODEL_INT_H
#define JP_MODEL_INT_H
#include <jansson.h>

#include "model/bert.h"
#include "model/model.h"
#include "model/safetensors.h"
#include "text/tokenizer.h"
#include "util/pool.h"

/* The default token budget of one forward call (model.h): at doc_maxlen 256
 * that is 16 full-length documents, or 128 queries, per call -- enough rows
 * for BLAS to run at full speed, small enough to keep the activations of a
 * bert-base forward (about 4096 x 3072 floats for the intermediate layer)
 * around 50 MB. */
#define JP_MODEL_DEFAULT_BATCH_TOKENS 4096

/* Longest sequence a static model accepts (it has no position table): the
 * bound generated BERT checkpoints get too. */
#define JP_MODEL_STATIC_MAX_LEN 8192

struct jp_model {
  struct jp_model_info info;
  struct jp_model_opts opts;
  struct bert_weights w;             /* JP_MODEL_BERT: views into st or owned */
  const float *static_emb;           /* JP_MODEL_STATIC: [vocab_size, dim] */
  int max_len;                       /* longest sequence an encoder is given */
  int64_t n_params;                  /* parameters actually used for encoding */
  st_file *st;                       /* kept only while F32 views point into it */
  float *owned;                      /* converted (F16/BF16/unaligned) tensors, one block */
  jp_tok *tok;
  jp_pool *pool;                     /* CPU BERT backend threads, shared by encoders */
};

/* config.json -> kind, name and BERT sizes (or the static model's). The
 * messages name `path` and the offending key. */
int model__parse_config(const char *path, const json_t *cfg, struct jp_model_info *info);

/* artifact.metadata -> ColBERT settings. Marker token strings are returned
 * (owned by `meta`) for the caller to resolve through the vocabulary;
 * colbert->dim is 0 when the file does not say. */
int model__parse_colbert(const char *path, const json_t *meta, struct jp_colbert_cfg *colbert,
                         const char **q_marker, const char **d_marker, int32_t *q_marker_num,
                         int32_t *d_marker_num);

/* tokenizer_config.json checks: refuses settings our tokenizer does not
 * implement (lower-casing, non-MeCab word splitting, non-WordPiece). */
int model__check_tokenizer_config(const char *path, const json_t *tc);

/* Called once by jp_model_open: fails early when the requested device
 * cannot exist in this build, and creates what the chosen CPU backend
 * shares between encoders (the thread pool). */
int model__backend_prepare(jp_model *m);

/* The one place that chooses the forward implementation for an encoder:
 * static lookup, CUDA, or the CPU backend. */
int model__backend_create(const jp_model *m, int max_tokens, struct bert_backend **out);

#endif /* JP_MODEL_INT_H */
