"""Random weights that track like a network: untrained SNLT models, for speed
measurement and tests until trained weights exist.

A freshly built model's batch-norm layers hold mean 0 / variance 1, so on 0-255
crops its visual head outputs are in the millions and every decoded box is inf.
Fitting the batch-norm statistics to crops of the first frame (one training-mode
forward, no gradient) brings every head output to order 1, so the tracker's
boxes, scores and weights stay finite and move with the image.
"""

import torch

from snlt_fast.tracker.crop import channel_fill, crop_and_resize, frame_to_tensor


def calibrate_random_weights(model, frame, box, text=None):
    """Set `model`'s batch-norm statistics from template and search crops of `frame` around `box` (x, y, w, h)."""
    parameter = next(model.parameters())
    frame = frame_to_tensor(frame, parameter.device)
    x, y, w, h = (float(v) for v in box)
    # The target and three shifted copies: a batch with some variety for the statistics.
    shifts = torch.tensor([[0.0, 0.0], [0.25, 0.0], [0.0, 0.25], [-0.25, -0.25]], dtype=torch.float64)
    centers = (torch.tensor([x + w / 2, y + h / 2], dtype=torch.float64) + shifts * torch.tensor([w, h])).to(frame.device)
    side = (w + (w + h) / 2) * (h + (w + h) / 2)
    template_sizes = torch.full((len(shifts),), round(side**0.5), dtype=torch.float64, device=frame.device)
    fill = channel_fill(frame)
    z_crops = crop_and_resize(frame, centers, template_sizes, model.exemplar_size, fill)
    search_sizes = torch.round(template_sizes * (model.instance_size / model.exemplar_size))
    x_crops = crop_and_resize(frame, centers, search_sizes, model.instance_size, fill)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [norm.momentum for norm in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a plain average over this one batch
    # The language branch is fitted too (to a generic sentence when none is given).
    sentences = [text or "the target"] * len(shifts) if model.has_language else None
    try:
        model.train()
        with torch.no_grad():
            model(z_crops.to(parameter.dtype), x_crops.to(parameter.dtype), sentences)
    finally:
        model.eval()
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
    return model
