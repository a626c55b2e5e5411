"""`snlt eval run` / `snlt eval score` and the tracker runner, with trackers defined here.

The trackers below are reached the way users reach theirs: `--tracker test_eval_cli:make_...`
(pytest puts tests/ on sys.path).
"""

import argparse
import json
import os
import zipfile

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import requires_minilm
import snlt_fast.cli as snlt_cli
from snlt_fast.datasets import OTB, NumberedFrames, Video
from snlt_fast.evaluation import score
from snlt_fast.evaluation.runner import TrackerOutputError, box_from_output, parse_shard, run_tracker, shard_videos

SENTENCE = "man riding a motorbike wearing a white helmet"
# Every tracker made by a factory below records the videos it was initialised on, with the text.
INITIALISED = []


class BrightSpotTracker:
    """Boxes the pixels brighter than mid-grey: exact on the synthetic sequences."""

    def init(self, frame, box, text):
        INITIALISED.append((tuple(box), text))
        self.box = np.asarray(box, dtype=float)

    def track(self, frame):
        points = cv2.findNonZero((cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) > 128).astype(np.uint8))
        if points is not None:
            self.box = np.array(cv2.boundingRect(points), dtype=float)
        return {"bbox": self.box}


class TemplateTracker:
    """Normalised cross-correlation of the first frame's patch over a window around the last box."""

    def init(self, frame, box, text):
        INITIALISED.append((tuple(box), text))
        x, y, w, h = (int(round(v)) for v in box)
        self.template = frame[y - 1 : y - 1 + h, x - 1 : x - 1 + w]
        self.box = np.asarray(box, dtype=float)

    def track(self, frame):
        x, y, w, h = self.box
        left, top = max(0, int(x) - 2 * int(w)), max(0, int(y) - 2 * int(h))
        window = frame[top : top + 5 * int(h), left : left + 5 * int(w)]
        if window.shape[0] > self.template.shape[0] and window.shape[1] > self.template.shape[1]:
            response = cv2.matchTemplate(window, self.template, cv2.TM_CCOEFF_NORMED)
            _, _, _, (dx, dy) = cv2.minMaxLoc(response)
            self.box = np.array([left + dx + 1, top + dy + 1, w, h])
        return self.box.tolist()


class ShortBoxTracker(BrightSpotTracker):
    def track(self, frame):
        return [1.0, 2.0, 3.0]


class InterruptingTracker(BrightSpotTracker):
    """Stops (as Ctrl-C would) on the third frame of the second video it sees."""

    def track(self, frame):
        self.frames = getattr(self, "frames", 0) + 1
        if len(INITIALISED) == 2 and self.frames >= 2:
            raise KeyboardInterrupt
        return super().track(frame)


def make_bright_spot_tracker(weights=None, device=None):
    return BrightSpotTracker()


def make_template_tracker():
    return TemplateTracker()


def make_short_box_tracker():
    return ShortBoxTracker()


def make_interrupting_tracker():
    return InterruptingTracker()


def make_nothing():
    return object()


@pytest.fixture(autouse=True)
def only_eval_subcommand(monkeypatch):
    """The `snlt` command with just the eval subcommand, whatever state the others are in."""
    monkeypatch.setattr(snlt_cli, "SUBCOMMAND_MODULES", ("snlt_fast.evaluation.cli",))
    INITIALISED.clear()


def snlt(*argv):
    return snlt_cli.main([str(a) for a in argv])


def write_synthetic_otb(root, lengths={"Alpha": 8, "Beta": 5, "Gamma": 12}):
    """OTB-layout sequences of a white 8x8 square moving over black 64x48 frames."""
    for name, length in lengths.items():
        (root / name / "img").mkdir(parents=True)
        boxes = []
        for index in range(length):
            x, y = 4 + 3 * index, 6 + 2 * index % 30
            frame = np.zeros((48, 64, 3), np.uint8)
            frame[y : y + 8, x : x + 8] = 255
            cv2.imwrite(str(root / name / "img" / f"{index + 1:04d}.jpg"), frame)
            boxes.append(f"{x}\t{y}\t8\t8\n")
        (root / name / "groundtruth_rect.txt").write_text("".join(boxes))
    return root


def run_args(root, results, tracker="test_eval_cli:make_bright_spot_tracker", *extra):
    return ("eval", "run", "--dataset", "otb", "--root", root, "--tracker", tracker, "--results", results, "--no-progress", *extra)


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("snlt eval: error: ") and "\n" not in err and "Traceback" not in err
    return err


