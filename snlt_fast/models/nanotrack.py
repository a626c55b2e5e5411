"""NanoTrack V1, V2 and V3 (the anchor-free Siamese trackers OpenCV's cv2.TrackerNano runs)
on the fast ops, with an optional language branch (SNLT on NanoTrack).

The networks follow the published ones layer by layer, with their module names, so that
the released checkpoints load strictly:
  backbone  the first 8 blocks of a MobileNetV3-Small (V3: one more, at stride 1), whose
            squeeze-excite sits before the block's activation (unlike torchvision's);
  ban_head  pixel-wise correlation of the 8x8 template features with the 16x16 search
            features (64 channels), channel attention, and depth-wise separable towers
            to cls (2 logits) and loc (l, t, r, b distances, exp inside the network);
            V3 adds a depth-wise correlation branch on the template's centre 4x4 and
            reduces the maps to 15x15.
The released checkpoints also hold a `neck` the published tracker never calls; it is
not built here and its keys are ignored on loading.

The language branch is a second head of the same architecture whose template is a
sentence kernel (the sentence embedding projected to [C, 8, 8]), so that its cls/loc
maps have the visual head's shape and the tracker fuses them by their entropies.
"""

import torch
from torch import Tensor, nn

from snlt_fast.language import MINILM, LanguageKernels
from snlt_fast.nn.correlation import CONV2D, Correlating, check_backend, set_backend, using_backend
from snlt_fast.ops.xcorr import xcorr_depthwise
from snlt_fast.ops.xcorr_pixelwise import xcorr_pixelwise

VERSIONS = (1, 2, 3)
ARCH_NAMES = {1: "nanotrack_v1", 2: "nanotrack_v2", 3: "nanotrack_v3"}
# Rows of the backbone: kernel, expansion ratio, output channels, squeeze-excite, hard-swish, stride.
_BLOCKS = (
    (3, 1, 16, True, False, 2),
    (3, 4.5, 24, False, False, 2),
    (3, 3.67, 24, False, False, 1),
    (5, 4, 40, True, True, 2),
    (5, 6, 40, True, True, 1),
    (5, 6, 40, True, True, 1),
    (5, 3, 48, True, True, 1),
    (5, 3, 48, True, True, 1),
)
# V3's extra block (the MobileNetV3 row has stride 2; NanoTrack V3 keeps stride 16).
_V3_BLOCK = (5, 6, 96, True, True, 1)
TEMPLATE_FEATURE_SIZE = 8


