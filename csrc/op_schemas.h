// Every gfn_fast op schema, defined once. The native extension defines them in the library
// `gfn_fast` (csrc/ops.cpp) and the emulated CUDA backend in `gfn_fast_emulated`
// (csrc/cuda/emulation/bind_emulated.cpp), so that one op has one schema everywhere.
//
// Layouts shared by the segment ops (see gfn_fast/ops.py for the full contract):
//   padded: values [B, T, ...] with lengths [B] (None: every row is full)
//   packed: values [N, ...] with offsets [B + 1]; segment b is offsets[b] .. offsets[b+1]
#pragma once

#include <torch/extension.h>

namespace gfn_fast {

inline void define_ops(torch::Library& m) {
  // [B] per-segment sums, fp32 accumulation (fp64 for fp64 input).
  m.def("segment_sum(Tensor values, Tensor? lengths, Tensor? offsets) -> Tensor");
  // Broadcast grad[b] over segment b of a tensor shaped like values; zero on padding.
  m.def(
      "segment_sum_backward(Tensor grad, Tensor? lengths, Tensor? offsets, SymInt[] shape, "
      "ScalarType dtype) -> Tensor");
  // (logprob [B], step_lse [B, T] or [N]): sum over each segment of
  // log_softmax(masked logits)[actions]; step_lse (float64) is the per-step logsumexp.
  m.def(
      "logprob_from_logits(Tensor logits, Tensor actions, Tensor? action_mask, Tensor? lengths, "
      "Tensor? offsets) -> (Tensor, Tensor)");
  m.def(
      "logprob_from_logits_backward(Tensor grad, Tensor logits, Tensor actions, "
      "Tensor? action_mask, Tensor step_lse, Tensor? lengths, Tensor? offsets) -> Tensor");
  // The detached batch step of MATH.md: (c [K], d [K], e, value, ess, log_z_hat, skipped).
  m.def(
      "batch_coefficients(Tensor log_pf, Tensor? log_pb, Tensor log_reward, Tensor? log_behavior, "
      "Tensor? log_z, str objective, str control_variate, float alpha, bool paper_normalization) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Segment sums of per-step log p_F / log p_B fused with the batch step.
  m.def(
      "divergence_loss_fused(Tensor step_log_pf, Tensor? step_log_pb, Tensor log_reward, "
      "Tensor? log_behavior, Tensor? log_z, Tensor? lengths, Tensor? offsets, str objective, "
      "str control_variate, float alpha, bool paper_normalization) "
      "-> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // (grad_step_log_pf, grad_step_log_pb, grad_log_z) = grad_loss * (c[b], d[b], e): the
  // surrogate's gradient written over each segment, zero on padding; one pass. pb_dtype None
  // (no step_log_pb): the second output is an empty tensor, and nothing is written for it.
  m.def(
      "divergence_loss_backward(Tensor grad_loss, Tensor c, Tensor d, Tensor e, Tensor? lengths, "
      "Tensor? offsets, SymInt[] shape, ScalarType pf_dtype, ScalarType? pb_dtype) "
      "-> (Tensor, Tensor, Tensor)");
}

}  // namespace gfn_fast
