// The CUDA registration of the gfn_fast ops: the ops of bind_ops.h on CUDA tensors, with a
// device guard and the current CUDA stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "cuda/bind_ops.h"

namespace gfn_fast {
namespace cuda_ops {
namespace {

struct CudaDevice {
  static constexpr const char* kName = "a CUDA tensor";
  struct Scope {
    explicit Scope(const char*) {}
  };
  static bool holds(const at::Tensor& t) { return t.is_cuda(); }
  static c10::cuda::CUDAGuard guard(const at::Tensor& t) {
    return c10::cuda::CUDAGuard(t.device());
  }
  static cudaStream_t stream() { return at::cuda::getCurrentCUDAStream().stream(); }
  static void check(cudaError_t status, const char*) { C10_CUDA_CHECK(status); }
};

}  // namespace
}  // namespace cuda_ops
}  // namespace gfn_fast

TORCH_LIBRARY_IMPL(gfn_fast, CUDA, m) {
  gfn_fast::cuda_ops::register_ops<gfn_fast::cuda_ops::CudaDevice>(m);
}
