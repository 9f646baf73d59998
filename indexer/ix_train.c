/* ix_train.c: plan, sample, distributed k-means and the codec (ix.h), and
 * the codec's state file.
 *
 * Reproducibility: the seed streams are build.c's, applied to GLOBAL
 * indices, so the result does not depend on R except through the order of
 * floating-point sums across ranks:
 *   - sample: selection sampling over the global passage order with the
 *     stream seed ^ "Smple" (every rank replays the draws up to the end of
 *     its share: O(N) cheap draws, no communication);
 *   - held-out split: a seeded Fisher-Yates shuffle (stream seed ^
 *     "holdout") of the global sample vectors, replayed as a permutation of
 *     indices on every rank; the first min(5%, 50,000) positions are held
 *     out, the rest train k-means in shuffled order;
 *   - init: the k train positions kmeans.c picks with the seed (Floyd's
 *     algorithm, ascending), copied by their owners and summed into place
 *     with one MPI_Allreduce (every other rank contributes zeros).
 * Each rank's train vectors stay in shuffled order, so with R = 1 the
 * k-means input, init and sums are exactly build.c's.
 *
 * Memory per rank: its sampled vectors (reordered in place), the
 * permutation (4 bytes per global sample vector), and on rank 0 the
 * held-out set (at most 50,000 vectors).
 *
 * Thread-safety: main thread (MPI). Allocation: freed before return. */
#include "ix.h"

#include "index/kmeans.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/log.h"
#include "util/mem.h"

#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define TAG_SAMPLE 102
/* build.c's constants: held-out share int(min(0.05 n, 50000)) as ColBERT,
 * and its seed streams ("Smple", "holdout"); kmeans.c's init stream. */
#define HELDOUT_FRAC 0.05
#define HELDOUT_MAX 50000
#define SAMPLE_STREAM 0x5a6d706c65ull
#define HOLDOUT_STREAM 0x686f6c646f7574ull
#define KMEANS_INIT_STREAM 0x6a09e667f3bcc909ull
/* Texts collected before one encoder call in the sample pass (build.c). */
#define SAMPLE_TEXTS (IX_READ_BATCH * 4)
#define CODEC_MAGIC "JPIXCDC1"

static double uniform01(uint64_t *st) { return (double)(jp_rand64(st) >> 11) * 0x1.0p-53; }

/* ---- plan ---------------------------------------------------------------------------- */

static int plan(struct ix_ctx *c)
{
  struct ix_plan *pl = &c->plan;
  const struct ix_scan *s = &c->scan;
  uint64_t mine[4] = {s->n_docs, s->n_pass, s->n_bad, s->n_split_docs}, all[4];
  int rc;
  if ((rc = ix_mpi_rc(MPI_Allreduce(mine, all, 4, MPI_UINT64_T, MPI_SUM, c->comm), "plan counts")) < 0)
    return rc;
  pl->n_docs = all[0];
  pl->n_passages = all[1];
  pl->n_bad = all[2];
  pl->n_split_docs = all[3];
  pl->nbits = c->o.nbits ? c->o.nbits : jp_plan_default_nbits(pl->n_passages);
  pl->iters = c->o.kmeans_iters ? c->o.kmeans_iters : jp_plan_default_iters(pl->n_passages);
  return 0;
}

/* ---- sample ---------------------------------------------------------------------------- */

struct sample_pass {
  struct ix_ctx *c;
  uint64_t *sel;                  /* local passage indices sampled, ascending */
  uint64_t n_sel;
  uint64_t want_cur, proc_cur;    /* cursors into sel for want() and for processing */
  uint64_t lp;                    /* local passage index of the next document */
  uint64_t taken;                 /* sampled passages encoded so far */
};

/* The passages of this rank that build.c's selection sampling takes. */
static int select_sample(struct ix_ctx *c, struct sample_pass *sp)
{
  const uint64_t N = c->plan.n_passages, n_sample = c->plan.n_sample;
  const uint64_t g0 = c->scan.g0, g1 = g0 + c->scan.n_pass;
  uint64_t st = c->o.seed ^ SAMPLE_STREAM, taken = 0;
  size_t cap = 0;
  int rc;
  for (uint64_t g = 0; g < g1; g++) {
    if (uniform01(&st) * (double)(N - g) >= (double)(n_sample - taken)) continue;
    taken++;
    if (g < g0) continue;
    if ((rc = jp_grow((void **)&sp->sel, &cap, sp->n_sel + 1, sizeof *sp->sel, 0)) < 0) return rc;
    sp->sel[sp->n_sel++] = g - g0;
  }
  return 0;
}

