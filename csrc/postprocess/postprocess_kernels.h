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

// A target's stats row of dynamic_aggregate, (w_vis, w_nl, h_vis, h_nl), each rounded once;
// `target` is the CPU or the CUDA kernels' per-target view.
template <class Target>
SNLT_HD void store_stats(const Target& target, float* stats) {
  stats[0] = static_cast<float>(target.w_vis);
  stats[1] = static_cast<float>(target.w_nl);
  stats[2] = static_cast<float>(target.h_vis);
  stats[3] = static_cast<float>(target.h_nl);
}

// A target's row of the track op (TrackField order) for its best cell: the cell's fused
// box and score, the box's size penalty and the cell's window value.
template <class Target>
SNLT_HD void store_track_row(const Target& target, const Box& box, double score, double penalty, double window,
                             const TrackParams& params, float* row) {
  const double pscore = windowed_score(penalty, score, window, params.window_influence);
  const double result[kTrackFields] = {box.cx, box.cy, box.w, box.h, score, pscore,
                                       params.lr_from_pscore ? pscore * params.lr : penalty * score * params.lr,
                                       target.w_vis, target.w_nl, target.h_vis, target.h_nl};
  for (int field = 0; field < kTrackFields; ++field) row[field] = static_cast<float>(result[field]);
}

// score [B, A, H, W], box [B, 4, A, H, W], stats [B, 4] = (w_vis, w_nl, h_vis, h_nl).
struct AggregateOutputs {
  float* score;
  float* box;
  float* stats;
};

template <typename T>
void aggregate_cpu(Heads<T> heads, const double* anchors, Geometry geometry, double alpha, AggregateOutputs out);

// index [B], values [B, kTrackFields].
template <typename T>
void track_cpu(Heads<T> heads, const double* anchors, const double* window, const double* target_size,
               Geometry geometry, TrackParams params, int64_t* index, float* values);

#ifdef SNLT_FAST_WITH_CUDA
// One block per target, one launch; the returned error is the launch's.
template <typename T>
cudaError_t aggregate_cuda(Heads<T> heads, const double* anchors, Geometry geometry, double alpha, AggregateOutputs out,
                    cudaStream_t stream);

template <typename T>
cudaError_t track_cuda(Heads<T> heads, const double* anchors, const double* window, const double* target_size,
                Geometry geometry, TrackParams params, int64_t* index, float* values, cudaStream_t stream);
#endif

}  // namespace snlt_fast::postprocess
