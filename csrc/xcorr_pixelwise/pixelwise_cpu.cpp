// Pixel-wise cross-correlation on the CPU: every sum of the contract in
// pixelwise_plan.h is one lane of a register tile of a GEMM whose reduction runs in the
// contract's order. A tile holds rows x vectors independent sums; each step of the
// reduction broadcasts one value of A per row, loads the vectors of one row of B, and
// adds one product to every sum (a multiply, then an add: this file is compiled with
// -ffp-contract=off, so none is fused into a multiply-add).
//
//   forward, grad search  C[n][p] += A[r][n] * B[r][p]: A the kernel (its c and k axes swapped
//                         for grad search), B the search or grad_out rows, read in place when
//                         they are already in the accumulator type with unit position stride;
//   grad kernel           C[c][k] += A[p][c] * B[p][k]: A the search, read in place, B grad_out
//                         transposed into a staging buffer (lanes x lanes blocks in registers).
// The work is cut into items of near-equal cost (a sample by a block of columns), which the
// threads take one at a time; the backward's items of both gradients go out together.
// The vector code is compiled for AVX-512, AVX2 and baseline x86-64 and picked at run time;
// SNLT_FAST_XCORR_ISA=avx2|generic forces a narrower one, as for xcorr_depthwise (tests).
#include "xcorr_pixelwise/pixelwise_plan.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

// Vectors passed by value between always-inline helpers: no ABI is involved.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace snlt_fast::xcorr_pixelwise {
namespace {

#define SNLT_PIXELWISE_INLINE inline __attribute__((always_inline))

// One register of BYTES bytes (64: AVX-512, 32: AVX2, 16: SSE2) holding lanes Acc values.
template <typename Acc, int BYTES>
struct Register {
  typedef Acc type __attribute__((vector_size(BYTES)));
  static constexpr int64_t lanes = BYTES / sizeof(Acc);

