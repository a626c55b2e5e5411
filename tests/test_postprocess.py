"""dynamic_aggregate and track_postprocess (snlt_fast/ops/postprocess.py): every fast
backend against the float64 reference bit for bit, the reference against the numpy
baseline written from the published tracker code, the argmax rules (ties, NaN), the
anchors and window, and the input errors.

The Triton backend runs through the interpreter here, so its shapes stay small.
"""

import ctypes
import math
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils import cpp_extension

import snlt_fast
from conftest import HAS_CUDA, devices_for
from snlt_fast.baselines.numpy_postprocess import dynamic_aggregate_numpy, track_postprocess_numpy

FAST_CASES = [(backend, device) for backend in ("cpu", "triton", "cuda") for device in devices_for(backend)]
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
SIAMRPN_RATIOS = [0.33, 0.5, 1, 2, 3]


# --------------------------------------------------------------------------- inputs


def make_inputs(seed, *, batch=2, anchor_num=3, height=5, width=5, nl=True, dtype=torch.float32,
                logit_scale=3.0, delta_scale=0.3, target_scale=1.0, layout="contiguous", device="cpu"):  # fmt: skip
    """Heads, anchors, window and target sizes drawn from `seed`."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(shape, generator=generator, dtype=torch.float64) * scale

    def head(channels, scale):
        values = randn(batch, channels * anchor_num, height, width, scale=scale).to(dtype)
        if layout == "strided":  # the same values, every other element of a wider tensor
            holder = values.new_zeros((batch, channels * anchor_num, height, 2 * width))
            holder[..., ::2] = values
            return holder[..., ::2].to(device)
        if layout == "channels_last":
            return values.contiguous(memory_format=torch.channels_last).to(device)
        return values.to(device)

    anchors = torch.stack(
        (
            randn(anchor_num, height, width, scale=40.0),
            randn(anchor_num, height, width, scale=40.0),
            torch.rand((anchor_num, height, width), generator=generator, dtype=torch.float64) * 120 + 8,
            torch.rand((anchor_num, height, width), generator=generator, dtype=torch.float64) * 120 + 8,
        )
    )
    window = torch.rand((anchor_num, height, width), generator=generator, dtype=torch.float64)
    target_size = (torch.rand((batch, 2), generator=generator, dtype=torch.float64) * 100 + 10) * target_scale
    return {
        "cls_vis": head(2, logit_scale),
        "cls_nl": head(2, logit_scale) if nl else None,
        "loc_vis": head(4, delta_scale),
        "loc_nl": head(4, delta_scale) if nl else None,
        "anchors": anchors.to(device),
        "window": window.to(device),
        "target_size": target_size.to(device),
    }


def aggregate_args(inputs):
    return {k: inputs[k] for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl", "anchors")}


def as_numpy(inputs):
    return {k: None if v is None else v.cpu().double().numpy() for k, v in inputs.items()}


BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.int64: torch.int64}


def assert_same_bits(actual, expected):
    """Equal bit for bit, where any NaN matches any NaN."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape and actual.device == expected.device
    actual, expected = actual.cpu(), expected.cpu()
    assert torch.equal(actual.isnan(), expected.isnan())
    keep = ~expected.isnan()
    assert torch.equal(actual[keep].view(BITS[actual.dtype]), expected[keep].view(BITS[expected.dtype]))


def assert_results_equal(actual, expected):
    assert type(actual) is type(expected)
    for name, a, e in zip(expected._fields, actual, expected):
        try:
            assert_same_bits(a, e)
        except AssertionError as error:
            raise AssertionError(f"field {name!r} differs:\n{a}\n{e}") from error


# --------------------------------------------------------------------------- fast backends = reference


