// Depth-wise cross-correlation: the plain description of one (search, kernel) pair
// that the torch glue (xcorr_ops.cpp) hands to the CPU kernels (xcorr_cpu.cpp) and
// the CUDA kernels (xcorr_cuda.cu). Free of torch headers, so that nvcc and the CPU
// kernels compile fast.
//
// Arithmetic contract (bit for bit the reference in snlt_fast/ops/xcorr.py):
//   forward      out[b,c,y,x] = +0, then += search[b,c,y+i,x+j] * kernel[b,c,i,j] over taps
//                (i, j) in row-major order;
//   grad search  grad_search[b,c,y,x] = +0, then += grad_out[b,c,y-i,x-j] * kernel[b,c,i,j]
//                over the taps in row-major order that land inside grad_out;
//   grad kernel  grad_kernel[kb,c,i,j] = +0, then += grad_out[b,c,y,x] * search[b,c,y+i,x+j]
//                over b (outer; every b when the kernel is shared, else b = kb), then (y, x)
//                row-major.
// Products and sums are rounded separately in the accumulator type (double for double
// inputs, float otherwise); the result is rounded once to the input type.
#pragma once

#include <cstdint>
#include <vector>

#ifdef __CUDACC__
#define SNLT_HOST_DEVICE __host__ __device__
#else
#define SNLT_HOST_DEVICE
#endif

namespace snlt_fast::xcorr {

enum class Dtype : int32_t { Float16, BFloat16, Float32, Float64 };

struct Pair {
  const void* search = nullptr;    // [batch, channels, height, width], any strides
  const void* kernel = nullptr;    // [batch or 1, channels, kernel_h, kernel_w], any strides
  const void* grad_out = nullptr;  // backward: [batch, channels, out_h, out_w], any strides
  void* out = nullptr;             // forward: [batch, channels, out_h, out_w], contiguous
  void* grad_search = nullptr;     // backward, when asked for: like search, contiguous
  void* grad_kernel = nullptr;     // backward, when asked for: like kernel, contiguous
  int64_t batch = 0, channels = 0, height = 0, width = 0, kernel_h = 0, kernel_w = 0;
  int64_t search_stride[4] = {};
  int64_t kernel_stride[4] = {};  // kernel_stride[0] is 0 when the kernel is shared
  int64_t grad_stride[4] = {};
  bool kernel_shared = false;     // one kernel for the whole batch: grad kernel sums over it

  SNLT_HOST_DEVICE int64_t out_h() const { return height - kernel_h + 1; }
  SNLT_HOST_DEVICE int64_t out_w() const { return width - kernel_w + 1; }
  SNLT_HOST_DEVICE int64_t kernel_batch() const { return kernel_shared ? 1 : batch; }
};

void forward_cpu(Dtype dtype, const std::vector<Pair>& pairs);
void backward_cpu(Dtype dtype, const std::vector<Pair>& pairs, bool need_search, bool need_kernel);

#ifdef SNLT_FAST_WITH_CUDA
// Both return the first CUDA error met (cudaSuccess = 0), as an int so that this
// header needs no CUDA header; the glue turns it into a TORCH_CHECK.
int forward_cuda(Dtype dtype, const std::vector<Pair>& pairs, void* stream);
int backward_cuda(Dtype dtype, const std::vector<Pair>& pairs, bool need_search, bool need_kernel, void* stream);
// cudaGetErrorString of such an error.
const char* cuda_error_string(int error);
#endif

}  // namespace snlt_fast::xcorr
