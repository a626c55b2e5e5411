"""SyntheticNL: language-tracking videos rendered on demand from a seed.

Each video is a textured, panning background with a few moving objects made
of attributes a sentence can name (shape, colour, pattern, size), and one
sentence that tells the target (object 0) apart from every other object of the
video, e.g. "the small green triangle with white stripes, starting on the left".
Objects move, change scale and shade; the scene's lighting drifts, some frames
are motion-blurred, objects cross and occlude each other, pillars hide what
passes behind them, and the target may leave the view.

kind="distractor": one or two look-alikes differ from the target in exactly one
attribute the sentence names (a neighbouring colour, a similar shape, another
pattern, the other size) and sweep back and forth across the target, passing in
front of or behind it, while the target's own shade, lighting and scale drift
away from its first-frame look (towards the look-alike where that is possible):
a tracker that matches the first-frame template alone finds a look-alike about
as good a match as the target, at times a better one; the sentence still tells
them apart. kind="plain": the other objects differ from the target in shape
and in colour (not a neighbouring one), so appearance alone is enough.

Annotations follow `snlt_fast.datasets.Video`: boxes `x, y, w, h` in 1-based
pixels, integers, the tight box of the target's whole shape (parts hidden
behind other objects included) within the image. A frame is absent when no
pixel of the target is visible: out of view (no pixel of its shape lies in the
image; the box is then its true, unclipped position, partly or wholly outside
the image) or fully occluded (its box is as for a visible frame).

Frames are never stored: a video keeps its per-frame parameters (positions,
sizes, colours, lighting, camera offset, blur), computed at construction, and
`frame(i)` renders frame i alone. Every value comes from numpy's PCG64
generator seeded with (seed, video index, kind) through uniform draws,
correctly rounded float operations (no sin, exp or other library functions,
which may differ in the last bit between machines) and integer pixel
arithmetic, so pixels and boxes are the same on every machine.

Seeds: TRAINING_SEEDS (0 to 999_999) are for training; HELD_OUT_SEED_START
(1_000_000) and above are held out for evaluation, and the default model is
evaluated only on those.
"""

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from snlt_fast.datasets.base import Dataset, Video

KINDS = ("distractor", "plain")
DEFAULT_SIZE = (320, 240)
MIN_SIDE = 64
HELD_OUT_SEED_START = 1_000_000
TRAINING_SEEDS = range(HELD_OUT_SEED_START)

# Object colours (BGR) in hue order: each one's neighbours in this cycle are its look-alike colours.
COLOURS = {
    "red": (40, 40, 210),
    "orange": (30, 130, 245),
    "yellow": (40, 215, 230),
    "green": (60, 170, 40),
    "cyan": (215, 200, 40),
    "blue": (200, 80, 30),
    "purple": (170, 50, 130),
    "pink": (190, 120, 245),
}
MARK_COLOURS = {"white": (240, 240, 240), "black": (25, 25, 25)}
PATTERNS = ("plain",) + tuple(f"{mark} {kind}" for kind in ("stripes", "dots", "checks") for mark in MARK_COLOURS)
SHAPES = ("circle", "square", "triangle", "diamond", "hexagon", "cross")
# A shape twin's shape: one whose outline is close to the target's (a cross has none).
LOOK_ALIKE_SHAPES = {
    "circle": ("hexagon",),
    "hexagon": ("circle",),
    "square": ("hexagon",),
    "diamond": ("hexagon", "triangle"),
    "triangle": ("diamond",),
    "cross": (),
}
# Width over height of each shape's box (equilateral triangle, regular hexagon).
ASPECTS = {"circle": 1.0, "square": 1.0, "triangle": 1.15, "diamond": 1.0, "hexagon": 1.15, "cross": 1.0}
# Base widths as fractions of the frame's shorter side.
SIZE_RANGES = {"small": (0.09, 0.12), "large": (0.17, 0.21)}
ATTRIBUTES = ("shape", "colour", "pattern", "size")

_BACKGROUND_PAD = 16  # the camera pans over a background this much larger than the frame on each side
_GAIN_ONE = 256  # gains are integers over 256, so that pixels are integer arithmetic
_TEXTURE_COUNT = 12
_TEXTURE_SEED = 20240607  # the shared background textures' own seed, apart from every video's


