"""Which backends this install has, and which one a call uses.

Backends:
  "reference"  pure PyTorch, the specification of every op; always present.
  "cpu"        C++ kernels in snlt_fast._C, for CPU tensors.
  "cuda"       CUDA kernels in snlt_fast._C, for CUDA tensors.
  "triton"     Triton kernels in snlt_fast.kernels; CUDA tensors, or CPU tensors
               through the Triton interpreter (TRITON_INTERPRET=1).
"""

import importlib
import importlib.util
import os

import torch

BACKENDS = ("reference", "cpu", "cuda", "triton")
# Fastest first: what backend=None picks for tensors on each device type.
_PREFERENCE = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}


def _load_extension():
    """(the module, None, has_cuda) when snlt_fast._C loads, else (None, why it does not, False)."""
    try:
        module = importlib.import_module("snlt_fast._C")
    except ImportError as error:
        return None, f"the compiled extension snlt_fast._C did not load ({error}); build it with `make build`", False
    try:
        has_cuda = torch._C._dispatch_has_kernel_for_dispatch_key("snlt_fast_C::xcorr_forward_many", "CUDA")
        # The newest op: an older build lacks it (and raises here).
        torch._C._dispatch_has_kernel_for_dispatch_key("snlt_fast_C::xcorr_pixelwise_forward", "CPU")
    except RuntimeError:  # an op is not registered
        has_cuda = None
    if has_cuda is None or not all(hasattr(module, name) for name in ("postprocess_track", "postprocess_track_points", "fused_net_run")):
        return None, "snlt_fast._C is out of date (it lacks ops of this version); rebuild it with `make build`", False
    return module, None, has_cuda


# Probed once at import, so that backend resolution is plain Python over constants
# and torch.compile traces it without a graph break.
_EXTENSION, _EXTENSION_ERROR, _EXTENSION_HAS_CUDA = _load_extension()
_TRITON_ERROR = None if importlib.util.find_spec("triton") else "triton is not installed"
# Read as Triton reads it (1, true, on, yes or y, any case), without importing triton.
_TRITON_INTERPRETED = os.environ.get("TRITON_INTERPRET", "").lower() in ("1", "true", "on", "yes", "y")


def triton_interpreted():
    return _TRITON_INTERPRETED


def _unavailable_reason(backend, device_type):
    """None when `backend` can run on tensors of `device_type`, else why not."""
    if backend == "reference":
        return None
    if backend == "cpu":
        if device_type != "cpu":
            return f"backend 'cpu' runs on CPU tensors, got {device_type} tensors"
        return _EXTENSION_ERROR
    if backend == "cuda":
        if device_type != "cuda":
            return f"backend 'cuda' runs on CUDA tensors, got {device_type} tensors"
        if _EXTENSION_ERROR is not None:
            return _EXTENSION_ERROR
        if not _EXTENSION_HAS_CUDA:
            return "snlt_fast._C was built without CUDA kernels (no nvcc or a CPU-only torch at build time)"
        return None
    if backend == "triton":
        if _TRITON_ERROR is not None:
            return _TRITON_ERROR
        if device_type == "cpu" and not triton_interpreted():
            return "backend 'triton' runs on CPU tensors only through the Triton interpreter (set TRITON_INTERPRET=1 before importing triton)"
        if device_type not in ("cpu", "cuda"):
            return f"backend 'triton' runs on CUDA tensors, got {device_type} tensors"
        return None
    return f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}"


def available_backends(device=None):
    """The backends this install can run, for `device` (default: CPU, and CUDA when a GPU is visible)."""
    if device is None:
        device_types = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    else:
        device_types = [torch.device(device).type]
    return [b for b in BACKENDS if any(_unavailable_reason(b, d) is None for d in device_types)]


def _fastest_backend(device_type):
    return next(b for b in _PREFERENCE.get(device_type, ("reference",)) if _unavailable_reason(b, device_type) is None)


# What backend=None resolves to, per device type: fixed at import, and looked up on every call.
_FASTEST = {device_type: _fastest_backend(device_type) for device_type in _PREFERENCE}


def resolve_backend(backend, device):
    """The backend name a call on tensors on `device` uses; a clear ValueError when it cannot run."""
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    if backend is None:
        return _FASTEST.get(device_type) or _fastest_backend(device_type)
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string or None, got {type(backend).__name__}")
    reason = _unavailable_reason(backend, device_type)
    if reason is not None:
        raise ValueError(f"backend={backend!r} is not available: {reason}")
    return backend


def native_ops():
    """torch.ops.snlt_fast_C, the C++/CUDA kernels (callers resolve the backend first)."""
    return torch.ops.snlt_fast_C


def native_module():
    """snlt_fast._C, whose functions run some native ops without the dispatcher (eager calls only)."""
    return _EXTENSION


def calls_native_directly(backend, differentiable=()):
    """Whether an eager call of the C++/CUDA backends may go straight to the native op
    that a custom op wraps: the custom op's Python layer costs ~10 us a call, as much as
    a whole kernel at tracking shapes. Not under torch.compile (which needs the custom
    op and its fake kernel), nor under a dispatch mode (fake tensors, for one, have no
    data), nor when autograd must record the call (a tensor in `differentiable`
    requires grad while grad mode is on)."""
    if backend not in ("cpu", "cuda") or torch.compiler.is_compiling() or torch._C._len_torch_dispatch_stack():
        return False
    return not (differentiable and torch.is_grad_enabled() and any(tensor.requires_grad for tensor in differentiable))


def triton_kernels(name):
    """The Triton module snlt_fast.kernels.<name>."""
    return importlib.import_module(f"snlt_fast.kernels.{name}")
