// The CUDA ops on torch tensors: argument checks, output allocation and the calls into the
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

#include <string>
#include <tuple>
#include <vector>

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

inline bool is_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

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

// Argument checks of one op: every message starts with the op's and the argument's names.
template <class Device>
class Args {
 public:
  explicit Args(const char* op) : op_(op), scope_(op) {}

  const char* op() const { return op_; }

  // The tensor that decides the device.
  void on_device(const at::Tensor& t, const char* name) const {
    TORCH_CHECK_VALUE(Device::holds(t), op_, ": ", name, ": expected ", Device::kName,
                      ", got a tensor on ", t.device());
  }
  void same_device(const at::Tensor& t, const at::Tensor& like, const char* name) const {
    TORCH_CHECK_VALUE(t.device() == like.device(), op_, ": ", name, ": expected a tensor on ",
                      like.device(), ", got one on ", t.device());
  }
  void floating(const at::Tensor& t, const char* name) const {
    TORCH_CHECK_VALUE(is_float(t.scalar_type()), op_, ": ", name,
                      ": expected a float32, float64, bfloat16 or float16 tensor, got ",
                      t.scalar_type());
  }
  void index(const at::Tensor& t, const at::Tensor& like, const char* name) const {
    TORCH_CHECK_VALUE(t.scalar_type() == at::kInt || t.scalar_type() == at::kLong, op_, ": ",
                      name, ": expected an int32 or int64 tensor, got ", t.scalar_type());
    same_device(t, like, name);
  }
  void one_dim(const at::Tensor& t, int64_t n, const char* name) const {
    TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == n, op_, ": ", name,
                      ": expected a 1-D tensor of ", n, " elements, got shape ", t.sizes());
  }

  // A [n] vector, or a scalar (any shape with one element, for n == 1), as a strided VecArg.
  VecArg vec(const at::Tensor& t, int64_t n, const char* name) const {
    TORCH_CHECK_VALUE(t.numel() == n && (t.dim() <= 1 || n == 1), op_, ": ", name,
                      ": expected ", n, " element(s) in at most one dimension, got shape ",
                      t.sizes());
    VecArg v;
    v.data = t.const_data_ptr();
    v.dtype = to_dtype(t.scalar_type());
    v.stride = t.dim() == 1 ? t.stride(0) : 0;
    return v;
  }
  VecArg optional_vec(const c10::optional<at::Tensor>& t, int64_t n, const at::Tensor& like,
                      const char* name) const {
    if (!t.has_value()) return VecArg{};
    floating(*t, name);
    same_device(*t, like, name);
    return vec(*t, n, name);
  }

  // The segment layout of per-step `steps_shape` ([B, T] padded, [N] packed). Index tensors
  // made contiguous are kept alive in `held` until the launch is enqueued.
  Layout layout(at::IntArrayRef steps_shape, const c10::optional<at::Tensor>& lengths,
                const c10::optional<at::Tensor>& offsets, const at::Tensor& like,
                const char* name, std::vector<at::Tensor>& held) const {
    TORCH_CHECK_VALUE(!(lengths.has_value() && offsets.has_value()), op_,
                      ": lengths and offsets: expected at most one of them, got both");
    Layout layout;
    if (offsets.has_value()) {
      index(*offsets, like, "offsets");
      TORCH_CHECK_VALUE(offsets->dim() == 1 && offsets->numel() >= 1, op_,
                        ": offsets: expected a 1-D tensor [B + 1] with B >= 0, got shape ",
                        offsets->sizes());
      TORCH_CHECK_VALUE(steps_shape.size() == 1, op_, ": ", name,
                        ": with offsets (packed layout) expected per-step shape [N], got ",
                        steps_shape);
      held.push_back(offsets->contiguous());
      layout.offsets = held.back().const_data_ptr();
      layout.index_dtype = to_dtype(offsets->scalar_type());
      layout.batch = offsets->numel() - 1;
      layout.steps = steps_shape[0];
      layout.packed = true;
      return layout;
    }
    TORCH_CHECK_VALUE(steps_shape.size() == 2, op_, ": ", name,
                      ": expected per-step shape [B, T] (padded) or pass offsets, got ",
                      steps_shape);
    layout.batch = steps_shape[0];
    layout.steps = steps_shape[1];
    if (lengths.has_value()) {
      index(*lengths, like, "lengths");
      one_dim(*lengths, layout.batch, "lengths");
      held.push_back(lengths->contiguous());
      layout.lengths = held.back().const_data_ptr();
      layout.index_dtype = to_dtype(lengths->scalar_type());
    }
    return layout;
  }

  void check(cudaError_t status) const { Device::check(status, op_); }

 private:
  const char* op_;
  typename Device::Scope scope_;
};

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
  args.floating(values, "values");
  args.on_device(values, "values");
  [[maybe_unused]] const auto guard = Device::guard(values);
  std::vector<at::Tensor> held;
  const Layout layout = args.layout(values.sizes(), lengths, offsets, values, "values", held);
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
  args.floating(grad, "grad");
  TORCH_CHECK_VALUE(is_float(dtype), args.op(),
                    ": dtype: expected float32, float64, bfloat16 or float16, got ", dtype);
  const at::IntArrayRef sizes = C10_AS_INTARRAYREF_SLOW(shape);
  args.on_device(grad, "grad");
  [[maybe_unused]] const auto guard = Device::guard(grad);
  std::vector<at::Tensor> held;
  const Layout layout = args.layout(sizes, lengths, offsets, grad, "shape", held);
  args.one_dim(grad, layout.batch, "grad");
  const VecArg g = args.vec(grad, layout.batch, "grad");
  at::Tensor out = at::empty(sizes, grad.options().dtype(dtype));
  args.check(gpu::segment_sum_backward(g, layout, out.data_ptr(), to_dtype(dtype),
                                       Device::stream()));
  return out;
}

