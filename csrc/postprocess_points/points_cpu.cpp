// CPU kernel of track_postprocess_points: T arithmetic as in postprocess_math.h and
// points_math.h, cells vectorized, and whole targets shared between torch's threads
// (NanoTrack's maps have 225 or 256 cells: too few to split one between threads).
#include <algorithm>
#include <cmath>
#include <vector>

#include <ATen/Parallel.h>

#include "postprocess_points/points_kernels.h"
#include "postprocess_points/points_math.h"

namespace snlt_fast::postprocess {
namespace {

// Targets whose maps hold this many cells in all go to one thread: fewer would cost more in
// waking a thread than they save.
constexpr int64_t kCellsPerThread = 1024;

// One target's heads and boxes, and once known its aggregation weights.
template <typename T>
struct PointTarget {
  const T* cls_vis;
  const T* cls_nl;  // nullptr: the visual head only
  PointBoxes<T> boxes;
  T w_vis = 1, w_nl = 0, h_vis = 0, h_nl = static_cast<T>(NAN);

  PointTarget(const PointInputs<T>& inputs, int64_t b, int64_t cells, double center)
      : cls_vis(inputs.heads.cls_vis + b * 2 * cells),
        cls_nl(inputs.heads.cls_nl == nullptr ? nullptr : inputs.heads.cls_nl + b * 2 * cells),
        boxes{inputs.heads.loc_vis + b * 4 * cells,
              inputs.heads.loc_nl == nullptr ? nullptr : inputs.heads.loc_nl + b * 4 * cells, inputs.points, cells,
              static_cast<T>(center)} {}

  bool has_nl() const { return cls_nl != nullptr; }

  template <bool kNl>
  SNLT_HD BasicBox<T> box(int64_t n) const {
    return boxes.template fused<kNl>(w_vis, w_nl, n);
  }

  // The fused score of cell n from the heads' probabilities.
  template <bool kNl>
  SNLT_HD T score(const T* p_vis, const T* p_nl, int64_t n) const {
    if constexpr (kNl) return w_vis * p_vis[n] + w_nl * p_nl[n];
    return p_vis[n];
  }
};

// The penalty's and window's per-target constants, in T.
template <typename T>
struct PointPenalty {
  const T* window;
  BasicTargetShape<T> target;
  T penalty_k, window_influence;

  PointPenalty(const T* window_, const T* target_size, const TrackParams& params)
      : window(window_),
        target(target_shape<T>(target_size)),
        penalty_k(static_cast<T>(params.penalty_k)),
        window_influence(static_cast<T>(params.window_influence)) {}

  SNLT_HD T of(const BasicBox<T>& box) const { return size_penalty<ExactMath<T>, T>(box.w, box.h, target, penalty_k); }
};

// A head's probabilities into p[cells], and its entropy.
template <typename T>
SNLT_VECTOR_TARGETS T head_entropy(const T* cls, int64_t cells, T* p) {
  T lanes[kEntropyLanes] = {};
  for (int64_t begin = 0; begin < cells; begin += kEntropyLanes) {
    const int64_t count = std::min<int64_t>(kEntropyLanes, cells - begin);
#pragma omp simd
    for (int64_t l = 0; l < count; ++l) {
      const T probability = foreground_probability<ExactMath<T>, T>(cls[begin + l], cls[cells + begin + l]);
      p[begin + l] = probability;
      lanes[l] = lanes[l] + entropy_term<ExactMath<T>, T>(probability);
    }
  }
  return -lane_tree_sum(lanes);
}

// Every cell's pscore into pscore[cells].
template <bool kNl, typename T>
SNLT_VECTOR_TARGETS void pscores(const PointTarget<T>& target, const PointPenalty<T>& penalty, const T* p_vis,
                                 const T* p_nl, T* pscore) {
  // Locals, not members: a store through T* could alias the structs and force reloads.
  const PointTarget<T> local = target;
  const PointPenalty<T> local_penalty = penalty;
  const int64_t cells = target.boxes.cells;
#pragma omp simd
  for (int64_t n = 0; n < cells; ++n) {
    const BasicBox<T> box = local.template box<kNl>(n);
    pscore[n] = windowed_score<T>(local_penalty.of(box), local.template score<kNl>(p_vis, p_nl, n),
                                  local_penalty.window[n], local_penalty.window_influence);
  }
}

// The contract's index: the first NaN, else the first maximum.
template <typename T>
SNLT_VECTOR_TARGETS int64_t first_best(const T* values, int64_t cells) {
  T top = -static_cast<T>(INFINITY);
  int nans = 0;
#pragma omp simd reduction(max : top) reduction(+ : nans)
  for (int64_t n = 0; n < cells; ++n) {
    top = values[n] > top ? values[n] : top;  // never a NaN
    nans += values[n] != values[n];
  }
  int64_t n = 0;
  if (nans > 0) {
    while (values[n] == values[n]) ++n;
  } else {
    while (values[n] != top) ++n;
  }
  return n;
}

template <typename T>
struct Workspace {
  std::vector<T> p_vis, p_nl, pscore;
};

template <typename T>
Workspace<T>& thread_workspace() {
  thread_local Workspace<T> workspace;
  return workspace;
}

template <bool kNl, typename T>
void track_target(PointTarget<T>& target, const PointPenalty<T>& penalty, const PointParams& params,
                  Workspace<T>& workspace, const BasicTrackOutputs<T>& out, int64_t b) {
  const int64_t cells = target.boxes.cells;
  workspace.p_vis.resize(cells);
  workspace.p_nl.resize(kNl ? cells : 0);
  workspace.pscore.resize(cells);
  const T* p_vis = workspace.p_vis.data();
  const T* p_nl = workspace.p_nl.data();
  target.h_vis = head_entropy(target.cls_vis, cells, workspace.p_vis.data());
  if constexpr (kNl) {
    target.h_nl = head_entropy(target.cls_nl, cells, workspace.p_nl.data());
    modality_weights<ExactMath<T>, T>(static_cast<T>(params.track.alpha), target.h_vis, target.h_nl, &target.w_vis,
                                      &target.w_nl);
  }
  pscores<kNl>(target, penalty, p_vis, p_nl, workspace.pscore.data());
  const int64_t best = first_best(workspace.pscore.data(), cells);
  const BasicBox<T> box = target.template box<kNl>(best);
  store_track_result(target, best, box, target.template score<kNl>(p_vis, p_nl, best), penalty.of(box),
                     penalty.window[best], params.track, out, b);
}

}  // namespace

template <typename T>
void track_points_cpu(PointInputs<T> inputs, Geometry geometry, PointParams params, BasicTrackOutputs<T> out) {
  const int64_t cells = geometry.cells();
  const int64_t grain = std::max<int64_t>(1, kCellsPerThread / cells);
  at::parallel_for(0, geometry.batch, grain, [&](int64_t begin, int64_t end) {
    Workspace<T>& workspace = thread_workspace<T>();
    for (int64_t b = begin; b < end; ++b) {
      PointTarget<T> target(inputs, b, cells, params.center);
      const PointPenalty<T> penalty(inputs.window, inputs.target_size + 2 * b, params.track);
      if (target.has_nl()) {
        track_target<true>(target, penalty, params, workspace, out, b);
      } else {
        track_target<false>(target, penalty, params, workspace, out, b);
      }
    }
  });
}

template void track_points_cpu<float>(PointInputs<float>, Geometry, PointParams, BasicTrackOutputs<float>);
template void track_points_cpu<double>(PointInputs<double>, Geometry, PointParams, BasicTrackOutputs<double>);

}  // namespace snlt_fast::postprocess