def _make_divisible(value, divisor=8):
    """MobileNet's channel rounding: the nearest multiple of `divisor`, never 10% below `value`."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcite(nn.Module):
    def __init__(self, channels):
        super().__init__()
        hidden = _make_divisible(channels // 4)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Hardsigmoid())

    def forward(self, x):
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class InvertedResidual(nn.Module):
    """MobileNetV3's block, with the squeeze-excite before the activation (module indices as published)."""

    def __init__(self, inp, hidden, oup, kernel, stride, squeeze_excite, hard_swish):
        super().__init__()
        self.residual = stride == 1 and inp == oup
        activation = nn.Hardswish if hard_swish else nn.ReLU
        excite = SqueezeExcite(hidden) if squeeze_excite else nn.Identity()
        depthwise = nn.Conv2d(hidden, hidden, kernel, stride, (kernel - 1) // 2, groups=hidden, bias=False)
        if inp == hidden:
            layers = [depthwise, nn.BatchNorm2d(hidden), activation(), excite]
        else:
            expand = nn.Conv2d(inp, hidden, 1, bias=False)
            layers = [expand, nn.BatchNorm2d(hidden), activation(), depthwise, nn.BatchNorm2d(hidden), excite, activation()]
        layers += [nn.Conv2d(hidden, oup, 1, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV3Truncated(nn.Module):
    """NanoTrack's backbone: stride 16, 48 channels (96 for V3); 127 -> 8x8, 255 -> 16x16."""

    def __init__(self, version):
        super().__init__()
        stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish())
        layers, inp = [stem], 16
        for kernel, ratio, oup, squeeze_excite, hard_swish, stride in _BLOCKS + ((_V3_BLOCK,) if version == 3 else ()):
            hidden = _make_divisible(inp * ratio)
            layers.append(InvertedResidual(inp, hidden, oup, kernel, stride, squeeze_excite, hard_swish))
            inp = oup
        self.features = nn.Sequential(*layers)
        self.out_channels = inp

    def forward(self, x):
        return self.features(x)


def _conv_bn(inp, oup):
    """1x1 conv (with bias) and batch-norm: the correlation branches' adjustment of z and x."""
    return nn.Sequential(nn.Conv2d(inp, oup, 1), nn.BatchNorm2d(oup))


class ChannelAttention(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels, 1)
        self.fc2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        weights = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * weights


def pixelwise_correlate(search, kernel, backend):
    """xcorr_pixelwise on `backend`, or NanoTrack's own matmul for the "conv2d" baseline."""
    if backend == CONV2D:
        batch, channels = search.shape[:2]
        out = kernel.flatten(2).transpose(1, 2) @ search.flatten(2)
        return out.reshape(batch, -1, *search.shape[2:])
    return xcorr_pixelwise(search, kernel, backend=backend)


def depthwise_correlate(search, kernel, padding, backend):
    if backend == CONV2D:
        batch, channels = search.shape[:2]
        out = nn.functional.conv2d(
            search.reshape(1, batch * channels, *search.shape[2:]),
            kernel.reshape(batch * channels, 1, *kernel.shape[2:]),
            padding=padding,
            groups=batch * channels,
        )
        return out.reshape(batch, channels, *out.shape[2:])
    return xcorr_depthwise(search, kernel, padding=padding, backend=backend)


class PixelwiseBranch(nn.Module, Correlating):
    """Pixel-wise correlation, then channel attention; V2/V3 adjust z and x first, V3 then reduces 16x16 to 15x15."""

    def __init__(self, channels, adjust, reduce):
        super().__init__()
        correlation_channels = TEMPLATE_FEATURE_SIZE**2
        if adjust:
            self.conv_kernel = _conv_bn(channels, channels)
            self.conv_search = _conv_bn(channels, channels)
        self.CA_layer = ChannelAttention(correlation_channels)
        if reduce:
            self.conv = nn.Sequential(
                nn.Conv2d(correlation_channels, correlation_channels, 2, groups=correlation_channels, bias=False),
                nn.BatchNorm2d(correlation_channels),
                nn.ReLU6(),
                nn.Conv2d(correlation_channels, correlation_channels, 1),
                nn.BatchNorm2d(correlation_channels),
            )

    def kernel(self, z):
        return self.conv_kernel(z) if hasattr(self, "conv_kernel") else z

    def forward(self, kernel, x):
        x = self.conv_search(x) if hasattr(self, "conv_search") else x
        out = self.CA_layer(pixelwise_correlate(x, kernel, self.backend))
        return self.conv(out) if hasattr(self, "conv") else out


class DepthwiseBranch(nn.Module, Correlating):
    """V3: depth-wise correlation of the template's centre 4x4 with the search, padded by 1 (16x16 -> 15x15)."""

    padding = 1

    def __init__(self, channels):
        super().__init__()
        self.conv_kernel = _conv_bn(channels, channels)
        self.conv_search = _conv_bn(channels, channels)

    def kernel(self, z):
        return self.conv_kernel(z[:, :, 2:6, 2:6])

    def forward(self, kernel, x):
        return depthwise_correlate(self.conv_search(x), kernel, self.padding, self.backend)


def _separable_tower(inp, oup, kernels, bn_after_depthwise):
    """Depth-wise (k x k) then point-wise convolutions with batch-norm: V1/V2's [dw, pw, BN, ReLU6]
    or V3's [dw, BN, ReLU6, pw, BN] per layer, the first layer taking `inp` channels."""
    layers, channels = [], inp
    for kernel in kernels:
        depthwise = nn.Conv2d(channels, channels, kernel, padding=(kernel - 1) // 2, groups=channels, bias=False)
        pointwise = nn.Conv2d(channels, oup, 1, bias=False)
        if bn_after_depthwise:
            layers += [depthwise, nn.BatchNorm2d(channels), nn.ReLU6(), pointwise, nn.BatchNorm2d(oup)]
        else:
            layers += [depthwise, pointwise, nn.BatchNorm2d(oup), nn.ReLU6()]
        channels = oup
    return nn.Sequential(*layers)


class BANHead(nn.Module):
    """NanoTrack's head for one version: template features z [B, C, 8, 8] (or a sentence kernel
    of that shape) and search features x [B, C, 16, 16] -> cls [B, 2, S, S], loc [B, 4, S, S].

    The layers are registered in the order the published ONNX export holds their weights,
    which is how `load_onnx` matches the two.
    """

    def __init__(self, version, channels):
        super().__init__()
        self.version = version
        correlation_channels = TEMPLATE_FEATURE_SIZE**2
        if version == 1:
            self.corr_pw = PixelwiseBranch(channels, adjust=False, reduce=False)
            self.cls_tower = _separable_tower(correlation_channels, 128, (5, 5, 3), bn_after_depthwise=False)
            self.cls_logits = nn.Sequential(nn.Conv2d(128, 2, 1))
            self.bbox_tower = _separable_tower(correlation_channels, 96, (3, 3, 5, 5), bn_after_depthwise=False)
        elif version == 2:
            self.corr_pw_reg = PixelwiseBranch(channels, adjust=True, reduce=False)
            self.corr_pw_cls = PixelwiseBranch(channels, adjust=True, reduce=False)
            self.cls_pw_tower = _separable_tower(correlation_channels, 96, (3,) * 6, bn_after_depthwise=False)
            self.cls_pred = nn.Sequential(nn.Conv2d(96, 2, 1))
            self.bbox_pw_tower = _separable_tower(correlation_channels, 96, (3,) * 6, bn_after_depthwise=False)
        else:
            self.corr_pw_reg = PixelwiseBranch(channels, adjust=True, reduce=True)
            self.corr_pw_cls = PixelwiseBranch(channels, adjust=True, reduce=True)
            self.corr_dw_reg = DepthwiseBranch(channels)
            self.corr_dw_cls = DepthwiseBranch(channels)
            self.down_reg = nn.Sequential(nn.Conv2d(channels + correlation_channels, 96, 1))
            self.down_cls = nn.Sequential(nn.Conv2d(channels + correlation_channels, 96, 1))
            self.cls_tower = _separable_tower(96, 96, (3,) * 6, bn_after_depthwise=True)
            self.cls_logits = nn.Sequential(nn.Conv2d(96, 2, 1))
            self.bbox_tower = _separable_tower(96, 96, (3,) * 6, bn_after_depthwise=True)
        self.bbox_pred = nn.Sequential(nn.Conv2d(96, 4, 1))

    def branches(self):
        """The correlation branches by name, in the order their kernels are kept."""
        names = {1: ("corr_pw",), 2: ("corr_pw_cls", "corr_pw_reg")}.get(
            self.version, ("corr_pw_cls", "corr_dw_cls", "corr_pw_reg", "corr_dw_reg")
        )
        return [(name, getattr(self, name)) for name in names]

    def kernels(self, z):
        """The template side of every branch, computed once per target."""
        return {name: branch.kernel(z) for name, branch in self.branches()}

    def paths(self):
        """The cls and the loc path, each (the branches whose outputs are concatenated along
        channels, the layers then applied in turn); loc's ends before the exp."""
        if self.version == 1:
            return (("corr_pw",), (self.cls_tower, self.cls_logits)), (("corr_pw",), (self.bbox_tower, self.bbox_pred))
        if self.version == 2:
            return (
                (("corr_pw_cls",), (self.cls_pw_tower, self.cls_pred)),
                (("corr_pw_reg",), (self.bbox_pw_tower, self.bbox_pred)),
            )
        return (
            (("corr_pw_cls", "corr_dw_cls"), (self.down_cls, self.cls_tower, self.cls_logits)),
            (("corr_pw_reg", "corr_dw_reg"), (self.down_reg, self.bbox_tower, self.bbox_pred)),
        )

    def forward(self, kernels, x):
        """(cls, loc) for search features x against the kernels of `kernels(z)`."""
        correlated = {}  # V1's two paths share their branch
        outputs = []
        for branch_names, layers in self.paths():
            for name in branch_names:
                if name not in correlated:
                    correlated[name] = getattr(self, name)(kernels[name], x)
            parts = [correlated[name] for name in branch_names]
            features = parts[0] if len(parts) == 1 else torch.cat(parts, 1)
            for layer in layers:
                features = layer(features)
            outputs.append(features)
        cls, loc = outputs
        return cls, torch.exp(loc)


class NanoTemplate:
    """What `NanoTrack.template` caches per target: each branch's kernel, and the language head's."""

    def __init__(self, kernels, language_kernels):
        self.kernels, self.language_kernels = kernels, language_kernels
        self.batch = next(iter(kernels.values())).shape[0]


class NanoTrack(nn.Module):
    """NanoTrack V1/V2/V3, optionally with a language head (SNLT on NanoTrack).

    version   1, 2 or 3.
    language  None (the published tracker), or the sentence encoder of the language head
              (see snlt_fast.models.SNLT): "minilm", a local Hugging Face directory, ...
    backend   the correlation backend (see snlt_fast.nn).

    Attributes a tracker needs: arch, head_form ("point"), exemplar_size, instance_size,
    score_size, stride, has_language.
    """

    exemplar_size = 127
    instance_size = 255
    stride = 16
    head_form = "point"

    def __init__(self, version=2, language=None, *, backend=None):
        super().__init__()
        if version not in VERSIONS:
            raise ValueError(f"version must be 1, 2 or 3, got {version!r}")
        self.version = version
        self.backbone = MobileNetV3Truncated(version)
        channels = self.backbone.out_channels
        self.ban_head = BANHead(version, channels)
        has_language = language is not None and language is not False
        if has_language:
            size = TEMPLATE_FEATURE_SIZE
            self.language = LanguageKernels(language, levels=1, channels=channels * size * size, projection=True)
            self.nl_head = BANHead(version, channels)
            self.start_language_head_from_visual()
        else:
            self.language = None
        self._template = None
        set_backend(self, backend)

    def start_language_head_from_visual(self):
        """Copy the visual head's weights into the language head: a start the visual head has
        tuned (called again whenever the visual head is loaded)."""
        self.nl_head.load_state_dict(self.ban_head.state_dict())

    @property
    def arch(self):
        return ARCH_NAMES[self.version]

    @property
    def has_language(self):
        return self.language is not None

    @property
    def score_size(self):
        return 15 if self.version == 3 else 16

    @property
    def backend(self):
        return next(m for m in self.modules() if isinstance(m, Correlating)).backend

    @backend.setter
    def backend(self, backend):
        set_backend(self, check_backend(backend))

    def using_backend(self, backend):
        """Context manager: run on `backend` within the block."""
        return using_backend(self, backend)

    def config(self):
        language = self.language.config()["encoder"] if self.language is not None else None
        return {"family": "nanotrack", "version": self.version, "language": language}

    def _check_crop(self, crop, argument, side):
        if not isinstance(crop, Tensor):
            raise TypeError(f"{argument} must be a torch.Tensor [B, 3, {side}, {side}], got {type(crop).__name__}")
        if crop.dim() != 4 or crop.shape[1] != 3 or crop.shape[0] < 1 or tuple(crop.shape[2:]) != (side, side):
            raise ValueError(f"{argument} must be [B, 3, {side}, {side}] with B >= 1, got shape {tuple(crop.shape)}")
        parameter = next(self.backbone.parameters())
        if crop.dtype != parameter.dtype or crop.device != parameter.device:
            raise TypeError(f"{argument} is {crop.dtype} on {crop.device} but the model is {parameter.dtype} on {parameter.device}")

    def _sentence_kernels(self, text, batch):
        if self.language is None:
            raise ValueError(f"this {self.arch} model has no language head: call it without text")
        sentences = [text] * batch if isinstance(text, str) else list(text)
        if len(sentences) != batch:
            raise ValueError(f"text holds {len(sentences)} sentences for a batch of {batch} crops")
        (flat,) = self.language(sentences)
        size = TEMPLATE_FEATURE_SIZE
        return flat.reshape(batch, -1, size, size)

    @torch.no_grad()
    def template(self, z_crop, text=None):
        """Cache the template side for B targets: z_crop [B, 3, 127, 127] (0-255), text None, a sentence or B sentences."""
        self._check_crop(z_crop, "z_crop", self.exemplar_size)
        if isinstance(text, str) and not text.strip():
            raise ValueError("text is empty: pass text=None to track without a sentence")
        kernels = self.ban_head.kernels(self.backbone(z_crop))
        language = None
        if text is not None:
            sentence = self._sentence_kernels(text, z_crop.shape[0]).to(z_crop.dtype)
            language = self.nl_head.kernels(sentence)
        self._template = NanoTemplate(kernels, language)
        return self._template

    def search_state(self, x_crop, template):
        """The template to track x_crop against (`template`, else the cached one), x_crop checked."""
        state = template if template is not None else self._template
        if state is None:
            raise RuntimeError("track() needs a template: call template(z_crop, text) first")
        self._check_crop(x_crop, "x_crop", self.instance_size)
        if state.batch not in (1, x_crop.shape[0]):
            raise ValueError(f"x_crop holds {x_crop.shape[0]} search crops but the template holds {state.batch} targets")
        return state

    @torch.no_grad()
    def track(self, x_crop, template=None):
        """{"cls": [B, 2, S, S], "loc": [B, 4, S, S]} (+ "nl_cls", "nl_loc" with a sentence) for B search crops."""
        state = self.search_state(x_crop, template)
        features = self.backbone(x_crop)
        cls, loc = self.ban_head(state.kernels, features)
        heads = {"cls": cls, "loc": loc}
        if state.language_kernels is not None:
            heads["nl_cls"], heads["nl_loc"] = self.nl_head(state.language_kernels, features)
        return heads

    def forward(self, template, search, text=None):
        """Training: the head outputs for a batch of (template, search[, sentence]) triples."""
        z, x = self.backbone(template), self.backbone(search)
        cls, loc = self.ban_head(self.ban_head.kernels(z), x)
        heads = {"cls": cls, "loc": loc}
        if text is not None:
            sentence = self._sentence_kernels(text, template.shape[0]).to(template.dtype)
            heads["nl_cls"], heads["nl_loc"] = self.nl_head(self.nl_head.kernels(sentence), x)
        return heads


def build_nanotrack(arch, **overrides):
    """NanoTrack by architecture name ("nanotrack_v1", "nanotrack_v2", "nanotrack_v3")."""
    versions = {name: version for version, name in ARCH_NAMES.items()}
    if arch not in versions:
        raise ValueError(f"arch must be one of {', '.join(versions)}; got {arch!r}")
    return NanoTrack(versions[arch], **overrides)
