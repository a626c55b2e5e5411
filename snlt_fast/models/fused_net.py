"""NanoTrack's search side (backbone and heads, with the language head when the template has
a sentence) as one call of the fused CPU network, snlt_fast._C.fused_net_run (csrc/fused_net/):
the network precision="fast" runs on a CPU.

At tracking shapes NanoTrack's layers are small (a 16x16 map of 96 channels is a few
microseconds of arithmetic), so module calls, the dispatcher and oneDNN's per-call set-up
cost more than the layers themselves. The fused network walks the model's modules once,
here, into a program of channels-last layers with bias and activation fused in (the
squeeze-excite and channel attention included), and runs it in C++ with the point-wise
convolutions as BLAS products. Its sums run in another order than PyTorch's
convolutions: the outputs agree with the model's to float rounding (tests/test_fused_net.py),
and the tracker's boxes are measured against the exact mode and OpenCV's on real data.
"""

import torch
from torch import nn

from snlt_fast._backends import native_module
from snlt_fast.models.nanotrack import DepthwiseBranch, InvertedResidual, NanoTrack, PixelwiseBranch, SqueezeExcite
from snlt_fast.nn.correlation import Correlating

_OPS = ("conv", "pointwise", "depthwise", "excite", "corr_pixelwise", "corr_depthwise", "concat", "exp")
OPS = {name: code for code, name in enumerate(_OPS)}
ACTIVATIONS = {nn.Identity: 0, nn.ReLU: 1, nn.ReLU6: 2, nn.Hardswish: 3, nn.Hardsigmoid: 4, nn.Sigmoid: 5}
# The columns of a program row (csrc/fused_net/fused_net_ops.h).
_COLUMNS = ("op", "src", "dst", "weight", "bias", "size", "stride", "pad", "act", "extra")


