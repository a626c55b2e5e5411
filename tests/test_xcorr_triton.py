"""The Triton xcorr kernels (kernels/xcorr.py) against the reference, bit for bit.

What is specific to the Triton backend: many pairs of different shapes in one launch
(the device table), one launch for the whole backward, any strides, the bfloat16
rounding done by hand, and the grad-kernel summation order with a shared kernel.
Without a GPU this runs through the Triton interpreter, so shapes stay small.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import snlt_fast
from conftest import devices_for
from snlt_fast.kernels import xcorr as triton_xcorr
from snlt_fast.ops.xcorr import xcorr_backward_reference, xcorr_reference

DEVICES = devices_for("triton")
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
LAYOUTS = ("contiguous", "channels_last", "column_major", "strided")
BITS = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64}

pytestmark = pytest.mark.skipif(not DEVICES, reason="no device runs the Triton backend here")


def assert_same_bits(actual, expected):
    """Equal bit for bit (so +0 and -0 differ), where any NaN matches any NaN."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert torch.equal(actual.isnan(), expected.isnan())
    keep = ~expected.isnan()
    assert torch.equal(actual[keep].view(BITS[actual.dtype]), expected[keep].view(BITS[expected.dtype]))


def spread(shape, dtype, device, generator):
    """Values over many binades, so that summing in any other order changes the bits."""
    values = torch.randn(shape, generator=generator, dtype=torch.float64)
    values *= torch.exp2(torch.randint(-6, 7, shape, generator=generator).double())
    return values.to(device=device, dtype=dtype)


def relayout(tensor, layout):
    """The same values with other strides."""
    if layout == "contiguous":
        return tensor.contiguous()
    if layout == "channels_last":
        return tensor.contiguous(memory_format=torch.channels_last)
    if layout == "column_major":
        return tensor.transpose(2, 3).contiguous().transpose(2, 3)
    batch, channels, height, width = tensor.shape
    holder = tensor.new_zeros((batch, 2 * channels, 2 * height, 3 * width))
    view = holder[:, 1::2, ::2, 1::3]
    view.copy_(tensor)
    return view


def check_pairs(searches, kernels, grads, need_search=True, need_kernel=True):
    outputs = triton_xcorr.xcorr_forward_many(searches, kernels)
    for search, kernel, output in zip(searches, kernels, outputs):
        assert output.is_contiguous()
        assert_same_bits(output, xcorr_reference(search, kernel))
    grad_searches, grad_kernels = triton_xcorr.xcorr_backward_many(grads, searches, kernels, need_search, need_kernel)
    assert len(grad_searches) == (len(searches) if need_search else 0)
    assert len(grad_kernels) == (len(searches) if need_kernel else 0)
    for n, (grad, search, kernel) in enumerate(zip(grads, searches, kernels)):
        expected_search, expected_kernel = xcorr_backward_reference(grad, search, kernel, need_search, need_kernel)
        if need_search:
            assert_same_bits(grad_searches[n], expected_search)
        if need_kernel:
            assert_same_bits(grad_kernels[n], expected_kernel)


@pytest.fixture
def launches(monkeypatch):
    """Grids of the Triton launches made during the test, by kernel name."""
    made = {"forward": [], "backward": []}

    class Counted:
        def __init__(self, kernel, grids):
            self.kernel, self.grids = kernel, grids

        def __getitem__(self, grid):
            self.grids.append(grid)
            return self.kernel[grid]

    monkeypatch.setattr(triton_xcorr, "_forward_kernel", Counted(triton_xcorr._forward_kernel, made["forward"]))
    monkeypatch.setattr(triton_xcorr, "_backward_kernel", Counted(triton_xcorr._backward_kernel, made["backward"]))
    return made


