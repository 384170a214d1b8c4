// The fused divergence loss on CPU: forward = segment sums of the per-step log p_F and
// log p_B (one parallel pass each), then the batch step; backward = one parallel pass per
// gradient writing grad * c[b] (or grad * d[b]) over each segment, zero on padding.
#include <ATen/Dispatch.h>
#include <torch/extension.h>

#include "batch_step_cpu.h"
#include "common/op_checks.h"
#include "segments.h"

namespace gfn_fast {
namespace cpu {
namespace {

// Per-trajectory sums of `steps`, rounded to its accumulation dtype, as double [B].
at::Tensor trajectory_sums(const at::Tensor& steps, const SegmentLayout& layout) {
  at::Tensor out = at::empty({layout.batch()}, steps.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, steps.scalar_type(),
                                  "trajectory_sums", [&] {
                                    segment_sums(steps.const_data_ptr<scalar_t>(), layout,
                                                 out.data_ptr<double>());
                                  });
  return out;
}

// g * coefficient[b] over each segment, rounded like autograd in the coefficient's dtype and
// then to `dtype`.
at::Tensor broadcast_gradient(double g, const at::Tensor& coefficient, const SegmentLayout& layout,
                              at::IntArrayRef sizes, at::ScalarType dtype) {
  at::Tensor out = at::empty(sizes, coefficient.options().dtype(dtype));
  const at::Tensor coeff = coefficient.contiguous();
  AT_DISPATCH_FLOATING_TYPES(coeff.scalar_type(), "broadcast_gradient", [&] {
    using coeff_t = scalar_t;
    const coeff_t* c = coeff.const_data_ptr<coeff_t>();
    const auto gc = static_cast<coeff_t>(g);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "broadcast_gradient", [&] {
      fill_segments(out.data_ptr<scalar_t>(), layout,
                    [&](int64_t b) { return static_cast<coeff_t>(gc * c[b]); });
    });
  });
  return out;
}

BatchResult divergence_loss_fused(
    const at::Tensor& step_log_pf, const c10::optional<at::Tensor>& step_log_pb,
    const at::Tensor& log_reward, const c10::optional<at::Tensor>& log_behavior,
    const c10::optional<at::Tensor>& log_z, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& offsets, c10::string_view objective,
    c10::string_view control_variate, double alpha, bool paper_normalization) {
  const FusedShape shape = check_divergence_loss_fused(
      OpArgs("divergence_loss_fused"), step_log_pf, step_log_pb, log_reward, log_behavior, log_z,
      lengths, offsets, objective, control_variate, alpha, paper_normalization);
  const SegmentLayout layout = SegmentLayout::make(shape.layout, lengths, offsets);
  const at::Tensor pf = step_log_pf.contiguous();
  const at::Tensor pb = step_log_pb.has_value() ? step_log_pb->contiguous() : at::Tensor();
  const at::Tensor s = trajectory_sums(pf, layout);
  const at::Tensor b = pb.defined() ? trajectory_sums(pb, layout) : at::Tensor();
  const auto out_dtype = accumulation_type(pf.scalar_type());
  return batch_step_tensors(s, pb.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt,
                            log_reward, log_behavior, log_z, shape.config, out_dtype);
}

// pb_dtype None: step_log_pb was None, and the second output is an empty tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor> divergence_loss_backward(
    const at::Tensor& grad_loss, const at::Tensor& c, const at::Tensor& d, const at::Tensor& e,
    const c10::optional<at::Tensor>& lengths, const c10::optional<at::Tensor>& offsets,
    c10::SymIntArrayRef shape, at::ScalarType pf_dtype, c10::optional<at::ScalarType> pb_dtype) {
  const at::IntArrayRef sizes = C10_AS_INTARRAYREF_SLOW(shape);
  const SegmentLayout layout = SegmentLayout::make(
      check_divergence_loss_backward(OpArgs("divergence_loss_backward"), grad_loss, c, d, e,
                                     lengths, offsets, sizes, pf_dtype, pb_dtype),
      lengths, offsets);
  const double g = grad_loss.item<double>();
  at::Tensor grad_pf = broadcast_gradient(g, c, layout, sizes, pf_dtype);
  at::Tensor grad_pb = pb_dtype.has_value()
                           ? broadcast_gradient(g, d, layout, sizes, *pb_dtype)
                           : at::empty({0}, c.options().dtype(pf_dtype));
  at::Tensor grad_log_z;
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "divergence_loss_backward", [&] {
    // The surrogate's g * e, rounded like autograd in the dtype of c.
    const auto product = static_cast<scalar_t>(g) * static_cast<scalar_t>(e.item<double>());
    grad_log_z = at::scalar_tensor(static_cast<double>(product), e.options());
  });
  return {grad_pf, grad_pb, grad_log_z};
}

}  // namespace
}  // namespace cpu
}  // namespace gfn_fast

TORCH_LIBRARY_IMPL(gfn_fast, CPU, m) {
  m.impl("divergence_loss_fused", &gfn_fast::cpu::divergence_loss_fused);
  m.impl("divergence_loss_backward", &gfn_fast::cpu::divergence_loss_backward);
}
