"""snlt_fast.anchor_targets: pysot's training anchor targets (notes: training-facts.md, 1.4).

The reference is checked against a numpy implementation of pysot's rules written here,
which selects with the same random keys (the op's contract: fmix32 of the cell index and
two 32-bit seeds drawn from the generator), so both choose the same anchors; every
backend is then checked bit for bit against the reference.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import snlt_fast
from conftest import devices_for
from snlt_fast.ops import anchor_targets as op

RATIOS = [0.33, 0.5, 1, 2, 3]
SNLT_SCALES = [4, 8, 16]
STRIDE = 8
BACKENDS = ["reference", "cpu", "cuda", "triton"]
FAST_CASES = [(backend, device) for backend in BACKENDS[1:] for device in devices_for(backend)]
BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.int64: torch.int64}


def anchors_for(anchor_num, size, dtype=torch.float64, device="cpu"):
    """pysot's anchors for the first `anchor_num` (ratio, scale) pairs of SNLT's 15."""
    ratios = RATIOS[: max(1, math.ceil(anchor_num / 3))]
    anchors = snlt_fast.generate_anchors(STRIDE, ratios, SNLT_SCALES, size, dtype=dtype, device=device)
    return anchors[:, :anchor_num].contiguous()


def random_boxes(batch, generator, spread=130.0, sizes=(4.0, 400.0)):
    """Centres across the 255 crop and past its border, sizes log-uniform over `sizes`."""
    centre = (torch.rand((batch, 2), generator=generator, dtype=torch.float64) * 2 - 1) * spread
    low, high = math.log(sizes[0]), math.log(sizes[1])
    size = torch.exp(torch.rand((batch, 2), generator=generator, dtype=torch.float64) * (high - low) + low)
    return torch.cat([centre, size], dim=1)


def seeds_of(seed, batch):
    """The seeds anchor_targets draws from torch.Generator().manual_seed(seed)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 2**32, (batch, 2), generator=generator, dtype=torch.int64).numpy()


