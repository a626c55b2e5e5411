"""The published NanoTrack tracker (SiamTrackers' nano_tracker.py), re-implemented in numpy
from its description, for comparison with SNLTracker's "siamtrackers" profile and as the
speed baseline of NanoTrack V3 (which cv2.TrackerNano cannot run).

Per frame: pysot's get_subwindow crop padded with the first frame's channel mean, the
network (backbone and head on the search crop, the template features kept), the head
outputs copied to the host, and the post-processing and box update in numpy float64:
softmax score, points -(S//2)*16 + 16*i around the crop centre, (l, t, r, b) decoding,
the scale/ratio penalty, the outer-product Hanning window, lr = penalty * score * LR.
One target per tracker.
"""

import numpy as np
import torch

from snlt_fast.baselines.published_tracker import opencv_subwindow
from snlt_fast.tracker.config import TrackerConfig

_STRIDE = 16


def _as_stacked_images(crop):
    """`crop` [1, 3, H, W] laid out as SNLTracker's crops are (a stack of HxWx3 images viewed as
    NCHW): PyTorch's convolutions round differently for other layouts, and the comparison is
    of the trackers, with the same network outputs."""
    return crop[0].permute(1, 2, 0).contiguous()[None].permute(0, 3, 1, 2)


def _change(ratio):
    return np.maximum(ratio, 1.0 / ratio)


def _padded_size(w, h):
    pad = (w + h) * 0.5
    return np.sqrt((w + pad) * (h + pad))


class PublishedNanoTracker:
    """The published tracker on a NanoTrack `model`, with its per-version values."""

    def __init__(self, model):
        self.model = model.eval()
        self.config = TrackerConfig.nanotrack(model.version, profile="siamtrackers")
        side = model.score_size
        offsets = -(side // 2) * _STRIDE + _STRIDE * np.arange(side)
        points_x, points_y = np.meshgrid(offsets, offsets)
        self.points_x, self.points_y = points_x.reshape(-1), points_y.reshape(-1)
        self.window = np.outer(np.hanning(side), np.hanning(side)).reshape(-1)

    def _template_side(self):
        context = self.size + self.config.context_amount * self.size.sum()
        return np.sqrt(context.prod())

    @torch.no_grad()
    def init(self, frame, box):
        x, y, w, h = (float(v) for v in box)
        self.center = np.array([x + (w - 1) / 2, y + (h - 1) / 2])
        self.size = np.array([w, h])
        self.channel_average = np.mean(frame, axis=(0, 1))
        crop = opencv_subwindow(frame, self.center, 127, round(self._template_side()), self.channel_average)
        self.model.template(_as_stacked_images(crop))

    @torch.no_grad()
    def track(self, frame):
        """The box (x, y, w, h) in `frame`, as floats."""
        config = self.config
        template_side = self._template_side()
        scale = 127 / template_side
        crop = opencv_subwindow(frame, self.center, 255, round(template_side * 255 / 127), self.channel_average)
        heads = self.model.track(_as_stacked_images(crop))
        logits = heads["cls"][0].double().numpy().reshape(2, -1)
        exp = np.exp(logits - logits.max(axis=0))
        score = exp[1] / exp.sum(axis=0)
        left, top, right, bottom = heads["loc"][0].double().numpy().reshape(4, -1)
        x1, y1 = self.points_x - left, self.points_y - top
        x2, y2 = self.points_x + right, self.points_y + bottom
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        scale_change = _change(_padded_size(w, h) / _padded_size(*(self.size * scale)))
        ratio_change = _change((self.size[0] / self.size[1]) / (w / h))
        penalty = np.exp(-(ratio_change * scale_change - 1) * config.penalty_k)
        pscore = penalty * score * (1 - config.window_influence) + self.window * config.window_influence
        best = int(np.argmax(pscore))
        lr = penalty[best] * score[best] * config.lr
        limits = [frame.shape[1], frame.shape[0]]
        center = self.center + np.array([cx[best], cy[best]]) / scale
        size = self.size * (1 - lr) + np.array([w[best], h[best]]) / scale * lr
        self.center = np.clip(center, 0, limits)
        self.size = np.clip(size, config.min_size, limits)
        return (self.center[0] - self.size[0] / 2, self.center[1] - self.size[1] / 2, self.size[0], self.size[1])
