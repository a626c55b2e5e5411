"""Triton kernel of track_postprocess_points: one program per target, ENTROPY_LANES lanes,
T (the heads' float32 or float64) arithmetic; snlt_fast/ops/postprocess_points.py holds the
contract it follows, whose exp64 (float64 additions and products) is written out here as it
is there, and whose log64 is kernels/anchor_targets.py's: no library's exp or log enters.

The entropy's lanes and their tree, the heads' fusion, the argmax over lanes and the
penalty's helpers are kernels/postprocess.py's (the anchor form's), in T. Every launch passes enable_fp_fusion=False (a fused multiply-add
would round once where the contract rounds twice) and enable_reflect_ftz=False (libdevice
would flush float32 subnormals). Divisions and square roots are libdevice's correctly
rounded ones (Triton's own float32 division and sqrt are approximate); the interpreter's
numpy ones are IEEE's. A Python number combined with a tensor becomes a constant of the
tensor's dtype, exactly; the kernel's float64 scalars travel as their int64 bit patterns.
"""

import torch
import triton
import triton.language as tl

from snlt_fast import _backends
from snlt_fast.kernels._launch import interpreted_off_cpu, launch_context
from snlt_fast.kernels.anchor_targets import _log_float64
from snlt_fast.kernels.postprocess import (
    _NO_CELL,
    _best_of_lanes,
    _change,
    _div,
    _float64,
    _float64_bits,
    _fuse,
    _lane_tree_sum,
    _offer,
    _size_with_context,
    _valid_size,
)
from snlt_fast.ops import postprocess_points as contract
from snlt_fast.ops.postprocess import ENTROPY_LANES, TrackResult

_LOG2_LANES = ENTROPY_LANES.bit_length() - 1

# exp64's constants, as the jitted functions may read them.
_EXP_LOW = tl.constexpr(contract.EXP_LOW)
_EXP_HIGH = tl.constexpr(contract.EXP_HIGH)
_LOG2E = tl.constexpr(contract.LOG2E)
_SHIFT = tl.constexpr(contract.SHIFT)
_SHIFT_BITS = tl.constexpr(contract.SHIFT_BITS)
_LN2_HIGH = tl.constexpr(contract.LN2_HIGH)
_LN2_LOW = tl.constexpr(contract.LN2_LOW)
_EXP_TAIL = tl.constexpr(contract.EXP_TAIL)
_EXP_TERMS = tl.constexpr(len(contract.EXP_TAIL))


@triton.jit
def _power_of_two(exponent):
    return ((exponent + 1023) << 52).to(tl.float64, bitcast=True)


@triton.jit
def _exp64(x):
    x = tl.where(x < _EXP_LOW, _EXP_LOW, x)  # NaN passes both
    x = tl.where(x > _EXP_HIGH, _EXP_HIGH, x)
    shifted = x * _LOG2E + _SHIFT
    n = shifted - _SHIFT
    r = (x - n * _LN2_HIGH) - n * _LN2_LOW
    tail = tl.zeros_like(r) + _EXP_TAIL[0]
    for k in tl.static_range(1, _EXP_TERMS):
        tail = tail * r + _EXP_TAIL[k]
    e = 1.0 + (r + (r * r) * tail)
    exponent = shifted.to(tl.int64, bitcast=True) - _SHIFT_BITS
    half = exponent >> 1
    return e * _power_of_two(half) * _power_of_two(exponent - half)


@triton.jit
def _exp(x):
    """The contract's exp in x's dtype T."""
    return _exp64(x.to(tl.float64)).to(x.dtype)


@triton.jit
def _log(x, INTERPRETED: tl.constexpr):
    return _log_float64(x.to(tl.float64), INTERPRETED).to(x.dtype)


@triton.jit
def _probability(cls, n, cells, mask, INTERPRETED: tl.constexpr):
    background = tl.load(cls + n, mask=mask, other=0.0)
    foreground = tl.load(cls + cells + n, mask=mask, other=0.0)
    return _div(1.0, 1.0 + _exp(background - foreground), INTERPRETED)


@triton.jit
def _head_entropy(cls, cells, LANES: tl.constexpr, LOG2_LANES: tl.constexpr, INTERPRETED: tl.constexpr):
    lanes = tl.arange(0, LANES)
    partial = tl.zeros([LANES], dtype=cls.dtype.element_ty)
    for start in range(0, cells, LANES):
        n = start + lanes
        mask = n < cells
        p = _probability(cls, n, cells, mask, INTERPRETED)
        term = tl.where(p == 0.0, 0.0, p * _log(p, INTERPRETED))
        partial += tl.where(mask, term, 0.0)  # +0 leaves a partial sum unchanged
    return -_lane_tree_sum(partial, LANES, LOG2_LANES)


