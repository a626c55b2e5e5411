// torch glue of track_postprocess_points's kernels: schema, checks, outputs, CPU and CUDA
// registrations (the kernels take raw pointers; see points_kernels.h).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/record_function.h>
#include <torch/library.h>

#ifdef SNLT_FAST_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <type_traits>
#include <vector>

#include "postprocess/postprocess_checks.h"
#include "postprocess_points/points_kernels.h"
#include "postprocess_points/points_ops.h"

namespace snlt_fast::postprocess {
namespace {

// Every input in cls_vis's dtype (the kernels' T), contiguous, on its device.
Geometry check_point_inputs(const at::Tensor& cls_vis, const OptionalTensor& cls_nl, const at::Tensor& loc_vis,
                            const OptionalTensor& loc_nl, const at::Tensor& points, const at::Tensor& window,
                            const at::Tensor& target_size) {
  // A map with no cells would leave the argmax without a cell to read.
  TORCH_CHECK_VALUE(cls_vis.dim() == 4 && cls_vis.size(1) == 2 && cls_vis.size(2) >= 1 && cls_vis.size(3) >= 1,
                    "cls_vis must be [B, 2, H, W] with H, W >= 1, got shape ", cls_vis.sizes());
  const at::ScalarType dtype = cls_vis.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kFloat || dtype == at::kDouble, "cls_vis must be float32 or float64, got ", dtype);
  TORCH_CHECK_VALUE(cls_nl.has_value() == loc_nl.has_value(),
                    "cls_nl and loc_nl must both be given (SNLT) or both be None (visual head only)");
  const Geometry geometry{cls_vis.size(0), 1, cls_vis.size(2), cls_vis.size(3)};
  const std::vector<int64_t> loc_shape{geometry.batch, 4, geometry.height, geometry.width};
  check_tensor(cls_vis, cls_vis.sizes(), dtype, "cls_vis", cls_vis);
  check_tensor(loc_vis, loc_shape, dtype, "loc_vis", cls_vis);
  if (cls_nl.has_value()) {
    check_tensor(*cls_nl, cls_vis.sizes(), dtype, "cls_nl", cls_vis);
    check_tensor(*loc_nl, loc_shape, dtype, "loc_nl", cls_vis);
  }
  check_tensor(points, {2, geometry.height, geometry.width}, dtype, "points", cls_vis);
  check_tensor(window, {geometry.height, geometry.width}, dtype, "window", cls_vis);
  check_tensor(target_size, {geometry.batch, 2}, dtype, "target_size", cls_vis);
  return geometry;
}

template <bool kCuda, bool kCheckHostSizes = false>
TrackTensors track_points(const at::Tensor& cls_vis, const OptionalTensor& cls_nl, const at::Tensor& loc_vis,
                          const OptionalTensor& loc_nl, const at::Tensor& points, const at::Tensor& window,
                          const at::Tensor& target_size, double alpha, double penalty_k, double window_influence,
                          double lr, double center, bool lr_from_pscore) {
  const Geometry g = check_point_inputs(cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size);
  const PointParams params{{alpha, penalty_k, window_influence, lr, lr_from_pscore}, center};
  const auto options = cls_vis.options();
  TrackTensors outputs;
  with_heads(cls_vis, cls_nl, loc_vis, loc_nl, [&](auto heads) {
    using T = std::remove_const_t<std::remove_pointer_t<decltype(heads.cls_vis)>>;
    if constexpr (kCheckHostSizes) check_host_sizes<T>(target_size);
    at::Tensor index = at::empty({g.batch}, options.dtype(at::kLong));
    at::Tensor box = at::empty({g.batch, 4}, options);
    BasicTrackOutputs<T> out{index.data_ptr<int64_t>(), box.data_ptr<T>(), {}, {}};
    const std::vector<at::Tensor> values = per_target_outputs(kTrackValues, g.batch, options, out.values);
    const std::vector<at::Tensor> stats = per_target_outputs(kTargetStats, g.batch, options, out.stats);
    outputs = {index,        box,         values[kScore], values[kPscore], values[kLr],
               stats[kWVis], stats[kWNl], stats[kHVis],   stats[kHNl]};
    if (g.batch == 0) return;
    const PointInputs<T> inputs{heads, points.data_ptr<T>(), window.data_ptr<T>(), target_size.data_ptr<T>()};
    if constexpr (kCuda) {
#ifdef SNLT_FAST_WITH_CUDA
      TORCH_CHECK(g.batch <= kMaxCudaTargets, "at most ", kMaxCudaTargets, " targets per call on CUDA");
      const c10::cuda::CUDAGuard guard(cls_vis.device());
      const cudaError_t error = track_points_cuda(inputs, g, params, out, c10::cuda::getCurrentCUDAStream());
      TORCH_CHECK(error == cudaSuccess, "postprocess_track_points launch failed: ", cudaGetErrorString(error));
#endif
    } else {
      track_points_cpu(inputs, g, params, out);
    }
  });
  return outputs;
}

}  // namespace

TrackTensors track_postprocess_points(const at::Tensor& cls_vis, const OptionalTensor& cls_nl,
                                      const at::Tensor& loc_vis, const OptionalTensor& loc_nl,
                                      const at::Tensor& points, const at::Tensor& window,
                                      const at::Tensor& target_size, double alpha, double penalty_k,
                                      double window_influence, double lr, double center, bool lr_from_pscore) {
  RECORD_FUNCTION("snlt_fast_C::postprocess_track_points", c10::ArrayRef<const c10::IValue>{});
  const auto op = on_cuda(cls_vis) ? &track_points<true, true> : &track_points<false, true>;
  return op(cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size, alpha, penalty_k, window_influence, lr,
            center, lr_from_pscore);
}

TORCH_LIBRARY_FRAGMENT(snlt_fast_C, m) {
  m.def(
      "postprocess_track_points(Tensor cls_vis, Tensor? cls_nl, Tensor loc_vis, Tensor? loc_nl, Tensor points, "
      "Tensor window, Tensor target_size, float alpha, float penalty_k, float window_influence, float lr, "
      "float center, bool lr_from_pscore) -> (Tensor index, Tensor box, Tensor score, Tensor pscore, Tensor lr, "
      "Tensor w_vis, Tensor w_nl, Tensor h_vis, Tensor h_nl)");
}

TORCH_LIBRARY_IMPL(snlt_fast_C, CPU, m) { m.impl("postprocess_track_points", &track_points<false>); }

#ifdef SNLT_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(snlt_fast_C, CUDA, m) { m.impl("postprocess_track_points", &track_points<true>); }
#endif

}  // namespace snlt_fast::postprocess