  static SNLT_PIXELWISE_INLINE type read(const Acc* from) {
    type value;
    std::memcpy(&value, from, sizeof value);
    return value;
  }
  static SNLT_PIXELWISE_INLINE void write(Acc* to, type value) { std::memcpy(to, &value, sizeof value); }
};

// A register tile: rows x vectors sums. 24 of 32 registers for AVX-512, 12 of 16 below,
// leaving room for B's vectors, the broadcast and the product; on two add pipes of
// latency 3-4 that is enough sums in flight.
constexpr int kTileRows = 6;
template <int BYTES>
constexpr int kTileVectors = BYTES == 64 ? 4 : 2;

// C[m][n] = (+0, or C[m][n] when accumulating) + A[0][m] * B[0][n] + A[1][m] * B[1][n] + ...,
// added left to right, for m < rows and n < columns (a multiple of the lanes).
template <typename Acc>
struct Gemm {
  const Acc* a;
  int64_t a_step, a_row;  // A[r][m] at a[r * a_step + m * a_row]
  const Acc* b;
  int64_t b_step;  // B[r][n] at b[r * b_step + n]
  Acc* c;
  int64_t c_row;  // C[m][n] at c[m * c_row + n]
  int64_t depth, rows, columns;
  bool accumulate;
};

// ADJACENT: A's rows are adjacent (a_row == 1, as a contiguous kernel is in the forward),
// so that the broadcasts' offsets are constants: two integer operations less per step.
template <typename Acc, int BYTES, int ROWS, int VECTORS, bool ADJACENT>
SNLT_PIXELWISE_INLINE void gemm_tile(const Gemm<Acc>& g, int64_t m0, int64_t n0) {
  using R = Register<Acc, BYTES>;
  typename R::type sums[ROWS][VECTORS];
  int64_t row_offset[ROWS];
  for (int i = 0; i < ROWS; ++i) {
    row_offset[i] = ADJACENT ? i : (m0 + i) * g.a_row;
    for (int v = 0; v < VECTORS; ++v)
      sums[i][v] = g.accumulate ? R::read(g.c + (m0 + i) * g.c_row + n0 + v * R::lanes) : typename R::type{};
  }
  const Acc* a = g.a + (ADJACENT ? m0 : 0);
  const Acc* b = g.b + n0;
  for (int64_t r = 0; r < g.depth; ++r, a += g.a_step, b += g.b_step) {
    typename R::type row[VECTORS];
    for (int v = 0; v < VECTORS; ++v) row[v] = R::read(b + v * R::lanes);
    for (int i = 0; i < ROWS; ++i) {
      const Acc weight = a[row_offset[i]];
      for (int v = 0; v < VECTORS; ++v) sums[i][v] += row[v] * weight;
    }
  }
  for (int i = 0; i < ROWS; ++i)
    for (int v = 0; v < VECTORS; ++v) R::write(g.c + (m0 + i) * g.c_row + n0 + v * R::lanes, sums[i][v]);
}

// The tile of `height` rows (at most ROWS) by VECTORS vectors at (m0, n0).
template <typename Acc, int BYTES, int ROWS, int VECTORS>
SNLT_PIXELWISE_INLINE void gemm_tile_of(const Gemm<Acc>& g, int64_t height, int64_t m0, int64_t n0) {
  if constexpr (ROWS > 1) {
    if (height < ROWS) return gemm_tile_of<Acc, BYTES, ROWS - 1, VECTORS>(g, height, m0, n0);
  }
  if (g.a_row == 1) return gemm_tile<Acc, BYTES, ROWS, VECTORS, true>(g, m0, n0);
  gemm_tile<Acc, BYTES, ROWS, VECTORS, false>(g, m0, n0);
}

// Columns [n0, n0 + vectors * lanes) for every row, with vectors at most VECTORS. Rows go
// in tiles of near-equal height (64 = 6 x 9 + 5 x 2, not 6 x 10 + 4): short tiles waste
// the loads and the loop of a whole one.
template <typename Acc, int BYTES, int VECTORS>
SNLT_PIXELWISE_INLINE void gemm_columns(const Gemm<Acc>& g, int64_t vectors, int64_t n0) {
  if constexpr (VECTORS > 1) {
    if (vectors < VECTORS) return gemm_columns<Acc, BYTES, VECTORS - 1>(g, vectors, n0);
  }
  const int64_t tiles = (g.rows + kTileRows - 1) / kTileRows;
  for (int64_t tile = 0, m0 = 0; tile < tiles; ++tile) {
    const int64_t left = tiles - tile, height = (g.rows - m0 + left - 1) / left;
    gemm_tile_of<Acc, BYTES, kTileRows, VECTORS>(g, height, m0, n0);
    m0 += height;
  }
}

template <typename Acc, int BYTES>
SNLT_PIXELWISE_INLINE void gemm(const Gemm<Acc>& g) {
  constexpr int VECTORS = kTileVectors<BYTES>;
  constexpr int64_t lanes = Register<Acc, BYTES>::lanes;
  const int64_t vectors = g.columns / lanes;
  for (int64_t v0 = 0; v0 < vectors; v0 += VECTORS)
    gemm_columns<Acc, BYTES, VECTORS>(g, std::min<int64_t>(VECTORS, vectors - v0), v0 * lanes);
}

// Rows [0, lanes) of src (row r at src + r * src_row, unit column stride) from column 0 to
// `columns` into dst transposed: dst[x * dst_row + r] = src[r * src_row + x].
template <typename Acc>
struct Transpose {
  const Acc* src;
  int64_t src_row;
  Acc* dst;
  int64_t dst_row, columns;
};

// Swaps the off-diagonal blocks of SPAN x SPAN between rows r and r + SPAN, for every row
// r whose SPAN bit is clear; SPAN = lanes / 2, ..., 1 transposes the whole square.
template <typename Acc, int BYTES, int SPAN>
SNLT_PIXELWISE_INLINE void swap_blocks(typename Register<Acc, BYTES>::type* rows) {
  constexpr int N = Register<Acc, BYTES>::lanes;
  using Index = std::conditional_t<sizeof(Acc) == 8, int64_t, int32_t>;
  typedef Index Mask __attribute__((vector_size(BYTES)));
  Mask upper, lower;  // lanes from the pair's first row, then its second (index >= N)
  for (int lane = 0; lane < N; ++lane) {
    const bool high = lane & SPAN;
    upper[lane] = high ? lane - SPAN + N : lane;
    lower[lane] = high ? lane + N : lane + SPAN;
  }
  for (int r = 0; r < N; r += 2 * SPAN) {
    for (int q = r; q < r + SPAN; ++q) {
      const auto first = rows[q], second = rows[q + SPAN];
      rows[q] = __builtin_shuffle(first, second, upper);
      rows[q + SPAN] = __builtin_shuffle(first, second, lower);
    }
  }
  if constexpr (SPAN > 1) swap_blocks<Acc, BYTES, SPAN / 2>(rows);
}

template <typename Acc, int BYTES>
SNLT_PIXELWISE_INLINE void transpose(const Transpose<Acc>& t) {
  using R = Register<Acc, BYTES>;
  constexpr int64_t N = R::lanes;
  int64_t x = 0;
  for (; x + N <= t.columns; x += N) {
    typename R::type square[N];
    for (int64_t r = 0; r < N; ++r) square[r] = R::read(t.src + r * t.src_row + x);
    swap_blocks<Acc, BYTES, N / 2>(square);
    for (int64_t r = 0; r < N; ++r) R::write(t.dst + (x + r) * t.dst_row, square[r]);
  }
  for (; x < t.columns; ++x)
    for (int64_t r = 0; r < N; ++r) t.dst[x * t.dst_row + r] = t.src[r * t.src_row + x];
}

#define SNLT_PIXELWISE_ISA(NAME, TARGET, BYTES, ACC)                                            \
  TARGET void gemm_##NAME(const Gemm<ACC>& g) { gemm<ACC, BYTES>(g); }                          \
  TARGET void transpose_##NAME(const Transpose<ACC>& t) { transpose<ACC, BYTES>(t); }
#define SNLT_PIXELWISE_ISA_BOTH(NAME, TARGET, BYTES) \
  SNLT_PIXELWISE_ISA(NAME, TARGET, BYTES, float)     \
  SNLT_PIXELWISE_ISA(NAME, TARGET, BYTES, double)
SNLT_PIXELWISE_ISA_BOTH(avx512, __attribute__((target("avx512f"))), 64)
SNLT_PIXELWISE_ISA_BOTH(avx2, __attribute__((target("avx2"))), 32)
SNLT_PIXELWISE_ISA_BOTH(generic, , 16)
#undef SNLT_PIXELWISE_ISA_BOTH
#undef SNLT_PIXELWISE_ISA

template <typename Acc>
struct Simd {
  int64_t lanes, tile_columns;
  void (*gemm)(const Gemm<Acc>&);
  void (*transpose)(const Transpose<Acc>&);
};

// The widest registers this CPU has, or the narrower ones SNLT_FAST_XCORR_ISA asks for.
int register_bytes() {
  static const int bytes = [] {
    __builtin_cpu_init();
    const int widest = __builtin_cpu_supports("avx512f") ? 64 : __builtin_cpu_supports("avx2") ? 32 : 16;
    const char* asked = std::getenv("SNLT_FAST_XCORR_ISA");
    if (asked != nullptr && std::strcmp(asked, "generic") == 0) return 16;
    if (asked != nullptr && std::strcmp(asked, "avx2") == 0) return std::min(widest, 32);
    return widest;
  }();
  return bytes;
}

template <typename Acc, int BYTES>
Simd<Acc> simd_of(void (*gemm)(const Gemm<Acc>&), void (*transpose)(const Transpose<Acc>&)) {
  constexpr int64_t lanes = Register<Acc, BYTES>::lanes;
  return {lanes, lanes * kTileVectors<BYTES>, gemm, transpose};
}

template <typename Acc>
Simd<Acc> simd() {
  switch (register_bytes()) {
    case 64:
      return simd_of<Acc, 64>(gemm_avx512, transpose_avx512);
    case 32:
      return simd_of<Acc, 32>(gemm_avx2, transpose_avx2);
    default:
      return simd_of<Acc, 16>(gemm_generic, transpose_generic);
  }
}

// ------------------------------------------------------------------ staging

// The staging buffers: A's and B's values in the accumulator type, and C's sums.
enum Buffer { kStagedA, kStagedB, kSums };

// This thread's buffer WHICH, with room for at least `size` values; kept for the next call.
template <typename Acc, Buffer WHICH>
Acc* thread_buffer(int64_t size) {
  thread_local std::vector<Acc> buffer;
  if (static_cast<int64_t>(buffer.size()) < size) buffer.resize(size);
  return buffer.data();
}

int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

// dst[i * dst_row + j] = src[i * src_i + j * src_j] in the accumulator type, zeros for
// columns j in [cols, dst_row).
template <typename T, typename Acc>
void stage(const T* src, int64_t src_i, int64_t src_j, int64_t rows, int64_t cols, Acc* dst, int64_t dst_row) {
  for (int64_t i = 0; i < rows; ++i) {
    Acc* to = dst + i * dst_row;
    const T* from = src + i * src_i;
    for (int64_t j = 0; j < cols; ++j) to[j] = static_cast<Acc>(from[j * src_j]);
    std::fill(to + cols, to + dst_row, Acc(0));
  }
}

// out[i * out_row + j] = src[i * src_row + j] rounded once to T.
template <typename T, typename Acc>
void write_rounded(const Acc* src, int64_t src_row, int64_t rows, int64_t cols, T* out, int64_t out_row) {
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) out[i * out_row + j] = static_cast<T>(src[i * src_row + j]);
}

