"""SNLTracker on the real Biker sequence with random (batch-norm calibrated) weights:
fast against reference, text-free against an independent SiamRPN++ tracker, batched
targets against single-target trackers, long-term mode, and bad input.

The routine tests use AlexNet SNLT on the first frames; SNLT_FULL_SEQUENCE=1 runs
the whole 142-frame sequence with ResNet-50 SNLT as well.
"""

import os

import cv2
import numpy as np
import pytest
import torch
from scipy.special import softmax

from conftest import HAS_CUDA, SHARED_DATA, skip_without_minilm
from snlt_fast.baselines.published_tracker import PublishedTracker
from model_helpers import write_word_vectors
from snlt_fast.models import SNLT, NanoTrack, build_model
from snlt_fast.tracker import NonFiniteOutputError, SNLTracker, TrackerConfig, calibrate_random_weights, default_config
from snlt_fast.tracker.crop import channel_fill, crop_and_resize, frame_to_tensor

BIKER = SHARED_DATA / "otb" / "sequences" / "Biker"
SENTENCE = "man riding a motorbike wearing a white helmet"
FULL_SEQUENCE = os.environ.get("SNLT_FULL_SEQUENCE") == "1"
# A second and third target in Biker's first frame (background patches), for batching.
OTHER_BOXES = [(420.0, 200.0, 40.0, 30.0), (100.0, 250.0, 25.0, 50.0)]
OTHER_SENTENCES = ["a patch of road", "the grass on the left"]


@pytest.fixture(scope="module")
def biker():
    """(frames, first box 0-based x, y, w, h)."""
    if not BIKER.is_dir():
        pytest.skip(f"real data not found at {BIKER}")
    paths = sorted((BIKER / "img").glob("*.jpg"))
    frames = [cv2.imread(str(path)) for path in paths]
    first_line = (BIKER / "groundtruth_rect.txt").read_text().splitlines()[0]
    x, y, w, h = (float(v) for v in first_line.replace("\t", ",").split(","))
    return frames, (x - 1, y - 1, w, h)


def _model(arch, biker, seed=0):
    if arch.startswith("snlt"):
        skip_without_minilm()
    torch.manual_seed(seed)
    frames, box = biker
    return calibrate_random_weights(build_model(arch), frames[0], box, SENTENCE)


@pytest.fixture(scope="module")
def snlt_alex(biker):
    return _model("snlt_alex", biker)


def _run(tracker, frames, box, text, count):
    tracker.init(frames[0], box, text)
    return [tracker.track(frame) for frame in frames[1:count]]


# --------------------------------------------------------------------------- fast == reference


def _assert_same_run(fast, reference):
    assert len(fast) == len(reference)
    for index, (a, b) in enumerate(zip(fast, reference)):
        assert a == b, f"frame {index + 1}: fast {a} != reference {b}"


@pytest.mark.parametrize("text", [SENTENCE, None])
def test_fast_and_reference_trackers_give_identical_boxes(snlt_alex, biker, text):
    frames, box = biker
    config = TrackerConfig.snlt(long_term=False)
    count = len(frames) if FULL_SEQUENCE else 15
    fast = _run(SNLTracker(snlt_alex, config), frames, box, text, count)
    reference = _run(SNLTracker(snlt_alex, config, reference=True), frames, box, text, count)
    _assert_same_run(fast, reference)
    assert all(np.isfinite(r.box).all() for r in fast)
    if text is None:
        assert all(r.w_vis == 1 and r.w_nl == 0 for r in fast)
    else:
        assert all(0 < r.w_vis < 1 and r.w_vis + r.w_nl == pytest.approx(1) for r in fast)


@pytest.mark.skipif(not FULL_SEQUENCE, reason="the whole sequence with ResNet-50 runs with SNLT_FULL_SEQUENCE=1")
def test_fast_and_reference_resnet50_trackers_on_the_whole_sequence(biker):
    frames, box = biker
    model = _model("snlt_r50", biker)
    config = TrackerConfig.snlt(long_term=False)
    fast = _run(SNLTracker(model, config), frames, box, SENTENCE, len(frames))
    reference = _run(SNLTracker(model, config, reference=True), frames, box, SENTENCE, len(frames))
    _assert_same_run(fast, reference)


def test_tracker_matches_the_published_pipeline_given_the_same_crops(snlt_alex, biker):
    """Cached template and sentence, fused post-process, on-device update: the same boxes as
    the published pipeline that recomputes the template and sentence and post-processes in numpy."""
    frames, box = biker
    config = TrackerConfig.snlt(long_term=False)
    fast = _run(SNLTracker(snlt_alex, config), frames, box, SENTENCE, 12)
    published = _run(PublishedTracker(snlt_alex, config, crop="tensor", correlation=None), frames, box, SENTENCE, 12)
    assert [r.box for r in fast] == [r.box for r in published]
    np.testing.assert_allclose([r.w_vis for r in fast], [r.w_vis for r in published], rtol=1e-6)


