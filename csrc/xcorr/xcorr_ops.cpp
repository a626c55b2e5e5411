// The torch side of the depth-wise cross-correlation kernels: the op schemas of the
// snlt_fast_C library, input checks, output allocation, and the CPU and CUDA
// registrations. The kernels themselves see only the plain Pair descriptions.
#include "xcorr/xcorr_plan.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#ifdef SNLT_FAST_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <tuple>
#include <vector>

namespace snlt_fast::xcorr {
namespace {

using TensorVector = std::vector<at::Tensor>;

Dtype dtype_of(const at::Tensor& tensor) {
  switch (tensor.scalar_type()) {
    case at::kHalf:
      return Dtype::Float16;
    case at::kBFloat16:
      return Dtype::BFloat16;
    case at::kFloat:
      return Dtype::Float32;
    case at::kDouble:
      return Dtype::Float64;
    default:
      TORCH_CHECK_TYPE(false, "xcorr: tensors must be float16, bfloat16, float32 or float64, got ",
                       tensor.scalar_type());
  }
}

// The Python API validates its inputs with friendlier messages; these checks keep a
// direct call of the op from reading out of bounds.
void check_pair(const at::Tensor& search, const at::Tensor& kernel, size_t n, const at::Tensor& first) {
  TORCH_CHECK(search.dim() == 4, "xcorr: searches[", n, "] must be 4-D, got ", search.sizes());
  TORCH_CHECK(kernel.dim() == 4, "xcorr: kernels[", n, "] must be 4-D, got ", kernel.sizes());
  for (const at::Tensor* tensor : {&search, &kernel}) {
    TORCH_CHECK_TYPE(tensor->scalar_type() == first.scalar_type(), "xcorr: pair ", n, " is ",
                     tensor->scalar_type(), " but searches[0] is ", first.scalar_type());
    TORCH_CHECK(tensor->device() == first.device(), "xcorr: pair ", n, " is on ", tensor->device(),
                " but searches[0] is on ", first.device());
  }
  TORCH_CHECK(kernel.size(1) == search.size(1) && (kernel.size(0) == 1 || kernel.size(0) == search.size(0)),
              "xcorr: kernels[", n, "] ", kernel.sizes(), " does not match searches[", n, "] ", search.sizes());
  TORCH_CHECK(kernel.size(2) >= 1 && kernel.size(3) >= 1 && kernel.size(2) <= search.size(2) &&
                  kernel.size(3) <= search.size(3),
              "xcorr: kernels[", n, "] ", kernel.sizes(), " does not fit inside searches[", n, "] ", search.sizes());
}

Pair describe(const at::Tensor& search, const at::Tensor& kernel) {
  Pair pair;
  pair.search = search.data_ptr();
  pair.kernel = kernel.data_ptr();
  pair.batch = search.size(0);
  pair.channels = search.size(1);
  pair.height = search.size(2);
  pair.width = search.size(3);
  pair.kernel_h = kernel.size(2);
  pair.kernel_w = kernel.size(3);
  for (int d = 0; d < 4; ++d) {
    pair.search_stride[d] = search.stride(d);
    pair.kernel_stride[d] = kernel.stride(d);
  }
  pair.kernel_shared = kernel.size(0) != search.size(0);
  if (pair.kernel_shared) pair.kernel_stride[0] = 0;
  return pair;
}

std::vector<Pair> describe_all(at::TensorList searches, at::TensorList kernels) {
  TORCH_CHECK(searches.size() == kernels.size(), "xcorr: ", searches.size(), " searches but ", kernels.size(),
              " kernels");
  std::vector<Pair> pairs;
  for (size_t n = 0; n < searches.size(); ++n) {
    check_pair(searches[n], kernels[n], n, searches[0]);
    pairs.push_back(describe(searches[n], kernels[n]));
  }
  return pairs;
}

// Describes every pair and allocates its contiguous output.
std::tuple<std::vector<Pair>, TensorVector> plan_forward(at::TensorList searches, at::TensorList kernels) {
  std::vector<Pair> pairs = describe_all(searches, kernels);
  TensorVector outputs;
  for (size_t n = 0; n < pairs.size(); ++n) {
    Pair& pair = pairs[n];
    outputs.push_back(at::empty({pair.batch, pair.channels, pair.out_h(), pair.out_w()}, searches[n].options()));
    pair.out = outputs.back().data_ptr();
  }
  return {std::move(pairs), std::move(outputs)};
}

struct BackwardPlan {
  std::vector<Pair> pairs;
  TensorVector grad_searches, grad_kernels;
};

BackwardPlan plan_backward(at::TensorList grads, at::TensorList searches, at::TensorList kernels, bool need_search,
                           bool need_kernel) {
  BackwardPlan plan{describe_all(searches, kernels), {}, {}};
  TORCH_CHECK(grads.size() == searches.size(), "xcorr: ", grads.size(), " grads but ", searches.size(), " searches");
  for (size_t n = 0; n < plan.pairs.size(); ++n) {
    Pair& pair = plan.pairs[n];
    const at::Tensor& grad = grads[n];
    TORCH_CHECK(grad.sizes() == at::IntArrayRef({pair.batch, pair.channels, pair.out_h(), pair.out_w()}),
                "xcorr: grads[", n, "] must be the output's shape, got ", grad.sizes());
    TORCH_CHECK_TYPE(grad.scalar_type() == searches[n].scalar_type(), "xcorr: grads[", n, "] is ",
                     grad.scalar_type(), " but searches[", n, "] is ", searches[n].scalar_type());
    TORCH_CHECK(grad.device() == searches[n].device(), "xcorr: grads[", n, "] is on ", grad.device(),
                " but searches[", n, "] is on ", searches[n].device());
    pair.grad_out = grad.data_ptr();
    for (int d = 0; d < 4; ++d) pair.grad_stride[d] = grad.stride(d);
    if (need_search) {
      plan.grad_searches.push_back(at::empty(searches[n].sizes(), searches[n].options()));
      pair.grad_search = plan.grad_searches.back().data_ptr();
    }
    if (need_kernel) {
      plan.grad_kernels.push_back(at::empty(kernels[n].sizes(), kernels[n].options()));
      pair.grad_kernel = plan.grad_kernels.back().data_ptr();
    }
  }
  return plan;
}

TensorVector forward_many_cpu(at::TensorList searches, at::TensorList kernels) {
  auto [pairs, outputs] = plan_forward(searches, kernels);
  if (!pairs.empty()) forward_cpu(dtype_of(searches[0]), pairs);
  return outputs;
}

std::tuple<TensorVector, TensorVector> backward_many_cpu(at::TensorList grads, at::TensorList searches,
                                                         at::TensorList kernels, bool need_search, bool need_kernel) {
  BackwardPlan plan = plan_backward(grads, searches, kernels, need_search, need_kernel);
  if (!plan.pairs.empty()) backward_cpu(dtype_of(searches[0]), plan.pairs, need_search, need_kernel);
  return {std::move(plan.grad_searches), std::move(plan.grad_kernels)};
}

#ifdef SNLT_FAST_WITH_CUDA
void check_cuda(int error, const char* what) {
  TORCH_CHECK(error == 0, "xcorr: the CUDA ", what, " kernel failed: ", cuda_error_string(error));
}

TensorVector forward_many_cuda(at::TensorList searches, at::TensorList kernels) {
  auto [pairs, outputs] = plan_forward(searches, kernels);
  if (pairs.empty()) return outputs;
  const c10::cuda::CUDAGuard device_guard(searches[0].device());
  void* stream = c10::cuda::getCurrentCUDAStream().stream();
  check_cuda(forward_cuda(dtype_of(searches[0]), pairs, stream), "forward");
  return outputs;
}

std::tuple<TensorVector, TensorVector> backward_many_cuda(at::TensorList grads, at::TensorList searches,
                                                          at::TensorList kernels, bool need_search, bool need_kernel) {
  BackwardPlan plan = plan_backward(grads, searches, kernels, need_search, need_kernel);
  if (!plan.pairs.empty()) {
    const c10::cuda::CUDAGuard device_guard(searches[0].device());
    void* stream = c10::cuda::getCurrentCUDAStream().stream();
    check_cuda(backward_cuda(dtype_of(searches[0]), plan.pairs, need_search, need_kernel, stream), "backward");
  }
  return {std::move(plan.grad_searches), std::move(plan.grad_kernels)};
}
#endif

}  // namespace

TORCH_LIBRARY(snlt_fast_C, m) {
  m.def("xcorr_forward_many(Tensor[] searches, Tensor[] kernels) -> Tensor[]");
  m.def(
      "xcorr_backward_many(Tensor[] grads, Tensor[] searches, Tensor[] kernels, bool need_search, "
      "bool need_kernel) -> (Tensor[], Tensor[])");
}

TORCH_LIBRARY_IMPL(snlt_fast_C, CPU, m) {
  m.impl("xcorr_forward_many", &forward_many_cpu);
  m.impl("xcorr_backward_many", &backward_many_cpu);
}

#ifdef SNLT_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(snlt_fast_C, CUDA, m) {
  m.impl("xcorr_forward_many", &forward_many_cuda);
  m.impl("xcorr_backward_many", &backward_many_cuda);
}
#endif

}  // namespace snlt_fast::xcorr