// ------------------------------------------------------------------ the items

// Work items of near this many multiply-adds: a few microseconds, enough to share out a
// batch-1 call between threads and to keep the cost of an item's staging small.
constexpr int64_t kItemWork = 1 << 17;
// Below this many multiply-adds a call runs on the calling thread: waking the pool costs more.
constexpr int64_t kSerialWork = 1 << 17;

// One kind of item: count items of `cost` multiply-adds each.
struct Items {
  int64_t count = 0, cost = 0;
};

// Column blocks of whole tiles of `tile` columns covering `columns`, each near kItemWork
// multiply-adds at `cost_per_column`: (block width, number of blocks).
std::pair<int64_t, int64_t> column_blocks(int64_t columns, int64_t tile, int64_t cost_per_column) {
  const int64_t tiles = std::max<int64_t>(1, (columns + tile - 1) / tile);
  const int64_t per_block = std::clamp<int64_t>(kItemWork / std::max<int64_t>(1, cost_per_column * tile), 1, tiles);
  return {per_block * tile, (tiles + per_block - 1) / per_block};
}

template <typename T>
struct Kernels {
  using Acc = AccumulatorOf<T>;
  static constexpr bool kInPlace = std::is_same_v<T, Acc>;  // inputs readable as accumulators

  // ---- correlation (forward, grad search): items are (sample, block of positions)
  struct CorrelationPlan {
    const Correlation& job;
    int64_t block, blocks;

