"""Training targets of a Siamese RPN's anchors, as pysot's AnchorTarget makes them, for a
whole batch in one launch: the reference (the specification), the custom op that
dispatches to each backend, its fake kernel and the public API.

Inputs: anchors [4, A, S, S] (cx, cy, w, h) around the crop centre; per sample b a box
(tx, ty, tw, th) in the same coordinates, whether it is a negative pair, and two random
32-bit words (s0, s1) drawn from the caller's generator (or given as seeds). N = A*S*S cells, n in [A][S][S]
order, anchor (ax, ay, aw, ah) at cell n.

Arithmetic contract, kept bit for bit by every backend (all in float64, one rounding to
float32 at the outputs; no fused multiply-add; operations in the order written):
  valid    = tx, ty, tw, th finite and tw > 0 and th > 0 (eager calls on CPU tensors refuse
             anything else; elsewhere values go unchecked and this rule applies)
  min(a,b) = b if b < a else a;  max(a,b) = b if b > a else a
  iw       = max(min(ax + aw/2, tx + tw/2) - max(ax - aw/2, tx - tw/2), 0), ih alike in y
  iou      = (iw*ih) / ((aw*ah + tw*th) - iw*ih)
  deltas   = ((tx - ax)/aw, (ty - ay)/ah, log(tw/aw), log(th/ah)), log as `log_float64`
  key      = fmix32(fmix32(n ^ s0) ^ s1) (murmur3's finalizer), rank = key * 2^31 + n
  positive pair: candidates iou > positive_iou (label 1, keep positive_num) and
             iou < negative_iou (label 0, keep negative_num)
  negative pair: the cell of the box centre, c = S//2 + ceil(t/stride + 0.5) in x and y
             (stride: the anchors' spacing in that axis), every anchor of the cells
             [c-3, c+3] clipped to the map is a candidate (label 0, keep negative_pair_num)
  kept     = a valid sample's candidates of the smallest ranks (all when fewer than kept)
  labels   = 1 / 0 at kept candidates, -1 elsewhere (int64)
  weights  = 1 / (number of kept positives) at kept positives, 0 elsewhere
  deltas, iou = NaN for invalid boxes, else 0 in negative pairs
pysot draws its selection with np.random and weights positives 1/(count + 1e-6); the keys
here make the selection a function of the generator alone, on every backend.
"""

import math
import numbers
from typing import NamedTuple

import torch
from torch import Tensor

from snlt_fast import _backends

# Cells per sample are ranked as key * 2^31 + n in an int64: n must fit in 31 bits.
MAX_CELLS = 2**31
# The negative pair's window: cells within this distance of the box centre's cell.
NEGATIVE_PAIR_REACH = 3
# log_float64's polynomial: (2 atanh(s)/s - 2) / s^2 in z = s^2 on [0, (3 - 2 sqrt(2))^2],
# highest degree first (mpmath.chebyfit, error 3.1e-16 relative, far below an ulp of the log).
LOG_TAIL = (
    0.14616449685043406,
    0.15331721600556042,
    0.18182889125261723,
    0.2222221113479508,
    0.28571428625975487,
    0.39999999999899505,
    0.666666666666667,
)
# ln 2 split so that e * LN2_HIGH is exact for every exponent e of a float64.
LN2_HIGH = 6.93147180369123816490e-01
LN2_LOW = 1.90821492927058770002e-10
SQRT2 = 1.4142135623730951
SMALLEST_NORMAL = 2.2250738585072014e-308
TWO_TO_54 = 18014398509481984.0
FLOAT64_MANTISSA = 0x000FFFFFFFFFFFFF
FLOAT64_ONE_BITS = 0x3FF0000000000000
# murmur3's 32-bit finalizer multipliers.
FMIX_MULTIPLIERS = (0x85EBCA6B, 0xC2B2AE35)
UINT32_MASK = 0xFFFFFFFF


