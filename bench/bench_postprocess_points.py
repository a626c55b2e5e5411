"""Anchor-free (point) tracking post-processing per frame: NanoTrack's published numpy code
(the baseline), the eager PyTorch reference and each fast backend of
snlt_fast.track_postprocess_points, on NanoTrack's 16x16 and 15x15 maps, for 1 and 8
targets, with and without an NL head (then SNLT's aggregation, which numpy adds per target).

Heads are float32, as the network gives them (so the op computes in float32); the numpy
baseline runs in a tracker's malloc state, as in bench_postprocess.
"""

import numpy as np
import pytest
import torch

import snlt_fast
from bench.bench_postprocess import fast_backends, host_arrays, implementations, time_implementation, track_params
from bench.bench_postprocess import tracker_heap  # noqa: F401  (an autouse fixture)
from snlt_fast.baselines.numpy_postprocess_points import track_postprocess_points_numpy

STRIDE = 16
PARAMS = {"penalty_k": 0.148, "window_influence": 0.462, "lr": 0.39}
# (score size, targets, with the NL head)
CASES = [(size, batch, nl) for size in (16, 15) for batch in (1, 8) for nl in (False, True)]


def make_inputs(size, batch, nl, device):
    generator = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(shape, generator=generator)

    def head(channels):
        values = randn(batch, channels, size, size)
        return (values * 3.0 if channels == 2 else torch.exp(values * 0.3) * 24).to(device)

    axis = -(size // 2) * STRIDE + STRIDE * torch.arange(size, dtype=torch.float32)
    return {
        "cls_vis": head(2),
        "cls_nl": head(2) if nl else None,
        "loc_vis": head(4),
        "loc_nl": head(4) if nl else None,
        "points": torch.stack(torch.meshgrid(axis, axis, indexing="xy")).to(device),
        "window": torch.from_numpy(np.outer(np.hanning(size), np.hanning(size))).float().to(device),
        "target_size": (torch.rand((batch, 2), generator=generator) * 80 + 20).to(device),
    }


def native_track(inputs):
    """The C++/CUDA kernel alone, as the public API calls it for inputs in kernel form (these are)."""
    args = [inputs[k] for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl", "points", "window", "target_size")]
    native = snlt_fast._backends.native_module()
    return lambda: native.postprocess_track_points(*args, 1 / 300, *PARAMS.values(), 0.0, False)


def track_implementations(device, size, batch, nl):
    inputs = make_inputs(size, batch, nl, device)
    impls = implementations(
        device,
        lambda backend: lambda: snlt_fast.track_postprocess_points(**inputs, **PARAMS, backend=backend),
        lambda: track_postprocess_points_numpy(**host_arrays(inputs), **PARAMS),
    )
    if device in fast_backends(device):  # the native backend of this device is built
        impls.append((f"snlt_fast {device}: native op alone", native_track(inputs), False))
    return impls


TRACK_PARAMS = track_params(CASES, lambda case: f"S{case[0]}-B{case[1]}-{'nl' if case[2] else 'visual'}")


@pytest.mark.parametrize("device, case, impl_index", TRACK_PARAMS)
def test_track_postprocess_points(benchmark, device, case, impl_index):
    size, batch, nl = case
    implementation = track_implementations(device, size, batch, nl)[impl_index]
    name = f"NanoTrack S={size} B={batch}{' with NL head' if nl else ''}"
    time_implementation(benchmark, f"track_postprocess_points {name} ({device} tensors)", implementation, device)
