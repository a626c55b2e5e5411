"""Tracker parameters: the published SNLT values, pysot's for pysot checkpoints, and
NanoTrack's two trackers (the published one and OpenCV's cv2.TrackerNano)."""

import dataclasses
import math

# pysot's tuned test-time values for its released checkpoints (experiments/*/config.yaml).
_PYSOT_VALUES = {
    "alexnet": dict(penalty_k=0.16, window_influence=0.40, lr=0.30),
    "resnet50": dict(penalty_k=0.05, window_influence=0.42, lr=0.38),
}
# The published NanoTrack tracker's values per version (models/config/configv*.yaml), and
# the constants OpenCV's cv2.TrackerNano hard-codes for every version.
_NANOTRACK_VALUES = {
    1: dict(window_influence=0.462, penalty_k=0.148, lr=0.390),
    2: dict(window_influence=0.490, penalty_k=0.150, lr=0.385),
    3: dict(window_influence=0.455, penalty_k=0.138, lr=0.348),
}
_OPENCV_NANO_VALUES = dict(window_influence=0.455, penalty_k=0.055, lr=0.37)
# "pysot": the crops and state of pysot's SiamRPN++ (anchor-form models); the NanoTrack
# profiles are described in snlt_fast.tracker.point.
PROFILES = ("pysot", "siamtrackers", "opencv")


@dataclasses.dataclass(frozen=True)
class TrackerConfig:
    """Everything the tracker does besides running the network; defaults are the published SNLT values.

    The crop sizes and the score-map size come from the model; `lost_instance_size`
    is the wider search of long-term mode, whose score size follows from the model.
    """

    context_amount: float = 0.5
    penalty_k: float = 0.04
    window_influence: float = 0.44
    lr: float = 0.4
    alpha: float = 1 / 300
    anchor_stride: int = 8
    anchor_ratios: tuple = (0.33, 0.5, 1, 2, 3)
    anchor_scales: tuple = (4, 8, 16)
    # "snlt": lr = pscore[best] * lr; "pysot": lr = penalty[best] * score[best] * lr.
    lr_mode: str = "snlt"
    min_size: float = 10.0
    # Long-term (LOST) mode: entered when the mean best pscore of the last
    # `history` frames drops below `confidence_low`, left once it rises above
    # `confidence_high`. (The published configuration file sets 0.0 / 1.0, which
    # never fires; these are pysot's long-term defaults, which SNLT's lost-mode
    # search parameters come from.)
    long_term: bool = True
    history: int = 5
    confidence_low: float = 0.85
    confidence_high: float = 0.998
    lost_instance_size: int = 831
    lost_window_influence: float = 0.01
    lost_lr: float = 0.8
    profile: str = "pysot"

    def __post_init__(self):
        for name in ("context_amount", "penalty_k", "window_influence", "lr", "alpha", "lost_window_influence", "lost_lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("window_influence", "lost_window_influence"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {', '.join(PROFILES)}, got {self.profile!r}")
        if self.lr_mode not in ("snlt", "pysot"):
            raise ValueError(f"lr_mode must be 'snlt' or 'pysot', got {self.lr_mode!r}")
        if not self.anchor_ratios or not self.anchor_scales:
            raise ValueError("anchor_ratios and anchor_scales must not be empty")
        if self.history < 1:
            raise ValueError(f"history must be >= 1, got {self.history!r}")
        if self.confidence_high < self.confidence_low:
            raise ValueError(
                f"confidence_high ({self.confidence_high}) must not be below confidence_low ({self.confidence_low})"
            )

    @property
    def anchor_num(self):
        return len(self.anchor_ratios) * len(self.anchor_scales)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    @classmethod
    def snlt(cls, **changes):
        """The published SNLT tracker."""
        return cls(**changes)

    @classmethod
    def pysot(cls, backbone, **changes):
        """pysot's SiamRPN++ (backbone "resnet50") or SiamRPN ("alexnet") tracker: 5 anchors, no long-term mode."""
        if backbone not in _PYSOT_VALUES:
            raise ValueError(f"backbone must be one of {sorted(_PYSOT_VALUES)}, got {backbone!r}")
        values = dict(_PYSOT_VALUES[backbone], anchor_scales=(8,), lr_mode="pysot", long_term=False)
        values.update(changes)
        return cls(**values)

    @classmethod
    def nanotrack(cls, version, profile="siamtrackers", **changes):
        """NanoTrack V1-V3's tracker: the published one (profile "siamtrackers", its values for
        `version`) or OpenCV 5.1's cv2.TrackerNano (profile "opencv"); no long-term mode."""
        if version not in _NANOTRACK_VALUES:
            raise ValueError(f"version must be 1, 2 or 3, got {version!r}")
        if profile not in PROFILES[1:]:
            raise ValueError(f"profile must be 'siamtrackers' or 'opencv', got {profile!r}")
        values = _OPENCV_NANO_VALUES if profile == "opencv" else _NANOTRACK_VALUES[version]
        values = dict(values, lr_mode="pysot", long_term=False, profile=profile)
        values.update(changes)
        return cls(**values)
