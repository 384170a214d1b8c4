// make_config: the objective settings the ops take as strings, parsed and checked once.
#include "common/op_config.h"

#include <cmath>

namespace gfn_fast {

batch::Config make_config(const std::string& objective, const std::string& control_variate,
                          double alpha, bool paper_normalization, const char* op) {
  batch::Config config;
  if (objective == "tb") {
    config.objective = batch::Objective::kTb;
  } else if (objective == "vargrad") {
    config.objective = batch::Objective::kVargrad;
  } else if (objective == "reverse_kl") {
    config.objective = batch::Objective::kReverseKl;
  } else if (objective == "forward_kl") {
    config.objective = batch::Objective::kForwardKl;
  } else if (objective == "renyi") {
    config.objective = batch::Objective::kRenyi;
  } else if (objective == "tsallis") {
    config.objective = batch::Objective::kTsallis;
  } else {
    TORCH_CHECK_VALUE(false, op,
                      ": objective: expected one of tb, vargrad, reverse_kl, forward_kl, renyi, "
                      "tsallis, got '",
                      objective, "'");
  }
  if (control_variate == "loo") {
    config.control_variate = batch::ControlVariate::kLoo;
  } else if (control_variate == "none") {
    config.control_variate = batch::ControlVariate::kNone;
  } else {
    TORCH_CHECK_VALUE(false, op, ": control_variate: expected one of loo, none, got '",
                      control_variate, "'");
  }
  TORCH_CHECK_VALUE(std::isfinite(alpha), op, ": alpha: expected a finite real number, got ",
                    alpha);
  const bool alpha_family = config.objective == batch::Objective::kRenyi ||
                            config.objective == batch::Objective::kTsallis;
  TORCH_CHECK_VALUE(!(paper_normalization && alpha_family && alpha <= 0), op,
                    ": alpha: normalization=\"paper\" needs alpha > 0, got alpha=", alpha);
  config.alpha = alpha;
  config.paper_normalization = paper_normalization;
  return config;
}

void check_batch(const batch::Config& config, int64_t k, bool has_log_z, bool off_policy,
                 const char* op) {
  const bool loo = config.control_variate == batch::ControlVariate::kLoo;
  if (config.objective == batch::Objective::kTb) {
    TORCH_CHECK_VALUE(has_log_z, op, ": log_z: tb needs a (learned) log Z, got None");
    TORCH_CHECK_VALUE(!(loo && off_policy), op,
                      ": control_variate: \"loo\" for tb is unbiased only on-policy, but the "
                      "batch is off-policy (log_behavior given); use control_variate=\"none\"");
  }
  TORCH_CHECK_VALUE(k >= 1, op, ": log_pf: expected at least 1 trajectory, got K=0");
  TORCH_CHECK_VALUE(!(loo && config.objective != batch::Objective::kVargrad && k < 2), op,
                    ": log_pf: leave-one-out needs at least 2 trajectories, got K=", k);
}

}  // namespace gfn_fast
