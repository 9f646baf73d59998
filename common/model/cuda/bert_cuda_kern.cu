/* bert_cuda_kern.cu: the non-GEMM kernels of the CUDA BERT forward
 * (semantics in bert_cuda_int.h, struct bert_cuda__ops; entry points in
 * bert_cuda_kern.h). All GEMMs are cuBLAS calls in bert_cuda.c.
 *
 * Shapes of work:
 *   - row reductions (LayerNorm, softmax, L2 norm) use one warp per row, so
 *     the reductions are register shuffles with no shared memory or block
 *     barrier; rows are independent, grid-strided over the warps;
 *   - layout changes and bias/activation passes use one block per token
 *     row, so the token index needs no division and the column index only
 *     32-bit ones.
 * Everything is float32 arithmetic; BF16 appears only when storing a value
 * that is the input of the next GEMM. The kernels are memory-bound and
 * small next to the GEMMs (a few percent of a bert-base forward), so they
 * favour clarity over vectorised loads.
 *
 * Thread-safety: launches are stream-ordered; the functions keep no state.
 * Allocation: none. */
#include <cfloat>
#include <cmath>
#include <cstdint>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "bert_cuda_kern.h"

/* A launch on `st`. A macro so that the host emulation in the tests
 * (tests/unit/gpu/kern_host_emu.cpp), which compiles this file as plain
 * C++, can run the same kernels without a GPU. */
#ifndef BERT_CUDA_LAUNCH
#define BERT_CUDA_LAUNCH(kern, grid, block, st, ...) \
  kern<<<(grid), (block), 0, (st)>>>(__VA_ARGS__)
#endif

