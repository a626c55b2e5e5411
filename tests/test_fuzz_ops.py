"""Fuzzing the public ops with hypothesis: random shapes (zero-size and 1x1 included),
dtypes, strides, broadcast forms, NaN and inf values, and arguments of the wrong type.

Every case must end in one of two ways on every backend: the reference backend's
answer, bit for bit (NaN where it has NaN), or a TypeError / ValueError, the same
type the reference raises. Anything else (a crash of the native code, another
exception type, different bits) fails. `make sanitize` runs these under ASan and
UBSan, where an out-of-bounds read that happens to return the right bits fails too.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import snlt_fast
from snlt_fast import available_backends

FAST_BACKENDS = [backend for backend in available_backends("cpu") if backend != "reference"]
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
SPECIAL_VALUES = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e30, -1e30]
USER_ERRORS = (TypeError, ValueError)
FUZZ = settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def outcome(function, *args, **kwargs):
    """The result of a call, or the type of the user error it raised."""
    try:
        return function(*args, **kwargs)
    except USER_ERRORS as error:
        return type(error)


def assert_same_outcome(expected, got):
    if isinstance(expected, type) or isinstance(got, type):
        assert got is expected, f"reference gave {expected}, the backend {got}"
        return
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    got = got if isinstance(got, (list, tuple)) else [got]
    assert len(got) == len(expected)
    for one, other in zip(expected, got):
        assert one.dtype == other.dtype and one.shape == other.shape
        torch.testing.assert_close(other, one, rtol=0, atol=0, equal_nan=True)


@st.composite
def tensors(draw, shape, dtype):
    """A tensor of `shape` and `dtype` with some special values, contiguous or a strided view."""
    generator = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    layout = draw(st.sampled_from(["contiguous", "transposed", "sliced"]))
    if layout == "sliced" and len(shape) >= 1:
        # Every other element along the last dimension: a view with stride 2.
        values = torch.randn(*shape[:-1], 2 * shape[-1], generator=generator, dtype=torch.float64)[..., ::2]
    elif layout == "transposed" and len(shape) >= 2:
        values = torch.randn(*shape[:-2], shape[-1], shape[-2], generator=generator, dtype=torch.float64).transpose(-1, -2)
    else:
        values = torch.randn(*shape, generator=generator, dtype=torch.float64)
    values = values.to(dtype)
    if values.numel() and draw(st.booleans()):
        flat_index = draw(st.integers(0, values.numel() - 1))
        index = np.unravel_index(flat_index, tuple(shape))
        values[index] = draw(st.sampled_from(SPECIAL_VALUES))
    return values


# --------------------------------------------------------------------------- correlation


@st.composite
def xcorr_pairs(draw, dtype=None):
    dtype = dtype or draw(st.sampled_from(DTYPES))
    batch, channels = draw(st.integers(0, 3)), draw(st.integers(0, 4))
    height, width = draw(st.integers(0, 7)), draw(st.integers(0, 7))
    # Kernels from 0x0 to one larger than the search: the edges are the interesting cases.
    kernel_h, kernel_w = draw(st.integers(0, height + 1)), draw(st.integers(0, width + 1))
    form = draw(st.sampled_from(["per target", "one for all", "sentence [B, C]"]))
    search = draw(tensors((batch, channels, height, width), dtype))
    if form == "sentence [B, C]":
        kernel = draw(tensors((batch, channels), dtype))
    else:
        kernel = draw(tensors((batch if form == "per target" else 1, channels, kernel_h, kernel_w), dtype))
    return search, kernel


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@FUZZ
@given(pair=xcorr_pairs())
def test_xcorr_depthwise_gives_the_references_answer_or_a_user_error(backend, pair):
    search, kernel = pair
    expected = outcome(snlt_fast.xcorr_depthwise, search, kernel, backend="reference")
    assert_same_outcome(expected, outcome(snlt_fast.xcorr_depthwise, search, kernel, backend=backend))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@FUZZ
@given(data=st.data())
def test_xcorr_depthwise_many_gives_the_references_answer_or_a_user_error(backend, data):
    dtype = data.draw(st.sampled_from(DTYPES))
    pairs = data.draw(st.lists(xcorr_pairs(dtype), max_size=3))
    searches, kernels = [s for s, _ in pairs], [k for _, k in pairs]
    expected = outcome(snlt_fast.xcorr_depthwise_many, searches, kernels, backend="reference")
    assert_same_outcome(expected, outcome(snlt_fast.xcorr_depthwise_many, searches, kernels, backend=backend))


NOT_TENSORS = [None, 3, 2.5, "search", [[1.0, 2.0]], np.zeros((1, 1, 3, 3), dtype=np.float32)]
WRONG_DTYPES = [torch.int32, torch.int64, torch.bool, torch.uint8, torch.complex64]


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
@pytest.mark.parametrize("wrong", NOT_TENSORS + WRONG_DTYPES, ids=repr)
def test_xcorr_wrong_types_are_type_errors(backend, wrong):
    good = torch.ones(1, 2, 4, 4)
    bad = torch.ones(1, 2, 4, 4).to(wrong) if isinstance(wrong, torch.dtype) else wrong
    for search, kernel in ((bad, good), (good, bad)):
        with pytest.raises(TypeError):
            snlt_fast.xcorr_depthwise(search, kernel, backend=backend)
        with pytest.raises(TypeError):
            snlt_fast.xcorr_depthwise_many([good, search], [good, kernel], backend=backend)
    with pytest.raises(TypeError):
        snlt_fast.xcorr_depthwise_many(good, good, backend=backend)


# --------------------------------------------------------------------------- post-processing


@st.composite
def heads(draw):
    """(cls_vis, cls_nl, loc_vis, loc_nl, anchors, window) with random shapes, dtypes and layouts."""
    dtype = draw(st.sampled_from(DTYPES))
    batch, anchor_num = draw(st.integers(0, 3)), draw(st.integers(1, 3))
    height, width = draw(st.integers(0, 5)), draw(st.integers(0, 5))
    cls_vis = draw(tensors((batch, 2 * anchor_num, height, width), dtype))
    loc_vis = draw(tensors((batch, 4 * anchor_num, height, width), dtype))
    cls_nl = loc_nl = None
    if draw(st.booleans()):
        cls_nl = draw(tensors((batch, 2 * anchor_num, height, width), dtype))
        loc_nl = draw(tensors((batch, 4 * anchor_num, height, width), dtype))
    anchor_dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    # Anchors of the right sizes (positive widths) with some NaN/inf among them at times.
    anchors = draw(tensors((4, anchor_num, height, width), anchor_dtype)).abs() * 8
    window = draw(tensors((anchor_num, height, width), torch.float64)).abs()
    return cls_vis, cls_nl, loc_vis, loc_nl, anchors, window


sizes = st.one_of(st.floats(-5, 200), st.sampled_from([math.nan, math.inf, 0.0]))
target_sizes = st.one_of(
    st.tuples(sizes, sizes),
    st.integers(0, 3).flatmap(lambda batch: st.just(torch.rand(batch, 2, dtype=torch.float64) * 100 + 1)),
)


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@FUZZ
@given(inputs=heads(), alpha=st.sampled_from([1 / 300, 0.0, 1.0, 1e6]))
def test_dynamic_aggregate_gives_the_references_answer_or_a_user_error(backend, inputs, alpha):
    cls_vis, cls_nl, loc_vis, loc_nl, anchors, _ = inputs
    args = (cls_vis, cls_nl, loc_vis, loc_nl, anchors)
    expected = outcome(snlt_fast.dynamic_aggregate, *args, alpha=alpha, backend="reference")
    assert_same_outcome(expected, outcome(snlt_fast.dynamic_aggregate, *args, alpha=alpha, backend=backend))


@pytest.mark.parametrize("backend", FAST_BACKENDS)
@FUZZ
@given(inputs=heads(), target_size=target_sizes, lr_mode=st.sampled_from(["snlt", "pysot"]))
def test_track_postprocess_gives_the_references_answer_or_a_user_error(backend, inputs, target_size, lr_mode):
    args = (*inputs, target_size)
    options = dict(penalty_k=0.04, window_influence=0.44, lr=0.4, lr_mode=lr_mode)
    expected = outcome(snlt_fast.track_postprocess, *args, **options, backend="reference")
    assert_same_outcome(expected, outcome(snlt_fast.track_postprocess, *args, **options, backend=backend))


@pytest.mark.parametrize("backend", ["reference", *FAST_BACKENDS])
@pytest.mark.parametrize("wrong", NOT_TENSORS + WRONG_DTYPES, ids=repr)
def test_postprocess_wrong_types_are_user_errors(backend, wrong):
    anchors = snlt_fast.generate_anchors(8, [1.0], [8], 3)
    window = snlt_fast.hanning_window(3, 1)
    cls, loc = torch.zeros(1, 2, 3, 3), torch.zeros(1, 4, 3, 3)
    good = [cls, None, loc, None, anchors]
    for position in (0, 2, 4):
        bad = list(good)
        bad[position] = good[position].to(wrong) if isinstance(wrong, torch.dtype) else wrong
        with pytest.raises(USER_ERRORS):
            snlt_fast.dynamic_aggregate(*bad, backend=backend)
        with pytest.raises(USER_ERRORS):
            snlt_fast.track_postprocess(*bad, window, [10.0, 10.0], backend=backend)
    with pytest.raises(USER_ERRORS):
        snlt_fast.track_postprocess(*good, wrong, [10.0, 10.0], backend=backend)
    if not isinstance(wrong, list):  # [[1.0, 2.0]] is a valid [1, 2] target size
        with pytest.raises(USER_ERRORS):
            snlt_fast.track_postprocess(*good, window, wrong if wrong is not None else "10,10", backend=backend)
    for name in ("alpha", "penalty_k", "window_influence", "lr"):
        if not isinstance(wrong, (int, float)):
            with pytest.raises(USER_ERRORS):
                snlt_fast.track_postprocess(*good, window, [10.0, 10.0], backend=backend, **{name: wrong})


# --------------------------------------------------------------------------- anchors and window

SCALARS = st.one_of(
    st.integers(-3, 40), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(), st.text(max_size=2)
)
NUMBER_LISTS = st.one_of(st.lists(st.one_of(st.floats(-2, 20), st.just(math.nan), st.integers(-2, 20)), max_size=4), SCALARS)


@FUZZ
@given(stride=SCALARS, ratios=NUMBER_LISTS, scales=NUMBER_LISTS, score_size=SCALARS)
def test_generate_anchors_gives_pysots_anchors_or_a_user_error(stride, ratios, scales, score_size):
    anchors = outcome(snlt_fast.generate_anchors, stride, ratios, scales, score_size)
    if isinstance(anchors, type):
        return
    count = len(ratios) * len(scales)
    assert anchors.shape == (4, count, score_size, score_size) and anchors.dtype == torch.float64
    assert torch.isfinite(anchors).all() and (anchors[2:] >= 0).all()


@FUZZ
@given(score_size=SCALARS, anchor_num=SCALARS)
def test_hanning_window_gives_numpys_window_or_a_user_error(score_size, anchor_num):
    window = outcome(snlt_fast.hanning_window, score_size, anchor_num)
    if isinstance(window, type):
        return
    hanning = np.hanning(score_size)
    expected = np.broadcast_to(np.outer(hanning, hanning), (anchor_num, score_size, score_size))
    assert np.array_equal(window.numpy(), expected) and window.numpy().flags.writeable
