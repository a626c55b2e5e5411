"""A tiny training set-up for the training tests: a LaSOT-layout folder of moving
rectangles, a word-vector file, and a config of a small model that trains in seconds."""

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("red", "blue", "green", "box", "moving", "the", "small", "square")
SENTENCES = ("the red box moving", "the small blue square", None, "the green box")


def write_tiny_lasot(root, videos=4, frames=10, size=(96, 80)):
    """`videos` sequences of a coloured rectangle drifting over a noisy background; every
    third one without nlp.txt (no sentence). Returns root."""
    root = Path(root)
    rng = np.random.default_rng(7)
    names = []
    for number in range(videos):
        name = f"toy-{number + 1}"
        folder = root / "toy" / name
        (folder / "img").mkdir(parents=True)
        colour = [(40, 40, 220), (220, 60, 40), (60, 200, 60), (200, 200, 40)][number % 4]
        boxes = []
        for frame in range(frames):
            image = rng.integers(0, 90, (size[1], size[0], 3), dtype=np.uint8)
            x, y = 10 + 3 * frame + 2 * number, 12 + 2 * frame
            w, h = 22 + number, 18 + frame % 3
            image[y : y + h, x : x + w] = colour
            cv2.imwrite(str(folder / "img" / f"{frame + 1:08d}.jpg"), image)
            boxes.append(f"{x + 1},{y + 1},{w},{h}")
        (folder / "groundtruth.txt").write_text("\n".join(boxes) + "\n")
        flags = ",".join("0" for _ in range(frames))
        (folder / "full_occlusion.txt").write_text(flags + "\n")
        (folder / "out_of_view.txt").write_text(flags + "\n")
        sentence = SENTENCES[number % len(SENTENCES)]
        if sentence is not None:
            (folder / "nlp.txt").write_text(sentence + "\n")
        names.append(name)
    (root / "training_set.txt").write_text("\n".join(names) + "\n")
    return root


def write_word_vectors(path, dim=8):
    rng = np.random.default_rng(3)
    lines = [word + " " + " ".join(f"{v:.4f}" for v in rng.standard_normal(dim)) for word in WORDS]
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def tiny_config(tmp_path, **sections):
    """A config file for a small SNLT on the tiny LaSOT folder; `sections` update its sections."""
    data_root = write_tiny_lasot(tmp_path / "lasot") if not (tmp_path / "lasot").exists() else tmp_path / "lasot"
    vectors = write_word_vectors(tmp_path / "words.txt")
    config = {
        "seed": 5,
        "model": {"arch": "snlt_alex", "language": str(vectors), "width": 0.125, "hidden": 16, "anchor_scales": [8]},
        "data": {"datasets": [{"name": "lasot", "root": str(data_root), "frame_range": 4}], "negative_prob": 0.25},
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "schedule": {"lr": 0.01},
        "train": {"batch_size": 4, "epochs": 2, "steps_per_epoch": 3, "checkpoint_every": 2},
    }
    for name, values in sections.items():
        config.setdefault(name, {}).update(values)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_environment(env=None):
    """The environment of a compared run: this one's (numpy's OpenBLAS picks its kernels,
    and so its roundings, from OPENBLAS_CORETYPE), with single-threaded torch."""
    return {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}


def snlt(*arguments, env=None, **kwargs):
    """Run the snlt command in a fresh process, in run_environment(env)."""
    return subprocess.run(
        [sys.executable, "-m", "snlt_fast", *map(str, arguments)], cwd=ROOT, env=run_environment(env),
        capture_output=True, text=True, **kwargs,
    )
