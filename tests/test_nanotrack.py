"""NanoTrack V1-V3: the networks against the published weights and their ONNX exports, the
two tracker profiles against cv2.TrackerNano and an independent numpy tracker, batch-norm
folding, checkpoint errors, and `snlt track` on NanoTrack weights."""

import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from conftest import SHARED_DATA
from snlt_fast.baselines.published_nanotrack import PublishedNanoTracker
from snlt_fast.models import CheckpointError, NanoTrack, build_model, load_checkpoint
from snlt_fast.nn import fold_batchnorm
from snlt_fast.tracker import SNLTracker, TrackerConfig

WEIGHTS = SHARED_DATA.parent / "weights" / "nanotrack"
BIKER = SHARED_DATA / "otb" / "sequences" / "Biker"
# Learnable parameters the network uses (the checkpoints' unused neck left out): total, backbone.
PARAMETERS = {1: (287_966, 190_520), 2: (334_078, 190_520), 3: (541_446, 282_368)}

needs_weights = pytest.mark.skipif(not WEIGHTS.is_dir(), reason=f"NanoTrack weights not found at {WEIGHTS}")
needs_biker = pytest.mark.skipif(not (BIKER.is_dir() and WEIGHTS.is_dir()), reason="Biker frames or NanoTrack weights absent")


def _randomise_batchnorm(model, seed=0):
    """Batch-norm statistics away from (0, 1), so that folding them is a real test."""
    generator = torch.Generator().manual_seed(seed)
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.running_mean.copy_(torch.randn(norm.num_features, generator=generator) * 0.1)
        norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
        norm.weight.data.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
        norm.bias.data.copy_(torch.randn(norm.num_features, generator=generator) * 0.1)
    return model.eval()


def _crops(seed=0, batch=1):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, 127, 127, generator=generator) * 255, torch.rand(batch, 3, 255, 255, generator=generator) * 255


def _heads(model, z, x, text=None):
    model.template(z, text)
    return model.track(x)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_parameter_counts_and_shapes(version):
    model = NanoTrack(version).eval()
    total, backbone = PARAMETERS[version]
    assert sum(p.numel() for p in model.parameters()) == total
    assert sum(p.numel() for p in model.backbone.parameters()) == backbone
    z, x = _crops(batch=2)
    channels = 96 if version == 3 else 48
    assert model.backbone(z).shape == (2, channels, 8, 8)
    assert model.backbone(x).shape == (2, channels, 16, 16)
    heads = _heads(_randomise_batchnorm(model), z, x)
    side = model.score_size
    assert heads["cls"].shape == (2, 2, side, side) and heads["loc"].shape == (2, 4, side, side)
    assert (heads["loc"] > 0).all()  # the exp is inside the network


@pytest.mark.parametrize("make", [lambda: NanoTrack(3), lambda: build_model("siamrpn_alex"), lambda: build_model("siamrpn_r50_l234")])
def test_fold_batchnorm_computes_the_same_function(make):
    torch.manual_seed(0)
    model = _randomise_batchnorm(make())
    before = {key: value.clone() for key, value in model.state_dict().items()}
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())  # a copy was folded
    z, x = _crops()
    if isinstance(model, NanoTrack):
        z_side, x_side = z, x
    else:
        z_side, x_side = z, torch.nn.functional.interpolate(x, size=model.instance_size)
    with torch.no_grad():
        expected, got = _heads(model, z_side, x_side), _heads(folded, z_side, x_side)
    for name in expected:
        scale = expected[name].abs().max()
        assert (expected[name] - got[name]).abs().max() <= 1e-4 * scale, name


