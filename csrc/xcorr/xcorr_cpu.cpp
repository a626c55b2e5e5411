// Depth-wise cross-correlation on the CPU: all work items of all pairs in one
// at::parallel_for, SIMD inside each item, in the exact order of the contract in
// xcorr_plan.h.
//
// How SIMD keeps the sequential order of each output:
//   forward        work item = one (batch, channel) plane; each vector lane is its own
//                  output (consecutive positions of the plane flattened row by row) and
//                  adds its taps in order; the plane is first staged, in the accumulator
//                  type, into a buffer with zeros after it, so that every tap loads whole
//                  vectors in bounds;
//   backward       work item = 16 (8 for double) consecutive channels, staged
//                  channels-last by an in-register transpose, so that a vector's lanes are
//                  those channels; grad_out is read once for both gradients:
//     grad search  each lane is its own output; grad_out is staged with a zero border,
//                  so that a tap that misses it adds 0 * weight (the sum is unchanged);
//                  blocks of lanes positions are transposed back in registers and stored
//                  straight into the planes;
//     grad kernel  each (c, i, j) is one long running sum over the batch and the
//                  positions; several taps run side by side as independent chains.
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

// tile.run<N>(first) with N = size, a compile-time constant up to MAX, so that the
// tile's N independent sums stay in registers.
template <int MAX, typename Tile>
SNLT_ALWAYS_INLINE void run_tile(int64_t size, const Tile& tile, int64_t first) {
  if constexpr (MAX > 1) {
    if (size < MAX) return run_tile<MAX - 1>(size, tile, first);
  }
  tile.template run<MAX>(first);
}

// Covers [0, count) with ceil(count / MAX) consecutive tiles of near-equal sizes
// (46: 8+8+8+8+7+7), none so small that the latency of its adds goes unhidden.
template <int MAX, typename Tile>
SNLT_ALWAYS_INLINE void balanced_tiles(int64_t count, const Tile& tile) {
  const int64_t tiles = (count + MAX - 1) / MAX;
  for (int64_t index = 0, first = 0; index < tiles; ++index) {
    const int64_t size = (count - first + tiles - index - 1) / (tiles - index);
    run_tile<MAX>(size, tile, first);
    first += size;
  }
}

constexpr int kTileSums = 8;  // independent sums per tile: enough to keep both FP ports busy

// Forward over a flattened plane: dst[n] = +0, then += src[n + offsets[t]] * weights[t]
// for t in order, for n < vectors * lanes.
template <typename Acc>
struct CorrelateJob {
  const Acc* src;
  const int64_t* offsets;
  const Acc* weights;
  int64_t taps;
  int64_t vectors;
  Acc* dst;
};

template <typename Acc, int BYTES>
struct FlatTile {
  const CorrelateJob<Acc>& job;
  template <int N>
  SNLT_ALWAYS_INLINE void run(int64_t first) const {
    constexpr int64_t L = kLanes<Acc, BYTES>;
    Vec<Acc, BYTES> acc[N] = {};  // +0
    const Acc* origin = job.src + first * L;
    for (int64_t t = 0; t < job.taps; ++t) {
      const Acc* tap = origin + job.offsets[t];
      const Acc weight = job.weights[t];
      for (int v = 0; v < N; ++v) acc[v] += load<Acc, BYTES>(tap + v * L) * weight;
    }
    for (int v = 0; v < N; ++v) store<Acc, BYTES>(job.dst + (first + v) * L, acc[v]);
  }
};

template <typename Acc, int BYTES>
SNLT_ALWAYS_INLINE void correlate(const CorrelateJob<Acc>& job) {
  balanced_tiles<kTileSums>(job.vectors, FlatTile<Acc, BYTES>{job});
}

// Grad search over channels-last rows (lanes = channels): dst[y][x] = +0, then
// += src[y * src_row_stride + x * lanes + offsets[t]] * weights[t] (one weight per lane)
// for t in order, for y < rows and x < cols.
template <typename Acc>
struct LaneCorrelateJob {
  const Acc* src;
  int64_t src_row_stride;
  const int64_t* offsets;
  const Acc* weights;  // [taps][lanes]
  int64_t taps, rows, cols;
  Acc* dst;  // [rows][cols][lanes]
};

