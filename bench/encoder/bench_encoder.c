/* bench_encoder.c: the JaPLAID side of the encoder benchmark, and the sgemm
 * peak probe (bench/encoder/README.md; driven by run_bench.py).
 *
 *   bench_encoder --model DIR [--threads N] [--max-tokens N]
 *       loads the checkpoint (jp_model_open, CPU backend) and serves
 *       commands on stdin, one JSON line per answer on stdout:
 *         run KIND B L        encode B sequences of L tokens (KIND q|d),
 *                             answer {"ms": wall time of jp_encode_seqs}
 *         dump KIND B L PATH  the same, and write the [B*L, dim] float32
 *                             output to PATH (for the parity check)
 *         rss                 {"vmhwm_mb", "vmrss_mb"} of this process
 *         quit
 *   bench_encoder --sgemm-peak [--threads N]
 *       serves "peak": OpenBLAS sgemm C[3072x2048] = A[3072x768] B[768x2048]
 *       repeated for about 0.5 s, answer {"gflops": median over calls}.
 *       A separate process, so its 40 MB of matrices never count in the
 *       encoder's peak RSS.
 *
 * Inputs follow bench_ids() (same rule as torch_encoder.py), so both sides
 * encode identical batches. A benchmark, not a test: it asserts nothing. */
#include "model/model.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/mem.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* [CLS]=2, marker (5 query / 6 document), pseudo-random ids in [7, vocab),
 * [SEP]=3 -- torch_encoder.py's bench_ids() computes the same ids. */
static void bench_ids(char kind, int B, int L, int vocab, int32_t *ids)
{
  for (int b = 0; b < B; b++) {
    int32_t *r = ids + (size_t)b * L;
    for (int i = 0; i < L; i++)
      r[i] = 7 + (int32_t)(((int64_t)b * 1000003 + (int64_t)i * 7919 + 12345) % (vocab - 7));
    r[0] = 2;
    if (L > 1) r[1] = kind == 'q' ? 5 : 6;
    if (L > 2) r[L - 1] = 3;
  }
}

static long status_kb(const char *field)
{
  char line[256];
  long v = 0;
  size_t n = strlen(field);
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return 0;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, field, n) && line[n] == ':') {
      v = strtol(line + n + 1, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

static int cmp_double(const void *a, const void *b)
{
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static int serve_peak(void)
{
  enum { M = 3072, N = 2048, K = 768 };
  float *A = jp_aligned_alloc(sizeof(float) * M * K), *B = jp_aligned_alloc(sizeof(float) * K * N);
  float *C = jp_aligned_alloc(sizeof(float) * M * N);
  char line[256];
  if (!A || !B || !C) return 1;
  for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)(i % 17) * 0.01f;
  for (size_t i = 0; i < (size_t)K * N; i++) B[i] = (float)(i % 13) * 0.01f;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, A, K, B, N, 0, C, N);
  printf("{\"ok\": true}\n");
  fflush(stdout);
  while (fgets(line, sizeof line, stdin)) {
    if (!strncmp(line, "quit", 4)) break;
    if (strncmp(line, "peak", 4) != 0) {
      printf("{\"error\": \"unknown command\"}\n");
      fflush(stdout);
      continue;
    }
    double g[64];
    int n = 0;
    double t_end = jp_now_s() + 0.5;
    while (n < 64 && (n < 3 || jp_now_s() < t_end)) {
      double t = jp_now_s();
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, A, K, B, N, 0, C, N);
      g[n++] = 2.0 * M * N * K / (jp_now_s() - t) * 1e-9;
    }
    qsort(g, (size_t)n, sizeof *g, cmp_double);
    printf("{\"gflops\": %.2f, \"calls\": %d}\n", g[n / 2], n);
    fflush(stdout);
  }
  jp_aligned_free(A);
  jp_aligned_free(B);
  jp_aligned_free(C);
  return 0;
}

