// The torch side of the pixel-wise cross-correlation kernels: the op schemas (in the
// snlt_fast_C library), input checks, output allocation, the [B, C, H, W] -> [B, C, H*W]
// views, and the CPU and CUDA registrations. The kernels see only the plain descriptions
// of pixelwise_plan.h.
#include "xcorr_pixelwise/pixelwise_plan.h"

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#ifdef SNLT_FAST_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <algorithm>
#include <tuple>
#include <vector>

namespace snlt_fast::xcorr_pixelwise {
namespace {

using TensorVector = std::vector<at::Tensor>;

// The Python API validates its inputs with friendlier messages; these checks keep a
// direct call of the op from reading out of bounds.
void check_inputs(const at::Tensor& search, const at::Tensor& kernel) {
  TORCH_CHECK_VALUE(search.dim() == 4, "xcorr_pixelwise: search must be [B, C, H, W], got ", search.sizes());
  TORCH_CHECK_VALUE(kernel.dim() == 4, "xcorr_pixelwise: kernel must be [B, C, h, w], got ", kernel.sizes());
  const at::ScalarType dtype = search.scalar_type();
  TORCH_CHECK_TYPE(dtype == at::kHalf || dtype == at::kBFloat16 || dtype == at::kFloat || dtype == at::kDouble,
                   "xcorr_pixelwise: search must be float16, bfloat16, float32 or float64, got ", dtype);
  TORCH_CHECK_TYPE(kernel.scalar_type() == dtype, "xcorr_pixelwise: kernel is ", kernel.scalar_type(),
                   " but search is ", dtype);
  TORCH_CHECK_VALUE(kernel.device() == search.device(), "xcorr_pixelwise: kernel is on ", kernel.device(),
                    " but search is on ", search.device());
  TORCH_CHECK_VALUE(kernel.size(1) == search.size(1) && (kernel.size(0) == 1 || kernel.size(0) == search.size(0)),
                    "xcorr_pixelwise: kernel ", kernel.sizes(), " does not match search ", search.sizes());
}

// A [N, M, h, w] tensor as [N, M, h*w] (h*w in row-major order): the tensor itself when its
// last two dimensions walk as one, else a contiguous copy. strides gets the three strides.
at::Tensor flattened(const at::Tensor& tensor, int64_t* strides) {
  const int64_t h = tensor.size(2), w = tensor.size(3);
  const int64_t step = h == 1 ? tensor.stride(3) : w == 1 ? tensor.stride(2) : tensor.stride(3);
  const bool one_walk = h == 1 || w == 1 || tensor.stride(2) == w * tensor.stride(3);
  const at::Tensor walked = one_walk ? tensor : tensor.contiguous();
  strides[0] = walked.stride(0);
  strides[1] = walked.stride(1);
  strides[2] = one_walk ? step : 1;
  return walked;
}

int64_t taps_of(const at::Tensor& kernel) { return kernel.size(2) * kernel.size(3); }

// The forward's description; out is allocated by the caller.
struct ForwardPlan {
  at::Tensor search, kernel;  // flattened views (or copies) kept alive while the kernels run
  Correlation job;
};

ForwardPlan plan_forward(const at::Tensor& search, const at::Tensor& kernel, const at::Tensor& out) {
  ForwardPlan plan;
  Correlation& job = plan.job;
  plan.search = flattened(search, job.input_stride);
  plan.kernel = flattened(kernel, job.weight_stride);
  if (kernel.size(0) != search.size(0)) job.weight_stride[0] = 0;  // shared by the batch
  job.input = plan.search.data_ptr();
  job.weight = plan.kernel.data_ptr();
  job.out = out.data_ptr();
  job.batch = search.size(0);
  job.reduced = search.size(1);
  job.outputs = taps_of(kernel);
  job.positions = search.size(2) * search.size(3);
  return plan;
}

struct BackwardPlan {
  at::Tensor grad, search, kernel;  // flattened
  Correlation grad_search;          // the forward of grad with the kernel's c and k swapped
  KernelGradient grad_kernel;
  TensorVector grad_searches, grad_kernels;  // one tensor each when asked for
};

BackwardPlan plan_backward(const at::Tensor& grad, const at::Tensor& search, const at::Tensor& kernel,
                           bool need_search, bool need_kernel) {
  check_inputs(search, kernel);
  const int64_t batch = search.size(0), channels = search.size(1), taps = taps_of(kernel);
  const int64_t positions = search.size(2) * search.size(3);
  TORCH_CHECK_VALUE(grad.sizes() == at::IntArrayRef({batch, taps, search.size(2), search.size(3)}),
                    "xcorr_pixelwise: grad must be the output's shape, got ", grad.sizes());
  TORCH_CHECK_TYPE(grad.scalar_type() == search.scalar_type(), "xcorr_pixelwise: grad is ", grad.scalar_type(),
                   " but search is ", search.scalar_type());
  TORCH_CHECK_VALUE(grad.device() == search.device(), "xcorr_pixelwise: grad is on ", grad.device(),
                    " but search is on ", search.device());
  BackwardPlan plan;
  int64_t grad_stride[3], search_stride[3], kernel_stride[3];
  plan.grad = flattened(grad, grad_stride);
  const bool shared = kernel.size(0) != batch;
  if (need_search) {
    plan.kernel = flattened(kernel, kernel_stride);
    plan.grad_searches.push_back(at::empty(search.sizes(), search.options()));
    Correlation& job = plan.grad_search;
    job.input = plan.grad.data_ptr();
    job.weight = plan.kernel.data_ptr();
    job.out = plan.grad_searches.back().data_ptr();
    job.batch = batch, job.reduced = taps, job.outputs = channels, job.positions = positions;
    std::copy(grad_stride, grad_stride + 3, job.input_stride);
    job.weight_stride[0] = shared ? 0 : kernel_stride[0];
    job.weight_stride[1] = kernel_stride[2];  // r walks the taps
    job.weight_stride[2] = kernel_stride[1];  // n walks the channels
  }
  if (need_kernel) {
    plan.search = flattened(search, search_stride);
    plan.grad_kernels.push_back(at::empty(kernel.sizes(), kernel.options()));
    KernelGradient& job = plan.grad_kernel;
    job.search = plan.search.data_ptr();
    job.grad = plan.grad.data_ptr();
    job.out = plan.grad_kernels.back().data_ptr();
    job.batch = batch, job.channels = channels, job.taps = taps, job.positions = positions, job.shared = shared;
    std::copy(search_stride, search_stride + 3, job.search_stride);
    std::copy(grad_stride, grad_stride + 3, job.grad_stride);
  }
  return plan;
}

at::Tensor empty_output(const at::Tensor& search, const at::Tensor& kernel) {
  check_inputs(search, kernel);
  return at::empty({search.size(0), taps_of(kernel), search.size(2), search.size(3)}, search.options());
}

// The gradients asked for that hold elements, as the kernels take them (null: none to compute).
std::tuple<const Correlation*, const KernelGradient*> backward_jobs(const BackwardPlan& plan) {
  const bool search = !plan.grad_searches.empty() && plan.grad_searches[0].numel() > 0;
  const bool kernel = !plan.grad_kernels.empty() && plan.grad_kernels[0].numel() > 0;
  return {search ? &plan.grad_search : nullptr, kernel ? &plan.grad_kernel : nullptr};
}

at::Tensor forward_cpu_op(const at::Tensor& search, const at::Tensor& kernel) {
  at::Tensor out = empty_output(search, kernel);
  if (out.numel() == 0) return out;
  const ForwardPlan plan = plan_forward(search, kernel, out);
  forward_cpu(search.scalar_type(), plan.job);
  return out;
}

std::tuple<TensorVector, TensorVector> backward_cpu_op(const at::Tensor& grad, const at::Tensor& search,
                                                       const at::Tensor& kernel, bool need_search, bool need_kernel) {
  BackwardPlan plan = plan_backward(grad, search, kernel, need_search, need_kernel);
  const auto [search_job, kernel_job] = backward_jobs(plan);
  if (search_job != nullptr || kernel_job != nullptr) backward_cpu(search.scalar_type(), search_job, kernel_job);
  return {std::move(plan.grad_searches), std::move(plan.grad_kernels)};
}

#ifdef SNLT_FAST_WITH_CUDA
void check_cuda(int error, const char* what) {
  TORCH_CHECK(error == 0, "xcorr_pixelwise: the CUDA ", what, " kernel failed: ", cuda_error_string(error));
}

at::Tensor forward_cuda_op(const at::Tensor& search, const at::Tensor& kernel) {
  at::Tensor out = empty_output(search, kernel);
  if (out.numel() == 0) return out;
  const ForwardPlan plan = plan_forward(search, kernel, out);
  const c10::cuda::CUDAGuard device_guard(search.device());
  check_cuda(forward_cuda(search.scalar_type(), plan.job, c10::cuda::getCurrentCUDAStream().stream()), "forward");
  return out;
}

std::tuple<TensorVector, TensorVector> backward_cuda_op(const at::Tensor& grad, const at::Tensor& search,
                                                        const at::Tensor& kernel, bool need_search, bool need_kernel) {
  BackwardPlan plan = plan_backward(grad, search, kernel, need_search, need_kernel);
  const auto [search_job, kernel_job] = backward_jobs(plan);
  if (search_job != nullptr || kernel_job != nullptr) {
    const c10::cuda::CUDAGuard device_guard(search.device());
    void* stream = c10::cuda::getCurrentCUDAStream().stream();
    check_cuda(backward_cuda(search.scalar_type(), search_job, kernel_job, stream), "backward");
  }
  return {std::move(plan.grad_searches), std::move(plan.grad_kernels)};
}
#endif

}  // namespace

TORCH_LIBRARY_FRAGMENT(snlt_fast_C, m) {
  m.def("xcorr_pixelwise_forward(Tensor search, Tensor kernel) -> Tensor");
  m.def(
      "xcorr_pixelwise_backward(Tensor grad, Tensor search, Tensor kernel, bool need_search, bool need_kernel) "
      "-> (Tensor[], Tensor[])");
}

TORCH_LIBRARY_IMPL(snlt_fast_C, CPU, m) {
  m.impl("xcorr_pixelwise_forward", &forward_cpu_op);
  m.impl("xcorr_pixelwise_backward", &backward_cpu_op);
}

#ifdef SNLT_FAST_WITH_CUDA
TORCH_LIBRARY_IMPL(snlt_fast_C, CUDA, m) {
  m.impl("xcorr_pixelwise_forward", &forward_cuda_op);
  m.impl("xcorr_pixelwise_backward", &backward_cuda_op);
}
#endif

}  // namespace snlt_fast::xcorr_pixelwise