# --------------------------------------------------------------------------- run


def test_run_then_score_synthetic_sequences(tmp_path, capsys):
    root = write_synthetic_otb(tmp_path / "otb")
    results = tmp_path / "results" / "BrightSpot"
    assert snlt(*run_args(root, results)) == 0
    assert "tracked 3 videos (25 frames" in capsys.readouterr().out
    dataset = OTB(root)
    for video in dataset:
        lines = (results / f"{video.name}.txt").read_text().splitlines()
        assert len(lines) == len(video)
        np.testing.assert_array_equal(np.array([l.split(",") for l in lines], float), video.boxes)
        assert len((results / f"{video.name}_time.txt").read_text().split()) == len(video)
    assert INITIALISED[0] == ((4.0, 6.0, 8.0, 8.0), None)

    constant = tmp_path / "results" / "Constant"
    constant.mkdir()
    for video in dataset:
        (constant / f"{video.name}.txt").write_text("4,6,8,8\n" * len(video))
    plots = tmp_path / "plots"
    assert snlt("eval", "score", "--dataset", "otb", "--root", root, "--results", constant, results, "--plots", plots) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "OTB100: 3 videos, 25 frames (OPE, video average)"
    best = rows[3].split()
    assert best[0] == "BrightSpot" and best[1:4] == ["0.952", "1.000", "1.000"]  # IoU 1 is not > 1: AUC 20/21
    assert float(best[4]) > 0 and rows[4].split()[0] == "Constant" and rows[4].split()[-1] == "-"
    assert sorted(p.name for p in plots.iterdir()) == ["norm_precision_plot.png", "precision_plot.png", "success_plot.png"]

    saved = tmp_path / "scores.json"
    assert snlt("eval", "score", "--dataset", "otb", "--root", root, "--results", results, "--no-plots", "--json", saved) == 0
    [entry] = json.loads(saved.read_text())
    assert entry["tracker"] == "BrightSpot" and entry["precision"] == 1.0 and entry["fps"] > 0
    assert entry["per_video"]["Gamma"]["success_auc"] == pytest.approx(20 / 21)


def test_resume_and_restart(tmp_path, capsys):
    root = write_synthetic_otb(tmp_path / "otb")
    results = tmp_path / "res"
    assert snlt(*run_args(root, results)) == 0
    (results / "Beta.txt").unlink()
    before = {name: os.stat(results / f"{name}.txt").st_mtime_ns for name in ("Alpha", "Gamma")}
    INITIALISED.clear()
    assert snlt(*run_args(root, results)) == 0
    assert "tracked 1 videos (5 frames" in capsys.readouterr().out and len(INITIALISED) == 1
    assert {name: os.stat(results / f"{name}.txt").st_mtime_ns for name in before} == before
    INITIALISED.clear()
    assert snlt(*run_args(root, results, "test_eval_cli:make_bright_spot_tracker", "--restart")) == 0
    assert len(INITIALISED) == 3


def test_interrupted_run_keeps_finished_videos_only(tmp_path, capsys):
    root = write_synthetic_otb(tmp_path / "otb")
    results = tmp_path / "res"
    assert snlt(*run_args(root, results, "test_eval_cli:make_interrupting_tracker")) == 130
    assert "interrupted" in capsys.readouterr().err
    assert sorted(os.listdir(results)) == ["Alpha.txt", "Alpha_time.txt"]  # nothing half written
    INITIALISED.clear()
    assert snlt(*run_args(root, results)) == 0
    assert "tracked 2 videos" in capsys.readouterr().out and len(INITIALISED) == 2


def test_shards_split_the_videos(tmp_path, capsys):
    root = write_synthetic_otb(tmp_path / "otb")
    results = tmp_path / "res"
    done = []
    for shard in ("1/2", "2/2"):
        assert snlt(*run_args(root, results, "test_eval_cli:make_bright_spot_tracker", "--shard", shard)) == 0
        done.append({p.name for p in results.glob("*.txt") if not p.name.endswith("_time.txt")} - set().union(*done))
    # Longest first to the emptiest shard: Gamma (12) alone, then Alpha (8) and Beta (5) together.
    assert done == [{"Gamma.txt"}, {"Alpha.txt", "Beta.txt"}]