def assert_same_bits(actual, expected):
    """Equal bit for bit, where any NaN matches any NaN."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    if actual.dtype.is_floating_point:
        assert torch.equal(actual.isnan(), expected.isnan())
        keep = ~expected.isnan()
        actual, expected = actual[keep], expected[keep]
    assert torch.equal(actual.view(BITS[actual.dtype]), expected.view(BITS[expected.dtype]))


def assert_targets_equal(actual, expected):
    for name, a, e in zip(op.AnchorTargets._fields, actual, expected):
        assert a.device == e.device, name
        assert_same_bits(a.cpu(), e.cpu())


# --------------------------------------------------------------------------- numpy pysot


def fmix32(h):
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


def numpy_ranks(seed0, seed1, cells):
    n = np.arange(cells, dtype=np.uint32)
    keys = fmix32(fmix32(n ^ np.uint32(seed0)) ^ np.uint32(seed1))
    return keys.astype(np.int64) * 2**31 + n.astype(np.int64)


def keep_smallest(candidates, ranks, keep):
    """np.where indices of the candidates with the `keep` smallest ranks (all when fewer)."""
    index = np.flatnonzero(candidates)
    index = index[np.argsort(ranks.ravel()[index], kind="stable")][:keep]
    return np.unravel_index(index, candidates.shape)


def pysot_targets(anchors, box, neg, seeds, thr_high=0.6, thr_low=0.3, pos_num=16, total_num=64, neg_num=16):
    """One sample, by pysot's rules (training-facts 1.4) in float64, with the op's keys for
    the random choice and its 1/pos_num weight (pysot adds 1e-6 to pos_num)."""
    anchor_num, size = anchors.shape[1], anchors.shape[2]
    cls = -np.ones((anchor_num, size, size), dtype=np.int64)
    delta = np.zeros((4, anchor_num, size, size))
    delta_weight = np.zeros((anchor_num, size, size))
    overlap = np.zeros((anchor_num, size, size))
    ranks = numpy_ranks(*seeds, anchor_num * size * size).reshape(cls.shape)
    tcx, tcy, tw, th = box
    if neg:
        # c = S//2 + ceil(t_rel / stride + 0.5), then the 7x7 cells around it on the map.
        stride_x, stride_y = anchors[0, 0, 0, 1] - anchors[0, 0, 0, 0], anchors[1, 0, 1, 0] - anchors[1, 0, 0, 0]
        cx = size // 2 + int(np.ceil(tcx / stride_x + 0.5))
        cy = size // 2 + int(np.ceil(tcy / stride_y + 0.5))
        window = np.zeros(cls.shape, dtype=bool)
        window[:, max(0, cy - 3) : max(0, min(size, cy + 4)), max(0, cx - 3) : max(0, min(size, cx + 4))] = True
        cls[keep_smallest(window, ranks, neg_num)] = 0
        return cls, delta, delta_weight, overlap
    cx, cy, w, h = anchors
    delta[0] = (tcx - cx) / w
    delta[1] = (tcy - cy) / h
    delta[2] = np.log(tw / w)
    delta[3] = np.log(th / h)
    x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
    inter_w = np.maximum(0, np.minimum(x2, tcx + tw / 2) - np.maximum(x1, tcx - tw / 2))
    inter_h = np.maximum(0, np.minimum(y2, tcy + th / 2) - np.maximum(y1, tcy - th / 2))
    inter = inter_w * inter_h
    overlap = inter / ((w * h + tw * th) - inter)
    pos = keep_smallest(overlap > thr_high, ranks, pos_num)
    negative = keep_smallest(overlap < thr_low, ranks, total_num - pos_num)
    cls[pos] = 1
    delta_weight[pos] = 1.0 / max(1, len(pos[0]))
    cls[negative] = 0
    return cls, delta, delta_weight, overlap


def check_against_pysot(anchors, boxes, negative, seed, **params):
    generator = torch.Generator().manual_seed(seed)
    result = snlt_fast.anchor_targets(anchors, boxes, negative=negative, generator=generator, backend="reference", **params)
    numpy_params = {"thr_high": params.get("positive_iou", 0.6), "thr_low": params.get("negative_iou", 0.3)}
    numpy_params |= {"pos_num": params.get("positive_num", 16), "total_num": params.get("total_num", 64)}
    numpy_params |= {"neg_num": params.get("negative_num", 16)}
    anchors64 = anchors.double().numpy()
    for b, seeds in enumerate(seeds_of(seed, len(boxes))):
        cls, delta, weight, overlap = pysot_targets(anchors64, boxes[b].tolist(), bool(negative[b]), seeds, **numpy_params)
        np.testing.assert_array_equal(result.labels[b].numpy(), cls)
        np.testing.assert_array_equal(result.delta_weights[b].numpy(), weight.astype(np.float32))
        np.testing.assert_array_equal(result.iou[b].numpy(), overlap.astype(np.float32))
        np.testing.assert_array_equal(result.deltas[b, :2].numpy(), delta[:2].astype(np.float32))
        # numpy's log and the contract's may differ by an ulp of float64, rarely seen in float32.
        np.testing.assert_array_max_ulp(result.deltas[b, 2:].numpy(), delta[2:].astype(np.float32), maxulp=1)
    return result


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**32 - 1),
    anchor_num=st.sampled_from([1, 3, 5, 15]),
    size=st.sampled_from([5, 8, 17, 25]),
    batch=st.integers(1, 6),
    negative_share=st.sampled_from([0.0, 0.3, 1.0]),
)
def test_reference_is_pysots_rule(seed, anchor_num, size, batch, negative_share):
    generator = torch.Generator().manual_seed(seed)
    anchors = anchors_for(anchor_num, size)
    extent = size // 2 * STRIDE + 40  # centres past the map's edge on both sides
    boxes = random_boxes(batch, generator, spread=extent, sizes=(0.5, 1000.0))
    negative = torch.rand(batch, generator=generator) < negative_share
    check_against_pysot(anchors, boxes, negative, seed)


def test_snlt_shapes_against_pysot():
    """SNLT's 15 anchors on the 25x25 map, with its 16 positives of 64 and a fifth of negative pairs."""
    generator = torch.Generator().manual_seed(3)
    boxes = random_boxes(12, generator, spread=60.0, sizes=(20.0, 200.0))
    negative = torch.arange(12) % 5 == 0
    result = check_against_pysot(anchors_for(15, 25), boxes, negative, seed=11)
    positives = (result.labels == 1).sum(dim=(1, 2, 3))
    assert positives.max() == 16 and (positives[negative] == 0).all()
    assert ((result.labels == 0).sum(dim=(1, 2, 3)) == torch.where(negative, 16, 48)).all()


