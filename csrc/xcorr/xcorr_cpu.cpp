// Depth-wise cross-correlation on the CPU: every (pair, batch, channel) plane of every
// pair in one at::parallel_for, SIMD inside each plane, exact order of the contract in
// xcorr_plan.h.
//
// How SIMD keeps the sequential order of each output:
//   forward, grad search   each vector lane is its own output (consecutive positions of the
//                          plane flattened row by row) and adds its taps in order; the plane
//                          is first staged, in the accumulator type, into a buffer with zeros
//                          around it, so that every tap loads whole vectors in bounds;
//   grad kernel            each (c, i, j) is one long running sum, so the lanes are 16 (8 for
//                          double) consecutive channels of a channels-last staging copy,
//                          and several taps run side by side as independent chains.
// The vector code is written once with GCC vector extensions and compiled for AVX-512,
// AVX2 and baseline x86-64, picked at run time (SNLT_FAST_XCORR_ISA=avx2|generic forces
// a lower one, for testing).
#include "xcorr/xcorr_plan.h"

#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

// 64-byte vectors passed by value between always-inline helpers: no ABI is involved.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace snlt_fast::xcorr {
namespace {

#define SNLT_ALWAYS_INLINE inline __attribute__((always_inline))

template <typename T>
struct AccumulatorOf {
  using type = float;
};
template <>
struct AccumulatorOf<double> {
  using type = double;
};

// ------------------------------------------------------------------ vector core

// BYTES: the width of the instruction set's vector registers (64 for AVX-512, 32 for
// AVX2, 16 for SSE2), so that every vector below is one register.
template <typename Acc, int BYTES>
struct VectorOf {
  typedef Acc type __attribute__((vector_size(BYTES)));
};
template <typename Acc, int BYTES>
using Vec = typename VectorOf<Acc, BYTES>::type;
template <typename Acc, int BYTES>
constexpr int64_t kLanes = BYTES / sizeof(Acc);

template <typename Acc, int BYTES>
SNLT_ALWAYS_INLINE Vec<Acc, BYTES> load(const Acc* p) {
  Vec<Acc, BYTES> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <typename Acc, int BYTES>
SNLT_ALWAYS_INLINE void store(Acc* p, Vec<Acc, BYTES> v) {
  std::memcpy(p, &v, sizeof v);
}

// dst[n] = +0, then += src[n + offsets[t]] * weights[t] for t in order, for n < vectors * lanes.
// Planes are flattened row by row: output (y, x) is n = y * row_stride + x, and positions
// with x past the output row compute values that are thrown away.
template <typename Acc>
struct CorrelateJob {
  const Acc* src;
  const int64_t* offsets;
  const Acc* weights;
  int64_t taps;
  int64_t vectors;
  Acc* dst;
};

template <typename Acc, int BYTES, int VECTORS>
SNLT_ALWAYS_INLINE void correlate_tile(const CorrelateJob<Acc>& job, int64_t first) {
  constexpr int64_t L = kLanes<Acc, BYTES>;
  Vec<Acc, BYTES> acc[VECTORS] = {};  // +0
  const Acc* origin = job.src + first * L;
  for (int64_t t = 0; t < job.taps; ++t) {
    const Acc* tap = origin + job.offsets[t];
    const Acc weight = job.weights[t];
    for (int v = 0; v < VECTORS; ++v) acc[v] += load<Acc, BYTES>(tap + v * L) * weight;
  }
  for (int v = 0; v < VECTORS; ++v) store<Acc, BYTES>(job.dst + (first + v) * L, acc[v]);
}

template <typename Acc, int BYTES, int VECTORS>
SNLT_ALWAYS_INLINE void correlate_tile_of(int64_t vectors, const CorrelateJob<Acc>& job, int64_t first) {
  if constexpr (VECTORS > 1) {
    if (vectors < VECTORS) return correlate_tile_of<Acc, BYTES, VECTORS - 1>(vectors, job, first);
  }
  correlate_tile<Acc, BYTES, VECTORS>(job, first);
}

// Tiles of at most MAX_VECTORS independent sums, of near-equal sizes (46: 8+8+8+8+7+7).
template <typename Acc, int BYTES, int MAX_VECTORS>
SNLT_ALWAYS_INLINE void correlate(const CorrelateJob<Acc>& job) {
  const int64_t tiles = (job.vectors + MAX_VECTORS - 1) / MAX_VECTORS;
  for (int64_t tile = 0, first = 0; tile < tiles; ++tile) {
    const int64_t size = (job.vectors - first + tiles - tile - 1) / (tiles - tile);
    correlate_tile_of<Acc, BYTES, MAX_VECTORS>(size, job, first);
    first += size;
  }
}

// Channels-last planes (lanes = channels): for taps t < taps, the running sums
// acc[t] += grad[y][x] * search[y][x] shifted by offsets[t], over (y, x) row-major.
template <typename Acc>
struct ChainJob {
  const Acc* grad;    // [out_h][out_w][lanes]
  const Acc* search;  // [height][width][lanes]
  int64_t out_h, out_w, width;
  const int64_t* offsets;  // tap (i, j) -> (i * width + j) * lanes
  int64_t taps;
  Acc* acc;  // [taps][lanes], carried over from one batch sample to the next
};

template <typename Acc, int BYTES, int TAPS>
SNLT_ALWAYS_INLINE void chain_block(const ChainJob<Acc>& job, int64_t first_tap) {
  constexpr int64_t L = kLanes<Acc, BYTES>;
  Vec<Acc, BYTES> acc[TAPS];
  const Acc* search_at[TAPS];
  for (int t = 0; t < TAPS; ++t) {
    acc[t] = load<Acc, BYTES>(job.acc + (first_tap + t) * L);
    search_at[t] = job.search + job.offsets[first_tap + t];
  }
  const Acc* grad = job.grad;
  for (int64_t y = 0; y < job.out_h; ++y) {
    for (int64_t x = 0; x < job.out_w; ++x, grad += L) {
      const Vec<Acc, BYTES> g = load<Acc, BYTES>(grad);
      const int64_t position = (y * job.width + x) * L;
      for (int t = 0; t < TAPS; ++t) acc[t] += g * load<Acc, BYTES>(search_at[t] + position);
    }
  }
  for (int t = 0; t < TAPS; ++t) store<Acc, BYTES>(job.acc + (first_tap + t) * L, acc[t]);
}

template <typename Acc, int BYTES, int TAPS>
SNLT_ALWAYS_INLINE void chain_block_of(int64_t taps, const ChainJob<Acc>& job, int64_t first_tap) {
  if constexpr (TAPS > 1) {
    if (taps < TAPS) return chain_block_of<Acc, BYTES, TAPS - 1>(taps, job, first_tap);
  }
  chain_block<Acc, BYTES, TAPS>(job, first_tap);
}

// Taps go in blocks of at most MAX_TAPS chains, of near-equal sizes (25 taps: 7+6+6+6).
template <typename Acc, int BYTES, int MAX_TAPS>
SNLT_ALWAYS_INLINE void chains(const ChainJob<Acc>& job) {
  const int64_t blocks = (job.taps + MAX_TAPS - 1) / MAX_TAPS;
  for (int64_t block = 0, first = 0; block < blocks; ++block) {
    const int64_t size = (job.taps - first + blocks - block - 1) / (blocks - block);
    chain_block_of<Acc, BYTES, MAX_TAPS>(size, job, first);
    first += size;
  }
}

// Channels-last staging of a full group of lanes channels (contiguous rows, element type
// = accumulator type): dst[y][x][lane] = src[lane * channel_stride + y * row_stride + x].
template <typename Acc>
struct TransposeJob {
  const Acc* src;
  int64_t channel_stride, row_stride, rows, cols;
  Acc* dst;
};

template <typename Acc>
struct IndexOf {
  using type = int32_t;
};
template <>
struct IndexOf<double> {
  using type = int64_t;
};

// One stage of an in-register transpose of lanes x lanes values: rows r and r + H swap
// their off-diagonal H x H blocks; stages H = lanes / 2, ..., 1 transpose the whole block.
template <typename Acc, int BYTES, int H>
SNLT_ALWAYS_INLINE void transpose_stages(Vec<Acc, BYTES>* rows) {
  constexpr int N = kLanes<Acc, BYTES>;
  typename VectorOf<typename IndexOf<Acc>::type, BYTES>::type low, high;
  for (int c = 0; c < N; ++c) {
    low[c] = (c & H) ? N + c - H : c;  // indices >= N pick from the second vector
    high[c] = (c & H) ? N + c : c + H;
  }
  for (int r = 0; r < N; ++r) {
    if (r & H) continue;
    const Vec<Acc, BYTES> a = rows[r], b = rows[r + H];
    rows[r] = __builtin_shuffle(a, b, low);
    rows[r + H] = __builtin_shuffle(a, b, high);
  }
  if constexpr (H > 1) transpose_stages<Acc, BYTES, H / 2>(rows);
}

template <typename Acc, int BYTES>
SNLT_ALWAYS_INLINE void transpose_to_channels_last(const TransposeJob<Acc>& job) {
  constexpr int64_t N = kLanes<Acc, BYTES>;
  for (int64_t y = 0; y < job.rows; ++y) {
    const Acc* src = job.src + y * job.row_stride;
    Acc* dst = job.dst + y * job.cols * N;
    // Blocks of N columns; the last one overlaps the one before (rewriting equal values).
    for (int64_t x = 0; x < job.cols; x += N) {
      const int64_t x0 = std::min(x, job.cols - N);
      Vec<Acc, BYTES> block[N];
      for (int64_t lane = 0; lane < N; ++lane) block[lane] = load<Acc, BYTES>(src + lane * job.channel_stride + x0);
      transpose_stages<Acc, BYTES, N / 2>(block);
      for (int64_t k = 0; k < N; ++k) store<Acc, BYTES>(dst + (x0 + k) * N, block[k]);
    }
  }
}

// One copy per instruction set, each with vectors of its register width; tiles of 8
// independent sums hide the latency of the adds.
#define SNLT_SIMD_VARIANT(NAME, TARGET, BYTES)                                                                     \
  TARGET void correlate_##NAME(const CorrelateJob<float>& job) { correlate<float, BYTES, 8>(job); }            \
  TARGET void correlate_##NAME(const CorrelateJob<double>& job) { correlate<double, BYTES, 8>(job); }          \
  TARGET void chains_##NAME(const ChainJob<float>& job) { chains<float, BYTES, 8>(job); }                        \
  TARGET void chains_##NAME(const ChainJob<double>& job) { chains<double, BYTES, 8>(job); }                      \
  TARGET void transpose_##NAME(const TransposeJob<float>& job) { transpose_to_channels_last<float, BYTES>(job); } \
  TARGET void transpose_##NAME(const TransposeJob<double>& job) { transpose_to_channels_last<double, BYTES>(job); }

SNLT_SIMD_VARIANT(avx512, __attribute__((target("avx512f"))), 64)
SNLT_SIMD_VARIANT(avx2, __attribute__((target("avx2"))), 32)
SNLT_SIMD_VARIANT(generic, , 16)
#undef SNLT_SIMD_VARIANT

template <typename Acc, int BYTES>
struct SimdKernels {
  static constexpr int bytes = BYTES;
  void (*correlate)(const CorrelateJob<Acc>&);
  void (*chains)(const ChainJob<Acc>&);
  void (*transpose)(const TransposeJob<Acc>&);
};

enum class Isa { Generic, Avx2, Avx512 };

Isa chosen_isa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    const Isa best = __builtin_cpu_supports("avx512f") ? Isa::Avx512
                     : __builtin_cpu_supports("avx2")  ? Isa::Avx2
                                                        : Isa::Generic;
    const char* forced = std::getenv("SNLT_FAST_XCORR_ISA");
    if (forced != nullptr && std::string(forced) == "generic") return Isa::Generic;
    if (forced != nullptr && std::string(forced) == "avx2" && best == Isa::Avx512) return Isa::Avx2;
    return best;
  }();
  return isa;
}

