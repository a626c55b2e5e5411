// The point form's CPU kernel behind a C interface, for tests/test_postprocess_points.py,
// which compiles this file with csrc/postprocess_points/points_cpu.cpp for one instruction
// set at a time and compares the bits with the installed, dispatched build.
#include "postprocess_points/points_kernels.h"

using namespace snlt_fast::postprocess;

namespace {

template <typename T>
void probe(const void* const* inputs, int64_t batch, int64_t height, int64_t width, const double* numbers,
           int lr_from_pscore, int64_t* index, void* box, void* values) {
  const auto input = [&](int k) { return static_cast<const T*>(inputs[k]); };
  T* rows = static_cast<T*>(values);
  BasicTrackOutputs<T> out{index, static_cast<T*>(box), {}, {}};
  for (int value = 0; value < kTrackValues; ++value) out.values[value] = rows + value * batch;
  for (int stat = 0; stat < kTargetStats; ++stat) out.stats[stat] = rows + (kTrackValues + stat) * batch;
  const PointParams params{{numbers[0], numbers[1], numbers[2], numbers[3], lr_from_pscore != 0}, numbers[4]};
  track_points_cpu(PointInputs<T>{{input(0), input(1), input(2), input(3)}, input(4), input(5), input(6)},
                   Geometry{batch, 1, height, width}, params, out);
}

}  // namespace

// inputs: cls_vis, cls_nl (null: none), loc_vis, loc_nl, points, window, target_size, all of T
// (double if float64, else float); numbers: alpha, penalty_k, window_influence, lr, center;
// box [batch, 4] and values [kTrackValues + kTargetStats, batch] (a row per field after the box) of T.
extern "C" void probe_track_points(int float64, const void* const* inputs, int64_t batch, int64_t height,
                                   int64_t width, const double* numbers, int lr_from_pscore, int64_t* index, void* box,
                                   void* values) {
  (float64 ? probe<double> : probe<float>)(inputs, batch, height, width, numbers, lr_from_pscore, index, box, values);
}
