"""`snlt track` end to end on small synthetic sequences: outputs, user errors as one
line with a non-zero exit, and no half-written outputs."""

import json
import re

import cv2
import numpy as np
import pytest
import torch

from conftest import requires_minilm
from snlt_fast.cli import main
from snlt_fast.models import build_model, save_checkpoint

HEIGHT, WIDTH = 96, 128
BOX = "40,30,24,20"


def _frames(count, seed=0):
    """A textured background with a bright square moving right by 2 pixels a frame."""
    rng = np.random.default_rng(seed)
    background = cv2.GaussianBlur(rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8), (5, 5), 0)
    frames = []
    for index in range(count):
        frame = background.copy()
        frame[30:50, 40 + 2 * index : 64 + 2 * index] = (40, 220, 250)
        frames.append(frame)
    return frames


@pytest.fixture
def folder(tmp_path):
    source = tmp_path / "seq" / "img"
    source.mkdir(parents=True)
    for index, frame in enumerate(_frames(5)):
        cv2.imwrite(str(source / f"{index + 1:04d}.jpg"), frame)
    return tmp_path / "seq"


def _track(*argv):
    return main(["track", *map(str, argv), "--no-progress"])


def _fails_with(capsys, message, *argv):
    status = _track(*argv)
    captured = capsys.readouterr()
    assert status != 0
    lines = captured.err.strip().splitlines()
    assert lines and lines[-1].startswith("snlt track: error: ") and message in lines[-1], captured.err
    assert "Traceback" not in captured.err
    return lines[-1]


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if ".partial" in p.name)


def test_tracks_a_frame_folder_and_writes_boxes_and_video(folder, tmp_path, capsys):
    boxes, video = tmp_path / "boxes.txt", tmp_path / "out.mp4"
    status = _track(folder, "--box", BOX, "--random-weights", "--arch", "siamrpn_alex", "--boxes", boxes, "--out", video)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "UNTRAINED" in captured.err
    assert captured.out.startswith("snlt track: 5 frames (0 skipped), 1 target(s); tracking step")
    lines = boxes.read_text().splitlines()
    assert len(lines) == 5 and lines[0] == "40.0000,30.0000,24.0000,20.0000"
    assert all(np.isfinite([float(v) for v in line.split(",")]).all() for line in lines)
    capture = cv2.VideoCapture(str(video))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    capture.release()
    assert _leftovers(tmp_path) == []


@requires_minilm
def test_tracks_a_video_file_with_a_sentence(tmp_path, capsys):
    video = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (WIDTH, HEIGHT))
    for frame in _frames(4):
        writer.write(frame)
    writer.release()
    boxes = tmp_path / "boxes.txt"
    status = _track(video, "--box", BOX, "--text", "a yellow square", "--random-weights", "--arch", "snlt_alex", "--boxes", boxes)
    assert status == 0, capsys.readouterr().err
    assert len(boxes.read_text().splitlines()) == 4


def test_several_targets_write_one_box_file_each(folder, tmp_path, capsys):
    targets = tmp_path / "targets.json"
    targets.write_text(json.dumps([{"box": [40, 30, 24, 20]}, {"box": [90, 60, 20, 20]}]))
    boxes = tmp_path / "boxes.txt"
    status = _track(folder, "--targets", targets, "--random-weights", "--arch", "siamrpn_alex", "--boxes", boxes)
    assert status == 0, capsys.readouterr().err
    for index in (1, 2):
        assert len((tmp_path / f"boxes.{index}.txt").read_text().splitlines()) == 5
    assert not boxes.exists()


def test_missing_and_empty_sources(tmp_path, capsys):
    _fails_with(capsys, "does not exist", tmp_path / "nowhere", "--box", BOX, "--random-weights")
    (tmp_path / "empty").mkdir()
    _fails_with(capsys, "no image files", tmp_path / "empty", "--box", BOX, "--random-weights")
    not_a_video = tmp_path / "notes.txt"
    not_a_video.write_text("hello")
    _fails_with(capsys, "cannot read", not_a_video, "--box", BOX, "--random-weights")


