"""OTB-100 (folder or json layout) and OTB-99-LANG.

Folder layout: `<root>/<Seq>/img/*.jpg` and `<root>/<Seq>/groundtruth_rect.txt`.
Sequences with two annotated targets carry `groundtruth_rect.1.txt` and
`groundtruth_rect.2.txt` instead (Jogging, Skating2) and become the videos
`Jogging-1`, `Jogging-2`, ...; Human4's only target is `groundtruth_rect.2.txt`,
hence `Human4-2`. A few sequences have more images than boxes: the boxes cover
the images from the first one (Diving, Football1, Freeman3, Freeman4) or from a
later start frame (David from 0300, Tiger1 from 0006).

Json layout (the pysot toolkit's `OTB100.json`): per video `video_dir`,
`init_rect`, `img_names` (relative to the json's folder), `gt_rect`, `attr`.
"""

import json
import re
from pathlib import Path

from snlt_fast.datasets._text import AnnotationError, first_line, read_boxes, read_names, read_text
from snlt_fast.datasets._zip import is_zip, refuse_zip, unzipped_location, zip_folder
from snlt_fast.datasets.base import Dataset, NumberedFrames, Video

# Sequences whose annotation starts at a later image than the sequence's first one.
OTB_START_FRAMES = {"David": 300, "Tiger1": 6}
# OTB-99-LANG names the split targets differently from the OTB-100 toolkits.
OTB99_LANG_TO_OTB100 = {
    "Human4": "Human4-2",
    "Jogging1": "Jogging-1",
    "Jogging2": "Jogging-2",
    "Skating2": "Skating2-1",
    "Skating3": "Skating2-2",
}
_TARGET_FILE = re.compile(r"groundtruth_rect\.(\d+)\.txt$")
_IMAGE_NUMBER = re.compile(r"^(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


class OTB(Dataset):
    """OTB-100 from its folder layout or from an OTB100.json-style file.

    path: the dataset folder (one sub-folder per sequence) or the json file, which may
    be zipped (`OTB100.json.zip`); the json's image names are read relative to the
    folder it lies in (for a zipped one, where it would lie once unzipped).
    """

    def __init__(self, path, name="OTB100"):
        path = Path(path)
        if is_zip(path):
            json_file = _json_in_zip(path)
            videos = _videos_from_json(json_file, unzipped_location(json_file, path).parent)
        elif path.is_file():
            videos = _videos_from_json(path, path.parent)
        elif path.is_dir():
            videos = _videos_from_folder(path)
        else:
            raise FileNotFoundError(f"OTB dataset not found: {path} (expected a folder of sequences or a .json file)")
        super().__init__(name, videos)


def _json_in_zip(archive):
    folder = zip_folder(archive)
    found = [member for member in folder.iterdir() if member.name.lower().endswith(".json")]
    if len(found) != 1:
        raise AnnotationError(f"{archive}: expected one .json file in the archive, found {len(found)}")
    return found[0]


def _videos_from_json(path, image_folder):
    try:
        entries = json.loads(read_text(path, "OTB json"))
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}:{error.lineno}: not valid json ({error.msg})") from None
    if not isinstance(entries, dict) or not entries:
        raise AnnotationError(f"{path}: expected a json object mapping video names to annotations")
    videos = []
    for name, entry in entries.items():
        source = f"{path}, video {name}"
        try:
            boxes, img_names = entry["gt_rect"], entry["img_names"]
        except (KeyError, TypeError):
            raise AnnotationError(f"{source}: needs the keys 'gt_rect' and 'img_names'") from None
        try:
            videos.append(
                Video(
                    name=name,
                    boxes=boxes,
                    frame_paths=[image_folder / img for img in img_names],
                    attributes=entry.get("attr", ()),
                    source=source,
                )
            )
        except (ValueError, TypeError) as error:
            raise AnnotationError(f"{source}: {error}") from None
    return videos


def _videos_from_folder(root):
    sequences = sorted(p for p in root.iterdir() if p.is_dir() and _annotation_files(p))
    if not sequences:
        raise FileNotFoundError(f"no OTB sequences in {root} (expected <Seq>/groundtruth_rect.txt)")
    return [video for folder in sequences for video in _sequence_videos(folder)]


def _annotation_files(folder):
    """(video name, box file) pairs of a sequence folder; several for multi-target sequences."""
    single = folder / "groundtruth_rect.txt"
    if single.is_file():
        return [(folder.name, single)]
    targets = [(m, p) for p in folder.iterdir() if (m := _TARGET_FILE.match(p.name))]
    return [(f"{folder.name}-{m.group(1)}", p) for m, p in sorted(targets, key=lambda t: int(t[0].group(1)))]


