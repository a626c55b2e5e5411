"""A whole training step: data, anchor targets, forward, backward, optimiser.

Groups: "train step <backbone> B=32 <precision>", samples per second shown as the time
of one step. The baseline is a pysot-style step: per sample, the search crop cut out of
a pre-cropped 511 image (pysot's crop511, made before training and not timed) and the
template out of the same, pysot's numpy anchor target per sample, the SNLT model with
pysot's grouped F.conv2d correlation, pysot's loss (index_select of the labelled
anchors), SGD. snlt_fast's step: PairDataset's crops cut straight from the full frames,
the fused anchor_targets op for the whole batch, the fast correlation, the loss of
snlt_fast.training.losses. Both train the same model from the same weights; bf16 runs
the network under CPU autocast (AMX on this machine).
"""

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bench._skips import skip_without_minilm
from snlt_fast.baselines.numpy_anchor_target import NumpyAnchorTarget
from snlt_fast.datasets import Dataset, Video
from snlt_fast.nn import CONV2D
from snlt_fast.ops.anchors import generate_anchors
from snlt_fast.training.augmentation import RGB_VARIANCE, Augmentation, warp
from snlt_fast.training.config import load_config
from snlt_fast.training.data import collate
from snlt_fast.training.loop import Trainer, build_training_model
from snlt_fast.training.losses import head_layout

BATCH = 32
FRAME_SIZE = (640, 360)
SENTENCE = "man riding a motorbike wearing a white helmet"


class MemoryVideo(Video):
    """A video whose frames are arrays in memory (the timing is the pipeline's, not the disk's)."""

    def frame(self, index):
        return self.images[index]


def memory_dataset(videos=8, frames=8, seed=0):
    rng = np.random.default_rng(seed)
    items = []
    for number in range(videos):
        images = [rng.integers(0, 255, (FRAME_SIZE[1], FRAME_SIZE[0], 3), dtype=np.uint8) for _ in range(frames)]
        boxes = np.tile([200.0 + 10 * number, 120.0, 80.0, 60.0], (frames, 1))
        video = MemoryVideo(f"memory-{number}", boxes, [f"memory://{number}/{i}" for i in range(frames)], sentence=SENTENCE)
        video.images = images
        items.append(video)
    return Dataset("memory", items)


def bench_config(backbone, precision):
    arch = "snlt_r50" if backbone == "resnet50" else "snlt_alex"
    return load_config("pysot-r50", [
        f"model.arch={arch}", "model.backbone_from_epoch=0", "model.backbone_layers=[]", f"precision={precision}",
        f"train.batch_size={BATCH}", "train.deterministic=false", "data.datasets=[{name: memory, root: memory}]",
        "data.search_size=255",
    ])


class PysotStep:
    """pysot's step on the same model: crop511 images in memory, numpy targets per sample, F.conv2d."""

    def __init__(self, model, config, anchors):
        self.model, self.config = model, config
        self.optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=1e-4)
        self.target = NumpyAnchorTarget(anchors.numpy())
        rng = np.random.default_rng(1)
        # pysot's crop511 files, as images already decoded.
        self.crops511 = [rng.integers(0, 255, (511, 511, 3), dtype=np.uint8) for _ in range(BATCH)]
        self.search = Augmentation.from_config(config["data"]["search"])
        self.template = Augmentation.from_config(config["data"]["template"])
        self.autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=config["precision"] == "bf16")

    def _crop(self, image, size, augmentation, rng):
        side = (size - 1) * (1 + rng.uniform(-1, 1, 2) * augmentation.scale)
        shift = rng.uniform(-1, 1, 2) * augmentation.shift
        crop, _, _ = warp(image, (255 + shift[0], 255 + shift[1]), side, size, (0, 0, 0))
        offset = (RGB_VARIANCE @ rng.standard_normal(3).astype(np.float32))[::-1]
        return crop - offset, shift

    def __call__(self):
        rng = np.random.default_rng(2)
        templates, searches, labels, deltas, weights = [], [], [], [], []
        for image in self.crops511:
            template, _ = self._crop(image, 127, self.template, rng)
            search, shift = self._crop(image, 255, self.search, rng)
            targets = self.target((-shift[0], -shift[1], 64.0, 48.0))
            templates.append(template.transpose(2, 0, 1))
            searches.append(search.transpose(2, 0, 1))
            labels.append(targets.labels)
            deltas.append(targets.deltas)
            weights.append(targets.delta_weights)
        template = torch.from_numpy(np.stack(templates))
        search = torch.from_numpy(np.stack(searches))
        label, delta, weight = (torch.from_numpy(np.stack(v)) for v in (labels, deltas, weights))
        with self.autocast:
            outputs = self.model(template, search, [SENTENCE] * BATCH)
        total = 0
        for cls_name, loc_name in (("cls", "loc"), ("nl_cls", "nl_loc")):
            log_probs, loc = head_layout(outputs[cls_name], outputs[loc_name], label.shape[1])
            pred = log_probs.permute(0, 2, 3, 4, 1).reshape(-1, 2)
            flat = label.view(-1)
            positive = flat.eq(1).nonzero().squeeze()
            negative = flat.eq(0).nonzero().squeeze()
            cls_loss = 0.5 * F.nll_loss(pred.index_select(0, positive), flat.index_select(0, positive))
            cls_loss = cls_loss + 0.5 * F.nll_loss(pred.index_select(0, negative), flat.index_select(0, negative))
            loc_loss = ((loc - delta).abs().sum(dim=1) * weight).sum() / BATCH
            total = total + cls_loss + 1.2 * loc_loss
        self.optimizer.zero_grad()
        total.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 10.0)
        self.optimizer.step()


class FastStep:
    """snlt_fast's step: one Trainer step on a batch of the run's own data."""

    def __init__(self, trainer):
        self.trainer, self.step = trainer, 0

    def __call__(self):
        indices = range(self.step * BATCH, (self.step + 1) * BATCH)
        self.trainer.train_step(collate([self.trainer.dataset[i] for i in indices]), epoch=1)
        self.step += 1


CASES = [(backbone, precision) for backbone in ("alexnet", "resnet50") for precision in ("fp32", "bf16")]


@pytest.mark.parametrize(("backbone", "precision"), CASES)
@pytest.mark.parametrize("implementation", ["pysot", "snlt_fast"])
def test_train_step(benchmark, backbone, precision, implementation, tmp_path):
    skip_without_minilm()
    config = bench_config(backbone, precision)
    if implementation == "pysot":
        torch.manual_seed(0)
        model = build_training_model(config)
        model.backend = CONV2D
        model.train()
        anchors = generate_anchors(8, config["model"]["anchor_ratios"], config["model"]["anchor_scales"], model.score_size_for(255))
        step = PysotStep(model, config, anchors)
    else:
        step = FastStep(Trainer(config, tmp_path, progress=False, sources=[memory_dataset()]))
    benchmark.group = f"train step {backbone} B={BATCH} {precision}"
    benchmark.extra_info.update(impl="pysot-style step" if implementation == "pysot" else "snlt_fast Trainer step",
                                baseline=implementation == "pysot")
    rounds = 1 if backbone == "resnet50" else 2
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
