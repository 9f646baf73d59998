/* bench_index.c: helpers of the index-build benchmark (README.md); the
 * builds themselves are timed by bench_index.sh.
 *
 *   bench_index corpus --source TSV --out FILE [--docs N] [--seed S]
 *       A synthetic corpus of N documents (default 100,000): each is the
 *       title of one JSQuAD article and one clause (text up to 、 or 。) of
 *       another, both drawn with the seed, so the text is real Japanese
 *       (real token statistics) but the documents are new combinations,
 *       and short (about 20 vectors each: PLAID's plan makes k-means and
 *       compression cost grow with embeddings x centroids, and a 100k
 *       passage build must stay within minutes on 2 cores).
 *   bench_index kmeans --dump DIR [--threads T] [--rounds R] [--iters I]
 *       Our k-means (jp_kmeans) against FAISS on the sample a one-rank
 *       japlaid-index build clustered (JAPLAID_DUMP_KMEANS=DIR): same
 *       vectors, same initial centroids, same k and iterations, no
 *       subsampling. FAISS runs through bench/search/faiss_kmeans.py under
 *       Debian's /usr/bin/python3 with OMP_WAIT_POLICY=passive and the same
 *       threads. Runs alternate ours, FAISS, FAISS, ours, ...; medians. The
 *       objective of both final centroid sets (before normalisation) is
 *       computed here, the same way: the sum of squared distances of every
 *       point to its nearest centroid. Prints a table with ratios.
 *
 * Not a test: nothing is asserted; timings are whatever the machine gives. */
#include "index/kmeans.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/fs.h"
#include "util/hash.h"
#include "util/json.h"
#include "util/mem.h"
#include "util/pool.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest line of the source corpus we expect (JSQuAD: ~2 KB). */
#define LINE_MAX_BYTES (1 << 20)
/* Points per sgemm block in the objective: 1,024 x k floats of scratch. */
#define OBJ_BLOCK 1024
/* 5 CJK characters of 3 bytes. */
#define MIN_CLAUSE_BYTES 15
/* Alternated rounds: A B, B A, ... (2 rounds = A B B A). */
#define DEFAULT_ROUNDS 2

static void die(const char *msg)
{
  fprintf(stderr, "bench_index: %s\n", msg);
  exit(1);
}

/* ---- corpus ------------------------------------------------------------------------- */

struct strv {
  char **v;
  size_t n, cap;
};

static void strv_push(struct strv *s, const char *p, size_t len)
{
  if (jp_grow((void **)&s->v, &s->cap, s->n + 1, sizeof *s->v, 0) < 0) die("out of memory");
  if (!(s->v[s->n++] = jp_strndup(p, len))) die("out of memory");
}

/* Clauses of a paragraph: cut after 、。！？ (kept), without leading blanks. */
static void add_sentences(struct strv *s, const char *p, size_t len)
{
  size_t start = 0;
  for (size_t i = 0; i < len; i++) {
    /* 、 = E3 80 81, 。 = E3 80 82, ！ = EF BC 81, ？ = EF BC 9F */
    int end = i + 2 < len && (((unsigned char)p[i] == 0xE3 && (unsigned char)p[i + 1] == 0x80 &&
                               ((unsigned char)p[i + 2] == 0x81 || (unsigned char)p[i + 2] == 0x82)) ||
                              ((unsigned char)p[i] == 0xEF && (unsigned char)p[i + 1] == 0xBC &&
                               ((unsigned char)p[i + 2] == 0x81 || (unsigned char)p[i + 2] == 0x9F)));
    if (end || i + 1 == len) {
      size_t e = end ? i + 3 : len;
      while (start < e && p[start] == ' ') start++;
      /* Clauses under 5 CJK characters ("なお、") carry no content. */
      if (e >= start + MIN_CLAUSE_BYTES) strv_push(s, p + start, e - start);
      start = e;
      if (end) i += 2;
    }
  }
}