def test_an_undecodable_frame_is_reported_with_its_index(folder, tmp_path, capsys):
    (folder / "img" / "0003.jpg").write_bytes(b"not a jpeg")
    boxes, video = tmp_path / "boxes.txt", tmp_path / "out.mp4"
    arguments = [folder, "--box", BOX, "--random-weights", "--arch", "siamrpn_alex", "--boxes", boxes, "--out", video]
    line = _fails_with(capsys, "frame 2 (0003.jpg) could not be decoded", *arguments)
    assert "--skip-bad-frames" in line
    # Nothing half-written: neither output exists, and no temporary file is left behind.
    assert not boxes.exists() and not video.exists() and _leftovers(tmp_path) == []

    assert _track(*arguments, "--skip-bad-frames") == 0
    assert "(1 skipped)" in capsys.readouterr().out
    lines = boxes.read_text().splitlines()
    assert len(lines) == 5 and lines[2] == lines[1]  # the skipped frame repeats the last box


@pytest.mark.parametrize(
    "box, message",
    [
        ("40,30,0,20", "has no area"),
        ("40,30,24,-3", "has no area"),
        ("128,30,24,20", "does not overlap the first frame (128x96, 0-based pixels"),
        ("-24,30,24,20", "does not overlap the first frame"),
        ("40,-20,24,20", "does not overlap the first frame"),
        ("40,30,24", "four"),
        ("a,b,c,d", "four numbers"),
    ],
)
def test_bad_boxes(folder, capsys, box, message):
    _fails_with(capsys, message, folder, f"--box={box}", "--random-weights", "--arch", "siamrpn_alex")


def _tracked_boxes(capsys, folder, path, *argv):
    status = _track(folder, *argv, "--random-weights", "--arch", "siamrpn_alex", "--boxes", path)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return np.array([[float(v) for v in line.split(",")] for line in path.read_text().splitlines()]), captured.out


@pytest.mark.parametrize("box", ["-5,30,24,20", "110,80,24,20"])
def test_boxes_partly_outside_the_frame_are_tracked(folder, tmp_path, capsys, box):
    # "--box -5,..." as two words: argparse alone would take "-5,..." for an option.
    boxes, _ = _tracked_boxes(capsys, folder, tmp_path / "boxes.txt", "--box", box)
    assert len(boxes) == 5 and np.isfinite(boxes).all()
    assert boxes[0].tolist() == [float(v) for v in box.split(",")]


def test_one_based_boxes_from_a_ground_truth_file_or_the_command_line(folder, tmp_path, capsys):
    zero_based, _ = _tracked_boxes(capsys, folder, tmp_path / "zero.txt", "--box", BOX)
    ground_truth = tmp_path / "groundtruth_rect.txt"
    ground_truth.write_text("41\t31\t24\t20\n43,31,24,20\n")
    one_based, _ = _tracked_boxes(capsys, folder, tmp_path / "one.txt", "--init-from", ground_truth)
    # The same tracking, written in the origin it was given in (1-based for --init-from).
    np.testing.assert_allclose(one_based, zero_based + np.array([1, 1, 0, 0]), atol=1e-4)
    # --box-origin 1 moves --box one pixel: this box only touches a 0-based frame's left edge.
    _fails_with(capsys, "does not overlap the first frame (128x96, 1-based pixels", folder, "--box=-23,30,24,20",
                "--box-origin", "1", "--random-weights")  # fmt: skip
    _fails_with(capsys, "give one of --box, --init-from and --targets", folder, "--box", BOX, "--init-from", ground_truth)
    ground_truth.write_bytes(b"\xff\xfe\x00garbage")
    _fails_with(capsys, "groundtruth_rect.txt", folder, "--init-from", ground_truth, "--random-weights")


@requires_minilm
def test_random_weights_track_without_long_term_mode_unless_asked(folder, capsys):
    arguments = [folder, "--box", BOX, "--text", "a yellow square", "--random-weights", "--arch", "snlt_alex"]
    assert _track(*arguments) == 0  # SNLT's own default is long-term mode on
    assert capsys.readouterr().out.rstrip().endswith("FPS; long-term mode off")
    assert _track(*arguments, "--long-term") == 0
    assert re.search(r"FPS; long-term mode on \(\d frames in lost search\)$", capsys.readouterr().out.rstrip())


@requires_minilm
def test_the_overlay_draws_modality_weights_only_where_they_exist(folder, tmp_path, capsys, monkeypatch):
    import snlt_fast.tracker.io as io

    labels = []
    original = io.cv2.putText
    monkeypatch.setattr(io.cv2, "putText", lambda canvas, text, *rest: labels.append(text) or original(canvas, text, *rest))
    video = tmp_path / "out.mp4"
    status = _track(folder, "--box", BOX, "--text", "a yellow square", "--random-weights", "--arch", "snlt_alex", "--out", video)
    assert status == 0, capsys.readouterr().err
    # Frame 0 is the given box: no network ran, so it has no weights.
    assert len(labels) == 5 and " vis " not in labels[0] and all(" vis " in label for label in labels[1:])
    labels.clear()
    assert _track(folder, "--box", BOX, "--random-weights", "--arch", "siamrpn_alex", "--out", video) == 0
    assert len(labels) == 5 and not any(" vis " in label for label in labels)  # no sentence, no weights