static int serve_model(const char *dir, int threads, int max_tokens)
{
  struct jp_model_opts o;
  jp_model *m = NULL;
  jp_encoder *e = NULL;
  char line[1024];
  int rc;

  jp_model_opts_default(&o);
  o.n_threads = threads;
  o.max_batch_tokens = max_tokens;
  double t0 = jp_now_s();
  if ((rc = jp_model_open(dir, &o, &m)) != 0 || (rc = jp_encoder_create(m, &e)) != 0) {
    fprintf(stderr, "bench_encoder: %s: %s\n", dir, jp_errmsg(rc));
    jp_model_close(m);
    return 1;
  }
  const struct jp_model_info *info = jp_model_get_info(m);
  if (info->kind != JP_MODEL_BERT) {
    fprintf(stderr, "bench_encoder: %s is not a BERT checkpoint\n", dir);
    return 1;
  }
  int vocab = info->bert.vocab_size, dim = info->colbert.dim;
  printf("{\"ok\": true, \"load_s\": %.3f, \"dtype\": \"%s\", \"hidden\": %d, \"layers\": %d, "
         "\"vmrss_mb\": %.1f}\n", jp_now_s() - t0, info->dtype, info->bert.hidden,
         info->bert.layers, status_kb("VmRSS") / 1024.0);
  fflush(stdout);

  while (fgets(line, sizeof line, stdin)) {
    char cmd[16], kind[4], path[768];
    int B = 0, L = 0;
    int nf = sscanf(line, "%15s %3s %d %d %767s", cmd, kind, &B, &L, path);
    if (nf >= 1 && !strcmp(cmd, "quit")) break;
    if (nf >= 1 && !strcmp(cmd, "rss")) {
      printf("{\"vmhwm_mb\": %.1f, \"vmrss_mb\": %.1f}\n", status_kb("VmHWM") / 1024.0,
             status_kb("VmRSS") / 1024.0);
      fflush(stdout);
      continue;
    }
    int dump = nf == 5 && !strcmp(cmd, "dump");
    if (!(dump || (nf == 4 && !strcmp(cmd, "run"))) || (kind[0] != 'q' && kind[0] != 'd') ||
        B < 1 || L < 3 || B > 100000 || L > 100000) {
      printf("{\"error\": \"bad command\"}\n");
      fflush(stdout);
      continue;
    }
    size_t n = (size_t)B * L;
    int32_t *ids = jp_malloc(n * sizeof *ids);
    uint8_t *mask = jp_malloc(n);
    struct jp_token_seq *seqs = jp_malloc((size_t)B * sizeof *seqs);
    float *out = jp_aligned_alloc(n * (size_t)dim * sizeof(float));
    int32_t *lens = jp_malloc((size_t)B * sizeof *lens);
    if (!ids || !mask || !seqs || !out || !lens) {
      printf("{\"error\": \"out of memory\"}\n");
    } else {
      bench_ids(kind[0], B, L, vocab, ids);
      memset(mask, 1, n);   /* every position attended (queries) / kept (documents) */
      for (int b = 0; b < B; b++)
        seqs[b] = (struct jp_token_seq){ .ids = ids + (size_t)b * L, .mask = mask + (size_t)b * L,
                                         .len = L };
      double t = jp_now_s();
      rc = jp_encode_seqs(e, kind[0] == 'q', seqs, B, out, n, lens);
      double ms = (jp_now_s() - t) * 1e3;
      if (rc != 0) {
        printf("{\"error\": \"%s\"}\n", jp_errmsg(rc));
      } else {
        if (dump) {
          FILE *f = fopen(path, "wb");
          if (!f || fwrite(out, sizeof(float) * (size_t)dim, n, f) != n) rc = JP_EIO;
          if (f) fclose(f);
        }
        if (rc) printf("{\"error\": \"cannot write %s\"}\n", path);
        else printf("{\"ms\": %.3f}\n", ms);
      }
    }
    fflush(stdout);
    jp_free(ids);
    jp_free(mask);
    jp_free(seqs);
    jp_aligned_free(out);
    jp_free(lens);
  }
  jp_encoder_destroy(e);
  jp_model_close(m);
  return 0;
}

int main(int argc, char **argv)
{
  const char *dir = NULL;
  int threads = 2, max_tokens = 0, peak = 0;

  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--sgemm-peak")) peak = 1;
    else if (!strcmp(argv[i], "--model") && i + 1 < argc) dir = argv[++i];
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--max-tokens") && i + 1 < argc) max_tokens = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: bench_encoder --model DIR [--threads N] [--max-tokens N]\n"
                      "       bench_encoder --sgemm-peak\n");
      return 2;
    }
  }
  if (peak) return serve_peak();
  if (!dir) {
    fprintf(stderr, "bench_encoder: --model DIR is required\n");
    return 2;
  }
  return serve_model(dir, threads, max_tokens);
}
