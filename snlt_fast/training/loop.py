"""The training loop of `snlt train`: data, targets, forward, loss, backward, step.

One step on each rank: a batch of pairs (snlt_fast.training.data), their targets (for
anchor-form models, SNLT and SiamRPN, in one fused call of snlt_fast.anchor_targets,
random choices keyed per sample; for point-form models, NanoTrack, those of
snlt_fast.training.point_targets), the forward through DDP when there are several ranks,
the loss of Eq. 5 in the head's form (snlt_fast.training.losses), backward, gradient
clipping, the optimiser step. A step
whose loss is not finite or exceeds `loss.skip_above` on any rank is skipped on every
rank: backward still runs everywhere (DDP's all-reduce is inside it), the ranks agree
on the skip with one all-reduce of the flag, and the gradients are dropped.
"""

import contextlib
import time
from pathlib import Path

import torch

from snlt_fast._files import write_text_atomic
from snlt_fast.models import NanoTrack, build_model, build_nanotrack, load_checkpoint, save_checkpoint
from snlt_fast.models.checkpoints import ALL_ARCHS, ENCODER_PREFIX, NANOTRACK_ARCHS
from snlt_fast.ops.anchor_targets import anchor_targets
from snlt_fast.ops.anchors import generate_anchors
from snlt_fast.training import config as config_module
from snlt_fast.training import distributed, optim, state
from snlt_fast.training.data import PairDataset, RunBatches, loader, open_source
from snlt_fast.training.losses import (
    LOSS_NAMES, Normalizer, head_losses, lookalike_anchors, point_head_losses, snlt_losses,
)
from snlt_fast.training.point_targets import model_points, point_targets

# A sentence for samples that have none: the language head runs on every sample so that
# every step has the same graph on every rank; the loss ignores these samples.
PLACEHOLDER_SENTENCE = "an object"
# Keys of the model section that only anchor-form models have (the targets section is
# all anchor-form too).
ANCHOR_MODEL_KEYS = ("anchor_ratios", "anchor_scales", "hidden", "width")


class TrainingError(ValueError):
    """A run that cannot start or continue; the message says why in one line."""


def build_training_model(config):
    """The model a config describes, with `model.init_from` weights loaded where they fit."""
    model_config = config["model"]
    arch = model_config["arch"]
    if arch not in ALL_ARCHS:
        raise TrainingError(f"model.arch must be one of {', '.join(ALL_ARCHS)}; got {arch!r}")
    point_form = arch in NANOTRACK_ARCHS
    if point_form:
        _check_point_form_config(config, arch)
    try:
        if point_form:
            model = build_nanotrack(arch, language=model_config["language"])
        else:
            model = build_model(arch, **_anchor_overrides(config))
    except (TypeError, ValueError) as error:
        raise TrainingError(f"model: {' '.join(str(error).split())}") from None
    if model_config["init_from"]:
        _initialise_from(model, model_config["init_from"])
    if model_config["train_language_encoder"]:
        if model.language is None:
            raise TrainingError(f"model.train_language_encoder: a {model.arch} model has no sentence encoder")
        model.language.encoder.unfreeze()
    return model


def _check_point_form_config(config, arch):
    """A NanoTrack config leaves the anchor keys alone and keeps the crop sizes the network is built for."""
    defaults = config_module.defaults()
    anchor_keys = [("model", key) for key in ANCHOR_MODEL_KEYS] + [("targets", key) for key in defaults["targets"]]
    for section, key in anchor_keys:
        if config[section][key] != defaults[section][key]:
            raise config_module.ConfigError(
                f"{section}.{key} is {config[section][key]!r}, but a {arch} model has no anchors (point form): "
                f"leave it at its default {defaults[section][key]!r}"
            )
    if config["loss"]["lookalike_weight"]:
        raise config_module.ConfigError(f"loss.lookalike_weight needs anchors; a {arch} model has none (point form)")
    if config["model"]["language_features"] != "shared":
        raise config_module.ConfigError(f"model.language_features: a {arch} model's language head has shared features only")
    for key, size in (("exemplar_size", NanoTrack.exemplar_size), ("search_size", NanoTrack.instance_size)):
        if config["data"][key] != size:
            raise config_module.ConfigError(f"data.{key} must be {size} for a {arch} model, got {config['data'][key]}")


