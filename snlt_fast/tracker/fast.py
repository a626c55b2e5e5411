"""The tracker's precision modes: "exact" runs the model as given (every op bit for bit as
its reference); "fast" runs a deployment copy of it.

The fast copy has batch-norm folded into the convolutions (snlt_fast.nn.fold_batchnorm),
its weights and crops in channels-last layout, and, where the hardware computes it
quickly, the network in reduced precision under autocast: bfloat16 on CPUs with AMX or
AVX-512 BF16 (checked at run time; elsewhere bfloat16 is emulated and several times
slower, so the network stays float32), float16 on CUDA GPUs. The correlation and
post-processing ops keep their contracts in every dtype, and the box state stays in the
tracker's own precision. NanoTrack models on a CPU run their search side (`model.track`)
as one call of the fused network (snlt_fast.models.fused_net), float32 even on a CPU with
bfloat16 units, whose layers cost less than the module calls around them would. With
compile=True the search side instead is compiled by inductor with the weights frozen into
the graph (constant-folded, prepacked for oneDNN); the compilation runs when the tracker
starts (`init`), not on a tracked frame. What each step gives is measured in bench/
(bench_fast.py).
"""

import contextlib
import time
from typing import NamedTuple, Optional

import torch
import torch._inductor.config

from snlt_fast.models import fused_net
from snlt_fast.nn.fold import fold_batchnorm

PRECISIONS = ("exact", "fast")


class FastPlan(NamedTuple):
    """What "fast" does on this machine: the model it runs, and the autocast dtype (None: float32)."""

    model: torch.nn.Module
    autocast_dtype: Optional[torch.dtype]

    def autocast(self, device):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype)


def cpu_computes_bfloat16():
    """Whether this CPU has bfloat16 units (AMX tiles or AVX-512 BF16); without them oneDNN
    emulates bfloat16, which is slower than float32."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def reduced_precision_for(device, reduced=None):
    """The autocast dtype "fast" uses on `device`: `reduced` if given ("float32" for none),
    else float16 on CUDA, bfloat16 on a CPU that computes it, none otherwise."""
    choices = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if reduced is not None:
        if reduced not in choices:
            raise ValueError(f"reduced must be one of {', '.join(choices)}, got {reduced!r}")
        return choices[reduced]
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_computes_bfloat16() else None


class CompiledSearchStep:
    """`model.track` compiled, for search crops of the model's own size (other sizes, the
    long-term tracker's lost-mode crops, run eagerly: compiling them too would double the
    start-up for frames that may never come). Set as the deployment copy's `track`, whose
    crops are channels-last."""

    def __init__(self, model):
        self._eager = model.track
        self._compiled = torch.compile(self._eager)
        self._size = model.instance_size
        self._device = next(model.parameters()).device
        self._compiled_batches = set()

    def __call__(self, x_crop, template=None):
        if x_crop.shape[-1] != self._size:
            return self._eager(x_crop, template)
        # Freezing is read when a graph is compiled, which a new batch size can cause at any call.
        with torch._inductor.config.patch(freezing=True):
            return self._compiled(x_crop, template)

    def warm_up(self, template, batch):
        """Compile for `batch` search crops, once per batch size: the seconds it took (0 when done before)."""
        if batch in self._compiled_batches:
            return 0.0
        crops = torch.zeros(batch, 3, self._size, self._size, device=self._device)
        crops = crops.contiguous(memory_format=torch.channels_last)
        start = time.perf_counter()
        self(crops, template)
        self._compiled_batches.add(batch)
        return time.perf_counter() - start


def plan_fast(model, reduced=None, compile=False):
    """The deployment copy of `model` (the caller's model is left as it is) and its autocast
    dtype. With compile=True the copy's `track` is a CompiledSearchStep; else, for a
    NanoTrack on the CPU, the fused network (snlt_fast.models.fused_net). A NanoTrack on
    the CPU stays float32 unless `reduced` asks otherwise, bfloat16 units or not: at its
    batch-1 sizes oneDNN's bfloat16 layers on AMX take about 3x the fused network's time
    and gain nothing compiled (bench_fast.py)."""
    device = next(model.parameters()).device
    fast = fold_batchnorm(model).to(memory_format=torch.channels_last)
    fusable = fused_net.supports(fast)
    autocast_dtype = reduced_precision_for(device, "float32" if reduced is None and fusable else reduced)
    if compile:
        fast.track = CompiledSearchStep(fast)
    elif autocast_dtype is None and fusable:
        fast.track = fused_net.FusedSearchStep(fast)
    return FastPlan(fast, autocast_dtype)


def check_precision(precision):
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    return precision
