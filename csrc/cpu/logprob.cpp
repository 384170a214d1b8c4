// logprob_from_logits and its backward on CPU.
//
// Forward: per step, the masked maximum m and normaliser s = sum exp(x - m) of the row of
// logits, the chosen logit's (x[a] - m) - log s (subtracting m first keeps float32 exact
// for large logits), and the sum over the segment, in one pass; only the per-step
// logsumexp m + log s is saved, in float64. Backward: the softmax is recomputed as
// exp((x - hi) - lo) from the saved logsumexp split into two accumulation-dtype parts, and
// written straight into grad_logits (grad[b] * (onehot(action) - softmax)); no other
// [N, A] buffer exists.
//
// Invalid index values are clamped as on every device: actions to [0, A - 1]; a chosen
// action that the mask forbids contributes -inf (and no gradient).
//
// The float rows go through GFN_TARGET_CLONES kernels (AVX2 when the CPU has it) with the
// vectorising fast_exp, reading the mask in place; bfloat16 / float16 rows are widened
// (and masked) into a per-thread float row; float64 rows use std::exp.
#include <ATen/Dispatch.h>
#include <torch/extension.h>

#include <limits>
#include <vector>

#include "common/op_checks.h"
#include "common/op_config.h"
#include "segments.h"
#include "simd_pack.h"
#include "vec_math.h"

