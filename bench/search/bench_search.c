/* bench_search.c: PLAID search and k-means benchmark (see README.md).
 *
 * Builds a synthetic ColBERT-like index with the real pipeline (plan ->
 * sample -> k-means -> codec -> compress -> jp_part), then measures, on all
 * cores in one run: PLAID latency at the k = 10 and k = 100 defaults and at
 * an "accurate" setting, exhaustive latency on the same queries, PLAID
 * Recall@10 against exhaustive, bytes per stored embedding, and k-means
 * time and objective against FAISS (Debian python3-faiss through
 * /usr/bin/python3, same points, same init, same iterations, alternated
 * A B A B, medians). Prints one table with ratios.
 *
 * Not a test: no assertions, timings are whatever the machine gives. */
#include "index/codec.h"
#include "index/index_int.h"
#include "index/kmeans.h"
#include "index/part.h"
#include "index/store.h"
#include "util/arena.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/log.h"
#include "util/mem.h"
#include "util/pool.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DIM 128
#define NQ 32

/* ---- options ------------------------------------------------------------------------ */

struct opts {
  int passages;            /* N */
  int doclen_min, doclen_max;
  int topics;
  int topics_per_passage;
  float zipf;              /* topic popularity exponent */
  float doc_noise, query_noise;
  float query_off_topic;   /* fraction of query tokens from unrelated topics */
  int queries;
  int threads;
  int nbits;
  uint64_t seed;
  int pipe_ppc;            /* pipeline k-means: training points per centroid */
  int pipe_iters;
  int km_points, km_k, km_iters, km_rounds;
  int faiss;               /* run the FAISS comparison */
  int keep_tmp;            /* keep the k-means comparison files (debugging) */
  int store;               /* also build a RocksDB partition (jp_store) and measure it */
  const char *store_dir;   /* where (default: a fresh directory under /tmp, removed after) */
  const char *python;
  const char *faiss_script;
  /* accurate setting */
  int acc_ncells;
  float acc_threshold;
  int acc_ndocs;
};

static void defaults(struct opts *o)
{
  memset(o, 0, sizeof *o);
  o->passages = 20000;
  o->doclen_min = 60;
  o->doclen_max = 140;
  o->topics = 4096;
  o->topics_per_passage = 6;
  o->zipf = 0.7f;
  o->doc_noise = 0.6f;
  o->query_noise = 0.8f;
  o->query_off_topic = 0.1f;
  o->queries = 200;
  o->threads = 0;
  o->nbits = 2;
  o->seed = 1;
  o->pipe_ppc = 32;
  o->pipe_iters = 4;
  o->km_points = 100000;
  o->km_k = 1024;
  o->km_iters = 20;
  o->km_rounds = 2;
  o->faiss = 1;
  o->python = "/usr/bin/python3";
  o->faiss_script = NULL;
  o->store = 1;
  o->acc_ncells = 4;
  o->acc_threshold = 0.4f;
  o->acc_ndocs = 4096;
}

static void usage(void)
{
  fprintf(stderr,
          "usage: bench_search [--passages N] [--doclen MIN MAX] [--topics T] [--queries Q]\n"
          "                    [--threads T] [--nbits B] [--seed S] [--pipe-ppc P] [--pipe-iters I]\n"
          "                    [--km-points N] [--km-k K] [--km-iters I] [--km-rounds R] [--no-faiss] [--no-kmeans]\n"
          "                    [--accurate NCELLS THRESHOLD NDOCS] [--faiss-script PATH]\n"
          "                    [--no-store] [--store-dir DIR] [--keep-tmp]\n");
}

static int parse(int argc, char **argv, struct opts *o)
{
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
#define NEXT() (i + 1 < argc ? argv[++i] : (usage(), exit(2), ""))
    if (!strcmp(a, "--passages")) o->passages = atoi(NEXT());
    else if (!strcmp(a, "--doclen")) {
      o->doclen_min = atoi(NEXT());
      o->doclen_max = atoi(NEXT());
    } else if (!strcmp(a, "--topics")) o->topics = atoi(NEXT());
    else if (!strcmp(a, "--queries")) o->queries = atoi(NEXT());
    else if (!strcmp(a, "--threads")) o->threads = atoi(NEXT());
    else if (!strcmp(a, "--nbits")) o->nbits = atoi(NEXT());
    else if (!strcmp(a, "--seed")) o->seed = strtoull(NEXT(), NULL, 10);
    else if (!strcmp(a, "--pipe-ppc")) o->pipe_ppc = atoi(NEXT());
    else if (!strcmp(a, "--pipe-iters")) o->pipe_iters = atoi(NEXT());
    else if (!strcmp(a, "--km-points")) o->km_points = atoi(NEXT());
    else if (!strcmp(a, "--km-k")) o->km_k = atoi(NEXT());
    else if (!strcmp(a, "--km-iters")) o->km_iters = atoi(NEXT());
    else if (!strcmp(a, "--km-rounds")) o->km_rounds = atoi(NEXT());
    else if (!strcmp(a, "--no-faiss")) o->faiss = 0;
    else if (!strcmp(a, "--no-kmeans")) o->km_rounds = 0;
    else if (!strcmp(a, "--keep-tmp")) o->keep_tmp = 1;
    else if (!strcmp(a, "--no-store")) o->store = 0;
    else if (!strcmp(a, "--store-dir")) o->store_dir = NEXT();
    else if (!strcmp(a, "--faiss-script")) o->faiss_script = NEXT();
    else if (!strcmp(a, "--accurate")) {
      o->acc_ncells = atoi(NEXT());
      o->acc_threshold = (float)atof(NEXT());
      o->acc_ndocs = atoi(NEXT());
    } else {
      usage();
      return -1;
    }
#undef NEXT
  }
  if (o->passages < 1 || o->doclen_min < 3 || o->doclen_max < o->doclen_min || o->topics < 8 ||
      o->queries < 1 || o->km_points < 2 || o->km_k < 1 || o->km_iters < 1 || o->km_rounds < 0) {
    usage();
    return -1;
  }
  return 0;
}

