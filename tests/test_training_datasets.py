"""Training dataset readers on tiny fake trees of each standard layout."""

import json
import os
import pickle
import time

import cv2
import numpy as np
import pytest

import snlt_fast.datasets.lazy as lazy
from snlt_fast.datasets import (
    COCO,
    GOT10k,
    TRAINING_DATASET_NAMES,
    TRAINING_DATASETS,
    AnnotationError,
    LaSOT,
    RefCOCO,
    VisualGenome,
    open_training_dataset,
)
from snlt_fast.datasets.refcoco import load_plain_pickle


def write_jpeg(path, value=128):
    """A 16x16 JPEG of one grey level, so that a read frame can be told apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((16, 16, 3), value, dtype=np.uint8))
    return path


def write_lines(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def assert_grey(image, value):
    assert image.shape == (16, 16, 3) and abs(int(image.mean()) - value) <= 2


# --------------------------------------------------------------------------- LaSOT train


def write_lasot(root, name, count=3, sentence="a red car."):
    folder = root / name.rsplit("-", 1)[0] / name
    write_lines(folder / "groundtruth.txt", [f"{i + 1},2,3,4" for i in range(count)])
    (folder / "full_occlusion.txt").write_text(",".join(["0"] * (count - 1) + ["1"]))
    (folder / "out_of_view.txt").write_text(",".join(["0"] * count))
    (folder / "nlp.txt").write_text(sentence + "\n")
    write_jpeg(folder / "img" / "00000001.jpg", 40)
    return folder


def test_lasot_train_split_by_test_list_or_train_list(tmp_path):
    for name in ("car-1", "car-2", "bird-1"):
        write_lasot(tmp_path, name, sentence=f"the {name}")
    with pytest.raises(FileNotFoundError, match="training_set.txt or .*testing_set.txt"):
        LaSOT(tmp_path, subset="train")
    write_lines(tmp_path / "testing_set.txt", ["car-2"])
    train = open_training_dataset("lasot", tmp_path)
    assert train.name == "LaSOT-train" and train.names == ["bird-1", "car-1"]
    video = train["car-1"]
    assert video.sentence == "the car-1"
    np.testing.assert_array_equal(video.boxes[:, 0], [1, 2, 3])
    np.testing.assert_array_equal(video.absent, [False, False, True])
    assert_grey(video.frame(0), 40)
    # The name list wins over the test list when both are there.
    write_lines(tmp_path / "training_set.txt", ["car-2", "car-1"])
    assert LaSOT(tmp_path, subset="train").names == ["car-2", "car-1"]
    write_lines(tmp_path / "training_set.txt", ["car-1", "cat-9"])
    with pytest.raises(FileNotFoundError, match="LaSOT sequence cat-9 not found"):
        LaSOT(tmp_path, subset="train")


def test_lasot_length_mismatch_names_both_files(tmp_path):
    folder = write_lasot(tmp_path, "car-1")
    (folder / "out_of_view.txt").write_text("0,0")
    mismatch = r"out_of_view.txt: 2 flags for 3 ground-truth boxes in .*car-1/groundtruth.txt"
    with pytest.raises(AnnotationError, match=mismatch):
        LaSOT(tmp_path)


# --------------------------------------------------------------------------- GOT-10k


def write_got10k_sequence(train, name, boxes, absence, cover):
    folder = train / name
    write_lines(folder / "groundtruth.txt", [",".join(map(str, box)) for box in boxes])
    write_lines(folder / "absence.label", absence)
    write_lines(folder / "cover.label", cover)
    write_jpeg(folder / "00000001.jpg", 200)
    return folder


def test_got10k_visibility_from_labels_and_boxes(tmp_path):
    train = tmp_path / "train"
    boxes = [[1, 2, 3, 4], [1, 2, 0, 4], [1, 2, 3, 4], [1, 2, 3, 4], [5, 6, 7, 8]]
    write_got10k_sequence(train, "GOT-10k_Train_000001", boxes, [0, 0, 1, 0, 0], [8, 8, 8, 0, 3])
    write_got10k_sequence(train, "GOT-10k_Train_000002", boxes[:2], [0, 0], [1, 2])
    write_lines(train / "list.txt", ["GOT-10k_Train_000001", "GOT-10k_Train_000002"])
    for root in (tmp_path, train):  # the GOT-10k folder or its train folder
        dataset = open_training_dataset("got10k", root)
        assert len(dataset) == 2 and dataset.names == ["GOT-10k_Train_000001", "GOT-10k_Train_000002"]
    video = dataset[0]
    assert video.name == "GOT-10k_Train_000001" and video.sentence is None
    np.testing.assert_array_equal(video.boxes, np.array(boxes, dtype=float))
    # Visible only where not absent, cover > 0 and the box has an area.
    np.testing.assert_array_equal(video.absent, [False, True, True, True, False])
    assert video.frame_paths[4].name == "00000005.jpg"
    assert_grey(video.frame(0), 200)
    assert dataset[-1].name == "GOT-10k_Train_000002"
    assert GOT10k(tmp_path, subset=["GOT-10k_Train_000002"]).names == ["GOT-10k_Train_000002"]
    with pytest.raises(KeyError, match="'GOT-10k_Train_000009'"):
        GOT10k(tmp_path, subset=["GOT-10k_Train_000009"])
    with pytest.raises(IndexError, match="out of range for 2 videos"):
        dataset[2]


def test_got10k_errors_name_file_and_line(tmp_path):
    train = tmp_path / "train"
    folder = write_got10k_sequence(train, "seq", [[1, 2, 3, 4]] * 3, [0, 0, 0], [8, 8, 8])
    write_lines(train / "list.txt", ["seq", "missing"])
    with pytest.raises(FileNotFoundError, match="GOT-10k sequence list not found: .*list.txt"):
        GOT10k(tmp_path / "nowhere")
    dataset = GOT10k(tmp_path)  # lazy: only the list is read at load
    with pytest.raises(FileNotFoundError, match="GOT-10k ground truth not found: .*missing/groundtruth.txt"):
        dataset[1]
    write_lines(folder / "cover.label", [8, 9, 8])
    with pytest.raises(AnnotationError, match=r"seq/cover.label:2: expected a cover bin 0 to 8, got '9'"):
        dataset[0]
    write_lines(folder / "cover.label", [8, 8])
    mismatch = r"cover.label: 2 labels for 3 ground-truth boxes in .*seq/groundtruth.txt"
    with pytest.raises(AnnotationError, match=mismatch):
        dataset[0]
    write_lines(folder / "groundtruth.txt", ["1,2,3,4", "1,2,x,4", "1,2,3,4"])
    with pytest.raises(AnnotationError, match=r"seq/groundtruth.txt:2: 'x' is not a number"):
        dataset[0]
    write_lines(folder / "groundtruth.txt", ["1,2,3,4"] * 3)
    (folder / "absence.label").unlink()
    with pytest.raises(FileNotFoundError, match="GOT-10k absence label not found: .*seq/absence.label"):
        dataset[0]


# --------------------------------------------------------------------------- COCO


def coco_json(images, annotations):
    categories = [{"id": 1, "name": "dog", "supercategory": "animal"}]
    return {"images": images, "annotations": annotations, "categories": categories}


def coco_annotation(ann_id, image_id, bbox, iscrowd=0):
    return {"id": ann_id, "image_id": image_id, "category_id": 1, "bbox": bbox, "area": 1.0, "iscrowd": iscrowd}


def write_coco(root, split="train2017"):
    images = [{"id": 7, "file_name": "000007.jpg", "width": 16, "height": 16},
              {"id": 9, "file_name": "000009.jpg", "width": 16, "height": 16}]
    for image, value in zip(images, (60, 90)):
        write_jpeg(root / split / image["file_name"], value)
    annotations = [
        coco_annotation(1, 9, [0, 0, 5, 6]),
        coco_annotation(2, 7, [2.5, 3, 4, 4]),
        coco_annotation(3, 7, [0, 0, 16, 16], iscrowd=1),  # a crowd: left out
        coco_annotation(4, 9, [1, 1, 0, 3]),  # no width: left out
        coco_annotation(5, 9, [3, 3, 2, 2]),
    ]
    path = root / "annotations" / f"instances_{split}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco_json(images, annotations)))
    return path


def test_coco_objects_become_one_based_stills(tmp_path):
    write_coco(tmp_path)
    dataset = open_training_dataset("coco", tmp_path)
    assert dataset.name == "COCO-train2017" and len(dataset) == 3
    videos = list(dataset)
    assert [v.name for v in videos] == ["coco-1", "coco-2", "coco-5"]
    np.testing.assert_array_equal(videos[0].boxes, [[1, 1, 5, 6]])  # 0-based COCO made 1-based
    np.testing.assert_array_equal(videos[1].boxes, [[3.5, 4, 4, 4]])
    for video in videos:
        assert len(video) == 1 and video.sentence is None and not video.absent.any()
    # Two objects of one image share its path.
    assert videos[0].frame_paths == videos[2].frame_paths == [tmp_path / "train2017" / "000009.jpg"]
    assert_grey(videos[0].frame(0), 90)
    assert_grey(videos[1].frame(0), 60)
    with pytest.raises(FileNotFoundError, match="instances_val2017.json"):
        COCO(tmp_path, split="val2017", images_root=tmp_path / "train2017")
    with pytest.raises(FileNotFoundError, match="COCO image folder not found: .*val2017"):
        COCO(tmp_path, split="val2017")


def test_coco_loads_thousands_of_annotations_lazily(tmp_path, monkeypatch):
    count = 20000
    images = [{"id": i, "file_name": f"{i:06d}.jpg"} for i in range(100)]
    annotations = [coco_annotation(i, i % 100, [i % 7, 1, 2 + i % 5, 3]) for i in range(count)]
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(coco_json(images, annotations)))
    (tmp_path / "images").mkdir()
    built = []
    monkeypatch.setattr(lazy, "Video", lambda *args, **kwargs: built.append(kwargs["name"]) or kwargs)
    start = time.perf_counter()
    dataset = COCO(tmp_path, annotation_file=path, images_root=tmp_path / "images")
    assert time.perf_counter() - start < 2.0
    assert len(dataset) == count and built == []  # no Video made at load
    video = dataset[12345]
    assert built == ["coco-12345"]
    np.testing.assert_array_equal(video["boxes"], [[12345 % 7 + 1, 2, 2 + 12345 % 5, 3]])
    assert video["frame_paths"] == [tmp_path / "images" / "000045.jpg"]


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "is empty"),
        (b'{"images": [{"id": 1, "file_na', r":1: COCO instances json is not valid json .*truncated\?"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "is not UTF-8 text .*binary or wrongly encoded"),
        ('{"images": [], "annotations": [], "note": "caf\u00e9"}'.encode("latin-1"), "is not UTF-8 text"),
        (b'{"images": {}, "annotations": []}', "needs a list 'images' at the top level"),
        (b'{"images": [{"id": 1}], "annotations": []}', r"images\[0\] has no 'file_name'"),
        (b'{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 3, "image_id": 1}]}',
         r"annotations\[0\] has no 'bbox'"),
        (b'{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 3, "image_id": 1, "bbox": [1, 2, 3]}]}',
         r"annotations\[0\] is malformed"),
        (b'{"images": [{"id": 1, "file_name": "a.jpg"}], '
         b'"annotations": [{"id": 3, "image_id": 2, "bbox": [1, 2, 3, 4]}]}',
         r"annotations\[0\] \(id 3\) refers to image 2, which 'images' does not list"),
    ],
)
def test_coco_bad_json_is_one_line_naming_the_file(tmp_path, content, match):
    path = tmp_path / "instances_x.json"
    path.write_bytes(content)
    with pytest.raises(AnnotationError, match=match) as error:
        COCO(tmp_path, annotation_file=path, images_root=tmp_path)
    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message


# --------------------------------------------------------------------------- Visual Genome


def test_visual_genome_regions_with_phrases(tmp_path):
    write_jpeg(tmp_path / "VG_100K" / "1.jpg", 30)
    write_jpeg(tmp_path / "VG_100K_2" / "2.jpg", 220)
    region = lambda rid, iid, phrase, box: dict(zip(("region_id", "image_id", "phrase", "x", "y", "width", "height"),
                                                    (rid, iid, phrase, *box)))
    entries = [
        {"id": 1, "regions": [region(10, 1, "a man in a hat ", [0, 1, 5, 5]), region(11, 1, "sky", [2, 2, 0, 4])]},
        {"id": 2, "regions": [region(12, 2, "  ", [3, 3, 4, 4]), region(13, 2, "green grass", [1, 1, 9, 2])]},
    ]
    (tmp_path / "region_descriptions.json").write_text(json.dumps(entries))
    dataset = open_training_dataset("vg", tmp_path)
    assert len(dataset) == 3  # the region with no width is left out
    man, blank, grass = dataset
    assert (man.name, man.sentence, blank.sentence, grass.sentence) == ("vg-10", "a man in a hat", None, "green grass")
    np.testing.assert_array_equal(man.boxes, [[1, 2, 5, 5]])
    assert man.frame_paths == [tmp_path / "VG_100K" / "1.jpg"]
    assert grass.frame_paths == [tmp_path / "VG_100K_2" / "2.jpg"]
    assert_grey(man.frame(0), 30)
    assert_grey(grass.frame(0), 220)
    entries[1]["regions"][1].pop("phrase")
    (tmp_path / "region_descriptions.json").write_text(json.dumps(entries))
    with pytest.raises(AnnotationError, match=r"region_descriptions.json: regions\[3\] has no 'phrase'"):
        VisualGenome(tmp_path)
    with pytest.raises(FileNotFoundError, match="Visual Genome image folders not found"):
        VisualGenome(tmp_path / "VG_100K")


# --------------------------------------------------------------------------- RefCOCO


def write_refcoco(data):
    folder = data / "refcoco"
    folder.mkdir(parents=True)
    images = data / "images" / "mscoco" / "images" / "train2014"
    write_jpeg(images / "COCO_train2014_000000000005.jpg", 150)
    instances = coco_json(
        [{"id": 5, "file_name": "COCO_train2014_000000000005.jpg"}],
        [
            coco_annotation(50, 5, [0, 0, 8, 8]),
            coco_annotation(51, 5, [4, 4, 6, 6]),
            coco_annotation(52, 5, [1, 1, 3, 3], iscrowd=1),
        ],
    )
    (folder / "instances.json").write_text(json.dumps(instances))
    sentences = lambda *texts: [
        {"sent_id": i, "sent": text, "raw": text, "tokens": text.split()} for i, text in enumerate(texts)
    ]
    ref = lambda ref_id, ann_id, split, texts: {"ref_id": ref_id, "ann_id": ann_id, "image_id": 5, "category_id": 1,
                                                 "split": split, "sent_ids": [], "sentences": sentences(*texts),
                                                 "file_name": "ignored.jpg"}
    refs = [ref(0, 50, "train", ["left dog", "dog on the left "]), ref(1, 51, "testA", ["right caf\u00e9 dog"]),
            ref(2, 52, "train", ["the crowd"])]
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    return folder


def test_refcoco_one_video_per_expression(tmp_path):
    folder = write_refcoco(tmp_path)
    train = open_training_dataset("refcoco", tmp_path)
    assert train.name == "refcoco-unc-train" and len(train) == 2  # the crowd's ref is left out
    first, second = train
    assert (first.name, first.sentence, second.name, second.sentence) == (
        "refcoco-0-0", "left dog", "refcoco-0-1", "dog on the left")
    np.testing.assert_array_equal(first.boxes, [[1, 1, 8, 8]])
    assert_grey(first.frame(0), 150)
    test_a = RefCOCO(tmp_path, split="testA")
    assert len(test_a) == 1 and test_a[0].sentence == "right caf\u00e9 dog"
    np.testing.assert_array_equal(test_a[0].boxes, [[5, 5, 6, 6]])
    with pytest.raises(ValueError, match=r"refs\(unc\).p: no refs in split 'val'; its splits are testA, train"):
        RefCOCO(tmp_path, split="val")
    with pytest.raises(FileNotFoundError, match=r"refcoco refs not found: .*refs\(umd\).p"):
        RefCOCO(tmp_path, split_by="umd")
    refs = load_plain_pickle(folder / "refs(unc).p")
    refs[0]["ann_id"] = 99
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    unknown = r"refs\(unc\).p: refs\[0\] \(ref 0\) has ann_id 99, which .*instances.json lacks"
    with pytest.raises(AnnotationError, match=unknown):
        RefCOCO(tmp_path)
    (folder / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2)[:40])
    with pytest.raises(AnnotationError, match=r"refs\(unc\).p: refcoco refs is not a readable pickle"):
        RefCOCO(tmp_path)


class RunsACommand:
    """What a hostile pickle looks like: loading it calls os.system."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_restricted_unpickler_runs_no_code(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "refs(unc).p"
    for protocol in (0, 2, pickle.HIGHEST_PROTOCOL):
        path.write_bytes(pickle.dumps([{"ref_id": 1, "x": RunsACommand(f"touch {marker}")}], protocol=protocol))
        with pytest.raises(AnnotationError, match=r"refs\(unc\).p: refused to unpickle (posix|os|nt)\.system") as error:
            load_plain_pickle(path)
        assert "\n" not in str(error.value)
        assert not marker.exists()
    # Python 2's plain pickles: byte strings (decoded as latin-1) and the __builtin__ types.
    path.write_bytes(b"\x80\x02]q\x00(U\x04caf\xe9q\x01c__builtin__\ndict\n)Rq\x02e.")
    assert load_plain_pickle(path) == ["caf\u00e9", {}]
    path.write_bytes(b"c__builtin__\nset\n)R.")
    with pytest.raises(AnnotationError, match=r"refused to unpickle __builtin__\.set"):
        load_plain_pickle(path)


