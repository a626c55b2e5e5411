// Raw-pointer entry points of track_postprocess_points's kernels (no torch types, as
// postprocess_kernels.h). All pointers are contiguous and of the heads' T (float or double):
// heads [B, 2, H, W] / [B, 4, H, W], points [2, H, W], window [H, W], target_size [B, 2].
// Geometry's anchor_num is 1; the outputs are TrackResult's fields, in T.
#pragma once

#include "postprocess/postprocess_kernels.h"

namespace snlt_fast::postprocess {

template <typename T>
struct PointInputs {
  Heads<T> heads;
  const T* points;
  const T* window;
  const T* target_size;
};

// The numbers, as given; the kernels round them to T.
struct PointParams {
  TrackParams track;
  double center;
};

template <typename T>
void track_points_cpu(PointInputs<T> inputs, Geometry geometry, PointParams params, BasicTrackOutputs<T> out);

#ifdef SNLT_FAST_WITH_CUDA
// One block per target, one launch; the returned error is the launch's.
template <typename T>
cudaError_t track_points_cuda(PointInputs<T> inputs, Geometry geometry, PointParams params,
                              BasicTrackOutputs<T> out, cudaStream_t stream);
#endif

}  // namespace snlt_fast::postprocess
