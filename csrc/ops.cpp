// Every gfn_fast op schema, defined once. Kernels register per device in csrc/cpu and
// csrc/cuda; fake implementations and autograd are registered from gfn_fast/ops.py.
//
// Layouts shared by the segment ops (see gfn_fast/ops.py for the full contract):
//   padded: values [B, T, ...] with lengths [B] (None: every row is full)
//   packed: values [N, ...] with offsets [B + 1]; segment b is offsets[b] .. offsets[b+1]
#include <torch/extension.h>

#include <sstream>

TORCH_LIBRARY(gfn_fast, m) {
  // [B] per-segment sums, fp32 accumulation (fp64 for fp64 input).
  m.def("segment_sum(Tensor values, Tensor? lengths, Tensor? offsets) -> Tensor");
  // Broadcast grad[b] over segment b of a tensor shaped like values; zero on padding.
  m.def(
      "segment_sum_backward(Tensor grad, Tensor? lengths, Tensor? offsets, SymInt[] shape, "
      "ScalarType dtype) -> Tensor");
  // (logprob [B], step_lse [B, T] or [N]): sum over each segment of
  // logits[actions] - logsumexp(masked logits).
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

namespace {

// GFN_FAST_CUDA_ARCHS arrives unquoted from setup.py (e.g. 8.0,9.0+PTX).
#define GFN_FAST_STRINGIFY_(...) #__VA_ARGS__
#define GFN_FAST_STRINGIFY(...) GFN_FAST_STRINGIFY_(__VA_ARGS__)

std::string build_info() {
  std::ostringstream info;
  info << "{\"compiler\": \"";
#if defined(__clang__)
  info << "clang " << __clang_major__ << "." << __clang_minor__;
#elif defined(__GNUC__)
  info << "gcc " << __GNUC__ << "." << __GNUC_MINOR__;
#else
  info << "unknown";
#endif
  info << "\", \"torch\": \"" << TORCH_VERSION << "\", \"openmp\": "
#ifdef _OPENMP
       << "true"
#else
       << "false"
#endif
       << ", \"cuda\": "
#ifdef GFN_FAST_WITH_CUDA
       << "true"
#else
       << "false"
#endif
       << ", \"cuda_arch_list\": \""
#ifdef GFN_FAST_CUDA_ARCHS
       << GFN_FAST_STRINGIFY(GFN_FAST_CUDA_ARCHS)
#endif
       << "\"}";
  return info.str();
}

}  // namespace

PYBIND11_MODULE(_C, module) {
  module.doc() = "gfn_fast native kernels; importing registers the torch.ops.gfn_fast ops.";
  module.def("build_info", &build_info, "Compiler, CUDA and torch version used at build time (JSON).");
}
