// The out-of-line, per-target clones of vec_math.h's float kernels.
#include "vec_math.h"

namespace gfn_fast {
namespace cpu {

GFN_TARGET_CLONES float sum_steps_f32(const float* x, int64_t n) {
  return sum_steps_inline(x, n);
}

GFN_TARGET_CLONES void fill_steps_f32(float* out, int64_t n, float value) {
  for (int64_t i = 0; i < n; ++i) out[i] = value;
}

}  // namespace cpu
}  // namespace gfn_fast
