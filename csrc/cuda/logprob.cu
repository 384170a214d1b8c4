// logprob_from_logits forward and backward.
//
// Forward: per step, a masked online logsumexp of the logits row (its maximum m and
// s = sum exp(x - m)) and the chosen logit's (x[a] - m) - log s, summed over each segment
// in one pass; only the per-step logsumexp m + log s is saved, in float64, so that large
// logits keep their precision. Backward: recomputes softmax as exp((x - hi) - lo) from the
// saved logsumexp split into two accumulation-dtype parts, and writes
// grad[b] * (onehot(action) - softmax) inside segments, 0 elsewhere (masked entries 0).
//
// One group of 1-8 warps per segment; each warp takes whole rows (the action axis is
// contiguous and read with 16-byte loads), so every row's reduction is a fixed-order warp
// reduction and the segment sum a fixed-order sum over warps: bitwise reproducible.
#include <cmath>

#include "cuda/common.cuh"

namespace gfn_fast {
namespace gpu {
namespace {

// Rows per warp before a segment gets another warp.
constexpr double kRowsPerWarp = 4.0;

// exp in the accumulation dtype. Half-precision inputs use the fast intrinsic (its error
// is far below their resolution); float32 and float64 inputs the accurate functions.
template <typename T>
__device__ __forceinline__ acc_t<T> exp_acc(acc_t<T> x) {
  return __expf(x);
}
template <>
__device__ __forceinline__ float exp_acc<float>(float x) {
  return expf(x);
}
template <>
__device__ __forceinline__ double exp_acc<double>(double x) {
  return exp(x);
}

template <typename T>
struct OnlineLse {
  using A = acc_t<T>;
  A m = -INFINITY;  // running maximum
  A s = A(0);       // sum of exp(x - m)

