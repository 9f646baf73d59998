/* mpi_check.c: what the japlaid-index tests measure, as one small tool
 * (the shell tests drive mpirun and `japlaid search`; this does the maths):
 *
 *   mpi_check codec A B [--min-cos X] [--same]
 *       centroids of partition A matched to their nearest (max cosine) in
 *       partition B: mean and min cosine, bucket differences, whether the
 *       codecs are bit-identical. --min-cos fails below X; --same fails
 *       unless bit-identical. One JSON line.
 *   mpi_check merge K FILE...
 *       `japlaid search` outputs of the partitions of one index (same
 *       queries, same order) merged by score into the top K per query.
 *   mpi_check agree A B [--exact] [--min F]
 *       two result files (search or merge output): per query, is the top-k
 *       the same set of passages, in the same order, with the same scores?
 *       A passage is (document id, content): pids differ between builds
 *       with different partition counts. --exact fails unless every query
 *       has the same passages, order and scores (ties of equal score may
 *       come in any order); --min fails if the share with the same set is
 *       below F. One JSON line.
 *
 * Exit status: 0 pass, 1 check failed, 2 usage or I/O error. */
#include <cblas.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "index/store.h"
#include "util/err.h"
#include "util/mem.h"

struct hit {
  char *doc, *content;
  double score;
};

struct query {
  char *qid;
  struct hit *hits;
  int n;
};

struct run {
  struct query *q;
  int n;
};

static void run_free(struct run *r)
{
  for (int i = 0; i < r->n; i++) {
    for (int j = 0; j < r->q[i].n; j++) {
      free(r->q[i].hits[j].doc);
      free(r->q[i].hits[j].content);
    }
    free(r->q[i].hits);
    free(r->q[i].qid);
  }
  free(r->q);
  memset(r, 0, sizeof *r);
}

static char *dup_str(const char *s) { return strdup(s ? s : ""); }

/* One JSON line per query: {"qid"?, "results":[{"document_id","content","score"}...]}. */
static int load_run(const char *path, struct run *r)
{
  FILE *f = fopen(path, "r");
  char *line = NULL;
  size_t cap = 0;
  ssize_t len;
  memset(r, 0, sizeof *r);
  if (!f) {
    fprintf(stderr, "mpi_check: cannot open %s\n", path);
    return -1;
  }
  while ((len = getline(&line, &cap, f)) > 0) {
    json_error_t e;
    json_t *o = json_loadb(line, (size_t)len, 0, &e), *res;
    struct query *q;
    if (!o || !json_is_array(res = json_object_get(o, "results"))) {
      fprintf(stderr, "mpi_check: %s:%d: not a search result line\n", path, r->n + 1);
      json_decref(o);
      free(line);
      fclose(f);
      return -1;
    }
    r->q = realloc(r->q, (size_t)(r->n + 1) * sizeof *r->q);
    q = &r->q[r->n++];
    q->qid = dup_str(json_string_value(json_object_get(o, "qid")));
    q->n = (int)json_array_size(res);
    q->hits = calloc((size_t)(q->n ? q->n : 1), sizeof *q->hits);
    for (int j = 0; j < q->n; j++) {
      json_t *h = json_array_get(res, (size_t)j);
      q->hits[j].doc = dup_str(json_string_value(json_object_get(h, "document_id")));
      q->hits[j].content = dup_str(json_string_value(json_object_get(h, "content")));
      q->hits[j].score = json_number_value(json_object_get(h, "score"));
    }
    json_decref(o);
  }
  free(line);
  fclose(f);
  return 0;
}

/* Score descending; ties by document id, then content (a total order, so
 * a merge does not depend on file order). */
static int cmp_hit(const void *a, const void *b)
{
  const struct hit *x = a, *y = b;
  int c;
  if (x->score != y->score) return x->score > y->score ? -1 : 1;
  if ((c = strcmp(x->doc, y->doc))) return c;
  return strcmp(x->content, y->content);
}

static void print_json_str(const char *s)
{
  json_t *j = json_string(s);
  char *d = json_dumps(j, JSON_ENCODE_ANY);
  fputs(d ? d : "\"\"", stdout);
  free(d);
  json_decref(j);
}

