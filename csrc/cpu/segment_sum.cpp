// segment_sum and its backward on CPU: one read of the values (fp32 accumulation, fp64 for
// fp64) and one write of the broadcast gradient.
#include <ATen/Dispatch.h>
#include <torch/extension.h>

#include "common/op_checks.h"
#include "common/op_config.h"
#include "segments.h"

namespace gfn_fast {
namespace cpu {
namespace {

at::Tensor segment_sum(const at::Tensor& values, const c10::optional<at::Tensor>& lengths,
                       const c10::optional<at::Tensor>& offsets) {
  const LayoutShape shape = check_segment_sum(OpArgs("segment_sum"), values, lengths, offsets);
  const SegmentLayout layout = SegmentLayout::make(shape, lengths, offsets);
  const at::Tensor x = values.contiguous();
  const auto acc = accumulation_type(x.scalar_type());
  at::Tensor out = at::empty({layout.batch()}, x.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "segment_sum", [&] {
    segment_sums(x.const_data_ptr<scalar_t>(), layout, out.data_ptr<acc_t<scalar_t>>());
  });
  return out;
}

at::Tensor segment_sum_backward(const at::Tensor& grad, const c10::optional<at::Tensor>& lengths,
                                const c10::optional<at::Tensor>& offsets,
                                c10::SymIntArrayRef shape, at::ScalarType dtype) {
  const at::IntArrayRef sizes = C10_AS_INTARRAYREF_SLOW(shape);
  const SegmentLayout layout = SegmentLayout::make(
      check_segment_sum_backward(OpArgs("segment_sum_backward"), grad, lengths, offsets, sizes,
                                 dtype),
      lengths, offsets);
  const at::Tensor g = grad.to(at::kDouble).contiguous();
  const double* gd = g.const_data_ptr<double>();
  at::Tensor out = at::empty(sizes, grad.options().dtype(dtype));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, dtype, "segment_sum_backward", [&] {
    fill_segments(out.data_ptr<scalar_t>(), layout, [&](int64_t b) { return gd[b]; });
  });
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace gfn_fast

TORCH_LIBRARY_IMPL(gfn_fast, CPU, m) {
  m.impl("segment_sum", &gfn_fast::cpu::segment_sum);
  m.impl("segment_sum_backward", &gfn_fast::cpu::segment_sum_backward);
}
