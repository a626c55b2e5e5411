// Pixel-wise cross-correlation: the plain descriptions of the work that the torch glue
// (pixelwise_ops.cpp) hands to the CPU kernels (pixelwise_cpu.cpp) and the CUDA kernels
// (pixelwise_cuda.cu). Free of ATen headers, so that nvcc and the CPU kernels compile fast.
//
// The op in three-dimensional form: search [B, C, P] (P = H*W positions in row-major
// order), kernel [B or 1, C, K] (K = h*w taps), out [B, K, P]. Arithmetic contract (bit
// for bit the reference in snlt_fast/ops/xcorr_pixelwise.py):
//   forward      out[b,k,p] = +0, then += search[b,c,p] * kernel[b,c,k] for c ascending;
//   grad search  grad_search[b,c,p] = +0, then += grad_out[b,k,p] * kernel[b,c,k] for k ascending,
//                which is the forward of grad_out with the kernel's c and k axes swapped;
//   grad kernel  grad_kernel[kb,c,k] = +0, then += grad_out[b,k,p] * search[b,c,p] over b (outer;
//                every b when the kernel is shared, else b = kb), then p ascending.
// Products and sums are rounded separately in the accumulator type (double for double
// inputs, float otherwise); the result is rounded once to the input type.
#pragma once

#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

namespace snlt_fast::xcorr_pixelwise {

// The forward's form: out[b, n, p] = +0, then += input[b, r, p] * weight[b, r, n] for r
// ascending. Both the forward (r = c, n = k) and grad search (r = k, n = c) take it.
struct Correlation {
  const void* input = nullptr;   // [batch, reduced, positions], any strides
  const void* weight = nullptr;  // [batch, reduced, outputs], any strides (batch stride 0: shared)
  void* out = nullptr;           // [batch, outputs, positions], contiguous
  int64_t batch = 0, reduced = 0, outputs = 0, positions = 0;
  int64_t input_stride[3] = {};
  int64_t weight_stride[3] = {};
};

// grad_kernel[kb, c, k] = +0, then += grad[b, k, p] * search[b, c, p] over the samples b of
// kernel sample kb (all of them when the kernel is shared), then p ascending.
struct KernelGradient {
  const void* search = nullptr;  // [batch, channels, positions], any strides
  const void* grad = nullptr;    // [batch, taps, positions], any strides
  void* out = nullptr;           // [batch or 1, channels, taps], contiguous
  int64_t batch = 0, channels = 0, taps = 0, positions = 0;
  int64_t search_stride[3] = {};
  int64_t grad_stride[3] = {};
  bool shared = false;  // one kernel for the whole batch: each sum runs over every sample

  int64_t kernel_batch() const { return shared ? 1 : batch; }
};

template <typename T>
using AccumulatorOf = std::conditional_t<std::is_same_v<T, double>, double, float>;

// fn(an element of the type of dtype), one of the four the op takes.
template <typename Fn>
auto with_element_type(c10::ScalarType dtype, const Fn& fn) {
  switch (dtype) {
    case c10::ScalarType::Half:
      return fn(c10::Half{});
    case c10::ScalarType::BFloat16:
      return fn(c10::BFloat16{});
    case c10::ScalarType::Float:
      return fn(float{});
    default:
      return fn(double{});
  }
}

// Either pointer may be null (that gradient is not wanted); both run in one parallel region.
void forward_cpu(c10::ScalarType dtype, const Correlation& forward);
void backward_cpu(c10::ScalarType dtype, const Correlation* grad_search, const KernelGradient* grad_kernel);

#ifdef SNLT_FAST_WITH_CUDA
// The first CUDA error met (cudaSuccess = 0), as an int so that this header needs no
// CUDA header; the glue turns it into a TORCH_CHECK.
int forward_cuda(c10::ScalarType dtype, const Correlation& forward, void* stream);
int backward_cuda(c10::ScalarType dtype, const Correlation* grad_search, const KernelGradient* grad_kernel,
                  void* stream);
const char* cuda_error_string(int error);
#endif

}  // namespace snlt_fast::xcorr_pixelwise