case_settings = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "batch": st.integers(1, 3),
        "anchor_num": st.sampled_from([1, 3, 5]),
        "height": st.integers(1, 9),
        "width": st.integers(1, 9),
        "nl": st.booleans(),
        "dtype": st.sampled_from(DTYPES),
        # 400: logit gaps past 709 give p == 0 and subnormal p (the entropy's log edge cases).
        "logit_scale": st.sampled_from([0.5, 3.0, 40.0, 400.0]),
        # Large deltas overflow exp: boxes of size 0 or inf, NaN penalties.
        "delta_scale": st.sampled_from([0.3, 2.0, 20.0, 400.0]),
        "target_scale": st.sampled_from([1.0, 1.0, 1e-40, 1e40]),
        "layout": st.sampled_from(["contiguous", "strided", "channels_last"]),
    }
)
track_settings = st.fixed_dictionaries(
    {
        "alpha": st.sampled_from([1 / 300, 0.05, 3.0]),
        "penalty_k": st.sampled_from([0.04, 0.0, 0.5, -0.2]),
        "window_influence": st.sampled_from([0.44, 0.0, 1.0, 1.3]),
        "lr": st.sampled_from([0.4, 1.0]),
        "lr_mode": st.sampled_from(["snlt", "pysot"]),
    }
)


def check_track(backend, device, case, params):
    inputs = make_inputs(**case, device=device)
    expected = snlt_fast.track_postprocess(**inputs, **params, backend="reference")
    actual = snlt_fast.track_postprocess(**inputs, **params, backend=backend)
    assert_results_equal(actual, expected)
    cells = case["anchor_num"] * case["height"] * case["width"]
    assert bool(((actual.index >= 0) & (actual.index < cells)).all())


def check_aggregate(backend, device, case, alpha):
    inputs = make_inputs(**case, device=device)
    expected = snlt_fast.dynamic_aggregate(**aggregate_args(inputs), alpha=alpha, backend="reference")
    actual = snlt_fast.dynamic_aggregate(**aggregate_args(inputs), alpha=alpha, backend=backend)
    assert_results_equal(actual, expected)


# The Triton interpreter's numpy warns when a block's pscores are all NaN, as these inputs
# can make them on purpose.
@pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")
@pytest.mark.parametrize("backend, device", FAST_CASES)
@settings(max_examples=12)
@given(case=case_settings, params=track_settings)
def test_track_matches_reference(backend, device, case, params):
    check_track(backend, device, case, params)


@pytest.mark.parametrize("backend, device", FAST_CASES)
@settings(max_examples=8)
@given(case=case_settings, alpha=st.sampled_from([1 / 300, 0.5]))
def test_aggregate_matches_reference(backend, device, case, alpha):
    check_aggregate(backend, device, case, alpha)


@pytest.mark.parametrize("backend, device", FAST_CASES)
@pytest.mark.parametrize("nl", [True, False])
def test_tracker_shapes_match_reference(backend, device, nl):
    """SNLT's 15 anchors on a 25x25 map, and SiamRPN++'s 5 on the 97x97 long-term map (CPU/GPU only)."""
    shapes = [(15, 25, 2)] + ([(5, 97, 1)] if backend != "triton" or device != "cpu" else [])
    for seed, (anchor_num, size, batch) in enumerate(shapes):
        case = dict(seed=seed, batch=batch, anchor_num=anchor_num, height=size, width=size, nl=nl)
        check_track(backend, device, case, dict(lr_mode="snlt"))
        check_aggregate(backend, device, case, 1 / 300)


# --------------------------------------------------------------------------- the argmax rules


def all_backends():
    return [("reference", "cpu")] + FAST_CASES


# Score maps small enough for one thread, and large enough (over 2048 cells) that the CPU
# kernel splits a target's cells between threads: cell n is in entropy lane n % 256, and
# two threads take lanes 0-127 and 128-255.
MAP_SIZES = [7, 25]


@pytest.mark.parametrize("backend, device", all_backends())
@pytest.mark.parametrize("size", MAP_SIZES)
def test_ties_go_to_the_lowest_index(backend, device, size):
    """Equal logits, zero deltas and a flat window: every cell of the anchor that fits the
    target best has the same pscore, and the first of them wins (at S = 25 the tied cells
    fill every lane, so each of two threads holds some)."""
    anchor_num = 5
    anchors = snlt_fast.generate_anchors(8, SIAMRPN_RATIOS, [8], size, device=device)
    zeros = torch.zeros
    result = snlt_fast.track_postprocess(
        zeros(2, 2 * anchor_num, size, size, device=device), zeros(2, 2 * anchor_num, size, size, device=device),
        zeros(2, 4 * anchor_num, size, size, device=device), zeros(2, 4 * anchor_num, size, size, device=device),
        anchors, zeros(anchor_num, size, size, device=device, dtype=torch.float64),
        torch.tensor([[64.0, 64.0], [40.0, 80.0]], device=device), backend=backend,
    )  # fmt: skip
    # Anchor 2 is 64x64 and anchor 3 is 40x80: a penalty of exactly 1 there.
    assert result.index.tolist() == [2 * size * size, 3 * size * size]
    assert result.w_vis.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("backend, device", all_backends())
