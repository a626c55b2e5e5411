"""Training crops cut on the fly from full frames, with pysot's augmentation.

pysot first crops every frame to a 511 square (`crop511`, a preprocessing step of
its own) and then cuts the 127 template and 255 search crops out of that. Here each
crop is one affine warp of the full frame: the window is SiamFC's context square
(side sqrt((w + p)(h + p)), p = context * (w + h)) scaled by search/exemplar for the
search crop, moved by the shift and stretched by the scale augmentation, and the
area outside the frame is filled with the frame's mean colour, as crop511 fills it.
Then, as pysot: colour (PCA lighting), motion blur, horizontal flip; grey, when
drawn, applies to both crops of a pair.

Coordinates: frames are 0-based pixel centres; a box of the datasets' 1-based
`x, y, w, h` has its centre at (x - 1 + (w - 1) / 2, y - 1 + (h - 1) / 2). The warp
maps the window's edges to the crop's first and last pixel centres, as pysot's
`crop_hwc` does. Target boxes come back as (cx, cy, w, h) in crop pixels relative to
the crop centre, the frame of `generate_anchors`.
"""

from dataclasses import dataclass

import cv2
import numpy as np

# pysot's PCA lighting: RGB eigenvectors times eigenvalues (applied reversed, as BGR).
RGB_VARIANCE = np.array(
    [[-0.5592, 0.9806, -0.4194], [1.7209, 0.1988, -1.8297], [4.6447, 4.7371, 4.8832]], dtype=np.float32
)
BLUR_SIZES = np.arange(5, 46, 2)


@dataclass(frozen=True)
class Augmentation:
    """One crop's augmentation, as pysot's config names it: shift in crop pixels, scale as
    a fraction, and the probabilities of blur, flip and colour."""

    shift: float = 0.0
    scale: float = 0.0
    blur: float = 0.0
    flip: float = 0.0
    color: float = 0.0

    @classmethod
    def from_config(cls, section):
        return cls(**{key: float(section[key]) for key in ("shift", "scale", "blur", "flip", "color")})


def box_center_size(box):
    """A 1-based (x, y, w, h) box as 0-based (cx, cy, w, h)."""
    x, y, w, h = (float(v) for v in box)
    return x - 1 + (w - 1) / 2, y - 1 + (h - 1) / 2, w, h


def context_side(w, h, context):
    """SiamFC's square context window side for a w x h target."""
    pad = context * (w + h)
    return float(np.sqrt((w + pad) * (h + pad)))


def warp(frame, center, sides, out_size, fill):
    """The window of `sides` (x, y) around `center` of `frame`, warped to out_size x out_size (float32 HWC)."""
    scale_x = (out_size - 1) / sides[0]
    scale_y = (out_size - 1) / sides[1]
    matrix = np.array(
        [
            [scale_x, 0.0, -scale_x * (center[0] - sides[0] / 2)],
            [0.0, scale_y, -scale_y * (center[1] - sides[1] / 2)],
        ]
    )
    crop = cv2.warpAffine(
        frame, matrix, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=tuple(float(v) for v in fill),
    )
    return crop.astype(np.float32), scale_x, scale_y


def _motion_blur(crop, rng):
    size = int(BLUR_SIZES[rng.integers(len(BLUR_SIZES))])
    kernel = np.zeros((size, size), dtype=np.float32)
    middle, weight = size // 2, rng.random()
    kernel[:, middle] += weight / size
    kernel[middle, :] += (1 - weight) / size
    return cv2.filter2D(crop, -1, kernel)


def _gray(crop):
    return cv2.cvtColor(cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def augmented_crop(
    frame, box, *, out_size, exemplar_size, context, augmentation, gray, rng, fill=None, window_box=None, others=None
):
    """One augmented crop of the target `box` (1-based x, y, w, h) in `frame` (HxWx3 uint8 BGR).

    Returns (crop [out_size, out_size, 3] float32 BGR in 0..255, target (cx, cy, w, h)
    relative to the crop centre). Draws from `rng` in a fixed order. `window_box`
    (default: `box`) is the box the window is cut around; the target is still `box`.
    `others`, (k, 4) boxes of other objects of the frame, adds a third result: those
    boxes in the crop, as the target.
    """
    cx, cy, w, h = box_center_size(box)
    window_cx, window_cy, window_w, window_h = box_center_size(box if window_box is None else window_box)
    side = context_side(window_w, window_h, context) * out_size / exemplar_size
    stretch = 1 + rng.uniform(-1, 1, size=2) * augmentation.scale
    sides = (side * stretch[0], side * stretch[1])
    shift = rng.uniform(-1, 1, size=2) * augmentation.shift  # in crop pixels
    # Moving the window by +shift crop pixels moves the target by -shift in the crop.
    center = (window_cx + shift[0] * sides[0] / (out_size - 1), window_cy + shift[1] * sides[1] / (out_size - 1))
    if fill is None:
        fill = frame.reshape(-1, 3).mean(axis=0)
    crop, scale_x, scale_y = warp(frame, center, sides, out_size, fill)

    def in_crop(cx, cy, w, h):
        # A box's offset from the window's box is exactly 0 when the window is that box's.
        offset = ((cx - window_cx) * scale_x, (cy - window_cy) * scale_y)
        return [offset[0] - shift[0], offset[1] - shift[1], w * scale_x, h * scale_y]

    boxes = np.array([in_crop(cx, cy, w, h)] + [in_crop(*box_center_size(b)) for b in (others if others is not None else ())])
    if gray:
        crop = _gray(crop)
    if rng.random() < augmentation.color:
        offset = (RGB_VARIANCE @ rng.standard_normal(3).astype(np.float32))[::-1]
        crop = crop - offset.astype(np.float32)
    if rng.random() < augmentation.blur:
        crop = _motion_blur(crop, rng)
    if rng.random() < augmentation.flip:
        crop = np.ascontiguousarray(crop[:, ::-1])
        boxes[:, 0] = -boxes[:, 0]
    if others is None:
        return crop, boxes[0]
    return crop, boxes[0], boxes[1:].reshape(-1, 4)
