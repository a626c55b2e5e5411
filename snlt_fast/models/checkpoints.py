"""Checkpoints: pysot SiamRPN++ / SiamRPN, the published SNLT, and our own format, through one entry point.

Recognised layouts (after unwrapping a "state_dict" entry and "module." prefixes):
  pysot SiamRPN++ r50_l234  backbone.*, neck.downsample{2,3,4}.downsample.*,
                            rpn_head.rpn{2,3,4}.{cls,loc}.{conv_kernel,conv_search,head}.*,
                            rpn_head.{cls,loc}_weight                     -> "siamrpn_r50_l234"
  pysot SiamRPN AlexNet     backbone.features.* (or backbone.layer1..5.*), rpn_head.{cls,loc}.*
                                                                          -> "siamrpn_alex"
  published SNLT            backbone.*, adjustment_layer.*, nl_multi_rpn.l{2,3,4}_rpn.*,
                            nl_multi_rpn.{cls,loc,nl_cls,nl_loc}_weight,
                            nl_multi_rpn.bert_model.*                     -> "snlt_r50"
  NanoTrack V1 / V2 / V3    backbone.features.*, ban_head.corr_pw.* / ban_head.corr_pw_cls.* /
                            ban_head.corr_dw_cls.* (its unused neck.* is dropped)
                                                                          -> "nanotrack_v1" ...
  ours                      {"format": "snlt_fast", "config": ..., "state_dict": ...}
A pair of paths is NanoTrack's ONNX export (backbone, head), as cv2.TrackerNano loads it.

Loading is strict: unexpected, missing or mis-shaped keys are a CheckpointError that
lists them (only BatchNorm's num_batches_tracked, absent from old checkpoints, may be
missing).
"""

import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

import numpy

from snlt_fast._files import atomic_path
from snlt_fast.models.nanotrack import ARCH_NAMES as NANOTRACK_ARCH_NAMES
from snlt_fast.models.nanotrack import NanoTrack
from snlt_fast.models.onnx_weights import OnnxWeightsError, load_onnx_pair
from snlt_fast.models.snlt import ARCHS, SNLT, build_model

FORMAT = "snlt_fast"
FORMAT_VERSION = 1
ENCODER_PREFIX = "language.encoder."
PUBLISHED_BERT_DIM = 768
_LISTED_KEYS = 20
NANOTRACK_ARCHS = {name: version for version, name in NANOTRACK_ARCH_NAMES.items()}
ALL_ARCHS = (*ARCHS, *NANOTRACK_ARCHS)
# Besides tensors, training scripts' checkpoints hold numpy numbers (NanoTrack's hold its
# epoch as one): the globals that rebuild a numpy scalar from its dtype and bytes, and
# nothing else, are allowed under weights_only.
_NUMPY_SCALAR_GLOBALS = [
    (numpy._core.multiarray.scalar, "numpy.core.multiarray.scalar"),
    numpy.dtype,
    type(numpy.dtype("float64")),
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: unknown layout, or keys that do not fit the model."""


class UntrustedCheckpointError(CheckpointError):
    """A checkpoint that pickles objects besides tensors, refused unless the caller trusts it."""


# The first bytes of what torch.save writes: its zip format, or a pickle (the legacy format).
_CHECKPOINT_MAGIC = (b"PK\x03\x04", b"\x80")


# --------------------------------------------------------------------------- reading


def _read(source, map_location, trusted):
    if isinstance(source, Mapping):
        return source
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a checkpoint path or a state dict, got {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    _check_magic(path)
    try:
        with torch.serialization.safe_globals(_NUMPY_SCALAR_GLOBALS):
            payload = torch.load(path, map_location=map_location, weights_only=not trusted)
    except Exception as error:  # torch raises several types for a file it cannot read
        if isinstance(error, pickle.UnpicklingError) and not trusted:
            # torch's own text here is a page of advice about torch.load's defaults.
            raise UntrustedCheckpointError(
                f"checkpoint {str(path)!r} pickles objects besides tensors, and unpickling them can run code: "
                "load it with trusted=True only if you trust where it comes from"
            ) from error
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"cannot read checkpoint {str(path)!r} (truncated or corrupted?): {reason}") from error
    if not isinstance(payload, Mapping):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(payload).__name__}, not a state dict")
    return payload


def _check_magic(path):
    """A CheckpointError for a file torch.save cannot have written (text, an image, nothing)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as error:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {error.strerror or error}") from None
    if not head:
        raise CheckpointError(f"checkpoint {str(path)!r} is empty")
    if not head.startswith(_CHECKPOINT_MAGIC):
        raise CheckpointError(
            f"{str(path)!r} is not a PyTorch checkpoint (neither torch.save's zip format nor a pickle; it begins {head!r})"
        )


def _unwrap(payload):
    """The flat state dict of a pysot / SNLT checkpoint, without DataParallel's "module." prefixes."""
    state = payload.get("state_dict", payload)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"the checkpoint's state_dict is a {type(state).__name__}, not a mapping")
    return {key.removeprefix("module."): value for key, value in state.items()}