static int sample_want(void *ctx, const struct ix_rdoc *d, uint64_t *user)
{
  struct sample_pass *sp = ctx;
  const struct ix_scan *s = &sp->c->scan;
  uint64_t first = sp->lp;
  int np;
  if (d->ord >= s->n_ord)
    return jp_err(JP_EINVAL, "%s changed while it was being indexed (more documents than at "
                  "the scan)", sp->c->o.corpus);
  np = s->np[d->ord];
  if (np <= 0) return 0;
  sp->lp += (uint64_t)np;
  *user = first;
  while (sp->want_cur < sp->n_sel && sp->sel[sp->want_cur] < first) sp->want_cur++;
  return sp->want_cur < sp->n_sel && sp->sel[sp->want_cur] < first + (uint64_t)np;
}

/* Encode this rank's sampled passages, in local passage order. */
static int sample_pass(struct ix_ctx *c, struct sample_pass *sp, struct ix_encoder *en,
                       struct ix_vecs *vs)
{
  struct ix_reader r;
  struct ix_prog *pr = NULL;
  const char *texts[SAMPLE_TEXTS];
  size_t lens[SAMPLE_TEXTS];
  int32_t doclens[SAMPLE_TEXTS];
  uint64_t global = 0;
  int rc = 0, n, nt = 0;

  vs->dim = en->dim;
  IX_TRY(c, ix_reader_open(&r, c, sample_want, sp));
  r.quiet_bad = 1;
  IX_TRY(c, ix_prog_begin(c, "sample", "passages", c->plan.n_sample, TAG_SAMPLE, &pr));
  while ((n = ix_reader_next(&r)) > 0) {
    if ((rc = ix_hook(c, "sample")) < 0) break;
    for (int i = 0; i < n && rc == 0; i++) {
      const struct ix_rdoc *d = &r.docs[i];
      if (d->rc < 0 || ix_doc_passages(d) != c->scan.np[d->ord]) {
        rc = jp_err(JP_EINVAL, "%s:%" PRIu64 ": the document splits differently than at the "
                    "scan (the file changed while it was being indexed?)", c->o.corpus, d->line);
        break;
      }
      for (int j = 0; j < ix_doc_passages(d); j++) {
        const char *content;
        size_t clen, elen;
        if (sp->proc_cur >= sp->n_sel || sp->sel[sp->proc_cur] != d->user + (uint64_t)j) continue;
        sp->proc_cur++;
        ix_doc_passage(d, j, &content, &clen, &elen);
        texts[nt] = content;
        lens[nt] = elen;
        nt++;
        sp->taken++;
        if (nt == SAMPLE_TEXTS) {
          if ((rc = ix_encode_texts(en, texts, lens, nt, vs, doclens)) < 0) break;
          nt = 0;
        }
      }
    }
    if (rc < 0) break;
    if (nt && (rc = ix_encode_texts(en, texts, lens, nt, vs, doclens)) < 0) break;
    nt = 0;
    ix_prog_tick(pr, sp->taken);
  }
  if (n < 0) rc = n;
  if (rc == 0 && r.next_ord != c->scan.n_ord)
    rc = jp_err(JP_EINVAL, "%s changed while it was being indexed (%" PRIu64 " documents in "
                "rank %d's share at the scan, %" PRIu64 " now)", c->o.corpus, c->scan.n_ord,
                c->rank, r.next_ord);
  if (rc == 0 && sp->taken != sp->n_sel)
    rc = jp_err(JP_EINTERNAL, "sampled %" PRIu64 " passages, expected %" PRIu64, sp->taken,
                sp->n_sel);
  ix_reader_close(&r);
  if (rc < 0) ix_fatal(c, rc);
  IX_TRY(c, ix_prog_end(pr, sp->taken, &global));
  return 0;
}

/* ---- held-out split and k-means -------------------------------------------------------- */

/* kmeans.c's init: k distinct indices of [0, n) by Floyd's algorithm with
 * the seed's init stream (draw t in [0, j]; take t unless taken, else j),
 * then ascending. The set is open addressing on a mixed key; only
 * membership matters, so the layout need not be kmeans.c's. */
