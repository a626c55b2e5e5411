"""`snlt track`: track targets described by a box and a sentence through a video or a folder of frames."""

import argparse
import contextlib
import json
import math
import sys
import time
from pathlib import Path

from snlt_fast._backends import BACKENDS, resolve_backend
from snlt_fast.cli import CommandError, one_line
from snlt_fast.models.checkpoints import ALL_ARCHS
from snlt_fast.tracker.io import AnnotatedVideo, BadFrame, SourceError, atomic_output, format_box, open_source

RANDOM_WEIGHTS_WARNING = (
    "WARNING: --random-weights: the network is UNTRAINED (random weights with batch-norm statistics fitted to "
    "the first frame). The boxes are meaningless; use this only to measure speed."
)


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "track",
        help="track a target (box + sentence) through a video or a folder of frames",
        description=(
            "Track targets described by a box and a sentence. Boxes are x,y,w,h in pixels, 0-based (the top-left "
            "pixel is 0,0) unless --box-origin 1; OTB and LaSOT files are 1-based. A box may reach outside the "
            "first frame but must overlap it."
        ),
    )
    parser.add_argument("source", help="a video file, or a folder of frames (sorted by name; OTB/LaSOT img/ layout)")
    parser.add_argument("--box", help="the target in the first frame: x,y,w,h (a negative x works: --box -5,30,40,20)")
    parser.add_argument("--text", help='the sentence describing the target, e.g. "white airplane flying in the air"')
    parser.add_argument(
        "--targets", type=Path, help='JSON list of targets [{"box": [x, y, w, h], "text": "..."}, ...] (instead of --box/--text)'
    )
    parser.add_argument(
        "--init-from", type=Path, metavar="FILE",
        help="take the first frame's box from the first line of a ground-truth file (OTB groundtruth_rect.txt, "
        "LaSOT groundtruth.txt; 1-based unless --box-origin 0)",
    )  # fmt: skip
    parser.add_argument(
        "--box-origin", type=int, choices=(0, 1),
        help="1: the given boxes, and the written ones, count pixels from 1 as OTB and LaSOT do "
        "(default 0, or 1 with --init-from)",
    )  # fmt: skip
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights", type=Path, nargs="+", metavar="FILE",
        help="checkpoint: snlt_fast, pysot SiamRPN(++), published SNLT or NanoTrack (.pth); or NanoTrack's two "
        "ONNX files as cv2.TrackerNano loads them (backbone.onnx head.onnx)",
    )  # fmt: skip
    weights.add_argument("--random-weights", action="store_true", help="untrained network, for speed measurement only")
    add_model_arguments(parser)
    parser.add_argument("--language", help="for a published SNLT checkpoint: the local bert-base-uncased directory")
    parser.add_argument("--boxes", type=Path, help="write the boxes here, one x,y,w,h line per frame (per target)")
    parser.add_argument("--out", type=Path, help="write a video with the boxes, scores and modality weights drawn")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--profile", choices=("siamtrackers", "opencv"),
        help="NanoTrack weights: the published NanoTrack tracker (default) or OpenCV's cv2.TrackerNano, box for box",
    )  # fmt: skip
    parser.add_argument("--backend", choices=BACKENDS, help="backend of the correlations and the post-processing")
    parser.add_argument("--cuda-graph", action="store_true", help="on cuda: capture the per-frame step once and replay it")
    parser.add_argument(
        "--long-term", action=argparse.BooleanOptionalAction,
        help="the long-term (LOST) search: on by default for SNLT weights; off for pysot weights and --random-weights",
    )  # fmt: skip
    parser.add_argument(
        "--skip-bad-frames", action="store_true", help="carry on past frames that fail to decode (their box repeats)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def add_model_arguments(parser):
    """--trust-weights, --arch, --precision and --compile, which `snlt eval run` shares."""
    parser.add_argument(
        "--precision", choices=("exact", "fast"), default="exact",
        help="exact (default): every op as its reference; fast: batch-norm folded, channels-last, and bfloat16 "
        "(CPUs with AMX / AVX-512 BF16) or float16 (GPUs), boxes to the tolerance docs/tracker.md states",
    )  # fmt: skip
    parser.add_argument(
        "--compile", action="store_true",
        help="with --precision fast: compile the search step (inductor, frozen weights) before the first frame; "
        "seconds once, faster steps after",
    )  # fmt: skip
    parser.add_argument(
        "--trust-weights", action="store_true",
        help="load a --weights file that pickles objects besides tensors (unpickling can run code: trusted files only)",
    )  # fmt: skip
    parser.add_argument(
        "--arch", choices=ALL_ARCHS, metavar="ARCH",
        help=f"the architecture --random-weights builds, or the one --weights must hold: {', '.join(ALL_ARCHS)} "
        "(default snlt_r50)",
    )  # fmt: skip


def check_model_arguments(args):
    if args.compile and args.precision != "fast":
        raise CommandError("--compile needs --precision fast (the exact mode runs the model as given)")


# --------------------------------------------------------------------------- arguments


def _parse_box(text, where):
    try:
        values = [float(v) for v in text.split(",")]
    except (AttributeError, ValueError):
        raise CommandError(f"{where} must be four numbers x,y,w,h; got {text!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise CommandError(f"{where} must be four finite numbers x,y,w,h; got {text!r}")
    return values


def _read_targets(args):
    """[(box, text or None)] from --targets, --init-from or --box (with --text), boxes as given."""
    given = [flag for flag, value in (("--box", args.box), ("--init-from", args.init_from), ("--targets", args.targets)) if value is not None]
    if len(given) > 1:
        raise CommandError(f"give one of --box, --init-from and --targets, not {' and '.join(given)}")
    if args.targets is not None:
        if args.text is not None:
            raise CommandError("--targets holds each target's sentence: give them there, not with --text")
        try:
            entries = json.loads(args.targets.read_text(encoding="utf-8"))
        except OSError as error:
            raise CommandError(f"cannot read --targets {args.targets}: {error.strerror or error}") from None
        except UnicodeDecodeError:
            raise CommandError(f"--targets {args.targets} is not UTF-8 text (a JSON file is)") from None
        except json.JSONDecodeError as error:
            raise CommandError(f"--targets {args.targets} is not valid JSON: {error}") from None
        if not isinstance(entries, list) or not entries:
            raise CommandError(f"--targets {args.targets} must hold a non-empty JSON list of targets")
        targets = []
        for index, entry in enumerate(entries):
            where = f"--targets entry {index}"
            if not isinstance(entry, dict) or "box" not in entry:
                raise CommandError(f'{where} must be an object with "box" (and optionally "text")')
            box = entry["box"]
            box_text = ",".join(map(str, box)) if isinstance(box, list) else str(box)
            text = entry.get("text")
            if text is not None and (not isinstance(text, str) or not text.strip()):
                raise CommandError(f'{where}: "text" must be a non-empty string')
            targets.append((_parse_box(box_text, f"{where} box"), text))
        if len({text is None for _, text in targets}) > 1:
            raise CommandError("--targets: give a sentence for every target or for none")
        return targets
    if args.text is not None and not args.text.strip():
        raise CommandError("--text is empty")
    if args.init_from is not None:
        return [(_first_ground_truth_box(args.init_from), args.text)]
    if args.box is None:
        raise CommandError(
            "give the target with --box x,y,w,h or --init-from FILE (and --text), or several with --targets FILE"
        )
    return [(_parse_box(args.box, "--box"), args.text)]


def _first_ground_truth_box(path):
    from snlt_fast.datasets import AnnotationError
    from snlt_fast.datasets._text import read_boxes

    try:
        box = read_boxes(path, "--init-from ground truth")[0]
    except (FileNotFoundError, AnnotationError) as error:
        raise CommandError(one_line(error)) from None
    return _parse_box(",".join(map(str, box)), f"--init-from {path}: the first box")


def _box_origin(args):
    """The pixel index of the frame's left and top edges in the user's boxes (0 or 1)."""
    if args.box_origin is not None:
        return args.box_origin
    return 1 if args.init_from is not None else 0


def _shifted(box, offset):
    x, y, w, h = box
    return (x + offset, y + offset, w, h)


def _check_boxes_in_frame(targets, frame, origin):
    """Boxes may reach outside the frame (pysot pads the crops) but must overlap it."""
    height, width = frame.shape[:2]
    for index, (box, _) in enumerate(targets):
        x, y, w, h = _shifted(box, -origin)
        name = "--box" if len(targets) == 1 else f"target {index}"
        if w <= 0 or h <= 0:
            raise CommandError(f"{name} {format_box(box)} has no area (width and height must be positive)")
        if x + w <= 0 or y + h <= 0 or x >= width or y >= height:
            raise CommandError(
                f"{name} {format_box(box)} does not overlap the first frame ({width}x{height}, "
                f"{origin}-based pixels; see --box-origin)"
            )


def _device(name):
    from snlt_fast.models import resolve_device

    try:
        return resolve_device(name)
    except ValueError as error:
        raise CommandError(f"--{error}") from None


def _model(args, device):
    from snlt_fast.models import open_model

    if args.random_weights:
        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
    elif args.weights is None:
        return _default_model(args, device)
    try:
        return open_model(args.weights, arch=args.arch, language=args.language, device=device, trusted=args.trust_weights)
    except ValueError as error:
        raise CommandError(f"--{error}") from None


def _default_model(args, device):
    from snlt_fast.models import DEFAULT_DESCRIPTION, load_default

    if args.arch is not None:
        raise CommandError("--arch goes with --weights or --random-weights (the default model is snlt_alex)")
    print(f"no --weights: tracking with {DEFAULT_DESCRIPTION}", file=sys.stderr)
    try:
        return load_default(device)
    except FileNotFoundError as error:
        raise CommandError(str(error)) from None


# --------------------------------------------------------------------------- the run


class _Outputs:
    """The box files and the annotated video, written under temporary names until the run completes."""

    def __init__(self, args, count, fps, frame_size, stack, origin, weights):
        self.origin = origin
        self.box_files = []
        if args.boxes is not None:
            paths = [args.boxes] if count == 1 else [_numbered(args.boxes, i) for i in range(count)]
            self.box_paths = paths
            self.box_files = [stack.enter_context(atomic_output(path)).open("w") for path in paths]
            for handle in self.box_files:
                stack.callback(handle.close)
        self.video = None
        if args.out is not None:
            self.video = AnnotatedVideo(stack.enter_context(atomic_output(args.out)), fps, frame_size, weights)
            stack.callback(self.video.close)

    def write(self, frame, boxes, results):
        for handle, box in zip(self.box_files, boxes):
            handle.write(format_box(_shifted(box, self.origin)) + "\n")
        if self.video is not None and frame is not None:
            self.video.write(frame, results)


def _numbered(path, index):
    return path.with_name(f"{path.stem}.{index + 1}{path.suffix}")


def run(args):
    from snlt_fast.tracker import NonFiniteOutputError, SNLTracker, TargetResult, calibrate_random_weights, default_config

    targets = _read_targets(args)
    for output in (args.boxes, args.out):
        if output is not None and not output.parent.is_dir():
            raise CommandError(f"cannot write {output}: folder {output.parent} does not exist")
    check_model_arguments(args)
    device = _device(args.device)
    if args.cuda_graph and device.type != "cuda":
        raise CommandError("--cuda-graph needs --device cuda")
    if args.backend is not None:
        try:
            resolve_backend(args.backend, device)
        except ValueError as error:
            raise CommandError(f"--backend {args.backend}: {one_line(error)}") from None
    try:
        source = open_source(args.source)
    except SourceError as error:
        raise CommandError(f"cannot read {args.source}: {error}") from None
    frames = iter(source)
    first = next(frames, None)
    if first is None or isinstance(first, BadFrame):
        raise CommandError(f"cannot read {args.source}: {first or 'the first frame could not be decoded'}")
    origin = _box_origin(args)
    _check_boxes_in_frame(targets, first, origin)
    model = _model(args, device)
    texts = [text for _, text in targets]
    if texts[0] is not None and not model.has_language:
        raise CommandError(f"the {model.arch} model has no language branch (a pysot checkpoint?): track without --text")
    boxes = [_shifted(box, -origin) for box, _ in targets]
    if args.random_weights:
        calibrate_random_weights(model, first, boxes[0], texts[0])
    if args.profile is not None and getattr(model, "head_form", "anchor") != "point":
        raise CommandError(f"--profile is for NanoTrack weights; these hold a {model.arch} model")
    config = default_config(model, args.profile)
    # Untrained networks score too low for the stable search to hold: their long-term
    # mode would fire within a few frames and time the 831-pixel lost search instead.
    long_term = args.long_term if args.long_term is not None else config.long_term and not args.random_weights
    config = config.replace(long_term=long_term)
    try:
        tracker = SNLTracker(
            model, config, backend=args.backend, cuda_graph=args.cuda_graph, precision=args.precision, compile=args.compile
        )
        tracker.init(first, boxes, None if texts[0] is None else texts)
    except ValueError as error:
        raise CommandError(str(error)) from None
    if args.compile:
        print(f"compiled the search step in {tracker.compile_seconds:.1f} s", file=sys.stderr)

    height, width = first.shape[:2]
    with contextlib.ExitStack() as stack:
        try:
            outputs = _Outputs(args, len(targets), source.fps, (width, height), stack, origin, texts[0] is not None)
        except SourceError as error:
            raise CommandError(str(error)) from None
        first_results = [TargetResult(tuple(box), 1.0, 1.0, math.nan, math.nan, False) for box in boxes]
        outputs.write(first, boxes, first_results)
        progress = _progress(args, source.count)
        stack.callback(progress.close)
        progress.update(1)
        step_seconds, skipped, frame_count, lost_frames = 0.0, 0, 1, 0
        loop_start = time.perf_counter()
        for index, frame in enumerate(frames, start=1):
            if isinstance(frame, BadFrame):
                if not args.skip_bad_frames:
                    raise CommandError(f"{frame} (use --skip-bad-frames to carry on past it)")
                skipped += 1
                outputs.write(None, boxes, None)
                progress.update(1)
                continue
            if frame.shape[:2] != (height, width):
                raise CommandError(f"frame {index} is {frame.shape[1]}x{frame.shape[0]}, the first frame {width}x{height}")
            start = time.perf_counter()
            try:
                results = tracker.track(frame)
            except NonFiniteOutputError as error:
                raise CommandError(
                    f"frame {index}, target {error.target}: {error.reason} (an untrained or broken network)"
                ) from None
            step_seconds += time.perf_counter() - start
            frame_count += 1
            lost_frames += any(result.lost for result in results)
            boxes = [result.box for result in results]
            outputs.write(frame, boxes, results)
            progress.update(1)
            progress.set_postfix_str(f"{(frame_count - 1) / step_seconds:.1f} FPS")
        loop_seconds = time.perf_counter() - loop_start
    tracked = frame_count - 1
    summary = (
        f"snlt track: {frame_count + skipped} frames ({skipped} skipped), {len(targets)} target(s); "
        f"tracking step {tracked / step_seconds if step_seconds else math.nan:.1f} FPS, "
        f"whole loop {(tracked + skipped) / loop_seconds if loop_seconds else math.nan:.1f} FPS; "
        + (f"long-term mode on ({lost_frames} frames in lost search)" if long_term else "long-term mode off")
    )
    if args.boxes is not None:
        summary += f"; boxes -> {', '.join(map(str, outputs.box_paths))}"
    if args.out is not None:
        summary += f"; video -> {args.out}"
    print(summary)
    return 0


def _progress(args, total):
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", disable=args.no_progress, file=sys.stderr, dynamic_ncols=True)
