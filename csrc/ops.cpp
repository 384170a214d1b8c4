// The native extension gfn_fast._C: the op schemas (csrc/op_schemas.h) in the library
// `gfn_fast`, their C++ autograd for every device (csrc/autograd.h), and build_info().
// Kernels register per device in csrc/cpu and csrc/cuda; fake implementations come from
// gfn_fast/ops.py.
#include <torch/extension.h>

#include <sstream>

#include "autograd.h"
#include "op_schemas.h"

namespace {
constexpr char kLibrary[] = "gfn_fast";
}  // namespace

TORCH_LIBRARY(gfn_fast, m) { gfn_fast::define_ops(m); }

TORCH_LIBRARY_IMPL(gfn_fast, Autograd, m) { gfn_fast::register_autograd<kLibrary>(m); }

namespace {

// GFN_FAST_CUDA_ARCHS arrives unquoted from setup.py (e.g. 8.0,9.0+PTX).
#define GFN_FAST_STRINGIFY_(...) #__VA_ARGS__
#define GFN_FAST_STRINGIFY(...) GFN_FAST_STRINGIFY_(__VA_ARGS__)

std::string build_info() {
  std::ostringstream info;
  info << "{\"compiler\": \"";
#if defined(__clang__)
  info << "clang " << __clang_major__ << "." << __clang_minor__;
#elif defined(__GNUC__)
  info << "gcc " << __GNUC__ << "." << __GNUC_MINOR__;
#else
  info << "unknown";
#endif
  info << "\", \"torch\": \"" << TORCH_VERSION << "\", \"openmp\": "
#ifdef _OPENMP
       << "true"
#else
       << "false"
#endif
       << ", \"cuda\": "
#ifdef GFN_FAST_WITH_CUDA
       << "true"
#else
       << "false"
#endif
       << ", \"cuda_arch_list\": \""
#ifdef GFN_FAST_CUDA_ARCHS
       << GFN_FAST_STRINGIFY(GFN_FAST_CUDA_ARCHS)
#endif
       << "\"}";
  return info.str();
}

}  // namespace

PYBIND11_MODULE(_C, module) {
  module.doc() = "gfn_fast native kernels; importing registers the torch.ops.gfn_fast ops.";
  module.def("build_info", &build_info, "Compiler, CUDA and torch version used at build time (JSON).");
}
