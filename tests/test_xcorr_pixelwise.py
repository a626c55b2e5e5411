"""snlt_fast.xcorr_pixelwise on every backend, through the public API.

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
from snlt_fast.ops import xcorr_pixelwise as pixelwise
from snlt_fast.ops.xcorr_pixelwise import xcorr_pixelwise_matmul
from test_xcorr import (  # noqa: F401  (backend_device: the fixture, parametrized over every backend)
    DTYPES,
    assert_agrees_with,
    assert_same_bits,
    backend_device,
    interpreted,
    random_values,
    require,
    with_layout,
)

LAYOUTS = ("contiguous", "channels_last", "sliced", "column_major")


def relaid(tensor, layout):
    """The same values with other strides; column_major's (H, W) do not flatten into one stride."""
    if layout == "column_major":
        return tensor.transpose(2, 3).contiguous().transpose(2, 3)
    return with_layout(tensor, layout)


def output_shape(search, kernel):
    return (search.shape[0], kernel.shape[2] * kernel.shape[3], *search.shape[2:])


def forward_backward(search, kernel, grad, backend, needs=(True, True)):
    """The output and the gradients of sum(out * grad) (None for an input that needs none)."""
    search = search.detach().requires_grad_(needs[0])
    kernel = kernel.detach().requires_grad_(needs[1])
    out = snlt_fast.xcorr_pixelwise(search, kernel, backend=backend)
    if any(needs):
        out.backward(grad)
    return out.detach(), search.grad, kernel.grad


def assert_matches_reference(search, kernel, backend, generator, needs=(True, True), grad_layout="contiguous"):
    grad = relaid(random_values(output_shape(search, kernel), search.dtype, search.device, generator), grad_layout)
    actual = forward_backward(search, kernel, grad, backend, needs)
    expected = forward_backward(search, kernel, grad, "reference", needs)
    for one, other in zip(actual, expected):
        if other is None:
            assert one is None
        else:
            assert_same_bits(one, other)


# --------------------------------------------------------------------------- agreement


def test_agrees_with_nanotrack_matmul(backend_device):
    large_pair = ((2, 96, 16, 16), (1, 96, 8, 8))
    assert_agrees_with(snlt_fast.xcorr_pixelwise, xcorr_pixelwise_matmul, backend_device, large_pair)


@st.composite
def pair_shapes(draw, small):
    """(search shape, kernel shape): odd sizes, B > 1, kernels per sample or shared."""
    batch = draw(st.integers(1, 3))
    channels = draw(st.integers(1, 5 if small else 40))
    height, width = draw(st.integers(1, 6 if small else 20)), draw(st.integers(1, 6 if small else 20))
    kernel_h, kernel_w = draw(st.integers(1, 3 if small else 9)), draw(st.integers(1, 3 if small else 9))
    kernel_batch = draw(st.sampled_from([1, batch]))
    return (batch, channels, height, width), (kernel_batch, channels, kernel_h, kernel_w)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@settings(max_examples=12)
@given(data=st.data())
def test_bit_exact_against_reference(backend_device, dtype, data):
    backend, device = backend_device
    search_shape, kernel_shape = data.draw(pair_shapes(interpreted(backend, device)), label="shapes")
    layouts = [data.draw(st.sampled_from(LAYOUTS), label=name) for name in ("search", "kernel", "grad")]
    needs = data.draw(st.sampled_from([(True, True), (True, False), (False, True)]), label="needs")
    generator = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31), label="seed"))
    search = relaid(random_values(search_shape, dtype, device, generator), layouts[0])
    kernel = relaid(random_values(kernel_shape, dtype, device, generator), layouts[1])
    assert_matches_reference(search, kernel, backend, generator, needs, layouts[2])