def test_shard_assignment_is_balanced_and_deterministic():
    videos = [Video(f"v{i}", [[1, 1, 2, 2]] * length, ["x"] * length) for i, length in enumerate([50, 10, 40, 30, 20, 25, 5])]
    shards = [shard_videos(videos, i, 3) for i in (1, 2, 3)]
    assert sorted(v.name for s in shards for v in s) == sorted(v.name for v in videos)
    loads = [sum(len(v) for v in s) for s in shards]
    assert max(loads) - min(loads) <= 10
    assert [v.name for v in shards[0]] == [v.name for v in shard_videos(list(reversed(videos)), 1, 3)][::-1]
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "a/b", "1"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=40), st.integers(1, 8))
def test_shards_partition_any_dataset_evenly(lengths, count):
    videos = [Video(f"v{i}", np.ones((length, 4)), NumberedFrames(".", 1, length, 4)) for i, length in enumerate(lengths)]
    shards = [shard_videos(videos, i, count) for i in range(1, count + 1)]
    assert sorted(v.name for s in shards for v in s) == sorted(v.name for v in videos)
    loads = [sum(len(v) for v in s) for s in shards]
    # Longest-first greedy: no shard exceeds the lightest by more than one video.
    assert max(loads) - min(loads) <= max(lengths)


@pytest.mark.parametrize("shard", ["0/2", "3/2", "x"])
def test_bad_shard_is_a_one_line_error(tmp_path, capsys, shard):
    root = write_synthetic_otb(tmp_path / "otb")
    assert snlt(*run_args(root, tmp_path / "res", "test_eval_cli:make_bright_spot_tracker", "--shard", shard)) == 2
    assert "shard" in one_line_error(capsys)


def test_progress_bar_shows_frames_per_second(tmp_path, capsys):
    root = write_synthetic_otb(tmp_path / "otb", {"Alpha": 30})
    args = [a for a in run_args(root, tmp_path / "res") if a != "--no-progress"]
    assert snlt(*args) == 0
    err = capsys.readouterr().err
    assert "frame/s" in err and "fps" in err and "30/30" in err


# --------------------------------------------------------------------------- errors


def test_bad_tracker_output_is_a_one_line_error(tmp_path, capsys):
    root = write_synthetic_otb(tmp_path / "otb")
    results = tmp_path / "res"
    assert snlt(*run_args(root, results, "test_eval_cli:make_short_box_tracker")) == 2
    assert "video Alpha, frame 2: the tracker returned [1.0, 2.0, 3.0], not 4 finite numbers" in one_line_error(capsys)
    assert not results.exists() or not list(results.iterdir())


def test_unreadable_frame_is_a_one_line_error(tmp_path, capsys):
    root = write_synthetic_otb(tmp_path / "otb", {"Alpha": 4})
    (root / "Alpha" / "img" / "0003.jpg").write_bytes(b"not a jpeg")
    assert snlt(*run_args(root, tmp_path / "res")) == 2
    assert "video Alpha: frame 3 not a readable image: " in one_line_error(capsys)
    assert not (tmp_path / "res" / "Alpha.txt").exists()


@pytest.mark.parametrize(
    "tracker, extra, message",
    [
        ("kcf", (), "unknown tracker 'kcf'"),
        ("test_eval_cli:make_missing", (), "has no callable 'make_missing'"),
        ("no_such_module_here:make", (), "cannot import tracker module 'no_such_module_here'"),
        ("test_eval_cli:make_nothing", (), "returned object, which has no init or track method"),
        ("test_eval_cli:make_bright_spot_tracker", ("--random-weights",), "random weights apply to the built-in snlt"),
        ("snlt", ("--arch", "snlt_r50"), "arch goes with weights or random weights"),
    ],
)
def test_tracker_spec_errors(tmp_path, capsys, tracker, extra, message):
    root = write_synthetic_otb(tmp_path / "otb", {"Alpha": 3})
    assert snlt(*run_args(root, tmp_path / "res", tracker, *extra)) == 2
    assert message in one_line_error(capsys)


def test_score_errors_are_one_line(tmp_path, capsys):
    root = write_synthetic_otb(tmp_path / "otb", {"Alpha": 3, "Beta": 3})
    (tmp_path / "T").mkdir()
    (tmp_path / "T" / "Alpha.txt").write_text("1,1,1,1\n" * 3)
    assert snlt("eval", "score", "--dataset", "otb", "--root", root, "--results", tmp_path / "T", "--no-plots") == 2
    assert "has no result for 1 of 2 videos (first: Beta.txt)" in one_line_error(capsys)
    (tmp_path / "T" / "Beta.txt").write_text("1,1,1,1\n1,1\n")
    assert snlt("eval", "score", "--dataset", "otb", "--root", root, "--results", tmp_path / "T", "--no-plots") == 2
    assert "Beta.txt:2: expected 4 numbers, got 2" in one_line_error(capsys)
    assert snlt("eval", "score", "--dataset", "lasot", "--root", tmp_path / "nowhere", "--results", tmp_path / "T") == 2
    assert "LaSOT folder not found" in one_line_error(capsys)
    assert snlt("eval", "score", "--dataset", "otb", "--root", root, "--split", "test", "--results", tmp_path / "T") == 2
    assert "dataset otb has no splits" in one_line_error(capsys)


