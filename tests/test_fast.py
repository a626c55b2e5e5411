"""precision="fast": what it changes (a folded, channels-last copy; reduced precision only
where the hardware computes it), that the caller's model and the exact mode are left as
they were, and that its boxes keep the exact mode's on real data with real weights: per
video mean IoU >= 0.95 against "exact" and success AUC within 1 point."""

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, requires_minilm
from snlt_fast.evaluation.metrics import iou, success_curve
from snlt_fast.models import NanoTrack, build_model, load_checkpoint
from snlt_fast.tracker import SNLTracker, TrackerConfig, calibrate_random_weights
from snlt_fast.tracker.fast import cpu_computes_bfloat16, plan_fast, reduced_precision_for

WEIGHTS = SHARED_DATA.parent / "weights" / "nanotrack"
BIKER = SHARED_DATA / "otb" / "sequences" / "Biker"


def test_fast_plan_folds_a_copy_and_picks_precision_by_hardware():
    model = NanoTrack(2).eval()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    plan = plan_fast(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in plan.model.modules())
    assert plan.model.backbone.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert plan.autocast_dtype is None  # NanoTrack runs on the fused network, in float32
    snlt_plan = plan_fast(build_model("siamrpn_alex").eval())
    assert snlt_plan.autocast_dtype is (torch.bfloat16 if cpu_computes_bfloat16() else None)
    assert plan_fast(model, reduced="bfloat16").autocast_dtype is torch.bfloat16
    assert reduced_precision_for(torch.device("cuda")) is torch.float16
    assert reduced_precision_for(torch.device("cpu"), "float32") is None
    with pytest.raises(ValueError, match="reduced must be one of"):
        reduced_precision_for(torch.device("cpu"), "int8")


def test_precision_is_checked():
    with pytest.raises(ValueError, match="precision must be one of 'exact', 'fast'"):
        SNLTracker(NanoTrack(2), precision="quick")


def test_fast_runs_snlt_models_with_finite_boxes():
    # Random weights: a speed-only check that the mode runs end to end (their boxes are chaotic).
    torch.manual_seed(0)
    frames = np.random.default_rng(0).integers(0, 256, (3, 200, 240, 3), dtype=np.uint8)
    model = calibrate_random_weights(build_model("siamrpn_alex"), frames[0], (100, 80, 40, 30))
    exact = SNLTracker(model, TrackerConfig.pysot("alexnet"))
    fast = SNLTracker(model, TrackerConfig.pysot("alexnet"), precision="fast")
    for tracker in (exact, fast):
        tracker.init(frames[0], (100, 80, 40, 30))
        for frame in frames[1:]:
            assert all(np.isfinite(tracker.track(frame).box))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the caller's model is untouched


def test_compile_needs_the_fast_mode_and_no_cuda_graph():
    with pytest.raises(ValueError, match="compile=True needs precision='fast'"):
        SNLTracker(NanoTrack(2), compile=True)
    with pytest.raises(ValueError, match="choose one"):
        SNLTracker(NanoTrack(2), precision="fast", compile=True, cuda_graph=True)


@pytest.mark.skipif(not (WEIGHTS.is_dir() and BIKER.is_dir()), reason="NanoTrack weights or the Biker frames absent")
@pytest.mark.parametrize(
    "version, profile, compile",
    [(1, "opencv", False), (2, "opencv", False), (2, "opencv", True), (2, "siamtrackers", False), (3, "siamtrackers", False)],
)
def test_fast_keeps_the_exact_boxes_on_real_data(version, profile, compile):
    import cv2

    frames = [cv2.imread(str(path)) for path in sorted((BIKER / "img").glob("*.jpg"))]
    truth = np.loadtxt(BIKER / "groundtruth_rect.txt", delimiter=",")
    model = load_checkpoint(WEIGHTS / f"nanotrackv{version}.pth")
    boxes = {}
    for precision in ("exact", "fast"):
        options = {"compile": compile} if precision == "fast" else {}
        tracker = SNLTracker(model, TrackerConfig.nanotrack(version, profile=profile), precision=precision, **options)
        tracker.init(frames[0], tuple(truth[0]))
        boxes[precision] = np.array([truth[0]] + [tracker.track(frame).box for frame in frames[1:]])
    assert iou(boxes["fast"], boxes["exact"]).mean() >= 0.95
    auc = {precision: success_curve(truth, found).mean() for precision, found in boxes.items()}
    assert abs(auc["fast"] - auc["exact"]) <= 0.01, auc