namespace gfn_fast {
namespace cpu {
namespace {

template <class Acc>
constexpr Acc kNegInf = -std::numeric_limits<Acc>::infinity();

// A row's maximum m and log s, s = sum exp(x - m); its logsumexp is m + log s.
template <class Acc>
struct RowNorm {
  Acc m;
  Acc log_s;
};

// The row's value at i: -inf where the mask (nullptr: none) forbids it.
template <class Acc>
GFN_ALWAYS_INLINE Acc masked(const Acc* x, const uint8_t* keep, int64_t i) {
  return keep == nullptr || keep[i] ? x[i] : kNegInf<Acc>;
}

// Two passes over the row (it stays in L1): the masked maximum, then the masked sum of
// exp(x - m), a pack at a time and the tail element-wise, in an order fixed by n.
template <class Acc, bool kMasked>
GFN_ALWAYS_INLINE RowNorm<Acc> row_norm_impl(const Acc* x, const uint8_t* keep, int64_t n) {
  using P = pack_t<Acc>;
  constexpr int W = P::kWidth;
  const typename P::V neg_inf = P::splat(kNegInf<Acc>), zero = P::splat(Acc(0));
  typename P::V top = neg_inf;
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    typename P::V v = P::load(x + i);
    if constexpr (kMasked) v = P::select(P::keep(keep + i), v, neg_inf);
    top = P::max(top, v);
  }
  Acc m = P::hmax(top);
  for (int64_t t = i; t < n; ++t) {
    const Acc v = masked(x, kMasked ? keep : nullptr, t);
    m = v > m ? v : m;
  }
  if (m == kNegInf<Acc>) return {m, kNegInf<Acc>};
  typename P::V sums = zero;
  const typename P::V shift = P::splat(m);
  for (i = 0; i + W <= n; i += W) {
    typename P::V e = P::exp(P::load(x + i) - shift);
    if constexpr (kMasked) e = P::select(P::keep(keep + i), e, zero);
    sums += e;
  }
  Acc tail = 0;
  for (; i < n; ++i) {
    const Acc e = fast_exp(x[i] - m);
    tail += kMasked && !keep[i] ? Acc(0) : e;
  }
  return {m, std::log(P::hsum(sums) + tail)};
}

// out[i] = -g * exp((x[i] - hi) - lo), exactly 0 where the mask forbids i; the caller adds
// g at the chosen action.
template <class Acc, bool kMasked>
GFN_ALWAYS_INLINE void row_grad_impl(const Acc* x, const uint8_t* keep, int64_t n, Acc hi,
                                     Acc lo, Acc g, Acc* out) {
  using P = pack_t<Acc>;
  constexpr int W = P::kWidth;
  const typename P::V vhi = P::splat(hi), vlo = P::splat(lo), vg = P::splat(-g);
  int64_t i = 0;
  for (; i + W <= n; i += W) {
    typename P::V v = vg * P::exp((P::load(x + i) - vhi) - vlo);
    if constexpr (kMasked) v = P::select(P::keep(keep + i), v, P::splat(Acc(0)));
    P::store(out + i, v);
  }
  for (; i < n; ++i) {
    const Acc v = -g * fast_exp((x[i] - hi) - lo);
    out[i] = kMasked && !keep[i] ? Acc(0) : v;
  }
}

template <class Acc>
GFN_ALWAYS_INLINE RowNorm<Acc> row_norm(const Acc* x, const uint8_t* keep, int64_t n) {
  return keep ? row_norm_impl<Acc, true>(x, keep, n) : row_norm_impl<Acc, false>(x, keep, n);
}
template <class Acc>
GFN_ALWAYS_INLINE void row_grad(const Acc* x, const uint8_t* keep, int64_t n, Acc hi, Acc lo,
                                Acc g, Acc* out) {
  if (keep) {
    row_grad_impl<Acc, true>(x, keep, n, hi, lo, g, out);
  } else {
    row_grad_impl<Acc, false>(x, keep, n, hi, lo, g, out);
  }
}

// The float kernels, compiled once per target (vec_math.h).
GFN_TARGET_CLONES RowNorm<float> row_norm_f32(const float* x, const uint8_t* keep, int64_t n) {
  return row_norm(x, keep, n);
}
GFN_TARGET_CLONES void row_grad_f32(const float* x, const uint8_t* keep, int64_t n, float hi,
                                    float lo, float g, float* out) {
  row_grad(x, keep, n, hi, lo, g, out);
}

inline RowNorm<float> norm_of_row(const float* x, const uint8_t* keep, int64_t n) {
  return row_norm_f32(x, keep, n);
}
inline RowNorm<double> norm_of_row(const double* x, const uint8_t* keep, int64_t n) {
  return row_norm(x, keep, n);
}
inline void grad_of_row(const float* x, const uint8_t* keep, int64_t n, float hi, float lo,
                        float g, float* out) {
  row_grad_f32(x, keep, n, hi, lo, g, out);
}
inline void grad_of_row(const double* x, const uint8_t* keep, int64_t n, double hi, double lo,
                        double g, double* out) {
  row_grad(x, keep, n, hi, lo, g, out);
}

// The saved float64 logsumexp as hi + lo in Acc, so that (x - hi) - lo keeps the precision
// of x - lse.
template <class Acc>
inline void split_lse(double lse, Acc& hi, Acc& lo) {
  hi = static_cast<Acc>(lse);
  lo = std::isfinite(lse) ? static_cast<Acc>(lse - static_cast<double>(hi)) : Acc(0);
}

// A row of logits in the accumulation dtype and the mask to apply to it: the input row and
// mask themselves where no widening is needed; else a float copy in a per-thread buffer
// with forbidden actions already at -inf (and no mask left to apply).
template <class T>
struct RowReader {
  using Acc = acc_t<T>;
  std::vector<Acc> buffer;
  explicit RowReader(int64_t n) : buffer(std::is_same<T, Acc>::value ? 0 : n) {}
  const Acc* read(const T* row, const uint8_t*& keep, int64_t n) {
    if constexpr (std::is_same<T, Acc>::value) {
      return row;
    } else {
      Acc* out = buffer.data();
      for (int64_t i = 0; i < n; ++i) {
        out[i] = keep == nullptr || keep[i] ? static_cast<Acc>(row[i]) : kNegInf<Acc>;
      }
      keep = nullptr;
      return out;
    }
  }
};

// dst = g * (onehot(a) - softmax(row)) in T, 0 where forbidden; narrow dtypes go through
// the float `tmp`.
template <class T, class Acc>
inline void write_grad_row(const Acc* row, const uint8_t* keep, int64_t n, Acc hi, Acc lo,
                           Acc g, int64_t a, bool chosen_allowed, T* dst,
                           std::vector<Acc>& tmp) {
  Acc* out = std::is_same<T, Acc>::value ? reinterpret_cast<Acc*>(dst) : tmp.data();
  grad_of_row(row, keep, n, hi, lo, g, out);
  if (chosen_allowed) out[a] += g;
  if constexpr (!std::is_same<T, Acc>::value) {
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<T>(tmp[j]);
  }
}

// Inputs shared by the forward and the backward, made contiguous.
struct LogitsArgs {
  at::Tensor logits;
  at::Tensor actions;  // int64
  at::Tensor mask;     // bool, or undefined
  int64_t num_actions = 0;
  const int64_t* action_data = nullptr;
  const uint8_t* mask_data = nullptr;  // nullptr: no mask

