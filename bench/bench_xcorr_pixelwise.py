"""Pixel-wise cross-correlation: every backend against NanoTrack's torch.matmul.

    python -m bench -k xcorr_pixelwise

NanoTrack's heads: an 8x8 template on a 16x16 search, 48 or 96 channels; batch 1
(tracking) and 32 (training), forward, and forward + backward at batch 32. The baseline
is NanoTrack's own formulation, `kernel.flatten(2).transpose(1, 2) @ search.flatten(2)`;
torch.einsum of the same product is the other way users write it.
"""

import pytest
import torch

from bench._timing import synchronized

import snlt_fast
from snlt_fast.ops.xcorr_pixelwise import xcorr_pixelwise_matmul

CASES = {f"B={batch} C={channels}": (batch, channels) for batch in (1, 32) for channels in (48, 96)}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
BASELINE = "torch.matmul (NanoTrack)"


def einsum(search, kernel):
    batch, _, height, width = search.shape
    return torch.einsum("bcp,bck->bkp", search.flatten(2), kernel.flatten(2)).view(batch, -1, height, width)


def implementations(device, backward):
    """(name, function of (search, kernel)) for the baselines and every backend this device has."""
    found = [(BASELINE, xcorr_pixelwise_matmul), ("torch.einsum", einsum)]
    for backend in snlt_fast.available_backends(device):
        # The reference backward is a Python loop over the search positions.
        if backend == "reference" and backward:
            continue
        found.append((backend, lambda s, k, backend=backend: snlt_fast.xcorr_pixelwise(s, k, backend=backend)))
    return found


def cases():
    for device in DEVICES:
        for case, (batch, _) in CASES.items():
            for backward in (False, True) if batch > 1 else (False,):
                for impl, fn in implementations(device, backward):
                    mode = "fwdbwd" if backward else "fwd"
                    yield pytest.param(device, case, backward, impl, fn, id=f"{device}-{case}-{mode}-{impl}")


@pytest.mark.parametrize("device, case, backward, impl, fn", list(cases()))
def test_xcorr_pixelwise(benchmark, device, case, backward, impl, fn):
    batch, channels = CASES[case]
    generator = torch.Generator().manual_seed(0)
    search = torch.randn(batch, channels, 16, 16, generator=generator).to(device).requires_grad_(backward)
    kernel = torch.randn(batch, channels, 8, 8, generator=generator).to(device).requires_grad_(backward)
    mode = "fwd+bwd" if backward else "fwd"
    benchmark.group = f"xcorr_pixelwise {mode} {case} [{batch},{channels},16,16]x[{batch},{channels},8,8] {device}"
    benchmark.extra_info["impl"] = impl
    benchmark.extra_info["baseline"] = impl == BASELINE
    if backward:
        grad = torch.randn(batch, 64, 16, 16, generator=generator).to(device)
        step = lambda: torch.autograd.grad(fn(search, kernel), (search, kernel), grad)  # noqa: E731
    else:
        step = lambda: fn(search, kernel)  # noqa: E731
    benchmark(synchronized(step, device))
