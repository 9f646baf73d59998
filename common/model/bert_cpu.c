/* bert_cpu.c: the CPU backend of bert.h: BERT encoder + ColBERT projection +
 * L2 norm for a batch [B, L], on OpenBLAS sgemm and the kern.h kernels.
 *
 * Work split (2-core Zen 3 measurements in bench/encoder/README.md):
 * - Linear layers over more than SMALL_M rows are OpenBLAS sgemm calls over
 *   all B*L rows (or an FFN row chunk). Weights are [out, in] row-major, so
 *   C = X W^T is sgemm(NoTrans, Trans) reading the mmapped weights in place.
 *   Who splits a GEMM across cores follows OpenBLAS's thread count, which
 *   is process-wide and not ours to change: with one OpenBLAS thread
 *   (OPENBLAS_NUM_THREADS=1, the setting for servers that parallelise above
 *   BLAS) the weight rows are split over the pool, one single-threaded call
 *   per worker; otherwise one call from this thread and OpenBLAS's threads
 *   split it. On a busy machine the first used less CPU for the same work
 *   (OpenBLAS's idle threads spin in sched_yield between and inside calls);
 *   on an idle one a lone 4096x3072x768 GEMM ran ~9% faster the second way.
 * - Up to SMALL_M rows (one query, a few short ones) the weights cannot be
 *   reused enough to pay for OpenBLAS's packing, and its 2-thread split of
 *   such shapes wastes time (a 1 x 32 forward took about twice the CPU time
 *   of the alternative): there kern gemm_nt runs on the pool, each item a
 *   block of weight rows, so every weight byte is read once, in place.
 * - Everything else runs on the pool, one row block or one (sequence, head)
 *   per item, with our own kernels: the attention products never call BLAS,
 *   so pool workers never fight OpenBLAS threads or its global thread count.
 *
 * Layer data flow: x [max_tokens, hidden] holds the hidden state; q, k, v
 * hold one attention group (ATT_GROUP_TOKENS, whole sequences). Per group:
 *   q, k, v = x_g Wq^T, x_g Wk^T, x_g Wv^T  (no bias here, see attention)
 *   attention per (b, h) -> context written over q's (b, h) slice
 *   x_g += ctx Wao^T (sgemm beta = 1: the residual add costs no pass and
 *     OpenBLAS skips zeroing C); x_g = LN(x_g + b_ao)  (one fused row pass)
 * then over all rows:
 *   for each chunk of FFN_ROWS rows: f = GELU(x_c Wi^T + b_i) (fused bias +
 *     GELU pass), x_c += f Wo^T, x_c = LN(x_c + b_o)
 * The FFN intermediate therefore needs only FFN_ROWS x intermediate floats,
 * not max_tokens x intermediate (4096 x 3072 would be 48 MB).
 *
 * Attention for one (b, h), head width hd, scale s = 1/sqrt(hd):
 *   Kt = (K_bh + bk)^T packed [hd, Lk]; then per block of ATT_ROWS query
 *   rows: Qs = (Q_bh + bq) s packed; S = Qs Kt; masked softmax per row;
 *   ctx = S V_bh + bv, with V read in place (stride hidden). The value bias
 *   can be added after the product because every softmax row sums to 1.
 *   Lk = one past the last attended key: later keys are masked anyway, so
 *   query [MASK] padding and batch padding cost no attention work. A
 *   sequence with no attended key keeps all L keys and gets uniform weights
 *   (HF's behaviour, kern.h).
 *
 * Thread-safety: one backend is used by one thread at a time (each encoder
 * thread creates its own); several backends may share the weights and a
 * pool. Allocation: everything in bert_cpu_create; forward() allocates
 * nothing. */
#include "model/bert.h"
#include "model/kern.h"

#include "util/err.h"
#include "util/mem.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Rows per FFN chunk: GEMMs of 512 x 3072 x 768 run within a few percent
 * of the 4096-row speed here, and the chunk buffer stays 6 MB. */
#define FFN_ROWS 512
/* Query rows per attention block: a multiple of the 6-row gemm tile, and
 * small enough that the score block (ATT_ROWS x 512 floats = 96 KB) stays in
 * L2 next to the packed keys (hd x 512 floats). */