@pytest.mark.parametrize("channels", [48, 96])
@pytest.mark.parametrize("kernel_batch", [1, 4], ids=["shared", "per_sample"])
def test_nanotrack_shapes(backend_device, channels, kernel_batch):
    """NanoTrack's heads: an 8x8 template on a 16x16 search."""
    backend, device = backend_device
    if interpreted(backend, device):
        pytest.skip("too large for the Triton interpreter")
    generator = torch.Generator().manual_seed(channels + kernel_batch)
    search = random_values((4, channels, 16, 16), torch.float32, device, generator)
    kernel = random_values((kernel_batch, channels, 8, 8), torch.float32, device, generator)
    assert_matches_reference(search, kernel, backend, generator)


def test_expanded_inputs_and_gradients(backend_device):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(3)
    search = random_values((1, 3, 6, 7), torch.float32, device, generator).expand(4, -1, -1, -1)
    kernel = random_values((1, 3, 1, 1), torch.float32, device, generator).expand(4, 3, 3, 2)
    assert_matches_reference(search, kernel, backend, generator)
    # .sum().backward() hands the backward an expanded (all strides 0) gradient.
    grads = {}
    for name in (backend, "reference"):
        search_leaf, kernel_leaf = search.detach().requires_grad_(), kernel.detach().requires_grad_()
        snlt_fast.xcorr_pixelwise(search_leaf, kernel_leaf, backend=name).sum().backward()
        grads[name] = (search_leaf.grad, kernel_leaf.grad)
    for one, other in zip(grads[backend], grads["reference"]):
        assert_same_bits(one, other)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_nan_inf_and_signed_zero_as_in_the_reference(backend_device, dtype):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(4)
    search = random_values((2, 3, 6, 7), dtype, device, generator)
    kernel = random_values((2, 3, 3, 2), dtype, device, generator)
    search[0, 0, 2, 3] = float("nan")
    search[0, 1, 0, 0] = float("inf")
    kernel[1, 0, 1, 1] = float("-inf")
    kernel[0, 2, 0, 0] = float("nan")
    search[1] = -0.0  # every product of sample 1 is a signed zero: the sums must be +0, as 0 + (-0) is
    assert_matches_reference(search, kernel, backend, generator)


def test_shared_kernel_gradient_sums_batch_outermost(backend_device):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(5)
    search = random_values((4, 3, 5, 5), torch.float32, device, generator)
    kernel = random_values((1, 3, 2, 2), torch.float32, device, generator)
    grad = random_values((4, 4, 5, 5), torch.float32, device, generator)
    _, _, grad_kernel = forward_backward(search, kernel, grad, backend)
    _, expected = pixelwise.xcorr_pixelwise_backward_reference(grad, search, kernel, False, True)
    assert_same_bits(grad_kernel, expected)
    # The data tells orders apart: one sum per sample, added afterwards, gives other bits.
    per_sample = sum(
        pixelwise.xcorr_pixelwise_backward_reference(grad[b : b + 1], search[b : b + 1], kernel, False, True)[1]
        for b in range(4)
    )
    assert not torch.equal(per_sample, grad_kernel)


# --------------------------------------------------------------------------- autograd and torch integration


def test_gradcheck_float64(backend_device):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(6)
    search = random_values((2, 3, 4, 5), torch.float64, device, generator).requires_grad_()
    shared = random_values((1, 3, 2, 3), torch.float64, device, generator).requires_grad_()
    per_sample = random_values((2, 3, 3, 1), torch.float64, device, generator).requires_grad_()
    # The interpreter is slow: there, check random projections of the Jacobian only.
    fast_mode = interpreted(backend, device)
    correlate = lambda s, k: snlt_fast.xcorr_pixelwise(s, k, backend=backend)  # noqa: E731
    assert torch.autograd.gradcheck(correlate, (search, shared), fast_mode=fast_mode)
    assert torch.autograd.gradcheck(correlate, (search, per_sample), fast_mode=fast_mode)