@dataclass(frozen=True)
class SceneObject:
    """What an object looks like; role is "target", "look-alike" or "other"."""

    shape: str
    colour: str
    pattern: str
    size: str
    role: str


class RenderedFrames(Sequence):
    """Where each frame of a synthetic video comes from: "synthetic://<kind>/<seed>/<video>/<frame>"."""

    def __init__(self, kind, seed, video, count):
        self.kind, self.seed, self.video, self.count = kind, seed, video, count

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.count))]
        return f"synthetic://{self.kind}/{self.seed}/{self.video}/{_frame_number(index, self.count)}"


def _frame_number(index, count):
    if not -count <= index < count:
        raise IndexError(f"frame index {index} out of range for {count} frames")
    return index % count


class SyntheticNL(Dataset):
    """`videos` synthetic videos of `frames` frames each, `size` = (width, height) pixels.

    The same arguments give the same videos on every machine; video i of seed S is
    named f"synth-{kind}-{S}-{i:04d}" and does not depend on how many videos are
    asked for. Train on seeds in TRAINING_SEEDS; seeds from HELD_OUT_SEED_START up
    are held out for evaluation.
    """

    def __init__(self, videos=100, frames=100, seed=0, kind="distractor", size=DEFAULT_SIZE):
        _check_arguments(videos, frames, seed, kind, size)
        self.kind, self.seed, self.size = kind, seed, (int(size[0]), int(size[1]))
        super().__init__(
            f"SyntheticNL-{kind}-{seed}", [SyntheticVideo(kind, seed, index, frames, self.size) for index in range(videos)]
        )


def _check_arguments(videos, frames, seed, kind, size):
    for name, value, least in (("videos", videos, 1), ("frames", frames, 1), ("seed", seed, 0)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            rule = "a positive" if least else "a non-negative"
            raise ValueError(f"{name} must be {rule} integer, got {value!r}")
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}")
    try:
        width, height = (int(side) for side in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height) in pixels, got {size!r}") from None
    if width < MIN_SIDE or height < MIN_SIDE:
        raise ValueError(f"size must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {width}x{height}")


class SyntheticVideo(Video):
    """One synthetic video; `frame(i)` renders frame i from the per-frame parameters.

    objects: the SceneObjects, the target first; object_boxes: (objects, n, 4)
    unclipped 1-based x, y, w, h of every object; named_attributes: the target's
    attributes that the sentence names (no other object shares all of them);
    full_occlusion, out_of_view: (n,) bool, whose union is `absent`;
    motion_blur: (n,) int, the length of the frame's motion blur (0: sharp).
    """

    def __init__(self, kind, seed, index, frames, size):
        rng = np.random.default_rng([seed, index, KINDS.index(kind)])
        self.kind, self.seed, self.index = kind, seed, index
        self.width, self.height = size
        self.objects, self.named_attributes = _choose_objects(rng, kind)
        scene = _Scene(rng, kind, self.objects, frames, size)
        self._scene = scene
        self.object_boxes = scene.geometry.astype(np.float64) + (1, 1, 0, 0)
        boxes, self.out_of_view, self.full_occlusion = scene.target_annotations()
        self.motion_blur = scene.blur_length
        super().__init__(
            name=f"synth-{kind}-{seed}-{index:04d}",
            boxes=boxes,
            frame_paths=RenderedFrames(kind, seed, index, frames),
            absent=self.out_of_view | self.full_occlusion,
            sentence=_sentence(rng, self.objects[0], self.named_attributes, scene.centres[0, 0], size),
            source=f"SyntheticNL(seed={seed}, kind={kind!r}, size={size[0]}x{size[1]}), video {index}",
        )

    def frame(self, index):
        """Frame `index` (0-based) as an (H, W, 3) uint8 BGR array."""
        return self._scene.render(_frame_number(index, len(self)))

    def lookalike_boxes(self, index):
        """The look-alikes (distractor scenes; none in plain ones) whose box centre is in the image."""
        boxes = self.object_boxes[[number for number, obj in enumerate(self.objects) if obj.role == "look-alike"], index]
        centre_x, centre_y = boxes[:, 0] - 1 + (boxes[:, 2] - 1) / 2, boxes[:, 1] - 1 + (boxes[:, 3] - 1) / 2
        return boxes[(centre_x >= 0) & (centre_x <= self.width - 1) & (centre_y >= 0) & (centre_y <= self.height - 1)]

    def object_mask(self, index, obj=0, visible=False):
        """(H, W) bool: the pixels object `obj` covers in frame `index` (the same shapes `frame` paints);
        visible=True leaves out those hidden behind objects in front of it and pillars."""
        return self._scene.mask_in(obj, _frame_number(index, len(self)), (0, 0, self.width, self.height), visible)


