"""Triton kernels of dynamic_aggregate and track_postprocess: one program per target,
ENTROPY_LANES lanes; snlt_fast/ops/postprocess.py holds the contract they follow.

A program walks its target's cells in chunks of ENTROPY_LANES, so lane l meets the cells
n = l (mod ENTROPY_LANES) in increasing order: exactly the contract's entropy lanes. The
lanes are then added pairwise, (l, l + w) for w = 128, ..., 1, each step a sum over an
axis of length 2 (one addition, whatever order the compiler picks). Every launch passes
enable_fp_fusion=False: a fused multiply-add would round once where the contract rounds twice.
Float64 scalars travel as their int64 bit patterns: Triton would pass a Python float as float32.
"""

import struct

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from snlt_fast import _backends
from snlt_fast.kernels._launch import interpreted_off_cpu, launch_context
from snlt_fast.ops.postprocess import ENTROPY_LANES, Aggregation, TrackResult

_LOG2_LANES = ENTROPY_LANES.bit_length() - 1
_NO_CELL = 2**62  # larger than any cell index


@triton.jit
def _exp(x, INTERPRETED: tl.constexpr):
    # libdevice is CUDA's exp; the interpreter has none and evaluates tl.exp with numpy.
    if INTERPRETED:
        return tl.exp(x)
    else:
        return libdevice.exp(x)


@triton.jit
def _log(x, INTERPRETED: tl.constexpr):
    if INTERPRETED:
        return tl.log(x)
    else:
        return libdevice.log(x)


@triton.jit
def _div(x, y, INTERPRETED: tl.constexpr):
    # Correctly rounded on both paths (numpy's divide is IEEE), in y's dtype.
    if INTERPRETED:
        return x / y
    else:
        return libdevice.div_rn(tl.cast(x, y.dtype), y)  # x may be the literal 1.0


@triton.jit
def _sqrt(x, INTERPRETED: tl.constexpr):
    if INTERPRETED:
        return tl.sqrt(x)
    else:
        return libdevice.sqrt_rn(x)


@triton.jit
def _float64(bits):
    return bits.to(tl.int64).to(tl.float64, bitcast=True)


@triton.jit
def _probability(cls, n, cells, mask, INTERPRETED: tl.constexpr):
    background = tl.load(cls + n, mask=mask, other=0.0).to(tl.float64)
    foreground = tl.load(cls + cells + n, mask=mask, other=0.0).to(tl.float64)
    return _div(1.0, 1.0 + _exp(background - foreground, INTERPRETED), INTERPRETED)


@triton.jit
def _head_entropy(cls, cells, LANES: tl.constexpr, LOG2_LANES: tl.constexpr, INTERPRETED: tl.constexpr):
    lanes = tl.arange(0, LANES)
    partial = tl.zeros([LANES], dtype=tl.float64)
    for start in range(0, cells, LANES):
        n = start + lanes
        mask = n < cells
        p = _probability(cls, n, cells, mask, INTERPRETED)
        term = tl.where(p == 0.0, 0.0, p * _log(p, INTERPRETED))
        partial += tl.where(mask, term, 0.0)  # +0 leaves a partial sum unchanged
    return -_lane_tree_sum(partial, LANES, LOG2_LANES)


@triton.jit
def _lane_tree_sum(partial, LANES: tl.constexpr, LOG2_LANES: tl.constexpr):
    """The entropy's tree over the LANES partial sums."""
    for level in tl.static_range(LOG2_LANES):
        partial = tl.sum(tl.reshape(partial, [2, LANES >> (level + 1)]), axis=0)
    return tl.sum(partial, axis=0)


@triton.jit
def _weights(cls_vis, cls_nl, cells, alpha, HAS_NL: tl.constexpr, LANES: tl.constexpr,
             LOG2_LANES: tl.constexpr, INTERPRETED: tl.constexpr):
    """(w_vis, w_nl, h_vis, h_nl) of one target."""
    h_vis = _head_entropy(cls_vis, cells, LANES, LOG2_LANES, INTERPRETED)
    if HAS_NL:
        h_nl = _head_entropy(cls_nl, cells, LANES, LOG2_LANES, INTERPRETED)
        gap = alpha * h_vis - alpha * h_nl
        w_vis = _div(1.0, 1.0 + _exp(gap, INTERPRETED), INTERPRETED)
        w_nl = _div(1.0, 1.0 + _exp(-gap, INTERPRETED), INTERPRETED)
    else:
        # float64 scalars, as in the other branch (a bare Python float would compile to float32).
        h_nl = tl.full([], float("nan"), tl.float64)
        w_vis = tl.full([], 1.0, tl.float64)
        w_nl = tl.full([], 0.0, tl.float64)
    return w_vis, w_nl, h_vis, h_nl