# --------------------------------------------------------------------------- text-free == SiamRPN++


class NumpySiamRPNTracker:
    """pysot's SiamRPNTracker.track, written from its code's semantics in numpy (float64),
    on the same crops and network outputs as the tracker under test."""

    def __init__(self, model, config):
        self.model, self.config = model, config
        score_size = model.score_size
        stride = config.anchor_stride
        shapes = []
        for ratio in config.anchor_ratios:
            ws = int(np.sqrt(stride * stride / ratio))
            hs = int(ws * ratio)
            shapes += [(ws * scale, hs * scale) for scale in config.anchor_scales]
        offsets = (np.arange(score_size) - score_size // 2) * stride
        xx, yy = np.meshgrid(offsets, offsets)
        self.anchors = np.array([[x, y, w, h] for w, h in shapes for x, y in zip(xx.ravel(), yy.ravel())], float)
        hanning = np.hanning(score_size)
        self.window = np.tile(np.outer(hanning, hanning).ravel(), len(shapes))

    def init(self, frame, box):
        x, y, w, h = box
        self.frame = frame_to_tensor(frame, "cpu")
        self.fill = channel_fill(self.frame)
        self.center = np.array([x + (w - 1) / 2, y + (h - 1) / 2])
        self.size = np.array([w, h], float)
        side = round(np.sqrt(np.prod(self.size + self.config.context_amount * self.size.sum())))
        self.template = self.model.template(self._crop(self.frame, side, self.model.exemplar_size))

    def _crop(self, frame, side, out_size):
        centers = torch.tensor(self.center[None], dtype=torch.float64)
        return crop_and_resize(frame, centers, torch.tensor([float(side)], dtype=torch.float64), out_size, self.fill)

    def track(self, frame):
        config, model = self.config, self.model
        s_z = np.sqrt(np.prod(self.size + config.context_amount * self.size.sum()))
        scale_z = model.exemplar_size / s_z
        s_x = s_z * (model.instance_size / model.exemplar_size)
        heads = model.track(self._crop(frame_to_tensor(frame, "cpu"), round(s_x), model.instance_size), self.template)
        cls = heads["cls"][0].double().numpy().reshape(2, -1).T
        score = softmax(cls, axis=1)[:, 1]
        delta = heads["loc"][0].double().numpy().reshape(4, -1)
        a = self.anchors
        box = np.stack([delta[0] * a[:, 2] + a[:, 0], delta[1] * a[:, 3] + a[:, 1],
                        np.exp(delta[2]) * a[:, 2], np.exp(delta[3]) * a[:, 3]])  # fmt: skip

        def change(r):
            return np.maximum(r, 1.0 / r)

        def sz(w, h):
            pad = (w + h) * 0.5
            return np.sqrt((w + pad) * (h + pad))

        s_c = change(sz(box[2], box[3]) / sz(self.size[0] * scale_z, self.size[1] * scale_z))
        r_c = change((self.size[0] / self.size[1]) / (box[2] / box[3]))
        penalty = np.exp(-(r_c * s_c - 1) * config.penalty_k)
        pscore = penalty * score * (1 - config.window_influence) + self.window * config.window_influence
        best = np.argmax(pscore)
        bbox = box[:, best] / scale_z
        lr = penalty[best] * score[best] * config.lr
        cx, cy = bbox[0] + self.center[0], bbox[1] + self.center[1]
        width = self.size[0] * (1 - lr) + bbox[2] * lr
        height = self.size[1] * (1 - lr) + bbox[3] * lr
        frame_h, frame_w = frame.shape[:2]
        cx, cy = max(0, min(cx, frame_w)), max(0, min(cy, frame_h))
        width, height = max(10, min(width, frame_w)), max(10, min(height, frame_h))
        self.center, self.size = np.array([cx, cy]), np.array([width, height])
        return [cx - width / 2, cy - height / 2, width, height], score[best]


@pytest.mark.parametrize("arch", ["siamrpn_alex", "snlt_alex"])
def test_without_text_it_is_a_siamrpn_tracker(biker, arch):
    frames, box = biker
    model = _model(arch, biker, seed=1)
    config = TrackerConfig.pysot("alexnet")
    if model.anchor_num == 15:  # SNLT's anchors, pysot's values
        config = config.replace(anchor_scales=(4, 8, 16))
    if arch == "siamrpn_alex":
        assert default_config(model) == TrackerConfig.pysot("alexnet")
    tracker = SNLTracker(model, config)
    oracle = NumpySiamRPNTracker(model, config)
    tracker.init(frames[0], box)
    oracle.init(frames[0], box)
    for frame in frames[1:15]:
        result = tracker.track(frame)
        expected_box, expected_score = oracle.track(frame)
        np.testing.assert_allclose(result.box, expected_box, rtol=1e-5, atol=1e-4)
        assert result.score == pytest.approx(expected_score, rel=1e-5)
        assert (result.w_vis, result.w_nl) == (1.0, 0.0)


# --------------------------------------------------------------------------- batched targets


def test_batched_targets_match_single_target_trackers(snlt_alex, biker):
    """Same anchors chosen, boxes equal to float32 precision: PyTorch's CPU convolutions
    round differently for a batch of 3 than for 1 (the correlations and the
    post-processing are batch-invariant), so the last bits may differ."""
    frames, box = biker
    config = TrackerConfig.snlt(long_term=False)
    boxes = [box, *OTHER_BOXES]
    sentences = [SENTENCE, *OTHER_SENTENCES]
    batched = _run(SNLTracker(snlt_alex, config), frames, boxes, sentences, 10)
    for target in range(3):
        single = _run(SNLTracker(snlt_alex, config), frames, boxes[target], sentences[target], 10)
        for index, (in_batch, alone) in enumerate(zip((frame[target] for frame in batched), single)):
            where = f"target {target}, frame {index + 1}"
            np.testing.assert_allclose(in_batch.box, alone.box, rtol=1e-5, atol=1e-3, err_msg=where)
            np.testing.assert_allclose(in_batch[1:5], alone[1:5], rtol=1e-5, err_msg=where)


# --------------------------------------------------------------------------- long-term mode


def test_long_term_mode_enters_and_leaves_the_lost_state(snlt_alex, biker):
    frames, box = biker
    # Every score is below 2: lost after the first frame, and never recovered.
    config = TrackerConfig.snlt(confidence_low=2.0, confidence_high=2.0, history=1)
    fast = _run(SNLTracker(snlt_alex, config), frames, box, SENTENCE, 5)
    reference = _run(SNLTracker(snlt_alex, config, reference=True), frames, box, SENTENCE, 5)
    _assert_same_run(fast, reference)
    assert [r.lost for r in fast] == [False, True, True, True]

    recovering = config.replace(confidence_low=0.0, confidence_high=0.0)
    tracker = SNLTracker(snlt_alex, recovering)
    tracker.init(frames[0], box, SENTENCE)
    tracker._lost = [True]  # start lost: the next frame's score recovers it
    results = [tracker.track(frame) for frame in frames[1:4]]
    assert [r.lost for r in results] == [True, False, False]


def test_a_lost_target_in_a_batch_tracks_as_it_would_alone(snlt_alex, biker):
    frames, box = biker
    config = TrackerConfig.snlt(confidence_low=-1.0, confidence_high=2.0)  # the state never changes by itself
    batched = SNLTracker(snlt_alex, config)
    batched.init(frames[0], [box, OTHER_BOXES[0]], [SENTENCE, OTHER_SENTENCES[0]])
    batched._lost = [False, True]
    alone = [SNLTracker(snlt_alex, config) for _ in range(2)]
    for tracker, (one_box, sentence, lost) in zip(alone, [(box, SENTENCE, False), (OTHER_BOXES[0], OTHER_SENTENCES[0], True)]):
        tracker.init(frames[0], one_box, sentence)
        tracker._lost = [lost]
    for frame in frames[1:4]:
        results = batched.track(frame)
        for in_batch, tracker in zip(results, alone):
            by_itself = tracker.track(frame)
            np.testing.assert_allclose(in_batch.box, by_itself.box, rtol=1e-5, atol=1e-3)
            assert in_batch.lost == by_itself.lost
        assert [r.lost for r in results] == [False, True]


def test_default_configs():
    assert TrackerConfig.snlt().penalty_k == 0.04 and TrackerConfig.snlt().anchor_num == 15
    pysot = TrackerConfig.pysot("resnet50")
    assert (pysot.penalty_k, pysot.window_influence, pysot.lr, pysot.anchor_num) == (0.05, 0.42, 0.38, 5)
    assert not pysot.long_term and pysot.lr_mode == "pysot"


@pytest.mark.parametrize("make_model", [lambda: build_model("siamrpn_alex"), lambda: NanoTrack(2)], ids=["pysot", "nanotrack"])
def test_a_models_tracker_values_go_over_its_familys(make_model):
    model = make_model()
    family = default_config(model)
    model.tracker_values = {"window_influence": 0.3, "lr": 0.2}
    assert default_config(model) == family.replace(window_influence=0.3, lr=0.2) != family


# --------------------------------------------------------------------------- CUDA graph


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
def test_cuda_graph_replay_gives_the_eager_boxes(biker):
    frames, box = biker
    model = _model("snlt_r50", biker).cuda()
    config = TrackerConfig.snlt(long_term=False)
    eager = _run(SNLTracker(model, config), frames, box, SENTENCE, 20)
    graphed = _run(SNLTracker(model, config, cuda_graph=True), frames, box, SENTENCE, 20)
    _assert_same_run(graphed, eager)


def _drifting_square(count, height=240, width=320):
    """Frames that need no data set: a bright square drifting over dark noise; (frames, first box)."""
    generator = np.random.default_rng(0)
    frames = []
    for k in range(count):
        frame = generator.integers(0, 60, (height, width, 3), dtype=np.uint8)
        x, y = 100 + 3 * k, 80 + 2 * k
        frame[y : y + 40, x : x + 30] = (200, 180, 160)
        frames.append(frame)
    return frames, (100.0, 80.0, 30.0, 40.0)


def test_template_side_rounds_its_square_root_as_pysot_does():
    """pysot's np.sqrt is correctly rounded; torch's CPU sqrt is an ulp off for some inputs,
    which would move the scale, and so the boxes, by that ulp."""
    frames, box = _drifting_square(2)
    torch.manual_seed(0)
    tracker = SNLTracker(calibrate_random_weights(build_model("siamrpn_alex"), frames[0], box))
    sizes = torch.rand(4000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 200 + 2
    context = 0.5 * sizes.numpy().sum(axis=1, keepdims=True)
    padded = sizes.numpy() + context
    expected = np.sqrt(padded[:, 0] * padded[:, 1])
    assert not np.array_equal(torch.sqrt(torch.from_numpy(padded[:, 0] * padded[:, 1])).numpy(), expected)
    assert np.array_equal(tracker._template_side(sizes).numpy(), expected)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_cuda_graph_replay_without_data_or_encoder(backend):
    """The captured step on a machine with neither ../shared/data nor the MiniLM package."""
    frames, box = _drifting_square(12)
    torch.manual_seed(0)
    model = calibrate_random_weights(build_model("siamrpn_r50_l234"), frames[0], box).cuda()
    eager = _run(SNLTracker(model, backend=backend), frames, box, None, len(frames))
    graphed = _run(SNLTracker(model, backend=backend, cuda_graph=True), frames, box, None, len(frames))
    _assert_same_run(graphed, eager)


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_a_clear_error(snlt_alex, biker):
    frames, box = biker
    tracker = SNLTracker(snlt_alex)
    with pytest.raises(RuntimeError, match="init"):
        tracker.track(frames[1])
    with pytest.raises(ValueError, match="positive width and height"):
        tracker.init(frames[0], (10, 10, 0, 5))
    with pytest.raises(ValueError, match="one sentence per box"):
        tracker.init(frames[0], [box, OTHER_BOXES[0]], [SENTENCE])
    with pytest.raises(ValueError, match="every target or for none"):
        tracker.init(frames[0], [box, OTHER_BOXES[0]], [SENTENCE, None])
    with pytest.raises(ValueError, match="anchors per cell"):
        SNLTracker(snlt_alex, TrackerConfig.pysot("alexnet"))
    with pytest.raises(ValueError, match="cuda_graph"):
        SNLTracker(snlt_alex, cuda_graph=True)
    with pytest.raises(ValueError, match="lr_mode"):
        TrackerConfig(lr_mode="fast")
    tracker.init(frames[0], box, SENTENCE)
    with pytest.raises(ValueError, match="first frame"):
        tracker.track(frames[1][:100])


def test_non_finite_network_outputs_are_an_error_naming_frame_and_head(tmp_path):
    vectors = tmp_path / "vectors.txt"
    write_word_vectors(vectors, ["the", "square"], dim=16)
    frame = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    torch.manual_seed(0)
    model = SNLT("alexnet", language=str(vectors)).eval()
    tracker = SNLTracker(model)
    tracker.init(frame, (40, 30, 24, 20), "the square")
    # Uncalibrated batch-norm statistics: finite heads, but far too large to decode.
    with pytest.raises(NonFiniteOutputError, match="frame 1, target 0: the box decoded from the loc head overflowed"):
        tracker.track(frame)
    calibrate_random_weights(model, frame, (40, 30, 24, 20), "the square")
    tracker.init(frame, (40, 30, 24, 20), "the square")
    assert np.isfinite(tracker.track(frame).box).all()
    with torch.no_grad():
        model.rpn_head.nl_cls_head[3].bias[0] = float("nan")
    tracker.init(frame, [(40, 30, 24, 20), (80, 50, 20, 20)], ["the square", "the square"])
    with pytest.raises(NonFiniteOutputError, match="frame 1, target 0: the network's nl_cls head output went non-finite") as error:
        tracker.track(frame)
    assert error.value.heads == ["nl_cls"]