static int cmp_u64(const void *a, const void *b)
{
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static size_t slot_of(uint64_t v, size_t mask)
{
  v ^= v >> 33;                   /* murmur3's finaliser: spreads sequential keys */
  v *= 0xff51afd7ed558ccdull;
  v ^= v >> 33;
  return (size_t)v & mask;
}

static int pick_init(uint64_t n, int k, uint64_t seed, uint64_t *idx)
{
  uint64_t st = seed ^ KMEANS_INIT_STREAM, *set;
  size_t cap = 16, m = 0;
  while (cap < (size_t)k * 2) cap *= 2;
  set = jp_malloc(cap * sizeof *set);
  if (!set) return JP_ENOMEM;
  for (size_t i = 0; i < cap; i++) set[i] = UINT64_MAX;
  for (uint64_t j = n - (uint64_t)k; j < n; j++) {
    uint64_t t = jp_rand64(&st) % (j + 1), pick = t;
    size_t h = slot_of(t, cap - 1);
    while (set[h] != UINT64_MAX && set[h] != t) h = (h + 1) & (cap - 1);
    if (set[h] == t) {            /* taken: j itself cannot be (all picks so far are < j) */
      pick = j;
      h = slot_of(j, cap - 1);
      while (set[h] != UINT64_MAX) h = (h + 1) & (cap - 1);
    }
    set[h] = pick;
    idx[m++] = pick;
  }
  jp_free(set);
  qsort(idx, m, sizeof *idx, cmp_u64);
  return 0;
}

/* Move row i of x to row dest[i] for all i (dest a permutation), in place. */
static int permute_rows(float *x, size_t n, int dim, const uint32_t *dest)
{
  size_t row = (size_t)dim * sizeof *x;
  uint8_t *seen = jp_calloc(n ? n : 1, 1);
  float *carry = jp_malloc(row), *tmp = jp_malloc(row);
  if (!seen || !carry || !tmp) {
    jp_free(seen);
    jp_free(carry);
    jp_free(tmp);
    return JP_ENOMEM;
  }
  for (size_t s = 0; s < n; s++) {
    size_t cur = s, d;
    if (seen[s]) continue;
    memcpy(carry, x + s * (size_t)dim, row);
    do {
      float *t;
      d = dest[cur];
      memcpy(tmp, x + d * (size_t)dim, row);
      memcpy(x + d * (size_t)dim, carry, row);
      seen[d] = 1;
      t = carry;
      carry = tmp;
      tmp = t;
      cur = d;
    } while (d != s);
  }
  jp_free(seen);
  jp_free(carry);
  jp_free(tmp);
  return 0;
}

struct reduce_ctx {
  struct ix_ctx *c;
  uint64_t bytes;                 /* payload of one iteration */
  double seconds;
};

static int reduce_common(struct reduce_ctx *rc, void *sums, MPI_Datatype t, size_t esize,
                         int64_t *counts, size_t k_dim, size_t k, double *objective)
{
  struct ix_ctx *c = rc->c;
  double t0 = jp_now_s();
  int e;
  if ((e = ix_hook(c, "kmeans")) < 0) return e;
  if (k_dim > INT_MAX || k > INT_MAX) return jp_err(JP_ETOOBIG, "k-means: %zu sums", k_dim);
  if ((e = ix_mpi_rc(MPI_Allreduce(MPI_IN_PLACE, sums, (int)k_dim, t, MPI_SUM, c->comm),
                     "k-means sums")) < 0 ||
      (e = ix_mpi_rc(MPI_Allreduce(MPI_IN_PLACE, counts, (int)k, MPI_INT64_T, MPI_SUM, c->comm),
                     "k-means counts")) < 0 ||
      (e = ix_mpi_rc(MPI_Allreduce(MPI_IN_PLACE, objective, 1, MPI_DOUBLE, MPI_SUM, c->comm),
                     "k-means objective")) < 0)
    return e;
  rc->bytes = k_dim * esize + k * sizeof *counts + sizeof *objective;
  rc->seconds += jp_now_s() - t0;
  return 0;
}

/* The reduce hook: double sums (kmeans.h says why), counts, objective. */
static int kmeans_reduce(void *ctx, double *sums, int64_t *counts, size_t k_dim, size_t k,
                         double *objective)
{
  return reduce_common(ctx, sums, MPI_DOUBLE, sizeof *sums, counts, k_dim, k, objective);
}

struct kprog {
  struct ix_ctx *c;
  double t0, t_last;
};

static void kmeans_progress(void *ctx, int iter, int iters, double objective)
{
  struct kprog *kp = ctx;
  double now = jp_now_s();
  ix_say(kp->c, "k-means: iteration %d/%d, objective %.6g, %.2fs (total %.1fs)", iter, iters,
         objective, now - kp->t_last, now - kp->t0);
  kp->t_last = now;
}

/* Rank 0: counts and displacements (in units of `mult`) for a Gatherv of
 * `mine` items per rank. */
static void gatherv_counts(struct ix_ctx *c, uint64_t mine, uint64_t mult, int *cnt, int *disp,
                           uint64_t *total)
{
  uint64_t *all = NULL, off = 0;
  *total = 0;
  if (c->rank == 0 && !(all = jp_calloc((size_t)c->size, sizeof *all))) ix_fatal(c, JP_ENOMEM);
  IX_TRY(c, ix_mpi_rc(MPI_Gather(&mine, 1, MPI_UINT64_T, all, 1, MPI_UINT64_T, 0, c->comm),
                      "held-out counts"));
  if (c->rank != 0) return;
  for (int r = 0; r < c->size; r++) {
    if (all[r] * mult > INT_MAX || off > INT_MAX)
      ix_fatal(c, jp_err(JP_ETOOBIG, "held-out gather too large"));
    cnt[r] = (int)(all[r] * mult);
    disp[r] = (int)off;
    off += all[r] * mult;
  }
  *total = off / mult;
  jp_free(all);
}

/* Rank 0 trains the buckets on the held-out vectors (gathered, back in
 * shuffled order as build.c holds them); then every rank gets the codec. */
static void train_codec(struct ix_ctx *c, const float *cent, int k, const float *held_local,
                        const uint64_t *held_pos, uint64_t nh_local, uint64_t nh_global)
{
  const int dim = c->info->colbert.dim;
  const size_t R = (size_t)c->size;
  int *cnt_v = NULL, *disp_v = NULL, *cnt_p = NULL, *disp_p = NULL;
  float *held_all = NULL, *held = NULL, *resid = NULL;
  float tail[2 * (1 << JP_CODEC_MAX_NBITS)];
  uint64_t *pos_all = NULL, tot = 0, tot_p = 0;
  uint32_t *codes = NULL;
  int nb;

  if (c->rank == 0) {
    cnt_v = jp_calloc(R, sizeof *cnt_v);
    disp_v = jp_calloc(R, sizeof *disp_v);
    cnt_p = jp_calloc(R, sizeof *cnt_p);
    disp_p = jp_calloc(R, sizeof *disp_p);
    if (!cnt_v || !disp_v || !cnt_p || !disp_p) ix_fatal(c, JP_ENOMEM);
  }
  gatherv_counts(c, nh_local, (uint64_t)dim, cnt_v, disp_v, &tot);
  gatherv_counts(c, nh_local, 1, cnt_p, disp_p, &tot_p);
  if (c->rank == 0) {
    held_all = jp_malloc((tot_p ? tot_p : 1) * (size_t)dim * sizeof *held_all);
    held = jp_malloc((tot_p ? tot_p : 1) * (size_t)dim * sizeof *held);
    pos_all = jp_malloc((tot_p ? tot_p : 1) * sizeof *pos_all);
    if (!held_all || !held || !pos_all) ix_fatal(c, JP_ENOMEM);
  }
  IX_TRY(c, ix_mpi_rc(MPI_Gatherv(held_local, (int)(nh_local * (uint64_t)dim), MPI_FLOAT, held_all,
                                  cnt_v, disp_v, MPI_FLOAT, 0, c->comm), "held-out vectors"));
  IX_TRY(c, ix_mpi_rc(MPI_Gatherv(held_pos, (int)nh_local, MPI_UINT64_T, pos_all, cnt_p, disp_p,
                                  MPI_UINT64_T, 0, c->comm), "held-out positions"));
  IX_TRY(c, jp_codec_init(&c->codec, dim, c->plan.nbits, k));
  nb = 1 << c->codec.nbits;
  if (c->rank == 0) {
    if (tot_p != nh_global)
      ix_fatal(c, jp_err(JP_EINTERNAL, "held-out gather: %" PRIu64 " of %" PRIu64 " vectors",
                         tot_p, nh_global));
    for (uint64_t i = 0; i < tot_p; i++) {
      if (pos_all[i] >= tot_p) ix_fatal(c, jp_err(JP_EINTERNAL, "held-out position out of range"));
      memcpy(held + pos_all[i] * (size_t)dim, held_all + i * (size_t)dim, (size_t)dim * sizeof *held);
    }
    memcpy(c->codec.centroids, cent, (size_t)k * (size_t)dim * sizeof *cent);
    codes = jp_malloc((tot_p ? tot_p : 1) * sizeof *codes);
    resid = jp_malloc((tot_p ? tot_p : 1) * (size_t)dim * sizeof *resid);
    if (!codes || !resid) ix_fatal(c, JP_ENOMEM);
    IX_TRY(c, jp_codec_assign(&c->codec, held, tot_p, c->pool, codes));
    for (uint64_t i = 0; i < tot_p; i++)
      for (size_t d = 0; d < (size_t)dim; d++)
        resid[i * (size_t)dim + d] =
          held[i * (size_t)dim + d] - c->codec.centroids[(size_t)codes[i] * (size_t)dim + d];
    IX_TRY(c, jp_codec_train_buckets(&c->codec, resid, tot_p));
    memcpy(tail, c->codec.cutoffs, (size_t)(nb - 1) * sizeof *tail);
    memcpy(tail + nb - 1, c->codec.weights, (size_t)nb * sizeof *tail);
    tail[2 * nb - 1] = c->codec.avg_residual;
  }
  /* Rank 0's centroids and buckets, bit for bit, on every rank. */
  IX_TRY(c, ix_mpi_rc(MPI_Bcast(c->codec.centroids, k * dim, MPI_FLOAT, 0, c->comm),
                      "codec centroids"));
  IX_TRY(c, ix_mpi_rc(MPI_Bcast(tail, 2 * nb, MPI_FLOAT, 0, c->comm), "codec buckets"));
  memcpy(c->codec.cutoffs, tail, (size_t)(nb - 1) * sizeof *tail);
  memcpy(c->codec.weights, tail + nb - 1, (size_t)nb * sizeof *tail);
  c->codec.avg_residual = tail[2 * nb - 1];
  jp_free(cnt_v);
  jp_free(disp_v);
  jp_free(cnt_p);
  jp_free(disp_p);
  jp_free(held_all);
  jp_free(held);
  jp_free(pos_all);
  jp_free(codes);
  jp_free(resid);
}

/* Benchmarks only (bench/index): JAPLAID_DUMP_KMEANS=DIR writes the k-means
 * input of a one-rank build -- train vectors x.f32 [n, dim] and initial
 * centroids init.f32 [k, dim], raw little-endian float32 -- and kmeans.json
 * {n, dim, k, iters, seed}, so another k-means (FAISS) can run on exactly
 * the same sample from the same start. */
static int dump_kmeans(struct ix_ctx *c, const float *x, uint64_t n, const float *init, int k,
                       int iters)
{
  const char *dir = getenv("JAPLAID_DUMP_KMEANS");
  const int dim = c->info->colbert.dim;
  char path[IX_PATH], js[256];
  int rc;
  if (c->size != 1) {
    if (c->rank == 0) JP_LOG_WARN("JAPLAID_DUMP_KMEANS needs a one-rank build; ignored");
    return 0;
  }
  if ((rc = jp_mkdir_p(dir)) < 0) return rc;
  ix_pathf(path, sizeof path, "%s/x.f32", dir);
  if ((rc = jp_write_file_atomic(path, x, (size_t)n * (size_t)dim * sizeof *x)) < 0) return rc;
  ix_pathf(path, sizeof path, "%s/init.f32", dir);
  if ((rc = jp_write_file_atomic(path, init, (size_t)k * (size_t)dim * sizeof *init)) < 0) return rc;
  snprintf(js, sizeof js, "{\"n\":%" PRIu64 ",\"dim\":%d,\"k\":%d,\"iters\":%d,\"seed\":%" PRIu64 "}\n",
           n, dim, k, iters, c->o.seed);
  ix_pathf(path, sizeof path, "%s/kmeans.json", dir);
  return jp_write_file_atomic(path, js, strlen(js));
}

int ix_train_run(struct ix_ctx *c)
{
  struct ix_plan *pl = &c->plan;
  struct sample_pass sp;
  struct ix_encoder en;
  struct ix_vecs vs;
  struct reduce_ctx rctx;
  struct kprog kp;
  struct jp_kmeans_opts ko;
  const int dim = c->info->colbert.dim;
  uint32_t *perm = NULL, *dest = NULL;
  uint64_t *pick = NULL, *held_pos = NULL, mine[2], all[2], V, vo = 0, nh, nt, nt_local = 0;
  uint64_t nh_local = 0;
  float *init = NULL, *cent = NULL;
  double t0 = jp_now_s();
  int rc = 0, k, k_out = 0;

  memset(&sp, 0, sizeof sp);
  memset(&vs, 0, sizeof vs);
  sp.c = c;
  IX_TRY(c, plan(c));
  if (pl->n_passages == 0) return jp_err(JP_EINVAL, "%s has no documents to index", c->o.corpus);
  pl->n_sample = jp_plan_sample_size(pl->n_passages);
  ix_say(c, "plan: %" PRIu64 " documents, %" PRIu64 " passages (%" PRIu64 " documents split), %"
         PRIu64 " bad lines skipped; nbits %d; sampling %" PRIu64 " passages", pl->n_docs,
         pl->n_passages, pl->n_split_docs, pl->n_bad, pl->nbits, pl->n_sample);
  IX_TRY(c, ix_hook(c, "plan"));
  c->t.plan = jp_now_s() - t0;

  /* Sample. */
  t0 = jp_now_s();
  IX_TRY(c, select_sample(c, &sp));
  IX_TRY(c, ix_encoder_init(&en, c->model));
  IX_TRY(c, sample_pass(c, &sp, &en, &vs));
  ix_encoder_fini(&en);
  jp_free(sp.sel);
  mine[0] = vs.n;
  mine[1] = sp.taken;
  IX_TRY(c, ix_mpi_rc(MPI_Allreduce(mine, all, 2, MPI_UINT64_T, MPI_SUM, c->comm), "sample counts"));
  IX_TRY(c, ix_mpi_rc(MPI_Exscan(&vs.n, &vo, 1, MPI_UINT64_T, MPI_SUM, c->comm), "sample offsets"));
  if (c->rank == 0) vo = 0;
  V = all[0];
  pl->n_sample = all[1];
  pl->n_sample_vecs = V;
  c->t.sample = jp_now_s() - t0;
  if (V == 0) {
    rc = jp_err(JP_EINVAL, "the sampled passages have no vectors to cluster (every token was "
                "punctuation or special?)");
    goto out;
  }
  if (V > UINT32_MAX) {
    rc = jp_err(JP_ETOOBIG, "%" PRIu64 " sample vectors (at most %u)", V, UINT32_MAX);
    goto out;
  }

  /* Held-out split: build.c's shuffle, replayed as a permutation of indices
   * (perm[p] = the sample vector at shuffled position p). */
  t0 = jp_now_s();
  perm = jp_malloc((size_t)V * sizeof *perm);
  dest = jp_malloc((vs.n ? vs.n : 1) * sizeof *dest);
  if (!perm || !dest) ix_fatal(c, JP_ENOMEM);
  {
    uint64_t st = c->o.seed ^ HOLDOUT_STREAM;
    for (uint64_t i = 0; i < V; i++) perm[i] = (uint32_t)i;
    for (uint64_t i = V - 1; i > 0; i--) {
      uint64_t j = jp_rand64(&st) % (i + 1);
      uint32_t t = perm[i];
      perm[i] = perm[j];
      perm[j] = t;
    }
  }
  nh = (uint64_t)fmin(HELDOUT_FRAC * (double)V, HELDOUT_MAX);
  if (nh == 0 && V >= 2) nh = 1;   /* tiny corpora: still hold one vector out (build.c) */
  nt = V - nh;
  pl->n_train = nt;
  pl->n_heldout = nh;
  pl->avg_doclen = pl->n_sample ? (double)V / (double)pl->n_sample : 0.0;
  /* Local rows: train ones first, in shuffled order; then held-out ones. */
  for (uint64_t p = nh; p < V; p++)
    if (perm[p] >= vo && perm[p] < vo + vs.n) dest[perm[p] - vo] = (uint32_t)nt_local++;
  held_pos = jp_malloc((vs.n > nt_local ? vs.n - nt_local : 1) * sizeof *held_pos);
  if (!held_pos) ix_fatal(c, JP_ENOMEM);
  for (uint64_t p = 0; p < nh; p++)
    if (perm[p] >= vo && perm[p] < vo + vs.n) {
      dest[perm[p] - vo] = (uint32_t)(nt_local + nh_local);
      held_pos[nh_local++] = p;
    }
  if (nt_local + nh_local != vs.n) ix_fatal(c, jp_err(JP_EINTERNAL, "held-out split lost vectors"));
  IX_TRY(c, permute_rows(vs.v, vs.n, dim, dest));

  /* k-means: the same init rows on every rank. */
  k = jp_plan_centroids(pl->n_passages, pl->avg_doclen, nt);
  if (k < 1 || (uint64_t)k > nt || (uint64_t)k * (uint64_t)dim > INT_MAX) {
    rc = jp_err(JP_EINTERNAL, "plan gave %d centroids for %" PRIu64 " vectors", k, nt);
    goto out;
  }
  pick = jp_malloc((size_t)k * sizeof *pick);
  init = jp_calloc((size_t)k * (size_t)dim, sizeof *init);
  cent = jp_malloc((size_t)k * (size_t)dim * sizeof *cent);
  if (!pick || !init || !cent) ix_fatal(c, JP_ENOMEM);
  IX_TRY(c, pick_init(nt, k, c->o.seed, pick));
  for (int j = 0; j < k; j++) {
    uint64_t row = perm[nh + pick[j]];
    if (row >= vo && row < vo + vs.n)
      memcpy(init + (size_t)j * (size_t)dim, vs.v + (size_t)dest[row - vo] * (size_t)dim,
             (size_t)dim * sizeof *init);
  }
  jp_free(perm);
  perm = NULL;
  /* Every init row comes from exactly one rank; the others add zeros. */
  IX_TRY(c, ix_mpi_rc(MPI_Allreduce(MPI_IN_PLACE, init, k * dim, MPI_FLOAT, MPI_SUM, c->comm),
                      "k-means init"));
  if (getenv("JAPLAID_DUMP_KMEANS")) IX_TRY(c, dump_kmeans(c, vs.v, nt_local, init, k, pl->iters));
  ix_say(c, "k-means: %d centroids from %" PRIu64 " vectors of %" PRIu64 " sampled passages "
         "(%.1f per passage, %" PRIu64 " held out), %d iterations, %d rank%s", k, nt, pl->n_sample,
         pl->avg_doclen, nh, pl->iters, c->size, c->size > 1 ? "s" : "");
  memset(&ko, 0, sizeof ko);
  memset(&rctx, 0, sizeof rctx);
  rctx.c = c;
  kp.c = c;
  kp.t0 = kp.t_last = jp_now_s();
  ko.k = k;
  ko.iters = pl->iters;
  ko.seed = c->o.seed;
  ko.pool = c->pool;
  ko.reduce = kmeans_reduce;
  ko.reduce_ctx = &rctx;
  ko.progress = kmeans_progress;
  ko.progress_ctx = &kp;
  ko.normalize = 1;
  IX_TRY(c, jp_kmeans(vs.v, nt_local, dim, &ko, init, cent, &k_out, &pl->objective));
  pl->ncentroids = k_out;
  pl->kmeans_bytes_iter = rctx.bytes;
  pl->kmeans_reduce_s = rctx.seconds;
  c->t.kmeans = jp_now_s() - t0;

  /* Codec from the held-out vectors (the train vector when there is one). */
  t0 = jp_now_s();
  IX_TRY(c, ix_hook(c, "codec"));
  if (nh == 0) {
    for (uint64_t i = 0; i < nt_local; i++) held_pos[i] = i;   /* V == 1: one rank, one row */
    train_codec(c, cent, k_out, vs.v, held_pos, nt_local, nt);
  } else {
    train_codec(c, cent, k_out, vs.v + nt_local * (size_t)dim, held_pos, nh_local, nh);
  }
  c->t.codec = jp_now_s() - t0;
  ix_say(c, "codec: %d centroids, nbits %d, avg |residual| %.4f", c->codec.ncentroids,
         c->codec.nbits, c->codec.avg_residual);
out:
  jp_free(vs.v);
  jp_free(perm);
  jp_free(dest);
  jp_free(pick);
  jp_free(held_pos);
  jp_free(init);
  jp_free(cent);
  return rc;
}

/* ---- codec state file ------------------------------------------------------------------ */

/* Plan numbers kept with the codec, in this order (u64 each; doubles by
 * their bits). */
#define CODEC_FIELDS 16

int ix_codec_save(struct ix_ctx *c)
{
  const struct ix_plan *pl = &c->plan;
  const struct jp_codec *cd = &c->codec;
  char path[IX_PATH];
  struct jp_buf b;
  uint64_t f[CODEC_FIELDS], h;
  int rc, nb = 1 << cd->nbits;

  memset(f, 0, sizeof f);
  f[0] = pl->n_docs;
  f[1] = pl->n_passages;
  f[2] = pl->n_bad;
  f[3] = pl->n_split_docs;
  f[4] = pl->n_sample;
  f[5] = pl->n_sample_vecs;
  f[6] = pl->n_train;
  f[7] = pl->n_heldout;
  memcpy(&f[8], &pl->avg_doclen, 8);
  f[9] = (uint64_t)pl->iters;
  memcpy(&f[10], &pl->objective, 8);
  f[11] = pl->kmeans_bytes_iter;
  memcpy(&f[12], &pl->kmeans_reduce_s, 8);
  f[13] = (uint64_t)cd->dim;
  f[14] = (uint64_t)cd->nbits;
  f[15] = (uint64_t)cd->ncentroids;
  jp_buf_init(&b, (size_t)8 << 30);
  rc = jp_buf_append(&b, CODEC_MAGIC, 8);
  if (!rc) rc = jp_buf_append(&b, f, sizeof f);
  if (!rc) rc = jp_buf_append(&b, cd->cutoffs, (size_t)(nb - 1) * sizeof *cd->cutoffs);
  if (!rc) rc = jp_buf_append(&b, cd->weights, (size_t)nb * sizeof *cd->weights);
  if (!rc) rc = jp_buf_append(&b, &cd->avg_residual, sizeof cd->avg_residual);
  if (!rc) rc = jp_buf_append(&b, cd->centroids,
                              (size_t)cd->ncentroids * (size_t)cd->dim * sizeof *cd->centroids);
  h = XXH3_64bits(b.data, b.len);
  if (!rc) rc = jp_buf_append(&b, &h, sizeof h);
  ix_pathf(path, sizeof path, "%s/codec.bin", c->state);
  if (!rc) rc = jp_write_file_atomic(path, b.data, b.len);
  jp_buf_fini(&b);
  return rc;
}

int ix_codec_load(struct ix_ctx *c)
{
  struct ix_plan *pl = &c->plan;
  struct jp_codec *cd = &c->codec;
  char path[IX_PATH], *data = NULL;
  size_t len = 0, need;
  uint64_t f[CODEC_FIELDS], h;
  const char *p;
  int rc, nb;

  ix_pathf(path, sizeof path, "%s/codec.bin", c->state);
  if (!jp_path_exists(path)) return 0;
  if ((rc = jp_read_file(path, (size_t)8 << 30, &data, &len)) < 0) return rc;
  if (len < 8 + sizeof f + 8 || memcmp(data, CODEC_MAGIC, 8)) goto bad;
  memcpy(&h, data + len - 8, 8);
  if (h != XXH3_64bits(data, len - 8)) goto bad;
  memcpy(f, data + 8, sizeof f);
  if (f[13] != (uint64_t)c->info->colbert.dim || (f[14] != 1 && f[14] != 2 && f[14] != 4 &&
      f[14] != 8) || f[15] < 1 || f[15] > INT_MAX / f[13])
    goto bad;
  nb = 1 << f[14];
  need = 8 + sizeof f + (size_t)(2 * nb - 1) * sizeof(float) + sizeof(float) +
         (size_t)f[15] * (size_t)f[13] * sizeof(float) + 8;
  if (len != need) goto bad;
  jp_codec_fini(cd);
  if ((rc = jp_codec_init(cd, (int)f[13], (int)f[14], (int)f[15])) < 0) goto fail;
  p = data + 8 + sizeof f;
  memcpy(cd->cutoffs, p, (size_t)(nb - 1) * sizeof(float));
  p += (size_t)(nb - 1) * sizeof(float);
  memcpy(cd->weights, p, (size_t)nb * sizeof(float));
  p += (size_t)nb * sizeof(float);
  memcpy(&cd->avg_residual, p, sizeof(float));
  p += sizeof(float);
  memcpy(cd->centroids, p, (size_t)f[15] * (size_t)f[13] * sizeof(float));
  pl->n_docs = f[0];
  pl->n_passages = f[1];
  pl->n_bad = f[2];
  pl->n_split_docs = f[3];
  pl->n_sample = f[4];
  pl->n_sample_vecs = f[5];
  pl->n_train = f[6];
  pl->n_heldout = f[7];
  memcpy(&pl->avg_doclen, &f[8], 8);
  pl->iters = (int)f[9];
  memcpy(&pl->objective, &f[10], 8);
  pl->kmeans_bytes_iter = f[11];
  memcpy(&pl->kmeans_reduce_s, &f[12], 8);
  pl->nbits = (int)f[14];
  pl->ncentroids = (int)f[15];
  jp_free(data);
  return 1;
bad:
  rc = jp_err(JP_ECORRUPT, "%s is damaged; remove it to train the codec again", path);
fail:
  jp_free(data);
  return rc;
}
