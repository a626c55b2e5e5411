"""Training configs: YAML files checked against one schema, with command-line overrides.

A config is a tree of sections (model, data, targets, loss, optimizer, schedule,
train); `SCHEMA` below lists every key, its type and its default, so a config file
names only what it changes. Unknown keys and values of the wrong type are a
ConfigError naming the key. The configs shipped with the package (`bundled_names()`) are
found by name, so `snlt train --config synthetic-tiny` works after `pip install`.
"""

import copy
import importlib.resources
from pathlib import Path

import yaml

from snlt_fast.nn.rpn import LANGUAGE_FEATURES


class ConfigError(ValueError):
    """A config that does not fit the schema; the message names the key."""


class Field:
    """One leaf of the schema: the accepted types, the default, and optional allowed values."""

    def __init__(self, types, default, choices=None, nullable=False):
        self.types = types if isinstance(types, tuple) else (types,)
        self.default, self.choices, self.nullable = default, choices, nullable

    def check(self, key, value):
        if value is None and self.nullable:
            return None
        if float in self.types and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)  # YAML reads 1 as an int where a float is meant
        if isinstance(value, bool) and bool not in self.types or not isinstance(value, self.types):
            names = " or ".join(t.__name__ for t in self.types) + (" or null" if self.nullable else "")
            raise ConfigError(f"{key} must be {names}, got {value!r} ({type(value).__name__})")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{key} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        return value


def _augmentation(shift, scale, blur, flip, color):
    return {
        "shift": Field(float, shift),
        "scale": Field(float, scale),
        "blur": Field(float, blur),
        "flip": Field(float, flip),
        "color": Field(float, color),
    }


# One entry of data.datasets; "options" go to the dataset's reader unchecked here (the
# reader names a wrong one).
DATASET_ENTRY = {
    "name": Field(str, None),
    "root": Field(str, None, nullable=True),
    "weight": Field(float, 1.0),
    "frame_range": Field(int, 100),
    "options": Field(dict, {}),
}

PARTS = ("backbone", "neck", "visual_head", "language_head", "language_projection")
PRECISIONS = ("fp32", "bf16", "fp16")

SCHEMA = {
    "seed": Field(int, 123456),
    "device": Field(str, "cpu", choices=("cpu", "cuda")),
    "precision": Field(str, "fp32", choices=PRECISIONS),
    "model": {
        "arch": Field(str, "snlt_alex"),
        "language": Field(str, "minilm", nullable=True),
        "width": Field(float, 1.0),
        "hidden": Field(int, 256),
        "language_features": Field(str, "shared", choices=LANGUAGE_FEATURES),
        "anchor_ratios": Field(list, [0.33, 0.5, 1, 2, 3]),
        "anchor_scales": Field(list, [4, 8, 16]),
        "init_from": Field(str, None, nullable=True),
        "frozen": Field(list, []),
        "backbone_from_epoch": Field(int, 0),
        "backbone_layers": Field(list, []),
        "backbone_lr_scale": Field(float, 1.0),
        "sync_batchnorm": Field(bool, True),
        "train_language_encoder": Field(bool, False),
    },
    "data": {
        "datasets": Field(list, []),
        "negative_prob": Field(float, 0.2),
        "lookalike_prob": Field(float, 0.0),
        "gray_prob": Field(float, 0.0),
        "exemplar_size": Field(int, 127),
        "search_size": Field(int, 255),
        "context": Field(float, 0.5),
        "workers": Field(int, 0),
        "template": _augmentation(4.0, 0.05, 0.0, 0.0, 1.0),
        "search": _augmentation(64.0, 0.18, 0.0, 0.0, 1.0),
    },
    "targets": {
        "positive_iou": Field(float, 0.6),
        "negative_iou": Field(float, 0.3),
        "positive_num": Field(int, 16),
        "total_num": Field(int, 64),
    },
    "loss": {
        "cls_weight": Field(float, 1.0),
        "loc_weight": Field(float, 1.2),
        "lookalike_weight": Field(float, 0.0),
        "skip_above": Field(float, 1e4),
    },
    "optimizer": {
        "name": Field(str, "sgd", choices=("sgd", "adagrad", "adam")),
        "momentum": Field(float, 0.9),
        "weight_decay": Field(float, 1e-4),
        "clip_grad_norm": Field(float, 10.0, nullable=True),
    },
    "schedule": {
        "lr": Field(float, 0.005),
        "kind": Field(str, "constant", choices=("constant", "step", "log")),
        "end_lr": Field(float, 0.0005),
        "milestones": Field(list, []),
        "gamma": Field(float, 0.1),
        "warmup_epochs": Field(int, 0),
        "warmup_start_lr": Field(float, 0.001),
    },
    "train": {
        "batch_size": Field(int, 32),
        "epochs": Field(int, 20),
        "steps_per_epoch": Field(int, 1000),
        "checkpoint_every": Field(int, 500),
        "log_every": Field(int, 1),
        "deterministic": Field(bool, True),
    },
}

def _bundled_folder():
    """The configs shipped inside the package (package data of snlt_fast.training)."""
    return importlib.resources.files("snlt_fast.training") / "configs"


def bundled_names():
    """The names of the configs shipped with the package."""
    folder = _bundled_folder()
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def defaults():
    """The whole config tree with every default."""

    def fill(spec):
        return {k: fill(v) if isinstance(v, dict) else copy.deepcopy(v.default) for k, v in spec.items()}

    return fill(SCHEMA)


