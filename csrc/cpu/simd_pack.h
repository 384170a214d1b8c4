// Fixed-width SIMD packs for the row kernels of logprob.cpp, so that one kernel body serves
// float (8 lanes, GCC/Clang vector extensions: one AVX2 register in the x86-64-v3 clone, two
// SSE registers in the baseline) and double (1 lane, plain scalars). GCC does not vectorise
// the masked row loops by itself (the byte mask and the exp's integer part defeat it), so
// the packs spell the vectors out.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "vec_math.h"

// The packs are always inlined, so their AVX-sized values never cross a function boundary
// whose ABI the baseline clone would change.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wpsabi"

namespace gfn_fast {
namespace cpu {

struct FloatPack {
  using Scalar = float;
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t Mask __attribute__((vector_size(32)));  // lanes of -1 (true) or 0
  static constexpr int kWidth = 8;

  static GFN_ALWAYS_INLINE V splat(float x) { return V{} + x; }
  static GFN_ALWAYS_INLINE V load(const float* p) {
    V v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static GFN_ALWAYS_INLINE void store(float* p, V v) { std::memcpy(p, &v, sizeof(v)); }
  // Lanes where the byte mask at p is non-zero.
  // Compared as bytes, then sign-extended: GCC widens that with one vpmovsxbd, where it
  // widens the bytes themselves lane by lane.
  static GFN_ALWAYS_INLINE Mask keep(const uint8_t* p) {
    typedef uint8_t Bytes __attribute__((vector_size(8)));
    typedef int8_t ByteMask __attribute__((vector_size(8)));
    Bytes b;
    std::memcpy(&b, p, sizeof(b));
    return __builtin_convertvector(static_cast<ByteMask>(b != 0), Mask);
  }
  static GFN_ALWAYS_INLINE V select(Mask m, V a, V b) { return m ? a : b; }
  static GFN_ALWAYS_INLINE V max(V a, V b) { return a > b ? a : b; }
  static GFN_ALWAYS_INLINE V exp(V x) { return exp_approx<V, Mask>(x); }
  // Horizontal reductions in a fixed pairwise order.
  static GFN_ALWAYS_INLINE float hmax(V v) {
    float m = v[0];
    for (int j = 1; j < kWidth; ++j) m = v[j] > m ? v[j] : m;
    return m;
  }
  static GFN_ALWAYS_INLINE float hsum(V v) {
    for (int width = kWidth / 2; width >= 1; width /= 2) {
      for (int j = 0; j < width; ++j) v[j] += v[j + width];
    }
    return v[0];
  }
};

struct DoublePack {
  using Scalar = double;
  using V = double;
  using Mask = bool;
  static constexpr int kWidth = 1;

  static GFN_ALWAYS_INLINE V splat(double x) { return x; }
  static GFN_ALWAYS_INLINE V load(const double* p) { return *p; }
  static GFN_ALWAYS_INLINE void store(double* p, V v) { *p = v; }
  static GFN_ALWAYS_INLINE Mask keep(const uint8_t* p) { return *p != 0; }
  static GFN_ALWAYS_INLINE V select(Mask m, V a, V b) { return m ? a : b; }
  static GFN_ALWAYS_INLINE V max(V a, V b) { return a > b ? a : b; }
  static GFN_ALWAYS_INLINE V exp(V x) { return std::exp(x); }
  static GFN_ALWAYS_INLINE double hmax(V v) { return v; }
  static GFN_ALWAYS_INLINE double hsum(V v) { return v; }
};

template <class Acc>
using pack_t = std::conditional_t<std::is_same<Acc, double>::value, DoublePack, FloatPack>;

}  // namespace cpu
}  // namespace gfn_fast

#pragma GCC diagnostic pop