    CorrelationPlan(const Correlation& j, const Simd<Acc>& simd) : job(j) {
      std::tie(block, blocks) = column_blocks(j.positions, simd.tile_columns, j.reduced * j.outputs);
    }
    Items items() const { return {job.batch * blocks, std::max<int64_t>(1, job.reduced * job.outputs * block)}; }

    void run(int64_t item, const Simd<Acc>& simd) const {
      const int64_t b = item / blocks, p0 = item % blocks * block, p1 = std::min(job.positions, p0 + block);
      const Correlation& j = job;
      const int64_t* ws = j.weight_stride;
      const T* weight = static_cast<const T*>(j.weight) + b * ws[0];
      // A[r][n] = weight[b, r, n]: in place, or staged as [reduced][outputs] accumulators.
      Gemm<Acc> g{};
      if constexpr (kInPlace) {
        g.a = weight, g.a_step = ws[1], g.a_row = ws[2];
      } else {
        Acc* staged = thread_buffer<Acc, kStagedA>(j.reduced * j.outputs);
        stage(weight, ws[1], ws[2], j.reduced, j.outputs, staged, j.outputs);
        g.a = staged, g.a_step = j.outputs, g.a_row = 1;
      }
      g.depth = j.reduced, g.rows = j.outputs, g.accumulate = false;
      const T* input = static_cast<const T*>(j.input) + b * j.input_stride[0];
      T* out = static_cast<T*>(j.out) + b * j.outputs * j.positions;
      int64_t p = p0;
      if constexpr (kInPlace) {
        // Whole vectors straight from the input rows into the output rows.
        if (j.input_stride[2] == 1) {
          g.b = input + p0, g.b_step = j.input_stride[1];
          g.c = out + p0, g.c_row = j.positions;
          g.columns = (p1 - p0) / simd.lanes * simd.lanes;
          simd.gemm(g);
          p += g.columns;
        }
      }
      if (p == p1) return;
      // The rest through buffers: B's columns staged with zeros up to whole vectors.
      const int64_t width = round_up(p1 - p, simd.lanes);
      Acc* rows = thread_buffer<Acc, kStagedB>(j.reduced * width);
      stage(input + p * j.input_stride[2], j.input_stride[1], j.input_stride[2], j.reduced, p1 - p, rows, width);
      g.b = rows, g.b_step = width;
      g.c = thread_buffer<Acc, kSums>(j.outputs * width), g.c_row = width;
      g.columns = width;
      simd.gemm(g);
      write_rounded(g.c, width, j.outputs, p1 - p, out + p, j.positions);
    }
  };

