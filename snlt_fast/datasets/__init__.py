"""Tracking benchmarks: OTB-100, OTB-99-LANG and LaSOT.

Every dataset is a sequence of `Video`s (frame paths read lazily, boxes `x,y,w,h`,
absent flags, sentence, attributes). Missing files and malformed lines raise
FileNotFoundError / AnnotationError naming the file and the line.
"""

from snlt_fast.datasets._text import AnnotationError, read_names
from snlt_fast.datasets.base import Dataset, NumberedFrames, Video
from snlt_fast.datasets.coco import COCO
from snlt_fast.datasets.got10k import GOT10k
from snlt_fast.datasets.lasot import LaSOT
from snlt_fast.datasets.lazy import LazyDataset, Stills
from snlt_fast.datasets.otb import OTB, OTB99Lang
from snlt_fast.datasets.refcoco import RefCOCO
from snlt_fast.datasets.synthetic import SyntheticNL
from snlt_fast.datasets.training import TRAINING_DATASET_NAMES, TRAINING_DATASETS, open_training_dataset
from snlt_fast.datasets.visual_genome import VisualGenome

DATASET_NAMES = ("otb", "otb99lang", "lasot")


def open_dataset(name, root, split=None, names_file=None):
    """A dataset by its command-line name.

    otb: `root` is the OTB folder or json (`split` must be None; `names_file`
    keeps only the listed videos). otb99lang: `split` "test" (default) or "train".
    lasot: `split` None (all), "test", "nl-consistent" or a name list path;
    `names_file` overrides it.
    """
    if name == "otb":
        if split is not None:
            raise ValueError(f"dataset otb has no splits, got split={split!r}")
        dataset = OTB(root)
        if names_file is not None:
            dataset = dataset.subset(read_names(names_file, "video name list"))
        return dataset
    if name == "otb99lang":
        return OTB99Lang(root, split=split or "test", names_file=names_file)
    if name == "lasot":
        return LaSOT(root, subset=names_file if names_file is not None else split)
    raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASET_NAMES)}")


__all__ = [
    "AnnotationError",
    "COCO",
    "DATASET_NAMES",
    "Dataset",
    "GOT10k",
    "LaSOT",
    "LazyDataset",
    "NumberedFrames",
    "OTB",
    "OTB99Lang",
    "RefCOCO",
    "Stills",
    "SyntheticNL",
    "TRAINING_DATASETS",
    "TRAINING_DATASET_NAMES",
    "Video",
    "VisualGenome",
    "open_dataset",
    "open_training_dataset",
]