#define ATT_ROWS 48
/* Up to this many rows a linear layer is our gemm_nt split over the pool
 * by weight rows (each weight byte read once, no packing); above it,
 * OpenBLAS. Measured crossover: see bench/encoder/README.md. */
#define SMALL_M 64
/* Weight rows per gemm_nt pool item: a multiple of the kernel's 3-row tile;
 * 768 outputs make 16 items, enough to balance 2-4 workers. */
#define NT_ROWS 48
/* Tokens per attention group: q, k and v exist only for a group of whole
 * sequences of at most this many tokens (or one sequence, if longer), so
 * they take 3 x 1024 x hidden floats (9 MiB at bert-base) whatever
 * max_tokens is; only x spans the whole batch. 1024 rows keep the Q/K/V/O
 * GEMMs near full speed (about 5% below 4096 rows on these shapes, and they
 * are a third of the FLOPs) while a 4096-token workspace shrinks from 54 to
 * 27 MiB -- which is what keeps the encoder's peak RSS under 1.2x the
 * weights (bench/encoder/README.md). */
#define ATT_GROUP_TOKENS 1024
/* Rows per pool item in row loops: enough work per item to amortise the
 * atomic hand-out, small enough to balance 2+ workers on short batches. */
#define ROW_BLOCK 16

struct bert_cpu {
  struct bert_backend be;          /* first: the public face */
  const struct bert_weights *w;
  jp_pool *pool;
  const struct kern_ops *k;
  int nworkers;
  int ffn_rows;
  int grp_rows;                    /* rows of q, kb, v: min(max_tokens, group size) */
  float *x;                        /* [max_tokens, hidden] hidden state */
  float *q, *kb, *v;               /* [grp_rows, hidden] one attention group */
  float *ffn;                      /* [ffn_rows, intermediate] */
  float *att;                      /* per worker: Kt, Qs, S (att_stride floats) */
  size_t att_stride;
  size_t att_kt;                   /* floats of Kt in it: hd x max_position (padded to 8) */
  int *klen;                       /* [max_tokens]: attention key count per sequence */
  uint8_t *kfull;                  /* [max_tokens]: keys [0, klen) all attended */
};

/* ---- linear layers ------------------------------------------------------------- */

/* Up to three products sharing the input X (Q, K and V) in one pool loop,
 * so a short batch pays one hand-off per layer for them, not three. */
struct nt_job {
  const struct kern_ops *k;
  const float *X;
  int M, K, N, nmat, blocks;       /* blocks of NT_ROWS weight rows per matrix */
  int accumulate;
  const float *W[3];
  float *C[3];
};

/* One OpenBLAS call per item: matrix item / parts, weight rows of part
 * item % parts (used when OpenBLAS itself runs single-threaded). */
static void blas_item(void *ctx, int item, int worker)
{
  struct nt_job *j = ctx;
  int m = item / j->blocks, part = item % j->blocks;
  int n0 = (int)((int64_t)j->N * part / j->blocks), n1 = (int)((int64_t)j->N * (part + 1) / j->blocks);
  (void)worker;
  if (n1 > n0)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, j->M, n1 - n0, j->K, 1.0f, j->X, j->K,
                j->W[m] + (size_t)n0 * j->K, j->K, j->accumulate ? 1.0f : 0.0f, j->C[m] + n0,
                j->N);
}

static void nt_item(void *ctx, int item, int worker)
{
  struct nt_job *j = ctx;
  int m = item / j->blocks, n0 = (item % j->blocks) * NT_ROWS;
  int nb = j->N - n0 < NT_ROWS ? j->N - n0 : NT_ROWS;
  (void)worker;
  j->k->gemm_nt(j->M, nb, j->K, j->X, j->K, j->W[m] + (size_t)n0 * j->K, j->K, j->C[m] + n0,
                j->N, j->accumulate);
}

/* C_i[M, N] = X[M, K] W_i^T for i < nmat, W_i [N, K] row-major (PyTorch
 * Linear); with accumulate, C_i += that (sgemm beta = 1), which is how the
 * residual branches add into x without a separate output buffer or pass. */
