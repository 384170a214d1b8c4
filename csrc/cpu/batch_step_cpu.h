// The CPU side of the shared batch step (csrc/common/batch_step.h): a parallel reduction
// policy and a tensor-level entry point used by batch_coefficients and the fused loss.
#pragma once

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "common/batch_step.h"
#include "common/op_config.h"

namespace gfn_fast {
namespace cpu {

// Fixed-size chunks of k, folded in index order and run in parallel; the chunk results are
// combined in chunk order. The order depends on K alone, so results are bitwise the same
// for any thread count. Batches of one chunk run serially, without a parallel region.
struct ChunkedReduce {
  static constexpr int64_t kChunk = 1024;

  template <class T, class Map, class Combine>
  T reduce(int64_t n, T identity, Map map, Combine combine) const {
    const auto fold = [&](int64_t chunk) {
      T acc = identity;
      for (int64_t i = chunk * kChunk, end = std::min(n, i + kChunk); i < end; ++i) {
        acc = combine(acc, map(i));
      }
      return acc;
    };
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    if (chunks <= 1) return fold(0);
    std::vector<T> partial(static_cast<size_t>(chunks), identity);
    at::parallel_for(0, chunks, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t chunk = lo; chunk < hi; ++chunk) partial[chunk] = fold(chunk);
    });
    T acc = identity;
    for (const T& part : partial) acc = combine(acc, part);
    return acc;
  }

  template <class F>
  void for_each(int64_t n, F f) const {
    if (n <= kChunk) {
      for (int64_t i = 0; i < n; ++i) f(i);
      return;
    }
    at::parallel_for(0, n, kChunk, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) f(i);
    });
  }
};

using BatchResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// (c, d, e, value, ess, log_z_hat, skipped) from per-trajectory sums s (and b) given as
// contiguous double [K] tensors, and the other inputs checked (csrc/common/op_checks.h);
// outputs are `out_dtype` (float32 or float64), skipped bool.
BatchResult batch_step_tensors(const at::Tensor& s, const c10::optional<at::Tensor>& b,
                               const at::Tensor& log_reward,
                               const c10::optional<at::Tensor>& log_behavior,
                               const c10::optional<at::Tensor>& log_z, const batch::Config& config,
                               at::ScalarType out_dtype);

}  // namespace cpu
}  // namespace gfn_fast
