"""Tracking post-processing of a Siamese RPN tracker with SNLT's dynamic aggregation
of the visual and the natural-language (NL) heads: the reference (the
specification), the custom ops that dispatch to each backend, and the public API.

Inputs, per target b (B targets, A anchors, an H x W score map, pysot's layouts):
  cls_vis, cls_nl  [B, 2A, H, W] logits, channels [2][A] (A..2A-1: foreground);
  loc_vis, loc_nl  [B, 4A, H, W] deltas, channels [4][A] = (dx, dy, dw, dh);
  anchors          [4, A, H, W] (cx, cy, w, h) in crop pixels around the crop centre;
  window           [A, H, W] cosine window; target_size [B, 2] (w, h) in crop pixels.

Arithmetic contract, kept by every backend (all in float64, one rounding to float32
at the outputs; no fused multiply-add; products and sums in the order written):
  p        = 1 / (1 + exp(l_bg - l_fg))                      per head and cell
  t        = 0 if p == 0 else p * log(p)
  H        = -(lane tree sum of t): the cells n = 0..N-1 in [A][H][W] order go to lane
             n % 256; each lane adds its cells in increasing n starting from +0; then
             lanes l and l + w are added for w = 128, 64, ..., 1 and H is -lane[0]
  d        = alpha*H_vis - alpha*H_nl;  w_vis = 1/(1 + exp(d));  w_nl = 1/(1 + exp(-d))
  box_head = (dx*wa + xa, dy*ha + ya, exp(dw)*wa, exp(dh)*ha)
  score    = w_vis*p_vis + w_nl*p_nl;  box = w_vis*box_vis + w_nl*box_nl
             (no NL head: w_vis = 1, w_nl = 0, H_nl = NaN, score = p_vis, box = box_vis)
  tw, th   = the target size, each replaced by NaN unless positive and finite (so that a
             size left unchecked on a device makes every score of its target NaN)
  sz(w, h) = sqrt((w + pad) * (h + pad)) with pad = (w + h) * 0.5
  change(r)= r if r > 1/r else 1/r   (NaN stays NaN)
  s_c      = change(sz(w, h) / sz(tw, th));  r_c = change((tw / th) / (w / h))
  penalty  = exp((1 - r_c*s_c) * penalty_k)
  pscore   = penalty*score*(1 - window_influence) + window*window_influence
  index    = the first cell whose float32 pscore is NaN, else the first maximum of the
             float32 pscore over the cells in [A][H][W] order
  lr       = pscore[index]*lr_base ("snlt") or penalty[index]*score[index]*lr_base ("pysot")
The order of the entropy sum is fixed so that every backend rounds H identically.
"""

import math
import numbers
from typing import NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

from snlt_fast import _backends
from snlt_fast.ops.xcorr import FLOAT_DTYPES, accumulator_dtype

# Number of running partial sums of the entropy (one per GPU thread of a target's block).
ENTROPY_LANES = 256
LR_MODES = ("snlt", "pysot")
# The heads' dtypes that the native kernels read.
_KERNEL_DTYPES = (torch.float32, torch.float64)


class Aggregation(NamedTuple):
    """dynamic_aggregate's result: fused maps and, per target, the modality weights and entropies."""

    score: Tensor  # [B, A, H, W]
    box: Tensor  # [B, 4, A, H, W] (cx, cy, w, h)
    w_vis: Tensor  # [B]
    w_nl: Tensor
    h_vis: Tensor
    h_nl: Tensor


class TrackResult(NamedTuple):
    """track_postprocess's result, one entry per target."""

    index: Tensor  # [B] int64, flat index into [A][H][W]
    box: Tensor  # [B, 4] (cx, cy, w, h) in crop pixels around the crop centre
    score: Tensor  # [B] fused score at index
    pscore: Tensor  # [B] penalised, windowed score at index
    lr: Tensor  # [B] size-update rate
    w_vis: Tensor
    w_nl: Tensor
    h_vis: Tensor
    h_nl: Tensor


# --------------------------------------------------------------------------- reference


