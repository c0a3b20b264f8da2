"""Mask metrics: the training package's one IoU, its pixel counts, NoC@t and the NoC summary of a dataset.

:func:`iou` is the only mask IoU of ``granseg_training`` on NumPy masks: the interactive evaluation (NoC, 1-IoU),
the UnSAMv2 and SANSA behaviour evaluations and the pseudo-label refinement all call it. Ignored pixels count
neither in the intersection nor in the union, as in RITM/isegm's ``utils.get_iou``. Where isegm divides by
zero, two empty masks here score 1.0 (nothing to find and nothing found is a perfect answer); one empty mask
against a non-empty one scores 0.0.

The few-shot evaluation (:mod:`.fewshot`) does not average per-image IoUs: it sums the pixel counts of
:func:`intersection_union` over episodes, as SANSA/HSNet compute mIoU and FB-IoU.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["iou", "intersection_union", "noc", "summarize_nocs", "threshold_key", "DEFAULT_NOC_THRESHOLDS"]

DEFAULT_NOC_THRESHOLDS: tuple[float, ...] = (0.80, 0.85, 0.90)


def intersection_union(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> tuple[int, int]:
    """Pixel counts (intersection, union) of two boolean masks, leaving out ``ignore`` pixels."""
    gt = np.asarray(gt, dtype=bool)
    pred = np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ValueError(f"mask shapes differ: ground truth {gt.shape} vs prediction {pred.shape}; "
                         "predictions must be at the image's full resolution")
    inter = gt & pred
    union = gt | pred
    if ignore is not None:
        keep = ~np.asarray(ignore, dtype=bool)
        inter &= keep
        union &= keep
    return int(inter.sum()), int(union.sum())


def iou(gt: np.ndarray, pred: np.ndarray, ignore: np.ndarray | None = None) -> float:
    """Intersection over union of two masks (nonzero = inside; symmetric in ``gt`` and ``pred``), leaving out
    ``ignore`` pixels; 1.0 when the union is empty (both masks empty), 0.0 when only one is."""
    inter, union = intersection_union(gt, pred, ignore)
    return 1.0 if union == 0 else inter / union


def noc(ious: Sequence[float], threshold: float, max_clicks: int = 20) -> int:
    """Number of clicks to reach ``threshold`` IoU: 1-based index of the first IoU >= threshold.

    As isegm's ``compute_noc_metric``: an object never reaching the threshold counts ``max_clicks``.
    """
    arr = np.asarray(ious, dtype=np.float64)
    hit = np.nonzero(arr >= threshold)[0]
    return int(hit[0]) + 1 if hit.size else int(max_clicks)


def summarize_nocs(all_ious: Sequence[Sequence[float]], thresholds: Sequence[float] = DEFAULT_NOC_THRESHOLDS,
                   max_clicks: int = 20) -> dict:
    """Dataset summary of per-object IoU curves: NoC@t mean, objects failing at max_clicks, 1-IoU.

    Returns ``{"num_objects", "noc": {"80": ..}, "noc_over_max": {"80": ..}, "iou_at_1"}`` where
    ``iou_at_1`` is the mean IoU after the first click (the papers' "1-IoU", there in percent).
    """
    n = len(all_ious)
    out: dict = {"num_objects": n, "noc": {}, "noc_over_max": {}, "iou_at_1": float("nan")}
    for t in thresholds:
        key = threshold_key(t)
        scores = np.array([noc(c, t, max_clicks) for c in all_ious], dtype=np.float64)
        out["noc"][key] = float(scores.mean()) if n else float("nan")
        # isegm counts ">= max_clicks" as failures (an object reached exactly at click 20 is counted too)
        out["noc_over_max"][key] = int((scores >= max_clicks).sum())
    if n:
        out["iou_at_1"] = float(np.mean([c[0] for c in all_ious]))
    return out


def threshold_key(t: float) -> str:
    """0.85 -> "85" (the NoC85 naming of the papers)."""
    return f"{round(t * 100):d}"
