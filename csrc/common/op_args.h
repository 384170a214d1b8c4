// The device-independent argument rules of the ops, one method each, shared by the CPU
// kernels (csrc/cpu) and the CUDA ops (csrc/cuda/bind_ops.h, real and emulated). Every
// message reads "op: argument: expected ..., got ...", so that the same bad input raises
// the same ValueError on every device. Only types, shapes and devices are checked: index
// values (lengths, offsets, actions) are never read here, the kernels clamp them.
#pragma once

#include <torch/extension.h>

#include <cstdint>

#include "common/batch_step.h"

namespace gfn_fast {

// The per-step shape of a segment layout: padded [B, T] or packed [N] with offsets [B + 1].
struct LayoutShape {
  int64_t batch = 0;
  int64_t steps = 0;  // T (padded) or N (packed)
  bool packed = false;
};

class OpArgs {
 public:
  explicit OpArgs(const char* op) : op_(op) {}

  const char* op() const { return op_; }

  // t lives where `like` does.
  void same_device(const at::Tensor& t, const at::Tensor& like, const char* name) const;
  // float32, float64, bfloat16 or float16: the dtypes every kernel reads.
  void floating(const at::Tensor& t, const char* name) const;
  void floating_dtype(at::ScalarType t, const char* name) const;
  // float32 or float64: the accumulation dtypes (the batch step's outputs).
  void accumulation(const at::Tensor& t, const char* name) const;
  // An int32 or int64 tensor where `like` is.
  void index(const at::Tensor& t, const at::Tensor& like, const char* name) const;
  // A 1-D tensor of n elements.
  void one_dim(const at::Tensor& t, int64_t n, const char* name) const;
  // A [n] vector, or a scalar (any shape with one element, for n == 1).
  void vec_shape(const at::Tensor& t, int64_t n, const char* name) const;
  // t has the shape of the argument `like_name`.
  void same_shape(const at::Tensor& t, at::IntArrayRef shape, const char* like_name,
                  const char* name) const;
  // The segment layout of per-step `steps_shape` ([B, T] padded, [N] packed) named `name`;
  // `like` gives the device of the index tensors.
  LayoutShape layout_shape(at::IntArrayRef steps_shape, const c10::optional<at::Tensor>& lengths,
                           const c10::optional<at::Tensor>& offsets, const at::Tensor& like,
                           const char* name) const;
  // logits [B, T, A] or [N, A], actions [B, T] or [N], action_mask like logits: returns A.
  int64_t logits_shape(const at::Tensor& logits, const at::Tensor& actions,
                       const c10::optional<at::Tensor>& action_mask) const;
  // The objective's settings and the per-trajectory inputs of a batch of k trajectories.
  batch::Config batch_arguments(int64_t k, const at::Tensor& like, const at::Tensor& log_reward,
                                const c10::optional<at::Tensor>& log_behavior,
                                const c10::optional<at::Tensor>& log_z,
                                c10::string_view objective, c10::string_view control_variate,
                                double alpha, bool paper_normalization) const;

 private:
  const char* op_;
};

}  // namespace gfn_fast
