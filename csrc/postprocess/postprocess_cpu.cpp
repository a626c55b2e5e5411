// CPU kernels of dynamic_aggregate and track_postprocess: float64 arithmetic as in
// postprocess_math.h, cells vectorized, and work shared between torch's threads (the
// network that ran just before leaves them awake): whole targets when there are enough
// of them, else the cells of maps of more than kCellsPerThread cells. Threads take a map's
// lanes, not runs of its cells: cell n belongs to entropy lane n % kEntropyLanes, so each
// thread adds its lanes' entropy terms in the contract's order as it goes; the argmax,
// whose order is a strict total order (ranks_before), takes lanes too.
#include <algorithm>
#include <limits>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>

#include "postprocess/postprocess_kernels.h"
#include "postprocess/postprocess_math.h"

namespace snlt_fast::postprocess {
namespace {

// The anchor form's exp and log on the CPU: vectorizable polynomials with exactly rounded fmas
// (postprocess_math.h).
using VectorMath = PolynomialMath<FusedMulAdd>;

// A target's map of up to this many cells (its heads' cells, in the heads' pass) stays on
// one thread. A map whose argmax is split between threads then has cells in every lane, so
// no thread's range of lanes is empty.
constexpr int64_t kCellsPerThread = 2048;
static_assert(kCellsPerThread >= kEntropyLanes);

// Threads take the lanes in blocks of kLaneBlock.
constexpr int64_t kLaneBlock = 16;
constexpr int64_t kLaneBlocks = kEntropyLanes / kLaneBlock;

// Steps of kEntropyLanes cells a map of `cells` cells takes (the last may be partial).
inline int64_t lane_steps(int64_t cells) { return (cells + kEntropyLanes - 1) / kEntropyLanes; }

// The cells of lanes [first_lane, first_lane + lane_count): the runs [begin, run_end(begin))
// for begin = first_lane, first_lane + kEntropyLanes, ... < cells. The vectorized loops walk
// the runs themselves: a call per run would cost as much as its cells.
struct LaneRange {
  int64_t first_lane, lane_count;

  // Lane blocks [begin, end) of at::parallel_for's split.
  static LaneRange of_blocks(int64_t begin, int64_t end) { return {begin * kLaneBlock, (end - begin) * kLaneBlock}; }

  SNLT_HD int64_t run_end(int64_t begin, int64_t cells) const {
    return begin + lane_count < cells ? begin + lane_count : cells;
  }

  // A room holds an entry per cell of the range, in run order; the ranges' rooms are
  // disjoint, and each is contiguous (threads writing interleaved lines slow each other).
  int64_t room_offset(int64_t cells) const { return first_lane * lane_steps(cells); }
};

// The lane blocks (of one head or of several) each thread takes: enough that a thread gets
// kCellsPerThread cells.
inline int64_t lane_blocks_per_thread(int64_t cells) {
  return std::max<int64_t>(1, kCellsPerThread * kLaneBlocks / std::max<int64_t>(cells, 1));
}

// The range's cells of one head: probabilities into p, entropy terms added to lanes[l] for
// lane first_lane + l, in step order.
// Each run takes two loops, the probabilities (exp, division) into a buffer on the stack,
// then their logs (a division again) and the stores: a cell's whole chain in one loop is
// too long for enough cells to be in flight at once (one loop: 16% slower). The
// probabilities go through the stack rather than p because reading p back right after
// writing it makes cores that share its lines (ranges of one head) fight over them.
template <typename T>
SNLT_VECTOR_TARGETS void head_lanes(const T* cls, int64_t cells, LaneRange range, double* p, double* lanes) {
  double run[kEntropyLanes];
  for (int64_t begin = range.first_lane; begin < cells; begin += kEntropyLanes) {
    const int64_t count = range.run_end(begin, cells) - begin;
#pragma omp simd
    for (int64_t l = 0; l < count; ++l) {
      run[l] = foreground_probability<VectorMath>(cls[begin + l], cls[cells + begin + l]);
    }
#pragma omp simd
    for (int64_t l = 0; l < count; ++l) {
      p[begin + l] = run[l];
      lanes[l] = lanes[l] + entropy_term<VectorMath>(run[l]);
    }
  }
}

// A target's head probabilities into p[head][cells] and their entropies into entropy[head],
// for the `heads` heads whose logits are cls[head]. Threads take the heads' lane blocks in
// order, so that two threads take one head each (a 5-9% faster pass than both taking half of
// each head's lanes: no lines of p shared between cores).
template <typename T>
void head_probabilities(const T* const* cls, int heads, int64_t cells, double* p, double* entropy) {
  double lanes[2][kEntropyLanes];
  at::parallel_for(0, heads * kLaneBlocks, lane_blocks_per_thread(cells), [&](int64_t begin, int64_t end) {
    for (int head = 0; head < heads; ++head) {
      const int64_t head_begin = std::max<int64_t>(begin, head * kLaneBlocks) - head * kLaneBlocks;
      const int64_t head_end = std::min<int64_t>(end, (head + 1) * kLaneBlocks) - head * kLaneBlocks;
      if (head_begin >= head_end) continue;
      const LaneRange range = LaneRange::of_blocks(head_begin, head_end);
      // The partial sums live on this thread's stack while it adds to them.
      double partial[kEntropyLanes] = {};
      head_lanes(cls[head], cells, range, p + head * cells, partial);
      std::copy_n(partial, range.lane_count, lanes[head] + range.first_lane);
    }
  });
  for (int head = 0; head < heads; ++head) entropy[head] = -lane_tree_sum(lanes[head]);
}

// One target's head probabilities [heads][cells] and entropies [heads].
struct HeadProbabilities {
  int64_t cells;
  std::vector<double> values;
  double entropy[2];

