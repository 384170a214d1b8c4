// The SIMT execution layer under which the CUDA kernel sources (csrc/cuda/*.cu) compile as
// plain C++ and run on the CPU: the `cuda_emulated` backend. Kernel code reaches it through
// the CUDA names (cuda_runtime.h and friends in emulation/include/ forward here).
//
// Model:
// - Every thread of a block is a fiber with its own stack, so __syncthreads, the warp
//   shuffles and grid.sync() are real synchronisation points: a fiber runs until it reaches
//   one, and the scheduler releases a barrier only when every thread it names has arrived.
//   Misuse is reported as a launch error (never a wrong answer by luck): a barrier that not
//   every thread of the block reaches, threads waiting at different barriers, a shuffle mask
//   that does not include the caller or names an exited / diverged / missing lane, a shuffle
//   that reads a lane outside its mask, a deadlock.
// - Shared memory is per block: `__shared__ SharedArray<T, N> name;` gives each block its own
//   N elements, filled with 0xff bytes when the block starts (NaN in floating types). Every
//   access is bounds-checked and race-checked: a read of an element that no thread of the
//   block wrote, or one written by another thread since the last barrier, a write over
//   another thread's read or write since the last barrier, are errors.
// - 16-byte vector accesses go through load_aligned / store_aligned (csrc/cuda/simt.cuh),
//   which report misaligned addresses as the GPU does.
// - Launches run synchronously on the calling thread, in the stream's order. Blocks of a
//   plain launch run one after another; a cooperative launch runs all its blocks at once so
//   that grid.sync() can complete.
// - Global memory traffic is counted from the compiler's instrumentation of the kernel code
//   (the kernel objects are compiled with -fsanitize=thread, whose load/store callbacks this
//   layer implements): every load and store the kernel code makes outside its own stack
//   counts, as bytes read or written and as distinct 32-byte sectors per launch, together
//   with the launches (emulation/host.h).
//   Kernel parameters and shared memory are not global memory and do not count.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#define GFN_FAST_CUDA_EMULATION 1

// ---------------------------------------------------------------------------------------
// Keywords
// ---------------------------------------------------------------------------------------
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
// Function-local `__shared__` declarations become statics: per-declaration descriptors
// whose storage the runtime keeps per block (SharedArray below).
#define __shared__ static

// The float overloads of the math functions, as CUDA device code has them.
using std::exp;
using std::expm1;
using std::fmax;
using std::fmin;
using std::log;
using std::log1p;

// The fast intrinsic; the emulation computes it exactly.
inline float __expf(float x) { return std::exp(x); }

struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1)
      : x(vx), y(vy), z(vz) {}
};

// ---------------------------------------------------------------------------------------
// Runtime API: error codes and streams (launches run synchronously, so a stream is only a
// label; the null stream is the default one).
// ---------------------------------------------------------------------------------------
enum cudaError_t : int {
  cudaSuccess = 0,
  cudaErrorInvalidValue = 1,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorIllegalAddress = 700,
  cudaErrorMisalignedAddress = 716,
  cudaErrorLaunchFailure = 719,
  cudaErrorCooperativeLaunchTooLarge = 720,
};

struct CUstream_st;
using cudaStream_t = CUstream_st*;

// Returns and clears the error of the last launch on this thread (like CUDA's).
cudaError_t cudaGetLastError();
const char* cudaGetErrorString(cudaError_t error);

