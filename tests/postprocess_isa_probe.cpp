// The CPU post-processing kernels behind a C interface, for tests/test_postprocess.py,
// which compiles this file with csrc/postprocess/postprocess_cpu.cpp for one instruction
// set at a time and compares the bits with the installed, dispatched build.
#include "postprocess/postprocess_kernels.h"

using namespace snlt_fast::postprocess;

extern "C" void probe_track(const float* cls_vis, const float* cls_nl, const float* loc_vis, const float* loc_nl,
                            const double* anchors, const double* window, const double* target_size, int64_t batch,
                            int64_t anchor_num, int64_t height, int64_t width, double alpha, double penalty_k,
                            double window_influence, double lr, int lr_from_pscore, int64_t* index, float* box,
                            float* values) {
  // values [kTrackValues + kTargetStats, batch]: one row per field after the box.
  TrackOutputs out{index, box, {}, {}};
  for (int value = 0; value < kTrackValues; ++value) out.values[value] = values + value * batch;
  for (int stat = 0; stat < kTargetStats; ++stat) out.stats[stat] = values + (kTrackValues + stat) * batch;
  track_cpu(Heads<float>{cls_vis, cls_nl, loc_vis, loc_nl}, anchors, window, target_size,
            Geometry{batch, anchor_num, height, width},
            TrackParams{alpha, penalty_k, window_influence, lr, lr_from_pscore != 0}, out);
}

extern "C" void probe_aggregate(const float* cls_vis, const float* cls_nl, const float* loc_vis, const float* loc_nl,
                                const double* anchors, int64_t batch, int64_t anchor_num, int64_t height,
                                int64_t width, double alpha, float* score, float* box, float* stats) {
  // stats [kTargetStats, batch]: one row per statistic.
  AggregateOutputs out{score, box, {}};
  for (int stat = 0; stat < kTargetStats; ++stat) out.stats[stat] = stats + stat * batch;
  aggregate_cpu(Heads<float>{cls_vis, cls_nl, loc_vis, loc_nl}, anchors, Geometry{batch, anchor_num, height, width},
                alpha, out);
}
