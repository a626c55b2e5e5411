"""Which depth-wise correlation the modules of snlt_fast.nn run, and the one call they make.

A module's `backend` is None (the fastest backend for its tensors' device), one of
snlt_fast's backends ("reference", "cpu", "cuda", "triton"), or "conv2d": pysot's
grouped F.conv2d formulation, the baseline users have today (close to, but not bit
for bit equal to, the other backends).
"""

import contextlib

from snlt_fast._backends import BACKENDS
from snlt_fast.ops.xcorr import xcorr_depthwise_conv2d, xcorr_depthwise_many

CONV2D = "conv2d"
BACKEND_CHOICES = (None, *BACKENDS, CONV2D)


class Correlating:
    """Mixin for modules that correlate: `backend` selects the implementation (see module docstring)."""

    backend = None


def check_backend(backend):
    if backend not in BACKEND_CHOICES:
        choices = ", ".join(repr(choice) for choice in BACKEND_CHOICES)
        raise ValueError(f"backend must be one of {choices}; got {backend!r}")
    return backend


def correlate(searches, kernels, backend=None):
    """Depth-wise cross-correlation of every (searches[n], kernels[n]) pair, in one call on fast backends."""
    if backend == CONV2D:
        return [xcorr_depthwise_conv2d(search, kernel) for search, kernel in zip(searches, kernels)]
    return xcorr_depthwise_many(searches, kernels, backend=backend)


def set_backend(module, backend):
    """Make every correlating module inside `module` (itself included) use `backend`."""
    check_backend(backend)
    for submodule in module.modules():
        if isinstance(submodule, Correlating):
            submodule.backend = backend
    return module


@contextlib.contextmanager
def using_backend(module, backend):
    """Within the block, every correlating module inside `module` uses `backend`; restored on exit."""
    check_backend(backend)
    saved = [(m, m.backend) for m in module.modules() if isinstance(m, Correlating)]
    try:
        for submodule, _ in saved:
            submodule.backend = backend
        yield module
    finally:
        for submodule, previous in saved:
            submodule.backend = previous
