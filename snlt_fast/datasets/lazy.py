"""Datasets whose videos are built only when asked for.

Training sets are large (GOT-10k has 9335 sequences, COCO train2017 some 860k
boxes): building every `Video` at load would cost minutes and gigabytes, so these
datasets keep their annotations in compact form and build one `Video` per access.

`Stills` is the common form of the still-image datasets (COCO, Visual Genome,
RefCOCO): one Video of length 1 per annotated object, held as numpy arrays.
"""

import abc
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from snlt_fast.datasets._text import AnnotationError
from snlt_fast.datasets.base import Video


class LazyDataset(Sequence):
    """`len(dataset)` videos, `dataset[i]` building video i on each access (nothing is cached)."""

    def __init__(self, name, count):
        self.name, self._count = name, count

    def __len__(self):
        return self._count

    def __getitem__(self, index):
        if not isinstance(index, (int, np.integer)):
            raise TypeError(f"dataset {self.name}: videos are indexed by position, got {type(index).__name__}")
        if not -self._count <= index < self._count:
            raise IndexError(f"dataset {self.name}: video index {index} out of range for {self._count} videos")
        return self._video(int(index) % self._count)

    @abc.abstractmethod
    def _video(self, index):
        """Video `index` (0 <= index < len), built now."""

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}: {len(self)} videos>"


class Stills(LazyDataset):
    """One single-frame Video per annotated object of a set of still images.

    images_root / image_names[k]: the path of image k; image_index: (n,) the image
    of each object (objects of one image share its path); boxes: (n, 4) `x, y, w, h`,
    1-based; ids: (n,) the objects' ids, naming the videos `<prefix>-<id>`;
    sentences: None, or n strings ("" where an object has none).
    """

    def __init__(self, name, prefix, images_root, image_names, image_index, boxes, ids, sentences=None):
        super().__init__(name, len(boxes))
        self.prefix, self.images_root, self.image_names = prefix, Path(images_root), image_names
        self.image_index = np.asarray(image_index, dtype=np.int64)
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.ids = np.asarray(ids)
        self.sentences = sentences

    def _video(self, index):
        image = self.images_root / self.image_names[self.image_index[index]]
        return Video(
            name=f"{self.prefix}-{self.ids[index]}",
            boxes=self.boxes[index : index + 1],
            frame_paths=[image],
            sentence=(self.sentences[index] or None) if self.sentences is not None else None,
            source=str(image),
        )


class PackedStrings(Sequence):
    """Many strings in one UTF-8 byte array: a few bytes each instead of a Python object each."""

    def __init__(self, strings):
        encoded = [string.encode("utf-8") for string in strings]
        self._ends = np.cumsum([len(data) for data in encoded], dtype=np.int64)
        self._bytes = b"".join(encoded)

    def __len__(self):
        return len(self._ends)

    def __getitem__(self, index):
        start = self._ends[index - 1] if index % len(self) else 0
        return self._bytes[start : self._ends[index]].decode("utf-8")


def read_json(path, what):
    """The parsed json of `path`; a missing, empty, truncated or non-UTF-8 file is a one-line error naming it."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise AnnotationError(f"{path}: {what} is a folder, not a json file") from None
    if not data.strip():
        raise AnnotationError(f"{path}: {what} is empty")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise AnnotationError(
            f"{path}: {what} is not UTF-8 text (byte {error.start}): binary or wrongly encoded"
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        # A json list or object cut short fails at its end or leaves it unclosed.
        end = text.rstrip()
        hint = "; truncated?" if error.pos >= len(end) or end[-1] not in "]}" else ""
        raise AnnotationError(f"{path}:{error.lineno}: {what} is not valid json ({error.msg}{hint})") from None


def json_list(container, key, path, what):
    """`container[key]`, which must be a json list."""
    value = container.get(key) if isinstance(container, dict) else None
    if not isinstance(value, list):
        raise AnnotationError(f"{path}: {what} needs a list {key!r} at the top level")
    return value


def json_strings(entries, key, path, what):
    """`entry[key]` for each json object of `entries`, each of which must be a string."""
    strings = []
    for position, entry in enumerate(entries):
        value = entry.get(key) if isinstance(entry, dict) else None
        if not isinstance(value, str):
            problem = f"has no {key!r}" if value is None else f"has a {key!r} that is not a string"
            raise AnnotationError(f"{path}: {what}[{position}] {problem}")
        strings.append(value)
    return strings


def json_table(entries, row, width, path, what):
    """(n, width) float64: `row(entry)`, a tuple of `width` numbers, for each json object of `entries`.

    An object that lacks a field or holds something else than numbers is an
    AnnotationError naming `path` and the object's position in `what`.
    """
    try:
        values = np.array([row(entry) for entry in entries], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        values = None
    if values is not None and values.shape == (len(entries), width):
        return values
    # One entry at a time: slower, but it names the first bad one.
    values = np.empty((len(entries), width), dtype=np.float64)
    for position, entry in enumerate(entries):
        try:
            values[position] = [float(value) for value in row(entry)]
        except KeyError as error:
            raise AnnotationError(f"{path}: {what}[{position}] has no {error.args[0]!r}") from None
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}: {what}[{position}] is malformed: {str(entry)[:100]}") from None
    return values