  template <typename T>
  void compute(const Heads<T>& heads, const Geometry& geometry, int64_t b) {
    cells = geometry.cells();
    const int count = heads.cls_nl != nullptr ? 2 : 1;
    const T* cls[2] = {heads.cls_vis + b * 2 * cells, count == 2 ? heads.cls_nl + b * 2 * cells : nullptr};
    values.resize(count * cells);
    head_probabilities(cls, count, cells, values.data(), entropy);
  }

  const double* of(int head) const { return values.data() + head * cells; }
};

// Buffers reused from call to call (one set per thread that runs targets).
struct Workspace {
  HeadProbabilities probabilities;
  std::vector<float> bound;  // the argmax's per-cell bounds for one target
  std::vector<int64_t> contenders;  // the cells whose pscore is evaluated
  std::vector<float> contender_pscore;
  std::vector<double> vis_box;  // dynamic_aggregate's visual boxes of one target
  std::vector<double> deltas;   // and its float32 deltas in float64
};

// One target's inputs, its head probabilities and weights: evaluates the contract at any cell.
template <typename T>
struct Target {
  const T* loc_vis;
  const T* loc_nl;
  const double* anchors;
  int64_t cells;
  const double* p_vis;
  const double* p_nl;
  double w_vis, w_nl, h_vis, h_nl;

  Target(const Heads<T>& heads, const double* anchors_, const HeadProbabilities& probabilities, int64_t b,
         double alpha)
      : loc_vis(heads.loc_vis + b * 4 * probabilities.cells),
        loc_nl(nullptr),
        anchors(anchors_),
        cells(probabilities.cells),
        p_vis(probabilities.of(0)),
        p_nl(nullptr),
        w_vis(1.0),
        w_nl(0.0),
        h_vis(probabilities.entropy[0]),
        h_nl(std::numeric_limits<double>::quiet_NaN()) {
    if (heads.cls_nl != nullptr) {
      loc_nl = heads.loc_nl + b * 4 * cells;
      p_nl = probabilities.of(1);
      h_nl = probabilities.entropy[1];
      modality_weights<VectorMath>(alpha, h_vis, h_nl, &w_vis, &w_nl);
    }
  }

  // `other` reading the deltas loc_vis_, loc_nl_ (its own, converted) instead of its own.
  template <typename U>
  Target(const Target<U>& other, const T* loc_vis_, const T* loc_nl_)
      : loc_vis(loc_vis_),
        loc_nl(loc_nl_),
        anchors(other.anchors),
        cells(other.cells),
        p_vis(other.p_vis),
        p_nl(other.p_nl),
        w_vis(other.w_vis),
        w_nl(other.w_nl),
        h_vis(other.h_vis),
        h_nl(other.h_nl) {}

  bool has_nl() const { return p_nl != nullptr; }

