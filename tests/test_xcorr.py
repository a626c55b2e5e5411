"""snlt_fast.xcorr_depthwise and xcorr_depthwise_many on every backend, through the public API.

Every fast backend must give the reference's bits (compared as integers, so that +0
and -0 differ and NaN matches NaN), forward and both gradients. Backends this install
or this machine lacks are skipped; Triton runs through its interpreter on CPU, with
small shapes.
"""

import os
import subprocess
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import snlt_fast
from conftest import devices_for
from snlt_fast.ops.xcorr import xcorr_depthwise_conv2d

BACKEND_DEVICES = [(b, d) for b in snlt_fast.BACKENDS for d in devices_for(b)] or [("cpu", "cpu")]
BACKEND_IDS = [f"{b}-{d}" for b, d in BACKEND_DEVICES]
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INT_VIEW = {
    torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32, torch.float64: torch.int64
}


def require(backend, device):
    """Skip unless `backend` runs on `device` in this install."""
    if backend == "triton":
        pytest.importorskip("snlt_fast.kernels.xcorr", reason="the Triton xcorr kernels (kernels/xcorr.py) are missing")
    if backend not in snlt_fast.available_backends(device):
        pytest.skip(f"backend {backend!r} is not available on {device} here")


@pytest.fixture(scope="module", params=BACKEND_DEVICES, ids=BACKEND_IDS)
def backend_device(request):
    require(*request.param)
    return request.param


def interpreted(backend, device):
    """True where the backend runs through the (slow) Triton interpreter: keep shapes tiny."""
    return backend == "triton" and device == "cpu"


def assert_same_bits(actual, expected):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype, (actual.shape, expected.shape)
    nan = expected.isnan()
    assert torch.equal(actual.isnan(), nan), "NaN at different places"
    view = INT_VIEW[expected.dtype]
    mismatched = (actual.contiguous().view(view) != expected.contiguous().view(view)) & ~nan
    examples = f"e.g. {actual[mismatched][:4]} vs {expected[mismatched][:4]}"
    assert not mismatched.any(), f"{int(mismatched.sum())} elements differ, {examples}"


def random_values(shape, dtype, device, generator):
    """Normal values scaled over many powers of two: summing in another order changes the bits."""
    scale = torch.exp2(torch.randint(-8, 9, shape, generator=generator).double())
    return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(device=device, dtype=dtype)


def with_layout(tensor, layout):
    """The same values laid out with other strides."""
    if layout == "channels_last":
        return tensor.contiguous(memory_format=torch.channels_last)
    if layout == "sliced":  # every other column of a wider tensor, channels reversed
        wide = torch.zeros(*tensor.shape[:3], 2 * tensor.shape[3], dtype=tensor.dtype, device=tensor.device)
        wide[..., ::2] = tensor.flip(1)
        return wide[..., ::2].flip(1)
    return tensor.contiguous()


def forward_backward(searches, kernels, grads, backend):
    """Outputs of xcorr_depthwise_many and the gradients of sum(out * grad)."""
    leaves = [t.detach().requires_grad_() for t in searches + kernels]
    outputs = snlt_fast.xcorr_depthwise_many(leaves[: len(searches)], leaves[len(searches) :], backend=backend)
    torch.autograd.backward(outputs, grads)
    return [o.detach() for o in outputs], [t.grad for t in leaves]


def assert_matches_reference(searches, kernels, backend, generator):
    with torch.no_grad():
        shapes = [o.shape for o in snlt_fast.xcorr_depthwise_many(searches, kernels, backend="reference")]
    grads = [random_values(shape, s.dtype, s.device, generator) for shape, s in zip(shapes, searches)]
    outputs, gradients = forward_backward(searches, kernels, grads, backend)
    expected_outputs, expected_gradients = forward_backward(searches, kernels, grads, "reference")
    for actual, expected in zip(outputs + gradients, expected_outputs + expected_gradients):
        assert_same_bits(actual, expected)


def assert_pairs_match_reference(shapes, dtype, backend_device, seed):
    """Random (search, kernel) pairs of the given shapes, all in one call, against the reference."""
    backend, device = backend_device
    generator = torch.Generator().manual_seed(seed)
    searches = [random_values(s, dtype, device, generator) for s, _ in shapes]
    kernels = [random_values(k, dtype, device, generator) for _, k in shapes]
    assert_matches_reference(searches, kernels, backend, generator)


# --------------------------------------------------------------------------- agreement