static void linear_multi(struct bert_cpu *c, int nmat, float *const *C, const float *X, int M,
                         int K, const float *const *W, int N, int accumulate)
{
  assert(nmat >= 1 && nmat <= 3);
  if (M <= SMALL_M) {
    struct nt_job j = { .k = c->k, .X = X, .M = M, .K = K, .N = N, .nmat = nmat,
                        .blocks = (N + NT_ROWS - 1) / NT_ROWS, .accumulate = accumulate };
    for (int i = 0; i < nmat; i++) {
      j.W[i] = W[i];
      j.C[i] = C[i];
    }
    jp_pool_run(c->pool, nmat * j.blocks, nt_item, &j);
    return;
  }
  if (c->nworkers > 1 && openblas_get_num_threads() == 1) {
    /* OpenBLAS was told to use one thread (OPENBLAS_NUM_THREADS=1, as in
     * servers that parallelise above BLAS): split the weight rows over the
     * pool instead, one single-threaded sgemm per worker and matrix. */
    struct nt_job j = { .X = X, .M = M, .K = K, .N = N, .nmat = nmat, .blocks = c->nworkers,
                        .accumulate = accumulate };
    for (int i = 0; i < nmat; i++) {
      j.W[i] = W[i];
      j.C[i] = C[i];
    }
    jp_pool_run(c->pool, nmat * j.blocks, blas_item, &j);
    return;
  }
  for (int i = 0; i < nmat; i++)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, X, K, W[i], K,
                accumulate ? 1.0f : 0.0f, C[i], N);
}

static void linear(struct bert_cpu *c, float *C, const float *X, int M, int K, const float *W,
                   int N, int accumulate)
{
  linear_multi(c, 1, &C, X, M, K, &W, N, accumulate);
}

/* ---- row loops on the pool ------------------------------------------------- */

enum row_op { ROW_EMBED, ROW_ADD_LN, ROW_GELU, ROW_L2 };

struct row_job {
  struct bert_cpu *c;
  enum row_op op;
  int rows, width;
  float *x;                        /* [rows, width] */
  const float *b, *g, *beta;       /* bias, LN gamma/beta */
  const int32_t *ids;              /* ROW_EMBED: ids [rows] */
  int L;                           /* ROW_EMBED: sequence length (position = row % L) */
};

static void row_item(void *ctx, int item, int worker)
{
  struct row_job *j = ctx;
  const struct kern_ops *k = j->c->k;
  const struct bert_weights *w = j->c->w;
  int r0 = item * ROW_BLOCK, r1 = r0 + ROW_BLOCK < j->rows ? r0 + ROW_BLOCK : j->rows;
  size_t n = (size_t)j->width;

  (void)worker;
  for (int r = r0; r < r1; r++) {
    float *x = j->x + (size_t)r * n;
    switch (j->op) {
    case ROW_EMBED:
      memcpy(x, w->word_emb + (size_t)j->ids[r] * n, n * sizeof *x);
      /* + position + token type 0, then LayerNorm, in one pass */
      k->add_layernorm(x, w->pos_emb + (size_t)(r % j->L) * n, w->type_emb, w->emb_ln_g,
                       w->emb_ln_b, j->width, w->cfg.layer_norm_eps);
      break;
    case ROW_ADD_LN:
      /* the residual branch was already added into x by its GEMM */
      k->add_layernorm(x, NULL, j->b, j->g, j->beta, j->width, w->cfg.layer_norm_eps);
      break;
    case ROW_GELU:
      k->bias_gelu(x, j->b, j->width);
      break;
    case ROW_L2:
      k->l2norm(x, j->width);
      break;
    }
  }
}

static void rows_run(struct bert_cpu *c, struct row_job *j)
{
  j->c = c;
  jp_pool_run(c->pool, (j->rows + ROW_BLOCK - 1) / ROW_BLOCK, row_item, j);
}

/* ---- attention ---------------------------------------------------------------- */

struct att_job {
  struct bert_cpu *c;
  const struct bert_layer_weights *lw;
  const uint8_t *attn;
  int L;
  int g0;                          /* first sequence of the group in q, kb, v */
};