// ---------------------------------------------------------------------------------------
// logprob_from_logits
// ---------------------------------------------------------------------------------------

struct LogitsInputs {
  at::Tensor logits, actions, mask;
  Layout layout;
  std::vector<at::Tensor> held;
  int64_t num_actions = 0;

  StepArg logits_arg() const { return step_arg(logits, layout); }
  StepArg actions_arg() const { return step_arg(actions, layout); }
  StepArg mask_arg() const { return mask.defined() ? step_arg(mask, layout) : StepArg{}; }
};

template <class Device>
LogitsInputs logits_inputs(const Args<Device>& args, const at::Tensor& logits,
                           const at::Tensor& actions,
                           const c10::optional<at::Tensor>& action_mask,
                           const c10::optional<at::Tensor>& lengths,
                           const c10::optional<at::Tensor>& offsets) {
  args.floating(logits, "logits");
  TORCH_CHECK_VALUE(logits.dim() == 2 || logits.dim() == 3, args.op(),
                    ": logits: expected [B, T, A] (padded) or [N, A] (packed), got shape ",
                    logits.sizes());
  args.same_device(actions, logits, "actions");
  TORCH_CHECK_VALUE(actions.scalar_type() == at::kInt || actions.scalar_type() == at::kLong,
                    args.op(), ": actions: expected an int32 or int64 tensor, got ",
                    actions.scalar_type());
  TORCH_CHECK_VALUE(actions.sizes() == logits.sizes().slice(0, logits.dim() - 1), args.op(),
                    ": actions: expected the shape of logits without its last axis ",
                    logits.sizes().slice(0, logits.dim() - 1), ", got ", actions.sizes());
  LogitsInputs in;
  in.num_actions = logits.size(-1);
  TORCH_CHECK_VALUE(in.num_actions >= 1, args.op(),
                    ": logits: expected at least one action, got shape ", logits.sizes());
  in.layout = args.layout(actions.sizes(), lengths, offsets, logits, "actions", in.held);
  in.logits = logits.stride(-1) == 1 ? logits : logits.contiguous();
  in.actions = actions;
  if (action_mask.has_value()) {
    args.same_device(*action_mask, logits, "action_mask");
    TORCH_CHECK_VALUE(action_mask->scalar_type() == at::kBool, args.op(),
                      ": action_mask: expected a bool tensor, got ", action_mask->scalar_type());
    TORCH_CHECK_VALUE(action_mask->sizes() == logits.sizes(), args.op(),
                      ": action_mask: expected the shape of logits ", logits.sizes(), ", got ",
                      action_mask->sizes());
    in.mask = action_mask->stride(-1) == 1 ? *action_mask : action_mask->contiguous();
  }
  return in;
}

