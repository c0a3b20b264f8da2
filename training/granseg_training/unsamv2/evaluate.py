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

from ..evaluation.metrics import iou

__all__ = ["EVAL_GRANULARITIES", "nested_eval_scenes", "nested_iou_table", "other_cell_share", "format_iou_table",
           "propagation_iou", "drifting_eval_stacks"]

#: g for nucleolus, nucleus, cell (the nucleus' g from the granularity formula is ~0.45 on these scenes)
EVAL_GRANULARITIES = (0.1, 0.5, 1.0)


def nested_eval_scenes(n: int = 6, size: int = 128, n_cells: int = 2, seed: int = 10_000) -> list[NestedScene]:
    """Scenes from seeds no training run uses by default (training seeds start at 0 per index)."""
    return [nested_cells_scene(size=size, n_cells=n_cells, seed=seed + i) for i in range(n)]


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
                    table[gi, lvl] += iou(masks[gi], scene.masks[lvl][i])
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


def drifting_eval_stacks(n: int = 3, n_slices: int = 8, size: int = 128, n_cells: int = 2, drift: float = 2.0,
                         seed: int = 20_000) -> list[tuple[np.ndarray, list[NestedScene]]]:
    """Stacks of ``n_cells`` cells drifting ``drift`` px per slice (``nested_cells_stack``), from seeds no
    training run uses."""
    from napari_granseg.synthetic import nested_cells_stack

    return [nested_cells_stack(n_slices=n_slices, size=size, seed=seed + k, drift=drift, n_cells=n_cells)
            for k in range(n)]


def propagation_iou(model, stacks: Sequence[tuple[np.ndarray, Sequence[NestedScene]]] | None = None,
                    granularities: Sequence[float] = EVAL_GRANULARITIES) -> np.ndarray:
    """Mean IoU per g over the slices the click did NOT touch, after propagation through each stack.

    One click on the middle slice, at the first cell's nucleolus, with each g in turn; ``engine.propagate``
    (SAM 2's memory path, as the plugin) carries it through the stack, and every other slice is compared with
    that cell's nucleolus / nucleus / cell for g = 0.1 / 0.5 / 1.0 (levels in order). A model whose memory
    keeps the object but not its place segments every cell and scores ~1/n_cells.
    """
    from napari_granseg.engine.propagate import ObjectPrompt, propagate

    stacks = drifting_eval_stacks() if stacks is None else stacks
    scores = np.zeros(len(granularities))
    for stack, scenes in stacks:
        n_slices = len(stack)
        mid = n_slices // 2
        row, col = scenes[mid].centers[0]
        for gi, g in enumerate(granularities):
            labels = propagate(model, stack, ObjectPrompt(frame=mid, points=[[col, row]], labels=[1]),
                               granularity=g)
            level = min(gi, 2)
            others = [z for z in range(n_slices) if z != mid]
            scores[gi] += np.mean([iou(labels[z] == 1, scenes[z].masks[level][0]) for z in others])
    return scores / max(len(stacks), 1)


def format_iou_table(table: np.ndarray, granularities: Sequence[float] = EVAL_GRANULARITIES) -> str:
    """Markdown: one row per g, IoU with each level."""
    lines = ["| g | " + " | ".join(f"IoU {n}" for n in LEVEL_NAMES) + " |", "|---|---|---|---|"]
    for g, row in zip(granularities, table):
        lines.append(f"| {g:.2f} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
    return "\n".join(lines)