  // kNl == has_nl(): a compile-time switch, so that the loops over cells have no branch.
  template <bool kNl>
  SNLT_HD double score(int64_t n) const {
    if constexpr (kNl) return w_vis * p_vis[n] + w_nl * p_nl[n];
    return p_vis[n];
  }

  SNLT_HD Box head_box(const T* loc, int64_t n) const {
    return decode<VectorMath>(loc[n], loc[cells + n], loc[2 * cells + n], loc[3 * cells + n], anchors[n],
                              anchors[cells + n], anchors[2 * cells + n], anchors[3 * cells + n]);
  }

  template <bool kNl>
  SNLT_HD Box box(int64_t n) const {
    if constexpr (kNl) return fuse(w_vis, head_box(loc_vis, n), w_nl, head_box(loc_nl, n));
    return head_box(loc_vis, n);
  }
};

// Per-target constants of the penalty and window.
struct Penalty {
  const double* window;
  TargetShape target;
  double penalty_k, window_influence;

  Penalty(const double* window_, const double* target_size, const TrackParams& params)
      : window(window_),
        target(target_shape(target_size)),
        penalty_k(params.penalty_k),
        window_influence(params.window_influence) {}

  SNLT_HD double of(const Box& box) const { return size_penalty<VectorMath>(box.w, box.h, target, penalty_k); }

  template <bool kNl, typename T>
  SNLT_HD float pscore(const Target<T>& target, int64_t n) const {
    return static_cast<float>(
        windowed_score(of(target.template box<kNl>(n)), target.template score<kNl>(n), window[n], window_influence));
  }
};

// A cell and its float32 pscore, ordered by ranks_before: a strict total order, so that
// the best of several ranges is the best of their bests, whichever thread found them.
struct Candidate {
  float value = -std::numeric_limits<float>::infinity();
  int64_t index = std::numeric_limits<int64_t>::max();

