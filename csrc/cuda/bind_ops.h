// The CUDA ops on torch tensors: the device check, the argument checks of
// csrc/common/op_checks.h (the same as on CPU), output allocation and the calls into the
// plain launchers of csrc/cuda/*.cu. Shared by the GPU registration (bind_cuda.cpp) and the
// CPU emulation of the same kernels (emulation/bind_emulated.cpp), which differ only in the
// `Device` policy:
//
//   struct Device {
//     static constexpr const char* kName;          // in error messages ("a CUDA tensor")
//     struct Scope { explicit Scope(const char* op); };  // lives while an op runs
//     static bool holds(const at::Tensor& t);       // t lives on this device
//     static auto guard(const at::Tensor& t);       // RAII device guard for t's device
//     static cudaStream_t stream();                 // the stream to launch on
//     static void check(cudaError_t status, const char* op);  // raises on a launch error
//   };
//
// Nothing here synchronises with the host: index values (lengths, offsets, actions) are not
// inspected on the host; the kernels clamp them (launchers.h), and the public functions
// validate them beforehand (gfn_fast/_checks.py). log Z is read by the kernel.
#pragma once

#include <torch/extension.h>

#include <tuple>
#include <vector>

#include "common/op_args.h"
#include "common/op_checks.h"
#include "common/op_config.h"
#include "cuda/batch_launchers.h"
#include "cuda/launchers.h"

namespace gfn_fast {
namespace cuda_ops {

using gpu::BatchArgs;
using gpu::DType;
using gpu::Layout;
using gpu::StepArg;
using gpu::VecArg;

using BatchResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

inline DType to_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat:
      return DType::kFloat32;
    case at::kDouble:
      return DType::kFloat64;
    case at::kBFloat16:
      return DType::kBFloat16;
    case at::kHalf:
      return DType::kFloat16;
    case at::kInt:
      return DType::kInt32;
    case at::kLong:
      return DType::kInt64;
    case at::kBool:
      return DType::kBool;
    default:
      break;
  }
  TORCH_CHECK_VALUE(false, "gfn_fast: unsupported dtype ", t);
  return DType::kFloat32;
}

// The device-specific part of an op's arguments: the check of the tensor that picks the
// device, the launch arguments of tensors already checked (csrc/common/op_checks.h), and the
// launch status. The device-independent rules are OpArgs'.
template <class Device>
class Args : public OpArgs {
 public:
  explicit Args(const char* op) : OpArgs(op), scope_(op) {}

  void on_device(const at::Tensor& t, const char* name) const {
    TORCH_CHECK_VALUE(Device::holds(t), op(), ": ", name, ": expected ", Device::kName,
                      ", got a tensor on ", t.device());
  }

  void check(cudaError_t status) const { Device::check(status, op()); }

 private:
  typename Device::Scope scope_;
};

// A [n] vector or a scalar (checked by OpArgs::vec_shape) as a strided VecArg.
inline VecArg vec_arg(const at::Tensor& t) {
  VecArg v;
  v.data = t.const_data_ptr();
  v.dtype = to_dtype(t.scalar_type());
  v.stride = t.dim() == 1 ? t.stride(0) : 0;
  return v;
}

inline VecArg optional_vec_arg(const c10::optional<at::Tensor>& t) {
  return t.has_value() ? vec_arg(*t) : VecArg{};
}

// The launch layout of a checked `shape`. Index tensors made contiguous are kept alive in
// `held` until the launch is enqueued.
inline Layout layout_arg(const LayoutShape& shape, const c10::optional<at::Tensor>& lengths,
                         const c10::optional<at::Tensor>& offsets, std::vector<at::Tensor>& held) {
  Layout layout;
  layout.batch = shape.batch;
  layout.steps = shape.steps;
  layout.packed = shape.packed;
  if (shape.packed) {
    held.push_back(offsets->contiguous());
    layout.offsets = held.back().const_data_ptr();
    layout.index_dtype = to_dtype(offsets->scalar_type());
  } else if (lengths.has_value()) {
    held.push_back(lengths->contiguous());
    layout.lengths = held.back().const_data_ptr();
    layout.index_dtype = to_dtype(lengths->scalar_type());
  }
  return layout;
}