def _zip(archive, files):
    with zipfile.ZipFile(archive, "w") as handle:
        for name, text in files.items():
            handle.writestr(name, text)
    return archive


def test_score_reads_zip_archives_in_place(tmp_path, capsys):
    root = write_synthetic_otb(tmp_path / "otb", {"Alpha": 3, "Beta": 4})
    entries = {
        video.name: {"img_names": [f"otb/{p.parent.parent.name}/img/{p.name}" for p in video.frame_paths],
                     "gt_rect": video.boxes.tolist(), "init_rect": video.boxes[0].tolist(), "attr": ["Occlusion"]}
        for video in OTB(root)
    }  # fmt: skip
    annotations = _zip(tmp_path / "OTB.json.zip", {"OTB.json": json.dumps(entries)})
    zipped = OTB(annotations)
    assert zipped.names == ["Alpha", "Beta"] and zipped["Beta"].frame_paths[0] == root / "Beta" / "img" / "0001.jpg"
    results = {name: "".join(f"{x},{y},{w},{h}\n" for x, y, w, h in entry["gt_rect"]) for name, entry in entries.items()}
    # Results zipped in a folder (named as the tracker), or at the archive's root.
    in_folder = _zip(tmp_path / "Perfect_OTB.zip", {f"Perfect/{name}.txt": text for name, text in results.items()})
    at_root = _zip(tmp_path / "Flat.zip", {f"{name}.txt": text for name, text in results.items()})
    assert snlt("eval", "score", "--dataset", "otb", "--root", annotations, "--results", in_folder, at_root, "--no-plots") == 0
    rows = capsys.readouterr().out.splitlines()
    assert [row.split()[:2] for row in rows[3:5]] == [["Perfect", "0.952"], ["Flat", "0.952"]]

    broken = _zip(tmp_path / "Broken.zip", {"Alpha.txt": results["Alpha"], "Beta.txt": "1,2,3\n" * 4})
    assert snlt("eval", "score", "--dataset", "otb", "--root", root, "--results", broken, "--no-plots") == 2
    assert "Broken.zip/Beta.txt:1: expected 4 numbers, got 3" in one_line_error(capsys)
    truncated = tmp_path / "Truncated.zip"
    truncated.write_bytes(in_folder.read_bytes()[:100])
    assert snlt("eval", "score", "--dataset", "otb", "--root", root, "--results", truncated, "--no-plots") == 2
    assert "Truncated.zip: not a readable zip archive" in one_line_error(capsys)
    lasot = _zip(tmp_path / "lasot.zip", {"annos/a-1.txt": "1,1,2,2\n"})
    assert snlt("eval", "score", "--dataset", "lasot", "--root", lasot, "--results", in_folder, "--no-plots") == 2
    assert "lasot.zip is a zip archive; LaSOT is read from a folder: unzip it" in one_line_error(capsys)


def test_score_reads_the_downloaded_otb_zips(shared_data, capsys):
    annotations, results = shared_data / "otb" / "OTB100.json.zip", shared_data / "results" / "SiamRPN++_OTB100.zip"
    assert snlt("eval", "score", "--dataset", "otb", "--root", annotations, "--results", results, "--no-plots") == 0
    assert capsys.readouterr().out.splitlines()[3].split()[:2] == ["SiamRPN++", "0.696"]


def test_box_from_output_forms():
    class WithBox:
        def __init__(self, box):
            self.bbox = box

    from snlt_fast.tracker import TargetResult

    expected = np.array([1.0, 2.0, 3.0, 4.0])
    target = TargetResult((1.0, 2.0, 3.0, 4.0), 0.9, 0.8, 0.5, 0.5, False)  # what SNLTracker.track returns
    for output in ([1, 2, 3, 4], (1, 2, 3, 4), expected, {"bbox": [1, 2, 3, 4]}, {"box": (1, 2, 3, 4)},
                   WithBox([1, 2, 3, 4]), torch.tensor([[1.0, 2.0, 3.0, 4.0]]), target):
        np.testing.assert_array_equal(box_from_output(output, "v", 2), expected)
    for bad in (None, [1, 2, 3], [1, 2, float("nan"), 4], {"score": 1}, "1,2,3,4"):
        with pytest.raises(TrackerOutputError, match="video v, frame 7"):
            box_from_output(bad, "v", 7)


