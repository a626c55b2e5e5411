"""Training anchor targets per batch: pysot's per-sample numpy AnchorTarget (the baseline,
then stacked as its data loader collates), the eager PyTorch reference and each fast
backend of snlt_fast.anchor_targets, at SNLT's shapes (15 anchors on a 25x25 map) for
batches of 32 and 128.

Boxes are drawn as pysot's training crops place them: centres shifted up to 64 pixels
from the crop centre, sides of 30 to 130 pixels, a fifth of the samples negative pairs.
On a GPU the targets are wanted on the device: the baseline pays the copy there, and
every timed call ends with a synchronisation.

Both run in the malloc state of a training process (see training_heap): a batch's targets
are 38 MB at B=128, and in a fresh process glibc may hand them back to the kernel after
every call, so that each call would page-fault them in again.
"""

import numpy as np
import pytest
import torch

import snlt_fast
from bench.bench_postprocess import DEVICES, fast_backends, time_implementation
from snlt_fast.baselines.numpy_anchor_target import NumpyAnchorTarget, anchor_targets_numpy

SNLT_RATIOS, SNLT_SCALES = [0.33, 0.5, 1, 2, 3], [4, 8, 16]
SCORE_SIZE, STRIDE = 25, 8
BATCHES = [32, 128]


@pytest.fixture(autouse=True, scope="module")
def training_heap():
    """The heap of a process that has trained a network: freeing its activations has raised
    glibc's mmap threshold to its 32 MB cap (and the trim threshold to twice that), so a
    batch's targets come from the heap and stay mapped. Freeing a 31 MB array does the same."""
    block = np.empty(31 << 20, dtype=np.uint8)  # mmapped by malloc
    del block  # and unmapped here, which raises the thresholds


def make_inputs(batch, device):
    generator = torch.Generator().manual_seed(0)
    centres = (torch.rand((batch, 2), generator=generator, dtype=torch.float64) * 2 - 1) * 64
    sizes = torch.rand((batch, 2), generator=generator, dtype=torch.float64) * 100 + 30
    return {
        "anchors": snlt_fast.generate_anchors(STRIDE, SNLT_RATIOS, SNLT_SCALES, SCORE_SIZE, device=device),
        "boxes": torch.cat([centres, sizes], dim=1).to(device),
        "negative": (torch.rand(batch, generator=generator) < 0.2).to(device),
    }


def implementations(batch, device):
    inputs = make_inputs(batch, device)
    baseline_target = NumpyAnchorTarget(inputs["anchors"].cpu().numpy(), stride=STRIDE)
    boxes, negative = inputs["boxes"].cpu().numpy(), inputs["negative"].cpu().numpy()
    np.random.seed(0)

    def run_baseline():
        targets = anchor_targets_numpy(baseline_target, boxes, negative)
        return [torch.from_numpy(field).to(device) for field in targets]

    def run_fast(backend):
        generator = torch.Generator(device).manual_seed(0)
        return lambda: snlt_fast.anchor_targets(**inputs, generator=generator, backend=backend)

    impls = [("numpy per sample (pysot)", run_baseline, True), (f"torch eager reference ({device})", run_fast("reference"), False)]
    return impls + [(f"snlt_fast {backend}", run_fast(backend), False) for backend in fast_backends(device)]


@pytest.mark.parametrize(
    "device, batch, impl_index",
    [(device, batch, k) for device in DEVICES for batch in BATCHES for k in range(2 + len(fast_backends(device)))],
)
def test_anchor_targets(benchmark, device, batch, impl_index):
    implementation = implementations(batch, device)[impl_index]
    group = f"anchor_targets SNLT A=15 S=25 B={batch} ({device} tensors)"
    time_implementation(benchmark, group, implementation, device)