// acc[0..N) = the sums of the N positions from `first` of `row`: +0, then the taps in order.
template <typename Acc, int BYTES, int N>
SNLT_ALWAYS_INLINE void lane_sums(const LaneCorrelateJob<Acc>& job, int64_t row, int64_t first,
                                  Vec<Acc, BYTES>* acc) {
  constexpr int64_t L = kLanes<Acc, BYTES>;
  for (int v = 0; v < N; ++v) acc[v] = Vec<Acc, BYTES>{};  // +0
  const Acc* origin = job.src + row * job.src_row_stride + first * L;
  for (int64_t t = 0; t < job.taps; ++t) {
    const Acc* tap = origin + job.offsets[t];
    const Vec<Acc, BYTES> weight = load<Acc, BYTES>(job.weights + t * L);
    for (int v = 0; v < N; ++v) acc[v] += load<Acc, BYTES>(tap + v * L) * weight;
  }
}

template <typename Acc, int BYTES>
struct LaneTile {
  const LaneCorrelateJob<Acc>& job;
  int64_t row;
  template <int N>
  SNLT_ALWAYS_INLINE void run(int64_t first) const {
    constexpr int64_t L = kLanes<Acc, BYTES>;
    Vec<Acc, BYTES> acc[N];
    lane_sums<Acc, BYTES, N>(job, row, first, acc);
    for (int v = 0; v < N; ++v) store<Acc, BYTES>(job.dst + (row * job.cols + first + v) * L, acc[v]);
  }
};

template <typename Acc, int BYTES>
SNLT_ALWAYS_INLINE void correlate_lanes(const LaneCorrelateJob<Acc>& job) {
  for (int64_t row = 0; row < job.rows; ++row) balanced_tiles<kTileSums>(job.cols, LaneTile<Acc, BYTES>{job, row});
}

// Grad kernel over channels-last rows: for taps t < taps, the running sums
// acc[t] += grad[y][x] * search[y][x] shifted by offsets[t], over (y, x) row-major.
template <typename Acc>
struct ChainJob {
  const Acc* grad;
  int64_t grad_row_stride;
  const Acc* search;
  int64_t search_row_stride;
  int64_t out_h, out_w;
  const int64_t* offsets;
  int64_t taps;
  Acc* acc;  // [taps][lanes], carried over from one batch sample to the next
};

template <typename Acc, int BYTES>
struct ChainTile {
  const ChainJob<Acc>& job;
  template <int N>
  SNLT_ALWAYS_INLINE void run(int64_t first_tap) const {
    constexpr int64_t L = kLanes<Acc, BYTES>;
    Vec<Acc, BYTES> acc[N];
    const Acc* search_at[N];
    for (int t = 0; t < N; ++t) {
      acc[t] = load<Acc, BYTES>(job.acc + (first_tap + t) * L);
      search_at[t] = job.search + job.offsets[first_tap + t];
    }
    for (int64_t y = 0; y < job.out_h; ++y) {
      const Acc* grad = job.grad + y * job.grad_row_stride;
      const int64_t row = y * job.search_row_stride;
      for (int64_t x = 0; x < job.out_w; ++x) {
        const Vec<Acc, BYTES> g = load<Acc, BYTES>(grad + x * L);
        for (int t = 0; t < N; ++t) acc[t] += g * load<Acc, BYTES>(search_at[t] + row + x * L);
      }
    }
    for (int t = 0; t < N; ++t) store<Acc, BYTES>(job.acc + (first_tap + t) * L, acc[t]);
  }
};

template <typename Acc, int BYTES>
SNLT_ALWAYS_INLINE void chains(const ChainJob<Acc>& job) {
  balanced_tiles<kTileSums>(job.taps, ChainTile<Acc, BYTES>{job});
}

