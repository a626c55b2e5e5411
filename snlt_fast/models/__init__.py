"""The networks (SNLT on AlexNet / ResNet-50, NanoTrack V1-V3) and their parts, and checkpoints."""

from snlt_fast.models.backbones import AlexNetLegacy, ResNet50Atrous
from snlt_fast.models.checkpoints import CheckpointError, load_checkpoint, open_model, resolve_device, save_checkpoint
from snlt_fast.models.default import DEFAULT_DESCRIPTION, load_default
from snlt_fast.models.nanotrack import NanoTrack, build_nanotrack
from snlt_fast.models.neck import AdjustAllLayer, AdjustLayer
from snlt_fast.models.onnx_weights import load_onnx_pair
from snlt_fast.models.snlt import ARCHS, SNLT, build_model

__all__ = [
    "ARCHS",
    "AdjustAllLayer",
    "AdjustLayer",
    "AlexNetLegacy",
    "CheckpointError",
    "DEFAULT_DESCRIPTION",
    "NanoTrack",
    "ResNet50Atrous",
    "SNLT",
    "build_model",
    "build_nanotrack",
    "load_checkpoint",
    "load_default",
    "load_onnx_pair",
    "open_model",
    "resolve_device",
    "save_checkpoint",
]