  const uint8_t* mask_row(int64_t i) const {
    return mask_data != nullptr ? mask_data + i * num_actions : nullptr;
  }
  // The chosen action of step i, clamped to [0, A - 1].
  int64_t action(int64_t i) const {
    const int64_t a = action_data[i];
    return a < 0 ? 0 : (a >= num_actions ? num_actions - 1 : a);
  }
};

// `num_actions` from the checks of csrc/common/op_checks.h.
LogitsArgs prepare(const at::Tensor& logits, const at::Tensor& actions,
                   const c10::optional<at::Tensor>& action_mask, int64_t num_actions) {
  LogitsArgs args;
  args.num_actions = num_actions;
  args.logits = logits.contiguous();
  args.actions = actions.to(at::kLong).contiguous();
  if (action_mask.has_value()) {
    args.mask = action_mask->contiguous();
    args.mask_data = reinterpret_cast<const uint8_t*>(args.mask.const_data_ptr<bool>());
  }
  args.action_data = args.actions.const_data_ptr<int64_t>();
  return args;
}

std::tuple<at::Tensor, at::Tensor> logprob_from_logits(
    const at::Tensor& logits, const at::Tensor& actions,
    const c10::optional<at::Tensor>& action_mask, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& offsets) {
  const LogitsShape shape = check_logprob_from_logits(OpArgs("logprob_from_logits"), logits,
                                                      actions, action_mask, lengths, offsets);
  const LogitsArgs args = prepare(logits, actions, action_mask, shape.num_actions);
  const SegmentLayout layout = SegmentLayout::make(shape.layout, lengths, offsets);
  at::Tensor logprob = at::empty(
      {layout.batch()}, logits.options().dtype(accumulation_type(logits.scalar_type())));
  at::Tensor step_lse = at::empty(actions.sizes(), logits.options().dtype(at::kDouble));
  const int64_t n = args.num_actions;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, logits.scalar_type(), "logprob_from_logits", [&] {
        using Acc = acc_t<scalar_t>;
        const scalar_t* x = args.logits.const_data_ptr<scalar_t>();
        double* lse_out = step_lse.data_ptr<double>();
        Acc* sums = logprob.data_ptr<Acc>();
        fill_unowned(lse_out, layout);
        layout.parallel(n * 8, [&](int64_t lo, int64_t hi) {
          RowReader<scalar_t> reader(n);
          for (int64_t b = lo; b < hi; ++b) {
            fill_owned(lse_out, layout, b, 0.0);
            Acc total = 0;
            for (int64_t i = layout.begin(b); i < layout.end(b); ++i) {
              const uint8_t* allowed = args.mask_row(i);
              const uint8_t* keep = allowed;
              const Acc* row = reader.read(x + i * n, keep, n);
              const RowNorm<Acc> norm = norm_of_row(row, keep, n);
              const int64_t a = args.action(i);
              lse_out[i] = static_cast<double>(norm.m) + static_cast<double>(norm.log_s);
              total += allowed == nullptr || allowed[a] ? (row[a] - norm.m) - norm.log_s
                                                        : kNegInf<Acc>;
            }
            sums[b] = total;
          }
        });
      });
  return {logprob, step_lse};
}

at::Tensor logprob_from_logits_backward(const at::Tensor& grad, const at::Tensor& logits,
                                        const at::Tensor& actions,
                                        const c10::optional<at::Tensor>& action_mask,
                                        const at::Tensor& step_lse,
                                        const c10::optional<at::Tensor>& lengths,
                                        const c10::optional<at::Tensor>& offsets) {
  const LogitsShape shape =
      check_logprob_from_logits_backward(OpArgs("logprob_from_logits_backward"), grad, logits,
                                         actions, action_mask, step_lse, lengths, offsets);
  const LogitsArgs args = prepare(logits, actions, action_mask, shape.num_actions);
  const SegmentLayout layout = SegmentLayout::make(shape.layout, lengths, offsets);
  const at::Tensor g = grad.to(accumulation_type(logits.scalar_type())).contiguous();
  const at::Tensor lse_in = step_lse.to(at::kDouble).contiguous();
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  const int64_t n = args.num_actions;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, logits.scalar_type(), "logprob_from_logits_backward", [&] {
        using Acc = acc_t<scalar_t>;
        const scalar_t* x = args.logits.const_data_ptr<scalar_t>();
        const Acc* gd = g.const_data_ptr<Acc>();
        const double* lse = lse_in.const_data_ptr<double>();
        scalar_t* out = grad_logits.data_ptr<scalar_t>();
        if (layout.batch() == 0) std::fill(out, out + layout.total() * n, scalar_t(0));
        layout.parallel(n * 8, [&](int64_t lo, int64_t hi) {
          RowReader<scalar_t> reader(n);
          std::vector<Acc> row_out(std::is_same<scalar_t, Acc>::value ? 0 : n);
          for (int64_t b = lo; b < hi; ++b) {
            const int64_t first = layout.begin(b), last = layout.end(b);
            std::fill(out + layout.owned_begin(b) * n, out + first * n, scalar_t(0));
            std::fill(out + last * n, out + layout.owned_end(b) * n, scalar_t(0));
            const Acc gb = gd[b];
            for (int64_t i = first; i < last; ++i) {
              const uint8_t* allowed = args.mask_row(i);
              const uint8_t* keep = allowed;
              const Acc* row = reader.read(x + i * n, keep, n);
              const int64_t a = args.action(i);
              Acc lse_hi, lse_lo;
              split_lse(lse[i], lse_hi, lse_lo);
              write_grad_row(row, keep, n, lse_hi, lse_lo, gb, a,
                             allowed == nullptr || allowed[a], out + i * n, row_out);
            }
          }
        });
      });
  return grad_logits;
}

}  // namespace
}  // namespace cpu
}  // namespace gfn_fast

TORCH_LIBRARY_IMPL(gfn_fast, CPU, m) {
  m.impl("logprob_from_logits", &gfn_fast::cpu::logprob_from_logits);
  m.impl("logprob_from_logits_backward", &gfn_fast::cpu::logprob_from_logits_backward);
}
