"""Trackers by name for `snlt eval run`: "snlt", or any factory as "module:function"."""

import importlib
import sys

BUILTIN_TRACKERS = ("snlt",)


def tracker_label(spec):
    """The default results-folder name of a tracker spec ("snlt", "pkg.mod:make_x" -> "make_x")."""
    return spec.rsplit(":", 1)[-1]


def make_tracker(
    spec, weights=None, random_weights=False, device=None, arch=None, trusted=False, precision="exact", compile=False
):
    """A tracker object (with init and track) from a spec.

    "snlt": the SNLT tracker, from `weights` (None: the default model), or, with random_weights=True, from
    freshly initialised weights (for timing and smoke tests); `arch` is the
    architecture random weights are built for (default snlt_r50), or the one the
    weights must hold (see snlt_fast.models.ARCHS); `trusted` lets the weights file
    pickle objects besides tensors (see load_checkpoint); `precision` ("exact" or "fast")
    and `compile` are SNLTracker's. "module:function":
    `function` is imported from `module` and called with the keyword arguments
    weights= and device= that were given (none when neither was).
    """
    if weights is not None and random_weights:
        raise ValueError("give weights or random_weights, not both")
    if spec == "snlt":
        return _make_snlt(weights, random_weights, device, arch, trusted, {"precision": precision, "compile": compile})
    if arch is not None:
        raise ValueError("arch applies to the built-in snlt tracker only")
    if precision != "exact" or compile:
        raise ValueError("precision and compile apply to the built-in snlt tracker only")
    if ":" not in spec:
        raise ValueError(f"unknown tracker {spec!r}: expected one of {', '.join(BUILTIN_TRACKERS)} or module:function")
    if random_weights:
        raise ValueError("random weights apply to the built-in snlt tracker only")
    module_name, function_name = spec.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import tracker module {module_name!r}: {error}") from None
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise ValueError(f"module {module_name!r} has no callable {function_name!r}")
    options = {key: value for key, value in (("weights", weights), ("device", device)) if value is not None}
    tracker = factory(**options)
    missing = [method for method in ("init", "track") if not callable(getattr(tracker, method, None))]
    if missing:
        raise ValueError(f"{spec} returned {type(tracker).__name__}, which has no {' or '.join(missing)} method")
    return tracker


def _make_snlt(weights, random_weights, device, arch, trusted, tracker_options):
    from snlt_fast.models import DEFAULT_DESCRIPTION, load_default, open_model, resolve_device

    if weights is None and not random_weights:
        if arch is not None:
            raise ValueError("arch goes with weights or random weights (the default model is snlt_alex)")
        print(f"no weights given: tracking with {DEFAULT_DESCRIPTION}", file=sys.stderr)
        return _SNLTAdapter(load_default(device), False, tracker_options)
    model = open_model(weights, arch=arch, device=resolve_device(device), trusted=trusted)
    return _SNLTAdapter(model, random_weights, tracker_options)


class _SNLTAdapter:
    """SNLTracker for the runner: the sentence goes to the model only where it has a
    language branch; random weights get their batch-norm statistics fitted to the
    first frame the tracker sees, and no long-term mode (their low scores would
    send every video into the lost search, as in `snlt track`). `tracker_options` are
    SNLTracker's keyword arguments (precision, compile)."""

    def __init__(self, model, calibrate, tracker_options):
        self.model, self.calibrate, self.tracker_options, self.tracker = model, calibrate, tracker_options, None

    def init(self, frame, box, text):
        from snlt_fast.tracker import SNLTracker, calibrate_random_weights, default_config

        text = text if self.model.has_language else None
        if self.tracker is None:
            config = default_config(self.model)
            if self.calibrate:
                calibrate_random_weights(self.model, frame, box, text)
                config = config.replace(long_term=False)
            self.tracker = SNLTracker(self.model, config, **self.tracker_options)
        self.tracker.init(frame, box, text)

    def track(self, frame):
        return self.tracker.track(frame)