def assert_agrees_with(correlate, baseline, backend_device, large_pair):
    """correlate(search, kernel, backend=...) within 1e-5 of baseline(search, kernel), relative
    to the sum of the magnitudes of the terms (so that near-cancelling sums stay covered), on
    two small random pairs and, but under the Triton interpreter, large_pair's shapes."""
    backend, device = backend_device
    shapes = [((2, 3, 9, 8), (2, 3, 3, 4)), ((3, 2, 7, 7), (1, 2, 1, 1))]
    if not interpreted(backend, device):
        shapes.append(large_pair)
    generator = torch.Generator().manual_seed(0)
    for search_shape, kernel_shape in shapes:
        search = torch.randn(search_shape, generator=generator).to(device)
        kernel = torch.randn(kernel_shape, generator=generator).to(device)
        out, expected = correlate(search, kernel, backend=backend), baseline(search, kernel)
        magnitude = baseline(search.abs(), kernel.abs())
        assert out.shape == expected.shape
        assert ((out - expected).abs() <= 1e-5 * magnitude).all()


def test_agrees_with_grouped_conv2d(backend_device):
    large_pair = ((1, 64, 29, 29), (1, 64, 5, 5))
    assert_agrees_with(snlt_fast.xcorr_depthwise, xcorr_depthwise_conv2d, backend_device, large_pair)


@st.composite
def pair_shapes(draw, small):
    """(search shape, kernel shape): odd sizes, B > 1, kernels per sample or shared, [B, C] kernels."""
    batch = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 4 if small else 40))
    height, width = draw(st.integers(1, 7 if small else 31)), draw(st.integers(1, 7 if small else 31))
    kernel_h, kernel_w = draw(st.integers(1, height)), draw(st.integers(1, width))
    kinds = ["per_sample", "shared", "flat"] if kernel_h == kernel_w == 1 else ["per_sample", "shared"]
    kind = draw(st.sampled_from(kinds))
    kernel_batch = 1 if kind == "shared" else batch
    kernel = (kernel_batch, channels) if kind == "flat" else (kernel_batch, channels, kernel_h, kernel_w)
    return (batch, channels, height, width), kernel


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=12)
@given(data=st.data())
def test_bit_exact_against_reference(backend_device, dtype, data):
    backend, device = backend_device
    search_shape, kernel_shape = data.draw(pair_shapes(interpreted(backend, device)), label="shapes")
    layout = data.draw(st.sampled_from(["contiguous", "channels_last", "sliced"]), label="layout")
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31), label="seed"))
    search = with_layout(random_values(search_shape, dtype, device, generator), layout)
    kernel = random_values(kernel_shape, dtype, device, generator)
    if kernel.dim() == 4:
        kernel = with_layout(kernel, layout)
    assert_matches_reference([search], [kernel], backend, generator)


def test_many_pairs_of_different_shapes(backend_device):
    shapes = [
        ((2, 3, 7, 6), (2, 3, 3, 2)), ((2, 3, 5, 5), (1, 3, 1, 1)), ((1, 5, 4, 9), (1, 5, 4, 1)), ((3, 2, 6, 6), (3, 2))
    ]
    if not interpreted(*backend_device):
        shapes.append(((1, 256, 29, 29), (1, 256, 5, 5)))
    assert_pairs_match_reference(shapes, torch.float32, backend_device, seed=1)


def test_more_pairs_than_one_launch_table_holds(backend_device):
    shapes = [((1 + n % 2, 2, 4 + n % 3, 5), (1, 2, 1 + n % 3, 2)) for n in range(21)]
    assert_pairs_match_reference(shapes, torch.float64, backend_device, seed=2)


def test_expanded_inputs_and_gradients(backend_device):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(3)
    search = random_values((1, 3, 6, 7), torch.float32, device, generator).expand(4, -1, -1, -1)
    kernel = random_values((1, 3, 1, 1), torch.float32, device, generator).expand(4, 3, 3, 2)
    assert_matches_reference([search], [kernel], backend, generator)
    # .sum().backward() hands the backward an expanded (all strides 0) gradient.
    grads = {}
    for name in (backend, "reference"):
        leaf = search.detach().requires_grad_()
        snlt_fast.xcorr_depthwise(leaf, kernel, backend=name).sum().backward()
        grads[name] = leaf.grad
    assert_same_bits(grads[backend], grads["reference"])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_inf_and_signed_zero_as_in_the_reference(backend_device, dtype):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(4)
    search = random_values((2, 3, 6, 7), dtype, device, generator)
    kernel = random_values((2, 3, 3, 2), dtype, device, generator)
    search[0, 0, 2, 3] = float("nan")
    search[0, 1, 0, 0] = float("inf")
    kernel[1, 0, 1, 1] = float("-inf")  # a grad-search tap that misses grad_out must not make NaN
    kernel[1, 1, 0, 0] = float("nan")
    search[1, 2] = -0.0  # every product -0: the sums must be +0, as 0 + (-0) is
    assert_matches_reference([search], [kernel], backend, generator)
    language = random_values((2, 3), dtype, device, generator)
    language[0, 0] = float("inf")
    assert_matches_reference([search], [language], backend, generator)


