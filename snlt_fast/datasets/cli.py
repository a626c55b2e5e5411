"""`snlt data synth`: write a SyntheticNL dataset in LaSOT's folder layout.

`DIR/<category>/<name>/img/00000001.jpg ...`, `groundtruth.txt` (x,y,w,h a
line), `full_occlusion.txt` and `out_of_view.txt` (one line of 0/1 flags) and
`nlp.txt` (the sentence), so that `snlt_fast.datasets.LaSOT(DIR)` reads it. The
dataset is written into a hidden folder next to DIR and renamed to DIR only when
complete, so a run that fails or is killed leaves no half-written DIR (and the next
run for DIR removes the hidden folder a killed one left).
"""

import glob
import os
import re
import shutil
import tempfile
from pathlib import Path

from snlt_fast.cli import CommandError

JPEG_QUALITY = 95


def add_parser(subparsers):
    parser = subparsers.add_parser("data", help="make datasets")
    commands = parser.add_subparsers(dest="data_command", required=True)
    synth = commands.add_parser(
        "synth",
        help="write synthetic language-tracking videos (SyntheticNL) in LaSOT's folder layout",
        description="Write SyntheticNL videos in LaSOT's folder layout. Train on seeds below 1000000; "
        "seeds from 1000000 up are held out for evaluation.",
    )
    synth.add_argument("--out", type=Path, required=True, help="the dataset folder to create (must not exist, or be empty)")
    synth.add_argument("--videos", default="100", help="number of videos (default 100)")
    synth.add_argument("--frames", default="100", help="frames per video (default 100)")
    synth.add_argument("--seed", default="0", help="seed, 0 or more (default 0); from 1000000 up: held-out seeds")
    synth.add_argument("--kind", default="distractor", help="distractor (look-alikes, default) or plain")
    synth.add_argument("--size", default="320x240", help="frame size WIDTHxHEIGHT in pixels (default 320x240)")
    synth.set_defaults(run=synth_command)


def _integer(text, flag):
    try:
        return int(text)
    except ValueError:
        raise CommandError(f"{flag} must be an integer, got {text!r}") from None


def _size(text):
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if match is None:
        raise CommandError(f"--size must be WIDTHxHEIGHT in pixels, e.g. 320x240; got {text!r}")
    return int(match.group(1)), int(match.group(2))


def synth_command(args):
    from snlt_fast.datasets.synthetic import SyntheticNL

    arguments = {name: _integer(getattr(args, name), f"--{name}") for name in ("videos", "frames", "seed")}
    try:
        dataset = SyntheticNL(**arguments, kind=args.kind, size=_size(args.size))
    except ValueError as error:
        raise CommandError(f"--{error}") from None  # SyntheticNL's messages start with the argument's name
    out = args.out
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise CommandError(f"--out {out} already exists: give a new (or empty) folder")
    if not out.parent.is_dir():
        raise CommandError(f"cannot write --out {out}: folder {out.parent} does not exist")
    try:
        _write_atomically(dataset, out)
    except OSError as error:
        raise CommandError(f"cannot write --out {out}: {error.strerror or error}") from None
    print(f"wrote {len(dataset)} videos, {dataset.num_frames} frames, to {out}")
    return 0


def _write_atomically(dataset, out):
    # SIGKILL skips the clean-up below: the next write of `out` removes what a killed one left,
    # mkdtemp's `.<name>.<8 random characters>.partial` folders.
    for stale in out.parent.glob(f".{glob.escape(out.name)}.{'?' * 8}.partial"):
        shutil.rmtree(stale, ignore_errors=True)
    temporary = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        for video in dataset:
            _write_video(video, temporary)
        if out.is_dir():
            out.rmdir()  # empty, as checked: the rename needs it gone
        os.rename(temporary, out)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary)


def _write_video(video, root):
    import cv2

    # LaSOT's category is the name up to its last "-": "synth-plain-7-0003" lies in "synth-plain-7".
    folder = root / video.name.rsplit("-", 1)[0] / video.name
    (folder / "img").mkdir(parents=True)
    for number, frame in enumerate(video.frames(), start=1):
        path = folder / "img" / f"{number:08d}.jpg"
        if not cv2.imwrite(str(path), frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]):
            raise OSError(f"OpenCV could not write {path}")
    boxes = video.boxes.astype(int)
    (folder / "groundtruth.txt").write_text("".join(",".join(map(str, box)) + "\n" for box in boxes))
    for file_name, flags in (("full_occlusion.txt", video.full_occlusion), ("out_of_view.txt", video.out_of_view)):
        (folder / file_name).write_text(",".join("1" if flag else "0" for flag in flags) + "\n")
    (folder / "nlp.txt").write_text(video.sentence + "\n")