def test_language_head_gives_maps_of_the_visual_shape(tmp_path):
    from training_helpers import write_word_vectors

    vectors = write_word_vectors(tmp_path / "words.txt")
    model = _randomise_batchnorm(NanoTrack(2, language=str(vectors)))
    z, x = _crops(batch=2)
    heads = _heads(model, z, x, ["the red box", "the small square"])
    assert set(heads) == {"cls", "loc", "nl_cls", "nl_loc"}
    assert heads["nl_cls"].shape == heads["cls"].shape and heads["nl_loc"].shape == heads["loc"].shape
    with pytest.raises(ValueError, match="no language head"):
        NanoTrack(2).template(z, "the red box")


def test_tracker_fuses_the_language_head_by_entropy(tmp_path):
    from training_helpers import write_word_vectors

    vectors = write_word_vectors(tmp_path / "words.txt")
    model = _randomise_batchnorm(NanoTrack(1, language=str(vectors)))
    frames = np.random.default_rng(0).integers(0, 256, (3, 120, 160, 3), dtype=np.uint8)
    tracker = SNLTracker(model)
    tracker.init(frames[0], (60, 40, 30, 20), "the red box")
    for frame in frames[1:]:
        result = tracker.track(frame)
        assert math.isclose(result.w_vis + result.w_nl, 1.0, rel_tol=1e-6)
        assert 0 < result.w_nl < 1 and all(math.isfinite(v) for v in result.box)


def test_profiles_are_checked():
    with pytest.raises(ValueError, match="profile"):
        TrackerConfig.nanotrack(2, profile="pysot")
    with pytest.raises(ValueError, match="version"):
        TrackerConfig.nanotrack(4)
    with pytest.raises(ValueError, match="NanoTrack"):
        SNLTracker(build_model("siamrpn_alex"), TrackerConfig.nanotrack(2))
    with pytest.raises(ValueError, match="NanoTrack profile"):
        SNLTracker(NanoTrack(2), TrackerConfig.snlt())


# --------------------------------------------------------------------------- real weights


@needs_weights
@pytest.mark.parametrize("version", [1, 2, 3])
def test_checkpoint_and_onnx_pair_hold_the_same_network(version):
    pytest.importorskip("onnx")
    from_pth = load_checkpoint(WEIGHTS / f"nanotrackv{version}.pth")  # weights_only, with the numpy allow-list
    assert from_pth.arch == f"nanotrack_v{version}"
    from_onnx = load_checkpoint([WEIGHTS / f"v{version}_backbone.onnx", WEIGHTS / f"v{version}_head.onnx"])
    assert from_onnx.arch == from_pth.arch
    z, x = _crops(seed=version)
    expected, got = _heads(from_pth, z, x), _heads(from_onnx, z, x)
    for name in ("cls", "loc"):
        assert (expected[name] - got[name]).abs().max() <= 1e-5 * expected[name].abs().max(), name


@needs_weights
def test_checkpoint_errors_name_the_problem(tmp_path):
    pytest.importorskip("onnx")
    with pytest.raises(CheckpointError, match="holds a NanoTrack model"):
        load_checkpoint(WEIGHTS / "nanotrackv2.pth", arch="nanotrack_v1")
    with pytest.raises(CheckpointError, match="not a NanoTrack backbone and head"):
        load_checkpoint([WEIGHTS / "v1_backbone.onnx", WEIGHTS / "v3_head.onnx"])
    with pytest.raises(CheckpointError, match="pair of files"):
        load_checkpoint([WEIGHTS / "v1_backbone.onnx"])
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        load_checkpoint([broken, WEIGHTS / "v1_head.onnx"])


def _biker():
    frames = [cv2.imread(str(path)) for path in sorted((BIKER / "img").glob("*.jpg"))]
    boxes = np.loadtxt(BIKER / "groundtruth_rect.txt", delimiter=",")
    return frames, boxes


def _opencv_boxes(version, frames, box):
    params = cv2.TrackerNano_Params()
    params.backbone = str(WEIGHTS / f"v{version}_backbone.onnx")
    params.neckhead = str(WEIGHTS / f"v{version}_head.onnx")
    tracker = cv2.TrackerNano_create(params)
    tracker.init(frames[0], tuple(int(v) for v in box))
    return np.array([tracker.update(frame)[1] for frame in frames[1:]], dtype=np.float64)


