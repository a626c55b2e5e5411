"""The training data: datasets from the config, the pair sampler, crops, batches.

`PairDataset[index]` is sample `index` of the run: its pair (snlt_fast.training.sampler)
and its crops (snlt_fast.training.augmentation), all drawn from the generator of
(seed, index). `RunBatches` hands rank r of a run the indices
[step * G + r * b, step * G + (r + 1) * b) for global batch G = world * b, from any
step on: resuming at step k is starting there, and a run on two ranks with batch b
sees exactly the samples of one rank with batch 2b.
"""

import numpy as np
import torch

from snlt_fast.training.augmentation import Augmentation, augmented_crop
from snlt_fast.training.sampler import PairSampler, sample_rng


def open_source(entry):
    """The dataset of one `data.datasets` entry of a config."""
    from snlt_fast import datasets

    options = dict(entry["options"])
    if entry["name"] == "synthetic":
        if entry["root"] is not None:
            raise ValueError("data.datasets: the synthetic dataset is generated, it takes no root")
        return datasets.SyntheticNL(**options)
    if entry["root"] is None:
        raise ValueError(f"data.datasets: dataset {entry['name']} needs a root (the folder it is in)")
    return datasets.open_training_dataset(entry["name"], entry["root"], **options)


class PairDataset(torch.utils.data.Dataset):
    """Sample `index` -> dict(template [3, E, E] float32, search [3, S, S] float32, box [4] float64
    (cx, cy, w, h relative to the search crop centre), lookalikes [k, 4] float64 (the target's
    look-alikes in the search crop, as box), negative bool, sentence str or None,
    target_seeds [2] int64 for anchor_targets)."""

    def __init__(self, sources, data_config, seed):
        entries = data_config["datasets"]
        self.sampler = PairSampler(
            sources, [e["weight"] for e in entries], [e["frame_range"] for e in entries],
            data_config["negative_prob"], seed, data_config["lookalike_prob"],
        )
        self.sources, self.seed = sources, seed
        self.gray_prob = data_config["gray_prob"]
        self.exemplar_size, self.search_size = data_config["exemplar_size"], data_config["search_size"]
        self.context = data_config["context"]
        self.template_augmentation = Augmentation.from_config(data_config["template"])
        self.search_augmentation = Augmentation.from_config(data_config["search"])

    def __len__(self):
        return np.iinfo(np.int64).max  # indices come from RunBatches; any index is a sample

    def _video(self, ref):
        return self.sources[ref.source][ref.video]

    def __getitem__(self, index):
        rng = sample_rng(self.seed, index)
        pair = self.sampler.pair(rng)
        gray = bool(rng.random() < self.gray_prob)
        options = dict(exemplar_size=self.exemplar_size, context=self.context, gray=gray, rng=rng)
        template = self._video(pair.template)
        template_crop, _ = augmented_crop(
            template.frame(pair.template.frame), template.boxes[pair.template.frame], out_size=self.exemplar_size,
            augmentation=self.template_augmentation, **options,
        )
        search = self._video(pair.search)
        # A negative pair's search frame shows another video's objects: none of them is a look-alike of this target.
        lookalikes = np.zeros((0, 4)) if pair.negative else search.lookalike_boxes(pair.search.frame)
        search_crop, box, lookalikes = augmented_crop(
            search.frame(pair.search.frame), search.boxes[pair.search.frame], out_size=self.search_size,
            augmentation=self.search_augmentation, window_box=pair.lookalike_box, others=lookalikes, **options,
        )
        sentence = template.sentence
        return {
            "index": index,
            "template": torch.from_numpy(template_crop).permute(2, 0, 1).contiguous(),
            "search": torch.from_numpy(search_crop).permute(2, 0, 1).contiguous(),
            "box": torch.from_numpy(box),
            "lookalikes": torch.from_numpy(lookalikes),
            "negative": pair.negative,
            "sentence": sentence if sentence and sentence.strip() else None,
            # The anchor targets' random choice, keyed by the sample alone (see RunBatches).
            "target_seeds": torch.from_numpy(np.random.default_rng([self.seed, index, 1]).integers(0, 2**32, 2)),
        }


def collate(samples):
    # Samples hold different numbers of look-alikes: NaN boxes fill the rest (they overlap nothing).
    most = max(1, *(len(s["lookalikes"]) for s in samples))
    lookalikes = torch.full((len(samples), most, 4), float("nan"), dtype=torch.float64)
    for row, sample in enumerate(samples):
        lookalikes[row, : len(sample["lookalikes"])] = sample["lookalikes"]
    return {
        "index": [s["index"] for s in samples],
        "template": torch.stack([s["template"] for s in samples]),
        "search": torch.stack([s["search"] for s in samples]),
        "box": torch.stack([s["box"] for s in samples]),
        "lookalikes": lookalikes,
        "negative": torch.tensor([s["negative"] for s in samples]),
        "sentence": [s["sentence"] for s in samples],
        "target_seeds": torch.stack([s["target_seeds"] for s in samples]),
    }


class RunBatches(torch.utils.data.Sampler):
    """Batches of sample indices for one rank, steps [start_step, end_step)."""

    def __init__(self, batch_size, start_step, end_step, rank=0, world_size=1):
        self.batch_size, self.start_step, self.end_step = batch_size, start_step, end_step
        self.rank, self.world_size = rank, world_size

    def __len__(self):
        return max(self.end_step - self.start_step, 0)

    def __iter__(self):
        global_batch = self.batch_size * self.world_size
        for step in range(self.start_step, self.end_step):
            first = step * global_batch + self.rank * self.batch_size
            yield list(range(first, first + self.batch_size))


def loader(dataset, batches, workers):
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, collate_fn=collate, num_workers=workers,
        persistent_workers=False, prefetch_factor=2 if workers else None,
    )
