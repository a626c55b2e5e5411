"""Dataset readers: OTB folder and json layouts, OTB-99-LANG, LaSOT; real data where available."""

import json

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snlt_fast.datasets import OTB, AnnotationError, Dataset, LaSOT, NumberedFrames, OTB99Lang, Video, open_dataset
from real_archives import extract_shared
from snlt_fast.datasets._text import read_boxes


def write_sequence(root, name, boxes, images=None, first_image=1, digits=4, box_file="groundtruth_rect.txt", sep=","):
    """An OTB sequence folder: numbered (empty) image files and one box file."""
    folder = root / name
    (folder / "img").mkdir(parents=True, exist_ok=True)
    for number in range(first_image, first_image + (images if images is not None else 0)):
        (folder / "img" / f"{number:0{digits}d}.jpg").touch()
    (folder / box_file).write_text("".join(sep.join(str(v) for v in box) + "\n" for box in boxes))
    return folder


def boxes_of(count, start=0):
    return [[10 + i + start, 20 + i, 30, 40] for i in range(count)]


# --------------------------------------------------------------------------- OTB folder layout


def test_otb_folder_separators_and_lazy_frames(tmp_path):
    write_sequence(tmp_path, "Comma", boxes_of(3), images=3)
    write_sequence(tmp_path, "Tab", boxes_of(3), images=3, sep="\t")
    mixed = write_sequence(tmp_path, "Mixed", boxes_of(3), images=3)
    mixed.joinpath("groundtruth_rect.txt").write_text("10,20,30,40\n11\t21\t30\t40\n12 21,30\t40\n\n")
    dataset = OTB(tmp_path)
    assert dataset.names == ["Comma", "Mixed", "Tab"]
    for video in dataset:
        assert video.boxes.shape == (3, 4) and video.boxes.dtype == np.float64
        assert not video.absent.any() and video.sentence is None
    np.testing.assert_array_equal(dataset["Tab"].boxes, np.array(boxes_of(3), dtype=float))
    np.testing.assert_array_equal(dataset["Mixed"].boxes[2], [12, 21, 30, 40])
    assert dataset["Comma"].frame_paths[2] == tmp_path / "Comma" / "img" / "0003.jpg"


def test_otb_folder_special_cases(tmp_path):
    # Two targets in one sequence, and Human4 whose only target is number 2.
    write_sequence(tmp_path, "Jogging", boxes_of(5), images=5, box_file="groundtruth_rect.1.txt")
    write_sequence(tmp_path, "Jogging", boxes_of(5, 100), images=5, box_file="groundtruth_rect.2.txt")
    write_sequence(tmp_path, "Human4", boxes_of(4), images=4, box_file="groundtruth_rect.2.txt")
    (tmp_path / "Human4" / "groundtruth_rect1.txt").touch()  # the stray empty file of the real release
    # Annotation starting later than the images: David's boxes start at 0300 (fewer boxes than images) ...
    write_sequence(tmp_path, "David", boxes_of(6), images=305)
    # ... Tiger1's file has one box per image but the sequence is evaluated from 0006.
    write_sequence(tmp_path, "Tiger1", boxes_of(10), images=10)
    # Images that start later (BlurCar1 from 0247), five-digit names (Board), extra images (Diving).
    write_sequence(tmp_path, "BlurCar1", boxes_of(4), images=4, first_image=247)
    write_sequence(tmp_path, "Board", boxes_of(3), images=3, digits=5)
    write_sequence(tmp_path, "Diving", boxes_of(3), images=5)
    dataset = OTB(tmp_path)
    assert dataset.names == ["BlurCar1", "Board", "David", "Diving", "Human4-2", "Jogging-1", "Jogging-2", "Tiger1"]
    assert dataset["Jogging-2"].boxes[0, 0] == 110
    assert dataset["Human4-2"].frame_paths[0].name == "0001.jpg"
    david = dataset["David"]
    assert len(david) == 6 and [p.name for p in david.frame_paths][:2] == ["0300.jpg", "0301.jpg"]
    tiger = dataset["Tiger1"]
    assert len(tiger) == 5 and tiger.frame_paths[0].name == "0006.jpg"
    np.testing.assert_array_equal(tiger.boxes, np.array(boxes_of(10)[5:], dtype=float))
    assert dataset["BlurCar1"].frame_paths[0].name == "0247.jpg"
    assert dataset["Board"].frame_paths[-1].name == "00003.jpg"
    assert len(dataset["Diving"]) == 3


def test_otb_folder_without_images_scores_from_annotations(tmp_path):
    (tmp_path / "Biker").mkdir()
    (tmp_path / "Biker" / "groundtruth_rect.txt").write_text("1,2,3,4\n5,6,7,8\n")
    video = OTB(tmp_path)["Biker"]
    assert len(video) == 2 and video.frame_paths[1].name == "0002.jpg"
    with pytest.raises(FileNotFoundError, match=r"frame 1 not found: .*Biker/img/0001.jpg"):
        video.frame(0)


