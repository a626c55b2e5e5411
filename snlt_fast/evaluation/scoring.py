"""Score a tracker's raw results on a dataset.

Results layout (common to the tracking toolkits): `<results_dir>/<video>.txt`
with one `x,y,w,h` line per frame, with or without the first frame, and
optionally `<video>_time.txt` with the seconds spent on each frame (FPS). The
folder may be a zip archive of those files, read in place.
Frame 1 is always scored as the ground truth the tracker was given.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snlt_fast.datasets._text import AnnotationError, parse_numbers, read_text
from snlt_fast.datasets._zip import folder_name, is_zip, zip_folder
from snlt_fast.evaluation import metrics

AVERAGES = ("video", "frame")


@dataclass
class Counts:
    """Success / precision / normalised-precision counts over the thresholds for `frames` frames."""

    success: np.ndarray
    precision: np.ndarray
    norm_precision: np.ndarray
    frames: int


@dataclass
class Scores:
    """Curves (fractions per threshold) and the reported numbers."""

    success_curve: np.ndarray
    precision_curve: np.ndarray
    norm_precision_curve: np.ndarray
    frames: int
    videos: int

    @property
    def success_auc(self):
        return float(self.success_curve.mean())

    @property
    def precision(self):
        return float(self.precision_curve[metrics.PRECISION_REPORT_INDEX])

    @property
    def norm_precision(self):
        return float(self.norm_precision_curve[metrics.NORM_PRECISION_REPORT_INDEX])

    def as_dict(self):
        return {"success_auc": self.success_auc, "precision": self.precision, "norm_precision": self.norm_precision}

    @classmethod
    def combine(cls, counts, average):
        """Scores of several videos: the mean of per-video curves, or pooled over all frames."""
        if not counts:
            raise ValueError("no videos to combine")
        if average == "video":
            curves = [np.mean([getattr(c, k) / c.frames for c in counts], axis=0) for k in _CURVES]
        elif average == "frame":
            total = sum(c.frames for c in counts)
            curves = [np.sum([getattr(c, k) for c in counts], axis=0) / total for k in _CURVES]
        else:
            raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
        return cls(*curves, frames=sum(c.frames for c in counts), videos=len(counts))


_CURVES = ("success", "precision", "norm_precision")


@dataclass
class Report:
    """A tracker's scores on a dataset: overall, per video and per attribute."""

    tracker: str
    dataset: str
    overall: Scores
    per_video: dict
    per_attribute: dict = field(default_factory=dict)
    fps: float = None

    @property
    def success_auc(self):
        return self.overall.success_auc

    @property
    def precision(self):
        return self.overall.precision

    @property
    def norm_precision(self):
        return self.overall.norm_precision

    def as_dict(self):
        """Plain numbers (no curves), for json: overall, per video and per attribute."""
        return {
            "tracker": self.tracker,
            "dataset": self.dataset,
            **self.overall.as_dict(),
            "fps": self.fps,
            "per_video": {name: scores.as_dict() for name, scores in self.per_video.items()},
            "per_attribute": {name: scores.as_dict() for name, scores in self.per_attribute.items()},
        }


def result_path(results_dir, video):
    """The result file of `video` in `results_dir` (its own name first, then its other names)."""
    candidates = [results_dir / f"{name}.txt" for name in (video.name, *video.result_names)]
    return next((path for path in candidates if path.is_file()), candidates[0])


def load_result(path, video):
    """(n, 4) predicted boxes aligned with the video's frames; frame 1 is the ground truth.

    A file with n - 1 boxes is taken to start at frame 2. Any other length is an
    AnnotationError naming the file.
    """
    boxes = parse_numbers(read_text(path, f"result file of video {video.name}"), path, 4)
    if len(boxes) == len(video):
        boxes[0] = video.boxes[0]
    elif len(boxes) == len(video) - 1:
        boxes = np.concatenate([video.boxes[:1], boxes])
    else:
        raise AnnotationError(
            f"{path}: {len(boxes)} boxes, but video {video.name} has {len(video)} frames "
            f"(expected {len(video)}, or {len(video) - 1} without the first frame)"
        )
    return boxes


def _tracking_time(results_dir, video):
    """Seconds spent on the video from `<video>_time.txt`, or None when not recorded."""
    path = results_dir / f"{video.name}_time.txt"
    if not path.is_file():
        return None
    return float(parse_numbers(read_text(path, "timing file"), path, 1).sum())


def score(dataset, results_dir, tracker=None, average="video"):
    """Score the results in `results_dir` for every video of `dataset`.

    average: "video" (the toolkits' convention: mean of per-video curves) or
    "frame" (every frame of the dataset weighs the same). Returns a Report whose
    `success_auc`, `precision` and `norm_precision` are the overall numbers; the
    same per video in `per_video[name]` and per attribute in `per_attribute`.
    """
    if average not in AVERAGES:
        raise ValueError(f"average must be one of {AVERAGES}, got {average!r}")
    results_dir = zip_folder(results_dir) if is_zip(results_dir) else Path(results_dir)
    if not results_dir.is_dir():
        raise FileNotFoundError(f"results folder not found: {results_dir}")
    paths = {video.name: result_path(results_dir, video) for video in dataset}
    missing = [video.name for video in dataset if not paths[video.name].is_file()]
    if missing:
        raise FileNotFoundError(
            f"{results_dir} has no result for {len(missing)} of {len(dataset)} videos (first: {paths[missing[0]].name})"
        )
    counts = {}
    for video in dataset:
        predicted = load_result(paths[video.name], video)
        counts[video.name] = Counts(*metrics.frame_counts(video.boxes, predicted, video.absent), frames=len(video))
    per_video = {name: Scores.combine([c], "video") for name, c in counts.items()}
    per_attribute = {
        attribute: Scores.combine([counts[v.name] for v in dataset if attribute in v.attributes], average)
        for attribute in dataset.attributes
    }
    return Report(
        tracker=tracker or folder_name(results_dir),
        dataset=dataset.name,
        overall=Scores.combine(list(counts.values()), average),
        per_video=per_video,
        per_attribute=per_attribute,
        fps=_fps(results_dir, dataset),
    )


def _fps(results_dir, dataset):
    """Frames per second over the whole dataset when every video's time was recorded."""
    seconds = [_tracking_time(results_dir, video) for video in dataset]
    if any(s is None for s in seconds) or sum(seconds) <= 0:
        return None
    return dataset.num_frames / sum(seconds)