/* ---- the synthetic corpus ----------------------------------------------------------------
 *
 * Token embeddings clustered on the sphere like ColBERT output:
 *  - `topics` random unit directions ("token senses"), drawn by passages with
 *    Zipf popularity (exponent `zipf`), so some IVF lists are long;
 *  - two marker directions ([CLS], [SEP]) present once in every passage,
 *    so two IVF lists hold every passage (as real indexes do);
 *  - a passage: doclen uniform in [min, max]; it picks `topics_per_passage`
 *    topics; each content token = normalize(topic + doc_noise * g / sqrt(dim))
 *    (cosine ~ 0.86 to its topic at 0.6);
 *  - a query for passage p: a [CLS]-like token, then 31 tokens near p's topics
 *    (a fraction `query_off_topic` near random topics instead) with more
 *    noise (query_noise 0.8: cosine ~ 0.78), so the source passage and
 *    passages sharing its topics make a meaningful top 10.
 * Everything is regenerated from (seed, passage) on demand: nothing like the
 * 1 GB of raw vectors is kept. */

struct gen {
  const struct opts *o;
  float *topics;           /* [topics, DIM] */
  float markers[2 * DIM];
  double *cdf;             /* Zipf CDF over topics */
};

static void normalize(float *v)
{
  float s = 0;
  for (int d = 0; d < DIM; d++) s += v[d] * v[d];
  s = sqrtf(s);
  for (int d = 0; d < DIM; d++) v[d] /= s;
}

static void near(const float *c, float noise, uint64_t *rng, float *out)
{
  float sc = noise / sqrtf((float)DIM);
  for (int d = 0; d < DIM; d++) out[d] = c[d] + sc * jp_randn(rng);
  normalize(out);
}

static int gen_init(struct gen *g, const struct opts *o)
{
  uint64_t rng = o->seed * 0x9e3779b97f4a7c15ULL + 1;
  g->o = o;
  g->topics = malloc(sizeof(float) * (size_t)o->topics * DIM);
  g->cdf = malloc(sizeof(double) * (size_t)o->topics);
  if (!g->topics || !g->cdf) return -1;
  for (int t = 0; t < o->topics; t++) {
    for (int d = 0; d < DIM; d++) g->topics[t * DIM + d] = jp_randn(&rng);
    normalize(g->topics + t * DIM);
  }
  for (int m = 0; m < 2; m++) {
    for (int d = 0; d < DIM; d++) g->markers[m * DIM + d] = jp_randn(&rng);
    normalize(g->markers + m * DIM);
  }
  double acc = 0;
  for (int t = 0; t < o->topics; t++) {
    acc += 1.0 / pow((double)t + 1.0, o->zipf);
    g->cdf[t] = acc;
  }
  for (int t = 0; t < o->topics; t++) g->cdf[t] /= acc;
  return 0;
}