class Program:
    """A fused-network program under construction: rows of _COLUMNS, the weights they name
    (float32, in the layouts the kernels read), the per-target correlation kernels they
    name, as (head, branch) pairs, and the rows where independent paths start (the heads'
    cls and loc towers, which the two cores run side by side). Slot 0 is the input."""

    def __init__(self):
        self.rows, self.weights, self.kernels, self.path_starts = [], [], [], []
        self._slots = 1

    def _weight(self, tensor, memory_format=torch.contiguous_format):
        self.weights.append(tensor.detach().to(torch.float32).contiguous(memory_format=memory_format))
        return len(self.weights) - 1

    def emit(self, op, src, dst=None, **fields):
        """Append a row; dst defaults to a new slot. Returns dst."""
        if dst is None:
            dst, self._slots = self._slots, self._slots + 1
        row = dict.fromkeys(_COLUMNS, 0) | {"weight": -1, "bias": -1, "stride": 1, "extra": -1}
        row |= fields | {"op": OPS[op], "src": src, "dst": dst}
        self.rows.append(row)
        return dst

    def flat(self):
        return [row[column] for row in self.rows for column in _COLUMNS]

    # ------------------------------------------------------------------ layers

    def conv(self, conv, src):
        if conv.dilation != (1, 1) or conv.padding_mode != "zeros" or len(set(conv.kernel_size)) != 1:
            raise ValueError(f"the fused network runs square, undilated, zero-padded convolutions, got {conv}")
        if len(set(conv.stride)) != 1 or len(set(conv.padding)) != 1:
            raise ValueError(f"the fused network runs convolutions with one stride and one padding, got {conv}")
        window = {"size": conv.kernel_size[0], "stride": conv.stride[0], "pad": conv.padding[0]}
        bias = self._weight(conv.bias) if conv.bias is not None else -1
        weight = conv.weight
        if conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1:
            return self.emit("depthwise", src, weight=self._weight(weight[:, 0].permute(1, 2, 0)), bias=bias, **window)
        if conv.groups != 1:
            raise ValueError(f"the fused network runs dense or depth-wise convolutions, got groups={conv.groups}")
        if window == {"size": 1, "stride": 1, "pad": 0}:
            return self.emit("pointwise", src, weight=self._weight(weight[:, :, 0, 0].t()), bias=bias)
        if bias == -1:
            bias = self._weight(torch.zeros(conv.out_channels))
        dense = self._weight(weight, memory_format=torch.channels_last)
        return self.emit("conv", src, weight=dense, bias=bias, **window)

    def activate(self, activation, src):
        """Fuse `activation` into the row that wrote src (a layer's act, an excite's post)."""
        row = self.rows[-1] if self.rows else None
        field = "extra" if row is not None and row["op"] == OPS["excite"] else "act"
        fusable = row is not None and row["dst"] == src and row[field] == 0 and row["op"] != OPS["exp"]
        if not fusable or (row["op"] == OPS["pointwise"] and row["extra"] >= 0):
            raise ValueError(f"the fused network cannot fuse {activation} into the layer before it")
        row[field] = ACTIVATIONS[type(activation)]

    def excite(self, src, fc1, fc2, gate):
        """In place on src: x * gate(fc2 relu(fc1 mean(x))), fc1 and fc2 (Linear or 1x1 Conv2d) as
        [inputs, outputs] matrices."""
        first = self._weight(fc1.weight.reshape(fc1.weight.shape[0], -1).t())
        self._weight(fc1.bias)
        self._weight(fc2.weight.reshape(fc2.weight.shape[0], -1).t())
        self._weight(fc2.bias)
        return self.emit("excite", src, dst=src, weight=first, act=ACTIVATIONS[gate], extra=0)

    def sequence(self, layers, src):
        for layer in layers:
            if isinstance(layer, nn.Sequential):
                src = self.sequence(layer, src)
            elif isinstance(layer, nn.Conv2d):
                src = self.conv(layer, src)
            elif type(layer) in ACTIVATIONS and not isinstance(layer, nn.Identity):
                self.activate(layer, src)
            elif isinstance(layer, SqueezeExcite):
                fc1, relu, fc2, gate = layer.fc
                if not (isinstance(relu, nn.ReLU) and isinstance(gate, nn.Hardsigmoid)):
                    raise ValueError(f"the fused network runs squeeze-excite as Linear, ReLU, Linear, Hardsigmoid, got {layer.fc}")
                src = self.excite(src, fc1, fc2, nn.Hardsigmoid)
            elif isinstance(layer, InvertedResidual):
                src = self.block(layer, src)
            elif isinstance(layer, nn.BatchNorm2d):
                raise ValueError("the fused network runs folded models: fold batch-norm first (snlt_fast.nn.fold_batchnorm)")
            elif not isinstance(layer, nn.Identity):
                raise ValueError(f"the fused network has no layer for {type(layer).__name__}")
        return src

    def block(self, block, src):
        out = self.sequence(block.conv, src)
        if block.residual:
            last = self.rows[-1]
            if last["op"] != OPS["pointwise"] or last["dst"] != out:
                raise ValueError("the fused network adds a residual after a point-wise convolution only")
            last["extra"] = src
        return out

    # ------------------------------------------------------------------ NanoTrack's heads

    def kernel(self, head_name, branch_name):
        self.kernels.append((head_name, branch_name))
        return len(self.kernels) - 1

    def branch(self, branch, src, kernel):
        src = self.sequence(branch.conv_search, src) if hasattr(branch, "conv_search") else src
        if isinstance(branch, DepthwiseBranch):
            return self.emit("corr_depthwise", src, weight=kernel, pad=branch.padding)
        if not isinstance(branch, PixelwiseBranch):
            raise ValueError(f"the fused network has no correlation branch {type(branch).__name__}")
        src = self.emit("corr_pixelwise", src, weight=kernel)
        src = self.excite(src, branch.CA_layer.fc1, branch.CA_layer.fc2, nn.Sigmoid)
        return self.sequence(branch.conv, src) if hasattr(branch, "conv") else src

    def head_inputs(self, head, head_name, features):
        """Every correlation branch of a BANHead on the features slot (V1's two paths share
        theirs): the input slot of each of head.paths(), with its layers."""
        correlated, inputs = {}, []
        for branch_names, layers in head.paths():
            for name in branch_names:
                if name not in correlated:
                    correlated[name] = self.branch(getattr(head, name), features, self.kernel(head_name, name))
            src = correlated[branch_names[0]]
            for name in branch_names[1:]:
                src = self.emit("concat", src, extra=correlated[name])
            inputs.append((src, layers))
        return inputs

    def path(self, src, layers, exp=False):
        """A head's path from its input slot, run in parallel with the other paths: rows from
        here to the next path read only their own slots and those written before the first path."""
        self.path_starts.append(len(self.rows))
        out = self.sequence(layers, src)
        return self.emit("exp", out, dst=out) if exp else out

    def heads(self, heads, features):
        """The output slots (cls, loc per head) of the BANHeads [(name, head)] on the features
        slot, as BANHead.forward computes them: the branches first, then each path."""
        inputs = [self.head_inputs(head, name, features) for name, head in heads]
        return [self.path(src, layers, exp=index == 1) for paths in inputs for index, (src, layers) in enumerate(paths)]


