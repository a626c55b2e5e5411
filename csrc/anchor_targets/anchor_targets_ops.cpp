// torch glue of the anchor-target kernels: schema, checks, outputs, CPU and CUDA
// registrations (the kernels take raw pointers; see anchor_targets_kernels.h).
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#ifdef SNLT_FAST_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <tuple>

#include "anchor_targets/anchor_targets_kernels.h"
#include "anchor_targets/anchor_targets_math.h"

namespace snlt_fast::anchor_targets {
namespace {

using TargetTensors = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// The CUDA kernel runs one block per sample: the grid's x dimension bounds the batch.
constexpr int64_t kMaxCudaSamples = 2147483647;

// The native op's checks; ops/anchor_targets.py checks and converts user input first, so
// these guard against calls that would misread memory. Each names the argument.
void check_tensor(const at::Tensor& value, at::IntArrayRef shape, at::ScalarType dtype, const char* name,
                  const at::Tensor& anchors) {
  TORCH_CHECK_VALUE(value.sizes() == shape, name, " must have shape ", shape, ", got ", value.sizes());
  TORCH_CHECK_TYPE(value.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", value.scalar_type());
  TORCH_CHECK_VALUE(value.device() == anchors.device(), name, " must be on the device of anchors (", anchors.device(),
                    "), got ", value.device());
  TORCH_CHECK_VALUE(value.is_contiguous(), name, " must be contiguous");
}

template <bool kCuda>
TargetTensors anchor_targets(const at::Tensor& anchors, const at::Tensor& boxes, const at::Tensor& negative,
                             const at::Tensor& seeds, double positive_iou, double negative_iou, int64_t positive_num,
                             int64_t negative_num, int64_t negative_pair_num) {
  TORCH_CHECK_VALUE(anchors.dim() == 4 && anchors.size(0) == 4 && anchors.size(1) >= 1 && anchors.size(2) >= 2 &&
                        anchors.size(2) == anchors.size(3) && anchors.size(1) * anchors.size(2) * anchors.size(3) < kMaxCells,
                    "anchors must be [4, A, S, S] with A >= 1, S >= 2 and A*S*S < 2^31, got shape ", anchors.sizes());
  check_tensor(anchors, anchors.sizes(), at::kDouble, "anchors", anchors);
  TORCH_CHECK_VALUE(boxes.dim() == 2, "boxes must be [B, 4], got shape ", boxes.sizes());
  const int64_t batch = boxes.size(0);
  check_tensor(boxes, {batch, 4}, at::kDouble, "boxes", anchors);
  check_tensor(negative, {batch}, at::kBool, "negative", anchors);
  check_tensor(seeds, {batch, 2}, at::kLong, "seeds", anchors);
  TORCH_CHECK_VALUE(positive_num >= 0 && negative_num >= 0 && negative_pair_num >= 0,
                    "positive_num, negative_num and negative_pair_num must be at least 0, got ", positive_num, ", ",
                    negative_num, " and ", negative_pair_num);
  const Inputs in{anchors.data_ptr<double>(), boxes.data_ptr<double>(), negative.data_ptr<bool>(),
                  seeds.data_ptr<int64_t>(),  batch,                    anchors.size(1),
                  anchors.size(2)};
  const Params params{positive_iou, negative_iou, positive_num, negative_num, negative_pair_num};
  const auto options = anchors.options().dtype(at::kFloat);
  at::Tensor labels = at::empty({batch, in.anchor_num, in.size, in.size}, anchors.options().dtype(at::kLong));
  at::Tensor deltas = at::empty({batch, 4, in.anchor_num, in.size, in.size}, options);
  at::Tensor delta_weights = at::empty({batch, in.anchor_num, in.size, in.size}, options);
  at::Tensor iou = at::empty({batch, in.anchor_num, in.size, in.size}, options);
  const Outputs out{labels.data_ptr<int64_t>(), deltas.data_ptr<float>(), delta_weights.data_ptr<float>(),
                    iou.data_ptr<float>()};
  if (batch > 0) {
    if constexpr (kCuda) {
#ifdef SNLT_FAST_WITH_CUDA
      TORCH_CHECK(batch <= kMaxCudaSamples, "at most ", kMaxCudaSamples, " samples per call on CUDA");
      const c10::cuda::CUDAGuard guard(anchors.device());
      const cudaError_t error = anchor_targets_cuda(in, params, out, c10::cuda::getCurrentCUDAStream());
      TORCH_CHECK(error == cudaSuccess, "anchor_targets launch failed: ", cudaGetErrorString(error));
#endif
    } else {
      anchor_targets_cpu(in, params, out);
    }
  }
  return {labels, deltas, delta_weights, iou};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(snlt_fast_C, m) {
  m.def(
      "anchor_targets(Tensor anchors, Tensor boxes, Tensor negative, Tensor seeds, float positive_iou, "
      "float negative_iou, int positive_num, int negative_num, int negative_pair_num) -> (Tensor labels, "
      "Tensor deltas, Tensor delta_weights, Tensor iou)");
}

TORCH_LIBRARY_IMPL(snlt_fast_C, CPU, m) { m.impl("anchor_targets", &anchor_targets<false>); }

#ifdef SNLT_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(snlt_fast_C, CUDA, m) { m.impl("anchor_targets", &anchor_targets<true>); }
#endif

}  // namespace snlt_fast::anchor_targets