static int cmd_merge(int argc, char **argv)
{
  int k, nf = argc - 3;
  struct run *runs;
  if (argc < 4) return 2;
  k = atoi(argv[2]);
  runs = calloc((size_t)nf, sizeof *runs);
  for (int i = 0; i < nf; i++)
    if (load_run(argv[3 + i], &runs[i]) < 0) return 2;
  for (int i = 1; i < nf; i++)
    if (runs[i].n != runs[0].n) {
      fprintf(stderr, "mpi_check merge: %s has %d queries, %s %d\n", argv[3 + i], runs[i].n,
              argv[3], runs[0].n);
      return 2;
    }
  for (int qi = 0; qi < runs[0].n; qi++) {
    int tot = 0, m = 0;
    struct hit *all;
    for (int i = 0; i < nf; i++) tot += runs[i].q[qi].n;
    all = calloc((size_t)(tot ? tot : 1), sizeof *all);
    for (int i = 0; i < nf; i++)
      for (int j = 0; j < runs[i].q[qi].n; j++) all[m++] = runs[i].q[qi].hits[j];
    qsort(all, (size_t)m, sizeof *all, cmp_hit);
    fputs("{\"qid\":", stdout);
    print_json_str(runs[0].q[qi].qid);
    fputs(",\"results\":[", stdout);
    for (int j = 0; j < m && j < k; j++) {
      printf("%s{\"document_id\":", j ? "," : "");
      print_json_str(all[j].doc);
      fputs(",\"content\":", stdout);
      print_json_str(all[j].content);
      printf(",\"score\":%.9g,\"rank\":%d}", all[j].score, j + 1);
    }
    fputs("]}\n", stdout);
    free(all);
  }
  for (int i = 0; i < nf; i++) run_free(&runs[i]);
  free(runs);
  return 0;
}

static int same_hit(const struct hit *a, const struct hit *b)
{
  return !strcmp(a->doc, b->doc) && !strcmp(a->content, b->content);
}

/* Same passages as sets. */
static int same_set(const struct query *a, const struct query *b)
{
  if (a->n != b->n) return 0;
  for (int i = 0; i < a->n; i++) {
    int found = 0;
    for (int j = 0; j < b->n && !found; j++) found = same_hit(&a->hits[i], &b->hits[j]);
    if (!found) return 0;
  }
  return 1;
}

/* Same order and bit-equal scores, reading runs of equal scores as sets. */
static int same_exact(const struct query *a, const struct query *b)
{
  if (a->n != b->n) return 0;
  for (int i = 0; i < a->n; i++)
    if (a->hits[i].score != b->hits[i].score) return 0;
  for (int i = 0; i < a->n;) {
    int e = i, last_tie;
    while (e < a->n && a->hits[e].score == a->hits[i].score) e++;
    /* A tie group cut by the end of the list may hold other members. */
    last_tie = e == a->n && e - i > 1;
    for (int x = i; x < e && !last_tie; x++) {
      int found = 0;
      for (int y = i; y < e && !found; y++) found = same_hit(&a->hits[x], &b->hits[y]);
      if (!found) return 0;
    }
    i = e;
  }
  return 1;
}

static int cmd_agree(int argc, char **argv)
{
  struct run a, b;
  int exact = 0, n_set = 0, n_order = 0, n_exact = 0, rc = 0;
  double min = -1;
  if (argc < 4) return 2;
  for (int i = 4; i < argc; i++) {
    if (!strcmp(argv[i], "--exact")) exact = 1;
    else if (!strcmp(argv[i], "--min") && i + 1 < argc) min = atof(argv[++i]);
    else return 2;
  }
  if (load_run(argv[2], &a) < 0 || load_run(argv[3], &b) < 0) return 2;
  if (a.n != b.n || a.n == 0) {
    fprintf(stderr, "mpi_check agree: %d vs %d queries\n", a.n, b.n);
    return 2;
  }
  for (int i = 0; i < a.n; i++) {
    int order = a.q[i].n == b.q[i].n;
    for (int j = 0; j < a.q[i].n && order; j++) order = same_hit(&a.q[i].hits[j], &b.q[i].hits[j]);
    n_set += same_set(&a.q[i], &b.q[i]);
    n_order += order;
    n_exact += same_exact(&a.q[i], &b.q[i]);
  }
  printf("{\"queries\":%d,\"same_set\":%d,\"same_order\":%d,\"same_exact\":%d,"
         "\"frac_same_set\":%.4f,\"frac_same_order\":%.4f,\"frac_same_exact\":%.4f}\n",
         a.n, n_set, n_order, n_exact, (double)n_set / a.n, (double)n_order / a.n,
         (double)n_exact / a.n);
  if (exact && n_exact != a.n) rc = 1;
  if (min >= 0 && (double)n_set / a.n < min) rc = 1;
  run_free(&a);
  run_free(&b);
  return rc;
}

