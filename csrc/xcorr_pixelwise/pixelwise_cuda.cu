// Pixel-wise cross-correlation on CUDA: one thread per output element (forward, grad
// search) or per grad-kernel sum, each adding its terms in the order of the contract in
// pixelwise_plan.h with __fmul_rn / __fadd_rn (__dmul_rn / __dadd_rn), so no multiply-add
// is ever fused. Consecutive threads take consecutive positions of the forward's and
// grad search's outputs, so that their reads of the search and grad_out rows coalesce.
// The backward is one launch: grad-kernel sums first (the long ones), then grad search.
#include "xcorr_pixelwise/pixelwise_plan.h"

#include <cuda_runtime.h>

#include <algorithm>

namespace snlt_fast::xcorr_pixelwise {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // the grid-stride loops cover the rest

__device__ __forceinline__ float multiply(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double multiply(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }

// out[b, n, p] for index = (b * outputs + n) * positions + p.
template <typename T>
__device__ void correlation_element(const Correlation& job, int64_t index) {
  using Acc = AccumulatorOf<T>;
  const int64_t p = index % job.positions, n = index / job.positions % job.outputs;
  const int64_t b = index / (job.positions * job.outputs);
  const T* input = static_cast<const T*>(job.input) + b * job.input_stride[0] + p * job.input_stride[2];
  const T* weight = static_cast<const T*>(job.weight) + b * job.weight_stride[0] + n * job.weight_stride[2];
  Acc sum = 0;
  for (int64_t r = 0; r < job.reduced; ++r)
    sum = add(sum, multiply(static_cast<Acc>(input[r * job.input_stride[1]]),
                            static_cast<Acc>(weight[r * job.weight_stride[1]])));
  static_cast<T*>(job.out)[index] = static_cast<T>(sum);
}

// grad_kernel[kb, c, k] for index = (kb * channels + c) * taps + k.
template <typename T>
__device__ void kernel_gradient_element(const KernelGradient& job, int64_t index) {
  using Acc = AccumulatorOf<T>;
  const int64_t k = index % job.taps, c = index / job.taps % job.channels, kernel_b = index / (job.taps * job.channels);
  const int64_t first_b = job.shared ? 0 : kernel_b, end_b = job.shared ? job.batch : kernel_b + 1;
  const int64_t* ss = job.search_stride;
  const int64_t* gs = job.grad_stride;
  Acc sum = 0;
  for (int64_t b = first_b; b < end_b; ++b) {
    const T* search = static_cast<const T*>(job.search) + b * ss[0] + c * ss[1];
    const T* grad = static_cast<const T*>(job.grad) + b * gs[0] + k * gs[1];
#pragma unroll 4
    for (int64_t p = 0; p < job.positions; ++p)
      sum = add(sum, multiply(static_cast<Acc>(grad[p * gs[2]]), static_cast<Acc>(search[p * ss[2]])));
  }
  static_cast<T*>(job.out)[index] = static_cast<T>(sum);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) forward_kernel(const Correlation job, int64_t total) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(gridDim.x) * blockDim.x)
    correlation_element<T>(job, index);
}

// Indices [0, kernel_total) are grad-kernel sums, the rest grad-search elements.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const Correlation grad_search, const KernelGradient grad_kernel, int64_t kernel_total,
                    int64_t total) {
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(gridDim.x) * blockDim.x) {
    if (index < kernel_total) {
      kernel_gradient_element<T>(grad_kernel, index);
    } else {
      correlation_element<T>(grad_search, index - kernel_total);
    }
  }
}

int64_t blocks_for(int64_t items) { return std::min((items + kThreads - 1) / kThreads, kMaxBlocks); }

int64_t elements(const Correlation& job) { return job.batch * job.outputs * job.positions; }
int64_t elements(const KernelGradient& job) { return job.kernel_batch() * job.channels * job.taps; }

}  // namespace

int forward_cuda(c10::ScalarType dtype, const Correlation& forward, void* stream) {
  const int64_t total = elements(forward);
  if (total == 0) return cudaSuccess;
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  with_element_type(dtype, [&](auto tag) {
    forward_kernel<decltype(tag)><<<blocks_for(total), kThreads, 0, cuda_stream>>>(forward, total);
  });
  return cudaGetLastError();
}

int backward_cuda(c10::ScalarType dtype, const Correlation* grad_search, const KernelGradient* grad_kernel,
                  void* stream) {
  // A gradient not asked for is an empty job: no indices of its own.
  const Correlation search_job = grad_search ? *grad_search : Correlation{};
  const KernelGradient kernel_job = grad_kernel ? *grad_kernel : KernelGradient{};
  const int64_t kernel_total = elements(kernel_job), total = kernel_total + elements(search_job);
  if (total == 0) return cudaSuccess;
  const auto cuda_stream = static_cast<cudaStream_t>(stream);
  with_element_type(dtype, [&](auto tag) {
    backward_kernel<decltype(tag)>
        <<<blocks_for(total), kThreads, 0, cuda_stream>>>(search_job, kernel_job, kernel_total, total);
  });
  return cudaGetLastError();
}

const char* cuda_error_string(int error) { return cudaGetErrorString(static_cast<cudaError_t>(error)); }

}  // namespace snlt_fast::xcorr_pixelwise
