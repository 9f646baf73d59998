/* model.h: a ColBERT checkpoint directory loaded and ready to encode.
 *
 * A checkpoint is a Hugging Face layout directory (DESIGN §6):
 *   config.json            BERT hyper-parameters (or the static model's)
 *   model.safetensors      bert.* (or unprefixed) tensors + linear.weight
 *   vocab.txt              WordPiece vocabulary
 *   tokenizer_config.json  (read for do_lower_case / word tokenizer checks)
 *   artifact.metadata      ColBERT settings: query/doc marker tokens,
 *                          query_maxlen, doc_maxlen, dim, attend_to_mask_tokens,
 *                          mask_punctuation (an optional top-level "config"
 *                          object is unwrapped; unknown keys ignored)
 * Marker ids and lengths come from these files, never from constants.
 *
 * Two kinds: JP_MODEL_BERT (a real or `random` BERT checkpoint) and
 * JP_MODEL_STATIC (config.json "model_type": "japlaid-static": one unit
 * vector per vocabulary id, the special and marker tokens map to zero).
 *
 * The model identity is a hash over config.json, vocab.txt,
 * artifact.metadata, the projection (or static table) bytes and the
 * tokenizer set-up (MeCab dictionary, lite-compat): two set-ups that encode
 * differently never share it. Index partitions store it and refuse to open
 * with another model; shards refuse a coordinator with another. The
 * checkpoint identity is the same hash without the tokenizer part (it names
 * the files alone).
 *
 * Thread-safety: a jp_model is immutable after open and shared by all
 * threads; each encoding thread creates its own jp_encoder. */
#ifndef JP_MODEL_H
#define JP_MODEL_H
#include <stddef.h>
#include <stdint.h>

#include "model/bert.h"
#include "text/tokenizer.h"

enum jp_model_kind { JP_MODEL_BERT = 0, JP_MODEL_STATIC = 1 };
enum jp_device { JP_DEVICE_CPU = 0, JP_DEVICE_CUDA = 1 };

struct jp_colbert_cfg {
  int dim;                       /* embedding width (128) */
  int query_maxlen;              /* 32 */
  int doc_maxlen;                /* 256 for JaColBERTv2 */
  int attend_to_mask_tokens;     /* 0 */
  int mask_punctuation;          /* 1 */
  int32_t q_marker_id;           /* resolved from query_token_id, e.g. "[unused0]" -> 5 */
  int32_t d_marker_id;           /* resolved from doc_token_id, "[unused1]" -> 6 */
};

struct jp_model_info {
  enum jp_model_kind kind;
  char name[128];                /* _name_or_path / model_name, else the directory name */
  char identity[33];             /* see above; 32 hex chars */
  char checkpoint_identity[33];  /* the checkpoint files alone */
  char dtype[8];                 /* "F32", "F16", "BF16" as stored */
  struct bert_config bert;       /* zeroed for the static model except vocab_size/out_dim */
  struct jp_colbert_cfg colbert;
};

struct jp_model_opts {
  const char *mecab_dicdir;      /* NULL: see jp_tok_opts */
  int lite_compat;               /* -1 auto */
  enum jp_device device;         /* CPU, or CUDA (JP_ENODEVICE if unavailable) */
  int gpu;                       /* CUDA device ordinal */
  int n_threads;                 /* CPU threads; <= 0 = all cores */
  int max_batch_tokens;          /* tokens per forward call; 0 = default (4096) */
};

void jp_model_opts_default(struct jp_model_opts *o);

/* GPUs the CUDA encoder backend can use in this process (0 when the build
 * has no CUDA backend, or there is no driver or device). */
int jp_model_gpu_count(void);

typedef struct jp_model jp_model;

int  jp_model_open(const char *dir, const struct jp_model_opts *opts, jp_model **out);
void jp_model_close(jp_model *m);                            /* NULL is a no-op */
const struct jp_model_info *jp_model_get_info(const jp_model *m);
const jp_tok *jp_model_tokenizer(const jp_model *m);

/* ---- encoding ------------------------------------------------------------ */

typedef struct jp_encoder jp_encoder;

/* Per-thread encoding state: tokenizer ctx, backend workspace, batch
 * buffers. Sized once at creation; encoding then does not allocate. */
int  jp_encoder_create(jp_model *m, jp_encoder **out);
void jp_encoder_destroy(jp_encoder *e);

/* Queries -> out[n][query_maxlen][dim]: all query_maxlen vectors (query
 * augmentation keeps the [MASK] outputs), L2-normalised. */
int jp_encode_queries(jp_encoder *e, const char *const *texts, const size_t *lens, int n,
                      float *out);

/* Documents -> the kept vectors of each (punctuation and padding dropped),
 * concatenated in input order: doclens[i] vectors for document i, written to
 * out (capacity cap_vecs vectors; n * doc_maxlen always suffices).
 * Documents are length-sorted and batched internally; order is preserved. */
int jp_encode_docs(jp_encoder *e, const char *const *texts, const size_t *lens, int n,
                   float *out, size_t cap_vecs, int32_t *doclens);

/* Already-tokenised sequences (jp_tok_query / jp_tok_doc output). For
 * queries `mask` is the attention mask and every position is output; for
 * documents `mask` is the keep mask, every real token is attended and only
 * kept positions are output. */
struct jp_token_seq {
  const int32_t *ids;
  const uint8_t *mask;
  int len;
};
int jp_encode_seqs(jp_encoder *e, int is_query, const struct jp_token_seq *seqs, int n,
                   float *out, size_t cap_vecs, int32_t *out_lens);

/* The tokenizer ctx of this encoder (for callers that tokenise first). */
jp_tok_ctx *jp_encoder_tok(jp_encoder *e);

#endif /* JP_MODEL_H */
