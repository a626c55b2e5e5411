// CUDA kernel of anchor_targets: one block per sample. Its threads write every cell's
// IoU, deltas and candidate label, then find each label's largest kept rank by a bitwise
// search (bit by bit from the top, counting the candidates below each trial value), and
// drop the candidates above it. Counts are sums of integers, so the result does not depend
// on thread scheduling.
#include <cstdint>

#include "anchor_targets/anchor_targets_kernels.h"
#include "anchor_targets/anchor_targets_math.h"

namespace snlt_fast::anchor_targets {
namespace {

constexpr int kThreads = 256;
// Ranks are below 2^63: the search starts at bit 62.
constexpr int kRankBits = 63;

// The sum over the block of each thread's (negatives, positives); every thread gets it.
__device__ void block_sum(unsigned long long (&local)[2], unsigned long long (&shared)[2]) {
  __syncthreads();
  if (threadIdx.x < 2) shared[threadIdx.x] = 0;
  __syncthreads();
  atomicAdd(&shared[0], local[0]);
  atomicAdd(&shared[1], local[1]);
  __syncthreads();
  local[0] = shared[0];
  local[1] = shared[1];
}

__global__ void __launch_bounds__(kThreads) anchor_targets_kernel(Inputs in, Params params, Outputs out) {
  __shared__ unsigned long long shared[2];
  const int64_t b = blockIdx.x, size = in.size, area = size * size, cells = in.anchor_num * area;
  const Box box{in.boxes[4 * b], in.boxes[4 * b + 1], in.boxes[4 * b + 2], in.boxes[4 * b + 3]};
  const bool valid = is_valid(box), pair = in.negative[b];
  const uint32_t seed0 = static_cast<uint32_t>(in.seeds[2 * b]), seed1 = static_cast<uint32_t>(in.seeds[2 * b + 1]);
  int64_t* labels = out.labels + b * cells;
  float* deltas = out.deltas + 4 * b * cells;
  float* delta_weights = out.delta_weights + b * cells;
  float* iou = out.iou + b * cells;
  const double *ax = in.anchors, *ay = ax + cells, *aw = ay + cells, *ah = aw + cells;
  const int64_t column = box_cell(box.cx, ax[1] - ax[0], size), row = box_cell(box.cy, ay[size] - ay[0], size);

  unsigned long long candidates[2] = {0, 0};
  for (int64_t n = threadIdx.x; n < cells; n += kThreads) {
    int64_t label = -1;
    float values[5];  // dx, dy, dw, dh, iou
    if (!valid) {
      for (float& value : values) value = NAN;
    } else if (pair) {
      for (float& value : values) value = 0.0f;
      const int64_t x = n % size, y = n % area / size;
      const bool near = x - column <= kReach && column - x <= kReach && y - row <= kReach && row - y <= kReach;
      label = near ? 0 : -1;
    } else {
      const double overlap_ratio = anchor_targets::iou({ax[n], ay[n], aw[n], ah[n]}, box);
      label = overlap_ratio > params.positive_iou ? 1 : (overlap_ratio < params.negative_iou ? 0 : -1);
      values[0] = static_cast<float>((box.cx - ax[n]) / aw[n]);
      values[1] = static_cast<float>((box.cy - ay[n]) / ah[n]);
      values[2] = static_cast<float>(log_float64(box.w / aw[n]));
      values[3] = static_cast<float>(log_float64(box.h / ah[n]));
      values[4] = static_cast<float>(overlap_ratio);
    }
    for (int k = 0; k < 4; ++k) deltas[k * cells + n] = values[k];
    iou[n] = values[4];
    labels[n] = label;
    if (label >= 0) ++candidates[label];
  }
  block_sum(candidates, shared);

  const int64_t keep[2] = {pair ? params.negative_pair_num : params.negative_num, pair ? 0 : params.positive_num};
  // largest[l]: the largest kept rank of label l; all are kept when there are no more than keep.
  int64_t largest[2];
  bool search[2];
  for (int l = 0; l < 2; ++l) {
    search[l] = keep[l] > 0 && candidates[l] > static_cast<unsigned long long>(keep[l]);
    largest[l] = keep[l] == 0 ? -1 : (search[l] ? 0 : INT64_MAX);
  }
  if (search[0] || search[1]) {
    // The largest value with fewer than keep candidates below it is the keep-th smallest rank.
    for (int bit = kRankBits - 1; bit >= 0; --bit) {
      const int64_t trial[2] = {largest[0] | (int64_t{1} << bit), largest[1] | (int64_t{1} << bit)};
      unsigned long long below[2] = {0, 0};
      for (int64_t n = threadIdx.x; n < cells; n += kThreads) {
        const int64_t label = labels[n];
        if (label >= 0 && search[label] && selection_rank(seed0, seed1, n) < trial[label]) ++below[label];
      }
      block_sum(below, shared);
      for (int l = 0; l < 2; ++l) {
        if (search[l] && below[l] < static_cast<unsigned long long>(keep[l])) largest[l] = trial[l];
      }
    }
  }
  const int64_t kept_positives = search[1] ? keep[1] : (keep[1] == 0 ? 0 : static_cast<int64_t>(candidates[1]));
  const float weight = static_cast<float>(1.0 / static_cast<double>(kept_positives));
  for (int64_t n = threadIdx.x; n < cells; n += kThreads) {
    int64_t label = labels[n];
    if (label >= 0 && selection_rank(seed0, seed1, n) > largest[label]) label = -1;
    labels[n] = label;
    delta_weights[n] = label == 1 ? weight : 0.0f;
  }
}

}  // namespace

cudaError_t anchor_targets_cuda(const Inputs& in, const Params& params, const Outputs& out, cudaStream_t stream) {
  anchor_targets_kernel<<<static_cast<unsigned int>(in.batch), kThreads, 0, stream>>>(in, params, out);
  return cudaGetLastError();
}

}  // namespace snlt_fast::anchor_targets
