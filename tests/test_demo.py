"""The shipped default model and `snlt demo`, README's first command."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import requires_minilm
from snlt_fast.models import load_checkpoint, load_default
from snlt_fast.models.default import DEFAULT_TRACKER_VALUES, DEFAULT_WEIGHTS
from snlt_fast.tracker import TrackerConfig, default_config


def test_default_weights_are_small_and_load_without_unpickling_code():
    assert DEFAULT_WEIGHTS.stat().st_size <= 10 * 2**20
    payload = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    assert payload["format"] == "snlt_fast"
    assert (DEFAULT_WEIGHTS.parent / "README.md").is_file()


@requires_minilm
def test_load_default_gives_the_trained_snlt():
    model = load_default("cpu")
    assert model.arch == "snlt_alex" and model.has_language and not model.training
    again = load_checkpoint(DEFAULT_WEIGHTS)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


@requires_minilm
def test_the_default_model_is_tracked_with_its_tuned_values_and_its_file_alone_with_snlts():
    tuned = default_config(load_default("cpu"))
    published = default_config(load_checkpoint(DEFAULT_WEIGHTS))
    assert published == TrackerConfig.snlt(anchor_ratios=tuned.anchor_ratios, anchor_scales=tuned.anchor_scales)
    assert tuned == published.replace(**DEFAULT_TRACKER_VALUES) != published


@requires_minilm
def test_short_demo_writes_its_outputs(tmp_path):
    out = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "snlt_fast", "demo", "--videos", "1", "--no-real", "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "trained on synthetic scenes" in done.stderr
    names = {path.name for path in out.iterdir()}
    assert {"modality_weights.png", "success_plot.png"} <= names
    assert len([name for name in names if name.endswith(".mp4")]) == 1 and not any(name.startswith(".") for name in names)
    rows = [line for line in done.stdout.splitlines() if line.startswith("| held-out")]
    assert len(rows) == 2 and all(len(row.split("|")) == 7 for row in rows)


def test_demo_errors_are_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "snlt_fast", "demo", "--videos", "0", "--out", str(tmp_path / "d")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "--videos must be at least 1" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "snlt_fast", "demo", "--out", str(tmp_path / "missing" / "d")], capture_output=True, text=True
    )
    assert done.returncode == 2 and "does not exist" in done.stderr


def test_validation_seeds_are_training_seeds_no_bundled_config_trains_on():
    from snlt_fast.datasets.synthetic import TRAINING_SEEDS
    from snlt_fast.demo import VALIDATION_SEEDS, heldout_seeds
    from snlt_fast.training.config import bundled_names, load_config

    trained = {
        entry["options"]["seed"]
        for name in bundled_names()
        for entry in load_config(name)["data"]["datasets"]
        if entry["name"] == "synthetic"
    }
    assert trained and all(seed in TRAINING_SEEDS and seed not in trained for seed in VALIDATION_SEEDS.values())
    assert not any(seed in TRAINING_SEEDS for seed in heldout_seeds().values())


def test_the_paired_difference_and_its_standard_error():
    from snlt_fast.demo import paired_difference

    with_sentence, visual = np.array([0.6, 0.5, 0.7, 0.4]), np.array([0.5, 0.5, 0.5, 0.5])
    mean, error = paired_difference(with_sentence, visual)
    differences = [0.1, 0.0, 0.2, -0.1]
    assert mean == pytest.approx(0.05)
    assert error == pytest.approx(np.sqrt(sum((d - 0.05) ** 2 for d in differences) / 3) / 2)
    # A constant offset has no spread: the pairing takes out what the scenes share.
    assert paired_difference(visual + 0.02, visual) == (pytest.approx(0.02), pytest.approx(0.0, abs=1e-15))
    assert paired_difference([0.3], [0.1]) == (pytest.approx(0.2), None)


@requires_minilm
def test_validation_comparison_of_a_checkpoint(tmp_path):
    command = [sys.executable, "-m", "snlt_fast.demo", "validation", "--videos", "1"]
    done = subprocess.run([*command, "--weights", str(DEFAULT_WEIGHTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith(("| distractor", "| plain"))]
    assert len(rows) == 2 and all(float(row[4]) == pytest.approx(float(row[2]) - float(row[3]), abs=0.11) for row in rows)
    assert all(row[5].strip() == "-" for row in rows)  # one video: no spread to estimate
    done = subprocess.run([*command, "--weights", str(tmp_path / "none.pth")], capture_output=True, text=True)
    assert done.returncode == 2 and "--weights" in done.stderr and "no such file" in done.stderr
    assert "Traceback" not in done.stderr
    (tmp_path / "junk.pth").write_text("junk")
    done = subprocess.run([*command, "--weights", str(tmp_path / "junk.pth")], capture_output=True, text=True)
    assert done.returncode == 2 and "--weights" in done.stderr and "not a PyTorch checkpoint" in done.stderr
    assert "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "snlt_fast.demo", "validation", "--videos", "0"], capture_output=True, text=True)
    assert done.returncode == 2 and "--videos must be at least 1" in done.stderr and "Traceback" not in done.stderr
