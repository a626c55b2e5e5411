"""Training: configs, schedules, parts, sampler, crops, losses and the loop end to end."""

import math

import cv2
import numpy as np
import pytest
import torch
import yaml

from snlt_fast.datasets import Dataset, Video, open_training_dataset
from snlt_fast.training import config as config_module
from snlt_fast.training.augmentation import Augmentation, augmented_crop, box_center_size, context_side
from snlt_fast.training.config import ConfigError, load_config
from snlt_fast.training.losses import Normalizer, head_losses, lookalike_anchors, snlt_losses
from snlt_fast.training.optim import epoch_lr, part_of, trains
from snlt_fast.training.sampler import PairSampler, sample_rng
from snlt_fast.ops.anchor_targets import AnchorTargets, anchor_ious

from conftest import requires_minilm
from training_helpers import tiny_config

# pysot's per-epoch learning rates of siamrpn_r50_l234_dwxcorr_8gpu (warm-up, then log decay).
PYSOT_R50_LRS = (
    0.001, 0.00138, 0.001904, 0.002627, 0.003624, 0.005, 0.004242, 0.003598, 0.003053, 0.00259,
    0.002197, 0.001864, 0.001581, 0.001341, 0.001138, 0.000965, 0.000819, 0.000695, 0.000589, 0.0005,
)


# --------------------------------------------------------------------------- configs


def test_bundled_configs_load_with_their_recipes():
    assert {"snlt-paper", "pysot-r50", "synthetic-tiny"} <= set(config_module.bundled_names())
    paper = load_config("snlt-paper")
    assert paper["optimizer"]["name"] == "adagrad" and paper["train"]["epochs"] == 10
    assert [epoch_lr(e, paper["schedule"], 10) for e in range(10)] == [1e-3] * 5 + [5e-4] * 5
    pysot = load_config("pysot-r50")
    assert pysot["optimizer"]["clip_grad_norm"] == 10.0 and pysot["model"]["backbone_from_epoch"] == 10
    lrs = [epoch_lr(e, pysot["schedule"], pysot["train"]["epochs"]) for e in range(20)]
    assert lrs == pytest.approx(PYSOT_R50_LRS, rel=2e-3)
    tiny = load_config("synthetic-tiny")
    assert tiny["train"]["epochs"] * tiny["train"]["steps_per_epoch"] == 200
    assert tiny["data"]["datasets"][0]["name"] == "synthetic"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.batchsize=3"], "unknown config key train.batchsize"),
        (["train.batch_size=three"], "train.batch_size must be int"),
        (["optimizer.name=rmsprop"], "optimizer.name must be one of"),
        (["model.frozen=[wheels]"], "model.frozen holds 'wheels'"),
        (["data.datasets.3.root=x"], "data.datasets.3 is not an entry"),
        (["train"], "expected key=value"),
        (["data.negative_prob=1.5"], "data.negative_prob must be a probability"),
        (["data.lookalike_prob=-0.1"], "data.lookalike_prob must be a probability"),
        (["loss.lookalike_weight=-1"], "loss.lookalike_weight must be at least 0"),
        (["model.language_features=both"], "model.language_features must be one of shared, own, own\\+pixels"),
        (["data.datasets=[{name: lasot, colour: red}]"], "unknown config key data.datasets.0.colour"),
    ],
)
def test_bad_configs_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config("synthetic-tiny", overrides)


def test_overrides_reach_nested_keys_and_list_entries(tmp_path):
    config = load_config("pysot-r50", ["data.datasets.1.root=/data/got", "train.batch_size=16", "schedule.lr=1"])
    assert config["data"]["datasets"][1]["root"] == "/data/got"
    assert config["train"]["batch_size"] == 16 and config["schedule"]["lr"] == 1.0
    path = tmp_path / "broken.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(path)
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="cannot be read as UTF-8"):
        load_config(path)
    with pytest.raises(ConfigError, match="neither a YAML file nor a bundled config"):
        load_config("no-such-config")


# --------------------------------------------------------------------------- parts


