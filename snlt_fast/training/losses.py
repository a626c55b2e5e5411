"""SNLT's training loss (paper Eq. 5) with pysot's terms, for the visual and the language head.

For each head: classification 0.5 * NLL over the positive anchors + 0.5 * NLL over the
negative ones (each a mean over the whole batch's anchors of that label, an empty set
adding 0), regression the L1 of the deltas weighted by 1 / positives of the sample,
summed over the sample and averaged over the batch's samples; total = cls_weight * cls
+ loc_weight * loc per head, summed over the heads. The language head counts only the
samples that have a sentence (their labels ignored otherwise; its L1 averaged over
those samples), so a batch without sentences adds exactly 0, never a NaN.

Means are taken over the counts of the global batch: `Normalizer` sums the counts over
the ranks, so that ranks' losses, averaged by DDP, are the loss of the global batch.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOSS_NAMES = ("cls_vis", "loc_vis", "cls_nl", "loc_nl")


@dataclass
class Normalizer:
    """Counts summed over ranks (`reduce` adds a tensor over them) and the rank count."""

    reduce: callable = None
    world_size: int = 1

    def global_counts(self, counts):
        counts = torch.stack([c.detach().to(torch.float64) for c in counts])
        if self.reduce is not None:
            counts = self.reduce(counts)
        return counts.clamp(min=1)


def head_layout(cls, loc, anchor_num):
    """pysot's head layout: log-probabilities [B, 2, A, S, S] (0 background, 1 target) and deltas [B, 4, A, S, S]."""
    batch, _, height, width = cls.shape
    log_probs = F.log_softmax(cls.float().view(batch, 2, anchor_num, height, width), dim=1)
    return log_probs, loc.float().view(batch, 4, anchor_num, height, width)


def head_losses(cls, loc, targets, sample_mask, normalizer):
    """(cls loss, loc loss) of one head over the samples where `sample_mask` [B] is True."""
    counted = sample_mask[:, None, None, None]
    labels = torch.where(counted, targets.labels, -1)
    # Outputs of samples that do not count are replaced before any arithmetic, so that
    # whatever they hold (an inf, a NaN) reaches neither the loss nor the gradient.
    cls, loc = torch.where(counted, cls, 0), torch.where(counted, loc, 0)
    log_probs, deltas = head_layout(cls, loc, labels.shape[1])
    positive, negative = labels == 1, labels == 0
    # where, not a product with the mask: an ignored anchor's -inf must not make 0 * inf.
    positive_nll = -torch.where(positive, log_probs[:, 1], 0).sum()
    negative_nll = -torch.where(negative, log_probs[:, 0], 0).sum()
    weights = torch.where(counted, targets.delta_weights.float(), 0)
    errors = torch.where(counted, (deltas - targets.deltas.float()).abs().sum(dim=1), 0)
    l1 = (errors * weights).sum()
    counts = normalizer.global_counts([positive.sum(), negative.sum(), sample_mask.sum()])
    scale = normalizer.world_size
    cls_loss = scale * (0.5 * positive_nll / counts[0] + 0.5 * negative_nll / counts[1])
    loc_loss = scale * l1 / counts[2]
    return cls_loss.float(), loc_loss.float()


def snlt_losses(outputs, targets, has_sentence, normalizer, cls_weight=1.0, loc_weight=1.2):
    """(total, {name: term}) for the head outputs of SNLT.forward; the language terms are 0 without nl_cls."""
    every = torch.ones_like(has_sentence)
    terms = dict(zip(LOSS_NAMES[:2], head_losses(outputs["cls"], outputs["loc"], targets, every, normalizer)))
    if "nl_cls" in outputs:
        terms.update(zip(LOSS_NAMES[2:], head_losses(outputs["nl_cls"], outputs["nl_loc"], targets, has_sentence, normalizer)))
    else:
        zero = outputs["cls"].new_zeros((), dtype=torch.float32)
        terms.update(cls_nl=zero, loc_nl=zero)
    total = cls_weight * (terms["cls_vis"] + terms["cls_nl"]) + loc_weight * (terms["loc_vis"] + terms["loc_nl"])
    return total, terms
