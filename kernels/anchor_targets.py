"""Triton kernel of anchor_targets: one program per sample, all of its cells in one block;
snlt_fast/ops/anchor_targets.py holds the contract it follows.

Each label's largest kept rank is found by a bitwise search from the top bit, counting
the candidates below each trial value (integer sums, in any order the same). The launch
passes enable_fp_fusion=False: a fused multiply-add would round once where the contract
rounds twice. Float64 constants and scalars travel as int64 bit patterns: Triton would
make a Python float a float32.
"""

import torch
import triton
import triton.language as tl

from snlt_fast import _backends
from snlt_fast.kernels._launch import interpreted_off_cpu, launch_context
from snlt_fast.kernels.postprocess import _div, _float64, _float64_bits
from snlt_fast.ops import anchor_targets as contract

_RANK_BITS = tl.constexpr(63)  # ranks are key * 2^31 + n < 2^63


_TAIL = [tl.constexpr(_float64_bits(c)) for c in contract.LOG_TAIL]
_TAIL0, _TAIL1, _TAIL2, _TAIL3, _TAIL4, _TAIL5, _TAIL6 = _TAIL
_LN2_HIGH = tl.constexpr(_float64_bits(contract.LN2_HIGH))
_LN2_LOW = tl.constexpr(_float64_bits(contract.LN2_LOW))
_SQRT2 = tl.constexpr(_float64_bits(contract.SQRT2))
_SMALLEST_NORMAL = tl.constexpr(_float64_bits(contract.SMALLEST_NORMAL))
_TWO_TO_54 = tl.constexpr(_float64_bits(contract.TWO_TO_54))
_MANTISSA = tl.constexpr(contract.FLOAT64_MANTISSA)
_ONE_BITS = tl.constexpr(contract.FLOAT64_ONE_BITS)
_FMIX0 = tl.constexpr(contract.FMIX_MULTIPLIERS[0])
_FMIX1 = tl.constexpr(contract.FMIX_MULTIPLIERS[1])
_REACH = tl.constexpr(contract.NEGATIVE_PAIR_REACH)
_LARGEST_RANK = tl.constexpr(2**63 - 1)


@triton.jit
def _constant(BITS: tl.constexpr):
    """The float64 whose bit pattern is BITS."""
    return tl.full([], BITS, tl.int64).to(tl.float64, bitcast=True)


@triton.jit
def _log_float64(x, INTERPRETED: tl.constexpr):
    subnormal = x < _constant(_SMALLEST_NORMAL)
    normal = tl.where(subnormal, x * _constant(_TWO_TO_54), x)
    bits = normal.to(tl.int64, bitcast=True)
    mantissa_bits = (bits & tl.full([], _MANTISSA, tl.int64)) | tl.full([], _ONE_BITS, tl.int64)
    mantissa = mantissa_bits.to(tl.float64, bitcast=True)
    exponent = ((bits >> 52) - tl.where(subnormal, 1023 + 54, 1023)).to(tl.float64)
    high = mantissa > _constant(_SQRT2)
    mantissa = tl.where(high, mantissa * 0.5, mantissa)
    exponent = tl.where(high, exponent + 1.0, exponent)
    f = mantissa - 1.0
    s = _div(f, 2.0 + f, INTERPRETED)
    z = s * s
    tail = _constant(_TAIL0) * z + _constant(_TAIL1)
    tail = tail * z + _constant(_TAIL2)
    tail = tail * z + _constant(_TAIL3)
    tail = tail * z + _constant(_TAIL4)
    tail = tail * z + _constant(_TAIL5)
    tail = tail * z + _constant(_TAIL6)
    r = z * tail
    half_square = 0.5 * f * f
    core = exponent * _constant(_LN2_HIGH) - ((half_square - (s * (half_square + r) + exponent * _constant(_LN2_LOW))) - f)
    special = tl.where(x == 0.0, -float("inf"), tl.where(x == float("inf"), float("inf"), float("nan")))
    return tl.where((x > 0.0) & (x < float("inf")), core, special)


@triton.jit
def _fmix32(h):
    h = h ^ (h >> 16)
    h = (h * _FMIX0).to(tl.uint32)
    h = h ^ (h >> 13)
    h = (h * _FMIX1).to(tl.uint32)
    return h ^ (h >> 16)


