"""Does a few-shot model segment the class it was shown, and not the other one? (synthetic discs/triangles)

Used by the demo build (numbers stored next to the checkpoint), by the test suite's behavioural test and by
hand after training. For each class, a reference scene with that class's mask builds the memory; unseen
target scenes are segmented through :class:`napari_granseg.engine.fewshot.FewShotSegmenter` (the plugin's
path) and the prediction is compared (IoU) with the referenced class and with the other class.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from napari_granseg.engine.fewshot import FewShotSegmenter
from napari_granseg.synthetic import shapes_scene

from ..evaluation.metrics import iou

__all__ = ["CLASS_NAMES", "class_separation", "format_separation_table"]

CLASS_NAMES = {1: "discs", 2: "triangles"}


def class_separation(model: Any, n_references: int = 3, n_targets: int = 2, n_objects: int = 3, size: int = 128,
                     seed: int = 98_765, shots: int = 1, precision: str = "fp32") -> dict[int, tuple[float, float]]:
    """{class: (mean IoU with the referenced class, mean IoU with the other class)} over unseen scenes.

    ``n_references`` reference sets per class (each of ``shots`` scenes), ``n_targets`` targets per set.
    The default seed is one no training episode uses (training draws from its own seeded generator).
    ``precision`` defaults to "fp32" so the numbers describe the weights, not the machine's autocast choice.
    """
    rng = np.random.default_rng(seed)
    scores: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for cls in (1, 2):
        for _ in range(n_references):
            fs = FewShotSegmenter(model, image_size=None, precision=precision)
            for _ in range(shots):
                ref, ref_labels = shapes_scene(size=size, n_objects=n_objects, rng=rng)
                fs.add_reference(ref, mask=ref_labels == cls)
            for _ in range(n_targets):
                image, labels = shapes_scene(size=size, n_objects=n_objects, rng=rng)
                pred = fs.segment(image).mask
                scores[cls].append((iou(labels == cls, pred), iou(labels == 3 - cls, pred)))
    return {cls: tuple(float(v) for v in np.mean(s, axis=0)) for cls, s in scores.items()}


def format_separation_table(sep: dict[int, tuple[float, float]]) -> str:
    """Markdown: one row per referenced class."""
    lines = ["| referenced class | IoU with it | IoU with the other class |", "|---|---|---|"]
    for cls, (same, other) in sep.items():
        lines.append(f"| {CLASS_NAMES.get(cls, cls)} | {same:.3f} | {other:.3f} |")
    return "\n".join(lines)