@pytest.mark.parametrize("padding", [1, 2])
def test_padding_is_the_reference_of_the_padded_search(backend_device, padding):
    """Forward and gradients are those of the zero-padded search: NanoTrack V3's depth-wise
    branch (a 4x4 kernel, padding 1 on 16x16: 15x15), a kernel larger than the search
    itself, a [B, C] kernel."""
    backend, device = backend_device
    generator = torch.Generator().manual_seed(padding)
    shapes = [((2, 3, 16, 16), (2, 3, 4, 4)), ((1, 2, 3, 5), (1, 2, 5, 3)), ((2, 3, 6, 5), (2, 3))]
    if not interpreted(backend, device):
        shapes.append(((1, 96, 16, 16), (1, 96, 4, 4)))
    for search_shape, kernel_shape in shapes:
        search = random_values(search_shape, torch.float32, device, generator)
        kernel = random_values(kernel_shape, torch.float32, device, generator)
        results = {}
        for name in (backend, "reference"):
            leaves = search.detach().requires_grad_(), kernel.detach().requires_grad_()
            if name == "reference":
                padded = torch.nn.functional.pad(leaves[0], (padding,) * 4)
                out = snlt_fast.xcorr_depthwise(padded, leaves[1], backend=name)
            else:
                out = snlt_fast.xcorr_depthwise(*leaves, padding=padding, backend=name)
            out.backward(random_values(out.shape, out.dtype, device, torch.Generator().manual_seed(0)))
            results[name] = (out.detach(), leaves[0].grad, leaves[1].grad)
        for actual, expected in zip(results[backend], results["reference"]):
            assert_same_bits(actual, expected)
    search, kernel = torch.zeros(1, 2, 16, 16, device=device), torch.zeros(1, 2, 4, 4, device=device)
    assert snlt_fast.xcorr_depthwise(search, kernel, padding=1, backend=backend).shape == (1, 2, 15, 15)


def test_padding_in_many_pairs(backend_device):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(11)
    searches = [random_values(s, torch.float32, device, generator) for s in ((2, 3, 7, 6), (1, 2, 4, 4))]
    kernels = [random_values(k, torch.float32, device, generator) for k in ((2, 3, 3, 3), (1, 2))]
    outputs = snlt_fast.xcorr_depthwise_many(searches, kernels, padding=2, backend=backend)
    for search, kernel, out in zip(searches, kernels, outputs):
        padded = torch.nn.functional.pad(search, (2, 2, 2, 2))
        assert_same_bits(out, snlt_fast.xcorr_depthwise(padded, kernel, backend="reference"))