// Per-step values or rows of a [B, T, ...] / [N, ...] tensor in `layout`.
inline StepArg step_arg(const at::Tensor& t, const Layout& layout) {
  StepArg s;
  s.data = t.const_data_ptr();
  s.dtype = to_dtype(t.scalar_type());
  s.stride_b = layout.packed ? 0 : t.stride(0);
  s.stride_t = layout.packed ? t.stride(0) : t.stride(1);
  return s;
}

// ---------------------------------------------------------------------------------------
// segment_sum
// ---------------------------------------------------------------------------------------

template <class Device>
at::Tensor segment_sum(const at::Tensor& values, const c10::optional<at::Tensor>& lengths,
                       const c10::optional<at::Tensor>& offsets) {
  const Args<Device> args("segment_sum");
  args.on_device(values, "values");
  [[maybe_unused]] const auto guard = Device::guard(values);
  const LayoutShape shape = check_segment_sum(args, values, lengths, offsets);
  std::vector<at::Tensor> held;
  const Layout layout = layout_arg(shape, lengths, offsets, held);
  at::Tensor out = at::empty({layout.batch},
                             values.options().dtype(accumulation_type(values.scalar_type())));
  args.check(gpu::segment_sum(step_arg(values, layout), layout, out.data_ptr(), Device::stream()));
  return out;
}

template <class Device>
at::Tensor segment_sum_backward(const at::Tensor& grad, const c10::optional<at::Tensor>& lengths,
                                const c10::optional<at::Tensor>& offsets,
                                c10::SymIntArrayRef shape, at::ScalarType dtype) {
  const Args<Device> args("segment_sum_backward");
  args.on_device(grad, "grad");
  [[maybe_unused]] const auto guard = Device::guard(grad);
  const at::IntArrayRef sizes = C10_AS_INTARRAYREF_SLOW(shape);
  std::vector<at::Tensor> held;
  const Layout layout = layout_arg(
      check_segment_sum_backward(args, grad, lengths, offsets, sizes, dtype), lengths, offsets,
      held);
  at::Tensor out = at::empty(sizes, grad.options().dtype(dtype));
  args.check(gpu::segment_sum_backward(vec_arg(grad), layout, out.data_ptr(), to_dtype(dtype),
                                       Device::stream()));
  return out;
}

// ---------------------------------------------------------------------------------------
// logprob_from_logits
// ---------------------------------------------------------------------------------------

// The launch arguments of checked logits inputs.
struct LogitsInputs {
  at::Tensor logits, actions, mask;
  Layout layout;
  std::vector<at::Tensor> held;
  int64_t num_actions = 0;

  LogitsInputs(const LogitsShape& shape, const at::Tensor& logits_in, const at::Tensor& actions_in,
               const c10::optional<at::Tensor>& action_mask,
               const c10::optional<at::Tensor>& lengths, const c10::optional<at::Tensor>& offsets)
      : logits(logits_in.stride(-1) == 1 ? logits_in : logits_in.contiguous()),
        actions(actions_in),
        num_actions(shape.num_actions) {
    layout = layout_arg(shape.layout, lengths, offsets, held);
    if (action_mask.has_value()) {
      mask = action_mask->stride(-1) == 1 ? *action_mask : action_mask->contiguous();
    }
  }

  StepArg logits_arg() const { return step_arg(logits, layout); }
  StepArg actions_arg() const { return step_arg(actions, layout); }
  StepArg mask_arg() const { return mask.defined() ? step_arg(mask, layout) : StepArg{}; }
};

template <class Device>
std::tuple<at::Tensor, at::Tensor> logprob_from_logits(
    const at::Tensor& logits, const at::Tensor& actions,
    const c10::optional<at::Tensor>& action_mask, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& offsets) {
  const Args<Device> args("logprob_from_logits");
  args.on_device(logits, "logits");
  [[maybe_unused]] const auto guard = Device::guard(logits);
  const LogitsInputs in(
      check_logprob_from_logits(args, logits, actions, action_mask, lengths, offsets), logits,
      actions, action_mask, lengths, offsets);
  at::Tensor logprob = at::empty(
      {in.layout.batch}, logits.options().dtype(accumulation_type(logits.scalar_type())));
  at::Tensor step_lse = at::empty(actions.sizes(), logits.options().dtype(at::kDouble));
  args.check(gpu::logprob_from_logits(in.logits_arg(), in.num_actions, in.actions_arg(),
                                      in.mask_arg(), in.layout, logprob.data_ptr(),
                                      step_lse.data_ptr<double>(), Device::stream()));
  return {logprob, step_lse};
}