def test_parts_train_as_pysot_unfreezes_them():
    model = load_config("pysot-r50")["model"]
    assert part_of("rpn_head.rpn3.nl_cls_head.0.weight") == "language_head"
    assert part_of("rpn_head.nl_loc_weight") == "language_head"
    assert part_of("rpn_head.rpn3.cls.conv_kernel.0.weight") == "visual_head"
    assert part_of("language.projection.weight") == "language_projection"
    assert part_of("language.encoder.model.embeddings.word_embeddings.weight") == "language_encoder"
    assert not trains("language.encoder.model.embeddings.word_embeddings.weight", 0, model)
    assert not trains("backbone.layer2.0.conv1.weight", 9, model)
    assert trains("backbone.layer2.0.conv1.weight", 10, model)
    assert not trains("backbone.layer1.0.conv1.weight", 10, model)
    assert not trains("backbone.conv1.weight", 19, model)
    assert trains("neck.downsample2.downsample.0.weight", 0, model)
    language_only = {**model, "frozen": ["backbone", "neck", "visual_head"]}
    assert not trains("rpn_head.rpn2.cls.head.3.weight", 0, language_only)
    assert trains("rpn_head.rpn2.nl_cls_head.3.weight", 0, language_only)


# --------------------------------------------------------------------------- sampler


def _still_videos(count, frames=20, absent_every=0):
    videos = []
    for number in range(count):
        boxes = np.tile([10.0, 10.0, 20.0, 20.0], (frames, 1))
        absent = np.zeros(frames, dtype=bool)
        if absent_every:
            absent[::absent_every] = True
        videos.append(Video(f"v{number}", boxes, [f"frame{i}" for i in range(frames)], absent))
    return Dataset("toy", videos)


def test_pairs_are_a_function_of_seed_and_index():
    sources = [_still_videos(5, absent_every=3), _still_videos(3)]
    sampler = PairSampler(sources, [3.0, 1.0], [4, 2], 0.3, seed=11)
    pairs = [sampler.pair(sample_rng(11, index)) for index in range(400)]
    assert pairs == [sampler.pair(sample_rng(11, index)) for index in range(400)]
    assert pairs != [sampler.pair(sample_rng(12, index)) for index in range(400)]
    for pair in pairs:
        for ref in (pair.template, pair.search):
            assert not sources[ref.source][ref.video].absent[ref.frame]
        if pair.negative:
            assert (pair.search.source, pair.search.video) != (pair.template.source, pair.template.video)
        else:
            assert pair.search.source == pair.template.source and pair.search.video == pair.template.video
            visible = np.flatnonzero(~sources[pair.template.source][pair.template.video].absent)
            positions = np.searchsorted(visible, [pair.template.frame, pair.search.frame])
            assert abs(positions[0] - positions[1]) <= [4, 2][pair.template.source]
    negatives = sum(pair.negative for pair in pairs)
    assert 80 <= negatives <= 160
    first_source = sum(pair.template.source == 0 for pair in pairs)
    assert 250 <= first_source <= 350  # weights 3:1


def test_sampler_refuses_what_cannot_make_pairs():
    with pytest.raises(ValueError, match="negative pairs need at least two videos"):
        PairSampler([_still_videos(1)], [1.0], [1], 0.2, seed=0)
    with pytest.raises(ValueError, match="holds no videos"):
        PairSampler([Dataset("empty", [])], [1.0], [1], 0.0, seed=0)


# --------------------------------------------------------------------------- crops