@triton.jit
def _head_box(loc, points, n, cells, mask, center):
    left = tl.load(loc + n, mask=mask, other=0.0)
    top = tl.load(loc + cells + n, mask=mask, other=0.0)
    right = tl.load(loc + 2 * cells + n, mask=mask, other=1.0)
    bottom = tl.load(loc + 3 * cells + n, mask=mask, other=1.0)
    px = tl.load(points + n, mask=mask, other=0.0)
    py = tl.load(points + cells + n, mask=mask, other=0.0)
    x1, y1, x2, y2 = px - left, py - top, px + right, py + bottom
    return (x1 + x2) * 0.5 - center, (y1 + y2) * 0.5 - center, x2 - x1, y2 - y1


@triton.jit
def _fused(cls_vis, cls_nl, loc_vis, loc_nl, points, n, cells, mask, w_vis, w_nl, center,
           HAS_NL: tl.constexpr, INTERPRETED: tl.constexpr):
    """(score, cx, cy, w, h) at cells n."""
    score = _probability(cls_vis, n, cells, mask, INTERPRETED)
    cx, cy, w, h = _head_box(loc_vis, points, n, cells, mask, center)
    if HAS_NL:
        score_nl = _probability(cls_nl, n, cells, mask, INTERPRETED)
        cx_nl, cy_nl, w_nl_box, h_nl_box = _head_box(loc_nl, points, n, cells, mask, center)
        score, cx, cy, w, h = _fuse(w_vis, w_nl, score, cx, cy, w, h, score_nl, cx_nl, cy_nl, w_nl_box, h_nl_box)
    return score, cx, cy, w, h


@triton.jit
def _penalty(w, h, target_context_size, target_ratio, penalty_k, INTERPRETED: tl.constexpr):
    scale_change = _change(_div(_size_with_context(w, h, INTERPRETED), target_context_size, INTERPRETED), INTERPRETED)
    ratio_change = _change(_div(target_ratio, _div(w, h, INTERPRETED), INTERPRETED), INTERPRETED)
    return _exp((1.0 - ratio_change * scale_change) * penalty_k)