class AnchorTargets(NamedTuple):
    """anchor_targets' result, per sample b."""

    labels: Tensor  # [B, A, S, S] int64: 1 positive, 0 negative, -1 ignored
    deltas: Tensor  # [B, 4, A, S, S] float32 (dx, dy, dw, dh)
    delta_weights: Tensor  # [B, A, S, S] float32
    iou: Tensor  # [B, A, S, S] float32


# --------------------------------------------------------------------------- reference


def log_float64(x: Tensor) -> Tensor:
    """ln(x) in plain float64 arithmetic (fdlibm's reduction, no fused multiply-add), so that
    every backend gets the same bits: -inf at 0, inf at inf, NaN below 0 or at NaN."""
    subnormal = x < SMALLEST_NORMAL
    normal = torch.where(subnormal, x * TWO_TO_54, x)
    bits = normal.view(torch.int64)
    # normal = m * 2^e, m in [1, 2), then moved to [sqrt(1/2), sqrt(2)].
    mantissa = ((bits & FLOAT64_MANTISSA) | FLOAT64_ONE_BITS).view(torch.float64)
    exponent = ((bits >> 52) - torch.where(subnormal, 1023 + 54, 1023)).to(torch.float64)
    high = mantissa > SQRT2
    mantissa = torch.where(high, mantissa * 0.5, mantissa)
    exponent = torch.where(high, exponent + 1.0, exponent)
    # log(1 + f) = f - (f^2/2 - s (f^2/2 + R)), s = f / (2 + f), R = z * LOG_TAIL(z), z = s^2.
    f = mantissa - 1.0
    s = f / (2.0 + f)
    z = s * s
    tail = torch.full_like(z, LOG_TAIL[0])
    for coefficient in LOG_TAIL[1:]:
        tail = tail * z + coefficient
    r = z * tail
    half_square = 0.5 * f * f
    core = exponent * LN2_HIGH - ((half_square - (s * (half_square + r) + exponent * LN2_LOW)) - f)
    special = torch.where(x == 0, -math.inf, torch.where(x == math.inf, math.inf, math.nan))
    return torch.where((x > 0) & (x < math.inf), core, special)


def _fmix32(h: Tensor) -> Tensor:
    """murmur3's finalizer on 32-bit words held in int64 (products wrap; their low 32 bits count)."""
    h = h ^ (h >> 16)
    h = (h * FMIX_MULTIPLIERS[0]) & UINT32_MASK
    h = h ^ (h >> 13)
    h = (h * FMIX_MULTIPLIERS[1]) & UINT32_MASK
    return h ^ (h >> 16)


def selection_ranks(seeds: Tensor, cells: int) -> Tensor:
    """[B, N] int64: key * 2^31 + n, distinct within a sample; the smallest ranks are kept.
    Each seed counts by its low 32 bits, as the kernels read it."""
    n = torch.arange(cells, device=seeds.device, dtype=torch.int64)
    words = seeds & UINT32_MASK
    keys = _fmix32(_fmix32(n ^ words[:, :1]) ^ words[:, 1:])
    return keys * MAX_CELLS + n


def _keep_smallest(candidates: Tensor, ranks: Tensor, keep: Tensor) -> Tensor:
    """The candidates [B, N] of the keep[b] smallest ranks of each sample."""
    largest = torch.iinfo(torch.int64).max
    ordered = torch.where(candidates, ranks, largest).sort(dim=1).values
    last = (keep - 1).clamp(0, ranks.shape[1] - 1)
    threshold = ordered.gather(1, last[:, None])
    return candidates & (ranks <= threshold) & (keep[:, None] > 0)


def _minimum(a, b):
    return torch.where(b < a, b, a)


def _maximum(a, b):
    return torch.where(b > a, b, a)


def _overlap(anchor_center, anchor_size, box_center, box_size):
    """One axis of the intersection, clamped at 0."""
    high = _minimum(anchor_center + anchor_size / 2, box_center + box_size / 2)
    low = _maximum(anchor_center - anchor_size / 2, box_center - box_size / 2)
    return _maximum(high - low, torch.zeros_like(high))


