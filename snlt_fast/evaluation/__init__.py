"""One-pass evaluation (OPE): metrics, scoring of raw results, tables, plots and the tracker runner.

    from snlt_fast.datasets import OTB
    from snlt_fast.evaluation import score
    report = score(OTB("OTB100.json"), "results/SiamRPN++")
    report.success_auc, report.precision, report.norm_precision, report.per_video["Biker"]
"""

from snlt_fast.evaluation.metrics import (
    NORM_PRECISION_THRESHOLDS,
    PRECISION_THRESHOLDS,
    SUCCESS_THRESHOLDS,
    center_error,
    iou,
    norm_precision_curve,
    normalized_center_error,
    precision_curve,
    success_curve,
)
from snlt_fast.evaluation.report import format_table, plot, plot_all
from snlt_fast.evaluation.runner import run_tracker
from snlt_fast.evaluation.scoring import Report, Scores, load_result, score

__all__ = [
    "NORM_PRECISION_THRESHOLDS",
    "PRECISION_THRESHOLDS",
    "SUCCESS_THRESHOLDS",
    "Report",
    "Scores",
    "center_error",
    "format_table",
    "iou",
    "load_result",
    "norm_precision_curve",
    "normalized_center_error",
    "plot",
    "plot_all",
    "precision_curve",
    "run_tracker",
    "score",
    "success_curve",
]
