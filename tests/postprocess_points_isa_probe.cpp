// The point form's CPU kernel behind a C interface, for tests/test_postprocess_points.py,
// which compiles this file with csrc/postprocess_points/points_cpu.cpp for one instruction
// set at a time and compares the bits with the installed, dispatched build.
#include "postprocess_points/points_kernels.h"

using namespace snlt_fast::postprocess;

namespace {

// numbers: alpha, penalty_k, window_influence, lr, center; values [kTrackValues + kTargetStats,
// batch]: one row per field after the box.
template <typename T>
void probe(const T* cls_vis, const T* cls_nl, const T* loc_vis, const T* loc_nl, const T* points, const T* window,
           const T* target_size, int64_t batch, int64_t height, int64_t width, const double* numbers,
           int lr_from_pscore, int64_t* index, T* box, T* values) {
  BasicTrackOutputs<T> out{index, box, {}, {}};
  for (int value = 0; value < kTrackValues; ++value) out.values[value] = values + value * batch;
  for (int stat = 0; stat < kTargetStats; ++stat) out.stats[stat] = values + (kTrackValues + stat) * batch;
  const PointParams params{{numbers[0], numbers[1], numbers[2], numbers[3], lr_from_pscore != 0}, numbers[4]};
  track_points_cpu(PointInputs<T>{{cls_vis, cls_nl, loc_vis, loc_nl}, points, window, target_size},
                   Geometry{batch, 1, height, width}, params, out);
}

}  // namespace

extern "C" void probe_track_points_float(const float* cls_vis, const float* cls_nl, const float* loc_vis,
                                         const float* loc_nl, const float* points, const float* window,
                                         const float* target_size, int64_t batch, int64_t height, int64_t width,
                                         const double* numbers, int lr_from_pscore, int64_t* index, float* box,
                                         float* values) {
  probe(cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size, batch, height, width, numbers, lr_from_pscore,
        index, box, values);
}

extern "C" void probe_track_points_double(const double* cls_vis, const double* cls_nl, const double* loc_vis,
                                          const double* loc_nl, const double* points, const double* window,
                                          const double* target_size, int64_t batch, int64_t height, int64_t width,
                                          const double* numbers, int lr_from_pscore, int64_t* index, double* box,
                                          double* values) {
  probe(cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size, batch, height, width, numbers, lr_from_pscore,
        index, box, values);
}
