"""Visual Genome region descriptions: one single-frame Video per region, its phrase the sentence.

Layout: `<root>/region_descriptions.json`, a list of {`id` (the image id),
`regions`: [{`region_id`, `image_id`, `phrase`, `x`, `y`, `width`, `height`}]},
and the images `<root>/VG_100K/<image id>.jpg` or `<root>/VG_100K_2/<image id>.jpg`
(the release's two parts).

Region boxes are 0-based pixels as COCO's; they become 1-based by adding 1 to x
and y. Regions with width <= 0 or height <= 0 are left out; a blank phrase gives
the sentence None.
"""

import os
from pathlib import Path

import numpy as np

from snlt_fast.datasets._text import AnnotationError
from snlt_fast.datasets.lazy import PackedStrings, Stills, json_strings, json_table, read_json

IMAGE_FOLDERS = ("VG_100K", "VG_100K_2")


class VisualGenome(Stills):
    """Visual Genome regions, each a single-frame Video named `vg-<region id>` with its phrase.

    root: the Visual Genome folder (the image folders and, by default, the json);
    regions_file: the region descriptions json (default `<root>/region_descriptions.json`).
    Only compact arrays are kept (the phrases packed in one byte array): each
    Video is built when indexed.
    """

    def __init__(self, root, regions_file=None):
        root = Path(root)
        regions_file = Path(regions_file) if regions_file is not None else root / "region_descriptions.json"
        if not any((root / folder).is_dir() for folder in IMAGE_FOLDERS):
            folders = ", ".join(str(root / folder) for folder in IMAGE_FOLDERS)
            raise FileNotFoundError(f"Visual Genome image folders not found: {folders}")
        entries = read_json(regions_file, "Visual Genome region descriptions")
        if not isinstance(entries, list):
            raise AnnotationError(f"{regions_file}: expected a json list of images with their regions")
        image_ids, counts, regions = _flatten(entries, regions_file)
        rows = json_table(
            regions, lambda r: (r["region_id"], r["x"], r["y"], r["width"], r["height"]), 5, regions_file, "regions"
        )
        phrases = [phrase.strip() for phrase in json_strings(regions, "phrase", regions_file, "regions")]
        image_index = np.repeat(np.arange(len(image_ids)), counts)
        keep = (rows[:, 3] > 0) & (rows[:, 4] > 0)
        boxes = rows[keep, 1:5]
        boxes[:, :2] += 1  # 0-based pixels to 1-based
        super().__init__(
            "VisualGenome",
            "vg",
            root,
            _image_names(root, image_ids),
            image_index[keep],
            boxes,
            rows[keep, 0].astype(np.int64),
            PackedStrings(phrase for phrase, kept in zip(phrases, keep) if kept),
        )


def _flatten(entries, path):
    """(image ids, region count of each image, every region in image order) of the json's list of images."""
    image_ids, counts, regions = [], [], []
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("regions"), list) or "id" not in entry:
            raise AnnotationError(f"{path}: images[{position}] needs an 'id' and a list 'regions'")
        image_ids.append(entry["id"])
        counts.append(len(entry["regions"]))
        regions.extend(entry["regions"])
    return image_ids, counts, regions


def _image_names(root, image_ids):
    """`<folder>/<id>.jpg` for each image: VG_100K_2 when it holds the image, else VG_100K."""
    second = root / IMAGE_FOLDERS[1]
    in_second = set(os.listdir(second)) if second.is_dir() else set()
    return [
        f"{IMAGE_FOLDERS[1] if f'{image_id}.jpg' in in_second else IMAGE_FOLDERS[0]}/{image_id}.jpg"
        for image_id in image_ids
    ]
