"""Behaviour of a trained UnSAMv2: a click on a nucleolus returns the nucleolus, nucleus or cell as g rises.

The model is the session's tiny UnSAMv2 trained from scratch by the project's trainer (tests/conftest.py);
scenes are unseen (other seeds than any training sample). Prediction goes through GranularityPredictor,
the plugin's path, binarised at logit 0.
"""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.engine.interactive import GranularityPredictor

G_LEVELS = (0.1, 0.5, 1.0)  # nucleolus, nucleus (spec formula gives ~0.45 here), cell
LEVELS = ("nucleolus", "nucleus", "cell")


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


@pytest.fixture(scope="module")
def predictions(trained_unsamv2, nested_scenes):
    """For every nucleolus: its scene, index and the masks at each g in G_LEVELS (one batched call)."""
    pred = GranularityPredictor(trained_unsamv2, mask_threshold=0.0)
    out = []
    for scene in nested_scenes:
        pred.set_image(scene.image)
        for i, (row, col) in enumerate(scene.centers):
            masks, _, _ = pred.predict([[col, row]], [1], granularity=list(G_LEVELS))
            out.append((scene, i, masks))
    assert out, "no nucleoli in the test scenes"
    return out


def _iou_table(predictions) -> np.ndarray:
    table = np.zeros((len(G_LEVELS), 3))
    for scene, i, masks in predictions:
        for gi in range(len(G_LEVELS)):
            for lvl in range(3):
                table[gi, lvl] += _iou(masks[gi], scene.masks[lvl][i])
    return table / len(predictions)


@pytest.mark.parametrize("g_index", [0, 1, 2], ids=[f"g={g}->{n}" for g, n in zip(G_LEVELS, LEVELS)])
def test_rising_granularity_selects_inner_middle_outer(predictions, g_index):
    table = _iou_table(predictions)
    row = table[g_index]
    intended = row[g_index]
    others = np.delete(row, g_index)
    assert intended > 0.5, f"g={G_LEVELS[g_index]}: IoU with the {LEVELS[g_index]} is {intended:.3f}; table:\n{table}"
    assert intended > others.max(), (f"g={G_LEVELS[g_index]} matches another level better than the "
                                     f"{LEVELS[g_index]}; table (rows g, cols levels):\n{table}")


def test_the_mask_lands_on_the_clicked_cell(predictions):
    """Scenes hold two cells: a click on one cell's nucleolus at g=1 returns that cell, not the other one."""
    own, on_other = [], []
    for scene, i, masks in predictions:
        cell = masks[2]
        others = np.zeros_like(cell)
        for j, m in enumerate(scene.masks[2]):
            if j != i:
                others |= m
        own.append(_iou(cell, scene.masks[2][i]))
        on_other.append((cell & others).sum() / max(1, cell.sum()))
    assert np.mean(own) > 0.7, f"IoU with the clicked cell: {np.round(own, 3).tolist()}"
    assert np.mean(on_other) < 0.1, f"share of the mask on the other cell: {np.round(on_other, 3).tolist()}"


def test_clicks_on_two_cells_give_two_masks(predictions):
    """The same g at two clicks in one scene: two different, barely overlapping masks."""
    by_scene: dict[int, list[np.ndarray]] = {}
    for scene, _, masks in predictions:
        by_scene.setdefault(id(scene), []).append(masks[2])
    pairs = [_iou(a, b) for a, b in (v[:2] for v in by_scene.values() if len(v) >= 2)]
    assert pairs and np.mean(pairs) < 0.2, f"IoU between the masks of the two clicks per scene: {pairs}"


def test_mask_grows_with_granularity(predictions):
    areas = np.mean([masks.reshape(len(G_LEVELS), -1).sum(1) for _, _, masks in predictions], axis=0)
    assert areas[0] < areas[1] < areas[2], f"mean areas at g={G_LEVELS}: {areas.tolist()}"


def test_control_granularity_is_not_ignored(predictions, trained_unsamv2, nested_scenes):
    """If g were ignored, g=0.1 and g=1.0 would give the same mask; here they must barely overlap."""
    between = [_iou(masks[0], masks[2]) for _, _, masks in predictions]
    assert np.mean(between) < 0.5, f"IoU(mask at g=0.1, mask at g=1.0) = {np.mean(between):.3f}"
    # and one constant g cannot serve both ends: forcing g=0.5 for every level loses at least one level
    pred = GranularityPredictor(trained_unsamv2, mask_threshold=0.0)
    worst = []
    for scene in nested_scenes:
        pred.set_image(scene.image)
        for i, (row, col) in enumerate(scene.centers):
            mask = pred.predict([[col, row]], [1], granularity=0.5)[0][0]
            worst.append(min(_iou(mask, scene.masks[0][i]), _iou(mask, scene.masks[2][i])))
    assert np.mean(worst) < 0.5
