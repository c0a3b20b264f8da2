"""Segment everything with trained tiny UnSAMv2 models (the bundled demo, and the one trained in the session by
tests/conftest.py): low g finds the inner objects, high g the outer ones, and the hierarchy links the
nucleolus to its cell."""
from __future__ import annotations

import numpy as np

from napari_granseg.engine.automatic import AutomaticSettings, segment_everything
from napari_granseg.engine.hierarchy import build_hierarchy
from napari_granseg.engine.interactive import GranularityPredictor

# the tiny models' IoU head is not calibrated: no IoU filter; a stability filter close to upstream's (0.95)
# drops the unstable masks of clicks on background and cell edges (at 0.5 they split the cells).
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


def _levels(model, scenes):
    """Per scene: (low g finds a small object on the nucleolus, IoU of the best g=1 object with the cell,
    the hierarchy links that nucleolus object to that cell)."""
    pred = GranularityPredictor(model)
    rows = []
    for scene in scenes:
        fine = segment_everything(pred, scene.image, 0.1, settings=SETTINGS)
        coarse = segment_everything(pred, scene.image, 1.0, settings=SETTINGS)
        nucleolus, cell = scene.masks[0][0], scene.masks[2][0]
        fid, f_iou_nol = _best(fine, nucleolus)
        cid, c_iou_cell = _best(coarse, cell)
        small = bool(fid) and (fine == fid).sum() < 0.5 * cell.sum()
        h = build_hierarchy({0.1: fine, 1.0: coarse})
        linked = bool(cid and f_iou_nol > 0.3 and h.parent(0.1, fid) == (1.0, cid))
        rows.append((small, c_iou_cell, linked))
    return rows


def test_low_g_inner_high_g_outer_and_hierarchy_with_the_bundled_demo(nested_scenes):
    """The demo model's weights are fixed (shipped), so this is the strict check."""
    import napari_granseg as gs

    rows = _levels(gs.load_model("unsamv2-demo"), nested_scenes)
    assert all(small for small, _, _ in rows)
    cell_ious = [c for _, c, _ in rows]
    assert min(cell_ious) > 0.7, cell_ious
    assert sum(linked for _, _, linked in rows) >= 3


def test_low_g_inner_high_g_outer_with_the_session_trained_model(trained_unsamv2, nested_scenes):
    """The model trained in this session: its weights depend on the CPU's float kernels (one training gave
    best cell IoUs 0.97/0.62/0.77/0.97, another 0.95/0.91/0.80/0.97, one on an AMX CPU 0.00/0.61/0.83/0.96),
    so the check asks for the behaviour on most scenes, not every one."""
    rows = _levels(trained_unsamv2, nested_scenes)
    assert sum(small for small, _, _ in rows) >= 3
    cell_ious = [c for _, c, _ in rows]
    assert sum(c > 0.5 for c in cell_ious) >= 3, cell_ious
    assert any(linked for _, _, linked in rows)
