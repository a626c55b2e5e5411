"""The SNL-RPN (paper Sec. 3.2): pysot's depth-wise RPN plus a language branch.

Parameter names and shapes follow pysot (DepthwiseXCorr: conv_kernel, conv_search,
head; MultiRPN: rpn2, rpn3, rpn4, cls_weight, loc_weight), so pysot weights load
unchanged. The language branch adds nl_cls_head and nl_loc_head per level and, when
levels are fused, nl_cls_weight and nl_loc_weight.

Heads split their work into a template side (conv_kernel outputs, computed once per
target and cached in a TemplateKernels) and a search side (conv_search, the
correlations, the heads), so that a tracker pays only for the search side per frame;
every correlation of one frame goes through a single `correlate` call.
"""

import abc
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snlt_fast.nn.correlation import Correlating, correlate

OUTPUT_NAMES = ("cls", "loc", "nl_cls", "nl_loc")
LANGUAGE_FEATURES = ("shared", "own", "own+pixels")


def conv_bn_relu(in_channels, out_channels, kernel_size):
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def prediction_head(hidden, out_channels, kernel_size):
    """conv(kernel_size) + BN + ReLU, then a 1x1 conv to the predictions."""
    return nn.Sequential(*conv_bn_relu(hidden, hidden, kernel_size), nn.Conv2d(hidden, out_channels, kernel_size=1))


class DepthwiseXCorr(Correlating, nn.Module):
    """pysot's DepthwiseXCorr: conv_kernel(template) and conv_search(search) correlated depth-wise, then head."""

    def __init__(self, in_channels, hidden, out_channels, kernel_size=3):
        super().__init__()
        self.conv_kernel = conv_bn_relu(in_channels, hidden, kernel_size)
        self.conv_search = conv_bn_relu(in_channels, hidden, kernel_size)
        self.head = prediction_head(hidden, out_channels, kernel_size=1)

    def forward(self, kernel, search):
        kernel = self.conv_kernel(kernel)
        search = self.conv_search(search)
        return self.head(correlate([search], [kernel], self.backend)[0])


@dataclass
class TemplateKernels:
    """What the template side leaves for every frame, one entry per level.

    cls, loc: conv_kernel outputs [B, hidden, k, k]; language: the language kernels
    [B, hidden] (None for visual-only tracking).
    """

    cls: list
    loc: list
    language: list | None = None

    @property
    def batch(self):
        return self.cls[0].shape[0]


class _LevelsHead(Correlating, nn.Module, metaclass=abc.ABCMeta):
    """The template/track split shared by the one-level and the multi-level heads."""

    @abc.abstractmethod
    def levels(self):
        """The SNLRPN levels of this head, in feature order."""

    @abc.abstractmethod
    def fuse(self, name, per_level):
        """One output `name` from its per-level predictions."""

    def _as_levels(self, features, argument):
        levels = self.levels()
        if isinstance(features, Tensor):
            features = [features]
        if not isinstance(features, (list, tuple)) or len(features) != len(levels):
            got = f"{len(features)} entries" if isinstance(features, (list, tuple)) else type(features).__name__
            raise ValueError(f"{argument} must hold one feature map per level ({len(levels)}), got {got}")
        return list(features)

    def template(self, z_fs, language_kernels=None):
        """The cached template side: conv_kernel outputs per level, and the language kernels if given."""
        z_fs = self._as_levels(z_fs, "z_fs")
        if language_kernels is not None:
            if not self.has_language:
                raise ValueError("this head has no language branch (built with language=False): pass no language kernels")
            language_kernels = self._as_levels(language_kernels, "language_kernels")
        kernels = [level.template_kernels(z_f) for level, z_f in zip(self.levels(), z_fs)]
        return TemplateKernels([k[0] for k in kernels], [k[1] for k in kernels], language_kernels)

    def track(self, x_fs, template, pixels=None):
        """The search side for one frame: a dict cls, loc (+ nl_cls, nl_loc when the template has language).

        pixels: the search crop's colours on the feature grid, for language_features="own+pixels"."""
        x_fs = self._as_levels(x_fs, "x_fs")
        levels = self.levels()
        language = template.language or [None] * len(levels)
        searches, kernels, counts = [], [], []
        for level, x_f, cls_kernel, loc_kernel, language_kernel in zip(
            levels, x_fs, template.cls, template.loc, language
        ):
            level_searches, level_kernels = level.correlation_pairs(x_f, cls_kernel, loc_kernel, language_kernel, pixels)
            searches += level_searches
            kernels += level_kernels
            counts.append(len(level_searches))
        correlations = correlate(searches, kernels, self.backend)
        per_level, start = [], 0
        for level, count in zip(levels, counts):
            per_level.append(level.heads(correlations[start : start + count]))
            start += count
        names = OUTPUT_NAMES[: counts[0]]
        return {name: self.fuse(name, [outputs[i] for outputs in per_level]) for i, name in enumerate(names)}

    def forward(self, z_fs, x_fs, language_kernels=None, pixels=None):
        return self.track(x_fs, self.template(z_fs, language_kernels), pixels)


