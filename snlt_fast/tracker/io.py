"""Frames in (a video file or a folder of frames) and results out (box files, an
annotated video), with outputs written under a temporary name and renamed only
once complete, so that a failed run leaves no half-written results."""

import contextlib
import math
import os
from pathlib import Path

import cv2
import numpy as np

from snlt_fast._files import atomic_path, is_truncated_jpeg

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class SourceError(Exception):
    """The source cannot be opened or read."""


class BadFrame(Exception):
    """One frame failed to decode; `index` is its 0-based position."""

    def __init__(self, index, where):
        super().__init__(f"frame {index} ({where}) could not be decoded")
        self.index = index


class FolderSource:
    """The frames of a folder, sorted by name (OTB / LaSOT keep them in an `img` subfolder)."""

    def __init__(self, folder):
        folder = Path(folder)
        if not any(self._images(folder)) and (folder / "img").is_dir():
            folder = folder / "img"
        self.paths = sorted(self._images(folder))
        if not self.paths:
            raise SourceError(f"{folder} holds no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self.fps = 30.0
        self.count = len(self.paths)

    @staticmethod
    def _images(folder):
        return (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    def __iter__(self):
        """Yields each frame (HxWx3 uint8 BGR) or a BadFrame in its place."""
        for index, path in enumerate(self.paths):
            if is_truncated_jpeg(path):
                yield BadFrame(index, f"{path.name}, truncated")
                continue
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            yield frame if frame is not None else BadFrame(index, path.name)


class VideoSource:
    """The frames of a video file, decoded by OpenCV."""

    def __init__(self, path):
        self.path, self.name = str(path), Path(path).name
        capture = cv2.VideoCapture(self.path)
        opened = capture.isOpened()
        self.fps = capture.get(cv2.CAP_PROP_FPS) or 30.0
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        capture.release()
        if not opened:
            raise SourceError(f"{path} is not a video OpenCV can open")
        self.count = count if count > 0 else None

    def __iter__(self):
        capture = cv2.VideoCapture(self.path)
        try:
            index = 0
            while True:
                if not capture.grab():
                    # A stream that stops before its announced length has undecodable frames.
                    if self.count is not None and index < self.count:
                        yield BadFrame(index, f"{self.name}: the stream ends after {index} of {self.count} frames")
                    return
                ok, frame = capture.retrieve()
                yield frame if ok and frame is not None else BadFrame(index, f"{self.name}: decoder error")
                index += 1
        finally:
            capture.release()


def open_source(path):
    """A FolderSource or VideoSource for `path`; SourceError when it is missing or unreadable."""
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path} does not exist")
    if path.is_dir():
        return FolderSource(path)
    if not os.access(path, os.R_OK):
        raise SourceError(f"{path} is not readable")
    return VideoSource(path)


@contextlib.contextmanager
def atomic_output(path):
    """atomic_path for a user-named output, whose folder must exist already."""
    path = Path(path)
    if not path.parent.is_dir():
        raise SourceError(f"cannot write {path}: folder {path.parent} does not exist")
    with atomic_path(path) as temporary:
        yield temporary


def format_box(box):
    return ",".join(f"{value:.4f}" for value in box)


class AnnotatedVideo:
    """A video writer that draws each target's box and score, and the modality weights
    when `weights` (a run with sentences) on the frames that have them (not the first)."""

    COLOURS = [(0, 255, 0), (0, 128, 255), (255, 0, 255), (255, 255, 0), (0, 0, 255), (255, 0, 0)]

    def __init__(self, path, fps, frame_size, weights=True):
        self.weights = weights
        width, height = frame_size
        self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        if not self.writer.isOpened():
            raise SourceError(f"OpenCV cannot write a video to {path}")

    def write(self, frame, results):
        canvas = np.ascontiguousarray(frame)
        for target, result in enumerate(results):
            colour = self.COLOURS[target % len(self.COLOURS)]
            x, y, w, h = (int(round(v)) for v in result.box)
            cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, 2)
            label = f"{result.score:.2f}"
            if self.weights and math.isfinite(result.w_vis) and math.isfinite(result.w_nl):
                label += f" vis {result.w_vis:.2f} nl {result.w_nl:.2f}"
            cv2.putText(canvas, label, (x, max(12, y - 5)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        self.writer.write(canvas)

    def close(self):
        self.writer.release()
