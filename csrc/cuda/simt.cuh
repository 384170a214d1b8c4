// The few places where the CUDA kernels meet either nvcc or the CPU emulator of them
// (csrc/cuda/emulation/): per-block shared arrays, checked 16-byte vector accesses, and
// kernel launches. Kernel bodies use only these and plain CUDA, so the same sources run on a
// GPU and, in tests, on the CPU.
#pragma once

#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <tuple>
#include <utility>

namespace gfn_fast {
namespace gpu {

// `__shared__ SharedArray<T, N> name;` declares N elements of T per block. The emulator
// checks every access (bounds, races, reads of unwritten elements).
#if defined(GFN_FAST_CUDA_EMULATION)
template <class T, int64_t N>
using SharedArray = emu::SharedArray<T, N>;
#else
template <class T, int64_t N>
struct SharedArray {
  T data[N];
  __device__ __forceinline__ T& operator[](int64_t i) { return data[i]; }
};
#endif

// *p and *p = v for a vector type V (16-byte packs): the address must be aligned to V, as
// the GPU requires; the emulator reports a misaligned one.
template <class V>
__device__ __forceinline__ V load_aligned(const V* p) {
#if defined(GFN_FAST_CUDA_EMULATION)
  emu::check_aligned(p, alignof(V), /*store=*/false);
#endif
  return *p;
}

template <class V>
__device__ __forceinline__ void store_aligned(V* p, const V& v) {
#if defined(GFN_FAST_CUDA_EMULATION)
  emu::check_aligned(p, alignof(V), /*store=*/true);
#endif
  *p = v;
}

namespace detail {
template <class F>
struct KernelParams;
template <class... P>
struct KernelParams<void (*)(P...)> {
  using type = std::tuple<P...>;
};
}  // namespace detail

// Kernel<<<grid, block, 0, stream>>>(args...); returns the launch status.
template <auto Kernel, class... Args>
cudaError_t launch(dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
#if defined(GFN_FAST_CUDA_EMULATION)
  return emu::launch_kernel<Kernel>(grid, block, stream, /*cooperative=*/false,
                                    std::forward<Args>(args)...);
#else
  Kernel<<<grid, block, 0, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
#endif
}

// A cooperative launch: every block is resident at once, so the kernel may call
// cooperative_groups::this_grid().sync(). The grid must fit on the device at once.
template <auto Kernel, class... Args>
cudaError_t launch_cooperative(dim3 grid, dim3 block, cudaStream_t stream, Args&&... args) {
#if defined(GFN_FAST_CUDA_EMULATION)
  return emu::launch_kernel<Kernel>(grid, block, stream, /*cooperative=*/true,
                                    std::forward<Args>(args)...);
#else
  typename detail::KernelParams<decltype(Kernel)>::type params(std::forward<Args>(args)...);
  return std::apply(
      [&](auto&... p) {
        void* argv[] = {static_cast<void*>(&p)...};
        return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(Kernel), grid, block,
                                           argv, 0, stream);
      },
      params);
#endif
}

}  // namespace gpu
}  // namespace gfn_fast
