// The arithmetic contract of snlt_fast/ops/anchor_targets.py, one formula per function,
// shared by the CPU and CUDA kernels so that both round every step as the reference does.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define ANCHOR_TARGETS_HD __host__ __device__ __forceinline__
#else
// Always inlined: the CPU's vectorized passes are compiled per instruction set, and GCC
// does not inline across a differing target unless told to (a call keeps a loop scalar).
#define ANCHOR_TARGETS_HD [[gnu::always_inline]] inline
#endif

namespace snlt_fast::anchor_targets {

// Ranks are key * 2^31 + n: a sample's cells n must fit in 31 bits.
constexpr int64_t kMaxCells = int64_t{1} << 31;
// A negative pair's candidates: the cells within this distance of the box centre's cell.
constexpr int64_t kReach = 3;

struct Box {
  double cx, cy, w, h;
};

ANCHOR_TARGETS_HD uint64_t bits_of(double x) {
#ifdef __CUDA_ARCH__
  return static_cast<uint64_t>(__double_as_longlong(x));
#else
  uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
#endif
}

ANCHOR_TARGETS_HD double from_bits(uint64_t bits) {
#ifdef __CUDA_ARCH__
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
#endif
}

// log_float64 of the reference: fdlibm's reduction and a degree-6 polynomial in plain
// float64 arithmetic (the build turns fused multiply-adds off), so every backend agrees.
// Branch-free, so that loops over cells vectorize (the point post-processing's entropy).
ANCHOR_TARGETS_HD double log_float64(double x) {
  constexpr double kTail[] = {0.14616449685043406, 0.15331721600556042, 0.18182889125261723, 0.2222221113479508,
                              0.28571428625975487, 0.39999999999899505, 0.666666666666667};
  constexpr double kLn2High = 6.93147180369123816490e-01;
  constexpr double kLn2Low = 1.90821492927058770002e-10;
  const bool subnormal = x < 2.2250738585072014e-308;
  const uint64_t bits = bits_of(subnormal ? x * 18014398509481984.0 : x);  // * 2^54
  double mantissa = from_bits((bits & 0x000FFFFFFFFFFFFFULL) | 0x3FF0000000000000ULL);
  // The exponent field as a double through the 2^52 trick: exact, and no int64 -> double
  // conversion, which AVX2 cannot vectorize.
  constexpr double kTwoTo52 = 4503599627370496.0;
  const double biased = from_bits((bits >> 52) | bits_of(kTwoTo52)) - kTwoTo52;
  double exponent = biased - (subnormal ? 1023.0 + 54.0 : 1023.0);
  const bool high = mantissa > 1.4142135623730951;
  mantissa = high ? mantissa * 0.5 : mantissa;
  exponent = high ? exponent + 1.0 : exponent;
  const double f = mantissa - 1.0;
  const double s = f / (2.0 + f);
  const double z = s * s;
  double tail = kTail[0];
  for (int k = 1; k < 7; ++k) tail = tail * z + kTail[k];
  const double r = z * tail;
  const double half_square = 0.5 * f * f;
  const double core = exponent * kLn2High - ((half_square - (s * (half_square + r) + exponent * kLn2Low)) - f);
  const double special = x == 0.0 ? -INFINITY : (x == INFINITY ? INFINITY : NAN);
  return x > 0.0 && x < INFINITY ? core : special;
}

// murmur3's 32-bit finalizer.
ANCHOR_TARGETS_HD uint32_t fmix32(uint32_t h) {
  h ^= h >> 16;
  h *= 0x85EBCA6BU;
  h ^= h >> 13;
  h *= 0xC2B2AE35U;
  return h ^ (h >> 16);
}

// key * 2^31 + n, key = fmix32(fmix32(n ^ s0) ^ s1): distinct per cell; the smallest are kept.
ANCHOR_TARGETS_HD int64_t selection_rank(uint32_t seed0, uint32_t seed1, int64_t n) {
  const uint32_t key = fmix32(fmix32(static_cast<uint32_t>(n) ^ seed0) ^ seed1);
  return static_cast<int64_t>(static_cast<uint64_t>(key) << 31) + n;
}

ANCHOR_TARGETS_HD double smaller(double a, double b) { return b < a ? b : a; }
ANCHOR_TARGETS_HD double larger(double a, double b) { return b > a ? b : a; }

// One axis of the intersection of two centred intervals, clamped at 0.
ANCHOR_TARGETS_HD double overlap(double anchor_center, double anchor_size, double box_center, double box_size) {
  const double high = smaller(anchor_center + anchor_size / 2, box_center + box_size / 2);
  const double low = larger(anchor_center - anchor_size / 2, box_center - box_size / 2);
  return larger(high - low, 0.0);
}

ANCHOR_TARGETS_HD double iou(const Box& anchor, const Box& box) {
  const double inter = overlap(anchor.cx, anchor.w, box.cx, box.w) * overlap(anchor.cy, anchor.h, box.cy, box.h);
  return inter / ((anchor.w * anchor.h + box.w * box.h) - inter);
}

// x - x is 0 for finite x, NaN for inf and NaN.
ANCHOR_TARGETS_HD bool is_finite(double x) { return x - x == 0.0; }

ANCHOR_TARGETS_HD bool is_valid(const Box& box) {
  return is_finite(box.cx) && is_finite(box.cy) && is_finite(box.w) && is_finite(box.h) && box.w > 0.0 && box.h > 0.0;
}

// A negative pair's box-centre cell along one axis, clamped to [-kReach - 1, size + kReach]
// (NaN to the low end), which keeps the window's cells on the map unchanged.
ANCHOR_TARGETS_HD int64_t box_cell(double center, double stride, int64_t size) {
  double cell = static_cast<double>(size / 2) + ::ceil(center / stride + 0.5);
  cell = cell >= -kReach - 1.0 ? cell : -kReach - 1.0;
  cell = cell <= static_cast<double>(size + kReach) ? cell : static_cast<double>(size + kReach);
  return static_cast<int64_t>(cell);
}

}  // namespace snlt_fast::anchor_targets
