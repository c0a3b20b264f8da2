"""Merge: one clean set of masks per image (UnSAMv2 pseudo-label step 3).

Protected NMS: instance masks (from divide) are always kept and suppress near-duplicate parts; then divide
parts, then conquer parts, largest first, are kept unless their IoU with a kept mask exceeds 0.8. Masks
covering > 90% of the image are dropped (they teach "select everything").

UnSAMv2 then refines every mask with CascadePSP and drops it when the refined mask has IoU < 0.5 with the
original. CascadePSP (a separate network with its own weights) is not bundled; pass any
``refine(image, mask) -> mask`` callable to get the same step. Without one, masks stay at patch resolution.
"""
from __future__ import annotations

import logging
from typing import Callable, Sequence

import numpy as np

from ..evaluation.metrics import iou
from .masks import PseudoMask, nms_order

__all__ = ["protected_nms", "merge_masks", "RefineFn"]

log = logging.getLogger(__name__)

RefineFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""(H, W, 3) float image, (H, W) bool mask -> refined (H, W) bool mask (e.g. a CascadePSP wrapper)."""


def protected_nms(masks: Sequence[PseudoMask], iou_threshold: float = 0.8) -> list[PseudoMask]:
    """NMS where instance masks (``is_part`` False) are never suppressed; see module docstring for order."""
    instances = [m for m in masks if not m.is_part]
    divide_parts = sorted((m for m in masks if m.is_part and m.is_divide), key=lambda m: -m.area)
    conquer_parts = sorted((m for m in masks if m.is_part and not m.is_divide), key=lambda m: -m.area)
    ordered = instances + divide_parts + conquer_parts
    keep = nms_order([m.mask for m in ordered], iou_threshold, keep_first=len(instances))
    return [ordered[i] for i in keep]


def merge_masks(masks: Sequence[PseudoMask], image: np.ndarray | None = None, iou_threshold: float = 0.8,
                max_area_frac: float = 0.9, refine: RefineFn | None = None,
                min_refine_iou: float = 0.5) -> list[PseudoMask]:
    """Protected NMS, optional refinement (drop if refined IoU < ``min_refine_iou``), drop huge masks."""
    kept = protected_nms(masks, iou_threshold)
    if refine is not None:
        if image is None:
            raise ValueError("merge_masks needs the image when a refine function is given.")
        refined = []
        for m in kept:
            new = np.asarray(refine(image, m.mask), dtype=bool)
            if new.shape != m.mask.shape:
                raise ValueError(f"refine returned shape {new.shape} for a mask of shape {m.mask.shape}.")
            if iou(m.mask, new) < min_refine_iou:
                continue
            m.replace_mask(new)
            refined.append(m)
        kept = refined
    out = [m for m in kept if 0 < m.area <= max_area_frac * m.mask.size]
    if len(out) < len(kept):
        log.debug("merge: dropped %d masks larger than %.0f%% of the image", len(kept) - len(out),
                  100 * max_area_frac)
    return out
