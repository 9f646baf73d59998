/* checkpoint.h: writing generated checkpoints in the Hugging Face layout
 * that jp_model_open() reads (DESIGN §6). Weights cannot be downloaded here,
 * so the loader is exercised on these; the files are exactly what a real
 * JaColBERTv2 directory holds, so the same code loads both.
 *
 * `random`: a BERT + ColBERT head of any size with seeded weights
 *   (normal(0, 0.02) matrices, LayerNorm gamma 1 beta 0 perturbed slightly,
 *   small random biases) -- for parity tests and full-size speed benches.
 * `static`: a lexical model: one seeded unit vector per vocabulary id, and
 *   the zero vector for [PAD] [MASK] [CLS] [SEP] and the two marker tokens
 *   (they carry no lexical meaning; the query's [MASK] padding would
 *   otherwise add the same noise to every score). [UNK] keeps a vector.
 *
 * Both copy vocab.txt byte for byte and write config.json,
 * model.safetensors, tokenizer_config.json and artifact.metadata
 * (JaColBERTv2's ColBERT settings). The output directory is created; an
 * existing checkpoint in it is replaced atomically file by file. */
#ifndef JP_CHECKPOINT_H
#define JP_CHECKPOINT_H
#include <stdint.h>

#include "model/bert.h"

struct jp_random_spec {
  int layers;          /* 12 */
  int hidden;          /* 768 */
  int heads;           /* 12 */
  int intermediate;    /* 3072 */
  int max_position;    /* 512 */
  int dim;             /* 128 */
  uint64_t seed;
  const char *dtype;   /* "F32" (default), "F16" or "BF16" */
  int bert_prefix;     /* 1: tensor names "bert.*" (HF_ColBERT); 0: bare BertModel names */
};

void jp_random_spec_default(struct jp_random_spec *s);

int jp_checkpoint_write_random(const char *out_dir, const char *vocab_path,
                               const struct jp_random_spec *spec);
int jp_checkpoint_write_static(const char *out_dir, const char *vocab_path, int dim,
                               uint64_t seed);

#endif /* JP_CHECKPOINT_H */
