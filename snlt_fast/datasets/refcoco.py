"""RefCOCO, RefCOCO+ and RefCOCOg in the refer toolkit's layout: one single-frame Video per referring expression.

Layout (github.com/lichengunc/refer): `<data>/<dataset>/refs(<split_by>).p` and
`<data>/<dataset>/instances.json` (COCO-style: images, annotations, categories);
the images are COCO train2014's, by default in `<data>/images/mscoco/images/train2014/`.

`refs(...).p` is a Python 2 pickle: a list of refs {ref_id, ann_id, image_id,
category_id, split, sentences: [{sent, ...}], ...}. Loading a pickle can run any
code it names, so it is read with `load_plain_pickle`, which builds plain lists,
dicts, strings and numbers only and refuses every other global.

Every sentence of a ref is its own Video, named `<dataset>-<ref id>-<k>` (k the
sentence's position in the ref): the two to four expressions of a ref all describe
the same box, and each is a training sample. Boxes come from `instances.json`
(0-based COCO pixels made 1-based); a ref whose annotation is a crowd or has no
area is left out, as in `COCO`.
"""

import builtins
import pickle
from pathlib import Path

import numpy as np

from snlt_fast.datasets._text import AnnotationError
from snlt_fast.datasets.coco import read_instances
from snlt_fast.datasets.lazy import PackedStrings, Stills

# refer's default partition of each dataset: RefCOCO and RefCOCO+ by UNC (train, val,
# testA, testB), RefCOCOg by UMD (train, val, test); RefCOCOg also has google's (train, val).
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}
# The only globals a pickle of plain data may name (Python 2 calls the module __builtin__).
PLAIN_BUILTINS = frozenset({"dict", "list", "str", "int", "float", "tuple", "bool"})


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that refuses every global but the plain builtin types, naming the file."""

    def __init__(self, file, path):
        super().__init__(file, encoding="latin1")  # Python 2 byte strings become str
        self.path = path

    def find_class(self, module, name):
        if module in ("builtins", "__builtin__") and name in PLAIN_BUILTINS:
            return getattr(builtins, name)
        raise AnnotationError(
            f"{self.path}: refused to unpickle {module}.{name}: only plain lists, dicts, strings and numbers are "
            "allowed (loading any other global could run code)"
        )


def load_plain_pickle(path, what="pickle"):
    """The plain data (lists, dicts, strings, numbers) of a pickle file, with no code run."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            return PlainUnpickler(file, path).load()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except AnnotationError:
        raise
    except Exception as error:  # a damaged pickle fails in many ways (EOFError, UnpicklingError, ...)
        raise AnnotationError(f"{path}: {what} is not a readable pickle ({error.__class__.__name__}: {error})") from None


class RefCOCO(Stills):
    """The referring expressions of one split, each a single-frame Video with its sentence.

    root: refer's `data` folder; dataset: "refcoco" (default), "refcoco+" or "refcocog";
    split: "train" (default), "val", "testA", "testB" (UNC), "test" (UMD);
    split_by: the partition, default "unc" for refcoco and refcoco+, "umd" for refcocog;
    images_root: the COCO train2014 images (default `<root>/images/mscoco/images/train2014`).
    """

    def __init__(self, root, split="train", dataset="refcoco", split_by=None, images_root=None):
        root = Path(root)
        folder = root / dataset
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{dataset} folder not found: {folder} (root must be the refer toolkit's data folder)"
            )
        split_by = split_by or DEFAULT_SPLIT_BY.get(dataset, "unc")
        if images_root is None:
            images_root = root / "images" / "mscoco" / "images" / "train2014"
        images_root = Path(images_root)
        if not images_root.is_dir():
            raise FileNotFoundError(f"{dataset} image folder (COCO train2014) not found: {images_root}")
        refs_path = folder / f"refs({split_by}).p"
        refs = load_plain_pickle(refs_path, f"{dataset} refs")
        if not isinstance(refs, list):
            raise AnnotationError(f"{refs_path}: expected a list of refs, got {type(refs).__name__}")
        instances = read_instances(folder / "instances.json", f"{dataset} instances json")
        rows, ids, sentences = _expressions(refs, split, refs_path, instances)
        super().__init__(
            f"{dataset}-{split_by}-{split}",
            dataset,
            images_root,
            instances.image_names,
            instances.image_index[rows],
            instances.boxes[rows],
            ids,
            PackedStrings(sentences),
        )


def _expressions(refs, split, refs_path, instances):
    """(annotation row, `<ref id>-<k>` name, sentence) of every expression of the split's refs."""
    row_of = {int(ann_id): row for row, ann_id in enumerate(instances.ids)}
    usable = instances.usable
    rows, ids, sentences, splits = [], [], [], set()
    for position, ref in enumerate(refs):
        try:
            ref_split, ann_id, ref_id = ref["split"], int(ref["ann_id"]), int(ref["ref_id"])
            texts = [sentence["sent"].strip() for sentence in ref["sentences"]]
        except (KeyError, TypeError, ValueError, AttributeError):
            raise AnnotationError(
                f"{refs_path}: refs[{position}] needs 'split', 'ann_id', 'ref_id' and 'sentences' [{{'sent': ...}}]"
            ) from None
        splits.add(ref_split)
        if ref_split != split:
            continue
        if ann_id not in row_of:
            raise AnnotationError(
                f"{refs_path}: refs[{position}] (ref {ref_id}) has ann_id {ann_id}, which {instances.path} lacks"
            )
        if not usable[row_of[ann_id]]:
            continue
        for k, text in enumerate(texts):
            rows.append(row_of[ann_id])
            ids.append(f"{ref_id}-{k}")
            sentences.append(text)
    if split not in splits:
        found = ", ".join(sorted(map(str, splits)))
        raise ValueError(f"{refs_path}: no refs in split {split!r}; its splits are {found}")
    return np.array(rows, dtype=np.int64), np.array(ids, dtype=str), sentences