  // ---- kernel gradient: items are (kernel sample, block of taps)
  struct KernelGradientPlan {
    const KernelGradient& job;
    int64_t block, blocks;

    KernelGradientPlan(const KernelGradient& j, const Simd<Acc>& simd) : job(j) {
      const int64_t samples = j.shared ? j.batch : 1;
      std::tie(block, blocks) = column_blocks(j.taps, simd.tile_columns, j.channels * j.positions * samples);
    }
    Items items() const {
      const int64_t samples = job.shared ? job.batch : 1;
      return {job.kernel_batch() * blocks, std::max<int64_t>(1, job.channels * job.positions * samples * block)};
    }

    void run(int64_t item, const Simd<Acc>& simd) const {
      const KernelGradient& j = job;
      const int64_t kb = item / blocks, k0 = item % blocks * block, k1 = std::min(j.taps, k0 + block);
      if (k0 >= k1) return;
      const int64_t width = round_up(k1 - k0, simd.lanes);
      Acc* sums = thread_buffer<Acc, kSums>(j.channels * width);
      std::fill(sums, sums + j.channels * width, Acc(0));
      Acc* grad_t = thread_buffer<Acc, kStagedB>(j.positions * width);
      Gemm<Acc> g{};
      g.b = grad_t, g.b_step = width;
      g.c = sums, g.c_row = width;
      g.depth = j.positions, g.rows = j.channels, g.columns = width, g.accumulate = true;
      const int64_t* ss = j.search_stride;
      const int64_t* gs = j.grad_stride;
      const int64_t first = j.shared ? 0 : kb, last = j.shared ? j.batch : kb + 1;
      for (int64_t b = first; b < last; ++b) {
        const T* search = static_cast<const T*>(j.search) + b * ss[0];
        const T* grad = static_cast<const T*>(j.grad) + b * gs[0] + k0 * gs[1];
        stage_transposed(grad, gs[1], gs[2], k1 - k0, j.positions, grad_t, width, simd);
        // A[p][c] = search[b, c, p]: in place, or staged as [channels][positions] accumulators.
        if constexpr (kInPlace) {
          g.a = search, g.a_step = ss[2], g.a_row = ss[1];
        } else {
          Acc* staged = thread_buffer<Acc, kStagedA>(j.channels * j.positions);
          stage(search, ss[1], ss[2], j.channels, j.positions, staged, j.positions);
          g.a = staged, g.a_step = 1, g.a_row = j.positions;
        }
        simd.gemm(g);
      }
      write_rounded(sums, width, j.channels, k1 - k0, static_cast<T*>(j.out) + kb * j.channels * j.taps + k0, j.taps);
    }