@pytest.mark.parametrize(
    "text, match",
    [
        ("1,2,3,4\n1,2,3\n", r"groundtruth_rect.txt:2: expected 4 numbers, got 3"),
        ("1,2,3,4\n\n1,2,x,4\n", r"groundtruth_rect.txt:3: 'x' is not a number"),
        ("1,2,3,4,5\n", r"groundtruth_rect.txt:1: expected 4 numbers, got 5"),
    ],
)
def test_otb_malformed_lines_name_file_and_line(tmp_path, text, match):
    (tmp_path / "Seq").mkdir()
    (tmp_path / "Seq" / "groundtruth_rect.txt").write_text(text)
    with pytest.raises(AnnotationError, match=match):
        OTB(tmp_path)


def test_otb_more_boxes_than_images_is_an_error(tmp_path):
    write_sequence(tmp_path, "Seq", boxes_of(5), images=3)
    with pytest.raises(AnnotationError, match=r"Seq/groundtruth_rect.txt: 5 boxes from frame 1 but .* has 3 images"):
        OTB(tmp_path)


def test_otb_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="OTB dataset not found"):
        OTB(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no OTB sequences"):
        OTB(tmp_path / "empty")


# --------------------------------------------------------------------------- OTB json layout


def test_otb_json_layout(tmp_path):
    entries = {
        "Human4-2": {"video_dir": "Human4-2", "init_rect": [1, 2, 3, 4], "img_names": ["Human4/img/0001.jpg", "Human4/img/0002.jpg"],
                     "gt_rect": [[1, 2, 3, 4], [2, 3, 4, 5]], "attr": ["Occlusion"]},
        "David": {"video_dir": "David", "init_rect": [1, 1, 5, 5], "img_names": ["David/img/0300.jpg"], "gt_rect": [[1, 1, 5, 5]],
                  "attr": []},
    }
    path = tmp_path / "OTB100.json"
    path.write_text(json.dumps(entries))
    dataset = OTB(path)
    assert dataset.names == ["Human4-2", "David"] and dataset.attributes == ["Occlusion"]
    assert dataset["Human4-2"].frame_paths[1] == tmp_path / "Human4" / "img" / "0002.jpg"
    assert dataset["Human4-2"].attributes == ("Occlusion",)


@pytest.mark.parametrize(
    "text, match",
    [
        ('{"A": {"img_names": []}}', "video A: needs the keys 'gt_rect' and 'img_names'"),
        ('{"A": {"img_names": ["a.jpg"], "gt_rect": [[1, 2, 3]]}}', r"video A.*shape \(n, 4\)"),
        ('{"A": {"img_names": ["a.jpg", "b.jpg"], "gt_rect": [[1, 2, 3, 4]]}}', "2 frames for 1 boxes"),
        ('{\n"A": [1,\n}', r"OTB100.json:3: not valid json"),
    ],
)
def test_otb_malformed_json_names_file_and_video(tmp_path, text, match):
    path = tmp_path / "OTB100.json"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=match):
        OTB(path)


@pytest.fixture(scope="module")
def otb_json(tmp_path_factory):
    return extract_shared(tmp_path_factory, "otb/OTB100.json.zip") / "OTB100.json"


def test_real_otb100_json(otb_json):
    dataset = OTB(otb_json)
    assert len(dataset) == 100 and dataset.num_frames == 59035
    for name in ("Human4-2", "Jogging-1", "Jogging-2", "Skating2-1", "Skating2-2"):
        assert name in dataset
    assert dataset["David"].frame_paths[0].name == "0300.jpg" and len(dataset["David"]) == 471
    assert dataset["Tiger1"].frame_paths[0].name == "0006.jpg"
    assert dataset["Jogging-1"].frame_paths[0] == dataset["Jogging-2"].frame_paths[0]
    assert len(dataset.attributes) == 11


def test_real_biker_folder_matches_json(shared_data, otb_json):
    biker = OTB(shared_data / "otb" / "sequences")["Biker"]
    assert isinstance(biker.frame_paths, NumberedFrames) and len(biker) == 142
    np.testing.assert_array_equal(biker.boxes, OTB(otb_json)["Biker"].boxes)
    frame = biker.frame(141)
    assert frame.shape == (360, 640, 3) and frame.dtype == np.uint8
    np.testing.assert_array_equal(frame, cv2.imread(str(shared_data / "otb/sequences/Biker/img/0142.jpg")))


# --------------------------------------------------------------------------- OTB-99-LANG


