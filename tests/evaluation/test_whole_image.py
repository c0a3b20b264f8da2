import math

import numpy as np
import pytest

from granseg_training.evaluation.readers import Sample
from granseg_training.evaluation.whole_image import average_recall, evaluate_whole_image


def _box(r0, c0, h, w, shape=(40, 40)):
    m = np.zeros(shape, bool)
    m[r0:r0 + h, c0:c0 + w] = True
    return m


A = _box(0, 0, 10, 10)
B = _box(20, 20, 10, 10)
B_SHIFTED = _box(20, 22, 10, 10)  # IoU with B = 80 / 120 = 0.667: matched at IoU thresholds 0.50-0.65 only


def test_average_recall_hand_computed():
    # thresholds 0.50..0.95 (10): A found at all 10, B at 4 (0.50, 0.55, 0.60, 0.65)
    preds = [[(A, 0.5), (B_SHIFTED, 0.9)]]
    ar = average_recall([[A, B]], preds, max_dets=(1, 10, 100, 1000))
    assert ar["AR@10"] == pytest.approx((4 * 1.0 + 6 * 0.5) / 10)
    assert ar["AR@1000"] == pytest.approx(0.7)
    # AR@1 keeps only the best-scored mask (B_SHIFTED): recall 1/2 at 4 thresholds, 0 at 6
    assert ar["AR@1"] == pytest.approx(4 * 0.5 / 10)


def test_average_recall_perfect_and_empty():
    assert average_recall([[A, B]], [[(A, 0.1), (B, 0.2)]], (1, 10)) == {"AR@1": 0.5, "AR@10": 1.0}
    assert average_recall([[A, B]], [[]], (1, 100)) == {"AR@1": 0.0, "AR@100": 0.0}
    assert all(math.isnan(v) for v in average_recall([[]], [[(A, 1.0)]], (10,)).values())


def test_recall_is_class_agnostic_and_pooled_over_images():
    # two images, each with one object found exactly: recall 1 regardless of categories
    ar = average_recall([[A], [B]], [[(A, 1.0)], [(B, 1.0), (A, 0.2)]], (1, 10))
    assert ar == {"AR@1": 1.0, "AR@10": 1.0}


def test_evaluate_whole_image_calls_segmenter_per_image_and_counts():
    seen = []

    def segmenter(image):
        seen.append(image.shape)
        return [(B_SHIFTED, 0.9), (A, 0.5)]

    res = evaluate_whole_image(segmenter, [Sample(np.zeros((40, 40, 3), np.uint8), [A, B], "x")], (1, 10))
    s = res["summary"]
    assert seen == [(40, 40, 3)]
    assert s["AR@1"] == pytest.approx(0.2) and s["AR@10"] == pytest.approx(0.7)
    assert s["num_images"] == 1 and s["num_objects"] == 2 and s["mean_masks_per_image"] == 2.0
