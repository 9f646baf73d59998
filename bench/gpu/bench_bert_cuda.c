/* bench_bert_cuda.c: encoder throughput of the CUDA backend on a full-size
 * random BERT (bert-base shape: 12 layers, hidden 768, 12 heads,
 * intermediate 3072, vocab 32768, out_dim 128), generated in process.
 *
 * Times forward() (ids/attn in, the whole encoder, [B, L, 128] out) with
 * CUDA events after warm-up and reports tokens/s and the achieved GEMM
 * TFLOP/s against an assumed dense BF16 peak. The host<->device copies
 * inside forward() are timed separately with the same sizes so the
 * device-side rate can be read too.
 *
 * Usage: bench_bert_cuda [--batch 64] [--len 256] [--iters 20] [--warmup 3]
 *                        [--gpu 0] [--layers 12] [--peak TFLOPS]
 * Exit: 0 done, 77 no GPU (prints "no GPU: skipped"), 1 error. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "model/bert.h"
#include "model/bert_cuda.h"
#include "model/cuda/bert_cuda_int.h"
#include "util/clock.h"
#include "util/err.h"
#include "util/hash.h"

/* Dense BF16 tensor-core peak of an H100/H200 SXM (989.4 TFLOP/s): NVIDIA's
 * H100 and H200 datasheets list 1,979 TFLOPS "with sparsity" for BF16, and
 * 2:4 sparsity doubles the dense rate. H200 NVL (PCIe) is lower (~835);
 * --peak overrides. */
#define ASSUMED_PEAK_TFLOPS 989.4

/* Dense BF16 FLOP per clock per SM of the tensor cores: 4096 on sm_90
 * (989.4e12 / (132 SMs x 1.83 GHz)), 2048 on sm_80 (312e12 / (108 x
 * 1.41 GHz)). Used only for a second, device-derived estimate. */
static double flop_per_clk_per_sm(int major)
{
  return major == 9 ? 4096.0 : major == 8 ? 2048.0 : 0.0;
}

static void fill(float *p, size_t n, uint64_t *st, float mean, float sd)
{
  for (size_t i = 0; i < n; i++) p[i] = mean + sd * jp_randn(st);
}

/* A bert-base shaped model with BERT's initialisation scale (N(0, 0.02),
 * LayerNorm 1/0): values do not change the speed, only the shapes do. */
static int make_model(const struct bert_config *c, float **buf_out,
                      struct bert_layer_weights **layers_out, struct bert_weights *w)
{
  size_t H = (size_t)c->hidden, I = (size_t)c->intermediate;
  size_t per_layer = 4 * H * H + 4 * H + 2 * H + 2 * I * H + I + H + 2 * H;
  size_t n = ((size_t)c->vocab_size + (size_t)c->max_position + (size_t)c->type_vocab + 2) * H +
             (size_t)c->layers * per_layer + (size_t)c->out_dim * H;
  float *buf = malloc(n * sizeof(float));
  struct bert_layer_weights *ly = calloc((size_t)c->layers, sizeof *ly);
  if (!buf || !ly) {
    free(buf);
    free(ly);
    return JP_ENOMEM;
  }
  uint64_t st = 12345;
  float *cur = buf;
#define TAKE(n_, mean_, sd_) (fill(cur, (n_), &st, (mean_), (sd_)), cur += (n_), cur - (n_))
  memset(w, 0, sizeof *w);
  w->cfg = *c;
  w->word_emb = TAKE((size_t)c->vocab_size * H, 0.0f, 0.02f);
  w->pos_emb = TAKE((size_t)c->max_position * H, 0.0f, 0.02f);
  w->type_emb = TAKE((size_t)c->type_vocab * H, 0.0f, 0.02f);
  w->emb_ln_g = TAKE(H, 1.0f, 0.0f);
  w->emb_ln_b = TAKE(H, 0.0f, 0.0f);
  for (int l = 0; l < c->layers; l++) {
    ly[l].q_w = TAKE(H * H, 0.0f, 0.02f);
    ly[l].q_b = TAKE(H, 0.0f, 0.0f);
    ly[l].k_w = TAKE(H * H, 0.0f, 0.02f);
    ly[l].k_b = TAKE(H, 0.0f, 0.0f);
    ly[l].v_w = TAKE(H * H, 0.0f, 0.02f);
    ly[l].v_b = TAKE(H, 0.0f, 0.0f);
    ly[l].ao_w = TAKE(H * H, 0.0f, 0.02f);
    ly[l].ao_b = TAKE(H, 0.0f, 0.0f);
    ly[l].ln1_g = TAKE(H, 1.0f, 0.0f);
    ly[l].ln1_b = TAKE(H, 0.0f, 0.0f);
    ly[l].i_w = TAKE(I * H, 0.0f, 0.02f);
    ly[l].i_b = TAKE(I, 0.0f, 0.0f);
    ly[l].o_w = TAKE(H * I, 0.0f, 0.02f);
    ly[l].o_b = TAKE(H, 0.0f, 0.0f);
    ly[l].ln2_g = TAKE(H, 1.0f, 0.0f);
    ly[l].ln2_b = TAKE(H, 0.0f, 0.0f);
  }
  w->layer = ly;
  w->proj_w = TAKE((size_t)c->out_dim * H, 0.0f, 0.02f);
#undef TAKE
  *buf_out = buf;
  *layers_out = ly;
  return 0;
}

