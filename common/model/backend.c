/* backend.c: choosing the forward implementation behind an encoder.
 *
 * The static lexical model's backend lives here: a row lookup in the
 * [vocab, dim] table, L2-normalised (zero rows stay zero), no transformer.
 * BERT runs on the CPU (bert_cpu_create, bert_cpu.c) or on a GPU
 * (bert_cuda_create, cuda/). The build tells this file whether the CUDA
 * backend is linked (common/model/CMakeLists.txt defines
 * JP_MODEL_HAVE_BERT_CUDA); model__backend_create() is the only place that
 * decides.
 *
 * Thread-safety: a backend belongs to one encoder (one thread). Allocation:
 * at create only. */
#include "model/model_int.h"

#include "jp_config.h"
#include "model/bert_cuda.h"
#include "util/err.h"
#include "util/mem.h"

#include <math.h>
#include <string.h>

#ifndef JP_MODEL_HAVE_BERT_CUDA
#define JP_MODEL_HAVE_BERT_CUDA 0
#endif

/* ---- static lookup ------------------------------------------------------------ */

struct static_backend {
  struct bert_backend be;
  const float *emb;
  int vocab, dim;
};

static int static_forward(struct bert_backend *be, const int32_t *ids, const uint8_t *attn,
                          int B, int L, float *out)
{
  struct static_backend *s = (struct static_backend *)be;
  (void)attn;   /* a lexical model has no context: masks only matter to the caller */
  if (B <= 0 || L <= 0 || (size_t)B * L > (size_t)be->max_tokens)
    return jp_err(JP_EINVAL, "static backend: batch %dx%d over %d tokens", B, L, be->max_tokens);
  for (size_t i = 0; i < (size_t)B * L; i++) {
    float *y = out + i * s->dim;
    if (ids[i] < 0 || ids[i] >= s->vocab)
      return jp_err(JP_EINVAL, "token id %d outside the vocabulary (%d)", ids[i], s->vocab);
    const float *x = s->emb + (size_t)ids[i] * s->dim;
    double n2 = 0;
    for (int d = 0; d < s->dim; d++) n2 += (double)x[d] * x[d];
    /* The table's rows are unit or zero already; normalising anyway keeps
     * a hand-made table's output on the unit sphere like BERT's. */
    double inv = n2 > 0 ? 1.0 / sqrt(n2) : 0.0;
    for (int d = 0; d < s->dim; d++) y[d] = (float)(x[d] * inv);
  }
  return 0;
}

static void plain_destroy(struct bert_backend *be) { jp_free(be); }

static int static_create(const jp_model *m, int max_tokens, struct bert_backend **out)
{
  struct static_backend *s = jp_calloc(1, sizeof *s);
  if (!s) return JP_ENOMEM;
  s->be.name = "static";
  s->be.max_tokens = max_tokens;
  s->be.forward = static_forward;
  s->be.destroy = plain_destroy;
  s->emb = m->static_emb;
  s->vocab = m->info.bert.vocab_size;
  s->dim = m->info.colbert.dim;
  *out = &s->be;
  return 0;
}

/* ---- selection ---------------------------------------------------------------- */

int model__backend_prepare(jp_model *m)
{
  if (m->info.kind != JP_MODEL_BERT) return 0;
  if (m->opts.device == JP_DEVICE_CUDA) {
    if (!JP_HAVE_CUDA || !JP_MODEL_HAVE_BERT_CUDA)
      return jp_err(JP_ENODEVICE, "this build has no CUDA encoder backend (build with a CUDA "
                    "toolkit and JP_CUDA=ON)");
    return 0;
  }
  return jp_pool_create(m->opts.n_threads, &m->pool);
}

int model__backend_create(const jp_model *m, int max_tokens, struct bert_backend **out)
{
  *out = NULL;
  if (m->info.kind == JP_MODEL_STATIC) return static_create(m, max_tokens, out);
  if (m->opts.device == JP_DEVICE_CUDA) {
#if JP_HAVE_CUDA && JP_MODEL_HAVE_BERT_CUDA
    return bert_cuda_create(&m->w, max_tokens, m->opts.gpu, out);
#else
    return jp_err(JP_ENODEVICE, "this build has no CUDA encoder backend");
#endif
  }
  return bert_cpu_create(&m->w, max_tokens, m->pool, out);
}

int jp_model_gpu_count(void)
{
#if JP_HAVE_CUDA && JP_MODEL_HAVE_BERT_CUDA
  return bert_cuda_device_count();
#else
  return 0;   /* no CUDA backend in this build: no GPU can encode */
#endif
}
