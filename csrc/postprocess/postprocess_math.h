// The arithmetic contracts of snlt_fast/ops/postprocess.py (the anchor form, in double) and
// snlt_fast/ops/postprocess_points.py (the point form, in the heads' T), one formula per
// function, shared by the CPU and CUDA kernels so that all round every step the same way.
// `Math` supplies exp, one_plus_exp (1 + exp(x), exp rounded first) and log_positive
// (the anchor form: CUDA's on the device, PolynomialMath's vectorizable ones on the CPU; the
// point form: its contract's own everywhere, points_math.h).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "anchor_targets/anchor_targets_math.h"

#ifdef __CUDACC__
#define SNLT_HD __host__ __device__ __forceinline__
#else
// Always inlined: the CPU loops are compiled per instruction set (target_clones), and GCC
// does not inline helpers across a differing -march unless told to; a call left in a
// loop over cells keeps it from vectorizing.
#define SNLT_HD [[gnu::always_inline]] inline

// Each hot CPU loop is compiled for x86-64-v4 (AVX-512), x86-64-v3 (AVX2 and FMA) and baseline
// x86-64 and picked at load time. The anchor form's polynomials use std::fma, exactly rounded
// on every target: one instruction on v3 and v4, glibc's exact fma on baseline (slower, same
// bits). A test builds the kernels for one instruction set by defining SNLT_VECTOR_TARGETS empty.
#ifndef SNLT_VECTOR_TARGETS
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SNLT_VECTOR_TARGETS __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define SNLT_VECTOR_TARGETS
#endif
#endif
#endif

namespace snlt_fast::postprocess {

// Running partial sums of a head's entropy; lane l adds the cells n with n % kEntropyLanes == l.
constexpr int kEntropyLanes = 256;

// The formulas compute in T: double in the anchor form, the heads' float or double in the
// point form. Their arguments are In<T>, converted to T rather than deciding it, and T
// defaults to double, so that the anchor form's float heads are widened as its contract says.
template <typename T>
using In = std::type_identity_t<T>;

template <typename T = double>
struct BasicBox {
  T cx, cy, w, h;
};
using Box = BasicBox<double>;

// The float64 bit casts (host and device).
using anchor_targets::bits_of;
using anchor_targets::from_bits;

// a * b + c for the polynomials: rounded once (std::fma, exactly rounded on every target),
// or twice, a product and then a sum (the point form's contract has no fused multiply-add).
struct FusedMulAdd {
  SNLT_HD static double apply(double a, double b, double c) { return std::fma(a, b, c); }
};
struct RoundedMulAdd {
  SNLT_HD static double apply(double a, double b, double c) { return a * b + c; }
};

// c[0] x^(N-1) + ... + c[N-1], one MulAdd per step.
template <class MulAdd, int N>
SNLT_HD double horner(const double (&c)[N], double x) {
  double sum = c[0];
#ifdef __CUDACC__
#pragma unroll
#else
#pragma GCC unroll 16
#endif
  for (int k = 1; k < N; ++k) sum = MulAdd::apply(sum, x, c[k]);
  return sum;
}

// exp and log_positive in plain arithmetic, so that loops over cells vectorize (libm's are
// scalar calls), accurate to about one ulp as libm's, torch's and CUDA's are. With FusedMulAdd
// they are the anchor form's CPU functions, whose float32 outputs do not see an ulp's difference
// from the other backends' libraries (ops/postprocess.py); with RoundedMulAdd, exp is the point
// form's exp64 (ops/postprocess_points.py), the same bits on every backend.
template <class MulAdd>
struct PolynomialMath {
  // ln 2 split so that n * kLn2High is exact for the |n| <= 1076 used here.
  static constexpr double kLn2High = 6.93147180369123816490e-01;
  static constexpr double kLn2Low = 1.90821492927058770002e-10;

  static constexpr double kLog2e = 1.4426950408889634;
  static constexpr double kRoundToInteger = 6755399441055744.0;  // 1.5 * 2^52

  // Near-minimax polynomials (Chebyshev fits, mpmath.chebyfit at 60 digits), as functions so that
  // device code may read them: (exp(r) - 1 - r) / r^2 on |r| <= ln(2)/2, error 1.4e-18;
  SNLT_HD static double exp_tail(double r) {
    constexpr double c[] = {2.0914679376583935e-09, 2.510520637395701e-08,  2.7557273661348637e-07,
                            2.7557255425746435e-06, 2.4801587325533363e-05, 0.00019841269874800493,
                            0.0013888888888883752,  0.008333333333326141,   0.04166666666666667,
                            0.1666666666666667,     0.5};
    return horner<MulAdd>(c, r);
  }
  // (2 atanh(s)/s - 2) / s^2 in z = s^2 on [0, (3 - 2 sqrt(2))^2], error 2.1e-18.
  SNLT_HD static double log_tail(double z) {
    constexpr double c[] = {0.13086626147840102, 0.13268773138656886, 0.15386239702814658, 0.18181795640132906,
                            0.22222222391713917, 0.28571428570803614, 0.4000000000000088,  0.6666666666666666};
    return horner<MulAdd>(c, z);
  }