@pytest.mark.parametrize(
    "box, expectation",
    [
        ((0.0, 0.0, 1.0, 1.0), "no positive"),  # tiny: every IoU is below 0.3
        ((0.0, 0.0, 5000.0, 5000.0), "no positive"),  # huge: the same
        ((100.0, -100.0, 64.0, 64.0), "positives"),  # at the map's corner
        ((0.0, 0.0, 64.0, 64.0), "positives"),  # on an anchor
    ],
)
def test_boxes_at_the_extremes(box, expectation):
    boxes = torch.tensor([box], dtype=torch.float64)
    result = check_against_pysot(anchors_for(15, 25), boxes, torch.tensor([False]), seed=5)
    assert ((result.labels == 1).sum() > 0) == (expectation == "positives")
    assert (result.labels == 0).sum() == 48


@pytest.mark.parametrize("centre", [(-96.0, -96.0), (96.0, 100.0), (-118.0, 110.0), (300.0, 0.0), (-1e6, 1e6)])
def test_negative_pairs_at_the_map_edge(centre):
    """The 7x7 window clipped to the map, or off it altogether (no candidate)."""
    boxes = torch.tensor([[*centre, 50.0, 40.0]], dtype=torch.float64)
    result = check_against_pysot(anchors_for(3, 25), boxes, torch.tensor([True]), seed=6)
    assert (result.deltas == 0).all() and (result.iou == 0).all() and (result.delta_weights == 0).all()


@pytest.mark.parametrize(
    "params",
    [
        dict(positive_iou=0.5, negative_iou=0.5),
        dict(positive_num=0, total_num=10),
        dict(positive_num=64, total_num=64),
        dict(positive_num=3, total_num=5000, negative_num=500),
    ],
)
def test_parameters_against_pysot(params):
    generator = torch.Generator().manual_seed(4)
    boxes = random_boxes(5, generator, spread=60.0, sizes=(30.0, 150.0))
    check_against_pysot(anchors_for(5, 17), boxes, torch.tensor([False, True, False, False, True]), seed=9, **params)


# --------------------------------------------------------------------------- backends


def run(backend, device, anchors, boxes, negative=None, seed=0, **params):
    generator = torch.Generator(device).manual_seed(seed)
    negative = None if negative is None else negative.to(device)
    return snlt_fast.anchor_targets(
        anchors.to(device), boxes.to(device), negative=negative, generator=generator, backend=backend, **params
    )


def check_backend(backend, device, anchors, boxes, negative, seed=0, **params):
    expected = run("reference", device, anchors, boxes, negative, seed, **params)
    actual = run(backend, device, anchors, boxes, negative, seed, **params)
    assert_targets_equal(actual, expected)


@pytest.mark.parametrize("backend, device", FAST_CASES)
@settings(max_examples=8)
@given(
    seed=st.integers(0, 2**32 - 1),
    anchor_num=st.sampled_from([1, 3, 5]),
    size=st.sampled_from([2, 5, 7]),
    batch=st.integers(1, 4),
)
def test_backend_matches_reference(backend, device, seed, anchor_num, size, batch):
    generator = torch.Generator().manual_seed(seed)
    boxes = random_boxes(batch, generator, spread=size * STRIDE, sizes=(0.5, 300.0))
    negative = torch.rand(batch, generator=generator) < 0.4
    check_backend(backend, device, anchors_for(anchor_num, size), boxes, negative, seed)


@pytest.mark.parametrize("backend, device", [c for c in FAST_CASES if c[0] != "triton" or c[1] == "cuda"])
def test_backend_matches_reference_at_snlt_shapes(backend, device):
    generator = torch.Generator().manual_seed(8)
    boxes = random_boxes(32, generator, spread=80.0, sizes=(10.0, 300.0))
    check_backend(backend, device, anchors_for(15, 25), boxes, torch.arange(32) % 4 == 0, seed=8)


@pytest.mark.parametrize("backend, device", FAST_CASES)
@pytest.mark.parametrize("layout", ["jittered centres", "sizes varying in a plane", "runs of sizes"])
def test_anchors_off_pysots_grid(backend, device, layout):
    """Anchors that the CPU kernel's grid and one-size-per-plane shortcuts do not fit."""
    generator = torch.Generator().manual_seed(22)
    anchors = anchors_for(3, 7)
    if layout == "jittered centres":
        anchors[:2] += torch.rand(anchors[:2].shape, generator=generator, dtype=torch.float64)
    elif layout == "sizes varying in a plane":
        anchors[2:] *= 1 + torch.rand(anchors[2:].shape, generator=generator, dtype=torch.float64)
    else:
        anchors[2, 1, 3:] *= 2
    boxes = random_boxes(4, generator, spread=20.0, sizes=(8.0, 120.0))
    check_backend(backend, device, anchors, boxes, torch.tensor([False, False, True, False]), seed=22)


