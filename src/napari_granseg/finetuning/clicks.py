"""Click simulation for training: the first positive click in the mask, then corrections from the error.

First click: uniform over the mask. With ``inner_prob`` > 0 it is instead drawn, with that probability, from
the smallest OTHER training mask of the same image that lies inside the target (>= 90 % covered), so
nested data (nucleolus in nucleus in cell) often shows the same click with several g values, the
ambiguity that g must resolve. Still a point inside the target mask, as UnSAMv2's recipe asks.
Corrections: a pixel uniform over the error region (false negatives -> positive click, false positives ->
negative click); masks without error get a padding point (label -1).
"""
from __future__ import annotations

import torch

__all__ = ["sample_in_masks", "first_clicks", "correction_clicks", "inner_masks"]


def sample_in_masks(masks: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One pixel uniform in each (M, H, W) mask -> (M, 2) (x, y) coords and (M,) bool 'found' flags."""
    m, h, w = masks.shape
    if m == 0:  # an image whose masks were all filtered out, in a batch with others
        return masks.new_zeros((0, 2), dtype=torch.float32), masks.new_zeros((0,), dtype=torch.bool)
    flat = masks.reshape(m, -1).float()
    found = flat.sum(1) > 0
    weights = torch.where(found[:, None], flat, torch.ones_like(flat))
    idx = torch.multinomial(weights, 1, generator=generator).squeeze(1)
    xy = torch.stack([(idx % w).float(), (idx // w).float()], dim=1)
    return xy, found


def inner_masks(masks: torch.Tensor, cover: float = 0.9) -> torch.Tensor:
    """For each mask i, the index of the smallest other mask j with >= ``cover`` of j inside i (or i itself)."""
    flat = masks.reshape(masks.shape[0], -1).float()
    area = flat.sum(1)
    inter = flat @ flat.t()  # inter[i, j] = |i & j|
    inside = (inter >= cover * area[None, :]) & (area[None, :] < area[:, None]) & (area[None, :] > 0)
    big = area.max() + 1
    cand = torch.where(inside, area[None, :].expand_as(inside), big)
    best = cand.argmin(1)
    return torch.where(inside.any(1), best, torch.arange(len(area), device=masks.device))


def first_clicks(masks: torch.Tensor, inner_prob: float = 0.0,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, 1, 2) coords and (M, 1) labels (all positive) for the masks of ONE image."""
    source = masks
    if inner_prob > 0 and masks.shape[0] > 1:
        inner = inner_masks(masks)
        use = torch.rand(masks.shape[0], generator=generator, device=masks.device) < inner_prob
        source = torch.where(use[:, None, None], masks[inner], masks)
    xy, _ = sample_in_masks(source, generator)
    return xy[:, None, :], torch.ones(masks.shape[0], 1, dtype=torch.int32, device=masks.device)


def correction_clicks(pred: torch.Tensor, target: torch.Tensor,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, H, W) bool prediction and target -> (M, 1, 2) coords, (M, 1) labels (1 FN, 0 FP, -1 no error)."""
    error = pred ^ target
    xy, found = sample_in_masks(error, generator)
    col, row = xy[:, 0].long(), xy[:, 1].long()
    is_fn = target[torch.arange(len(target), device=target.device), row, col]
    labels = torch.where(found, is_fn.int(), torch.full_like(is_fn, -1, dtype=torch.int32))
    return xy[:, None, :], labels[:, None].int()
