"""With the tiny UnSAMv2 trained in the session (tests/conftest.py): low g finds the inner objects, high g the
outer ones, and the hierarchy links the nucleolus to its cell."""
from __future__ import annotations

import numpy as np

from napari_granseg.engine.automatic import AutomaticSettings, segment_everything
from napari_granseg.engine.hierarchy import build_hierarchy
from napari_granseg.engine.interactive import GranularityPredictor

# the tiny test model's IoU head is not calibrated: no IoU filter; a stability filter close to upstream's
# (0.95) drops the unstable masks of clicks on background and cell edges (at 0.5 they split the cells).
# Two test-model trainings (CPU training is not bit-reproducible run to run) gave, per scene, best IoU with
# the cell at g=1 of 0.97/0.62/0.77/0.97 and 0.95/0.91/0.80/0.97 with these settings.
SETTINGS = AutomaticSettings(points_per_side=12, points_per_batch=72, pred_iou_thresh=0.0,
                             stability_score_thresh=0.9, use_m2m=False, mask_threshold=0.0)


def _best(labels: np.ndarray, truth: np.ndarray) -> tuple[int, float]:
    ids = np.unique(labels[truth])
    best = (0, 0.0)
    for i in ids[ids > 0]:
        m = labels == i
        iou = (m & truth).sum() / (m | truth).sum()
        best = max(best, (int(i), float(iou)), key=lambda t: t[1])
    return best


def test_low_g_inner_high_g_outer_and_hierarchy(trained_unsamv2, nested_scenes):
    pred = GranularityPredictor(trained_unsamv2)
    hits, cell_ious = 0, []
    for scene in nested_scenes:
        fine = segment_everything(pred, scene.image, 0.1, settings=SETTINGS)
        coarse = segment_everything(pred, scene.image, 1.0, settings=SETTINGS)
        nucleolus, cell = scene.masks[0][0], scene.masks[2][0]
        fid, f_iou_nol = _best(fine, nucleolus)
        cid, c_iou_cell = _best(coarse, cell)
        # low g: the best object on the nucleolus is small (nucleolus-like), high g: the cell
        f_area = (fine == fid).sum() if fid else 0
        assert fid and f_area < 0.5 * cell.sum()
        cell_ious.append(c_iou_cell)
        h = build_hierarchy({0.1: fine, 1.0: coarse})
        if cid and f_iou_nol > 0.3 and h.parent(0.1, fid) == (1.0, cid):
            hits += 1
    assert np.mean(cell_ious) > 0.6 and min(cell_ious) > 0.3, cell_ious
    assert hits >= 1