template <class Device>
at::Tensor logprob_from_logits_backward(const at::Tensor& grad, const at::Tensor& logits,
                                        const at::Tensor& actions,
                                        const c10::optional<at::Tensor>& action_mask,
                                        const at::Tensor& step_lse,
                                        const c10::optional<at::Tensor>& lengths,
                                        const c10::optional<at::Tensor>& offsets) {
  const Args<Device> args("logprob_from_logits_backward");
  args.on_device(logits, "logits");
  [[maybe_unused]] const auto guard = Device::guard(logits);
  const LogitsInputs in(check_logprob_from_logits_backward(args, grad, logits, actions,
                                                           action_mask, step_lse, lengths,
                                                           offsets),
                        logits, actions, action_mask, lengths, offsets);
  const at::Tensor lse = step_lse.to(at::kDouble).contiguous();
  at::Tensor out =
      at::empty(logits.sizes(), logits.options().memory_format(at::MemoryFormat::Contiguous));
  args.check(gpu::logprob_from_logits_backward(
      vec_arg(grad), in.logits_arg(), in.num_actions, in.actions_arg(), in.mask_arg(),
      lse.const_data_ptr<double>(), in.layout, out.data_ptr(), Device::stream()));
  return out;
}

// ---------------------------------------------------------------------------------------
// batch_coefficients and the fused loss
// ---------------------------------------------------------------------------------------

struct BatchTensors {
  BatchArgs args;
  at::Tensor workspace, c, d, e, value, ess, log_z_hat, skipped;

  BatchResult result() const { return {c, d, e, value, ess, log_z_hat, skipped}; }
};

// The launch arguments of checked per-trajectory inputs and the outputs; `like` gives the
// device, `out_dtype` the output dtype (the accumulation dtype of log p_F).
inline BatchTensors prepare_batch(const batch::Config& config, int64_t k, const at::Tensor& like,
                                  at::ScalarType out_dtype, const at::Tensor& log_reward,
                                  const c10::optional<at::Tensor>& log_behavior,
                                  const c10::optional<at::Tensor>& log_z) {
  BatchTensors bt;
  BatchArgs& a = bt.args;
  a.k = k;
  a.config = config;
  a.log_reward = vec_arg(log_reward);
  a.log_behavior = optional_vec_arg(log_behavior);
  a.log_z = optional_vec_arg(log_z);
  a.out_dtype = to_dtype(out_dtype);

  const auto options = like.options().dtype(out_dtype);
  bt.workspace = at::empty({gpu::batch_workspace_doubles(k)}, like.options().dtype(at::kDouble));
  bt.c = at::empty({k}, options);
  bt.d = at::empty({k}, options);
  bt.e = at::empty({}, options);
  bt.value = at::empty({}, options);
  bt.ess = at::empty({}, options);
  bt.log_z_hat = at::empty({}, options);
  bt.skipped = at::empty({}, like.options().dtype(at::kBool));
  a.workspace = bt.workspace.data_ptr<double>();
  a.c = bt.c.data_ptr();
  a.d = bt.d.data_ptr();
  a.e = bt.e.data_ptr();
  a.value = bt.value.data_ptr();
  a.ess = bt.ess.data_ptr();
  a.log_z_hat = bt.log_z_hat.data_ptr();
  a.skipped = bt.skipped.data_ptr<bool>();
  return bt;
}

template <class Device>
BatchResult batch_coefficients(const at::Tensor& log_pf, const c10::optional<at::Tensor>& log_pb,
                               const at::Tensor& log_reward,
                               const c10::optional<at::Tensor>& log_behavior,
                               const c10::optional<at::Tensor>& log_z, c10::string_view objective,
                               c10::string_view control_variate, double alpha,
                               bool paper_normalization) {
  const Args<Device> args("batch_coefficients");
  args.on_device(log_pf, "log_pf");
  [[maybe_unused]] const auto guard = Device::guard(log_pf);
  const batch::Config config =
      check_batch_coefficients(args, log_pf, log_pb, log_reward, log_behavior, log_z, objective,
                               control_variate, alpha, paper_normalization);
  const int64_t k = log_pf.numel();
  BatchTensors bt = prepare_batch(config, k, log_pf, accumulation_type(log_pf.scalar_type()),
                                  log_reward, log_behavior, log_z);
  bt.args.log_pf = vec_arg(log_pf);
  bt.args.log_pb = optional_vec_arg(log_pb);
  args.check(gpu::batch_coefficients(bt.args, Device::stream()));
  return bt.result();
}