def _read_yaml(text, where):
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{where}: not valid YAML ({' '.join(str(error).split())})") from None
    if tree is None:
        return {}
    if not isinstance(tree, dict):
        raise ConfigError(f"{where}: a config is a mapping of sections, got {type(tree).__name__}")
    return tree


def read_config_file(name_or_path):
    """The raw tree of a bundled config (by name) or of a YAML file (by path)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"config file {path}: cannot be read as UTF-8 text ({error.__class__.__name__})") from None
        return _read_yaml(text, f"config file {path}")
    if name_or_path not in bundled_names():
        raise ConfigError(
            f"config {name_or_path!r} is neither a YAML file nor a bundled config ({', '.join(bundled_names())})"
        )
    text = _bundled_folder().joinpath(f"{name_or_path}.yaml").read_text(encoding="utf-8")
    return _read_yaml(text, f"bundled config {name_or_path}")


def _merge(spec, base, update, prefix):
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in spec:
            known = ", ".join(spec)
            raise ConfigError(f"unknown config key {path} (known keys{' of ' + prefix[:-1] if prefix else ''}: {known})")
        if isinstance(spec[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{path} is a section: give it a mapping, got {value!r}")
            _merge(spec[key], base[key], value, f"{path}.")
        else:
            base[key] = spec[key].check(path, value)


def _check_datasets(entries):
    checked = []
    for index, entry in enumerate(entries):
        where = f"data.datasets.{index}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping with name, root, weight, frame_range, options; got {entry!r}")
        full = {k: copy.deepcopy(v.default) for k, v in DATASET_ENTRY.items()}
        _merge(DATASET_ENTRY, full, entry, f"{where}.")
        if full["name"] is None:
            raise ConfigError(f"{where}.name is missing")
        if full["weight"] <= 0:
            raise ConfigError(f"{where}.weight must be positive, got {full['weight']}")
        if full["frame_range"] < 0:
            raise ConfigError(f"{where}.frame_range must be at least 0, got {full['frame_range']}")
        checked.append(full)
    return checked


def _check_values(config):
    """Constraints between keys, and ranges that types alone do not state."""
    train, data, targets = config["train"], config["data"], config["targets"]
    for key in ("batch_size", "epochs", "steps_per_epoch", "checkpoint_every", "log_every"):
        if train[key] < 1:
            raise ConfigError(f"train.{key} must be at least 1, got {train[key]}")
    for key in ("negative_prob", "lookalike_prob", "gray_prob"):
        if not 0 <= data[key] <= 1:
            raise ConfigError(f"data.{key} must be a probability in [0, 1], got {data[key]}")
    for side in ("template", "search"):
        for key in ("blur", "flip", "color"):
            if not 0 <= data[side][key] <= 1:
                raise ConfigError(f"data.{side}.{key} must be a probability in [0, 1], got {data[side][key]}")
    if config["loss"]["lookalike_weight"] < 0:
        raise ConfigError(f"loss.lookalike_weight must be at least 0, got {config['loss']['lookalike_weight']}")
    if data["exemplar_size"] >= data["search_size"]:
        raise ConfigError(f"data.search_size ({data['search_size']}) must exceed data.exemplar_size ({data['exemplar_size']})")
    if not 0 <= targets["negative_iou"] <= targets["positive_iou"] <= 1:
        raise ConfigError("targets need 0 <= negative_iou <= positive_iou <= 1")
    if not 0 < targets["positive_num"] <= targets["total_num"]:
        raise ConfigError("targets need 0 < positive_num <= total_num")
    for part in config["model"]["frozen"]:
        if part not in PARTS:
            raise ConfigError(f"model.frozen holds {part!r}; parts are {', '.join(PARTS)}")
    for key in ("anchor_ratios", "anchor_scales", "milestones"):
        section = "schedule" if key == "milestones" else "model"
        values = config[section][key]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ConfigError(f"{section}.{key} must be a list of numbers, got {values!r}")
    if config["schedule"]["lr"] <= 0:
        raise ConfigError(f"schedule.lr must be positive, got {config['schedule']['lr']}")
    data["datasets"] = _check_datasets(data["datasets"])
    if not data["datasets"]:
        raise ConfigError("data.datasets is empty: name at least one dataset to train on")


def parse_override(text):
    """`key.path=value` from the command line, the value read as YAML (so 3 is an int, [1, 2] a list)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.batch_size=16")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: the key is empty")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def _apply_override(tree, path, value, text):
    node = tree
    for depth, part in enumerate(path[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"--set {text}: {'.'.join(path[: depth + 1])} is not an entry of a {len(node)}-entry list")
            node = node[int(part)]
            continue
        node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(f"--set {text}: {'.'.join(path[: depth + 1])} is a value, not a section")
    last = path[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"--set {text}: {'.'.join(path)} is not an entry of a {len(node)}-entry list")
        node[int(last)] = value
    else:
        node[last] = value


def load_config(name_or_path, overrides=()):
    """The resolved config: defaults, then the file, then each `key=value` override, checked."""
    raw = read_config_file(name_or_path)
    config = defaults()
    _merge(SCHEMA, config, raw, "")
    for text in overrides:
        path, value = parse_override(text)
        _apply_override(config, path, value, text)
    return resolve(config)


def resolve(tree):
    """Check an already loaded tree (e.g. a run's saved config.yaml) against the schema."""
    config = defaults()
    _merge(SCHEMA, config, tree, "")
    _check_values(config)
    return config


def dump(config):
    return yaml.safe_dump(config, sort_keys=False)
