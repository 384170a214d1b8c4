// Segment layouts shared by the CPU kernels: the step range of each segment, the region each
// segment owns for zero-filling, and the parallel loop over segments.
//
//   padded: values [B, T] (contiguous), lengths [B] or none (full rows); segment b is
//           steps b*T .. b*T + lengths[b], and owns its whole row b*T .. (b+1)*T.
//   packed: values [N], offsets [B + 1]; segment b is offsets[b] .. offsets[b+1]. Segment 0
//           also owns the head 0 .. offsets[0], the last segment the tail offsets[B] .. N.
//
// Every step position belongs to exactly one owned region, so a parallel loop over
// segments writes every output element exactly once, without races. Padding is never read.
//
// Types and shapes are checked before (csrc/common/op_checks.h); index values are not (the
// public functions validate them, gfn_fast/_checks.py): like the CUDA kernels, the layout
// clamps them so that nothing is read or written out of bounds. Lengths are clamped to
// [0, T]; offsets to [0, N] and made non-decreasing (a running maximum), which keeps the
// owned regions disjoint. Results for invalid values are unspecified.
#pragma once

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "common/op_args.h"
#include "vec_math.h"

namespace gfn_fast {
namespace cpu {

class SegmentLayout {
 public:
  // The layout of a `shape` already checked (csrc/common/op_checks.h), with its index values
  // read and clamped.
  static SegmentLayout make(const LayoutShape& shape, const c10::optional<at::Tensor>& lengths,
                            const c10::optional<at::Tensor>& offsets) {
    SegmentLayout layout;
    layout.batch_ = shape.batch;
    if (shape.packed) {
      layout.total_ = shape.steps;
      auto off = index_vector(*offsets);
      int64_t floor = 0;
      for (int64_t& o : off) {
        o = std::min(std::max(o, floor), layout.total_);
        floor = o;
      }
      layout.begin_ = std::move(off);  // B + 1 entries: begin(b) = off[b], end(b) = off[b + 1]
      layout.packed_ = true;
      return layout;
    }
    layout.row_ = shape.steps;
    layout.total_ = layout.batch_ * layout.row_;
    if (lengths.has_value()) {
      auto len = index_vector(*lengths);
      for (int64_t& l : len) l = std::min(std::max<int64_t>(l, 0), layout.row_);
      layout.begin_ = std::move(len);  // lengths
      layout.has_lengths_ = true;
    }
    return layout;
  }

  int64_t batch() const { return batch_; }
  int64_t total() const { return total_; }
  bool packed() const { return packed_; }

  int64_t begin(int64_t b) const { return packed_ ? begin_[b] : b * row_; }
  int64_t end(int64_t b) const {
    if (packed_) return begin_[b + 1];
    return b * row_ + (has_lengths_ ? begin_[b] : row_);
  }
  int64_t owned_begin(int64_t b) const { return packed_ ? (b == 0 ? 0 : begin_[b]) : b * row_; }
  int64_t owned_end(int64_t b) const {
    if (packed_) return b == batch_ - 1 ? total_ : begin_[b + 1];
    return (b + 1) * row_;
  }
  // Mean steps per segment (for the parallel grain size).
  int64_t mean_steps() const {
    if (batch_ == 0) return 0;
    return std::max<int64_t>(1, (packed_ ? begin_[batch_] - begin_[0] : total_) / batch_);
  }

  // Calls f(b_begin, b_end) over segment chunks in parallel. Each segment is handled by one
  // thread, so per-segment results do not depend on the thread count. `work_per_step`
  // scales the grain (bytes or flops per step, roughly).
  template <class F>
  void parallel(int64_t work_per_step, const F& f) const {
    const int64_t per_segment = std::max<int64_t>(1, mean_steps() * work_per_step);
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / per_segment);
    at::parallel_for(0, batch_, grain, f);
  }

 private:
  static std::vector<int64_t> index_vector(const at::Tensor& index) {
    const at::Tensor as_long = index.to(at::kLong).contiguous();
    const int64_t* data = as_long.data_ptr<int64_t>();
    return std::vector<int64_t>(data, data + as_long.numel());
  }

  std::vector<int64_t> begin_;  // packed: offsets (B + 1); padded: lengths (B) or empty
  int64_t batch_ = 0;
  int64_t row_ = 0;
  int64_t total_ = 0;
  bool packed_ = false;
  bool has_lengths_ = false;
};

// Writes `value` on segment b's steps and 0 on the rest of the region it owns.
template <class T>
inline void fill_owned(T* out, const SegmentLayout& layout, int64_t b, T value) {
  const int64_t lo = layout.owned_begin(b), first = layout.begin(b), last = layout.end(b),
                hi = layout.owned_end(b);
  fill_steps(out + lo, first - lo, T(0));
  fill_steps(out + first, last - first, value);
  fill_steps(out + last, hi - last, T(0));
}

// With B = 0 no segment owns anything; the whole output is padding.
template <class T>
inline void fill_unowned(T* out, const SegmentLayout& layout) {
  if (layout.batch() == 0) std::fill(out, out + layout.total(), T(0));
}

// out[b] = the sum of segment b's steps (sum_steps, rounded to its accumulation dtype and
// then converted to Out), in parallel over segments.
template <class T, class Out>
void segment_sums(const T* values, const SegmentLayout& layout, Out* out) {
  layout.parallel(sizeof(T), [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) {
      const int64_t first = layout.begin(b);
      out[b] = static_cast<Out>(sum_steps(values + first, layout.end(b) - first));
    }
  });
}

// Writes value(b) over each segment b's steps and 0 everywhere else, in parallel.
template <class T, class Value>
void fill_segments(T* out, const SegmentLayout& layout, const Value& value) {
  fill_unowned(out, layout);
  layout.parallel(sizeof(T), [&](int64_t lo, int64_t hi) {
    for (int64_t b = lo; b < hi; ++b) fill_owned(out, layout, b, static_cast<T>(value(b)));
  });
}

}  // namespace cpu
}  // namespace gfn_fast
