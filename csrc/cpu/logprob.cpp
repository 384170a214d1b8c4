// logprob_from_logits and its backward on CPU.
//
// Forward: per step, the masked logsumexp of the row of logits, the chosen logit, and the
// sum over the segment, in one pass; only the per-step logsumexp is saved. Backward: the
// softmax is recomputed from the saved logsumexp and written straight into grad_logits
// (grad[b] * (onehot(action) - softmax)); no other [N, A] buffer exists.
//
// The float rows go through GFN_TARGET_CLONES kernels (AVX2 when the CPU has it) with the
// vectorising fast_exp; bfloat16 / float16 rows are widened into a per-thread float row;
// float64 rows use std::exp.
#include <ATen/Dispatch.h>
#include <torch/extension.h>

#include <limits>
#include <vector>

#include "segments.h"
#include "vec_math.h"

namespace gfn_fast {
namespace cpu {
namespace {

// logsumexp of one row in which masked actions already hold -inf.
template <class Acc>
GFN_ALWAYS_INLINE Acc row_lse(const Acc* x, int64_t n) {
  constexpr Acc kNegInf = -std::numeric_limits<Acc>::infinity();
  Acc lanes[kLanes];
  for (int j = 0; j < kLanes; ++j) lanes[j] = kNegInf;
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] = x[i + j] > lanes[j] ? x[i + j] : lanes[j];
  }
  Acc m = kNegInf;
  for (; i < n; ++i) m = x[i] > m ? x[i] : m;
  for (int j = 0; j < kLanes; ++j) m = lanes[j] > m ? lanes[j] : m;
  if (m == kNegInf) return m;
  Acc sums[kLanes] = {};
  i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) sums[j] += fast_exp(x[i + j] - m);
  }
  Acc tail = 0;
  for (; i < n; ++i) tail += fast_exp(x[i] - m);
  return m + std::log(combine_lanes(sums) + tail);
}

// out[j] = -g * softmax_j (exactly 0 where the row holds -inf); the caller adds g at the
// chosen action.
template <class Acc>
GFN_ALWAYS_INLINE void row_grad(const Acc* x, int64_t n, Acc lse, Acc g, Acc* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = -g * fast_exp(x[i] - lse);
}

// The float kernels, compiled once per target (vec_math.h).
GFN_TARGET_CLONES float row_lse_f32(const float* x, int64_t n) { return row_lse(x, n); }
GFN_TARGET_CLONES void row_grad_f32(const float* x, int64_t n, float lse, float g, float* out) {
  row_grad(x, n, lse, g, out);
}

inline float lse_of_row(const float* x, int64_t n) { return row_lse_f32(x, n); }
inline double lse_of_row(const double* x, int64_t n) { return row_lse(x, n); }
inline void grad_of_row(const float* x, int64_t n, float lse, float g, float* out) {
  row_grad_f32(x, n, lse, g, out);
}
inline void grad_of_row(const double* x, int64_t n, double lse, double g, double* out) {
  row_grad(x, n, lse, g, out);
}

// A row of logits in the accumulation dtype with masked actions set to -inf: the input
// itself when it needs neither widening nor masking, else a copy in a per-thread buffer.
template <class T>
struct RowReader {
  using Acc = acc_t<T>;
  std::vector<Acc> buffer;
  explicit RowReader(int64_t n) : buffer(n) {}
  const Acc* read(const T* row, const bool* mask_row, int64_t n) {
    constexpr Acc kNegInf = -std::numeric_limits<Acc>::infinity();
    Acc* out = buffer.data();
    if (mask_row != nullptr) {
      const auto* keep = reinterpret_cast<const uint8_t*>(mask_row);
      for (int64_t i = 0; i < n; ++i) out[i] = keep[i] ? static_cast<Acc>(row[i]) : kNegInf;
      return out;
    }
    if constexpr (std::is_same<T, Acc>::value) {
      return row;
    } else {
      for (int64_t i = 0; i < n; ++i) out[i] = static_cast<Acc>(row[i]);
      return out;
    }
  }
};

// dst = g * (onehot(a) - softmax(row)) in T; narrow dtypes go through the float `tmp`.
template <class T, class Acc>
inline void write_grad_row(const Acc* row, int64_t n, Acc lse, Acc g, int64_t a, T* dst,
                           std::vector<Acc>& tmp) {
  if constexpr (std::is_same<T, Acc>::value) {
    grad_of_row(row, n, lse, g, dst);
    dst[a] += g;
  } else {
    grad_of_row(row, n, lse, g, tmp.data());
    tmp[a] += g;
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<T>(tmp[j]);
  }
}

// Inputs shared by the forward and the backward, checked and made contiguous.
struct LogitsArgs {
  at::Tensor logits;
  at::Tensor actions;  // int64
  at::Tensor mask;     // bool, or undefined
  int64_t num_actions;
};

LogitsArgs prepare(const at::Tensor& logits, const at::Tensor& actions,
                   const c10::optional<at::Tensor>& action_mask) {
  check_floating(logits, "logits");
  TORCH_CHECK_VALUE(actions.scalar_type() == at::kInt || actions.scalar_type() == at::kLong,
                    "actions: expected an int32 or int64 tensor, got ", actions.scalar_type());
  TORCH_CHECK_VALUE(logits.dim() == actions.dim() + 1 &&
                        logits.sizes().slice(0, actions.dim()) == actions.sizes(),
                    "actions: expected the shape of logits without the action dim ",
                    logits.sizes().slice(0, logits.dim() - 1), ", got ", actions.sizes());
  LogitsArgs args;
  args.num_actions = logits.size(-1);
  args.logits = logits.contiguous();
  args.actions = actions.to(at::kLong).contiguous();
  if (action_mask.has_value()) {
    TORCH_CHECK_VALUE(action_mask->scalar_type() == at::kBool &&
                          action_mask->sizes() == logits.sizes(),
                      "action_mask: expected a bool tensor of shape ", logits.sizes(),
                      ", got shape ", action_mask->sizes(), " and dtype ",
                      action_mask->scalar_type());
    args.mask = action_mask->contiguous();
  }
  return args;
}

