// CPU kernel of anchor_targets: torch's threads take whole samples. Per sample, one pass
// writes the IoU, dx, dy and each cell's candidate label; dw and dh follow in a pass of their
// own, where the log is recomputed only when the anchor's size changes (the anchors of one
// index share a size across the map, so that is once per anchor index); a bounded max-heap
// per label then finds the ranks kept, and a last pass drops the others.
#include <algorithm>
#include <vector>

#include <ATen/Parallel.h>

#include "anchor_targets/anchor_targets_kernels.h"
#include "anchor_targets/anchor_targets_math.h"

namespace snlt_fast::anchor_targets {
namespace {

// The `keep` smallest ranks pushed, in a max-heap; the largest kept rank is its top.
class SmallestRanks {
 public:
  explicit SmallestRanks(int64_t keep) : keep_(keep) {}

  void push(int64_t rank) {
    if (static_cast<int64_t>(heap_.size()) < keep_) {
      heap_.push_back(rank);
      std::push_heap(heap_.begin(), heap_.end());
    } else if (keep_ > 0 && rank < heap_.front()) {
      std::pop_heap(heap_.begin(), heap_.end());
      heap_.back() = rank;
      std::push_heap(heap_.begin(), heap_.end());
    }
  }

  int64_t count() const { return static_cast<int64_t>(heap_.size()); }
  // Every pushed rank up to this one is kept (none when keep is 0).
  int64_t largest_kept() const { return heap_.empty() ? -1 : heap_.front(); }

 private:
  int64_t keep_;
  std::vector<int64_t> heap_;
};

struct Sample {
  const Inputs& in;
  const Params& params;
  int64_t b;
  Box box;
  uint32_t seed0, seed1;
  int64_t* labels;
  float* deltas;  // [4][cells]
  float* delta_weights;
  float* iou;

  Sample(const Inputs& inputs, const Params& p, const Outputs& out, int64_t sample)
      : in(inputs),
        params(p),
        b(sample),
        box{inputs.boxes[4 * sample], inputs.boxes[4 * sample + 1], inputs.boxes[4 * sample + 2],
            inputs.boxes[4 * sample + 3]},
        seed0(static_cast<uint32_t>(inputs.seeds[2 * sample])),
        seed1(static_cast<uint32_t>(inputs.seeds[2 * sample + 1])),
        labels(out.labels + sample * inputs.cells()),
        deltas(out.deltas + 4 * sample * inputs.cells()),
        delta_weights(out.delta_weights + sample * inputs.cells()),
        iou(out.iou + sample * inputs.cells()) {}

  int64_t rank(int64_t n) const { return selection_rank(seed0, seed1, n); }

  void fill(float delta_and_iou) const {
    const int64_t cells = in.cells();
    std::fill(labels, labels + cells, int64_t{-1});
    std::fill(deltas, deltas + 4 * cells, delta_and_iou);
    std::fill(delta_weights, delta_weights + cells, 0.0f);
    std::fill(iou, iou + cells, delta_and_iou);
  }

  // Positive pair: IoU, deltas and candidate labels at every cell.
  void candidates() const {
    const int64_t cells = in.cells();
    const double *ax = in.anchors, *ay = ax + cells, *aw = ay + cells, *ah = aw + cells;
    const double positive_iou = params.positive_iou, negative_iou = params.negative_iou;
    const Box target = box;
    for (int64_t n = 0; n < cells; ++n) {
      const double overlap_ratio = anchor_targets::iou({ax[n], ay[n], aw[n], ah[n]}, target);
      iou[n] = static_cast<float>(overlap_ratio);
      labels[n] = overlap_ratio > positive_iou ? 1 : (overlap_ratio < negative_iou ? 0 : -1);
      deltas[n] = static_cast<float>((target.cx - ax[n]) / aw[n]);
      deltas[cells + n] = static_cast<float>((target.cy - ay[n]) / ah[n]);
    }
    // log(tw / aw) depends on the anchor's width alone: computed again only when it changes.
    double last_w = NAN, last_h = NAN;
    float log_w = 0.0f, log_h = 0.0f;
    for (int64_t n = 0; n < cells; ++n) {
      if (!(aw[n] == last_w)) {
        last_w = aw[n];
        log_w = static_cast<float>(log_float64(target.w / last_w));
      }
      if (!(ah[n] == last_h)) {
        last_h = ah[n];
        log_h = static_cast<float>(log_float64(target.h / last_h));
      }
      deltas[2 * cells + n] = log_w;
      deltas[3 * cells + n] = log_h;
    }
  }

  // Keeps each label's candidates of the smallest ranks, drops the others to -1, and
  // weights the kept positives.
  void select(int64_t keep_positive, int64_t keep_negative) const {
    const int64_t cells = in.cells();
    SmallestRanks positives(keep_positive), negatives(keep_negative);
    for (int64_t n = 0; n < cells; ++n) {
      if (labels[n] == 1) positives.push(rank(n));
      if (labels[n] == 0) negatives.push(rank(n));
    }
    const int64_t largest[2] = {negatives.largest_kept(), positives.largest_kept()};
    for (int64_t n = 0; n < cells; ++n) {
      if (labels[n] >= 0 && rank(n) > largest[labels[n]]) labels[n] = -1;
    }
    const float weight = static_cast<float>(1.0 / static_cast<double>(positives.count()));
    for (int64_t n = 0; n < cells; ++n) delta_weights[n] = labels[n] == 1 ? weight : 0.0f;
  }

  void positive_pair() const {
    candidates();
    select(params.positive_num, params.negative_num);
  }

  // Negative pair: the anchors of the 7x7 cells around the box centre's cell are candidates.
  void negative_pair() const {
    fill(0.0f);
    const int64_t size = in.size, area = size * size;
    const double stride_x = in.anchors[1] - in.anchors[0];
    const double stride_y = in.anchors[in.cells() + size] - in.anchors[in.cells()];
    const int64_t column = box_cell(box.cx, stride_x, size), row = box_cell(box.cy, stride_y, size);
    const int64_t left = std::max<int64_t>(column - kReach, 0), right = std::min(column + kReach, size - 1);
    const int64_t top = std::max<int64_t>(row - kReach, 0), bottom = std::min(row + kReach, size - 1);
    for (int64_t a = 0; a < in.anchor_num; ++a) {
      for (int64_t y = top; y <= bottom; ++y) {
        for (int64_t x = left; x <= right; ++x) labels[a * area + y * size + x] = 0;
      }
    }
    select(0, params.negative_pair_num);
  }

  void run() const {
    if (!is_valid(box)) {
      fill(NAN);
    } else if (in.negative[b]) {
      negative_pair();
    } else {
      positive_pair();
    }
  }
};

}  // namespace

void anchor_targets_cpu(const Inputs& in, const Params& params, const Outputs& out) {
  at::parallel_for(0, in.batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) Sample(in, params, out, b).run();
  });
}

}  // namespace snlt_fast::anchor_targets
