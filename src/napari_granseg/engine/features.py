"""Model input -> the features SAM 2's mask decoder reads: the one implementation of that step.

Why a module of its own: the predictor computes these features once per image (no gradient, cached), and
fine-tuning with a trainable image encoder computes them on every step (with gradient). Both must run the same
upstream steps (``forward_image``, ``_prepare_backbone_features``, the no-memory embedding, the reshape to
feature maps) at the same precision, or a fine-tuned model would be trained on features it never sees.
"""
from __future__ import annotations

import torch

from ..devices import ENCODER_EXACT_PARTS, precision_context
from ..models.encoder_precision import forward_image

__all__ = ["feature_sizes", "image_features"]


def feature_sizes(image_size: int) -> list[tuple[int, int]]:
    """(h, w) of the two high-resolution feature maps and the image embedding for an ``image_size`` input."""
    s = int(image_size)
    return [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]


def image_features(model: torch.nn.Module, x: torch.Tensor, precision: str,
                   exact_parts: tuple[str, ...] = ENCODER_EXACT_PARTS) -> dict:
    """``{"image_embed": (B, C, h, w), "high_res_feats": [...]}`` for the (B, 3, S, S) model input ``x``.

    The image encoder runs in the encoder stages of ``precision`` (``models.encoder_precision.forward_image``:
    its bulk in "encoder", its ``exact_parts`` in "encoder_exact"); gradients flow when the caller has them on
    (fine-tuning), the predictor calls this under ``torch.no_grad``.
    """
    backbone_out = forward_image(model, x, precision, exact_parts)
    with precision_context(x.device, precision, "encoder"):
        _, vision_feats, _, _ = model._prepare_backbone_features(backbone_out)
        if model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
    batch = x.shape[0]
    sizes = feature_sizes(int(model.image_size))
    feats = [feat.float().permute(1, 2, 0).reshape(batch, -1, *size)
             for feat, size in zip(vision_feats[::-1], sizes[::-1])][::-1]
    return {"image_embed": feats[-1], "high_res_feats": feats[:-1]}
