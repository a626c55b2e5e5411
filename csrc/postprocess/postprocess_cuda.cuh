// What the post-processing kernels of both forms share on CUDA (postprocess_cuda.cu and
// postprocess_points/points_cuda.cu): a block's reductions in the contracts' fixed orders,
// so that results do not depend on thread scheduling.
#pragma once

#include <cstdint>

#include "postprocess/postprocess_math.h"

namespace snlt_fast::postprocess {

// The entropy's lane tree over lanes[kEntropyLanes], lane l written by thread l before the
// call: lanes l and l + w added for w = kEntropyLanes / 2, ..., 1. Every thread gets the sum.
template <typename T>
__device__ T block_lane_tree_sum(T* lanes) {
  __syncthreads();
  for (int width = kEntropyLanes / 2; width > 0; width /= 2) {
    if (threadIdx.x < width) lanes[threadIdx.x] = lanes[threadIdx.x] + lanes[threadIdx.x + width];
    __syncthreads();
  }
  const T total = lanes[0];
  __syncthreads();  // every thread has read lanes[0] before they are reused
  return total;
}

// The block's best cell under ranks_before, from each of its kThreads threads' best (value,
// cell), through values and cells [kThreads] in shared memory. Every thread gets it.
template <int kThreads, typename V>
__device__ int64_t block_best_cell(V value, int64_t cell, V* values, int64_t* cells) {
  values[threadIdx.x] = value;
  cells[threadIdx.x] = cell;
  __syncthreads();
  for (int width = kThreads / 2; width > 0; width /= 2) {
    if (threadIdx.x < width &&
        ranks_before<V>(values[threadIdx.x + width], cells[threadIdx.x + width], values[threadIdx.x], cells[threadIdx.x])) {
      values[threadIdx.x] = values[threadIdx.x + width];
      cells[threadIdx.x] = cells[threadIdx.x + width];
    }
    __syncthreads();
  }
  return cells[0];
}

}  // namespace snlt_fast::postprocess
