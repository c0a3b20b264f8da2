"""Does a model pick the inner, middle and outer object as g rises? (nested synthetic scenes)

Used by the demo build (numbers stored next to the checkpoint) and by hand after training. The click is the
nucleolus centre; for each g the predicted mask is compared (IoU) with that cell's nucleolus, nucleus and
cell. Prediction goes through :class:`napari_granseg.engine.interactive.GranularityPredictor`, the same
path the plugin uses.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from napari_granseg.synthetic import LEVEL_NAMES, NestedScene, nested_cells_scene

__all__ = ["EVAL_GRANULARITIES", "nested_eval_scenes", "nested_iou_table", "other_cell_share", "format_iou_table"]

#: g for nucleolus, nucleus, cell (the nucleus' g from the spec formula is ~0.45 on these scenes)
EVAL_GRANULARITIES = (0.1, 0.5, 1.0)


def nested_eval_scenes(n: int = 6, size: int = 128, n_cells: int = 2, seed: int = 10_000) -> list[NestedScene]:
    """Scenes from seeds no training run uses by default (training seeds start at 0 per index)."""
    return [nested_cells_scene(size=size, n_cells=n_cells, seed=seed + i) for i in range(n)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def nested_iou_table(model, scenes: Sequence[NestedScene],
                     granularities: Sequence[float] = EVAL_GRANULARITIES) -> np.ndarray:
    """Mean IoU [g index, level] over every nucleolus of ``scenes``, clicked at its centre."""
    from napari_granseg.engine.interactive import GranularityPredictor

    pred = GranularityPredictor(model, mask_threshold=0.0)
    table = np.zeros((len(granularities), 3))
    count = 0
    for scene in scenes:
        pred.set_image(scene.image)
        for i, (row, col) in enumerate(scene.centers):
            masks, _, _ = pred.predict([[col, row]], [1], granularity=list(granularities))
            for gi in range(len(granularities)):
                for lvl in range(3):
                    table[gi, lvl] += _iou(masks[gi], scene.masks[lvl][i])
            count += 1
    return table / max(count, 1)


def other_cell_share(model, scenes: Sequence[NestedScene], granularity: float = 1.0) -> float:
    """Mean share of the predicted mask (click on a nucleolus centre) lying on OTHER cells than the clicked
    one: 0 when the model uses the click position, ~(n-1)/n when it returns every cell of an n-cell scene."""
    from napari_granseg.engine.interactive import GranularityPredictor

    pred = GranularityPredictor(model, mask_threshold=0.0)
    shares = []
    for scene in scenes:
        pred.set_image(scene.image)
        for i, (row, col) in enumerate(scene.centers):
            mask = pred.predict([[col, row]], [1], granularity=granularity)[0][0]
            others = np.zeros_like(mask)
            for j, m in enumerate(scene.masks[2]):
                if j != i:
                    others |= m
            shares.append((mask & others).sum() / max(1, mask.sum()))
    return float(np.mean(shares)) if shares else 0.0


def format_iou_table(table: np.ndarray, granularities: Sequence[float] = EVAL_GRANULARITIES) -> str:
    """Markdown: one row per g, IoU with each level."""
    lines = ["| g | " + " | ".join(f"IoU {n}" for n in LEVEL_NAMES) + " |", "|---|---|---|---|"]
    for g, row in zip(granularities, table):
        lines.append(f"| {g:.2f} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines)
