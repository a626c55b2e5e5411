"""NanoTrack's whole per-frame step (crop, network, post-process, box update) on the real
Biker sequence with the real weights: SNLTracker against OpenCV's cv2.TrackerNano on
the same frames with the same weights (V1, V2), and against the published Python
tracker (V3, which cv2.TrackerNano cannot run); and the cost of SNLT's language head.

Before timing, each SNLTracker case tracks the whole sequence once and records in
extra_info how many frames' boxes differ from the baseline's (0: box for box the same).
Each timed round tracks the next frame, cycling through the sequence.
"""

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from bench._skips import skip_without_minilm

from snlt_fast.baselines.published_nanotrack import PublishedNanoTracker
from snlt_fast.models import NanoTrack, load_checkpoint
from snlt_fast.tracker import SNLTracker, TrackerConfig

SHARED = Path(__file__).resolve().parents[2] / "shared"
BIKER = SHARED / "data" / "otb" / "sequences" / "Biker"
WEIGHTS = SHARED / "weights" / "nanotrack"
SENTENCE = "man riding a motorbike wearing a white helmet"
ROUNDS = 100


@pytest.fixture(scope="module")
def biker():
    if not (BIKER.is_dir() and WEIGHTS.is_dir()):
        pytest.skip(f"real data or weights not found under {SHARED}")
    frames = [cv2.imread(str(path)) for path in sorted((BIKER / "img").glob("*.jpg"))]
    return frames, tuple(np.loadtxt(BIKER / "groundtruth_rect.txt", delimiter=",")[0])


class _OpenCVNano:
    def __init__(self, version):
        params = cv2.TrackerNano_Params()
        params.backbone = str(WEIGHTS / f"v{version}_backbone.onnx")
        params.neckhead = str(WEIGHTS / f"v{version}_head.onnx")
        self.tracker = cv2.TrackerNano_create(params)

    def init(self, frame, box):
        self.tracker.init(frame, tuple(int(v) for v in box))

    def track(self, frame):
        return self.tracker.update(frame)[1]


class _Ours:
    def __init__(self, model, config, precision, compile=False):
        self.tracker = SNLTracker(model, config, precision=precision, compile=compile)

    def init(self, frame, box, text=None):
        self.tracker.init(frame, box, text)

    def track(self, frame):
        return self.tracker.track(frame).box


def _sequence_boxes(tracker, frames, box):
    tracker.init(frames[0], box)
    return np.array([tracker.track(frame) for frame in frames[1:]], dtype=np.float64)


def _time(benchmark, tracker, frames):
    upcoming = itertools.cycle(frames[1:])
    benchmark.pedantic(lambda: tracker.track(next(upcoming)), rounds=ROUNDS, iterations=1, warmup_rounds=5)
    benchmark.extra_info["fps"] = round(1.0 / benchmark.stats.stats.median)


@pytest.mark.parametrize("version", [1, 2, 3])
@pytest.mark.parametrize("impl", ["baseline", "SNLTracker exact", "SNLTracker fast", "SNLTracker fast compile"])
def test_nanotrack_step(benchmark, biker, version, impl):
    frames, box = biker
    profile = "siamtrackers" if version == 3 else "opencv"
    model = load_checkpoint(WEIGHTS / f"nanotrackv{version}.pth")
    if version == 3:
        baseline_name, make_baseline = "published tracker (numpy post-processing)", lambda: PublishedNanoTracker(model)
    else:
        baseline_name, make_baseline = "cv2.TrackerNano (OpenCV 5.1, ONNX)", lambda: _OpenCVNano(version)
    benchmark.group = f"NanoTrack V{version} per-frame step cpu (Biker 640x360, 1 target)"
    if impl == "baseline":
        benchmark.extra_info.update(impl=baseline_name, baseline=True)
        tracker = make_baseline()
    else:
        precision, compile = impl.split()[1], impl.endswith("compile")
        benchmark.extra_info["impl"] = f"{impl} ({profile} profile)"
        tracker = _Ours(model, TrackerConfig.nanotrack(version, profile=profile), precision, compile)
        expected = _sequence_boxes(make_baseline(), frames, box)
        got = _sequence_boxes(tracker, frames, box)
        benchmark.extra_info["frames_differing_from_baseline"] = int(np.count_nonzero(np.abs(got - expected).max(axis=1) > 1e-6))
    tracker.init(frames[0], box)
    if impl.endswith("compile"):
        benchmark.extra_info["compile_s"] = round(tracker.tracker.compile_seconds, 1)
    _time(benchmark, tracker, frames)


@pytest.mark.parametrize("precision", ["exact", "fast"])
@pytest.mark.parametrize("impl", ["visual head only", "with the language head"])
def test_language_head_overhead(benchmark, biker, impl, precision):
    frames, box = biker
    skip_without_minilm()
    model = load_checkpoint(WEIGHTS / "nanotrackv2.pth", language="minilm")
    assert isinstance(model, NanoTrack) and model.has_language
    benchmark.group = f"NanoTrack V2 per-frame step cpu, {precision}: SNLT's language head (paper: 5-10% overhead)"
    benchmark.extra_info["impl"] = impl
    text = None
    if impl == "visual head only":
        benchmark.extra_info["baseline"] = True
    else:
        text = SENTENCE
    tracker = _Ours(model, TrackerConfig.nanotrack(2), precision)
    tracker.init(frames[0], box, text)
    with torch.inference_mode():
        _time(benchmark, tracker, frames)