/* Matmul FLOPs of one forward (2 per multiply-add): per layer QKV 3H^2,
 * attention output H^2, intermediate and output 2HI per token, plus the two
 * attention products 2*L*H per token; the projection H*out per token.
 * Elementwise work is not counted (it is not tensor-core work). */
static double forward_flops(const struct bert_config *c, int B, int L)
{
  double T = (double)B * L, H = c->hidden, I = c->intermediate;
  double per_layer = 2.0 * T * (4.0 * H * H + 2.0 * H * I) + 2.0 * 2.0 * T * L * H;
  return c->layers * per_layer + 2.0 * T * H * c->out_dim;
}

static int arg_int(int argc, char **argv, int *i, int *out)
{
  if (*i + 1 >= argc) return -1;
  char *end;
  long v = strtol(argv[++*i], &end, 10);
  if (*end || v <= 0 || v > 1 << 24) return -1;
  *out = (int)v;
  return 0;
}

#define CK(call)                                                              \
  do {                                                                        \
    cudaError_t e_ = (call);                                                  \
    if (e_ != cudaSuccess) {                                                  \
      fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(e_));             \
      goto out;                                                               \
    }                                                                         \
  } while (0)

int main(int argc, char **argv)
{
  int B = 64, L = 256, iters = 20, warmup = 3, gpu = 0, layers = 12;
  double peak = ASSUMED_PEAK_TFLOPS;
  for (int i = 1; i < argc; i++) {
    int bad = 0;
    if (!strcmp(argv[i], "--batch")) bad = arg_int(argc, argv, &i, &B);
    else if (!strcmp(argv[i], "--len")) bad = arg_int(argc, argv, &i, &L);
    else if (!strcmp(argv[i], "--iters")) bad = arg_int(argc, argv, &i, &iters);
    else if (!strcmp(argv[i], "--warmup")) bad = arg_int(argc, argv, &i, &warmup);
    else if (!strcmp(argv[i], "--gpu")) {
      bad = i + 1 >= argc;
      if (!bad) gpu = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--layers")) bad = arg_int(argc, argv, &i, &layers);
    else if (!strcmp(argv[i], "--peak")) {
      bad = i + 1 >= argc || (peak = atof(argv[++i])) <= 0;
    } else bad = 1;
    if (bad) {
      fprintf(stderr, "usage: %s [--batch 64] [--len 256] [--iters 20] [--warmup 3] [--gpu 0] "
                      "[--layers 12] [--peak TFLOPS]\n", argv[0]);
      return 1;
    }
  }
  int ndev = bert_cuda_device_count();
  if (ndev <= 0) {
    printf("no GPU: skipped\n");
    return 77;
  }

  const struct bert_config cfg = {
    .vocab_size = 32768, .hidden = 768, .layers = layers, .heads = 12, .intermediate = 3072,
    .max_position = 512, .type_vocab = 2, .layer_norm_eps = 1e-12f, .out_dim = 128,
  };
  if (L > cfg.max_position) {
    fprintf(stderr, "--len %d exceeds max_position %d\n", L, cfg.max_position);
    return 1;
  }
  int rcode = 1;
  float *wbuf = NULL, *out = NULL;
  struct bert_layer_weights *ly = NULL;
  struct bert_weights w;
  struct bert_backend *be = NULL;
  int32_t *ids = NULL;
  uint8_t *attn = NULL;
  float *dev = NULL, *ms = NULL;
  cudaEvent_t ev[2] = { NULL, NULL };
  size_t T = (size_t)B * L, D = (size_t)cfg.out_dim;

  struct cudaDeviceProp prop;
  int clock_khz = 0, drv = 0, rt = 0;
  CK(cudaGetDeviceProperties(&prop, gpu));
  CK(cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, gpu));
  CK(cudaDriverGetVersion(&drv));
  CK(cudaRuntimeGetVersion(&rt));
  printf("device %d of %d: %s, sm_%d%d, %d SMs, max clock %.0f MHz, %zu MiB; driver %d.%d, "
         "runtime %d.%d\n", gpu, ndev, prop.name, prop.major, prop.minor,
         prop.multiProcessorCount, clock_khz / 1e3, prop.totalGlobalMem >> 20, drv / 1000,
         drv % 1000 / 10, rt / 1000, rt % 1000 / 10);

  double t0 = jp_now_s();
  if (make_model(&cfg, &wbuf, &ly, &w) < 0) {
    fprintf(stderr, "out of host memory for the model\n");
    goto out;
  }
  double t1 = jp_now_s();
  int rc = bert_cuda_create(&w, (int)T, gpu, &be);
  if (rc < 0) {
    fprintf(stderr, "bert_cuda_create: %s\n", jp_errmsg(rc));
    goto out;
  }
  double t2 = jp_now_s();
  printf("model: %d layers, hidden %d, %d heads, intermediate %d, vocab %d, out %d; "
         "random weights %.1f s, create+upload %.2f s\n", cfg.layers, cfg.hidden, cfg.heads,
         cfg.intermediate, cfg.vocab_size, cfg.out_dim, t1 - t0, t2 - t1);

  ids = malloc(T * sizeof *ids);
  attn = malloc(T);
  out = malloc(T * D * sizeof(float));
  ms = malloc((size_t)iters * sizeof *ms);
  if (!ids || !attn || !out || !ms) {
    fprintf(stderr, "out of host memory\n");
    goto out;
  }
  /* Full-length sequences, all attended (the dense case: no padding), each
   * starting with [CLS] = 2 like real input. */
  uint64_t st = 7;
  for (size_t t = 0; t < T; t++) {
    ids[t] = 7 + (int32_t)(jp_rand64(&st) % (uint64_t)(cfg.vocab_size - 7));
    attn[t] = 1;
  }
  for (int b = 0; b < B; b++) ids[(size_t)b * L] = 2;

  for (int i = 0; i < warmup; i++)
    if ((rc = be->forward(be, ids, attn, B, L, out)) < 0) {
      fprintf(stderr, "forward: %s\n", jp_errmsg(rc));
      goto out;
    }
  CK(cudaEventCreate(&ev[0]));
  CK(cudaEventCreate(&ev[1]));
  /* Events on the legacy default stream bracket each call: forward() runs
   * on the backend's own non-blocking stream and returns after it has
   * synchronised, so the bracket is the full call as the GPU clock sees it. */
  double sum = 0, best = INFINITY;
  double w0 = jp_now_s();
  for (int i = 0; i < iters; i++) {
    CK(cudaEventRecord(ev[0], 0));
    if ((rc = be->forward(be, ids, attn, B, L, out)) < 0) {
      fprintf(stderr, "forward: %s\n", jp_errmsg(rc));
      goto out;
    }
    CK(cudaEventRecord(ev[1], 0));
    CK(cudaEventSynchronize(ev[1]));
    CK(cudaEventElapsedTime(&ms[i], ev[0], ev[1]));
    sum += ms[i];
    if (ms[i] < best) best = ms[i];
  }
  double wall = jp_now_s() - w0;
  double mean = sum / iters;

  /* The copies forward() makes (ids + attn in, pageable; embeddings out,
   * pageable), timed alone. */
  float copy_ms = 0;
  CK(cudaSetDevice(gpu));
  CK(cudaMalloc((void **)&dev, T * D * sizeof(float)));
  CK(cudaEventRecord(ev[0], 0));
  for (int i = 0; i < iters; i++) {
    CK(cudaMemcpy(dev, ids, T * sizeof *ids, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(dev, attn, T, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(out, dev, T * D * sizeof(float), cudaMemcpyDeviceToHost));
  }
  CK(cudaEventRecord(ev[1], 0));
  CK(cudaEventSynchronize(ev[1]));
  CK(cudaEventElapsedTime(&copy_ms, ev[0], ev[1]));
  copy_ms /= iters;

  double flops = forward_flops(&cfg, B, L);
  double tps = (double)T / (mean / 1e3);
  double tflops = flops / (mean / 1e3) / 1e12;
  double dev_ms = mean - copy_ms;
  double tflops_dev = dev_ms > 0 ? flops / (dev_ms / 1e3) / 1e12 : 0;
  double est = flop_per_clk_per_sm(prop.major) * prop.multiProcessorCount * clock_khz * 1e3 / 1e12;
  double sane = 0;
  for (size_t d = 0; d < D; d++) sane += (double)out[d] * out[d];

  printf("batch %d x %d = %zu tokens, %.3f TFLOP per forward (matmuls), %d warm-up + %d timed\n",
         B, L, T, flops / 1e12, warmup, iters);
  printf("forward(): mean %.3f ms, best %.3f ms (host wall mean %.3f ms)\n", mean, best,
         wall / iters * 1e3);
  printf("  of which host<->device copies ~%.3f ms (timed alone)\n", copy_ms);
  printf("throughput: %.0f tokens/s, %.1f TFLOP/s incl. copies, %.1f TFLOP/s on device\n", tps,
         tflops, tflops_dev);
  printf("peak assumed: %.1f TFLOP/s dense BF16 (H100/H200 SXM datasheet: 1979 with 2:4 "
         "sparsity, halved)%s\n", peak, peak != ASSUMED_PEAK_TFLOPS ? " [--peak]" : "");
  if (est > 0)
    printf("peak estimated from this device: %.1f TFLOP/s (%d SMs x %.0f MHz x %.0f "
           "flop/clk/SM)\n", est, prop.multiProcessorCount, clock_khz / 1e3,
           flop_per_clk_per_sm(prop.major));
  printf("achieved: %.1f%% of assumed peak incl. copies, %.1f%% on device\n",
         100 * tflops / peak, 100 * tflops_dev / peak);
  printf("sanity: |out[0]| = %.6f (unit vectors expected)\n", sqrt(sane));
  printf("RESULT tokens_per_s=%.0f ms_per_forward=%.3f tflops=%.1f tflops_device=%.1f "
         "pct_peak=%.1f\n", tps, mean, tflops, tflops_dev, 100 * tflops / peak);
  rcode = fabs(sqrt(sane) - 1.0) < 1e-3 ? 0 : 1;

out:
  if (ev[0]) cudaEventDestroy(ev[0]);
  if (ev[1]) cudaEventDestroy(ev[1]);
  if (dev) cudaFree(dev);
  bert_backend_destroy(be);
  free(ids);
  free(attn);
  free(out);
  free(ms);
  free(wbuf);
  free(ly);
  return rcode;
}