@triton.jit
def _minimum(a, b):
    return tl.where(b < a, b, a)


@triton.jit
def _maximum(a, b):
    return tl.where(b > a, b, a)


@triton.jit
def _overlap(anchor_center, anchor_size, box_center, box_size):
    high = _minimum(anchor_center + anchor_size * 0.5, box_center + box_size * 0.5)
    low = _maximum(anchor_center - anchor_size * 0.5, box_center - box_size * 0.5)
    return _maximum(high - low, 0.0)


@triton.jit
def _box_cell(center, stride, size, INTERPRETED: tl.constexpr):
    cell = (size // 2).to(tl.float64) + tl.ceil(_div(center, stride, INTERPRETED) + 0.5)
    cell = tl.where(cell >= -_REACH - 1.0, cell, -_REACH - 1.0)
    cell = tl.where(cell <= (size + _REACH).to(tl.float64), cell, (size + _REACH).to(tl.float64))
    return cell.to(tl.int64)


@triton.jit
def _is_finite(x):
    return x - x == 0.0


@triton.jit
def _anchor_targets_kernel(anchors, boxes, negative, seeds, labels_out, deltas_out, weights_out, iou_out,
                           size, cells, positive_iou_bits, negative_iou_bits, positive_num, negative_num,
                           negative_pair_num, BLOCK: tl.constexpr, INTERPRETED: tl.constexpr):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    n = tl.arange(0, BLOCK).to(tl.int64)
    mask = n < cells
    tx = tl.load(boxes + 4 * b)
    ty = tl.load(boxes + 4 * b + 1)
    tw = tl.load(boxes + 4 * b + 2)
    th = tl.load(boxes + 4 * b + 3)
    valid = _is_finite(tx) & _is_finite(ty) & _is_finite(tw) & _is_finite(th) & (tw > 0.0) & (th > 0.0)
    pair = tl.load(negative + b) != 0
    ax = tl.load(anchors + n, mask=mask, other=1.0)
    ay = tl.load(anchors + cells + n, mask=mask, other=1.0)
    aw = tl.load(anchors + 2 * cells + n, mask=mask, other=1.0)
    ah = tl.load(anchors + 3 * cells + n, mask=mask, other=1.0)

    inter = _overlap(ax, aw, tx, tw) * _overlap(ay, ah, ty, th)
    iou = _div(inter, (aw * ah + tw * th) - inter, INTERPRETED)
    dx = _div(tx - ax, aw, INTERPRETED)
    dy = _div(ty - ay, ah, INTERPRETED)
    dw = _log_float64(_div(tw, aw, INTERPRETED), INTERPRETED)
    dh = _log_float64(_div(th, ah, INTERPRETED), INTERPRETED)
    # Stored before the search, so that only the ranks and candidates stay live through it.
    base = b * cells
    zero_or_nan = tl.where(valid, 0.0, float("nan"))
    shown = valid & (pair == 0)
    tl.store(iou_out + base + n, tl.where(shown, iou, zero_or_nan).to(tl.float32), mask=mask)
    deltas = deltas_out + 4 * base + n
    tl.store(deltas, tl.where(shown, dx, zero_or_nan).to(tl.float32), mask=mask)
    tl.store(deltas + cells, tl.where(shown, dy, zero_or_nan).to(tl.float32), mask=mask)
    tl.store(deltas + 2 * cells, tl.where(shown, dw, zero_or_nan).to(tl.float32), mask=mask)
    tl.store(deltas + 3 * cells, tl.where(shown, dh, zero_or_nan).to(tl.float32), mask=mask)

    stride_x = tl.load(anchors + 1) - tl.load(anchors)
    stride_y = tl.load(anchors + cells + size) - tl.load(anchors + cells)
    column = _box_cell(tx, stride_x, size, INTERPRETED)
    row = _box_cell(ty, stride_y, size, INTERPRETED)
    x = n % size
    y = n % (size * size) // size
    near = (x - column <= _REACH) & (column - x <= _REACH) & (y - row <= _REACH) & (row - y <= _REACH)
    # Scalar conditions enter through tl.where: the interpreter cannot `&` a scalar with a block.
    positive = tl.where(valid & (pair == 0), (iou > _float64(positive_iou_bits)) & mask, False)
    negative_candidate = tl.where(valid, tl.where(pair, near, iou < _float64(negative_iou_bits)) & mask, False)

    seed0 = tl.load(seeds + 2 * b).to(tl.uint32)
    seed1 = tl.load(seeds + 2 * b + 1).to(tl.uint32)
    key = _fmix32(_fmix32(n.to(tl.uint32) ^ seed0) ^ seed1)
    rank = (key.to(tl.int64) << 31) + n
    keep_positive = tl.where(pair, 0, positive_num).to(tl.int64)
    keep_negative = tl.where(pair, negative_pair_num, negative_num).to(tl.int64)
    # The largest value with fewer than keep candidates below it is the keep-th smallest rank.
    largest_positive = tl.zeros([], tl.int64)
    largest_negative = tl.zeros([], tl.int64)
    for step in range(_RANK_BITS):
        bit = tl.full([], 1, tl.int64) << (_RANK_BITS - 1 - step)
        trial_positive = largest_positive | bit
        trial_negative = largest_negative | bit
        below_positive = tl.sum((positive & (rank < trial_positive)).to(tl.int64), axis=0)
        below_negative = tl.sum((negative_candidate & (rank < trial_negative)).to(tl.int64), axis=0)
        largest_positive = tl.where(below_positive < keep_positive, trial_positive, largest_positive)
        largest_negative = tl.where(below_negative < keep_negative, trial_negative, largest_negative)
    positive_count = tl.sum(positive.to(tl.int64), axis=0)
    negative_count = tl.sum(negative_candidate.to(tl.int64), axis=0)
    largest_positive = tl.where(positive_count > keep_positive, largest_positive, _LARGEST_RANK)
    largest_negative = tl.where(negative_count > keep_negative, largest_negative, _LARGEST_RANK)
    kept_positive = tl.where(keep_positive > 0, positive & (rank <= largest_positive), False)
    kept_negative = tl.where(keep_negative > 0, negative_candidate & (rank <= largest_negative), False)

    labels = tl.where(kept_negative, 0, tl.where(kept_positive, 1, -1)).to(tl.int64)
    kept_count = tl.sum(kept_positive.to(tl.int64), axis=0).to(tl.float64)
    weight = _div(1.0, kept_count, INTERPRETED)
    tl.store(labels_out + base + n, labels, mask=mask)
    tl.store(weights_out + base + n, tl.where(kept_positive, weight, 0.0).to(tl.float32), mask=mask)


def anchor_targets(anchors, boxes, negative, seeds, positive_iou, negative_iou, positive_num, negative_num,
                   negative_pair_num):  # fmt: skip
    """The op's four outputs (labels int64, the others float32), in one launch."""
    device = boxes.device
    numbers = (positive_iou, negative_iou, positive_num, negative_num, negative_pair_num)
    if interpreted_off_cpu(device):
        outputs = anchor_targets(anchors.cpu(), boxes.cpu(), negative.cpu(), seeds.cpu(), *numbers)
        return tuple(out.to(device) for out in outputs)
    batch, (anchor_num, size) = boxes.shape[0], anchors.shape[1:3]
    cells = anchor_num * size * size
    labels = torch.empty((batch, anchor_num, size, size), dtype=torch.int64, device=device)
    deltas = torch.empty((batch, 4, anchor_num, size, size), dtype=torch.float32, device=device)
    weights = torch.empty((batch, anchor_num, size, size), dtype=torch.float32, device=device)
    iou = torch.empty((batch, anchor_num, size, size), dtype=torch.float32, device=device)
    if batch > 0:
        options = {"BLOCK": triton.next_power_of_2(cells), "INTERPRETED": _backends.triton_interpreted()}
        options["enable_fp_fusion"] = False
        if not _backends.triton_interpreted():
            options["num_warps"] = 8
        with launch_context(device):
            _anchor_targets_kernel[(batch,)](
                anchors, boxes, negative, seeds, labels, deltas, weights, iou, size, cells,
                _float64_bits(positive_iou), _float64_bits(negative_iou), positive_num, negative_num,
                negative_pair_num, **options,
            )  # fmt: skip
    return labels, deltas, weights, iou
