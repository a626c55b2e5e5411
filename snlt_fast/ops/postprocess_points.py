"""Tracking post-processing of an anchor-free (point) Siamese tracker, NanoTrack's, with
SNLT's dynamic aggregation of a visual and a natural-language (NL) head: the reference
(the specification), the custom op that dispatches to each backend, and the public API.
ops/postprocess.py is the anchor form.

Inputs, per target b (B targets, an H x W score map):
  cls_vis, cls_nl  [B, 2, H, W] logits (channel 0 background, 1 foreground);
  loc_vis, loc_nl  [B, 4, H, W] (l, t, r, b): distances from each point to the box's
                   edges (positive: the network applies exp);
  points           [2, H, W] (px, py) of each cell in crop pixels;
  window           [H, W];  target_size [B, 2] (w, h) in crop pixels;
  center           subtracted from the decoded centres: 0 for points around the crop centre
                   (the published NanoTrack tracker), 127 for points in crop coordinates
                   (OpenCV's cv2.TrackerNano); the box is then around the crop centre.

Arithmetic contract, kept by every backend: everything in T, float64 for float64 heads and
float32 for float16, bfloat16 and float32 heads (float32 arithmetic is what OpenCV's tracker
does; the anchor form is float64 inside); points, window, target_size and the numbers alpha,
penalty_k, window_influence, lr and center are converted to T first; no fused multiply-add;
divisions and square roots correctly rounded (IEEE 754's); products and sums in the order written:
  p        = 1 / (1 + exp(l_bg - l_fg))                      per head and cell
  t        = 0 if p == 0 else p * log(p)
  H        = -(lane tree sum of t) over the H*W cells in row-major order (ops/postprocess.py)
  d        = alpha*H_vis - alpha*H_nl;  w_vis = 1/(1 + exp(d));  w_nl = 1/(1 + exp(-d))
  x1 = px - l,  y1 = py - t,  x2 = px + r,  y2 = py + b
  box_head = ((x1 + x2)*0.5 - center, (y1 + y2)*0.5 - center, x2 - x1, y2 - y1)
  score    = w_vis*p_vis + w_nl*p_nl;  box = w_vis*box_vis + w_nl*box_nl
             (no NL head: w_vis = 1, w_nl = 0, H_nl = NaN, score = p_vis, box = box_vis)
  tw, th, sz, change, s_c, r_c, penalty, pscore: as ops/postprocess.py, with (1 - window_influence)
             computed in T:  pscore = penalty*score*(1 - window_influence) + window*window_influence
  index    = the first cell (row-major) whose pscore is NaN, else the first maximum of pscore,
             compared in T (the anchor form compares float32 pscores)
  lr       = penalty[index]*score[index]*lr ("pysot") or pscore[index]*lr ("snlt")
exp and log are the contract's own, made of float64 additions, multiplications and
divisions (each correctly rounded, so the same bits on every device), where libraries'
exp and log differ between devices by an ulp. In float32 they are exp64 and log64
rounded to float32 once: exp(x) = float32(exp64(float64(x))), likewise log.
  exp64(x) = (e * 2^h) * 2^(k - h), with  x' = x clamped to [-746, 710] (NaN stays NaN),
             s = x'*LOG2E + SHIFT,  n = s - SHIFT (x'/ln 2 rounded to an integer k),
             r = (x' - n*LN2_HIGH) - n*LN2_LOW,  e = 1 + (r + (r*r)*horner(EXP_TAIL, r)),
             h = floor(k / 2) (two factors, so that a subnormal result is rounded once);
             horner(c, x) = (...(c[0]*x + c[1])*x + ...)*x + c[-1]
  log64    = ops/anchor_targets.py's log_float64 (fdlibm's reduction, the same rules)
"""

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from snlt_fast import _backends
from snlt_fast.ops.anchor_targets import LN2_HIGH, LN2_LOW, log_float64
from snlt_fast.ops.postprocess import (
    LR_MODES,
    TrackResult,
    TrackTensors,
    _as_kernel_input,
    _call_native_as_given,
    _change,
    _check_head_shapes,
    _check_head_tensors,
    _check_number,
    _check_target_size,
    _check_tensor,
    _heads_in_kernel_dtype,
    _native_backend,
    _size_with_context,
    first_argmax,
    lane_tree_sum,
)

# track_postprocess_points's result: TrackResult's fields, index into the [H][W] cells and
# every float in T.
PointTrackResult = NamedTuple("PointTrackResult", list(TrackResult.__annotations__.items()))

# exp64's constants (the C++ kernels' PolynomialMath in postprocess_math.h holds the same).
EXP_LOW, EXP_HIGH = -746.0, 710.0  # past these exp64 is 0 or inf anyway
LOG2E = 1.4426950408889634
SHIFT = 6755399441055744.0  # 1.5 * 2^52: x + SHIFT rounds x to an integer, in the low bits
SHIFT_BITS = 0x4338000000000000  # SHIFT's bit pattern
# A near-minimax polynomial (Chebyshev fit): (exp(r) - 1 - r) / r^2 on |r| <= ln(2)/2.
EXP_TAIL = (
    2.0914679376583935e-09, 2.510520637395701e-08, 2.7557273661348637e-07, 2.7557255425746435e-06,
    2.4801587325533363e-05, 0.00019841269874800493, 0.0013888888888883752, 0.008333333333326141,
    0.04166666666666667, 0.1666666666666667, 0.5,
)  # fmt: skip


