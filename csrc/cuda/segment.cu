// Segment reductions and their broadcasts: segment_sum, segment_sum_backward, the per-step
// part of the fused divergence loss (forward sums and the one-pass backward).
//
// One group of 1-8 warps per segment (more for long segments), a fixed summation order
// and no atomics: results are bitwise reproducible. Unit-stride steps are read and
// written with 16-byte vector accesses past the first 16-byte boundary.
#include "cuda/common.cuh"

namespace gfn_fast {
namespace gpu {
namespace {

// Steps per warp before a segment gets another warp.
constexpr double kSumStepsPerWarp = 1024.0;
constexpr double kWriteStepsPerWarp = 2048.0;

template <typename T>
__device__ __forceinline__ acc_t<T> warp_segment_sum(const StepArg& v, int64_t b, Range r,
                                                     const Group& g) {
  using A = acc_t<T>;
  const T* base = static_cast<const T*>(v.data) + b * v.stride_b + r.begin * v.stride_t;
  A acc = A(0);
  for_each_load(base, r.end - r.begin, v.stride_t, g.tid, g.nthreads,
                [&](int64_t, T x) { acc += to_acc<A>(x); });
  return warp_sum(acc);
}

// out[b] = sum of segment b of v1; with v2 present also out[B + b] = sum of segment b of v2.
template <typename T1, typename T2, typename I, typename Out>
__global__ void __launch_bounds__(kBlockThreads)
    segment_sum_kernel(StepArg v1, StepArg v2, Layout layout, int warps_per_group, Out* out) {
  const Group g = make_group(warps_per_group);
  const bool active = g.index < layout.batch;
  Range r{0, 0};
  if (active) r = segment_range<I>(layout, g.index);
  const int64_t b = active ? g.index : 0;
  const acc_t<T1> s1 = group_sum(warp_segment_sum<T1>(v1, b, r, g), g, warps_per_group);
  if (active && g.tid == 0) out[b] = static_cast<Out>(s1);
  if (v2.data != nullptr) {
    const acc_t<T2> s2 = group_sum(warp_segment_sum<T2>(v2, b, r, g), g, warps_per_group);
    if (active && g.tid == 0) out[layout.batch + b] = static_cast<Out>(s2);
  }
}

// Value written on segment b: scale * coef[b] as a product in the accumulation dtype of T,
// then cast to T (what autograd of the reference produces).
template <typename T>
__device__ __forceinline__ T broadcast_value(double scale, const VecArg& coef, int64_t b) {
  using A = acc_t<T>;
  return from_acc<T>(static_cast<A>(scale) * static_cast<A>(load_double(coef, b)));
}

template <typename T, typename I>
__device__ __forceinline__ void write_segment(T* out, const Layout& layout, int64_t b, T value,
                                              const Group& g) {
  const T zero = from_acc<T>(acc_t<T>(0));
  if (layout.packed) {
    if (b < layout.batch) {
      const Range r = segment_range<I>(layout, b);
      for_each_store(out + r.begin, r.end - r.begin, g.tid, g.nthreads,
                     [&](int64_t) { return value; });
    } else {  // the extra group: positions outside every segment
      const Range inside = packed_outside<I>(layout);
      for_each_store(out, inside.begin, g.tid, g.nthreads, [&](int64_t) { return zero; });
      for_each_store(out + inside.end, layout.steps - inside.end, g.tid, g.nthreads,
                     [&](int64_t) { return zero; });
    }
    return;
  }
  const int64_t n = segment_range<I>(layout, b).end;
  for_each_store(out + b * layout.steps, layout.steps, g.tid, g.nthreads,
                 [&](int64_t t) { return t < n ? value : zero; });
}

// out1 = scale * c1[b] over segment b (0 elsewhere); out2 likewise with c2 when non-null;
// extra[0] = scale * e when non-null. scale = scale_arg[0], or 1 when absent.
template <typename T1, typename T2, typename I>
__global__ void __launch_bounds__(kBlockThreads)
    broadcast_kernel(VecArg scale_arg, VecArg c1, T1* out1, VecArg c2, T2* out2, VecArg e,
                     void* extra, DType extra_dtype, Layout layout, int warps_per_group) {
  const double scale = scale_arg.data != nullptr ? load_double(scale_arg, 0) : 1.0;
  if (extra != nullptr && blockIdx.x == 0 && threadIdx.x == 0) {
    if (extra_dtype == DType::kFloat64) {
      *static_cast<double*>(extra) = scale * load_double(e, 0);
    } else {
      *static_cast<float*>(extra) =
          static_cast<float>(scale) * static_cast<float>(load_double(e, 0));
    }
  }
  const Group g = make_group(warps_per_group);
  const int64_t groups = layout.batch + (layout.packed ? 1 : 0);
  if (g.index >= groups) return;  // no barrier in this kernel
  const int64_t b = g.index;
  const bool inside = b < layout.batch;
  write_segment<T1, I>(out1, layout, b, inside ? broadcast_value<T1>(scale, c1, b) : T1{}, g);
  if (out2 != nullptr) {
    write_segment<T2, I>(out2, layout, b, inside ? broadcast_value<T2>(scale, c2, b) : T2{}, g);
  }
}

double average_steps(const Layout& layout) {
  if (!layout.packed) return static_cast<double>(layout.steps);
  return layout.batch > 0 ? static_cast<double>(layout.steps) / layout.batch : 0.0;
}

cudaError_t launch_sums(StepArg v1, StepArg v2, Layout layout, void* out, bool out_is_double,
                        cudaStream_t stream) {
  if (layout.batch == 0) return cudaSuccess;
  if (v2.data != nullptr && v2.dtype != v1.dtype) {
    // Mixed dtypes: one launch per input keeps the instantiations to T1 == T2.
    const cudaError_t status = launch_sums(v1, StepArg{}, layout, out, out_is_double, stream);
    if (status != cudaSuccess) return status;
    const size_t bytes = out_is_double ? sizeof(double)
                                       : (v1.dtype == DType::kFloat64 ? sizeof(double) : sizeof(float));
    return launch_sums(v2, StepArg{}, layout, static_cast<char*>(out) + layout.batch * bytes,
                       out_is_double, stream);
  }
  const int wpg = choose_warps_per_group(layout.batch, average_steps(layout), kSumStepsPerWarp);
  const unsigned grid = grid_for(layout.batch, wpg);
  return dispatch_index(layout.index_dtype, [&](auto i) {
    using I = decltype(i);
    return dispatch_float(v1.dtype, [&](auto t) {
      using T = decltype(t);
      if (out_is_double) {
        return launch<&segment_sum_kernel<T, T, I, double>>(grid, kBlockThreads, stream, v1, v2,
                                                              layout, wpg,
                                                              static_cast<double*>(out));
      }
      return launch<&segment_sum_kernel<T, T, I, acc_t<T>>>(grid, kBlockThreads, stream, v1, v2,
                                                             layout, wpg,
                                                             static_cast<acc_t<T>*>(out));
    });
  });
}

cudaError_t launch_broadcast(VecArg scale, VecArg c1, void* out1, DType dtype1, VecArg c2,
                             void* out2, DType dtype2, VecArg e, void* extra, DType extra_dtype,
                             Layout layout, cudaStream_t stream) {
  const int64_t groups = layout.batch + (layout.packed ? 1 : 0);
  // With no segment there may still be grad_log_z to write: one block does it.
  if (groups == 0 && extra == nullptr) return cudaSuccess;
  if (out2 != nullptr && dtype2 != dtype1) {
    // Mixed dtypes: one launch per output keeps the instantiations to T1 == T2.
    const cudaError_t status = launch_broadcast(scale, c1, out1, dtype1, VecArg{}, nullptr,
                                                dtype1, e, extra, extra_dtype, layout, stream);
    if (status != cudaSuccess) return status;
    return launch_broadcast(scale, c2, out2, dtype2, VecArg{}, nullptr, dtype2, VecArg{},
                            nullptr, extra_dtype, layout, stream);
  }
  const int wpg = choose_warps_per_group(layout.batch, average_steps(layout), kWriteStepsPerWarp);
  const unsigned grid = groups == 0 ? 1u : grid_for(groups, wpg);
  return dispatch_index(layout.index_dtype, [&](auto i) {
    using I = decltype(i);
    return dispatch_float(dtype1, [&](auto t) {
      using T = decltype(t);
      return launch<&broadcast_kernel<T, T, I>>(grid, kBlockThreads, stream, scale, c1,
                                                static_cast<T*>(out1), c2, static_cast<T*>(out2),
                                                e, extra, extra_dtype, layout, wpg);
    });
  });
}

}  // namespace

cudaError_t segment_sum(StepArg values, Layout layout, void* out, cudaStream_t stream) {
  return launch_sums(values, StepArg{}, layout, out, false, stream);
}

cudaError_t segment_sums_to_double(StepArg pf, StepArg pb, Layout layout, double* sums,
                                   cudaStream_t stream) {
  return launch_sums(pf, pb, layout, sums, true, stream);
}

cudaError_t segment_sum_backward(VecArg grad, Layout layout, void* out, DType out_dtype,
                                 cudaStream_t stream) {
  return launch_broadcast(VecArg{}, grad, out, out_dtype, VecArg{}, nullptr, out_dtype,
                          VecArg{}, nullptr, DType::kFloat32, layout, stream);
}

cudaError_t divergence_loss_backward(VecArg grad_loss, VecArg c, VecArg d, VecArg e,
                                     Layout layout, void* grad_pf, DType pf_dtype,
                                     void* grad_pb, DType pb_dtype, void* grad_log_z,
                                     DType acc_dtype, cudaStream_t stream) {
  return launch_broadcast(grad_loss, c, grad_pf, pf_dtype, d, grad_pb, pb_dtype, e, grad_log_z,
                          acc_dtype, layout, stream);
}

}  // namespace gpu
}  // namespace gfn_fast
