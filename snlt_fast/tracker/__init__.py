"""The SNLT tracker: per-frame step on the model's device, batched targets, long-term mode."""

from snlt_fast.tracker.config import TrackerConfig
from snlt_fast.tracker.random_weights import calibrate_random_weights
from snlt_fast.tracker.tracker import NonFiniteOutputError, SNLTracker, TargetResult, default_config

__all__ = ["NonFiniteOutputError", "SNLTracker", "TargetResult", "TrackerConfig", "calibrate_random_weights", "default_config"]
