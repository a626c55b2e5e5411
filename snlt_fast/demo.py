"""`snlt demo` (README's first command, `make demo`): what the sentence adds, shown and measured.

The default model tracks held-out SyntheticNL distractor scenes (seeds never used in
training) twice, with its sentence and with the sentence left out (the visual head
alone). Under --out (default demo/) it writes an MP4 per video (ground truth, both
trackers' boxes, the per-frame weights w_vis / w_nl), a success plot of both runs (the
paper's Fig. 3 style), w_vis / w_nl over one video (the idea of the paper's Fig. 8), and
prints one table: success AUC, precision at 20 px, and the frames per second of the
tracking step and of the whole loop. Where real data and weights are present (the
OTB sequence Biker and NanoTrack V2 in ../shared, or --real-sequence and --real-weights),
it also tracks that real sequence.

`heldout_comparison` is the default model's acceptance measure: success AUC with and
without the sentence on held-out videos of each kind (make heldout). The same comparison
on VALIDATION_SEEDS, training seeds no training config uses, is the one to tune on
(`python -m snlt_fast.demo validation --weights RUN/final.pth`).
"""

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from snlt_fast._files import atomic_path

SHARED = Path(__file__).resolve().parents[2] / "shared"
MODES = ("with sentence", "visual only")
# BGR colours of the drawn boxes.
_COLOURS = {"ground truth": (255, 255, 255), "with sentence": (60, 220, 60), "visual only": (40, 40, 230)}
_SCALE = 2  # SyntheticNL's 320x240 frames drawn at twice the size
# Seeds in SyntheticNL's training range that the bundled configs do not train on, per scene kind.
VALIDATION_SEEDS = {"distractor": 777, "plain": 778}


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "demo",
        help="track held-out synthetic scenes with the default model, with and without the sentence",
        description=__doc__.split("\n\n")[1],
    )
    parser.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default demo/)")
    parser.add_argument("--videos", type=int, default=4, help="held-out distractor scenes to track (default 4)")
    parser.add_argument("--real-sequence", type=Path, help="an OTB-layout sequence folder (img/, groundtruth_rect.txt)")
    parser.add_argument("--real-weights", type=Path, nargs="+", help="weights for --real-sequence (.pth, or two ONNX files)")
    parser.add_argument("--no-real", action="store_true", help="skip the real sequence")
    parser.set_defaults(run=run)


# --------------------------------------------------------------------------- tracking


def _track(model, video, with_sentence):
    """(boxes [n, 4], w_vis [n], w_nl [n], step seconds [n - 1], loop seconds) for one video."""
    from snlt_fast.tracker import SNLTracker, default_config

    tracker = SNLTracker(model, default_config(model).replace(long_term=False))
    boxes, w_vis, w_nl, steps = [video.init_box], [np.nan], [np.nan], []
    start = time.perf_counter()
    for index, frame in enumerate(video.frames()):
        if index == 0:
            tracker.init(frame, video.init_box, video.sentence if with_sentence else None)
            continue
        step = time.perf_counter()
        result = tracker.track(frame)
        steps.append(time.perf_counter() - step)
        boxes.append(result.box)
        w_vis.append(result.w_vis)
        w_nl.append(result.w_nl)
    return np.array(boxes, dtype=np.float64), np.array(w_vis), np.array(w_nl), np.array(steps), time.perf_counter() - start


def heldout_seeds():
    """The held-out seed of each scene kind: the first of the held-out range, then the next."""
    from snlt_fast.datasets.synthetic import HELD_OUT_SEED_START

    return {"distractor": HELD_OUT_SEED_START, "plain": HELD_OUT_SEED_START + 1}


def heldout_comparison(model, videos=100, frames=80, kinds=("distractor", "plain"), seeds=None):
    """{kind: {mode: success AUC of each of `videos` videos}} with and without the sentence,
    on the seeds of `seeds` ({kind: seed}; default the held-out ones)."""
    from snlt_fast.datasets import SyntheticNL
    from snlt_fast.evaluation.metrics import success_curve

    seeds = seeds or heldout_seeds()
    results = {}
    for kind in kinds:
        dataset = SyntheticNL(videos=videos, frames=frames, seed=seeds[kind], kind=kind)
        results[kind] = {}
        for mode in MODES:
            aucs = [success_curve(v.boxes, _track(model, v, mode == MODES[0])[0], v.absent).mean() for v in dataset]
            results[kind][mode] = np.array(aucs)
    return results


def paired_difference(with_sentence, visual):
    """(mean, standard error) of the per-video differences of two runs over the same videos;
    the error is None for a single video. Both runs see the same scenes, so the pairing
    removes most of the scene-to-scene spread of the AUCs."""
    differences = np.asarray(with_sentence) - np.asarray(visual)
    if len(differences) < 2:
        return float(differences.mean()), None
    return float(differences.mean()), float(differences.std(ddof=1) / np.sqrt(len(differences)))


