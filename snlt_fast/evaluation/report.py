"""Tables and plots of scored trackers, side by side.

The plots follow the OPE figures of the tracking papers (SNLT Fig. 3-5): one
curve per tracker, the legend sorted by the score it shows ("[0.696] SiamRPN++").
"""

from pathlib import Path

from snlt_fast.evaluation import metrics
from snlt_fast._files import atomic_path

PLOTS = {
    # kind: (curve attribute, x thresholds, x label, title, score attribute)
    "success": ("success_curve", metrics.SUCCESS_THRESHOLDS, "Overlap threshold", "Success plots of OPE", "success_auc"),
    "precision": (
        "precision_curve", metrics.PRECISION_THRESHOLDS, "Location error threshold (pixels)",
        "Precision plots of OPE", "precision",
    ),
    "norm_precision": (
        "norm_precision_curve", metrics.NORM_PRECISION_THRESHOLDS, "Normalized location error threshold",
        "Normalized precision plots of OPE", "norm_precision",
    ),
}


def format_table(reports, attributes=False):
    """A text table of trackers (rows, best success AUC first) and their scores.

    With attributes=True, one more block per attribute (success AUC and precision).
    """
    ordered = sorted(reports, key=lambda r: r.success_auc, reverse=True)
    width = max([len("Tracker")] + [len(r.tracker) for r in ordered])
    header = f"{'Tracker':<{width}}  Success AUC  Precision  Norm precision      FPS"
    lines = [header, "-" * len(header)]
    for report in ordered:
        fps = f"{report.fps:8.1f}" if report.fps is not None else f"{'-':>8}"
        lines.append(
            f"{report.tracker:<{width}}  {report.success_auc:11.3f}  {report.precision:9.3f}  "
            f"{report.norm_precision:14.3f}  {fps}"
        )
    if attributes:
        for attribute in sorted({a for r in ordered for a in r.per_attribute}):
            scored = [r for r in ordered if attribute in r.per_attribute]
            videos = scored[0].per_attribute[attribute].videos
            lines += ["", f"{attribute} ({videos} videos)"]
            for report in sorted(scored, key=lambda r: r.per_attribute[attribute].success_auc, reverse=True):
                scores = report.per_attribute[attribute]
                lines.append(f"  {report.tracker:<{width}}  {scores.success_auc:11.3f}  {scores.precision:9.3f}")
    return "\n".join(lines)


def legend_order(reports, kind):
    """(label, report) pairs of one plot, best score first: "[0.696] SiamRPN++"."""
    score_name = PLOTS[kind][4]
    ordered = sorted(reports, key=lambda r: getattr(r, score_name), reverse=True)
    return [(f"[{getattr(r, score_name):.3f}] {r.tracker}", r) for r in ordered]


def plot(reports, kind, path, title_suffix=None):
    """Write one OPE plot (`kind`: success, precision or norm_precision) of the reports to `path` (PNG)."""
    if kind not in PLOTS:
        raise ValueError(f"kind must be one of {', '.join(PLOTS)}, got {kind!r}")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    curve_name, thresholds, xlabel, title, _ = PLOTS[kind]
    figure, axes = pyplot.subplots(figsize=(6.4, 4.8), dpi=100)
    try:
        for label, report in legend_order(reports, kind):
            axes.plot(thresholds, getattr(report.overall, curve_name), linewidth=2, label=label)
        axes.set_xlim(thresholds[0], thresholds[-1])
        axes.set_ylim(0, 1)
        axes.set_xlabel(xlabel)
        axes.set_ylabel("Success rate" if kind == "success" else "Precision")
        axes.set_title(f"{title} on {title_suffix}" if title_suffix else title)
        axes.grid(True, linestyle=":")
        axes.legend(loc="lower left" if kind == "success" else "lower right", fontsize="small")
        figure.tight_layout()
        with atomic_path(path) as temporary:
            figure.savefig(temporary, format="png")
    finally:
        pyplot.close(figure)
    return Path(path)


def plot_all(reports, out_dir, title_suffix=None):
    """Success, precision and normalised-precision plots in `out_dir`; returns their paths."""
    return [plot(reports, kind, Path(out_dir) / f"{kind}_plot.png", title_suffix) for kind in PLOTS]