@pytest.mark.parametrize("head", ["cls_vis", "loc_vis", "loc_nl"])
@pytest.mark.parametrize("anchor_num, height, width", [(3, 4, 5), (15, 25, 25)])
def test_nan_picks_the_first_nan_cell(backend, device, head, anchor_num, height, width):
    # (A NaN logit with an NL head poisons the weights: the next test.)
    inputs = make_inputs(5, batch=2, anchor_num=anchor_num, height=height, width=width, nl=head != "cls_vis",
                         device=device)  # fmt: skip
    channels = inputs[head].shape[1]
    # Two NaNs in target 1, in the last channel group: anchor A-1 and the earlier anchor 1
    # (on the large map in lanes 131 and 117, which different threads take); none in target 0.
    inputs[head][1, channels - 1, 3, width // 2 - 2] = math.nan
    inputs[head][1, channels - anchor_num + 1, 0, 4] = math.nan
    result = snlt_fast.track_postprocess(**inputs, backend=backend)
    first_nan = 1 * height * width + 0 * width + 4  # anchor 1, row 0, column 4
    assert result.index[1].item() == first_nan
    assert math.isnan(result.pscore[1].item())
    assert not math.isnan(result.pscore[0].item())


@pytest.mark.parametrize("backend, device", FAST_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logit_gaps_past_the_range_of_exp(backend, device, dtype):
    """Background-minus-foreground gaps where exp overflows or underflows: p == 1, p == 0
    and subnormal p, all of which the entropy's terms meet."""
    inputs = make_inputs(8, batch=2, anchor_num=3, height=5, width=5, dtype=dtype, device=device)
    gaps = torch.tensor([-1000.0, -745.5, -720.0, 0.0, 708.5, 709.5, 709.9, 720.0, 745.2, 746.0, 1000.0])
    for head in ("cls_vis", "cls_nl"):
        cls = inputs[head]
        anchor_num = cls.shape[1] // 2
        cells = cls[0, anchor_num:].numel()
        tiled = gaps.repeat(-(-cells // len(gaps)))[:cells].reshape(cls[0, anchor_num:].shape)
        cls[0, :anchor_num] = cls[0, anchor_num:] + tiled.to(dtype=dtype, device=device)
    expected = snlt_fast.track_postprocess(**inputs, backend="reference")
    assert_results_equal(snlt_fast.track_postprocess(**inputs, backend=backend), expected)
    expected = snlt_fast.dynamic_aggregate(**aggregate_args(inputs), backend="reference")
    assert_results_equal(snlt_fast.dynamic_aggregate(**aggregate_args(inputs), backend=backend), expected)


@pytest.mark.parametrize("backend, device", all_backends())
def test_nan_in_the_nl_logits_poisons_the_weights(backend, device):
    """A NaN logit makes that head's entropy NaN, hence every fused score: index 0."""
    inputs = make_inputs(6, batch=1, device=device)
    inputs["cls_nl"][0, 4, 2, 2] = math.nan
    result = snlt_fast.track_postprocess(**inputs, backend=backend)
    assert result.index.tolist() == [0]
    assert math.isnan(result.h_nl.item()) and math.isnan(result.w_vis.item()) and math.isnan(result.score.item())


@pytest.mark.parametrize("backend, device", all_backends())
def test_visual_head_only(backend, device):
    inputs = make_inputs(7, nl=False, device=device)
    result = snlt_fast.track_postprocess(**inputs, backend=backend)
    assert result.w_vis.tolist() == [1.0, 1.0] and result.w_nl.tolist() == [0.0, 0.0]
    assert result.h_nl.isnan().all() and not result.h_vis.isnan().any()
    aggregation = snlt_fast.dynamic_aggregate(**aggregate_args(inputs), backend=backend)
    assert_same_bits(aggregation.w_vis, result.w_vis)
    assert_same_bits(aggregation.h_vis, result.h_vis)


@pytest.mark.parametrize("backend, device", all_backends())
def test_no_targets(backend, device):
    inputs = make_inputs(9, batch=0, device=device)
    result = snlt_fast.track_postprocess(**inputs, backend=backend)
    assert result.index.shape == (0,) and result.box.shape == (0, 4) and result.lr.shape == (0,)
    aggregation = snlt_fast.dynamic_aggregate(**aggregate_args(inputs), backend=backend)
    assert aggregation.score.shape == (0, 3, 5, 5) and aggregation.box.shape == (0, 4, 3, 5, 5)


@pytest.mark.parametrize("threads", [2, 3, 5])
@pytest.mark.parametrize("batch, anchor_num, size", [(1, 15, 25), (1, 3, 21), (3, 15, 25)])
def test_cpu_results_do_not_depend_on_the_thread_count(threads, batch, anchor_num, size):
    """A 15x25x25 map's heads are split between threads (a thread's share may end inside
    a head), a 3x21x21 map's heads go one to a thread, and several targets are shared out
    between threads whole; one thread must give the same bits."""
    inputs = make_inputs(12, batch=batch, anchor_num=anchor_num, height=size, width=size)
    default_threads = torch.get_num_threads()
    results = {}
    try:
        for count in (1, threads):
            torch.set_num_threads(count)
            track = snlt_fast.track_postprocess(**inputs, backend="cpu")
            maps = snlt_fast.dynamic_aggregate(**aggregate_args(inputs), backend="cpu")
            results[count] = (*track, *maps)
    finally:
        torch.set_num_threads(default_threads)
    for serial, threaded in zip(results[1], results[threads]):
        assert_same_bits(serial, threaded)


# --------------------------------------------------------------------------- instruction sets


ROOT = Path(__file__).resolve().parent.parent
# The arithmetic flags of setup.py's C++ build; -march picks one instruction set.
PROBE_FLAGS = ["-O3", "-std=c++20", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp", "-fPIC", "-shared"]


def probe_library(instruction_set, directory, probe="postprocess_isa_probe.cpp", kernels="postprocess/postprocess_cpu.cpp"):
    """The CPU kernels (csrc/`kernels`) compiled for `instruction_set` alone, behind tests/`probe`."""
    torch_lib = str(Path(torch.__file__).parent / "lib")
    library = directory / f"probe-{instruction_set}.so"
    command = [
        "g++", *PROBE_FLAGS, f"-march={instruction_set}", "-DSNLT_VECTOR_TARGETS=", f"-I{ROOT / 'csrc'}",
        *(f"-I{path}" for path in cpp_extension.include_paths()),
        str(ROOT / "tests" / probe), str(ROOT / "csrc" / kernels),
        f"-L{torch_lib}", "-lc10", "-ltorch_cpu", f"-Wl,-rpath,{torch_lib}", "-o", str(library),
    ]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    return ctypes.CDLL(str(library))


def pointer(tensor):
    return ctypes.c_void_p(tensor.data_ptr())


@pytest.mark.skipif(platform.machine() != "x86_64" or shutil.which("g++") is None, reason="needs g++ on x86-64")
@pytest.mark.parametrize("instruction_set", ["x86-64-v3", "x86-64"])
def test_cpu_kernels_give_the_same_bits_on_every_instruction_set(instruction_set, tmp_path):
    """The loops that AVX2 machines and baseline x86-64 ones run (target_clones picks the
    AVX-512 ones here) against the installed build, on maps that threads split and on
    several targets."""
    library = probe_library(instruction_set, tmp_path)
    for case in (dict(batch=1, anchor_num=15, height=25, width=25), dict(batch=3, anchor_num=3, height=7, width=9)):
        inputs = make_inputs(13, **case, logit_scale=40.0, delta_scale=2.0)
        heads = [inputs[k].contiguous() for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl")]
        anchors, window = inputs["anchors"].double(), inputs["window"].double()
        target_size = inputs["target_size"].double().contiguous()
        geometry = [ctypes.c_int64(v) for v in (case["batch"], case["anchor_num"], case["height"], case["width"])]

        expected = snlt_fast.track_postprocess(*heads, anchors, window, target_size, backend="cpu")
        index, box = torch.empty_like(expected.index), torch.empty_like(expected.box)
        values = torch.empty(len(expected) - 2, case["batch"])  # a row per field after the box
        library.probe_track(
            *map(pointer, (*heads, anchors, window, target_size)), *geometry,
            *(ctypes.c_double(v) for v in (1 / 300, 0.04, 0.44, 0.4)), ctypes.c_int(1), *map(pointer, (index, box, values)),
        )  # fmt: skip
        assert torch.equal(index, expected.index)
        assert_same_bits(box, expected.box)
        assert_same_bits(values, torch.stack(expected[2:]))

        expected = snlt_fast.dynamic_aggregate(*heads, anchors, backend="cpu")
        score, box, stats = torch.empty_like(expected.score), torch.empty_like(expected.box), torch.empty(4, case["batch"])
        library.probe_aggregate(
            *map(pointer, (*heads, anchors)), *geometry, ctypes.c_double(1 / 300), *map(pointer, (score, box, stats)),
        )  # fmt: skip
        assert_same_bits(score, expected.score)
        assert_same_bits(box, expected.box)
        assert_same_bits(stats, torch.stack(expected[2:]))


def test_batch_targets_are_independent():
    inputs = make_inputs(8, batch=3, anchor_num=5, height=9, width=9)
    whole = snlt_fast.track_postprocess(**inputs, backend="cpu")
    for b in range(3):
        single = {k: None if v is None else v[b : b + 1] for k, v in inputs.items() if k not in ("anchors", "window")}
        part = snlt_fast.track_postprocess(**single, anchors=inputs["anchors"], window=inputs["window"], backend="cpu")
        for name, a, e in zip(whole._fields, part, whole):
            assert_same_bits(a, e[b : b + 1])


# --------------------------------------------------------------------------- the published semantics


@settings(max_examples=25)
@given(
    seed=st.integers(0, 2**31 - 1),
    nl=st.booleans(),
    lr_mode=st.sampled_from(["snlt", "pysot"]),
    alpha=st.sampled_from([1 / 300, 0.02]),
    shape=st.sampled_from([(5, 17), (5, 25), (15, 25), (3, 6)]),
)
def test_reference_matches_numpy_baseline(seed, nl, lr_mode, alpha, shape):
    anchor_num, size = shape
    inputs = make_inputs(seed, batch=2, anchor_num=anchor_num, height=size, width=size, nl=nl, dtype=torch.float64)
    expected = track_postprocess_numpy(**as_numpy(inputs), alpha=alpha, lr_mode=lr_mode)
    actual = snlt_fast.track_postprocess(**inputs, alpha=alpha, lr_mode=lr_mode, backend="reference")
    for b in range(2):
        if actual.index[b] != expected.index[b]:
            # Only a float32 tie may separate them: then both cells round to one pscore.
            assert actual.pscore[b].item() == np.float32(expected.pscore[b])
    same = actual.index.numpy() == expected.index
    for name in ("box", "score", "pscore", "lr", "w_vis", "w_nl", "h_vis", "h_nl"):
        actual_values, expected_values = getattr(actual, name).double().numpy(), getattr(expected, name)
        np.testing.assert_allclose(actual_values[same], expected_values[same], rtol=1e-6, atol=1e-6, err_msg=name)

    aggregation = snlt_fast.dynamic_aggregate(**aggregate_args(inputs), alpha=alpha, backend="reference")
    expected_maps = dynamic_aggregate_numpy(**aggregate_args(as_numpy(inputs)), alpha=alpha)
    for name, a, e in zip(aggregation._fields, aggregation, expected_maps):
        np.testing.assert_allclose(a.double().numpy(), e, rtol=1e-6, atol=1e-6, err_msg=name)


def test_fast_backend_matches_numpy_baseline():
    inputs = make_inputs(11, batch=4, anchor_num=15, height=25, width=25, dtype=torch.float64)
    expected = track_postprocess_numpy(**as_numpy(inputs))
    actual = snlt_fast.track_postprocess(**inputs)
    np.testing.assert_array_equal(actual.index.numpy(), expected.index)
    np.testing.assert_allclose(actual.box.double().numpy(), expected.box, rtol=1e-6)
    np.testing.assert_allclose(actual.w_vis.double().numpy(), expected.w_vis, rtol=1e-6)
    np.testing.assert_allclose(actual.w_nl.double().numpy(), expected.w_nl, rtol=1e-6)


def test_higher_entropy_gets_lower_weight():
    inputs = make_inputs(12, batch=1, logit_scale=0.1)  # visual head: p near 1/2 everywhere
    inputs["cls_nl"] = inputs["cls_nl"] * 100  # NL head: confident, low entropy
    result = snlt_fast.track_postprocess(**inputs, alpha=0.1)
    assert result.h_vis.item() > result.h_nl.item()
    assert result.w_nl.item() > 0.5 > result.w_vis.item()


# --------------------------------------------------------------------------- anchors and window


def test_anchors_are_pysots():
    anchors = snlt_fast.generate_anchors(8, SIAMRPN_RATIOS, [8], 25)
    assert anchors.shape == (4, 5, 25, 25) and anchors.dtype == torch.float64
    # ws = int(sqrt(64 / r)), hs = int(ws * r), times the scale 8.
    assert anchors[2, :, 0, 0].tolist() == [104.0, 88.0, 64.0, 40.0, 32.0]
    assert anchors[3, :, 0, 0].tolist() == [32.0, 40.0, 64.0, 80.0, 96.0]
    centres = [(k - 12) * 8.0 for k in range(25)]
    assert anchors[0, 3, 7].tolist() == centres and anchors[1, 3, :, 7].tolist() == centres
    assert anchors[0, :, :, 4].unique().tolist() == [centres[4]]
    snlt = snlt_fast.generate_anchors(8, SIAMRPN_RATIOS, [8, 10, 12], 17)
    # Ratio-major, then scale.
    assert snlt[2, :3, 0, 0].tolist() == [104.0, 130.0, 156.0] and snlt.shape == (4, 15, 17, 17)


def test_hanning_window_is_pysots():
    window = snlt_fast.ops.anchors.hanning_window(17, 3)
    expected = np.outer(np.hanning(17), np.hanning(17))
    assert window.shape == (3, 17, 17) and window.dtype == torch.float64
    for anchor in range(3):
        np.testing.assert_array_equal(window[anchor].numpy(), expected)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(stride=0), ValueError),
        (dict(stride=8.0), TypeError),
        (dict(ratios=[]), TypeError),
        (dict(ratios=[1, -2]), ValueError),
        (dict(scales=[math.inf]), ValueError),
        (dict(score_size=0), ValueError),
    ],
)
def test_anchor_errors(kwargs, error):
    arguments = dict(stride=8, ratios=SIAMRPN_RATIOS, scales=[8], score_size=25) | kwargs
    with pytest.raises(error, match=next(iter(kwargs))):
        snlt_fast.generate_anchors(**arguments)


# --------------------------------------------------------------------------- bad input


def replaced(inputs, **changes):
    return inputs | changes


BAD_INPUTS = [
    (lambda i: replaced(i, cls_vis=i["cls_vis"][:, :5]), ValueError, "cls_vis"),
    (lambda i: replaced(i, loc_vis=i["loc_vis"][:, :8]), ValueError, "loc_vis"),
    (lambda i: replaced(i, cls_nl=i["cls_nl"][:1]), ValueError, "cls_nl"),
    (lambda i: replaced(i, loc_nl=None), ValueError, "loc_nl"),
    (lambda i: replaced(i, anchors=i["anchors"][:, :2]), ValueError, "anchors"),
    (lambda i: replaced(i, window=i["window"][:, 1:]), ValueError, "window"),
    (lambda i: replaced(i, target_size=i["target_size"][:1]), ValueError, "target_size"),
    (lambda i: replaced(i, target_size=i["target_size"].repeat(1, 2)), ValueError, "target_size"),
    (lambda i: replaced(i, target_size=torch.tensor([[10.0, 0.0], [5.0, 5.0]])), ValueError, "target_size"),
    (lambda i: replaced(i, target_size=(10.0, -1.0)), ValueError, "target_size"),
    (lambda i: replaced(i, target_size=(10.0, math.nan)), ValueError, "target_size"),
    (lambda i: replaced(i, target_size="big"), TypeError, "target_size"),
    (lambda i: replaced(i, cls_vis=i["cls_vis"].to(torch.int32)), TypeError, "cls_vis"),
    (lambda i: replaced(i, loc_vis=i["loc_vis"].double()), TypeError, "dtype"),
    (lambda i: replaced(i, anchors=i["anchors"].to("meta")), ValueError, "device"),
    (lambda i: replaced(i, cls_vis=[1.0]), TypeError, "cls_vis"),
]


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("contiguous", [False, True])
@pytest.mark.parametrize("change, error, match", BAD_INPUTS)
def test_bad_input(change, error, match, contiguous, backend):
    """The same error from the Python checks and, for inputs already in kernel form (the
    contiguous copies here, on the cpu backend), from the native op's own checks."""
    inputs = change(make_inputs(13))
    if contiguous:
        inputs = {k: v.contiguous() if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    with pytest.raises(error, match=match):
        snlt_fast.track_postprocess(**inputs, backend=backend)


@pytest.mark.parametrize(
    "params, error, match",
    [
        (dict(lr_mode="fast"), ValueError, "lr_mode"),
        (dict(alpha=math.nan), TypeError, "alpha"),
        (dict(penalty_k="0.04"), TypeError, "penalty_k"),
        (dict(window_influence=True), TypeError, "window_influence"),
        (dict(backend="gpu"), ValueError, "backend"),
    ],
)
def test_bad_parameters(params, error, match):
    with pytest.raises(error, match=match):
        snlt_fast.track_postprocess(**make_inputs(14), **params)


@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("contiguous", [False, True])
def test_aggregate_bad_input(contiguous, backend):
    inputs = make_inputs(15)
    loc_vis = inputs["loc_vis"][..., :-1]
    loc_vis = loc_vis.contiguous() if contiguous else loc_vis
    with pytest.raises(ValueError, match="loc_vis"):
        snlt_fast.dynamic_aggregate(**aggregate_args(replaced(inputs, loc_vis=loc_vis)), backend=backend)


NATIVE_ENTRIES = ["dispatcher", "direct"]


def native_entry(name):
    """The native post-processing ops through torch.ops, or snlt_fast._C's direct bindings."""
    return torch.ops.snlt_fast_C if name == "dispatcher" else snlt_fast._backends.native_module()


@pytest.mark.parametrize("entry", NATIVE_ENTRIES)
def test_native_ops_refuse_what_they_would_misread(entry):
    """A direct call with tensors the wrappers would have converted: an error, not a crash."""
    inputs = make_inputs(16)
    native = native_entry(entry)
    args = [inputs[k] for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl", "anchors", "window", "target_size")]
    with pytest.raises(TypeError, match="anchors must have dtype Double, got Float"):
        native.postprocess_track(*args[:4], args[4].float(), *args[5:], 1 / 300, 0.04, 0.44, 0.4, True)
    with pytest.raises(ValueError, match="cls_vis must be contiguous"):
        native.postprocess_track(args[0].transpose(2, 3), *args[1:], 1 / 300, 0.04, 0.44, 0.4, True)
    with pytest.raises(ValueError, match="window must have shape"):
        native.postprocess_track(*args[:5], args[5][:1], args[6], 1 / 300, 0.04, 0.44, 0.4, True)
    # The dispatcher picks the meta device, for which no kernel is registered.
    with pytest.raises(ValueError if entry == "direct" else RuntimeError, match="device" if entry == "direct" else "Meta"):
        native.postprocess_track(*args[:4], args[4].to("meta"), *args[5:], 1 / 300, 0.04, 0.44, 0.4, True)
    # An empty score map: no cell for the argmax to read.
    empty = [None if t is None else t[..., :0] for t in args[:5]]
    with pytest.raises(ValueError, match="H, W >= 1"):
        native.postprocess_track(*empty, args[5][..., :0], args[6], 1 / 300, 0.04, 0.44, 0.4, True)
    with pytest.raises(ValueError, match="H, W >= 1"):
        native.postprocess_aggregate(*empty, 1 / 300)


def test_direct_binding_refuses_invalid_host_sizes():
    """The eager API's entry checks host target sizes as the API does; the registered op
    leaves them to the kernels' NaN rule (test_unchecked_invalid_target_size_gives_nan)."""
    inputs = make_inputs(24, batch=2)
    inputs["target_size"][1, 1] = 0.0
    args = [inputs[k] for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl", "anchors", "window", "target_size")]
    with pytest.raises(ValueError, match="target_size must hold positive finite .* for target 1"):
        native_entry("direct").postprocess_track(*args, 1 / 300, 0.04, 0.44, 0.4, True)


@pytest.mark.parametrize("nl", [True, False])
def test_direct_bindings_match_the_registered_ops(nl):
    """snlt_fast._C's bindings, which eager calls use, against the ops that torch.compile sees."""
    inputs = make_inputs(21, batch=3, nl=nl)
    heads = [inputs[k] for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl")]
    anchors, window, target_size = (inputs[k].double() for k in ("anchors", "window", "target_size"))
    track_args = (*heads, anchors, window, target_size, 1 / 300, 0.04, 0.44, 0.4, False)
    dispatcher, direct = (native_entry(name) for name in NATIVE_ENTRIES)
    for expected, actual in (
        (dispatcher.postprocess_track(*track_args), direct.postprocess_track(*track_args)),
        (dispatcher.postprocess_aggregate(*heads, anchors, 0.05), direct.postprocess_aggregate(*heads, anchors, 0.05)),
    ):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_same_bits(a, e)


def test_profilers_see_direct_calls():
    """Eager calls skip the dispatcher, which records ops for profilers: they record themselves."""
    inputs = make_inputs(23)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        snlt_fast.track_postprocess(**inputs, backend="cpu")
        snlt_fast.dynamic_aggregate(**aggregate_args(inputs), backend="cpu")
    names = {event.name for event in profile.events()}
    assert {"snlt_fast_C::postprocess_track", "snlt_fast_C::postprocess_aggregate"} <= names


def test_dispatch_modes_see_the_op():
    """Under a dispatch mode the eager call goes through the registered op, not around it."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class OpLog(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.append(str(func))
            return func(*args, **(kwargs or {}))

    inputs = make_inputs(22)
    expected = snlt_fast.track_postprocess(**inputs, backend="cpu")
    with OpLog() as log:
        actual = snlt_fast.track_postprocess(**inputs, backend="cpu")
    assert "snlt_fast.track_postprocess.default" in log.ops
    assert_results_equal(actual, expected)


@pytest.mark.parametrize("backend, device", all_backends())
def test_unchecked_invalid_target_size_gives_nan(backend, device):
    """The kernels' own rule, for sizes no host check saw (device tensors, compiled graphs)."""
    from snlt_fast.ops import postprocess

    inputs = make_inputs(20, batch=3, device=device)
    inputs["target_size"][1, 0] = -3.0
    inputs["target_size"][2, 1] = math.inf
    args = [inputs[k] for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl", "anchors", "window", "target_size")]
    result = postprocess.TrackResult(*postprocess._track_op(*args, 1 / 300, 0.04, 0.44, 0.4, True, backend))
    assert result.index.tolist()[1:] == [0, 0]
    assert not any(field[0].isnan().any() for field in result[1:])
    assert result.pscore[1:].isnan().all() and result.lr[1:].isnan().all()
    # The box and score of cell 0 stay numbers.
    assert not result.box[1:].isnan().any() and not result.score[1:].isnan().any()


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
def test_invalid_target_size_on_the_gpu_gives_nan():
    """On a device a size check would stall the stream: an invalid size yields NaN instead."""
    inputs = make_inputs(17, device="cuda")
    inputs["target_size"][1, 0] = -3.0
    result = snlt_fast.track_postprocess(**inputs)
    assert result.index[1].item() == 0 and math.isnan(result.pscore[1].item())
    assert not math.isnan(result.pscore[0].item())


# --------------------------------------------------------------------------- op registration


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_compiles_without_graph_breaks(backend):
    inputs = make_inputs(19, batch=2, anchor_num=2, height=3, width=4)

    def step(inputs):
        return snlt_fast.track_postprocess(**inputs, backend=backend), snlt_fast.dynamic_aggregate(
            **aggregate_args(inputs), backend=backend
        )

    compiled = torch.compile(step, backend="eager", fullgraph=True)
    for actual, expected in zip(compiled(inputs), step(inputs)):
        assert_results_equal(actual, expected)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_custom_ops_pass_opcheck(backend):
    from snlt_fast.ops import postprocess

    inputs = make_inputs(18, batch=1, anchor_num=2, height=3, width=4)
    heads = [inputs[k] for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl")]
    torch.library.opcheck(postprocess._aggregate_op, (*heads, inputs["anchors"], 1 / 300, backend))
    track_args = (*heads, inputs["anchors"], inputs["window"], inputs["target_size"], 1 / 300, 0.04, 0.44, 0.4, True)
    torch.library.opcheck(postprocess._track_op, (*track_args, backend))
