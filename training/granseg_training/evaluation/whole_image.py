"""Whole-image evaluation: class-agnostic average recall AR@k with pycocotools, as UnSAMv2/UnSAM report.

COCOeval with ``iouType="segm"``, ``params.useCats = 0`` (every mask matches any object), ``maxDets`` as asked,
and each predicted mask scored by the model's predicted IoU (only the ranking matters: it decides which masks
are the top k). AR@k is the mean over IoU thresholds 0.50:0.05:0.95 of the recall with the top k masks per
image, area range "all" (the value ``COCOeval.summarize`` prints for AR@k).
"""
from __future__ import annotations

import contextlib
import io
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np

from ..rle import encode_rle

__all__ = ["WholeImageSegmenter", "average_recall", "evaluate_whole_image", "DEFAULT_MAX_DETS"]

DEFAULT_MAX_DETS: tuple[int, ...] = (1, 10, 100, 1000)


class WholeImageSegmenter(Protocol):
    """``(image) -> [(mask HxW bool, score), ...]``: every mask the model proposes, with its predicted IoU."""

    def __call__(self, image: np.ndarray) -> Sequence[tuple[np.ndarray, float]]: ...


def average_recall(gts: Sequence[Sequence[np.ndarray]], predictions: Sequence[Sequence[tuple[np.ndarray, float]]],
                   max_dets: Sequence[int] = DEFAULT_MAX_DETS) -> dict[str, float]:
    """AR@k for each k in ``max_dets`` over images ``i``: ground-truth masks ``gts[i]``, ``predictions[i]``.

    Returns ``{"AR@1": ..., "AR@10": ...}``; NaN for every k when there is no ground-truth object at all.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if len(gts) != len(predictions):
        raise ValueError(f"{len(gts)} ground-truth images but {len(predictions)} prediction lists")
    max_dets = sorted(int(k) for k in max_dets)
    keys = [f"AR@{k}" for k in max_dets]
    images, anns, dets = [], [], []
    for i, (gt_masks, preds) in enumerate(zip(gts, predictions)):
        shape = None
        for m in gt_masks:
            m = np.asarray(m, dtype=bool)
            shape = m.shape
            if not m.any():
                continue
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "segmentation": encode_rle(m),
                         "area": float(m.sum()), "iscrowd": 0, "bbox": _bbox(m)})
        for m, score in preds:
            m = np.asarray(m, dtype=bool)
            shape = shape or m.shape
            dets.append({"image_id": i + 1, "category_id": 1, "segmentation": encode_rle(m), "score": float(score)})
        h, w = shape if shape is not None else (1, 1)
        images.append({"id": i + 1, "height": int(h), "width": int(w)})
    if not anns:
        return {k: float("nan") for k in keys}
    if not dets:
        return {k: 0.0 for k in keys}
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "object"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.params.useCats = 0
        ev.params.maxDets = max_dets
        ev.evaluate()
        ev.accumulate()
    recall = ev.eval["recall"]  # [T, K, A, M]
    out = {}
    for m, key in enumerate(keys):
        r = recall[:, :, 0, m]
        r = r[r > -1]
        out[key] = float(r.mean()) if r.size else float("nan")
    return out


def _bbox(mask: np.ndarray) -> list[float]:
    rows, cols = np.nonzero(mask)
    return [float(cols.min()), float(rows.min()), float(cols.max() - cols.min() + 1),
            float(rows.max() - rows.min() + 1)]


def evaluate_whole_image(segmenter: WholeImageSegmenter, samples: Iterable,
                         max_dets: Sequence[int] = DEFAULT_MAX_DETS,
                         progress: Callable[[str], None] | None = None) -> dict:
    """Run ``segmenter`` on every sample and score its masks against the samples' instance masks.

    Only the top ``max(max_dets)`` masks per image (by score) are kept, as COCOeval would.
    Returns ``{"summary": {"AR@k": ..., "num_images", "num_objects", "mean_masks_per_image"}, "settings"}``.
    """
    keep = max(int(k) for k in max_dets)
    gts, preds, counts = [], [], []
    for sample in samples:
        out = list(segmenter(sample.image))
        out.sort(key=lambda ms: -float(ms[1]))
        counts.append(len(out))
        preds.append(out[:keep])
        gts.append([np.asarray(m, dtype=bool) for m in sample.masks])
        if progress is not None:
            progress(f"{sample.id}: {len(out)} masks")
    summary: dict = average_recall(gts, preds, max_dets)
    summary["num_images"] = len(gts)
    summary["num_objects"] = int(sum(sum(1 for m in g if m.any()) for g in gts))
    summary["mean_masks_per_image"] = float(np.mean(counts)) if counts else 0.0
    return {"summary": summary, "settings": {"max_dets": sorted(int(k) for k in max_dets)}}
