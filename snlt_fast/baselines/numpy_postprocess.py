"""SNLT's tracking post-processing in numpy/scipy, one target at a time, as the
published tracker code does it after copying the head outputs off the device
(pysot's `_convert_score`, `_convert_bbox` and penalty code, plus SNLT's
entropy-weighted aggregation of the visual and NL heads). Float64 throughout.

Layouts are snlt_fast's: heads [B, 2A, H, W] / [B, 4A, H, W], anchors [4, A, H, W],
window [A, H, W], target_size [B, 2]; the functions flatten them as pysot does.
"""

from typing import NamedTuple

import numpy as np
from scipy.special import entr, softmax


class NumpyTrackResult(NamedTuple):
    index: np.ndarray  # [B] int64
    box: np.ndarray  # [B, 4]
    score: np.ndarray  # [B]
    pscore: np.ndarray
    lr: np.ndarray
    w_vis: np.ndarray
    w_nl: np.ndarray
    h_vis: np.ndarray
    h_nl: np.ndarray


def _as_float64(array):
    return None if array is None else np.asarray(array, dtype=np.float64)


def _convert_score(cls):
    """Foreground probability per cell, [A*H*W]: pysot's 2-way softmax over the [2][A] channels."""
    return softmax(cls.reshape(2, -1).T, axis=1)[:, 1]


def _convert_bbox(loc, anchors):
    """Decoded boxes [4, A*H*W] (cx, cy, w, h) from deltas [4A, H, W] and anchors [A*H*W, 4]."""
    delta = loc.reshape(4, -1).copy()
    delta[0] = delta[0] * anchors[:, 2] + anchors[:, 0]
    delta[1] = delta[1] * anchors[:, 3] + anchors[:, 1]
    delta[2] = np.exp(delta[2]) * anchors[:, 2]
    delta[3] = np.exp(delta[3]) * anchors[:, 3]
    return delta


def _aggregate_one(cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha, convert_bbox=_convert_bbox):
    """(score [N], box [4, N], w_vis, w_nl, h_vis, h_nl) for one target; convert_bbox(loc, anchors)
    decodes a head's boxes (numpy_postprocess_points passes the anchor-free decoding)."""
    score_vis = _convert_score(cls_vis)
    box_vis = convert_bbox(loc_vis, anchors)
    h_vis = entr(score_vis).sum()
    if cls_nl is None:
        return score_vis, box_vis, 1.0, 0.0, h_vis, np.nan
    score_nl = _convert_score(cls_nl)
    box_nl = convert_bbox(loc_nl, anchors)
    h_nl = entr(score_nl).sum()
    # The more uncertain head (higher entropy) gets the lower weight.
    w_vis, w_nl = softmax([alpha * h_nl, alpha * h_vis])
    return w_vis * score_vis + w_nl * score_nl, w_vis * box_vis + w_nl * box_nl, w_vis, w_nl, h_vis, h_nl


def _pysot_anchors(anchors):
    """[4, A, H, W] -> pysot's [A*H*W, 4]."""
    anchors = _as_float64(anchors)
    return anchors.reshape(4, -1).T


def dynamic_aggregate_numpy(cls_vis, cls_nl, loc_vis, loc_nl, anchors, *, alpha=1 / 300):
    """(score [B, A, H, W], box [B, 4, A, H, W], w_vis, w_nl, h_vis, h_nl [B]), float64."""
    cls_vis, cls_nl, loc_vis, loc_nl = map(_as_float64, (cls_vis, cls_nl, loc_vis, loc_nl))
    flat_anchors = _pysot_anchors(anchors)
    batch, channels, height, width = cls_vis.shape
    results = [
        _aggregate_one(cls_vis[b], None if cls_nl is None else cls_nl[b], loc_vis[b],
                       None if loc_nl is None else loc_nl[b], flat_anchors, alpha)
        for b in range(batch)
    ]  # fmt: skip
    score, box, *stats = (np.stack(column) for column in zip(*results))
    map_shape = (channels // 2, height, width)
    return (score.reshape(batch, *map_shape), box.reshape(batch, 4, *map_shape), *stats)


def _change(ratio):
    return np.maximum(ratio, 1.0 / ratio)


def _size_with_context(w, h):
    pad = (w + h) * 0.5
    return np.sqrt((w + pad) * (h + pad))


def track_postprocess_numpy(
    cls_vis, cls_nl, loc_vis, loc_nl, anchors, window, target_size,
    *, alpha=1 / 300, penalty_k=0.04, window_influence=0.44, lr=0.4, lr_mode="snlt",
):  # fmt: skip
    """The published tracker's post-processing for each of B targets; a NumpyTrackResult."""
    return track_each_target(
        cls_vis, cls_nl, loc_vis, loc_nl, _pysot_anchors(anchors), window, target_size, _convert_bbox,
        alpha=alpha, penalty_k=penalty_k, window_influence=window_influence, lr=lr, lr_mode=lr_mode,
    )  # fmt: skip


def track_each_target(
    cls_vis, cls_nl, loc_vis, loc_nl, cells, window, target_size, convert_bbox,
    *, alpha, penalty_k, window_influence, lr, lr_mode,
):  # fmt: skip
    """The published trackers' steps after the network, one target at a time: the heads'
    aggregation (boxes decoded by convert_bbox(loc, cells)), penalty, window and argmax."""
    if lr_mode not in ("snlt", "pysot"):
        raise ValueError(f"lr_mode must be 'snlt' or 'pysot', got {lr_mode!r}")
    cls_vis, cls_nl, loc_vis, loc_nl = map(_as_float64, (cls_vis, cls_nl, loc_vis, loc_nl))
    flat_window = _as_float64(window).reshape(-1)
    target_size = np.broadcast_to(_as_float64(target_size), (cls_vis.shape[0], 2))
    rows = []
    for b in range(cls_vis.shape[0]):
        score, box, w_vis, w_nl, h_vis, h_nl = _aggregate_one(
            cls_vis[b], None if cls_nl is None else cls_nl[b], loc_vis[b],
            None if loc_nl is None else loc_nl[b], cells, alpha, convert_bbox,
        )  # fmt: skip
        target_w, target_h = target_size[b]
        scale_change = _change(_size_with_context(box[2], box[3]) / _size_with_context(target_w, target_h))
        ratio_change = _change((target_w / target_h) / (box[2] / box[3]))
        penalty = np.exp(-(ratio_change * scale_change - 1) * penalty_k)
        pscore = penalty * score * (1 - window_influence) + flat_window * window_influence
        best = int(np.argmax(pscore))
        best_lr = pscore[best] * lr if lr_mode == "snlt" else penalty[best] * score[best] * lr
        rows.append((best, box[:, best], score[best], pscore[best], best_lr, w_vis, w_nl, h_vis, h_nl))
    index, box, *values = zip(*rows)
    return NumpyTrackResult(np.asarray(index, dtype=np.int64), np.stack(box), *(np.asarray(v, dtype=np.float64) for v in values))