# --------------------------------------------------------------------------- layouts


def _detect(state):
    if any(key.startswith("ban_head.") for key in state):
        if any(key.startswith("ban_head.corr_dw_cls.") for key in state):
            return "nanotrack_v3"
        return "nanotrack_v1" if any(key.startswith("ban_head.corr_pw.") for key in state) else "nanotrack_v2"
    if any(key.startswith("nl_multi_rpn.") for key in state):
        return "snlt_r50"
    if any(key.startswith("rpn_head.rpn2.") for key in state):
        return "siamrpn_r50_l234"
    alexnet = any(key.startswith(("backbone.features.", "backbone.layer5.")) for key in state)
    if alexnet and any(key.startswith("rpn_head.cls.") for key in state):
        return "siamrpn_alex"
    shown = ", ".join(list(state)[:8])
    raise CheckpointError(
        "checkpoint layout not recognised: expected pysot SiamRPN++ (rpn_head.rpn2.*), pysot SiamRPN AlexNet "
        f"(backbone.features.*, rpn_head.cls.*), published SNLT (nl_multi_rpn.*), NanoTrack (ban_head.*) or an snlt_fast "
        f"checkpoint; its first keys are {shown}"
    )


def _anchor_num(state, key):
    if key not in state:
        raise CheckpointError(f"checkpoint lacks {key}, from which the anchor count is read")
    return state[key].shape[0] // 2


# pysot's AlexNet (not "legacy") splits `features` into layer1..5: their first index in `features`.
_ALEXNET_LAYER_OFFSETS = {"1": 0, "2": 4, "3": 8, "4": 11, "5": 14}


def _pysot_alexnet_key(key):
    match = re.fullmatch(r"backbone\.layer([1-5])\.(\d+)\.(.+)", key)
    if match is None:
        return key
    layer, index, tail = match.groups()
    return f"backbone.features.{_ALEXNET_LAYER_OFFSETS[layer] + int(index)}.{tail}"


def _published_key(key):
    """Our name for a published SNLT key (unknown keys pass through, to be reported as unexpected)."""
    if key.startswith("adjustment_layer."):
        return "neck." + key.removeprefix("adjustment_layer.")
    if key.startswith("nl_multi_rpn.bert_model."):
        return ENCODER_PREFIX + "model." + key.removeprefix("nl_multi_rpn.bert_model.")
    level = re.fullmatch(r"nl_multi_rpn\.l(\d)_rpn\.(nl_)?(cls|reg)_(conv_kernel|conv_search|head)\.(.+)", key)
    if level is not None:
        index, language, branch, part, tail = level.groups()
        branch = "loc" if branch == "reg" else branch
        if language:
            return f"rpn_head.rpn{index}.nl_{branch}_{part}.{tail}"
        return f"rpn_head.rpn{index}.{branch}.{part}.{tail}"
    if re.fullmatch(r"nl_multi_rpn\.(nl_)?(cls|loc)_weight", key):
        return "rpn_head." + key.removeprefix("nl_multi_rpn.")
    return key


def _is_language_key(key):
    return key.startswith(("language.", "nl_head.")) or re.match(r"rpn_head\.(rpn\d\.)?nl_", key) is not None


# --------------------------------------------------------------------------- strict loading


def _listed(keys):
    shown = ", ".join(keys[:_LISTED_KEYS])
    return shown + (f" ... ({len(keys) - _LISTED_KEYS} more)" if len(keys) > _LISTED_KEYS else "")


def _load_strict(model, state, what, optional_prefix=None):
    """Load `state` into `model`, or a CheckpointError naming every key that does not fit.

    Keys under `optional_prefix` are a group the checkpoint may leave out entirely.
    """
    expected = model.state_dict()
    if optional_prefix and not any(key.startswith(optional_prefix) for key in state):
        expected = {k: v for k, v in expected.items() if not k.startswith(optional_prefix)}
    not_tensors = [key for key, value in state.items() if not isinstance(value, torch.Tensor)]
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    mis_shaped = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
        for k in expected
        if k in state and k not in not_tensors and state[k].shape != expected[k].shape
    ]
    problems = [
        f"{label}: {_listed(keys)}"
        for label, keys in (
            ("unexpected keys", unexpected),
            ("missing keys", missing),
            ("mis-shaped keys", mis_shaped),
            ("keys that are not tensors", not_tensors),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(f"{what} does not fit a {model.arch} model; " + "; ".join(problems))
    model.load_state_dict(state, strict=False)


# --------------------------------------------------------------------------- entry points


def _check_arch(arch, found, what):
    if arch is not None and arch not in ALL_ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ALL_ARCHS)}; got {arch!r}")
    if arch is not None and arch != found:
        raise CheckpointError(f"arch={arch!r} was asked for, but the checkpoint holds {what} ({found})")


