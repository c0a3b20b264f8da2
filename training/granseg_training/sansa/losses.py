"""SANSA's loss: sigmoid focal (alpha 0.25, gamma 2) + Dice (+1 smoothing), 1:1, per mask."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from napari_granseg.finetuning.losses import dice_loss, sigmoid_focal_loss

__all__ = ["sigmoid_focal_loss", "dice_loss", "sansa_loss"]


def sansa_loss(logits: torch.Tensor, target: torch.Tensor, focal_weight: float = 1.0,
               dice_weight: float = 1.0) -> dict[str, torch.Tensor]:
    """Low-res logits (M, 1, h, w) upsampled bilinearly to the target's size (M, 1, H, W); mean over masks."""
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    logits, target = logits[:, 0], target[:, 0].float()
    focal = sigmoid_focal_loss(logits, target).mean()
    dice = dice_loss(logits, target).mean()
    return {"loss": focal_weight * focal + dice_weight * dice, "focal": focal, "dice": dice}