@triton.jit
def _head_box(loc, anchors, n, cells, mask, INTERPRETED: tl.constexpr):
    dx = tl.load(loc + n, mask=mask, other=0.0).to(tl.float64)
    dy = tl.load(loc + cells + n, mask=mask, other=0.0).to(tl.float64)
    dw = tl.load(loc + 2 * cells + n, mask=mask, other=0.0).to(tl.float64)
    dh = tl.load(loc + 3 * cells + n, mask=mask, other=0.0).to(tl.float64)
    xa = tl.load(anchors + n, mask=mask, other=0.0)
    ya = tl.load(anchors + cells + n, mask=mask, other=0.0)
    wa = tl.load(anchors + 2 * cells + n, mask=mask, other=1.0)
    ha = tl.load(anchors + 3 * cells + n, mask=mask, other=1.0)
    return dx * wa + xa, dy * ha + ya, _exp(dw, INTERPRETED) * wa, _exp(dh, INTERPRETED) * ha


@triton.jit
def _fused(cls_vis, cls_nl, loc_vis, loc_nl, anchors, n, cells, mask, w_vis, w_nl,
           HAS_NL: tl.constexpr, INTERPRETED: tl.constexpr):
    """(score, cx, cy, w, h) at cells n."""
    score = _probability(cls_vis, n, cells, mask, INTERPRETED)
    cx, cy, w, h = _head_box(loc_vis, anchors, n, cells, mask, INTERPRETED)
    if HAS_NL:
        score_nl = _probability(cls_nl, n, cells, mask, INTERPRETED)
        cx_nl, cy_nl, w_nl_box, h_nl_box = _head_box(loc_nl, anchors, n, cells, mask, INTERPRETED)
        score, cx, cy, w, h = _fuse(w_vis, w_nl, score, cx, cy, w, h, score_nl, cx_nl, cy_nl, w_nl_box, h_nl_box)
    return score, cx, cy, w, h


@triton.jit
def _fuse(w_vis, w_nl, score, cx, cy, w, h, score_nl, cx_nl, cy_nl, w_nl_box, h_nl_box):
    """The weighted sums of the two heads' scores and boxes."""
    return (w_vis * score + w_nl * score_nl, w_vis * cx + w_nl * cx_nl, w_vis * cy + w_nl * cy_nl,
            w_vis * w + w_nl * w_nl_box, w_vis * h + w_nl * h_nl_box)  # fmt: skip


@triton.jit
def _offer(lane_nan, lane_value, lane_cell, value, n, mask, NO_CELL: tl.constexpr):
    """Each lane's first NaN cell and first best cell after its cells n (lanes see their cells in order)."""
    lane_nan = tl.where(mask & (value != value) & (lane_nan == NO_CELL), n, lane_nan)
    better = mask & ((value > lane_value) | (lane_cell == NO_CELL))
    return lane_nan, tl.where(better, value, lane_value), tl.where(better, n, lane_cell)


@triton.jit
def _best_of_lanes(lane_nan, lane_value, lane_cell, NO_CELL: tl.constexpr):
    """The first NaN cell if any, else the first best cell of the lanes."""
    # With a NaN anywhere the answer is the first NaN and lane_value is not used.
    first_nan = tl.min(lane_nan, axis=0)
    top = tl.max(lane_value, axis=0)
    first_top = tl.min(tl.where(lane_value == top, lane_cell, NO_CELL), axis=0)
    return tl.where(first_nan < NO_CELL, first_nan, first_top)


@triton.jit
def _change(ratio, INTERPRETED: tl.constexpr):
    inverse = _div(1.0, ratio, INTERPRETED)
    return tl.where(ratio > inverse, ratio, inverse)


@triton.jit
def _valid_size(size):
    return tl.where((size > 0.0) & (size < float("inf")), size, float("nan"))


@triton.jit
def _size_with_context(w, h, INTERPRETED: tl.constexpr):
    pad = (w + h) * 0.5
    return _sqrt((w + pad) * (h + pad), INTERPRETED)


@triton.jit
def _penalty(w, h, target_context_size, target_ratio, penalty_k, INTERPRETED: tl.constexpr):
    scale_change = _change(_div(_size_with_context(w, h, INTERPRETED), target_context_size, INTERPRETED), INTERPRETED)
    ratio_change = _change(_div(target_ratio, _div(w, h, INTERPRETED), INTERPRETED), INTERPRETED)
    return _exp((1.0 - ratio_change * scale_change) * penalty_k, INTERPRETED)


@triton.jit
def _store_stats(w_vis_out, w_nl_out, h_vis_out, h_nl_out, b, w_vis, w_nl, h_vis, h_nl):
    tl.store(w_vis_out + b, w_vis.to(tl.float32))
    tl.store(w_nl_out + b, w_nl.to(tl.float32))
    tl.store(h_vis_out + b, h_vis.to(tl.float32))
    tl.store(h_nl_out + b, h_nl.to(tl.float32))


