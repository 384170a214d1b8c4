// What the CPU and the CUDA bindings of the ops share about their arguments: the parsing of
// an objective's settings into a batch::Config, and the accumulation dtype.
#pragma once

#include <torch/extension.h>

#include <string>

#include "common/batch_step.h"

namespace gfn_fast {

// The op's string arguments, parsed once (ValueError prefixed by `op` on unknown names or
// combinations that MATH.md rules out).
batch::Config make_config(const std::string& objective, const std::string& control_variate,
                          double alpha, bool paper_normalization, const char* op);

// The rules that depend on the batch (K trajectories, a log Z, off-policy sampling), as
// gfn_fast.Objective.check_batch states them: ValueError prefixed by `op`.
void check_batch(const batch::Config& config, int64_t k, bool has_log_z, bool off_policy,
                 const char* op);

// float64 for float64 inputs, float32 for every other floating dtype.
inline at::ScalarType accumulation_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace gfn_fast
