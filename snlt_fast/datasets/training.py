"""Training datasets by name: `open_training_dataset("got10k", root, **options)`.

Every one is a sequence of `Video`s: `len(dataset)`, `dataset[i]`, and per video
`boxes` ((n, 4) x, y, w, h, 1-based), `absent` (True where not visible),
`frame(i)` (a BGR image, read when asked for), `sentence` (or None) and `name`.
Still-image datasets give single-frame videos.

TRAINING_DATASETS maps each name to its factory, called as `factory(root, **options)`;
a new reader registers by adding an entry there.
"""

import inspect
from functools import partial

from snlt_fast.datasets.coco import COCO
from snlt_fast.datasets.got10k import GOT10k
from snlt_fast.datasets.lasot import LaSOT
from snlt_fast.datasets.otb import OTB99Lang
from snlt_fast.datasets.refcoco import RefCOCO
from snlt_fast.datasets.visual_genome import VisualGenome


def otb(root, names_file=None):
    """OTB-100 (no sentences), optionally only the videos of a name list."""
    from snlt_fast.datasets import open_dataset  # here: the package imports this module while it loads

    return open_dataset("otb", root, names_file=names_file)


# LaSOT and OTB-99-LANG default to their training splits (LaSOT: protocol II's 1120).
TRAINING_DATASETS = {
    "lasot": partial(LaSOT, subset="train"),
    "got10k": GOT10k,
    "coco": COCO,
    "vg": VisualGenome,
    "refcoco": RefCOCO,
    "otb99lang": partial(OTB99Lang, split="train"),
    "otb": otb,
}
TRAINING_DATASET_NAMES = tuple(TRAINING_DATASETS)


def open_training_dataset(name, root, **options):
    """The training dataset `name` read from `root`; unknown names and options are a ValueError listing the valid ones.

    lasot: subset ("train" by default, or any LaSOT subset); got10k: subset (a name
    list or names); coco: split ("train2017"), annotation_file, images_root;
    vg: regions_file; refcoco: split ("train"), dataset ("refcoco", "refcoco+",
    "refcocog"), split_by, images_root; otb99lang: split ("train"), annotations,
    names_file, queries; otb: names_file.
    """
    if name not in TRAINING_DATASETS:
        raise ValueError(f"unknown training dataset {name!r}; expected one of {', '.join(TRAINING_DATASETS)}")
    factory = TRAINING_DATASETS[name]
    parameters = list(inspect.signature(factory).parameters)[1:]  # all but root
    unknown = [option for option in options if option not in parameters]
    if unknown:
        raise ValueError(
            f"training dataset {name} has no option {unknown[0]!r}; its options are {', '.join(parameters) or 'none'}"
        )
    return factory(root, **options)
