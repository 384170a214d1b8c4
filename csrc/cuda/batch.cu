// The batch step (batch_coefficients) and the fused divergence loss forward on CUDA.
//
// The math lives once in csrc/common/batch_step.h; here it runs on a grid of blocks with a
// deterministic two-level reduction policy. Every thread executes batch_step; index i of
// every map / for_each belongs to global thread i mod (grid threads) in every call, so
// per-index scratch needs no barrier. A reduction folds each thread's indices in order,
// then a warp with a fixed shuffle tree, then the block's warps in order; with several
// blocks, block b's total goes to slot b of a workspace array, grid.sync() publishes the
// slots, and every thread folds them in block order. The partition depends on K alone (not
// on the device), there are no atomics, and every thread gets the same bits: results are
// bitwise reproducible. Several blocks need a cooperative launch (all blocks resident).
//
// The fused forward is the segment-sum kernel (log p_F and log p_B in one pass, into the
// float64 workspace) followed by this kernel: two launches, no host synchronisation.
#include <cstring>

#include "cuda/batch_launchers.h"
#include "cuda/common.cuh"

namespace gfn_fast {
namespace gpu {
namespace {

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

// The reduction policy of batch_step.h on a grid of kBatchThreads-thread blocks.
class GridReduce {
 public:
  __device__ explicit GridReduce(double* slots) : slots_(slots) {}

  template <class T, class Map, class Combine>
  __device__ T reduce(int64_t n, T identity, Map map, Combine combine) const {
    static_assert(sizeof(T) <= kBatchSlotBytes && sizeof(T) % sizeof(double) == 0,
                  "reduced values are one or two doubles");
    T acc = identity;
    for (int64_t i = first_index(); i < n; i += stride()) acc = combine(acc, map(i));
#pragma unroll
    for (int offset = kWarp / 2; offset > 0; offset /= 2) {
      acc = combine(acc, shfl_down_any(acc, offset));
    }
    __shared__ SharedArray<T, kBatchWarps> warp_total;
    if (threadIdx.x % kWarp == 0) warp_total[threadIdx.x / kWarp] = acc;
    __syncthreads();  // also orders the block's reads of warp_total before the next reduce
    T total = warp_total[0];
    for (int w = 1; w < kBatchWarps; ++w) total = combine(total, warp_total[w]);
    if (gridDim.x == 1) {
      __syncthreads();  // warp_total is reused by the next reduction
      return total;
    }
    // Double-buffered slots: reduction r + 2 writes a buffer only after every block passed
    // reduction r + 1's grid.sync(), that is, after every block read reduction r's slots.
    T* slot = reinterpret_cast<T*>(slots_ + parity_ * kBatchSlotDoubles);
    parity_ ^= 1;
    if (threadIdx.x == 0) slot[blockIdx.x] = total;
    cooperative_groups::this_grid().sync();  // a block barrier too (warp_total)
    total = slot[0];
    for (unsigned b = 1; b < gridDim.x; ++b) total = combine(total, slot[b]);
    return total;
  }

  template <class F>
  __device__ void for_each(int64_t n, F f) const {
    for (int64_t i = first_index(); i < n; i += stride()) f(i);
  }

 private:
  __device__ static int64_t first_index() {
    return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  }
  __device__ static int64_t stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

  double* slots_;
  mutable int parity_ = 0;
};

__device__ __forceinline__ bool is_plain_double(const VecArg& v) {
  return v.dtype == DType::kFloat64 && v.stride == 1;
}

template <class OutT>
__device__ __forceinline__ void store_scalar(void* p, double x) {
  *static_cast<OutT*>(p) = static_cast<OutT>(x);
}

template <class OutT>
__global__ void __launch_bounds__(kBatchThreads) batch_step_kernel(BatchArgs args) {
  const int64_t k = args.k;
  double* ws = args.workspace;
  const GridReduce policy(ws + kBatchScratchEnd * k);
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
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    store_scalar<OutT>(args.e, out.e);
    store_scalar<OutT>(args.value, out.value);
    store_scalar<OutT>(args.ess, out.ess);
    store_scalar<OutT>(args.log_z_hat, out.log_z_hat);
    *args.skipped = out.skipped;
  }
}

}  // namespace

cudaError_t batch_coefficients(const BatchArgs& args, cudaStream_t stream) {
  if (args.k <= 0) return cudaErrorInvalidValue;
  const unsigned blocks = batch_blocks(args.k);
  if (args.out_dtype == DType::kFloat64) {
    return launch_cooperative<&batch_step_kernel<double>>(blocks, kBatchThreads, stream, args);
  }
  if (args.out_dtype == DType::kFloat32) {
    return launch_cooperative<&batch_step_kernel<float>>(blocks, kBatchThreads, stream, args);
  }
  return cudaErrorInvalidValue;
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