    // dst[p * width + k] = grad[k * k_stride + p * p_stride] for k < taps, zeros for the
    // rest of each row of width: lanes x lanes blocks in registers where it can.
    static void stage_transposed(const T* grad, int64_t k_stride, int64_t p_stride, int64_t taps, int64_t positions,
                                 Acc* dst, int64_t width, const Simd<Acc>& simd) {
      int64_t k = 0;
      if constexpr (kInPlace) {
        if (p_stride == 1) {
          for (; k + simd.lanes <= taps; k += simd.lanes)
            simd.transpose({grad + k * k_stride, k_stride, dst + k, width, positions});
        }
      }
      for (int64_t p = 0; p < positions; ++p) {
        Acc* to = dst + p * width;
        for (int64_t t = k; t < taps; ++t) to[t] = static_cast<Acc>(grad[t * k_stride + p * p_stride]);
        std::fill(to + taps, to + width, Acc(0));
      }
    }
  };
};

// Runs run(kind, item) for every item of every kind, the kinds in order. Above kSerialWork
// multiply-adds the threads take the next item as they finish one, so that a thread the OS
// keeps waiting (on a shared machine) leaves its items to the others; which thread computes
// an item never changes its bits.
template <typename Run>
void run_items(const std::vector<Items>& kinds, const Run& run) {
  int64_t count = 0, work = 0;
  for (const Items& kind : kinds) count += kind.count, work += kind.count * kind.cost;
  auto run_index = [&](int64_t index) {
    for (size_t kind = 0; kind < kinds.size(); index -= kinds[kind].count, ++kind) {
      if (index < kinds[kind].count) return run(kind, index);
    }
  };
  const int threads = at::get_num_threads();
  if (work < kSerialWork || threads == 1 || count == 1) {
    for (int64_t index = 0; index < count; ++index) run_index(index);
    return;
  }
  std::atomic<int64_t> next{0};
  at::parallel_for(0, threads, 1, [&](int64_t, int64_t) {
    for (int64_t index = next++; index < count; index = next++) run_index(index);
  });
}

}  // namespace

void forward_cpu(c10::ScalarType dtype, const Correlation& forward) {
  with_element_type(dtype, [&](auto tag) {
    using K = Kernels<decltype(tag)>;
    const auto simd_kernels = simd<typename K::Acc>();
    const typename K::CorrelationPlan plan(forward, simd_kernels);
    run_items({plan.items()}, [&](size_t, int64_t item) { plan.run(item, simd_kernels); });
  });
}

void backward_cpu(c10::ScalarType dtype, const Correlation* grad_search, const KernelGradient* grad_kernel) {
  with_element_type(dtype, [&](auto tag) {
    using K = Kernels<decltype(tag)>;
    const auto simd_kernels = simd<typename K::Acc>();
    // Grad kernel's items first: with a shared kernel they are the long ones.
    const Correlation none_search{};
    const KernelGradient none_kernel{};
    const typename K::KernelGradientPlan kernel_plan(grad_kernel ? *grad_kernel : none_kernel, simd_kernels);
    const typename K::CorrelationPlan search_plan(grad_search ? *grad_search : none_search, simd_kernels);
    run_items({kernel_plan.items(), search_plan.items()}, [&](size_t kind, int64_t item) {
      if (kind == 0) {
        kernel_plan.run(item, simd_kernels);
      } else {
        search_plan.run(item, simd_kernels);
      }
    });
  });
}

}  // namespace snlt_fast::xcorr_pixelwise