# (search shape, kernel shape): B > 1, a shared kernel, the 1x1 language kernel, a kernel as
# large as the search, one-row planes, odd sizes.
MIXED_PAIRS = (
    ((2, 3, 7, 9), (2, 3, 3, 4)),
    ((3, 3, 6, 5), (1, 3, 2, 2)),
    ((1, 5, 6, 6), (1, 5, 1, 1)),
    ((2, 2, 5, 4), (2, 2, 5, 4)),
    ((1, 4, 1, 8), (1, 4, 1, 3)),
)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_mixed_pairs_take_one_launch_each_way(device, dtype, launches):
    generator = torch.Generator().manual_seed(1)
    searches = [spread(s, dtype, device, generator) for s, _ in MIXED_PAIRS]
    kernels = [spread(k, dtype, device, generator) for _, k in MIXED_PAIRS]
    grads = [spread(xcorr_reference(s, k).shape, dtype, device, generator) for s, k in zip(searches, kernels)]
    check_pairs(searches, kernels, grads)
    assert len(launches["forward"]) == 1 and len(launches["backward"]) == 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("need_search, need_kernel", [(True, False), (False, True)])
def test_backward_of_one_gradient_only(device, need_search, need_kernel, launches):
    generator = torch.Generator().manual_seed(2)
    searches = [spread(s, torch.float32, device, generator) for s, _ in MIXED_PAIRS]
    kernels = [spread(k, torch.float32, device, generator) for _, k in MIXED_PAIRS]
    grads = [spread(xcorr_reference(s, k).shape, torch.float32, device, generator) for s, k in zip(searches, kernels)]
    check_pairs(searches, kernels, grads, need_search, need_kernel)
    assert len(launches["backward"]) == 1


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float32))
def test_any_strides(device, layout, dtype):
    generator = torch.Generator().manual_seed(3)
    search = relayout(spread((2, 5, 7, 8), dtype, device, generator), layout)
    kernel = relayout(spread((2, 5, 3, 2), dtype, device, generator), layout)
    shared = relayout(spread((1, 5, 2, 3), dtype, device, generator), layout)
    grad = relayout(spread((2, 5, 5, 7), dtype, device, generator), layout)
    shared_grad = relayout(spread((2, 5, 6, 6), dtype, device, generator), layout)
    check_pairs([search, search], [kernel, shared], [grad, shared_grad])


@pytest.mark.parametrize("device", DEVICES)
def test_expanded_inputs(device):
    """Stride 0: a search and a kernel broadcast over the batch, and the gradient of out.sum()."""
    generator = torch.Generator().manual_seed(4)
    search = spread((1, 3, 6, 7), torch.float32, device, generator).expand(3, -1, -1, -1)
    kernel = spread((1, 3, 2, 3), torch.float32, device, generator).expand(3, -1, -1, -1)
    grad = torch.ones((), device=device).expand(3, 3, 5, 5)
    check_pairs([search], [kernel], [grad])


@pytest.mark.parametrize("device", DEVICES)
def test_shared_kernel_gradient_sums_batch_outermost(device):
    generator = torch.Generator().manual_seed(5)
    search = spread((4, 6, 7, 7), torch.float32, device, generator)
    kernel = spread((1, 6, 3, 3), torch.float32, device, generator)
    grad = spread((4, 6, 5, 5), torch.float32, device, generator)
    _, (grad_kernel,) = triton_xcorr.xcorr_backward_many([grad], [search], [kernel], False, True)
    assert_same_bits(grad_kernel, xcorr_backward_reference(grad, search, kernel, False, True)[1])
    # The data tells orders apart: one sum per sample, added afterwards, gives other bits.
    per_sample = sum(
        xcorr_backward_reference(grad[b : b + 1], search[b : b + 1], kernel, False, True)[1] for b in range(4)
    )
    assert not torch.equal(per_sample, grad_kernel)


# The interpreter's numpy warns about the infinities and NaN these tests make on purpose.
IEEE_EDGE_WARNINGS = pytest.mark.filterwarnings("ignore:(overflow|invalid value) encountered:RuntimeWarning")


