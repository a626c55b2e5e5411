// CPU kernel of anchor_targets: torch's threads take whole samples. Per sample:
//   1. one vectorized pass writes every cell's IoU, dx and dy, and its candidate label into
//      an int32 per cell (the labels' int64s are written once, at the end); on anchors laid
//      out as pysot's, the overlaps and dx, dy are found once per plane's column and row;
//   2. dw and dh, the log taken once per anchor plane whose anchors share a size (pysot's
//      do; found once per call), else once per run of equal sizes;
//   3. one vectorized pass writes every cell's selection key;
//   4. per label, the keep-th smallest rank among the candidates whose key is below a
//      cut-off that about 2 * keep + 32 of them pass (all of them, in the rare draw where
//      fewer than keep pass): exact, as every candidate left out has a larger key;
//   5. one vectorized pass writes the labels, the candidates above it dropped, and the
//      weights of the kept positives.
#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include <ATen/Parallel.h>

#include "anchor_targets/anchor_targets_kernels.h"
#include "anchor_targets/anchor_targets_math.h"

// The vectorized passes are compiled for x86-64-v3 (AVX2) and baseline x86-64, picked at
// load time. The build turns fused multiply-adds off, so both give the same bits.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ANCHOR_TARGETS_VECTORIZED __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define ANCHOR_TARGETS_VECTORIZED
#endif

namespace snlt_fast::anchor_targets {
namespace {

struct Anchors {
  const double *cx, *cy, *w, *h;
};

// A sample's outputs, each [cells] (deltas [4][cells]).
struct SampleOutputs {
  int64_t* labels;
  float* deltas;
  float* delta_weights;
  float* iou;
};

// A thread's scratch for one sample at a time.
struct Scratch {
  std::vector<int32_t> candidates;  // per cell: the label it is a candidate for, or -1
  std::vector<uint32_t> keys;
  std::array<std::vector<int64_t>, 2> ranks;  // per label
  std::vector<uint8_t> hits;                  // per cell: whether its rank is collected
  // Grid anchors: one plane's overlaps and offsets per column (x) and per row (y).
  std::vector<double> overlap_x, overlap_y;
  std::vector<float> dx, dy;
};

// Returns how many cells are candidates of each label (0, 1).
ANCHOR_TARGETS_VECTORIZED
std::array<int64_t, 2> positive_pair_cells(const Anchors& anchors, int64_t cells, const Box& box, double positive_iou,
                                           double negative_iou, Scratch& scratch, const SampleOutputs& out) {
  int32_t* candidates = scratch.candidates.data();
  const double *ax = anchors.cx, *ay = anchors.cy, *aw = anchors.w, *ah = anchors.h;
  float *dx = out.deltas, *dy = dx + cells, *iou_out = out.iou;
  int64_t negatives = 0, positives = 0;
  for (int64_t n = 0; n < cells; ++n) {
    const double overlap_ratio = iou({ax[n], ay[n], aw[n], ah[n]}, box);
    const bool positive = overlap_ratio > positive_iou, negative = overlap_ratio < negative_iou;
    iou_out[n] = static_cast<float>(overlap_ratio);
    candidates[n] = static_cast<int32_t>(positive ? 1 : (negative ? 0 : -1));
    dx[n] = static_cast<float>((box.cx - ax[n]) / aw[n]);
    dy[n] = static_cast<float>((box.cy - ay[n]) / ah[n]);
    positives += positive;
    negatives += negative;
  }
  return {negatives, positives};
}

ANCHOR_TARGETS_VECTORIZED
bool all_equal(const double* values, int64_t count, double value) {
  int64_t differing = 0;
  for (int64_t n = 0; n < count; ++n) differing += values[n] != value;
  return differing == 0;
}

// How many values of a size x size plane differ from the plane's first row (rows_differing)
// or from their row's first value (columns_differing).
ANCHOR_TARGETS_VECTORIZED
int64_t rows_differing(const double* plane, int64_t size) {
  int64_t differing = 0;
  for (int64_t y = 1; y < size; ++y) {
    for (int64_t x = 0; x < size; ++x) differing += plane[y * size + x] != plane[x];
  }
  return differing;
}

ANCHOR_TARGETS_VECTORIZED
int64_t columns_differing(const double* plane, int64_t size) {
  int64_t differing = 0;
  for (int64_t y = 0; y < size; ++y) {
    for (int64_t x = 1; x < size; ++x) differing += plane[y * size + x] != plane[y * size];
  }
  return differing;
}

// What the anchors share, found once per call (every sample reads the same anchors): per
// anchor plane (the S*S cells of one anchor index) whether all its anchors have one w, one
// h; and whether they lie on a grid as pysot's do (one size per plane, cx the same down each
// column, cy the same along each row), where a plane's overlaps and dx, dy are found once
// per column and row. Either way each cell gets the contract's values, bit for bit.
struct AnchorLayout {
  std::vector<bool> uniform_w, uniform_h;
  bool grid = true;