def test_a_network_with_non_finite_outputs_is_an_error_naming_frame_and_head(folder, tmp_path, capsys):
    torch.manual_seed(0)
    model = build_model("siamrpn_alex")
    uncalibrated = save_checkpoint(model, tmp_path / "uncalibrated.pth")
    _fails_with(capsys, "frame 1, target 0: the box decoded from the loc head overflowed", folder, "--box", BOX,
                "--weights", uncalibrated)  # fmt: skip
    with torch.no_grad():
        model.rpn_head.cls.head[3].bias[0] = float("nan")
    broken = save_checkpoint(model, tmp_path / "nan.pth")
    _fails_with(capsys, "frame 1, target 0: the network's cls head output went non-finite", folder, "--box", BOX,
                "--weights", broken)  # fmt: skip


class PickledConfig:
    """Stands for the objects some training scripts pickle next to the weights."""


def test_bad_weights(folder, tmp_path, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 definitely not a checkpoint")
    _fails_with(capsys, "garbage.pth", folder, "--box", BOX, "--weights", garbage)
    text = tmp_path / "weights.txt"
    text.write_text("40,30,24,20\n")
    line = _fails_with(capsys, "weights.txt' is not a PyTorch checkpoint", folder, "--box", BOX, "--weights", text)
    assert "trust" not in line
    torch.manual_seed(0)
    pickled = tmp_path / "pickled.pth"
    torch.save({"state_dict": build_model("siamrpn_alex").state_dict(), "cfg": PickledConfig()}, pickled)
    line = _fails_with(capsys, "add --trust-weights only if you trust", folder, "--box", BOX, "--weights", pickled)
    assert "trusted=True" not in line
    assert _track(folder, "--box", BOX, "--weights", pickled, "--trust-weights", "--arch", "siamrpn_alex") == 2
    assert "loc head overflowed" in capsys.readouterr().err  # loaded: only its untrained outputs fail
    _fails_with(capsys, "does not exist", folder, "--box", BOX, "--weights", tmp_path / "missing.pth")
    saved = tmp_path / "alex.pth"
    torch.manual_seed(0)
    save_checkpoint(build_model("siamrpn_alex"), saved)
    _fails_with(capsys, "--weights", folder, "--box", BOX, "--weights", saved, "--arch", "snlt_r50")
    _fails_with(capsys, "no language branch", folder, "--box", BOX, "--text", "a square", "--weights", saved)
    _fails_with(capsys, "--arch goes with --weights", folder, "--box", BOX, "--arch", "snlt_r50")


def test_other_user_errors(folder, tmp_path, capsys):
    _fails_with(capsys, "--box x,y,w,h", folder, "--random-weights")
    if not torch.cuda.is_available():
        _fails_with(capsys, "no CUDA GPU", folder, "--box", BOX, "--random-weights", "--device", "cuda")
    _fails_with(capsys, "--device must be", folder, "--box", BOX, "--random-weights", "--device", "tpu")
    _fails_with(capsys, "--backend cuda", folder, "--box", BOX, "--random-weights", "--backend", "cuda")
    targets = tmp_path / "targets.json"
    targets.write_text("[{")
    _fails_with(capsys, "not valid JSON", folder, "--targets", targets, "--random-weights")
    targets.write_text(json.dumps([{"box": [1, 2, 3, 4], "text": "a"}, {"box": [5, 6, 7, 8]}]))
    _fails_with(capsys, "every target or for none", folder, "--targets", targets, "--random-weights")
    _fails_with(capsys, "does not exist", folder, "--box", BOX, "--random-weights", "--boxes", tmp_path / "no" / "b.txt")


def test_compile_goes_with_the_fast_mode(folder, tmp_path, capsys):
    untrained = (folder, "--box", BOX, "--random-weights", "--arch", "siamrpn_alex")
    _fails_with(capsys, "--compile needs --precision fast", *untrained, "--compile")
    status = _track(*untrained, "--precision", "fast", "--compile", "--boxes", tmp_path / "boxes.txt")
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "compiled the search step in " in captured.err
    assert len((tmp_path / "boxes.txt").read_text().splitlines()) == 5