@pytest.mark.parametrize("backend, device", FAST_CASES)
def test_unchecked_invalid_boxes(backend, device):
    """The kernels' rule for boxes that no host check saw (device tensors, compiled graphs):
    nothing is selected, deltas and IoU are NaN."""
    anchors = anchors_for(3, 5).to(device)
    boxes = torch.tensor([[0, 0, 10, 10], [math.nan, 0, 10, 10], [0, 0, -1, 10], [0, 0, 10, math.inf]], dtype=torch.float64)
    args = (anchors, boxes.to(device), torch.tensor([False, True, False, False], device=device))
    args += (torch.zeros((4, 2), dtype=torch.int64, device=device), 0.6, 0.3, 16, 48, 16)
    actual = op._anchor_targets_op(*args, backend)
    assert_targets_equal(actual, op._anchor_targets_op(*args, "reference"))
    labels, deltas, weights, iou = actual
    assert (labels[1:] == -1).all() and (weights[1:] == 0).all()
    assert deltas[1:].isnan().all() and iou[1:].isnan().all()


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_same_seed_same_choice_other_seed_other_choice(backend):
    anchors, boxes = anchors_for(15, 25), random_boxes(4, torch.Generator().manual_seed(1), spread=40.0, sizes=(40, 90))
    first, again, other = (run(backend, "cpu", anchors, boxes, seed=seed) for seed in (7, 7, 8))
    assert_targets_equal(first, again)
    assert not torch.equal(first.labels, other.labels)
    assert torch.equal(first.iou, other.iou) and torch.equal(first.deltas, other.deltas)


def test_default_generator_follows_manual_seed():
    anchors, boxes = anchors_for(5, 9), random_boxes(3, torch.Generator().manual_seed(2), spread=20.0, sizes=(20, 60))
    torch.manual_seed(5)
    first = snlt_fast.anchor_targets(anchors, boxes)
    torch.manual_seed(5)
    assert_targets_equal(snlt_fast.anchor_targets(anchors, boxes), first)


@pytest.mark.parametrize("backend, device", [("reference", "cpu")] + FAST_CASES)
def test_seeds_choose_as_the_generator_does(backend, device):
    """Seeds given are the words the generator would draw; only their low 32 bits count."""
    anchors, boxes = anchors_for(3, 5), random_boxes(3, torch.Generator().manual_seed(20), spread=20.0, sizes=(10, 40))
    expected = run(backend, device, anchors, boxes, seed=21)
    seeds = torch.from_numpy(seeds_of(21, 3)).to(device)
    given = snlt_fast.anchor_targets(anchors.to(device), boxes.to(device), seeds=seeds.t().contiguous().t(), backend=backend)
    assert_targets_equal(given, expected)
    args = (anchors.to(device), boxes.to(device), torch.zeros(3, dtype=torch.bool, device=device), seeds - 2**32)
    args += (0.6, 0.3, 16, 48, 16)
    assert_targets_equal(op._anchor_targets_op(*args, backend), expected)


