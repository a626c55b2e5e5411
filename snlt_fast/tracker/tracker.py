"""SNLTracker: the SNLT tracker (SiamRPN++ without a sentence) with the per-frame
step kept on the model's device.

Per frame, for all targets at once: the search crops (one `grid_sample`), the
model's cached-template `track`, the fused `track_postprocess`, and the box update
(lr smoothing, clipping), all as tensor ops; the only host read is one small
[targets, 8] tensor holding each target's box, score, pscore and modality weights.

The state follows pysot's SiamRPNTracker and the published SNLT tracker: centre
(cx, cy) and size (w, h) in frame pixels, in float64 as numpy keeps them.
Long-term mode follows the published tracker's LOST state: a target whose mean best
pscore over the last `history` frames drops below `confidence_low` is searched in a
`lost_instance_size` crop with no scale/ratio penalty, window influence
`lost_window_influence` and rate `lost_lr`, until that mean rises above
`confidence_high`. (The published code centres the lost search on a randomly drawn
recent prediction; here it is the latest one, so that runs are repeatable.)
"""

import collections
import contextlib
import math
from typing import NamedTuple

import numpy as np
import torch

from snlt_fast.ops.anchors import generate_anchors, hanning_window
from snlt_fast.ops.postprocess import correctly_rounded_sqrt, track_postprocess
from snlt_fast.tracker.config import TrackerConfig
from snlt_fast.tracker.crop import channel_fill, crop_and_resize, frame_to_tensor
from snlt_fast.tracker.fast import check_precision, plan_fast
from snlt_fast.tracker.point import PointTracker

# Columns of the per-frame result read back to the host.
_RESULT_COLUMNS = ("x", "y", "w", "h", "score", "pscore", "w_vis", "w_nl")


class NonFiniteOutputError(ValueError):
    """The network's outputs for a frame were not finite (an untrained or broken model), so
    no box could be given. `frame` counts the frames since init (the first tracked is 1),
    `target` is the target's index, `heads` the outputs that held NaN or inf, `reason`
    the message without the frame and target."""

    def __init__(self, frame, target, heads):
        self.frame, self.target, self.heads = frame, target, heads
        if heads:
            self.reason = f"the network's {' and '.join(heads)} head output went non-finite (NaN or inf)"
        else:
            self.reason = "the box decoded from the loc head overflowed (the head's values are far too large)"
        super().__init__(
            f"frame {frame}, target {target}: {self.reason}; are the weights trained? "
            "(untrained ones need calibrate_random_weights first)"
        )


class TargetResult(NamedTuple):
    """One target in one frame: box (x, y, w, h) in frame pixels, the fused score at the
    chosen anchor, its penalised score, the weights of the visual and language heads,
    and whether the target is in long-term (LOST) search."""

    box: tuple
    score: float
    pscore: float
    w_vis: float
    w_nl: float
    lost: bool


def _parse_targets(box, text):
    """(boxes [N, 4] as float tuples, texts list or None, single) from init's arguments."""
    single = len(box) == 4 and all(isinstance(v, (int, float)) or getattr(v, "ndim", 1) == 0 for v in box)
    boxes = [box] if single else list(box)
    texts = [text] if single or isinstance(text, str) else text
    if texts is not None and (len(texts) != len(boxes)):
        raise ValueError(f"text must give one sentence per box: got {len(boxes)} boxes and {len(texts)} sentences")
    parsed = []
    for index, one in enumerate(boxes):
        values = tuple(float(v) for v in one)
        if len(values) != 4:
            raise ValueError(f"box {index} must be (x, y, w, h), got {one!r}")
        if not all(v == v and abs(v) != float("inf") for v in values):
            raise ValueError(f"box {index} must hold finite numbers, got {values}")
        if values[2] <= 0 or values[3] <= 0:
            raise ValueError(f"box {index} must have a positive width and height, got {values}")
        parsed.append(values)
    if not parsed:
        raise ValueError("init needs at least one box")
    if texts is not None:
        if any(t is None for t in texts):
            if any(t is not None for t in texts):
                raise ValueError("give a sentence for every target or for none of them")
            texts = None
        elif not all(isinstance(t, str) and t.strip() for t in texts):
            raise ValueError(f"text must be non-empty strings, got {texts!r}")
    return parsed, texts, single