def _frame_with_box(box, size=(200, 160)):
    frame = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    x, y, w, h = box
    frame[y - 1 : y - 1 + h, x - 1 : x - 1 + w] = 255
    return frame


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_crop_box_covers_the_target_pixels(flip):
    box = (61, 51, 40, 30)
    frame = _frame_with_box(box)
    augmentation = Augmentation(shift=20.0, scale=0.1, flip=flip)
    for index in range(5):
        crop, target = augmented_crop(
            frame, box, out_size=255, exemplar_size=127, context=0.5, augmentation=augmentation, gray=False,
            rng=sample_rng(0, index),
        )
        assert crop.shape == (255, 255, 3) and crop.dtype == np.float32
        ys, xs = np.nonzero(crop[:, :, 0] > 127)
        centre = 127
        cx, cy, w, h = target
        # The bright pixels span the target box to within a pixel of interpolation.
        assert xs.min() - centre == pytest.approx(cx - w / 2, abs=1.0)
        assert xs.max() - centre == pytest.approx(cx + w / 2 - 1, abs=1.5)
        assert ys.min() - centre == pytest.approx(cy - h / 2, abs=1.0)
        assert ys.max() - centre == pytest.approx(cy + h / 2 - 1, abs=1.5)


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_other_boxes_land_in_the_crop_as_the_target_does(flip):
    box, other = (61, 51, 40, 30), (20, 100, 16, 24)
    frame = _frame_with_box(box)
    augmentation = Augmentation(shift=20.0, scale=0.1, flip=flip)
    options = dict(out_size=255, exemplar_size=127, context=0.5, augmentation=augmentation, gray=False)
    crop, target = augmented_crop(frame, box, rng=sample_rng(0, 1), **options)
    # The same draws: asking for other boxes changes neither the crop nor the target.
    same_crop, same_target, others = augmented_crop(frame, box, rng=sample_rng(0, 1), others=[box, other], **options)
    assert np.array_equal(crop, same_crop) and np.array_equal(target, same_target)
    assert others.shape == (2, 4) and np.array_equal(others[0], target)
    # The other box is where a crop of it alone, with the same window, puts it.
    _, alone = augmented_crop(frame, other, rng=sample_rng(0, 1), window_box=box, **options)
    assert np.array_equal(others[1], alone)
    assert augmented_crop(frame, box, rng=sample_rng(0, 1), others=np.zeros((0, 4)), **options)[2].shape == (0, 4)


def test_unaugmented_crop_centres_the_target_at_the_template_scale():
    box = (61, 51, 40, 30)
    crop, target = augmented_crop(
        _frame_with_box(box), box, out_size=127, exemplar_size=127, context=0.5, augmentation=Augmentation(),
        gray=True, rng=sample_rng(0, 0),
    )
    scale = 126 / context_side(40, 30, 0.5)
    assert target == pytest.approx([0, 0, 40 * scale, 30 * scale])
    assert box_center_size(box) == (79.5, 64.5, 40, 30)  # 0-based pixel centres
    assert np.array_equal(crop[:, :, 0], crop[:, :, 2])  # grey


def test_lookalike_crops_centre_on_a_look_alike_and_label_the_target_where_it_is():
    from snlt_fast.datasets import SyntheticNL
    from snlt_fast.training.data import PairDataset

    scenes = SyntheticNL(videos=4, frames=30, seed=5, kind="distractor")
    config = load_config("synthetic-tiny", ["data.lookalike_prob=1.0", "data.negative_prob=0.0"])["data"]
    config["datasets"] = config["datasets"][:1]
    dataset = PairDataset([scenes], config, seed=3)
    plain = PairSampler([scenes], [1.0], [10], 0.0, seed=3)
    centred = 0
    for index in range(12):
        pair = dataset.sampler.pair(sample_rng(3, index))
        # Without look-alike crops the draws, and so the samples, are those of a run without the option.
        assert plain.pair(sample_rng(3, index)).lookalike_box is None
        if pair.lookalike_box is None:
            continue
        centred += 1
        video, frame = scenes[pair.search.video], pair.search.frame
        lookalike = pair.lookalike_box
        assert any(np.array_equal(lookalike, box) for box in video.lookalike_boxes(frame))
        sample = dataset[index]
        cx, cy, w, h = sample["box"].numpy()
        scale = np.array([w, h]) / video.boxes[frame][2:]  # per axis: the scale augmentation stretches each
        # The target sits where it is relative to the look-alike, up to the search shift (64 px).
        offset = (np.array(box_center_size(video.boxes[frame])[:2]) - box_center_size(lookalike)[:2]) * scale
        assert np.abs(np.array([cx, cy]) - offset).max() <= config["search"]["shift"] + 1e-6
    assert centred >= 6
    assert len(SyntheticNL(videos=1, frames=5, seed=5, kind="plain")[0].lookalike_boxes(0)) == 0