  void offer(float other_value, int64_t other_index) {
    if (ranks_before(other_value, other_index, value, index)) *this = {other_value, other_index};
  }
  static Candidate best_of(Candidate a, Candidate b) {
    a.offer(b.value, b.index);
    return a;
  }
};

// best_in(LaneRange, Candidate) -> the best Candidate of the range's cells, over all lanes
// in parallel (each range has cells).
template <typename BestIn>
int64_t best_over_lanes(int64_t cells, const BestIn& best_in) {
  return at::parallel_reduce(
             0, kLaneBlocks, lane_blocks_per_thread(cells), Candidate{},
             [&](int64_t begin, int64_t end, Candidate best) { return best_in(LaneRange::of_blocks(begin, end), best); },
             Candidate::best_of)
      .index;
}

// Size deltas within +-30 on anchors within [1e-10, 1e10] give box sizes within
// [1e-24, 1e24] (either weight is at least 1/2), and with a target whose context size
// and aspect ratio are within [1e-30, 1e30] (see tame_target) the product r_c * s_c is
// finite and at least 1, so the penalty is a number in [0, 1] for any penalty_k >= 0.
inline bool sizes_are_tame(double delta_w, double delta_h, double anchor_w, double anchor_h) {
  // & rather than &&: no branches in the vectorized loop.
  return (delta_w >= -30.0) & (delta_w <= 30.0) & (delta_h >= -30.0) & (delta_h <= 30.0) &
         (anchor_w >= 1e-10) & (anchor_w <= 1e10) & (anchor_h >= 1e-10) & (anchor_h <= 1e10);
}

inline bool tame_target(const Penalty& penalty) {
  const TargetShape& target = penalty.target;
  return target.context_size >= 1e-30 && target.context_size <= 1e30 && target.ratio >= 1e-30 && target.ratio <= 1e30;
}

// Upper bounds of the float32 pscores of the range's cells into its room `bound`, NaN where
// no bound is sure to hold (or the score is NaN): such cells always have their pscore
// evaluated. Puts into `seeds` each lane block's cell with the highest bound (the range's
// first cell where no bound is a number) and returns how many.
// penalty <= 1 gives pscore <= score*(1 - wi) + window*wi, and rounding is monotonic,
// so the float32 bound is at least the float32 pscore.
template <bool kNl, typename T>
SNLT_VECTOR_TARGETS int64_t pscore_bounds(const Target<T>& target, const Penalty& penalty, LaneRange range,
                                          float* bound, int64_t* seeds) {
  // Locals, not members: a store through float* could alias the structs and force reloads.
  const int64_t cells = target.cells;
  const double *anchor_w = target.anchors + 2 * cells, *anchor_h = target.anchors + 3 * cells;
  const T *vis_w = target.loc_vis + 2 * cells, *vis_h = target.loc_vis + 3 * cells;
  const T *nl_w = kNl ? target.loc_nl + 2 * cells : nullptr, *nl_h = kNl ? target.loc_nl + 3 * cells : nullptr;
  const double* window = penalty.window;
  const double window_influence = penalty.window_influence;
  const Target<T> local = target;
  // Each lane's highest bound and its cell: running maxima, vectorized with the bounds.
  float lane_max[kEntropyLanes];
  int64_t lane_cell[kEntropyLanes];
  std::fill_n(lane_max, kEntropyLanes, -std::numeric_limits<float>::infinity());
  std::fill_n(lane_cell, kEntropyLanes, range.first_lane);
  for (int64_t begin = range.first_lane; begin < cells; begin += kEntropyLanes) {
    const int64_t count = range.run_end(begin, cells) - begin;
#pragma omp simd
    for (int64_t l = 0; l < count; ++l) {
      const int64_t n = begin + l;
      const float value =
          static_cast<float>(windowed_score(1.0, local.template score<kNl>(n), window[n], window_influence));
      bool tame = sizes_are_tame(vis_w[n], vis_h[n], anchor_w[n], anchor_h[n]);
      if constexpr (kNl) tame = tame & sizes_are_tame(nl_w[n], nl_h[n], anchor_w[n], anchor_h[n]);
      const float limit = tame ? value : std::numeric_limits<float>::quiet_NaN();
      bound[l] = limit;
      const bool higher = limit > lane_max[l];
      lane_max[l] = higher ? limit : lane_max[l];
      lane_cell[l] = higher ? n : lane_cell[l];
    }
    bound += count;
  }
  int64_t seed_count = 0;
  for (int64_t block = 0; block < range.lane_count; block += kLaneBlock) {
    int64_t best = block;
    for (int64_t l = block + 1; l < block + kLaneBlock; ++l) best = lane_max[l] > lane_max[best] ? l : best;
    seeds[seed_count++] = lane_cell[best];
  }
  return seed_count;
}

// The range's cells that may reach `reached` (all but those bounded below it), in order,
// into `contenders`; `bound` is the range's room. Returns how many.
SNLT_VECTOR_TARGETS int64_t collect_contenders(const float* bound, float reached, int64_t cells, LaneRange range,
                                               int64_t* contenders) {
  // Few cells qualify: a vectorized count skips whole chunks without one.
  constexpr int64_t kChunk = 64;
  int64_t found = 0;
  for (int64_t begin = range.first_lane; begin < cells; begin += kEntropyLanes) {
    const int64_t count = range.run_end(begin, cells) - begin;
    for (int64_t start = 0; start < count; start += kChunk) {
      const int64_t stop = start + kChunk < count ? start + kChunk : count;
      int in_chunk = 0;
#pragma omp simd reduction(+ : in_chunk)
      for (int64_t l = start; l < stop; ++l) in_chunk += !(bound[l] < reached);
      if (in_chunk == 0) continue;
      for (int64_t l = start; l < stop; ++l) {
        contenders[found] = begin + l;
        found += !(bound[l] < reached);
      }
    }
    bound += count;
  }
  return found;
}

// The float32 pscores of `count` cells, vectorized over the list (gathered loads).
template <bool kNl, typename T>
SNLT_VECTOR_TARGETS void pscores_of(const Target<T>& target, const Penalty& penalty, const int64_t* cells,
                                    int64_t count, float* pscore) {
  const Target<T> local_target = target;
  const Penalty local_penalty = penalty;
#pragma omp simd
  for (int64_t k = 0; k < count; ++k) pscore[k] = local_penalty.template pscore<kNl>(local_target, cells[k]);
}

// The contract's best cell, evaluating the full penalty only where the bound allows a win.
template <bool kNl, typename T>
int64_t best_cell(const Target<T>& target, const Penalty& penalty, Workspace& workspace) {
  const int64_t cells = target.cells;
  // penalty_k = 0 (the long-term tracker's lost mode) qualifies: the penalty is then 1.
  const bool bounded = penalty.penalty_k >= 0.0 && penalty.penalty_k < std::numeric_limits<double>::infinity() &&
                       penalty.window_influence >= 0.0 && penalty.window_influence <= 1.0 && tame_target(penalty);
  const int64_t room = kEntropyLanes * lane_steps(cells);
  workspace.contenders.resize(room);
  workspace.contender_pscore.resize(room);
  // Each range writes only its own room of the workspace.
  int64_t* contenders = workspace.contenders.data();
  float* contender_pscore = workspace.contender_pscore.data();
  auto best_of_contenders = [&](int64_t offset, int64_t count, Candidate best) {
    pscores_of<kNl>(target, penalty, contenders + offset, count, contender_pscore + offset);
    for (int64_t k = offset; k < offset + count; ++k) best.offer(contender_pscore[k], contenders[k]);
    return best;
  };
  if (!bounded) {
    return best_over_lanes(cells, [&](LaneRange range, Candidate best) {
      const int64_t offset = range.room_offset(cells);
      int64_t count = 0;
      for (int64_t begin = range.first_lane; begin < cells; begin += kEntropyLanes) {
        const int64_t end = range.run_end(begin, cells);
        for (int64_t n = begin; n < end; ++n) contenders[offset + count++] = n;
      }
      return best_of_contenders(offset, count, best);
    });
  }
  workspace.bound.resize(room);
  return best_over_lanes(cells, [&](LaneRange range, Candidate best) {
    const int64_t offset = range.room_offset(cells);
    float* bound = workspace.bound.data() + offset;
    // Cells with the highest bounds are good guesses of the range's winner: the highest of
    // their pscores is reached, and no cell whose bound is below it can win. Several
    // guesses, one per lane block, because the highest bound's penalty may be far below 1
    // (at the benchmark's shapes: 9 contenders left instead of 69).
    int64_t seeds[kLaneBlocks];
    float seed_pscores[kLaneBlocks];
    const int64_t seed_count = pscore_bounds<kNl>(target, penalty, range, bound, seeds);
    pscores_of<kNl>(target, penalty, seeds, seed_count, seed_pscores);
    float reached = -std::numeric_limits<float>::infinity();  // a NaN pscore is skipped: its cell is a contender
    for (int64_t k = 0; k < seed_count; ++k) reached = seed_pscores[k] > reached ? seed_pscores[k] : reached;
    return best_of_contenders(offset, collect_contenders(bound, reached, cells, range, contenders + offset), best);
  });
}

// Cells [begin, end) of one target's fused score [cells] and box [4, cells] maps;
// vis_box [4, cells] is scratch. (Float64 deltas only: fed float32 ones, GCC leaves
// this loop scalar.)
template <bool kNl>
SNLT_VECTOR_TARGETS void fused_maps(const Target<double>& target, int64_t begin, int64_t end, double* vis_box,
                                    float* score, float* box) {
  const int64_t cells = target.cells;
  if constexpr (kNl) {
    // The visual boxes in a loop of their own: with both heads' four exps in one loop
    // body, GCC's if-conversion gives up and the loop stays scalar (4x slower).
#pragma omp simd
    for (int64_t n = begin; n < end; ++n) {
      const Box vis = target.head_box(target.loc_vis, n);
      vis_box[n] = vis.cx;
      vis_box[cells + n] = vis.cy;
      vis_box[2 * cells + n] = vis.w;
      vis_box[3 * cells + n] = vis.h;
    }
  }
#pragma omp simd
  for (int64_t n = begin; n < end; ++n) {
    Box fused = target.head_box(kNl ? target.loc_nl : target.loc_vis, n);
    if constexpr (kNl) {
      const Box vis{vis_box[n], vis_box[cells + n], vis_box[2 * cells + n], vis_box[3 * cells + n]};
      fused = fuse(target.w_vis, vis, target.w_nl, fused);
    }
    score[n] = static_cast<float>(target.template score<kNl>(n));
    box[n] = static_cast<float>(fused.cx);
    box[cells + n] = static_cast<float>(fused.cy);
    box[2 * cells + n] = static_cast<float>(fused.w);
    box[3 * cells + n] = static_cast<float>(fused.h);
  }
}

SNLT_VECTOR_TARGETS void widen(const float* values, int64_t count, double* out) {
#pragma omp simd
  for (int64_t n = 0; n < count; ++n) out[n] = values[n];
}

// The target reading float64 deltas: its own, or float32 ones converted into the workspace.
template <typename T>
Target<double> with_float64_deltas(const Target<T>& target, Workspace& workspace) {
  if constexpr (std::is_same_v<T, double>) {
    return target;
  } else {
    const int64_t count = 4 * target.cells;
    workspace.deltas.resize(2 * count);
    double* vis = workspace.deltas.data();
    double* nl = target.has_nl() ? vis + count : nullptr;
    at::parallel_for(0, count, 4 * kCellsPerThread, [&](int64_t begin, int64_t end) {
      widen(target.loc_vis + begin, end - begin, vis + begin);
      if (nl != nullptr) widen(target.loc_nl + begin, end - begin, nl + begin);
    });
    return Target<double>(target, vis, nl);
  }
}

Workspace& thread_workspace() {
  thread_local Workspace workspace;
  return workspace;
}

// body(b, workspace) for each target b. With at least as many targets as threads, each
// thread takes whole targets (their cell loops then run on it alone); with fewer, the
// targets go one by one and each splits its cells between the threads.
template <typename Body>
void for_each_target(int64_t batch, const Body& body) {
  const auto targets = [&](int64_t begin, int64_t end) {
    Workspace& workspace = thread_workspace();
    for (int64_t b = begin; b < end; ++b) body(b, workspace);
  };
  // Not at::parallel_for(..., grain = batch): its serial path marks a parallel region,
  // which would keep the targets' own loops on one thread.
  if (batch > 1 && batch >= at::get_num_threads()) {
    at::parallel_for(0, batch, 1, targets);
  } else {
    targets(0, batch);
  }
}

}  // namespace

template <typename T>
void aggregate_cpu(Heads<T> heads, const double* anchors, Geometry geometry, double alpha, AggregateOutputs out) {
  const int64_t cells = geometry.cells();
  for_each_target(geometry.batch, [&](int64_t b, Workspace& workspace) {
    workspace.probabilities.compute(heads, geometry, b);
    const Target<double> target =
        with_float64_deltas(Target<T>(heads, anchors, workspace.probabilities, b, alpha), workspace);
    workspace.vis_box.resize(4 * cells);
    at::parallel_for(0, cells, kCellsPerThread, [&](int64_t begin, int64_t end) {
      float *score = out.score + b * cells, *box = out.box + b * 4 * cells;
      if (target.has_nl()) {
        fused_maps<true>(target, begin, end, workspace.vis_box.data(), score, box);
      } else {
        fused_maps<false>(target, begin, end, nullptr, score, box);
      }
    });
    store_stats(target, out.stats, b);
  });
}

template <typename T>
void track_cpu(Heads<T> heads, const double* anchors, const double* window, const double* target_size,
               Geometry geometry, TrackParams params, TrackOutputs out) {
  for_each_target(geometry.batch, [&](int64_t b, Workspace& workspace) {
    workspace.probabilities.compute(heads, geometry, b);
    const Target<T> target(heads, anchors, workspace.probabilities, b, params.alpha);
    const Penalty penalty(window, target_size + 2 * b, params);
    const bool nl = target.has_nl();
    const int64_t best =
        nl ? best_cell<true>(target, penalty, workspace) : best_cell<false>(target, penalty, workspace);
    const Box box = nl ? target.template box<true>(best) : target.template box<false>(best);
    const double score = nl ? target.template score<true>(best) : target.template score<false>(best);
    store_track_result(target, best, box, score, penalty.of(box), window[best], params, out, b);
  });
}

template void aggregate_cpu<float>(Heads<float>, const double*, Geometry, double, AggregateOutputs);
template void aggregate_cpu<double>(Heads<double>, const double*, Geometry, double, AggregateOutputs);
template void track_cpu<float>(Heads<float>, const double*, const double*, const double*, Geometry, TrackParams,
                               TrackOutputs);
template void track_cpu<double>(Heads<double>, const double*, const double*, const double*, Geometry, TrackParams,
                                TrackOutputs);

}  // namespace snlt_fast::postprocess
