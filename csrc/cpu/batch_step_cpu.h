// The CPU side of the shared batch step (csrc/common/batch_step.h): a serial reduction
// policy and a tensor-level entry point used by batch_coefficients and the fused loss.
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <string>
#include <tuple>

#include "../common/batch_step.h"

namespace gfn_fast {
namespace cpu {

// Plain loops in index order: deterministic, and for the K of a training batch the batch
// step costs far less than the per-step passes around it.
struct SerialReduce {
  template <class T, class Map, class Combine>
  T reduce(int64_t n, T identity, Map map, Combine combine) const {
    T acc = identity;
    for (int64_t i = 0; i < n; ++i) acc = combine(acc, map(i));
    return acc;
  }
  template <class F>
  void for_each(int64_t n, F f) const {
    for (int64_t i = 0; i < n; ++i) f(i);
  }
};

using BatchResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Parses the op's string arguments (ValueError on unknown names or invalid combinations).
batch::Config make_config(const std::string& objective, const std::string& control_variate,
                          double alpha, bool paper_normalization);

// (c, d, e, value, ess, log_z_hat, skipped) from per-trajectory sums s (and b) given as
// contiguous double [K] tensors; outputs are `out_dtype` (float32 or float64), skipped bool.
BatchResult batch_step_tensors(const at::Tensor& s, const c10::optional<at::Tensor>& b,
                               const at::Tensor& log_reward,
                               const c10::optional<at::Tensor>& log_behavior,
                               const c10::optional<at::Tensor>& log_z, const batch::Config& config,
                               at::ScalarType out_dtype);

}  // namespace cpu
}  // namespace gfn_fast