@needs_biker
@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("source", ["pth", "onnx"])
@pytest.mark.parametrize("precision", ["exact", "fast"])  # fast: the fused network, float32
def test_opencv_profile_gives_cv2_tracker_nanos_boxes(version, source, precision):
    if source == "onnx":
        pytest.importorskip("onnx")
    frames, truth = _biker()
    expected = _opencv_boxes(version, frames, truth[0])
    weights = WEIGHTS / f"nanotrackv{version}.pth"
    if source == "onnx":
        weights = [WEIGHTS / f"v{version}_backbone.onnx", WEIGHTS / f"v{version}_head.onnx"]
    config = TrackerConfig.nanotrack(version, profile="opencv")
    tracker = SNLTracker(load_checkpoint(weights), config, precision=precision)
    tracker.init(frames[0], tuple(truth[0]))
    got = np.array([tracker.track(frame).box for frame in frames[1:]])
    off = np.abs(got - expected).max(axis=1)
    # A float tie in OpenCV's integer truncation may flip one frame's box by a pixel.
    assert np.count_nonzero(off) <= 1 and off.max() <= 1, f"frames {np.flatnonzero(off).tolist()} differ by {off.max()}"


@needs_biker
@pytest.mark.parametrize("version", [2, 3])
def test_siamtrackers_profile_follows_the_published_tracker(version):
    frames, truth = _biker()
    model = load_checkpoint(WEIGHTS / f"nanotrackv{version}.pth")
    published = PublishedNanoTracker(model)
    published.init(frames[0], truth[0])
    expected = np.array([published.track(frame) for frame in frames[1:]])
    tracker = SNLTracker(model, TrackerConfig.nanotrack(version, profile="siamtrackers"))
    tracker.init(frames[0], tuple(truth[0]))
    got = np.array([tracker.track(frame).box for frame in frames[1:]])
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


@needs_biker
def test_snlt_track_runs_nanotrack_weights(tmp_path):
    pytest.importorskip("onnx")
    frames = tmp_path / "img"
    frames.mkdir()
    for path in sorted((BIKER / "img").glob("*.jpg"))[:6]:
        (frames / path.name).write_bytes(path.read_bytes())
    truth = BIKER / "groundtruth_rect.txt"
    runs = {
        "pth": ["--weights", str(WEIGHTS / "nanotrackv2.pth")],
        "onnx": ["--weights", str(WEIGHTS / "v2_backbone.onnx"), str(WEIGHTS / "v2_head.onnx"), "--profile", "opencv"],
    }
    for name, weights in runs.items():
        boxes = tmp_path / f"{name}.txt"
        command = [sys.executable, "-m", "snlt_fast", "track", str(frames), "--init-from", str(truth), *weights]
        done = subprocess.run([*command, "--boxes", str(boxes), "--no-progress"], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert len(boxes.read_text().splitlines()) == 6
    done = subprocess.run(
        [sys.executable, "-m", "snlt_fast", "track", str(frames), "--init-from", str(truth), "--weights",
         str(WEIGHTS / "v2_head.onnx"), "--no-progress"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode != 0 and "Traceback" not in done.stderr and "two ONNX files" in done.stderr


def test_our_checkpoint_format_round_trips_nanotrack(tmp_path):
    from snlt_fast.models import save_checkpoint

    model = _randomise_batchnorm(NanoTrack(3))
    path = save_checkpoint(model, tmp_path / "nano.pth")
    loaded = load_checkpoint(path)
    assert loaded.arch == "nanotrack_v3" and not loaded.has_language
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    with pytest.raises(ValueError, match="batch-norm folded"):
        save_checkpoint(fold_batchnorm(model), tmp_path / "folded.pth")
