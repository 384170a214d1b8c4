// The argument checks of each op, in one order for every device: the CPU kernels and the
// CUDA ops call them (after the device-specific check of the tensor that picks the device)
// and then only read what they return. One function per op of csrc/op_schemas.h.
#pragma once

#include <torch/extension.h>

#include <cstdint>

#include "common/batch_step.h"
#include "common/op_args.h"

namespace gfn_fast {

struct LogitsShape {
  LayoutShape layout;
  int64_t num_actions = 0;
};

struct FusedShape {
  LayoutShape layout;
  batch::Config config;
};

using OptTensor = c10::optional<at::Tensor>;

LayoutShape check_segment_sum(const OpArgs& args, const at::Tensor& values,
                              const OptTensor& lengths, const OptTensor& offsets);

LayoutShape check_segment_sum_backward(const OpArgs& args, const at::Tensor& grad,
                                       const OptTensor& lengths, const OptTensor& offsets,
                                       at::IntArrayRef shape, at::ScalarType dtype);

LogitsShape check_logprob_from_logits(const OpArgs& args, const at::Tensor& logits,
                                      const at::Tensor& actions, const OptTensor& action_mask,
                                      const OptTensor& lengths, const OptTensor& offsets);

LogitsShape check_logprob_from_logits_backward(const OpArgs& args, const at::Tensor& grad,
                                               const at::Tensor& logits, const at::Tensor& actions,
                                               const OptTensor& action_mask,
                                               const at::Tensor& step_lse,
                                               const OptTensor& lengths,
                                               const OptTensor& offsets);

batch::Config check_batch_coefficients(const OpArgs& args, const at::Tensor& log_pf,
                                       const OptTensor& log_pb, const at::Tensor& log_reward,
                                       const OptTensor& log_behavior, const OptTensor& log_z,
                                       c10::string_view objective,
                                       c10::string_view control_variate, double alpha,
                                       bool paper_normalization);

FusedShape check_divergence_loss_fused(const OpArgs& args, const at::Tensor& step_log_pf,
                                       const OptTensor& step_log_pb, const at::Tensor& log_reward,
                                       const OptTensor& log_behavior, const OptTensor& log_z,
                                       const OptTensor& lengths, const OptTensor& offsets,
                                       c10::string_view objective,
                                       c10::string_view control_variate, double alpha,
                                       bool paper_normalization);

// c, d, e: the forward's coefficients (its accumulation dtype); shape: step_log_pf's.
LayoutShape check_divergence_loss_backward(const OpArgs& args, const at::Tensor& grad_loss,
                                           const at::Tensor& c, const at::Tensor& d,
                                           const at::Tensor& e, const OptTensor& lengths,
                                           const OptTensor& offsets, at::IntArrayRef shape,
                                           at::ScalarType pf_dtype,
                                           c10::optional<at::ScalarType> pb_dtype);

}  // namespace gfn_fast