template <class Device>
std::tuple<at::Tensor, at::Tensor> logprob_from_logits(
    const at::Tensor& logits, const at::Tensor& actions,
    const c10::optional<at::Tensor>& action_mask, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& offsets) {
  const Args<Device> args("logprob_from_logits");
  args.on_device(logits, "logits");
  [[maybe_unused]] const auto guard = Device::guard(logits);
  const LogitsInputs in = logits_inputs(args, logits, actions, action_mask, lengths, offsets);
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
  const LogitsInputs in = logits_inputs(args, logits, actions, action_mask, lengths, offsets);
  args.floating(grad, "grad");
  args.same_device(grad, logits, "grad");
  args.one_dim(grad, in.layout.batch, "grad");
  const VecArg g = args.vec(grad, in.layout.batch, "grad");
  args.same_device(step_lse, logits, "step_lse");
  TORCH_CHECK_VALUE(step_lse.sizes() == actions.sizes(), args.op(),
                    ": step_lse: expected the shape of actions ", actions.sizes(), ", got ",
                    step_lse.sizes());
  const at::Tensor lse = step_lse.to(at::kDouble).contiguous();
  at::Tensor out =
      at::empty(logits.sizes(), logits.options().memory_format(at::MemoryFormat::Contiguous));
  args.check(gpu::logprob_from_logits_backward(
      g, in.logits_arg(), in.num_actions, in.actions_arg(), in.mask_arg(),
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

// Checks the per-trajectory inputs and allocates the outputs; `like` gives the device,
// `out_dtype` the output dtype (the accumulation dtype of log p_F).
template <class Device>
BatchTensors prepare_batch(const Args<Device>& args, int64_t k, const at::Tensor& like,
                           at::ScalarType out_dtype, const at::Tensor& log_reward,
                           const c10::optional<at::Tensor>& log_behavior,
                           const c10::optional<at::Tensor>& log_z, c10::string_view objective,
                           c10::string_view control_variate, double alpha,
                           bool paper_normalization) {
  const batch::Config config = make_config(std::string(objective), std::string(control_variate),
                                           alpha, paper_normalization);
  check_batch(config, k, log_z.has_value(), log_behavior.has_value(), args.op());
  args.floating(log_reward, "log_reward");
  args.same_device(log_reward, like, "log_reward");
  args.one_dim(log_reward, k, "log_reward");
  if (log_behavior.has_value()) args.one_dim(*log_behavior, k, "log_behavior");

  BatchTensors bt;
  BatchArgs& a = bt.args;
  a.k = k;
  a.config = config;
  a.log_reward = args.vec(log_reward, k, "log_reward");
  a.log_behavior = args.optional_vec(log_behavior, k, like, "log_behavior");
  a.log_z = args.optional_vec(log_z, 1, like, "log_z");
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
  args.floating(log_pf, "log_pf");
  args.on_device(log_pf, "log_pf");
  TORCH_CHECK_VALUE(log_pf.dim() == 1, args.op(), ": log_pf: expected a 1-D tensor [K], got shape ",
                    log_pf.sizes());
  [[maybe_unused]] const auto guard = Device::guard(log_pf);
  const int64_t k = log_pf.numel();
  BatchTensors bt = prepare_batch(args, k, log_pf, accumulation_type(log_pf.scalar_type()),
                                  log_reward, log_behavior, log_z, objective, control_variate,
                                  alpha, paper_normalization);
  bt.args.log_pf = args.vec(log_pf, k, "log_pf");
  if (log_pb.has_value()) args.one_dim(*log_pb, k, "log_pb");
  bt.args.log_pb = args.optional_vec(log_pb, k, log_pf, "log_pb");
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
  args.floating(step_log_pf, "step_log_pf");
  args.on_device(step_log_pf, "step_log_pf");
  [[maybe_unused]] const auto guard = Device::guard(step_log_pf);
  std::vector<at::Tensor> held;
  const Layout layout =
      args.layout(step_log_pf.sizes(), lengths, offsets, step_log_pf, "step_log_pf", held);
  StepArg pb;
  if (step_log_pb.has_value()) {
    args.floating(*step_log_pb, "step_log_pb");
    args.same_device(*step_log_pb, step_log_pf, "step_log_pb");
    TORCH_CHECK_VALUE(step_log_pb->sizes() == step_log_pf.sizes(), args.op(),
                      ": step_log_pb: expected the shape of step_log_pf ", step_log_pf.sizes(),
                      ", got ", step_log_pb->sizes());
    pb = step_arg(*step_log_pb, layout);
  }
  BatchTensors bt = prepare_batch(args, layout.batch, step_log_pf,
                                  accumulation_type(step_log_pf.scalar_type()), log_reward,
                                  log_behavior, log_z, objective, control_variate, alpha,
                                  paper_normalization);
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
  args.floating(grad_loss, "grad_loss");
  args.floating(c, "c");
  args.floating(d, "d");
  args.floating(e, "e");
  TORCH_CHECK_VALUE(is_float(pf_dtype), args.op(), ": pf_dtype: expected a floating dtype, got ",
                    pf_dtype);
  TORCH_CHECK_VALUE(!pb_dtype.has_value() || is_float(*pb_dtype), args.op(),
                    ": pb_dtype: expected a floating dtype or None, got ", *pb_dtype);
  TORCH_CHECK_VALUE(e.scalar_type() == at::kFloat || e.scalar_type() == at::kDouble, args.op(),
                    ": e: expected float32 or float64, got ", e.scalar_type());
  args.on_device(c, "c");
  [[maybe_unused]] const auto guard = Device::guard(c);
  args.same_device(grad_loss, c, "grad_loss");
  args.same_device(d, c, "d");
  args.same_device(e, c, "e");
  const at::IntArrayRef sizes = C10_AS_INTARRAYREF_SLOW(shape);
  std::vector<at::Tensor> held;
  const Layout layout = args.layout(sizes, lengths, offsets, c, "shape", held);
  const VecArg g = args.vec(grad_loss, 1, "grad_loss");
  const VecArg cv = args.vec(c, layout.batch, "c");
  const VecArg dv = args.vec(d, layout.batch, "d");
  const VecArg ev = args.vec(e, 1, "e");
  at::Tensor grad_pf = at::empty(sizes, c.options().dtype(pf_dtype));
  // pb_dtype None: no log p_B gradient to write (an empty placeholder output).
  at::Tensor grad_pb = pb_dtype.has_value() ? at::empty(sizes, c.options().dtype(*pb_dtype))
                                            : at::empty({0}, c.options().dtype(pf_dtype));
  at::Tensor grad_log_z = at::empty_like(e, at::MemoryFormat::Contiguous);
  args.check(gpu::divergence_loss_backward(
      g, cv, dv, ev, layout, grad_pf.data_ptr(), to_dtype(pf_dtype),
      pb_dtype.has_value() ? grad_pb.data_ptr() : nullptr, to_dtype(pb_dtype.value_or(pf_dtype)),
      grad_log_z.data_ptr(), to_dtype(e.scalar_type()), Device::stream()));
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
