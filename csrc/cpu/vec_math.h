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

// exp(x) for float in straight-line code (Cephes expf: relative error ~1e-7, 0 below
// -87.3, saturating at exp(88)); vectorises inside loops.
inline float fast_exp(float x) {
  const float lo = -87.3f;
  const float clamped = x < lo ? lo : (x > 88.0f ? 88.0f : x);
  const float t = clamped * 1.44269504088896341f;
  const float fn = (t + 12582912.0f) - 12582912.0f;  // round to nearest (1.5 * 2^23 trick)
  const int n = static_cast<int>(fn);
  float r = clamped - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const int bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return x < lo ? 0.0f : y * scale;
}

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