def test_samples_carry_the_look_alikes_of_their_search_crop():
    from snlt_fast.datasets import SyntheticNL
    from snlt_fast.training.data import PairDataset, collate

    scenes = SyntheticNL(videos=4, frames=30, seed=5, kind="distractor")
    config = load_config("synthetic-tiny", ["data.negative_prob=0.3"])["data"]
    config["datasets"] = config["datasets"][:1]
    dataset = PairDataset([scenes], config, seed=3)
    samples = [dataset[index] for index in range(12)]
    assert {bool(s["negative"]) for s in samples} == {True, False}
    for index, sample in enumerate(samples):
        pair = dataset.sampler.pair(sample_rng(3, index))
        expected = 0 if pair.negative else len(scenes[pair.search.video].lookalike_boxes(pair.search.frame))
        assert sample["lookalikes"].shape == (expected, 4)
        if expected:  # mapped as the target: the same scale per axis
            video, frame = scenes[pair.search.video], pair.search.frame
            scale = sample["box"][2:] / torch.tensor(video.boxes[frame][2:], dtype=torch.float64)
            sizes = torch.tensor(video.lookalike_boxes(frame)[:, 2:], dtype=torch.float64)
            assert torch.allclose(sample["lookalikes"][:, 2:], sizes * scale)
    batch = collate(samples)
    most = max(len(s["lookalikes"]) for s in samples)
    assert batch["lookalikes"].shape == (12, most, 4)
    for row, sample in enumerate(samples):
        count = len(sample["lookalikes"])
        assert torch.equal(batch["lookalikes"][row, :count], sample["lookalikes"])
        assert batch["lookalikes"][row, count:].isnan().all()


# --------------------------------------------------------------------------- losses


def _random_targets(generator, batch, anchors, size):
    labels = torch.randint(-1, 2, (batch, anchors, size, size), generator=generator)
    positives = (labels == 1).sum(dim=(1, 2, 3)).clamp(min=1)
    weights = (labels == 1).float() / positives[:, None, None, None]
    deltas = torch.randn(batch, 4, anchors, size, size, generator=generator)
    return AnchorTargets(labels, deltas, weights, torch.zeros(batch, anchors, size, size))


def _direct_head_losses(cls, loc, targets, mask):
    """pysot's select_cross_entropy_loss and weight_l1_loss written out per anchor."""
    batch, anchors, size = targets.labels.shape[0], targets.labels.shape[1], targets.labels.shape[2]
    positive, negative = [], []
    l1 = 0.0
    for b in range(batch):
        if not mask[b]:
            continue
        for a in range(anchors):
            for y in range(size):
                for x in range(size):
                    logits = torch.stack([cls[b, a, y, x], cls[b, anchors + a, y, x]]).double()
                    log_probs = logits - torch.logsumexp(logits, 0)
                    label = int(targets.labels[b, a, y, x])
                    if label == 1:
                        positive.append(-log_probs[1])
                    elif label == 0:
                        negative.append(-log_probs[0])
                    error = sum(abs(float(loc[b, k * anchors + a, y, x]) - float(targets.deltas[b, k, a, y, x])) for k in range(4))
                    l1 += float(targets.delta_weights[b, a, y, x]) * error
    mean = lambda values: float(torch.stack(values).mean()) if values else 0.0  # noqa: E731
    return 0.5 * mean(positive) + 0.5 * mean(negative), l1 / max(int(mask.sum()), 1)


def test_head_losses_equal_the_direct_computation():
    generator = torch.Generator().manual_seed(4)
    batch, anchors, size = 3, 2, 5
    cls = torch.randn(batch, 2 * anchors, size, size, generator=generator)
    loc = torch.randn(batch, 4 * anchors, size, size, generator=generator)
    targets = _random_targets(generator, batch, anchors, size)
    for mask in (torch.tensor([True, True, True]), torch.tensor([True, False, True])):
        cls_loss, loc_loss = head_losses(cls, loc, targets, mask, Normalizer())
        expected = _direct_head_losses(cls, loc, targets, mask)
        assert float(cls_loss) == pytest.approx(expected[0], rel=1e-5)
        assert float(loc_loss) == pytest.approx(expected[1], rel=1e-5)