static int cmd_codec(int argc, char **argv)
{
  struct jp_store_opts so;
  jp_store *sa = NULL, *sb = NULL;
  const struct jp_codec *ca, *cb;
  double min_cos_req = -2, sum = 0, mn = 2, dbuck = 0;
  int same_req = 0, rc = 0, same, nb;
  float *dots;
  const int BLK = 256;   /* rows of A per sgemm: 256 x k floats of scratch */

  if (argc < 4) return 2;
  for (int i = 4; i < argc; i++) {
    if (!strcmp(argv[i], "--min-cos") && i + 1 < argc) min_cos_req = atof(argv[++i]);
    else if (!strcmp(argv[i], "--same")) same_req = 1;
    else return 2;
  }
  jp_store_opts_default(&so);
  so.read_only = 1;
  if ((rc = jp_store_open(argv[2], &so, &sa)) < 0 || (rc = jp_store_open(argv[3], &so, &sb)) < 0) {
    fprintf(stderr, "mpi_check codec: %s\n", jp_errmsg(rc));
    jp_store_close(sa);
    return 2;
  }
  ca = jp_store_codec(sa);
  cb = jp_store_codec(sb);
  if (ca->dim != cb->dim || ca->nbits != cb->nbits) {
    fprintf(stderr, "mpi_check codec: shapes differ (dim %d/%d, nbits %d/%d)\n", ca->dim, cb->dim,
            ca->nbits, cb->nbits);
    jp_store_close(sa);
    jp_store_close(sb);
    return 1;
  }
  nb = 1 << ca->nbits;
  same = ca->ncentroids == cb->ncentroids &&
         !memcmp(ca->centroids, cb->centroids, (size_t)ca->ncentroids * (size_t)ca->dim * sizeof(float)) &&
         !memcmp(ca->cutoffs, cb->cutoffs, (size_t)(nb - 1) * sizeof(float)) &&
         !memcmp(ca->weights, cb->weights, (size_t)nb * sizeof(float));
  for (int i = 0; i < nb - 1; i++) dbuck = fmax(dbuck, fabs(ca->cutoffs[i] - cb->cutoffs[i]));
  for (int i = 0; i < nb; i++) dbuck = fmax(dbuck, fabs(ca->weights[i] - cb->weights[i]));
  dots = malloc((size_t)BLK * (size_t)cb->ncentroids * sizeof *dots);
  for (int i0 = 0; i0 < ca->ncentroids; i0 += BLK) {
    int m = ca->ncentroids - i0 < BLK ? ca->ncentroids - i0 : BLK;
    /* Both tables are unit rows: the dot product is the cosine. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, cb->ncentroids, ca->dim, 1.0f,
                ca->centroids + (size_t)i0 * (size_t)ca->dim, ca->dim, cb->centroids, cb->dim, 0.0f,
                dots, cb->ncentroids);
    for (int i = 0; i < m; i++) {
      float best = -2;
      for (int j = 0; j < cb->ncentroids; j++)
        if (dots[(size_t)i * (size_t)cb->ncentroids + (size_t)j] > best)
          best = dots[(size_t)i * (size_t)cb->ncentroids + (size_t)j];
      sum += best;
      if (best < mn) mn = best;
    }
  }
  free(dots);
  printf("{\"centroids_a\":%d,\"centroids_b\":%d,\"identical\":%s,\"mean_matched_cosine\":%.6f,"
         "\"min_matched_cosine\":%.6f,\"max_bucket_diff\":%.3g}\n", ca->ncentroids, cb->ncentroids,
         same ? "true" : "false", sum / ca->ncentroids, mn, dbuck);
  if (min_cos_req > -2 && sum / ca->ncentroids < min_cos_req) rc = 1;
  if (same_req && !same) rc = 1;
  jp_store_close(sa);
  jp_store_close(sb);
  return rc;
}

int main(int argc, char **argv)
{
  if (argc >= 2 && !strcmp(argv[1], "codec")) return cmd_codec(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "merge")) return cmd_merge(argc, argv);
  if (argc >= 2 && !strcmp(argv[1], "agree")) return cmd_agree(argc, argv);
  fprintf(stderr, "usage: mpi_check codec A B [--min-cos X] [--same] | merge K FILE... | "
          "agree A B [--exact] [--min F]\n");
  return 2;
}
