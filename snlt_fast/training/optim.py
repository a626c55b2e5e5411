"""What trains when, at which learning rate: the model's parts, the optimiser, the schedule.

Parts (config `model.frozen` lists those that never train):
  backbone             model.backbone
  neck                 model.neck (ResNet-50 models)
  visual_head          the RPN's visual branches and their level weights; NanoTrack's ban_head
  language_head        the RPN's language branches (nl_*) and their level weights; NanoTrack's nl_head
  language_projection  the learned map from sentence embeddings to kernels
The sentence encoder stays frozen (its embeddings cached per sentence) unless
`model.train_language_encoder` is set; then it trains with the other parts.

The backbone trains from epoch `model.backbone_from_epoch`, all of it or only the
submodules named in `model.backbone_layers` (pysot: layer2-4 from epoch 10), at
`model.backbone_lr_scale` times the learning rate. Which parameters train is a
function of the epoch alone, and the optimiser holds every parameter from the start
(parameters without a gradient are left alone by its step), so that a run resumed at
any epoch rebuilds exactly the optimiser it saved; pysot rebuilt it at the unfreeze
epoch, which lost the momentum and broke resuming past that epoch.
"""

import math
import re

import torch

LANGUAGE_HEAD = re.compile(r"rpn_head\.(rpn\d+\.)?nl_|nl_head\.")


def part_of(name):
    """The part (see the module docstring) of parameter `name`; "language_encoder" for the sentence encoder's."""
    if name.startswith("backbone."):
        return "backbone"
    if name.startswith("neck."):
        return "neck"
    if name.startswith("language.encoder."):
        return "language_encoder"
    if name.startswith("language."):
        return "language_projection"
    return "language_head" if LANGUAGE_HEAD.match(name) else "visual_head"


def trains(name, epoch, model_config):
    """Whether parameter `name` trains in `epoch`."""
    part = part_of(name)
    if part == "language_encoder":
        return model_config["train_language_encoder"]
    if part in model_config["frozen"]:
        return False
    if part != "backbone":
        return True
    if epoch < model_config["backbone_from_epoch"]:
        return False
    layers = model_config["backbone_layers"]
    return not layers or any(name.startswith(f"backbone.{layer}.") for layer in layers)


def set_trainable(model, epoch, model_config):
    """Set requires_grad for `epoch`, and put modules whose parameters are all frozen in eval
    mode (their batch-norm statistics stay as loaded, as pysot does). Returns the trainable names."""
    trainable = set()
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(trains(name, epoch, model_config))
        if parameter.requires_grad:
            trainable.add(name)
    model.train()
    for module_name, module in model.named_modules():
        own = [f"{module_name}.{n}" if module_name else n for n, _ in module.named_parameters()]
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and own and not trainable.intersection(own):
            module.eval()
    if model.language is not None and model.language.encoder.frozen:
        model.language.encoder.eval()
    return trainable


def build_optimizer(model, config):
    """The optimiser over the parameters that may train (the sentence encoder's only when it
    trains): backbone group first."""
    backbone, rest = [], []
    for name, parameter in model.named_parameters():
        part = part_of(name)
        if part == "language_encoder" and not config["model"]["train_language_encoder"]:
            continue
        (backbone if part == "backbone" else rest).append(parameter)
    lr = config["schedule"]["lr"]
    groups = [
        {"params": backbone, "lr": lr * config["model"]["backbone_lr_scale"], "lr_scale": config["model"]["backbone_lr_scale"]},
        {"params": rest, "lr": lr, "lr_scale": 1.0},
    ]
    groups = [group for group in groups if group["params"]]
    options = config["optimizer"]
    if options["name"] == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=options["momentum"], weight_decay=options["weight_decay"])
    if options["name"] == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, weight_decay=options["weight_decay"])
    return torch.optim.Adam(groups, lr=lr, weight_decay=options["weight_decay"])


def epoch_lr(epoch, schedule, epochs):
    """The learning rate of `epoch` (pysot sets it per epoch).

    warm-up: `warmup_epochs` epochs geometric from warmup_start_lr towards lr (pysot's
    StepScheduler with step 1); then over the remaining epochs: "constant" lr, "step"
    lr * gamma ** (milestones passed), "log" from lr to end_lr evenly in log space (pysot's LogScheduler).
    """
    warmup, lr = schedule["warmup_epochs"], schedule["lr"]
    if epoch < warmup:
        start = schedule["warmup_start_lr"]
        return start * (lr / start) ** (epoch / warmup)
    index, length = epoch - warmup, max(epochs - warmup, 1)
    if schedule["kind"] == "step":
        return lr * schedule["gamma"] ** sum(epoch >= milestone for milestone in schedule["milestones"])
    if schedule["kind"] == "log":
        if length == 1:
            return lr
        exponent = math.log10(lr) + (math.log10(schedule["end_lr"]) - math.log10(lr)) * index / (length - 1)
        return 10.0**exponent
    return lr


def set_lr(optimizer, lr):
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