# The float parameters travel as their bit patterns; specializing on those values would
# compile a new kernel for each new value.
@triton.jit(do_not_specialize=["alpha_bits", "penalty_k_bits", "window_influence_bits", "lr_bits", "center_bits"])
def _track_points_kernel(cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size, index_out, box_out, score_out,
                         pscore_out, lr_out, w_vis_out, w_nl_out, h_vis_out, h_nl_out, cells,
                         alpha_bits, penalty_k_bits, window_influence_bits, lr_bits, center_bits,
                         LR_FROM_PSCORE: tl.constexpr, HAS_NL: tl.constexpr, NO_CELL: tl.constexpr,
                         LANES: tl.constexpr, LOG2_LANES: tl.constexpr, INTERPRETED: tl.constexpr):
    dtype = cls_vis.dtype.element_ty  # T
    b = tl.program_id(0).to(tl.int64)
    cls_vis += b * 2 * cells
    cls_nl += b * 2 * cells
    loc_vis += b * 4 * cells
    loc_nl += b * 4 * cells
    penalty_k = _float64(penalty_k_bits).to(dtype)
    window_influence = _float64(window_influence_bits).to(dtype)
    center = _float64(center_bits).to(dtype)
    h_vis = _head_entropy(cls_vis, cells, LANES, LOG2_LANES, INTERPRETED)
    if HAS_NL:
        alpha = _float64(alpha_bits).to(dtype)
        h_nl = _head_entropy(cls_nl, cells, LANES, LOG2_LANES, INTERPRETED)
        gap = alpha * h_vis - alpha * h_nl
        w_vis = _div(1.0, 1.0 + _exp(gap), INTERPRETED)
        w_nl = _div(1.0, 1.0 + _exp(-gap), INTERPRETED)
    else:
        h_nl = tl.full([], float("nan"), dtype)
        w_vis = tl.full([], 1.0, dtype)
        w_nl = tl.zeros_like(h_vis)
    target_w = _valid_size(tl.load(target_size + 2 * b))
    target_h = _valid_size(tl.load(target_size + 2 * b + 1))
    target_context_size = _size_with_context(target_w, target_h, INTERPRETED)
    target_ratio = _div(target_w, target_h, INTERPRETED)
    # Per lane: its first NaN cell, and its first best cell (lanes see their cells in order).
    lanes = tl.arange(0, LANES)
    lane_nan = tl.full([LANES], NO_CELL, dtype=tl.int64)
    lane_value = tl.full([LANES], float("-inf"), dtype=dtype)
    lane_cell = tl.full([LANES], NO_CELL, dtype=tl.int64)
    for start in range(0, cells, LANES):
        n = (start + lanes).to(tl.int64)
        mask = n < cells
        score, cx, cy, w, h = _fused(cls_vis, cls_nl, loc_vis, loc_nl, points, n, cells, mask, w_vis, w_nl, center,
                                     HAS_NL, INTERPRETED)
        penalty = _penalty(w, h, target_context_size, target_ratio, penalty_k, INTERPRETED)
        window_value = tl.load(window + n, mask=mask, other=0.0)
        value = penalty * score * (1.0 - window_influence) + window_value * window_influence
        lane_nan, lane_value, lane_cell = _offer(lane_nan, lane_value, lane_cell, value, n, mask, NO_CELL)
    best = _best_of_lanes(lane_nan, lane_value, lane_cell, NO_CELL)
    score, cx, cy, w, h = _fused(cls_vis, cls_nl, loc_vis, loc_nl, points, best, cells, True, w_vis, w_nl, center,
                                 HAS_NL, INTERPRETED)
    penalty = _penalty(w, h, target_context_size, target_ratio, penalty_k, INTERPRETED)
    pscore = penalty * score * (1.0 - window_influence) + tl.load(window + best) * window_influence
    lr = _float64(lr_bits).to(dtype)
    if LR_FROM_PSCORE:
        lr = pscore * lr
    else:
        lr = penalty * score * lr
    tl.store(index_out + b, best)
    box_out += b * 4
    tl.store(box_out, cx)
    tl.store(box_out + 1, cy)
    tl.store(box_out + 2, w)
    tl.store(box_out + 3, h)
    tl.store(score_out + b, score)
    tl.store(pscore_out + b, pscore)
    tl.store(lr_out + b, lr)
    tl.store(w_vis_out + b, w_vis)
    tl.store(w_nl_out + b, w_nl)
    tl.store(h_vis_out + b, h_vis)
    tl.store(h_nl_out + b, h_nl)


def track_postprocess_points(
    cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size, alpha, penalty_k, window_influence, lr, center,
    lr_from_pscore,
):  # fmt: skip
    """PointTrackResult's fields (index int64, the others in the heads' dtype), in one launch."""
    device = cls_vis.device
    if interpreted_off_cpu(device):
        tensors = [None if t is None else t.cpu() for t in (cls_vis, cls_nl, loc_vis, loc_nl, points, window, target_size)]
        outputs = track_postprocess_points(*tensors, alpha, penalty_k, window_influence, lr, center, lr_from_pscore)
        return tuple(out.to(device) for out in outputs)
    batch, _, height, width = cls_vis.shape
    index = torch.empty((batch,), dtype=torch.int64, device=device)
    box = cls_vis.new_empty((batch, 4))
    values = [cls_vis.new_empty((batch,)) for _ in TrackResult._fields[2:]]
    if batch > 0:
        has_nl = cls_nl is not None
        options = {"enable_fp_fusion": False}
        if not _backends.triton_interpreted():
            # libdevice's float32 division and sqrt flush subnormals to zero unless told not to.
            options |= {"num_warps": ENTROPY_LANES // 32, "enable_reflect_ftz": False}
        with launch_context(device):
            _track_points_kernel[(batch,)](
                cls_vis, cls_nl if has_nl else cls_vis, loc_vis, loc_nl if has_nl else loc_vis, points, window,
                target_size, index, box, *values, height * width,
                *(_float64_bits(v) for v in (alpha, penalty_k, window_influence, lr, center)),
                LR_FROM_PSCORE=lr_from_pscore, HAS_NL=has_nl, NO_CELL=_NO_CELL, LANES=ENTROPY_LANES,
                LOG2_LANES=_LOG2_LANES, INTERPRETED=_backends.triton_interpreted(), **options,
            )  # fmt: skip
    return index, box, *values
