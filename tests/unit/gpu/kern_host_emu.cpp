/* kern_host_emu.cpp: the CUDA backend's kernels (bert_cuda_kern.cu),
 * compiled unchanged as host C++ and run by a small emulation of the CUDA
 * execution model, so their indexing and warp reductions are tested on
 * machines without a GPU.
 *
 * The emulation: a launch runs its blocks one after another and, in each
 * block, its warps one after another; the 32 lanes of a warp are 32 host
 * threads (a pool, reused), so lanes really run concurrently and
 * __shfl_xor_sync really exchanges values (through a barrier). This is faithful for these kernels
 * because none uses shared memory or __syncthreads: warps are independent,
 * and lanes meet only at shuffles. The grid is cut to at most
 * kEmuMaxBlocks blocks, which makes every grid-stride loop take several
 * turns. Launches are synchronous; the stream argument is ignored.
 *
 * Test code only. Thread-safety: one launch at a time. */
#include <barrier>
#include <cmath>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kern_emu_names.h"

namespace {

/* Few blocks, so grid-stride loops run several times (the real launch
 * covers the rows in one pass when the GPU is large enough). */
constexpr unsigned kEmuMaxBlocks = 3;
constexpr int kEmuWarp = 32;

/* 32 lane threads, started once and reused for every warp of every launch
 * (creating threads per warp costs more than the kernels' work). The
 * launching thread and the lanes meet at `start` and `done`; the lanes
 * alone meet at `shfl` inside shuffles. */
struct emu_lanes {
  std::barrier<> start{ kEmuWarp + 1 }, done{ kEmuWarp + 1 }, shfl{ kEmuWarp };
  float val[kEmuWarp];
  std::function<void()> body;
  unsigned block_x = 0, warp0 = 0, grid = 0, block = 0;
  bool quit = false;
  std::vector<std::thread> threads;

  emu_lanes()
  {
    for (int lane = 0; lane < kEmuWarp; lane++) threads.emplace_back([this, lane] { run(lane); });
  }
  ~emu_lanes()
  {
    quit = true;
    start.arrive_and_wait();
    for (auto &t : threads) t.join();
  }
  void run(int lane);
  void warp(unsigned b, unsigned w0)
  {
    block_x = b;
    warp0 = w0;
    start.arrive_and_wait();   /* lanes go */
    done.arrive_and_wait();    /* lanes finished this warp */
  }
};

thread_local emu_lanes *tl_lanes;
thread_local int tl_lane;

emu_lanes &lanes()
{
  static emu_lanes l;
  return l;
}

} /* namespace */

/* The CUDA built-ins the kernels read, per emulated thread. */
thread_local uint3 threadIdx;
thread_local uint3 blockIdx;
thread_local dim3 blockDim;
thread_local dim3 gridDim;

static inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }

static inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask)
{
  (void)mask;
  emu_lanes *w = tl_lanes;
  w->val[tl_lane] = v;
  w->shfl.arrive_and_wait();   /* every lane has published */
  float r = w->val[tl_lane ^ lane_mask];
  w->shfl.arrive_and_wait();   /* every lane has read before the next publish */
  return r;
}

namespace {

void emu_lanes::run(int lane)
{
  tl_lanes = this;
  tl_lane = lane;
  for (;;) {
    start.arrive_and_wait();
    if (quit) return;
    threadIdx = make_uint3(warp0 + (unsigned)lane, 0, 0);
    blockIdx = make_uint3(block_x, 0, 0);
    blockDim = dim3(block, 1, 1);
    gridDim = dim3(grid, 1, 1);
    body();
    done.arrive_and_wait();
  }
}

/* Runs body() as every thread of a grid x block launch, warp by warp. */
template <class F> void emu_launch(unsigned grid, unsigned block, F body)
{
  emu_lanes &l = lanes();
  l.body = body;
  l.grid = grid < kEmuMaxBlocks ? grid : kEmuMaxBlocks;
  l.block = block;
  for (unsigned b = 0; b < l.grid; b++)
    for (unsigned w0 = 0; w0 < block; w0 += kEmuWarp) l.warp(b, w0);
}

} /* namespace */

#define BERT_CUDA_LAUNCH(kern, grid, block, st, ...) \
  ((void)(st), emu_launch((grid), (block), [&] { kern(__VA_ARGS__); }))

/* Launch errors: none in the emulation (the real cudaGetLastError would
 * report this host's missing driver instead). */
#define cudaGetLastError() cudaSuccess

#include "model/cuda/bert_cuda_kern.cu"