# --------------------------------------------------------------------------- reference


def exp64(x: Tensor) -> Tensor:
    """The contract's exp of float64 x (module docstring)."""
    x = x.clamp(EXP_LOW, EXP_HIGH)
    shifted = x * LOG2E + SHIFT
    n = shifted - SHIFT
    r = (x - n * LN2_HIGH) - n * LN2_LOW
    tail = torch.full_like(r, EXP_TAIL[0])
    for coefficient in EXP_TAIL[1:]:
        tail = tail * r + coefficient
    e = 1.0 + (r + (r * r) * tail)
    exponent = shifted.view(torch.int64) - SHIFT_BITS
    half = exponent >> 1
    return e * _power_of_two(half) * _power_of_two(exponent - half)


def _power_of_two(exponent):
    """2^exponent (int64 tensor, a normal double's exponent) as float64."""
    return ((exponent + 1023) << 52).view(torch.float64)


def _exp(x):
    """The contract's exp in x's dtype T."""
    return exp64(x.to(torch.float64)).to(x.dtype)


def _log(x):
    return log_float64(x.to(torch.float64)).to(x.dtype)


def in_dtype(value: float, dtype: torch.dtype) -> float:
    """A Python number rounded to `dtype` (returned as a float that holds it exactly)."""
    return torch.tensor(value, dtype=dtype).item()


def _point_head(cls, loc, points, center):
    """(p [B, H, W], entropy [B], box [B, 4, H, W]) of one head, in T."""
    p = 1.0 / (1.0 + _exp(cls[:, 0] - cls[:, 1]))
    terms = torch.where(p == 0, 0.0, p * _log(p))
    entropy = -lane_tree_sum(terms.flatten(1))
    px, py = points
    left, top, right, bottom = loc.unbind(1)
    x1, y1, x2, y2 = px - left, py - top, px + right, py + bottom
    box = torch.stack(((x1 + x2) * 0.5 - center, (y1 + y2) * 0.5 - center, x2 - x1, y2 - y1), dim=1)
    return p, entropy, box


def track_postprocess_points_reference(
    cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size, alpha, penalty_k, window_influence, lr, center,
    lr_from_pscore,
):  # fmt: skip
    """PointTrackResult's fields: index int64, the others in T (the heads' float32 or float64)."""
    dtype = cls_vis.dtype
    alpha, penalty_k, lr, center = (in_dtype(v, dtype) for v in (alpha, penalty_k, lr, center))
    window_influence = in_dtype(window_influence, dtype)
    keep = in_dtype(1.0 - window_influence, dtype)  # exact in float64, then rounded once: (1 - wi) in T
    points, window, sizes = points.to(dtype), window.to(dtype), target_size.to(dtype)
    p_vis, h_vis, box_vis = _point_head(cls_vis, loc_vis, points, center)
    if cls_nl is None:
        score, box = p_vis, box_vis
        w_vis, w_nl, h_nl = torch.ones_like(h_vis), torch.zeros_like(h_vis), torch.full_like(h_vis, math.nan)
    else:
        p_nl, h_nl, box_nl = _point_head(cls_nl, loc_nl, points, center)
        gap = alpha * h_vis - alpha * h_nl
        w_vis = 1.0 / (1.0 + _exp(gap))
        w_nl = 1.0 / (1.0 + _exp(-gap))
        score = w_vis[:, None, None] * p_vis + w_nl[:, None, None] * p_nl
        box = w_vis[:, None, None, None] * box_vis + w_nl[:, None, None, None] * box_nl
    sizes = torch.where(torch.isfinite(sizes) & (sizes > 0), sizes, math.nan)
    target_w, target_h = (sizes[:, k, None, None] for k in range(2))
    w, h = box[:, 2], box[:, 3]
    scale_change = _change(_size_with_context(w, h) / _size_with_context(target_w, target_h))
    ratio_change = _change((target_w / target_h) / (w / h))
    penalty = _exp((1.0 - ratio_change * scale_change) * penalty_k)
    pscore = penalty * score * keep + window * window_influence
    index = first_argmax(pscore.flatten(1))
    rows = torch.arange(score.shape[0], device=score.device)
    at_best = lambda cells: cells.flatten(1)[rows, index]  # noqa: E731
    best_lr = at_best(pscore) * lr if lr_from_pscore else at_best(penalty) * at_best(score) * lr
    return index, box.flatten(2)[rows, :, index], at_best(score), at_best(pscore), best_lr, w_vis, w_nl, h_vis, h_nl


# --------------------------------------------------------------------------- custom op


