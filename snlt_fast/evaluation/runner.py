"""Run a tracker over a dataset and write its raw results.

Any object with `init(frame, box, text)` and `track(frame)` is a tracker: frames
are (H, W, 3) uint8 BGR arrays, `box` is the first frame's ground truth
`x, y, w, h` (float64 array), `text` the video's sentence (None when the dataset
has none), and `track` returns the box as 4 numbers, as a dict with "bbox" or
"box", or as an object with a `bbox` or `box` attribute.

Per video the runner writes `<video>.txt` (one `x,y,w,h` line per frame, frame 1
included) and `<video>_time.txt` (seconds per frame), each atomically: a result
file exists only once the video is finished, so an interrupted run resumes at
the first unfinished video. `shard=(i, n)` runs the i-th of n disjoint parts,
balanced by frame count, so that n processes or machines share a benchmark.
"""

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from snlt_fast._files import write_text_atomic
from snlt_fast.evaluation.scoring import result_path


class TrackerOutputError(ValueError):
    """A tracker returned something that is not a box."""


@dataclass
class RunSummary:
    finished: list = field(default_factory=list)  # videos tracked in this run
    resumed: list = field(default_factory=list)  # videos whose results already existed
    frames: int = 0
    tracking_seconds: float = 0.0

    @property
    def fps(self):
        return self.frames / self.tracking_seconds if self.tracking_seconds > 0 else None


def parse_shard(text):
    """(i, n) from "i/n" with 1 <= i <= n; ValueError otherwise."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        raise ValueError(f"shard must look like i/n (e.g. 2/4), got {text!r}") from None
    if not 1 <= index <= count:
        raise ValueError(f"shard i/n needs 1 <= i <= n, got {text!r}")
    return index, count


def shard_videos(videos, index, count):
    """The videos of shard `index` (1-based) of `count`, in their original order.

    Longest video first, each to the shard with the fewest frames so far (ties to
    the lower shard), so that shards finish at about the same time. The split
    depends only on the names and lengths, so every machine computes the same one.
    """
    if not 1 <= index <= count:
        raise ValueError(f"shard index must be in 1..{count}, got {index}")
    load = [0] * count
    owner = {}
    for video in sorted(videos, key=lambda v: (-len(v), v.name)):
        shard = min(range(count), key=lambda s: (load[s], s))
        owner[video.name] = shard
        load[shard] += len(video)
    return [video for video in videos if owner[video.name] == index - 1]


def box_from_output(output, video_name, frame_number):
    """The 4 floats x, y, w, h of a tracker's output; TrackerOutputError naming the frame otherwise."""
    if isinstance(output, dict):
        output = output.get("bbox", output.get("box"))
    else:  # an object or named tuple with the box as an attribute (SNLTracker's TargetResult)
        output = getattr(output, "bbox", getattr(output, "box", output))
    if hasattr(output, "detach"):  # a torch tensor, possibly on a GPU
        output = output.detach().cpu().numpy()
    try:
        box = np.asarray(output, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        box = None
    if box is None or box.shape != (4,) or not np.isfinite(box).all():
        raise TrackerOutputError(
            f"video {video_name}, frame {frame_number}: the tracker returned {output!r}, not 4 finite numbers x, y, w, h"
        )
    return box


def _format_boxes(boxes):
    return "".join(",".join(repr(float(v)) for v in box) + "\n" for box in boxes)


def _is_finished(results_dir, video):
    """Whether a complete result file for the video already exists."""
    path = result_path(results_dir, video)
    if not path.is_file():
        return False
    with open(path) as handle:
        lines = sum(1 for line in handle if line.strip())
    return lines in (len(video), len(video) - 1)


def track_video(tracker, video, on_frame=None):
    """(boxes (n, 4), seconds per frame (n,)) of one video; frame 1's box is the ground truth."""
    boxes = np.empty((len(video), 4))
    seconds = np.empty(len(video))
    for index, frame in enumerate(video.frames()):
        start = time.perf_counter()
        if index == 0:
            tracker.init(frame, video.init_box, video.sentence)
            box = video.init_box
        else:
            output = tracker.track(frame)
            box = box_from_output(output, video.name, index + 1)
        seconds[index] = time.perf_counter() - start
        boxes[index] = box
        if on_frame is not None:
            on_frame(seconds[index])
    return boxes, seconds


def run_tracker(tracker, dataset, results_dir, shard=(1, 1), resume=True, progress=True):
    """Track every video of the shard and write `<results_dir>/<video>.txt`; returns a RunSummary."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    videos = shard_videos(list(dataset), *shard)
    summary = RunSummary()
    pending = []
    for video in videos:
        if resume and _is_finished(results_dir, video):
            summary.resumed.append(video.name)
        else:
            pending.append(video)

    from tqdm import tqdm

    bar = tqdm(total=sum(len(v) for v in pending), unit="frame", disable=not progress, dynamic_ncols=True)

    def on_frame(seconds):
        summary.frames += 1
        summary.tracking_seconds += seconds
        bar.update(1)
        if summary.frames % 25 == 0 and summary.fps is not None:
            bar.set_postfix_str(f"tracker {summary.fps:.1f} fps", refresh=False)

    try:
        for video in pending:
            bar.set_description(f"{video.name} ({len(summary.finished) + 1}/{len(pending)})")
            boxes, seconds = track_video(tracker, video, on_frame)
            # The time file first: the result file is the marker that the video is done.
            write_text_atomic(results_dir / f"{video.name}_time.txt", "".join(f"{s!r}\n" for s in seconds.tolist()))
            write_text_atomic(results_dir / f"{video.name}.txt", _format_boxes(boxes))
            summary.finished.append(video.name)
    finally:
        bar.close()
    return summary

