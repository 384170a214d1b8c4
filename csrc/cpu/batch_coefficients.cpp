// batch_coefficients on CPU: the batch step of csrc/common/batch_step.h on [K] tensors,
// and the tensor-level entry point the fused loss shares.
#include <torch/extension.h>

#include <cmath>
#include <limits>

#include "batch_step_cpu.h"
#include "common/op_checks.h"

namespace gfn_fast {
namespace cpu {

namespace {

// A [K] (or scalar) input checked before (csrc/common/op_checks.h), as contiguous double.
at::Tensor as_double(const at::Tensor& t) { return t.to(at::kDouble).contiguous(); }

// A 0-dim output of dtype out_dtype holding x rounded to it: beyond the float range it is
// +-inf, as the CUDA kernels store it (at::scalar_tensor would raise instead), so that the
// caller's overflow check sees the same value on every device.
at::Tensor scalar_output(double x, const at::TensorOptions& options) {
  at::Tensor out = at::empty({}, options);
  if (options.dtype() == at::kDouble) {
    *out.data_ptr<double>() = x;
  } else {
    const double limit = std::numeric_limits<float>::max();
    *out.data_ptr<float>() = std::fabs(x) > limit ? static_cast<float>(std::copysign(INFINITY, x))
                                                  : static_cast<float>(x);
  }
  return out;
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
  const at::Tensor r = as_double(log_reward);
  at::Tensor q;
  if (log_behavior.has_value()) q = as_double(*log_behavior);

  batch::BatchInputs in;
  in.k = k;
  in.log_pf = s.const_data_ptr<double>();
  in.log_pb = b.has_value() ? b->const_data_ptr<double>() : nullptr;
  in.log_reward = r.const_data_ptr<double>();
  in.log_behavior = q.defined() ? q.const_data_ptr<double>() : nullptr;
  in.config = config;
  if (log_z.has_value()) {
    in.has_log_z = true;
    in.log_z = log_z->detach().to(at::kDouble).item<double>();
  }
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
          scalar_output(scalars.e, options),
          scalar_output(scalars.value, options),
          scalar_output(scalars.ess, options),
          scalar_output(scalars.log_z_hat, options),
          at::scalar_tensor(scalars.skipped, s.options().dtype(at::kBool))};
}

namespace {

BatchResult batch_coefficients(const at::Tensor& log_pf, const c10::optional<at::Tensor>& log_pb,
                               const at::Tensor& log_reward,
                               const c10::optional<at::Tensor>& log_behavior,
                               const c10::optional<at::Tensor>& log_z, c10::string_view objective,
                               c10::string_view control_variate, double alpha,
                               bool paper_normalization) {
  const batch::Config config =
      check_batch_coefficients(OpArgs("batch_coefficients"), log_pf, log_pb, log_reward,
                               log_behavior, log_z, objective, control_variate, alpha,
                               paper_normalization);
  const c10::optional<at::Tensor> b =
      log_pb.has_value() ? c10::optional<at::Tensor>(as_double(*log_pb)) : c10::nullopt;
  return batch_step_tensors(as_double(log_pf), b, log_reward, log_behavior, log_z, config,
                            accumulation_type(log_pf.scalar_type()));
}

}  // namespace

}  // namespace cpu
}  // namespace gfn_fast

TORCH_LIBRARY_IMPL(gfn_fast, CPU, m) {
  m.impl("batch_coefficients", &gfn_fast::cpu::batch_coefficients);
}