def _anchor_overrides(config):
    """build_model's arguments for an anchor-form arch."""
    model_config = config["model"]
    overrides = {
        "anchor_num": len(model_config["anchor_ratios"]) * len(model_config["anchor_scales"]),
        "anchor_ratios": model_config["anchor_ratios"],
        "anchor_scales": model_config["anchor_scales"],
        "instance_size": config["data"]["search_size"],
        "hidden": model_config["hidden"],
    }
    if model_config["width"] != 1.0:
        overrides["width"] = model_config["width"]
    if model_config["arch"].startswith("snlt"):
        overrides["language"] = model_config["language"]
        overrides["language_features"] = model_config["language_features"]
    return overrides


def _initialise_from(model, path):
    """Copy every visual weight of a pysot, published SNLT, NanoTrack or snlt_fast checkpoint
    that this model has.

    Keys the checkpoint lacks (a language branch on top of a pysot model, say) keep their
    fresh values, except that a NanoTrack language head starts again as a copy of the
    loaded visual head, as it does at construction; a key of the checkpoint that this model
    lacks, or has in another shape, is an error, so that a mismatch of anchors or widths
    never goes unnoticed."""
    if not Path(path).is_file():
        raise TrainingError(f"model.init_from {path} does not exist or is not a file")
    try:
        source = load_checkpoint(path, language=False)
    except ValueError as error:
        raise TrainingError(f"model.init_from {path}: {' '.join(str(error).split())}") from None
    target = model.state_dict()
    loaded = {k: v for k, v in source.state_dict().items() if not k.startswith(ENCODER_PREFIX)}
    unknown = [k for k in loaded if k not in target]
    shaped = [k for k in loaded if k in target and target[k].shape != loaded[k].shape]
    if unknown or shaped:
        shown = ", ".join((unknown + shaped)[:8])
        raise TrainingError(
            f"model.init_from {path}: {len(unknown)} keys this model lacks and {len(shaped)} of another shape "
            f"({shown}); check model.arch, anchor_ratios/anchor_scales and hidden"
        )
    model.load_state_dict(loaded, strict=False)
    if isinstance(model, NanoTrack) and model.has_language:
        model.start_language_head_from_visual()


def _autocast(precision, device):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


def _check_precision(precision, device):
    if precision == "fp16" and device.type != "cuda":
        raise TrainingError("precision fp16 needs a GPU (--device cuda); on a CPU use bf16")


