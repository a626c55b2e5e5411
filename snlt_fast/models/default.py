"""The default model: a small SNLT this project trained on generated scenes, shipped in the package.

It is an snlt_alex network at a quarter of AlexNet's width with 64-channel heads and the
MiniLM sentence encoder, trained with the bundled config `synthetic-default` on
SyntheticNL's training seeds (how, and its held-out results: default/README.md). It tracks
the generated scenes and shows what the sentence adds; for real video load real weights
(pysot, the published SNLT, NanoTrack).
"""

from pathlib import Path

from snlt_fast.models.checkpoints import load_checkpoint, resolve_device

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "default" / "synthetic-default.pth"
DEFAULT_DESCRIPTION = (
    "the default model (a small SNLT trained on synthetic scenes, snlt_fast/models/default/README.md); "
    "for real video give --weights with pysot, SNLT or NanoTrack weights"
)
# The tracker values this model is tracked with, as pysot ships a tuned tracker config beside
# each model: SNLT's published ones but for these two, chosen on validation seeds only
# (default/README.md). default_config(model) reads them from model.tracker_values.
DEFAULT_TRACKER_VALUES = {"window_influence": 0.3, "lr": 0.2}


def load_default(device=None):
    """The default model, in eval mode on `device` (None: cuda when a GPU is visible), with
    its tracker values (DEFAULT_TRACKER_VALUES) as `tracker_values`."""
    if not DEFAULT_WEIGHTS.is_file():
        raise FileNotFoundError(f"the default model's weights are missing from this install ({DEFAULT_WEIGHTS})")
    model = load_checkpoint(DEFAULT_WEIGHTS).to(resolve_device(device))
    model.tracker_values = dict(DEFAULT_TRACKER_VALUES)
    return model
