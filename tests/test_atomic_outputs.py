"""`snlt track` and `snlt eval run` killed with SIGKILL mid-run: no output is left half
written, and the next write of an output removes the temporary the killed run left.

SIGKILL runs no clean-up, so what this checks is the write protocol itself: outputs are
written under a hidden temporary name and renamed once complete, and a later write of
the same output deletes the temporaries a killed run left.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 96, 128


def make_slow_tracker():
    """A tracker (for `--tracker test_atomic_outputs:make_slow_tracker`) that takes 20 ms a frame."""
    return SlowTracker()


class SlowTracker:
    def init(self, frame, box, text):
        self.box = list(box)

    def track(self, frame):
        time.sleep(0.02)
        return self.box


def _write_frames(folder, count):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(count):
        frame = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        frame[30:50, 40:64] = (40, 220, 250)
        cv2.imwrite(str(folder / f"{index + 1:04d}.jpg"), frame)


def _start(*argv):
    environment = dict(os.environ, PYTHONPATH=str(ROOT / "tests"))
    command = [sys.executable, "-m", "snlt_fast", *map(str, argv)]
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill_when(process, ready, timeout=120):
    """SIGKILL `process` once `ready()` holds, asserting it was still running then."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, process.communicate()[1].decode()
        assert time.monotonic() < deadline, "the run never reached the point to kill it at"
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def _temporaries(folder):
    return sorted(path.name for path in folder.iterdir() if ".partial" in path.name)


def test_snlt_track_killed_mid_run_leaves_no_partial_output(tmp_path):
    _write_frames(tmp_path / "long" / "img", 200)
    _write_frames(tmp_path / "short" / "img", 3)
    boxes, video = tmp_path / "boxes.txt", tmp_path / "out.mp4"
    options = ["--box", "40,30,24,20", "--random-weights", "--arch", "siamrpn_alex", "--boxes", boxes, "--out", video]
    process = _start("track", tmp_path / "long", *options, "--no-progress")
    # The temporaries exist once the first frame is written: let a few more frames go by.
    _kill_when(process, lambda: len(_temporaries(tmp_path)) == 2 and time.sleep(1.0) is None)
    assert not boxes.exists() and not video.exists()

    process = _start("track", tmp_path / "short", *options, "--no-progress")
    assert process.wait(timeout=120) == 0, process.communicate()[1].decode()
    assert len(boxes.read_text().splitlines()) == 3
    assert _temporaries(tmp_path) == []  # the killed run's temporaries went with the next write


def test_snlt_eval_run_killed_mid_run_leaves_complete_result_files_only(tmp_path):
    lengths = {"Alpha": 30, "Beta": 30, "Gamma": 30}
    root = tmp_path / "otb"
    for name, length in lengths.items():
        _write_frames(root / name / "img", length)
        (root / name / "groundtruth_rect.txt").write_text("41,31,24,20\n" * length)
    results = tmp_path / "results"
    argv = ["eval", "run", "--dataset", "otb", "--root", root, "--tracker", "test_atomic_outputs:make_slow_tracker",
            "--results", results, "--no-progress"]  # fmt: skip
    process = _start(*argv)
    _kill_when(process, lambda: (results / "Alpha.txt").exists())
    finished = sorted(path.name for path in results.iterdir())
    assert "Alpha.txt" in finished and "Gamma.txt" not in finished and _temporaries(results) == []
    for name in finished:
        assert len((results / name).read_text().splitlines()) == 30, name