class Trainer:
    """One run of `snlt train` in `run_dir`."""

    def __init__(self, config, run_dir, *, resume=False, max_steps=None, progress=True, sources=None):
        """sources: datasets to train on instead of the config's `data.datasets` (one per
        entry, whose weight and frame_range still apply): a user's own sequences of Videos."""
        self.config, self.run_dir = config, Path(run_dir)
        self.device = torch.device(config["device"])
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TrainingError("device cuda: no CUDA GPU is available here")
        _check_precision(config["precision"], self.device)
        self.context = distributed.init(self.device.type)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.context.local_rank)
        train = config["train"]
        self.total_steps = train["epochs"] * train["steps_per_epoch"]
        self.end_step = min(self.total_steps, max_steps) if max_steps is not None else self.total_steps
        self.progress = progress and self.context.is_main
        torch.manual_seed(config["seed"])
        if train["deterministic"]:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.model = build_training_model(config).to(self.device)
        if self.context.distributed and config["model"]["sync_batchnorm"]:
            distributed.convert_batchnorm(self.model)
        self.optimizer = optim.build_optimizer(self.model, config)
        self.scaler = torch.amp.GradScaler("cuda") if config["precision"] == "fp16" else None
        self.start_step = 0
        self._epoch = self._network = None
        if resume:
            self._resume()
        self.point_form = getattr(self.model, "head_form", "anchor") == "point"
        if self.point_form:
            self.points = model_points(self.model, self.device)
        else:
            model_config = config["model"]
            score_size = self.model.score_size_for(config["data"]["search_size"])
            self.anchors = generate_anchors(
                self.model.stride, model_config["anchor_ratios"], model_config["anchor_scales"], score_size, device=self.device
            )
        if sources is None:
            sources = [open_source(entry) for entry in config["data"]["datasets"]]
        elif len(sources) != len(config["data"]["datasets"]):
            raise TrainingError(f"{len(sources)} sources for {len(config['data']['datasets'])} data.datasets entries")
        self.dataset = PairDataset(sources, config["data"], config["seed"])
        self.normalizer = Normalizer(distributed.all_reduce_sum if self.context.distributed else None, self.context.world_size)

    # ------------------------------------------------------------------ resume

    def _resume(self):
        path = state.newest_checkpoint(self.run_dir)
        if path is None:
            raise TrainingError(f"--resume: no checkpoint in {state.checkpoint_dir(self.run_dir)}")
        payload = state.load_training_checkpoint(path)
        saved = payload["config"]
        for key in ("model", "data", "targets", "loss", "optimizer", "schedule", "seed"):
            if saved[key] != self.config[key]:
                raise TrainingError(
                    f"--resume: the config's {key} differs from the one {path.name} was trained with "
                    f"(see {self.run_dir / 'config.yaml'}); resume with that config"
                )
        global_batch = self.config["train"]["batch_size"] * self.context.world_size
        if payload["sampler"]["global_batch"] != global_batch:
            raise TrainingError(
                f"--resume: {path.name} was trained with a global batch of {payload['sampler']['global_batch']} "
                f"samples, this run has {global_batch} (processes x train.batch_size): resume with the same"
            )
        missing, unexpected = self.model.load_state_dict(payload["model"], strict=False)
        missing = [k for k in missing if not k.startswith(ENCODER_PREFIX)]
        if missing or unexpected:
            raise TrainingError(f"--resume: {path.name} does not fit the model ({(missing + unexpected)[:5]})")
        self.optimizer.load_state_dict(payload["optimizer"])
        if self.scaler is not None and payload["scaler"] is not None:
            self.scaler.load_state_dict(payload["scaler"])
        state.restore_rng_states(payload["rng"])
        self.start_step = payload["step"]

    def _model_state(self):
        """The weights a checkpoint keeps: a frozen sentence encoder's come from its own files."""
        keep_encoder = self.config["model"]["train_language_encoder"]
        model_state = self.model.state_dict()
        return {k: v.detach().cpu() for k, v in model_state.items() if keep_encoder or not k.startswith(ENCODER_PREFIX)}

    # ------------------------------------------------------------------ one step

    def _targets(self, batch):
        boxes, negative = batch["box"].to(self.device, torch.float64), batch["negative"].to(self.device)
        if self.point_form:
            return point_targets(self.points, boxes, negative)
        targets_config = self.config["targets"]
        return anchor_targets(
            self.anchors, boxes,
            positive_iou=targets_config["positive_iou"], negative_iou=targets_config["negative_iou"],
            positive_num=targets_config["positive_num"], total_num=targets_config["total_num"],
            negative=negative, seeds=batch["target_seeds"].to(self.device),
        )

    def _step(self, network, batch):
        template = batch["template"].to(self.device, non_blocking=True)
        search = batch["search"].to(self.device, non_blocking=True)
        targets = self._targets(batch)
        has_sentence = torch.tensor([s is not None for s in batch["sentence"]], device=self.device)
        text = [s if s is not None else PLACEHOLDER_SENTENCE for s in batch["sentence"]] if self.model.has_language else None
        with _autocast(self.config["precision"], self.device):
            outputs = network(template, search, text)
        loss_config = self.config["loss"]
        lookalikes = None
        if loss_config["lookalike_weight"]:
            targets_config = self.config["targets"]
            lookalikes = lookalike_anchors(
                self.anchors, batch["lookalikes"].to(self.device), targets,
                targets_config["positive_iou"], targets_config["negative_iou"],
            )
        total, terms = snlt_losses(
            outputs, targets, has_sentence, self.normalizer, loss_config["cls_weight"], loss_config["loc_weight"],
            losses_of_head=point_head_losses if self.point_form else head_losses,
            lookalikes=lookalikes, lookalike_weight=loss_config["lookalike_weight"],
        )
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(total).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            total.backward()
        values = torch.stack([total.detach(), *(terms[name].detach() for name in LOSS_NAMES)]).double()
        bad = bool(~torch.isfinite(values[0]) | (values[0] > loss_config["skip_above"]))
        values, skipped = distributed.average_and_any(values, bad, self.context.world_size)
        if skipped:
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
        else:
            clip = self.config["optimizer"]["clip_grad_norm"]
            if clip is not None:
                torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], clip)
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        return values, skipped

    # ------------------------------------------------------------------ the run

    def train_step(self, batch, epoch):
        """One optimiser step on `batch` (a collated batch of PairDataset samples) in `epoch`:
        (lr, [loss, cls_vis, loc_vis, cls_nl, loc_nl] averaged over ranks, skipped)."""
        lr = optim.epoch_lr(epoch, self.config["schedule"], self.config["train"]["epochs"])
        optim.set_lr(self.optimizer, lr)
        values, skipped = self._step(self._network_for(epoch), batch)
        return lr, values, skipped

    def _network_for(self, epoch):
        """The module to run in `epoch`: what trains changes only between epochs, so it is set
        (and DDP, which hooks the parameters that train when it is built, rebuilt) only then."""
        if epoch != self._epoch:
            trainable = frozenset(optim.set_trainable(self.model, epoch, self.config["model"]))
            if self._network is None or trainable != self._trainable:
                self._network = distributed.wrap(self.model, self.context, self.device)
            self._epoch, self._trainable = epoch, trainable
        return self._network

    def run(self):
        """Train from the start (or the resumed step) to the end step; returns the final model path or None."""
        config, context = self.config, self.context
        train = config["train"]
        if context.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.run_dir / "config.yaml", config_module.dump(config))
            metrics = state.MetricsLog(self.run_dir / "metrics.csv", keep_through_step=self.start_step)
            writer = _summary_writer(self.run_dir, self.start_step)
        batches = RunBatches(train["batch_size"], self.start_step, self.end_step, context.rank, context.world_size)
        bar = _progress(self.start_step, self.end_step, self.total_steps) if self.progress else None
        step = self.start_step
        samples = train["batch_size"] * context.world_size
        try:
            started = time.perf_counter()
            for batch in loader(self.dataset, batches, config["data"]["workers"]):
                epoch = step // train["steps_per_epoch"]
                lr, values, skipped = self.train_step(batch, epoch)
                step += 1
                now = time.perf_counter()
                speed = samples / max(now - started, 1e-9)
                started = now
                row = {"step": step, "epoch": epoch, "lr": f"{lr:.8g}", "samples_per_s": f"{speed:.4g}", "skipped": int(skipped)}
                row.update({name: f"{float(v):.8g}" for name, v in zip(("loss", *LOSS_NAMES), values)})
                if context.is_main:
                    if step % train["log_every"] == 0 or step == self.end_step:
                        metrics.write(row)
                        for name in ("loss", *LOSS_NAMES):
                            writer.add_scalar(f"loss/{name}", float(row[name]), step)
                        writer.add_scalar("lr", lr, step)
                        writer.add_scalar("samples_per_s", speed, step)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(loss=row["loss"], lr=row["lr"], samples_per_s=row["samples_per_s"], refresh=False)
                    epoch_end = step % train["steps_per_epoch"] == 0
                    if step % train["checkpoint_every"] == 0 or epoch_end or step == self.end_step:
                        state.save_training_checkpoint(
                            self.run_dir, step, epoch, self._model_state(), self.optimizer, self.scaler, config,
                            context.world_size,
                        )
            if context.is_main and step == self.total_steps:
                return save_checkpoint(self.model, self.run_dir / "final.pth")
            return None
        finally:
            if bar is not None:
                bar.close()
            if context.is_main:
                metrics.close()
                writer.close()


def _summary_writer(run_dir, start_step):
    from torch.utils.tensorboard import SummaryWriter

    # purge_step drops the events past the resumed step, so TensorBoard shows one curve.
    return SummaryWriter(str(run_dir), purge_step=start_step if start_step else None)


def _progress(start, end, total):
    from tqdm import tqdm

    return tqdm(total=end, initial=start, desc="snlt train", unit="step", dynamic_ncols=True)
