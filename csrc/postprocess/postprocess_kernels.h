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
