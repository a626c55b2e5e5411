"""snlt_fast: fast, exact kernels and tracker for the Siamese Natural Language Tracker."""

from snlt_fast._backends import BACKENDS, available_backends
from snlt_fast.ops.anchor_targets import anchor_targets
from snlt_fast.ops.anchors import generate_anchors, hanning_window
from snlt_fast.ops.postprocess import dynamic_aggregate, track_postprocess
from snlt_fast.ops.postprocess_points import PointTrackResult, track_postprocess_points
from snlt_fast.ops.xcorr import xcorr_depthwise, xcorr_depthwise_many
from snlt_fast.ops.xcorr_pixelwise import xcorr_pixelwise

__all__ = ["BACKENDS", "available_backends", "xcorr_depthwise", "xcorr_depthwise_many", "xcorr_pixelwise"]
__all__ += ["dynamic_aggregate", "track_postprocess", "generate_anchors", "hanning_window", "anchor_targets"]
__all__ += ["track_postprocess_points", "PointTrackResult"]