class SNLTracker:
    """The SNLT tracker on `model` (an snlt_fast.models.SNLT or NanoTrack, or one loaded with load_checkpoint).

    config      TrackerConfig; default: pysot's values for a visual-only model with 5
                anchors per cell (a pysot checkpoint), the published NanoTrack tracker's
                for a NanoTrack model (TrackerConfig.nanotrack; profile="opencv" gives
                cv2.TrackerNano's boxes), else the published SNLT values.
    reference   run the model and the post-processing on the pure-PyTorch reference
                ops (the specification), for checking; same as backend="reference".
    backend     the backend of the correlations and the post-processing (None: fastest).
    cuda_graph  on a CUDA device, capture the per-frame step once and replay it.
    precision   "exact" (default): the model as given, every op bit for bit as its reference;
                "fast": a deployment copy with batch-norm folded, channels-last, and bfloat16
                (CPUs with AMX / AVX-512 BF16) or float16 (GPUs) autocast, whose boxes agree
                with "exact" to the tolerance docs/tracker.md states (see snlt_fast.tracker.fast).
    compile     with precision="fast": compile the search side of the step (inductor, frozen
                weights) when tracking starts; `compile_seconds` says how long that took.
    """

    def __init__(
        self, model, config=None, *, reference=False, backend=None, cuda_graph=False, precision="exact", compile=False
    ):
        if reference and backend not in (None, "reference"):
            raise ValueError(f"reference=True runs the reference backend; it cannot be combined with backend={backend!r}")
        self.precision = check_precision(precision)
        if compile and precision != "fast":
            raise ValueError(f"compile=True needs precision='fast' (the exact mode runs the model as given), got {precision!r}")
        if compile and cuda_graph:
            raise ValueError("compile=True and cuda_graph=True are two ways to run the step: choose one")
        self.config = config if config is not None else default_config(model)
        self.device = next(model.parameters()).device
        self.compile_seconds = 0.0
        if precision == "fast":
            plan = plan_fast(model, compile=compile)
            model, self._autocast = plan.model, lambda: plan.autocast(self.device)
        else:
            self._autocast = contextlib.nullcontext
        self.model = model.eval()
        self._memory_format = torch.channels_last if precision == "fast" else torch.contiguous_format
        if not isinstance(self.config, TrackerConfig):
            raise TypeError(f"config must be a TrackerConfig, got {type(self.config).__name__}")
        self.backend = "reference" if reference else backend
        self._initialized = False
        self._point = None
        if getattr(model, "head_form", "anchor") == "point":
            if cuda_graph:
                raise ValueError(f"cuda_graph=True is not available for {model.arch} models (their crops are cut on the host)")
            self._point = PointTracker(model, self.config, self.backend, self._autocast)
            return
        if self.config.profile != "pysot":
            raise ValueError(f"profile {self.config.profile!r} is for NanoTrack models; a {model.arch} model uses 'pysot'")
        if self.config.anchor_num != model.anchor_num:
            raise ValueError(
                f"config has {self.config.anchor_num} anchors per cell ({len(self.config.anchor_ratios)} ratios x "
                f"{len(self.config.anchor_scales)} scales) but the model predicts {model.anchor_num}"
            )
        if cuda_graph and self.device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs a model on a CUDA device, got {self.device}")
        self.cuda_graph = cuda_graph
        # A device scalar made once: one made per frame would be a synchronising copy
        # (and cannot be captured in a CUDA graph).
        self._exemplar_side = torch.tensor(float(model.exemplar_size), dtype=torch.float64, device=self.device)
        self._anchor_cache = {}
        self._graph = None

    # ------------------------------------------------------------------ set-up

    def init(self, frame, box, text=None):
        """Start tracking in `frame` (HxWx3 uint8 BGR) the target(s) `box` = (x, y, w, h)
        described by `text` (None: visual only); or N boxes and N sentences (a list each)."""
        boxes, texts, self._single = _parse_targets(box, text)
        if self._point is not None:
            frame = _host_frame(frame)
            self._frame_shape, self._frame_index = frame.shape, 0
            with torch.inference_mode():
                self._point.init(frame, boxes, texts)
                self._warm_up(len(boxes))
            self.has_text = texts is not None
            self._heads = ("cls", "loc", "nl_cls", "nl_loc") if self.has_text else ("cls", "loc")
            self._lost = [False] * len(boxes)
            self._initialized = True
            return
        with torch.inference_mode():
            self._init_state(frame_to_tensor(frame, self.device), boxes, texts)
            self._warm_up(len(boxes))
        self._initialized = True

    def _warm_up(self, batch):
        """Compile the search step now, at init, rather than on the first tracked frame, in the
        backend and autocast that the step runs in."""
        step = self.model.track
        if not hasattr(step, "warm_up"):
            return
        template = self._point.template if self._point is not None else self._template
        with self._model_backend(), self._autocast():
            self.compile_seconds += step.warm_up(template, batch)

    def _init_state(self, frame, boxes, texts):
        self._frame_shape = tuple(frame.shape)
        self._frame_limits = torch.tensor(
            [frame.shape[1], frame.shape[0]], dtype=torch.float64, device=self.device
        )
        boxes = torch.tensor(boxes, dtype=torch.float64, device=self.device)
        # pysot's centre of a 0-based box: x + (w - 1) / 2.
        self._centers = boxes[:, :2] + (boxes[:, 2:] - 1) / 2
        self._sizes = boxes[:, 2:].clone()
        self._fill = channel_fill(frame)
        exemplar = self.model.exemplar_size
        template_sizes = torch.round(self._template_side(self._sizes))
        z_crops = crop_and_resize(frame, self._centers, template_sizes, exemplar, self._fill)
        z_crops = z_crops.contiguous(memory_format=self._memory_format)
        with self._model_backend(), self._autocast():
            # Kept here, not only in the model, so that several trackers can share one model.
            self._template = self.model.template(z_crops, texts)
        self.has_text = texts is not None
        self._heads = ("cls", "loc", "nl_cls", "nl_loc") if self.has_text else ("cls", "loc")
        count = len(boxes)
        self._lost = [False] * count
        # The published tracker seeds each target's history with a best score of 1.
        self._history = [collections.deque([1.0], maxlen=self.config.history) for _ in range(count)]
        self._graph = None
        self._frame_index = 0

    def _template_side(self, sizes):
        """sqrt((w + c(w+h)) (h + c(w+h))): the side of the template square, before rounding."""
        context = self.config.context_amount * sizes.sum(dim=1, keepdim=True)
        padded = sizes + context
        # As pysot's np.sqrt rounds: torch's CPU sqrt is an ulp off for some inputs, and the scale
        # derived from this side would then move a box by that ulp.
        return correctly_rounded_sqrt(padded[:, 0] * padded[:, 1])

    @contextlib.contextmanager
    def _model_backend(self):
        if self.backend is None:
            yield
        else:
            with self.model.using_backend(self.backend):
                yield

    def _anchors(self, score_size):
        """Anchors and window for a score map of side `score_size` (the model's output sets it)."""
        if score_size not in self._anchor_cache:
            config = self.config
            anchors = generate_anchors(
                config.anchor_stride, list(config.anchor_ratios), list(config.anchor_scales), score_size,
                device=self.device,
            )  # fmt: skip
            self._anchor_cache[score_size] = (anchors, hanning_window(score_size, config.anchor_num, device=self.device))
        return self._anchor_cache[score_size]

    # ------------------------------------------------------------------ per frame

    def _step(self, frame, lost):
        """One step for every target in one mode (stable or lost), all on the device.

        Returns (new centres, new sizes, result [N, 8 + heads] float64: _RESULT_COLUMNS,
        then 1.0 or 0.0 per head output for whether it was all finite).
        """
        config = self.config
        exemplar = self.model.exemplar_size
        instance = config.lost_instance_size if lost else self.model.instance_size
        template_side = self._template_side(self._sizes)
        # As pysot divides: `exemplar / tensor` would multiply by a rounded reciprocal.
        scale = self._exemplar_side / template_side
        search_sizes = torch.round(template_side * (instance / exemplar))
        crops = crop_and_resize(frame, self._centers, search_sizes, instance, self._fill)
        crops = crops.contiguous(memory_format=self._memory_format)
        with self._model_backend(), self._autocast():
            heads = self.model.track(crops, self._template)
        anchors, window = self._anchors(heads["cls"].shape[-1])
        best = track_postprocess(
            heads["cls"], heads.get("nl_cls"), heads["loc"], heads.get("nl_loc"), anchors, window,
            self._sizes * scale[:, None],
            alpha=config.alpha,
            penalty_k=0.0 if lost else config.penalty_k,
            window_influence=config.lost_window_influence if lost else config.window_influence,
            lr=config.lost_lr if lost else config.lr,
            lr_mode="snlt" if lost else config.lr_mode,
            backend=self.backend,
        )  # fmt: skip
        box = best.box.to(torch.float64) / scale[:, None]
        lr = best.lr.to(torch.float64)[:, None]
        centers = self._centers + box[:, :2]
        sizes = self._sizes * (1 - lr) + box[:, 2:] * lr
        # pysot's clip: centre into [0, frame size], size into [min_size, frame size].
        centers = torch.minimum(centers, self._frame_limits).clamp(min=0)
        sizes = torch.minimum(sizes, self._frame_limits).clamp(min=config.min_size)
        stats = torch.stack((best.score, best.pscore, best.w_vis, best.w_nl), dim=1).to(torch.float64)
        finite = torch.stack([heads[name].flatten(1).isfinite().all(dim=1) for name in self._heads], dim=1)
        return centers, sizes, torch.cat((centers - sizes / 2, sizes, stats, finite.to(torch.float64)), dim=1)

    def _stable_step_in_place(self, frame):
        """The all-targets stable step writing the new state into the state tensors (what a CUDA graph captures)."""
        centers, sizes, result = self._step(frame, lost=False)
        self._centers.copy_(centers)
        self._sizes.copy_(sizes)
        return result

    def track(self, frame):
        """Track in the next frame; a TargetResult, or a list of them when init was given a list of targets."""
        if not self._initialized:
            raise RuntimeError("call init(frame, box, text) before track(frame)")
        if self._point is not None:
            return self._track_points(frame)
        frame = frame_to_tensor(frame, self.device)
        if tuple(frame.shape) != self._frame_shape:
            raise ValueError(f"frame has shape {tuple(frame.shape)} but the first frame had {self._frame_shape}")
        with torch.inference_mode():
            if not any(self._lost):
                result = self._replay(frame) if self.cuda_graph else self._stable_step_in_place(frame)
            else:
                result = self._mixed_step(frame)
            values = result.cpu().tolist()  # the one host read per frame
        self._frame_index += 1
        results = [self._finish(target, row) for target, row in enumerate(values)]
        return results[0] if self._single else results

    def _track_points(self, frame):
        frame = _host_frame(frame)
        if frame.shape != self._frame_shape:
            raise ValueError(f"frame has shape {frame.shape} but the first frame had {self._frame_shape}")
        with torch.inference_mode():
            boxes, stats, finite = self._point.track(frame)
        self._frame_index += 1
        results = [self._finish(t, [*box, *stat, *flags]) for t, (box, stat, flags) in enumerate(zip(boxes, stats, finite))]
        return results[0] if self._single else results

    def _mixed_step(self, frame):
        """Some targets lost: one batched step per mode in use, each target keeping its own mode's result."""
        lost = torch.tensor(self._lost)[:, None].to(self.device, non_blocking=True)  # no stream sync
        steps = {mode: self._step(frame, lost=mode) for mode in set(self._lost)}
        stable, lost_step = steps.get(False), steps.get(True)
        if stable is None:
            centers, sizes, result = lost_step
        else:
            centers, sizes, result = (torch.where(lost, b, a) for a, b in zip(stable, lost_step))
        self._centers.copy_(centers)
        self._sizes.copy_(sizes)
        return result

    def _finish(self, target, row):
        values = dict(zip(_RESULT_COLUMNS, row))
        broken = [name for name, finite in zip(self._heads, row[len(_RESULT_COLUMNS) :]) if not finite]
        if broken or not all(math.isfinite(value) for value in values.values()):
            raise NonFiniteOutputError(self._frame_index, target, broken)
        was_lost = self._lost[target]
        if self.config.long_term:
            history = self._history[target]
            history.append(values["pscore"])
            mean = sum(history) / len(history)
            if was_lost and mean > self.config.confidence_high:
                self._lost[target] = False
            elif not was_lost and mean < self.config.confidence_low:
                self._lost[target] = True
        return TargetResult(
            (values["x"], values["y"], values["w"], values["h"]),
            values["score"], values["pscore"], values["w_vis"], values["w_nl"], was_lost,
        )  # fmt: skip

    # ------------------------------------------------------------------ CUDA graph

    def _replay(self, frame):
        if self._graph is None:
            self._capture(frame)
        self._graph_frame.copy_(frame)
        self._graph.replay()
        return self._graph_result

    def _capture(self, frame):
        """Capture the stable step for this frame size; the warm-up runs leave the state as it was."""
        self._graph_frame = frame.clone()
        saved = (self._centers.clone(), self._sizes.clone())
        side_stream = torch.cuda.Stream(self.device)
        side_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side_stream):
            for _ in range(3):
                self._stable_step_in_place(self._graph_frame)
                self._centers.copy_(saved[0])
                self._sizes.copy_(saved[1])
        torch.cuda.current_stream(self.device).wait_stream(side_stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._graph_result = self._stable_step_in_place(self._graph_frame)
        self._centers.copy_(saved[0])
        self._sizes.copy_(saved[1])
        self._graph = graph


def _host_frame(frame):
    """A checked frame as a host numpy array (the point-form trackers crop with OpenCV)."""
    return np.ascontiguousarray(frame_to_tensor(frame, "cpu").numpy())


def default_config(model, profile=None):
    """The tracker for `model`: its family's (below), with the tracker values it was tuned
    with over them (its `tracker_values`, as the default model has)."""
    return _family_config(model, profile).replace(**getattr(model, "tracker_values", {}))


def _family_config(model, profile):
    """NanoTrack's tracker for a NanoTrack model (`profile` "siamtrackers", the default, or
    "opencv"); pysot's tracker values for a visual-only, 5-anchor model (a pysot checkpoint);
    SNLT's otherwise; with the anchors the model was trained with, where it says."""
    if getattr(model, "head_form", "anchor") == "point":
        return TrackerConfig.nanotrack(model.version, profile or "siamtrackers")
    language = getattr(model, "has_language", True)
    anchors = {}
    if getattr(model, "anchor_scales", None):
        anchors = {"anchor_ratios": tuple(model.anchor_ratios), "anchor_scales": tuple(model.anchor_scales)}
    if model.anchor_num == 5 and not language:
        return TrackerConfig.pysot("alexnet" if "alex" in str(getattr(model, "arch", "")) else "resnet50", **anchors)
    return TrackerConfig.snlt(**anchors)