def _iou(ax, ay, aw, ah, tx, ty, tw, th):
    """The contract's iou, broadcasting anchors against boxes."""
    inter = _overlap(ax, aw, tx, tw) * _overlap(ay, ah, ty, th)
    return inter / ((aw * ah + tw * th) - inter)


def anchor_ious(anchors: Tensor, boxes: Tensor) -> Tensor:
    """IoU [B, K, A, S, S] of anchors [4, A, S, S] with boxes [B, K, 4] (both cx, cy, w, h), in
    the arithmetic of the contract (a NaN box gives NaN): the overlaps anchor_targets sees, for
    boxes other than the target (a trainer's look-alikes, say)."""
    anchors = anchors.to(boxes.dtype)[:, None, None]
    return _iou(*anchors, *(v[..., None, None, None] for v in boxes.unbind(-1)))


def _box_cell(center, stride, size):
    """The negative pair's centre cell, clamped to [-reach - 1, size + reach] (NaN to the low end):
    the clamp leaves the window's cells on the map unchanged."""
    cell = size // 2 + torch.ceil(center / stride + 0.5)
    cell = torch.where(cell >= -NEGATIVE_PAIR_REACH - 1, cell, -NEGATIVE_PAIR_REACH - 1.0)
    cell = torch.where(cell <= size + NEGATIVE_PAIR_REACH, cell, size + float(NEGATIVE_PAIR_REACH))
    return cell.to(torch.int64)


def anchor_targets_reference(
    anchors, boxes, negative, seeds, positive_iou, negative_iou, positive_num, negative_num, negative_pair_num
):
    """The contract of the module docstring on float64 anchors [4, A, S, S], boxes [B, 4],
    negative [B] bool and seeds [B, 2] int64 (32-bit words)."""
    anchor_num, size = anchors.shape[1], anchors.shape[2]
    batch, cells = boxes.shape[0], anchors[0].numel()
    ax, ay, aw, ah = (a.reshape(1, cells) for a in anchors)
    tx, ty, tw, th = (v[:, None] for v in boxes.unbind(1))
    valid = torch.isfinite(boxes).all(dim=1, keepdim=True) & (tw > 0) & (th > 0)
    iou = _iou(ax, ay, aw, ah, tx, ty, tw, th)
    deltas = torch.stack([(tx - ax) / aw, (ty - ay) / ah, log_float64(tw / aw), log_float64(th / ah)], dim=1)

    stride_x = anchors[0, 0, 0, 1] - anchors[0, 0, 0, 0]
    stride_y = anchors[1, 0, 1, 0] - anchors[1, 0, 0, 0]
    column = torch.arange(size, device=anchors.device).repeat(anchor_num * size)
    row = torch.arange(size, device=anchors.device).repeat_interleave(size).repeat(anchor_num)
    near_x = (column[None, :] - _box_cell(tx, stride_x, size)).abs() <= NEGATIVE_PAIR_REACH
    near_y = (row[None, :] - _box_cell(ty, stride_y, size)).abs() <= NEGATIVE_PAIR_REACH

    pair = negative[:, None]
    positive_candidates = valid & ~pair & (iou > positive_iou)
    negative_candidates = valid & torch.where(pair, near_x & near_y, iou < negative_iou)
    ranks = selection_ranks(seeds, cells)
    keep_positive = torch.full((batch,), positive_num, device=boxes.device, dtype=torch.int64)
    keep_negative = torch.where(negative, negative_pair_num, negative_num)
    positives = _keep_smallest(positive_candidates, ranks, keep_positive)
    negatives = _keep_smallest(negative_candidates, ranks, keep_negative)

    labels = torch.full((batch, cells), -1, device=boxes.device, dtype=torch.int64)
    labels = torch.where(negatives, 0, torch.where(positives, 1, labels))
    positive_count = positives.sum(dim=1, keepdim=True).to(torch.float64)
    delta_weights = torch.where(positives, 1.0 / positive_count, 0.0)
    iou = torch.where(valid, torch.where(pair, 0.0, iou), math.nan)
    deltas = torch.where(valid[:, :, None], torch.where(pair[:, :, None], 0.0, deltas), math.nan)
    shape = (batch, anchor_num, size, size)
    return (
        labels.reshape(shape),
        deltas.to(torch.float32).reshape(batch, 4, *shape[1:]),
        delta_weights.to(torch.float32).reshape(shape),
        iou.to(torch.float32).reshape(shape),
    )


