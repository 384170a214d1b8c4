// Device helpers shared by the gfn_fast CUDA kernels: dtype traits, 16-byte vector
// loads and stores, strided typed loads, segment bounds, and fixed-order (deterministic)
// warp and group reductions. No torch headers.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/launchers.h"
#include "cuda/simt.cuh"

namespace gfn_fast {
namespace gpu {

constexpr int kWarp = 32;
constexpr int kBlockThreads = 256;  // 8 warps per block everywhere
constexpr int kBlockWarps = kBlockThreads / kWarp;

// ---------------------------------------------------------------------------------------
// dtype traits and conversions
// ---------------------------------------------------------------------------------------

template <typename T>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};
template <typename T>
using acc_t = typename AccOf<T>::type;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ double to_float(double x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename A, typename T>
__device__ __forceinline__ A to_acc(T x) {
  return static_cast<A>(to_float(x));
}

template <typename T>
struct Store;
template <>
struct Store<float> {
  template <typename A>
  __device__ __forceinline__ static float from(A x) {
    return static_cast<float>(x);
  }
};
template <>
struct Store<double> {
  template <typename A>
  __device__ __forceinline__ static double from(A x) {
    return static_cast<double>(x);
  }
};
template <>
struct Store<__half> {
  template <typename A>
  __device__ __forceinline__ static __half from(A x) {
    return __float2half_rn(static_cast<float>(x));
  }
};
template <>
struct Store<__nv_bfloat16> {
  template <typename A>
  __device__ __forceinline__ static __nv_bfloat16 from(A x) {
    return __float2bfloat16_rn(static_cast<float>(x));
  }
};

template <typename T, typename A>
__device__ __forceinline__ T from_acc(A x) {
  return Store<T>::from(x);
}

// Reads element i of a strided vector of runtime dtype as double (small [B] vectors only).
__device__ __forceinline__ double load_double(const VecArg& v, int64_t i) {
  const int64_t at = i * v.stride;
  switch (v.dtype) {
    case DType::kFloat32:
      return static_cast<const float*>(v.data)[at];
    case DType::kFloat64:
      return static_cast<const double*>(v.data)[at];
    case DType::kBFloat16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(v.data)[at]);
    case DType::kFloat16:
      return __half2float(static_cast<const __half*>(v.data)[at]);
    case DType::kInt32:
      return static_cast<const int32_t*>(v.data)[at];
    case DType::kInt64:
      return static_cast<double>(static_cast<const int64_t*>(v.data)[at]);
    case DType::kBool:
      return static_cast<const bool*>(v.data)[at] ? 1.0 : 0.0;
  }
  return 0.0;
}

// Reads an int32 or int64 element (actions) at a strided position.
__device__ __forceinline__ int64_t load_index(const void* data, DType dtype, int64_t at) {
  return dtype == DType::kInt32 ? static_cast<int64_t>(static_cast<const int32_t*>(data)[at])
                                : static_cast<const int64_t*>(data)[at];
}

// ---------------------------------------------------------------------------------------
// 16-byte packs
// ---------------------------------------------------------------------------------------

template <typename T>
struct alignas(16) Pack {
  static constexpr int kSize = 16 / static_cast<int>(sizeof(T));
  T v[kSize];
};

template <typename T>
__device__ __forceinline__ int64_t misaligned_head(const T* p, int64_t n) {
  // Elements before the first 16-byte boundary (capped at n).
  const auto addr = reinterpret_cast<uintptr_t>(p);
  const int64_t head = static_cast<int64_t>(((16 - (addr & 15)) & 15) / sizeof(T));
  return head < n ? head : n;
}

template <typename T>
__device__ __forceinline__ bool same_alignment(const T* a, const void* b) {
  return ((reinterpret_cast<uintptr_t>(a) - reinterpret_cast<uintptr_t>(b)) & 15) == 0;
}

// Calls fvec(i0, pack) for the aligned 16-byte packs holding elements i0 .. i0 + V - 1
// and fscalar(i, value) for the elements before the first 16-byte boundary and after the
// last full pack, for the part of p[0 .. n) that thread `tid` of `nthreads` owns. The
// split depends only on the address and n, so the order of calls per thread is fixed.
template <typename T, typename FV, typename FS>
__device__ __forceinline__ void for_each_chunk(const T* p, int64_t n, int tid, int nthreads,
                                               FV&& fvec, FS&& fscalar) {
  constexpr int V = Pack<T>::kSize;
  const int64_t head = misaligned_head(p, n);
  for (int64_t i = tid; i < head; i += nthreads) fscalar(i, p[i]);
  const int64_t nvec = (n - head) / V;
  const Pack<T>* vp = reinterpret_cast<const Pack<T>*>(p + head);
#pragma unroll 4
  for (int64_t i = tid; i < nvec; i += nthreads) fvec(head + i * V, load_aligned(vp + i));
  for (int64_t i = head + nvec * V + tid; i < n; i += nthreads) fscalar(i, p[i]);
}

// Calls f(i, value) for every element i of p[0 .. n) (element i at p[i * stride]) that
// thread `tid` of `nthreads` owns; unit strides use 16-byte loads.
template <typename T, typename F>
__device__ __forceinline__ void for_each_load(const T* p, int64_t n, int64_t stride, int tid,
                                              int nthreads, F&& f) {
  if (stride != 1) {
    for (int64_t i = tid; i < n; i += nthreads) f(i, p[i * stride]);
    return;
  }
  for_each_chunk(
      p, n, tid, nthreads,
      [&](int64_t i0, const Pack<T>& pack) {
#pragma unroll
        for (int j = 0; j < Pack<T>::kSize; ++j) f(i0 + j, pack.v[j]);
      },
      f);
}

// Writes p[i] = value(i) for i in [0, n) (contiguous), 16-byte stores in the body.
template <typename T, typename F>
__device__ __forceinline__ void for_each_store(T* p, int64_t n, int tid, int nthreads, F&& value) {
  constexpr int V = Pack<T>::kSize;
  const int64_t head = misaligned_head(p, n);
  for (int64_t i = tid; i < head; i += nthreads) p[i] = value(i);
  const int64_t nvec = (n - head) / V;
  Pack<T>* vp = reinterpret_cast<Pack<T>*>(p + head);
#pragma unroll 4
  for (int64_t i = tid; i < nvec; i += nthreads) {
    Pack<T> pack;
#pragma unroll
    for (int j = 0; j < V; ++j) pack.v[j] = value(head + i * V + j);
    store_aligned(vp + i, pack);
  }
  for (int64_t i = head + nvec * V + tid; i < n; i += nthreads) p[i] = value(i);
}

// ---------------------------------------------------------------------------------------
// segments
// ---------------------------------------------------------------------------------------

template <typename I>
__device__ __forceinline__ int64_t clamp_index(I x, int64_t lo, int64_t hi) {
  const int64_t v = static_cast<int64_t>(x);
  return v < lo ? lo : (v > hi ? hi : v);
}

// Steps [begin, end) of segment b, clamped so that 0 <= begin <= end <= steps. Padded:
// step t of row b; packed: absolute positions.
struct Range {
  int64_t begin;
  int64_t end;
};

template <typename I>
__device__ __forceinline__ Range segment_range(const Layout& layout, int64_t b) {
  if (layout.packed) {
    const I* offsets = static_cast<const I*>(layout.offsets);
    const int64_t begin = clamp_index(offsets[b], 0, layout.steps);
    const int64_t end = clamp_index(offsets[b + 1], begin, layout.steps);
    return {begin, end};
  }
  if (layout.lengths == nullptr) return {0, layout.steps};
  return {0, clamp_index(static_cast<const I*>(layout.lengths)[b], 0, layout.steps)};
}

// Packed layouts: positions before offsets[0] and from offsets[B] on belong to no segment.
template <typename I>
__device__ __forceinline__ Range packed_outside(const Layout& layout) {
  const I* offsets = static_cast<const I*>(layout.offsets);
  const int64_t first = clamp_index(offsets[0], 0, layout.steps);
  const int64_t last = clamp_index(offsets[layout.batch], first, layout.steps);
  return {first, last};
}

// ---------------------------------------------------------------------------------------
// groups of warps: `warps_per_group` warps (1, 2, 4 or 8) of a 256-thread block serve one
// segment; a block serves 8 / warps_per_group segments.
// ---------------------------------------------------------------------------------------

struct Group {
  int64_t index;   // segment served by this group
  int tid;         // thread index inside the group
  int nthreads;    // threads in the group
  int warp;        // warp index inside the group
  int lane;
  int slot;        // group index inside the block
};

__device__ __forceinline__ Group make_group(int warps_per_group) {
  Group g;
  const int warp_in_block = threadIdx.x / kWarp;
  g.lane = threadIdx.x % kWarp;
  g.slot = warp_in_block / warps_per_group;
  g.warp = warp_in_block % warps_per_group;
  g.nthreads = warps_per_group * kWarp;
  g.tid = g.warp * kWarp + g.lane;
  g.index = static_cast<int64_t>(blockIdx.x) * (kBlockWarps / warps_per_group) + g.slot;
  return g;
}

template <typename A>
__device__ __forceinline__ A warp_sum(A x) {
#pragma unroll
  for (int off = kWarp / 2; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

// Sum over the group of per-warp totals (valid on every lane of warp 0 of the group), in
// a fixed order. Every thread of the block must call it (it holds a barrier).
template <typename A>
__device__ __forceinline__ A group_sum(A warp_total, const Group& g, int warps_per_group) {
  if (warps_per_group == 1) return warp_total;
  __shared__ SharedArray<A, kBlockWarps> partial;
  if (g.lane == 0) partial[threadIdx.x / kWarp] = warp_total;
  __syncthreads();
  A total = A(0);
  const int first = g.slot * warps_per_group;
  for (int w = 0; w < warps_per_group; ++w) total += partial[first + w];
  __syncthreads();
  return total;
}

// Warps per segment for an average of `avg_steps` steps over `batch` segments: more
// warps for long segments or too few segments to fill the device.
inline int choose_warps_per_group(int64_t batch, double avg_steps, double steps_per_warp) {
  int w = 1;
  while (w < kBlockWarps &&
         (avg_steps / w > steps_per_warp || (batch * w < 16384 && avg_steps / w >= 64))) {
    w *= 2;
  }
  return w;
}

inline unsigned grid_for(int64_t groups, int warps_per_group) {
  const int64_t per_block = kBlockWarps / warps_per_group;
  return static_cast<unsigned>((groups + per_block - 1) / per_block);
}

// Dispatch helpers: call f(T{}) / f(I{}) with a value of the matching C++ type.
template <typename F>
inline cudaError_t dispatch_float(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32:
      return f(float{});
    case DType::kFloat64:
      return f(double{});
    case DType::kBFloat16:
      return f(__nv_bfloat16{});
    case DType::kFloat16:
      return f(__half{});
    default:
      return cudaErrorInvalidValue;
  }
}

template <typename F>
inline cudaError_t dispatch_index(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kInt32:
      return f(int32_t{});
    case DType::kInt64:
      return f(int64_t{});
    default:
      return cudaErrorInvalidValue;
  }
}

}  // namespace gpu
}  // namespace gfn_fast