def test_gradcheck_with_padding(backend_device):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(12)
    search = random_values((2, 2, 4, 5), torch.float64, device, generator).requires_grad_()
    kernel = random_values((2, 2, 3, 3), torch.float64, device, generator).requires_grad_()
    padded = lambda s, k: snlt_fast.xcorr_depthwise(s, k, padding=1, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(padded, (search, kernel), fast_mode=interpreted(backend, device))


# --------------------------------------------------------------------------- autograd and torch integration


def test_gradcheck_float64(backend_device):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(5)
    search = random_values((2, 2, 5, 6), torch.float64, device, generator).requires_grad_()
    kernel = random_values((1, 2, 2, 3), torch.float64, device, generator).requires_grad_()
    language = random_values((2, 2), torch.float64, device, generator).requires_grad_()
    # The interpreter is slow: there, check random projections of the Jacobian only.
    fast_mode = interpreted(backend, device)
    single = lambda s, k: snlt_fast.xcorr_depthwise(s, k, backend=backend)  # noqa: E731
    many = lambda s, k, l: snlt_fast.xcorr_depthwise_many([s, s], [k, l], backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(single, (search, kernel), fast_mode=fast_mode)
    assert torch.autograd.gradcheck(many, (search, kernel, language), fast_mode=fast_mode)


def test_opcheck(backend_device):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(6)
    search = random_values((2, 3, 5, 6), torch.float32, device, generator).requires_grad_()
    kernel = random_values((2, 3, 2, 3), torch.float32, device, generator).requires_grad_()
    language = random_values((1, 3, 1, 1), torch.float32, device, generator).requires_grad_()
    torch.library.opcheck(torch.ops.snlt_fast.xcorr_depthwise.default, (search, kernel, backend))
    many_args = ([search, search], [kernel, language], backend)
    torch.library.opcheck(torch.ops.snlt_fast.xcorr_depthwise_many.default, many_args)


def test_torch_compile_fullgraph(backend_device):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(7)
    search = random_values((2, 3, 8, 8), torch.float32, device, generator)
    kernel = random_values((2, 3, 3, 3), torch.float32, device, generator)
    language = random_values((2, 3), torch.float32, device, generator)

    def head(search, kernel, language):
        visual, lang = snlt_fast.xcorr_depthwise_many([search, search], [kernel, language], backend=backend)
        return torch.relu(visual) + snlt_fast.xcorr_depthwise(search, kernel, backend=backend) + lang[..., 1:-1, 1:-1]

    torch._dynamo.reset()
    compiled = torch.compile(head, fullgraph=True, backend="aot_eager")
    assert_same_bits(compiled(search, kernel, language), head(search, kernel, language))


def test_zero_batch_and_zero_channels(backend_device):
    backend, device = backend_device
    empty_shapes = [((0, 3, 6, 5), (0, 3, 2, 2)), ((0, 3, 6, 5), (1, 3, 2, 2)), ((2, 0, 6, 5), (2, 0, 3, 1))]
    for search_shape, kernel_shape in empty_shapes:
        search = torch.randn(search_shape, device=device, requires_grad=True)
        kernel = torch.randn(kernel_shape, device=device, requires_grad=True)
        out = snlt_fast.xcorr_depthwise(search, kernel, backend=backend)
        batch, channels, height, width = search_shape
        assert out.shape == (batch, channels, height - kernel_shape[2] + 1, width - kernel_shape[3] + 1)
        out.sum().backward()
        assert search.grad.shape == search.shape and kernel.grad.shape == kernel.shape
        assert not kernel.grad.any()  # a kernel shared by no sample gets a zero gradient


def test_available_backends_all_run():
    listed = snlt_fast.available_backends()
    assert "reference" in listed and "cpu" in listed and set(listed) <= set(snlt_fast.BACKENDS)
    assert "cuda" not in snlt_fast.available_backends("cpu")
    if not torch.cuda.is_available():
        assert "cuda" not in listed
    for backend in listed:
        for device in devices_for(backend):
            if backend in snlt_fast.available_backends(device):
                ones = torch.ones(1, 1, 3, 3, device=device)
                assert snlt_fast.xcorr_depthwise(ones, ones[..., :2, :2], backend=backend).eq(4).all()


@pytest.mark.parametrize("instruction_set", ["avx2", "generic"])
def test_cpu_kernels_without_avx512_are_exact(instruction_set):
    """The vector code users without AVX-512 run gives the same bits (forced by SNLT_FAST_XCORR_ISA)."""
    require("cpu", "cpu")
    script = """
import torch, snlt_fast
torch.manual_seed(0)
for dtype in (torch.float32, torch.float64, torch.bfloat16):
    for s, k in [((2, 19, 11, 23), (2, 19, 5, 4)), ((3, 9, 29, 29), (1, 9, 5, 5)), ((2, 5, 7, 6), (2, 5, 1, 1))]:
        for backend in ("cpu", "reference"):
            torch.manual_seed(1)
            search = torch.randn(s, dtype=dtype, requires_grad=True)
            kernel = torch.randn(k, dtype=dtype, requires_grad=True)
            out = snlt_fast.xcorr_depthwise(search, kernel, backend=backend)
            out.backward(torch.randn(out.shape, dtype=dtype))
            if backend == "cpu":
                mine = (out, search.grad, kernel.grad)
        for a, b in zip(mine, (out, search.grad, kernel.grad)):
            assert torch.equal(a, b), (dtype, s, k)
print("exact")
"""
    env = dict(os.environ, SNLT_FAST_XCORR_ISA=instruction_set)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "exact" in result.stdout, result.stderr[-2000:]


# --------------------------------------------------------------------------- bad input


S, K = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 3, 3)
BAD_CALLS = {
    "search rank": (ValueError, "search must be", lambda: snlt_fast.xcorr_depthwise(S[0], K)),
    "kernel rank": (ValueError, "kernel must be", lambda: snlt_fast.xcorr_depthwise(S, K[0])),
    "channels": (ValueError, "channels but search has 3", lambda: snlt_fast.xcorr_depthwise(S, K[:, :2])),
    "batch": (ValueError, "batch must be 1 or", lambda: snlt_fast.xcorr_depthwise(S, torch.zeros(3, 3, 3, 3))),
    "too large": (ValueError, "fit inside", lambda: snlt_fast.xcorr_depthwise(S, torch.zeros(2, 3, 9, 3))),
    "devices": (ValueError, "one device", lambda: snlt_fast.xcorr_depthwise(S, K.to("meta"))),
    "mixed dtypes": (TypeError, "share a dtype", lambda: snlt_fast.xcorr_depthwise(S, K.double())),
    "integer dtype": (TypeError, "float16, bfloat16", lambda: snlt_fast.xcorr_depthwise(S.int(), K.int())),
    "not a tensor": (TypeError, "torch.Tensor", lambda: snlt_fast.xcorr_depthwise(S.tolist(), K)),
    "backend missing": (ValueError, "not available", lambda: snlt_fast.xcorr_depthwise(S, K, backend="cuda")),
    "backend unknown": (ValueError, "unknown backend", lambda: snlt_fast.xcorr_depthwise(S, K, backend="fortran")),
    "backend type": (TypeError, "backend must be", lambda: snlt_fast.xcorr_depthwise(S, K, backend=3)),
    "padding negative": (ValueError, "padding must be >= 0", lambda: snlt_fast.xcorr_depthwise(S, K, padding=-1)),
    "padding float": (TypeError, "padding must be an int", lambda: snlt_fast.xcorr_depthwise(S, K, padding=1.0)),
    "padding bool": (TypeError, "padding must be an int", lambda: snlt_fast.xcorr_depthwise(S, K, padding=True)),
    "padded too small": (
        ValueError,
        r"search padded by 1 \(6, 6\)",
        lambda: snlt_fast.xcorr_depthwise(S[..., :4, :4], S[..., :7, :7], padding=1),
    ),
    "many padding": (ValueError, "padding must be", lambda: snlt_fast.xcorr_depthwise_many([S], [K], padding=-2)),
    "many lengths": (ValueError, "equal length", lambda: snlt_fast.xcorr_depthwise_many([S, S], [K])),
    "many not lists": (TypeError, "lists of tensors", lambda: snlt_fast.xcorr_depthwise_many(S, K)),
    "many pair index": (ValueError, r"kernel\[1\]", lambda: snlt_fast.xcorr_depthwise_many([S, S], [K, K[:1, :2]])),
    "many dtypes": (
        ValueError, "one device and dtype", lambda: snlt_fast.xcorr_depthwise_many([S, S.double()], [K, K.double()])
    ),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_is_a_clear_error(case):
    error, message, call = BAD_CALLS[case]
    with pytest.raises(error, match=message):
        call()


def test_direct_native_calls_check_their_inputs():
    require("cpu", "cpu")
    ops = torch.ops.snlt_fast_C
    s, k = torch.zeros(1, 2, 5, 5), torch.zeros(1, 2, 2, 2)
    with pytest.raises(RuntimeError, match="does not fit"):
        ops.xcorr_forward_many([s], [torch.zeros(1, 2, 6, 2)])
    with pytest.raises(RuntimeError, match="does not match"):
        ops.xcorr_forward_many([s], [torch.zeros(1, 3, 2, 2)])
    with pytest.raises(RuntimeError, match="output's shape"):
        ops.xcorr_backward_many([torch.zeros(1, 2, 5, 5)], [s], [k], True, True)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_many_backward_with_some_inputs_frozen(backend):
    """A frozen branch's features beside a trained one's (training only the language head)."""
    generator = torch.Generator().manual_seed(0)
    frozen_search = torch.randn(2, 3, 7, 7, generator=generator)
    frozen_kernel = torch.randn(2, 3, 3, 3, generator=generator)
    kernel = torch.randn(2, 3, generator=generator, requires_grad=True)
    outputs = snlt_fast.xcorr_depthwise_many([frozen_search, frozen_search], [frozen_kernel, kernel], backend=backend)
    (outputs[0].sum() + outputs[1].sum()).backward()
    expected = frozen_search.sum(dim=(2, 3))
    torch.testing.assert_close(kernel.grad, expected)
    search = frozen_search.clone().requires_grad_(True)
    outputs = snlt_fast.xcorr_depthwise_many([search, frozen_search], [frozen_kernel, frozen_kernel], backend=backend)
    outputs[1].sum().backward()  # only the frozen pair reaches the loss
    assert torch.equal(search.grad, torch.zeros_like(search))
