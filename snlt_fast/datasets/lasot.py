"""LaSOT: `<root>/<category>/<category>-<n>/` with `img/00000001.jpg ...`,
`groundtruth.txt`, `full_occlusion.txt`, `out_of_view.txt` and `nlp.txt`.

The training split (subset="train") is LaSOT's protocol II: of the 1400
sequences, the 1120 that are not in the 280-sequence test split.

A frame is absent when it is fully occluded or out of view. A flattened layout
(`<root>/<category>-<n>/`) is accepted as well, and so is the annotations-only
release of the test set (`<root>/annos/<name>.txt` with the absent flags, one
per line, in `<root>/annos/absent/<name>.txt`), which is all that scoring needs.
"""

from pathlib import Path

import numpy as np

from snlt_fast.datasets._text import AnnotationError, first_line, read_boxes, read_flags, read_names
from snlt_fast.datasets._zip import refuse_zip
from snlt_fast.datasets.base import Dataset, NumberedFrames, Video

# Name lists looked up in the LaSOT root for the named subsets.
LASOT_SUBSET_FILES = {"train": "training_set.txt", "test": "testing_set.txt", "nl-consistent": "nl-consistent-lasot.txt"}


class LaSOT(Dataset):
    """LaSOT sequences.

    subset: None for every sequence found under root; "train" (protocol II's
    training split: the names in `<root>/training_set.txt` when that file exists,
    else every sequence found under root that `<root>/testing_set.txt` does not
    list, which is 1400 - 280 = 1120 on the full release); "test" (the 280-sequence
    test split, names from `<root>/testing_set.txt`); "nl-consistent" (the 44
    sequences whose sentence holds for the whole video, `<root>/nl-consistent-lasot.txt`);
    a path to a name list; or a list of names.
    """

    def __init__(self, root, subset=None):
        root = Path(root)
        refuse_zip(root, "LaSOT")
        if not root.is_dir():
            raise FileNotFoundError(f"LaSOT folder not found: {root}")
        names = _subset_names(root, subset)
        videos = [_read_video(root, name) for name in names]
        label = subset if isinstance(subset, str) and subset in LASOT_SUBSET_FILES else None
        super().__init__(f"LaSOT-{label}" if label else "LaSOT", videos)


def _subset_names(root, subset):
    if subset is None:
        return _found_names(root)
    if isinstance(subset, (list, tuple)):
        return list(subset)
    if subset == "train" and not (root / LASOT_SUBSET_FILES["train"]).is_file():
        return _names_outside_test_split(root)
    if subset in LASOT_SUBSET_FILES:
        path = root / LASOT_SUBSET_FILES[subset]
        if not path.is_file():
            raise FileNotFoundError(f"LaSOT {subset} name list not found: {path} (or pass subset=<path to a name list>)")
        return read_names(path, f"LaSOT {subset} name list")
    path = Path(subset)
    if not path.is_file():
        raise FileNotFoundError(
            f"LaSOT subset must be None, {', '.join(map(repr, LASOT_SUBSET_FILES))}, a name list file or a list of names; "
            f"no file {path}"
        )
    return read_names(path, "LaSOT name list")


def _found_names(root):
    names = sorted(p.parent.name for p in root.glob("*/groundtruth.txt"))
    names += sorted(p.parent.name for p in root.glob("*/*/groundtruth.txt"))
    names += sorted(p.stem for p in root.glob("annos/*.txt"))
    if not names:
        raise FileNotFoundError(f"no LaSOT sequences in {root} (expected <category>/<name>/groundtruth.txt)")
    return names


def _names_outside_test_split(root):
    """Protocol II's training split without its name list: every sequence the test list leaves out."""
    test_list = root / LASOT_SUBSET_FILES["test"]
    if not test_list.is_file():
        raise FileNotFoundError(
            f"LaSOT train split needs {root / LASOT_SUBSET_FILES['train']} or {test_list} (the test names it leaves out)"
        )
    test = set(read_names(test_list, "LaSOT test name list"))
    names = [name for name in _found_names(root) if name not in test]
    if not names:
        raise AnnotationError(f"every LaSOT sequence under {root} is listed in {test_list}: no training sequences")
    return names


def _read_video(root, name):
    category = name.rsplit("-", 1)[0]
    for folder in (root / category / name, root / name):
        if folder.is_dir():
            return _read_sequence(folder)
    annotation = root / "annos" / f"{name}.txt"
    if annotation.is_file():
        boxes = read_boxes(annotation, "LaSOT ground truth")
        absent = _read_absent(boxes, annotation, root / "annos" / "absent" / f"{name}.txt")
        return Video(name, boxes, NumberedFrames(root / category / name / "img", 1, len(boxes), 8), absent,
                     source=str(annotation))
    raise FileNotFoundError(
        f"LaSOT sequence {name} not found: none of {root / category / name}, {root / name}, {annotation}"
    )


def _read_absent(boxes, box_file, *flag_files):
    """Frames flagged in any of the files; each must have one flag per box of `box_file`."""
    absent = np.zeros(len(boxes), dtype=bool)
    for path in flag_files:
        flags = read_flags(path, "LaSOT absent flags")
        if len(flags) != len(boxes):
            raise AnnotationError(f"{path}: {len(flags)} flags for {len(boxes)} ground-truth boxes in {box_file}")
        absent |= flags
    return absent


def _read_sequence(folder):
    box_file = folder / "groundtruth.txt"
    boxes = read_boxes(box_file, "LaSOT ground truth")
    nlp = folder / "nlp.txt"
    return Video(
        name=folder.name,
        boxes=boxes,
        frame_paths=NumberedFrames(folder / "img", 1, len(boxes), 8),
        absent=_read_absent(boxes, box_file, folder / "full_occlusion.txt", folder / "out_of_view.txt"),
        sentence=first_line(nlp, "LaSOT sentence (nlp.txt)") if nlp.is_file() else None,
        source=str(folder),
    )
