// Loops the compiler vectorises: step sums with fixed-order lane accumulators and an exp
// that vectorises (std::exp does not, without -ffast-math). The selects in fast_exp need
// -fno-trapping-math (setup.py) to be if-converted; it changes no result.
//
// The hot row kernels are compiled twice through GFN_TARGET_CLONES (x86-64-v3 = AVX2 + FMA,
// and the baseline), and the loader picks one at run time, so the extension still loads on
// CPUs without AVX2.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && \
    defined(__linux__)
#define GFN_TARGET_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define GFN_TARGET_CLONES
#endif

#if defined(__GNUC__)
#define GFN_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define GFN_ALWAYS_INLINE inline
#endif

namespace gfn_fast {
namespace cpu {

// Accumulation type: double for double, float for everything else.
template <class T>
using acc_t = std::conditional_t<std::is_same<T, double>::value, double, float>;

// Lanes of the fixed-order accumulators (a multiple of every SIMD width used).
constexpr int kLanes = 16;

// exp(x) for float lanes (Cephes expf: relative error ~1e-7, 0 below -87.3, saturating at
// exp(88)) in straight-line code, for a float (I = int32_t) or a float vector (I: the int32
// vector of its width, GCC vector extensions); the integer part comes from the bits of the
// rounding sum, so no float-to-int conversion (undefined for NaN) is needed.
template <class V, class I>
GFN_ALWAYS_INLINE V exp_approx(V x) {
  const V zero = V{} + 0.0f, lo = zero - 87.3f, hi = zero + 88.0f;
  const V clamped = x < lo ? lo : (x > hi ? hi : x);
  const V shifted = clamped * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23: rounds
  const V fn = shifted - 12582912.0f;
  I n;
  std::memcpy(&n, &shifted, sizeof(n));
  n -= 0x4B400000;  // the bits of 1.5 * 2^23; what remains is round(x / log 2)
  V r = clamped - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  V p = zero + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const V y = p * r * r + r + 1.0f;
  const I bits = (n + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < lo ? zero : y * scale;
}

inline float fast_exp(float x) { return exp_approx<float, int32_t>(x); }
inline double fast_exp(double x) { return std::exp(x); }

// Combines the lanes pairwise in a fixed order.
template <class Acc>
inline Acc combine_lanes(Acc* lanes) {
  for (int width = kLanes / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
  }
  return lanes[0];
}

// Sum of n values in Acc, in an order fixed by n alone (the same in every clone: no FMA
// can contract a plain sum).
template <class T, class Acc = acc_t<T>>
GFN_ALWAYS_INLINE Acc sum_steps_inline(const T* x, int64_t n) {
  Acc lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) lanes[j] += static_cast<Acc>(x[i + j]);
  }
  Acc tail = 0;
  for (; i < n; ++i) tail += static_cast<Acc>(x[i]);
  return combine_lanes(lanes) + tail;
}

// The float sum and fill, compiled once per target (vec_math.cpp).
float sum_steps_f32(const float* x, int64_t n);
void fill_steps_f32(float* out, int64_t n, float value);

// out[0 .. n) = value.
template <class T>
inline void fill_steps(T* out, int64_t n, T value) {
  if constexpr (std::is_same<T, float>::value) {
    fill_steps_f32(out, n, value);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = value;
  }
}

template <class T>
inline acc_t<T> sum_steps(const T* x, int64_t n) {
  if constexpr (std::is_same<T, float>::value) {
    return sum_steps_f32(x, n);
  } else {
    return sum_steps_inline(x, n);
  }
}

}  // namespace cpu
}  // namespace gfn_fast