@requires_minilm
def test_compile_happens_at_init_and_keeps_the_boxes():
    from torch._dynamo.utils import counters

    from snlt_fast.datasets import SyntheticNL
    from snlt_fast.datasets.synthetic import HELD_OUT_SEED_START
    from snlt_fast.models import load_default
    from snlt_fast.tracker import default_config

    model = load_default("cpu")
    config = default_config(model).replace(long_term=False)
    video = SyntheticNL(videos=1, frames=30, seed=HELD_OUT_SEED_START, kind="distractor")[0]
    frames = list(video.frames())
    exact, compiled = SNLTracker(model, config), SNLTracker(model, config, precision="fast", compile=True)
    boxes = {}
    for tracker in (exact, compiled):
        tracker.init(frames[0], video.init_box, video.sentence)
        graphs = counters["stats"]["unique_graphs"]
        boxes[tracker] = np.array([video.init_box] + [tracker.track(frame).box for frame in frames[1:]])
        assert counters["stats"]["unique_graphs"] == graphs  # nothing compiled on a tracked frame
    assert compiled.compile_seconds > 0 and exact.compile_seconds == 0
    assert iou(boxes[compiled], boxes[exact]).mean() >= 0.95
    first = compiled.compile_seconds
    compiled.init(frames[0], video.init_box, video.sentence)
    assert compiled.compile_seconds == first  # once per target count


@requires_minilm
def test_fast_keeps_the_default_models_boxes_on_held_out_scenes():
    from snlt_fast.datasets import SyntheticNL
    from snlt_fast.datasets.synthetic import HELD_OUT_SEED_START
    from snlt_fast.models import load_default
    from snlt_fast.tracker import default_config

    model = load_default("cpu")
    config = default_config(model).replace(long_term=False)
    for video in SyntheticNL(videos=3, frames=40, seed=HELD_OUT_SEED_START, kind="distractor"):
        boxes = {}
        for precision in ("exact", "fast"):
            tracker = SNLTracker(model, config, precision=precision)
            found = [video.init_box]
            for index, frame in enumerate(video.frames()):
                if index == 0:
                    tracker.init(frame, video.init_box, video.sentence)
                else:
                    found.append(tracker.track(frame).box)
            boxes[precision] = np.array(found)
        assert iou(boxes["fast"], boxes["exact"]).mean() >= 0.95, video.name
        auc = {p: success_curve(video.boxes, b, video.absent).mean() for p, b in boxes.items()}
        assert abs(auc["fast"] - auc["exact"]) <= 0.01, (video.name, auc)


def test_compiled_steps_of_two_models_keep_their_own_weights():
    # Compiled graphs are cached per function, and freezing bakes the weights in: the
    # guards must tell two deployment copies apart (as they do, on the parameters).
    torch.manual_seed(0)
    first = NanoTrack(2).eval()
    second = NanoTrack(2).eval()
    with torch.no_grad():
        for parameter in second.ban_head.parameters():
            parameter.mul_(0.5)
    template = torch.rand(1, 3, 127, 127) * 255
    search = torch.rand(1, 3, 255, 255) * 255
    with torch.inference_mode():
        for model in (first, second):
            fast = plan_fast(model, compile=True).model
            state = fast.template(template.contiguous(memory_format=torch.channels_last))
            fast.track.warm_up(state, 1)
            got = fast.track(search.contiguous(memory_format=torch.channels_last), state)["cls"]
            expected = model.track(search, model.template(template))["cls"]
            torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item())