def _sequence_videos(folder):
    videos = []
    first, digits, ext, image_count = _image_numbering(folder / "img")
    start = OTB_START_FRAMES.get(folder.name, first)
    for name, box_file in _annotation_files(folder):
        boxes = read_boxes(box_file, "OTB ground truth")
        if image_count is not None and len(boxes) == image_count and start > first:
            # One box for every image although the sequence starts later: keep the annotated span.
            boxes = boxes[start - first :]
        if image_count is not None and start - first + len(boxes) > image_count:
            raise AnnotationError(
                f"{box_file}: {len(boxes)} boxes from frame {start} but {folder / 'img'} has {image_count} images"
            )
        videos.append(
            Video(name=name, boxes=boxes, frame_paths=NumberedFrames(folder / "img", start, len(boxes), digits, ext),
                  source=str(box_file))
        )
    return videos


def _image_numbering(img_dir):
    """(first number, digits, extension, image count) of a numbered image folder.

    Without the folder (annotations only) the usual `0001.jpg` numbering is
    assumed and the count is unknown (None).
    """
    if not img_dir.is_dir():
        return 1, 4, ".jpg", None
    numbered = [m for p in img_dir.iterdir() if (m := _IMAGE_NUMBER.match(p.name))]
    if not numbered:
        raise FileNotFoundError(f"no numbered images (0001.jpg, ...) in {img_dir}")
    first = min(numbered, key=lambda m: int(m.group(1)))
    return int(first.group(1)), len(first.group(1)), "." + first.group(2), len(numbered)


class OTB99Lang(Dataset):
    """OTB-99-LANG: the OTB sequences of one split, each with its sentence.

    root: the OTB-99-LANG folder. Its boxes and frames come from `annotations`
    (an OTB folder or json; default `<root>/OTB_videos`, else `<root>/OTB100.json`,
    else `root` itself). The split's names come from `names_file`, else
    `<root>/otb99_<split>_split.txt` or `<root>/splits/otb99_<split>_split.txt`,
    else the files in `<root>/OTB_query_<split>/`. The sentence of each video is
    the first line of `<queries>/<Seq>.txt` (default `<root>/OTB_query_<split>`);
    it is None when the user has no query files.

    Videos keep their OTB-99-LANG names (`Jogging1`, `Skating3`, ...); the OTB-100
    names (`Jogging-1`, `Skating2-2`, ...) are accepted for result files too.
    """

    SPLITS = ("train", "test")

    def __init__(self, root, split="test", annotations=None, names_file=None, queries=None):
        if split not in self.SPLITS:
            raise ValueError(f"split must be one of {self.SPLITS}, got {split!r}")
        root = Path(root)
        refuse_zip(root, "OTB-99-LANG")
        if not root.is_dir():
            raise FileNotFoundError(f"OTB-99-LANG folder not found: {root}")
        otb = OTB(annotations if annotations is not None else _default_annotations(root))
        queries = Path(queries) if queries is not None else root / f"OTB_query_{split}"
        videos = []
        for name in _split_names(root, split, names_file, queries):
            otb_name = name if name in otb else OTB99_LANG_TO_OTB100.get(name, name)
            if otb_name not in otb:
                raise AnnotationError(f"OTB-99-LANG video {name!r} has no annotation in {otb.name} ({len(otb)} videos)")
            video = otb[otb_name]
            query = queries / f"{name}.txt"
            videos.append(
                Video(
                    name=name,
                    boxes=video.boxes,
                    frame_paths=video.frame_paths,
                    sentence=first_line(query, "OTB-99-LANG query") if query.is_file() else None,
                    attributes=video.attributes,
                    result_names=() if otb_name == name else (otb_name,),
                    source=video.source,
                )
            )
        super().__init__(f"OTB99-LANG-{split}", videos)


def _default_annotations(root):
    for candidate in (root / "OTB_videos", root / "OTB100.json"):
        if candidate.exists():
            return candidate
    return root


def _split_names(root, split, names_file, queries):
    if names_file is not None:
        return read_names(names_file, "OTB-99-LANG split list")
    for candidate in (root / f"otb99_{split}_split.txt", root / "splits" / f"otb99_{split}_split.txt"):
        if candidate.is_file():
            return read_names(candidate, "OTB-99-LANG split list")
    if queries.is_dir():
        return sorted(p.stem for p in queries.glob("*.txt"))
    raise FileNotFoundError(
        f"no OTB-99-LANG {split} split list in {root} (looked for otb99_{split}_split.txt, "
        f"splits/otb99_{split}_split.txt and OTB_query_{split}/); pass names_file"
    )