@torch.library.custom_op("snlt_fast::track_postprocess_points", mutates_args=())
def _track_points_op(
    cls_vis: Tensor,
    cls_nl: Optional[Tensor],
    loc_vis: Tensor,
    loc_nl: Optional[Tensor],
    points: Tensor,
    window: Tensor,
    target_size: Tensor,
    alpha: float,
    penalty_k: float,
    window_influence: float,
    lr: float,
    center: float,
    lr_from_pscore: bool,
    backend: str,
) -> TrackTensors:
    args = (cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size, alpha, penalty_k, window_influence, lr)
    if backend == "reference":
        return track_postprocess_points_reference(*args, center, lr_from_pscore)
    if backend in ("cpu", "cuda"):
        return tuple(_backends.native_ops().postprocess_track_points(*args, center, lr_from_pscore))
    return _backends.triton_kernels("postprocess_points").track_postprocess_points(*args, center, lr_from_pscore)


@_track_points_op.register_fake
def _(cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size, alpha, penalty_k, window_influence, lr, center,
      lr_from_pscore, backend):  # fmt: skip
    batch = cls_vis.shape[0]
    values = tuple(cls_vis.new_empty((batch,)) for _ in TrackResult._fields[2:])
    return cls_vis.new_empty((batch,), dtype=torch.int64), cls_vis.new_empty((batch, 4)), *values


# --------------------------------------------------------------------------- validation


def _check_point_heads(cls_vis, cls_nl, loc_vis, loc_nl, points):
    """Validate the heads and points; returns them in T (float32 or float64), contiguous."""
    heads = _check_head_tensors(cls_vis, cls_nl, loc_vis, loc_nl, "points", points)
    shape = cls_vis.shape
    if len(shape) != 4 or shape[1] != 2 or shape[2] < 1 or shape[3] < 1:
        raise ValueError(f"cls_vis must be [B, 2, H, W] with H, W >= 1, got shape {tuple(shape)}")
    batch, _, height, width = shape
    _check_head_shapes(cls_vis, cls_nl, loc_vis, loc_nl, "[B, 4, H, W]", (batch, 4, height, width))
    if points.shape != (2, height, width):
        raise ValueError(f"points must be [2, H, W] = {(2, height, width)} (px, py) to match cls_vis, got {tuple(points.shape)}")
    prepared = _heads_in_kernel_dtype(heads, cls_vis, cls_nl, loc_vis, loc_nl)
    return prepared, _as_kernel_input(points, prepared[0].dtype)


def _check_point_window(window, points):
    _check_tensor("window", window, points.device, "points")
    if window.shape != points.shape[1:]:
        raise ValueError(f"window must be [H, W] = {tuple(points.shape[1:])} to match the points, got {tuple(window.shape)}")
    return _as_kernel_input(window, points.dtype)


# --------------------------------------------------------------------------- public API


def track_postprocess_points(
    cls_vis,
    cls_nl,
    loc_vis,
    loc_nl,
    points,
    window,
    target_size,
    *,
    alpha=1 / 300,
    penalty_k,
    window_influence,
    lr,
    lr_mode="pysot",
    center=0.0,
    backend=None,
) -> PointTrackResult:
    """One tracking step's post-processing for B targets of an anchor-free (point) tracker
    such as NanoTrack: SNLT's aggregation of the visual and NL heads, the scale/ratio
    penalty and window, and the best cell per target, in one launch.

    target_size is each target's current (w, h) in crop pixels ([B, 2], or [2] for all).
    lr_mode "pysot" (NanoTrack's rule) takes lr = penalty[best] * score[best] * lr, "snlt"
    takes pscore[best] * lr. With cls_nl = loc_nl = None this is NanoTrack's post-processing.
    Floats come back in T: float64 for float64 heads, else float32 (module docstring).
    """
    alpha = _check_number("alpha", alpha)
    penalty_k = _check_number("penalty_k", penalty_k)
    window_influence = _check_number("window_influence", window_influence)
    lr = _check_number("lr", lr)
    center = _check_number("center", center)
    if lr_mode not in LR_MODES:
        raise ValueError(f"lr_mode must be one of {', '.join(map(repr, LR_MODES))}, got {lr_mode!r}")
    native = _native_backend(backend, cls_vis)
    numbers = (alpha, penalty_k, window_influence, lr, center, lr_mode == "snlt")
    # As track_postprocess: inputs already in kernel form go straight to the native checks.
    if native and type(target_size) is Tensor and target_size.dim() == 2:
        outputs = _call_native_as_given(
            _backends.native_module().postprocess_track_points, cls_vis, cls_nl, loc_vis, loc_nl, points, window,
            target_size, *numbers, kernel_inputs=(points, window, target_size), dtype=cls_vis.dtype,
        )  # fmt: skip
        if outputs is not None:
            return PointTrackResult(*outputs)
    (cls_vis, cls_nl, loc_vis, loc_nl), points = _check_point_heads(cls_vis, cls_nl, loc_vis, loc_nl, points)
    window = _check_point_window(window, points)
    target_size = _check_target_size(target_size, cls_vis.shape[0], cls_vis.device, points.dtype)
    args = (cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size, *numbers)
    if native:
        return PointTrackResult(*_backends.native_module().postprocess_track_points(*args))
    return PointTrackResult(*_track_points_op(*args, _backends.resolve_backend(backend, cls_vis.device)))
