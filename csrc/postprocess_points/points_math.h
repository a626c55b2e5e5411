// The point form's own formulas (snlt_fast/ops/postprocess_points.py); the rest of its contract
// is postprocess_math.h's, in T. Shared by the CPU and CUDA kernels.
#pragma once

#include "anchor_targets/anchor_targets_math.h"
#include "postprocess/postprocess_math.h"

namespace snlt_fast::postprocess {

// The contract's exp and log in T: exp64 (PolynomialMath without fused multiply-adds) and
// anchor_targets' log_float64, each rounded once to T, so that every backend computes the same bits.
template <typename T>
struct ExactMath {
  SNLT_HD static T exp(T x) { return static_cast<T>(PolynomialMath<RoundedMulAdd>::exp(x)); }
  SNLT_HD static T one_plus_exp(T x) { return T(1) + exp(x); }
  SNLT_HD static T log_positive(T x) { return static_cast<T>(anchor_targets::log_float64(x)); }
};

// A head's box at point (px, py) from the distances (l, t, r, b) to its edges, its centre
// moved by -center (to the crop centre).
template <typename T>
SNLT_HD BasicBox<T> decode_point(In<T> left, In<T> top, In<T> right, In<T> bottom, In<T> px, In<T> py,
                                 In<T> center) {
  const T x1 = px - left, y1 = py - top, x2 = px + right, y2 = py + bottom;
  return {(x1 + x2) * T(0.5) - center, (y1 + y2) * T(0.5) - center, x2 - x1, y2 - y1};
}

// One target's boxes: its heads' distances [4, cells] at the points [2, cells], fused.
template <typename T>
struct PointBoxes {
  const T* loc_vis;
  const T* loc_nl;  // nullptr: the visual head only
  const T* points;
  int64_t cells;
  T center;

  SNLT_HD BasicBox<T> head(const T* loc, int64_t n) const {
    return decode_point<T>(loc[n], loc[cells + n], loc[2 * cells + n], loc[3 * cells + n], points[n],
                           points[cells + n], center);
  }

  template <bool kNl>
  SNLT_HD BasicBox<T> fused(In<T> w_vis, In<T> w_nl, int64_t n) const {
    if constexpr (kNl) return fuse<T>(w_vis, head(loc_vis, n), w_nl, head(loc_nl, n));
    return head(loc_vis, n);
  }
};

}  // namespace snlt_fast::postprocess
