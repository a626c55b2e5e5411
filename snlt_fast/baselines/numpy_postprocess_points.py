"""The anchor-free (point) tracking post-processing in numpy, one target at a time, as the
published NanoTrack tracker does it after copying the head outputs off the device
(nano_tracker.py: softmax score, (l, t, r, b) decoded on points around the crop centre,
the scale/ratio penalty, the window, lr = penalty * score * LR), plus SNLT's aggregation
of an NL head as numpy_postprocess does it. Float64; snlt_fast's layouts: heads
[B, 2, H, W] / [B, 4, H, W], points [2, H, W], window [H, W], target_size [B, 2].
"""

import numpy as np

from snlt_fast.baselines.numpy_postprocess import _as_float64, track_each_target


def _convert_bbox(loc, points):
    """Boxes [4, H*W] (cx, cy, w, h) from distances [4, H, W] and points [H*W, 2], as the published corner2center."""
    delta = loc.reshape(4, -1)
    x1, y1 = points[:, 0] - delta[0], points[:, 1] - delta[1]
    x2, y2 = points[:, 0] + delta[2], points[:, 1] + delta[3]
    return np.stack(((x1 + x2) * 0.5, (y1 + y2) * 0.5, x2 - x1, y2 - y1))


def track_postprocess_points_numpy(
    cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size,
    *, alpha=1 / 300, penalty_k, window_influence, lr, lr_mode="pysot",
):  # fmt: skip
    """NanoTrack's post-processing (with the NL head when given) for each of B targets; a NumpyTrackResult."""
    flat_points = _as_float64(points).reshape(2, -1).T  # the published generate_points' [H*W, 2]
    return track_each_target(
        cls_vis, cls_nl, loc_vis, loc_nl, flat_points, window, target_size, _convert_bbox,
        alpha=alpha, penalty_k=penalty_k, window_influence=window_influence, lr=lr, lr_mode=lr_mode,
    )  # fmt: skip