static int zipf_topic(const struct gen *g, uint64_t *rng)
{
  double u = (double)(jp_rand64(rng) >> 11) * 0x1.0p-53;
  int lo = 0, hi = g->o->topics - 1;
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (g->cdf[mid] < u) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static uint64_t passage_seed(const struct gen *g, int p)
{
  uint64_t s = g->o->seed ^ ((uint64_t)p * 0xd1b54a32d192ed03ULL);
  return jp_rand64(&s);
}

static int passage_len(const struct gen *g, int p)
{
  uint64_t rng = passage_seed(g, p);
  return g->o->doclen_min + (int)(jp_rand64(&rng) % (uint64_t)(g->o->doclen_max - g->o->doclen_min + 1));
}

/* Passage p's topics (out[topics_per_passage]) and, if vecs, its vectors. */
static int gen_passage(const struct gen *g, int p, int *ptopics, float *vecs)
{
  uint64_t rng = passage_seed(g, p);
  int len = g->o->doclen_min + (int)(jp_rand64(&rng) % (uint64_t)(g->o->doclen_max - g->o->doclen_min + 1));
  for (int i = 0; i < g->o->topics_per_passage; i++) ptopics[i] = zipf_topic(g, &rng);
  if (!vecs) return len;
  near(g->markers, 0.15f, &rng, vecs);                        /* [CLS] */
  for (int i = 1; i < len - 1; i++) {
    int t = ptopics[jp_rand64(&rng) % (uint64_t)g->o->topics_per_passage];
    near(g->topics + (size_t)t * DIM, g->o->doc_noise, &rng, vecs + (size_t)i * DIM);
  }
  near(g->markers + DIM, 0.15f, &rng, vecs + (size_t)(len - 1) * DIM);   /* [SEP] */
  return len;
}

static void gen_query(const struct gen *g, int p, uint64_t qseed, float *Q)
{
  int pt[64];
  gen_passage(g, p, pt, NULL);
  uint64_t rng = qseed;
  near(g->markers, 0.3f, &rng, Q);
  for (int i = 1; i < NQ; i++) {
    float u = jp_randf(&rng);
    int t = u < g->o->query_off_topic ? zipf_topic(g, &rng)
                                       : pt[jp_rand64(&rng) % (uint64_t)g->o->topics_per_passage];
    near(g->topics + (size_t)t * DIM, g->o->query_noise, &rng, Q + (size_t)i * DIM);
  }
}

/* ---- helpers ---------------------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(double *v, int n, double q)
{
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  int i = (int)ceil(q * n) - 1;
  if (i < 0) i = 0;
  if (i >= n) i = n - 1;
  return v[i];
}

static double median(double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void die(const char *what, int rc)
{
  fprintf(stderr, "bench_search: %s: %s\n", what, jp_errmsg(rc));
  exit(1);
}

static void km_progress(void *ctx, int iter, int iters, double objective)
{
  double *t0 = ctx;
  fprintf(stderr, "  k-means iteration %d/%d objective %.2f (%.1f s)\n", iter, iters, objective,
          jp_now_s() - *t0);
}

/* Sum of squared distances of every point to its nearest centroid (the
 * same computation for both sides of the comparison). */
static double objective_of(const float *x, size_t n, const float *C, int k, jp_pool *pool)
{
  struct jp_nearest nb;
  uint32_t *idx = malloc(sizeof *idx * n);
  float *val = malloc(sizeof *val * n);
  if (!idx || !val || jp_nearest_init(&nb, C, k, DIM, 1) < 0) die("objective", JP_ENOMEM);
  jp_nearest_run(&nb, x, DIM, NULL, n, pool, idx, val, NULL);
  double s = 0;
  for (size_t i = 0; i < n; i++) {
    float xn = 0;
    for (int d = 0; d < DIM; d++) xn += x[i * DIM + d] * x[i * DIM + d];
    double d2 = (double)xn + val[i];
    s += d2 > 0 ? d2 : 0;
  }
  jp_nearest_fini(&nb);
  free(idx);
  free(val);
  return s;
}

static int write_f32(const char *path, const float *v, size_t n)
{
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  size_t w = fwrite(v, sizeof *v, n, f);
  return fclose(f) == 0 && w == n ? 0 : -1;
}

static int read_f32(const char *path, float *v, size_t n)
{
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  size_t r = fread(v, sizeof *v, n, f);
  fclose(f);
  return r == n ? 0 : -1;
}

/* One FAISS run; returns seconds (or -1) and fills C. */
static double run_faiss(const struct opts *o, const char *dir, int blas_threads, int omp_threads,
                        int k, float *C)
{
  char cmd[2048], xp[512], ip[512], op[512];
  snprintf(xp, sizeof xp, "%s/x.f32", dir);
  snprintf(ip, sizeof ip, "%s/init.f32", dir);
  snprintf(op, sizeof op, "%s/out.f32", dir);
  snprintf(cmd, sizeof cmd,
           "OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=%d %s %s --x %s --init %s --out %s "
           "--dim %d --iters %d --threads %d",
           blas_threads, o->python, o->faiss_script, xp, ip, op, DIM, o->km_iters, omp_threads);
  FILE *p = popen(cmd, "r");
  if (!p) return -1;
  char line[512] = { 0 };
  double secs = -1;
  while (fgets(line, sizeof line, p)) {
    const char *s = strstr(line, "\"seconds\":");
    if (s) secs = atof(s + 10);
  }
  if (pclose(p) != 0) return -1;
  if (read_f32(op, C, (size_t)k * DIM) < 0) return -1;
  (void)k;
  return secs;
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
  struct opts o;
  struct gen g;
  jp_pool *pool;
  int rc;

  defaults(&o);
  if (parse(argc, argv, &o) < 0) return 2;
  jp_log_init_from_env();
  if (!o.faiss_script) {
    /* Beside the program's source, found from the build tree or the CWD. */
    static char path[1024];
    const char *src = getenv("JP_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/bench/search/faiss_kmeans.py", src ? src : JP_BENCH_SOURCE_DIR);
    o.faiss_script = path;
  }
  if ((rc = jp_pool_create(o.threads, &pool)) < 0) die("pool", rc);
  const int threads = jp_pool_size(pool);
  if (gen_init(&g, &o) < 0) die("generator", JP_ENOMEM);
  fprintf(stderr, "bench_search: %d passages, doclen %d..%d, %d topics, %d threads\n", o.passages,
          o.doclen_min, o.doclen_max, o.topics, threads);

  /* ---- plan ---- */
  const uint64_t N = (uint64_t)o.passages;
  const uint64_t n_sample = jp_plan_sample_size(N);
  /* Sampled passages: a seeded choice of n_sample of N (all when equal). */
  uint8_t *in_sample = calloc(N, 1);
  {
    uint64_t rng = o.seed ^ 0x5a5a;
    uint64_t chosen = 0;
    for (uint64_t p = 0; p < N; p++)
      if ((uint64_t)(jp_randf(&rng) * (float)(N - p)) < n_sample - chosen) {
        in_sample[p] = 1;
        chosen++;
      }
  }
  uint64_t sample_vecs = 0, sampled = 0;
  for (uint64_t p = 0; p < N; p++)
    if (in_sample[p]) {
      sample_vecs += (uint64_t)passage_len(&g, (int)p);
      sampled++;
    }
  const double avg_doclen = (double)sample_vecs / (double)sampled;
  const int ncent = jp_plan_centroids(N, avg_doclen, sample_vecs);
  /* ColBERT: 5% of the sample (at most 50 000) held out for the buckets. */
  const uint64_t heldout = (uint64_t)fmin(0.05 * (double)sample_vecs, 50000.0);
  const uint64_t train_max = (uint64_t)o.pipe_ppc * (uint64_t)ncent;
  const uint64_t train_n = sample_vecs - heldout < train_max ? sample_vecs - heldout : train_max;
  fprintf(stderr, "plan: sample %llu passages (%llu vectors, avg doclen %.1f) -> %d centroids; "
                  "k-means on %llu vectors, %d iterations; %llu held out\n",
          (unsigned long long)sampled, (unsigned long long)sample_vecs, avg_doclen, ncent,
          (unsigned long long)train_n, o.pipe_iters, (unsigned long long)heldout);

  /* ---- sample: training and held-out vectors (disjoint, seeded) ---- */
  float *train = malloc(sizeof(float) * train_n * DIM);
  float *held = malloc(sizeof(float) * heldout * DIM);
  float *pv = malloc(sizeof(float) * (size_t)o.doclen_max * DIM);
  int pt[64];
  if (!train || !held || !pv) die("sample", JP_ENOMEM);
  uint64_t nt = 0, nh = 0;
  {
    uint64_t rng = o.seed ^ 0xabcdef;
    const double q_train = (double)train_n / (double)sample_vecs;
    const double q_held = (double)heldout / (double)sample_vecs;
    for (uint64_t p = 0; p < N; p++) {
      if (!in_sample[p]) continue;
      int len = gen_passage(&g, (int)p, pt, pv);
      for (int i = 0; i < len; i++) {
        double u = (double)(jp_rand64(&rng) >> 11) * 0x1.0p-53;
        if (u < q_train && nt < train_n) memcpy(train + nt++ * DIM, pv + (size_t)i * DIM, sizeof(float) * DIM);
        else if (u >= q_train && u < q_train + q_held && nh < heldout)
          memcpy(held + nh++ * DIM, pv + (size_t)i * DIM, sizeof(float) * DIM);
      }
    }
  }

  /* ---- k-means (the pipeline's) ---- */
  struct jp_codec codec;
  if ((rc = jp_codec_init(&codec, DIM, o.nbits, ncent)) < 0) die("codec", rc);
  double t0 = jp_now_s();
  struct jp_kmeans_opts ko = { .k = ncent, .iters = o.pipe_iters, .seed = o.seed, .pool = pool,
                               .normalize = 1, .progress = km_progress, .progress_ctx = &t0 };
  int kused;
  double pipe_obj;
  if ((rc = jp_kmeans(train, nt, DIM, &ko, NULL, codec.centroids, &kused, &pipe_obj)) < 0) die("kmeans", rc);
  const double pipe_km_s = jp_now_s() - t0;
  free(train);

  /* ---- codec buckets from held-out residuals ---- */
  t0 = jp_now_s();
  {
    uint32_t *codes = malloc(sizeof *codes * (nh ? nh : 1));
    if ((rc = jp_codec_assign(&codec, held, nh, pool, codes)) < 0) die("assign", rc);
    for (uint64_t i = 0; i < nh; i++)
      for (int d = 0; d < DIM; d++) held[i * DIM + d] -= codec.centroids[(size_t)codes[i] * DIM + d];
    if ((rc = jp_codec_train_buckets(&codec, held, nh)) < 0) die("buckets", rc);
    free(codes);
  }
  free(held);
  const double buckets_s = jp_now_s() - t0;

  /* ---- compress every passage into the partition, in batches ---- */
  jp_part *part;
  if ((rc = jp_part_create(&codec, &part)) < 0) die("part", rc);
  const int batch = 256;
  const size_t pb = jp_codec_packed_bytes(&codec);
  float *bv = malloc(sizeof(float) * (size_t)batch * o.doclen_max * DIM);
  uint32_t *bc = malloc(sizeof(uint32_t) * (size_t)batch * o.doclen_max);
  uint8_t *bp = malloc(pb * (size_t)batch * o.doclen_max);
  int *blen = malloc(sizeof(int) * (size_t)batch);
  if (!bv || !bc || !bp || !blen) die("compress", JP_ENOMEM);
  t0 = jp_now_s();
  uint64_t total_emb = 0;
  for (int p0 = 0; p0 < o.passages; p0 += batch) {
    int nb = o.passages - p0 < batch ? o.passages - p0 : batch;
    size_t at = 0;
    for (int i = 0; i < nb; i++) {
      blen[i] = gen_passage(&g, p0 + i, pt, bv + at * DIM);
      at += (size_t)blen[i];
    }
    if ((rc = jp_codec_compress(&codec, bv, at, pool, bc, bp)) < 0) die("compress", rc);
    at = 0;
    for (int i = 0; i < nb; i++) {
      char id[32], meta[64];
      int p = p0 + i;
      snprintf(id, sizeof id, "doc%d", p);
      snprintf(meta, sizeof meta, "{\"shard\":%d}", p % 16);
      if ((rc = jp_part_add(part, (uint64_t)p, id, strlen(id), meta, blen[i], bc + at, bp + at * pb)) < 0)
        die("add", rc);
      at += (size_t)blen[i];
    }
    total_emb += at;
  }
  const double compress_s = jp_now_s() - t0;
  /* A bulk load ends with a compaction, which also trims the growth slack. */
  if ((rc = jp_part_compact(part)) < 0) die("compact", rc);

  /* ---- the same passages through a RocksDB partition (jp_store bulk build) ---- */
  struct jp_store_stats sst;
  double store_s = 0;
  int have_store = 0;
  char store_tmp[] = "/tmp/bench_search_store_XXXXXX";
  char store_path[1100];
  if (o.store) {
    if (o.store_dir) {
      snprintf(store_path, sizeof store_path, "%s", o.store_dir);
    } else if (mkdtemp(store_tmp)) {
      snprintf(store_path, sizeof store_path, "%s/part0", store_tmp);
    } else {
      die("store directory", JP_EIO);
    }
    struct jp_store_meta meta;
    memset(&meta, 0, sizeof meta);
    snprintf(meta.model_name, sizeof meta.model_name, "bench_search synthetic");
    memset(meta.model_identity, '0', 32);
    meta.partition_id = 0;
    meta.n_partitions = 1;
    jp_store_builder *sb;
    t0 = jp_now_s();
    if ((rc = jp_store_build_begin(store_path, &meta, &codec, &sb)) < 0) die("store build", rc);
    const int sbatch = 256;
    float *sv = malloc(sizeof(float) * (size_t)sbatch * o.doclen_max * DIM);
    struct jp_doc_in *docs = malloc(sizeof *docs * (size_t)sbatch);
    struct jp_passage_in *pins = malloc(sizeof *pins * (size_t)sbatch);
    char (*ids)[32] = malloc(32 * (size_t)sbatch), (*metas)[64] = malloc(64 * (size_t)sbatch);
    char (*texts)[48] = malloc(48 * (size_t)sbatch);
    if (!sv || !docs || !pins || !ids || !metas || !texts) die("store build", JP_ENOMEM);
    for (int p0 = 0; p0 < o.passages; p0 += sbatch) {
      int nb = o.passages - p0 < sbatch ? o.passages - p0 : sbatch;
      size_t at = 0;
      for (int i = 0; i < nb; i++) {
        int p = p0 + i;
        int len = gen_passage(&g, p, pt, sv + at * DIM);
        snprintf(ids[i], 32, "doc%d", p);
        snprintf(metas[i], 64, "{\"shard\":%d}", p % 16);
        snprintf(texts[i], 48, "synthetic passage %d", p);
        pins[i] = (struct jp_passage_in){ texts[i], strlen(texts[i]), sv + at * DIM, len };
        docs[i] = (struct jp_doc_in){ ids[i], strlen(ids[i]), metas[i], &pins[i], 1 };
        at += (size_t)len;
      }
      if ((rc = jp_store_build_add(sb, docs, nb, pool)) < 0) die("store add", rc);
    }
    if ((rc = jp_store_build_finish(sb)) < 0) die("store finish", rc);
    free(sv);
    free(docs);
    free(pins);
    free(ids);
    free(metas);
    free(texts);
    store_s = jp_now_s() - t0;
    struct jp_store_opts so;
    jp_store_opts_default(&so);
    so.read_only = 1;
    jp_store *store;
    if ((rc = jp_store_open(store_path, &so, &store)) < 0) die("store open", rc);
    if ((rc = jp_store_get_stats(store, &sst)) < 0) die("store stats", rc);
    jp_store_close(store);
    have_store = 1;
    fprintf(stderr, "store: %s built in %.1f s, %.2f bytes per embedding\n", store_path, store_s,
            sst.bytes_per_embedding);
    if (!o.store_dir) {
      jp_rm_rf(store_tmp);
    }
  }
  free(bv);
  free(bc);
  free(bp);
  free(blen);
  struct jp_part_stats st;
  jp_part_get_stats(part, &st);
  fprintf(stderr, "index: %llu passages, %llu embeddings, %d centroids; k-means %.1f s, buckets %.1f s, "
                  "compress+add %.1f s\n",
          (unsigned long long)st.n_passages, (unsigned long long)st.n_embeddings, ncent, pipe_km_s,
          buckets_s, compress_s);

  /* ---- queries ---- */
  struct jp_arena arena;
  jp_arena_init(&arena, 1 << 20, 0);
  const int nq = o.queries;
  float *Qs = malloc(sizeof(float) * (size_t)nq * NQ * DIM);
  {
    uint64_t rng = o.seed ^ 0x77;
    for (int q = 0; q < nq; q++) gen_query(&g, (int)(jp_rand64(&rng) % N), jp_rand64(&rng), Qs + (size_t)q * NQ * DIM);
  }
  enum { S_P10, S_P100, S_ACC, S_EXH, NSET };
  const char *names[NSET] = { "PLAID k=10 (defaults)", "PLAID k=100 (defaults)", "PLAID k=10 accurate",
                              "exhaustive k=100" };
  double *lat[NSET];
  for (int s = 0; s < NSET; s++) lat[s] = malloc(sizeof(double) * (size_t)nq);
  struct jp_hit *hits[NSET];
  for (int s = 0; s < NSET; s++) hits[s] = malloc(sizeof(struct jp_hit) * 100);
  double rec10_def = 0, rec10_acc = 0, rec100 = 0;
  /* Warm-up: page in the arrays and the arena. */
  for (int q = 0; q < 3 && q < nq; q++) {
    struct jp_search_params sp;
    int n;
    jp_search_params_init(&sp, 100);
    jp_arena_reset(&arena);
    jp_part_search(part, Qs + (size_t)q * NQ * DIM, NQ, &sp, NULL, pool, &arena, hits[0], &n);
  }
  for (int q = 0; q < nq; q++) {
    const float *Q = Qs + (size_t)q * NQ * DIM;
    int n[NSET];
    for (int s = 0; s < NSET; s++) {
      struct jp_search_params sp;
      jp_search_params_init(&sp, s == S_P10 || s == S_ACC ? 10 : 100);
      if (s == S_ACC) {
        sp.ncells = o.acc_ncells;
        sp.centroid_score_threshold = o.acc_threshold;
        sp.ndocs = o.acc_ndocs;
      }
      sp.exhaustive = s == S_EXH;
      jp_arena_reset(&arena);
      double t = jp_now_s();
      rc = jp_part_search(part, Q, NQ, &sp, NULL, pool, &arena, hits[s], &n[s]);
      lat[s][q] = (jp_now_s() - t) * 1e3;
      if (rc < 0) die("search", rc);
    }
    /* Recall@10 against the first 10 of exhaustive k=100 (the ranking is a
     * total order, so that is exhaustive k=10). */
    int h10 = 0, hacc = 0, h100 = 0;
    for (int i = 0; i < 10 && i < n[S_P10]; i++)
      for (int j = 0; j < 10 && j < n[S_EXH]; j++) h10 += hits[S_P10][i].pid == hits[S_EXH][j].pid;
    for (int i = 0; i < 10 && i < n[S_ACC]; i++)
      for (int j = 0; j < 10 && j < n[S_EXH]; j++) hacc += hits[S_ACC][i].pid == hits[S_EXH][j].pid;
    for (int i = 0; i < n[S_P100]; i++)
      for (int j = 0; j < n[S_EXH]; j++) h100 += hits[S_P100][i].pid == hits[S_EXH][j].pid;
    rec10_def += h10 / 10.0;
    rec10_acc += hacc / 10.0;
    rec100 += h100 / 100.0;
    if ((q + 1) % 50 == 0) fprintf(stderr, "  queries: %d/%d\n", q + 1, nq);
  }
  rec10_def /= nq;
  rec10_acc /= nq;
  rec100 /= nq;
  double p50[NSET], p95[NSET], mean[NSET];
  for (int s = 0; s < NSET; s++) {
    mean[s] = 0;
    for (int q = 0; q < nq; q++) mean[s] += lat[s][q] / nq;
    p95[s] = pct(lat[s], nq, 0.95);
    p50[s] = pct(lat[s], nq, 0.5);
  }

  /* ---- k-means against FAISS ---- */
  double km_ours[16], km_f[2][16], obj_ours = 0, obj_f[2] = { 0, 0 };
  int have_faiss = 0;
  const int km_k = o.km_k, rounds = o.km_rounds > 16 ? 16 : o.km_rounds;
  const size_t km_n = (size_t)o.km_points;
  float *kx = malloc(sizeof(float) * km_n * DIM), *kinit = malloc(sizeof(float) * (size_t)km_k * DIM);
  float *kc = malloc(sizeof(float) * (size_t)km_k * DIM);
  if (!kx || !kinit || !kc) die("k-means bench", JP_ENOMEM);
  {
    /* Points: tokens of random passages (the same distribution as the index). */
    uint64_t rng = o.seed ^ 0x1234;
    size_t at = 0;
    while (at < km_n) {
      int len = gen_passage(&g, (int)(jp_rand64(&rng) % N), pt, pv);
      for (int i = 0; i < len && at < km_n; i++, at++) memcpy(kx + at * DIM, pv + (size_t)i * DIM, sizeof(float) * DIM);
    }
    /* Init: km_k distinct points at a regular stride (the points are in
     * random passage order), given to both sides. */
    for (int j = 0; j < km_k; j++) {
      size_t i = (size_t)j * (km_n / (size_t)km_k);
      memcpy(kinit + (size_t)j * DIM, kx + i * DIM, sizeof(float) * DIM);
    }
  }
  char tmpdir[] = "/tmp/bench_search_XXXXXX";
  if (rounds > 0 && o.faiss && access(o.python, X_OK) == 0 && access(o.faiss_script, R_OK) == 0 && mkdtemp(tmpdir)) {
    char xp[600], ip[600];
    snprintf(xp, sizeof xp, "%s/x.f32", tmpdir);
    snprintf(ip, sizeof ip, "%s/init.f32", tmpdir);
    if (write_f32(xp, kx, km_n * DIM) == 0 && write_f32(ip, kinit, (size_t)km_k * DIM) == 0) have_faiss = 1;
  }
  fprintf(stderr, "k-means comparison: %zu points, k=%d, %d iterations, %d threads, %d rounds%s\n", km_n,
          km_k, o.km_iters, threads, rounds, have_faiss ? "" : " (FAISS not available)");
  for (int r = 0; r < rounds; r++) {
    struct jp_kmeans_opts k2 = { .k = km_k, .iters = o.km_iters, .seed = o.seed, .pool = pool };
    double t = jp_now_s();
    if ((rc = jp_kmeans(kx, km_n, DIM, &k2, kinit, kc, &kused, NULL)) < 0) die("kmeans", rc);
    km_ours[r] = jp_now_s() - t;
    if (r == 0) obj_ours = objective_of(kx, km_n, kc, km_k, pool);
    fprintf(stderr, "  round %d: ours %.2f s", r + 1, km_ours[r]);
    if (have_faiss) {
      /* FAISS two ways: OpenMP threads with OpenBLAS threaded (default)
       * or single-threaded; the better one is reported. */
      for (int c = 0; c < 2; c++) {
        km_f[c][r] = run_faiss(&o, tmpdir, c == 0 ? threads : 1, threads, km_k, kc);
        if (km_f[c][r] < 0) {
          have_faiss = 0;
          break;
        }
        if (r == 0) obj_f[c] = objective_of(kx, km_n, kc, km_k, pool);
        fprintf(stderr, ", FAISS(blas %d) %.2f s", c == 0 ? threads : 1, km_f[c][r]);
      }
    }
    fprintf(stderr, "\n");
  }
  double med_ours = rounds > 0 ? median(km_ours, rounds) : 0, med_f[2] = { 0, 0 };
  int best_f = 0;
  if (have_faiss) {
    med_f[0] = median(km_f[0], rounds);
    med_f[1] = median(km_f[1], rounds);
    best_f = med_f[1] < med_f[0];
  }

  /* ---- the table ---- */
  const double bytes_per_emb = (double)st.mem_bytes / (double)st.n_embeddings;
  printf("\nbench_search: %llu passages, %llu embeddings (avg doclen %.1f), dim %d, nbits %d, "
         "%d centroids, %d queries of %d tokens, %d threads\n",
         (unsigned long long)st.n_passages, (unsigned long long)total_emb,
         (double)total_emb / (double)st.n_passages, DIM, o.nbits, ncent, nq, NQ, threads);
  printf("\n%-28s %10s %10s %10s %14s\n", "search", "p50 ms", "p95 ms", "mean ms", "vs exhaustive");
  for (int s = 0; s < NSET; s++)
    printf("%-28s %10.2f %10.2f %10.2f %13.1fx\n", names[s], p50[s], p95[s], mean[s], mean[S_EXH] / mean[s]);
  printf("  (accurate = ncells %d, threshold %.2f, ndocs %d)\n", o.acc_ncells, o.acc_threshold, o.acc_ndocs);
  printf("\n%-40s %10s %10s\n", "quality", "value", "goal");
  printf("%-40s %10.4f %10s\n", "Recall@10 vs exhaustive, k=10 defaults", rec10_def, ">= 0.95");
  printf("%-40s %10.4f %10s\n", "Recall@10 vs exhaustive, accurate", rec10_acc, ">= 0.99");
  printf("%-40s %10.4f %10s\n", "Recall@100 vs exhaustive, k=100 defaults", rec100, "-");
  printf("%-40s %10.1f %10s\n", "PLAID k=10 speed-up vs exhaustive (mean)", mean[S_EXH] / mean[S_P10], ">= 20x");
  printf("%-40s %10.2f %10s\n", "accurate cost / exhaustive (mean)", mean[S_ACC] / mean[S_EXH], "<= 0.20");
  const double codebook = (double)ncent * DIM * sizeof(float);
  printf("\n%-46s %10s %10s\n", "bytes per stored embedding (nbits 2: goal <= 40)", "value", "");
  if (have_store) {
    printf("%-46s %10.2f\n", "RocksDB partition, all column families", sst.bytes_per_embedding);
    for (int i = 0; i < 5; i++)
      printf("  %-44s %10.2f\n", jp_store_cf_names[i], (double)sst.cf_bytes[i] / (double)sst.n_embeddings);
  } else {
    printf("%-46s %10s\n", "RocksDB partition", "not built");
  }
  printf("%-46s %10.2f\n", "in memory (jp_part hot structures)", bytes_per_emb);
  printf("%-46s %10.2f\n", "  of which the codebook (centroids)", codebook / (double)st.n_embeddings);
  printf("  (in memory: codes %d B + residuals %zu B per embedding + IVF, slots, document table)\n",
         ncent <= 65536 ? 2 : 4, pb);
  if (rounds > 0) {
  printf("\nk-means: %zu points x %d dims, k=%d, %d iterations, same init, %d threads, median of %d\n",
         km_n, DIM, km_k, o.km_iters, threads, rounds);
  printf("%-28s %10s %16s\n", "", "seconds", "objective");
  printf("%-28s %10.2f %16.3f\n", "JaPLAID jp_kmeans", med_ours, obj_ours);
  if (have_faiss) {
    for (int c = 0; c < 2; c++)
      printf("FAISS 1.7.3 (omp %d, blas %d)%s %7.2f %16.3f\n", threads, c == 0 ? threads : 1,
             c == best_f ? "*" : " ", med_f[c], obj_f[c]);
    printf("%-28s %10.2fx %15.4f%%\n", "ratio (FAISS* / ours)", med_f[best_f] / med_ours,
           100.0 * (obj_ours - obj_f[best_f]) / obj_f[best_f]);
    printf("  (* the faster FAISS configuration; objective difference = (ours - FAISS) / FAISS)\n");
  } else {
    printf("FAISS: not run\n");
  }
  }
  printf("\npipeline k-means: %llu points, k=%d, %d iterations: %.1f s (objective %.2f)\n",
         (unsigned long long)nt, ncent, o.pipe_iters, pipe_km_s, pipe_obj);
  printf("compress + add %llu embeddings: %.1f s (%.0f embeddings/s)\n", (unsigned long long)total_emb,
         compress_s, (double)total_emb / compress_s);
  if (have_store) printf("RocksDB bulk build (compress + SST + ingest): %.1f s\n", store_s);

  if (have_faiss && o.keep_tmp) {
    fprintf(stderr, "k-means comparison files kept in %s\n", tmpdir);
  } else if (have_faiss) {
    char p2[600];
    const char *files[] = { "x.f32", "init.f32", "out.f32" };
    for (int i = 0; i < 3; i++) {
      snprintf(p2, sizeof p2, "%s/%s", tmpdir, files[i]);
      unlink(p2);
    }
    rmdir(tmpdir);
  }
  for (int s = 0; s < NSET; s++) {
    free(lat[s]);
    free(hits[s]);
  }
  free(Qs);
  free(kx);
  free(kinit);
  free(kc);
  free(pv);
  free(in_sample);
  free(g.topics);
  free(g.cdf);
  jp_arena_fini(&arena);
  jp_part_destroy(part);
  jp_codec_fini(&codec);
  jp_pool_destroy(pool);
  return 0;
}
