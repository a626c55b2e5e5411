// The post-processing ops on CPU or CUDA tensors (cls_vis's device picks the kernels), as
// module.cpp binds them for eager calls: the dispatcher's Python entry costs ~0.4 us per
// returned tensor (7.4 us against 4.9 us for a call on a one-cell map). They run the kernels that
// are registered as snlt_fast_C::postprocess_aggregate and snlt_fast_C::postprocess_track,
// and profilers see them under those names. As the public API, the direct track_postprocess
// refuses invalid target sizes on the host (the registered op turns them into NaN scores).
#pragma once

#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace snlt_fast::postprocess {

// Aggregation's fields in ops/postprocess.py: score, box, w_vis, w_nl, h_vis, h_nl.
using AggregateTensors = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
// TrackResult's fields: index, box, score, pscore, lr, w_vis, w_nl, h_vis, h_nl.
using TrackTensors = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                                at::Tensor, at::Tensor>;

AggregateTensors dynamic_aggregate(const at::Tensor& cls_vis, const std::optional<at::Tensor>& cls_nl,
                                   const at::Tensor& loc_vis, const std::optional<at::Tensor>& loc_nl,
                                   const at::Tensor& anchors, double alpha);

TrackTensors track_postprocess(const at::Tensor& cls_vis, const std::optional<at::Tensor>& cls_nl,
                               const at::Tensor& loc_vis, const std::optional<at::Tensor>& loc_nl,
                               const at::Tensor& anchors, const at::Tensor& window, const at::Tensor& target_size,
                               double alpha, double penalty_k, double window_influence, double lr,
                               bool lr_from_pscore);

}  // namespace snlt_fast::postprocess
