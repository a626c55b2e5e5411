"""snlt_fast: fast, exact kernels and tracker for the Siamese Natural Language Tracker."""

from snlt_fast._backends import BACKENDS, available_backends
from snlt_fast.ops.xcorr import xcorr_depthwise, xcorr_depthwise_many

__all__ = ["BACKENDS", "available_backends", "xcorr_depthwise", "xcorr_depthwise_many"]