// A group of lanes channels from planes ((lane, y, x) at lane * channel_stride +
// y * row_stride + x) into channels-last rows ((y, x, lane) at y * cl_row_stride +
// x * lanes + lane), both in the accumulator type; cols >= lanes.
template <typename Acc>
struct TransposeJob {
  const Acc* src;
  Acc* dst;
  int64_t channel_stride, row_stride, cl_row_stride;
  int64_t rows, cols;
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
SNLT_ALWAYS_INLINE void to_channels_last(const TransposeJob<Acc>& job) {
  constexpr int64_t N = kLanes<Acc, BYTES>;
  for (int64_t y = 0; y < job.rows; ++y) {
    const int64_t plane_row = y * job.row_stride, cl_row = y * job.cl_row_stride;
    // Blocks of N columns; the last one overlaps the one before (rewriting equal values).
    for (int64_t x = 0; x < job.cols; x += N) {
      const int64_t x0 = std::min(x, job.cols - N);
      Vec<Acc, BYTES> block[N];
      for (int64_t k = 0; k < N; ++k) block[k] = load<Acc, BYTES>(job.src + k * job.channel_stride + plane_row + x0);
      transpose_stages<Acc, BYTES, N / 2>(block);
      for (int64_t k = 0; k < N; ++k) store<Acc, BYTES>(job.dst + cl_row + (x0 + k) * N, block[k]);
    }
  }
}

// correlate_lanes with its sums written as planes (lane k's at planes + k * plane_stride,
// rows of job.cols), not channels-last: each block of lanes positions of a row is
// transposed in registers before it is stored. job.cols >= lanes; the last block of a
// row overlaps the one before (rewriting equal values).
template <typename Acc, int BYTES>
SNLT_ALWAYS_INLINE void correlate_lanes_to_planes(const LaneCorrelateJob<Acc>& job, Acc* planes,
                                                  int64_t plane_stride) {
  constexpr int64_t N = kLanes<Acc, BYTES>;
  for (int64_t row = 0; row < job.rows; ++row) {
    for (int64_t x = 0; x < job.cols; x += N) {
      const int64_t x0 = std::min(x, job.cols - N);
      Vec<Acc, BYTES> block[N];
      lane_sums<Acc, BYTES, N>(job, row, x0, block);
      transpose_stages<Acc, BYTES, N / 2>(block);
      for (int64_t k = 0; k < N; ++k) store<Acc, BYTES>(planes + k * plane_stride + row * job.cols + x0, block[k]);
    }
  }
}

// One copy per instruction set, each with vectors of its register width.
#define SNLT_SIMD_VARIANT_OF(NAME, TARGET, BYTES, ACC)                                                              \
  TARGET void correlate_##NAME(const CorrelateJob<ACC>& job) { correlate<ACC, BYTES>(job); }                      \
  TARGET void correlate_lanes_##NAME(const LaneCorrelateJob<ACC>& job) { correlate_lanes<ACC, BYTES>(job); }      \
  TARGET void chains_##NAME(const ChainJob<ACC>& job) { chains<ACC, BYTES>(job); }                                 \
  TARGET void to_channels_last_##NAME(const TransposeJob<ACC>& job) { to_channels_last<ACC, BYTES>(job); }       \
  TARGET void correlate_lanes_to_planes_##NAME(const LaneCorrelateJob<ACC>& job, ACC* planes, int64_t stride) { \
    correlate_lanes_to_planes<ACC, BYTES>(job, planes, stride);                                                 \
  }
#define SNLT_SIMD_VARIANT(NAME, TARGET, BYTES)     \
  SNLT_SIMD_VARIANT_OF(NAME, TARGET, BYTES, float) \
  SNLT_SIMD_VARIANT_OF(NAME, TARGET, BYTES, double)

SNLT_SIMD_VARIANT(avx512, __attribute__((target("avx512f"))), 64)
SNLT_SIMD_VARIANT(avx2, __attribute__((target("avx2"))), 32)
SNLT_SIMD_VARIANT(generic, , 16)
#undef SNLT_SIMD_VARIANT
#undef SNLT_SIMD_VARIANT_OF

template <typename Acc, int BYTES>
struct SimdKernels {
  static constexpr int bytes = BYTES;
  void (*correlate)(const CorrelateJob<Acc>&);
  void (*correlate_lanes)(const LaneCorrelateJob<Acc>&);
  void (*chains)(const ChainJob<Acc>&);
  void (*to_channels_last)(const TransposeJob<Acc>&);
  void (*correlate_lanes_to_planes)(const LaneCorrelateJob<Acc>&, Acc*, int64_t);
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
      return fn(SimdKernels<Acc, 64>{correlate_avx512, correlate_lanes_avx512, chains_avx512,
                                     to_channels_last_avx512, correlate_lanes_to_planes_avx512});
    case Isa::Avx2:
      return fn(SimdKernels<Acc, 32>{correlate_avx2, correlate_lanes_avx2, chains_avx2, to_channels_last_avx2,
                                     correlate_lanes_to_planes_avx2});
    case Isa::Generic:
      return fn(SimdKernels<Acc, 16>{correlate_generic, correlate_lanes_generic, chains_generic,
                                     to_channels_last_generic, correlate_lanes_to_planes_generic});
  }
}

