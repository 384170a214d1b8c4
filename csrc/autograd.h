// Autograd of the differentiable ops, in C++ for every device. torch.library's Python
// autograd wrapper costs ~0.1 ms a call, as much as a whole kernel at training batch sizes.
// A template over the op library's name (`gfn_fast`, or `gfn_fast_emulated` for the emulated
// CUDA backend): the backward calls the backward op of the same library.
//
//   segment_sum:            d values = grad[b] over each segment (segment_sum_backward).
//   logprob_from_logits:    d logits from the saved per-step logsumexp
//                           (logprob_from_logits_backward); step_lse is not differentiable.
//   divergence_loss_fused:  only `value` (output 3) is differentiable; its gradient is the
//                           surrogate's: grad * c[b] over each segment of step_log_pf,
//                           grad * d[b] over step_log_pb, grad * e for log_z.
#pragma once

#include <torch/extension.h>

#include <string>

namespace gfn_fast {
namespace autograd_detail {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = c10::optional<at::Tensor>;
using Coefficients =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The op `name` of library `Library` (e.g. Library "gfn_fast", name "segment_sum").
template <const char* Library, class Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  const std::string qualified = std::string(Library) + "::" + name;
  return c10::Dispatcher::singleton().findSchemaOrThrow(qualified.c_str(), "").typed<Signature>();
}

OptTensor optional(const at::Tensor& t) { return t.defined() ? OptTensor(t) : OptTensor(); }

// Optional index tensors are saved as undefined tensors when absent.
at::Tensor saved(const OptTensor& t) { return t.value_or(at::Tensor()); }

template <const char* Library>
class SegmentSum : public torch::autograd::Function<SegmentSum<Library>> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& values,
                            const OptTensor& lengths, const OptTensor& offsets) {
    static auto op = typed_op<Library, at::Tensor(const at::Tensor&, const OptTensor&, const OptTensor&)>(
        "segment_sum");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({saved(lengths), saved(offsets)});
    ctx->saved_data["shape"] = values.sym_sizes().vec();
    ctx->saved_data["dtype"] = values.scalar_type();
    return op.call(values, lengths, offsets);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op =
        typed_op<Library, at::Tensor(const at::Tensor&, const OptTensor&, const OptTensor&,
                            c10::SymIntArrayRef, at::ScalarType)>("segment_sum_backward");
    const variable_list index = ctx->get_saved_variables();
    const std::vector<c10::SymInt> shape = ctx->saved_data["shape"].toSymIntVector();
    return {op.call(grads[0], optional(index[0]), optional(index[1]), shape,
                    ctx->saved_data["dtype"].toScalarType()),
            at::Tensor(), at::Tensor()};
  }
};

template <const char* Library>
class LogprobFromLogits : public torch::autograd::Function<LogprobFromLogits<Library>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& logits,
                               const at::Tensor& actions, const OptTensor& action_mask,
                               const OptTensor& lengths, const OptTensor& offsets) {
    static auto op =
        typed_op<Library, std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                    const OptTensor&, const OptTensor&,
                                                    const OptTensor&)>(
            "logprob_from_logits");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [logprob, step_lse] = op.call(logits, actions, action_mask, lengths, offsets);
    ctx->save_for_backward(
        {logits, actions, saved(action_mask), step_lse, saved(lengths), saved(offsets)});
    ctx->mark_non_differentiable({step_lse});
    // No zero-filled gradient for the unused step_lse output: one kernel less per backward.
    ctx->set_materialize_grads(false);
    return {logprob, step_lse};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = typed_op<Library, at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                         const OptTensor&, const at::Tensor&, const OptTensor&,
                                         const OptTensor&)>(
        "logprob_from_logits_backward");
    variable_list out(5);
    if (!grads[0].defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    out[0] = op.call(grads[0], s[0], s[1], optional(s[2]), s[3], optional(s[4]), optional(s[5]));
    return out;
  }
};

constexpr int kValue = 3;

