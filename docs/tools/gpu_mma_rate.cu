// Peak issue rate of the warp-level matrix instruction (mma.sync, Ampere's; FlashAttention-2 uses
// it) on one NVIDIA GPU, in FLOP per clock per SM, measured with the SM's own cycle counter so the
// result does not depend on the clock the board holds under load.
//
// Each warp runs `chains` independent accumulator chains of mma.sync.m16n8k16 (bf16 or fp16 in,
// fp32 accumulate: 4096 FLOP each) for `iters` iterations. All blocks are resident at once; per SM
// the rate is the FLOP of its blocks over the cycles from the first block's start to the last
// block's end (clock64, read on that SM). Prints the median and maximum over SMs for each
// configuration, and the wall-clock TFLOP/s from CUDA events.
//
//   nvcc -O3 -arch=sm_90a -o mma_rate docs/tools/gpu_mma_rate.cu && ./mma_rate
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdint>
#include <vector>

template <int kChains, bool kBf16>
__global__ void mma_loop(int iters, float* sink, long long* start, long long* stop, int* smid) {
  uint32_t a[4], b[2];
  for (int i = 0; i < 4; ++i) a[i] = 0x3c003c00u ^ (threadIdx.x * 2654435761u + i);
  for (int i = 0; i < 2; ++i) b[i] = 0x3c003c00u ^ (threadIdx.x * 40503u + i);
  float d[kChains][4] = {};
  __syncthreads();
  long long t0 = clock64();
  for (int it = 0; it < iters; ++it) {
#pragma unroll
    for (int c = 0; c < kChains; ++c) {
      if (kBf16)
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[c][0]), "+f"(d[c][1]), "+f"(d[c][2]), "+f"(d[c][3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
      else
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[c][0]), "+f"(d[c][1]), "+f"(d[c][2]), "+f"(d[c][3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    }
  }
  __syncthreads();
  long long t1 = clock64();
  float s = 0;
  for (int c = 0; c < kChains; ++c) s += d[c][0] + d[c][1] + d[c][2] + d[c][3];
  if (s == 12345.f) sink[threadIdx.x] = s;  // keeps the loop; never true for these inputs in practice
  if (threadIdx.x == 0) {
    int id;
    asm("mov.u32 %0, %%smid;" : "=r"(id));
    start[blockIdx.x] = t0;
    stop[blockIdx.x] = t1;
    smid[blockIdx.x] = id;
  }
}

template <int kChains, bool kBf16>
void run(int sms, int blocks_per_sm, int warps, int iters) {
  int blocks = sms * blocks_per_sm, threads = warps * 32;
  float* sink;
  long long *start, *stop;
  int* smid;
  cudaMalloc(&sink, 1024 * sizeof(float));
  cudaMalloc(&start, blocks * sizeof(long long));
  cudaMalloc(&stop, blocks * sizeof(long long));
  cudaMalloc(&smid, blocks * sizeof(int));
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  for (int w = 0; w < 3; ++w) mma_loop<kChains, kBf16><<<blocks, threads>>>(iters, sink, start, stop, smid);
  cudaEventRecord(e0);
  mma_loop<kChains, kBf16><<<blocks, threads>>>(iters, sink, start, stop, smid);
  cudaEventRecord(e1);
  cudaEventSynchronize(e1);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    printf("error %s\n", cudaGetErrorString(err));
    return;
  }
  float ms;
  cudaEventElapsedTime(&ms, e0, e1);
  std::vector<long long> t0(blocks), t1(blocks);
  std::vector<int> id(blocks);
  cudaMemcpy(t0.data(), start, blocks * sizeof(long long), cudaMemcpyDeviceToHost);
  cudaMemcpy(t1.data(), stop, blocks * sizeof(long long), cudaMemcpyDeviceToHost);
  cudaMemcpy(id.data(), smid, blocks * sizeof(int), cudaMemcpyDeviceToHost);
  int max_id = *std::max_element(id.begin(), id.end()) + 1;
  std::vector<long long> lo(max_id, INT64_MAX), hi(max_id, 0);
  std::vector<int> n(max_id, 0);
  for (int i = 0; i < blocks; ++i) {
    lo[id[i]] = std::min(lo[id[i]], t0[i]);
    hi[id[i]] = std::max(hi[id[i]], t1[i]);
    n[id[i]]++;
  }
  double flop_per_block = double(warps) * iters * kChains * 4096.0;
  std::vector<double> rate;
  for (int s = 0; s < max_id; ++s)
    if (n[s]) rate.push_back(n[s] * flop_per_block / double(hi[s] - lo[s]));
  std::sort(rate.begin(), rate.end());
  double total = flop_per_block * blocks;
  printf("%s chains %d warps/block %2d blocks/SM %d: FLOP/clk/SM median %7.1f max %7.1f "
         "(%zu SMs); %.1f TFLOP/s wall, %.3f ms\n",
         kBf16 ? "bf16" : "fp16", kChains, warps, blocks_per_sm, rate[rate.size() / 2], rate.back(),
         rate.size(), total / (ms * 1e-3) / 1e12, ms);
  cudaFree(sink);
  cudaFree(start);
  cudaFree(stop);
  cudaFree(smid);
}

int main() {
  cudaDeviceProp p;
  cudaGetDeviceProperties(&p, 0);
  printf("%s, %d SMs, sm_%d%d\n", p.name, p.multiProcessorCount, p.major, p.minor);
  int sms = p.multiProcessorCount, iters = 4096;
  run<4, true>(sms, 1, 4, iters);
  run<4, true>(sms, 1, 8, iters);
  run<8, true>(sms, 1, 8, iters);
  run<8, true>(sms, 2, 8, iters);
  run<4, true>(sms, 2, 16, iters);
  run<8, true>(sms, 1, 16, iters);
  run<8, false>(sms, 2, 8, iters);
  return 0;
}