def test_otb99lang_split_names_and_queries(tmp_path):
    videos = tmp_path / "OTB_videos"
    write_sequence(videos, "Biker", boxes_of(3), images=3)
    write_sequence(videos, "Skating2", boxes_of(3), images=3, box_file="groundtruth_rect.1.txt")
    write_sequence(videos, "Skating2", boxes_of(3, 50), images=3, box_file="groundtruth_rect.2.txt")
    (tmp_path / "otb99_test_split.txt").write_text("Biker\nSkating3\n")
    queries = tmp_path / "OTB_query_test"
    queries.mkdir()
    (queries / "Biker.txt").write_text("man riding a motorbike wearing a white helmet\n")
    dataset = OTB99Lang(tmp_path)
    assert dataset.name == "OTB99-LANG-test" and dataset.names == ["Biker", "Skating3"]
    assert dataset["Biker"].sentence == "man riding a motorbike wearing a white helmet"
    assert dataset["Skating3"].sentence is None
    assert dataset["Skating3"].result_names == ("Skating2-2",)
    assert dataset["Skating3"].boxes[0, 0] == 60

    with pytest.raises(FileNotFoundError, match="no OTB-99-LANG train split list"):
        OTB99Lang(tmp_path, split="train")
    with pytest.raises(ValueError, match="split must be one of"):
        OTB99Lang(tmp_path, split="val")
    (tmp_path / "otb99_test_split.txt").write_text("Biker\nClifBar\n")
    with pytest.raises(AnnotationError, match="'ClifBar' has no annotation"):
        OTB99Lang(tmp_path)


def test_real_otb99lang_splits(shared_data, otb_json):
    splits = shared_data / "otb99_lang" / "splits"
    test = OTB99Lang(shared_data / "otb99_lang", split="test", annotations=otb_json)
    train = OTB99Lang(shared_data / "otb99_lang", split="train", annotations=otb_json)
    assert (len(test), len(train)) == (48, 51)
    assert not set(test.names) & set(train.names)
    assert "Biker" in test and "Jogging1" in train
    np.testing.assert_array_equal(test["Skating3"].boxes, OTB(otb_json)["Skating2-2"].boxes)
    explicit = OTB99Lang(shared_data, split="test", annotations=otb_json, names_file=splits / "otb99_test_split.txt")
    assert explicit.names == test.names


# --------------------------------------------------------------------------- LaSOT


def write_lasot(root, name, boxes, occlusion, out_of_view, sentence="a white airplane", flat=False):
    folder = root / name if flat else root / name.rsplit("-", 1)[0] / name
    folder.mkdir(parents=True)
    (folder / "groundtruth.txt").write_text("".join(",".join(map(str, b)) + "\n" for b in boxes))
    (folder / "full_occlusion.txt").write_text(",".join(map(str, occlusion)))
    (folder / "out_of_view.txt").write_text(",".join(map(str, out_of_view)))
    if sentence is not None:
        (folder / "nlp.txt").write_text(sentence + "\n")
    return folder


def test_lasot_layout_absent_and_sentence(tmp_path):
    write_lasot(tmp_path, "airplane-1", boxes_of(4), [0, 1, 0, 0], [0, 0, 1, 0])
    write_lasot(tmp_path, "bird-2", boxes_of(2), [0, 0], [0, 0], sentence=None, flat=True)
    dataset = LaSOT(tmp_path)
    assert dataset.names == ["bird-2", "airplane-1"]
    plane = dataset["airplane-1"]
    np.testing.assert_array_equal(plane.absent, [False, True, True, False])
    assert plane.sentence == "a white airplane" and dataset["bird-2"].sentence is None
    assert plane.frame_paths[3] == tmp_path / "airplane" / "airplane-1" / "img" / "00000004.jpg"

    (tmp_path / "testing_set.txt").write_text("airplane-1\n")
    assert LaSOT(tmp_path, subset="test").names == ["airplane-1"]
    assert LaSOT(tmp_path, subset=["bird-2"]).names == ["bird-2"]
    with pytest.raises(FileNotFoundError, match="nl-consistent name list not found"):
        LaSOT(tmp_path, subset="nl-consistent")
    with pytest.raises(FileNotFoundError, match="LaSOT sequence cat-3 not found"):
        LaSOT(tmp_path, subset=["cat-3"])


def test_lasot_malformed_flags(tmp_path):
    folder = write_lasot(tmp_path, "cat-1", boxes_of(3), [0, 0], [0, 0, 0])
    with pytest.raises(AnnotationError, match=r"cat-1/full_occlusion.txt: 2 flags for 3 ground-truth boxes"):
        LaSOT(tmp_path)
    (folder / "full_occlusion.txt").write_text("0,0,\n0,2\n")
    with pytest.raises(AnnotationError, match=r"full_occlusion.txt:2: expected flags 0 or 1, got '2'"):
        LaSOT(tmp_path)
    (folder / "full_occlusion.txt").unlink()
    with pytest.raises(FileNotFoundError, match="LaSOT absent flags not found: .*full_occlusion.txt"):
        LaSOT(tmp_path)


