// CUDA kernels of dynamic_aggregate and track_postprocess: one block per target, its
// first kEntropyLanes threads one per entropy lane, float64 arithmetic as in
// postprocess_math.h, every reduction in a fixed order (results do not depend on
// thread scheduling).
#include <cstdint>
#include <cmath>

#include "postprocess/postprocess_cuda.cuh"
#include "postprocess/postprocess_kernels.h"
#include "postprocess/postprocess_math.h"

namespace snlt_fast::postprocess {
namespace {

// The entropy uses kEntropyLanes threads; the per-cell work after it uses them all.
constexpr int kThreads = 2 * kEntropyLanes;

struct CudaMath {
  __host__ __device__ static double exp(double x) { return ::exp(x); }
  __host__ __device__ static double one_plus_exp(double x) { return 1.0 + ::exp(x); }
  __host__ __device__ static double log_positive(double x) { return ::log(x); }
};

// This block's target: evaluates the contract at any cell (probabilities recomputed, not stored).
template <typename T>
struct Target {
  const T* cls_vis;
  const T* cls_nl;  // nullptr: the visual head only
  const T* loc_vis;
  const T* loc_nl;
  const double* anchors;
  int64_t cells;
  double w_vis, w_nl, h_vis, h_nl;

  __device__ double probability(const T* cls, int64_t n) const {
    return foreground_probability<CudaMath>(cls[n], cls[cells + n]);
  }

  __device__ double score(int64_t n) const {
    const double p_vis = probability(cls_vis, n);
    return cls_nl == nullptr ? p_vis : w_vis * p_vis + w_nl * probability(cls_nl, n);
  }

  __device__ Box head_box(const T* loc, int64_t n) const {
    return decode<CudaMath>(loc[n], loc[cells + n], loc[2 * cells + n], loc[3 * cells + n], anchors[n],
                            anchors[cells + n], anchors[2 * cells + n], anchors[3 * cells + n]);
  }

  __device__ Box box(int64_t n) const {
    const Box vis = head_box(loc_vis, n);
    return cls_nl == nullptr ? vis : fuse(w_vis, vis, w_nl, head_box(loc_nl, n));
  }
};

// A head's entropy: thread l < kEntropyLanes is lane l, then the lanes' tree in shared memory.
template <typename T>
__device__ double head_entropy(const Target<T>& target, const T* cls, double* lanes) {
  if (threadIdx.x < kEntropyLanes) {
    double lane_sum = 0.0;
    for (int64_t n = threadIdx.x; n < target.cells; n += kEntropyLanes) {
      lane_sum += entropy_term<CudaMath>(target.probability(cls, n));
    }
    lanes[threadIdx.x] = lane_sum;
  }
  return -block_lane_tree_sum(lanes);
}

template <typename T>
__device__ Target<T> block_target(const Heads<T>& heads, const double* anchors, int64_t cells, double alpha,
                                  double* lanes) {
  const int64_t b = blockIdx.x;
  Target<T> target{heads.cls_vis + b * 2 * cells, nullptr, heads.loc_vis + b * 4 * cells, nullptr, anchors, cells,
                   1.0, 0.0, 0.0, static_cast<double>(NAN)};
  target.h_vis = head_entropy(target, target.cls_vis, lanes);
  if (heads.cls_nl != nullptr) {
    target.cls_nl = heads.cls_nl + b * 2 * cells;
    target.loc_nl = heads.loc_nl + b * 4 * cells;
    target.h_nl = head_entropy(target, target.cls_nl, lanes);
    modality_weights<CudaMath>(alpha, target.h_vis, target.h_nl, &target.w_vis, &target.w_nl);
  }
  return target;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) aggregate_kernel(Heads<T> heads, const double* anchors,
                                                             Geometry geometry, double alpha, AggregateOutputs out) {
  __shared__ double lanes[kEntropyLanes];
  const int64_t cells = geometry.cells();
  const Target<T> target = block_target(heads, anchors, cells, alpha, lanes);
  const int64_t b = blockIdx.x;
  float* score = out.score + b * cells;
  float* box = out.box + b * 4 * cells;
  for (int64_t n = threadIdx.x; n < cells; n += kThreads) {
    const Box fused = target.box(n);
    score[n] = static_cast<float>(target.score(n));
    box[n] = static_cast<float>(fused.cx);
    box[cells + n] = static_cast<float>(fused.cy);
    box[2 * cells + n] = static_cast<float>(fused.w);
    box[3 * cells + n] = static_cast<float>(fused.h);
  }
  if (threadIdx.x == 0) store_stats(target, out.stats, b);
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    track_kernel(Heads<T> heads, const double* anchors, const double* window, const double* target_size,
                 Geometry geometry, TrackParams params, TrackOutputs out) {
  __shared__ double lanes[kEntropyLanes];
  __shared__ float lane_values[kThreads];
  __shared__ int64_t lane_cells[kThreads];
  const int64_t cells = geometry.cells();
  const Target<T> target = block_target(heads, anchors, cells, params.alpha, lanes);
  const int64_t b = blockIdx.x;
  const TargetShape shape = target_shape(target_size + 2 * b);
  // Each thread's best cell, then the block's under the same total order.
  float best_value = -INFINITY;
  int64_t best = INT64_MAX;
  for (int64_t n = threadIdx.x; n < cells; n += kThreads) {
    const Box box = target.box(n);
    const double penalty = size_penalty<CudaMath>(box.w, box.h, shape, params.penalty_k);
    const float value = static_cast<float>(windowed_score(penalty, target.score(n), window[n], params.window_influence));
    if (ranks_before(value, n, best_value, best)) {
      best_value = value;
      best = n;
    }
  }
  best = block_best_cell<kThreads>(best_value, best, lane_values, lane_cells);
  if (threadIdx.x != 0) return;
  const Box box = target.box(best);
  const double score = target.score(best);
  const double penalty = size_penalty<CudaMath>(box.w, box.h, shape, params.penalty_k);
  store_track_result(target, best, box, score, penalty, window[best], params, out, b);
}

}  // namespace

template <typename T>
cudaError_t aggregate_cuda(Heads<T> heads, const double* anchors, Geometry geometry, double alpha,
                           AggregateOutputs out, cudaStream_t stream) {
  aggregate_kernel<T><<<static_cast<unsigned>(geometry.batch), kThreads, 0, stream>>>(heads, anchors, geometry,
                                                                                     alpha, out);
  return cudaGetLastError();
}

template <typename T>
cudaError_t track_cuda(Heads<T> heads, const double* anchors, const double* window, const double* target_size,
                       Geometry geometry, TrackParams params, TrackOutputs out, cudaStream_t stream) {
  track_kernel<T><<<static_cast<unsigned>(geometry.batch), kThreads, 0, stream>>>(
      heads, anchors, window, target_size, geometry, params, out);
  return cudaGetLastError();
}

template cudaError_t aggregate_cuda<float>(Heads<float>, const double*, Geometry, double, AggregateOutputs,
                                           cudaStream_t);
template cudaError_t aggregate_cuda<double>(Heads<double>, const double*, Geometry, double, AggregateOutputs,
                                            cudaStream_t);
template cudaError_t track_cuda<float>(Heads<float>, const double*, const double*, const double*, Geometry,
                                       TrackParams, TrackOutputs, cudaStream_t);
template cudaError_t track_cuda<double>(Heads<double>, const double*, const double*, const double*, Geometry,
                                        TrackParams, TrackOutputs, cudaStream_t);

}  // namespace snlt_fast::postprocess
