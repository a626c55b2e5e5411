"""SNLT's training loss (paper Eq. 5) with pysot's terms, for the visual and the language head.

For each head: classification 0.5 * NLL over the positive anchors + 0.5 * NLL over the
negative ones (each a mean over the whole batch's anchors of that label, an empty set
adding 0), regression the L1 of the deltas weighted by 1 / positives of the sample,
summed over the sample and averaged over the batch's samples; total = cls_weight * cls
+ loc_weight * loc per head, summed over the heads. The language head counts only the
samples that have a sentence (their labels ignored otherwise; its L1 averaged over
those samples), so a batch without sentences adds exactly 0, never a NaN.

With loss.lookalike_weight, the language head's classification adds that weight times
the mean NLL of "background" over the anchors a look-alike of the target fills (IoU above
positive_iou with it, below negative_iou with the target): pysot's random negatives
seldom fall on a look-alike, and it is there that the sentence has to decide.

Point-form heads (NanoTrack, targets of snlt_fast.training.point_targets) have the same
classification term over their labelled points, and as regression the linear IoU loss
1 - IoU of the predicted and the target (l, t, r, b) boxes, averaged over the positive
points (SiamBAN's choice; the NanoTrack facts this project holds do not name NanoTrack's).

Means are taken over the counts of the global batch: `Normalizer` sums the counts over
the ranks, so that ranks' losses, averaged by DDP, are the loss of the global batch.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from snlt_fast.ops.anchor_targets import anchor_ious

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


def _counted(sample_mask, tensor):
    """sample_mask [B] shaped to broadcast over `tensor` [B, ...]."""
    return sample_mask.view(-1, *(1,) * (tensor.dim() - 1))


def _head_terms(log_probs, labels, loc_sum, loc_count, normalizer):
    """(cls loss, loc loss) of one head from its log-probabilities [B, 2, ...] (0 background,
    1 target), labels [B, ...] and the regression error summed over what counts for it."""
    positive, negative = labels == 1, labels == 0
    # where, not a product with the mask: an ignored cell's -inf must not make 0 * inf.
    positive_nll = -torch.where(positive, log_probs[:, 1], 0).sum()
    negative_nll = -torch.where(negative, log_probs[:, 0], 0).sum()
    counts = normalizer.global_counts([positive.sum(), negative.sum(), loc_count])
    scale = normalizer.world_size
    cls_loss = scale * (0.5 * positive_nll / counts[0] + 0.5 * negative_nll / counts[1])
    loc_loss = scale * loc_sum / counts[2]
    return cls_loss.float(), loc_loss.float()


def _masked(sample_mask, labels, cls, loc):
    """Labels of samples that do not count ignored, and their outputs replaced before any
    arithmetic, so that whatever they hold (an inf, a NaN) reaches neither the loss nor the gradient."""
    labels = torch.where(_counted(sample_mask, labels), labels, -1)
    return labels, torch.where(_counted(sample_mask, cls), cls, 0), torch.where(_counted(sample_mask, loc), loc, 0)


def head_losses(cls, loc, targets, sample_mask, normalizer):
    """(cls loss, loc loss) of one anchor-form head over the samples where `sample_mask` [B] is True."""
    labels, cls, loc = _masked(sample_mask, targets.labels, cls, loc)
    log_probs, deltas = head_layout(cls, loc, labels.shape[1])
    counted = _counted(sample_mask, labels)
    weights = torch.where(counted, targets.delta_weights.float(), 0)
    errors = torch.where(counted, (deltas - targets.deltas.float()).abs().sum(dim=1), 0)
    return _head_terms(log_probs, labels, (errors * weights).sum(), sample_mask.sum(), normalizer)


def ltrb_iou(predicted, target):
    """IoU [B, S, S] of the boxes that (l, t, r, b) distances [B, 4, S, S] from the same points describe."""
    l, t, r, b = predicted.unbind(dim=1)
    tl, tt, tr, tb = target.unbind(dim=1)
    intersection = (torch.minimum(l, tl) + torch.minimum(r, tr)) * (torch.minimum(t, tt) + torch.minimum(b, tb))
    union = (l + r) * (t + b) + (tl + tr) * (tt + tb) - intersection
    return intersection / union


def point_head_losses(cls, loc, targets, sample_mask, normalizer):
    """(cls loss, loc loss) of one point-form head (cls [B, 2, S, S] logits, loc [B, 4, S, S]
    (l, t, r, b)) over the samples where `sample_mask` [B] is True, against point_targets:
    the loc loss is the linear IoU loss 1 - IoU, averaged over the positive points."""
    labels, cls, loc = _masked(sample_mask, targets.labels, cls, loc)
    positive = labels == 1
    # Away from the positives both boxes are replaced by a unit one: a negative point's
    # target distances can be negative, and an IoU of such boxes may divide by zero,
    # whose NaN would reach the gradient through the where below.
    at_positive = positive[:, None]
    iou = ltrb_iou(torch.where(at_positive, loc.float(), 1), torch.where(at_positive, targets.ltrb.float(), 1))
    iou_loss = torch.where(positive, 1 - iou, 0).sum()
    return _head_terms(F.log_softmax(cls.float(), dim=1), labels, iou_loss, positive.sum(), normalizer)


def lookalike_anchors(anchors, lookalikes, targets, positive_iou, negative_iou):
    """[B, A, S, S] bool: the anchors that look-alikes [B, K, 4] fill (IoU > positive_iou with
    one of them) and the target does not (IoU < negative_iou with it; NaN boxes fill nothing)."""
    filled = (anchor_ious(anchors, lookalikes) > positive_iou).any(dim=1)
    return filled & (targets.iou.to(torch.float64) < negative_iou)


def lookalike_term(nl_cls, anchors_filled, sample_mask, normalizer):
    """Mean NLL of background over the look-alike anchors of the samples where sample_mask is True."""
    filled = anchors_filled & _counted(sample_mask, anchors_filled)
    batch, _, height, width = nl_cls.shape
    cls = torch.where(_counted(sample_mask, nl_cls), nl_cls, 0)
    log_background = F.log_softmax(cls.float().view(batch, 2, -1, height, width), dim=1)[:, 0]
    count = normalizer.global_counts([filled.sum()])[0]
    return (normalizer.world_size * -torch.where(filled, log_background, 0).sum() / count).float()


def snlt_losses(
    outputs, targets, has_sentence, normalizer, cls_weight=1.0, loc_weight=1.2, losses_of_head=head_losses,
    lookalikes=None, lookalike_weight=0.0,
):
    """(total, {name: term}) for the head outputs of SNLT.forward or NanoTrack.forward; the
    language terms are 0 without nl_cls. losses_of_head: head_losses (anchor form, targets
    of anchor_targets) or point_head_losses (point form, targets of point_targets).
    lookalikes: lookalike_anchors' mask, whose term joins cls_nl times lookalike_weight."""
    every = torch.ones_like(has_sentence)
    terms = dict(zip(LOSS_NAMES[:2], losses_of_head(outputs["cls"], outputs["loc"], targets, every, normalizer)))
    if "nl_cls" in outputs:
        language = losses_of_head(outputs["nl_cls"], outputs["nl_loc"], targets, has_sentence, normalizer)
        terms.update(zip(LOSS_NAMES[2:], language))
        if lookalike_weight:
            terms["cls_nl"] = terms["cls_nl"] + lookalike_weight * lookalike_term(
                outputs["nl_cls"], lookalikes, has_sentence, normalizer
            )
    else:
        zero = outputs["cls"].new_zeros((), dtype=torch.float32)
        terms.update(cls_nl=zero, loc_nl=zero)
    total = cls_weight * (terms["cls_vis"] + terms["cls_nl"]) + loc_weight * (terms["loc_vis"] + terms["loc_nl"])
    return total, terms