  // x clamped to [low, high]; NaN passes both tests unchanged. Both tests read the
  // unclamped x: GCC merges a test of the first select's result into a mask sequence of
  // seven instructions where these take four.
  SNLT_HD static double clamp(double x, double low, double high) {
    const bool below = x < low, above = x > high;
    x = below ? low : x;
    return above ? high : x;
  }

  // exp(r) for x = n ln2 + r, n = round(x / ln2), |r| <= ln(2)/2 (and a hair). `shifted` is
  // x / ln2 + round_constant rounded to an integer (round_constant is 1.5 * 2^52 plus a
  // small integer), so its low bits hold n plus that integer.
  SNLT_HD static double exp_of_remainder(double x, double round_constant, double& shifted) {
    shifted = MulAdd::apply(x, kLog2e, round_constant);
    const double n = shifted - round_constant;
    const double r = MulAdd::apply(-n, kLn2Low, MulAdd::apply(-n, kLn2High, x));  // n * kLn2High is exact
    return 1.0 + MulAdd::apply(r * r, exp_tail(r), r);
  }

  SNLT_HD static double exp(double x) {
    x = clamp(x, -746.0, 710.0);  // past these bounds the result is 0 or inf anyway
    double shifted;
    const double exp_r = exp_of_remainder(x, kRoundToInteger, shifted);
    const int64_t exponent = static_cast<int64_t>(bits_of(shifted) - bits_of(kRoundToInteger));
    // 2^exponent in two factors, each a normal double, so that results rounding to
    // subnormals (or overflowing) round once, in the last product.
    const int64_t half = static_cast<int64_t>(static_cast<uint64_t>(exponent + 2048) >> 1) - 1024;  // floor(exponent / 2)
    const double scale_a = from_bits(static_cast<uint64_t>(half + 1023) << 52);
    const double scale_b = from_bits(static_cast<uint64_t>(exponent - half + 1023) << 52);
    return exp_r * scale_a * scale_b;
  }

  // 1 + exp(x), exp rounded first as in the contracts, for less work than exp: the sum is 1
  // below x = -64 and inf above 710, so x is clamped to [-64, 710], and
  // 2^n is 2 * 2^(n - 1) with 2^(n - 1) a normal double built from the low bits of shifted.
  // (Both scalings are exact wherever the result is finite, so this is 1.0 + exp(x) to the bit.)
  SNLT_HD static double one_plus_exp(double x) {
    x = clamp(x, -64.0, 710.0);
    double shifted;
    const double exp_r = exp_of_remainder(x, kRoundToInteger + 1022.0, shifted);
    return 1.0 + exp_r * 2.0 * from_bits(bits_of(shifted) << 52);
  }

