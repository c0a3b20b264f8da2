"""The before/after score: one click at each object's centre, at the labels' granularity, IoU with the label.

Measured as people use the model: through :class:`~napari_granseg.engine.interactive.GranularityPredictor`
at the given precision ("auto" by default), on the whole image, so the score is what the widgets show.
"""
from __future__ import annotations

import numpy as np

from ..models.loaded import LoadedModel
from .data import centre_point

__all__ = ["click_iou", "click_ious"]


def click_ious(model: LoadedModel, images: list[np.ndarray], labels: list[np.ndarray],
               objects: list[tuple[int, int]], granularity: float, precision: str = "auto") -> list[float]:
    """IoU per ``(image, label id)`` object of the mask one centre click gives at ``granularity``."""
    from ..engine.interactive import GranularityPredictor

    pred = GranularityPredictor(model, precision=precision, cache_size=1)
    out = []
    for i in sorted({i for i, _ in objects}):
        with pred.lock:
            pred.set_image(images[i])
            for j, k in objects:
                if j != i:
                    continue
                truth = labels[i] == k
                row, col = centre_point(truth)
                masks, _, _ = pred.predict([[col, row]], [1], granularity=float(granularity))
                union = np.logical_or(masks[0], truth).sum()
                out.append(float(np.logical_and(masks[0], truth).sum() / union) if union else 1.0)
    return out


def click_iou(model: LoadedModel, images: list[np.ndarray], labels: list[np.ndarray],
              objects: list[tuple[int, int]], granularity: float, precision: str = "auto") -> float:
    """Mean of :func:`click_ious` (the score shown before and after fine-tuning)."""
    values = click_ious(model, images, labels, objects, granularity, precision)
    return float(np.mean(values)) if values else float("nan")
