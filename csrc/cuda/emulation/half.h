// __half and __nv_bfloat16 for the emulated CUDA kernels: 16-bit storage types and the
// conversions the kernels use, rounding exactly as the CUDA intrinsics do (round to nearest
// even; any NaN becomes the canonical NaN 0x7fff, as cvt.rn.f16.f32 / cvt.rn.bf16.f32 give).
#pragma once

#include <cstdint>
#include <cstring>

struct __half {
  uint16_t __x;
};

struct __nv_bfloat16 {
  uint16_t __x;
};

namespace gfn_fast {
namespace emu {

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

// Rounds `value >> shift` to nearest, ties to even, given the bits shifted out.
inline uint32_t round_shift(uint32_t value, int shift) {
  if (shift <= 0) return value;
  if (shift >= 32) return 0;
  const uint32_t kept = value >> shift;
  const uint32_t rest = value & ((1u << shift) - 1u);
  const uint32_t half = 1u << (shift - 1);
  return kept + ((rest > half || (rest == half && (kept & 1u))) ? 1u : 0u);
}

inline uint16_t float_to_half_bits(float f) {
  const uint32_t u = float_bits(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t magnitude = u & 0x7fffffffu;
  if (magnitude > 0x7f800000u) return 0x7fffu;           // NaN
  if (magnitude == 0x7f800000u) return sign | 0x7c00u;   // infinity
  const int exponent = static_cast<int>(magnitude >> 23) - 127;
  const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
  if (exponent >= -14) {
    // Normal half: 10 mantissa bits; rounding may carry into the exponent, up to infinity.
    const uint32_t biased = static_cast<uint32_t>(exponent + 15);
    const uint32_t rounded = round_shift((biased << 23) | (magnitude & 0x7fffffu), 13);
    return static_cast<uint16_t>(sign | (rounded > 0x7c00u ? 0x7c00u : rounded));
  }
  // Subnormal half: k * 2^-24 with k = mantissa * 2^(exponent + 1), rounded. Zero and
  // float32 subnormals lie far below 2^-25 and round to zero.
  if ((magnitude >> 23) == 0) return static_cast<uint16_t>(sign);
  return static_cast<uint16_t>(sign | round_shift(mantissa, -exponent - 1));
}

inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  const uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1fu) return bits_float(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0) return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
  // Zero or subnormal: mantissa * 2^-24, exact in float32.
  const float value = static_cast<float>(mantissa) * 5.9604644775390625e-08f;
  return sign ? -value : value;
}

inline uint16_t float_to_bfloat16_bits(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fffu;  // NaN
  return static_cast<uint16_t>(round_shift(u, 16));
}

}  // namespace emu
}  // namespace gfn_fast

inline float __half2float(__half h) { return ::gfn_fast::emu::half_bits_to_float(h.__x); }
inline __half __float2half_rn(float f) { return __half{::gfn_fast::emu::float_to_half_bits(f)}; }
inline float __bfloat162float(__nv_bfloat16 b) {
  return ::gfn_fast::emu::bits_float(static_cast<uint32_t>(b.__x) << 16);
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
  return __nv_bfloat16{::gfn_fast::emu::float_to_bfloat16_bits(f)};
}
