"""`snlt train` on NanoTrack: point-form targets and losses, the config checks, and short runs
that train the language head with the visual part frozen (random and released weights)."""

import math

import pytest
import torch

from conftest import SHARED_DATA
from snlt_fast.models import NanoTrack, save_checkpoint
from snlt_fast.models.checkpoints import load_checkpoint
from snlt_fast.tracker.point import nanotrack_points
from snlt_fast.training.config import ConfigError, load_config, resolve
from snlt_fast.training.data import collate
from snlt_fast.training.loop import Trainer, build_training_model
from snlt_fast.training.losses import Normalizer, point_head_losses, snlt_losses
from snlt_fast.training.point_targets import model_points, point_targets

from training_helpers import write_tiny_lasot, write_word_vectors

WEIGHTS = SHARED_DATA.parent / "weights" / "nanotrack"
VISUAL_PREFIXES = ("backbone.", "ban_head.")


def _points(size):
    return torch.as_tensor(nanotrack_points(size, 16, False, 127), dtype=torch.float64)


# --------------------------------------------------------------------------- targets


def test_point_targets_of_a_hand_built_case():
    # Points -32..32 in steps of 16; an 80 x 40 box centred at (8, 0): positive inside the
    # (20, 10) ellipse, negative outside the (40, 20) one; points on that ellipse are ignored.
    targets = point_targets(_points(5), torch.tensor([[8.0, 0.0, 80.0, 40.0]], dtype=torch.float64), torch.tensor([False]))
    assert targets.labels.tolist() == [[
        [0, 0, 0, 0, 0],
        [0, -1, -1, -1, -1],
        [-1, -1, 1, 1, -1],
        [0, -1, -1, -1, -1],
        [0, 0, 0, 0, 0],
    ]]
    assert targets.labels.dtype == torch.int64 and targets.ltrb.dtype == torch.float32
    # (l, t, r, b) = (px - x1, py - y1, x2 - px, y2 - py) with the box at x -32..48, y -20..20.
    assert targets.ltrb[0, :, 2, 2].tolist() == [32, 20, 48, 20]  # (px, py) = (0, 0)
    assert targets.ltrb[0, :, 2, 3].tolist() == [48, 20, 32, 20]  # (16, 0)
    assert targets.ltrb[0, :, 0, 0].tolist() == [0, -12, 80, 52]  # (-32, -32)


def test_negative_pairs_and_boxes_outside_the_crop_have_no_positive():
    boxes = torch.tensor([[8.0, 0.0, 80.0, 40.0], [8.0, 0.0, 80.0, 40.0], [400.0, -300.0, 60.0, 50.0], [0.0, 0.0, 0.0, 30.0]],
                         dtype=torch.float64)
    targets = point_targets(_points(16), boxes, torch.tensor([False, True, False, False]))
    assert (targets.labels[0] == 1).sum() == 2
    assert (targets.labels[1] == 0).all()  # a negative pair: every point negative
    assert (targets.labels[2] == 0).all()  # far outside: every point outside the ellipse
    assert not (targets.labels[3] == 1).any()  # zero width: no positive, and no NaN
    assert torch.isfinite(targets.ltrb).all()
    alone = point_targets(_points(16), boxes[2:3], torch.tensor([False]))
    assert torch.equal(alone.labels[0], targets.labels[2]) and torch.equal(alone.ltrb[0], targets.ltrb[2])


