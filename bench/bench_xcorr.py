"""Depth-wise cross-correlation: every backend against pysot's grouped F.conv2d.

    python -m bench -k xcorr

Shapes of the issue: inference (SiamRPN++ template 5x5 on a 29x29 search), language
(a 1x1 sentence kernel), AlexNet, and training (batch 32); forward and forward +
backward. Plus one SNL-RPN frame: its 12 correlations (3 levels x cls/loc x visual
5x5 / language 1x1) in one xcorr_depthwise_many call against 12 F.conv2d calls.
"""

import pytest
import torch

from bench._timing import synchronized

import snlt_fast
from snlt_fast.ops.xcorr import xcorr_depthwise_conv2d

CASES = {
    "inference": ((1, 256, 29, 29), (1, 256, 5, 5)),
    "language": ((1, 256, 29, 29), (1, 256, 1, 1)),
    "alexnet": ((1, 256, 24, 24), (1, 256, 4, 4)),
    "training": ((32, 256, 29, 29), (32, 256, 5, 5)),
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BASELINE = "F.conv2d"


def implementations(device, case, backward):
    """(name, function of (search, kernel)) for the baseline and every backend this device has."""
    found = [(BASELINE, xcorr_depthwise_conv2d)]
    for backend in snlt_fast.available_backends(device):
        # The reference backward is a Python loop over output positions: minutes at batch 32.
        if backend == "reference" and backward and case == "training":
            continue
        found.append((backend, lambda s, k, backend=backend: snlt_fast.xcorr_depthwise(s, k, backend=backend)))
    return found


def shape_text(shape):
    return "[" + ",".join(map(str, shape)) + "]"


def cases():
    for device in DEVICES:
        for case in CASES:
            for backward in (False, True):
                for impl, fn in implementations(device, case, backward):
                    mode = "fwdbwd" if backward else "fwd"
                    yield pytest.param(device, case, backward, impl, fn, id=f"{device}-{case}-{mode}-{impl}")


@pytest.mark.parametrize("device, case, backward, impl, fn", list(cases()))
def test_xcorr(benchmark, device, case, backward, impl, fn):
    search_shape, kernel_shape = CASES[case]
    generator = torch.Generator().manual_seed(0)
    search = torch.randn(search_shape, generator=generator).to(device).requires_grad_(backward)
    kernel = torch.randn(kernel_shape, generator=generator).to(device).requires_grad_(backward)
    mode = "fwd+bwd" if backward else "fwd"
    benchmark.group = f"xcorr {mode} {case} {shape_text(search_shape)}x{shape_text(kernel_shape)} {device}"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["baseline"] = impl == BASELINE
    if backward:
        grad = torch.randn(fn(search, kernel).shape, generator=generator).to(device)
        step = lambda: torch.autograd.grad(fn(search, kernel), (search, kernel), grad)  # noqa: E731
    else:
        step = lambda: fn(search, kernel)  # noqa: E731
    benchmark(synchronized(step, device))


def frame_pairs(device):
    """The 12 correlations of one SNL-RPN frame: 3 levels x (cls, loc) x (visual 5x5, language 1x1)."""
    generator = torch.Generator().manual_seed(0)
    searches, kernels = [], []
    for _level in range(3):
        for _branch in ("cls", "loc"):
            for kernel_size in (5, 1):
                searches.append(torch.randn(1, 256, 29, 29, generator=generator).to(device))
                kernels.append(torch.randn(1, 256, kernel_size, kernel_size, generator=generator).to(device))
    return searches, kernels


def frame_implementations(device):
    found = [(BASELINE, lambda searches, kernels: [xcorr_depthwise_conv2d(s, k) for s, k in zip(searches, kernels)])]
    for backend in snlt_fast.available_backends(device):
        found.append((backend, lambda s, k, backend=backend: snlt_fast.xcorr_depthwise_many(s, k, backend=backend)))
    return found


@pytest.mark.parametrize(
    "device, impl, fn", [pytest.param(d, i, f, id=f"{d}-{i}") for d in DEVICES for i, f in frame_implementations(d)]
)
def test_xcorr_snl_rpn_frame(benchmark, device, impl, fn):
    searches, kernels = frame_pairs(device)
    benchmark.group = f"xcorr fwd SNL-RPN frame 12 pairs [1,256,29,29]x(5x5|1x1) {device}"
    benchmark.extra_info["impl"] = impl if impl == BASELINE else f"{impl} (one call)"
    benchmark.extra_info["baseline"] = impl == BASELINE
    benchmark(synchronized(lambda: fn(searches, kernels), device))