def test_opcheck(backend_device):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(7)
    search = random_values((2, 3, 5, 6), torch.float32, device, generator).requires_grad_()
    kernel = random_values((2, 3, 2, 3), torch.float32, device, generator).requires_grad_()
    shared = random_values((1, 3, 3, 3), torch.float32, device, generator).requires_grad_()
    for k in (kernel, shared):
        torch.library.opcheck(torch.ops.snlt_fast.xcorr_pixelwise.default, (search, k, backend))
    grad = random_values((2, 6, 5, 6), torch.float32, device, generator)
    backward_args = (grad, search.detach(), kernel.detach(), backend, True, True)
    torch.library.opcheck(torch.ops.snlt_fast.xcorr_pixelwise_backward.default, backward_args)


def test_torch_compile_fullgraph(backend_device):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(8)
    search = random_values((2, 3, 8, 8), torch.float32, device, generator).requires_grad_()
    kernel = random_values((1, 3, 4, 4), torch.float32, device, generator).requires_grad_()

    def head(search, kernel):
        return torch.relu(snlt_fast.xcorr_pixelwise(search, kernel, backend=backend)).sum(dim=1)

    torch._dynamo.reset()
    compiled = torch.compile(head, fullgraph=True, backend="aot_eager")
    results = {}
    for name, function in (("compiled", compiled), ("eager", head)):
        out = function(search, kernel)
        results[name] = (out.detach(), *torch.autograd.grad(out.sum(), (search, kernel)))
    for one, other in zip(results["compiled"], results["eager"]):
        assert_same_bits(one, other)


@pytest.mark.parametrize(
    "search_shape, kernel_shape",
    [
        ((0, 3, 6, 5), (0, 3, 2, 2)),
        ((0, 3, 6, 5), (1, 3, 2, 2)),
        ((2, 0, 6, 5), (2, 0, 3, 1)),
        ((2, 3, 0, 5), (1, 3, 2, 2)),
        ((2, 3, 4, 5), (2, 3, 0, 2)),
    ],
)
def test_zero_sizes(backend_device, search_shape, kernel_shape):
    backend, device = backend_device
    generator = torch.Generator().manual_seed(9)
    search = random_values(search_shape, torch.float32, device, generator)
    kernel = random_values(kernel_shape, torch.float32, device, generator)
    assert_matches_reference(search, kernel, backend, generator)
    out = snlt_fast.xcorr_pixelwise(search, kernel, backend=backend)
    assert out.shape == output_shape(search, kernel)


@pytest.mark.parametrize("instruction_set", ["best", "avx2", "generic"])
def test_cpu_kernels_on_every_instruction_set_and_two_threads(instruction_set):
    """The vector code of each instruction set (a lower one forced by SNLT_FAST_XCORR_ISA),
    with the work shared between two threads, gives the reference's bits."""
    require("cpu", "cpu")
    script = """
import torch, snlt_fast
torch.set_num_threads(2)
shapes = [((1, 48, 16, 16), (1, 48, 8, 8)), ((3, 19, 11, 13), (1, 19, 5, 3)), ((2, 9, 7, 5), (2, 9, 3, 7))]
for dtype in (torch.float32, torch.float64, torch.bfloat16):
    for s, k in shapes:
        results = {}
        for backend in ("cpu", "reference"):
            torch.manual_seed(1)
            search = torch.randn(s, dtype=dtype, requires_grad=True)
            kernel = torch.randn(k, dtype=dtype, requires_grad=True)
            out = snlt_fast.xcorr_pixelwise(search, kernel, backend=backend)
            out.backward(torch.randn(out.shape, dtype=dtype))
            results[backend] = (out, search.grad, kernel.grad)
        for a, b in zip(results["cpu"], results["reference"]):
            assert torch.equal(a, b), (dtype, s, k)
print("exact")
"""
    env = dict(os.environ, OMP_NUM_THREADS="2")
    if instruction_set != "best":
        env["SNLT_FAST_XCORR_ISA"] = instruction_set
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "exact" in result.stdout, result.stderr[-2000:]


