"""A run's folder: its config, metrics, TensorBoard events and checkpoints.

  DIR/config.yaml               the resolved config
  DIR/metrics.csv               one row per logged step (METRIC_COLUMNS)
  DIR/events.out.tfevents.*     TensorBoard scalars
  DIR/checkpoints/step-N.pth    every `train.checkpoint_every` steps, at each epoch end and
                                where the run stops: model, optimiser, step, RNG states, config
  DIR/final.pth                 the trained model in snlt_fast's checkpoint format

Every file is written atomically (a temporary file renamed over it), so a run killed at
any moment leaves complete files; resuming from the newest checkpoint rewrites
metrics.csv to the rows up to it, so the continued run's rows equal an uninterrupted run's.
"""

import csv
import io
import random
import re
from pathlib import Path

import numpy as np
import torch

from snlt_fast._files import atomic_path, write_text_atomic

METRIC_COLUMNS = ("step", "epoch", "lr", "loss", "cls_vis", "loc_vis", "cls_nl", "loc_nl", "samples_per_s", "skipped")
CHECKPOINT_NAME = re.compile(r"step-(\d+)\.pth")
TRAINING_FORMAT = "snlt_fast.training"


def checkpoint_dir(run_dir):
    return Path(run_dir) / "checkpoints"


def newest_checkpoint(run_dir):
    """The path of the run's newest checkpoint, or None; a killed write's hidden temporary
    file is removed on the way (it never has a checkpoint's name)."""
    found = []
    folder = checkpoint_dir(run_dir)
    if folder.is_dir():
        for path in folder.glob(".*.partial.pth"):
            path.unlink(missing_ok=True)
        for path in folder.iterdir():
            match = CHECKPOINT_NAME.fullmatch(path.name)
            if match:
                found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def rng_states():
    """Every RNG state as tensors and plain values, so that checkpoints load with weights_only."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached_gaussian],
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states):
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_training_checkpoint(run_dir, step, epoch, model_state, optimizer, scaler, config, world_size):
    global_batch = config["train"]["batch_size"] * world_size
    payload = {
        "format": TRAINING_FORMAT,
        "step": step,
        "epoch": epoch,
        # The sampler's position: samples are numbered, and the next step starts here.
        "sampler": {"next_sample": step * global_batch, "global_batch": global_batch},
        "model": model_state,
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng_states(),
        "config": config,
    }
    path = checkpoint_dir(run_dir) / f"step-{step:08d}.pth"
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)
    return path


def load_training_checkpoint(path):
    """A checkpoint `snlt train` wrote, read with torch's weights_only loader (tensors and
    plain values only: a checkpoint never runs code)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = " ".join(str(error).split()[:30]) or type(error).__name__
        raise ValueError(f"cannot read training checkpoint {path}: {reason}") from None
    if not isinstance(payload, dict) or payload.get("format") != TRAINING_FORMAT:
        raise ValueError(f"{path} is not a training checkpoint of snlt train")
    return payload


class MetricsLog:
    """metrics.csv: rows appended and flushed as they come."""

    def __init__(self, path, keep_through_step=None):
        self.path = Path(path)
        rows = []
        if keep_through_step is not None and self.path.is_file():
            with self.path.open(newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if _complete(row) and int(row["step"]) <= keep_through_step]
        text = io.StringIO()
        writer = csv.DictWriter(text, METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.path, text.getvalue())
        self.handle = self.path.open("a", newline="")
        self.writer = csv.DictWriter(self.handle, METRIC_COLUMNS)

    def write(self, row):
        self.writer.writerow(row)
        self.handle.flush()

    def close(self):
        self.handle.close()


def _complete(row):
    """A row that a kill did not cut short."""
    return all(row.get(column) not in (None, "") for column in METRIC_COLUMNS) and row["step"].isdigit()


def read_metrics(path):
    with Path(path).open(newline="") as handle:
        return list(csv.DictReader(handle))
