// Depth-wise cross-correlation on CUDA: one thread per output element (forward, grad
// search) or per running sum (grad kernel), each adding its terms in the order of the
// contract in xcorr_plan.h with __fmul_rn / __fadd_rn (__dmul_rn / __dadd_rn), so no
// multiply-add is ever fused. All pairs of a call go into one launch (forward) and
// both gradients of all pairs into one more (backward), through a table of up to
// kTableCapacity pair descriptions passed as the kernel parameter.
#include "xcorr/xcorr_plan.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>

namespace snlt_fast::xcorr {
namespace {

constexpr int kTableCapacity = 16;
constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 16;  // the grid-stride loops cover the rest

struct PairTable {
  Pair pairs[kTableCapacity];
  // Work items of pair p are [first[p], first[p + 1]): forward outputs, or backward
  // grad-kernel sums; then, backward only, grad-search elements likewise.
  int64_t first[kTableCapacity + 1];
  int64_t first_search[kTableCapacity + 1];
  int count;
};
static_assert(sizeof(PairTable) <= 4000, "kernel parameters must stay within 4 KiB");

template <typename T>
struct Scalar;
template <>
struct Scalar<__half> {
  using Acc = float;
  static __device__ float widen(__half v) { return __half2float(v); }
  static __device__ __half round(float v) { return __float2half_rn(v); }
};
template <>
struct Scalar<__nv_bfloat16> {
  using Acc = float;
  static __device__ float widen(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __nv_bfloat16 round(float v) { return __float2bfloat16_rn(v); }
};
template <>
struct Scalar<float> {
  using Acc = float;
  static __device__ float widen(float v) { return v; }
  static __device__ float round(float v) { return v; }
};
template <>
struct Scalar<double> {
  using Acc = double;
  static __device__ double widen(double v) { return v; }
  static __device__ double round(double v) { return v; }
};

__device__ __forceinline__ float multiply(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double multiply(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }

// The pair whose items [first[p], first[p + 1]) hold index (index < first[count]).
__device__ __forceinline__ int pair_of(const int64_t* first, int count, int64_t index) {
  int p = 0;
  while (p + 1 < count && index >= first[p + 1]) ++p;
  return p;
}

template <typename T>
__device__ void forward_element(const Pair& pair, int64_t index) {
  using S = Scalar<T>;
  const int64_t out_w = pair.out_w(), out_h = pair.out_h();
  const int64_t x = index % out_w, y = index / out_w % out_h;
  const int64_t c = index / (out_w * out_h) % pair.channels, b = index / (out_w * out_h * pair.channels);
  const int64_t* ss = pair.search_stride;
  const int64_t* ks = pair.kernel_stride;
  const T* search = static_cast<const T*>(pair.search) + b * ss[0] + c * ss[1] + y * ss[2] + x * ss[3];
  const T* kernel = static_cast<const T*>(pair.kernel) + b * ks[0] + c * ks[1];
  typename S::Acc sum = 0;
  for (int64_t i = 0; i < pair.kernel_h; ++i)
    for (int64_t j = 0; j < pair.kernel_w; ++j)
      sum = add(sum, multiply(S::widen(search[i * ss[2] + j * ss[3]]), S::widen(kernel[i * ks[2] + j * ks[3]])));
  static_cast<T*>(pair.out)[index] = S::round(sum);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) forward_kernel(const __grid_constant__ PairTable table) {
  const int64_t total = table.first[table.count];
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(gridDim.x) * blockDim.x) {
    const int p = pair_of(table.first, table.count, index);
    forward_element<T>(table.pairs[p], index - table.first[p]);
  }
}

// grad_kernel[kb, c, i, j]: one running sum over the batch samples, then (y, x) row-major.
template <typename T>
__device__ void grad_kernel_element(const Pair& pair, int64_t index) {
  using S = Scalar<T>;
  const int64_t kw = pair.kernel_w, kh = pair.kernel_h;
  const int64_t j = index % kw, i = index / kw % kh;
  const int64_t c = index / (kw * kh) % pair.channels, kernel_b = index / (kw * kh * pair.channels);
  const int64_t out_w = pair.out_w(), out_h = pair.out_h();
  const int64_t* ss = pair.search_stride;
  const int64_t* gs = pair.grad_stride;
  const int64_t first_b = pair.kernel_shared ? 0 : kernel_b;
  const int64_t end_b = pair.kernel_shared ? pair.batch : kernel_b + 1;
  typename S::Acc sum = 0;
  for (int64_t b = first_b; b < end_b; ++b) {
    const T* grad = static_cast<const T*>(pair.grad_out) + b * gs[0] + c * gs[1];
    const T* search = static_cast<const T*>(pair.search) + b * ss[0] + c * ss[1] + i * ss[2] + j * ss[3];
    for (int64_t y = 0; y < out_h; ++y) {
      const T* grad_row = grad + y * gs[2];
      const T* search_row = search + y * ss[2];
#pragma unroll 4
      for (int64_t x = 0; x < out_w; ++x)
        sum = add(sum, multiply(S::widen(grad_row[x * gs[3]]), S::widen(search_row[x * ss[3]])));
    }
  }
  static_cast<T*>(pair.grad_kernel)[index] = S::round(sum);
}

// grad_search[b, c, y, x]: the taps (i, j) in row-major order whose output (y-i, x-j) exists.
template <typename T>
__device__ void grad_search_element(const Pair& pair, int64_t index) {
  using S = Scalar<T>;
  const int64_t x = index % pair.width, y = index / pair.width % pair.height;
  const int64_t c = index / (pair.width * pair.height) % pair.channels;
  const int64_t b = index / (pair.width * pair.height * pair.channels);
  const int64_t out_w = pair.out_w(), out_h = pair.out_h();
  const int64_t* ks = pair.kernel_stride;
  const int64_t* gs = pair.grad_stride;
  const T* grad = static_cast<const T*>(pair.grad_out) + b * gs[0] + c * gs[1];
  const T* kernel = static_cast<const T*>(pair.kernel) + b * ks[0] + c * ks[1];
  typename S::Acc sum = 0;
  const int64_t last_i = min(y, pair.kernel_h - 1), last_j = min(x, pair.kernel_w - 1);
  for (int64_t i = max(int64_t(0), y - out_h + 1); i <= last_i; ++i)
    for (int64_t j = max(int64_t(0), x - out_w + 1); j <= last_j; ++j)
      sum = add(sum, multiply(S::widen(grad[(y - i) * gs[2] + (x - j) * gs[3]]),
                              S::widen(kernel[i * ks[2] + j * ks[3]])));
  static_cast<T*>(pair.grad_search)[index] = S::round(sum);
}

// Grad-kernel sums come first in the index space: they are the long ones.
template <typename T>
__global__ void __launch_bounds__(kThreads) backward_kernel(const __grid_constant__ PairTable table) {
  const int64_t kernel_total = table.first[table.count];
  const int64_t total = kernel_total + table.first_search[table.count];
  for (int64_t index = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; index < total;
       index += int64_t(gridDim.x) * blockDim.x) {
    if (index < kernel_total) {
      const int p = pair_of(table.first, table.count, index);
      grad_kernel_element<T>(table.pairs[p], index - table.first[p]);
    } else {
      const int64_t search_index = index - kernel_total;
      const int p = pair_of(table.first_search, table.count, search_index);
      grad_search_element<T>(table.pairs[p], search_index - table.first_search[p]);
    }
  }
}

int64_t blocks_for(int64_t items) { return std::min((items + kThreads - 1) / kThreads, kMaxBlocks); }

// Calls launch(table, items) for each run of up to kTableCapacity pairs that has work.
template <typename Launch>
cudaError_t for_each_table(const std::vector<Pair>& pairs, int64_t (*kernel_items)(const Pair&),
                           int64_t (*search_items)(const Pair&), const Launch& launch) {
  for (size_t start = 0; start < pairs.size(); start += kTableCapacity) {
    PairTable table{};
    table.count = static_cast<int>(std::min<size_t>(kTableCapacity, pairs.size() - start));
    for (int p = 0; p < table.count; ++p) {
      table.pairs[p] = pairs[start + p];
      table.first[p + 1] = table.first[p] + kernel_items(table.pairs[p]);
      table.first_search[p + 1] = table.first_search[p] + search_items(table.pairs[p]);
    }
    const int64_t items = table.first[table.count] + table.first_search[table.count];
    if (items == 0) continue;  // no zero-size launch
    launch(table, blocks_for(items));
    const cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) return error;
  }
  return cudaSuccess;
}

int64_t no_items(const Pair&) { return 0; }
int64_t output_items(const Pair& p) { return p.batch * p.channels * p.out_h() * p.out_w(); }
int64_t search_items(const Pair& p) { return p.batch * p.channels * p.height * p.width; }
int64_t kernel_items(const Pair& p) { return p.kernel_batch() * p.channels * p.kernel_h * p.kernel_w; }

template <typename Fn>
cudaError_t with_scalar_type(Dtype dtype, const Fn& fn) {
  switch (dtype) {
    case Dtype::Float16:
      return fn(__half{});
    case Dtype::BFloat16:
      return fn(__nv_bfloat16{});
    case Dtype::Float32:
      return fn(float{});
    case Dtype::Float64:
      return fn(double{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace

int forward_cuda(Dtype dtype, const std::vector<Pair>& pairs, void* stream) {
  return with_scalar_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    return for_each_table(pairs, output_items, no_items, [&](const PairTable& table, int64_t blocks) {
      forward_kernel<T><<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(table);
    });
  });
}

int backward_cuda(Dtype dtype, const std::vector<Pair>& pairs, bool need_search, bool need_kernel, void* stream) {
  return with_scalar_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    return for_each_table(pairs, need_kernel ? kernel_items : no_items, need_search ? search_items : no_items,
                          [&](const PairTable& table, int64_t blocks) {
                            backward_kernel<T><<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(table);
                          });
  });
}

const char* cuda_error_string(int error) { return cudaGetErrorString(static_cast<cudaError_t>(error)); }

}  // namespace snlt_fast::xcorr