@IEEE_EDGE_WARNINGS
@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_rounds_to_nearest_even_once(device):
    """Each row sums two taps in float32 and rounds that once to bfloat16: ties, overflow,
    subnormals, infinities and NaN."""
    tie, half_ulp = 1.0, 2.0**-8
    rows = [
        (tie, half_ulp),  # tie, rounds down to even 1
        (tie + 2.0**-7, half_ulp),  # tie, rounds up to even 1 + 2^-6
        (-tie, -half_ulp),
        (tie, half_ulp * 1.5),  # above the tie: rounds up
        (3.3895e38, 2.0**120),  # past the largest bfloat16: inf
        (1e-40, 0.0),  # subnormal
        (-(2.0**-133), 2.0**-133),  # exact cancellation: +0
        (-0.0, -0.0),  # +0 + (-0) * 1 + (-0) * 1 = +0
        (float("inf"), 1.0),
        (float("inf"), float("-inf")),
        (float("nan"), 1.0),
    ]
    search = torch.tensor(rows, dtype=torch.float32).to(torch.bfloat16).reshape(1, 1, len(rows), 2).to(device)
    kernel = torch.ones((1, 1, 1, 2), dtype=torch.bfloat16, device=device)
    grad = torch.ones((1, 1, len(rows), 1), dtype=torch.bfloat16, device=device)
    check_pairs([search], [kernel], [grad])


@IEEE_EDGE_WARNINGS
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", (torch.float16, torch.float32))
def test_nan_and_inf_propagate_as_in_the_reference(device, dtype):
    """An infinite kernel tap must not turn the edges of grad-search, where it has no
    contribution, into NaN (0 * inf)."""
    generator = torch.Generator().manual_seed(6)
    search = spread((2, 3, 6, 6), dtype, device, generator)
    kernel = spread((2, 3, 3, 3), dtype, device, generator)
    grad = spread((2, 3, 4, 4), dtype, device, generator)
    search[0, 0, 2, 3] = float("nan")
    search[1, 2, 0, 0] = float("inf")
    kernel[0, 1, 1, 1] = float("inf")
    kernel[1, 1, 2, 0] = float("-inf")
    grad[1, 0, 3, 3] = float("inf")
    check_pairs([search], [kernel], [grad])


@pytest.mark.parametrize("device", DEVICES)
def test_empty_pairs_launch_nothing(device, launches):
    empty = [torch.empty((0, 3, 5, 5), device=device), torch.empty((2, 0, 5, 5), device=device)]
    kernels = [torch.ones((1, 3, 2, 2), device=device), torch.ones((2, 0, 2, 2), device=device)]
    outputs = triton_xcorr.xcorr_forward_many(empty, kernels)
    assert [o.shape for o in outputs] == [(0, 3, 4, 4), (2, 0, 4, 4)]
    assert not launches["forward"]
    grads = [torch.empty(o.shape, device=device) for o in outputs]
    grad_searches, grad_kernels = triton_xcorr.xcorr_backward_many(grads, empty, kernels, True, True)
    assert [g.shape for g in grad_searches] == [(0, 3, 5, 5), (2, 0, 5, 5)]
    # The shared kernel of an empty batch has a gradient all the same: zero.
    assert_same_bits(grad_kernels[0], torch.zeros((1, 3, 2, 2), device=device))
    assert grad_kernels[1].shape == (2, 0, 2, 2)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_pair_beside_full_ones(device, launches):
    generator = torch.Generator().manual_seed(7)
    searches = [spread((2, 3, 5, 6), torch.float32, device, generator), torch.empty((0, 3, 5, 5), device=device)]
    searches.append(spread((1, 2, 4, 4), torch.float32, device, generator))
    kernels = [spread(k, torch.float32, device, generator) for k in ((2, 3, 2, 2), (1, 3, 3, 3), (1, 2, 1, 1))]
    grads = [spread(xcorr_reference(s, k).shape, torch.float32, device, generator) for s, k in zip(searches, kernels)]
    check_pairs(searches, kernels, grads)
    assert len(launches["forward"]) == 1 and len(launches["backward"]) == 1


