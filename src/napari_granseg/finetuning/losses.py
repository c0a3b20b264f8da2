"""The mask losses of UnSAMv2's training (as SAM 2's), the one implementation the plugin's fine-tuning and the
training package (``granseg_training``) both use.

Total = focal x20 (alpha .25, gamma 2) + soft Dice x1 (+1 smoothing) + IoU-prediction L1 x1 + object-score BCE
x1. Each term is a mean over masks; focal is a mean over pixels per mask (SAM 2's normalisation).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["LossWeights", "sigmoid_focal_loss", "dice_loss", "mask_iou", "unsamv2_loss"]


@dataclass
class LossWeights:
    focal: float = 20.0
    dice: float = 1.0
    iou: float = 1.0
    object_score: float = 1.0


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """(M, H, W) logits and targets -> (M,) mean focal loss per mask."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(M,) soft dice loss per mask."""
    prob = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return 1 - (2 * (prob * t).sum(1) + 1) / (prob.sum(1) + t.sum(1) + 1)


def mask_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(M,) IoU of binary masks (empty vs empty counts as 1)."""
    p, t = pred.flatten(1).bool(), target.flatten(1).bool()
    inter = (p & t).sum(1).float()
    union = (p | t).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def unsamv2_loss(logits: torch.Tensor, iou_pred: torch.Tensor, object_logits: torch.Tensor,
                 target: torch.Tensor, weights: LossWeights) -> dict[str, torch.Tensor]:
    """Loss terms for one decoder pass. logits (M, H, W) at target resolution; iou_pred, object_logits (M, 1).

    The IoU target is the actual IoU of the binarised (logit > 0) prediction, detached; every training mask
    is an object that is present, so the object-score target is 1.
    """
    logits, target = logits.float(), target.float()
    focal = sigmoid_focal_loss(logits, target).mean()
    dice = dice_loss(logits, target).mean()
    actual = mask_iou(logits.detach() > 0, target > 0.5)
    iou = F.l1_loss(iou_pred.float().reshape(-1), actual)
    obj = F.binary_cross_entropy_with_logits(object_logits.float().reshape(-1),
                                             torch.ones_like(actual))
    total = weights.focal * focal + weights.dice * dice + weights.iou * iou + weights.object_score * obj
    return {"loss": total, "focal": focal.detach(), "dice": dice.detach(), "iou_l1": iou.detach(),
            "object": obj.detach(), "iou": actual.mean()}
