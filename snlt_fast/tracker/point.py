"""The per-frame step of anchor-free (point-form) Siamese trackers: NanoTrack V1-V3, with
or without a language head, in the two profiles of TrackerConfig.nanotrack.

"siamtrackers" is the published NanoTrack tracker: BGR input, centre x + (w - 1) / 2,
crop sides rounded, crop origin floor(c - (side + 1) / 2 + 0.5), the first frame's
channel mean (truncated) as padding, points relative to the crop centre, the plain
outer-product Hanning window, float64 state, float boxes.

"opencv" is OpenCV 5.1's cv2.TrackerNano, step for step: RGB input, centre x + w / 2,
crop sides truncated, crop origin int(c) - int((side + 1) / 2), the current frame's
channel mean (rounded) as padding, absolute crop points, cv2.createHanningWindow (the
square root of the outer product), float32 arithmetic throughout, and boxes truncated
to integers on output.

Crops are cut and resized with OpenCV on the host (exactly as both trackers do), and the
network and the fused post-processing run on the model's device, all targets at once.
"""

import contextlib
import math

import cv2
import numpy as np
import torch

from snlt_fast.ops.postprocess_points import track_postprocess_points

PROFILES = ("siamtrackers", "opencv")


def nanotrack_points(score_size, stride, absolute, exemplar_size):
    """The cell positions [2, S, S] (px, py) in crop pixels: relative to the crop centre
    (the published tracker), or absolute, shifted by the exemplar centre (OpenCV)."""
    offsets = (np.arange(score_size) - score_size // 2) * stride + (exemplar_size if absolute else 0)
    px, py = np.meshgrid(offsets, offsets)
    return np.stack((px, py))


def nanotrack_window(score_size, profile):
    if profile == "opencv":
        return cv2.createHanningWindow((score_size, score_size), cv2.CV_32F)
    hanning = np.hanning(score_size)
    return np.outer(hanning, hanning)


class PointTracker:
    """Tracks B targets with a point-form model; `SNLTracker` delegates to it for such models."""

    def __init__(self, model, config, backend, autocast):
        if config.profile not in PROFILES:
            raise ValueError(
                f"a {model.arch} model needs a NanoTrack profile: TrackerConfig.nanotrack(version, profile=...) with "
                f"profile one of {', '.join(PROFILES)}; got profile {config.profile!r}"
            )
        self.model, self.config, self.backend = model, config, backend
        self._autocast = autocast
        self.opencv = config.profile == "opencv"
        self.dtype = np.float32 if self.opencv else np.float64
        parameter = next(model.parameters())
        self.device, self._model_dtype = parameter.device, parameter.dtype
        score_size = model.score_size
        tensor_dtype = torch.float32 if self.opencv else torch.float64
        points = nanotrack_points(score_size, model.stride, self.opencv, model.exemplar_size)
        self._points = torch.as_tensor(points, dtype=tensor_dtype, device=self.device)
        self._window = torch.as_tensor(nanotrack_window(score_size, config.profile), dtype=tensor_dtype, device=self.device)
        self._center = float(model.exemplar_size) if self.opencv else 0.0

    # ------------------------------------------------------------------ crops

    def _crop(self, frame, center, side, out_size, fill):
        """The square of `side` pixels around `center`, padded with `fill`, resized to out_size."""
        height, width = frame.shape[:2]
        if self.opencv:
            # OpenCV: int(cx) - int((side + 1) / 2).
            half = (side + 1) // 2
            x0, y0 = int(center[0]) - half, int(center[1]) - half
        else:
            half = (side + 1) / 2
            x0, y0 = math.floor(center[0] - half + 0.5), math.floor(center[1] - half + 0.5)
        x1, y1 = x0 + side, y0 + side
        inside = frame[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)]
        pads = (max(0, -y0), max(0, y1 - height), max(0, -x0), max(0, x1 - width))
        patch = cv2.copyMakeBorder(inside, *pads, cv2.BORDER_CONSTANT, value=fill) if any(pads) else inside
        if self.opencv or side != out_size:
            patch = cv2.resize(patch, (out_size, out_size))
        return patch

    def _crops(self, frame, sides, out_size):
        # OpenCV pads with the current frame's mean (rounded by copyMakeBorder), the published
        # tracker with the first frame's.
        fill = cv2.mean(frame)[:3] if self.opencv else self._fill
        patches = [self._crop(frame, c, int(side), out_size, fill) for c, side in zip(self._centers, sides)]
        if self.opencv:
            # OpenCV's blobFromImage(swapRB=true); cvtColor swaps channels ten times faster than numpy's [..., ::-1] copy.
            patches = [cv2.cvtColor(patch, cv2.COLOR_BGR2RGB) for patch in patches]
        batch = torch.from_numpy(np.stack(patches)).to(self.device, non_blocking=True)
        # The host crops' own layout (channels last) in both modes: PyTorch's CPU convolutions
        # take it several times faster than a contiguous NCHW copy of it.
        return batch.permute(0, 3, 1, 2).to(self._model_dtype)

    def _side(self, sizes):
        """sqrt((w + c(w+h)) (h + c(w+h))) per target, in the profile's precision."""
        context = self.config.context_amount * sizes.sum(axis=1, keepdims=True)
        padded = sizes + context
        return np.sqrt(padded[:, 0] * padded[:, 1])

    # ------------------------------------------------------------------ tracking

    def init(self, frame, boxes, texts):
        boxes = np.asarray(boxes, dtype=self.dtype)
        offset = boxes[:, 2:] * self.dtype(0.5) if self.opencv else (boxes[:, 2:] - 1) / 2
        self._centers = boxes[:, :2] + offset
        self._sizes = boxes[:, 2:].copy()
        self._frame_limits = np.array([frame.shape[1], frame.shape[0]], dtype=self.dtype)
        # The published tracker pads every crop with the first frame's mean, as uint8 stores it.
        self._fill = tuple(np.floor(frame.reshape(-1, 3).mean(axis=0)).tolist())
        sides = self._side(self._sizes)
        sides = np.trunc(sides) if self.opencv else np.round(sides)
        crops = self._crops(frame, sides, self.model.exemplar_size)
        with self._model_backend():
            self.template = self.model.template(crops, texts)
        self.has_text = texts is not None

    @contextlib.contextmanager
    def _model_backend(self):
        # Switching backends walks every module: only when one was asked for.
        backend = self.model.using_backend(self.backend) if self.backend is not None else contextlib.nullcontext()
        with backend, self._autocast():
            yield

    def track(self, frame):
        """(boxes [B, 4] (x, y, w, h), rows of score, pscore, w_vis, w_nl, finite flags) for the next frame."""
        config, model = self.config, self.model
        side = self._side(self._sizes)
        scale = self.dtype(model.exemplar_size) / side
        ratio = self.dtype(model.instance_size / model.exemplar_size)
        search = side * ratio
        search = np.trunc(search) if self.opencv else np.round(search)
        crops = self._crops(frame, search, model.instance_size)
        with self._model_backend():
            heads = model.track(crops, self.template)
        tensor_dtype = self._points.dtype
        target_size = torch.as_tensor(self._sizes * scale[:, None], device=self.device)
        best = track_postprocess_points(
            heads["cls"].to(tensor_dtype), _optional(heads.get("nl_cls"), tensor_dtype),
            heads["loc"].to(tensor_dtype), _optional(heads.get("nl_loc"), tensor_dtype),
            self._points, self._window, target_size,
            alpha=config.alpha, penalty_k=config.penalty_k, window_influence=config.window_influence,
            lr=config.lr, lr_mode=config.lr_mode, center=self._center, backend=self.backend,
        )  # fmt: skip
        names = ("cls", "loc", "nl_cls", "nl_loc") if self.has_text else ("cls", "loc")
        finite = torch.stack([heads[name].flatten(1).isfinite().all(dim=1) for name in names], dim=1)
        # The one host read of the frame: box, lr, score, pscore, w_vis, w_nl, finite flags.
        columns = (best.lr, best.score, best.pscore, best.w_vis, best.w_nl)
        row = torch.cat((best.box, torch.stack(columns, dim=1), finite.to(best.box.dtype)), dim=1).cpu().numpy()
        box, lr, stats, finite = row[:, :4] / scale[:, None], row[:, 4:5], row[:, 5:9], row[:, 9:]
        centers = self._centers + box[:, :2]
        sizes = self._sizes * (1 - lr) + box[:, 2:] * lr
        self._centers = np.maximum(np.minimum(centers, self._frame_limits), 0)
        self._sizes = np.maximum(np.minimum(sizes, self._frame_limits), self.dtype(config.min_size))
        corners = self._centers - self._sizes / 2
        boxes = np.concatenate((corners, self._sizes), axis=1)
        if self.opencv:
            boxes = np.trunc(boxes)  # OpenCV's Rect of ints
        return boxes.astype(np.float64), stats.astype(np.float64), finite


def _optional(head, dtype):
    return None if head is None else head.to(dtype)
