"""SANSA's loss: sigmoid focal (alpha 0.25, gamma 2) + Dice (+1 smoothing), 1:1, per mask."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["sigmoid_focal_loss", "dice_loss", "sansa_loss"]


def sigmoid_focal_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.25,
                       gamma: float = 2.0) -> torch.Tensor:
    """(M, H, W) -> (M,) focal loss, mean over pixels."""
    prob = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = prob * target + (1 - prob) * (1 - target)
    loss = ce * (1 - p_t) ** gamma
    loss = (alpha * target + (1 - alpha) * (1 - target)) * loss
    return loss.flatten(1).mean(1)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(M,) soft Dice loss with +1 smoothing."""
    prob = logits.sigmoid().flatten(1)
    t = target.flatten(1)
    return 1 - (2 * (prob * t).sum(1) + 1) / (prob.sum(1) + t.sum(1) + 1)


def sansa_loss(logits: torch.Tensor, target: torch.Tensor, focal_weight: float = 1.0,
               dice_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Low-res logits (M, 1, h, w) upsampled bilinearly to the target's size (M, 1, H, W); mean over masks."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    logits, target = logits[:, 0], target[:, 0].float()
    focal = sigmoid_focal_loss(logits, target).mean()
    dice = dice_loss(logits, target).mean()
    return {"loss": focal_weight * focal + dice_weight * dice, "focal": focal, "dice": dice}