# --------------------------------------------------------------------------- what the scene holds


def _choose_objects(rng, kind):
    """(objects, named attributes): the target, its look-alikes (distractor kind) and the others."""
    target = _random_object(rng, "target")
    look_alikes = []
    if kind == "distractor":
        # A plain target's pattern twin would be striped or dotted all over: far from a look-alike.
        usable = [a for a in ATTRIBUTES if not (a == "shape" and not LOOK_ALIKE_SHAPES[target.shape])]
        usable = [a for a in usable if not (a == "pattern" and target.pattern == "plain")]
        for attribute in rng.permutation(usable)[: rng.integers(1, 3)]:
            value = _look_alike_value(rng, target, attribute)
            look_alikes.append(replace(target, role="look-alike", **{str(attribute): value}))
    # The size word is needed only where an object matches the target in everything but size.
    named = ("shape", "colour", "pattern") + (("size",) if any(o.size != target.size for o in look_alikes) else ())
    others = []
    for _ in range(rng.integers(1, 3) if kind == "distractor" else rng.integers(2, 5)):
        while True:
            other = _random_object(rng, "other")
            if _is_other_enough(other, target, kind, named):
                break
        others.append(other)
    return (target, *look_alikes, *others), {name: getattr(target, name) for name in named}


def _random_object(rng, role):
    return SceneObject(_pick(rng, SHAPES), _pick(rng, tuple(COLOURS)), _pick(rng, PATTERNS), _pick(rng, tuple(SIZE_RANGES)), role)


def _pick(rng, options):
    return options[rng.integers(len(options))]


def _neighbour_colours(colour):
    names = tuple(COLOURS)
    position = names.index(colour)
    return names[position - 1], names[(position + 1) % len(names)]


def _look_alike_value(rng, target, attribute):
    if attribute == "colour":
        return _pick(rng, _neighbour_colours(target.colour))
    if attribute == "shape":
        return _pick(rng, LOOK_ALIKE_SHAPES[target.shape])
    if attribute == "pattern":  # marks of the same colour laid out otherwise: much the same mean colour
        mark = target.pattern.split()[0]
        return _pick(rng, tuple(p for p in PATTERNS if p.startswith(mark) and p != target.pattern))
    return "large" if target.size == "small" else "small"


def _is_other_enough(other, target, kind, named):
    """Plain scenes: clearly different (shape and a far colour); distractor scenes: not sharing every named attribute."""
    if kind == "plain":
        return other.shape != target.shape and other.colour not in (target.colour, *_neighbour_colours(target.colour))
    return any(getattr(other, name) != getattr(target, name) for name in named)


def _sentence(rng, target, named, start_centre, size):
    words = ["the"]
    if "size" in named:
        words.append(target.size)
    if target.pattern == "plain":
        words.append("plain")
    words += [target.colour, target.shape]
    if target.pattern != "plain":
        words += ["with", target.pattern]
    sentence = " ".join(words)
    # Where the target starts: true of the first frame only, so it is said only sometimes.
    if rng.random() < 0.5:
        sentence += ", starting " + _position_words(start_centre, size)
    return sentence


def _position_words(centre, size):
    (x, y), (width, height) = centre, size
    column = ("left", "middle", "right")[min(2, int(3 * x / width))]
    row = ("top", "middle", "bottom")[min(2, int(3 * y / height))]
    if row == column == "middle":
        return "in the middle"
    if row == "middle":
        return f"on the {column}"
    if column == "middle":
        return f"at the {row}"
    return f"at the {row} {column}"


# --------------------------------------------------------------------------- shapes and patterns


