// torch glue of the post-processing kernels: schemas, checks, outputs, CPU and CUDA
// registrations (the kernels themselves take raw pointers; see postprocess_kernels.h).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/record_function.h>
#include <torch/library.h>

#ifdef SNLT_FAST_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <optional>
#include <tuple>
#include <vector>

#include "postprocess/postprocess_checks.h"
#include "postprocess/postprocess_kernels.h"
#include "postprocess/postprocess_math.h"
#include "postprocess/postprocess_ops.h"

namespace snlt_fast::postprocess {

// Declared, with what they check, in postprocess_checks.h.
void check_tensor(const at::Tensor& value, at::IntArrayRef shape, at::ScalarType dtype, const char* name,
                  const at::Tensor& cls_vis) {
  TORCH_CHECK_VALUE(value.sizes() == shape, name, " must have shape ", shape, ", got ", value.sizes());
  TORCH_CHECK_TYPE(value.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", value.scalar_type());
  TORCH_CHECK_VALUE(value.device() == cls_vis.device(), name, " must be on the device of cls_vis (", cls_vis.device(),
                    "), got ", value.device());
  TORCH_CHECK_VALUE(value.is_contiguous(), name, " must be contiguous");
}

bool on_cuda(const at::Tensor& cls_vis) {
#ifdef SNLT_FAST_WITH_CUDA
  if (cls_vis.is_cuda()) return true;
#endif
  TORCH_CHECK(cls_vis.is_cpu(), "snlt_fast._C's post-processing kernels do not run on ", cls_vis.device(), " tensors");
  return false;
}

namespace {

void check_float64(const at::Tensor& value, at::IntArrayRef shape, const char* name, const at::Tensor& cls_vis) {
  check_tensor(value, shape, at::kDouble, name, cls_vis);
}

Geometry check_heads(const at::Tensor& cls_vis, const OptionalTensor& cls_nl, const at::Tensor& loc_vis,
                     const OptionalTensor& loc_nl, const at::Tensor& anchors) {
  // A map with no cells would leave the argmax without a cell to read.
  TORCH_CHECK_VALUE(cls_vis.dim() == 4 && cls_vis.size(1) >= 2 && cls_vis.size(1) % 2 == 0 && cls_vis.size(2) >= 1 &&
                        cls_vis.size(3) >= 1,
                    "cls_vis must be [B, 2A, H, W] with A, H, W >= 1, got shape ", cls_vis.sizes());
  TORCH_CHECK_TYPE(cls_vis.scalar_type() == at::kFloat || cls_vis.scalar_type() == at::kDouble,
                   "cls_vis must be float32 or float64, got ", cls_vis.scalar_type());
  TORCH_CHECK_VALUE(cls_nl.has_value() == loc_nl.has_value(),
                    "cls_nl and loc_nl must both be given (SNLT) or both be None (visual head only)");
  const Geometry geometry{cls_vis.size(0), cls_vis.size(1) / 2, cls_vis.size(2), cls_vis.size(3)};
  const std::vector<int64_t> loc_shape{geometry.batch, 4 * geometry.anchor_num, geometry.height, geometry.width};
  // Every head in cls_vis's dtype.
  const auto check_head = [&](const at::Tensor& head, at::IntArrayRef shape, const char* name) {
    check_tensor(head, shape, cls_vis.scalar_type(), name, cls_vis);
  };
  check_head(cls_vis, cls_vis.sizes(), "cls_vis");
  check_head(loc_vis, loc_shape, "loc_vis");
  if (cls_nl.has_value()) {
    check_head(*cls_nl, cls_vis.sizes(), "cls_nl");
    check_head(*loc_nl, loc_shape, "loc_nl");
  }
  check_float64(anchors, {4, geometry.anchor_num, geometry.height, geometry.width}, "anchors", cls_vis);
  return geometry;
}



template <bool kCuda>
AggregateTensors aggregate(const at::Tensor& cls_vis, const OptionalTensor& cls_nl, const at::Tensor& loc_vis,
                           const OptionalTensor& loc_nl, const at::Tensor& anchors, double alpha) {
  const Geometry g = check_heads(cls_vis, cls_nl, loc_vis, loc_nl, anchors);
  const auto options = cls_vis.options().dtype(at::kFloat);
  at::Tensor score = at::empty({g.batch, g.anchor_num, g.height, g.width}, options);
  at::Tensor box = at::empty({g.batch, 4, g.anchor_num, g.height, g.width}, options);
  AggregateOutputs out{score.data_ptr<float>(), box.data_ptr<float>(), {}};
  const std::vector<at::Tensor> stats = per_target_outputs(kTargetStats, g.batch, options, out.stats);
  const auto outputs = std::make_tuple(score, box, stats[kWVis], stats[kWNl], stats[kHVis], stats[kHNl]);
  if (g.batch == 0) return outputs;
  with_heads(cls_vis, cls_nl, loc_vis, loc_nl, [&](auto heads) {
    if constexpr (kCuda) {
#ifdef SNLT_FAST_WITH_CUDA
      TORCH_CHECK(g.batch <= kMaxCudaTargets, "at most ", kMaxCudaTargets, " targets per call on CUDA");
      const c10::cuda::CUDAGuard guard(cls_vis.device());
      const cudaError_t error =
          aggregate_cuda(heads, anchors.data_ptr<double>(), g, alpha, out, c10::cuda::getCurrentCUDAStream());
      TORCH_CHECK(error == cudaSuccess, "postprocess_aggregate launch failed: ", cudaGetErrorString(error));
#endif
    } else {
      aggregate_cpu(heads, anchors.data_ptr<double>(), g, alpha, out);
    }
  });
  return outputs;
}


template <bool kCuda, bool kCheckHostSizes = false>
TrackTensors track(const at::Tensor& cls_vis, const OptionalTensor& cls_nl, const at::Tensor& loc_vis,
                   const OptionalTensor& loc_nl, const at::Tensor& anchors, const at::Tensor& window,
                   const at::Tensor& target_size, double alpha, double penalty_k, double window_influence, double lr,
                   bool lr_from_pscore) {
  const Geometry g = check_heads(cls_vis, cls_nl, loc_vis, loc_nl, anchors);
  check_float64(window, {g.anchor_num, g.height, g.width}, "window", cls_vis);
  check_float64(target_size, {g.batch, 2}, "target_size", cls_vis);
  if constexpr (kCheckHostSizes) check_host_sizes<double>(target_size);
  const auto options = cls_vis.options().dtype(at::kFloat);
  at::Tensor index = at::empty({g.batch}, cls_vis.options().dtype(at::kLong));
  at::Tensor box = at::empty({g.batch, 4}, options);
  TrackOutputs out{index.data_ptr<int64_t>(), box.data_ptr<float>(), {}, {}};
  const std::vector<at::Tensor> values = per_target_outputs(kTrackValues, g.batch, options, out.values);
  const std::vector<at::Tensor> stats = per_target_outputs(kTargetStats, g.batch, options, out.stats);
  const TrackTensors outputs{index,        box,         values[kScore], values[kPscore], values[kLr],
                             stats[kWVis], stats[kWNl], stats[kHVis],   stats[kHNl]};
  if (g.batch == 0) return outputs;
  const TrackParams params{alpha, penalty_k, window_influence, lr, lr_from_pscore};
  with_heads(cls_vis, cls_nl, loc_vis, loc_nl, [&](auto heads) {
    if constexpr (kCuda) {
#ifdef SNLT_FAST_WITH_CUDA
      TORCH_CHECK(g.batch <= kMaxCudaTargets, "at most ", kMaxCudaTargets, " targets per call on CUDA");
      const c10::cuda::CUDAGuard guard(cls_vis.device());
      const cudaError_t error =
          track_cuda(heads, anchors.data_ptr<double>(), window.data_ptr<double>(), target_size.data_ptr<double>(),
                     g, params, out, c10::cuda::getCurrentCUDAStream());
      TORCH_CHECK(error == cudaSuccess, "postprocess_track launch failed: ", cudaGetErrorString(error));
#endif
    } else {
      track_cpu(heads, anchors.data_ptr<double>(), window.data_ptr<double>(), target_size.data_ptr<double>(), g,
                params, out);
    }
  });
  return outputs;
}


}  // namespace

AggregateTensors dynamic_aggregate(const at::Tensor& cls_vis, const OptionalTensor& cls_nl, const at::Tensor& loc_vis,
                                   const OptionalTensor& loc_nl, const at::Tensor& anchors, double alpha) {
  // The dispatcher records the registered ops for profilers; the direct bindings record themselves.
  RECORD_FUNCTION("snlt_fast_C::postprocess_aggregate", c10::ArrayRef<const c10::IValue>{});
  const auto op = on_cuda(cls_vis) ? &aggregate<true> : &aggregate<false>;
  return op(cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha);
}

TrackTensors track_postprocess(const at::Tensor& cls_vis, const OptionalTensor& cls_nl, const at::Tensor& loc_vis,
                               const OptionalTensor& loc_nl, const at::Tensor& anchors, const at::Tensor& window,
                               const at::Tensor& target_size, double alpha, double penalty_k, double window_influence,
                               double lr, bool lr_from_pscore) {
  RECORD_FUNCTION("snlt_fast_C::postprocess_track", c10::ArrayRef<const c10::IValue>{});
  const auto op = on_cuda(cls_vis) ? &track<true, true> : &track<false, true>;
  return op(cls_vis, cls_nl, loc_vis, loc_nl, anchors, window, target_size, alpha, penalty_k, window_influence, lr,
            lr_from_pscore);
}

TORCH_LIBRARY_FRAGMENT(snlt_fast_C, m) {
  m.def(
      "postprocess_aggregate(Tensor cls_vis, Tensor? cls_nl, Tensor loc_vis, Tensor? loc_nl, Tensor anchors, "
      "float alpha) -> (Tensor score, Tensor box, Tensor w_vis, Tensor w_nl, Tensor h_vis, Tensor h_nl)");
  m.def(
      "postprocess_track(Tensor cls_vis, Tensor? cls_nl, Tensor loc_vis, Tensor? loc_nl, Tensor anchors, "
      "Tensor window, Tensor target_size, float alpha, float penalty_k, float window_influence, float lr, "
      "bool lr_from_pscore) -> (Tensor index, Tensor box, Tensor score, Tensor pscore, Tensor lr, Tensor w_vis, "
      "Tensor w_nl, Tensor h_vis, Tensor h_nl)");
}

TORCH_LIBRARY_IMPL(snlt_fast_C, CPU, m) {
  m.impl("postprocess_aggregate", &aggregate<false>);
  m.impl("postprocess_track", &track<false>);
}

#ifdef SNLT_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(snlt_fast_C, CUDA, m) {
  m.impl("postprocess_aggregate", &aggregate<true>);
  m.impl("postprocess_track", &track<true>);
}
#endif

}  // namespace snlt_fast::postprocess
