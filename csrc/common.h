// Shared definitions for camfast's kernels: the codes (generated from camfast/ops/codes.json),
// scalar conversions and the strided-tensor view every kernel takes. Nothing here depends
// on libtorch.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "camfast_codes.h"  // Device, DType, GwmMode, UaReduce, UaNormalize, BoxBorder, kUa*

#ifdef __CUDACC__
#define CAMFAST_HD __host__ __device__
#else
#define CAMFAST_HD
#endif

namespace camfast {

struct half_t { uint16_t bits; };
struct bf16_t { uint16_t bits; };

// ---- scalar conversions (IEEE binary16 and bfloat16, round to nearest even) ----
inline float to_float(float x) { return x; }
inline double to_float(double x) { return x; }

inline float to_float(bf16_t x) {
  uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float to_float(half_t x) {
  const uint32_t h = x.bits;
  const uint32_t sign = (h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t u;
  if (exp == 0x1fu) {                 // inf / nan
    u = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {              // normal
    u = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {             // zero
    u = sign;
  } else {                            // subnormal: renormalise
    int e = -1;
    do { mant <<= 1; ++e; } while ((mant & 0x400u) == 0);
    u = sign | ((112u - e) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

template <typename T> inline T from_float(float x);
template <typename T> inline T from_double(double x);
template <> inline float from_float<float>(float x) { return x; }
template <> inline double from_double<double>(double x) { return x; }

template <> inline bf16_t from_float<bf16_t>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16_t{static_cast<uint16_t>((u >> 16) | 0x40u)};  // quiet nan
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16_t{static_cast<uint16_t>(u >> 16)};
}

template <> inline half_t from_float<half_t>(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  u &= 0x7fffffffu;
  if (u > 0x7f800000u) return half_t{static_cast<uint16_t>(sign | 0x7e00u)};      // nan
  if (u >= 0x477ff000u) return half_t{static_cast<uint16_t>(sign | 0x7c00u)};     // overflow -> inf
  if (u < 0x38800000u) {                                                          // subnormal or zero
    if (u < 0x33000000u) return half_t{sign};                                     // rounds to zero
    const uint32_t exp = u >> 23;
    const uint32_t mant = (u & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 126u - exp;                                            // 14..24
    uint32_t r = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    if (rem > halfway || (rem == halfway && (r & 1u))) ++r;
    return half_t{static_cast<uint16_t>(sign | r)};
  }
  // normal: rebias exponent (127 -> 15) and round the mantissa to 10 bits
  uint32_t r = u - 0x38000000u;
  r += 0xfffu + ((r >> 13) & 1u);
  return half_t{static_cast<uint16_t>(sign | (r >> 13))};
}

// Accumulator type: float for 16- and 32-bit inputs, double for double.
template <typename T> struct acc_type { using type = float; };
template <> struct acc_type<double> { using type = double; };

template <typename T, typename A> inline T store_acc(A x) { return from_float<T>(static_cast<float>(x)); }
template <> inline double store_acc<double, double>(double x) { return x; }
template <> inline float store_acc<float, float>(float x) { return x; }

// A [B, C, H, W] view with element strides (any layout, including channels-last and
// non-contiguous views). Offsets are computed in int64.
struct View4 {
  int64_t sb, sc, sh, sw;
  CAMFAST_HD inline int64_t at(int64_t b, int64_t c, int64_t h, int64_t w) const {
    return b * sb + c * sc + h * sh + w * sw;
  }
};

inline void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument(msg);
}

}  // namespace camfast