  explicit AnchorLayout(const Inputs& in) : uniform_w(in.anchor_num), uniform_h(in.anchor_num) {
    const int64_t size = in.size, plane = size * size, cells = in.cells();
    for (int64_t a = 0; a < in.anchor_num; ++a) {
      const double *cx = in.anchors + a * plane, *cy = cx + cells, *w = cy + cells, *h = w + cells;
      uniform_w[a] = all_equal(w, plane, w[0]);
      uniform_h[a] = all_equal(h, plane, h[0]);
      grid = grid && uniform_w[a] && uniform_h[a] && rows_differing(cx, size) == 0 && columns_differing(cy, size) == 0;
    }
  }
};

// positive_pair_cells for grid anchors.
ANCHOR_TARGETS_VECTORIZED
std::array<int64_t, 2> grid_positive_pair_cells(const Inputs& in, const Box& box, double positive_iou,
                                                double negative_iou, Scratch& scratch, const SampleOutputs& out) {
  const int64_t size = in.size, plane = size * size, cells = in.cells();
  // __restrict: no output overlaps another or the scratch, so the cell loop vectorizes.
  int32_t* __restrict candidates = scratch.candidates.data();
  double *__restrict overlap_x = scratch.overlap_x.data(), *__restrict overlap_y = scratch.overlap_y.data();
  float *__restrict dx_of_column = scratch.dx.data(), *__restrict dy_of_row = scratch.dy.data();
  float *__restrict dx = out.deltas, *__restrict dy = dx + cells, *__restrict iou_out = out.iou;
  int64_t negatives = 0, positives = 0;
  for (int64_t a = 0; a < in.anchor_num; ++a) {
    const double *cx = in.anchors + a * plane, *cy = cx + cells;
    const double w = cy[cells], h = cy[2 * cells];
    for (int64_t x = 0; x < size; ++x) {
      overlap_x[x] = overlap(cx[x], w, box.cx, box.w);
      dx_of_column[x] = static_cast<float>((box.cx - cx[x]) / w);
    }
    for (int64_t y = 0; y < size; ++y) {
      overlap_y[y] = overlap(cy[y * size], h, box.cy, box.h);
      dy_of_row[y] = static_cast<float>((box.cy - cy[y * size]) / h);
    }
    const double areas = w * h + box.w * box.h;
    for (int64_t y = 0; y < size; ++y) {
      const int64_t row = a * plane + y * size;
      const double row_overlap = overlap_y[y];
      const float row_dy = dy_of_row[y];
      float* __restrict row_iou = iou_out + row;
      int32_t* __restrict row_candidates = candidates + row;
      float *__restrict row_dx = dx + row, *__restrict row_dy_out = dy + row;
      for (int64_t x = 0; x < size; ++x) {
        const double inter = overlap_x[x] * row_overlap;
        const double overlap_ratio = inter / (areas - inter);
        const bool positive = overlap_ratio > positive_iou, negative = overlap_ratio < negative_iou;
        row_iou[x] = static_cast<float>(overlap_ratio);
        row_candidates[x] = static_cast<int32_t>(positive ? 1 : (negative ? 0 : -1));
        row_dx[x] = dx_of_column[x];
        row_dy_out[x] = row_dy;
        positives += positive;
        negatives += negative;
      }
    }
  }
  return {negatives, positives};
}

// log(size / anchor_sizes[n]) for every cell: once per uniform plane, else once per run
// of equal sizes.
void log_ratios(const double* anchor_sizes, const std::vector<bool>& uniform, int64_t plane, double size,
                float* out) {
  for (int64_t a = 0; a < static_cast<int64_t>(uniform.size()); ++a) {
    const double* sizes = anchor_sizes + a * plane;
    float* plane_out = out + a * plane;
    if (uniform[a]) {
      std::fill(plane_out, plane_out + plane, static_cast<float>(log_float64(size / sizes[0])));
      continue;
    }
    double last = NAN;
    float value = 0.0f;
    for (int64_t n = 0; n < plane; ++n) {
      if (!(sizes[n] == last)) {
        last = sizes[n];
        value = static_cast<float>(log_float64(size / last));
      }
      plane_out[n] = value;
    }
  }
}

ANCHOR_TARGETS_VECTORIZED
void selection_keys(uint32_t seed0, uint32_t seed1, int64_t cells, uint32_t* keys) {
  for (int64_t n = 0; n < cells; ++n) keys[n] = fmix32(fmix32(static_cast<uint32_t>(n) ^ seed0) ^ seed1);
}

int64_t rank_of(const uint32_t* keys, int64_t n) { return static_cast<int64_t>(static_cast<uint64_t>(keys[n]) << 31) + n; }

// Per label (0, 1): the largest kept rank (-1 when none is kept, INT64_MAX when all are)
// and how many are kept.
struct Selection {
  int64_t largest[2];
  int64_t kept[2];
};

// hits[n] = 1 where cell n is a candidate of a label (0, 1) whose key is at most bounds[label]
// (-1: none), else 0.
ANCHOR_TARGETS_VECTORIZED
void mark_hits(const int32_t* candidates, const uint32_t* keys, int64_t cells, int64_t bound_negative,
               int64_t bound_positive, uint8_t* hits) {
  for (int64_t n = 0; n < cells; ++n) {
    const int64_t candidate = candidates[n];
    const int64_t bound = candidate == 1 ? bound_positive : (candidate == 0 ? bound_negative : -1);
    hits[n] = static_cast<int64_t>(keys[n]) <= bound;
  }
}

// Appends to ranks[label] the rank of every candidate of that label whose key is at most
// bounds[label] (-1: none): the hits marked in a vectorized pass, then read eight at a time
// (few cells are hits).
void collect_ranks(const int32_t* candidates, const uint32_t* keys, int64_t cells, const int64_t (&bounds)[2],
                   Scratch& scratch) {
  uint8_t* hits = scratch.hits.data();
  mark_hits(candidates, keys, cells, bounds[0], bounds[1], hits);
  for (int64_t start = 0; start < cells; start += 8) {
    uint64_t eight = 0;
    std::memcpy(&eight, hits + start, static_cast<size_t>(std::min<int64_t>(8, cells - start)));
    if (eight == 0) continue;
    for (int64_t n = start; n < std::min(start + 8, cells); ++n) {
      if (hits[n]) scratch.ranks[candidates[n]].push_back(rank_of(keys, n));
    }
  }
}

Selection select(int64_t cells, const std::array<int64_t, 2>& candidate_counts, const int64_t (&keep)[2],
                 Scratch& scratch) {
  const int32_t* candidates = scratch.candidates.data();
  const uint32_t* keys = scratch.keys.data();
  auto& ranks = scratch.ranks;
  Selection selection;
  int64_t cutoffs[2], everything[2] = {-1, -1};
  for (int label = 0; label < 2; ++label) {
    selection.largest[label] = keep[label] == 0 ? -1 : INT64_MAX;
    selection.kept[label] = std::min(candidate_counts[label], keep[label]);
    ranks[label].clear();
    const bool searched = keep[label] > 0 && candidate_counts[label] > keep[label];
    // About 2 * keep + 32 of the candidates' uniform 32-bit keys fall below the cut-off.
    const double share = static_cast<double>(2 * keep[label] + 32) / static_cast<double>(candidate_counts[label]);
    cutoffs[label] = !searched ? -1 : (share >= 1.0 ? UINT32_MAX : static_cast<int64_t>(share * 4294967296.0));
  }
  collect_ranks(candidates, keys, cells, cutoffs, scratch);
  for (int label = 0; label < 2; ++label) {
    if (cutoffs[label] < 0) continue;
    if (static_cast<int64_t>(ranks[label].size()) < keep[label]) {  // a rare draw: take them all
      ranks[label].clear();
      everything[label] = UINT32_MAX;
      collect_ranks(candidates, keys, cells, everything, scratch);
      everything[label] = -1;
    }
    std::nth_element(ranks[label].begin(), ranks[label].begin() + (keep[label] - 1), ranks[label].end());
    selection.largest[label] = ranks[label][keep[label] - 1];
  }
  return selection;
}

ANCHOR_TARGETS_VECTORIZED
void write_labels(const int32_t* candidates, const uint32_t* keys, int64_t cells, const Selection& selection,
                  float weight, const SampleOutputs& out) {
  int64_t* labels = out.labels;
  float* delta_weights = out.delta_weights;
  const int64_t largest_negative = selection.largest[0], largest_positive = selection.largest[1];
  for (int64_t n = 0; n < cells; ++n) {
    const int64_t candidate = candidates[n];
    const int64_t bound = candidate == 1 ? largest_positive : largest_negative;
    const int64_t label = candidate >= 0 && rank_of(keys, n) <= bound ? candidate : -1;
    labels[n] = label;
    delta_weights[n] = label == 1 ? weight : 0.0f;
  }
}

void fill_values(int64_t cells, float delta_and_iou, const SampleOutputs& out) {
  std::fill(out.deltas, out.deltas + 4 * cells, delta_and_iou);
  std::fill(out.iou, out.iou + cells, delta_and_iou);
}

// Negative pair: the anchors of the 7x7 cells around the box centre's cell become candidates
// (label 0); returns how many cells are candidates of each label.
std::array<int64_t, 2> negative_pair_cells(const Inputs& in, const Box& box, int32_t* candidates,
                                           const SampleOutputs& out) {
  const int64_t size = in.size, area = size * size, cells = in.cells();
  fill_values(cells, 0.0f, out);
  std::fill(candidates, candidates + cells, int32_t{-1});
  const int64_t column = box_cell(box.cx, in.anchors[1] - in.anchors[0], size);
  const int64_t row = box_cell(box.cy, in.anchors[cells + size] - in.anchors[cells], size);
  const int64_t left = std::max<int64_t>(column - kReach, 0), right = std::min(column + kReach, size - 1);
  const int64_t top = std::max<int64_t>(row - kReach, 0), bottom = std::min(row + kReach, size - 1);
  for (int64_t a = 0; a < in.anchor_num; ++a) {
    for (int64_t y = top; y <= bottom; ++y) {
      for (int64_t x = left; x <= right; ++x) candidates[a * area + y * size + x] = 0;
    }
  }
  const int64_t window = std::max<int64_t>(right - left + 1, 0) * std::max<int64_t>(bottom - top + 1, 0);
  return {in.anchor_num * window, 0};
}

void sample_targets(const Inputs& in, const Params& params, const AnchorLayout& layout, const SampleOutputs& out, int64_t b,
                    Scratch& scratch) {
  const int64_t cells = in.cells();
  const double* box_values = in.boxes + 4 * b;
  const Box box{box_values[0], box_values[1], box_values[2], box_values[3]};
  if (!is_valid(box)) {
    fill_values(cells, NAN, out);
    std::fill(out.labels, out.labels + cells, int64_t{-1});
    std::fill(out.delta_weights, out.delta_weights + cells, 0.0f);
    return;
  }
  const bool pair = in.negative[b];
  const uint32_t seed0 = static_cast<uint32_t>(in.seeds[2 * b]), seed1 = static_cast<uint32_t>(in.seeds[2 * b + 1]);
  int32_t* candidates = scratch.candidates.data();
  uint32_t* keys = scratch.keys.data();
  std::array<int64_t, 2> candidate_counts;
  if (pair) {
    candidate_counts = negative_pair_cells(in, box, candidates, out);
  } else {
    const Anchors anchors{in.anchors, in.anchors + cells, in.anchors + 2 * cells, in.anchors + 3 * cells};
    const double positive_iou = params.positive_iou, negative_iou = params.negative_iou;
    candidate_counts =
        layout.grid ? grid_positive_pair_cells(in, box, positive_iou, negative_iou, scratch, out)
                    : positive_pair_cells(anchors, cells, box, positive_iou, negative_iou, scratch, out);
    const int64_t plane = in.size * in.size;
    log_ratios(anchors.w, layout.uniform_w, plane, box.w, out.deltas + 2 * cells);
    log_ratios(anchors.h, layout.uniform_h, plane, box.h, out.deltas + 3 * cells);
  }
  selection_keys(seed0, seed1, cells, keys);
  const int64_t keep[2] = {pair ? params.negative_pair_num : params.negative_num, pair ? 0 : params.positive_num};
  const Selection selection = select(cells, candidate_counts, keep, scratch);
  const float weight = static_cast<float>(1.0 / static_cast<double>(selection.kept[1]));
  write_labels(candidates, keys, cells, selection, weight, out);
}

}  // namespace

void anchor_targets_cpu(const Inputs& in, const Params& params, const Outputs& out) {
  const int64_t cells = in.cells();
  const AnchorLayout layout(in);
  at::parallel_for(0, in.batch, 1, [&](int64_t begin, int64_t end) {
    const auto size = static_cast<size_t>(in.size);
    Scratch scratch{std::vector<int32_t>(cells),  std::vector<uint32_t>(cells), {},
                    std::vector<uint8_t>(cells),  std::vector<double>(size),   std::vector<double>(size),
                    std::vector<float>(size),     std::vector<float>(size)};
    for (int64_t b = begin; b < end; ++b) {
      const SampleOutputs sample{out.labels + b * cells, out.deltas + 4 * b * cells, out.delta_weights + b * cells,
                                 out.iou + b * cells};
      sample_targets(in, params, layout, sample, b, scratch);
    }
  });
}

}  // namespace snlt_fast::anchor_targets
