// track_postprocess_points on CPU or CUDA tensors (cls_vis's device picks the kernel), as
// module.cpp binds it for eager calls, for the reason postprocess_ops.h gives. It runs the
// kernels registered as snlt_fast_C::postprocess_track_points, and profilers see it under that
// name; as the public API, it refuses invalid target sizes on the host.
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>

#include "postprocess/postprocess_ops.h"

namespace snlt_fast::postprocess {

// PointTrackResult's fields (TrackResult's), floats in the heads' dtype.
TrackTensors track_postprocess_points(const at::Tensor& cls_vis, const std::optional<at::Tensor>& cls_nl,
                                      const at::Tensor& loc_vis, const std::optional<at::Tensor>& loc_nl,
                                      const at::Tensor& points, const at::Tensor& window,
                                      const at::Tensor& target_size, double alpha, double penalty_k,
                                      double window_influence, double lr, double center, bool lr_from_pscore);

}  // namespace snlt_fast::postprocess
