// batch_coefficients on CPU: the batch step of csrc/common/batch_step.h on [K] tensors,
// and the tensor-level entry point the fused loss shares.
#include <torch/extension.h>

#include <cmath>

#include "batch_step_cpu.h"

namespace gfn_fast {
namespace cpu {

namespace {

at::Tensor as_double_vector(const at::Tensor& t, int64_t k, const char* name) {
  TORCH_CHECK_VALUE(at::isFloatingType(t.scalar_type()), name,
                    ": expected a floating tensor, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu(), name, ": expected a CPU tensor, got ", t.device());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.numel() == k, name, ": expected shape [K] = [", k,
                    "], got ", t.sizes());
  return t.to(at::kDouble).contiguous();
}

template <class OutT>
void run(const batch::BatchInputs& in, at::Tensor& c, at::Tensor& d,
         batch::BatchOutputs<double>& scalars) {
  batch::BatchOutputs<OutT> out;
  out.c = c.data_ptr<OutT>();
  out.d = d.data_ptr<OutT>();
  batch::batch_step(ChunkedReduce{}, in, out);
  scalars.e = out.e;
  scalars.value = out.value;
  scalars.ess = out.ess;
  scalars.log_z_hat = out.log_z_hat;
  scalars.skipped = out.skipped;
}

}  // namespace

BatchResult batch_step_tensors(const at::Tensor& s, const c10::optional<at::Tensor>& b,
                               const at::Tensor& log_reward,
                               const c10::optional<at::Tensor>& log_behavior,
                               const c10::optional<at::Tensor>& log_z, const batch::Config& config,
                               at::ScalarType out_dtype) {
  const int64_t k = s.numel();
  TORCH_CHECK_VALUE(k >= 1, "log_pf: expected at least 1 trajectory, got K=0");
  const bool loo = config.control_variate == batch::ControlVariate::kLoo;
  TORCH_CHECK_VALUE(!(loo && config.objective != batch::Objective::kVargrad && k < 2),
                    "log_pf: leave-one-out needs at least 2 trajectories, got K=", k);
  const at::Tensor r = as_double_vector(log_reward, k, "log_reward");
  at::Tensor q;
  if (log_behavior.has_value()) q = as_double_vector(*log_behavior, k, "log_behavior");

  batch::BatchInputs in;
  in.k = k;
  in.log_pf = s.const_data_ptr<double>();
  in.log_pb = b.has_value() ? b->const_data_ptr<double>() : nullptr;
  in.log_reward = r.const_data_ptr<double>();
  in.log_behavior = q.defined() ? q.const_data_ptr<double>() : nullptr;
  in.config = config;
  if (log_z.has_value()) {
    TORCH_CHECK_VALUE(log_z->numel() == 1, "log_z: expected a scalar, got shape ",
                      log_z->sizes());
    in.has_log_z = true;
    in.log_z = log_z->detach().to(at::kDouble).item<double>();
  }
  TORCH_CHECK_VALUE(config.objective != batch::Objective::kTb || in.has_log_z,
                    "log_z: tb needs a (learned) log Z, got None");
  TORCH_CHECK_VALUE(!(config.objective == batch::Objective::kTb && loo && q.defined()),
                    "control_variate: \"loo\" for tb is unbiased only on-policy, but "
                    "log_behavior was given; use control_variate=\"none\"");
  // Uninitialised: the step writes every scratch entry before reading it.
  at::Tensor scratch = at::empty({batch::kScratchPerK * k}, s.options().dtype(at::kDouble));
  in.scratch = scratch.data_ptr<double>();

  const auto options = s.options().dtype(out_dtype);
  at::Tensor c = at::empty({k}, options);
  at::Tensor d = at::empty({k}, options);
  batch::BatchOutputs<double> scalars;
  if (out_dtype == at::kDouble) {
    run<double>(in, c, d, scalars);
  } else {
    TORCH_CHECK_VALUE(out_dtype == at::kFloat, "internal: unexpected output dtype ", out_dtype);
    run<float>(in, c, d, scalars);
  }
  return {c,
          d,
          at::scalar_tensor(scalars.e, options),
          at::scalar_tensor(scalars.value, options),
          at::scalar_tensor(scalars.ess, options),
          at::scalar_tensor(scalars.log_z_hat, options),
          at::scalar_tensor(scalars.skipped, s.options().dtype(at::kBool))};
}

namespace {

c10::optional<at::Tensor> optional_double(const c10::optional<at::Tensor>& t, int64_t k,
                                          const char* name) {
  if (!t.has_value()) return c10::nullopt;
  return as_double_vector(*t, k, name);
}

BatchResult batch_coefficients(const at::Tensor& log_pf, const c10::optional<at::Tensor>& log_pb,
                               const at::Tensor& log_reward,
                               const c10::optional<at::Tensor>& log_behavior,
                               const c10::optional<at::Tensor>& log_z, c10::string_view objective,
                               c10::string_view control_variate, double alpha,
                               bool paper_normalization) {
  const batch::Config config = make_config(std::string(objective), std::string(control_variate),
                                           alpha, paper_normalization);
  const int64_t k = log_pf.numel();
  const at::Tensor s = as_double_vector(log_pf, k, "log_pf");
  const auto out_dtype = accumulation_type(log_pf.scalar_type());
  return batch_step_tensors(s, optional_double(log_pb, k, "log_pb"), log_reward, log_behavior,
                            log_z, config, out_dtype);
}

}  // namespace

}  // namespace cpu
}  // namespace gfn_fast

TORCH_LIBRARY_IMPL(gfn_fast, CPU, m) {
  m.impl("batch_coefficients", &gfn_fast::cpu::batch_coefficients);
}
