"""What every dataset gives per video: frame paths, boxes, absent flags, sentence.

Frames are read only when asked for, so that scoring (which needs only the
annotations) works on a dataset folder that has no images at all.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snlt_fast._files import is_truncated_jpeg


class NumberedFrames(Sequence):
    """Paths `<folder>/<number>.<ext>` for consecutive frame numbers, built on demand."""

    def __init__(self, folder, first, count, digits, ext=".jpg"):
        self.folder, self.first, self.count, self.digits, self.ext = Path(folder), first, count, digits, ext

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.count))]
        if not -self.count <= index < self.count:
            raise IndexError(f"frame index {index} out of range for {self.count} frames")
        return self.folder / f"{self.first + index % self.count:0{self.digits}d}{self.ext}"

    def __repr__(self):
        return f"NumberedFrames({str(self.folder)!r}, first={self.first}, count={self.count})"


@dataclass(eq=False)
class Video:
    """One annotated target in one sequence.

    boxes: (n, 4) float64 `x, y, w, h` (1-based pixels, top-left origin);
    absent: (n,) bool, True where the target is fully occluded or out of view;
    frame_paths: n paths, read lazily by `frame` / `frames`;
    sentence: the natural-language description, or None where the dataset has none;
    attributes: challenge attributes (OTB's "Occlusion", ...), empty where unknown;
    result_names: further names a tracker's result file for this video may carry.
    """

    name: str
    boxes: np.ndarray
    frame_paths: Sequence
    absent: np.ndarray = None
    sentence: str = None
    attributes: tuple = ()
    result_names: tuple = ()
    source: str = field(default="", repr=False)

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float64)
        if self.boxes.ndim != 2 or self.boxes.shape[1] != 4 or len(self.boxes) == 0:
            raise ValueError(f"video {self.name}: boxes must have shape (n, 4) with n > 0, got {self.boxes.shape}")
        if self.absent is None:
            self.absent = np.zeros(len(self.boxes), dtype=bool)
        self.absent = np.asarray(self.absent, dtype=bool)
        where = f" ({self.source})" if self.source else ""
        if self.absent.shape != (len(self.boxes),):
            raise ValueError(f"video {self.name}{where}: {len(self.absent)} absent flags for {len(self.boxes)} boxes")
        if len(self.frame_paths) != len(self.boxes):
            raise ValueError(f"video {self.name}{where}: {len(self.frame_paths)} frames for {len(self.boxes)} boxes")
        self.attributes = tuple(self.attributes)
        self.result_names = tuple(self.result_names)

    def __len__(self):
        return len(self.boxes)

    @property
    def init_box(self):
        return self.boxes[0].copy()

    def lookalike_boxes(self, index):
        """(k, 4) boxes, as `boxes`, in frame `index` of the annotated objects that look like
        the target and are in view there (training centres some search crops on them);
        none where a dataset does not annotate them."""
        return np.zeros((0, 4))

    def frame(self, index):
        """Frame `index` (0-based) as an (H, W, 3) uint8 BGR array, as OpenCV reads it."""
        import cv2

        path = Path(self.frame_paths[index])
        truncated = path.is_file() and is_truncated_jpeg(path)
        image = None if truncated else cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            reason = "not found" if not path.exists() else "truncated" if truncated else "not a readable image"
            raise FileNotFoundError(f"video {self.name}: frame {index + 1} {reason}: {path}")
        return image

    def frames(self):
        """Every frame in order, each read when the iteration reaches it."""
        for index in range(len(self)):
            yield self.frame(index)


class Dataset(Sequence):
    """An ordered collection of videos, indexable by position or by name."""

    def __init__(self, name, videos):
        self.name = name
        self.videos = list(videos)
        self._by_name = {}
        for video in self.videos:
            if video.name in self._by_name:
                raise ValueError(f"dataset {name}: two videos are named {video.name!r}")
            self._by_name[video.name] = video

    def __len__(self):
        return len(self.videos)

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                return self._by_name[key]
            except KeyError:
                raise KeyError(f"dataset {self.name} has no video {key!r}") from None
        return self.videos[key]

    def __contains__(self, key):
        return key in self._by_name if isinstance(key, str) else key in self.videos

    @property
    def names(self):
        return [video.name for video in self.videos]

    @property
    def attributes(self):
        """The attribute names used by any video, sorted."""
        return sorted({attribute for video in self.videos for attribute in video.attributes})

    @property
    def num_frames(self):
        return sum(len(video) for video in self.videos)

    def subset(self, names, name=None):
        """A dataset of the named videos, in the order given; unknown names are an error."""
        missing = [n for n in names if n not in self._by_name]
        if missing:
            raise KeyError(f"dataset {self.name} has no video {missing[0]!r} ({len(missing)} names not found)")
        return Dataset(name or self.name, [self._by_name[n] for n in names])

    def __repr__(self):
        return f"<Dataset {self.name}: {len(self)} videos, {self.num_frames} frames>"