// fn(SimdKernels<Acc, register width>) for the instruction set of this CPU.
template <typename Acc, typename Fn>
void with_simd_kernels(const Fn& fn) {
  switch (chosen_isa()) {
    case Isa::Avx512:
      return fn(SimdKernels<Acc, 64>{correlate_avx512, chains_avx512, transpose_avx512});
    case Isa::Avx2:
      return fn(SimdKernels<Acc, 32>{correlate_avx2, chains_avx2, transpose_avx2});
    case Isa::Generic:
      return fn(SimdKernels<Acc, 16>{correlate_generic, chains_generic, transpose_generic});
  }
}

// ------------------------------------------------------------------ staging

// Per-thread buffers, grown on demand and kept for the next call.
template <typename Acc>
struct Scratch {
  std::vector<Acc> input, output, weights, accumulators;
  std::vector<int64_t> offsets;
};

template <typename Acc>
Scratch<Acc>& thread_scratch() {
  thread_local Scratch<Acc> scratch;
  return scratch;
}

template <typename V>
V* sized(std::vector<V>& buffer, int64_t size) {
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

// The rows x cols plane at src (strides row_stride, col_stride) into dst, in the
// accumulator type, at (row_offset, col_offset) of rows dst_stride long.
template <typename T, typename Acc>
void stage_plane(const T* src, int64_t row_stride, int64_t col_stride, int64_t rows, int64_t cols, Acc* dst,
                 int64_t dst_stride, int64_t row_offset, int64_t col_offset) {
  for (int64_t y = 0; y < rows; ++y) {
    const T* from = src + y * row_stride;
    Acc* to = dst + (y + row_offset) * dst_stride + col_offset;
    if (col_stride == 1) {
      for (int64_t x = 0; x < cols; ++x) to[x] = static_cast<Acc>(from[x]);
    } else {
      for (int64_t x = 0; x < cols; ++x) to[x] = static_cast<Acc>(from[x * col_stride]);
    }
  }
}

// dst[y][x][lane] = channel `lane` of the rows x cols planes at src, for lane < count;
// the other lanes are zero. Row by row, so that the destination row stays in L1 while
// every lane writes into it.
template <int64_t L, typename T, typename Acc>
void stage_channels_last_elementwise(const T* src, const int64_t* stride /* c, y, x */, int64_t count, int64_t rows,
                         int64_t cols, Acc* dst) {
  if (count < L) std::fill(dst, dst + rows * cols * L, Acc(0));
  for (int64_t y = 0; y < rows; ++y) {
    Acc* to = dst + y * cols * L;
    for (int64_t lane = 0; lane < count; ++lane) {
      const T* from = src + lane * stride[0] + y * stride[1];
      for (int64_t x = 0; x < cols; ++x) to[x * L + lane] = static_cast<Acc>(from[x * stride[2]]);
    }
  }
}

// out = +0 + src * weight, elementwise: a 1x1 kernel (forward and grad search).
template <typename T, typename Acc>
void scale_plane(const T* src, int64_t row_stride, int64_t col_stride, int64_t rows, int64_t cols, Acc weight,
                 T* out) {
  for (int64_t y = 0; y < rows; ++y, out += cols) {
    const T* from = src + y * row_stride;
    if (col_stride == 1) {
      for (int64_t x = 0; x < cols; ++x) out[x] = static_cast<T>(Acc(0) + static_cast<Acc>(from[x]) * weight);
    } else {
      for (int64_t x = 0; x < cols; ++x)
        out[x] = static_cast<T>(Acc(0) + static_cast<Acc>(from[x * col_stride]) * weight);
    }
  }
}

template <typename T, typename Acc>
void store_rounded(const Acc* src, int64_t src_stride, int64_t rows, int64_t cols, T* out) {
  for (int64_t y = 0; y < rows; ++y)
    for (int64_t x = 0; x < cols; ++x) out[y * cols + x] = static_cast<T>(src[y * src_stride + x]);
}

// ------------------------------------------------------------------ work split

// Below this many multiply-adds a call runs on the calling thread: waking the pool costs more.
constexpr int64_t kSerialWork = 1 << 15;

// Calls run(pair, item) for every item < items[pair] of every pair, on all threads at once:
// the items, in order, are cut into one contiguous share per thread of near-equal total cost.
template <typename Run>
void parallel_items(const std::vector<int64_t>& items, const std::vector<int64_t>& item_cost, const Run& run) {
  const size_t pairs = items.size();
  std::vector<int64_t> start(pairs + 1, 0);
  for (size_t p = 0; p < pairs; ++p) start[p + 1] = start[p] + items[p] * item_cost[p];
  const int64_t total = start[pairs];
  if (total == 0) return;
  const int64_t shares = total < kSerialWork ? 1 : std::max(1, at::get_num_threads());
  // Share s owns the items whose cost range starts in [total * s / shares, total * (s + 1) / shares).
  auto run_share = [&](int64_t share) {
    const int64_t low = total / shares * share + total % shares * share / shares;
    const int64_t high = total / shares * (share + 1) + total % shares * (share + 1) / shares;
    for (size_t p = 0; p < pairs; ++p) {
      if (start[p + 1] <= low || start[p] >= high) continue;
      const int64_t cost = item_cost[p];
      const int64_t first = low <= start[p] ? 0 : (low - start[p] + cost - 1) / cost;
      const int64_t last = std::min(items[p], (high - start[p] + cost - 1) / cost);
      for (int64_t item = first; item < last; ++item) run(p, item);
    }
  };
  if (shares == 1) return run_share(0);
  at::parallel_for(0, shares, 1, [&](int64_t begin, int64_t end) {
    for (int64_t share = begin; share < end; ++share) run_share(share);
  });
}

// ------------------------------------------------------------------ the three passes

// The work items of each pass for element type T, with SIMD kernels BYTES wide.
template <typename T, int BYTES>
struct Planes {
  using Acc = typename AccumulatorOf<T>::type;
  using Simd = SimdKernels<Acc, BYTES>;
  static constexpr int64_t L = kLanes<Acc, BYTES>;

  static const T* search_plane(const Pair& p, int64_t b, int64_t c) {
    return static_cast<const T*>(p.search) + b * p.search_stride[0] + c * p.search_stride[1];
  }
  static const T* kernel_plane(const Pair& p, int64_t b, int64_t c) {
    return static_cast<const T*>(p.kernel) + b * p.kernel_stride[0] + c * p.kernel_stride[1];
  }
  static const T* grad_plane(const Pair& p, int64_t b, int64_t c) {
    return static_cast<const T*>(p.grad_out) + b * p.grad_stride[0] + c * p.grad_stride[1];
  }

  // The kernel's taps in row-major order, as accumulator-type weights.
  static Acc* load_weights(const Pair& p, const T* kernel, Scratch<Acc>& scratch) {
    Acc* weights = sized(scratch.weights, p.kernel_h * p.kernel_w);
    for (int64_t i = 0; i < p.kernel_h; ++i)
      for (int64_t j = 0; j < p.kernel_w; ++j)
        weights[i * p.kernel_w + j] = static_cast<Acc>(kernel[i * p.kernel_stride[2] + j * p.kernel_stride[3]]);
    return weights;
  }

  // The number of whole vectors that cover `positions` flat positions.
  static int64_t vectors_for(int64_t positions) { return (positions + L - 1) / L; }

  static void forward(const Pair& p, int64_t b, int64_t c, const Simd& simd) {
    const int64_t out_h = p.out_h(), out_w = p.out_w(), kh = p.kernel_h, kw = p.kernel_w;
    const T* search = search_plane(p, b, c);
    const T* kernel = kernel_plane(p, b, c);
    T* out = static_cast<T*>(p.out) + (b * p.channels + c) * out_h * out_w;
    if (kh == 1 && kw == 1) {
      const Acc weight = static_cast<Acc>(kernel[0]);
      return scale_plane(search, p.search_stride[2], p.search_stride[3], out_h, out_w, weight, out);
    }
    Scratch<Acc>& scratch = thread_scratch<Acc>();
    // The plane flattened with row stride width; the last vector may run past it into zeros.
    const int64_t vectors = vectors_for((out_h - 1) * p.width + out_w);
    const int64_t padding = vectors * L - ((out_h - 1) * p.width + out_w);
    Acc* staged = sized(scratch.input, p.height * p.width + padding);
    stage_plane(search, p.search_stride[2], p.search_stride[3], p.height, p.width, staged, p.width, 0, 0);
    std::fill(staged + p.height * p.width, staged + p.height * p.width + padding, Acc(0));
    int64_t* offsets = sized(scratch.offsets, kh * kw);
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) offsets[i * kw + j] = i * p.width + j;
    Acc* sums = sized(scratch.output, vectors * L);
    simd.correlate({staged, offsets, load_weights(p, kernel, scratch), kh * kw, vectors, sums});
    store_rounded(sums, p.width, out_h, out_w, out);
  }

  static void grad_search(const Pair& p, int64_t b, int64_t c, const Simd& simd) {
    const int64_t out_h = p.out_h(), out_w = p.out_w(), kh = p.kernel_h, kw = p.kernel_w;
    const T* grad = grad_plane(p, b, c);
    const T* kernel = kernel_plane(p, b, c);
    T* grad_search = static_cast<T*>(p.grad_search) + (b * p.channels + c) * p.height * p.width;
    if (kh == 1 && kw == 1) {
      const Acc weight = static_cast<Acc>(kernel[0]);
      return scale_plane(grad, p.grad_stride[2], p.grad_stride[3], out_h, out_w, weight, grad_search);
    }
    Scratch<Acc>& scratch = thread_scratch<Acc>();
    // grad_out staged with kh-1 zero rows above and below and kw-1 zero columns on each
    // side: every tap then reads in bounds, and a tap that misses grad_out adds 0 * weight.
    const int64_t stride = p.width + kw - 1;
    const int64_t staged_size = (p.height + kh - 1) * stride;
    const int64_t vectors = vectors_for((p.height - 1) * stride + p.width);
    const int64_t padding = vectors * L - ((p.height - 1) * stride + p.width);
    Acc* staged = sized(scratch.input, staged_size + padding);
    std::fill(staged, staged + staged_size + padding, Acc(0));
    stage_plane(grad, p.grad_stride[2], p.grad_stride[3], out_h, out_w, staged, stride, kh - 1, kw - 1);
    const Acc* weights = load_weights(p, kernel, scratch);
    Acc* sums = sized(scratch.output, vectors * L);
    // Adding 0 * weight leaves the sum as it is (the sum starts at +0, so it is never -0),
    // unless the weight is inf or NaN: such a plane takes the bounds-checked path.
    if (std::all_of(weights, weights + kh * kw, [](Acc w) { return std::isfinite(w); })) {
      int64_t* offsets = sized(scratch.offsets, kh * kw);
      for (int64_t i = 0; i < kh; ++i)
        for (int64_t j = 0; j < kw; ++j) offsets[i * kw + j] = (kh - 1 - i) * stride + (kw - 1 - j);
      simd.correlate({staged, offsets, weights, kh * kw, vectors, sums});
    } else {
      for (int64_t y = 0; y < p.height; ++y) {
        for (int64_t x = 0; x < p.width; ++x) {
          Acc sum = 0;
          for (int64_t i = std::max<int64_t>(0, y - out_h + 1); i <= std::min(y, kh - 1); ++i)
            for (int64_t j = std::max<int64_t>(0, x - out_w + 1); j <= std::min(x, kw - 1); ++j)
              sum += staged[(y - i + kh - 1) * stride + (x - j + kw - 1)] * weights[i * kw + j];
          sums[y * stride + x] = sum;
        }
      }
    }
    store_rounded(sums, stride, p.height, p.width, grad_search);
  }

  // Full groups of channels with contiguous rows, already in the accumulator type, go
  // through the in-register transpose; the others element by element.
  static void stage_channels_last(const Pair& p, const T* src, const int64_t* stride /* c, y, x */, int64_t count,
                                  int64_t rows, int64_t cols, Acc* dst, const Simd& simd) {
    if constexpr (std::is_same_v<T, Acc>) {
      if (count == L && stride[2] == 1 && cols >= L) return simd.transpose({src, stride[0], stride[1], rows, cols, dst});
    }
    stage_channels_last_elementwise<L>(src, stride, count, rows, cols, dst);
  }

  // grad_kernel[kb, c0 : c0 + lanes, :, :]
  static void grad_kernel(const Pair& p, int64_t kernel_b, int64_t c0, const Simd& simd) {
    const int64_t out_h = p.out_h(), out_w = p.out_w(), taps = p.kernel_h * p.kernel_w;
    const int64_t count = std::min(L, p.channels - c0);
    Scratch<Acc>& scratch = thread_scratch<Acc>();
    Acc* search = sized(scratch.input, p.height * p.width * L);
    Acc* grad = sized(scratch.output, out_h * out_w * L);
    Acc* sums = sized(scratch.accumulators, taps * L);
    std::fill(sums, sums + taps * L, Acc(0));
    int64_t* offsets = sized(scratch.offsets, taps);
    for (int64_t i = 0; i < p.kernel_h; ++i)
      for (int64_t j = 0; j < p.kernel_w; ++j) offsets[i * p.kernel_w + j] = (i * p.width + j) * L;
    const int64_t first_b = p.kernel_shared ? 0 : kernel_b;
    const int64_t end_b = p.kernel_shared ? p.batch : kernel_b + 1;
    for (int64_t b = first_b; b < end_b; ++b) {
      stage_channels_last(p, search_plane(p, b, c0), p.search_stride + 1, count, p.height, p.width, search, simd);
      stage_channels_last(p, grad_plane(p, b, c0), p.grad_stride + 1, count, out_h, out_w, grad, simd);
      simd.chains({grad, search, out_h, out_w, p.width, offsets, taps, sums});
    }
    T* out = static_cast<T*>(p.grad_kernel) + (kernel_b * p.channels + c0) * taps;
    for (int64_t lane = 0; lane < count; ++lane)
      for (int64_t t = 0; t < taps; ++t) out[lane * taps + t] = static_cast<T>(sums[t * L + lane]);
  }
};

