"""track_postprocess_points (snlt_fast/ops/postprocess_points.py): every fast backend
against the reference bit for bit, the reference against an independent numpy version of
the published NanoTrack post-processing (float64) and against numpy's float32 arithmetic,
the argmax rules (ties, NaN), the contract's exp, the CPU kernel's instruction sets and
threads, and the input errors.

The Triton backend runs through the interpreter here, so its shapes stay small.
"""

import ctypes
import math
import platform
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import snlt_fast
from conftest import devices_for
from snlt_fast.baselines.numpy_postprocess_points import track_postprocess_points_numpy
from snlt_fast.ops import postprocess_points
from test_postprocess import assert_results_equal, assert_same_bits, pointer, probe_library, replaced

BACKENDS = ("reference", "cpu", "triton", "cuda")
BACKEND_CASES = [(backend, device) for backend in BACKENDS for device in devices_for(backend)]
CPU_BACKENDS = ["reference", "cpu"]
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
STRIDE = 16
PARAMS = {"penalty_k": 0.148, "window_influence": 0.462, "lr": 0.39}


# --------------------------------------------------------------------------- inputs


def nanotrack_points(height, width, center=0.0):
    """[2, H, W] (px, py): the published tracker's grid, -(S//2)*16 + 16*i around the crop centre, plus `center`."""
    xs = -(width // 2) * STRIDE + STRIDE * torch.arange(width, dtype=torch.float64) + center
    ys = -(height // 2) * STRIDE + STRIDE * torch.arange(height, dtype=torch.float64) + center
    return torch.stack(torch.meshgrid(xs, ys, indexing="xy"))


def hanning_window(height, width):
    return torch.from_numpy(np.outer(np.hanning(height), np.hanning(width)))


def make_inputs(seed, *, batch=2, height=5, width=5, nl=True, dtype=torch.float32, logit_scale=3.0, loc_scale=0.5,
                target_scale=1.0, poison=0, layout="contiguous", center=0.0, device="cpu"):  # fmt: skip
    """Heads, points, window and target sizes drawn from `seed`; `poison` NaN and inf values in each head."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape):
        return torch.randn(shape, generator=generator, dtype=torch.float64)

    def head(values):
        flat = values.flatten()
        for kind, k in enumerate(torch.randperm(flat.numel(), generator=generator)[:poison].tolist()):
            flat[k] = (math.nan, math.inf, -math.inf)[kind % 3]
        values = values.to(dtype)
        if layout == "strided":  # the same values, every other element of a wider tensor
            holder = values.new_zeros((*values.shape[:-1], 2 * values.shape[-1]))
            holder[..., ::2] = values
            return holder[..., ::2].to(device)
        if layout == "channels_last":
            return values.contiguous(memory_format=torch.channels_last).to(device)
        return values.to(device)

    def cls():
        return head(randn(batch, 2, height, width) * logit_scale)

    def loc():
        # Distances to the edges around 24 pixels; large scales overflow to inf or reach 0.
        return head(torch.exp(randn(batch, 4, height, width) * loc_scale) * 24)

    points = nanotrack_points(height, width, center)
    window = hanning_window(height, width)
    if layout != "contiguous":  # the wrapper converts other dtypes and layouts
        points, window = points.float().transpose(1, 2).contiguous().transpose(1, 2), window.float().t().contiguous().t()
    target_size = (torch.rand((batch, 2), generator=generator, dtype=torch.float64) * 100 + 10) * target_scale
    return {
        "cls_vis": cls(),
        "cls_nl": cls() if nl else None,
        "loc_vis": loc(),
        "loc_nl": loc() if nl else None,
        "points": points.to(device),
        "window": window.to(device),
        "target_size": target_size.to(device),
    }


def track(inputs, backend, **params):
    return snlt_fast.track_postprocess_points(**inputs, **(PARAMS | params), backend=backend)


# --------------------------------------------------------------------------- backends = reference


case_settings = st.fixed_dictionaries(
    {
        "seed": st.integers(0, 2**31 - 1),
        "batch": st.integers(1, 8),
        "height": st.sampled_from([1, 3, 7, 15, 16]),
        "width": st.sampled_from([1, 4, 15, 16, 17]),
        "nl": st.booleans(),
        "dtype": st.sampled_from(DTYPES),
        # 400: logit gaps past exp's range give p == 0, p == 1 and subnormal p.
        "logit_scale": st.sampled_from([0.5, 3.0, 40.0, 400.0]),
        # Large scales give zero and infinite distances: boxes of size 0, inf or NaN.
        "loc_scale": st.sampled_from([0.3, 1.0, 8.0, 100.0]),
        "target_scale": st.sampled_from([1.0, 1.0, 1e-30, 1e30]),
        "poison": st.sampled_from([0, 0, 1, 3]),
        "layout": st.sampled_from(["contiguous", "strided", "channels_last"]),
        "center": st.sampled_from([0.0, 127.0]),
    }
)
param_settings = st.fixed_dictionaries(
    {
        "alpha": st.sampled_from([1 / 300, 0.05, 3.0]),
        "penalty_k": st.sampled_from([0.148, 0.0, 0.5, -0.2]),
        "window_influence": st.sampled_from([0.462, 0.0, 1.0, 1.3]),
        "lr": st.sampled_from([0.39, 1.0]),
        "lr_mode": st.sampled_from(["snlt", "pysot"]),
    }
)


def check_track(backend, device, case, params):
    inputs = make_inputs(**case, device=device)
    expected = track(inputs, "reference", **params, center=case["center"])
    actual = track(inputs, backend, **params, center=case["center"])
    assert type(actual) is snlt_fast.PointTrackResult
    assert_results_equal(actual, expected)
    assert actual.box.dtype == (torch.float64 if case["dtype"] == torch.float64 else torch.float32)
    assert bool(((actual.index >= 0) & (actual.index < case["height"] * case["width"])).all())


@pytest.mark.filterwarnings("ignore:All-NaN slice encountered:RuntimeWarning")
@pytest.mark.parametrize("backend, device", BACKEND_CASES)
@settings(max_examples=25)
@given(case=case_settings, params=param_settings)
def test_matches_reference(backend, device, case, params):
    check_track(backend, device, case, params)


@pytest.mark.parametrize("backend, device", BACKEND_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nl", [True, False])
def test_nanotrack_shapes_match_reference(backend, device, dtype, nl):
    """NanoTrack's 16x16 and 15x15 maps, one and eight targets, both lr modes, both centres."""
    for seed, (size, batch, lr_mode, center) in enumerate([(16, 1, "pysot", 0.0), (15, 8, "snlt", 127.0)]):
        case = dict(seed=seed, batch=batch, height=size, width=size, nl=nl, dtype=dtype, center=center)
        check_track(backend, device, case, dict(lr_mode=lr_mode))


@pytest.mark.parametrize("backend, device", BACKEND_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logit_gaps_past_the_range_of_exp(backend, device, dtype):
    """Gaps where exp overflows or underflows in T or in float64: p == 1, p == 0 and subnormal p."""
    inputs = make_inputs(8, batch=2, height=5, width=7, dtype=dtype, device=device)
    gaps = torch.tensor([-1000.0, -745.5, -720.0, -104.0, -88.0, 0.0, 87.5, 88.8, 103.5, 708.5, 709.9, 745.2, 1000.0])
    for head in ("cls_vis", "cls_nl"):
        cls = inputs[head]
        tiled = gaps.repeat(-(-cls[0, 1].numel() // len(gaps)))[: cls[0, 1].numel()].reshape(cls[0, 1].shape)
        cls[0, 0] = cls[0, 1] + tiled.to(dtype=dtype, device=device)
    assert_results_equal(track(inputs, backend), track(inputs, "reference"))


# --------------------------------------------------------------------------- the argmax rules


@pytest.mark.parametrize("backend, device", BACKEND_CASES)
@pytest.mark.parametrize("size", [5, 16, 23])
def test_ties_go_to_the_lowest_index(backend, device, size):
    """Equal logits, equal distances and a flat window: every cell has one pscore, and cell 0 wins
    (at 23x23 the map has more cells than the entropy's 256 lanes)."""
    ones = torch.ones
    result = snlt_fast.track_postprocess_points(
        ones(2, 2, size, size, device=device), ones(2, 2, size, size, device=device),
        ones(2, 4, size, size, device=device) * 20, ones(2, 4, size, size, device=device) * 20,
        nanotrack_points(size, size).to(device), torch.zeros(size, size, device=device),
        torch.tensor([[40.0, 40.0], [30.0, 60.0]], device=device), **PARAMS, backend=backend,
    )  # fmt: skip
    assert result.index.tolist() == [0, 0]
    assert result.w_vis.tolist() == [0.5, 0.5] and result.score.tolist() == [0.5, 0.5]


@pytest.mark.parametrize("backend, device", BACKEND_CASES)
@pytest.mark.parametrize("head", ["cls_vis", "loc_vis", "loc_nl"])
@pytest.mark.parametrize("size", [6, 23])
def test_nan_picks_the_first_nan_cell(backend, device, head, size):
    # (A NaN logit with an NL head poisons the weights: the next test.)
    inputs = make_inputs(5, batch=2, height=size, width=size, nl=head != "cls_vis", device=device)
    channel = inputs[head].shape[1] - 1
    inputs[head][1, channel, 4, size - 2] = math.nan  # two NaNs in target 1, none in target 0
    inputs[head][1, channel, 1, 3] = math.nan
    result = track(inputs, backend)
    assert result.index.tolist()[1] == 1 * size + 3
    assert math.isnan(result.pscore[1].item()) and not math.isnan(result.pscore[0].item())


@pytest.mark.parametrize("backend, device", BACKEND_CASES)
def test_nan_in_the_nl_logits_poisons_the_weights(backend, device):
    inputs = make_inputs(6, batch=1, device=device)
    inputs["cls_nl"][0, 0, 2, 2] = math.nan
    result = track(inputs, backend)
    assert result.index.tolist() == [0]
    assert math.isnan(result.h_nl.item()) and math.isnan(result.w_vis.item()) and math.isnan(result.score.item())


@pytest.mark.parametrize("backend, device", BACKEND_CASES)
def test_visual_head_only(backend, device):
    result = track(make_inputs(7, nl=False, device=device), backend)
    assert result.w_vis.tolist() == [1.0, 1.0] and result.w_nl.tolist() == [0.0, 0.0]
    assert result.h_nl.isnan().all() and not result.h_vis.isnan().any()


@pytest.mark.parametrize("backend, device", BACKEND_CASES)
def test_no_targets(backend, device):
    result = track(make_inputs(9, batch=0, device=device), backend)
    assert result.index.shape == (0,) and result.box.shape == (0, 4) and result.lr.shape == (0,)


@pytest.mark.parametrize("backend, device", BACKEND_CASES)
def test_unchecked_invalid_target_size_gives_nan(backend, device):
    """The kernels' own rule, for sizes no host check saw (device tensors, compiled graphs)."""
    inputs = make_inputs(20, batch=3, device=device)
    inputs["target_size"][1, 0] = -3.0
    inputs["target_size"][2, 1] = math.inf
    args = [inputs[k].float() for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl", "points", "window", "target_size")]
    outputs = postprocess_points._track_points_op(*args, 1 / 300, 0.148, 0.462, 0.39, 0.0, True, backend)
    result = snlt_fast.PointTrackResult(*outputs)
    assert result.index.tolist()[1:] == [0, 0]
    assert not any(field[0].isnan().any() for field in result[1:])
    assert result.pscore[1:].isnan().all() and result.lr[1:].isnan().all()
    assert not result.box[1:].isnan().any() and not result.score[1:].isnan().any()


# --------------------------------------------------------------------------- T and the published semantics


@pytest.mark.parametrize("backend, device", BACKEND_CASES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_heads_compute_in_float32(backend, device, dtype):
    inputs = make_inputs(10, dtype=dtype, device=device)
    as_float32 = {k: None if v is None else v.float() for k, v in inputs.items()}
    assert_results_equal(track(inputs, backend), track(as_float32, "reference"))


def nanotrack_numpy(cls, loc, window, target_size, *, penalty_k, window_influence, lr):
    """The published NanoTrack tracker's post-processing of one target (its track method),
    on one head [2, S, S] / [4, S, S] in float64: softmax score, points around the crop
    centre, corner decoding, penalty, cosine window, argmax; returns (index, box, lr)."""
    size = cls.shape[-1]
    score = np.exp(cls.reshape(2, -1).T)
    score = (score / score.sum(axis=1, keepdims=True))[:, 1]
    origin = -(size // 2) * STRIDE
    x, y = np.meshgrid(origin + STRIDE * np.arange(size), origin + STRIDE * np.arange(size))
    points = np.stack((x.flatten(), y.flatten()), axis=1).astype(np.float64)
    delta = loc.reshape(4, -1)
    x1, y1 = points[:, 0] - delta[0], points[:, 1] - delta[1]
    x2, y2 = points[:, 0] + delta[2], points[:, 1] + delta[3]
    box = np.stack(((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))

    def change(r):
        return np.maximum(r, 1.0 / r)

    def sz(w, h):
        pad = (w + h) * 0.5
        return np.sqrt((w + pad) * (h + pad))

    s_c = change(sz(box[2], box[3]) / sz(target_size[0], target_size[1]))
    r_c = change((target_size[0] / target_size[1]) / (box[2] / box[3]))
    penalty = np.exp(-(r_c * s_c - 1) * penalty_k)
    pscore = penalty * score
    pscore = pscore * (1 - window_influence) + window.flatten() * window_influence
    best = int(np.argmax(pscore))
    return best, box[:, best], penalty[best] * score[best] * lr


@settings(max_examples=25)
@given(seed=st.integers(0, 2**31 - 1), size=st.sampled_from([15, 16]), batch=st.integers(1, 8))
def test_reference_matches_published_nanotrack(seed, size, batch):
    inputs = make_inputs(seed, batch=batch, height=size, width=size, nl=False, dtype=torch.float64)
    result = track(inputs, "reference")
    for b in range(batch):
        index, box, lr = nanotrack_numpy(
            inputs["cls_vis"][b].numpy(), inputs["loc_vis"][b].numpy(), inputs["window"].numpy(),
            inputs["target_size"][b].numpy(), **PARAMS,
        )  # fmt: skip
        assert result.index[b].item() == index
        np.testing.assert_allclose(result.box[b].numpy(), box, rtol=1e-9)
        np.testing.assert_allclose(result.lr[b].item(), lr, rtol=1e-9)


@pytest.mark.parametrize("nl", [True, False])
def test_numpy_baseline_agrees(nl):
    """The benchmark's baseline (snlt_fast.baselines.numpy_postprocess_points), with SNLT's aggregation too."""
    inputs = make_inputs(3, batch=4, height=16, width=16, nl=nl, dtype=torch.float64)
    expected = track_postprocess_points_numpy(**{k: None if v is None else v.numpy() for k, v in inputs.items()}, **PARAMS)
    result = track(inputs, "cpu")
    np.testing.assert_array_equal(result.index.numpy(), expected.index)
    for name in ("box", "score", "pscore", "lr", "w_vis", "w_nl", "h_vis"):
        np.testing.assert_allclose(getattr(result, name).numpy(), getattr(expected, name), rtol=1e-9, err_msg=name)


def test_float32_heads_take_float32_arithmetic():
    """The visual head's post-processing in numpy float32, the contract's order, exp taken in
    float64 and rounded once: the same index and bits (np.exp and the contract's exp64 agree
    to an ulp of float64, which rounding to float32 hides at these seeds)."""
    f32 = np.float32
    for seed in range(4):
        inputs = make_inputs(seed, batch=3, height=16, width=16, nl=False, center=127.0)
        cls, loc = inputs["cls_vis"].numpy(), inputs["loc_vis"].numpy()
        px, py = inputs["points"].numpy().astype(f32)
        window = inputs["window"].numpy().astype(f32)
        result = track(inputs, "reference", center=127.0)
        for b in range(3):
            p = f32(1) / (f32(1) + np.exp((cls[b, 0] - cls[b, 1]).astype(np.float64)).astype(f32))
            x1, y1, x2, y2 = px - loc[b, 0], py - loc[b, 1], px + loc[b, 2], py + loc[b, 3]
            w, h = x2 - x1, y2 - y1
            tw, th = inputs["target_size"][b].numpy().astype(f32)

            def sz(w, h):
                pad = (w + h) * f32(0.5)
                return np.sqrt((w + pad) * (h + pad))

            s_c = sz(w, h) / sz(tw, th)
            r_c = (tw / th) / (w / h)
            s_c, r_c = np.maximum(s_c, f32(1) / s_c), np.maximum(r_c, f32(1) / r_c)
            penalty = np.exp(((f32(1) - r_c * s_c) * f32(PARAMS["penalty_k"])).astype(np.float64)).astype(f32)
            wi = f32(PARAMS["window_influence"])
            pscore = penalty * p * (f32(1) - wi) + window * wi
            best = int(np.argmax(pscore))
            box = np.stack(((x1 + x2) * f32(0.5) - f32(127), (y1 + y2) * f32(0.5) - f32(127), w, h)).reshape(4, -1)
            assert result.index[b].item() == best
            assert result.box[b].numpy().tobytes() == box[:, best].tobytes()
            assert result.pscore[b].item() == pscore.flatten()[best]


def within_an_ulp(actual, expected):
    with np.errstate(invalid="ignore"):  # inf - inf, where they are equal
        return bool(np.all((actual == expected) | (np.abs(actual - expected) <= np.spacing(np.abs(expected)))))


def test_exp_is_accurate():
    """The contract's exp64 within an ulp of libm's, special values included (its log is
    anchor_targets' log_float64, tested there)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(20000, generator=generator, dtype=torch.float64) * 300,
                   torch.tensor([0.0, -0.0, 709.78, 709.79, -745.1, -745.2, -1e3, 1e3, math.inf, -math.inf])])  # fmt: skip
    with np.errstate(over="ignore"):
        expected = np.exp(x.numpy())
    assert within_an_ulp(postprocess_points.exp64(x).numpy(), expected)
    assert postprocess_points.exp64(torch.tensor([math.nan], dtype=torch.float64)).isnan().all()


# --------------------------------------------------------------------------- bad input


BAD_INPUTS = [
    (lambda i: replaced(i, cls_vis=i["cls_vis"][:, :1]), ValueError, "cls_vis must be"),
    (lambda i: replaced(i, cls_vis=i["cls_vis"][..., :0]), ValueError, "cls_vis must be"),
    (lambda i: replaced(i, loc_vis=i["loc_vis"][:, :3]), ValueError, "loc_vis"),
    (lambda i: replaced(i, cls_nl=i["cls_nl"][:1]), ValueError, "cls_nl"),
    (lambda i: replaced(i, loc_nl=None), ValueError, "loc_nl"),
    (lambda i: replaced(i, points=i["points"][:, :2]), ValueError, "points"),
    (lambda i: replaced(i, points=i["points"][0]), ValueError, "points"),
    (lambda i: replaced(i, window=i["window"][1:]), ValueError, "window"),
    (lambda i: replaced(i, target_size=i["target_size"][:1]), ValueError, "target_size"),
    (lambda i: replaced(i, target_size=torch.tensor([[10.0, 0.0], [5.0, 5.0]])), ValueError, "target_size"),
    (lambda i: replaced(i, target_size=torch.tensor([[1e40, 5.0], [5.0, 5.0]], dtype=torch.float64)), ValueError, "target_size"),
    (lambda i: replaced(i, target_size=(10.0, math.nan)), ValueError, "target_size"),
    (lambda i: replaced(i, target_size="big"), TypeError, "target_size"),
    (lambda i: replaced(i, cls_vis=i["cls_vis"].to(torch.int32)), TypeError, "cls_vis"),
    (lambda i: replaced(i, loc_vis=i["loc_vis"].double()), TypeError, "dtype"),
    (lambda i: replaced(i, points=i["points"].to("meta")), ValueError, "points must be on the device"),
    (lambda i: replaced(i, window=[1.0]), TypeError, "window"),
    (lambda i: replaced(i, cls_vis=[1.0]), TypeError, "cls_vis"),
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kernel_form", [False, True])
@pytest.mark.parametrize("change, error, match", BAD_INPUTS)
def test_bad_input(change, error, match, kernel_form, backend):
    """One error naming the argument, for strided inputs (the Python checks) and for inputs
    in kernel form, which the native op checks first on the cpu backend."""
    inputs = make_inputs(13, layout="contiguous" if kernel_form else "strided")
    if kernel_form:
        inputs |= {k: inputs[k].float() for k in ("points", "window", "target_size")}
    inputs = change(inputs)
    with pytest.raises(error, match=match):
        track(inputs, backend)


@pytest.mark.parametrize(
    "params, error, match",
    [
        (dict(lr_mode="fast"), ValueError, "lr_mode"),
        (dict(alpha=math.nan), TypeError, "alpha"),
        (dict(penalty_k="0.04"), TypeError, "penalty_k"),
        (dict(window_influence=True), TypeError, "window_influence"),
        (dict(lr=None), TypeError, "lr"),
        (dict(center=math.inf), TypeError, "center"),
        (dict(backend="gpu"), ValueError, "backend"),
    ],
)
def test_bad_parameters(params, error, match):
    with pytest.raises(error, match=match):
        snlt_fast.track_postprocess_points(**make_inputs(14), **(PARAMS | params))


def test_penalty_window_and_lr_have_no_defaults():
    with pytest.raises(TypeError, match="penalty_k"):
        snlt_fast.track_postprocess_points(**make_inputs(14), window_influence=0.4, lr=0.4)


# --------------------------------------------------------------------------- op registration


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiles_without_graph_breaks(backend, dtype):
    inputs = make_inputs(19, batch=2, height=3, width=4, dtype=dtype)
    compiled = torch.compile(lambda inputs: track(inputs, backend), backend="eager", fullgraph=True)
    assert_results_equal(compiled(inputs), track(inputs, backend))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("nl", [True, False])
def test_custom_op_passes_opcheck(backend, dtype, nl):
    inputs = make_inputs(18, batch=2, height=3, width=4, dtype=dtype, nl=nl)
    args = [inputs[k] for k in ("cls_vis", "cls_nl", "loc_vis", "loc_nl")]
    args += [inputs[k].to(dtype) for k in ("points", "window", "target_size")]
    # Without the NL head h_nl is NaN, which the traced-versus-eager comparison counts as a difference.
    checks = ("test_schema", "test_autograd_registration", "test_faketensor") + (("test_aot_dispatch_dynamic",) if nl else ())
    torch.library.opcheck(
        postprocess_points._track_points_op, (*args, 1 / 300, 0.148, 0.462, 0.39, 127.0, False, backend), test_utils=checks
    )


# --------------------------------------------------------------------------- the CPU kernel


@pytest.mark.parametrize("threads", [2, 3])
def test_cpu_results_do_not_depend_on_the_thread_count(threads):
    inputs = make_inputs(12, batch=8, height=16, width=16)
    default_threads = torch.get_num_threads()
    try:
        results = []
        for count in (1, threads):
            torch.set_num_threads(count)
            results.append(track(inputs, "cpu"))
    finally:
        torch.set_num_threads(default_threads)
    assert_results_equal(*results)


@pytest.mark.skipif(platform.machine() != "x86_64" or shutil.which("g++") is None, reason="needs g++ on x86-64")
@pytest.mark.parametrize("instruction_set", ["x86-64-v3", "x86-64"])
def test_cpu_kernel_gives_the_same_bits_on_every_instruction_set(instruction_set, tmp_path):
    """The loops that AVX2 machines and baseline x86-64 ones run (target_clones picks the
    AVX-512 ones where there are) against the installed build, in both dtypes."""
    library = probe_library(instruction_set, tmp_path, "postprocess_points_isa_probe.cpp", "postprocess_points/points_cpu.cpp")
    numbers = torch.tensor([1 / 300, 0.148, 0.462, 0.39, 127.0], dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        for nl in (True, False):
            inputs = make_inputs(13, batch=3, height=16, width=17, nl=nl, dtype=dtype, logit_scale=40.0, loc_scale=8.0)
            inputs |= {k: inputs[k].to(dtype) for k in ("points", "window", "target_size")}
            expected = track(inputs, "cpu", center=127.0, lr_mode="snlt")
            index, box = torch.empty_like(expected.index), torch.empty_like(expected.box)
            values = torch.empty(len(expected) - 2, 3, dtype=dtype)  # a row per field after the box
            names = ("cls_vis", "cls_nl", "loc_vis", "loc_nl", "points", "window", "target_size")
            pointers = (ctypes.c_void_p * len(names))(*(None if inputs[k] is None else inputs[k].data_ptr() for k in names))
            library.probe_track_points(
                ctypes.c_int(dtype == torch.float64), pointers, *(ctypes.c_int64(v) for v in (3, 16, 17)), pointer(numbers),
                ctypes.c_int(1), *map(pointer, (index, box, values)),
            )  # fmt: skip
            assert torch.equal(index, expected.index)
            assert_same_bits(box, expected.box)
            assert_same_bits(values, torch.stack(expected[2:]))
