// The per-op sequences of argument checks of csrc/common/op_checks.h.
#include "common/op_checks.h"

namespace gfn_fast {

LayoutShape check_segment_sum(const OpArgs& args, const at::Tensor& values,
                              const OptTensor& lengths, const OptTensor& offsets) {
  args.floating(values, "values");
  return args.layout_shape(values.sizes(), lengths, offsets, values, "values");
}

LayoutShape check_segment_sum_backward(const OpArgs& args, const at::Tensor& grad,
                                       const OptTensor& lengths, const OptTensor& offsets,
                                       at::IntArrayRef shape, at::ScalarType dtype) {
  args.floating(grad, "grad");
  args.floating_dtype(dtype, "dtype");
  const LayoutShape layout = args.layout_shape(shape, lengths, offsets, grad, "shape");
  args.one_dim(grad, layout.batch, "grad");
  return layout;
}

LogitsShape check_logprob_from_logits(const OpArgs& args, const at::Tensor& logits,
                                      const at::Tensor& actions, const OptTensor& action_mask,
                                      const OptTensor& lengths, const OptTensor& offsets) {
  LogitsShape shape;
  shape.num_actions = args.logits_shape(logits, actions, action_mask);
  shape.layout = args.layout_shape(actions.sizes(), lengths, offsets, logits, "actions");
  return shape;
}

LogitsShape check_logprob_from_logits_backward(const OpArgs& args, const at::Tensor& grad,
                                               const at::Tensor& logits, const at::Tensor& actions,
                                               const OptTensor& action_mask,
                                               const at::Tensor& step_lse,
                                               const OptTensor& lengths,
                                               const OptTensor& offsets) {
  const LogitsShape shape =
      check_logprob_from_logits(args, logits, actions, action_mask, lengths, offsets);
  args.floating(grad, "grad");
  args.same_device(grad, logits, "grad");
  args.one_dim(grad, shape.layout.batch, "grad");
  args.same_device(step_lse, logits, "step_lse");
  args.same_shape(step_lse, actions.sizes(), "actions", "step_lse");
  return shape;
}

batch::Config check_batch_coefficients(const OpArgs& args, const at::Tensor& log_pf,
                                       const OptTensor& log_pb, const at::Tensor& log_reward,
                                       const OptTensor& log_behavior, const OptTensor& log_z,
                                       c10::string_view objective,
                                       c10::string_view control_variate, double alpha,
                                       bool paper_normalization) {
  args.floating(log_pf, "log_pf");
  TORCH_CHECK_VALUE(log_pf.dim() == 1, args.op(),
                    ": log_pf: expected a 1-D tensor [K], got shape ", log_pf.sizes());
  const int64_t k = log_pf.numel();
  const batch::Config config =
      args.batch_arguments(k, log_pf, log_reward, log_behavior, log_z, objective,
                           control_variate, alpha, paper_normalization);
  if (log_pb.has_value()) {
    args.floating(*log_pb, "log_pb");
    args.same_device(*log_pb, log_pf, "log_pb");
    args.one_dim(*log_pb, k, "log_pb");
  }
  return config;
}

FusedShape check_divergence_loss_fused(const OpArgs& args, const at::Tensor& step_log_pf,
                                       const OptTensor& step_log_pb, const at::Tensor& log_reward,
                                       const OptTensor& log_behavior, const OptTensor& log_z,
                                       const OptTensor& lengths, const OptTensor& offsets,
                                       c10::string_view objective,
                                       c10::string_view control_variate, double alpha,
                                       bool paper_normalization) {
  FusedShape shape;
  args.floating(step_log_pf, "step_log_pf");
  shape.layout =
      args.layout_shape(step_log_pf.sizes(), lengths, offsets, step_log_pf, "step_log_pf");
  if (step_log_pb.has_value()) {
    args.floating(*step_log_pb, "step_log_pb");
    args.same_device(*step_log_pb, step_log_pf, "step_log_pb");
    args.same_shape(*step_log_pb, step_log_pf.sizes(), "step_log_pf", "step_log_pb");
  }
  shape.config =
      args.batch_arguments(shape.layout.batch, step_log_pf, log_reward, log_behavior, log_z,
                           objective, control_variate, alpha, paper_normalization);
  return shape;
}

LayoutShape check_divergence_loss_backward(const OpArgs& args, const at::Tensor& grad_loss,
                                           const at::Tensor& c, const at::Tensor& d,
                                           const at::Tensor& e, const OptTensor& lengths,
                                           const OptTensor& offsets, at::IntArrayRef shape,
                                           at::ScalarType pf_dtype,
                                           c10::optional<at::ScalarType> pb_dtype) {
  args.floating(grad_loss, "grad_loss");
  args.accumulation(c, "c");
  args.accumulation(d, "d");
  args.accumulation(e, "e");
  args.floating_dtype(pf_dtype, "pf_dtype");
  if (pb_dtype.has_value()) args.floating_dtype(*pb_dtype, "pb_dtype");
  args.same_device(grad_loss, c, "grad_loss");
  args.same_device(d, c, "d");
  args.same_device(e, c, "e");
  const LayoutShape layout = args.layout_shape(shape, lengths, offsets, c, "shape");
  args.vec_shape(grad_loss, 1, "grad_loss");
  args.vec_shape(c, layout.batch, "c");
  args.vec_shape(d, layout.batch, "d");
  args.vec_shape(e, 1, "e");
  return layout;
}

}  // namespace gfn_fast