@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)])
def test_triton_backward_is_one_launch(monkeypatch, needs):
    device = "cuda" if torch.cuda.is_available() else "cpu"
    require("triton", device)
    from snlt_fast.kernels import xcorr_pixelwise as kernels

    grids = []
    backward_kernel = kernels._backward_kernel

    class Counted:
        def __getitem__(self, grid):
            grids.append(grid)
            return backward_kernel[grid]

    monkeypatch.setattr(kernels, "_backward_kernel", Counted())
    generator = torch.Generator().manual_seed(10)
    search = random_values((3, 4, 5, 3), torch.float32, device, generator)
    kernel = random_values((1, 4, 2, 3), torch.float32, device, generator)
    assert_matches_reference(search, kernel, "triton", generator, needs)
    assert len(grids) == 1


def test_direct_native_calls_check_their_inputs():
    require("cpu", "cpu")
    ops = torch.ops.snlt_fast_C
    s, k = torch.zeros(2, 3, 5, 5), torch.zeros(2, 3, 2, 2)
    with pytest.raises(ValueError, match="does not match"):
        ops.xcorr_pixelwise_forward(s, torch.zeros(3, 3, 2, 2))
    with pytest.raises(ValueError, match="does not match"):
        ops.xcorr_pixelwise_forward(s, k[:, :2])
    with pytest.raises(ValueError, match="search must be"):
        ops.xcorr_pixelwise_forward(s[0], k)
    with pytest.raises(TypeError, match="kernel is"):
        ops.xcorr_pixelwise_forward(s, k.double())
    with pytest.raises(ValueError, match="output's shape"):
        ops.xcorr_pixelwise_backward(torch.zeros(2, 3, 5, 5), s, k, True, True)
    with pytest.raises(TypeError, match="grad is"):
        ops.xcorr_pixelwise_backward(torch.zeros(2, 4, 5, 5).half(), s, k, True, True)


# --------------------------------------------------------------------------- bad input


S, K = torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 3, 3)
BAD_CALLS = {
    "search rank": (ValueError, "search must be", lambda: snlt_fast.xcorr_pixelwise(S[0], K)),
    "kernel rank": (ValueError, "kernel must be", lambda: snlt_fast.xcorr_pixelwise(S, K[0])),
    "channels": (ValueError, "channels but search has 3", lambda: snlt_fast.xcorr_pixelwise(S, K[:, :2])),
    "batch": (ValueError, "batch must be 1 or", lambda: snlt_fast.xcorr_pixelwise(S, torch.zeros(3, 3, 3, 3))),
    "devices": (ValueError, "one device", lambda: snlt_fast.xcorr_pixelwise(S, K.to("meta"))),
    "mixed dtypes": (TypeError, "share a dtype", lambda: snlt_fast.xcorr_pixelwise(S, K.double())),
    "integer dtype": (TypeError, "float16, bfloat16", lambda: snlt_fast.xcorr_pixelwise(S.int(), K.int())),
    "search not a tensor": (TypeError, "search must be a torch.Tensor", lambda: snlt_fast.xcorr_pixelwise(1, K)),
    "kernel not a tensor": (TypeError, "kernel must be a torch.Tensor", lambda: snlt_fast.xcorr_pixelwise(S, [K])),
    "backend missing": (ValueError, "not available", lambda: snlt_fast.xcorr_pixelwise(S, K, backend="cuda")),
    "backend unknown": (ValueError, "unknown backend", lambda: snlt_fast.xcorr_pixelwise(S, K, backend="fortran")),
    "backend type": (TypeError, "backend must be", lambda: snlt_fast.xcorr_pixelwise(S, K, backend=3)),
}


@pytest.mark.parametrize("case", BAD_CALLS)
def test_bad_input_is_a_clear_error(case):
    error, message, call = BAD_CALLS[case]
    with pytest.raises(error, match=message) as raised:
        call()
    assert "\n" not in str(raised.value)
