"""The SNLT network and its parts: backbones, neck, model, checkpoints."""

from snlt_fast.models.backbones import AlexNetLegacy, ResNet50Atrous
from snlt_fast.models.checkpoints import CheckpointError, load_checkpoint, open_model, resolve_device, save_checkpoint
from snlt_fast.models.neck import AdjustAllLayer, AdjustLayer
from snlt_fast.models.snlt import ARCHS, SNLT, build_model

__all__ = [
    "ARCHS",
    "AdjustAllLayer",
    "AdjustLayer",
    "AlexNetLegacy",
    "CheckpointError",
    "ResNet50Atrous",
    "SNLT",
    "build_model",
    "load_checkpoint",
    "open_model",
    "resolve_device",
    "save_checkpoint",
]