def test_lookalike_anchors_are_those_a_look_alike_fills_and_the_target_does_not():
    # One anchor shape on a 3x3 grid of stride 10: cells at -10, 0, 10.
    grid = torch.tensor([-10.0, 0.0, 10.0], dtype=torch.float64)
    anchors = torch.stack(
        [grid.repeat(3, 1), grid[:, None].repeat(1, 3), torch.full((3, 3), 10.0, dtype=torch.float64),
         torch.full((3, 3), 10.0, dtype=torch.float64)]
    )[:, None]
    lookalikes = torch.tensor([[[10.0, 0.0, 10.0, 10.0], [math.nan] * 4], [[math.nan] * 4, [math.nan] * 4]], dtype=torch.float64)
    ious = anchor_ious(anchors, lookalikes)
    assert ious.shape == (2, 2, 1, 3, 3)
    assert float(ious[0, 0, 0, 1, 2]) == 1.0 and float(ious[0, 0, 0, 1, 1]) == 0.0
    assert ious[0, 1].isnan().all() and ious[1].isnan().all()
    target_iou = torch.zeros(2, 1, 3, 3)
    filled = lookalike_anchors(anchors, lookalikes, AnchorTargets(None, None, None, target_iou), 0.6, 0.3)
    assert filled.nonzero().tolist() == [[0, 0, 1, 2]]
    target_iou[0, 0, 1, 2] = 0.4  # the target overlaps that anchor too: it is no look-alike's alone
    assert not lookalike_anchors(anchors, lookalikes, AnchorTargets(None, None, None, target_iou), 0.6, 0.3).any()


def test_the_lookalike_term_is_the_background_nll_over_the_look_alike_anchors():
    generator = torch.Generator().manual_seed(6)
    batch, anchors, size = 3, 2, 4
    outputs = {name: torch.randn(batch, k * anchors, size, size, generator=generator)
               for name, k in (("cls", 2), ("loc", 4), ("nl_cls", 2), ("nl_loc", 4))}
    targets = _random_targets(generator, batch, anchors, size)
    filled = torch.zeros(batch, anchors, size, size, dtype=torch.bool)
    filled[0, 1, 2, 3] = filled[1, 0, 0, 0] = filled[2, 1, 1, 1] = True
    sentences = torch.tensor([True, True, False])  # the third sample's anchor does not count
    _, plain = snlt_losses(outputs, targets, sentences, Normalizer())
    _, weighted = snlt_losses(outputs, targets, sentences, Normalizer(), lookalikes=filled, lookalike_weight=2.0)
    nl_cls = outputs["nl_cls"]
    background = [torch.log_softmax(torch.stack([nl_cls[b, a, y, x], nl_cls[b, anchors + a, y, x]]), 0)[0]
                  for b, a, y, x in ((0, 1, 2, 3), (1, 0, 0, 0))]
    expected = float(plain["cls_nl"]) + 2.0 * float(-sum(background) / 2)
    assert float(weighted["cls_nl"]) == pytest.approx(expected, rel=1e-6)
    assert all(torch.equal(weighted[name], plain[name]) for name in ("cls_vis", "loc_vis", "loc_nl"))


def test_losses_of_ranks_add_up_to_the_global_batch():
    """Two halves, each normalised by the global counts and scaled by the rank count, average
    to the whole batch's loss: what DDP's gradient average then makes of them."""
    generator = torch.Generator().manual_seed(9)
    batch, anchors, size = 6, 3, 4
    outputs = {name: torch.randn(batch, k * anchors, size, size, generator=generator)
               for name, k in (("cls", 2), ("loc", 4), ("nl_cls", 2), ("nl_loc", 4))}
    targets = _random_targets(generator, batch, anchors, size)
    sentences = torch.tensor([True, False, True, True, False, False])
    whole, _ = snlt_losses(outputs, targets, sentences, Normalizer())
    halves = [slice(0, 3), slice(3, 6)]
    parts = [({k: v[h] for k, v in outputs.items()}, AnchorTargets(*(t[h] for t in targets)), sentences[h]) for h in halves]
    counts = []
    for part_outputs, part_targets, part_sentences in parts:  # what each rank counts
        recorder = Normalizer(reduce=lambda c, seen=counts: seen.append(c) or c)
        snlt_losses(part_outputs, part_targets, part_sentences, recorder)
    totals = [counts[0] + counts[2], counts[1] + counts[3]]  # [visual, language] counts over both ranks
    losses = []
    for part_outputs, part_targets, part_sentences in parts:
        queue = list(totals)
        normalizer = Normalizer(reduce=lambda c: queue.pop(0), world_size=2)
        losses.append(snlt_losses(part_outputs, part_targets, part_sentences, normalizer)[0])
    assert float(sum(losses) / 2) == pytest.approx(float(whole), rel=1e-6)


