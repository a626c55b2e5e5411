"""What every Triton op needs around its launches."""

import contextlib

import numpy as np
import torch

from snlt_fast import _backends


def launch_context(device):
    """Launch on the tensors' CUDA device (Triton uses the current one). Under the
    interpreter, which evaluates with numpy, silence numpy's warnings where the ops'
    contracts overflow to inf or carry NaN on purpose."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return np.errstate(all="ignore") if _backends.triton_interpreted() else contextlib.nullcontext()


def interpreted_off_cpu(device):
    """The interpreter dereferences pointers on the host: it can only read CPU tensors,
    so an interpreted call on other tensors runs on CPU copies."""
    return _backends.triton_interpreted() and device.type != "cpu"
