"""NanoTrack weights from the ONNX pair OpenCV's cv2.TrackerNano loads (backbone.onnx, head.onnx).

The exports have batch-norm folded into the convolutions and mostly numbered weight
names, so they are matched by position: the convolution and linear layers holding
weights, in graph order, against the layers of our batch-norm-folded network in
registration order (which follows the published forward pass); every layer's weight
shape, stride, padding and groups must agree. The version is the one whose layers fit.
Only the weights are read: the graph itself is never run.
"""

from pathlib import Path

import torch
from torch import nn

from snlt_fast.models.nanotrack import VERSIONS, NanoTrack
from snlt_fast.nn.fold import fold_batchnorm


class OnnxWeightsError(ValueError):
    """An ONNX file that does not hold a NanoTrack backbone or head."""


def _read_model(path, role):
    try:
        import onnx
    except ImportError:
        raise OnnxWeightsError("reading ONNX weights needs the onnx package: pip install onnx") from None
    path = Path(path)
    if not path.is_file():
        raise OnnxWeightsError(f"{role} {str(path)!r} does not exist")
    try:
        return onnx.load(str(path))
    except Exception as error:  # onnx raises protobuf's DecodeError and others on a bad file
        raise OnnxWeightsError(f"{role} {str(path)!r} is not a readable ONNX model ({type(error).__name__})") from None


def _weighted_nodes(model):
    """[(op, attributes, weight, bias or None)] for the Conv and Gemm nodes whose weights are initializers."""
    from onnx import helper, numpy_helper

    initializers = {item.name: item for item in model.graph.initializer}
    nodes = []
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        attributes = {item.name: helper.get_attribute_value(item) for item in node.attribute}
        weight = torch.from_numpy(numpy_helper.to_array(initializers[node.input[1]]).copy())
        bias = None
        if len(node.input) > 2 and node.input[2]:
            bias = torch.from_numpy(numpy_helper.to_array(initializers[node.input[2]]).copy())
        nodes.append((node.op_type, attributes, weight, bias))
    return nodes


def _layers(module):
    return [(name, layer) for name, layer in module.named_modules() if isinstance(layer, (nn.Conv2d, nn.Linear))]


def _mismatch(nodes, layers):
    """None when every ONNX node fits the layer at its position, else what does not."""
    if len(nodes) != len(layers):
        return f"{len(nodes)} weighted layers, the network has {len(layers)}"
    for index, ((op, attributes, weight, bias), (name, layer)) in enumerate(zip(nodes, layers)):
        if isinstance(layer, nn.Linear):
            fits = op == "Gemm" and attributes.get("transB", 0) == 1 and tuple(weight.shape) == tuple(layer.weight.shape)
        else:
            padding = tuple(layer.padding) * 2
            fits = (
                op == "Conv"
                and tuple(weight.shape) == tuple(layer.weight.shape)
                and tuple(attributes.get("strides", (1, 1))) == tuple(layer.stride)
                and tuple(attributes.get("pads", (0, 0, 0, 0))) == padding
                and attributes.get("group", 1) == layer.groups
            )
        if not fits or (bias is None) != (layer.bias is None):
            return f"layer {index} ({op} {tuple(weight.shape)}) does not fit {name}"
    return None


def load_onnx_pair(backbone_path, head_path, *, backend=None):
    """The NanoTrack network (batch-norm folded, eval mode) whose weights the ONNX pair holds.

    backbone_path, head_path  the files cv2.TrackerNano_Params() names backbone and neckhead.
    """
    backbone_nodes = _weighted_nodes(_read_model(backbone_path, "backbone"))
    head_nodes = _weighted_nodes(_read_model(head_path, "head"))
    reasons = []
    for version in VERSIONS:
        model = fold_batchnorm(NanoTrack(version, backend=backend), inplace=True)
        backbone_layers, head_layers = _layers(model.backbone), _layers(model.ban_head)
        reason = _mismatch(backbone_nodes, backbone_layers) or _mismatch(head_nodes, head_layers)
        if reason is None:
            with torch.no_grad():
                for (_, _, weight, bias), (_, layer) in zip(backbone_nodes + head_nodes, backbone_layers + head_layers):
                    layer.weight.copy_(weight)
                    if bias is not None:
                        layer.bias.copy_(bias)
            return model
        reasons.append(f"V{version}: {reason}")
    raise OnnxWeightsError(
        f"{str(backbone_path)!r} and {str(head_path)!r} are not a NanoTrack backbone and head ({'; '.join(reasons)})"
    )
