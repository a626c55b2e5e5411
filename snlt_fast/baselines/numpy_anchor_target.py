"""pysot's training anchor target in numpy, one sample at a time as its dataset does it
(pysot/datasets/anchor_target.py), with np.random's selection: the baseline that
bench/bench_anchor_targets.py measures snlt_fast.anchor_targets against.

Layouts are snlt_fast's: anchors [4, A, S, S] (cx, cy, w, h) around the crop centre, a
box (cx, cy, w, h) in the same coordinates. As in pysot the anchors are float32 (their
corners computed once), the targets float32 and the labels int64.
"""

from typing import NamedTuple

import numpy as np

THR_HIGH, THR_LOW = 0.6, 0.3
POS_NUM, TOTAL_NUM, NEG_NUM = 16, 64, 16


class NumpyAnchorTargets(NamedTuple):
    labels: np.ndarray  # [A, S, S] int64: 1 positive, 0 negative, -1 ignored
    deltas: np.ndarray  # [4, A, S, S] float32
    delta_weights: np.ndarray  # [A, S, S] float32
    iou: np.ndarray  # [A, S, S] float32


def _select(position, keep_num):
    """At most keep_num of the np.where indices `position`, at random; and how many were kept."""
    count = position[0].shape[0]
    if count <= keep_num:
        return position, count
    order = np.arange(count)
    np.random.shuffle(order)
    kept = order[:keep_num]
    return tuple(p[kept] for p in position), keep_num


class NumpyAnchorTarget:
    """pysot's AnchorTarget on fixed anchors: call it per sample with the target box."""

    def __init__(self, anchors, stride=8):
        self.center = np.asarray(anchors, dtype=np.float32)
        cx, cy, w, h = self.center
        self.corner = np.stack([cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5])
        self.stride = stride

    def __call__(self, box, neg=False):
        anchor_num, size = self.center.shape[1], self.center.shape[2]
        labels = -1 * np.ones((anchor_num, size, size), dtype=np.int64)
        deltas = np.zeros((4, anchor_num, size, size), dtype=np.float32)
        delta_weights = np.zeros((anchor_num, size, size), dtype=np.float32)
        tcx, tcy, tw, th = (float(v) for v in box)
        if neg:
            # The box centre's cell (the crop centre sits at cell size // 2) and its 7x7 cells.
            cx = size // 2 + int(np.ceil(tcx / self.stride + 0.5))
            cy = size // 2 + int(np.ceil(tcy / self.stride + 0.5))
            left, right = max(0, cx - 3), min(size, cx + 4)
            up, down = max(0, cy - 3), min(size, cy + 4)
            labels[:, up:down, left:right] = 0
            negatives, _ = _select(np.where(labels == 0), NEG_NUM)
            labels[:] = -1
            labels[negatives] = 0
            return NumpyAnchorTargets(labels, deltas, delta_weights, np.zeros((anchor_num, size, size), np.float32))
        cx, cy, w, h = self.center
        deltas[0] = (tcx - cx) / w
        deltas[1] = (tcy - cy) / h
        deltas[2] = np.log(tw / w)
        deltas[3] = np.log(th / h)
        x1, y1, x2, y2 = self.corner
        inter_w = np.maximum(0, np.minimum(x2, tcx + tw * 0.5) - np.maximum(x1, tcx - tw * 0.5))
        inter_h = np.maximum(0, np.minimum(y2, tcy + th * 0.5) - np.maximum(y1, tcy - th * 0.5))
        inter = inter_w * inter_h
        iou = inter / ((x2 - x1) * (y2 - y1) + tw * th - inter)
        positives, positive_num = _select(np.where(iou > THR_HIGH), POS_NUM)
        negatives, _ = _select(np.where(iou < THR_LOW), TOTAL_NUM - POS_NUM)
        labels[positives] = 1
        delta_weights[positives] = 1.0 / (positive_num + 1e-6)
        labels[negatives] = 0
        return NumpyAnchorTargets(labels, deltas, delta_weights, iou.astype(np.float32))


def anchor_targets_numpy(anchor_target, boxes, negative=None):
    """A batch as pysot's data loader makes it: one sample at a time, then stacked (its collate)."""
    negative = np.zeros(len(boxes), dtype=bool) if negative is None else negative
    samples = [anchor_target(box, neg) for box, neg in zip(boxes, negative)]
    return NumpyAnchorTargets(*(np.stack(field) for field in zip(*samples)))