template <typename T, typename Simd>
void forward_typed(const std::vector<Pair>& pairs, const Simd& simd) {
  using P = Planes<T, Simd::bytes>;
  std::vector<int64_t> items, cost;
  for (const Pair& p : pairs) {
    items.push_back(p.batch * p.channels);
    cost.push_back(p.out_h() * p.out_w() * p.kernel_h * p.kernel_w + p.height * p.width);
  }
  parallel_items(items, cost, [&](size_t pair, int64_t item) {
    const Pair& p = pairs[pair];
    P::forward(p, item / p.channels, item % p.channels, simd);
  });
}

template <typename T, typename Simd>
void backward_typed(const std::vector<Pair>& pairs, bool need_search, bool need_kernel, const Simd& simd) {
  using P = Planes<T, Simd::bytes>;
  if (need_search) {
    std::vector<int64_t> items, cost;
    for (const Pair& p : pairs) {
      items.push_back(p.batch * p.channels);
      cost.push_back(p.height * p.width * (p.kernel_h * p.kernel_w + 1));
    }
    parallel_items(items, cost, [&](size_t pair, int64_t item) {
      const Pair& p = pairs[pair];
      P::grad_search(p, item / p.channels, item % p.channels, simd);
    });
  }
  if (need_kernel) {
    std::vector<int64_t> items, cost;
    for (const Pair& p : pairs) {
      const int64_t groups = (p.channels + P::L - 1) / P::L;
      const int64_t samples = p.kernel_shared ? p.batch : 1;
      items.push_back(p.kernel_batch() * groups);
      cost.push_back(std::max<int64_t>(1, samples * P::L * (p.out_h() * p.out_w() * p.kernel_h * p.kernel_w + p.height * p.width)));
    }
    parallel_items(items, cost, [&](size_t pair, int64_t item) {
      const Pair& p = pairs[pair];
      const int64_t groups = (p.channels + P::L - 1) / P::L;
      P::grad_kernel(p, item / groups, item % groups * P::L, simd);
    });
  }
}

template <typename Fn>
void with_scalar_type(Dtype dtype, const Fn& fn) {
  switch (dtype) {
    case Dtype::Float16:
      return fn(c10::Half{});
    case Dtype::BFloat16:
      return fn(c10::BFloat16{});
    case Dtype::Float32:
      return fn(float{});
    case Dtype::Float64:
      return fn(double{});
  }
}

}  // namespace

void forward_cpu(Dtype dtype, const std::vector<Pair>& pairs) {
  with_scalar_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_simd_kernels<typename AccumulatorOf<T>::type>([&](auto simd) { forward_typed<T>(pairs, simd); });
  });
}

void backward_cpu(Dtype dtype, const std::vector<Pair>& pairs, bool need_search, bool need_kernel) {
  with_scalar_type(dtype, [&](auto tag) {
    using T = decltype(tag);
    with_simd_kernels<typename AccumulatorOf<T>::type>(
        [&](auto simd) { backward_typed<T>(pairs, need_search, need_kernel, simd); });
  });
}

}  // namespace snlt_fast::xcorr