// ValueError unless the chosen action of step i is in range and allowed.
inline void check_action(int64_t action, int64_t num_actions, const bool* mask_row, int64_t i) {
  TORCH_CHECK_VALUE(action >= 0 && action < num_actions, "actions: expected values in [0, A=",
                    num_actions, ") inside every segment, got ", action, " at flat step ", i);
  TORCH_CHECK_VALUE(mask_row == nullptr || mask_row[action], "actions: the chosen action ",
                    action, " at flat step ", i,
                    " is masked out by action_mask (expected an allowed action, probability > 0)");
}

std::tuple<at::Tensor, at::Tensor> logprob_from_logits(
    const at::Tensor& logits, const at::Tensor& actions,
    const c10::optional<at::Tensor>& action_mask, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& offsets) {
  const LogitsArgs args = prepare(logits, actions, action_mask);
  const SegmentLayout layout = SegmentLayout::make(actions.sizes(), lengths, offsets, "actions");
  const auto acc = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor logprob = at::empty({layout.batch()}, logits.options().dtype(acc));
  at::Tensor step_lse = at::empty(actions.sizes(), logits.options().dtype(acc));
  const int64_t num_actions = args.num_actions;
  const int64_t* act = args.actions.const_data_ptr<int64_t>();
  const bool* mask = args.mask.defined() ? args.mask.const_data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, logits.scalar_type(), "logprob_from_logits", [&] {
        using Acc = acc_t<scalar_t>;
        const scalar_t* x = args.logits.const_data_ptr<scalar_t>();
        Acc* lse_out = step_lse.data_ptr<Acc>();
        Acc* sums = logprob.data_ptr<Acc>();
        fill_unowned(lse_out, layout);
        layout.parallel(num_actions * 8, [&](int64_t lo, int64_t hi) {
          RowReader<scalar_t> reader(num_actions);
          for (int64_t b = lo; b < hi; ++b) {
            fill_owned(lse_out, layout, b, Acc(0));
            Acc total = 0;
            for (int64_t i = layout.begin(b); i < layout.end(b); ++i) {
              const bool* mask_row = mask ? mask + i * num_actions : nullptr;
              const int64_t a = act[i];
              check_action(a, num_actions, mask_row, i);
              const Acc* row = reader.read(x + i * num_actions, mask_row, num_actions);
              const Acc lse = lse_of_row(row, num_actions);
              lse_out[i] = lse;
              total += row[a] - lse;
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
  const LogitsArgs args = prepare(logits, actions, action_mask);
  const SegmentLayout layout = SegmentLayout::make(actions.sizes(), lengths, offsets, "actions");
  check_floating(grad, "grad");
  TORCH_CHECK_VALUE(grad.numel() == layout.batch(), "grad: expected ", layout.batch(),
                    " elements (one per segment), got shape ", grad.sizes());
  TORCH_CHECK_VALUE(step_lse.sizes() == actions.sizes(), "step_lse: expected shape ",
                    actions.sizes(), ", got ", step_lse.sizes());
  const auto acc = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor g = grad.to(acc).contiguous();
  const at::Tensor lse_in = step_lse.to(acc).contiguous();
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  const int64_t num_actions = args.num_actions;
  const int64_t* act = args.actions.const_data_ptr<int64_t>();
  const bool* mask = args.mask.defined() ? args.mask.const_data_ptr<bool>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, logits.scalar_type(), "logprob_from_logits_backward", [&] {
        using Acc = acc_t<scalar_t>;
        const scalar_t* x = args.logits.const_data_ptr<scalar_t>();
        const Acc* gd = g.const_data_ptr<Acc>();
        const Acc* lse = lse_in.const_data_ptr<Acc>();
        scalar_t* out = grad_logits.data_ptr<scalar_t>();
        if (layout.batch() == 0) std::fill(out, out + layout.total() * num_actions, scalar_t(0));
        layout.parallel(num_actions * 8, [&](int64_t lo, int64_t hi) {
          RowReader<scalar_t> reader(num_actions);
          std::vector<Acc> row_out(std::is_same<scalar_t, Acc>::value ? 0 : num_actions);
          for (int64_t b = lo; b < hi; ++b) {
            const int64_t first = layout.begin(b), last = layout.end(b);
            std::fill(out + layout.owned_begin(b) * num_actions, out + first * num_actions,
                      scalar_t(0));
            std::fill(out + last * num_actions, out + layout.owned_end(b) * num_actions,
                      scalar_t(0));
            const Acc gb = gd[b];
            for (int64_t i = first; i < last; ++i) {
              const bool* mask_row = mask ? mask + i * num_actions : nullptr;
              const int64_t a = act[i];
              check_action(a, num_actions, mask_row, i);
              const Acc* row = reader.read(x + i * num_actions, mask_row, num_actions);
              write_grad_row(row, num_actions, lse[i], gb, a, out + i * num_actions, row_out);
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