# --------------------------------------------------------------------------- custom op


def _targets(backend, *args):
    if backend == "reference":
        return anchor_targets_reference(*args)
    if backend in ("cpu", "cuda"):
        return _backends.native_ops().anchor_targets(*args)
    return _backends.triton_kernels("anchor_targets").anchor_targets(*args)


@torch.library.custom_op("snlt_fast::anchor_targets", mutates_args=())
def _anchor_targets_op(
    anchors: Tensor,
    boxes: Tensor,
    negative: Tensor,
    seeds: Tensor,
    positive_iou: float,
    negative_iou: float,
    positive_num: int,
    negative_num: int,
    negative_pair_num: int,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return tuple(_targets(backend, anchors, boxes, negative, seeds, positive_iou, negative_iou, positive_num,
                          negative_num, negative_pair_num))  # fmt: skip


@_anchor_targets_op.register_fake
def _(anchors, boxes, negative, seeds, positive_iou, negative_iou, positive_num, negative_num, negative_pair_num, backend):
    maps = (boxes.shape[0], *anchors.shape[1:])
    options = {"device": boxes.device, "dtype": torch.float32}
    return (
        boxes.new_empty(maps, dtype=torch.int64),
        boxes.new_empty((maps[0], 4, *maps[1:]), **options),
        boxes.new_empty(maps, **options),
        boxes.new_empty(maps, **options),
    )


# --------------------------------------------------------------------------- public API


def _check_tensor(name, value, dtypes, device=None):
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.dtype not in dtypes:
        raise TypeError(f"{name} must be {' or '.join(str(d).replace('torch.', '') for d in dtypes)}, got {value.dtype}")
    if device is not None and value.device != device:
        raise ValueError(f"{name} must be on the device of anchors ({device}), got {value.device}")


def _check_iou(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be at least 0, got {value}")
    return int(value)


def _check_values(anchors, boxes):
    """The values a kernel cannot refuse: finite, with positive widths and heights (host tensors only)."""
    if not torch.isfinite(anchors).all() or not (anchors[2:] > 0).all():
        raise ValueError("anchors must hold finite (cx, cy, w, h) with w > 0 and h > 0")
    if boxes.shape[0] and not torch.isfinite(boxes).all():
        raise ValueError(f"boxes must be finite, got a non-finite box at sample {int((~torch.isfinite(boxes)).any(1).nonzero()[0])}")
    if boxes.shape[0] and not (boxes[:, 2:] > 0).all():
        raise ValueError(f"boxes must have w > 0 and h > 0, got {boxes[(boxes[:, 2:] <= 0).any(1)][0].tolist()}")
    if not (anchors[0, 0, 0, 1] > anchors[0, 0, 0, 0] and anchors[1, 0, 1, 0] > anchors[1, 0, 0, 0]):
        raise ValueError("anchors must be centred on a grid whose x and y increase with the column and the row")


def _check_seeds(seeds, batch, device, generator):
    if generator is not None:
        raise ValueError("seeds and generator both choose the kept anchors: pass one of them")
    _check_tensor("seeds", seeds, (torch.int64,), device)
    if seeds.shape != (batch, 2):
        raise ValueError(f"seeds must be [B, 2] = {(batch, 2)} to match boxes, got shape {tuple(seeds.shape)}")
    if not torch.compiler.is_compiling() and device.type == "cpu" and ((seeds < 0) | (seeds >= 2**32)).any():
        raise ValueError("seeds must hold 32-bit words (0 <= seed < 2**32)")


def anchor_targets(
    anchors,
    boxes,
    *,
    positive_iou=0.6,
    negative_iou=0.3,
    positive_num=16,
    total_num=64,
    negative_num=16,
    negative=None,
    generator=None,
    seeds=None,
    backend=None,
) -> AnchorTargets:
    """pysot's training targets for a batch of B samples on the anchors [4, A, S, S]
    (cx, cy, w, h, e.g. from `generate_anchors`; float32 or float64).

    boxes [B, 4] (cx, cy, w, h) are the targets in the anchors' coordinates (search-crop
    pixels around the crop centre). Anchors of IoU > positive_iou are positives, at most
    positive_num of them; anchors of IoU < negative_iou are negatives, at most
    total_num - positive_num. A sample with negative[b] True is a negative pair:
    negative_num anchors of the 7x7 cells around its box centre become negatives, the
    rest is ignored. The kept anchors are drawn from `generator` (default: the default
    generator of the boxes' device), identically on every backend; see the module
    docstring for the exact arithmetic. `seeds` [B, 2] int64 (32-bit words), instead of a
    generator, fixes each sample's choice on its own: a trainer that derives them from the
    sample makes its targets independent of how samples are batched or split over ranks.
    Under torch.compile pass seeds, or no generator (Dynamo cannot trace one).
    """
    _check_tensor("anchors", anchors, (torch.float32, torch.float64))
    device = anchors.device
    _check_tensor("boxes", boxes, (torch.float32, torch.float64), device)
    if anchors.dim() != 4 or anchors.shape[0] != 4 or anchors.shape[2] != anchors.shape[3] or anchors.shape[1] < 1:
        raise ValueError(f"anchors must be [4, A, S, S] (cx, cy, w, h) with A >= 1, got shape {tuple(anchors.shape)}")
    if anchors.shape[2] < 2:
        raise ValueError(f"anchors must span at least a 2x2 map (their spacing is the stride), got shape {tuple(anchors.shape)}")
    if anchors[0].numel() >= MAX_CELLS:
        raise ValueError(f"anchors must have fewer than {MAX_CELLS} cells, got shape {tuple(anchors.shape)}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be [B, 4] (cx, cy, w, h), got shape {tuple(boxes.shape)}")
    batch = boxes.shape[0]
    if negative is None:
        negative = torch.zeros(batch, dtype=torch.bool, device=device)
    _check_tensor("negative", negative, (torch.bool,), device)
    if negative.shape != (batch,):
        raise ValueError(f"negative must be [B] = {(batch,)} to match boxes, got shape {tuple(negative.shape)}")
    positive_iou = _check_iou("positive_iou", positive_iou)
    negative_iou = _check_iou("negative_iou", negative_iou)
    if positive_iou < negative_iou:
        raise ValueError(f"positive_iou must be at least negative_iou, got {positive_iou} < {negative_iou}")
    positive_num = _check_count("positive_num", positive_num)
    total_num = _check_count("total_num", total_num)
    negative_num = _check_count("negative_num", negative_num)
    if positive_num > total_num:
        raise ValueError(f"positive_num must be at most total_num, got {positive_num} > {total_num}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator must be a {device.type} generator for {device} boxes, got a {generator.device.type} one")
    backend = _backends.resolve_backend(backend, device)
    anchors = anchors.to(torch.float64).contiguous()
    boxes = boxes.to(torch.float64).contiguous()
    # Reading a device tensor on the host would stall the stream (and break a compiled
    # graph): there the kernels' rule for invalid boxes applies instead.
    if device.type == "cpu" and not torch.compiler.is_compiling():
        _check_values(anchors, boxes)
    if seeds is None:
        seeds = torch.randint(0, 2**32, (batch, 2), generator=generator, device=device, dtype=torch.int64)
    else:
        _check_seeds(seeds, batch, device, generator)
        seeds = seeds.contiguous()
    args = (anchors, boxes, negative.contiguous(), seeds, positive_iou, negative_iou, positive_num,
            total_num - positive_num, negative_num)  # fmt: skip
    if _backends.calls_native_directly(backend):
        return AnchorTargets(*_backends.native_ops().anchor_targets(*args))
    return AnchorTargets(*_anchor_targets_op(*args, backend))