template <const char* Library>
class FusedDivergenceLoss : public torch::autograd::Function<FusedDivergenceLoss<Library>> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& step_log_pf,
                               const OptTensor& step_log_pb, const at::Tensor& log_reward,
                               const OptTensor& log_behavior, const OptTensor& log_z,
                               const OptTensor& lengths, const OptTensor& offsets,
                               const std::string& objective, const std::string& control_variate,
                               double alpha, bool paper_normalization) {
    static auto op = typed_op<Library, Coefficients(
        const at::Tensor&, const OptTensor&, const at::Tensor&, const OptTensor&,
        const OptTensor&, const OptTensor&, const OptTensor&, c10::string_view, c10::string_view,
        double, bool)>("divergence_loss_fused");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [c, d, e, value, ess, log_z_hat, skipped] =
        op.call(step_log_pf, step_log_pb, log_reward, log_behavior, log_z, lengths, offsets,
                objective, control_variate, alpha, paper_normalization);
    ctx->save_for_backward({c, d, e, saved(lengths), saved(offsets)});
    ctx->saved_data["shape"] = step_log_pf.sym_sizes().vec();
    ctx->saved_data["pf_dtype"] = step_log_pf.scalar_type();
    // None when there is no step_log_pb: the backward then writes no gradient for it.
    ctx->saved_data["pb_dtype"] =
        step_log_pb.has_value() ? c10::IValue(step_log_pb->scalar_type()) : c10::IValue();
    ctx->saved_data["has_log_z"] = log_z.has_value();
    ctx->mark_non_differentiable({c, d, e, ess, log_z_hat, skipped});
    // No zero-filled gradients for the six non-differentiable outputs (a launch each on CUDA).
    ctx->set_materialize_grads(false);
    return {c, d, e, value, ess, log_z_hat, skipped};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static auto op = typed_op<Library, std::tuple<at::Tensor, at::Tensor, at::Tensor>(
        const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
        const OptTensor&, const OptTensor&, c10::SymIntArrayRef, at::ScalarType,
        c10::optional<at::ScalarType>)>("divergence_loss_backward");
    variable_list out(11);
    const at::Tensor& grad_value = grads[kValue];
    if (!grad_value.defined()) return out;
    const variable_list s = ctx->get_saved_variables();
    const std::vector<c10::SymInt> shape = ctx->saved_data["shape"].toSymIntVector();
    const c10::IValue& pb_dtype = ctx->saved_data["pb_dtype"];
    auto [grad_pf, grad_pb, grad_log_z] =
        op.call(grad_value, s[0], s[1], s[2], optional(s[3]), optional(s[4]), shape,
                ctx->saved_data["pf_dtype"].toScalarType(), pb_dtype.toOptional<at::ScalarType>());
    out[0] = grad_pf;
    if (!pb_dtype.isNone()) out[1] = grad_pb;
    if (ctx->saved_data["has_log_z"].toBool()) out[4] = grad_log_z;
    return out;
  }
};

template <const char* Library>
at::Tensor segment_sum_autograd(const at::Tensor& values, const OptTensor& lengths,
                                const OptTensor& offsets) {
  return SegmentSum<Library>::apply(values, lengths, offsets);
}

template <const char* Library>
std::tuple<at::Tensor, at::Tensor> logprob_from_logits_autograd(const at::Tensor& logits,
                                                                const at::Tensor& actions,
                                                                const OptTensor& action_mask,
                                                                const OptTensor& lengths,
                                                                const OptTensor& offsets) {
  const variable_list out =
      LogprobFromLogits<Library>::apply(logits, actions, action_mask, lengths, offsets);
  return {out[0], out[1]};
}

template <const char* Library>
Coefficients divergence_loss_fused_autograd(const at::Tensor& step_log_pf,
                                            const OptTensor& step_log_pb,
                                            const at::Tensor& log_reward,
                                            const OptTensor& log_behavior, const OptTensor& log_z,
                                            const OptTensor& lengths, const OptTensor& offsets,
                                            c10::string_view objective,
                                            c10::string_view control_variate, double alpha,
                                            bool paper_normalization) {
  const variable_list out = FusedDivergenceLoss<Library>::apply(
      step_log_pf, step_log_pb, log_reward, log_behavior, log_z, lengths, offsets,
      std::string(objective), std::string(control_variate), alpha, paper_normalization);
  return {out[0], out[1], out[2], out[3], out[4], out[5], out[6]};
}

}  // namespace autograd_detail

// Registers the autograd of the differentiable ops of library `Library`.
template <const char* Library>
void register_autograd(torch::Library& m) {
  m.impl("segment_sum", &autograd_detail::segment_sum_autograd<Library>);
  m.impl("logprob_from_logits", &autograd_detail::logprob_from_logits_autograd<Library>);
  m.impl("divergence_loss_fused", &autograd_detail::divergence_loss_fused_autograd<Library>);
}

}  // namespace gfn_fast