def lane_tree_sum(terms: Tensor) -> Tensor:
    """Sum of terms [B, N] over N in the contract's fixed order (see the module docstring)."""
    batch, count = terms.shape
    # Padding cells add +0, which leaves a partial sum unchanged (partials are never -0).
    steps = -(-count // ENTROPY_LANES)
    lanes = torch.nn.functional.pad(terms, (0, steps * ENTROPY_LANES - count)).reshape(batch, steps, ENTROPY_LANES)
    partial = terms.new_zeros((batch, ENTROPY_LANES))
    for step in range(steps):
        partial = partial + lanes[:, step]
    width = ENTROPY_LANES // 2
    while width:
        partial = partial[:, :width] + partial[:, width : 2 * width]
        width //= 2
    return partial[:, 0]


def _head_reference(cls: Tensor, loc: Tensor, anchors: Tensor):
    """(p [B, A, H, W], entropy [B], box [B, 4, A, H, W]) of one head, in float64."""
    anchor_num = cls.shape[1] // 2
    p = 1.0 / (1.0 + torch.exp(cls[:, :anchor_num] - cls[:, anchor_num:]))
    terms = torch.where(p == 0, 0.0, p * torch.log(p))
    entropy = -lane_tree_sum(terms.flatten(1))
    deltas = loc.reshape(loc.shape[0], 4, anchor_num, *loc.shape[2:])
    xa, ya, wa, ha = anchors
    box = torch.stack(
        (
            deltas[:, 0] * wa + xa,
            deltas[:, 1] * ha + ya,
            torch.exp(deltas[:, 2]) * wa,
            torch.exp(deltas[:, 3]) * ha,
        ),
        dim=1,
    )
    return p, entropy, box


def _aggregate_float64(cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha):
    """(score, box, w_vis, w_nl, h_vis, h_nl) in float64: the fused maps and per-target statistics."""
    f64 = torch.float64
    anchors = anchors.to(f64)
    p_vis, h_vis, box_vis = _head_reference(cls_vis.to(f64), loc_vis.to(f64), anchors)
    if cls_nl is None:
        ones = torch.ones_like(h_vis)
        return p_vis, box_vis, ones, torch.zeros_like(h_vis), h_vis, torch.full_like(h_vis, math.nan)
    p_nl, h_nl, box_nl = _head_reference(cls_nl.to(f64), loc_nl.to(f64), anchors)
    logit_gap = alpha * h_vis - alpha * h_nl
    w_vis = 1.0 / (1.0 + torch.exp(logit_gap))
    w_nl = 1.0 / (1.0 + torch.exp(-logit_gap))
    score = w_vis[:, None, None, None] * p_vis + w_nl[:, None, None, None] * p_nl
    box = w_vis[:, None, None, None, None] * box_vis + w_nl[:, None, None, None, None] * box_nl
    return score, box, w_vis, w_nl, h_vis, h_nl


def dynamic_aggregate_reference(cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha):
    """Aggregation's fields as float32 tensors."""
    return tuple(value.float() for value in _aggregate_float64(cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha))


def _change(ratio):
    inverse = 1.0 / ratio
    return torch.where(ratio > inverse, ratio, inverse)


def correctly_rounded_sqrt(x: Tensor) -> Tensor:
    """sqrt rounded as IEEE 754 rounds it, as the kernels' sqrt is: torch's vectorized CPU
    sqrt is an ulp off for about 1% of float32 and float64 inputs; numpy's is exact."""
    if x.device.type != "cpu":
        return torch.sqrt(x)
    with np.errstate(invalid="ignore"):
        return torch.from_numpy(np.sqrt(x.numpy()))


def _size_with_context(w, h):
    pad = (w + h) * 0.5
    return correctly_rounded_sqrt((w + pad) * (h + pad))


def first_argmax(values: Tensor) -> Tensor:
    """Per row of values [B, N]: the first NaN if any, else the first maximum (int64 [B])."""
    is_nan = torch.isnan(values)
    first_nan = is_nan.to(torch.uint8).argmax(dim=1)
    return torch.where(is_nan.any(dim=1), first_nan, values.argmax(dim=1))


def track_postprocess_reference(
    cls_vis, cls_nl, loc_vis, loc_nl, anchors, window, target_size, alpha, penalty_k, window_influence, lr, lr_from_pscore
):
    """TrackResult's fields: index int64, the others float32."""
    f64 = torch.float64
    score, box, w_vis, w_nl, h_vis, h_nl = _aggregate_float64(cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha)
    batch = score.shape[0]
    sizes = target_size.to(f64)
    sizes = torch.where(torch.isfinite(sizes) & (sizes > 0), sizes, math.nan)
    target_w, target_h = (sizes[:, k, None, None, None] for k in range(2))
    w, h = box[:, 2], box[:, 3]
    scale_change = _change(_size_with_context(w, h) / _size_with_context(target_w, target_h))
    ratio_change = _change((target_w / target_h) / (w / h))
    penalty = torch.exp((1.0 - ratio_change * scale_change) * penalty_k)
    pscore = penalty * score * (1.0 - window_influence) + window.to(f64) * window_influence
    index = first_argmax(pscore.flatten(1).float())
    rows = torch.arange(batch, device=score.device)
    at_best = lambda cells: cells.flatten(1)[rows, index]  # noqa: E731
    best_lr = at_best(pscore) * lr if lr_from_pscore else at_best(penalty) * at_best(score) * lr
    best_box = box.flatten(2)[rows, :, index]
    values = (best_box, at_best(score), at_best(pscore), best_lr, w_vis, w_nl, h_vis, h_nl)
    return (index, *(value.float() for value in values))


# --------------------------------------------------------------------------- custom ops

# The ops return each field of their result as its own tensor (none a view of another).
AggregateTensors = tuple[(Tensor,) * len(Aggregation._fields)]
TrackTensors = tuple[(Tensor,) * len(TrackResult._fields)]


@torch.library.custom_op("snlt_fast::dynamic_aggregate", mutates_args=())
def _aggregate_op(
    cls_vis: Tensor,
    cls_nl: Optional[Tensor],
    loc_vis: Tensor,
    loc_nl: Optional[Tensor],
    anchors: Tensor,
    alpha: float,
    backend: str,
) -> AggregateTensors:
    if backend == "reference":
        return dynamic_aggregate_reference(cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha)
    if backend in ("cpu", "cuda"):
        return tuple(_backends.native_ops().postprocess_aggregate(cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha))
    return _backends.triton_kernels("postprocess").dynamic_aggregate(cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha)


@_aggregate_op.register_fake
def _(cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha, backend):
    batch, channels, height, width = cls_vis.shape
    f32 = torch.float32
    stats = tuple(cls_vis.new_empty((batch,), dtype=f32) for _ in Aggregation._fields[2:])
    return (
        cls_vis.new_empty((batch, channels // 2, height, width), dtype=f32),
        cls_vis.new_empty((batch, 4, channels // 2, height, width), dtype=f32),
        *stats,
    )


@torch.library.custom_op("snlt_fast::track_postprocess", mutates_args=())
def _track_op(
    cls_vis: Tensor,
    cls_nl: Optional[Tensor],
    loc_vis: Tensor,
    loc_nl: Optional[Tensor],
    anchors: Tensor,
    window: Tensor,
    target_size: Tensor,
    alpha: float,
    penalty_k: float,
    window_influence: float,
    lr: float,
    lr_from_pscore: bool,
    backend: str,
) -> TrackTensors:
    args = (cls_vis, cls_nl, loc_vis, loc_nl, anchors, window, target_size, alpha, penalty_k, window_influence, lr)
    if backend == "reference":
        return track_postprocess_reference(*args, lr_from_pscore)
    if backend in ("cpu", "cuda"):
        return tuple(_backends.native_ops().postprocess_track(*args, lr_from_pscore))
    return _backends.triton_kernels("postprocess").track_postprocess(*args, lr_from_pscore)


@_track_op.register_fake
def _(cls_vis, cls_nl, loc_vis, loc_nl, anchors, window, target_size, alpha, penalty_k, window_influence, lr, lr_from_pscore, backend):
    batch = cls_vis.shape[0]
    values = tuple(cls_vis.new_empty((batch,), dtype=torch.float32) for _ in TrackResult._fields[2:])
    return cls_vis.new_empty((batch,), dtype=torch.int64), cls_vis.new_empty((batch, 4), dtype=torch.float32), *values


# --------------------------------------------------------------------------- validation


# These run on every tracking frame, where each microsecond is a few percent of the call:
# each tensor attribute is read once, shapes are compared as torch.Size against tuples,
# and loops over the tensors are unrolled where a generator would cost more than the checks.


def _check_tensor(name, value, device, device_owner):
    """value is a floating-point tensor on `device`, the device of the argument `device_owner`."""
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {value.dtype}")
    if value.device != device:
        raise ValueError(f"{name} must be on the device of {device_owner} ({device}), got {value.device}")


def _check_number(name, value):
    if type(value) is float and math.isfinite(value):  # the common case, without the ABC check below
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite real number, got {value!r}")
    return float(value)


def _check_head_tensors(cls_vis, cls_nl, loc_vis, loc_nl, cells_name, cells):
    """The heads as (name, tensor) pairs, after checking that the NL head is whole and that
    the heads and `cells` (the anchors or points) are floating-point tensors on cls_vis's device."""
    if (cls_nl is None) != (loc_nl is None):
        raise ValueError("cls_nl and loc_nl must both be given (SNLT) or both be None (visual head only)")
    if not isinstance(cls_vis, Tensor):
        raise TypeError(f"cls_vis must be a torch.Tensor, got {type(cls_vis).__name__}")
    device = cls_vis.device
    heads = (("cls_vis", cls_vis), ("loc_vis", loc_vis))
    if cls_nl is not None:
        heads += (("cls_nl", cls_nl), ("loc_nl", loc_nl))
    for name, value in heads + ((cells_name, cells),):
        _check_tensor(name, value, device, "cls_vis")
    return heads


def _check_head_shapes(cls_vis, cls_nl, loc_vis, loc_nl, loc_layout, loc_shape):
    """loc_vis is `loc_layout` = loc_shape, and the NL head has the visual head's shapes."""
    if loc_vis.shape != loc_shape:
        raise ValueError(
            f"loc_vis must be {loc_layout} = {loc_shape} to match cls_vis {tuple(cls_vis.shape)}, got {tuple(loc_vis.shape)}"
        )
    if cls_nl is not None:
        for name, value, expected in (("cls_nl", cls_nl, cls_vis.shape), ("loc_nl", loc_nl, loc_shape)):
            if value.shape != expected:
                raise ValueError(f"{name} must have the shape of the visual head, {tuple(expected)}, got {tuple(value.shape)}")


def _heads_in_kernel_dtype(heads, cls_vis, cls_nl, loc_vis, loc_nl):
    """The heads, which must share a dtype, contiguous in the kernels' float32 or float64."""
    dtype = cls_vis.dtype
    if loc_vis.dtype != dtype or (cls_nl is not None and (cls_nl.dtype != dtype or loc_nl.dtype != dtype)):
        raise TypeError(f"cls and loc heads must share a dtype, got {', '.join(f'{n} {v.dtype}' for n, v in heads)}")
    # Half types convert to float32 exactly, so the kernels read float32 or float64 only.
    kernel_dtype = accumulator_dtype(dtype)
    prepared = [_as_kernel_input(cls_vis, kernel_dtype), None, _as_kernel_input(loc_vis, kernel_dtype), None]
    if cls_nl is not None:
        prepared[1], prepared[3] = _as_kernel_input(cls_nl, kernel_dtype), _as_kernel_input(loc_nl, kernel_dtype)
    return prepared


def _check_heads(cls_vis, cls_nl, loc_vis, loc_nl, anchors):
    """Validate the heads and anchors; returns the heads in one kernel dtype (float32 or float64), contiguous."""
    heads = _check_head_tensors(cls_vis, cls_nl, loc_vis, loc_nl, "anchors", anchors)
    shape = cls_vis.shape
    if len(shape) != 4 or shape[1] < 2 or shape[1] % 2:
        raise ValueError(f"cls_vis must be [B, 2A, H, W] with A >= 1, got shape {tuple(shape)}")
    batch, channels, height, width = shape
    anchor_num = channels // 2
    if height < 1 or width < 1:
        raise ValueError(f"cls_vis must have a non-empty score map, got shape {tuple(shape)}")
    loc_shape = (batch, 4 * anchor_num, height, width)
    _check_head_shapes(cls_vis, cls_nl, loc_vis, loc_nl, f"[B, 4A, H, W] (A = {anchor_num})", loc_shape)
    if anchors.shape != (4, anchor_num, height, width):
        raise ValueError(
            f"anchors must be [4, A, H, W] = {(4, anchor_num, height, width)} for A = {anchor_num} anchors and a "
            f"{height}x{width} score map, got {tuple(anchors.shape)}"
        )
    return _heads_in_kernel_dtype(heads, cls_vis, cls_nl, loc_vis, loc_nl), _as_kernel_input(anchors, torch.float64)


def _as_kernel_input(tensor, dtype):
    """`tensor` in `dtype`, contiguous; itself when it already is (the per-frame case)."""
    if tensor.dtype == dtype and tensor.is_contiguous():
        return tensor
    return tensor.to(dtype).contiguous()


def _check_window(window, anchors):
    _check_tensor("window", window, anchors.device, "anchors")
    if window.shape != anchors.shape[1:]:
        raise ValueError(
            f"window must be [A, H, W] = {tuple(anchors.shape[1:])} to match the anchors, got {tuple(window.shape)}"
        )
    return _as_kernel_input(window, torch.float64)


def _check_target_size(target_size, batch, device, dtype=torch.float64):
    """target_size as `dtype` [B, 2] on `device`: a tensor [B, 2] or [2], or a sequence of (w, h)."""
    if isinstance(target_size, Tensor):
        if target_size.dtype.is_complex or target_size.dtype == torch.bool:
            raise TypeError(f"target_size must hold real numbers, got {target_size.dtype}")
        if target_size.device != device:
            raise ValueError(f"target_size must be on the device of cls_vis ({device}), got {target_size.device}")
        sizes = target_size
    else:
        try:
            sizes = torch.as_tensor(target_size, dtype=torch.float64)  # checked on the host below, then moved
        except (TypeError, ValueError, RuntimeError) as error:
            raise TypeError(f"target_size must be a tensor or a sequence of (w, h) numbers, got {target_size!r}") from error
    shape = sizes.shape
    if shape == (2,):
        sizes = sizes.expand(batch, 2)
    elif shape != (batch, 2):
        raise ValueError(f"target_size must be [B, 2] = {(batch, 2)} or [2] (w, h), got {tuple(shape)}")
    # Checked as the kernels read it: a size that `dtype` cannot hold (1e40 in float32) is refused.
    sizes = sizes.to(dtype)
    # Reading a device tensor on the host would stall the stream every frame (and break
    # a compiled graph): there the kernels turn an invalid size into NaN scores instead.
    if sizes.device.type == "cpu" and not torch.compiler.is_compiling():
        for w, h in sizes.tolist():
            if not (0 < w < math.inf and 0 < h < math.inf):
                raise ValueError(f"target_size must hold positive finite (w, h), got {sizes.tolist()}")
    if sizes.device != device:
        sizes = sizes.to(device)
    return _as_kernel_input(sizes, dtype)


def _native_backend(backend, cls_vis):
    """Whether this eager call runs on the native (C++/CUDA) backend and may call it directly."""
    return isinstance(cls_vis, Tensor) and _backends.calls_native_directly(_backends.resolve_backend(backend, cls_vis.device))


def _call_native_as_given(entry, cls_vis, *args, kernel_inputs, dtype=torch.float64):
    """entry(cls_vis, *args) from snlt_fast._C, or None where the inputs are not in kernel form.

    Per-frame inputs already are (contiguous tensors, heads in float32 or float64 alike,
    kernel_inputs tensors in `dtype`, host target sizes valid): they meet only the native checks,
    ~3 us less than the checks here. The dtypes that callers commonly convert (half heads,
    float32 anchors from numpy) are screened out here, as a refusal by the native checks costs
    ~14 us; whatever else they refuse, they refuse before any work, and the caller then takes
    the checks here, which convert what they can and name what is wrong.
    """
    if cls_vis.dtype not in _KERNEL_DTYPES:
        return None
    for value in kernel_inputs:
        if type(value) is not Tensor or value.dtype is not dtype:
            return None
    try:
        return entry(cls_vis, *args)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- public API


def dynamic_aggregate(cls_vis, cls_nl, loc_vis, loc_nl, anchors, *, alpha=1 / 300, backend=None) -> Aggregation:
    """SNLT's dynamic aggregation (the paper's Eq. 2-4) of the visual and NL heads.

    Returns the fused score map [B, A, H, W], the fused boxes [B, 4, A, H, W] (cx, cy,
    w, h decoded on `anchors`), and per target the weights w_vis, w_nl and the head
    entropies h_vis, h_nl; all float32. cls_nl = loc_nl = None means the visual head
    only (w_vis = 1). See the module docstring for the exact arithmetic.
    """
    alpha = _check_number("alpha", alpha)
    native = _native_backend(backend, cls_vis)
    if native:
        outputs = _call_native_as_given(
            _backends.native_module().postprocess_aggregate, cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha,
            kernel_inputs=(anchors,),
        )  # fmt: skip
        if outputs is not None:
            return Aggregation(*outputs)
    (cls_vis, cls_nl, loc_vis, loc_nl), anchors = _check_heads(cls_vis, cls_nl, loc_vis, loc_nl, anchors)
    args = (cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha)
    if native:
        return Aggregation(*_backends.native_module().postprocess_aggregate(*args))
    return Aggregation(*_aggregate_op(*args, _backends.resolve_backend(backend, cls_vis.device)))


def track_postprocess(
    cls_vis,
    cls_nl,
    loc_vis,
    loc_nl,
    anchors,
    window,
    target_size,
    *,
    alpha=1 / 300,
    penalty_k=0.04,
    window_influence=0.44,
    lr=0.4,
    lr_mode="snlt",
    backend=None,
) -> TrackResult:
    """One tracking step's post-processing for B targets: SNLT's aggregation, SiamRPN++'s
    scale/ratio penalty and cosine window, and the best anchor per target.

    target_size is each target's current (w, h) in crop pixels ([B, 2], or [2] for all).
    lr_mode "snlt" takes lr = pscore[best] * lr, "pysot" takes penalty[best] * score[best] * lr.
    With cls_nl = loc_nl = None this is exactly SiamRPN++'s post-processing.
    """
    alpha = _check_number("alpha", alpha)
    penalty_k = _check_number("penalty_k", penalty_k)
    window_influence = _check_number("window_influence", window_influence)
    lr = _check_number("lr", lr)
    if lr_mode not in LR_MODES:
        raise ValueError(f"lr_mode must be one of {', '.join(map(repr, LR_MODES))}, got {lr_mode!r}")
    native = _native_backend(backend, cls_vis)
    numbers = (alpha, penalty_k, window_influence, lr, lr_mode == "snlt")
    # Tensor sizes only: the checks below expand a [2] size to [B, 2], and a sequence would
    # fail pybind's conversion, whose message formats every argument.
    if native and type(target_size) is Tensor and target_size.dim() == 2:
        outputs = _call_native_as_given(
            _backends.native_module().postprocess_track, cls_vis, cls_nl, loc_vis, loc_nl, anchors, window, target_size,
            *numbers, kernel_inputs=(anchors, window, target_size),
        )  # fmt: skip
        if outputs is not None:
            return TrackResult(*outputs)
    (cls_vis, cls_nl, loc_vis, loc_nl), anchors = _check_heads(cls_vis, cls_nl, loc_vis, loc_nl, anchors)
    window = _check_window(window, anchors)
    target_size = _check_target_size(target_size, cls_vis.shape[0], cls_vis.device)
    args = (cls_vis, cls_nl, loc_vis, loc_nl, anchors, window, target_size, *numbers)
    if native:
        return TrackResult(*_backends.native_module().postprocess_track(*args))
    return TrackResult(*_track_op(*args, _backends.resolve_backend(backend, cls_vis.device)))