@lru_cache(maxsize=4096)
def shape_mask(shape, width, height):
    """(height, width) bool: the pixels of `shape` drawn in a width x height box.

    A pixel belongs to the shape when its point nearest the shape's centre (for
    the triangle: nearest its base) lies inside, so the shape touches all four
    sides of its box and the box is tight. Integer arithmetic in units of half a
    pixel, with the box's centre at 0 and its half-width `width`.
    """
    u = np.maximum(np.abs(np.arange(1 - width, width, 2, dtype=np.int64)) - 1, 0)[None, :]
    v_signed = np.arange(1 - height, height, 2, dtype=np.int64)[:, None]
    v = np.maximum(np.abs(v_signed) - 1, 0)
    w, h = width, height
    if shape == "circle":
        mask = u * u * h * h + v * v * w * w <= w * w * h * h
    elif shape == "square":
        mask = np.ones((height, width), dtype=bool)
    elif shape == "diamond":
        mask = u * h + v * w <= w * h
    elif shape == "hexagon":  # points left and right, flat top and bottom
        mask = 2 * u * h <= 2 * w * h - v * w
    elif shape == "cross":  # arms 0.35 of the half-width wide
        mask = (20 * u <= 7 * w) | (20 * v <= 7 * h)
    elif shape == "triangle":  # apex up
        mask = 2 * u * h <= (np.minimum(v_signed + 1, h) + h) * w
    else:
        raise ValueError(f"unknown shape {shape!r}")
    mask = np.broadcast_to(mask, (height, width)).copy()
    mask.setflags(write=False)
    return mask


