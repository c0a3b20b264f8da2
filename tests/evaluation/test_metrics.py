import math

import numpy as np
import pytest

from granseg_training.evaluation.metrics import iou, noc, summarize_nocs


def _sq():
    gt = np.zeros((6, 6), bool)
    gt[1:4, 1:4] = True  # 9 pixels
    return gt


def test_iou_perfect_and_empty():
    gt = _sq()
    assert iou(gt, gt) == 1.0
    assert iou(gt, np.zeros_like(gt)) == 0.0
    assert iou(np.zeros_like(gt), np.zeros_like(gt)) == 1.0  # nothing to find, nothing found


def test_iou_one_pixel_errors():
    gt = _sq()
    missing = gt.copy()
    missing[2, 2] = False
    assert iou(gt, missing) == pytest.approx(8 / 9)
    extra = gt.copy()
    extra[5, 5] = True
    assert iou(gt, extra) == pytest.approx(9 / 10)
    ignore = np.zeros_like(gt)
    ignore[5, 5] = True
    assert iou(gt, extra, ignore) == 1.0  # an error inside the ignore region does not count


def test_iou_shape_mismatch_message():
    with pytest.raises(ValueError, match="full resolution"):
        iou(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_noc_first_click_reaching_threshold():
    ious = [0.5, 0.82, 0.87, 0.91]
    assert noc(ious, 0.80) == 2
    assert noc(ious, 0.85) == 3
    assert noc(ious, 0.90) == 4
    assert noc([1.0], 0.9) == 1
    assert noc([0.1, 0.2], 0.9, max_clicks=20) == 20  # never reached -> max_clicks


def test_summarize_nocs_means_failures_and_first_click_iou():
    curves = [[1.0], [0.5, 0.82, 0.87, 0.91], [0.2] * 20]
    s = summarize_nocs(curves, (0.80, 0.85, 0.90), max_clicks=20)
    assert s["num_objects"] == 3
    assert s["noc"]["80"] == pytest.approx((1 + 2 + 20) / 3)
    assert s["noc"]["85"] == pytest.approx((1 + 3 + 20) / 3)
    assert s["noc"]["90"] == pytest.approx((1 + 4 + 20) / 3)
    assert s["noc_over_max"]["90"] == 1
    assert s["iou_at_1"] == pytest.approx((1.0 + 0.5 + 0.2) / 3)
    assert math.isnan(summarize_nocs([], (0.9,))["iou_at_1"])