def _kernel_layout(kernel, branch):
    """A template kernel [B, C, h, w] as the program reads it: [B, C, h*w] for a pixel-wise
    correlation, [B, h, w, C] for a depth-wise one."""
    if isinstance(branch, DepthwiseBranch):
        return kernel.permute(0, 2, 3, 1).contiguous()
    return kernel.reshape(*kernel.shape[:2], -1).contiguous()


class FusedSearchStep:
    """`model.track` of a batch-norm-folded float32 NanoTrack on the CPU, as the fused network:
    the same checks and outputs ({"cls", "loc"}, and "nl_cls", "nl_loc" with a sentence). Set as the deployment copy's `track`. While the model runs on a
    backend other than the C++ one (`using_backend("reference")`, for checking), calls run
    the model itself."""

    def __init__(self, model):
        if not supports(model):
            raise ValueError("FusedSearchStep runs a NanoTrack model in float32 on the CPU")
        self._model, self._eager = model, model.track
        # Backends are set on every correlating module at once: one tells the model's.
        self._correlating = next(m for m in model.modules() if isinstance(m, Correlating))
        self._programs = {}
        for with_language in (False, True) if model.has_language else (False,):
            program = Program()
            features = program.sequence(model.backbone.features, 0)
            heads = [("ban_head", model.ban_head)] + ([("nl_head", model.nl_head)] if with_language else [])
            outputs = program.heads(heads, features)
            self._programs[with_language] = (program, program.flat(), outputs)
        self._template, self._kernels = None, {}
        self._workspace = torch.empty(0)  # grown by the first call to what the maps take

    def _kernels_of(self, state, with_language):
        """The template's kernels in the program's order and layouts (laid out once per template)."""
        if state is not self._template:
            self._template, self._kernels = state, {}
        if with_language not in self._kernels:
            program = self._programs[with_language][0]
            heads = {"ban_head": state.kernels, "nl_head": state.language_kernels}
            self._kernels[with_language] = [
                _kernel_layout(heads[head][branch], getattr(getattr(self._model, head), branch))
                for head, branch in program.kernels
            ]
        return self._kernels[with_language]

    def __call__(self, x_crop, template=None):
        if self._correlating.backend not in (None, "cpu"):
            return self._eager(x_crop, template)
        state = self._model.search_state(x_crop, template)
        with_language = state.language_kernels is not None
        program, rows, outputs = self._programs[with_language]
        search = x_crop.permute(0, 2, 3, 1).contiguous()
        kernels = self._kernels_of(state, with_language)
        maps = native_module().fused_net_run(
            search, program.weights, rows, kernels, outputs, self._workspace, program.path_starts
        )
        return dict(zip(("cls", "loc", "nl_cls", "nl_loc"), maps))


def supports(model):
    """Whether the fused network runs `model`: a NanoTrack in float32 on the CPU, with the extension built."""
    parameter = next(model.parameters())
    return (
        isinstance(model, NanoTrack)
        and parameter.device.type == "cpu"
        and parameter.dtype == torch.float32
        and native_module() is not None
    )