@lru_cache(maxsize=4096)
def _appearance_masks(shape, pattern, width, height):
    """(body, marks): the shape's pixels in its own colour and in its pattern's colour."""
    mask = shape_mask(shape, width, height)
    if pattern == "plain":
        marks = np.zeros_like(mask)
    else:
        kind = pattern.split()[1]
        step = max(2, min(width, height) // 7)
        y, x = np.arange(height)[:, None], np.arange(width)[None, :]
        if kind == "stripes":
            marks = ((x + y) // step) % 2 == 1
        elif kind == "dots":
            marks = ((x + step // 2) % (2 * step) < step) & ((y + step // 2) % (2 * step) < step)
        else:
            marks = (x // step + y // step) % 2 == 1
        marks = marks & mask
    body = mask & ~marks
    body.setflags(write=False)
    marks.setflags(write=False)
    return body, marks


# --------------------------------------------------------------------------- per-frame parameters


# Floats go through numpy's element-wise operations only, each correctly rounded on every machine:
# C loops such as np.interp's or Generator.uniform's compute a * b + c, which a compiler may fuse
# into one multiply-add (rounded once) on some machines and not on others.


def _uniform(rng, low, high, size=None):
    """Uniform draws in [low, high): the generator's doubles, scaled by separate numpy operations."""
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    return low + (high - low) * rng.random(size if size is not None else low.shape)


def _knots_count(frames, spacing):
    """Knots at 0, spacing, 2 spacing, ..., enough to reach past the last frame."""
    return (frames - 1) // spacing + 2


def _linear_between(values, spacing, frames):
    """(frames,) float64: linear between values[k] at frame k * spacing."""
    frame = np.arange(frames)
    knot = frame // spacing
    fraction = (frame - knot * spacing) / spacing
    return values[knot] + (values[knot + 1] - values[knot]) * fraction


def _curve(rng, frames, low, high, spacing, start=None):
    """(frames,) float64: piecewise-linear between random knots `spacing` frames apart."""
    values = _uniform(rng, low, high, _knots_count(frames, spacing))
    if start is not None:
        values[0] = start
    return _linear_between(values, spacing, frames)


def _reflect(values, low, high):
    """Fold values into [low, high] as a ball bouncing between walls."""
    span = high - low
    folded = np.mod(values - low, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


def _round(values):
    return np.floor(np.asarray(values) + 0.5).astype(np.int64)


def _gain(values):
    return _round(np.asarray(values) * _GAIN_ONE)


class _Scene:
    """Every per-frame parameter of one video, and the rendering of a frame from them."""

    def __init__(self, rng, kind, objects, frames, size):
        self.frames, (self.width, self.height) = frames, size
        self.objects = objects
        side = min(size)
        self.base_sizes = np.array([_uniform(rng, *SIZE_RANGES[o.size]) * side for o in objects])
        # A look-alike of the target's size class has the target's first-frame size exactly.
        same_size = [k for k, o in enumerate(objects) if o.role == "look-alike" and o.size == objects[0].size]
        self.base_sizes[same_size] = self.base_sizes[0]
        self._choose_motion(rng, kind)
        self._choose_appearance(rng, kind)
        self._choose_background(rng)
        self._choose_pillar(rng)
        self._choose_blur(rng)

    # ----------------------------------------------------------------- construction

    def _choose_motion(self, rng, kind):
        frames, width, height = self.frames, self.width, self.height
        count = len(self.objects)
        target_drift = (0.85, 1.2) if kind == "distractor" else (0.9, 1.1)
        scales = []
        for obj in self.objects:
            # Look-alikes keep their size: the first-frame template's own size, or (a size twin)
            # the other size class, whose word then stays true while the target's scale drifts.
            low, high = (1.0, 1.0) if obj.role == "look-alike" else target_drift if obj.role == "target" else (0.9, 1.1)
            scales.append(_curve(rng, frames, low, high, rng.integers(20, 50), start=1.0))
        scales = np.array(scales)
        widths = np.maximum(2, _round(self.base_sizes[:, None] * scales))
        aspects = np.array([ASPECTS[o.shape] for o in self.objects])
        heights = np.maximum(2, _round(self.base_sizes[:, None] * scales / aspects[:, None]))
        largest = np.maximum(widths.max(axis=1), heights.max(axis=1))
        while True:
            centres = np.empty((count, frames, 2))
            centres[0] = self._target_path(rng, largest[0])
            for k, obj in enumerate(self.objects[1:], start=1):
                if obj.role == "look-alike":
                    centres[k] = centres[0] + self._sweep(rng, widths[[0, k], 0], heights[[0, k], 0])
                else:
                    centres[k] = self._wander(rng, largest[k])
            boxes = np.stack(
                [_round(centres[..., 0] - widths / 2), _round(centres[..., 1] - heights / 2), widths, heights], axis=-1
            )
            # The first frame shows every object whole and the target touching nothing, so that its template is clean.
            if all(_inside(boxes[k, 0], width, height) for k in range(count)) and not any(
                _overlap(boxes[0, 0], boxes[k, 0], 3) for k in range(1, count)
            ):
                break
        self.geometry = boxes
        self.box_lists = boxes.tolist()  # [object][frame] -> [x, y, w, h] as Python ints: per-frame reads are cheaper
        self.centres = centres
        # Back to front; a look-alike passes in front of the target or behind it.
        depth = rng.random(count)
        self.draw_order = tuple(int(k) for k in np.argsort(depth, kind="stable"))

    def _target_path(self, rng, largest):
        """The target starts in the middle half of the frame; some targets may wander out of view."""
        start = _uniform(rng, (0.25 * self.width, 0.25 * self.height), (0.75 * self.width, 0.75 * self.height))
        margin = -largest if rng.random() < 0.35 else largest / 2 + 2
        return self._moving(rng, start, margin, 0.012)

    def _wander(self, rng, largest):
        start = _uniform(rng, (largest / 2, largest / 2), (self.width - largest / 2, self.height - largest / 2))
        return self._moving(rng, start, largest / 2, 0.015)

    def _moving(self, rng, start, margin, speed):
        """(frames, 2) centres: smoothly changing velocity, bouncing inside the frame shrunk by `margin`."""
        path = np.empty((self.frames, 2))
        for axis, extent in enumerate((self.width, self.height)):
            velocity = _curve(rng, self.frames, -speed * self.width, speed * self.width, rng.integers(15, 40))
            travelled = np.concatenate(([0.0], np.cumsum(velocity[:-1])))
            path[:, axis] = _reflect(start[axis] + travelled, margin, extent - margin)
        return path

    def _sweep(self, rng, widths, heights):
        """(frames, 2) offsets from the target: a look-alike swinging from one side of it to the other and back.

        Along one axis the offset alternates sign from knot to knot, so the look-alike
        crosses the target between knots; across it, it stays small, so that crossings overlap.
        """
        along = int(rng.integers(2))
        extents = (widths, heights)
        clear = (extents[along][0] + extents[along][1]) / 2 + 4  # far enough apart not to touch
        spacing = int(rng.integers(12, 30))
        count = _knots_count(self.frames, spacing)
        sides = np.where(np.arange(count) % 2 == 0, 1.0, -1.0) * (1 if rng.random() < 0.5 else -1)
        offsets = np.empty((self.frames, 2))
        offsets[:, along] = _linear_between(sides * _uniform(rng, 1.1, 1.8, count) * clear, spacing, self.frames)
        across = 0.3 * extents[1 - along][0]
        offsets[:, 1 - along] = _curve(rng, self.frames, -across, across, spacing)
        return offsets

    def _choose_appearance(self, rng, kind):
        """Per-frame body and mark colours of every object: its shade (and, for a
        distractor target, a hue drift towards a neighbouring colour) under the scene's lighting."""
        frames = self.frames
        self.lighting = _gain(_curve(rng, frames, 0.8, 1.2, rng.integers(30, 80)))
        target = self.objects[0]
        colour_twins = [o.colour for o in self.objects if o.role == "look-alike" and o.colour != target.colour]
        body, marks = [], []
        for obj in self.objects:
            colour = np.array(COLOURS[obj.colour], dtype=np.float64)
            if obj.role == "target" and kind == "distractor":
                shade = _curve(rng, frames, 0.7, 1.3, rng.integers(20, 50), start=1.0)
                towards = colour_twins[0] if colour_twins else _pick(rng, _neighbour_colours(obj.colour))
                # Under halfway, so the target stays nearer its named colour than any other.
                hue = _curve(rng, frames, 0.0, 0.45, rng.integers(20, 50), start=0.0)[:, None]
                colours = colour + hue * (np.array(COLOURS[towards]) - colour)
            else:
                shade = _curve(rng, frames, 0.92, 1.08, rng.integers(20, 50), start=1.0)
                colours = np.broadcast_to(colour, (frames, 3))
            light = self.lighting * _gain(shade) // _GAIN_ONE
            body.append(_lit(_round(colours), light))
            mark = np.broadcast_to(_mark_colour(obj.pattern), (frames, 3))
            marks.append(_lit(mark, light))
        self.body_colours, self.mark_colours = np.array(body), np.array(marks)

    def _choose_background(self, rng):
        """Two of the shared textures, a muted base colour, smooth shading down the rows and a tint across the columns."""
        pad, frames = _BACKGROUND_PAD, self.frames
        self.textures = tuple(int(k) for k in rng.choice(_TEXTURE_COUNT, 2, replace=False))
        self.row_shading = _round(_curve(rng, self.height + 2 * pad, -20, 20, rng.integers(20, 60)))
        columns = self.width + 2 * pad
        base = rng.integers(80, 140, 3)
        tint = np.stack([_curve(rng, columns, -25, 25, rng.integers(20, 60)) for _ in range(3)], axis=1)
        self.column_colours = _round(base + tint)
        self.camera = np.stack([_round(_curve(rng, frames, 0, 2 * pad, rng.integers(20, 60))) for _ in range(2)], axis=1)

    def _choose_pillar(self, rng):
        """Up to half the videos have a pillar, standing where the target passes at some later frame
        (away from where it starts), wide enough to hide it whole; it hides whatever passes behind it."""
        self.pillar = None
        if rng.random() >= 0.5 or self.frames < 3:
            return
        target = self.geometry[0]
        width = int(np.ceil(1.4 * target[:, 2].max()))
        first = target[0]
        frame = rng.integers(self.frames // 3, self.frames)
        left = int(_round(self.centres[0, frame, 0] - width / 2))
        if left + width <= first[0] - 3 or left >= first[0] + first[2] + 3:
            shade = _round(_curve(rng, width, 40, 90, max(2, width // 3)))
            self.pillar = (left, width, np.stack([shade, shade * 4 // 5, shade * 3 // 5], axis=1))

    def _choose_blur(self, rng):
        """Motion blur over a few short stretches: a box filter `length` long along one axis."""
        self.blur_length = np.zeros(self.frames, dtype=np.int64)
        self.blur_axis = np.zeros(self.frames, dtype=np.int64)
        for _ in range(rng.integers(0, 2 + self.frames // 60)):
            start = rng.integers(self.frames)
            stop = start + rng.integers(3, 11)
            self.blur_length[start:stop] = rng.choice((3, 5, 7))
            self.blur_axis[start:stop] = rng.integers(2)

    # ----------------------------------------------------------------- annotations

    def target_annotations(self):
        """(boxes, out_of_view, full_occlusion) of the target, as the module docstring defines them."""
        boxes = np.empty((self.frames, 4), dtype=np.float64)
        out_of_view = np.zeros(self.frames, dtype=bool)
        full_occlusion = np.zeros(self.frames, dtype=bool)
        image = (0, 0, self.width, self.height)
        for index in range(self.frames):
            x, y, w, h = self.box_lists[0][index]
            whole = (x, y, x + w, y + h)
            window = _intersection(whole, image)
            boxes[index] = (x + 1, y + 1, w, h)
            if window != whole:  # partly or wholly outside the image: the pixels inside decide
                mask = self.mask_in(0, index, window, visible=False) if window else None
                if mask is None or not mask.any():
                    out_of_view[index] = True
                    continue
                rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
                boxes[index] = (
                    window[0] + columns[0] + 1, window[1] + rows[0] + 1, columns[-1] - columns[0] + 1, rows[-1] - rows[0] + 1
                )
            if self._something_in_front(0, index, window):
                full_occlusion[index] = not self.mask_in(0, index, window, visible=True).any()
        return boxes, out_of_view, full_occlusion

    def _something_in_front(self, obj, index, window):
        """Whether any object drawn after `obj`, or the pillar, reaches into `window` in frame `index`."""
        in_front = self.draw_order[self.draw_order.index(obj) + 1 :]
        if any(_intersection(_corners(self.box_lists[other][index]), window) for other in in_front):
            return True
        return self.pillar is not None and _intersection((self.pillar[0], 0, self.pillar[0] + self.pillar[1], self.height), window) is not None

    def mask_in(self, obj, index, window, visible):
        """(y1 - y0, x1 - x0) bool: object `obj`'s pixels in the image window (x0, y0, x1, y1) of frame `index`;
        visible=True leaves out what objects drawn after it and the pillar hide."""
        x0, y0, x1, y1 = window
        mask = np.zeros((y1 - y0, x1 - x0), dtype=bool)
        self._add_shape(mask, obj, index, window)
        if visible and mask.any():
            cover = np.zeros_like(mask)
            for other in self.draw_order[self.draw_order.index(obj) + 1 :]:
                self._add_shape(cover, other, index, window)
            if self.pillar is not None:
                left, width, _ = self.pillar
                cover[:, max(left - x0, 0) : max(left + width - x0, 0)] = True
            mask &= ~cover
        return mask

    def _add_shape(self, mask, obj, index, window):
        """Mark object `obj`'s shape pixels in `mask`, which covers `window` of the image."""
        x, y, w, h = self.box_lists[obj][index]
        overlap = _intersection((x, y, x + w, y + h), window)
        if overlap:
            ax0, ay0, ax1, ay1 = overlap
            shape = shape_mask(self.objects[obj].shape, w, h)
            mask[ay0 - window[1] : ay1 - window[1], ax0 - window[0] : ax1 - window[0]] |= shape[ay0 - y : ay1 - y, ax0 - x : ax1 - x]

    # ----------------------------------------------------------------- rendering

    def render(self, index):
        canvas = self._background(index)
        image = (0, 0, self.width, self.height)
        for obj in self.draw_order:
            self._paint(canvas, obj, index, image)
        if self.pillar is not None:
            left, width, shade = self.pillar
            x0, x1 = max(left, 0), min(left + width, self.width)
            if x0 < x1:
                canvas[:, x0:x1] = _lit(shade[x0 - left : x1 - left], self.lighting[index])
        if self.blur_length[index]:
            canvas = _box_mean(canvas, int(self.blur_length[index]), int(self.blur_axis[index])).astype(np.uint8)
        return canvas

    def _background(self, index):
        top, left = self.camera[index]
        height, width = self.height, self.width
        light = self.lighting[index]
        textures = _textures(width, height)
        first, second = (textures[k, top : top + height, left : left + width] for k in self.textures)
        luminance = first + second
        luminance += (self.row_shading[top : top + height, None] * light // _GAIN_ONE).astype(np.int16)
        colours = (self.column_colours[left : left + width].T * light // _GAIN_ONE).astype(np.int16, order="C")
        # Channel by channel, each one contiguous: numpy broadcasts along a last axis of 3 many times slower.
        channels = luminance[None, :, :] + colours[:, None, :]
        np.clip(channels, 0, 255, out=channels)
        canvas = np.empty((height, width, 3), dtype=np.uint8)
        for channel in range(3):
            canvas[:, :, channel] = channels[channel]
        return canvas

    def _paint(self, canvas, obj, index, image):
        x, y, w, h = self.box_lists[obj][index]
        overlap = _intersection((x, y, x + w, y + h), image)
        if not overlap:
            return
        ax0, ay0, ax1, ay1 = overlap
        body, marks = _appearance_masks(self.objects[obj].shape, self.objects[obj].pattern, w, h)
        inside = (slice(ay0 - y, ay1 - y), slice(ax0 - x, ax1 - x))
        view = canvas[ay0:ay1, ax0:ax1]
        np.copyto(view, self.body_colours[obj, index], where=body[inside][:, :, None])
        if self.objects[obj].pattern != "plain":
            np.copyto(view, self.mark_colours[obj, index], where=marks[inside][:, :, None])


def _mark_colour(pattern):
    return np.array(MARK_COLOURS[pattern.split()[0]] if pattern != "plain" else (0, 0, 0), dtype=np.int64)


def _lit(colours, gain):
    """uint8 colours (..., 3) under an integer gain over _GAIN_ONE: one, or one per row of colours."""
    return np.clip(np.asarray(colours) * np.expand_dims(gain, -1) // _GAIN_ONE, 0, 255).astype(np.uint8)


@lru_cache(maxsize=4)
def _textures(width, height):
    """(_TEXTURE_COUNT, height + 2 pad, width + 2 pad) int16 zero-mean textures, the same for every video of a
    frame size: value noise of three octaves, each with its own grain across and down (blotches, streaks, planks)."""
    rng = np.random.default_rng([_TEXTURE_SEED, width, height])
    shape = (height + 2 * _BACKGROUND_PAD, width + 2 * _BACKGROUND_PAD)
    textures = np.zeros((_TEXTURE_COUNT, *shape), dtype=np.int16)
    for texture in textures:
        for amplitude in (5, 8, 11):
            grain_y, grain_x = rng.integers(2, 17, 2)
            coarse = rng.integers(-amplitude, amplitude + 1, (shape[0] // grain_y + 1, shape[1] // grain_x + 1))
            blocks = np.repeat(np.repeat(coarse, grain_y, axis=0), grain_x, axis=1)[: shape[0], : shape[1]]
            texture += _box_mean(_box_mean(blocks, grain_y, 0), grain_x, 1).astype(np.int16)
    textures.setflags(write=False)
    return textures


def _box_mean(values, length, axis):
    """Integer mean over `length` neighbours along `axis` (edges repeated), rounded down: exact everywhere."""
    before = length // 2
    padding = [(0, 0)] * values.ndim
    padding[axis] = (before, length - 1 - before)
    # int16 holds the sums: at most 16 neighbours (textures) of pixels up to 255, or 7 (motion blur).
    padded = np.pad(values, padding, mode="edge").astype(np.int16)
    size = values.shape[axis]
    window = [slice(None)] * values.ndim
    total = np.zeros(values.shape, dtype=np.int16)
    for shift in range(length):
        window[axis] = slice(shift, shift + size)
        total += padded[tuple(window)]
    return (total + length // 2) // length


def _corners(box):
    """x0, y0, x1, y1 of an x, y, w, h box."""
    x, y, w, h = box
    return x, y, x + w, y + h


def _intersection(box, window):
    """The overlap of two (x0, y0, x1, y1) rectangles, or None where they do not overlap."""
    x0, y0 = max(box[0], window[0]), max(box[1], window[1])
    x1, y1 = min(box[2], window[2]), min(box[3], window[3])
    return (int(x0), int(y0), int(x1), int(y1)) if x0 < x1 and y0 < y1 else None


def _inside(box, width, height):
    x, y, w, h = box
    return x >= 1 and y >= 1 and x + w <= width - 1 and y + h <= height - 1


def _overlap(first, second, margin):
    """Whether two x, y, w, h boxes come within `margin` pixels of each other."""
    return (
        first[0] - margin < second[0] + second[2]
        and second[0] - margin < first[0] + first[2]
        and first[1] - margin < second[1] + second[3]
        and second[1] - margin < first[1] + first[3]
    )