def _build(config, backend):
    config = dict(config)
    family = NanoTrack if config.pop("family", "snlt") == "nanotrack" else SNLT
    try:
        return family(**config, backend=backend)
    except TypeError as error:
        raise CheckpointError(f"the checkpoint's model config {config} does not build a model: {error}") from error


def load_checkpoint(source, arch=None, *, language=None, backend=None, map_location="cpu", trusted=False):
    """The model held by a checkpoint (a path or a state dict), weights loaded, in eval mode.

    source    a checkpoint path, a state dict, or the (backbone, head) pair of NanoTrack
              ONNX files that cv2.TrackerNano loads.
    arch      expected architecture ("siamrpn_r50_l234", "siamrpn_alex", "snlt_r50",
              "snlt_alex", "nanotrack_v1", "nanotrack_v2", "nanotrack_v3"); a checkpoint
              holding another is an error.
    language  the sentence encoder (see SNLT). A published SNLT checkpoint needs the
              directory of the bert-base-uncased it was trained with (for the tokenizer;
              the weights come from the checkpoint), or False to load only its visual
              part. For our checkpoints it replaces the saved encoder spec (False drops
              the language branch). pysot checkpoints have no language branch; for a
              NanoTrack checkpoint it adds a language head, initialised from the visual
              head, for training.
    backend   the correlation backend of the returned model.
    trusted   allow checkpoints that pickle more than tensors (never for untrusted files).
    """
    if isinstance(source, (list, tuple)):
        return _load_onnx(source, arch, language, backend)
    payload = _read(source, map_location, trusted)
    if payload.get("format") == FORMAT:
        model = _load_ours(payload, arch, language, backend)
    else:
        model = _load_foreign(_unwrap(payload), arch, language, backend)
    return model.eval()


def _load_ours(payload, arch, language, backend):
    if payload.get("version") != FORMAT_VERSION:
        raise CheckpointError(f"snlt_fast checkpoint version {payload.get('version')!r} is not {FORMAT_VERSION}")
    config, state = dict(payload["config"]), dict(payload["state_dict"])
    if language is False or (language is None and config.get("language") is None):
        config["language"] = None
        state = {k: v for k, v in state.items() if not _is_language_key(k)}
    elif language is not None:
        config["language"] = language
    model = _build(config, backend)
    _check_arch(arch, model.arch, "an snlt_fast model")
    _load_strict(model, state, "snlt_fast checkpoint", optional_prefix=ENCODER_PREFIX)
    return model


def _load_onnx(paths, arch, language, backend):
    if len(paths) != 2:
        raise CheckpointError(f"ONNX weights are a pair of files (backbone, head); got {len(paths)} paths")
    if language not in (None, False):
        raise CheckpointError("NanoTrack's ONNX files hold no language head: load them without language=")
    try:
        model = load_onnx_pair(*paths, backend=backend)
    except OnnxWeightsError as error:
        raise CheckpointError(str(error)) from None
    _check_arch(arch, model.arch, "a NanoTrack model")
    return model.eval()


def _load_nanotrack(state, found, arch, language, backend):
    _check_arch(arch, found, "a NanoTrack model")
    model = _build({"family": "nanotrack", "version": NANOTRACK_ARCHS[found], "language": language or None}, backend)
    # The published tracker never calls the neck the checkpoints hold.
    state = {key: value for key, value in state.items() if not key.startswith("neck.")}
    _load_strict(model, state, "NanoTrack checkpoint", optional_prefix=("nl_head.", "language."))
    if model.has_language:
        model.start_language_head_from_visual()
    return model