namespace {

/* 256 threads = 8 warps per block: enough warps per block for the
 * scheduler to hide memory latency, small enough for many resident blocks. */
constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr int kWarpsPerBlock = kThreads / kWarp;
/* Grid-stride loops cover any size; more blocks than this add nothing on a
 * GPU with ~132 SMs x 8 resident blocks and stay far below grid limits. */
constexpr long long kMaxBlocks = 1 << 16;
/* Longest softmax row kept in registers: 16 values per lane x 32 lanes =
 * 512 = BERT's max_position. Longer rows take the three-pass kernel. */
constexpr int kSoftmaxMaxPerLane = 16;

unsigned int blocks_for(long long units, long long per_block)
{
  long long n = (units + per_block - 1) / per_block;
  return (unsigned int)(n < kMaxBlocks ? n : kMaxBlocks);
}

__device__ __forceinline__ float warp_sum(float v)
{
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v)
{
  for (int o = kWarp / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

__device__ __forceinline__ uint16_t to_bf16(float f)
{
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}

/* Global warp index and warp count of the grid, for warp-per-row loops. */
__device__ __forceinline__ long long warp_id()
{
  return ((long long)blockIdx.x * blockDim.x + threadIdx.x) / kWarp;
}

__device__ __forceinline__ long long warp_count()
{
  return (long long)gridDim.x * blockDim.x / kWarp;
}

/* LayerNorm of one row that this warp has just written to xr (each lane
 * reads back only the elements it wrote itself, so no barrier is needed);
 * `sum` is this lane's partial sum of them. Two passes for the variance
 * (mean first) keep it accurate when the mean is large. */
__device__ void row_layernorm(float *xr, uint16_t *xbr, const float *g, const float *b,
                              float eps, int H, int lane, float sum)
{
  float mean = warp_sum(sum) / (float)H;
  float sq = 0.0f;
  for (int c = lane; c < H; c += kWarp) {
    float d = xr[c] - mean;
    sq += d * d;
  }
  float inv = rsqrtf(warp_sum(sq) / (float)H + eps);
  for (int c = lane; c < H; c += kWarp) {
    float o = (xr[c] - mean) * inv * g[c] + b[c];
    xr[c] = o;
    xbr[c] = to_bf16(o);
  }
}

__global__ void k_f32_to_bf16(const float *src, uint16_t *dst, size_t n)
{
  size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = to_bf16(src[i]);
}

__global__ void k_embed_ln(const int32_t *ids, long long T, int L, const float *word,
                           const float *pos, const float *type0, const float *g,
                           const float *b, float eps, int H, float *x, uint16_t *xb)
{
  int lane = threadIdx.x % kWarp;
  for (long long t = warp_id(); t < T; t += warp_count()) {
    const float *we = word + (size_t)ids[t] * H;
    const float *pe = pos + (size_t)(t % L) * H;
    float *xr = x + (size_t)t * H;
    float sum = 0.0f;
    for (int c = lane; c < H; c += kWarp) {
      float v = we[c] + pe[c] + type0[c];
      xr[c] = v;
      sum += v;
    }
    row_layernorm(xr, xb + (size_t)t * H, g, b, eps, H, lane, sum);
  }
}

__global__ void k_bias_res_ln(const float *y, const float *bias, const float *g,
                              const float *b, float eps, long long T, int H, float *x,
                              uint16_t *xb)
{
  int lane = threadIdx.x % kWarp;
  for (long long t = warp_id(); t < T; t += warp_count()) {
    const float *yr = y + (size_t)t * H;
    float *xr = x + (size_t)t * H;
    float sum = 0.0f;
    for (int c = lane; c < H; c += kWarp) {
      float v = yr[c] + bias[c] + xr[c];
      xr[c] = v;
      sum += v;
    }
    row_layernorm(xr, xb + (size_t)t * H, g, b, eps, H, lane, sum);
  }
}

/* One block per token row t = b*L + i of the [T, 3H] QKV output. */
__global__ void k_qkv_split(const float *y, const float *bias, long long T, int L, int heads,
                            int dh, uint16_t *q, uint16_t *k, uint16_t *v)
{
  int H = heads * dh;
  for (long long t = blockIdx.x; t < T; t += gridDim.x) {
    long long bb = t / L;
    int i = (int)(t - bb * L);
    const float *yr = y + (size_t)t * 3 * H;
    for (int c = threadIdx.x; c < 3 * H; c += blockDim.x) {
      int part = c / H, hc = c - part * H, h = hc / dh, d = hc - h * dh;
      uint16_t *dst = part == 0 ? q : part == 1 ? k : v;
      dst[(((size_t)bb * heads + h) * L + i) * dh + d] = to_bf16(yr[c] + bias[c]);
    }
  }
}

/* The additive mask of HF: scaled score plus float32's lowest value. */
__device__ __forceinline__ float masked_score(float s, float scale, uint8_t a)
{
  float z = s * scale;
  return a ? z : z + (-FLT_MAX);
}

/* Softmax rows held in registers: NPL values per lane, L <= 32*NPL. */
template <int NPL>
__global__ void k_softmax_reg(const float *s, const uint8_t *attn, long long rows, int heads,
                              int L, float scale, uint16_t *p)
{
  int lane = threadIdx.x % kWarp;
  long long per_seq = (long long)heads * L;
  for (long long r = warp_id(); r < rows; r += warp_count()) {
    const float *sr = s + (size_t)r * L;
    const uint8_t *ar = attn + (size_t)(r / per_seq) * L;
    uint16_t *pr = p + (size_t)r * L;
    float v[NPL];
    float mx = -INFINITY;
#pragma unroll
    for (int u = 0; u < NPL; u++) {
      int j = lane + u * kWarp;
      v[u] = j < L ? masked_score(sr[j], scale, ar[j]) : -INFINITY;
      mx = fmaxf(mx, v[u]);
    }
    mx = warp_max(mx);
    float sum = 0.0f;
#pragma unroll
    for (int u = 0; u < NPL; u++) {
      int j = lane + u * kWarp;
      v[u] = j < L ? expf(v[u] - mx) : 0.0f;
      sum += v[u];
    }
    float inv = 1.0f / warp_sum(sum);
#pragma unroll
    for (int u = 0; u < NPL; u++) {
      int j = lane + u * kWarp;
      if (j < L) pr[j] = to_bf16(v[u] * inv);
    }
  }
}

/* Any L: three passes over the row in memory (max, sum, write). */
__global__ void k_softmax_any(const float *s, const uint8_t *attn, long long rows, int heads,
                              int L, float scale, uint16_t *p)
{
  int lane = threadIdx.x % kWarp;
  long long per_seq = (long long)heads * L;
  for (long long r = warp_id(); r < rows; r += warp_count()) {
    const float *sr = s + (size_t)r * L;
    const uint8_t *ar = attn + (size_t)(r / per_seq) * L;
    uint16_t *pr = p + (size_t)r * L;
    float mx = -INFINITY;
    for (int j = lane; j < L; j += kWarp) mx = fmaxf(mx, masked_score(sr[j], scale, ar[j]));
    mx = warp_max(mx);
    float sum = 0.0f;
    for (int j = lane; j < L; j += kWarp) sum += expf(masked_score(sr[j], scale, ar[j]) - mx);
    float inv = 1.0f / warp_sum(sum);
    for (int j = lane; j < L; j += kWarp)
      pr[j] = to_bf16(expf(masked_score(sr[j], scale, ar[j]) - mx) * inv);
  }
}

/* One block per token row of the [T, H] output. */
__global__ void k_merge_heads(const uint16_t *ctxh, long long T, int L, int heads, int dh,
                              uint16_t *ctx)
{
  int H = heads * dh;
  for (long long t = blockIdx.x; t < T; t += gridDim.x) {
    long long bb = t / L;
    int i = (int)(t - bb * L);
    uint16_t *out = ctx + (size_t)t * H;
    for (int c = threadIdx.x; c < H; c += blockDim.x) {
      int h = c / dh, d = c - h * dh;
      out[c] = ctxh[(((size_t)bb * heads + h) * L + i) * dh + d];
    }
  }
}

/* 1/sqrt(2) for the erf form of GELU. */
constexpr float kInvSqrt2 = 0.70710678118654752f;

__global__ void k_bias_gelu(const float *y, const float *bias, long long T, int n,
                            uint16_t *out)
{
  for (long long t = blockIdx.x; t < T; t += gridDim.x) {
    const float *yr = y + (size_t)t * n;
    uint16_t *orow = out + (size_t)t * n;
    for (int c = threadIdx.x; c < n; c += blockDim.x) {
      float v = yr[c] + bias[c];
      orow[c] = to_bf16(0.5f * v * (1.0f + erff(v * kInvSqrt2)));
    }
  }
}

/* torch.nn.functional.normalize's floor on the norm. */
constexpr float kNormFloor = 1e-12f;

__global__ void k_l2norm(float *y, long long T, int d)
{
  int lane = threadIdx.x % kWarp;
  for (long long t = warp_id(); t < T; t += warp_count()) {
    float *yr = y + (size_t)t * d;
    float sq = 0.0f;
    for (int c = lane; c < d; c += kWarp) sq += yr[c] * yr[c];
    float inv = 1.0f / fmaxf(sqrtf(warp_sum(sq)), kNormFloor);
    for (int c = lane; c < d; c += kWarp) yr[c] *= inv;
  }
}

} /* namespace */

extern "C" {

cudaError_t bert_cuda_k_f32_to_bf16(cudaStream_t st, const float *src, uint16_t *dst, size_t n)
{
  if (n == 0) return cudaSuccess;
  BERT_CUDA_LAUNCH(k_f32_to_bf16, blocks_for((long long)n, kThreads), kThreads, st, src, dst,
                   n);
  return cudaGetLastError();
}

cudaError_t bert_cuda_k_embed_ln(cudaStream_t st, const int32_t *ids, int T, int L,
                                 const float *word, const float *pos, const float *type0,
                                 const float *g, const float *b, float eps, int H, float *x,
                                 uint16_t *xb)
{
  if (T <= 0) return cudaSuccess;
  BERT_CUDA_LAUNCH(k_embed_ln, blocks_for(T, kWarpsPerBlock), kThreads, st, ids, T, L, word, pos,
                   type0, g, b, eps, H, x, xb);
  return cudaGetLastError();
}

cudaError_t bert_cuda_k_qkv_split(cudaStream_t st, const float *y, const float *bias, int B,
                                  int L, int heads, int dh, uint16_t *q, uint16_t *k,
                                  uint16_t *v)
{
  long long T = (long long)B * L;
  if (T <= 0) return cudaSuccess;
  BERT_CUDA_LAUNCH(k_qkv_split, blocks_for(T, 1), kThreads, st, y, bias, T, L, heads, dh, q, k,
                   v);
  return cudaGetLastError();
}

cudaError_t bert_cuda_k_softmax(cudaStream_t st, const float *s, const uint8_t *attn, int B,
                                int heads, int L, float scale, uint16_t *p)
{
  long long rows = (long long)B * heads * L;
  if (rows <= 0) return cudaSuccess;
  unsigned int nb = blocks_for(rows, kWarpsPerBlock);
  if (L <= kWarp)
    BERT_CUDA_LAUNCH(k_softmax_reg<1>, nb, kThreads, st, s, attn, rows, heads, L, scale, p);
  else if (L <= 2 * kWarp)
    BERT_CUDA_LAUNCH(k_softmax_reg<2>, nb, kThreads, st, s, attn, rows, heads, L, scale, p);
  else if (L <= 4 * kWarp)
    BERT_CUDA_LAUNCH(k_softmax_reg<4>, nb, kThreads, st, s, attn, rows, heads, L, scale, p);
  else if (L <= 8 * kWarp)
    BERT_CUDA_LAUNCH(k_softmax_reg<8>, nb, kThreads, st, s, attn, rows, heads, L, scale, p);
  else if (L <= kSoftmaxMaxPerLane * kWarp)
    BERT_CUDA_LAUNCH(k_softmax_reg<kSoftmaxMaxPerLane>, nb, kThreads, st, s, attn, rows, heads, L,
                     scale, p);
  else
    BERT_CUDA_LAUNCH(k_softmax_any, nb, kThreads, st, s, attn, rows, heads, L, scale, p);
  return cudaGetLastError();
}

cudaError_t bert_cuda_k_merge_heads(cudaStream_t st, const uint16_t *ctxh, int B, int L,
                                    int heads, int dh, uint16_t *ctx)
{
  long long T = (long long)B * L;
  if (T <= 0) return cudaSuccess;
  BERT_CUDA_LAUNCH(k_merge_heads, blocks_for(T, 1), kThreads, st, ctxh, T, L, heads, dh, ctx);
  return cudaGetLastError();
}

cudaError_t bert_cuda_k_bias_res_ln(cudaStream_t st, const float *y, const float *bias,
                                    const float *g, const float *b, float eps, int T, int H,
                                    float *x, uint16_t *xb)
{
  if (T <= 0) return cudaSuccess;
  BERT_CUDA_LAUNCH(k_bias_res_ln, blocks_for(T, kWarpsPerBlock), kThreads, st, y, bias, g, b, eps,
                   T, H, x, xb);
  return cudaGetLastError();
}

cudaError_t bert_cuda_k_bias_gelu(cudaStream_t st, const float *y, const float *bias, int T,
                                  int n, uint16_t *out)
{
  if (T <= 0) return cudaSuccess;
  BERT_CUDA_LAUNCH(k_bias_gelu, blocks_for(T, 1), kThreads, st, y, bias, T, n, out);
  return cudaGetLastError();
}

cudaError_t bert_cuda_k_l2norm(cudaStream_t st, float *y, int T, int d)
{
  if (T <= 0) return cudaSuccess;
  BERT_CUDA_LAUNCH(k_l2norm, blocks_for(T, kWarpsPerBlock), kThreads, st, y, T, d);
  return cudaGetLastError();
}

} /* extern "C" */
