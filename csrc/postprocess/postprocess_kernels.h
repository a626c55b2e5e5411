// Raw-pointer entry points of the post-processing kernels (no torch types, so that
// the CPU and CUDA kernel files compile without torch headers). All pointers are
// contiguous: heads [B, 2A, H, W] / [B, 4A, H, W] of T (float or double), anchors
// [4, A, H, W], window [A, H, W] and target_size [B, 2] of double.
#pragma once

#include <cstdint>

#include "postprocess/postprocess_math.h"

#ifdef SNLT_FAST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace snlt_fast::postprocess {

template <typename T>
struct Heads {
  const T* cls_vis;
  const T* cls_nl;  // nullptr (with loc_nl): the visual head only
  const T* loc_vis;
  const T* loc_nl;
};

struct Geometry {
  int64_t batch, anchor_num, height, width;
  SNLT_HD int64_t cells() const { return anchor_num * height * width; }
};

struct TrackParams {
  double alpha, penalty_k, window_influence, lr;
  bool lr_from_pscore;
};

// The per-target float32 statistics that both ops return, each its own [B] tensor.
enum TargetStat { kWVis, kWNl, kHVis, kHNl, kTargetStats };

// track_postprocess's other per-target float32 values, each its own [B] tensor (TrackResult's
// fields in ops/postprocess.py are index, box, these, then the statistics).
enum TrackValue { kScore, kPscore, kLr, kTrackValues };

// score [B, A, H, W], box [B, 4, A, H, W], stats[kTargetStats] [B].
struct AggregateOutputs {
  float* score;
  float* box;
  float* stats[kTargetStats];
};

// index [B], box [B, 4] (cx, cy, w, h), values[kTrackValues] [B], stats[kTargetStats] [B], in O:
// float in the anchor form, the heads' T in the point form (ops/postprocess_points.py).
template <typename O>
struct BasicTrackOutputs {
  int64_t* index;
  O* box;
  O* values[kTrackValues];
  O* stats[kTargetStats];
};
using TrackOutputs = BasicTrackOutputs<float>;

// Target b's statistics into stats[k][b], each rounded once to O; `target` is a CPU or CUDA
// kernel's per-target view.
template <class Target, typename O>
SNLT_HD void store_stats(const Target& target, O* const (&stats)[kTargetStats], int64_t b) {
  const decltype(target.w_vis) values[kTargetStats] = {target.w_vis, target.w_nl, target.h_vis, target.h_nl};
  for (int stat = 0; stat < kTargetStats; ++stat) stats[stat][b] = static_cast<O>(values[stat]);
}

// Target b's result for its best cell: the cell's fused box and score, the box's size
// penalty and the cell's window value, all in T; each value rounded once to O.
template <class Target, typename T, typename O>
SNLT_HD void store_track_result(const Target& target, int64_t best, const BasicBox<T>& box, In<T> score,
                                In<T> penalty, In<T> window, const TrackParams& params,
                                const BasicTrackOutputs<O>& out, int64_t b) {
  const T pscore = windowed_score<T>(penalty, score, window, static_cast<T>(params.window_influence));
  const T lr = static_cast<T>(params.lr);
  const T values[kTrackValues] = {score, pscore, params.lr_from_pscore ? pscore * lr : penalty * score * lr};
  out.index[b] = best;
  const T box_values[4] = {box.cx, box.cy, box.w, box.h};
  for (int k = 0; k < 4; ++k) out.box[4 * b + k] = static_cast<O>(box_values[k]);
  for (int value = 0; value < kTrackValues; ++value) out.values[value][b] = static_cast<O>(values[value]);
  store_stats(target, out.stats, b);
}

template <typename T>
void aggregate_cpu(Heads<T> heads, const double* anchors, Geometry geometry, double alpha, AggregateOutputs out);

template <typename T>
void track_cpu(Heads<T> heads, const double* anchors, const double* window, const double* target_size,
               Geometry geometry, TrackParams params, TrackOutputs out);

#ifdef SNLT_FAST_WITH_CUDA
// One block per target, one launch; the returned error is the launch's.
template <typename T>
cudaError_t aggregate_cuda(Heads<T> heads, const double* anchors, Geometry geometry, double alpha, AggregateOutputs out,
                    cudaStream_t stream);

template <typename T>
cudaError_t track_cuda(Heads<T> heads, const double* anchors, const double* window, const double* target_size,
                Geometry geometry, TrackParams params, TrackOutputs out, cudaStream_t stream);
#endif

}  // namespace snlt_fast::postprocess