def _load_foreign(state, arch, language, backend):
    found = _detect(state)
    if found in NANOTRACK_ARCHS:
        return _load_nanotrack(state, found, arch, language, backend)
    if found == "siamrpn_r50_l234":
        _check_arch(arch, found, "a pysot SiamRPN++ ResNet-50 model")
        config = {**ARCHS[found], "anchor_num": _anchor_num(state, "rpn_head.rpn2.cls.head.3.weight")}
        what = "pysot SiamRPN++ checkpoint"
    elif found == "siamrpn_alex":
        _check_arch(arch, found, "a pysot SiamRPN AlexNet model")
        state = {_pysot_alexnet_key(key): value for key, value in state.items()}
        config = {**ARCHS[found], "anchor_num": _anchor_num(state, "rpn_head.cls.head.3.weight")}
        what = "pysot SiamRPN checkpoint"
    else:
        _check_arch(arch, found, "a published SNLT model")
        anchor_num = _anchor_num(state, "nl_multi_rpn.l2_rpn.cls_head.3.weight")
        state = {_published_key(key): value for key, value in state.items()}
        config = {**ARCHS[found], "anchor_num": anchor_num, "language": _published_language(language)}
        what = "published SNLT checkpoint"
        if language is False:
            state = {k: v for k, v in state.items() if not _is_language_key(k)}
    if found != "snlt_r50" and language not in (None, False):
        raise CheckpointError(f"a {what} has no language branch: load it without language=")
    model = _build(config, backend)
    if model.language is not None:
        if model.language.encoder.dim != PUBLISHED_BERT_DIM:
            raise CheckpointError(
                f"the published SNLT language branch was trained on {PUBLISHED_BERT_DIM}-d bert-base-uncased "
                f"embeddings; language={language!r} gives {model.language.encoder.dim}-d ones"
            )
        model_keys = model.state_dict()
        # Older transformers saved BERT's position_ids buffer; newer ones rebuild it.
        state = {k: v for k, v in state.items() if k in model_keys or not k.endswith("embeddings.position_ids")}
    _load_strict(model, state, what, optional_prefix=ENCODER_PREFIX)
    return model


def _published_language(language):
    if language is None:
        raise CheckpointError(
            "a published SNLT checkpoint's language branch needs its BERT tokenizer: pass "
            "language='/path/to/bert-base-uncased' (a local Hugging Face directory), or language=False "
            "to load only the visual branch"
        )
    return None if language is False else language


def save_checkpoint(model, path):
    """Write `model` (weights and config) to `path` in our format; load it with load_checkpoint.

    A frozen sentence encoder's weights are left out (the config names where they come
    from); a fine-tuned one's are kept. The file is written atomically.
    """
    if not isinstance(model, (SNLT, NanoTrack)):
        raise TypeError(f"model must be an SNLT or a NanoTrack, got {type(model).__name__}")
    if isinstance(model, NanoTrack) and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules()):
        raise ValueError("this NanoTrack model has batch-norm folded (loaded from ONNX): save the .pth it came from")
    state = model.state_dict()
    if model.language is not None and model.language.encoder.frozen:
        state = {k: v for k, v in state.items() if not k.startswith(ENCODER_PREFIX)}
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": model.config(),
        "state_dict": {key: value.detach().cpu() for key, value in state.items()},
    }
    path = Path(path)
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


# --------------------------------------------------------------------------- for command-line tools


def resolve_device(name):
    """torch.device for a user's `name` (cpu or cuda; None: cuda when a GPU is visible)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device must be cpu or cuda, got {name!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda: no CUDA GPU is available here")
    return device


def open_model(weights, *, arch=None, language=None, device="cpu", trusted=False):
    """The model a user names: loaded from `weights`, or built with random weights
    (seeded, so runs repeat) when `weights` is None. Errors are one-line ValueErrors
    that name the argument; `trusted` is the command line's --trust-weights."""
    if arch is not None and arch not in ALL_ARCHS:
        raise ValueError(f"arch must be one of {', '.join(ALL_ARCHS)}; got {arch!r}")
    if weights is None:
        torch.manual_seed(0)
        if arch in NANOTRACK_ARCHS:
            return NanoTrack(NANOTRACK_ARCHS[arch]).to(device)
        return build_model(arch or "snlt_r50").to(device)
    paths = [weights] if isinstance(weights, (str, os.PathLike)) else list(weights)
    for path in paths:
        if not Path(path).is_file():
            raise ValueError(f"weights {path} does not exist or is not a file")
    if len(paths) > 2 or (len(paths) == 2) != all(str(path).endswith(".onnx") for path in paths):
        raise ValueError("weights must be one checkpoint file, or NanoTrack's two ONNX files (backbone.onnx head.onnx)")
    source = str(paths[0]) if len(paths) == 1 else [str(path) for path in paths]
    try:
        return load_checkpoint(source, arch, language=language, trusted=trusted).to(device)
    except UntrustedCheckpointError:
        raise ValueError(
            f"weights {weights} pickles objects besides tensors, and unpickling them can run code: "
            "add --trust-weights only if you trust where the file comes from"
        ) from None
    except (CheckpointError, ValueError) as error:
        raise ValueError(f"weights {weights}: {' '.join(str(error).split())}") from None