def test_selection_is_spread_over_the_candidates():
    """Over many draws every negative candidate is kept about equally often."""
    anchors, boxes = anchors_for(1, 9), torch.tensor([[0.0, 0.0, 40.0, 40.0]])
    counts = torch.zeros(81)
    for seed in range(400):
        counts += (run("cpu", "cpu", anchors, boxes, seed=seed, positive_num=0, total_num=8).labels == 0).flatten()
    candidates = counts > 0
    expected = 400 * 8 / candidates.sum()
    assert candidates.sum() > 60 and (counts[candidates] - expected).abs().max() < 0.6 * expected


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_counts_respect_the_limits(backend):
    generator = torch.Generator().manual_seed(12)
    anchors, boxes = anchors_for(15, 25), random_boxes(16, generator, spread=60.0, sizes=(30.0, 200.0))
    for positive_num, total_num in ((16, 64), (4, 10), (30, 31)):
        result = run(backend, "cpu", anchors, boxes, positive_num=positive_num, total_num=total_num)
        positives = (result.labels == 1).sum(dim=(1, 2, 3))
        assert (positives <= positive_num).all() and ((result.labels == 0).sum(dim=(1, 2, 3)) <= total_num - positive_num).all()
        weight_sums = result.delta_weights.double().sum(dim=(1, 2, 3))
        assert torch.allclose(weight_sums[positives > 0], torch.ones(1, dtype=torch.float64), atol=1e-6)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_non_contiguous_and_float32_inputs(backend):
    anchors, boxes = anchors_for(5, 9), random_boxes(4, torch.Generator().manual_seed(13), spread=30.0, sizes=(20, 80))
    negative = torch.tensor([False, True, False, True])
    expected = run(backend, "cpu", anchors, boxes, negative)
    strided_anchors = torch.zeros((4, 10, 9, 18), dtype=torch.float64)[:, ::2, :, ::2]
    strided_anchors.copy_(anchors)
    strided_boxes = boxes.t().contiguous().t()
    strided_negative = torch.stack([negative, negative], dim=1)[:, 1]
    assert not (strided_anchors.is_contiguous() or strided_boxes.is_contiguous() or strided_negative.is_contiguous())
    assert_targets_equal(run(backend, "cpu", strided_anchors, strided_boxes, strided_negative), expected)
    # pysot's anchors are float32 values: float32 anchors and boxes give the same targets.
    assert_targets_equal(run(backend, "cpu", anchors.float(), boxes.float().double(), negative), run(
        backend, "cpu", anchors, boxes.float().double(), negative))  # fmt: skip
    assert_targets_equal(run(backend, "cpu", anchors, boxes.float(), negative), run(
        backend, "cpu", anchors, boxes.float().double(), negative))  # fmt: skip


def test_cpu_results_do_not_depend_on_the_thread_count():
    anchors, boxes = anchors_for(15, 25), random_boxes(9, torch.Generator().manual_seed(14), spread=60.0, sizes=(20, 200))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = run("cpu", "cpu", anchors, boxes)
        torch.set_num_threads(3)
        assert_targets_equal(run("cpu", "cpu", anchors, boxes), single)
    finally:
        torch.set_num_threads(threads)


def test_empty_batch():
    result = snlt_fast.anchor_targets(anchors_for(3, 5), torch.empty((0, 4), dtype=torch.float64))
    assert result.labels.shape == (0, 3, 5, 5) and result.deltas.shape == (0, 4, 3, 5, 5)


def test_log_float64_is_within_an_ulp_of_torch():
    x = torch.rand(200_000, generator=torch.Generator().manual_seed(15), dtype=torch.float64)
    x = torch.cat([x * torch.exp2(torch.linspace(-1074, 1023, 200_000, dtype=torch.float64)), torch.tensor([1.0, 2.0, 5e-324])])
    ulps = (op.log_float64(x).view(torch.int64) - torch.log(x).view(torch.int64)).abs()
    assert ulps.max() <= 1
    special = torch.tensor([0.0, math.inf, -1.0, math.nan], dtype=torch.float64)
    assert_same_bits(op.log_float64(special), torch.log(special))


# --------------------------------------------------------------------------- op registration


def op_args(anchors, boxes, negative):
    return (anchors, boxes, negative, torch.randint(0, 2**32, (len(boxes), 2)), 0.6, 0.3, 16, 48, 16)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_compiles_without_graph_breaks(backend):
    anchors, boxes = anchors_for(3, 5), random_boxes(3, torch.Generator().manual_seed(16), spread=20.0, sizes=(10, 40))

    def targets(anchors, boxes):
        return snlt_fast.anchor_targets(anchors, boxes, negative=boxes[:, 0] > 0, backend=backend)

    compiled = torch.compile(targets, backend="eager", fullgraph=True)
    torch.manual_seed(17)
    actual = compiled(anchors, boxes)
    torch.manual_seed(17)
    assert_targets_equal(actual, targets(anchors, boxes))


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_custom_op_passes_opcheck(backend):
    anchors, boxes = anchors_for(3, 5), random_boxes(3, torch.Generator().manual_seed(18), spread=20.0, sizes=(10, 40))
    torch.library.opcheck(op._anchor_targets_op, (*op_args(anchors, boxes, torch.tensor([False, True, False])), backend))


def test_native_op_refuses_what_it_would_misread():
    anchors, boxes = anchors_for(3, 5), random_boxes(2, torch.Generator().manual_seed(19), spread=20.0, sizes=(10, 40))
    args = list(op_args(anchors, boxes, torch.tensor([False, True])))
    native = snlt_fast._backends.native_ops().anchor_targets
    for index, bad, match in ((0, anchors.float(), "anchors"), (1, boxes[:, :3], "boxes"), (2, args[2].int(), "negative"),
                              (3, args[3][:1], "seeds"), (6, -1, "positive_num")):  # fmt: skip
        with pytest.raises((ValueError, TypeError), match=match):
            native(*(args[:index] + [bad] + args[index + 1 :]))


