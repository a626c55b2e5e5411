"""Tracking post-processing per frame: the published numpy/scipy code (the baseline),
the eager PyTorch reference and each fast backend of snlt_fast.track_postprocess,
at SNLT's shapes (15 anchors on a 25x25 map) for 1 and 16 targets, plus SiamRPN++'s
visual-only case and dynamic_aggregate's full fused maps.

Inputs are random logits and deltas on pysot's anchors and window. On a GPU the
heads live on the device, so the baseline pays the copy to the host that the
published tracker pays, and every timed call ends with a synchronisation.

The numpy baseline runs in the malloc state of a tracker process (see tracker_heap):
run alone, its 300 KB temporaries would each be mmapped and page-faulted, and it
would measure twice as slow as it is inside a tracker.
"""

import numpy as np
import pytest
import torch

import snlt_fast
from bench._timing import synchronized
from snlt_fast import available_backends
from snlt_fast.baselines.numpy_postprocess import dynamic_aggregate_numpy, track_postprocess_numpy

SNLT_RATIOS, SNLT_SCALES = [0.33, 0.5, 1, 2, 3], [8, 10, 12]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# (case name, anchor scales, score size, targets, with the NL head, track_postprocess parameters)
CASES = [
    ("SNLT A=15 S=25 B=1", SNLT_SCALES, 25, 1, True, {}),
    ("SNLT A=15 S=25 B=16", SNLT_SCALES, 25, 16, True, {}),
    ("SiamRPN++ A=5 S=25 B=1", [8], 25, 1, False, {}),
    # The long-term tracker's search after losing the target: no size penalty, no window.
    ("SNLT lost mode A=15 S=97 B=1", SNLT_SCALES, 97, 1, True, {"penalty_k": 0.0, "window_influence": 0.0}),
]


@pytest.fixture(autouse=True, scope="module")
def tracker_heap():
    """The heap of a process that has run a network: glibc raises its mmap threshold to the
    size of the largest mmapped block freed (up to 32 MB), so numpy's temporaries of a few
    hundred KB then come from the heap. Freeing an 8 MB array puts any process there."""
    block = np.empty(8 << 20, dtype=np.uint8)  # mmapped by malloc
    del block  # and unmapped here, which raises the threshold


def fast_backends(device):
    """The backends timed on `device`: never the Triton interpreter, which is a debugging tool."""
    return [b for b in available_backends(device) if b != "reference" and (b != "triton" or device == "cuda")]


def make_inputs(scales, size, batch, nl, device):
    generator = torch.Generator().manual_seed(0)
    anchor_num = len(SNLT_RATIOS) * len(scales)

    def randn(*shape, scale):
        return (torch.randn(shape, generator=generator) * scale).to(device)

    return {
        "cls_vis": randn(batch, 2 * anchor_num, size, size, scale=3.0),
        "cls_nl": randn(batch, 2 * anchor_num, size, size, scale=3.0) if nl else None,
        "loc_vis": randn(batch, 4 * anchor_num, size, size, scale=0.3),
        "loc_nl": randn(batch, 4 * anchor_num, size, size, scale=0.3) if nl else None,
        "anchors": snlt_fast.generate_anchors(8, SNLT_RATIOS, scales, size, device=device),
        "window": snlt_fast.hanning_window(size, anchor_num, device=device),
        "target_size": (torch.rand((batch, 2), generator=generator, dtype=torch.float64) * 80 + 20).to(device),
    }


def host_arrays(inputs):
    """What the published tracker does first: copy every map to the host as numpy."""
    return {k: None if v is None else v.cpu().numpy() for k, v in inputs.items()}


def implementations(device, run_fast, run_baseline):
    impls = [("numpy/scipy (published)", run_baseline, True), (f"torch eager reference ({device})", run_fast("reference"), False)]
    impls += [(f"snlt_fast {backend}", run_fast(backend), False) for backend in fast_backends(device)]
    return impls


def native_track(inputs, params):
    """The C++/CUDA kernels alone, as the public API calls them for inputs already in kernel
    form (these are): the API's own cost is the difference to the snlt_fast row."""
    settings = {"alpha": 1 / 300, "penalty_k": 0.04, "window_influence": 0.44, "lr": 0.4} | params
    args = [inputs[k] for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl", "anchors", "window", "target_size")]
    native = snlt_fast._backends.native_module()
    return lambda: native.postprocess_track(*args, *settings.values(), True)


def track_implementations(device, scales, size, batch, nl, params):
    inputs = make_inputs(scales, size, batch, nl, device)
    impls = implementations(
        device,
        lambda backend: lambda: snlt_fast.track_postprocess(**inputs, **params, backend=backend),
        lambda: track_postprocess_numpy(**host_arrays(inputs), **params),
    )
    if device in fast_backends(device):  # the native backend of this device is built
        impls.append((f"snlt_fast {device}: native op alone", native_track(inputs, params), False))
    return impls


def aggregate_implementations(device):
    inputs = make_inputs(SNLT_SCALES, 25, 1, True, device)
    heads = {k: inputs[k] for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl", "anchors")}
    return implementations(
        device,
        lambda backend: lambda: snlt_fast.dynamic_aggregate(**heads, backend=backend),
        lambda: dynamic_aggregate_numpy(**host_arrays(heads)),
    )


def time_implementation(benchmark, group, implementation, device):
    """Label and time one (impl name, function, is the baseline) of `implementations`."""
    impl, fn, is_baseline = implementation
    benchmark.group = group
    benchmark.extra_info["impl"] = impl
    if is_baseline:
        benchmark.extra_info["baseline"] = True
    benchmark(synchronized(fn, device))


def track_params(cases, case_id):
    """(device, case, implementation index) for each row the track_implementations of both forms
    give: `implementations`' rows, and the native op alone where this device's is built."""
    return [
        pytest.param(device, case, impl_index, id=f"{device}-{case_id(case)}-{impl_index}")
        for device in DEVICES
        for case in cases
        for impl_index in range(2 + len(fast_backends(device)) + (device in fast_backends(device)))
    ]


TRACK_PARAMS = track_params(CASES, lambda case: case[0])


@pytest.mark.parametrize("device, case, impl_index", TRACK_PARAMS)
def test_track_postprocess(benchmark, device, case, impl_index):
    name, scales, size, batch, nl, params = case
    implementation = track_implementations(device, scales, size, batch, nl, params)[impl_index]
    time_implementation(benchmark, f"track_postprocess {name} ({device} tensors)", implementation, device)


@pytest.mark.parametrize(
    "device, impl_index",
    [(device, k) for device in DEVICES for k in range(2 + len(fast_backends(device)))],
)
def test_dynamic_aggregate(benchmark, device, impl_index):
    implementation = aggregate_implementations(device)[impl_index]
    time_implementation(benchmark, f"dynamic_aggregate SNLT A=15 S=25 B=1 ({device} tensors)", implementation, device)
