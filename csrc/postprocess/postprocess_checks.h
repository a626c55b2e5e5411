// What the native post-processing ops of both forms share (postprocess_ops.cpp, the anchor
// form's, and postprocess_points/points_ops.cpp): input checks, the heads' dispatch on their
// element type, per-target outputs.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <optional>
#include <vector>

#include "postprocess/postprocess_kernels.h"
#include "postprocess/postprocess_math.h"

namespace snlt_fast::postprocess {

using OptionalTensor = std::optional<at::Tensor>;

// The CUDA kernels run one block per target: the grid's x dimension bounds the batch.
constexpr int64_t kMaxCudaTargets = 2147483647;

// The shape, dtype, device and layout checks of the native ops; each error names the argument
// and what is wrong, as a ValueError or TypeError in Python. ops/postprocess.py and
// ops/postprocess_points.py check and convert user input (half heads, float32 anchors, strided
// tensors...), except that eager calls whose inputs are already in kernel form skip those
// checks and meet only these.
void check_tensor(const at::Tensor& value, at::IntArrayRef shape, at::ScalarType dtype, const char* name,
                  const at::Tensor& cls_vis);

// Whether cls_vis's device takes the CUDA kernels (else the CPU ones); other devices are refused.
bool on_cuda(const at::Tensor& cls_vis);

// Runs body(Heads<T>) with T the heads' element type.
template <typename Body>
void with_heads(const at::Tensor& cls_vis, const OptionalTensor& cls_nl, const at::Tensor& loc_vis,
                const OptionalTensor& loc_nl, Body body) {
  auto typed = [&](auto element) {
    using T = decltype(element);
    body(Heads<T>{cls_vis.data_ptr<T>(), cls_nl ? cls_nl->data_ptr<T>() : nullptr, loc_vis.data_ptr<T>(),
                  loc_nl ? loc_nl->data_ptr<T>() : nullptr});
  };
  if (cls_vis.scalar_type() == at::kDouble) {
    typed(double{});
  } else {
    typed(float{});
  }
}

// `count` tensors [batch] of O with `options`, and their data pointers into `pointers`:
// separate tensors, not views of one, so that no output of an op aliases another.
template <typename O>
std::vector<at::Tensor> per_target_outputs(int count, int64_t batch, const at::TensorOptions& options, O** pointers) {
  std::vector<at::Tensor> outputs;
  outputs.reserve(count);
  for (int k = 0; k < count; ++k) {
    outputs.push_back(at::empty({batch}, options));
    pointers[k] = outputs.back().data_ptr<O>();
  }
  return outputs;
}

// The eager APIs' rule for target sizes (of T) on the host: positive and finite. The
// registered ops leave sizes unchecked, as on a device: their kernels turn an invalid
// size into NaN scores.
template <typename T>
void check_host_sizes(const at::Tensor& target_size) {
  if (!target_size.is_cpu()) return;
  const T* sizes = target_size.data_ptr<T>();
  for (int64_t k = 0; k < target_size.numel(); ++k) {
    TORCH_CHECK_VALUE(is_valid_size<T>(sizes[k]), "target_size must hold positive finite (w, h), got ", sizes[k],
                      " for target ", k / 2);
  }
}

}  // namespace snlt_fast::postprocess