  // ln(x) for positive finite x (normal or subnormal) only: special values would cost
  // 7% of the heads pass in selects, and entropy_term never needs them.
  SNLT_HD static double log_positive(double x) {
    constexpr double kSqrt2 = 1.4142135623730951;
    constexpr double kSmallestNormal = 2.2250738585072014e-308;
    const bool subnormal = x < kSmallestNormal;
    const double normal = subnormal ? x * 18014398509481984.0 : x;  // * 2^54
    const uint64_t bits = bits_of(normal);
    // normal = m * 2^e with m in [1, 2), then moved to [sqrt(1/2), sqrt(2)).
    double m = from_bits((bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL);
    // The biased exponent field as a double through the 2^52 trick (no int64 -> double
    // conversion, which baseline AVX-512 cannot vectorize).
    constexpr double kTwoTo52 = 4503599627370496.0;
    const double biased = from_bits((bits >> 52) | bits_of(kTwoTo52)) - kTwoTo52;
    double e = biased - (subnormal ? 1023.0 + 54.0 : 1023.0);
    const bool high = m > kSqrt2;
    m = high ? m * 0.5 : m;
    e = high ? e + 1.0 : e;
    // log(1 + f) = f - (f^2/2 - s (f^2/2 + R)), s = f / (2 + f), R = 2 atanh(s)/s - 2
    // (log_tail, in s^2 <= 0.0295).
    const double f = m - 1.0;
    const double s = f / (2.0 + f);
    const double z = s * s;
    const double r = z * log_tail(z);
    const double half_square = 0.5 * f * f;
    return e * kLn2High - ((half_square - MulAdd::apply(s, half_square + r, e * kLn2Low)) - f);
  }
};

template <class Math, typename T = double>
SNLT_HD T foreground_probability(In<T> background, In<T> foreground) {
  return T(1) / Math::one_plus_exp(background - foreground);
}

// p * ln(p), with 0 * ln(0) = 0; NaN stays NaN. Math::log_positive need only handle
// positive finite p: the product turns whatever it returns for a NaN p into NaN.
template <class Math, typename T = double>
SNLT_HD T entropy_term(In<T> p) {
  return p == T(0) ? T(0) : p * Math::log_positive(p);
}

// lanes[0] after adding lanes l and l + w for w = kEntropyLanes / 2, ..., 1 (destroys lanes).
template <typename T>
SNLT_HD T lane_tree_sum(T* lanes) {
  for (int width = kEntropyLanes / 2; width > 0; width /= 2) {
    for (int lane = 0; lane < width; ++lane) lanes[lane] = lanes[lane] + lanes[lane + width];
  }
  return lanes[0];
}

// (w_vis, w_nl) = softmax(alpha * H_nl, alpha * H_vis).
template <class Math, typename T = double>
SNLT_HD void modality_weights(In<T> alpha, In<T> h_vis, In<T> h_nl, T* w_vis, T* w_nl) {
  const T gap = alpha * h_vis - alpha * h_nl;
  *w_vis = T(1) / Math::one_plus_exp(gap);
  *w_nl = T(1) / Math::one_plus_exp(-gap);
}

template <class Math>
SNLT_HD Box decode(double dx, double dy, double dw, double dh, double xa, double ya, double wa, double ha) {
  return {dx * wa + xa, dy * ha + ya, Math::exp(dw) * wa, Math::exp(dh) * ha};
}

template <typename T = double>
SNLT_HD BasicBox<T> fuse(In<T> w_vis, const BasicBox<T>& vis, In<T> w_nl, const BasicBox<T>& nl) {
  return {w_vis * vis.cx + w_nl * nl.cx, w_vis * vis.cy + w_nl * nl.cy, w_vis * vis.w + w_nl * nl.w,
          w_vis * vis.h + w_nl * nl.h};
}

// max(r, 1/r), NaN for NaN.
template <typename T = double>
SNLT_HD T change(In<T> ratio) {
  const T inverse = T(1) / ratio;
  return ratio > inverse ? ratio : inverse;
}

template <typename T = double>
SNLT_HD bool is_valid_size(In<T> size) {
  return size > T(0) && size < T(INFINITY);
}

// A target size as the contracts read it: NaN unless positive and finite.
template <typename T = double>
SNLT_HD T valid_size(In<T> size) {
  return is_valid_size<T>(size) ? size : static_cast<T>(NAN);
}

// Correctly rounded on every backend (IEEE 754's square root).
SNLT_HD float square_root(float x) { return sqrtf(x); }
SNLT_HD double square_root(double x) { return sqrt(x); }

template <typename T = double>
SNLT_HD T size_with_context(In<T> w, In<T> h) {
  const T pad = (w + h) * T(0.5);
  return square_root((w + pad) * (h + pad));
}

// A target's current size (tw, th) as the penalty reads it: size_with_context(tw, th) and
// tw / th, each size first made NaN unless valid.
template <typename T = double>
struct BasicTargetShape {
  T context_size, ratio;
};
using TargetShape = BasicTargetShape<double>;

template <typename T = double>
SNLT_HD BasicTargetShape<T> target_shape(const In<T>* size) {
  const T w = valid_size<T>(size[0]), h = valid_size<T>(size[1]);
  return {size_with_context<T>(w, h), w / h};
}

// SiamRPN++'s scale and aspect-ratio penalty of a box against the target's shape.
template <class Math, typename T = double>
SNLT_HD T size_penalty(In<T> w, In<T> h, const BasicTargetShape<T>& target, In<T> penalty_k) {
  const T scale_change = change<T>(size_with_context<T>(w, h) / target.context_size);
  const T ratio_change = change<T>(target.ratio / (w / h));
  return Math::exp((T(1) - ratio_change * scale_change) * penalty_k);
}

template <typename T = double>
SNLT_HD T windowed_score(In<T> penalty, In<T> score, In<T> window, In<T> window_influence) {
  return penalty * score * (T(1) - window_influence) + window * window_influence;
}

// The argmax rule over the pscores (float32 in the anchor form, T in the point form): a NaN
// beats any number, then the larger value, then the lower index. A strict total order, so
// any reduction order finds one answer.
template <typename V = float>
SNLT_HD bool ranks_before(In<V> value, int64_t index, In<V> other_value, int64_t other_index) {
  const bool is_nan = value != value, other_is_nan = other_value != other_value;
  if (is_nan || other_is_nan) return is_nan && (!other_is_nan || index < other_index);
  return value > other_value || (value == other_value && index < other_index);
}

}  // namespace snlt_fast::postprocess
