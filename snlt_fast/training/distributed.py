"""Several processes, one run: torchrun's environment, gradient averaging, synchronised batch-norm.

`snlt train` under `torchrun --nproc_per_node=N` reads RANK / WORLD_SIZE / LOCAL_RANK
from the environment (no --local-rank argument to parse), and runs alone without them.
The model goes through DistributedDataParallel's forward, so its gradient hooks are
armed and every gradient is averaged over the ranks (the published SNLT code called its
loss outside DDP's forward and never synchronised them). Batch-norm layers that train
become `SyncBatchNorm2d`, which computes the statistics of the global batch on any
backend (torch's SyncBatchNorm runs on GPUs only): two ranks with batch b then train as
one process with batch 2b.
"""

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self):
        return self.rank == 0

    @property
    def distributed(self):
        return self.world_size > 1


def _env_int(name, default):
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init(device_type):
    """The run's Context; under torchrun, the process group too (gloo on CPU, NCCL on GPU)."""
    world_size = _env_int("WORLD_SIZE", 1)
    context = Context(_env_int("RANK", 0), world_size, _env_int("LOCAL_RANK", 0))
    if context.distributed and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(context.local_rank)
        dist.init_process_group(backend)
    return context


def shutdown():
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor):
    """The sum over ranks, without a gradient (counts, flags, logged values)."""
    if not dist.is_initialized():
        return tensor
    tensor = tensor.detach().clone()
    dist.all_reduce(tensor)
    return tensor


def average_and_any(values, flag, world_size):
    """(values averaged over the ranks, whether any rank raised `flag`), in one collective
    call that every rank makes once per step, whatever its own loss was: a rank whose loss
    went bad never leaves the others waiting in a call it skipped."""
    # On the values' device: NCCL reduces GPU tensors only.
    reduced = all_reduce_sum(torch.cat([values.double(), values.new_tensor([float(flag)], dtype=torch.float64)])).cpu()
    return reduced[:-1] / world_size, bool(reduced[-1] > 0)


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the batch across all ranks.

    The ranks add up their per-channel sums and counts for the mean, then their sums of
    squared deviations for the variance; the all-reduces are the autograd-aware ones, so
    the gradient flows through the global statistics as it does through a single process's. Running statistics are updated
    with the unbiased global variance, as BatchNorm2d does.
    """

    def forward(self, x):
        if not self.training or not dist.is_initialized():
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        x32 = x.float()
        # Two passes, the mean first: E[x^2] - E[x]^2 in float32 loses the variance of
        # features whose mean is large (a first layer's, on 0-255 pixels).
        local = torch.cat([x32.sum(dim=(0, 2, 3)), x32.new_tensor([x.shape[0] * x.shape[2] * x.shape[3]])])
        total = all_reduce(local)
        count = total[-1]
        mean = total[:-1] / count
        centred = x32 - mean[None, :, None, None]
        variance = all_reduce((centred * centred).sum(dim=(0, 2, 3))) / count
        with torch.no_grad():
            self.num_batches_tracked += 1
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            unbiased = variance * (count / (count - 1).clamp(min=1))
            self.running_mean.mul_(1 - momentum).add_(momentum * mean)
            self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        normalised = centred * torch.rsqrt(variance + self.eps)[None, :, None, None]
        out = normalised * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out.to(x.dtype)


def convert_batchnorm(module):
    """`module` with every BatchNorm2d replaced by SyncBatchNorm2d (weights and statistics kept)."""
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            synced = SyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            synced.load_state_dict(child.state_dict())
            synced.train(child.training)
            setattr(module, name, synced.to(child.weight.device))
        else:
            convert_batchnorm(child)
    return module


def wrap(model, context, device):
    """The module the training step calls: DDP over `model` when there are several ranks."""
    if not context.distributed:
        return model
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


__all__ = ["Context", "SyncBatchNorm2d", "all_reduce_sum", "average_and_any", "convert_batchnorm", "init", "shutdown", "wrap"]