@pytest.fixture(scope="module")
def lasot_root(tmp_path_factory):
    return extract_shared(tmp_path_factory, "lasot/lasot_test280_gt_absent.zip")


def test_real_lasot_test_split_and_nl_subset(shared_data, lasot_root):
    test = LaSOT(lasot_root, subset=shared_data / "lasot" / "testing_set.txt")
    assert len(test) == 280 and test.num_frames == 685360
    assert 0 < sum(int(v.absent.sum()) for v in test) < test.num_frames // 10
    consistent = open_dataset("lasot", lasot_root, names_file=shared_data / "lasot" / "nl-consistent-lasot.txt")
    assert len(consistent) == 44 and set(consistent.names) <= set(test.names)
    # Absent frames carry no box in the release: zero-area boxes are (almost) all absent ones.
    zero_area = np.concatenate([(v.boxes[:, 2:] <= 0).any(axis=1) for v in test])
    absent = np.concatenate([v.absent for v in test])
    assert zero_area.sum() > 0 and (zero_area & ~absent).sum() <= 3


def test_open_dataset_by_command_line_name(tmp_path):
    for name in ("Car", "Bird", "Ant"):
        write_sequence(tmp_path / "otb", name, boxes_of(2), images=2)
    (tmp_path / "names.txt").write_text("Car\nAnt\n")
    assert open_dataset("otb", tmp_path / "otb", names_file=tmp_path / "names.txt").names == ["Car", "Ant"]
    (tmp_path / "names.txt").write_text("Car\nZebra\n")
    with pytest.raises(KeyError, match="has no video 'Zebra'"):
        open_dataset("otb", tmp_path / "otb", names_file=tmp_path / "names.txt")
    write_lasot(tmp_path / "lasot", "cat-1", boxes_of(2), [0, 0], [0, 0])
    write_lasot(tmp_path / "lasot", "cat-2", boxes_of(2), [0, 0], [0, 0])
    (tmp_path / "lasot" / "nl-consistent-lasot.txt").write_text("cat-2\n")
    consistent = open_dataset("lasot", tmp_path / "lasot", split="nl-consistent")
    assert consistent.name == "LaSOT-nl-consistent" and consistent.names == ["cat-2"]
    assert open_dataset("lasot", tmp_path / "lasot").names == ["cat-1", "cat-2"]


# --------------------------------------------------------------------------- shared behaviour


def test_video_and_dataset_checks(tmp_path):
    with pytest.raises(ValueError, match=r"video v: 1 absent flags for 2 boxes"):
        Video("v", [[1, 2, 3, 4]] * 2, ["a", "b"], absent=[True])
    video = Video("v", [[1, 2, 3, 4]], ["a.jpg"])
    with pytest.raises(ValueError, match="two videos are named 'v'"):
        Dataset("d", [video, video])
    dataset = Dataset("d", [video])
    with pytest.raises(KeyError, match="has no video 'w'"):
        dataset["w"]
    with pytest.raises(KeyError, match="has no video 'w'"):
        dataset.subset(["w"])
    frames = NumberedFrames(tmp_path, 7, 3, 4)
    assert [p.name for p in frames] == ["0007.jpg", "0008.jpg", "0009.jpg"] and frames[-1].name == "0009.jpg"
    with pytest.raises(IndexError):
        frames[3]
    with pytest.raises(ValueError, match="unknown dataset 'vot'"):
        open_dataset("vot", tmp_path)


# --------------------------------------------------------------------------- box-file parsing


number = st.one_of(st.integers(-5000, 5000).map(float), st.floats(-1e6, 1e6, allow_nan=False))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(number, number, number, number), min_size=1, max_size=12),
    st.sampled_from([",", "\t", " ", ", ", "mixed"]),
    st.booleans(),
)
def test_box_files_parse_exactly_with_any_separator(tmp_path_factory, boxes, separator, blank_lines):
    lines = []
    for index, box in enumerate(boxes):
        sep = [",", "\t", " "][index % 3] if separator == "mixed" else separator
        lines.append(sep.join(repr(v) for v in box))
        if blank_lines:
            lines.append("")
    path = tmp_path_factory.mktemp("boxes") / "groundtruth.txt"
    path.write_text("\n".join(lines) + "\n")
    np.testing.assert_array_equal(read_boxes(path), np.array(boxes, dtype=np.float64))


def test_empty_box_file_is_an_error(tmp_path):
    (tmp_path / "groundtruth.txt").write_text("\n\n")
    with pytest.raises(AnnotationError, match="no boxes"):
        read_boxes(tmp_path / "groundtruth.txt")
