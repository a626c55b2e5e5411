// Raw-pointer entry points of the anchor-target kernels (no torch types, so that the CPU
// and CUDA kernel files compile without torch headers). All pointers are contiguous:
// anchors [4, A, S, S] and boxes [B, 4] of double, negative [B] of bool, seeds [B, 2]
// of int64 (32-bit words); outputs labels [B, A, S, S] int64, deltas [B, 4, A, S, S],
// delta_weights and iou [B, A, S, S] float32.
#pragma once

#include <cstdint>

#ifdef SNLT_FAST_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace snlt_fast::anchor_targets {

struct Inputs {
  const double* anchors;
  const double* boxes;
  const bool* negative;
  const int64_t* seeds;
  int64_t batch, anchor_num, size;
  int64_t cells() const { return anchor_num * size * size; }
};

struct Params {
  double positive_iou, negative_iou;
  int64_t positive_num, negative_num, negative_pair_num;
};

struct Outputs {
  int64_t* labels;
  float* deltas;
  float* delta_weights;
  float* iou;
};

void anchor_targets_cpu(const Inputs& in, const Params& params, const Outputs& out);

#ifdef SNLT_FAST_WITH_CUDA
// One block per sample, one launch; the returned error is the launch's.
cudaError_t anchor_targets_cuda(const Inputs& in, const Params& params, const Outputs& out, cudaStream_t stream);
#endif

}  // namespace snlt_fast::anchor_targets
