"""`snlt eval run` (run a tracker over a benchmark) and `snlt eval score` (tables and plots)."""

import json
import sys
from pathlib import Path

from snlt_fast.datasets import DATASET_NAMES, AnnotationError, open_dataset
from snlt_fast._files import write_text_atomic
from snlt_fast.tracker.cli import add_model_arguments, check_model_arguments

# Errors that mean the user's files or arguments are wrong, reported as one line.
USER_ERRORS = (FileNotFoundError, NotADirectoryError, AnnotationError, KeyError, ValueError)


def add_parser(subparsers):
    parser = subparsers.add_parser("eval", help="run trackers on benchmarks and score their results")
    commands = parser.add_subparsers(dest="eval_command", required=True)

    run = commands.add_parser("run", help="run a tracker over every video of a dataset")
    _dataset_arguments(run)
    run.add_argument("--tracker", required=True, help="snlt, or module:function returning a tracker")
    weights = run.add_mutually_exclusive_group()
    weights.add_argument(
        "--weights", type=Path, nargs="+", metavar="FILE",
        help="weights file for the tracker (NanoTrack's ONNX export: its two files, backbone.onnx head.onnx)",
    )  # fmt: skip
    weights.add_argument("--random-weights", action="store_true", help="snlt with random weights (smoke runs, timing)")
    add_model_arguments(run)
    run.add_argument("--device", help="device for the tracker (e.g. cuda, cpu)")
    run.add_argument("--results", type=Path, help="output folder (default results/<dataset>/<tracker>)")
    run.add_argument("--shard", default="1/1", help="run part i of n (e.g. 2/4) to share a benchmark between processes")
    run.add_argument("--restart", action="store_true", help="track every video again instead of resuming")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.set_defaults(run=run_command)

    score = commands.add_parser("score", help="score raw results of one or more trackers")
    _dataset_arguments(score)
    score.add_argument("--results", type=Path, nargs="+", required=True, help="results folders (or zip archives of one), one per tracker")
    score.add_argument("--plots", type=Path, help="folder for the PNG plots (default: the parent of the first results folder)")
    score.add_argument("--no-plots", action="store_true", help="print the table only")
    score.add_argument("--attributes", action="store_true", help="also print the per-attribute breakdown")
    score.add_argument("--json", type=Path, help="also write every score (overall, per video, per attribute) to this file")
    score.add_argument(
        "--average", choices=("video", "frame"), default="video",
        help="mean of per-video scores (toolkit convention, default) or pooled over all frames",
    )
    score.set_defaults(run=score_command)


def _dataset_arguments(parser):
    parser.add_argument("--dataset", required=True, choices=DATASET_NAMES)
    parser.add_argument("--root", required=True, type=Path, help="dataset folder (otb: folder, OTB100.json or OTB100.json.zip)")
    parser.add_argument("--split", help="otb99lang: test (default) or train; lasot: test, nl-consistent or a name list")
    parser.add_argument("--names", type=Path, help="file with the names of the videos to use, one a line")


def _open(args):
    from snlt_fast.cli import CommandError, one_line

    try:
        return open_dataset(args.dataset, args.root, args.split, args.names)
    except USER_ERRORS as error:
        raise CommandError(one_line(error)) from None


def run_command(args):
    from snlt_fast.cli import CommandError, one_line
    from snlt_fast.evaluation.runner import TrackerOutputError, parse_shard, run_tracker
    from snlt_fast.evaluation.trackers import make_tracker, tracker_label

    check_model_arguments(args)
    try:
        shard = parse_shard(args.shard)
    except ValueError as error:
        raise CommandError(one_line(error)) from None
    dataset = _open(args)
    results = args.results or Path("results") / args.dataset / tracker_label(args.tracker)
    weights = args.weights[0] if args.weights and len(args.weights) == 1 else args.weights
    try:
        tracker = make_tracker(
            args.tracker, weights, args.random_weights, args.device, args.arch, trusted=args.trust_weights,
            precision=args.precision, compile=args.compile,
        )  # fmt: skip
    except ValueError as error:
        raise CommandError(one_line(error)) from None
    if args.random_weights:
        from snlt_fast.tracker.cli import RANDOM_WEIGHTS_WARNING

        print(RANDOM_WEIGHTS_WARNING, file=sys.stderr)
    try:
        summary = run_tracker(tracker, dataset, results, shard, resume=not args.restart, progress=not args.no_progress)
    except (TrackerOutputError, FileNotFoundError) as error:
        raise CommandError(one_line(error)) from None
    fps = f", {summary.fps:.3g} fps" if summary.fps is not None else ""
    print(
        f"{dataset.name} shard {shard[0]}/{shard[1]}: tracked {len(summary.finished)} videos ({summary.frames} frames{fps}), "
        f"{len(summary.resumed)} already done; results in {results}"
    )
    return 0


def score_command(args):
    from snlt_fast.cli import CommandError, one_line
    from snlt_fast.evaluation.report import format_table, plot_all
    from snlt_fast.evaluation.scoring import score

    dataset = _open(args)
    trackers = [path.name for path in args.results]
    if len(set(trackers)) != len(trackers):
        raise CommandError("two results folders have the same name; each folder's name labels its tracker")
    try:
        reports = [score(dataset, path, average=args.average) for path in args.results]
    except USER_ERRORS as error:
        raise CommandError(one_line(error)) from None
    print(f"{dataset.name}: {len(dataset)} videos, {dataset.num_frames} frames (OPE, {args.average} average)")
    print(format_table(reports, attributes=args.attributes))
    if args.json is not None:
        write_text_atomic(args.json, json.dumps([report.as_dict() for report in reports], indent=1) + "\n")
    if not args.no_plots:
        out_dir = args.plots or args.results[0].resolve().parent
        paths = plot_all(reports, out_dir, dataset.name)
        print("plots: " + ", ".join(str(p) for p in paths), file=sys.stderr)
    return 0
