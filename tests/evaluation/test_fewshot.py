import numpy as np
import pytest

from granseg_training.evaluation.fewshot import FewShotAccumulator, evaluate_fewshot
from granseg_training.evaluation.readers import Sample


def _m(*pixels):
    m = np.zeros((4, 4), bool)
    for r, c in pixels:
        m[r, c] = True
    return m


TL = _m((0, 0), (0, 1), (1, 0), (1, 1))  # top-left 2x2


def test_miou_and_fb_iou_hand_computed():
    acc = FewShotAccumulator()
    acc.add(1, _m((0, 0), (0, 1), (0, 2), (0, 3)), TL)  # fg I=2 U=6; bg I=10 U=14
    acc.add(1, TL, TL)                                 # fg I=4 U=4; bg I=12 U=12
    acc.add(2, _m((0, 0), (3, 3)), TL)                 # fg I=1 U=5; bg I=11 U=15
    r = acc.result()
    assert r["per_class"]["1"]["iou"] == pytest.approx(6 / 10)  # accumulated, not the episode mean (0.667)
    assert r["per_class"]["2"]["iou"] == pytest.approx(1 / 5)
    assert r["miou"] == pytest.approx((0.6 + 0.2) / 2)
    assert r["per_class"]["1"]["fb_iou"] == pytest.approx((6 / 10 + 22 / 26) / 2)
    assert r["fb_iou"] == pytest.approx((7 / 15 + 33 / 41) / 2)
    assert r["num_classes"] == 2 and r["num_episodes"] == 3
    assert r["per_class"]["1"]["episodes"] == 2


def test_perfect_and_empty_predictions():
    acc = FewShotAccumulator()
    acc.add("a", TL, TL)
    assert acc.result()["miou"] == 1.0 and acc.result()["fb_iou"] == 1.0
    acc = FewShotAccumulator()
    acc.add("a", np.zeros((4, 4), bool), TL)
    r = acc.result()
    assert r["miou"] == 0.0
    assert r["fb_iou"] == pytest.approx((0 + 12 / 16) / 2)


class CopySegmenter:
    """Predicts its first reference mask on every target (a 'segmenter' with known answers)."""

    made = 0

    def __init__(self):
        CopySegmenter.made += 1
        self.refs = []

    def add_reference(self, image, mask=None, **kw):
        self.refs.append(np.asarray(mask, bool))

    def segment(self, target):
        class R:
            pass

        r = R()
        r.mask = self.refs[0]
        return r


def test_evaluate_fewshot_with_a_fake_segmenter():
    img = np.zeros((4, 4), np.uint8)
    BR = _m((2, 2), (2, 3), (3, 2), (3, 3))
    refs = [Sample(img, [TL, BR], "r0", classes=[1, 2])]
    targets = [
        Sample(img, [TL], "t0", classes=[1]),             # class 1 exact
        Sample(img, [_m((0, 0), (0, 1))], "t1", classes=[1]),  # class 1: I=2, U=4
        Sample(img, [BR], "t2", classes=[2]),             # class 2 exact
    ]
    CopySegmenter.made = 0
    res = evaluate_fewshot(CopySegmenter, refs, targets, shots=1)
    s = res["summary"]
    assert CopySegmenter.made == 2  # fresh reference memory per class
    assert s["per_class"]["1"] == pytest.approx({"iou": 6 / 8, "fb_iou": (6 / 8 + 24 / 26) / 2, "episodes": 2})
    assert s["per_class"]["2"]["iou"] == 1.0
    assert s["miou"] == pytest.approx((0.75 + 1.0) / 2)
    assert res["settings"]["references_per_class"] == {"1": ["r0"], "2": ["r0"]}
    # include_absent: targets without the class are scored too (false positives count)
    res = evaluate_fewshot(CopySegmenter, refs, targets, include_absent=True)
    assert res["summary"]["per_class"]["2"]["episodes"] == 3
    assert res["summary"]["per_class"]["2"]["iou"] == pytest.approx(4 / 12)
