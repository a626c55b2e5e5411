"""OPE metrics and scoring: hand-computed cases, a per-frame oracle, the published OTB figures, LaSOT."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from real_archives import extract_shared

from snlt_fast.datasets import OTB, AnnotationError, Dataset, LaSOT, Video
from snlt_fast.evaluation import (
    NORM_PRECISION_THRESHOLDS,
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
    center_error,
    format_table,
    iou,
    load_result,
    norm_precision_curve,
    plot_all,
    precision_curve,
    score,
    success_curve,
)
from snlt_fast.evaluation.metrics import frame_counts
from snlt_fast.evaluation.report import legend_order

# --------------------------------------------------------------------------- hand-computed cases


@pytest.mark.parametrize(
    "gt, pred, expected",
    [
        ([0, 0, 10, 10], [0, 0, 10, 10], 1.0),
        ([0, 0, 10, 10], [5, 0, 10, 10], 50 / 150),  # half overlap: 5x10 of 100+100-50
        ([0, 0, 10, 10], [10, 0, 10, 10], 0.0),  # touching edges: boxes span x..x+w
        ([0, 0, 10, 10], [2, 2, 4, 4], 16 / 100),  # contained
        ([0, 0, 10, 10], [-5, -5, 10, 10], 25 / 175),
        ([0, 0, 10, 10], [20, 20, 5, 5], 0.0),
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # empty union
        ([0.5, 0.5, 2, 2], [1.5, 0.5, 2, 2], 2 / 6),
    ],
)
def test_iou_hand_computed(gt, pred, expected):
    assert iou([gt], [pred])[0] == pytest.approx(expected, abs=1e-15)


def test_success_thresholds_are_strict():
    gt = [[0, 0, 10, 10]] * 3
    pred = [[0, 0, 10, 5], [0, 0, 10, 10], [30, 30, 5, 5]]  # IoU 0.5, 1 and 0
    curve = success_curve(gt, pred)
    assert len(curve) == 21 and SUCCESS_THRESHOLDS[10] == 0.5
    assert curve[0] == 2 / 3  # IoU 0 is not > 0
    assert curve[9] == 2 / 3 and curve[10] == 1 / 3  # IoU 0.5 is > 0.45, not > 0.5
    assert curve[20] == 0  # IoU 1 is not > 1
    assert curve.mean() == pytest.approx((2 * 10 + 1 * 10) / 3 / 21 + 0)


def test_precision_is_inclusive_and_uses_pixel_centres():
    gt = [[0, 0, 10, 10]] * 2
    pred = [[20, 0, 10, 10], [0, 0, 12, 10]]  # centre errors 20 and 1 (4.5 vs 5.5)
    np.testing.assert_array_equal(center_error(gt, pred), [20, 1])
    curve = precision_curve(gt, pred)
    assert len(curve) == 51 and PRECISION_THRESHOLDS[20] == 20
    assert curve[0] == 0 and curve[1] == 0.5 and curve[19] == 0.5 and curve[20] == 1


def test_normalized_precision_divides_by_ground_truth_size():
    gt = [[0, 0, 100, 50]]
    pred = [[10, 5, 100, 50]]  # offsets (10, 5) over (100, 50): sqrt(0.02) = 0.1414
    curve = norm_precision_curve(gt, pred)
    assert len(curve) == 51 and NORM_PRECISION_THRESHOLDS[20] == 0.2
    assert curve[14] == 0 and curve[15] == 1


def test_zero_area_ground_truth_is_a_failure_in_every_metric():
    gt = [[5, 5, 10, 10], [5, 5, 0, 10], [5, 5, 10, 0], [0, 0, 0, 0]]
    pred = [[5, 5, 10, 10], [5, 5, 0, 10], [5, 5, 10, 0], [0, 0, 0, 0]]  # the same boxes
    for counts in frame_counts(gt, pred):
        assert counts.max() == 1  # only the first frame ever succeeds, yet n stays 4
    assert success_curve(gt, pred)[0] == 0.25 and precision_curve(gt, pred)[0] == 0.25


def test_absent_frames_are_left_out_with_the_full_denominator():
    gt = [[0, 0, 10, 10]] * 4
    pred = [[0, 0, 10, 10]] * 4
    absent = [False, True, False, True]
    assert success_curve(gt, pred, absent)[0] == 0.5
    assert precision_curve(gt, pred, absent)[0] == 0.5
    assert norm_precision_curve(gt, pred, absent)[50] == 0.5
    with pytest.raises(ValueError, match=r"absent must have shape \(4,\)"):
        success_curve(gt, pred, absent[:3])


def test_unusable_predictions_are_failures():
    gt = [[0, 0, 10, 10]] * 3
    pred = [[np.nan, 0, 10, 10], [0, 0, 10, np.inf], [0, 0, -10, 10]]  # NaN, infinite height, negative width
    np.testing.assert_array_equal(iou(gt, pred), [0, 0, 0])
    success, precision, norm_precision = frame_counts(gt, pred)
    assert success.max() == 0
    # Precision looks at centres only: the negative-width box is centred 10 px away (-5.5 vs 4.5).
    assert precision[9] == 0 and precision[10] == 1 and precision.max() == 1
    assert norm_precision.max() == 0  # 10 px over a 10 px wide target: 1.0, beyond 0.5


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"gt must have shape \(n, 4\)"):
        iou([[1, 2, 3]], [[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="same number of boxes"):
        iou([[1, 2, 3, 4]], [[1, 2, 3, 4]] * 2)


# --------------------------------------------------------------------------- oracle and properties


def oracle_counts(gt, pred, absent):
    """Per-frame, per-threshold Python loops: the definitions written out plainly."""
    success, precision, norm = [0] * 21, [0] * 51, [0] * 51
    for g, p, a in zip(gt, pred, absent):
        if a or g[2] <= 0 or g[3] <= 0:
            continue
        overlap_w = max(0.0, min(g[0] + g[2], p[0] + p[2]) - max(g[0], p[0]))
        overlap_h = max(0.0, min(g[1] + g[3], p[1] + p[3]) - max(g[1], p[1]))
        union = g[2] * g[3] + p[2] * p[3] - overlap_w * overlap_h
        overlap = min(1.0, overlap_w * overlap_h / union) if union > 0 else 0.0
        dx = (g[0] + (g[2] - 1) / 2) - (p[0] + (p[2] - 1) / 2)
        dy = (g[1] + (g[3] - 1) / 2) - (p[1] + (p[3] - 1) / 2)
        for i, t in enumerate(SUCCESS_THRESHOLDS):
            success[i] += overlap > t
        for i, t in enumerate(PRECISION_THRESHOLDS):
            precision[i] += math.hypot(dx, dy) <= t
        for i, t in enumerate(NORM_PRECISION_THRESHOLDS):
            norm[i] += math.hypot(dx / g[2], dy / g[3]) <= t
    return success, precision, norm


# Small integers make ties with the thresholds (IoU 0.5, 20 px, ...) frequent.
coordinate = st.one_of(st.integers(-20, 60).map(float), st.floats(-20, 60, allow_nan=False))
size = st.one_of(st.integers(0, 40).map(float), st.floats(0.01, 40))
box = st.tuples(coordinate, coordinate, size, size)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(box, box, st.booleans()), min_size=1, max_size=30))
def test_counts_match_the_per_frame_oracle(frames):
    gt = np.array([f[0] for f in frames])
    pred = np.array([f[1] for f in frames])
    absent = np.array([f[2] for f in frames])
    for ours, expected in zip(frame_counts(gt, pred, absent), oracle_counts(gt, pred, absent)):
        np.testing.assert_array_equal(ours, expected)


@settings(max_examples=150, deadline=None)
@given(box, box, st.floats(0.1, 10), st.tuples(st.floats(-100, 100), st.floats(-100, 100)))
def test_iou_properties(a, b, scale, shift):
    forward, backward = iou([a], [b])[0], iou([b], [a])[0]
    assert forward == pytest.approx(backward, abs=1e-12) and 0 <= forward <= 1
    if a[2] > 0 and a[3] > 0:
        assert iou([a], [a])[0] == pytest.approx(1.0)

    def moved(b):
        return [b[0] * scale + shift[0], b[1] * scale + shift[1], b[2] * scale, b[3] * scale]

    assert iou([moved(a)], [moved(b)])[0] == pytest.approx(forward, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(box, box), min_size=1, max_size=20))
def test_curves_are_monotone(frames):
    gt, pred = np.array([f[0] for f in frames]), np.array([f[1] for f in frames])
    assert np.all(np.diff(success_curve(gt, pred)) <= 0)
    assert np.all(np.diff(precision_curve(gt, pred)) >= 0)
    assert np.all(np.diff(norm_precision_curve(gt, pred)) >= 0)


# --------------------------------------------------------------------------- scoring result folders


def write_results(folder, boxes_by_video, seconds=None):
    folder.mkdir(parents=True, exist_ok=True)
    for name, boxes in boxes_by_video.items():
        (folder / f"{name}.txt").write_text("".join(",".join(map(str, b)) + "\n" for b in boxes))
        if seconds is not None:
            (folder / f"{name}_time.txt").write_text("".join(f"{seconds}\n" for _ in boxes))


def small_dataset():
    gt_a = [[0, 0, 10, 10]] * 4
    gt_b = [[0, 0, 10, 10]] * 2
    return Dataset(
        "small",
        [
            Video("a", gt_a, ["x"] * 4, attributes=("Occlusion",)),
            Video("b", gt_b, ["x"] * 2, absent=[False, True], attributes=("Occlusion", "Scale Variation")),
        ],
    )


def test_score_per_video_per_attribute_and_averages(tmp_path):
    dataset = small_dataset()
    # a: frame 1 (gt) + 3 frames of which 1 perfect and 2 missed; b: absent second frame.
    write_results(tmp_path / "T", {"a": [[0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 5, 5], [50, 50, 5, 5]],
                                   "b": [[0, 0, 10, 10], [0, 0, 10, 10]]}, seconds=0.5)
    report = score(dataset, tmp_path / "T")
    assert report.tracker == "T" and report.dataset == "small"
    a, b = report.per_video["a"], report.per_video["b"]
    assert a.success_auc == pytest.approx(20 / 21 * 2 / 4) and a.precision == 0.5
    assert b.success_auc == pytest.approx(20 / 21 * 1 / 2) and b.precision == 0.5
    assert report.success_auc == pytest.approx((a.success_auc + b.success_auc) / 2)
    assert report.per_attribute["Scale Variation"].success_auc == pytest.approx(b.success_auc)
    assert report.per_attribute["Occlusion"].videos == 2
    assert report.fps == pytest.approx(2.0)
    pooled = score(dataset, tmp_path / "T", average="frame")
    assert pooled.precision == pytest.approx(3 / 6)  # frame-weighted: (2 + 1) of 6 frames
    with pytest.raises(ValueError, match="average must be one of"):
        score(dataset, tmp_path / "T", average="median")


def test_results_with_or_without_first_frame_and_frame_one_is_ground_truth(tmp_path):
    video = Video("v", [[0, 0, 10, 10], [1, 1, 10, 10], [2, 2, 10, 10]], ["x"] * 3)
    write_results(tmp_path, {"with": [[99, 99, 1, 1], [1, 1, 10, 10], [0, 0, 3, 3]], "without": [[1, 1, 10, 10], [0, 0, 3, 3]]})
    with_first = load_result(tmp_path / "with.txt", video)
    np.testing.assert_array_equal(with_first, load_result(tmp_path / "without.txt", video))
    np.testing.assert_array_equal(with_first[0], video.boxes[0])
    write_results(tmp_path, {"short": [[1, 1, 10, 10]]})
    with pytest.raises(AnnotationError, match=r"short.txt: 1 boxes, but video v has 3 frames \(expected 3, or 2"):
        load_result(tmp_path / "short.txt", video)
    (tmp_path / "bad.txt").write_text("0,0,1,1\n1,1;1,1\n0,0,1,1\n")
    with pytest.raises(AnnotationError, match=r"bad.txt:2: expected 4 numbers, got 3: '1,1;1,1'"):
        load_result(tmp_path / "bad.txt", video)


def test_missing_results_and_other_result_names(tmp_path):
    dataset = small_dataset()
    write_results(tmp_path / "T", {"a": [[0, 0, 10, 10]] * 4})
    with pytest.raises(FileNotFoundError, match=r"T has no result for 1 of 2 videos \(first: b.txt\)"):
        score(dataset, tmp_path / "T")
    with pytest.raises(FileNotFoundError, match="results folder not found"):
        score(dataset, tmp_path / "none")
    renamed = Dataset("d", [Video("Skating3", [[0, 0, 10, 10]] * 2, ["x"] * 2, result_names=("Skating2-2",))])
    write_results(tmp_path / "U", {"Skating2-2": [[0, 0, 10, 10]] * 2})
    assert score(renamed, tmp_path / "U").precision == 1


def test_table_and_plots(tmp_path):
    dataset = small_dataset()
    write_results(tmp_path / "Good", {"a": [[0, 0, 10, 10]] * 4, "b": [[0, 0, 10, 10]] * 2})
    write_results(tmp_path / "Poor", {"a": [[3, 3, 10, 10]] * 4, "b": [[40, 0, 10, 10]] * 2}, seconds=0.01)
    reports = [score(dataset, tmp_path / "Poor"), score(dataset, tmp_path / "Good")]
    table = format_table(reports, attributes=True).splitlines()
    assert table[0].split() == ["Tracker", "Success", "AUC", "Precision", "Norm", "precision", "FPS"]
    assert table[2].startswith("Good") and table[3].startswith("Poor") and table[3].rstrip().endswith("100.0")
    assert "Scale Variation (1 videos)" in table
    labels = [label for label, _ in legend_order(reports, "success")]
    assert labels[0].endswith("Good") and labels[0].startswith(f"[{reports[1].success_auc:.3f}]")
    paths = plot_all(reports, tmp_path / "plots", "small")
    assert [p.name for p in paths] == ["success_plot.png", "precision_plot.png", "norm_precision_plot.png"]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list((tmp_path / "plots").glob(".*part"))


# --------------------------------------------------------------------------- published figures (real data)


@pytest.fixture(scope="module")
def otb_and_siamrpn(tmp_path_factory):
    folder = extract_shared(tmp_path_factory, "otb/OTB100.json.zip", "results/SiamRPN++_OTB100.zip")
    return OTB(folder / "OTB100.json"), folder / "SiamRPN++"


def test_siamrpnpp_reproduces_published_otb100_auc(otb_and_siamrpn, record_property):
    dataset, results = otb_and_siamrpn
    report = score(dataset, results)
    record_property("success_auc", report.success_auc)
    record_property("precision", report.precision)
    print(f"\nSiamRPN++ OTB-100: success AUC {report.success_auc:.4f} (published 0.696), "
          f"precision {report.precision:.4f} (published 0.914), normalised precision {report.norm_precision:.4f}")
    assert round(report.success_auc, 3) == 0.696
    # The toolkits' per-video mean gives 0.905 (what pysot's toolkit prints for this model too) ...
    assert round(report.precision, 3) == 0.905
    assert len(report.per_video) == 100 and len(report.per_attribute) == 11


def test_published_precision_is_the_frame_pooled_one(otb_and_siamrpn):
    """0.914 is the fraction of all 59,035 frames within 20 px (every frame weighs the same)."""
    dataset, results = otb_and_siamrpn
    pooled = score(dataset, results, average="frame")
    print(f"\nSiamRPN++ OTB-100 pooled over frames: precision {pooled.precision:.4f}, success AUC {pooled.success_auc:.4f}")
    assert round(pooled.precision, 3) == 0.914


def test_other_conventions_do_not_explain_the_precision_gap(otb_and_siamrpn):
    """Centre definition, threshold inclusivity, frame 1, rounding, split-target names: none gives 0.914."""
    dataset, results = otb_and_siamrpn
    predictions = {video.name: load_result(results / f"{video.name}.txt", video) for video in dataset}

    def precision(centre_offset=-1.0, strict=False, skip_first=False, rounded=False, positive_mask=False):
        per_video = []
        for video in dataset:
            gt, pred = video.boxes, predictions[video.name]
            if rounded:
                pred = np.round(pred)
            if skip_first:
                gt, pred = gt[1:], pred[1:]
            distance = np.hypot(*((gt[:, :2] + (gt[:, 2:] + centre_offset) / 2) - (pred[:, :2] + (pred[:, 2:] + centre_offset) / 2)).T)
            if positive_mask:  # the MATLAB toolkit gives frames whose gt has a value <= 0 the distance -1
                distance[~(gt > 0).all(axis=1)] = -1
            per_video.append(np.mean(distance < 20 if strict else distance <= 20))
        return float(np.mean(per_video))

    baseline = precision()
    variants = {
        "centre x+w/2": precision(centre_offset=0.0),
        "strict < 20": precision(strict=True),
        "without frame 1": precision(skip_first=True),
        "results rounded": precision(rounded=True),
        "gt <= 0 counted as success": precision(positive_mask=True),
    }
    # Counting the split targets (Jogging, Skating2, Human4) differently changes the video set.
    report = score(dataset, results)
    for dropped in (("Jogging-2", "Skating2-2"), ("Jogging-1", "Skating2-1"), ("Human4-2",)):
        kept = [s.precision for name, s in report.per_video.items() if name not in dropped]
        variants["without " + ", ".join(dropped)] = float(np.mean(kept))
    print("\n" + "\n".join(f"{name}: {value:.4f}" for name, value in variants.items()))
    assert round(baseline, 3) == 0.905
    for value in variants.values():
        assert abs(value - baseline) < 0.005 and round(value, 3) != 0.914


# --------------------------------------------------------------------------- LaSOT (real ground truth)


@pytest.fixture(scope="module")
def lasot_test(tmp_path_factory):
    from conftest import SHARED_DATA

    folder = extract_shared(tmp_path_factory, "lasot/lasot_test280_gt_absent.zip")
    return LaSOT(folder, subset=SHARED_DATA / "lasot" / "testing_set.txt")


def test_lasot_scoring_matches_the_oracle_on_real_absent_flags(lasot_test, tmp_path):
    rng = np.random.default_rng(0)
    videos = [v for v in lasot_test if v.absent.any()][:3]
    subset = lasot_test.subset([v.name for v in videos])
    noisy = {}
    for video in videos:
        boxes = video.boxes.copy()
        boxes[:, :2] += rng.normal(0, 0.15, (len(boxes), 2)) * boxes[:, 2:]
        boxes[:, 2:] *= np.exp(rng.normal(0, 0.2, (len(boxes), 2)))
        noisy[video.name] = boxes[1:]  # without the first frame, as LaSOT result files often are
    write_results(tmp_path / "Noisy", noisy)
    report = score(subset, tmp_path / "Noisy")
    for video in videos:
        expected = oracle_counts(video.boxes, np.concatenate([video.boxes[:1], noisy[video.name]]), video.absent)
        scores = report.per_video[video.name]
        assert scores.success_auc == pytest.approx(np.mean(expected[0]) / len(video), abs=1e-12)
        assert scores.precision == expected[1][20] / len(video)
        assert scores.norm_precision == expected[2][20] / len(video)
        # Absent frames never count even where the prediction is the ground truth.
        perfect = score(Dataset("one", [video]), _write_perfect(tmp_path, video)).per_video[video.name]
        assert perfect.success_curve[0] == pytest.approx(1 - video.absent.mean() - _zero_area_present(video))


def _write_perfect(tmp_path, video):
    folder = tmp_path / f"perfect-{video.name}"
    write_results(folder, {video.name: video.boxes})
    return folder


def _zero_area_present(video):
    return float(np.mean((video.boxes[:, 2:] <= 0).any(axis=1) & ~video.absent))
