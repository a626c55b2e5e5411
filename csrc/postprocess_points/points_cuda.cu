// CUDA kernel of track_postprocess_points: one block per target, one thread per entropy
// lane, T arithmetic as in postprocess_math.h and points_math.h (the contract's own exp and
// log, not CUDA's, so the same bits as the CPU), every reduction in a fixed order (results do
// not depend on thread scheduling).
#include <cstdint>
#include <cmath>

#include "postprocess/postprocess_cuda.cuh"
#include "postprocess_points/points_kernels.h"
#include "postprocess_points/points_math.h"

namespace snlt_fast::postprocess {
namespace {

constexpr int kThreads = kEntropyLanes;

// A target's statistics, as store_track_result reads them.
template <typename T>
struct Weights {
  T w_vis = 1, w_nl = 0, h_vis = 0, h_nl = static_cast<T>(NAN);
};

template <typename T>
__device__ T probability(const T* cls, int64_t cells, int64_t n) {
  return foreground_probability<ExactMath<T>, T>(cls[n], cls[cells + n]);
}

// A head's entropy: thread l is lane l, then the lanes' tree in shared memory.
template <typename T>
__device__ T head_entropy(const T* cls, int64_t cells, T* lanes) {
  T lane_sum = 0;
  for (int64_t n = threadIdx.x; n < cells; n += kEntropyLanes) {
    lane_sum = lane_sum + entropy_term<ExactMath<T>, T>(probability(cls, cells, n));
  }
  lanes[threadIdx.x] = lane_sum;
  return -block_lane_tree_sum(lanes);
}

template <bool kNl, typename T>
__global__ void __launch_bounds__(kThreads)
    track_points_kernel(PointInputs<T> inputs, Geometry geometry, PointParams params, BasicTrackOutputs<T> out) {
  __shared__ T lanes[kEntropyLanes];
  __shared__ T lane_values[kThreads];
  __shared__ int64_t lane_cells[kThreads];
  const int64_t b = blockIdx.x;
  const int64_t cells = geometry.cells();
  const T* cls_vis = inputs.heads.cls_vis + b * 2 * cells;
  const T* cls_nl = kNl ? inputs.heads.cls_nl + b * 2 * cells : nullptr;
  const PointBoxes<T> boxes{inputs.heads.loc_vis + b * 4 * cells, kNl ? inputs.heads.loc_nl + b * 4 * cells : nullptr,
                            inputs.points, cells, static_cast<T>(params.center)};
  Weights<T> weights;
  weights.h_vis = head_entropy(cls_vis, cells, lanes);
  if constexpr (kNl) {
    weights.h_nl = head_entropy(cls_nl, cells, lanes);
    modality_weights<ExactMath<T>, T>(static_cast<T>(params.track.alpha), weights.h_vis, weights.h_nl,
                                      &weights.w_vis, &weights.w_nl);
  }
  const auto score = [&](int64_t n) {
    const T p_vis = probability(cls_vis, cells, n);
    return kNl ? weights.w_vis * p_vis + weights.w_nl * probability(cls_nl, cells, n) : p_vis;
  };
  const BasicTargetShape<T> shape = target_shape<T>(inputs.target_size + 2 * b);
  const T penalty_k = static_cast<T>(params.track.penalty_k);
  const T window_influence = static_cast<T>(params.track.window_influence);
  // Each thread's best cell, then the block's under the same total order.
  T best_value = -static_cast<T>(INFINITY);
  int64_t best = INT64_MAX;
  for (int64_t n = threadIdx.x; n < cells; n += kThreads) {
    const BasicBox<T> box = boxes.template fused<kNl>(weights.w_vis, weights.w_nl, n);
    const T penalty = size_penalty<ExactMath<T>, T>(box.w, box.h, shape, penalty_k);
    const T value = windowed_score<T>(penalty, score(n), inputs.window[n], window_influence);
    if (ranks_before<T>(value, n, best_value, best)) {
      best_value = value;
      best = n;
    }
  }
  best = block_best_cell<kThreads>(best_value, best, lane_values, lane_cells);
  if (threadIdx.x != 0) return;
  const BasicBox<T> box = boxes.template fused<kNl>(weights.w_vis, weights.w_nl, best);
  const T penalty = size_penalty<ExactMath<T>, T>(box.w, box.h, shape, penalty_k);
  store_track_result(weights, best, box, score(best), penalty, inputs.window[best], params.track, out, b);
}

}  // namespace

template <typename T>
cudaError_t track_points_cuda(PointInputs<T> inputs, Geometry geometry, PointParams params,
                              BasicTrackOutputs<T> out, cudaStream_t stream) {
  const auto kernel = inputs.heads.cls_nl != nullptr ? &track_points_kernel<true, T> : &track_points_kernel<false, T>;
  kernel<<<static_cast<unsigned>(geometry.batch), kThreads, 0, stream>>>(inputs, geometry, params, out);
  return cudaGetLastError();
}

template cudaError_t track_points_cuda<float>(PointInputs<float>, Geometry, PointParams, BasicTrackOutputs<float>,
                                              cudaStream_t);
template cudaError_t track_points_cuda<double>(PointInputs<double>, Geometry, PointParams, BasicTrackOutputs<double>,
                                               cudaStream_t);

}  // namespace snlt_fast::postprocess