class SNLRPN(_LevelsHead):
    """One level of the SNL-RPN: visual cls/loc branches and, with language=True, their language twins.

    Used alone it is a whole head (SiamRPN with AlexNet) with pysot's DepthwiseRPN keys.

    The language branch correlates search features with the language kernel (1x1 per
    channel) and maps them with a 5x5 head to the visual branch's S x S. With
    language_features="shared" (the published SNLT) those are each visual branch's
    conv_search outputs; with "own" the branch has its own conv_search (nl_conv_search),
    so that template matching, which learns to ignore how the target's look drifts, does
    not shape the features a sentence picks from.
    """

    def __init__(self, anchor_num=5, in_channels=256, hidden=256, language=True, nl_kernel_size=5, language_features="shared"):
        super().__init__()
        if language_features not in LANGUAGE_FEATURES:
            raise ValueError(f"language_features must be one of {', '.join(LANGUAGE_FEATURES)}; got {language_features!r}")
        self.cls = DepthwiseXCorr(in_channels, hidden, 2 * anchor_num)
        self.loc = DepthwiseXCorr(in_channels, hidden, 4 * anchor_num)
        self.language_features = language_features if language else "shared"
        if self.language_features != "shared":
            pixel_channels = 3 if self.language_features == "own+pixels" else 0
            self.nl_conv_search = conv_bn_relu(in_channels + pixel_channels, hidden, 3)
        if language:
            # The NL head takes the 1x1 correlation (as large as the search features) down
            # to the visual correlation's size: its kernel is as large as the template
            # kernel (5x5 for SiamRPN++'s 7x7 template features, 4x4 for AlexNet's 6x6).
            self.nl_cls_head = prediction_head(hidden, 2 * anchor_num, kernel_size=nl_kernel_size)
            self.nl_loc_head = prediction_head(hidden, 4 * anchor_num, kernel_size=nl_kernel_size)

    @property
    def has_language(self):
        return hasattr(self, "nl_cls_head")

    def levels(self):
        return [self]

    def fuse(self, name, per_level):
        return per_level[0]

    def template_kernels(self, z_f):
        return self.cls.conv_kernel(z_f), self.loc.conv_kernel(z_f)

    def correlation_pairs(self, x_f, cls_kernel, loc_kernel, language_kernel=None, pixels=None):
        """(searches, kernels) of this level: visual cls, visual loc, then language cls, language loc."""
        cls_search, loc_search = self.cls.conv_search(x_f), self.loc.conv_search(x_f)
        searches, kernels = [cls_search, loc_search], [cls_kernel, loc_kernel]
        if language_kernel is not None:
            if self.language_features != "shared":
                nl_search = self.nl_conv_search(x_f if pixels is None else torch.cat([x_f, pixels], dim=1))
                searches += [nl_search, nl_search]
            else:
                searches += [cls_search, loc_search]
            kernels += [language_kernel, language_kernel]
        return searches, kernels

    def heads(self, correlations):
        """Predictions from this level's correlations, in the order of `correlation_pairs`."""
        modules = [self.cls.head, self.loc.head]
        if len(correlations) == 4:
            modules += [self.nl_cls_head, self.nl_loc_head]
        return [module(feature) for module, feature in zip(modules, correlations)]


class MultiSNLRPN(_LevelsHead):
    """Three SNL-RPN levels (ResNet groups 3, 4, 5) fused with softmax-normalised level weights (Eq. 1).

    Visual and language outputs each have their own weights; with weighted=False the
    levels are averaged. With language=False this is pysot's MultiRPN, key for key.
    """

    def __init__(self, anchor_num=5, in_channels=(256, 256, 256), weighted=True, language=True, language_features="shared"):
        super().__init__()
        self.level_names = [f"rpn{index + 2}" for index in range(len(in_channels))]
        for name, channels in zip(self.level_names, in_channels):
            self.add_module(name, SNLRPN(anchor_num, channels, channels, language, language_features=language_features))
        self.weighted = weighted
        if weighted:
            for name in OUTPUT_NAMES[: 4 if language else 2]:
                setattr(self, f"{name}_weight", nn.Parameter(torch.ones(len(in_channels))))

    @property
    def has_language(self):
        return self.levels()[0].has_language

    def levels(self):
        return [getattr(self, name) for name in self.level_names]

    def fuse(self, name, per_level):
        if not self.weighted:
            total = per_level[0]
            for output in per_level[1:]:
                total = total + output
            return total / len(per_level)
        weights = F.softmax(getattr(self, f"{name}_weight"), 0)
        total = per_level[0] * weights[0]
        for index in range(1, len(per_level)):
            total = total + per_level[index] * weights[index]
        return total
