// Plain host launchers of the gfn_fast CUDA kernels. No torch headers: this file is
// included by the .cu kernel files (compiled with bare nvcc) and by bind_cuda.cpp, which
// maps tensors to these calls on the current stream.
//
// Conventions shared by every launcher:
// - Pointers are device pointers; strides and sizes are in elements.
// - A segment layout is either padded (values [B, T], lengths [B] or null = full rows) or
//   packed (values [N], offsets [B + 1]). Lengths and offsets are contiguous int32 or
//   int64. Invalid values are clamped on the device (lengths to [0, T], offsets to
//   [0, N] and non-decreasing), so nothing is read out of bounds; Python validates the
//   values beforehand when asked to.
// - Accumulation is float32 (float64 for float64 inputs); reductions have a fixed order
//   and use no atomics, so results are bitwise reproducible.
// - Each launcher returns the launch status (cudaGetLastError) and never synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace gfn_fast {
namespace gpu {

enum class DType : int { kFloat32, kFloat64, kBFloat16, kFloat16, kInt32, kInt64, kBool };

// A 1-D strided vector of any supported dtype (read as double on the device).
struct VecArg {
  const void* data = nullptr;  // null: absent
  DType dtype = DType::kFloat32;
  int64_t stride = 1;
};

// Segment layout. `steps` is T (padded) or N (packed).
struct Layout {
  const void* lengths = nullptr;  // padded only; null = every row holds T steps
  const void* offsets = nullptr;  // packed only: B + 1 entries
  DType index_dtype = DType::kInt64;
  int64_t batch = 0;
  int64_t steps = 0;
  bool packed = false;
};

// Per-step values (or rows): element (b, t) of segment b lives at data + b * stride_b +
// t * stride_t (packed: stride_b is ignored and t runs over absolute positions).
struct StepArg {
  const void* data = nullptr;  // null: absent
  DType dtype = DType::kFloat32;
  int64_t stride_b = 0;
  int64_t stride_t = 1;
};

// out[b] = sum of the steps of segment b, in the accumulation dtype of `values`.
cudaError_t segment_sum(StepArg values, Layout layout, void* out, cudaStream_t stream);

// out (contiguous, layout-shaped, dtype out_dtype) = grad[b] on segment b, 0 elsewhere.
cudaError_t segment_sum_backward(VecArg grad, Layout layout, void* out, DType out_dtype,
                                 cudaStream_t stream);

// Logits (and the bool action mask, shaped like them) are StepArg rows: row (b, t) starts at
// data + b * stride_b + t * stride_t, and its action axis is contiguous. Actions are an int32
// or int64 StepArg.

// logprob [B] (accumulation dtype) and step_lse (contiguous, layout-shaped: [B, T] or [N],
// float64: the per-step logsumexp, 0 outside every segment).
cudaError_t logprob_from_logits(StepArg logits, int64_t num_actions, StepArg actions,
                                StepArg action_mask, Layout layout, void* logprob,
                                double* step_lse, cudaStream_t stream);

// grad_logits (contiguous, like logits: [B, T, A] or [N, A], logits' dtype) =
// grad[b] * (onehot(action) - softmax(masked logits)) inside segments, 0 elsewhere.
// step_lse is the contiguous float64 forward output.
cudaError_t logprob_from_logits_backward(VecArg grad, StepArg logits, int64_t num_actions,
                                         StepArg actions, StepArg action_mask,
                                         const double* step_lse, Layout layout,
                                         void* grad_logits, cudaStream_t stream);

// (grad_pf, grad_pb) (contiguous, layout-shaped, dtypes pf_dtype / pb_dtype; grad_pb may be
// null) = grad_loss * (c[b], d[b]) on segment b, 0 elsewhere; grad_log_z = grad_loss * e
// (accumulation dtype `acc_dtype`, may be null). grad_loss and e are 0-dim device tensors.
// One kernel launch.
cudaError_t divergence_loss_backward(VecArg grad_loss, VecArg c, VecArg d, VecArg e,
                                     Layout layout, void* grad_pf, DType pf_dtype,
                                     void* grad_pb, DType pb_dtype, void* grad_log_z,
                                     DType acc_dtype, cudaStream_t stream);

// Segment sums of step_log_pf (and step_log_pb when its data is non-null) into the
// float64 workspace sums[0 .. B) and sums[B .. 2B): one launch. The values equal the
// accumulation-dtype sums (float32 sums widened to float64 for non-float64 inputs).
cudaError_t segment_sums_to_double(StepArg pf, StepArg pb, Layout layout, double* sums,
                                   cudaStream_t stream);

}  // namespace gpu
}  // namespace gfn_fast