static int cmd_corpus(int argc, char **argv)
{
  const char *src = NULL, *out = NULL;
  long docs = 100000;
  uint64_t seed = 1, st;
  struct strv titles = {0}, sents = {0};
  char *line = malloc(LINE_MAX_BYTES);
  FILE *f, *o;

  for (int i = 2; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--source")) src = argv[i + 1];
    else if (!strcmp(argv[i], "--out")) out = argv[i + 1];
    else if (!strcmp(argv[i], "--docs")) docs = atol(argv[i + 1]);
    else if (!strcmp(argv[i], "--seed")) seed = strtoull(argv[i + 1], NULL, 10);
    else die("corpus: unknown option");
  }
  if (!src || !out || docs < 1 || !line) die("corpus: --source TSV --out FILE [--docs N] [--seed S]");
  if (!(f = fopen(src, "r"))) die("corpus: cannot open the source");
  /* id <TAB> title <TAB> paragraph */
  while (fgets(line, LINE_MAX_BYTES, f)) {
    char *t1 = strchr(line, '\t'), *t2 = t1 ? strchr(t1 + 1, '\t') : NULL;
    size_t len;
    if (!t2) continue;
    len = strcspn(t2 + 1, "\r\n");
    strv_push(&titles, t1 + 1, (size_t)(t2 - t1 - 1));
    add_sentences(&sents, t2 + 1, len);
  }
  fclose(f);
  if (!titles.n || !sents.n) die("corpus: no title<TAB>paragraph lines in the source");
  if (!(o = fopen(out, "w"))) die("corpus: cannot write the output");
  st = seed;
  for (long d = 0; d < docs; d++) {
    const char *t = titles.v[jp_rand64(&st) % titles.n], *s = sents.v[jp_rand64(&st) % sents.n];
    fprintf(o, "syn%07ld\t%s\t%s\n", d, t, s);
  }
  if (fclose(o) != 0) die("corpus: write failed");
  fprintf(stderr, "bench_index: %ld documents from %zu titles and %zu clauses -> %s\n", docs,
          titles.n, sents.n, out);
  for (size_t i = 0; i < titles.n; i++) jp_free(titles.v[i]);
  for (size_t i = 0; i < sents.n; i++) jp_free(sents.v[i]);
  jp_free(titles.v);
  jp_free(sents.v);
  free(line);
  return 0;
}

/* ---- k-means vs FAISS ---------------------------------------------------------------- */

static float *load_f32(const char *path, size_t nfloats)
{
  char *data = NULL;
  size_t len = 0;
  if (jp_read_file(path, (size_t)16 << 30, &data, &len) < 0 || len != nfloats * sizeof(float)) {
    fprintf(stderr, "bench_index: %s: expected %zu floats\n", path, nfloats);
    exit(1);
  }
  return (float *)data;
}

/* Sum over points of the squared distance to the nearest centroid. */
static double objective(const float *x, size_t n, const float *c, int k, int dim)
{
  float *dots = malloc((size_t)OBJ_BLOCK * (size_t)k * sizeof *dots);
  float *cn = malloc((size_t)k * sizeof *cn);
  double sum = 0;
  if (!dots || !cn) die("out of memory");
  for (int j = 0; j < k; j++) {
    float s = 0;
    for (int d = 0; d < dim; d++) s += c[(size_t)j * dim + d] * c[(size_t)j * dim + d];
    cn[j] = s;
  }
  for (size_t i0 = 0; i0 < n; i0 += OBJ_BLOCK) {
    int m = n - i0 < OBJ_BLOCK ? (int)(n - i0) : OBJ_BLOCK;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, k, dim, 1.0f, x + i0 * dim, dim, c,
                dim, 0.0f, dots, k);
    for (int i = 0; i < m; i++) {
      const float *xi = x + (i0 + (size_t)i) * dim;
      float xn = 0, best = FLT_MAX;
      for (int d = 0; d < dim; d++) xn += xi[d] * xi[d];
      for (int j = 0; j < k; j++) {
        float d2 = cn[j] - 2.0f * dots[(size_t)i * k + j];
        if (d2 < best) best = d2;
      }
      sum += fmax(0.0, (double)(xn + best));
    }
  }
  free(dots);
  free(cn);
  return sum;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double run_ours(const float *x, size_t n, int dim, const float *init, int k, int iters,
                       uint64_t seed, jp_pool *pool, float *out)
{
  struct jp_kmeans_opts ko;
  double t0;
  int k_out = 0, rc;
  memset(&ko, 0, sizeof ko);
  ko.k = k;
  ko.iters = iters;
  ko.seed = seed;
  ko.pool = pool;
  ko.normalize = 0;               /* compare raw Lloyd centroids with FAISS' */
  t0 = jp_now_s();
  rc = jp_kmeans(x, n, dim, &ko, init, out, &k_out, NULL);
  if (rc < 0) {
    fprintf(stderr, "bench_index: jp_kmeans: %s\n", jp_errmsg(rc));
    exit(1);
  }
  return jp_now_s() - t0;
}

static double run_faiss(const char *dump, int dim, int iters, int threads, const char *out)
{
  char cmd[8192], line[512];
  const char *src = getenv("JP_SOURCE_DIR");
  double secs = -1;
  FILE *p;
  snprintf(cmd, sizeof cmd,
           "OMP_WAIT_POLICY=passive OPENBLAS_NUM_THREADS=1 /usr/bin/python3 "
           "%s/bench/search/faiss_kmeans.py --x %s/x.f32 --init %s/init.f32 --out %s "
           "--dim %d --iters %d --threads %d", src ? src : JP_BENCH_SOURCE_DIR, dump, dump, out,
           dim, iters, threads);
  if (!(p = popen(cmd, "r"))) die("cannot run FAISS");
  while (fgets(line, sizeof line, p)) {
    const char *s = strstr(line, "\"seconds\":");
    if (s) secs = atof(s + 10);
  }
  if (pclose(p) != 0 || secs < 0) die("FAISS run failed (python3-faiss installed?)");
  return secs;
}