static void att_item(void *ctx, int item, int worker)
{
  struct att_job *j = ctx;
  struct bert_cpu *c = j->c;
  const struct bert_config *cfg = &c->w->cfg;
  const struct kern_ops *k = c->k;
  int H = cfg->hidden, heads = cfg->heads, hd = H / heads, L = j->L;
  int bl = item / heads, h = item % heads, b = j->g0 + bl;   /* bl: row in the group */
  int Lk = c->klen[b];
  int ldk = (Lk + 7) & ~7;         /* packed key rows start on 32-byte strides */
  const uint8_t *mask = c->kfull[b] ? NULL : j->attn + (size_t)b * L;
  float *Kt = c->att + (size_t)worker * c->att_stride;
  float *Qs = Kt + c->att_kt;
  float *S = Qs + (size_t)ATT_ROWS * hd;
  size_t base = (size_t)bl * L * H + (size_t)h * hd;
  const float *bq = j->lw->q_b + h * hd, *bk = j->lw->k_b + h * hd, *bv = j->lw->v_b + h * hd;
  float scale = (float)(1.0 / sqrt((double)hd));

  for (int t = 0; t < Lk; t++) {
    const float *kr = c->kb + base + (size_t)t * H;
    for (int d = 0; d < hd; d++) Kt[(size_t)d * ldk + t] = kr[d] + bk[d];
  }
  for (int r0 = 0; r0 < L; r0 += ATT_ROWS) {
    int rb = L - r0 < ATT_ROWS ? L - r0 : ATT_ROWS;
    float *qrows = c->q + base + (size_t)r0 * H;
    for (int i = 0; i < rb; i++)
      for (int d = 0; d < hd; d++) Qs[(size_t)i * hd + d] = (qrows[(size_t)i * H + d] + bq[d]) * scale;
    k->gemm_nn(rb, Lk, hd, Qs, hd, Kt, ldk, S, ldk);
    for (int i = 0; i < rb; i++) k->softmax_masked(S + (size_t)i * ldk, mask, Lk);
    /* The context overwrites this block's q rows: they were consumed by
     * the packing above, and no other item touches this (b, h) slice. */
    k->gemm_nn(rb, hd, Lk, S, ldk, c->v + base, H, qrows, H);
    for (int i = 0; i < rb; i++)
      for (int d = 0; d < hd; d++) qrows[(size_t)i * H + d] += bv[d];
  }
}

/* ---- forward ---------------------------------------------------------------------- */