def test_samples_without_a_sentence_add_nothing_and_never_a_nan():
    generator = torch.Generator().manual_seed(2)
    batch, anchors, size = 2, 2, 3
    outputs = {name: torch.randn(batch, k * anchors, size, size, generator=generator, requires_grad=True)
               for name, k in (("cls", 2), ("loc", 4), ("nl_cls", 2), ("nl_loc", 4))}
    outputs["nl_cls"].data[0, 0, 0, 0] = math.inf  # a language head gone wild on an unlabelled sample
    targets = _random_targets(generator, batch, anchors, size)
    total, terms = snlt_losses(outputs, targets, torch.tensor([False, False]), Normalizer())
    assert float(terms["cls_nl"].detach()) == 0 and float(terms["loc_nl"].detach()) == 0
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(t.grad).all() for t in outputs.values())
    assert float(outputs["nl_cls"].grad.abs().sum()) == 0


def _skip_agreement_rank(rank, rendezvous, results):
    import torch.distributed as dist

    from snlt_fast.training.distributed import average_and_any

    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=2)
    try:
        # Rank 0's loss went bad (NaN); rank 1's is fine.
        values = torch.tensor([math.nan if rank == 0 else 2.0, float(rank)])
        averaged, skipped = average_and_any(values, flag=rank == 0, world_size=2)
        results.put((rank, skipped, float(averaged[1])))
    finally:
        dist.destroy_process_group()


def test_a_bad_loss_on_one_rank_skips_the_step_on_every_rank_without_a_hang(tmp_path):
    context = torch.multiprocessing.get_context("spawn")
    results = context.Queue()
    processes = [context.Process(target=_skip_agreement_rank, args=(rank, tmp_path / "rendezvous", results)) for rank in range(2)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=120)
    assert all(process.exitcode == 0 for process in processes), [process.exitcode for process in processes]
    answers = sorted(results.get(timeout=5) for _ in processes)
    assert answers == [(0, True, 0.5), (1, True, 0.5)]


def test_batches_are_the_same_with_loader_workers(tmp_path):
    from snlt_fast.training.data import PairDataset, RunBatches, loader

    config = load_config(tiny_config(tmp_path))
    sources = [open_training_dataset("lasot", config["data"]["datasets"][0]["root"])]
    dataset = PairDataset(sources, config["data"], config["seed"])
    batches = [list(loader(dataset, RunBatches(3, 1, 3), workers)) for workers in (0, 2)]
    for plain, parallel in zip(*batches):
        assert plain["index"] == parallel["index"] == list(range(plain["index"][0], plain["index"][0] + 3))
        assert torch.equal(plain["search"], parallel["search"]) and torch.equal(plain["box"], parallel["box"])
        assert plain["sentence"] == parallel["sentence"]


def test_the_language_encoder_stays_frozen_by_default(tmp_path):
    from snlt_fast.training.loop import build_training_model
    from snlt_fast.training.optim import set_trainable

    config = load_config(tiny_config(tmp_path))
    model = build_training_model(config)
    trainable = set_trainable(model, 0, config["model"])
    assert model.language.encoder.frozen and "language.projection.weight" in trainable


@requires_minilm
def test_the_language_encoder_trains_when_asked(tmp_path):
    from snlt_fast.training.loop import build_training_model
    from snlt_fast.training.optim import build_optimizer, set_trainable

    config = load_config(tiny_config(tmp_path), ["model.language=minilm", "model.train_language_encoder=true"])
    model = build_training_model(config)
    trainable = set_trainable(model, 0, config["model"])
    encoder = {name for name, _ in model.named_parameters() if name.startswith("language.encoder.")}
    assert encoder and encoder <= trainable and not model.language.encoder.frozen
    assert model.language.encoder.training
    optimised = {id(p) for group in build_optimizer(model, config).param_groups for p in group["params"]}
    assert all(id(p) in optimised for name, p in model.named_parameters() if name in encoder)


class _Pickled:
    """Stands for any object a pickle could carry: unpickling it would run code."""


def test_training_checkpoints_load_tensors_and_plain_values_only(tmp_path):
    from snlt_fast.training.state import TRAINING_FORMAT, load_training_checkpoint

    path = tmp_path / "step-00000001.pth"
    torch.save({"format": TRAINING_FORMAT, "payload": _Pickled()}, path)
    with pytest.raises(ValueError, match="cannot read training checkpoint"):
        load_training_checkpoint(path)
    torch.save({"format": "other"}, path)
    with pytest.raises(ValueError, match="not a training checkpoint"):
        load_training_checkpoint(path)
