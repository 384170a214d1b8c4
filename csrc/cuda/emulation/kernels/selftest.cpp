// Small kernels that exercise the emulated runtime itself, one behaviour each: correct uses
// of barriers, shuffles, shared memory and grid.sync() that must give exact results, and
// misuses that must be reported. Written in plain CUDA (simt.cuh); run by
// tests/emulation/test_runtime.py through gfn_fast._C_cuda_emulated.selftest().
#include "cuda/emulation/selftest.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstring>
#include <string>
#include <vector>

#include "cuda/emulation/host.h"
#include "cuda/simt.cuh"

namespace gfn_fast {
namespace emu {
namespace {

using gpu::launch;
using gpu::launch_cooperative;
using gpu::SharedArray;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / kWarpSize;

// out[0] = sum of in[0 .. n) by one block: strided partial sums, a warp tree, then warp
// totals through shared memory. `with_barrier` false drops the barrier between the shared
// writes and reads.
__global__ void block_sum(const float* in, int n, float* out, bool with_barrier) {
  float acc = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) acc += in[i];
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  }
  __shared__ SharedArray<float, kWarps> partial;
  if (threadIdx.x % kWarpSize == 0) partial[threadIdx.x / kWarpSize] = acc;
  if (with_barrier) __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += partial[w];
    out[0] = total;
  }
}

// out[i] = in[i] for n floats, grid-strided, with 16-byte packs from `offset` floats on
// (a misaligned start when offset % 4 != 0).
struct alignas(16) Float4 {
  float v[4];
};
__global__ void copy_packs(const float* in, float* out, int n, int offset) {
  const Float4* src = reinterpret_cast<const Float4*>(in + offset);
  Float4* dst = reinterpret_cast<Float4*>(out + offset);
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n / 4; i += gridDim.x * blockDim.x) {
    gpu::store_aligned(dst + i, gpu::load_aligned(src + i));
  }
}

// out[lane] for every lane of one warp: each shuffle variant of in[lane], with `width`.
__global__ void shuffles(const float* in, int width, float* out) {
  const int lane = threadIdx.x;
  const float x = in[lane];
  out[0 * kWarpSize + lane] = __shfl_sync(0xffffffffu, x, (lane * 7 + 3) % kWarpSize, width);
  out[1 * kWarpSize + lane] = __shfl_up_sync(0xffffffffu, x, 3, width);
  out[2 * kWarpSize + lane] = __shfl_down_sync(0xffffffffu, x, 5, width);
  out[3 * kWarpSize + lane] = __shfl_xor_sync(0xffffffffu, x, 6, width);
  const double wide = static_cast<double>(x) * 1e300;  // 8-byte payloads
  out[4 * kWarpSize + lane] = static_cast<float>(__shfl_xor_sync(0xffffffffu, wide, 1) * 1e-300);
}

// A grid-wide sum with grid.sync(): block totals to slots[], then every thread folds them.
__global__ void grid_sum(const float* in, int n, float* slots, float* out) {
  float acc = 0.0f;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    acc += in[i];
  }
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
    acc += __shfl_xor_sync(0xffffffffu, acc, offset);
  }
  __shared__ SharedArray<float, kWarps> partial;
  if (threadIdx.x % kWarpSize == 0) partial[threadIdx.x / kWarpSize] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0.0f;
    for (int w = 0; w < kWarps; ++w) total += partial[w];
    slots[blockIdx.x] = total;
  }
  cooperative_groups::this_grid().sync();
  float total = 0.0f;
  for (unsigned b = 0; b < gridDim.x; ++b) total += slots[b];
  out[blockIdx.x * blockDim.x + threadIdx.x] = total;
}

// The 16-bit conversions of the kernels, elementwise: out[i] = conversion(in[i]); bit patterns
// travel as floats (exact below 2^24).
__global__ void convert(const float* in, float* out, int n, int which) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const float x = in[i];
    const auto bits = static_cast<uint16_t>(x);
    switch (which) {
      case 0:
        out[i] = __float2half_rn(x).__x;
        break;
      case 1:
        out[i] = __float2bfloat16_rn(x).__x;
        break;
      case 2:
        out[i] = __half2float(__half{bits});
        break;
      default:
        out[i] = __bfloat162float(__nv_bfloat16{bits});
        break;
    }
  }
}

// The `which` of convert() for a self-test name, or -1.
int conversion(const std::string& name) {
  constexpr const char* kNames[] = {"to_half_bits", "to_bf16_bits", "half_bits_to_float",
                                    "bf16_bits_to_float"};
  for (int i = 0; i < 4; ++i) {
    if (name == kNames[i]) return i;
  }
  return -1;
}

// Misuses, one per kernel.
__global__ void barrier_in_branch(float* out) {
  if (threadIdx.x < 64) __syncthreads();
  out[threadIdx.x] = 1.0f;
}

__global__ void two_barriers(float* out) {
  if (threadIdx.x < 64) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[threadIdx.x] = 1.0f;
}

__global__ void shuffle_with_exited_lane(float* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}

__global__ void shuffle_mask_without_caller(float* out) {
  const unsigned mask = threadIdx.x == 0 ? 0xfffffffeu : 0xffffffffu;
  out[threadIdx.x] = __shfl_xor_sync(mask, 1.0f, 1);
}