# --------------------------------------------------------------------------- OTB-99-LANG train, OTB and the registry


def write_otb99lang(root):
    for name, value in (("Basketball", 70), ("Biker", 80)):
        folder = root / "OTB_videos" / name
        write_lines(folder / "groundtruth_rect.txt", ["1,2,3,4", "2,3,4,5"])
        write_jpeg(folder / "img" / "0001.jpg", value)
        write_jpeg(folder / "img" / "0002.jpg", value)
    write_lines(root / "OTB_query_train" / "Basketball.txt", ["player in a white shirt"])
    write_lines(root / "OTB_query_test" / "Biker.txt", ["man on a motorbike"])


def test_otb99lang_train_and_otb(tmp_path):
    write_otb99lang(tmp_path)
    train = open_training_dataset("otb99lang", tmp_path)
    assert train.names == ["Basketball"] and train[0].sentence == "player in a white shirt"
    assert_grey(train[0].frame(1), 70)
    assert open_training_dataset("otb99lang", tmp_path, split="test")[0].sentence == "man on a motorbike"
    write_lines(tmp_path / "names.txt", ["Biker"])
    otb = open_training_dataset("otb", tmp_path / "OTB_videos", names_file=tmp_path / "names.txt")
    assert otb.names == ["Biker"] and otb[0].sentence is None and len(otb[0]) == 2


def test_registry_names_options_and_hook(tmp_path, monkeypatch):
    assert TRAINING_DATASET_NAMES == ("lasot", "got10k", "coco", "vg", "refcoco", "otb99lang", "otb")
    with pytest.raises(ValueError, match="unknown training dataset 'imagenet'; expected one of lasot, got10k, coco"):
        open_training_dataset("imagenet", tmp_path)
    unknown = "training dataset coco has no option 'subset'; its options are split, annotation_file"
    with pytest.raises(ValueError, match=unknown):
        open_training_dataset("coco", tmp_path, subset="train")
    monkeypatch.setitem(TRAINING_DATASETS, "synthetic", lambda root, count=3: ["video"] * count)
    assert open_training_dataset("synthetic", tmp_path, count=2) == ["video", "video"]
