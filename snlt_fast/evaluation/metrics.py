"""One-pass evaluation (OPE) metrics, vectorised over frames.

Conventions (those of the OTB and LaSOT toolkits):
  * a box `x, y, w, h` covers x..x+w and y..y+h, so the overlap of two boxes is
    the product of the overlapping spans and IoU = overlap / union;
  * success at threshold t counts frames with IoU > t (strict), for the 21
    thresholds 0, 0.05, ..., 1; the success AUC is the mean over the thresholds;
  * centres are x + (w - 1) / 2, y + (h - 1) / 2; precision at t counts frames
    whose centre distance is <= t pixels, t = 0..50, reported at 20;
  * normalised precision divides the x and y offsets by the ground truth's w and h
    before taking the distance, t = 0, 0.01, ..., 0.5, reported at 0.2;
  * a frame counts only where it is scored: frames whose ground truth has no area
    and frames flagged absent are never successes, yet stay in the denominator
    (the OTB "failure" rule and the LaSOT "left out, full length" rule are the same
    count).
"""

import numpy as np

SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)
PRECISION_THRESHOLDS = np.arange(51, dtype=np.float64)
NORM_PRECISION_THRESHOLDS = np.arange(51, dtype=np.float64) / 100
PRECISION_REPORT_INDEX = 20  # 20 px
NORM_PRECISION_REPORT_INDEX = 20  # 0.2


def _as_boxes(boxes, argument):
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{argument} must have shape (n, 4) as x, y, w, h; got {boxes.shape}")
    return boxes


def _check_pair(gt, pred):
    gt, pred = _as_boxes(gt, "gt"), _as_boxes(pred, "pred")
    if gt.shape != pred.shape:
        raise ValueError(f"gt and pred must have the same number of boxes; got {gt.shape} and {pred.shape}")
    return gt, pred


def iou(gt, pred):
    """(n,) intersection over union of boxes spanning x..x+w, in [0, 1]; 0 where the union is empty."""
    gt, pred = _check_pair(gt, pred)
    overlap_w = np.minimum(gt[:, 0] + gt[:, 2], pred[:, 0] + pred[:, 2]) - np.maximum(gt[:, 0], pred[:, 0])
    overlap_h = np.minimum(gt[:, 1] + gt[:, 3], pred[:, 1] + pred[:, 3]) - np.maximum(gt[:, 1], pred[:, 1])
    intersection = np.clip(overlap_w, 0, None) * np.clip(overlap_h, 0, None)
    union = gt[:, 2] * gt[:, 3] + pred[:, 2] * pred[:, 3] - intersection
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)
    # Rounding in x + w can make the overlap of two equal boxes exceed their area
    # (IoU 1 + 2e-16, which would pass the threshold 1); the toolkits clip too.
    return np.clip(overlap, 0.0, 1.0)


def centers(boxes):
    """(n, 2) centres x + (w - 1) / 2, y + (h - 1) / 2 (pixel-index convention of OTB)."""
    boxes = _as_boxes(boxes, "boxes")
    return boxes[:, :2] + (boxes[:, 2:] - 1) / 2


def center_error(gt, pred):
    """(n,) Euclidean distance between centres, in pixels."""
    gt, pred = _check_pair(gt, pred)
    return np.hypot(*(centers(gt) - centers(pred)).T)


def normalized_center_error(gt, pred):
    """(n,) centre distance with the x and y offsets divided by the ground truth's w and h.

    Infinite where the ground truth has no width or height (such frames never succeed).
    """
    gt, pred = _check_pair(gt, pred)
    offset = centers(gt) - centers(pred)
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = offset / gt[:, 2:]
    error = np.hypot(*scaled.T)
    return np.where((gt[:, 2:] > 0).all(axis=1), error, np.inf)


def scored_frames(gt, absent=None):
    """(n,) bool: frames that can count as successes (ground truth with area, not absent)."""
    gt = _as_boxes(gt, "gt")
    scored = (gt[:, 2] > 0) & (gt[:, 3] > 0)
    if absent is not None:
        absent = np.asarray(absent, dtype=bool)
        if absent.shape != (len(gt),):
            raise ValueError(f"absent must have shape ({len(gt)},), got {absent.shape}")
        scored &= ~absent
    return scored


def count_above(values, thresholds):
    """For each threshold t, how many values are > t (NaN counts as not above)."""
    ordered = np.sort(values[~np.isnan(values)])
    return len(ordered) - np.searchsorted(ordered, thresholds, side="right")


def count_within(values, thresholds):
    """For each threshold t, how many values are <= t (NaN counts as not within)."""
    ordered = np.sort(values[~np.isnan(values)])
    return np.searchsorted(ordered, thresholds, side="right")


def frame_counts(gt, pred, absent=None):
    """Success, precision and normalised-precision counts over the thresholds.

    Returns three int arrays (21, 51, 51 long); divide by len(gt) for the curves.
    """
    gt, pred = _check_pair(gt, pred)
    scored = scored_frames(gt, absent)
    gt, pred = gt[scored], pred[scored]
    offset = centers(gt) - centers(pred)
    return (
        count_above(iou(gt, pred), SUCCESS_THRESHOLDS),
        count_within(np.hypot(offset[:, 0], offset[:, 1]), PRECISION_THRESHOLDS),
        # Scored frames have a ground truth with area: the division is safe.
        count_within(np.hypot(offset[:, 0] / gt[:, 2], offset[:, 1] / gt[:, 3]), NORM_PRECISION_THRESHOLDS),
    )


def success_curve(gt, pred, absent=None):
    """(21,) fraction of frames with IoU > t for t = 0, 0.05, ..., 1."""
    return frame_counts(gt, pred, absent)[0] / len(gt)


def precision_curve(gt, pred, absent=None):
    """(51,) fraction of frames with centre error <= t px for t = 0..50."""
    return frame_counts(gt, pred, absent)[1] / len(gt)


def norm_precision_curve(gt, pred, absent=None):
    """(51,) fraction of frames with normalised centre error <= t for t = 0, 0.01, ..., 0.5."""
    return frame_counts(gt, pred, absent)[2] / len(gt)