# --------------------------------------------------------------------------- bad input


def good_call():
    return {"anchors": anchors_for(3, 5), "boxes": torch.tensor([[0.0, 0.0, 20.0, 20.0], [5.0, 5.0, 10.0, 30.0]])}


BAD_INPUTS = [
    (dict(anchors=[1.0]), TypeError, "anchors"),
    (dict(anchors=anchors_for(3, 5).int()), TypeError, "anchors"),
    (dict(anchors=anchors_for(3, 5)[:3]), ValueError, "anchors"),
    (dict(anchors=anchors_for(3, 5)[..., :4]), ValueError, "anchors"),
    (dict(anchors=anchors_for(3, 5)[..., :1, :1]), ValueError, "anchors"),
    (dict(anchors=anchors_for(3, 5) * torch.tensor([1.0, 1.0, -1.0, 1.0])[:, None, None, None]), ValueError, "anchors"),
    (dict(anchors=anchors_for(3, 5).flip(3)), ValueError, "anchors"),
    (dict(boxes=torch.zeros(2, 3)), ValueError, "boxes"),
    (dict(boxes=torch.zeros(2, 4, dtype=torch.int64)), TypeError, "boxes"),
    (dict(boxes=torch.tensor([[0.0, 0.0, 0.0, 10.0]])), ValueError, "boxes"),
    (dict(boxes=torch.tensor([[0.0, math.nan, 5.0, 10.0]])), ValueError, "boxes"),
    (dict(boxes=torch.tensor([[0.0, 0.0, math.inf, 10.0]])), ValueError, "boxes"),
    (dict(boxes=torch.zeros(2, 4, device="meta")), ValueError, "boxes"),
    (dict(negative=torch.tensor([True])), ValueError, "negative"),
    (dict(negative=torch.tensor([1, 0])), TypeError, "negative"),
    (dict(positive_iou=0.2), ValueError, "positive_iou"),
    (dict(negative_iou=math.nan), ValueError, "negative_iou"),
    (dict(positive_iou="0.6"), TypeError, "positive_iou"),
    (dict(positive_num=65), ValueError, "positive_num"),
    (dict(positive_num=-1), ValueError, "positive_num"),
    (dict(total_num=8.0), TypeError, "total_num"),
    (dict(negative_num=True), TypeError, "negative_num"),
    (dict(generator=0), TypeError, "generator"),
    (dict(backend="gpu"), ValueError, "backend"),
    (dict(seeds=torch.zeros(2, 2, dtype=torch.int64), generator=torch.Generator()), ValueError, "seeds"),
    (dict(seeds=torch.zeros(1, 2, dtype=torch.int64)), ValueError, "seeds"),
    (dict(seeds=torch.zeros(2, 2, dtype=torch.int32)), TypeError, "seeds"),
    (dict(seeds=torch.full((2, 2), 2**32)), ValueError, "seeds"),
]


@pytest.mark.parametrize("change, error, match", BAD_INPUTS)
def test_bad_input(change, error, match):
    with pytest.raises(error, match=match):
        snlt_fast.anchor_targets(**(good_call() | change))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_generator_on_another_device():
    call = {k: v.cuda() for k, v in good_call().items()}
    with pytest.raises(ValueError, match="generator"):
        snlt_fast.anchor_targets(**call, generator=torch.Generator().manual_seed(0))


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 4), others=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_anchor_ious_are_the_ious_anchor_targets_sees(batch, others, seed):
    generator = torch.Generator().manual_seed(seed)
    anchors = anchors_for(5, 7)
    boxes = torch.stack([random_boxes(batch, generator) for _ in range(others)], dim=1)
    ious = op.anchor_ious(anchors, boxes)
    assert ious.shape == (batch, others, 5, 7, 7) and ious.dtype == torch.float64
    for k in range(others):
        targets = snlt_fast.anchor_targets(anchors, boxes[:, k], seeds=torch.zeros(batch, 2, dtype=torch.int64))
        assert torch.equal(ious[:, k].to(torch.float32), targets.iou)
    boxes[0, 0] = math.nan  # a padding row: no overlap with anything
    assert op.anchor_ious(anchors, boxes)[0, 0].isnan().all()