# --------------------------------------------------------------------------- real frames


def test_runner_on_real_biker_frames(shared_data, tmp_path):
    dataset = OTB(shared_data / "otb" / "sequences")
    summary = run_tracker(make_template_tracker(), dataset, tmp_path / "Template", progress=False)
    assert summary.finished == ["Biker"] and summary.frames == 142 and summary.fps > 0
    report = score(dataset, tmp_path / "Template")
    print(f"\ntemplate matching on Biker: success AUC {report.success_auc:.3f}, precision {report.precision:.3f}, "
          f"{report.fps:.0f} fps")
    assert report.fps is not None and 0 < report.success_auc <= 1
    # The first frames move little: the tracker holds the target at the start.
    assert report.per_video["Biker"].success_curve[0] > 0.1


def test_otb99lang_run_passes_the_sentence(shared_data, tmp_path, capsys):
    root = tmp_path / "OTB99-LANG"
    (root / "OTB_videos").mkdir(parents=True)
    (root / "OTB_videos" / "Biker").symlink_to(shared_data / "otb" / "sequences" / "Biker")
    (root / "OTB_query_test").mkdir()
    (root / "OTB_query_test" / "Biker.txt").write_text(SENTENCE + "\n")
    (root / "otb99_test_split.txt").write_text("Biker\n")
    results = tmp_path / "results" / "Template"
    argv = ["eval", "run", "--dataset", "otb99lang", "--root", root, "--tracker", "test_eval_cli:make_template_tracker",
            "--results", results, "--no-progress"]
    assert snlt(*argv) == 0
    assert INITIALISED == [((262.0, 94.0, 16.0, 26.0), SENTENCE)]
    assert "OTB99-LANG-test shard 1/1: tracked 1 videos (142 frames" in capsys.readouterr().out
    assert snlt("eval", "score", "--dataset", "otb99lang", "--root", root, "--results", results, "--no-plots") == 0
    assert capsys.readouterr().out.splitlines()[3].startswith("Template")


# --------------------------------------------------------------------------- the SNLT tracker by name


@requires_minilm
def test_snlt_tracker_by_name_with_random_weights(tmp_path, capsys):
    """`--tracker snlt` runs SNLTracker (untrained, so only the mechanics are checked)."""
    root = write_synthetic_otb(tmp_path / "otb", {"Alpha": 3})
    results = tmp_path / "res" / "snlt"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    argv = run_args(root, results, "snlt", "--random-weights", "--arch", "snlt_alex", "--device", device)
    assert snlt(*argv) == 0
    captured = capsys.readouterr()
    assert "UNTRAINED" in captured.err and "tracked 1 videos (3 frames" in captured.out
    boxes = np.loadtxt(results / "Alpha.txt", delimiter=",")
    assert boxes.shape == (3, 4) and np.isfinite(boxes).all()
    np.testing.assert_array_equal(boxes[0], [4, 6, 8, 8])


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--weights", "missing.pth"), "weights missing.pth does not exist"),
        (("--random-weights", "--device", "tpu"), "device must be cpu or cuda"),
        (("--weights", "garbage.pth"), "weights garbage.pth: 'garbage.pth' is not a PyTorch checkpoint"),
        (("--weights", "pickled.pth"), "weights pickled.pth pickles objects besides tensors"),
    ],
)
def test_snlt_tracker_errors(tmp_path, capsys, extra, message, monkeypatch):
    root = write_synthetic_otb(tmp_path / "otb", {"Alpha": 3})
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    torch.save({"config": argparse.Namespace(lr=0.1)}, tmp_path / "pickled.pth")
    assert snlt(*run_args(root, tmp_path / "res", "snlt", *extra)) == 2
    line = one_line_error(capsys)
    assert message in line and "trusted=True" not in line


def test_arch_choices_are_listed_and_checked(tmp_path, capsys):
    with pytest.raises(SystemExit):
        snlt("eval", "run", "--help")
    assert "siamrpn_r50_l234, siamrpn_alex, snlt_r50, snlt_alex" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as exit:
        snlt(*run_args(tmp_path, tmp_path / "res", "snlt", "--random-weights", "--arch", "vgg"))
    assert exit.value.code == 2 and "argument --arch: invalid choice: 'vgg'" in capsys.readouterr().err