// ------------------------------------------------------------------ staging

// Per-thread buffers, grown on demand and kept for the next call. The flat ones serve
// the per-plane passes, the channels-last ones the backward's channel groups (which may
// fall back to per-plane passes, so the two sets never alias).
template <typename Acc>
struct Scratch {
  std::vector<Acc> flat_input, flat_sums, flat_weights;
  std::vector<int64_t> flat_offsets;
  std::vector<Acc> search, grad, grad_search, weights, kernel_sums;
  std::vector<int64_t> lane_offsets, chain_offsets;
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

// The rows x cols plane at src (strides row_stride, col_stride) into dst, row after row,
// in the accumulator type.
template <typename T, typename Acc>
void stage_plane(const T* src, int64_t row_stride, int64_t col_stride, int64_t rows, int64_t cols, Acc* dst) {
  for (int64_t y = 0; y < rows; ++y, dst += cols) {
    const T* from = src + y * row_stride;
    if (col_stride == 1) {
      for (int64_t x = 0; x < cols; ++x) dst[x] = static_cast<Acc>(from[x]);
    } else {
      for (int64_t x = 0; x < cols; ++x) dst[x] = static_cast<Acc>(from[x * col_stride]);
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

// ------------------------------------------------------------------ the passes

// The work items for element type T, with SIMD kernels BYTES wide.
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
  static T* grad_search_plane(const Pair& p, int64_t b, int64_t c) {
    return static_cast<T*>(p.grad_search) + (b * p.channels + c) * p.height * p.width;
  }

  // The kernel's taps in row-major order, as accumulator-type weights.
  static Acc* load_weights(const Pair& p, const T* kernel, Acc* weights) {
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
    const int64_t plane = p.height * p.width;
    const int64_t planes_after = p.batch * p.channels - (b * p.channels + c) - 1;
    Scratch<Acc>& scratch = thread_scratch<Acc>();
    // The plane flattened with row stride width; the last vector may run past it by
    // `padding` elements, into zeros of the staged copy, or into the next planes of a
    // contiguous search already in the accumulator type, which is read in place.
    const int64_t vectors = vectors_for((out_h - 1) * p.width + out_w);
    const int64_t padding = vectors * L - ((out_h - 1) * p.width + out_w);
    const Acc* flat = nullptr;
    if constexpr (std::is_same_v<T, Acc>) {
      const int64_t* ss = p.search_stride;
      const bool contiguous = ss[3] == 1 && ss[2] == p.width && ss[1] == plane && ss[0] == p.channels * plane;
      if (contiguous && planes_after * plane >= padding) flat = search;
    }
    if (flat == nullptr) {
      Acc* staged = sized(scratch.flat_input, plane + padding);
      stage_plane(search, p.search_stride[2], p.search_stride[3], p.height, p.width, staged);
      std::fill(staged + plane, staged + plane + padding, Acc(0));
      flat = staged;
    }
    int64_t* offsets = sized(scratch.flat_offsets, kh * kw);
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) offsets[i * kw + j] = i * p.width + j;
    const Acc* weights = load_weights(p, kernel, sized(scratch.flat_weights, kh * kw));
    Acc* sums = sized(scratch.flat_sums, vectors * L);
    simd.correlate({flat, offsets, weights, kh * kw, vectors, sums});
    store_rounded(sums, p.width, out_h, out_w, out);
  }

  // grad_search[b, c] alone, for 1x1 kernels and for channel groups with a non-finite
  // weight (where 0 * weight is NaN, so the zero border cannot stand in for a missing
  // tap, and the taps that land are picked one by one instead).
  static void grad_search_single(const Pair& p, int64_t b, int64_t c) {
    const int64_t out_h = p.out_h(), out_w = p.out_w(), kh = p.kernel_h, kw = p.kernel_w;
    const T* grad = grad_plane(p, b, c);
    const T* kernel = kernel_plane(p, b, c);
    T* grad_search = grad_search_plane(p, b, c);
    const int64_t* gs = p.grad_stride;
    if (kh == 1 && kw == 1) {
      return scale_plane(grad, gs[2], gs[3], out_h, out_w, static_cast<Acc>(kernel[0]), grad_search);
    }
    Scratch<Acc>& scratch = thread_scratch<Acc>();
    const Acc* weights = load_weights(p, kernel, sized(scratch.flat_weights, kh * kw));
    for (int64_t y = 0; y < p.height; ++y) {
      for (int64_t x = 0; x < p.width; ++x) {
        Acc sum = 0;
        for (int64_t i = std::max<int64_t>(0, y - out_h + 1); i <= std::min(y, kh - 1); ++i)
          for (int64_t j = std::max<int64_t>(0, x - out_w + 1); j <= std::min(x, kw - 1); ++j)
            sum += static_cast<Acc>(grad[(y - i) * gs[2] + (x - j) * gs[3]]) * weights[i * kw + j];
        grad_search[y * p.width + x] = static_cast<T>(sum);
      }
    }
  }

  // count channels from c0 of a plane set ((c, y, x) at strides[0..2]) into channels-last
  // rows at dst ((y, x, lane) at y * cl_row_stride + x * L + lane), lanes past count zero.
  static void stage_channels_last(const T* src, const int64_t* stride, int64_t count, int64_t rows, int64_t cols,
                                  Acc* dst, int64_t cl_row_stride, const Simd& simd) {
    if constexpr (std::is_same_v<T, Acc>) {
      if (count == L && stride[2] == 1 && cols >= L)
        return simd.to_channels_last({src, dst, stride[0], stride[1], cl_row_stride, rows, cols});
    }
    for (int64_t y = 0; y < rows; ++y) {
      Acc* to = dst + y * cl_row_stride;
      if (count < L) std::fill(to, to + cols * L, Acc(0));
      for (int64_t lane = 0; lane < count; ++lane) {
        const T* from = src + lane * stride[0] + y * stride[1];
        for (int64_t x = 0; x < cols; ++x) to[x * L + lane] = static_cast<Acc>(from[x * stride[2]]);
      }
    }
  }

  // grad_search[b, c0 : c0 + count] from the channels-last grad_out with its zero border.
  static void grad_search_group(const Pair& p, int64_t b, int64_t c0, int64_t count, const Acc* grad_border,
                                int64_t border_row_stride, const Simd& simd) {
    const int64_t kh = p.kernel_h, kw = p.kernel_w, taps = kh * kw;
    Scratch<Acc>& scratch = thread_scratch<Acc>();
    Acc* weights = sized(scratch.weights, taps * L);
    std::fill(weights, weights + taps * L, Acc(0));
    for (int64_t lane = 0; lane < count; ++lane) {
      const T* kernel = kernel_plane(p, b, c0 + lane);
      for (int64_t t = 0; t < taps; ++t)
        weights[t * L + lane] = static_cast<Acc>(kernel[t / kw * p.kernel_stride[2] + t % kw * p.kernel_stride[3]]);
    }
    if (!std::all_of(weights, weights + taps * L, [](Acc w) { return std::isfinite(w); })) {
      for (int64_t lane = 0; lane < count; ++lane) grad_search_single(p, b, c0 + lane);
      return;
    }
    int64_t* offsets = sized(scratch.lane_offsets, taps);
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) offsets[i * kw + j] = (kh - 1 - i) * border_row_stride + (kw - 1 - j) * L;
    T* out = grad_search_plane(p, b, c0);
    const int64_t plane = p.height * p.width;
    LaneCorrelateJob<Acc> job{grad_border, border_row_stride, offsets, weights, taps, p.height, p.width, nullptr};
    if constexpr (std::is_same_v<T, Acc>) {
      if (count == L && p.width >= L) return simd.correlate_lanes_to_planes(job, out, plane);
    }
    Acc* sums = sized(scratch.grad_search, plane * L);
    job.dst = sums;
    simd.correlate_lanes(job);
    for (int64_t lane = 0; lane < count; ++lane)
      for (int64_t n = 0; n < plane; ++n) out[lane * plane + n] = static_cast<T>(sums[n * L + lane]);
  }

  // Both gradients for channels [c0, c0 + L) and the kernel sample kernel_b: every batch
  // sample when the kernel is shared (its sums run over the batch), else kernel_b alone.
  static void backward_group(const Pair& p, int64_t kernel_b, int64_t c0, bool need_search, bool need_kernel,
                             const Simd& simd) {
    const int64_t out_h = p.out_h(), out_w = p.out_w(), kh = p.kernel_h, kw = p.kernel_w, taps = kh * kw;
    const int64_t count = std::min(L, p.channels - c0);
    const int64_t first_b = p.kernel_shared ? 0 : kernel_b;
    const int64_t end_b = p.kernel_shared ? p.batch : kernel_b + 1;
    const bool search_by_group = need_search && taps > 1;
    if (need_search && !search_by_group) {
      for (int64_t b = first_b; b < end_b; ++b)
        for (int64_t lane = 0; lane < count; ++lane) grad_search_single(p, b, c0 + lane);
    }
    if (!need_kernel && !search_by_group) return;
    Scratch<Acc>& scratch = thread_scratch<Acc>();
    // grad_out channels-last with kh-1 zero rows above and below, kw-1 zero columns each side.
    const int64_t border_row_stride = (p.width + kw - 1) * L;
    const int64_t border_size = (p.height + kh - 1) * border_row_stride;
    Acc* grad_border = sized(scratch.grad, border_size);
    std::fill(grad_border, grad_border + border_size, Acc(0));
    Acc* grad = grad_border + (kh - 1) * border_row_stride + (kw - 1) * L;
    Acc* search = need_kernel ? sized(scratch.search, p.height * p.width * L) : nullptr;
    Acc* kernel_sums = need_kernel ? sized(scratch.kernel_sums, taps * L) : nullptr;
    if (need_kernel) std::fill(kernel_sums, kernel_sums + taps * L, Acc(0));
    int64_t* chain_offsets = sized(scratch.chain_offsets, taps);
    for (int64_t i = 0; i < kh; ++i)
      for (int64_t j = 0; j < kw; ++j) chain_offsets[i * kw + j] = (i * p.width + j) * L;
    for (int64_t b = first_b; b < end_b; ++b) {
      stage_channels_last(grad_plane(p, b, c0), p.grad_stride + 1, count, out_h, out_w, grad, border_row_stride, simd);
      if (need_kernel) {
        stage_channels_last(search_plane(p, b, c0), p.search_stride + 1, count, p.height, p.width, search,
                            p.width * L, simd);
        simd.chains({grad, border_row_stride, search, p.width * L, out_h, out_w, chain_offsets, taps, kernel_sums});
      }
      if (search_by_group) grad_search_group(p, b, c0, count, grad_border, border_row_stride, simd);
    }
    if (!need_kernel) return;
    T* out = static_cast<T*>(p.grad_kernel) + (kernel_b * p.channels + c0) * taps;
    for (int64_t lane = 0; lane < count; ++lane)
      for (int64_t t = 0; t < taps; ++t) out[lane * taps + t] = static_cast<T>(kernel_sums[t * L + lane]);
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
  std::vector<int64_t> items, cost;
  for (const Pair& p : pairs) {
    const int64_t groups = (p.channels + P::L - 1) / P::L;
    const int64_t samples = p.kernel_shared ? p.batch : 1;
    const int64_t taps = p.kernel_h * p.kernel_w;
    const int64_t per_sample =
        (need_kernel ? p.out_h() * p.out_w() * taps : 0) + (need_search ? p.height * p.width * taps : 0);
    items.push_back(p.kernel_batch() * groups);
    cost.push_back(std::max<int64_t>(1, samples * P::L * (per_sample + p.height * p.width)));
  }
  parallel_items(items, cost, [&](size_t pair, int64_t item) {
    const Pair& p = pairs[pair];
    const int64_t groups = (p.channels + P::L - 1) / P::L;
    P::backward_group(p, item / groups, item % groups * P::L, need_search, need_kernel, simd);
  });
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
