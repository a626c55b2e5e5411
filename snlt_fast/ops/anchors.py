"""Anchors and the cosine window of a Siamese RPN tracker, built as pysot builds them.

pysot's `Anchors` makes one anchor per (ratio, scale), ratio-major: for a ratio r,
ws = int(sqrt(stride**2 / r)), hs = int(ws * r), and for each scale s the anchor is
(ws*s) x (hs*s), stored in float32. `SiamRPNTracker.generate_anchor` then places a
copy of every anchor at each score-map cell, centred at ((k - S//2) * stride) in
search-crop pixels relative to the crop centre. The window is the outer product of
two numpy Hanning windows, tiled over the anchors.
"""

import math

import numpy as np
import torch


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value}")


def _check_positive_numbers(name, values):
    if not isinstance(values, (list, tuple)) or not values:
        raise TypeError(f"{name} must be a non-empty list or tuple of numbers, got {values!r}")
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must hold numbers, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must hold positive finite numbers, got {value!r}")


def generate_anchors(stride, ratios, scales, score_size, *, device=None, dtype=torch.float64):
    """Anchors [4, A, S, S] as (cx, cy, w, h), A = len(ratios) * len(scales).

    The values are pysot's float32 anchors (e.g. stride 8, ratios [0.33, 0.5, 1, 2, 3],
    scales [8] for SiamRPN++), returned in `dtype` (float64 by default, which is what
    the post-processing kernels read, so no conversion happens per frame).
    """
    _check_positive_int("stride", stride)
    _check_positive_int("score_size", score_size)
    _check_positive_numbers("ratios", ratios)
    _check_positive_numbers("scales", scales)
    area = stride * stride
    sizes = []
    for ratio in ratios:
        base_w = int(math.sqrt(area * 1.0 / ratio))
        base_h = int(base_w * ratio)
        sizes += [(base_w * scale, base_h * scale) for scale in scales]
    # pysot stores the corners (-w/2, -h/2, w/2, h/2) in float32 and takes the width
    # back as x2 - x1: both steps round, so do them in the same precision.
    half = (np.asarray(sizes, dtype=np.float64) * 0.5).astype(np.float32)
    widths_heights = (half - (-half)).astype(np.float32)
    anchor_num = len(sizes)
    offsets = (np.arange(score_size, dtype=np.float32) - np.float32(score_size // 2)) * np.float32(stride)
    anchors = np.empty((4, anchor_num, score_size, score_size), dtype=np.float32)
    anchors[0] = offsets[None, None, :]
    anchors[1] = offsets[None, :, None]
    anchors[2] = widths_heights[:, 0, None, None]
    anchors[3] = widths_heights[:, 1, None, None]
    return torch.from_numpy(anchors).to(device=device, dtype=dtype)


def hanning_window(score_size, anchor_num, *, device=None, dtype=torch.float64):
    """The window [A, S, S]: np.outer(np.hanning(S), np.hanning(S)) for every anchor (float64, as pysot)."""
    _check_positive_int("score_size", score_size)
    _check_positive_int("anchor_num", anchor_num)
    hanning = np.hanning(score_size)
    window = np.broadcast_to(np.outer(hanning, hanning), (anchor_num, score_size, score_size))
    # A copy: for one anchor the broadcast view is already contiguous but read-only.
    return torch.from_numpy(window.copy()).to(device=device, dtype=dtype)