template <class Device>
BatchResult divergence_loss_fused(
    const at::Tensor& step_log_pf, const c10::optional<at::Tensor>& step_log_pb,
    const at::Tensor& log_reward, const c10::optional<at::Tensor>& log_behavior,
    const c10::optional<at::Tensor>& log_z, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& offsets, c10::string_view objective,
    c10::string_view control_variate, double alpha, bool paper_normalization) {
  const Args<Device> args("divergence_loss_fused");
  args.on_device(step_log_pf, "step_log_pf");
  [[maybe_unused]] const auto guard = Device::guard(step_log_pf);
  const FusedShape shape = check_divergence_loss_fused(
      args, step_log_pf, step_log_pb, log_reward, log_behavior, log_z, lengths, offsets,
      objective, control_variate, alpha, paper_normalization);
  std::vector<at::Tensor> held;
  const Layout layout = layout_arg(shape.layout, lengths, offsets, held);
  const StepArg pb = step_log_pb.has_value() ? step_arg(*step_log_pb, layout) : StepArg{};
  BatchTensors bt = prepare_batch(shape.config, layout.batch, step_log_pf,
                                  accumulation_type(step_log_pf.scalar_type()), log_reward,
                                  log_behavior, log_z);
  args.check(gpu::divergence_loss_fused(step_arg(step_log_pf, layout), pb, layout, bt.args,
                                        Device::stream()));
  return bt.result();
}

template <class Device>
std::tuple<at::Tensor, at::Tensor, at::Tensor> divergence_loss_backward(
    const at::Tensor& grad_loss, const at::Tensor& c, const at::Tensor& d, const at::Tensor& e,
    const c10::optional<at::Tensor>& lengths, const c10::optional<at::Tensor>& offsets,
    c10::SymIntArrayRef shape, at::ScalarType pf_dtype, c10::optional<at::ScalarType> pb_dtype) {
  const Args<Device> args("divergence_loss_backward");
  args.on_device(c, "c");
  [[maybe_unused]] const auto guard = Device::guard(c);
  const at::IntArrayRef sizes = C10_AS_INTARRAYREF_SLOW(shape);
  std::vector<at::Tensor> held;
  const Layout layout = layout_arg(check_divergence_loss_backward(args, grad_loss, c, d, e,
                                                                  lengths, offsets, sizes,
                                                                  pf_dtype, pb_dtype),
                                   lengths, offsets, held);
  at::Tensor grad_pf = at::empty(sizes, c.options().dtype(pf_dtype));
  // pb_dtype None: no log p_B gradient to write (an empty placeholder output).
  at::Tensor grad_pb = pb_dtype.has_value() ? at::empty(sizes, c.options().dtype(*pb_dtype))
                                            : at::empty({0}, c.options().dtype(pf_dtype));
  at::Tensor grad_log_z = at::empty_like(e, at::MemoryFormat::Contiguous);
  args.check(gpu::divergence_loss_backward(
      vec_arg(grad_loss), vec_arg(c), vec_arg(d), vec_arg(e), layout, grad_pf.data_ptr(),
      to_dtype(pf_dtype), pb_dtype.has_value() ? grad_pb.data_ptr() : nullptr,
      to_dtype(pb_dtype.value_or(pf_dtype)), grad_log_z.data_ptr(), to_dtype(e.scalar_type()),
      Device::stream()));
  return {grad_pf, grad_pb, grad_log_z};
}

// Registers every op of the library `m` (gfn_fast or its emulated twin) for one device.
template <class Device>
void register_ops(torch::Library& m) {
  m.impl("segment_sum", &segment_sum<Device>);
  m.impl("segment_sum_backward", &segment_sum_backward<Device>);
  m.impl("logprob_from_logits", &logprob_from_logits<Device>);
  m.impl("logprob_from_logits_backward", &logprob_from_logits_backward<Device>);
  m.impl("batch_coefficients", &batch_coefficients<Device>);
  m.impl("divergence_loss_fused", &divergence_loss_fused<Device>);
  m.impl("divergence_loss_backward", &divergence_loss_backward<Device>);
}

}  // namespace cuda_ops
}  // namespace gfn_fast
