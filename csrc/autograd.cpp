// Autograd of the fused loss in C++, for every device. torch.library's Python autograd
// wrapper costs ~0.1 ms a call, as much as the whole kernel at training batch sizes.
//
// Only `value` (output 3) is differentiable; its gradient is the surrogate's: grad * c[b]
// over each segment of step_log_pf, grad * d[b] over step_log_pb, grad * e for log_z.
#include <torch/extension.h>

#include <string>

namespace gfn_fast {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using OptTensor = c10::optional<at::Tensor>;

constexpr int kValue = 3;

class FusedDivergenceLoss : public torch::autograd::Function<FusedDivergenceLoss> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& step_log_pf,
                               const OptTensor& step_log_pb, const at::Tensor& log_reward,
                               const OptTensor& log_behavior, const OptTensor& log_z,
                               const OptTensor& lengths, const OptTensor& offsets,
                               const std::string& objective, const std::string& control_variate,
                               double alpha, bool paper_normalization) {
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("gfn_fast::divergence_loss_fused", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                           at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const OptTensor&, const at::Tensor&,
                             const OptTensor&, const OptTensor&, const OptTensor&,
                             const OptTensor&, c10::string_view, c10::string_view, double,
                             bool)>();
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [c, d, e, value, ess, log_z_hat, skipped] =
        op.call(step_log_pf, step_log_pb, log_reward, log_behavior, log_z, lengths, offsets,
                objective, control_variate, alpha, paper_normalization);
    ctx->save_for_backward(
        {c, d, e, lengths.value_or(at::Tensor()), offsets.value_or(at::Tensor())});
    ctx->saved_data["shape"] = step_log_pf.sym_sizes().vec();
    ctx->saved_data["pf_dtype"] = step_log_pf.scalar_type();
    ctx->saved_data["pb_dtype"] = step_log_pb.has_value()
                                      ? c10::IValue(step_log_pb->scalar_type())
                                      : c10::IValue();
    ctx->saved_data["has_log_z"] = log_z.has_value();
    ctx->mark_non_differentiable({c, d, e, ess, log_z_hat, skipped});
    // No zero-filled gradients for the six non-differentiable outputs (a launch each on CUDA).
    ctx->set_materialize_grads(false);
    return {c, d, e, value, ess, log_z_hat, skipped};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    variable_list out(11);
    const at::Tensor& grad_value = grads[kValue];
    if (!grad_value.defined()) return out;
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("gfn_fast::divergence_loss_backward", "")
                         .typed<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
                             const at::Tensor&, const at::Tensor&, const at::Tensor&,
                             const at::Tensor&, const OptTensor&, const OptTensor&,
                             c10::SymIntArrayRef, at::ScalarType,
                             c10::optional<at::ScalarType>)>();
    const variable_list saved = ctx->get_saved_variables();
    const auto optional = [](const at::Tensor& t) {
      return t.defined() ? OptTensor(t) : OptTensor();
    };
    const std::vector<c10::SymInt> shape = ctx->saved_data["shape"].toSymIntVector();
    auto [grad_pf, grad_pb, grad_log_z] =
        op.call(grad_value, saved[0], saved[1], saved[2], optional(saved[3]), optional(saved[4]),
                shape, ctx->saved_data["pf_dtype"].toScalarType(),
                ctx->saved_data["pb_dtype"].toOptional<at::ScalarType>());
    out[0] = grad_pf;
    if (!ctx->saved_data["pb_dtype"].isNone()) out[1] = grad_pb;
    if (ctx->saved_data["has_log_z"].toBool()) out[4] = grad_log_z;
    return out;
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
divergence_loss_fused_autograd(const at::Tensor& step_log_pf, const OptTensor& step_log_pb,
                               const at::Tensor& log_reward, const OptTensor& log_behavior,
                               const OptTensor& log_z, const OptTensor& lengths,
                               const OptTensor& offsets, c10::string_view objective,
                               c10::string_view control_variate, double alpha,
                               bool paper_normalization) {
  const variable_list out = FusedDivergenceLoss::apply(
      step_log_pf, step_log_pb, log_reward, log_behavior, log_z, lengths, offsets,
      std::string(objective), std::string(control_variate), alpha, paper_normalization);
  return {out[0], out[1], out[2], out[3], out[4], out[5], out[6]};
}

}  // namespace
}  // namespace gfn_fast

TORCH_LIBRARY_IMPL(gfn_fast, Autograd, m) {
  m.impl("divergence_loss_fused", &gfn_fast::divergence_loss_fused_autograd);
}