static int cmd_kmeans(int argc, char **argv)
{
  const char *dump = NULL;
  int threads = 2, rounds = DEFAULT_ROUNDS, n_ours = 0, n_faiss = 0, iters_opt = 0;
  char path[4096], fout[4200];
  json_t *meta = NULL;
  int64_t n64, dim64, k64, it64, seed64;
  jp_pool *pool = NULL;

  for (int i = 2; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--dump")) dump = argv[i + 1];
    else if (!strcmp(argv[i], "--threads")) threads = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--iters")) iters_opt = atoi(argv[i + 1]);
    else die("kmeans: unknown option");
  }
  if (!dump || threads < 1 || rounds < 1)
    die("kmeans: --dump DIR [--threads T] [--rounds R] [--iters I]");
  snprintf(path, sizeof path, "%s/kmeans.json", dump);
  if (jp_json_load_file(path, &meta) < 0 || jp_json_get_int(meta, "n", 0, &n64) < 0 ||
      jp_json_get_int(meta, "dim", 0, &dim64) < 0 || jp_json_get_int(meta, "k", 0, &k64) < 0 ||
      jp_json_get_int(meta, "iters", 0, &it64) < 0 || jp_json_get_int(meta, "seed", 0, &seed64) < 0)
    die("kmeans: cannot read kmeans.json of the dump");
  json_decref(meta);
  size_t n = (size_t)n64;
  int dim = (int)dim64, k = (int)k64, iters = iters_opt > 0 ? iters_opt : (int)it64;
  snprintf(path, sizeof path, "%s/x.f32", dump);
  float *x = load_f32(path, n * (size_t)dim);
  snprintf(path, sizeof path, "%s/init.f32", dump);
  float *init = load_f32(path, (size_t)k * (size_t)dim);
  float *ours = malloc((size_t)k * (size_t)dim * sizeof *ours), *theirs = NULL;
  double *t_ours = calloc((size_t)rounds, sizeof *t_ours), *t_faiss = calloc((size_t)rounds, sizeof *t_faiss);
  if (!ours || !t_ours || !t_faiss) die("out of memory");
  if (jp_pool_create(threads, &pool) < 0) die("pool");
  snprintf(fout, sizeof fout, "%s/faiss_centroids.f32", dump);
  fprintf(stderr, "bench_index: k-means on %zu x %d, k = %d, %d iterations, %d threads, %d rounds\n",
          n, dim, k, iters, threads, rounds);
  for (int r = 0; r < rounds; r++) {
    /* A B, B A, ...: neither side always runs on a warm or cold machine. */
    for (int side = 0; side < 2; side++) {
      int faiss = (side + r) % 2;
      if (faiss) t_faiss[n_faiss++] = run_faiss(dump, dim, iters, threads, fout);
      else t_ours[n_ours++] = run_ours(x, n, dim, init, k, iters, (uint64_t)seed64, pool, ours);
      fprintf(stderr, "  round %d: %s %.2fs\n", r + 1, faiss ? "FAISS" : "ours ",
              faiss ? t_faiss[n_faiss - 1] : t_ours[n_ours - 1]);
    }
  }
  theirs = load_f32(fout, (size_t)k * (size_t)dim);
  double obj_ours = objective(x, n, ours, k, dim), obj_faiss = objective(x, n, theirs, k, dim);
  double mo = median(t_ours, n_ours), mf = median(t_faiss, n_faiss);
  printf("| k-means (%zu points, k=%d, %d iters, %d threads) | ours | FAISS | ours/FAISS |\n", n, k,
         iters, threads);
  printf("|---|---|---|---|\n");
  printf("| seconds (median of %d) | %.2f | %.2f | %.2f |\n", rounds, mo, mf, mo / mf);
  printf("| objective (sum sq. dist.) | %.6g | %.6g | %.4f |\n", obj_ours, obj_faiss, obj_ours / obj_faiss);
  jp_pool_destroy(pool);
  jp_free(x);
  jp_free(init);
  jp_free(theirs);
  free(ours);
  free(t_ours);
  free(t_faiss);
  return 0;
}

int main(int argc, char **argv)
{
  if (argc >= 2 && !strcmp(argv[1], "corpus")) return cmd_corpus(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "kmeans")) return cmd_kmeans(argc, argv);
  fprintf(stderr, "usage: bench_index corpus --source TSV --out FILE [--docs N] [--seed S]\n"
                  "       bench_index kmeans --dump DIR [--threads T] [--rounds R] [--iters I]\n");
  return 2;
}