def test_points_come_from_the_model():
    for version, size in ((2, 16), (3, 15)):
        points = model_points(NanoTrack(version), "cpu")
        assert points.shape == (2, size, size)
        assert points[0, 0].tolist() == [16.0 * (i - size // 2) for i in range(size)]  # px along a row
        assert torch.equal(points[1], points[0].T)


# --------------------------------------------------------------------------- losses


def _outputs(generator, batch, size):
    """Random head outputs that need a gradient; loc positive, as the network's exp makes it."""
    outputs = {name: torch.randn(batch, k, size, size, generator=generator)
               for name, k in (("cls", 2), ("loc", 4), ("nl_cls", 2), ("nl_loc", 4))}
    for name in ("loc", "nl_loc"):
        outputs[name] = (outputs[name] + 3).exp()
    return {name: value.requires_grad_() for name, value in outputs.items()}


def test_point_losses_of_a_known_prediction():
    targets = point_targets(_points(5), torch.tensor([[8.0, 0.0, 80.0, 40.0]], dtype=torch.float64), torch.tensor([False]))
    cls = torch.zeros(1, 2, 5, 5)  # every point at p = 0.5
    loc = 2 * targets.ltrb  # the same box twice as large around each point: IoU 1/4
    cls_loss, loc_loss = point_head_losses(cls, loc, targets, torch.tensor([True]), Normalizer())
    assert float(cls_loss) == pytest.approx(math.log(2))
    assert float(loc_loss) == pytest.approx(0.75)
    _, exact = point_head_losses(cls, targets.ltrb, targets, torch.tensor([True]), Normalizer())
    assert float(exact) == pytest.approx(0.0, abs=1e-7)


def test_point_losses_are_finite_and_masked_samples_get_no_gradient():
    generator = torch.Generator().manual_seed(1)
    outputs = _outputs(generator, 3, 16)
    outputs["nl_cls"].data[0, 0, 0, 0] = math.inf  # a language head gone wild on a sample without a sentence
    outputs["nl_loc"].data[0, 1, 5, 5] = math.nan
    boxes = torch.tensor([[0.0, 0.0, 50.0, 70.0], [10.0, -20.0, 30.0, 30.0], [5.0, 5.0, 40.0, 40.0]], dtype=torch.float64)
    targets = point_targets(_points(16), boxes, torch.tensor([False, True, False]))
    total, terms = snlt_losses(outputs, targets, torch.tensor([False, True, True]), Normalizer(),
                               losses_of_head=point_head_losses)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(t) for t in terms.values())
    assert all(torch.isfinite(t.grad).all() for t in outputs.values())
    assert float(outputs["nl_cls"].grad[0].abs().sum()) == 0 and float(outputs["nl_loc"].grad[0].abs().sum()) == 0
    assert float(outputs["loc"].grad[1].abs().sum()) == 0  # a negative pair has no regression
    assert float(outputs["nl_loc"].grad[2].abs().sum()) > 0
    _, nothing_terms = snlt_losses(outputs, targets, torch.tensor([False, False, False]), Normalizer(),
                                         losses_of_head=point_head_losses)
    assert float(nothing_terms["cls_nl"].detach()) == 0 and float(nothing_terms["loc_nl"].detach()) == 0


# --------------------------------------------------------------------------- configs and runs


def _config(tmp_path, **model):
    """A resolved config of NanoTrack V2 with word-vector sentences on a tiny LaSOT folder, batch 2."""
    root = tmp_path / "lasot"
    if not root.exists():
        write_tiny_lasot(root)
    tree = {
        "seed": 4,
        "model": {"arch": "nanotrack_v2", "language": str(write_word_vectors(tmp_path / "words.txt")),
                  "frozen": ["backbone", "visual_head"], **model},
        "data": {"datasets": [{"name": "lasot", "root": str(root), "frame_range": 4}], "negative_prob": 0.25},
        "optimizer": {"name": "adam", "weight_decay": 0.0},
        "schedule": {"lr": 0.001},
        "train": {"batch_size": 2, "epochs": 1, "steps_per_epoch": 3, "checkpoint_every": 3, "deterministic": False},
    }
    return resolve(tree)


def _visual_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if k.startswith(VISUAL_PREFIXES)}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (("model", "anchor_scales", [8]), "model.anchor_scales is \\[8\\], but a nanotrack_v2 model has no anchors"),
        (("model", "hidden", 64), "model.hidden is 64"),
        (("targets", "positive_iou", 0.7), "targets.positive_iou is 0.7"),
        (("data", "search_size", 287), "data.search_size must be 255 for a nanotrack_v2 model"),
        (("loss", "lookalike_weight", 1.0), "loss.lookalike_weight needs anchors; a nanotrack_v2 model has none"),
        (("model", "language_features", "own"), "model.language_features: a nanotrack_v2 model's language head has shared"),
    ],
)
def test_anchor_keys_and_other_crop_sizes_are_rejected(tmp_path, override, message):
    config = _config(tmp_path)
    section, key, value = override
    config[section][key] = value
    with pytest.raises(ConfigError, match=message):
        build_training_model(config)


