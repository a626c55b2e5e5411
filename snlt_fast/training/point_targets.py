"""Training targets of point-form (anchor-free) heads: NanoTrack V1-V3 and their language head.

Each cell of the S x S maps looks at one point of the search crop, (px, py) =
stride * (i - S // 2) around the crop centre (`nanotrack_points`, what the published
tracker decodes with), and the target box is (cx, cy, w, h) around that same centre
(`batch["box"]` of snlt_fast.training.data).

Labels, SiamBAN's ellipse rule (the NanoTrack facts this project holds do not state
NanoTrack's own; NanoTrack's training code derives from SiamBAN's): a point inside the
ellipse with semi-axes (w / 4, h / 4) around the box centre (the box's half-sizes scaled
by 0.5) is positive (1), a point outside the ellipse with semi-axes (w / 2, h / 2) is
negative (0), a point in between is ignored (-1). Every point of a negative pair is
negative. Regression targets are the (l, t, r, b) = (px - x1, py - y1, x2 - px, y2 - py)
distances in crop pixels, what the network's loc map predicts; the loss reads them only
at positive points, where all four are positive.
"""

from typing import NamedTuple

import torch
from torch import Tensor

from snlt_fast.tracker.point import nanotrack_points


class PointTargets(NamedTuple):
    """point_targets' result, per sample b."""

    labels: Tensor  # [B, S, S] int64: 1 positive, 0 negative, -1 ignored
    ltrb: Tensor  # [B, 4, S, S] float32 (l, t, r, b)


def model_points(model, device):
    """The points [2, S, S] (px, py) of a point-form model's cells, around the crop centre, float64."""
    points = nanotrack_points(model.score_size, model.stride, False, model.exemplar_size)
    return torch.as_tensor(points, dtype=torch.float64, device=device)


def point_targets(points, boxes, negative):
    """Labels and (l, t, r, b) targets of B samples.

    points    [2, S, S] (px, py) in crop pixels around the crop centre.
    boxes     [B, 4] (cx, cy, w, h) of the target in the same frame.
    negative  [B] bool: the search crop shows another object (every label 0).
    """
    if points.dim() != 3 or points.shape[0] != 2:
        raise ValueError(f"points must be [2, S, S] (px, py), got shape {tuple(points.shape)}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [B, 4] (cx, cy, w, h), got shape {tuple(boxes.shape)}")
    if negative.shape != boxes.shape[:1]:
        raise ValueError(f"negative must be [B] = [{boxes.shape[0]}] to match boxes, got shape {tuple(negative.shape)}")
    boxes = boxes.to(points)
    cx, cy, w, h = (boxes[:, k, None, None] for k in range(4))
    px, py = points[0], points[1]
    dx, dy = px - cx, py - cy
    # (dx / a)^2 + (dy / b)^2 against 1 with both sides times a^2 b^2: no division, so a box
    # of zero width or height gives no positive and no NaN.
    spread, area = (dx * h) ** 2 + (dy * w) ** 2, (w * h) ** 2
    positive = 16 * spread < area  # inside semi-axes (w / 4, h / 4)
    outside = 4 * spread > area  # outside semi-axes (w / 2, h / 2)
    labels = torch.where(positive, 1, torch.where(outside, 0, -1))
    labels = torch.where(negative.to(labels.device)[:, None, None], 0, labels)
    ltrb = torch.stack((dx + w / 2, dy + h / 2, w / 2 - dx, h / 2 - dy), dim=1)
    return PointTargets(labels.to(torch.int64), ltrb.to(torch.float32))
