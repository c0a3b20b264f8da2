"""Few-shot evaluation: class-wise mIoU and FB-IoU, accumulated over episodes as SANSA (and HSNet) compute them.

- mIoU: per class, foreground intersections and unions are summed over all its episodes; IoU_c = I_c / U_c;
  mIoU = mean over classes (not over episodes: a class with many episodes weighs as much as one with few).
- FB-IoU: foreground and background intersections/unions summed over every episode of every class;
  FB-IoU = (IoU_fg + IoU_bg) / 2. Per class, the same from that class's sums.

The segmenter is duck-typed (:class:`FewShotSegmenterLike`, the shape of ``napari_granseg.FewShotSegmenter``)
so tests use fakes and nothing here imports the model code.
"""
from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .metrics import intersection_union

__all__ = ["FewShotSegmenterLike", "FewShotAccumulator", "evaluate_fewshot", "class_masks"]


class FewShotSegmenterLike(Protocol):
    def add_reference(self, image: np.ndarray, mask: np.ndarray | None = None, **kwargs: Any) -> Any: ...

    def segment(self, target: np.ndarray) -> Any: ...  # returns an object with ``.mask`` (H, W) bool


class FewShotAccumulator:
    """Sums of foreground/background intersections and unions per class."""

    def __init__(self) -> None:
        self._sums: dict[Any, np.ndarray] = {}  # class -> [I_fg, U_fg, I_bg, U_bg]
        self.episodes: dict[Any, int] = {}

    def add(self, cls: Any, pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> None:
        """Add one episode's prediction for class ``cls`` (HxW bool masks; ``ignore`` pixels left out)."""
        pred = np.asarray(pred, dtype=bool)
        gt = np.asarray(gt, dtype=bool)
        i_fg, u_fg = intersection_union(gt, pred, ignore)
        i_bg, u_bg = intersection_union(~gt, ~pred, ignore)
        s = self._sums.setdefault(cls, np.zeros(4, dtype=np.int64))
        s += (i_fg, u_fg, i_bg, u_bg)
        self.episodes[cls] = self.episodes.get(cls, 0) + 1

    @staticmethod
    def _ratio(i: float, u: float) -> float:
        return float(i / u) if u > 0 else float("nan")

    def result(self) -> dict:
        """``{"miou", "fb_iou", "per_class": {cls: {"iou", "fb_iou", "episodes"}}, "num_classes", "num_episodes"}``."""
        per_class = {}
        total = np.zeros(4, dtype=np.int64)
        for cls, (i_fg, u_fg, i_bg, u_bg) in sorted(self._sums.items(), key=lambda kv: str(kv[0])):
            fg, bg = self._ratio(i_fg, u_fg), self._ratio(i_bg, u_bg)
            per_class[str(cls)] = {"iou": fg, "fb_iou": float(np.nanmean([fg, bg])) if u_fg or u_bg else float("nan"),
                                   "episodes": self.episodes[cls]}
            total += (i_fg, u_fg, i_bg, u_bg)
        ious = [v["iou"] for v in per_class.values() if not np.isnan(v["iou"])]
        fg, bg = self._ratio(total[0], total[1]), self._ratio(total[2], total[3])
        return {"miou": float(np.mean(ious)) if ious else float("nan"),
                "fb_iou": float(np.nanmean([fg, bg])) if total[1] or total[3] else float("nan"),
                "per_class": per_class, "num_classes": len(per_class),
                "num_episodes": int(sum(self.episodes.values()))}


def class_masks(sample: Any) -> dict[Any, np.ndarray]:
    """Union mask per class of a sample (``sample.classes[i]`` labels ``sample.masks[i]``; default class 1)."""
    classes = getattr(sample, "classes", None) or [1] * len(sample.masks)
    out: dict[Any, np.ndarray] = {}
    for cls, m in zip(classes, sample.masks):
        m = np.asarray(m, dtype=bool)
        out[cls] = out[cls] | m if cls in out else m.copy()
    return out


def evaluate_fewshot(make_segmenter: Callable[[], FewShotSegmenterLike], references: Sequence, targets: Sequence,
                     *, shots: int = 1, classes: Sequence | None = None, include_absent: bool = False,
                     seed: int = 0, progress: Callable[[str], None] | None = None) -> dict:
    """For each class: ``shots`` references (seeded choice among reference samples with that class), then every
    target with that class (or every target, ``include_absent=True``) segmented against them.

    ``make_segmenter()`` returns a fresh segmenter (fresh reference memory) per class; its references are encoded
    once and reused for all targets of the class.
    """
    if shots < 1:
        raise ValueError("shots must be at least 1")
    ref_masks = [class_masks(s) for s in references]
    tgt_masks = [class_masks(s) for s in targets]
    present = sorted({c for d in ref_masks for c, m in d.items() if m.any()}, key=str)
    wanted = present if classes is None else [c for c in present if c in set(classes)]
    rng = np.random.default_rng(seed)
    acc = FewShotAccumulator()
    skipped: list[str] = []
    used: dict[str, list[str]] = {}
    for cls in wanted:
        candidates = [i for i, d in enumerate(ref_masks) if cls in d and d[cls].any()]
        chosen = sorted(rng.choice(candidates, size=min(shots, len(candidates)), replace=False).tolist())
        evals = [j for j, d in enumerate(tgt_masks) if include_absent or (cls in d and d[cls].any())]
        if not evals:
            skipped.append(str(cls))
            continue
        seg = make_segmenter()
        for i in chosen:
            seg.add_reference(references[i].image, mask=ref_masks[i][cls])
        for j in evals:
            target = targets[j]
            gt = tgt_masks[j].get(cls)
            if gt is None:
                gt = np.zeros(np.asarray(target.image).shape[:2], dtype=bool)
            pred = np.asarray(seg.segment(target.image).mask, dtype=bool)
            acc.add(cls, pred, gt, getattr(target, "ignore", None))
        used[str(cls)] = [str(references[i].id) for i in chosen]
        if progress is not None:
            progress(f"class {cls}: {len(chosen)} reference(s), {len(evals)} target(s)")
    out = acc.result()
    out["classes_without_targets"] = skipped
    return {"summary": out, "settings": {"shots": shots, "include_absent": include_absent, "seed": seed,
                                         "references_per_class": used}}
