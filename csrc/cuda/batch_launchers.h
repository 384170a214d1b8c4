// Launchers of the batch step (csrc/cuda/batch.cu): batch_coefficients and the fused
// divergence loss forward. No torch headers; the math is csrc/common/batch_step.h.
#pragma once

#include "common/batch_step.h"
#include "cuda/launchers.h"

namespace gfn_fast {
namespace gpu {

// The batch step of csrc/common/batch_step.h on a grid of blocks (one cooperative launch).
// Per-trajectory inputs are [K] vectors of any float dtype (log_pb, log_behavior: data null
// when absent; log_z: 0-dim, data null when absent). Outputs: c, d [K] and e, value, ess,
// log_z_hat (0-dim) in out_dtype (float32 or float64), skipped (bool, 0-dim).
struct BatchArgs {
  int64_t k = 0;
  VecArg log_pf, log_pb, log_reward, log_behavior, log_z;
  batch::Config config;
  double* workspace = nullptr;  // batch_workspace_doubles(k) doubles
  DType out_dtype = DType::kFloat32;
  void* c = nullptr;
  void* d = nullptr;
  void* e = nullptr;
  void* value = nullptr;
  void* ess = nullptr;
  void* log_z_hat = nullptr;
  bool* skipped = nullptr;
};

// Tuning of the batch step: threads per block, trajectories per block before another block
// is added, and the most blocks (a cooperative grid must fit on the device at once: 128
// blocks of 256 threads need 16 multiprocessors).
constexpr int kBatchThreads = 256;
constexpr int kBatchWarps = kBatchThreads / 32;
constexpr int64_t kBatchItemsPerBlock = 1024;
constexpr int kMaxBatchBlocks = 128;

// Workspace layout, in doubles: 4 K staged inputs, batch::kScratchPerK K scratch, then two
// buffers of per-block reduction slots (kBatchSlotBytes each, the widest reduced value).
constexpr int64_t kBatchScratchEnd = 4 + batch::kScratchPerK;  // times K
constexpr int kBatchSlotBytes = 16;
constexpr int64_t kBatchSlotDoubles = kMaxBatchBlocks * kBatchSlotBytes / 8;

inline int64_t batch_workspace_doubles(int64_t k) {
  return kBatchScratchEnd * k + 2 * kBatchSlotDoubles;
}

// Blocks of the batch step for K trajectories: a function of K alone, so the reduction
// order, and the bits of the result, are the same on every device.
inline unsigned batch_blocks(int64_t k) {
  const int64_t blocks = (k + kBatchItemsPerBlock - 1) / kBatchItemsPerBlock;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > kMaxBatchBlocks ? kMaxBatchBlocks : blocks));
}

cudaError_t batch_coefficients(const BatchArgs& args, cudaStream_t stream);

// Segment sums of step_log_pf / step_log_pb (pb.data null when absent) fused with the batch
// step: two launches. args.log_pf and args.log_pb are ignored (the sums are used).
cudaError_t divergence_loss_fused(StepArg pf, StepArg pb, Layout layout, BatchArgs args,
                                  cudaStream_t stream);

}  // namespace gpu
}  // namespace gfn_fast