  __device__ __forceinline__ static A scale(A from, A to) {
    // exp(from - to) with from <= to; exact 1 when equal (also for infinities).
    return from == to ? A(1) : exp_acc<T>(from - to);
  }
  __device__ __forceinline__ void raise_max(A chunk_max) {
    if (chunk_max > m) {
      s *= scale(m, chunk_max);
      m = chunk_max;
    }
  }
  __device__ __forceinline__ void add(A x) {
    if (x != -INFINITY) s += scale(x, m);
  }
  __device__ __forceinline__ void merge_warp() {
#pragma unroll
    for (int off = kWarp / 2; off > 0; off /= 2) {
      const A m2 = __shfl_xor_sync(0xffffffffu, m, off);
      const A s2 = __shfl_xor_sync(0xffffffffu, s, off);
      const A top = m2 > m ? m2 : m;
      s = s * scale(m, top) + s2 * scale(m2, top);
      m = top;
    }
  }
  // log s; with the maximum m, the row's logsumexp is m + log s.
  __device__ __forceinline__ A log_norm() const { return s == A(0) ? A(-INFINITY) : log(s); }
};

__device__ __forceinline__ bool allowed(const bool* mask_row, int64_t i) {
  return mask_row == nullptr || mask_row[i];
}

// Masked logsumexp of a row (its maximum and normaliser), on every lane of the warp.
template <typename T>
__device__ __forceinline__ OnlineLse<T> row_lse(const T* row, const bool* mask_row, int64_t n,
                                                int lane) {
  using A = acc_t<T>;
  OnlineLse<T> lse;
  for_each_chunk(
      row, n, lane, kWarp,
      [&](int64_t i0, const Pack<T>& pack) {
        A x[Pack<T>::kSize];
        A top = -INFINITY;
#pragma unroll
        for (int j = 0; j < Pack<T>::kSize; ++j) {
          x[j] = allowed(mask_row, i0 + j) ? to_acc<A>(pack.v[j]) : A(-INFINITY);
          top = fmax(top, x[j]);
        }
        lse.raise_max(top);
#pragma unroll
        for (int j = 0; j < Pack<T>::kSize; ++j) lse.add(x[j]);
      },
      [&](int64_t i, T v) {
        if (!allowed(mask_row, i)) return;
        const A x = to_acc<A>(v);
        lse.raise_max(x);
        lse.add(x);
      });
  lse.merge_warp();
  return lse;
}

// The saved float64 logsumexp as hi + lo in the accumulation dtype, so that (x - hi) - lo
// keeps the precision of x - lse.
template <typename A>
__device__ __forceinline__ void split_lse(double lse, A& hi, A& lo) {
  hi = static_cast<A>(lse);
  lo = (lse - lse == 0.0) ? static_cast<A>(lse - static_cast<double>(hi)) : A(0);
}

struct RowPos {
  int64_t b;
  int64_t t;      // step (padded) or absolute position (packed)
  int64_t flat;   // index into step_lse / rows of the contiguous gradient
};

__device__ __forceinline__ RowPos row_pos(const Layout& layout, int64_t b, int64_t t) {
  return {b, t, layout.packed ? t : b * layout.steps + t};
}

template <typename T>
__device__ __forceinline__ const T* row_ptr(const StepArg& arg, const RowPos& p) {
  return static_cast<const T*>(arg.data) + p.b * arg.stride_b + p.t * arg.stride_t;
}

__device__ __forceinline__ int64_t row_action(const StepArg& actions, const RowPos& p,
                                              int64_t num_actions) {
  const int64_t a =
      load_index(actions.data, actions.dtype, p.b * actions.stride_b + p.t * actions.stride_t);
  return a < 0 ? 0 : (a >= num_actions ? num_actions - 1 : a);
}

template <typename T, typename I>
__global__ void __launch_bounds__(kBlockThreads)
    logprob_forward_kernel(StepArg logits, int64_t num_actions, StepArg actions, StepArg mask,
                           Layout layout, int warps_per_group, acc_t<T>* logprob,
                           double* step_lse) {
  using A = acc_t<T>;
  const Group g = make_group(warps_per_group);
  const bool active = g.index < layout.batch;
  A warp_total = A(0);
  if (active) {
    const int64_t b = g.index;
    const Range r = segment_range<I>(layout, b);
    for (int64_t t = r.begin + g.warp; t < r.end; t += warps_per_group) {
      const RowPos p = row_pos(layout, b, t);
      const T* row = row_ptr<T>(logits, p);
      const bool* mask_row = mask.data != nullptr ? row_ptr<bool>(mask, p) : nullptr;
      const OnlineLse<T> lse = row_lse(row, mask_row, num_actions, g.lane);
      const A log_norm = lse.log_norm();
      const int64_t a = row_action(actions, p, num_actions);
      warp_total += allowed(mask_row, a) ? (to_acc<A>(row[a]) - lse.m) - log_norm : A(-INFINITY);
      if (g.lane == 0) step_lse[p.flat] = static_cast<double>(lse.m) + log_norm;
    }
    if (!layout.packed) {  // steps past the length
      for (int64_t t = r.end + g.tid; t < layout.steps; t += g.nthreads) {
        step_lse[b * layout.steps + t] = 0.0;
      }
    }
  } else if (layout.packed && g.index == layout.batch) {  // positions outside every segment
    const Range inside = packed_outside<I>(layout);
    for (int64_t t = g.tid; t < inside.begin; t += g.nthreads) step_lse[t] = 0.0;
    for (int64_t t = inside.end + g.tid; t < layout.steps; t += g.nthreads) step_lse[t] = 0.0;
  }
  const A total = group_sum(warp_total, g, warps_per_group);
  if (active && g.tid == 0) logprob[g.index] = total;
}

template <typename T>
__device__ __forceinline__ void zero_row(T* out_row, int64_t n, int lane) {
  const T zero = from_acc<T>(acc_t<T>(0));
  for_each_store(out_row, n, lane, kWarp, [&](int64_t) { return zero; });
}

template <typename T, typename I>
__global__ void __launch_bounds__(kBlockThreads)
    logprob_backward_kernel(VecArg grad, StepArg logits, int64_t num_actions, StepArg actions,
                            StepArg mask, const double* step_lse, Layout layout,
                            int warps_per_group, T* out) {
  using A = acc_t<T>;
  const Group g = make_group(warps_per_group);
  const int64_t groups = layout.batch + (layout.packed ? 1 : 0);
  if (g.index >= groups) return;  // no barrier in this kernel
  const int64_t b = g.index;
  if (b == layout.batch) {  // packed: rows outside every segment
    const Range inside = packed_outside<I>(layout);
    for (int64_t t = g.warp; t < inside.begin; t += warps_per_group) {
      zero_row(out + t * num_actions, num_actions, g.lane);
    }
    for (int64_t t = inside.end + g.warp; t < layout.steps; t += warps_per_group) {
      zero_row(out + t * num_actions, num_actions, g.lane);
    }
    return;
  }
  const Range r = segment_range<I>(layout, b);
  const A scale = static_cast<A>(load_double(grad, b));
  for (int64_t t = r.begin + g.warp; t < r.end; t += warps_per_group) {
    const RowPos p = row_pos(layout, b, t);
    const T* row = row_ptr<T>(logits, p);
    const bool* mask_row = mask.data != nullptr ? row_ptr<bool>(mask, p) : nullptr;
    const int64_t a = row_action(actions, p, num_actions);
    A lse_hi, lse_lo;
    split_lse(step_lse[p.flat], lse_hi, lse_lo);
    T* out_row = out + p.flat * num_actions;
    auto grad_at = [&](int64_t i, T v) -> T {
      if (!allowed(mask_row, i)) return from_acc<T>(A(0));
      const A softmax = exp_acc<T>((to_acc<A>(v) - lse_hi) - lse_lo);
      return from_acc<T>(scale * ((i == a ? A(1) : A(0)) - softmax));
    };
    if (same_alignment(row, out_row)) {
      for_each_chunk(
          row, num_actions, g.lane, kWarp,
          [&](int64_t i0, const Pack<T>& pack) {
            Pack<T> result;
#pragma unroll
            for (int j = 0; j < Pack<T>::kSize; ++j) result.v[j] = grad_at(i0 + j, pack.v[j]);
            store_aligned(reinterpret_cast<Pack<T>*>(out_row + i0), result);
          },
          [&](int64_t i, T v) { out_row[i] = grad_at(i, v); });
    } else {
      for (int64_t i = g.lane; i < num_actions; i += kWarp) out_row[i] = grad_at(i, row[i]);
    }
  }
  if (!layout.packed) {  // rows past the length
    for (int64_t t = r.end + g.warp; t < layout.steps; t += warps_per_group) {
      zero_row(out + (b * layout.steps + t) * num_actions, num_actions, g.lane);
    }
  }
}

int warps_for(const Layout& layout) {
  const double rows = layout.packed
                          ? (layout.batch > 0 ? static_cast<double>(layout.steps) / layout.batch : 0)
                          : static_cast<double>(layout.steps);
  int w = 1;
  while (w < kBlockWarps && rows / w > kRowsPerWarp) w *= 2;
  return w;
}

}  // namespace

cudaError_t logprob_from_logits(StepArg logits, int64_t num_actions, StepArg actions,
                                StepArg action_mask, Layout layout, void* logprob,
                                double* step_lse, cudaStream_t stream) {
  const int64_t groups = layout.batch + (layout.packed ? 1 : 0);
  if (groups == 0) return cudaSuccess;
  const int wpg = warps_for(layout);
  const unsigned grid = grid_for(groups, wpg);
  return dispatch_index(layout.index_dtype, [&](auto i) {
    using I = decltype(i);
    return dispatch_float(logits.dtype, [&](auto t) {
      using T = decltype(t);
      return launch<&logprob_forward_kernel<T, I>>(
          grid, kBlockThreads, stream, logits, num_actions, actions, action_mask, layout, wpg,
          static_cast<acc_t<T>*>(logprob), step_lse);
    });
  });
}

cudaError_t logprob_from_logits_backward(VecArg grad, StepArg logits, int64_t num_actions,
                                         StepArg actions, StepArg action_mask,
                                         const double* step_lse, Layout layout,
                                         void* grad_logits, cudaStream_t stream) {
  const int64_t groups = layout.batch + (layout.packed ? 1 : 0);
  if (groups == 0) return cudaSuccess;
  const int wpg = warps_for(layout);
  const unsigned grid = grid_for(groups, wpg);
  return dispatch_index(layout.index_dtype, [&](auto i) {
    using I = decltype(i);
    return dispatch_float(logits.dtype, [&](auto t) {
      using T = decltype(t);
      return launch<&logprob_backward_kernel<T, I>>(
          grid, kBlockThreads, stream, grad, logits, num_actions, actions, action_mask,
          step_lse, layout, wpg, static_cast<T*>(grad_logits));
    });
  });
}

}  // namespace gpu
}  // namespace gfn_fast
