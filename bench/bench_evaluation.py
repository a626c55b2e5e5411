"""Scoring speed: the 280 LaSOT test videos (685,360 frames of real ground truth with
absent flags) against a realistic synthetic tracker (perturbed ground truth).

Baseline: the way the common Python toolkits score today: `np.loadtxt` per file
and one pass over the frames per threshold (21 + 51 + 51 passes per video).
"""

import zipfile
from pathlib import Path

import numpy as np
import pytest

from snlt_fast.datasets import LaSOT
from snlt_fast.evaluation import score
from snlt_fast.evaluation.metrics import NORM_PRECISION_THRESHOLDS, PRECISION_THRESHOLDS, SUCCESS_THRESHOLDS

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GROUP = "OPE scoring LaSOT test [280 videos, 685k frames]"


@pytest.fixture(scope="module")
def lasot_results(tmp_path_factory):
    archive = SHARED_DATA / "lasot" / "lasot_test280_gt_absent.zip"
    if not archive.is_file():
        pytest.skip(f"real data not found at {archive}")
    root = tmp_path_factory.mktemp("lasot")
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(root)
    dataset = LaSOT(root, subset=SHARED_DATA / "lasot" / "testing_set.txt")
    results = root / "results" / "Perturbed"
    results.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for video in dataset:
        # Drift in position and size relative to the target, with occasional total losses.
        boxes = video.boxes.copy()
        size = np.maximum(boxes[:, 2:], 1)
        boxes[:, :2] += rng.normal(0, 0.2, (len(boxes), 2)) * size
        boxes[:, 2:] = size * np.exp(rng.normal(0, 0.15, (len(boxes), 2)))
        lost = rng.random(len(boxes)) < 0.05
        boxes[lost, :2] += rng.uniform(100, 300, (lost.sum(), 2))
        boxes[0] = video.boxes[0]  # trackers report the box they were given
        np.savetxt(results / f"{video.name}.txt", boxes, fmt="%.4f", delimiter=",")
    return root, dataset, results


def toolkit_style_score(dataset, results):
    """Per-video curves the way the toolkits compute them, one pass per threshold."""
    success, precision, norm = [], [], []
    for video in dataset:
        gt = video.boxes[~video.absent]
        pred = np.loadtxt(results / f"{video.name}.txt", delimiter=",")[~video.absent]
        n = len(video)
        left = np.maximum(gt[:, 0], pred[:, 0])
        right = np.minimum(gt[:, 0] + gt[:, 2], pred[:, 0] + pred[:, 2])
        top = np.maximum(gt[:, 1], pred[:, 1])
        bottom = np.minimum(gt[:, 1] + gt[:, 3], pred[:, 1] + pred[:, 3])
        inter = np.maximum(0, right - left) * np.maximum(0, bottom - top)
        overlap = inter / (gt[:, 2] * gt[:, 3] + pred[:, 2] * pred[:, 3] - inter)
        overlap[~((gt[:, 2] > 0) & (gt[:, 3] > 0))] = -1
        offset = (gt[:, :2] + (gt[:, 2:] - 1) / 2) - (pred[:, :2] + (pred[:, 2:] - 1) / 2)
        distance = np.sqrt((offset**2).sum(axis=1))
        norm_distance = np.sqrt(((offset / (gt[:, 2:] + 1e-16)) ** 2).sum(axis=1))
        success.append([np.sum(overlap > t) / n for t in SUCCESS_THRESHOLDS])
        precision.append([np.sum(distance <= t) / n for t in PRECISION_THRESHOLDS])
        norm.append([np.sum(norm_distance <= t) / n for t in NORM_PRECISION_THRESHOLDS])
    return np.mean(success), np.mean(precision, axis=0)[20], np.mean(norm, axis=0)[20]


def test_score_lasot(benchmark, lasot_results):
    _, dataset, results = lasot_results
    benchmark.group = GROUP
    benchmark.extra_info["impl"] = "snlt_fast score"
    report = benchmark.pedantic(score, args=(dataset, results), rounds=5, iterations=1)
    print(f"\nLaSOT perturbed: AUC {report.success_auc:.4f} P {report.precision:.4f} NP {report.norm_precision:.4f}")
    # Same numbers as the baseline (which leaves zero-area frames at IoU -1 and 1e-16 in the norm).
    auc, precision, _ = toolkit_style_score(dataset, results)
    assert report.success_auc == pytest.approx(auc, abs=1e-4) and report.precision == pytest.approx(precision, abs=1e-4)


def test_load_and_score_lasot(benchmark, lasot_results):
    """What `snlt eval score --dataset lasot` does: read the annotations, then score."""
    root, dataset, results = lasot_results
    names = dataset.names
    benchmark.group = GROUP
    benchmark.extra_info["impl"] = "snlt_fast load annotations + score"
    benchmark.pedantic(lambda: score(LaSOT(root, subset=names), results), rounds=3, iterations=1)


def test_score_lasot_toolkit_style(benchmark, lasot_results):
    _, dataset, results = lasot_results
    benchmark.group = GROUP
    benchmark.extra_info["impl"] = "loadtxt + per-threshold loops (toolkits)"
    benchmark.extra_info["baseline"] = True
    benchmark.pedantic(toolkit_style_score, args=(dataset, results), rounds=1, iterations=1)