# --------------------------------------------------------------------------- outputs


def _write_video(path, video, runs, scale=_SCALE):
    height, width = video.frame(0).shape[:2]
    size = (width * scale, height * scale)
    with atomic_path(path) as temporary:
        writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), 20, size)
        try:
            for index, frame in enumerate(video.frames()):
                canvas = cv2.resize(frame, size, interpolation=cv2.INTER_NEAREST)
                boxes = {"ground truth": video.boxes[index], **{mode: run[0][index] for mode, run in runs.items()}}
                for name, box in boxes.items():
                    x, y, w, h = (int(round(v * scale)) for v in box)
                    cv2.rectangle(canvas, (x, y), (x + w, y + h), _COLOURS[name], 2)
                if MODES[0] in runs:
                    w_vis, w_nl = runs[MODES[0]][1][index], runs[MODES[0]][2][index]
                    caption = video.sentence if index == 0 else f"w_vis {w_vis:.2f}  w_nl {w_nl:.2f}"
                    cv2.putText(canvas, caption, (8, size[1] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
                for row, name in enumerate(["ground truth", *runs]):
                    cv2.putText(canvas, name, (8, 18 + 18 * row), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _COLOURS[name], 1, cv2.LINE_AA)
                writer.write(canvas)
        finally:
            writer.release()


def _draw(frame, boxes, scale):
    canvas = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    for name, box in boxes.items():
        x, y, w, h = (int(round(v * scale)) for v in box)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), _COLOURS[name], 2)
    return canvas


