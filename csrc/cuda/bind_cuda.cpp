// CUDA implementations of the gfn_fast ops: shape and dtype checks, output allocation,
// and calls into the plain launchers of csrc/cuda/*.cu on the current CUDA stream.
//
// Nothing here synchronises with the host: index values (lengths, offsets, actions) are
// not inspected on the host but clamped on the device (Python validates them beforehand
// when validate=True), and log Z is read by the kernel.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <string>
#include <tuple>
#include <vector>

#include "cpu/batch_step_cpu.h"  // make_config: the op's string arguments, parsed once
#include "cuda/batch_launchers.h"
#include "cuda/launchers.h"

namespace gfn_fast {
// The torch-facing ops live apart from the launchers (gpu::), whose names they share.
namespace cuda_ops {

using gpu::batch_workspace_doubles;
using gpu::BatchArgs;
using gpu::DType;
using gpu::Layout;
using gpu::RowArg;
using gpu::StepArg;
using gpu::VecArg;

namespace {

using BatchResult =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

bool is_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kBFloat16 || t == at::kHalf;
}

DType to_dtype(at::ScalarType t) {
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
  TORCH_CHECK(false, "gfn_fast: unsupported dtype ", t);
  return DType::kFloat32;
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// The tensor that decides the device: it must be on a CUDA device.
void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(t.is_cuda(), name, ": expected a CUDA tensor, got one on ", t.device());
}

void check_float(const at::Tensor& t, const char* name) {
  TORCH_CHECK_VALUE(is_float(t.scalar_type()), name,
                    ": expected a float32, float64, bfloat16 or float16 tensor, got ",
                    t.scalar_type());
}

void check_device(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK_VALUE(t.device() == like.device(), name, ": expected a tensor on ", like.device(),
                    ", got one on ", t.device());
}

// A [n] vector (or a scalar, any shape with n == 1 elements) as a strided VecArg.
VecArg vec_arg(const at::Tensor& t, int64_t n, const char* name) {
  TORCH_CHECK_VALUE(t.numel() == n, name, ": expected ", n, " element(s), got shape ",
                    t.sizes());
  VecArg v;
  v.data = t.const_data_ptr();
  v.dtype = to_dtype(t.scalar_type());
  v.stride = (t.dim() == 1) ? t.stride(0) : 0;
  if (t.dim() > 1 && n > 1) {
    TORCH_CHECK_VALUE(false, name, ": expected a 1-D tensor, got shape ", t.sizes());
  }
  return v;
}

VecArg optional_vec(const c10::optional<at::Tensor>& t, int64_t n, const at::Tensor& like,
                    const char* name, bool floating = true) {
  if (!t.has_value()) return VecArg{};
  if (floating) check_float(*t, name);
  check_device(*t, like, name);
  return vec_arg(*t, n, name);
}

void check_index(const at::Tensor& t, const at::Tensor& like, const char* name) {
  TORCH_CHECK_VALUE(t.scalar_type() == at::kInt || t.scalar_type() == at::kLong, name,
                    ": expected an int32 or int64 tensor, got ", t.scalar_type());
  check_device(t, like, name);
}

// The segment layout of per-step `steps_shape` ([B, T] padded, [N] packed). Index tensors
// made contiguous are kept alive in `held` until the launch is enqueued.
Layout make_layout(at::IntArrayRef steps_shape, const c10::optional<at::Tensor>& lengths,
                   const c10::optional<at::Tensor>& offsets, const at::Tensor& like,
                   const char* name, std::vector<at::Tensor>& held) {
  TORCH_CHECK_VALUE(!(lengths.has_value() && offsets.has_value()),
                    "lengths and offsets: expected at most one of them, got both");
  Layout layout;
  if (offsets.has_value()) {
    check_index(*offsets, like, "offsets");
    TORCH_CHECK_VALUE(offsets->dim() == 1 && offsets->numel() >= 1,
                      "offsets: expected a 1-D tensor [B + 1] with B >= 0, got shape ",
                      offsets->sizes());
    TORCH_CHECK_VALUE(steps_shape.size() == 1, name,
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
  TORCH_CHECK_VALUE(steps_shape.size() == 2, name,
                    ": expected per-step shape [B, T] (padded) or pass offsets, got ",
                    steps_shape);
  layout.batch = steps_shape[0];
  layout.steps = steps_shape[1];
  if (lengths.has_value()) {
    check_index(*lengths, like, "lengths");
    TORCH_CHECK_VALUE(lengths->dim() == 1 && lengths->size(0) == layout.batch,
                      "lengths: expected shape [B] = [", layout.batch, "], got ",
                      lengths->sizes());
    held.push_back(lengths->contiguous());
    layout.lengths = held.back().const_data_ptr();
    layout.index_dtype = to_dtype(lengths->scalar_type());
  }
  return layout;
}

// Per-step values in `layout` (element (b, t) at b * stride_b + t * stride_t).
StepArg step_arg(const at::Tensor& t, const Layout& layout) {
  StepArg s;
  s.data = t.const_data_ptr();
  s.dtype = to_dtype(t.scalar_type());
  if (layout.packed) {
    s.stride_b = 0;
    s.stride_t = t.stride(0);
  } else {
    s.stride_b = t.stride(0);
    s.stride_t = t.stride(1);
  }
  return s;
}

// Rows of a [B, T, A] / [N, A] tensor whose last axis is contiguous.
RowArg row_arg(const at::Tensor& t, const Layout& layout) {
  RowArg r;
  r.data = t.const_data_ptr();
  r.dtype = to_dtype(t.scalar_type());
  if (layout.packed) {
    r.stride_b = 0;
    r.stride_t = t.stride(0);
  } else {
    r.stride_b = t.stride(0);
    r.stride_t = t.stride(1);
  }
  return r;
}

cudaStream_t stream() { return at::cuda::getCurrentCUDAStream().stream(); }

void check_launch(cudaError_t status) { C10_CUDA_CHECK(status); }

// ---------------------------------------------------------------------------------------
// segment_sum
// ---------------------------------------------------------------------------------------

at::Tensor segment_sum(const at::Tensor& values, const c10::optional<at::Tensor>& lengths,
                       const c10::optional<at::Tensor>& offsets) {
  check_float(values, "values");
  check_cuda(values, "values");
  const c10::cuda::CUDAGuard guard(values.device());
  std::vector<at::Tensor> held;
  const Layout layout = make_layout(values.sizes(), lengths, offsets, values, "values", held);
  at::Tensor out = at::empty({layout.batch}, values.options().dtype(acc_type(values.scalar_type())));
  check_launch(gpu::segment_sum(step_arg(values, layout), layout, out.data_ptr(), stream()));
  return out;
}

at::Tensor segment_sum_backward(const at::Tensor& grad, const c10::optional<at::Tensor>& lengths,
                                const c10::optional<at::Tensor>& offsets,
                                c10::SymIntArrayRef shape, at::ScalarType dtype) {
  check_float(grad, "grad");
  TORCH_CHECK_VALUE(is_float(dtype),
                    "dtype: expected float32, float64, bfloat16 or float16, got ", dtype);
  const at::IntArrayRef sizes = C10_AS_INTARRAYREF_SLOW(shape);
  check_cuda(grad, "grad");
  const c10::cuda::CUDAGuard guard(grad.device());
  std::vector<at::Tensor> held;
  const Layout layout = make_layout(sizes, lengths, offsets, grad, "shape", held);
  TORCH_CHECK_VALUE(grad.dim() == 1, "grad: expected a 1-D tensor [B], got shape ", grad.sizes());
  const VecArg g = vec_arg(grad, layout.batch, "grad");
  at::Tensor out = at::empty(sizes, grad.options().dtype(dtype));
  check_launch(gpu::segment_sum_backward(g, layout, out.data_ptr(), to_dtype(dtype), stream()));
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
};

LogitsInputs logits_inputs(const at::Tensor& logits, const at::Tensor& actions,
                           const c10::optional<at::Tensor>& action_mask,
                           const c10::optional<at::Tensor>& lengths,
                           const c10::optional<at::Tensor>& offsets) {
  check_float(logits, "logits");
  TORCH_CHECK_VALUE(logits.dim() == 2 || logits.dim() == 3,
                    "logits: expected [B, T, A] (padded) or [N, A] (packed), got shape ",
                    logits.sizes());
  check_device(actions, logits, "actions");
  TORCH_CHECK_VALUE(at::isIntegralType(actions.scalar_type(), /*includeBool=*/false),
                    "actions: expected an integer tensor, got ", actions.scalar_type());
  TORCH_CHECK_VALUE(actions.sizes() == logits.sizes().slice(0, logits.dim() - 1),
                    "actions: expected the shape of logits without its last axis ",
                    logits.sizes().slice(0, logits.dim() - 1), ", got ", actions.sizes());
  LogitsInputs in;
  in.num_actions = logits.size(-1);
  TORCH_CHECK_VALUE(in.num_actions >= 1, "logits: expected at least one action, got shape ",
                    logits.sizes());
  in.layout = make_layout(actions.sizes(), lengths, offsets, logits, "actions", in.held);
  in.logits = logits.stride(-1) == 1 ? logits : logits.contiguous();
  in.actions = (actions.scalar_type() == at::kInt || actions.scalar_type() == at::kLong)
                   ? actions
                   : actions.to(at::kLong);
  if (action_mask.has_value()) {
    check_device(*action_mask, logits, "action_mask");
    TORCH_CHECK_VALUE(action_mask->scalar_type() == at::kBool,
                      "action_mask: expected a bool tensor, got ", action_mask->scalar_type());
    TORCH_CHECK_VALUE(action_mask->sizes() == logits.sizes(),
                      "action_mask: expected the shape of logits ", logits.sizes(), ", got ",
                      action_mask->sizes());
    in.mask = action_mask->stride(-1) == 1 ? *action_mask : action_mask->contiguous();
  }
  return in;
}

StepArg actions_arg(const LogitsInputs& in) { return step_arg(in.actions, in.layout); }

RowArg mask_arg(const LogitsInputs& in) {
  return in.mask.defined() ? row_arg(in.mask, in.layout) : RowArg{};
}

std::tuple<at::Tensor, at::Tensor> logprob_from_logits(
    const at::Tensor& logits, const at::Tensor& actions,
    const c10::optional<at::Tensor>& action_mask, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& offsets) {
  check_cuda(logits, "logits");
  const c10::cuda::CUDAGuard guard(logits.device());
  const LogitsInputs in = logits_inputs(logits, actions, action_mask, lengths, offsets);
  const auto acc = logits.options().dtype(acc_type(logits.scalar_type()));
  at::Tensor logprob = at::empty({in.layout.batch}, acc);
  at::Tensor step_lse = at::empty(actions.sizes(), acc);
  check_launch(gpu::logprob_from_logits(row_arg(in.logits, in.layout), in.num_actions,
                                        actions_arg(in), mask_arg(in), in.layout,
                                        logprob.data_ptr(), step_lse.data_ptr(), stream()));
  return {logprob, step_lse};
}

at::Tensor logprob_from_logits_backward(const at::Tensor& grad, const at::Tensor& logits,
                                        const at::Tensor& actions,
                                        const c10::optional<at::Tensor>& action_mask,
                                        const at::Tensor& step_lse,
                                        const c10::optional<at::Tensor>& lengths,
                                        const c10::optional<at::Tensor>& offsets) {
  check_cuda(logits, "logits");
  const c10::cuda::CUDAGuard guard(logits.device());
  const LogitsInputs in = logits_inputs(logits, actions, action_mask, lengths, offsets);
  check_float(grad, "grad");
  check_device(grad, logits, "grad");
  TORCH_CHECK_VALUE(grad.dim() == 1, "grad: expected a 1-D tensor [B], got shape ", grad.sizes());
  const VecArg g = vec_arg(grad, in.layout.batch, "grad");
  check_device(step_lse, logits, "step_lse");
  TORCH_CHECK_VALUE(step_lse.sizes() == actions.sizes(), "step_lse: expected the shape of actions ",
                    actions.sizes(), ", got ", step_lse.sizes());
  const at::Tensor lse = step_lse.to(acc_type(logits.scalar_type())).contiguous();
  at::Tensor out = at::empty(logits.sizes(), logits.options().memory_format(at::MemoryFormat::Contiguous));
  check_launch(gpu::logprob_from_logits_backward(
      g, row_arg(in.logits, in.layout), in.num_actions, actions_arg(in), mask_arg(in),
      lse.const_data_ptr(), in.layout, out.data_ptr(), stream()));
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
BatchTensors prepare_batch(int64_t k, const at::Tensor& like, at::ScalarType out_dtype,
                           const at::Tensor& log_reward,
                           const c10::optional<at::Tensor>& log_behavior,
                           const c10::optional<at::Tensor>& log_z, c10::string_view objective,
                           c10::string_view control_variate, double alpha,
                           bool paper_normalization) {
  const batch::Config config = cpu::make_config(
      std::string(objective), std::string(control_variate), alpha, paper_normalization);
  TORCH_CHECK_VALUE(k >= 1, "log_pf: expected at least 1 trajectory, got K=0");
  const bool loo = config.control_variate == batch::ControlVariate::kLoo;
  TORCH_CHECK_VALUE(!(loo && config.objective != batch::Objective::kVargrad && k < 2),
                    "log_pf: leave-one-out needs at least 2 trajectories, got K=", k);
  TORCH_CHECK_VALUE(config.objective != batch::Objective::kTb || log_z.has_value(),
                    "log_z: tb needs a (learned) log Z, got None");
  TORCH_CHECK_VALUE(
      !(config.objective == batch::Objective::kTb && loo && log_behavior.has_value()),
      "control_variate: \"loo\" for tb is unbiased only on-policy, but log_behavior was "
      "given; use control_variate=\"none\"");
  check_float(log_reward, "log_reward");
  check_device(log_reward, like, "log_reward");
  TORCH_CHECK_VALUE(log_reward.dim() == 1, "log_reward: expected shape [K] = [", k, "], got ",
                    log_reward.sizes());

  BatchTensors bt;
  BatchArgs& a = bt.args;
  a.k = k;
  a.config = config;
  a.log_reward = vec_arg(log_reward, k, "log_reward");
  if (log_behavior.has_value()) {
    TORCH_CHECK_VALUE(log_behavior->dim() == 1, "log_behavior: expected shape [K] = [", k,
                      "], got ", log_behavior->sizes());
  }
  a.log_behavior = optional_vec(log_behavior, k, like, "log_behavior");
  a.log_z = optional_vec(log_z, 1, like, "log_z");
  a.out_dtype = to_dtype(out_dtype);

  const auto options = like.options().dtype(out_dtype);
  bt.workspace = at::empty({batch_workspace_doubles(k)}, like.options().dtype(at::kDouble));
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

BatchResult batch_coefficients(const at::Tensor& log_pf, const c10::optional<at::Tensor>& log_pb,
                               const at::Tensor& log_reward,
                               const c10::optional<at::Tensor>& log_behavior,
                               const c10::optional<at::Tensor>& log_z, c10::string_view objective,
                               c10::string_view control_variate, double alpha,
                               bool paper_normalization) {
  check_float(log_pf, "log_pf");
  TORCH_CHECK_VALUE(log_pf.dim() == 1, "log_pf: expected a 1-D tensor [K], got shape ",
                    log_pf.sizes());
  check_cuda(log_pf, "log_pf");
  const c10::cuda::CUDAGuard guard(log_pf.device());
  const int64_t k = log_pf.numel();
  BatchTensors bt = prepare_batch(k, log_pf, acc_type(log_pf.scalar_type()), log_reward,
                                  log_behavior, log_z, objective, control_variate, alpha,
                                  paper_normalization);
  bt.args.log_pf = vec_arg(log_pf, k, "log_pf");
  if (log_pb.has_value()) {
    TORCH_CHECK_VALUE(log_pb->dim() == 1, "log_pb: expected shape [K] = [", k, "], got ",
                      log_pb->sizes());
  }
  bt.args.log_pb = optional_vec(log_pb, k, log_pf, "log_pb");
  check_launch(gpu::batch_coefficients(bt.args, stream()));
  return bt.result();
}

BatchResult divergence_loss_fused(
    const at::Tensor& step_log_pf, const c10::optional<at::Tensor>& step_log_pb,
    const at::Tensor& log_reward, const c10::optional<at::Tensor>& log_behavior,
    const c10::optional<at::Tensor>& log_z, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& offsets, c10::string_view objective,
    c10::string_view control_variate, double alpha, bool paper_normalization) {
  check_float(step_log_pf, "step_log_pf");
  check_cuda(step_log_pf, "step_log_pf");
  const c10::cuda::CUDAGuard guard(step_log_pf.device());
  std::vector<at::Tensor> held;
  const Layout layout =
      make_layout(step_log_pf.sizes(), lengths, offsets, step_log_pf, "step_log_pf", held);
  StepArg pb;
  if (step_log_pb.has_value()) {
    check_float(*step_log_pb, "step_log_pb");
    check_device(*step_log_pb, step_log_pf, "step_log_pb");
    TORCH_CHECK_VALUE(step_log_pb->sizes() == step_log_pf.sizes(),
                      "step_log_pb: expected the shape of step_log_pf ", step_log_pf.sizes(),
                      ", got ", step_log_pb->sizes());
    pb = step_arg(*step_log_pb, layout);
  }
  BatchTensors bt = prepare_batch(layout.batch, step_log_pf, acc_type(step_log_pf.scalar_type()),
                                  log_reward, log_behavior, log_z, objective, control_variate,
                                  alpha, paper_normalization);
  check_launch(gpu::divergence_loss_fused(step_arg(step_log_pf, layout), pb, layout, bt.args,
                                          stream()));
  return bt.result();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> divergence_loss_backward(
    const at::Tensor& grad_loss, const at::Tensor& c, const at::Tensor& d, const at::Tensor& e,
    const c10::optional<at::Tensor>& lengths, const c10::optional<at::Tensor>& offsets,
    c10::SymIntArrayRef shape, at::ScalarType pf_dtype, c10::optional<at::ScalarType> pb_dtype) {
  check_float(grad_loss, "grad_loss");
  check_float(c, "c");
  check_float(d, "d");
  check_float(e, "e");
  TORCH_CHECK_VALUE(is_float(pf_dtype), "pf_dtype: expected a floating dtype, got ", pf_dtype);
  TORCH_CHECK_VALUE(!pb_dtype.has_value() || is_float(*pb_dtype),
                    "pb_dtype: expected a floating dtype or None, got ", *pb_dtype);
  check_cuda(c, "c");
  const c10::cuda::CUDAGuard guard(c.device());
  check_device(grad_loss, c, "grad_loss");
  check_device(d, c, "d");
  check_device(e, c, "e");
  const at::IntArrayRef sizes = C10_AS_INTARRAYREF_SLOW(shape);
  std::vector<at::Tensor> held;
  const Layout layout = make_layout(sizes, lengths, offsets, c, "shape", held);
  const VecArg g = vec_arg(grad_loss, 1, "grad_loss");
  const VecArg cv = vec_arg(c, layout.batch, "c");
  const VecArg dv = vec_arg(d, layout.batch, "d");
  const VecArg ev = vec_arg(e, 1, "e");
  at::Tensor grad_pf = at::empty(sizes, c.options().dtype(pf_dtype));
  // pb_dtype None: no log p_B gradient to write (an empty placeholder output).
  at::Tensor grad_pb = pb_dtype.has_value() ? at::empty(sizes, c.options().dtype(*pb_dtype))
                                            : at::empty({0}, c.options().dtype(pf_dtype));
  at::Tensor grad_log_z = at::empty_like(e, at::MemoryFormat::Contiguous);
  TORCH_CHECK_VALUE(e.scalar_type() == at::kFloat || e.scalar_type() == at::kDouble,
                    "e: expected float32 or float64, got ", e.scalar_type());
  check_launch(gpu::divergence_loss_backward(
      g, cv, dv, ev, layout, grad_pf.data_ptr(), to_dtype(pf_dtype),
      pb_dtype.has_value() ? grad_pb.data_ptr() : nullptr, to_dtype(pb_dtype.value_or(pf_dtype)),
      grad_log_z.data_ptr(), to_dtype(e.scalar_type()), stream()));
  return {grad_pf, grad_pb, grad_log_z};
}

}  // namespace
}  // namespace cuda_ops
}  // namespace gfn_fast

TORCH_LIBRARY_IMPL(gfn_fast, CUDA, m) {
  m.impl("segment_sum", &gfn_fast::cuda_ops::segment_sum);
  m.impl("segment_sum_backward", &gfn_fast::cuda_ops::segment_sum_backward);
  m.impl("logprob_from_logits", &gfn_fast::cuda_ops::logprob_from_logits);
  m.impl("logprob_from_logits_backward", &gfn_fast::cuda_ops::logprob_from_logits_backward);
  m.impl("batch_coefficients", &gfn_fast::cuda_ops::batch_coefficients);
  m.impl("divergence_loss_fused", &gfn_fast::cuda_ops::divergence_loss_fused);
  m.impl("divergence_loss_backward", &gfn_fast::cuda_ops::divergence_loss_backward);
}
