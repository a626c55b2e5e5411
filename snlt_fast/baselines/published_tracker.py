"""The published SNLT tracking pipeline, re-implemented for comparison with SNLTracker.

Per frame, as the published code runs it: the search crop is cut in numpy and resized
with OpenCV on the host, then copied to the model's device; the whole network runs on
(template crop, search crop, sentence), so the template backbone and the sentence
encoder are recomputed every frame (`model.forward`, the sentence cache switched
off); the correlations use pysot's grouped F.conv2d; the head outputs are copied to
the host and post-processed in numpy (snlt_fast.baselines.numpy_postprocess); the box
is updated in numpy. One target per tracker.

The tracking rules (crop geometry, penalties, lr, clipping) are the ones SNLTracker
implements, so with crop="tensor" and the same correlation backend both trackers see
the same network inputs and must produce the same boxes. The numpy post-process
result is rounded to float32, the precision of the fused op's outputs.
"""

import contextlib

import cv2
import numpy as np
import torch

from snlt_fast.baselines.numpy_postprocess import track_postprocess_numpy
from snlt_fast.ops.anchors import generate_anchors, hanning_window
from snlt_fast.tracker.crop import channel_fill, crop_and_resize, frame_to_tensor
from snlt_fast.tracker.tracker import TargetResult


def opencv_subwindow(image, center, out_size, original_size, channel_average):
    """pysot's get_subwindow: the mean-padded square of side original_size, cv2.resize'd; [1, 3, out, out] float32."""
    height, width = image.shape[:2]
    x_min = int(np.floor(center[0] - (original_size + 1) / 2 + 0.5))
    y_min = int(np.floor(center[1] - (original_size + 1) / 2 + 0.5))
    x_max, y_max = x_min + original_size - 1, y_min + original_size - 1
    left, top = max(0, -x_min), max(0, -y_min)
    right, bottom = max(0, x_max - width + 1), max(0, y_max - height + 1)
    if left or top or right or bottom:
        padded = np.empty((height + top + bottom, width + left + right, 3), np.uint8)
        padded[...] = channel_average
        padded[top : top + height, left : left + width] = image
        image = padded
    patch = image[y_min + top : y_max + top + 1, x_min + left : x_max + left + 1]
    if out_size != original_size:
        patch = cv2.resize(patch, (out_size, out_size))
    return torch.from_numpy(patch.transpose(2, 0, 1)[None].astype(np.float32))


class PublishedTracker:
    """The published pipeline on `model` with TrackerConfig `config` (one target; no long-term mode).

    crop         "opencv" (published: numpy + cv2.resize on the host) or "tensor"
                 (SNLTracker's crop, to compare everything else bit for bit).
    correlation  the model's correlation backend: "conv2d" (published: pysot's grouped
                 F.conv2d) or any snlt_fast backend.
    """

    def __init__(self, model, config, *, crop="opencv", correlation="conv2d"):
        if crop not in ("opencv", "tensor"):
            raise ValueError(f"crop must be 'opencv' or 'tensor', got {crop!r}")
        self.model = model.eval()
        self.config = config
        self.crop = crop
        self.correlation = correlation
        self.device = next(model.parameters()).device
        self._anchors = {}

    def _cut(self, frame, center, out_size, original_size):
        if self.crop == "opencv":
            return opencv_subwindow(frame, center, out_size, original_size, self.channel_average).to(self.device)
        tensor = frame_to_tensor(frame, self.device)
        centers = torch.from_numpy(np.asarray(center, dtype=np.float64)[None]).to(self.device)
        sides = torch.tensor([float(original_size)], dtype=torch.float64, device=self.device)
        return crop_and_resize(tensor, centers, sides, out_size, channel_fill(tensor))

    def _template_side(self):
        context = self.config.context_amount * np.sum(self.size)
        return np.sqrt((self.size[0] + context) * (self.size[1] + context))

    def init(self, frame, box, text=None):
        x, y, w, h = (float(v) for v in box)
        self.center = np.array([x + (w - 1) / 2, y + (h - 1) / 2])
        self.size = np.array([w, h])
        self.channel_average = np.mean(frame, axis=(0, 1))
        self.text = text
        self.z_crop = self._cut(frame, self.center, self.model.exemplar_size, round(self._template_side()))

    def _anchors_and_window(self, score_size):
        if score_size not in self._anchors:
            config = self.config
            anchors = generate_anchors(config.anchor_stride, list(config.anchor_ratios), list(config.anchor_scales), score_size)
            self._anchors[score_size] = (anchors.numpy(), hanning_window(score_size, config.anchor_num).numpy())
        return self._anchors[score_size]

    @contextlib.contextmanager
    def _published_model(self):
        """The correlation backend asked for, and the sentence encoded afresh on every call."""
        encoder = self.model.language.encoder if self.model.language is not None else None
        cache_enabled = encoder.cache_enabled if encoder is not None else None
        try:
            if encoder is not None:
                encoder.cache_enabled = False
            with self.model.using_backend(self.correlation), torch.no_grad():
                yield self.model
        finally:
            if encoder is not None:
                encoder.cache_enabled = cache_enabled

    def track(self, frame):
        config, model = self.config, self.model
        template_side = self._template_side()
        scale = model.exemplar_size / template_side
        search_side = template_side * (model.instance_size / model.exemplar_size)
        x_crop = self._cut(frame, self.center, model.instance_size, round(search_side))
        with self._published_model():
            heads = model(self.z_crop, x_crop, None if self.text is None else [self.text])
        heads = {name: value.cpu().numpy() for name, value in heads.items()}
        anchors, window = self._anchors_and_window(heads["cls"].shape[-1])
        best = track_postprocess_numpy(
            heads["cls"], heads.get("nl_cls"), heads["loc"], heads.get("nl_loc"), anchors, window,
            (self.size * scale)[None],
            alpha=config.alpha, penalty_k=config.penalty_k, window_influence=config.window_influence,
            lr=config.lr, lr_mode=config.lr_mode,
        )  # fmt: skip
        box = best.box[0].astype(np.float32).astype(np.float64) / scale
        lr = float(np.float32(best.lr[0]))
        center = self.center + box[:2]
        size = self.size * (1 - lr) + box[2:] * lr
        height, width = frame.shape[:2]
        limits = np.array([width, height], dtype=np.float64)
        self.center = np.maximum(np.minimum(center, limits), 0)
        self.size = np.maximum(np.minimum(size, limits), config.min_size)
        xywh = (*(self.center - self.size / 2), *self.size)
        values = (best.score[0], best.pscore[0], best.w_vis[0], best.w_nl[0])
        return TargetResult(tuple(float(v) for v in xywh), *(float(np.float32(v)) for v in values), False)