# The float parameters travel as their bit patterns; specializing on those values would
# compile a new kernel for each new alpha, penalty_k, window_influence or lr.
@triton.jit(do_not_specialize=["alpha_bits"])
def _aggregate_kernel(cls_vis, cls_nl, loc_vis, loc_nl, anchors, score_out, box_out, w_vis_out, w_nl_out, h_vis_out,
                      h_nl_out, cells, alpha_bits, HAS_NL: tl.constexpr, LANES: tl.constexpr, LOG2_LANES: tl.constexpr,
                      INTERPRETED: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cls_vis += b * 2 * cells
    cls_nl += b * 2 * cells
    loc_vis += b * 4 * cells
    loc_nl += b * 4 * cells
    w_vis, w_nl, h_vis, h_nl = _weights(cls_vis, cls_nl, cells, _float64(alpha_bits), HAS_NL, LANES, LOG2_LANES,
                                        INTERPRETED)
    score_out += b * cells
    box_out += b * 4 * cells
    for start in range(0, cells, LANES):
        n = start + tl.arange(0, LANES)
        mask = n < cells
        score, cx, cy, w, h = _fused(cls_vis, cls_nl, loc_vis, loc_nl, anchors, n, cells, mask, w_vis, w_nl,
                                     HAS_NL, INTERPRETED)
        tl.store(score_out + n, score.to(tl.float32), mask=mask)
        tl.store(box_out + n, cx.to(tl.float32), mask=mask)
        tl.store(box_out + cells + n, cy.to(tl.float32), mask=mask)
        tl.store(box_out + 2 * cells + n, w.to(tl.float32), mask=mask)
        tl.store(box_out + 3 * cells + n, h.to(tl.float32), mask=mask)
    _store_stats(w_vis_out, w_nl_out, h_vis_out, h_nl_out, b, w_vis, w_nl, h_vis, h_nl)


@triton.jit(do_not_specialize=["alpha_bits", "penalty_k_bits", "window_influence_bits", "lr_bits"])
def _track_kernel(cls_vis, cls_nl, loc_vis, loc_nl, anchors, window, target_size, index_out, box_out, score_out,
                  pscore_out, lr_out, w_vis_out, w_nl_out, h_vis_out, h_nl_out, cells,
                  alpha_bits, penalty_k_bits, window_influence_bits, lr_bits,
                  LR_FROM_PSCORE: tl.constexpr, HAS_NL: tl.constexpr, NO_CELL: tl.constexpr,
                  LANES: tl.constexpr, LOG2_LANES: tl.constexpr, INTERPRETED: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    cls_vis += b * 2 * cells
    cls_nl += b * 2 * cells
    loc_vis += b * 4 * cells
    loc_nl += b * 4 * cells
    penalty_k = _float64(penalty_k_bits)
    window_influence = _float64(window_influence_bits)
    w_vis, w_nl, h_vis, h_nl = _weights(cls_vis, cls_nl, cells, _float64(alpha_bits), HAS_NL, LANES, LOG2_LANES,
                                        INTERPRETED)
    target_w = _valid_size(tl.load(target_size + 2 * b))
    target_h = _valid_size(tl.load(target_size + 2 * b + 1))
    target_context_size = _size_with_context(target_w, target_h, INTERPRETED)
    target_ratio = _div(target_w, target_h, INTERPRETED)
    # Per lane: its first NaN cell, and its first best cell (lanes see their cells in order).
    lanes = tl.arange(0, LANES)
    lane_nan = tl.full([LANES], NO_CELL, dtype=tl.int64)
    lane_value = tl.full([LANES], float("-inf"), dtype=tl.float32)
    lane_cell = tl.full([LANES], NO_CELL, dtype=tl.int64)
    for start in range(0, cells, LANES):
        n = (start + lanes).to(tl.int64)
        mask = n < cells
        score, cx, cy, w, h = _fused(cls_vis, cls_nl, loc_vis, loc_nl, anchors, n, cells, mask, w_vis, w_nl,
                                     HAS_NL, INTERPRETED)
        penalty = _penalty(w, h, target_context_size, target_ratio, penalty_k, INTERPRETED)
        window_value = tl.load(window + n, mask=mask, other=0.0)
        value = (penalty * score * (1.0 - window_influence) + window_value * window_influence).to(tl.float32)
        lane_nan, lane_value, lane_cell = _offer(lane_nan, lane_value, lane_cell, value, n, mask, NO_CELL)
    best = _best_of_lanes(lane_nan, lane_value, lane_cell, NO_CELL)
    score, cx, cy, w, h = _fused(cls_vis, cls_nl, loc_vis, loc_nl, anchors, best, cells, True, w_vis, w_nl,
                                 HAS_NL, INTERPRETED)
    penalty = _penalty(w, h, target_context_size, target_ratio, penalty_k, INTERPRETED)
    pscore = penalty * score * (1.0 - window_influence) + tl.load(window + best) * window_influence
    if LR_FROM_PSCORE:
        lr = pscore * _float64(lr_bits)
    else:
        lr = penalty * score * _float64(lr_bits)
    tl.store(index_out + b, best)
    box_out += b * 4
    tl.store(box_out, cx.to(tl.float32))
    tl.store(box_out + 1, cy.to(tl.float32))
    tl.store(box_out + 2, w.to(tl.float32))
    tl.store(box_out + 3, h.to(tl.float32))
    tl.store(score_out + b, score.to(tl.float32))
    tl.store(pscore_out + b, pscore.to(tl.float32))
    tl.store(lr_out + b, lr.to(tl.float32))
    _store_stats(w_vis_out, w_nl_out, h_vis_out, h_nl_out, b, w_vis, w_nl, h_vis, h_nl)


# --------------------------------------------------------------------------- launchers


def _float64_bits(value):
    """A Python float's float64 bit pattern as a signed int (read back with _float64)."""
    return struct.unpack("<q", struct.pack("<d", value))[0]


def _launch_options(has_nl):
    options = {
        "HAS_NL": has_nl,
        "LANES": ENTROPY_LANES,
        "LOG2_LANES": _LOG2_LANES,
        "INTERPRETED": _backends.triton_interpreted(),
        "enable_fp_fusion": False,
    }
    if not _backends.triton_interpreted():
        options["num_warps"] = ENTROPY_LANES // 32
    return options


def _on_cpu(tensors):
    return [None if t is None else t.cpu() for t in tensors]


def _per_target_outputs(fields, batch, device):
    """A float32 tensor [batch] for each of `fields`."""
    return [torch.empty((batch,), dtype=torch.float32, device=device) for _ in fields]


def dynamic_aggregate(cls_vis, cls_nl, loc_vis, loc_nl, anchors, alpha):
    """Aggregation's fields as float32 tensors, in one launch."""
    device = cls_vis.device
    if interpreted_off_cpu(device):
        outputs = dynamic_aggregate(*_on_cpu((cls_vis, cls_nl, loc_vis, loc_nl, anchors)), alpha)
        return tuple(out.to(device) for out in outputs)
    batch, channels, height, width = cls_vis.shape
    anchor_num = channels // 2
    score = torch.empty((batch, anchor_num, height, width), dtype=torch.float32, device=device)
    box = torch.empty((batch, 4, anchor_num, height, width), dtype=torch.float32, device=device)
    stats = _per_target_outputs(Aggregation._fields[2:], batch, device)
    if batch > 0:
        has_nl = cls_nl is not None
        with launch_context(device):
            _aggregate_kernel[(batch,)](
                cls_vis, cls_nl if has_nl else cls_vis, loc_vis, loc_nl if has_nl else loc_vis, anchors,
                score, box, *stats, anchor_num * height * width, _float64_bits(alpha),
                **_launch_options(has_nl),
            )  # fmt: skip
    return score, box, *stats


def track_postprocess(
    cls_vis, cls_nl, loc_vis, loc_nl, anchors, window, target_size, alpha, penalty_k, window_influence, lr,
    lr_from_pscore,
):  # fmt: skip
    """TrackResult's fields (index int64, the others float32), in one launch."""
    device = cls_vis.device
    if interpreted_off_cpu(device):
        tensors = _on_cpu((cls_vis, cls_nl, loc_vis, loc_nl, anchors, window, target_size))
        outputs = track_postprocess(*tensors, alpha, penalty_k, window_influence, lr, lr_from_pscore)
        return tuple(out.to(device) for out in outputs)
    batch, channels, height, width = cls_vis.shape
    index = torch.empty((batch,), dtype=torch.int64, device=device)
    box = torch.empty((batch, 4), dtype=torch.float32, device=device)
    values = _per_target_outputs(TrackResult._fields[2:], batch, device)
    if batch > 0:
        has_nl = cls_nl is not None
        with launch_context(device):
            _track_kernel[(batch,)](
                cls_vis, cls_nl if has_nl else cls_vis, loc_vis, loc_nl if has_nl else loc_vis, anchors, window,
                target_size, index, box, *values, channels // 2 * height * width,
                _float64_bits(alpha), _float64_bits(penalty_k), _float64_bits(window_influence), _float64_bits(lr),
                LR_FROM_PSCORE=lr_from_pscore, NO_CELL=_NO_CELL,
                **_launch_options(has_nl),
            )  # fmt: skip
    return index, box, *values
