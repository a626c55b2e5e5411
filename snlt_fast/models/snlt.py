"""The SNLT network (paper Sec. 3.2, Fig. 2) on the fast ops, for tracking and training.

Tracking splits the network the way a tracker uses it: `template(z_crop, text)` runs
the template backbone, the template-side conv_kernel of every branch and the
sentence encoder once per target and caches the result; `track(x_crop)` runs only
the search side per frame. (The published code recomputes the template backbone and
the sentence encoder on every frame.)
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snlt_fast.language import MINILM, LanguageKernels
from snlt_fast.models.backbones import AlexNetLegacy, ResNet50Atrous
from snlt_fast.models.neck import AdjustAllLayer
from snlt_fast.nn import MultiSNLRPN, SNLRPN, set_backend, using_backend

BACKBONES = ("resnet50", "alexnet")
DEFAULT_INSTANCE_SIZE = {"resnet50": 255, "alexnet": 287}
HEAD_CHANNELS = 256
# Architecture name for (backbone, has a language branch).
ARCH_NAMES = {
    ("resnet50", False): "siamrpn_r50_l234",
    ("alexnet", False): "siamrpn_alex",
    ("resnet50", True): "snlt_r50",
    ("alexnet", True): "snlt_alex",
}
# Constructor arguments of each architecture: pysot's SiamRPN(++) have 5 anchors (5 ratios,
# one scale); SNLT has 15 (5 ratios x 3 scales).
ARCHS = {
    "siamrpn_r50_l234": {"backbone": "resnet50", "language": None, "anchor_num": 5},
    "siamrpn_alex": {"backbone": "alexnet", "language": None, "anchor_num": 5},
    "snlt_r50": {"backbone": "resnet50", "language": MINILM, "anchor_num": 15},
    "snlt_alex": {"backbone": "alexnet", "language": MINILM, "anchor_num": 15},
}


class SNLT(nn.Module):
    """Siamese tracker with an optional natural-language branch.

    backbone     "resnet50" (SiamRPN++: three levels, neck, weighted fusion) or
                 "alexnet" (SiamRPN: one level, no neck).
    language     the sentence encoder of the language branch: "minilm" (default), a
                 local Hugging Face model directory, a GloVe-format word-vector file,
                 a SentenceEncoder, or None for a visual-only tracker (pysot's SiamRPN).
    projection   None: slice a 768-d embedding into the 3 x 256 kernels as the
                 published SNLT does, else project; True/False force or forbid the
                 learned projection.
    anchor_num   anchors per position (15 for SNLT, 5 for pysot's models).
    anchor_ratios, anchor_scales  the anchors the model was trained with (default: pysot's
                 five ratios, and scales [4, 8, 16] for 15 anchors or [8] for 5; unknown
                 for other counts); a tracker builds its anchors from them.
    instance_size  the search crop side the tracker uses (255 for ResNet-50, 287 for AlexNet).
    width        AlexNet only: the backbone's channel multiplier (1.0 is pysot's network).
    hidden       the channels of the RPN heads, the neck's outputs and the language kernels
                 (256 as pysot and SNLT).
    language_features  "shared": the language branch correlates the visual branches'
                 search features (the published SNLT); "own": it has its own (see SNLRPN);
                 "own+pixels" (AlexNet): those also read the crop's colours on the feature grid.
    backend      the correlation backend (see snlt_fast.nn); reference=True is backend="reference".

    Attributes a tracker needs: arch, anchor_num, exemplar_size, instance_size,
    score_size, stride, has_language.
    """

    exemplar_size = 127
    stride = 8

    def __init__(
        self,
        backbone="resnet50",
        language=MINILM,
        *,
        anchor_num=15,
        instance_size=None,
        projection=None,
        width=1.0,
        hidden=HEAD_CHANNELS,
        anchor_ratios=None,
        anchor_scales=None,
        language_features="shared",
        backend=None,
        reference=False,
    ):
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}; got {backbone!r}")
        if not isinstance(anchor_num, int) or anchor_num < 1:
            raise ValueError(f"anchor_num must be a positive int, got {anchor_num!r}")
        self.anchor_ratios, self.anchor_scales = _anchor_shapes(anchor_num, anchor_ratios, anchor_scales)
        if not isinstance(hidden, int) or isinstance(hidden, bool) or hidden < 1:
            raise ValueError(f"hidden must be a positive int, got {hidden!r}")
        if backbone != "alexnet" and width != 1.0:
            raise ValueError(f"width scales the alexnet backbone only; got width={width!r} for {backbone}")
        if language_features == "own+pixels" and backbone != "alexnet":
            raise ValueError(f"language_features='own+pixels' needs the alexnet backbone (its cells' centres are known); got {backbone}")
        if reference and backend not in (None, "reference"):
            raise ValueError(f"reference=True runs the reference ops; it contradicts backend={backend!r}")
        has_language = language is not None and language is not False
        self.backbone_name = backbone
        self.anchor_num = anchor_num
        self.width, self.hidden = width, hidden
        if backbone == "resnet50":
            self.backbone = ResNet50Atrous()
            self.neck = AdjustAllLayer(ResNet50Atrous.out_channels, (hidden,) * 3)
            self.rpn_head = MultiSNLRPN(anchor_num, (hidden,) * 3, True, has_language, language_features)
        else:
            self.backbone = AlexNetLegacy(width)
            self.neck = None
            template_kernel = self._kernel_size(self.exemplar_size)
            self.rpn_head = SNLRPN(
                anchor_num, self.backbone.out_channels[0], hidden, has_language, template_kernel, language_features
            )
        levels = len(self.rpn_head.levels())
        self.language = LanguageKernels(language, levels, hidden, projection) if has_language else None
        self.instance_size = instance_size or DEFAULT_INSTANCE_SIZE[backbone]
        if self.score_size_for(self.instance_size) < 1:
            raise ValueError(f"instance_size {self.instance_size} is too small for a {self.exemplar_size} template")
        self._template = None
        set_backend(self, "reference" if reference else backend)

    # ------------------------------------------------------------------ description

    @property
    def arch(self):
        return ARCH_NAMES[(self.backbone_name, self.has_language)]

    @property
    def has_language(self):
        return self.language is not None

    @property
    def backend(self):
        return self.rpn_head.backend

    @backend.setter
    def backend(self, backend):
        set_backend(self, backend)

    def using_backend(self, backend):
        """Context manager: run on `backend` within the block."""
        return using_backend(self, backend)

    def reference_ops(self):
        """Context manager: run on the pure-PyTorch reference ops within the block."""
        return using_backend(self, "reference")

    def _feature_size(self, crop_size):
        size = self.backbone.feature_size(crop_size)
        return self.neck.output_size(size) if self.neck is not None else size

    def _kernel_size(self, crop_size):
        return self._feature_size(crop_size) - 2  # the 3x3 conv_kernel / conv_search

    def score_size_for(self, instance_size):
        """Side of the head outputs for a search crop of side `instance_size` (and a 127 template)."""
        return self._kernel_size(instance_size) - self._kernel_size(self.exemplar_size) + 1

    @property
    def score_size(self):
        return self.score_size_for(self.instance_size)

    def config(self):
        """The constructor arguments that rebuild this model (saved in our checkpoints)."""
        language = self.language.config() if self.language is not None else {"encoder": None, "projection": None}
        return {
            "backbone": self.backbone_name,
            "language": language["encoder"],
            "projection": language["projection"],
            "anchor_num": self.anchor_num,
            "instance_size": self.instance_size,
            "width": self.width,
            "hidden": self.hidden,
            "anchor_ratios": list(self.anchor_ratios) if self.anchor_ratios else None,
            "anchor_scales": list(self.anchor_scales) if self.anchor_scales else None,
            "language_features": self.rpn_head.levels()[0].language_features,
        }

    # ------------------------------------------------------------------ running

    def _parameter(self):
        return next(self.backbone.parameters())

    def _check_crop(self, crop, argument):
        if not isinstance(crop, Tensor):
            raise TypeError(f"{argument} must be a torch.Tensor [B, 3, H, W], got {type(crop).__name__}")
        if crop.dim() != 4 or crop.shape[1] != 3 or crop.shape[0] < 1:
            raise ValueError(f"{argument} must be [B, 3, H, W] with B >= 1, got shape {tuple(crop.shape)}")
        parameter = self._parameter()
        if crop.dtype != parameter.dtype:
            raise TypeError(f"{argument} is {crop.dtype} but the model is {parameter.dtype}")
        if crop.device != parameter.device:
            raise ValueError(f"{argument} is on {crop.device} but the model is on {parameter.device}")
        if crop.shape[2] != crop.shape[3]:
            raise ValueError(f"{argument} must be square, got shape {tuple(crop.shape)}")
        if self._kernel_size(crop.shape[3]) < 1:
            raise ValueError(f"{argument} side {crop.shape[3]} is too small for the {self.backbone_name} backbone")

    def features(self, crop):
        """Backbone (and neck) features of a crop, one map per level."""
        features = self.backbone(crop)
        return self.neck(features) if self.neck is not None else features

    def language_kernels(self, text, batch):
        """The per-level language kernels for `text` (one sentence, or a list of `batch` sentences)."""
        if self.language is None:
            raise ValueError(
                f"this {self.arch} model has no language branch (e.g. it was loaded from a pysot SiamRPN "
                "checkpoint, whose language part is untrained): call it without text"
            )
        if isinstance(text, str):
            sentences = [text]  # one sentence for the whole batch: a kernel batch of 1
        elif isinstance(text, (list, tuple)) and all(isinstance(sentence, str) for sentence in text):
            if len(text) != batch:
                raise ValueError(f"text holds {len(text)} sentences for a batch of {batch} crops")
            sentences = list(text)
        else:
            raise TypeError(f"text must be a string or a list of strings, got {type(text).__name__}")
        return self.language(sentences)

    @torch.no_grad()
    def template(self, z_crop, text=None):
        """Cache the template side for B targets: z_crop [B, 3, 127, 127], text None, a sentence or B sentences.

        Returns the cached TemplateKernels; `track` uses the latest one unless given another.
        """
        self._check_crop(z_crop, "z_crop")
        if isinstance(text, str) and not text.strip():
            raise ValueError("text is empty: pass text=None to track without a sentence")
        language = None if text is None else self.language_kernels(text, z_crop.shape[0])
        self._template = self.rpn_head.template(self.features(z_crop), language)
        return self._template

    @torch.no_grad()
    def track(self, x_crop, template=None):
        """Head outputs for one frame of B search crops [B, 3, S, S] against the cached template.

        Returns {"cls": [B, 2A, s, s], "loc": [B, 4A, s, s]} laid out as pysot's head
        outputs, plus "nl_cls" and "nl_loc" when the template was given a sentence.
        """
        state = template if template is not None else self._template
        if state is None:
            raise RuntimeError("track() needs a template: call template(z_crop, text) first")
        self._check_crop(x_crop, "x_crop")
        batch = x_crop.shape[0]
        kernel_batches = {state.batch} | ({state.language[0].shape[0]} if state.language else set())
        if not kernel_batches <= {1, batch}:
            raise ValueError(
                f"x_crop holds {batch} search crops but the template holds {state.batch} targets "
                "(a template batch of 1 is shared by every crop)"
            )
        return self.rpn_head.track(self.features(x_crop), state, self._pixels(x_crop, state.language is not None))

    def forward(self, template, search, text=None):
        """Training: the head outputs for a batch of (template, search[, sentence]) triples."""
        self._check_crop(template, "template")
        self._check_crop(search, "search")
        if template.shape[0] != search.shape[0]:
            raise ValueError(f"template and search batches differ: {template.shape[0]} and {search.shape[0]}")
        language = None if text is None else self.language_kernels(text, template.shape[0])
        return self.rpn_head(self.features(template), self.features(search), language, self._pixels(search, language is not None))

    def _pixels(self, crop, with_language):
        """The crop's colours averaged over 7x7 windows at the backbone's cell centres (AlexNet: 8 px apart,
        the first at (R - 1) / 2 for a receptive field R), scaled to [-1, 1]; None unless the language
        branch reads them."""
        if not with_language or self.rpn_head.levels()[0].language_features != "own+pixels":
            return None
        cells = self.backbone.feature_size(crop.shape[-1])
        first = (crop.shape[-1] - self.stride * (cells - 1) - 1) // 2
        pooled = F.avg_pool2d(crop[:, :, first - 3 :, first - 3 :], kernel_size=7, stride=self.stride)
        return pooled[:, :, :cells, :cells] / 127.5 - 1


DEFAULT_ANCHOR_RATIOS = (0.33, 0.5, 1, 2, 3)
DEFAULT_ANCHOR_SCALES = {15: (4, 8, 16), 5: (8,)}


def _anchor_shapes(anchor_num, ratios, scales):
    """(ratios, scales) of a model with `anchor_num` anchors per cell: the given ones, pysot's
    for 5 or 15 anchors, or (None, None) when they are not known."""
    if ratios is None and scales is None:
        if anchor_num not in DEFAULT_ANCHOR_SCALES:
            return None, None
        return DEFAULT_ANCHOR_RATIOS, DEFAULT_ANCHOR_SCALES[anchor_num]
    if ratios is None or scales is None:
        raise ValueError("anchor_ratios and anchor_scales go together: give both or neither")
    ratios, scales = tuple(ratios), tuple(scales)
    if len(ratios) * len(scales) != anchor_num:
        raise ValueError(f"{len(ratios)} anchor ratios x {len(scales)} scales is not anchor_num={anchor_num}")
    return ratios, scales


def build_model(arch, **overrides):
    """The model of a named architecture (see ARCHS); keyword arguments override its defaults."""
    if arch not in ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ARCHS)}; got {arch!r}")
    return SNLT(**{**ARCHS[arch], **overrides})
