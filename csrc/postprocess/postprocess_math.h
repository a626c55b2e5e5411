// The arithmetic contract of snlt_fast/ops/postprocess.py, one formula per function,
// shared by the CPU and CUDA kernels so that both round every step the same way.
// `Math` supplies exp, one_plus_exp (1 + exp(x), exp rounded first) and log_positive (CUDA's
// on the device; vectorizable ones on the CPU).
#pragma once

#include <cmath>
#include <cstdint>

#ifdef __CUDACC__
#define SNLT_HD __host__ __device__ __forceinline__
#else
// Always inlined: the CPU loops are compiled per instruction set (target_clones), and GCC
// does not inline helpers across a differing -march unless told to; a call left in a
// loop over cells keeps it from vectorizing.
#define SNLT_HD [[gnu::always_inline]] inline
#endif

namespace snlt_fast::postprocess {

// Running partial sums of a head's entropy; lane l adds the cells n with n % kEntropyLanes == l.
constexpr int kEntropyLanes = 256;

struct Box {
  double cx, cy, w, h;
};

template <class Math>
SNLT_HD double foreground_probability(double background, double foreground) {
  return 1.0 / Math::one_plus_exp(background - foreground);
}

// p * ln(p), with 0 * ln(0) = 0; NaN stays NaN. Math::log_positive need only handle
// positive finite p: the product turns whatever it returns for a NaN p into NaN.
template <class Math>
SNLT_HD double entropy_term(double p) {
  return p == 0.0 ? 0.0 : p * Math::log_positive(p);
}

// lanes[0] after adding lanes l and l + w for w = kEntropyLanes / 2, ..., 1 (destroys lanes).
SNLT_HD double lane_tree_sum(double* lanes) {
  for (int width = kEntropyLanes / 2; width > 0; width /= 2) {
    for (int lane = 0; lane < width; ++lane) lanes[lane] = lanes[lane] + lanes[lane + width];
  }
  return lanes[0];
}

// (w_vis, w_nl) = softmax(alpha * H_nl, alpha * H_vis).
template <class Math>
SNLT_HD void modality_weights(double alpha, double h_vis, double h_nl, double* w_vis, double* w_nl) {
  const double gap = alpha * h_vis - alpha * h_nl;
  *w_vis = 1.0 / Math::one_plus_exp(gap);
  *w_nl = 1.0 / Math::one_plus_exp(-gap);
}

template <class Math>
SNLT_HD Box decode(double dx, double dy, double dw, double dh, double xa, double ya, double wa, double ha) {
  return {dx * wa + xa, dy * ha + ya, Math::exp(dw) * wa, Math::exp(dh) * ha};
}

SNLT_HD Box fuse(double w_vis, const Box& vis, double w_nl, const Box& nl) {
  return {w_vis * vis.cx + w_nl * nl.cx, w_vis * vis.cy + w_nl * nl.cy, w_vis * vis.w + w_nl * nl.w,
          w_vis * vis.h + w_nl * nl.h};
}

// max(r, 1/r), NaN for NaN.
SNLT_HD double change(double ratio) {
  const double inverse = 1.0 / ratio;
  return ratio > inverse ? ratio : inverse;
}

SNLT_HD bool is_valid_size(double size) { return size > 0.0 && size < INFINITY; }

// A target size as the contract reads it: NaN unless positive and finite.
SNLT_HD double valid_size(double size) { return is_valid_size(size) ? size : static_cast<double>(NAN); }

SNLT_HD double size_with_context(double w, double h) {
  const double pad = (w + h) * 0.5;
  return sqrt((w + pad) * (h + pad));
}

// A target's current size (tw, th) as the penalty reads it: size_with_context(tw, th) and
// tw / th, each size first made NaN unless valid.
struct TargetShape {
  double context_size, ratio;
};

SNLT_HD TargetShape target_shape(const double* size) {
  const double w = valid_size(size[0]), h = valid_size(size[1]);
  return {size_with_context(w, h), w / h};
}

// SiamRPN++'s scale and aspect-ratio penalty of a box against the target's shape.
template <class Math>
SNLT_HD double size_penalty(double w, double h, const TargetShape& target, double penalty_k) {
  const double scale_change = change(size_with_context(w, h) / target.context_size);
  const double ratio_change = change(target.ratio / (w / h));
  return Math::exp((1.0 - ratio_change * scale_change) * penalty_k);
}

SNLT_HD double windowed_score(double penalty, double score, double window, double window_influence) {
  return penalty * score * (1.0 - window_influence) + window * window_influence;
}

// The argmax rule over float32 pscores: a NaN beats any number, then the larger value,
// then the lower index. A strict total order, so any reduction order finds one answer.
SNLT_HD bool ranks_before(float value, int64_t index, float other_value, int64_t other_index) {
  const bool is_nan = value != value, other_is_nan = other_value != other_value;
  if (is_nan || other_is_nan) return is_nan && (!other_is_nan || index < other_index);
  return value > other_value || (value == other_value && index < other_index);
}

}  // namespace snlt_fast::postprocess