def test_the_bundled_config_builds_nanotrack_v2_with_a_frozen_visual_part(tmp_path):
    vectors = write_word_vectors(tmp_path / "words.txt")
    config = load_config("nanotrack-language", [f"model.language={vectors}"])
    assert config["model"]["init_from"] is None and config["model"]["frozen"] == ["backbone", "visual_head"]
    model = build_training_model(config)
    assert isinstance(model, NanoTrack) and model.version == 2 and model.has_language


def test_init_from_loads_the_visual_part_and_restarts_the_language_head_from_it(tmp_path):
    torch.manual_seed(8)
    visual = NanoTrack(2)
    save_checkpoint(visual, tmp_path / "visual.pth")
    model = build_training_model(_config(tmp_path, init_from=str(tmp_path / "visual.pth")))
    state = model.state_dict()
    for key, value in visual.state_dict().items():
        assert torch.equal(state[key], value), key
        if key.startswith("ban_head."):
            assert torch.equal(state["nl_head." + key.removeprefix("ban_head.")], value), key


def test_a_short_run_trains_only_the_language_head(tmp_path):
    trainer = Trainer(_config(tmp_path), tmp_path / "run", progress=False)
    frozen, start = _visual_state(trainer.model), {k: v.clone() for k, v in trainer.model.state_dict().items()}
    # A few steps on one batch: the language head's loss goes down.
    batch = collate([trainer.dataset[index] for index in (0, 1)])
    batch["negative"][:] = False
    batch["sentence"] = ["the red box moving", "the small blue square"]
    losses = [trainer.train_step(batch, 0)[1] for _ in range(5)]
    assert all(torch.isfinite(values).all() for values in losses)
    language = lambda values: float(values[3] + 1.2 * values[4])  # noqa: E731  (cls_nl, loc_nl)
    assert language(losses[-1]) < language(losses[0])
    final = trainer.run()
    model = load_checkpoint(final)
    assert model.arch == "nanotrack_v2" and model.has_language
    trained = model.state_dict()
    for key, value in frozen.items():
        assert torch.equal(trained[key], value), f"{key} changed though frozen"
    for prefix in ("nl_head.", "language.projection."):
        assert any(not torch.equal(trained[k], start[k]) for k in trained if k.startswith(prefix)), prefix


@pytest.mark.skipif(not (WEIGHTS / "nanotrackv2.pth").is_file(), reason=f"NanoTrack weights not found at {WEIGHTS}")
def test_the_released_v2_weights_load_and_stay_frozen(tmp_path):
    released = load_checkpoint(WEIGHTS / "nanotrackv2.pth").state_dict()
    trainer = Trainer(_config(tmp_path, init_from=str(WEIGHTS / "nanotrackv2.pth")), tmp_path / "run", progress=False)
    state = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    assert all(torch.equal(state[key], value) for key, value in released.items())
    assert all(torch.equal(state["nl_head." + key.removeprefix("ban_head.")], value)
               for key, value in released.items() if key.startswith("ban_head."))
    trained = load_checkpoint(trainer.run()).state_dict()
    for key, value in released.items():
        assert torch.equal(trained[key], value), f"{key} changed though frozen"
    assert any(not torch.equal(trained[k], state[k]) for k in trained if k.startswith("nl_head."))