static int cpu_forward(struct bert_backend *be, const int32_t *ids, const uint8_t *attn, int B,
                       int L, float *out)
{
  struct bert_cpu *c = (struct bert_cpu *)be;
  const struct bert_weights *w = c->w;
  const struct bert_config *cfg = &w->cfg;
  int H = cfg->hidden, NI = cfg->intermediate;   /* not I: <complex.h> via cblas.h */

  if (!ids || !attn || !out) return jp_err(JP_EINVAL, "bert_cpu: NULL ids, attn or out");
  if (B <= 0 || L <= 0 || L > cfg->max_position)
    return jp_err(JP_EINVAL, "bert_cpu: batch %dx%d: need B >= 1 and 1 <= L <= %d", B, L,
                  cfg->max_position);
  if (B > be->max_tokens / L)
    return jp_err(JP_ETOOBIG, "bert_cpu: batch %dx%d exceeds %d tokens per call", B, L,
                  be->max_tokens);
  int T = B * L;
  for (int t = 0; t < T; t++)
    if (ids[t] < 0 || ids[t] >= cfg->vocab_size)
      return jp_err(JP_EINVAL, "bert_cpu: token id %d at %d outside the vocabulary (%d)",
                    ids[t], t, cfg->vocab_size);
  for (int b = 0; b < B; b++) {
    const uint8_t *m = attn + (size_t)b * L;
    int last = -1, full = 1;
    for (int t = 0; t < L; t++)
      if (m[t]) last = t;
    for (int t = 0; t < last; t++) full &= m[t] != 0;
    /* No attended key at all: HF's uniform row over all L (kern.h). */
    c->klen[b] = last >= 0 ? last + 1 : L;
    c->kfull[b] = last >= 0 && full;
  }

  struct row_job rj = { .op = ROW_EMBED, .rows = T, .width = H, .x = c->x, .ids = ids, .L = L };
  rows_run(c, &rj);

  int gseq = c->grp_rows / L;      /* >= 1: L <= T <= max_tokens, grp_rows >= min(that, L) */
  for (int l = 0; l < cfg->layers; l++) {
    const struct bert_layer_weights *lw = &w->layer[l];
    for (int g0 = 0; g0 < B; g0 += gseq) {
      int nb = B - g0 < gseq ? B - g0 : gseq, rows = nb * L;
      float *xg = c->x + (size_t)g0 * L * H;
      float *qkv[3] = { c->q, c->kb, c->v };
      const float *wqkv[3] = { lw->q_w, lw->k_w, lw->v_w };
      linear_multi(c, 3, qkv, xg, rows, H, wqkv, H, 0);
      struct att_job aj = { .c = c, .lw = lw, .attn = attn, .L = L, .g0 = g0 };
      jp_pool_run(c->pool, nb * cfg->heads, att_item, &aj);
      linear(c, xg, c->q, rows, H, lw->ao_w, H, 1);   /* x += ctx Wao^T */
      rj = (struct row_job){ .op = ROW_ADD_LN, .rows = rows, .width = H, .x = xg,
                             .b = lw->ao_b, .g = lw->ln1_g, .beta = lw->ln1_b };
      rows_run(c, &rj);
    }
    for (int r0 = 0; r0 < T; r0 += c->ffn_rows) {
      int m = T - r0 < c->ffn_rows ? T - r0 : c->ffn_rows;
      float *xc = c->x + (size_t)r0 * H;
      linear(c, c->ffn, xc, m, H, lw->i_w, NI, 0);
      rj = (struct row_job){ .op = ROW_GELU, .rows = m, .width = NI, .x = c->ffn, .b = lw->i_b };
      rows_run(c, &rj);
      linear(c, xc, c->ffn, m, NI, lw->o_w, H, 1);   /* x_c += f Wo^T: f is done with x_c */
      rj = (struct row_job){ .op = ROW_ADD_LN, .rows = m, .width = H, .x = xc,
                             .b = lw->o_b, .g = lw->ln2_g, .beta = lw->ln2_b };
      rows_run(c, &rj);
    }
  }
  linear(c, out, c->x, T, H, w->proj_w, cfg->out_dim, 0);
  rj = (struct row_job){ .op = ROW_L2, .rows = T, .width = cfg->out_dim, .x = out };
  rows_run(c, &rj);
  return 0;
}

/* ---- lifecycle ---------------------------------------------------------------------- */

static void cpu_destroy(struct bert_backend *be)
{
  struct bert_cpu *c = (struct bert_cpu *)be;
  if (!c) return;
  jp_aligned_free(c->x);
  jp_aligned_free(c->q);
  jp_aligned_free(c->kb);
  jp_aligned_free(c->v);
  jp_aligned_free(c->ffn);
  jp_aligned_free(c->att);
  jp_free(c->klen);
  jp_free(c->kfull);
  jp_free(c);
}

