"""Which frames a training sample pairs: pysot's pair sampler, deterministic per sample.

A sample is a (template frame, search frame) pair. Positive pairs come from one
track: a template frame uniform over the track's visible frames, a search frame
within `frame_range` positions of it in that list (it may be the template frame).
Negative pairs, with probability `negative_prob`, take the search frame from a
different object (another video of any dataset, datasets mixed by weight): pysot's
semantics, where the published SNLT code kept the true target and only labelled it
negative. Datasets are mixed by weight.

With probability `lookalike_prob`, a positive pair whose video annotates look-alikes
of the target (`Video.lookalike_boxes`, e.g. SyntheticNL's distractor scenes) centres
its search crop on one of them, in view in the search frame, with the target still
labelled where it is: the crop a tracker cuts after drifting to a look-alike, which
appearance alone cannot tell from the target and the sentence can.

Every draw of sample `index` comes from a generator seeded by (seed, index) alone,
so a sample is the same whatever worker, rank or resumed run asks for it.
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class FrameRef:
    source: int  # index into the sampler's sources
    video: int  # index of the video in that source
    frame: int  # 0-based frame index in the video


@dataclass(frozen=True)
class Pair:
    template: FrameRef
    search: FrameRef
    negative: bool
    lookalike_box: tuple = None  # the look-alike's box (x, y, w, h) in the search frame the search crop centres on


def sample_rng(seed, index):
    """The generator of sample `index`: its pair, then its augmentation, draw from it in order."""
    return np.random.default_rng([seed, index])


def visible_frames(video):
    """Indices of the frames where the target is visible with a positive size."""
    boxes = video.boxes
    return np.flatnonzero(~video.absent & (boxes[:, 2] > 0) & (boxes[:, 3] > 0))


class PairSampler:
    """Template/search pairs from weighted sources (sequences of Videos, see snlt_fast.datasets).

    sources        list of datasets (len() and [i] -> Video)
    weights        one positive weight per source: its share of the samples
    frame_ranges   one int per source: how many visible-frame positions apart template and search may be
    negative_prob  probability of a negative pair
    lookalike_prob probability that a positive pair centres its search crop on a look-alike
    """

    def __init__(self, sources, weights, frame_ranges, negative_prob, seed, lookalike_prob=0.0):
        if not sources:
            raise ValueError("sources is empty: give the sampler at least one dataset")
        if not len(sources) == len(weights) == len(frame_ranges):
            raise ValueError(f"{len(sources)} sources, {len(weights)} weights and {len(frame_ranges)} frame ranges")
        for number, source in enumerate(sources):
            if len(source) == 0:
                raise ValueError(f"source {number} ({getattr(source, 'name', source)}) holds no videos")
        if negative_prob > 0 and sum(len(source) for source in sources) < 2:
            raise ValueError("negative pairs need at least two videos (objects) across the sources")
        weights = np.asarray(weights, dtype=np.float64)
        self.sources, self.frame_ranges = list(sources), list(frame_ranges)
        self.probabilities = weights / weights.sum()
        self.negative_prob, self.lookalike_prob, self.seed = negative_prob, lookalike_prob, seed
        self._visible_cache = {}

    def _visible(self, source, video):
        key = (source, video)
        if key not in self._visible_cache:
            self._visible_cache[key] = visible_frames(self.sources[source][video])
        return self._visible_cache[key]

    def _random_target(self, rng, source=None, avoid=None, attempts=100):
        """A random visible (source, video, frame), from `source` or a weighted draw; never the video `avoid`."""
        for _ in range(attempts):
            chosen = source if source is not None else int(rng.choice(len(self.sources), p=self.probabilities))
            video = int(rng.integers(len(self.sources[chosen])))
            if avoid == (chosen, video):
                continue
            visible = self._visible(chosen, video)
            if len(visible):
                return FrameRef(chosen, video, int(visible[rng.integers(len(visible))]))
        raise ValueError(f"no visible target found in {attempts} draws: do the datasets' videos have visible frames?")

    def pair(self, rng):
        """The pair drawn from `rng` (see sample_rng)."""
        negative = bool(rng.random() < self.negative_prob)
        source = int(rng.choice(len(self.sources), p=self.probabilities))
        if negative:
            template = self._random_target(rng, source)
            search = self._random_target(rng, avoid=(template.source, template.video))
            return Pair(template, search, True)
        template = self._random_target(rng, source)
        visible = self._visible(source, template.video)
        position = int(np.searchsorted(visible, template.frame))
        reach = self.frame_ranges[source]
        low, high = max(position - reach, 0), min(position + reach, len(visible) - 1)
        search = FrameRef(source, template.video, int(visible[rng.integers(low, high + 1)]))
        # Drawn only when asked for, so that runs without look-alike crops keep their samples.
        if self.lookalike_prob and rng.random() < self.lookalike_prob:
            lookalikes = self.sources[source][template.video].lookalike_boxes(search.frame)
            if len(lookalikes):
                return Pair(template, search, False, tuple(lookalikes[rng.integers(len(lookalikes))].tolist()))
        return Pair(template, search, False)
