"""COCO detection annotations: one single-frame Video per object, no sentence.

Layout: `<root>/annotations/instances_<split>.json` ({images, annotations,
categories}) and the images `<root>/<split>/<file_name>`.

COCO's `bbox` is `[x, y, w, h]` in 0-based pixels (the top-left pixel is at 0, 0);
it becomes snlt_fast's 1-based convention (as OTB and LaSOT) by adding 1 to x and y.
Left out: boxes with w <= 0 or h <= 0, and crowd annotations (`iscrowd` 1), whose
box spans a group of objects (a crowd of people, a pile of bananas), not one
target a tracker could follow.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snlt_fast.datasets._text import AnnotationError
from snlt_fast.datasets.lazy import Stills, json_list, json_strings, json_table, read_json


@dataclass
class Instances:
    """The objects of a COCO-style `instances` json, as arrays (one row per annotation)."""

    path: Path
    image_names: list  # file_name of each image
    ids: np.ndarray  # (n,) int64 annotation ids
    image_index: np.ndarray  # (n,) int64 position of each annotation's image in image_names
    boxes: np.ndarray  # (n, 4) float64 x, y, w, h, 1-based
    crowd: np.ndarray  # (n,) bool

    @property
    def usable(self):
        """Annotations that are one object with a box of positive size."""
        return ~self.crowd & (self.boxes[:, 2] > 0) & (self.boxes[:, 3] > 0)


def read_instances(path, what="COCO instances json"):
    """An `instances_*.json` (COCO, RefCOCO) read into `Instances`."""
    path = Path(path)
    data = read_json(path, what)
    images = json_list(data, "images", path, what)
    annotations = json_list(data, "annotations", path, what)
    image_ids = json_table(images, lambda image: (image["id"],), 1, path, "images")[:, 0]
    image_names = json_strings(images, "file_name", path, "images")
    rows = json_table(
        annotations,
        lambda a: (a["id"], a["image_id"], *a["bbox"], a.get("iscrowd", 0)),
        7,
        path,
        "annotations",
    )
    position = {int(image_id): k for k, image_id in enumerate(image_ids)}
    image_index = np.fromiter((position.get(int(i), -1) for i in rows[:, 1]), np.int64, len(rows))
    unknown = np.flatnonzero(image_index < 0)
    if len(unknown):
        first = unknown[0]
        raise AnnotationError(
            f"{path}: annotations[{first}] (id {int(rows[first, 0])}) refers to image {int(rows[first, 1])}, "
            f"which 'images' does not list ({len(unknown)} such annotations)"
        )
    boxes = rows[:, 2:6].copy()
    boxes[:, :2] += 1  # 0-based COCO pixels to 1-based
    return Instances(path, image_names, rows[:, 0].astype(np.int64), image_index, boxes, rows[:, 6] != 0)


class COCO(Stills):
    """COCO objects of one split, each a single-frame Video named `coco-<annotation id>`.

    root: the COCO folder; split: "train2017" (default), "val2017", "train2014", ...;
    annotation_file: the instances json (default `<root>/annotations/instances_<split>.json`);
    images_root: the image folder (default `<root>/<split>`).
    Only compact arrays are kept: each Video is built when indexed.
    """

    def __init__(self, root, split="train2017", annotation_file=None, images_root=None):
        root = Path(root)
        if annotation_file is None:
            annotation_file = root / "annotations" / f"instances_{split}.json"
        images_root = Path(images_root) if images_root is not None else root / split
        if not images_root.is_dir():
            raise FileNotFoundError(f"COCO image folder not found: {images_root}")
        instances = read_instances(annotation_file)
        keep = instances.usable
        super().__init__(
            f"COCO-{split}",
            "coco",
            images_root,
            instances.image_names,
            instances.image_index[keep],
            instances.boxes[keep],
            instances.ids[keep],
        )
