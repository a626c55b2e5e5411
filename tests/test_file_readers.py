"""Every file reader on broken input: empty, truncated, binary and wrong-encoding files
give one line naming the file (a ValueError or FileNotFoundError from the Python API,
`snlt ...: error: ...` and exit status 2 from the command line), never a traceback,
a crash or a silently wrong result.

Readers covered: benchmark annotations (OTB folder and json, OTB-99-LANG split lists and
sentences, LaSOT boxes, flags and sentences, name lists), result and timing files,
checkpoints, `snlt track`'s --targets, --init-from and sources (frame folders, videos).
"""

import json

import cv2
import numpy as np
import pytest
import torch

import snlt_fast.cli as snlt_cli
from snlt_fast.datasets import OTB, AnnotationError, LaSOT, OTB99Lang
from snlt_fast.evaluation import score
from snlt_fast.models import CheckpointError, build_model, load_checkpoint, save_checkpoint

BOXES = "".join(f"{10 + i},{20 + i},30,40\n" for i in range(4))
BROKEN = {
    "empty": b"",
    "binary": bytes(range(256)) * 4,
    "utf-16": BOXES.encode("utf-16"),
    "latin-1": ("caf\xe9 " + BOXES).encode("latin-1"),
    "truncated": BOXES.encode()[: len(BOXES) * 2 // 3],
}
READER_ERRORS = (AnnotationError, FileNotFoundError, CheckpointError)


def assert_one_line_naming(error, path):
    message = str(error)
    assert "\n" not in message and path.name in message, message


def otb_folder(root, frames=4):
    (root / "Seq" / "img").mkdir(parents=True)
    for index in range(frames):
        cv2.imwrite(str(root / "Seq" / "img" / f"{index + 1:04d}.jpg"), np.full((48, 64, 3), 100, np.uint8))
    (root / "Seq" / "groundtruth_rect.txt").write_text(BOXES)
    return root


def lasot_folder(root):
    sequence = root / "cat" / "cat-1"
    sequence.mkdir(parents=True)
    (sequence / "groundtruth.txt").write_text(BOXES)
    (sequence / "full_occlusion.txt").write_text("0,0,0,0\n")
    (sequence / "out_of_view.txt").write_text("0,0,1,0\n")
    (sequence / "nlp.txt").write_text("a cat on a sofa\n")
    (root / "testing_set.txt").write_text("cat-1\n")
    return root


# Each case: (make the dataset and return the file to break, read it). A sentence or a
# name list cut short is still a sentence or a name list: "truncated" applies to numbers.
READERS = {
    "OTB ground truth": (lambda root: otb_folder(root) / "Seq" / "groundtruth_rect.txt", lambda root: OTB(root)),
    "LaSOT ground truth": (lambda root: lasot_folder(root) / "cat" / "cat-1" / "groundtruth.txt", lambda root: LaSOT(root)),
    "LaSOT absent flags": (lambda root: lasot_folder(root) / "cat" / "cat-1" / "out_of_view.txt", lambda root: LaSOT(root)),
    "LaSOT sentence": (lambda root: lasot_folder(root) / "cat" / "cat-1" / "nlp.txt", lambda root: LaSOT(root)),
    "LaSOT name list": (lambda root: lasot_folder(root) / "testing_set.txt", lambda root: LaSOT(root, subset="test")),
}
FREE_TEXT = ("LaSOT sentence", "LaSOT name list")
CASES = [(reader, kind) for reader in READERS for kind in BROKEN if not (kind == "truncated" and reader in FREE_TEXT)]


@pytest.mark.parametrize("reader, kind", CASES)
def test_annotation_readers(tmp_path, reader, kind):
    make, read = READERS[reader]
    broken = make(tmp_path)
    broken.write_bytes(BROKEN[kind])
    with pytest.raises(READER_ERRORS) as error:
        read(tmp_path)
    assert_one_line_naming(error.value, broken)


@pytest.mark.parametrize("kind", ["empty", "binary", "utf-16", "truncated"])
def test_otb_json_and_otb99lang_files(tmp_path, kind):
    entries = {"Seq": {"img_names": [f"Seq/img/{i + 1:04d}.jpg" for i in range(4)], "gt_rect": [[1, 1, 5, 5]] * 4}}
    annotations = tmp_path / "OTB100.json"
    text = json.dumps(entries).encode()
    annotations.write_bytes(text[: len(text) // 2] if kind == "truncated" else BROKEN[kind])
    with pytest.raises(READER_ERRORS) as error:
        OTB(annotations)
    assert_one_line_naming(error.value, annotations)

    annotations.write_text(json.dumps(entries))
    split = tmp_path / "otb99_test_split.txt"
    split.write_bytes(b"\x00\xff\xfe" if kind == "binary" else BROKEN["utf-16"])
    with pytest.raises(READER_ERRORS) as error:
        OTB99Lang(tmp_path)
    assert_one_line_naming(error.value, split)
    split.write_text("Seq\n")
    (tmp_path / "OTB_query_test").mkdir()
    query = tmp_path / "OTB_query_test" / "Seq.txt"
    query.write_bytes(BROKEN["empty" if kind == "truncated" else kind])
    with pytest.raises(READER_ERRORS) as error:
        OTB99Lang(tmp_path)
    assert_one_line_naming(error.value, query)


@pytest.mark.parametrize("kind", BROKEN)
@pytest.mark.parametrize("which", ["result", "timing"])
def test_result_and_timing_files(tmp_path, kind, which):
    dataset = OTB(otb_folder(tmp_path / "otb"))
    results = tmp_path / "results"
    results.mkdir()
    (results / "Seq.txt").write_text(BOXES)
    (results / "Seq_time.txt").write_text("0.1\n" * 4)
    broken = results / ("Seq.txt" if which == "result" else "Seq_time.txt")
    broken.write_bytes(BROKEN[kind])
    if which == "timing" and kind == "empty":
        assert score(dataset, results).fps is None  # no time recorded: no FPS
        return
    with pytest.raises(READER_ERRORS) as error:
        score(dataset, results)
    assert_one_line_naming(error.value, broken)


@pytest.mark.parametrize("kind", BROKEN)
def test_checkpoints(tmp_path, kind):
    path = tmp_path / "model.pth"
    if kind == "truncated":
        torch.manual_seed(0)
        save_checkpoint(build_model("siamrpn_alex"), path)
        path.write_bytes(path.read_bytes()[:5000])
    else:
        path.write_bytes(BROKEN[kind])
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert_one_line_naming(error.value, path)


# --------------------------------------------------------------------------- snlt track's inputs


@pytest.fixture
def frames(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"{index + 1:04d}.jpg"), np.full((48, 64, 3), 60 * index, np.uint8))
    return folder


def track_error(capsys, *argv):
    status = snlt_cli.main(["track", *map(str, argv), "--random-weights", "--arch", "siamrpn_alex", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and err and err[-1].startswith("snlt track: error: ") and "Traceback" not in "\n".join(err)
    return err[-1]


@pytest.mark.parametrize("kind", BROKEN)
def test_track_targets_and_init_from_files(frames, tmp_path, capsys, kind):
    broken = tmp_path / "broken.txt"
    broken.write_bytes(BROKEN[kind])
    assert broken.name in track_error(capsys, frames, "--targets", broken)
    if kind != "truncated":  # a truncated box file still has a first box to start from
        assert broken.name in track_error(capsys, frames, "--init-from", broken)


@pytest.mark.parametrize("kind", ["empty", "binary", "truncated frame", "truncated video"])
def test_track_sources(frames, tmp_path, capsys, kind):
    if kind == "truncated frame":
        path = frames / "0002.jpg"
        path.write_bytes(path.read_bytes()[:300])
        assert "frame 1 (0002.jpg, truncated) could not be decoded" in track_error(capsys, frames, "--box", "5,5,20,20")
        return
    video = tmp_path / "video.avi"
    if kind == "truncated video":
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
        for index in range(20):
            writer.write(np.full((48, 64, 3), 10 * index, np.uint8))
        writer.release()
        video.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    else:
        video.write_bytes(BROKEN[kind])
    assert video.name in track_error(capsys, video, "--box", "5,5,20,20")


def test_dataset_frames_cut_short_are_an_error(tmp_path):
    video = OTB(otb_folder(tmp_path))["Seq"]
    path = tmp_path / "Seq" / "img" / "0002.jpg"
    path.write_bytes(path.read_bytes()[:300])  # OpenCV would decode it, the rest grey
    assert video.frame(0).shape == (48, 64, 3)
    with pytest.raises(FileNotFoundError) as error:
        video.frame(1)
    assert "frame 2 truncated" in str(error.value)
    assert_one_line_naming(error.value, path)
