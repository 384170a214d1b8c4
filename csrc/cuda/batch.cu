// The batch step (batch_coefficients) and the fused divergence loss forward on CUDA.
//
// The math lives once in csrc/common/batch_step.h; here it runs in a single thread block
// with a block-reduction policy: every thread executes batch_step, maps run strided over
// k, and each reduction folds per-thread partials with a warp tree and then the per-warp
// partials in index order, so every thread gets the same, reproducible result. The fused
// forward is the segment-sum kernel (log p_F and log p_B in one pass, into a float64
// workspace) followed by this kernel: two launches, no host synchronisation.
#include <cstring>

#include "cuda/batch_launchers.h"
#include "cuda/common.cuh"

namespace gfn_fast {
namespace gpu {
namespace {

constexpr int kMaxBatchThreads = 1024;

template <class T>
__device__ __forceinline__ T shfl_down_any(const T& v, int offset) {
  static_assert(sizeof(T) % sizeof(int) == 0, "shuffled types are whole 32-bit words");
  constexpr int kWords = sizeof(T) / sizeof(int);
  int words[kWords];
  memcpy(words, &v, sizeof(T));
#pragma unroll
  for (int w = 0; w < kWords; ++w) words[w] = __shfl_down_sync(0xffffffffu, words[w], offset);
  T out;
  memcpy(&out, words, sizeof(T));
  return out;
}

// The reduction policy of batch_step.h for one thread block (blockDim.x a multiple of 32,
// at most 1024). Host instantiations exist only to satisfy __host__ __device__ callers.
struct BlockReduce {
  template <class T, class Map, class Combine>
  GFN_HOST_DEVICE T reduce(int64_t n, T identity, Map map, Combine combine) const {
#if defined(__CUDA_ARCH__)
    static_assert(sizeof(T) <= 16, "reduced values are at most 16 bytes");
    __shared__ alignas(16) unsigned char raw[kMaxBatchThreads / kWarp * 16];
    T* partial = reinterpret_cast<T*>(raw);
    T acc = identity;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc = combine(acc, map(i));
    // Lane 0 gets its warp's fold (fixed tree); then every thread folds the warps in order.
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      acc = combine(acc, shfl_down_any(acc, offset));
    }
    if (threadIdx.x % kWarp == 0) partial[threadIdx.x / kWarp] = acc;
    __syncthreads();  // also publishes the scratch writes of map
    T total = partial[0];
    const int warps = blockDim.x / kWarp;
    for (int w = 1; w < warps; ++w) total = combine(total, partial[w]);
    __syncthreads();  // partial is reused by the next reduction
    return total;
#else
    (void)n;
    (void)map;
    (void)combine;
    return identity;
#endif
  }

  template <class F>
  GFN_HOST_DEVICE void for_each(int64_t n, F f) const {
#if defined(__CUDA_ARCH__)
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) f(i);
    __syncthreads();
#else
    (void)n;
    (void)f;
#endif
  }
};

__device__ __forceinline__ bool is_plain_double(const VecArg& v) {
  return v.dtype == DType::kFloat64 && v.stride == 1;
}

template <class OutT>
__device__ __forceinline__ void store_scalar(void* p, double x) {
  *static_cast<OutT*>(p) = static_cast<OutT>(x);
}

template <class OutT>
__global__ void __launch_bounds__(kMaxBatchThreads) batch_step_kernel(BatchArgs args) {
  const BlockReduce policy;
  const int64_t k = args.k;
  double* ws = args.workspace;
  // Stage every per-trajectory input as a contiguous double array (once, in this kernel).
  const VecArg inputs[4] = {args.log_pf, args.log_pb, args.log_reward, args.log_behavior};
  const double* staged[4];
  bool stage[4];
  for (int j = 0; j < 4; ++j) {
    stage[j] = inputs[j].data != nullptr && !is_plain_double(inputs[j]);
    staged[j] = inputs[j].data == nullptr
                    ? nullptr
                    : (stage[j] ? ws + j * k : static_cast<const double*>(inputs[j].data));
  }
  policy.for_each(k, [&](int64_t i) {
    for (int j = 0; j < 4; ++j) {
      if (stage[j]) ws[j * k + i] = load_double(inputs[j], i);
    }
  });

  batch::BatchInputs in;
  in.k = k;
  in.log_pf = staged[0];
  in.log_pb = staged[1];
  in.log_reward = staged[2];
  in.log_behavior = staged[3];
  in.has_log_z = args.log_z.data != nullptr;
  in.log_z = in.has_log_z ? load_double(args.log_z, 0) : 0.0;
  in.config = args.config;
  in.scratch = ws + 4 * k;

  batch::BatchOutputs<OutT> out;
  out.c = static_cast<OutT*>(args.c);
  out.d = static_cast<OutT*>(args.d);
  batch::batch_step(policy, in, out);
  if (threadIdx.x == 0) {
    store_scalar<OutT>(args.e, out.e);
    store_scalar<OutT>(args.value, out.value);
    store_scalar<OutT>(args.ess, out.ess);
    store_scalar<OutT>(args.log_z_hat, out.log_z_hat);
    *args.skipped = out.skipped;
  }
}

unsigned batch_threads(int64_t k) {
  int64_t threads = (k + kWarp - 1) / kWarp * kWarp;
  if (threads < 128) threads = 128;
  if (threads > kMaxBatchThreads) threads = kMaxBatchThreads;
  return static_cast<unsigned>(threads);
}

}  // namespace

cudaError_t batch_coefficients(const BatchArgs& args, cudaStream_t stream) {
  if (args.k <= 0) return cudaErrorInvalidValue;
  const unsigned threads = batch_threads(args.k);
  if (args.out_dtype == DType::kFloat64) {
    batch_step_kernel<double><<<1, threads, 0, stream>>>(args);
  } else if (args.out_dtype == DType::kFloat32) {
    batch_step_kernel<float><<<1, threads, 0, stream>>>(args);
  } else {
    return cudaErrorInvalidValue;
  }
  return cudaGetLastError();
}

cudaError_t divergence_loss_fused(StepArg pf, StepArg pb, Layout layout, BatchArgs args,
                                  cudaStream_t stream) {
  const int64_t k = layout.batch;
  if (k <= 0 || args.k != k) return cudaErrorInvalidValue;
  double* sums = args.workspace;  // s in [0, K), b in [K, 2K): the staging slots
  const cudaError_t status = segment_sums_to_double(pf, pb, layout, sums, stream);
  if (status != cudaSuccess) return status;
  args.log_pf = VecArg{sums, DType::kFloat64, 1};
  args.log_pb = pb.data != nullptr ? VecArg{sums + k, DType::kFloat64, 1} : VecArg{};
  return batch_coefficients(args, stream);
}

}  // namespace gpu
}  // namespace gfn_fast