def _preview(out, videos, runs):
    """preview.png: three frames of the video where the sentence helps most, both boxes drawn
    (README's picture comes from it)."""
    from snlt_fast.evaluation.metrics import iou

    gaps = [
        iou(v.boxes, with_run[0]).mean() - iou(v.boxes, visual_run[0]).mean()
        for v, with_run, visual_run in zip(videos, runs[MODES[0]], runs[MODES[1]])
    ]
    best = int(np.argmax(gaps))
    video, with_run, visual_run = videos[best], runs[MODES[0]][best], runs[MODES[1]][best]
    worst = int(np.argmin(iou(video.boxes, visual_run[0]) - iou(video.boxes, with_run[0])))
    picks = sorted({len(video) // 4, worst, len(video) - 1})
    panels = [
        _draw(video.frame(i), {"ground truth": video.boxes[i], MODES[0]: with_run[0][i], MODES[1]: visual_run[0][i]}, 1)
        for i in picks
    ]
    strip = np.concatenate([np.pad(p, ((0, 0), (0, 4), (0, 0)), constant_values=255) for p in panels], axis=1)
    with atomic_path(out / "preview.png") as temporary:
        cv2.imwrite(str(temporary), strip)


def _plots(out, curves, weights_run, video):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from snlt_fast.evaluation.metrics import SUCCESS_THRESHOLDS

    figure, axes = pyplot.subplots(figsize=(5.6, 4.2), dpi=100)
    for mode, curve in curves.items():
        axes.plot(SUCCESS_THRESHOLDS, curve, linewidth=2, color=np.array(_COLOURS[mode][::-1]) / 255, label=f"[{curve.mean():.3f}] {mode}")
    axes.set(xlim=(0, 1), ylim=(0, 1), xlabel="Overlap threshold", ylabel="Success rate")
    axes.set_title("Success plots of OPE, held-out distractor scenes")
    axes.grid(True, linestyle=":")
    axes.legend(loc="lower left")
    figure.tight_layout()
    with atomic_path(out / "success_plot.png") as temporary:
        figure.savefig(temporary, format="png")
    pyplot.close(figure)

    figure, axes = pyplot.subplots(figsize=(5.6, 3.2), dpi=100)
    axes.plot(weights_run[1], label="w_vis (visual head)")
    axes.plot(weights_run[2], label="w_nl (language head)")
    axes.set(xlabel="frame", ylabel="weight", ylim=(0, 1), title=f"Modality weights, {video.name}")
    axes.legend(loc="upper right")
    figure.tight_layout()
    with atomic_path(out / "modality_weights.png") as temporary:
        figure.savefig(temporary, format="png")
    pyplot.close(figure)


def _summary_row(name, truths, runs):
    from snlt_fast.evaluation.metrics import precision_curve, success_curve

    auc = np.mean([success_curve(video.boxes, run[0], video.absent).mean() for video, run in zip(truths, runs)])
    precision = np.mean([precision_curve(video.boxes, run[0], video.absent)[20] for video, run in zip(truths, runs)])
    steps = np.concatenate([run[3] for run in runs])
    frames = sum(len(video) for video in truths)
    return f"| {name} | {auc:.3f} | {precision:.3f} | {1 / steps.mean():.0f} | {frames / sum(run[4] for run in runs):.0f} |"


def _real_sequence(args):
    """(sequence folder, weights) for the real run, or None."""
    if args.no_real:
        return None
    if args.real_sequence is not None:
        if args.real_weights is None:
            raise ValueError("--real-sequence needs --real-weights")
        return args.real_sequence, args.real_weights
    sequence, weights = SHARED / "data" / "otb" / "sequences" / "Biker", SHARED / "weights" / "nanotrack" / "nanotrackv2.pth"
    return (sequence, [weights]) if sequence.is_dir() and weights.is_file() else None


def _track_real(out, sequence, weights):
    from snlt_fast.datasets import OTB
    from snlt_fast.models import open_model

    video = OTB(sequence.parent)[sequence.name] if (sequence / "img").is_dir() else None
    if video is None:
        raise ValueError(f"{sequence} is not an OTB-layout sequence (img/ and groundtruth_rect.txt)")
    model = open_model(weights[0] if len(weights) == 1 else weights)
    run = _track(model, video, with_sentence=False)
    _write_video(out / f"{video.name}.mp4", video, {MODES[1]: run}, scale=1)
    return _summary_row(f"{video.name} (real video, {model.arch})", [video], [run])


def run(args):
    from snlt_fast.cli import CommandError
    from snlt_fast.datasets import SyntheticNL
    from snlt_fast.evaluation.metrics import success_curve
    from snlt_fast.models import DEFAULT_DESCRIPTION, load_default

    if args.videos < 1:
        raise CommandError(f"--videos must be at least 1, got {args.videos}")
    if not args.out.parent.is_dir():
        raise CommandError(f"cannot write {args.out}: folder {args.out.parent} does not exist")
    args.out.mkdir(exist_ok=True)
    model = load_default("cpu")
    print(f"snlt demo: {DEFAULT_DESCRIPTION}", file=sys.stderr)
    videos = list(SyntheticNL(videos=args.videos, frames=80, seed=heldout_seeds()["distractor"], kind="distractor"))
    runs = {mode: [] for mode in MODES}
    for video in videos:
        for mode in MODES:
            runs[mode].append(_track(model, video, mode == MODES[0]))
        _write_video(args.out / f"{video.name}.mp4", video, {mode: runs[mode][-1] for mode in MODES})
    curves = {
        mode: np.mean([success_curve(v.boxes, run[0], v.absent) for v, run in zip(videos, runs[mode])], axis=0)
        for mode in MODES
    }
    _plots(args.out, curves, runs[MODES[0]][0], videos[0])
    _preview(args.out, videos, runs)
    rows = [_summary_row(f"held-out distractor scenes, {mode}", videos, runs[mode]) for mode in MODES]
    try:
        real = _real_sequence(args)
        if real is not None:
            rows.append(_track_real(args.out, *real))
    except ValueError as error:
        raise CommandError(str(error)) from None
    print("| run | success AUC | precision @20px | step FPS | loop FPS |\n|---|---:|---:|---:|---:|")
    print("\n".join(rows))
    print(f"snlt demo: videos and plots in {args.out}/")
    return 0


def main(argv=None):
    """`python -m snlt_fast.demo heldout|validation [--videos N] [--weights PATH]`: the comparison table."""
    parser = argparse.ArgumentParser(prog="python -m snlt_fast.demo")
    parser.add_argument("what", choices=("heldout", "validation"), help="held-out seeds, or validation seeds to tune on")
    parser.add_argument("--videos", type=int, default=100, help="videos of each scene kind (default 100)")
    parser.add_argument(
        "--weights", type=Path,
        help="an snlt_fast checkpoint, tracked with SNLT's published values (default: the default model, with its own)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from snlt_fast.models import CheckpointError, load_checkpoint, load_default

    if args.videos < 1:
        parser.error(f"--videos must be at least 1, got {args.videos}")
    if args.weights is not None and not args.weights.is_file():
        parser.error(f"--weights {args.weights}: no such file")
    try:
        model = load_default("cpu") if args.weights is None else load_checkpoint(args.weights).eval()
    except CheckpointError as error:
        parser.error(f"--weights: {error}")
    seeds = VALIDATION_SEEDS if args.what == "validation" else heldout_seeds()
    results = heldout_comparison(model, videos=args.videos, seeds=seeds)
    print("| scenes | with sentence | visual only | difference | its standard error |\n|---|---:|---:|---:|---:|")
    for kind, aucs in results.items():
        with_sentence, visual = aucs[MODES[0]], aucs[MODES[1]]
        difference, error = paired_difference(with_sentence, visual)
        shown = "-" if error is None else f"{100 * error:.1f}"
        print(f"| {kind} | {100 * with_sentence.mean():.1f} | {100 * visual.mean():.1f} | {100 * difference:+.1f} | {shown} |")


if __name__ == "__main__":
    main()