__global__ void shuffle_reads_outside_mask(float* out) {
  if (threadIdx.x >= 16) return;
  out[threadIdx.x] = __shfl_xor_sync(0x0000ffffu, 1.0f, 16);
}

__global__ void shuffle_against_barrier(float* out) {
  if (threadIdx.x == 0) {
    __syncthreads();
  } else {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
  }
}

// Lane 0 of each warp writes its warp's element; the last warp writes one past the end.
__global__ void shared_out_of_bounds(float* out) {
  __shared__ SharedArray<float, kWarps> partial;
  if (threadIdx.x % kWarpSize == 0) {
    partial[threadIdx.x / kWarpSize + (threadIdx.x / kWarpSize == kWarps - 1 ? 1 : 0)] = 1.0f;
  }
  out[threadIdx.x] = 1.0f;
}

__global__ void shared_read_unwritten(float* out) {
  __shared__ SharedArray<float, kWarps> partial;
  if (threadIdx.x == 0) partial[0] = 1.0f;
  __syncthreads();
  out[threadIdx.x] = partial[1];
}

// Reads an element another thread then overwrites before any barrier (no barrier between
// two uses of one buffer).
__global__ void shared_write_after_read(float* out) {
  __shared__ SharedArray<float, kWarps> partial;
  if (threadIdx.x == 0) partial[0] = 1.0f;
  __syncthreads();
  const float first = partial[0];
  if (threadIdx.x == kThreads - 1) partial[0] = 2.0f;
  out[threadIdx.x] = first;
}

__global__ void grid_sync_plain(float* out) {
  cooperative_groups::this_grid().sync();
  out[threadIdx.x] = 1.0f;
}

// The misuse kernels by name, each in one block of kThreads threads. A constant table (no
// function-local statics: this file is instrumented, and static guards would need atomics).
template <auto Kernel>
cudaError_t one_block(float* out) {
  return launch<Kernel>(1, kThreads, nullptr, out);
}

struct Misuse {
  const char* name;
  cudaError_t (*run)(float*);
};

constexpr Misuse kMisuses[] = {
    {"barrier_in_branch", &one_block<&barrier_in_branch>},
    {"two_barriers", &one_block<&two_barriers>},
    {"shuffle_with_exited_lane", &one_block<&shuffle_with_exited_lane>},
    {"shuffle_mask_without_caller", &one_block<&shuffle_mask_without_caller>},
    {"shuffle_reads_outside_mask", &one_block<&shuffle_reads_outside_mask>},
    {"shuffle_against_barrier", &one_block<&shuffle_against_barrier>},
    {"shared_out_of_bounds", &one_block<&shared_out_of_bounds>},
    {"shared_read_unwritten", &one_block<&shared_read_unwritten>},
    {"shared_write_after_read", &one_block<&shared_write_after_read>},
    {"grid_sync_plain", &one_block<&grid_sync_plain>},
};

const Misuse* find_misuse(const std::string& name) {
  for (const Misuse& m : kMisuses) {
    if (name == m.name) return &m;
  }
  return nullptr;
}

SelftestResult finish(cudaError_t status, std::vector<float> values, const Traffic& before) {
  SelftestResult r;
  r.status = static_cast<int>(status);
  r.message = status == cudaSuccess ? "" : last_error_message();
  r.values = std::move(values);
  r.traffic = traffic() - before;
  return r;
}

}  // namespace

SelftestResult run_selftest(const std::string& name, const std::vector<float>& input, int arg) {
  const Traffic before = traffic();
  const int n = static_cast<int>(input.size());
  std::vector<float> out(static_cast<size_t>(kThreads) * 8, 0.0f);
  cudaError_t status = cudaErrorInvalidValue;
  const float* in = input.data();
  if (name == "block_sum" || name == "block_sum_without_barrier") {
    status = launch<&block_sum>(1, kThreads, nullptr, in, n, out.data(), name == "block_sum");
    out.resize(1);
  } else if (name == "copy_packs") {
    out.assign(input.size(), 0.0f);
    status = launch<&copy_packs>(2, 64, nullptr, in, out.data(), n - arg, arg);
  } else if (name == "shuffles") {
    out.assign(5 * kWarpSize, 0.0f);
    status = launch<&shuffles>(1, kWarpSize, nullptr, in, arg, out.data());
  } else if (conversion(name) >= 0) {
    out.assign(input.size(), 0.0f);
    status = launch<&convert>(4, kThreads, nullptr, in, out.data(), n, conversion(name));
  } else if (name == "grid_sum") {
    const int blocks = arg;
    std::vector<float> slots(static_cast<size_t>(blocks), 0.0f);
    out.assign(static_cast<size_t>(blocks) * kThreads, 0.0f);
    status = launch_cooperative<&grid_sum>(blocks, kThreads, nullptr, in, n, slots.data(),
                                           out.data());
  } else {
    const Misuse* misuse = find_misuse(name);
    if (misuse == nullptr) {
      SelftestResult r;
      r.status = -1;
      r.message = "unknown selftest " + name;
      return r;
    }
    status = misuse->run(out.data());
  }
  cudaGetLastError();  // the status is returned; clear the sticky error
  return finish(status, std::move(out), before);
}

}  // namespace emu
}  // namespace gfn_fast
