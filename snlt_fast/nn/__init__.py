"""torch.nn modules on the fast ops: pysot's depth-wise RPN and the SNL-RPN with its language branch."""

from snlt_fast.nn.correlation import BACKEND_CHOICES, CONV2D, correlate, set_backend, using_backend
from snlt_fast.nn.fold import fold_batchnorm
from snlt_fast.nn.rpn import DepthwiseXCorr, MultiSNLRPN, SNLRPN, TemplateKernels

__all__ = [
    "BACKEND_CHOICES",
    "CONV2D",
    "DepthwiseXCorr",
    "MultiSNLRPN",
    "SNLRPN",
    "TemplateKernels",
    "correlate",
    "fold_batchnorm",
    "set_backend",
    "using_backend",
]
