"""Batch-norm folded into the convolution before it: an inference-time rewrite of the weights.

In eval mode a BatchNorm2d after a convolution is an affine map per output channel,
    y = (conv(x) + b - mean) * gamma / sqrt(var + eps) + beta,
so the pair is one convolution with weight W * s and bias (b - mean) * s + beta, where
s = gamma / sqrt(var + eps). The folded network computes the same function to float
rounding (not bit for bit: the products are rounded in another order), with one
layer fewer per pair.

The pairs are found by position: a BatchNorm2d registered directly after a Conv2d
in the same parent module (as in an nn.Sequential, or a ResNet block's conv1, bn1,
...), with as many channels as the convolution has outputs. The models of this
package are built that way; the tests compare every folded model to its original.
"""

import copy

import torch
from torch import nn


def _fold_pair(conv, norm):
    """conv with `norm` folded in (in float64, rounded once to the weights' dtype)."""
    dtype = conv.weight.dtype
    weight = conv.weight.detach().to(torch.float64)
    bias = conv.bias.detach().to(torch.float64) if conv.bias is not None else torch.zeros(weight.shape[0], dtype=torch.float64)
    mean, var = norm.running_mean.to(torch.float64), norm.running_var.to(torch.float64)
    gamma = norm.weight.detach().to(torch.float64) if norm.affine else torch.ones_like(mean)
    beta = norm.bias.detach().to(torch.float64) if norm.affine else torch.zeros_like(mean)
    scale = gamma / torch.sqrt(var + norm.eps)
    conv.weight = nn.Parameter((weight * scale.reshape(-1, 1, 1, 1)).to(dtype), requires_grad=False)
    conv.bias = nn.Parameter(((bias - mean) * scale + beta).to(dtype).to(conv.weight.device), requires_grad=False)


def fold_batchnorm(module, inplace=False):
    """`module` (a copy, unless inplace) with every Conv2d + BatchNorm2d pair folded into the
    Conv2d and the BatchNorm2d replaced by nn.Identity, so module names and indices stay;
    in eval mode (the folded statistics are the running ones)."""
    if not inplace:
        module = copy.deepcopy(module)
    module.eval()
    for parent in module.modules():
        names = list(parent._modules)
        for before, after in zip(names, names[1:]):
            conv, norm = parent._modules[before], parent._modules[after]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(norm, nn.BatchNorm2d)
                and norm.num_features == conv.out_channels
                and norm.running_mean is not None
            ):
                _fold_pair(conv, norm)
                parent._modules[after] = nn.Identity()
    return module
