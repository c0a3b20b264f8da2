"""Mask bookkeeping shared by the stages: the pseudo-mask record, overlap measures, NMS, grid upsampling.

Overlaps are computed inside the two masks' bounding-box intersection, so greedy NMS over a few hundred
full-resolution masks stays cheap without downsampling (which would change IoUs near the 0.8 threshold).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["PseudoMask", "bbox_of", "intersection", "containment", "nms_order", "upsample_mask"]


def bbox_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(y0, x0, y1, x1) exclusive bounds of a mask; (0, 0, 0, 0) when empty."""
    rows = np.flatnonzero(mask.any(1))
    if rows.size == 0:
        return (0, 0, 0, 0)
    cols = np.flatnonzero(mask.any(0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


@dataclass(eq=False)  # identity equality: masks are arrays
class PseudoMask:
    """One pseudo-label: a full-image boolean mask and where it came from.

    ``instance_id`` groups an instance with its parts (granularity is relative to that group).
    ``is_part`` is False only for the instance mask itself. ``is_divide`` / ``is_conquer`` name the stage.
    """

    mask: np.ndarray
    instance_id: int
    is_part: bool
    is_divide: bool
    is_conquer: bool
    granularity: float = float("nan")
    score: float = 1.0
    _bbox: tuple[int, int, int, int] | None = field(default=None, repr=False, compare=False)
    _area: int | None = field(default=None, repr=False, compare=False)

    @property
    def area(self) -> int:
        if self._area is None:
            self._area = int(np.count_nonzero(self.mask))
        return self._area

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        if self._bbox is None:
            self._bbox = bbox_of(self.mask)
        return self._bbox

    def replace_mask(self, mask: np.ndarray) -> None:
        self.mask = np.asarray(mask, dtype=bool)
        self._bbox = self._area = None


def _box(mask: np.ndarray, box: tuple[int, int, int, int] | None) -> tuple[int, int, int, int]:
    return bbox_of(mask) if box is None else box


def intersection(a: np.ndarray, b: np.ndarray, box_a: tuple | None = None, box_b: tuple | None = None) -> int:
    """Pixels in both masks (computed in the bounding-box intersection only)."""
    ya0, xa0, ya1, xa1 = _box(a, box_a)
    yb0, xb0, yb1, xb1 = _box(b, box_b)
    y0, x0, y1, x1 = max(ya0, yb0), max(xa0, xb0), min(ya1, yb1), min(xa1, xb1)
    if y0 >= y1 or x0 >= x1:
        return 0
    return int(np.count_nonzero(a[y0:y1, x0:x1] & b[y0:y1, x0:x1]))


def containment(inner: np.ndarray, outer: np.ndarray) -> float:
    """Fraction of ``inner`` that lies inside ``outer`` (0 for an empty ``inner``)."""
    area = int(np.count_nonzero(inner))
    return intersection(inner, outer) / area if area else 0.0


def nms_order(masks: Sequence[np.ndarray], iou_threshold: float, keep_first: int = 0) -> list[int]:
    """Greedy NMS in the given order: indices of masks kept. The first ``keep_first`` are always kept
    (protected) and suppress later ones; a mask is dropped when its IoU with a kept one exceeds the threshold."""
    boxes = [bbox_of(m) for m in masks]
    areas = [int(np.count_nonzero(m)) for m in masks]
    kept: list[int] = []
    for i, m in enumerate(masks):
        if i >= keep_first:
            if areas[i] == 0:
                continue
            suppressed = False
            for j in kept:
                inter = intersection(m, masks[j], boxes[i], boxes[j])
                union = areas[i] + areas[j] - inter
                if union and inter / union > iou_threshold:
                    suppressed = True
                    break
            if suppressed:
                continue
        kept.append(i)
    return kept


def upsample_mask(grid_mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) patch mask -> (H, W) boolean mask: bilinear on the 0/1 grid, thresholded at 0.5 (smoother
    than nearest, and a lone patch still maps to about one patch of pixels)."""
    g = torch.from_numpy(np.ascontiguousarray(grid_mask, dtype=np.float32))[None, None]
    up = F.interpolate(g, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return (up[0, 0] >= 0.5).numpy()