@st.composite
def pair_lists(draw):
    pairs = []
    for _ in range(draw(st.integers(1, 3))):
        batch, channels = draw(st.integers(1, 3)), draw(st.integers(1, 4))
        height, width = draw(st.integers(1, 8)), draw(st.integers(1, 8))
        kernel_height, kernel_width = draw(st.integers(1, height)), draw(st.integers(1, width))
        kernel_batch = draw(st.sampled_from((1, batch)))
        pairs.append(((batch, channels, height, width), (kernel_batch, channels, kernel_height, kernel_width)))
    return pairs


@settings(max_examples=30, deadline=None)
@given(
    pairs=pair_lists(),
    dtype=st.sampled_from(DTYPES),
    layout=st.sampled_from(LAYOUTS),
    needs=st.sampled_from(((True, True), (True, False), (False, True))),
    seed=st.integers(0, 2**31 - 1),
)
def test_random_pairs(pairs, dtype, layout, needs, seed):
    generator = torch.Generator().manual_seed(seed)
    device = DEVICES[0]
    searches = [relayout(spread(s, dtype, device, generator), layout) for s, _ in pairs]
    kernels = [relayout(spread(k, dtype, device, generator), layout) for _, k in pairs]
    grads = [
        relayout(spread(xcorr_reference(s, k).shape, dtype, device, generator), layout)
        for s, k in zip(searches, kernels)
    ]
    check_pairs(searches, kernels, grads, *needs)


@pytest.mark.parametrize("device", DEVICES)
def test_repeated_calls_reuse_tables_safely(device):
    """Same tensors twice (a table-cache hit), then new shapes: every result still exact."""
    generator = torch.Generator().manual_seed(8)
    shapes = (((2, 3, 6, 6), (2, 3, 2, 2)), ((2, 3, 6, 6), (2, 3, 2, 2)), ((1, 4, 5, 7), (1, 4, 3, 1)))
    for search_shape, kernel_shape in shapes:
        search = spread(search_shape, torch.float32, device, generator)
        kernel = spread(kernel_shape, torch.float32, device, generator)
        for _ in range(2):
            (output,) = triton_xcorr.xcorr_forward_many([search], [kernel])
            assert_same_bits(output, xcorr_reference(search, kernel))


@pytest.mark.parametrize("device", DEVICES)
def test_public_api_autograd_many(device):
    generator = torch.Generator().manual_seed(9)
    searches = [spread(s, torch.float32, device, generator).requires_grad_() for s, _ in MIXED_PAIRS]
    kernels = [spread(k, torch.float32, device, generator).requires_grad_() for _, k in MIXED_PAIRS]
    # The language kernel as [B, C], the form a sentence embedding takes.
    kernels[2] = kernels[2].detach().flatten(1).requires_grad_()
    outputs = snlt_fast.xcorr_depthwise_many(searches, kernels, backend="triton")
    weights = [spread(o.shape, torch.float32, device, generator) for o in outputs]
    torch.autograd.backward(outputs, weights)
    for search, kernel, output, weight in zip(searches, kernels, outputs, weights):
        kernel4 = kernel.detach().reshape(*kernel.shape, 1, 1) if kernel.dim() == 2 else kernel.detach()
        assert_same_bits(output.detach(), xcorr_reference(search.detach(), kernel4))
        expected_search, expected_kernel = xcorr_backward_reference(weight, search.detach(), kernel4)
        assert_same_bits(search.grad, expected_search)
        assert_same_bits(kernel.grad, expected_kernel.reshape(kernel.shape))


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck_float64(device):
    generator = torch.Generator().manual_seed(10)
    search = spread((2, 2, 4, 5), torch.float64, device, generator).requires_grad_()
    kernel = spread((1, 2, 2, 3), torch.float64, device, generator).requires_grad_()
    assert torch.autograd.gradcheck(lambda s, k: snlt_fast.xcorr_depthwise(s, k, backend="triton"), (search, kernel))