static int check_weights(const struct bert_weights *w)
{
  const struct bert_config *c = &w->cfg;

  if (c->vocab_size <= 0 || c->hidden <= 0 || c->layers < 0 || c->heads <= 0 ||
      c->intermediate <= 0 || c->max_position <= 0 || c->type_vocab <= 0 || c->out_dim <= 0 ||
      !(c->layer_norm_eps >= 0))
    return jp_err(JP_EINVAL, "bert_cpu: invalid config (hidden %d, layers %d, heads %d, "
                  "intermediate %d, positions %d, out %d)", c->hidden, c->layers, c->heads,
                  c->intermediate, c->max_position, c->out_dim);
  if (c->hidden % c->heads != 0)
    return jp_err(JP_EINVAL, "bert_cpu: hidden %d not divisible by %d heads", c->hidden,
                  c->heads);
  /* Sizes below are products of these; keep every one far inside int. */
  if (c->hidden > 65536 || c->intermediate > 262144 || c->max_position > 65536 ||
      c->out_dim > 65536)
    return jp_err(JP_EINVAL, "bert_cpu: model dimensions too large");
  if (!w->word_emb || !w->pos_emb || !w->type_emb || !w->emb_ln_g || !w->emb_ln_b ||
      !w->proj_w || (c->layers > 0 && !w->layer))
    return jp_err(JP_EINVAL, "bert_cpu: missing embedding or projection weights");
  for (int l = 0; l < c->layers; l++) {
    const struct bert_layer_weights *x = &w->layer[l];
    if (!x->q_w || !x->q_b || !x->k_w || !x->k_b || !x->v_w || !x->v_b || !x->ao_w ||
        !x->ao_b || !x->ln1_g || !x->ln1_b || !x->i_w || !x->i_b || !x->o_w || !x->o_b ||
        !x->ln2_g || !x->ln2_b)
      return jp_err(JP_EINVAL, "bert_cpu: layer %d has missing weights", l);
  }
  return 0;
}

int bert_cpu_create(const struct bert_weights *w, int max_tokens, jp_pool *pool,
                    struct bert_backend **out)
{
  struct bert_cpu *c;
  int rc;

  if (!out) return jp_err(JP_EINVAL, "bert_cpu_create: NULL out");
  *out = NULL;
  if (!w) return jp_err(JP_EINVAL, "bert_cpu_create: NULL weights");
  if ((rc = check_weights(w)) != 0) return rc;
  /* 1 << 20 tokens of hidden 768 would already be 3 GB per buffer. */
  if (max_tokens <= 0 || max_tokens > (1 << 20))
    return jp_err(JP_EINVAL, "bert_cpu_create: max_tokens %d outside 1..%d", max_tokens, 1 << 20);

  const struct bert_config *cfg = &w->cfg;
  size_t H = (size_t)cfg->hidden, hd = H / (size_t)cfg->heads, P = (size_t)cfg->max_position;

  c = jp_calloc(1, sizeof *c);
  if (!c) return JP_ENOMEM;
  c->w = w;
  c->pool = pool;
  c->k = kern_best();
  c->nworkers = jp_pool_size(pool);
  c->ffn_rows = max_tokens < FFN_ROWS ? max_tokens : FFN_ROWS;
  c->grp_rows = (int)P > ATT_GROUP_TOKENS ? (int)P : ATT_GROUP_TOKENS;
  if (c->grp_rows > max_tokens) c->grp_rows = max_tokens;
  /* Kt [hd, P] (rows padded to 8), Qs [ATT_ROWS, hd], S [ATT_ROWS, P padded]. */
  size_t Pp = (P + 7) & ~(size_t)7;
  c->att_kt = hd * Pp;
  c->att_stride = c->att_kt + ATT_ROWS * hd + ATT_ROWS * Pp;
  c->att_stride = (c->att_stride + 15) & ~(size_t)15;   /* 64-byte aligned per worker */
  size_t grp = (size_t)c->grp_rows * H * sizeof(float);
  c->x = jp_aligned_alloc((size_t)max_tokens * H * sizeof(float));
  c->q = jp_aligned_alloc(grp);
  c->kb = jp_aligned_alloc(grp);
  c->v = jp_aligned_alloc(grp);
  c->ffn = jp_aligned_alloc((size_t)c->ffn_rows * (size_t)cfg->intermediate * sizeof(float));
  c->att = jp_aligned_alloc((size_t)c->nworkers * c->att_stride * sizeof(float));
  c->klen = jp_calloc((size_t)max_tokens, sizeof *c->klen);
  c->kfull = jp_calloc((size_t)max_tokens, sizeof *c->kfull);
  if (!c->x || !c->q || !c->kb || !c->v || !c->ffn || !c->att || !c->klen || !c->kfull) {
    cpu_destroy(&c->be);
    return jp_err(JP_ENOMEM, "bert_cpu_create: workspace for %d tokens", max_tokens);
  }
  c->be.name = "cpu";
  c->be.max_tokens = max_tokens;
  c->be.forward = cpu_forward;
  c->be.destroy = cpu_destroy;
  *out = &c->be;
  return 0;
}
