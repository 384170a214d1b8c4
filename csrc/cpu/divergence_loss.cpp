// The fused divergence loss on CPU: forward = segment sums of the per-step log p_F and
// log p_B in one parallel pass, then the batch step; backward = one parallel pass writing
// grad * c[b] and grad * d[b] over each segment (zero on padding).
//
// log p_F and log p_B may have different dtypes; each gets a row function chosen once, so
// there is no nested dtype dispatch.
#include <ATen/Dispatch.h>
#include <torch/extension.h>

#include "batch_step_cpu.h"
#include "segments.h"
#include "vec_math.h"

namespace gfn_fast {
namespace cpu {
namespace {

// Sum of n steps from `begin`, in the accumulation dtype, returned as double.
using RowSum = double (*)(const void* data, int64_t begin, int64_t n);
// fill_owned of segment b with `value` (already rounded to the accumulation dtype).
using RowFill = void (*)(void* data, const SegmentLayout& layout, int64_t b, double value);

template <class T>
double row_sum(const void* data, int64_t begin, int64_t n) {
  return static_cast<double>(sum_steps(static_cast<const T*>(data) + begin, n));
}

template <class T>
void row_fill(void* data, const SegmentLayout& layout, int64_t b, double value) {
  fill_owned(static_cast<T*>(data), layout, b, static_cast<T>(value));
}

RowSum row_sum_for(at::ScalarType dtype) {
  RowSum fn = nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "row_sum",
                                  [&] { fn = &row_sum<scalar_t>; });
  return fn;
}

RowFill row_fill_for(at::ScalarType dtype) {
  RowFill fn = nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "row_fill",
                                  [&] { fn = &row_fill<scalar_t>; });
  return fn;
}

BatchResult divergence_loss_fused(
    const at::Tensor& step_log_pf, const c10::optional<at::Tensor>& step_log_pb,
    const at::Tensor& log_reward, const c10::optional<at::Tensor>& log_behavior,
    const c10::optional<at::Tensor>& log_z, const c10::optional<at::Tensor>& lengths,
    const c10::optional<at::Tensor>& offsets, c10::string_view objective,
    c10::string_view control_variate, double alpha, bool paper_normalization) {
  const batch::Config config = make_config(std::string(objective), std::string(control_variate),
                                           alpha, paper_normalization);
  check_floating(step_log_pf, "step_log_pf");
  const SegmentLayout layout =
      SegmentLayout::make(step_log_pf.sizes(), lengths, offsets, "step_log_pf");
  const at::Tensor pf = step_log_pf.contiguous();
  at::Tensor pb;
  if (step_log_pb.has_value()) {
    check_floating(*step_log_pb, "step_log_pb");
    TORCH_CHECK_VALUE(step_log_pb->sizes() == step_log_pf.sizes(),
                      "step_log_pb: expected the shape of step_log_pf ", step_log_pf.sizes(),
                      ", got ", step_log_pb->sizes());
    pb = step_log_pb->contiguous();
  }
  const int64_t k = layout.batch();
  const auto f64 = pf.options().dtype(at::kDouble);
  at::Tensor s = at::empty({k}, f64);
  at::Tensor b = pb.defined() ? at::empty({k}, f64) : at::Tensor();
  const RowSum sum_pf = row_sum_for(pf.scalar_type());
  const RowSum sum_pb = pb.defined() ? row_sum_for(pb.scalar_type()) : nullptr;
  const void* pf_data = pf.const_data_ptr();
  const void* pb_data = pb.defined() ? pb.const_data_ptr() : nullptr;
  double* s_data = s.data_ptr<double>();
  double* b_data = pb.defined() ? b.data_ptr<double>() : nullptr;
  const int64_t bytes = pf.element_size() + (pb.defined() ? pb.element_size() : 0);
  layout.parallel(bytes, [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t first = layout.begin(i), n = layout.end(i) - first;
      s_data[i] = sum_pf(pf_data, first, n);
      if (b_data != nullptr) b_data[i] = sum_pb(pb_data, first, n);
    }
  });
  const auto out_dtype = pf.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  return batch_step_tensors(s, pb.defined() ? c10::optional<at::Tensor>(b) : c10::nullopt,
                            log_reward, log_behavior, log_z, config, out_dtype);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> divergence_loss_backward(
    const at::Tensor& grad_loss, const at::Tensor& c, const at::Tensor& d, const at::Tensor& e,
    const c10::optional<at::Tensor>& lengths, const c10::optional<at::Tensor>& offsets,
    c10::SymIntArrayRef shape, at::ScalarType pf_dtype, at::ScalarType pb_dtype) {
  const at::IntArrayRef sizes = C10_AS_INTARRAYREF_SLOW(shape);
  const SegmentLayout layout = SegmentLayout::make(sizes, lengths, offsets, "step_log_pf");
  check_floating(grad_loss, "grad_loss");
  check_floating(c, "c");
  check_floating(d, "d");
  check_floating(e, "e");
  TORCH_CHECK_VALUE(grad_loss.numel() == 1, "grad_loss: expected a scalar, got shape ",
                    grad_loss.sizes());
  TORCH_CHECK_VALUE(c.numel() == layout.batch() && d.numel() == layout.batch(),
                    "c and d: expected ", layout.batch(), " elements, got ", c.numel(), " and ",
                    d.numel());
  TORCH_CHECK_VALUE(c.scalar_type() == d.scalar_type(), "d: expected the dtype of c (",
                    c.scalar_type(), "), got ", d.scalar_type());
  TORCH_CHECK_VALUE(at::isFloatingType(pf_dtype) && at::isFloatingType(pb_dtype),
                    "pf_dtype and pb_dtype: expected floating dtypes, got ", pf_dtype, " and ",
                    pb_dtype);
  at::Tensor grad_pf = at::empty(sizes, c.options().dtype(pf_dtype));
  at::Tensor grad_pb = at::empty(sizes, c.options().dtype(pb_dtype));
  const RowFill fill_pf = row_fill_for(pf_dtype);
  const RowFill fill_pb = row_fill_for(pb_dtype);
  void* pf_data = grad_pf.data_ptr();
  void* pb_data = grad_pb.data_ptr();
  at::Tensor grad_log_z;
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "divergence_loss_backward", [&] {
    // The surrogate's gradient g * c[b], rounded like autograd in the dtype of c.
    const auto g = static_cast<scalar_t>(grad_loss.item<double>());
    const at::Tensor cc = c.contiguous(), dd = d.contiguous();
    const scalar_t* c_data = cc.const_data_ptr<scalar_t>();
    const scalar_t* d_data = dd.const_data_ptr<scalar_t>();
    layout.parallel(grad_pf.element_size() + grad_pb.element_size(), [&](int64_t lo, int64_t hi) {
      for (int64_t b = lo; b < hi; ++b) {
        fill_pf(pf_data, layout, b, static_cast<double>(static_cast<scalar_t>(g * c_data[b])));
        fill_pb(pb_data, layout, b, static_cast<double>(static_cast<scalar_t>(g * d_data[b])));
      }
    });
    const auto e_value = static_cast<scalar_t>(e.item<double>());
    grad_log_z = at::scalar_tensor(static_cast<double>(g * e_value), e.options());
  });
  if (layout.batch() == 0) {  // no segment owns anything: all padding
    grad_pf.zero_();
    grad_pb.zero_();
  }
  return {grad_pf, grad_pb, grad_log_z};
}

}  // namespace
}  // namespace cpu
}  // namespace gfn_fast

TORCH_LIBRARY_IMPL(gfn_fast, CPU, m) {
  m.impl("divergence_loss_fused", &gfn_fast::cpu::divergence_loss_fused);
  m.impl("divergence_loss_backward", &gfn_fast::cpu::divergence_loss_backward);
}
