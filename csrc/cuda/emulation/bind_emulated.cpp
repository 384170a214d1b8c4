// gfn_fast._C_cuda_emulated: the CUDA ops of csrc/cuda/bind_ops.h, registered on CPU tensors
// in the library `gfn_fast_emulated`, running the CUDA kernel sources on the emulated
// runtime. The same op schemas and C++ autograd as the native extension; per-op counts of
// launches and global-memory bytes for the GPU cost model.
#include <pybind11/stl.h>
#include <torch/extension.h>

#include <map>
#include <string>

#include "autograd.h"
#include "cuda/bind_ops.h"
#include "cuda/emulation/host.h"
#include "cuda/emulation/selftest.h"
#include "op_schemas.h"

namespace gfn_fast {
namespace cuda_ops {
namespace {

constexpr char kLibrary[] = "gfn_fast_emulated";

// Launches and bytes per op since the last reset.
std::map<std::string, emu::Traffic>& op_traffic() {
  static std::map<std::string, emu::Traffic> traffic;
  return traffic;
}

struct EmulatedDevice {
  static constexpr const char* kName =
      "a CPU tensor (the cuda_emulated backend runs the CUDA kernels on the CPU)";

  // Attributes the launches and bytes made while an op runs to that op.
  class Scope {
   public:
    explicit Scope(const char* op) : op_(op), start_(emu::traffic()) {}
    ~Scope() { op_traffic()[op_] += emu::traffic() - start_; }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    const char* op_;
    emu::Traffic start_;
  };

  struct NoGuard {};

  static bool holds(const at::Tensor& t) { return t.device().is_cpu(); }
  static NoGuard guard(const at::Tensor&) { return {}; }
  static cudaStream_t stream() { return nullptr; }
  static void check(cudaError_t status, const char* op) {
    if (status == cudaSuccess) return;
    TORCH_CHECK(false, "gfn_fast (cuda_emulated): ", op, ": CUDA error ",
                static_cast<int>(status), " (", cudaGetErrorString(status), ") in ",
                emu::last_error_message());
  }
};

// The counts of `t` as a dict, into `out`.
void put_traffic(const emu::Traffic& t, pybind11::dict& out) {
  out["launches"] = t.launches;
  out["bytes_read"] = t.bytes_read;
  out["bytes_written"] = t.bytes_written;
  out["sector_bytes_read"] = t.sector_bytes_read;
  out["sector_bytes_written"] = t.sector_bytes_written;
}

pybind11::dict traffic_by_op() {
  pybind11::dict out;
  for (const auto& [op, t] : op_traffic()) {
    pybind11::dict entry;
    put_traffic(t, entry);
    out[pybind11::str(op)] = entry;
  }
  return out;
}

pybind11::dict selftest(const std::string& name, const std::vector<float>& input, int arg) {
  const emu::SelftestResult r = emu::run_selftest(name, input, arg);
  pybind11::dict out;
  out["status"] = r.status;
  out["message"] = r.message;
  out["values"] = r.values;
  put_traffic(r.traffic, out);
  return out;
}

}  // namespace
}  // namespace cuda_ops
}  // namespace gfn_fast

TORCH_LIBRARY(gfn_fast_emulated, m) { gfn_fast::define_ops(m); }

TORCH_LIBRARY_IMPL(gfn_fast_emulated, CPU, m) {
  gfn_fast::cuda_ops::register_ops<gfn_fast::cuda_ops::EmulatedDevice>(m);
}

TORCH_LIBRARY_IMPL(gfn_fast_emulated, Autograd, m) {
  gfn_fast::register_autograd<gfn_fast::cuda_ops::kLibrary>(m);
}

PYBIND11_MODULE(_C_cuda_emulated, module) {
  module.doc() =
      "The CUDA kernels of gfn_fast run on the CPU by an emulated SIMT runtime; importing "
      "registers the torch.ops.gfn_fast_emulated ops.";
  module.def("traffic", &gfn_fast::cuda_ops::traffic_by_op,
             "{op: {launches, bytes_read, bytes_written, sector_bytes_read, "
             "sector_bytes_written}}: what the kernels of each op did since the last "
             "reset_traffic(), on this thread (csrc/cuda/emulation/host.h).");
  module.def("selftest", &gfn_fast::cuda_ops::selftest, pybind11::arg("name"),
             pybind11::arg("input"), pybind11::arg("arg") = 0,
             "Runs a self-test kernel of the emulated runtime (csrc/cuda/emulation/selftest.h): "
             "{status, message, values, launches, bytes_read, bytes_written}.");
  module.def(
      "reset_traffic", [] { gfn_fast::cuda_ops::op_traffic().clear(); },
      "Clears the counts of traffic().");
}