namespace gfn_fast {
namespace emu {

constexpr int kWarpSize = 32;
constexpr int kMaxBlockThreads = 1024;
// The emulated device reports an H200's multiprocessor count, so cooperative grids are
// sized as on the GPU this project targets.
constexpr int kMultiprocessors = 132;
constexpr int kMaxThreadsPerMultiprocessor = 2048;

// ---------------------------------------------------------------------------------------
// Thread and block coordinates of the calling fiber
// ---------------------------------------------------------------------------------------
uint3 thread_index();
uint3 block_index();
dim3 block_dim();
dim3 grid_dim();

// ---------------------------------------------------------------------------------------
// Synchronisation (each blocks the calling fiber until its partners arrive)
// ---------------------------------------------------------------------------------------
void syncthreads(const char* file, int line);
void grid_sync(const char* file, int line);

enum class Shuffle : int { kIdx, kUp, kDown, kXor };
// Exchanges one 64-bit payload across the lanes named in `mask`; returns the source lane's.
uint64_t warp_shuffle(Shuffle kind, unsigned mask, uint64_t payload, int arg, int width,
                      const char* file, int line);

template <class T>
T shuffle(Shuffle kind, unsigned mask, T var, int arg, int width, const char* file, int line) {
  static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= sizeof(uint64_t),
                "shuffled values are trivially copyable and at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &var, sizeof(T));
  bits = warp_shuffle(kind, mask, bits, arg, width, file, line);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

// ---------------------------------------------------------------------------------------
// Shared memory
// ---------------------------------------------------------------------------------------
struct SharedSlot;  // one declaration's storage and race shadow in the current block
SharedSlot* shared_slot(const void* declaration, size_t element_size, int64_t count);
void shared_read(SharedSlot* slot, int64_t index, void* out);
void shared_write(SharedSlot* slot, int64_t index, const void* value);

template <class T>
class SharedRef {
 public:
  SharedRef(SharedSlot* slot, int64_t index) : slot_(slot), index_(index) {}
  operator T() const {
    T value;
    shared_read(slot_, index_, &value);
    return value;
  }
  SharedRef& operator=(const T& value) {
    shared_write(slot_, index_, &value);
    return *this;
  }
  SharedRef& operator=(const SharedRef& other) { return *this = static_cast<T>(other); }

 private:
  SharedSlot* slot_;
  int64_t index_;
};

// `__shared__ SharedArray<T, N> a;` : a[i] reads and writes element i of this block's copy.
template <class T, int64_t N>
struct SharedArray {
  static_assert(std::is_trivially_copyable<T>::value, "shared elements are trivially copyable");
  SharedRef<T> operator[](int64_t index) const {
    return SharedRef<T>(shared_slot(this, sizeof(T), N), index);
  }
};

// ---------------------------------------------------------------------------------------
// Global memory checks
// ---------------------------------------------------------------------------------------
// Reports a misaligned vector access (cudaErrorMisalignedAddress) and stops the kernel.
void check_aligned(const void* address, size_t alignment, bool store);

// ---------------------------------------------------------------------------------------
// Launches
// ---------------------------------------------------------------------------------------
struct LaunchConfig {
  dim3 grid;
  dim3 block;
  cudaStream_t stream = nullptr;
  bool cooperative = false;
  const char* kernel = "";  // a signature naming the kernel, for error messages
};

// Runs `thread_main(closure)` in every thread of the grid; returns the launch status (also
// kept for cudaGetLastError).
cudaError_t launch(const LaunchConfig& config, void (*thread_main)(void*), void* closure);

// Marks the start of kernel code in the calling fiber: from here on, its memory accesses
// outside its stack count as global-memory traffic.
void enter_kernel_code();

namespace detail {

template <class F>
struct KernelParams;
template <class... P>
struct KernelParams<void (*)(P...)> {
  using type = std::tuple<std::decay_t<P>...>;
};

// A signature naming the kernel ("... [with auto Kernel = segment_sum_kernel<...>]"); the
// runtime extracts the name for its messages.
template <auto Kernel>
constexpr const char* kernel_signature() {
  return __PRETTY_FUNCTION__;
}

}  // namespace detail

// Kernel<<<grid, block, 0, stream>>>(args...), cooperative when asked.
template <auto Kernel, class... Args>
cudaError_t launch_kernel(dim3 grid, dim3 block, cudaStream_t stream, bool cooperative,
                          Args&&... args) {
  using Params = typename detail::KernelParams<decltype(Kernel)>::type;
  Params params(std::forward<Args>(args)...);
  auto thread_main = [](void* closure) {
    Params local = *static_cast<const Params*>(closure);  // the parameter copy is not traffic
    enter_kernel_code();
    std::apply([](auto&... p) { Kernel(p...); }, local);
  };
  LaunchConfig config;
  config.grid = grid;
  config.block = block;
  config.stream = stream;
  config.cooperative = cooperative;
  config.kernel = detail::kernel_signature<Kernel>();
  return launch(config, thread_main, &params);
}

}  // namespace emu
}  // namespace gfn_fast

// ---------------------------------------------------------------------------------------
// The CUDA names kernel code uses
// ---------------------------------------------------------------------------------------
#define threadIdx (::gfn_fast::emu::thread_index())
#define blockIdx (::gfn_fast::emu::block_index())
#define blockDim (::gfn_fast::emu::block_dim())
#define gridDim (::gfn_fast::emu::grid_dim())

inline void __syncthreads(const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  ::gfn_fast::emu::syncthreads(file, line);
}

template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = ::gfn_fast::emu::kWarpSize,
              const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::gfn_fast::emu::shuffle(::gfn_fast::emu::Shuffle::kIdx, mask, var, src_lane, width,
                                  file, line);
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = ::gfn_fast::emu::kWarpSize,
                 const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::gfn_fast::emu::shuffle(::gfn_fast::emu::Shuffle::kUp, mask, var,
                                  static_cast<int>(delta), width, file, line);
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = ::gfn_fast::emu::kWarpSize,
                   const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::gfn_fast::emu::shuffle(::gfn_fast::emu::Shuffle::kDown, mask, var,
                                  static_cast<int>(delta), width, file, line);
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = ::gfn_fast::emu::kWarpSize,
                  const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  return ::gfn_fast::emu::shuffle(::gfn_fast::emu::Shuffle::kXor, mask, var, lane_mask, width,
                                  file, line);
}
