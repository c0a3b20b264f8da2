import numpy as np
import pytest

from granseg_training.evaluation.interactive import (Trajectory, _choose_oracle, evaluate_interactive,
                                                     evaluate_object, simulate_clicks)
from granseg_training.evaluation.readers import Sample


def test_perfect_predictor_needs_one_click(shape_predictor, disc_fn):
    gt = disc_fn((41, 41), (20, 20), 8)
    pred = shape_predictor(disc_fn, size=lambda g: 8, granular=False)
    pred.set_image(np.zeros((41, 41)))
    traj = simulate_clicks(pred, gt)
    assert traj.ious == [1.0]
    assert [(c.row, c.col, c.positive) for c in traj.clicks] == [(20, 20, True)]
    assert pred.calls[0]["mask_input"] is None


def test_two_part_object_needs_two_clicks_and_feeds_logits_back(shape_predictor, square_fn):
    shape = (40, 60)
    gt = square_fn(shape, (10, 10), 5) | square_fn(shape, (25, 45), 5)  # two 11x11 squares
    pred = shape_predictor(square_fn, size=lambda g: 5, granular=False)
    pred.set_image(np.zeros(shape))
    traj = simulate_clicks(pred, gt, max_clicks=20, stop_iou=0.9)
    assert traj.ious == pytest.approx([0.5, 1.0])
    assert [(c.row, c.col, c.positive) for c in traj.clicks] == [(10, 10, True), (25, 45, True)]
    # click 2 sends both clicks and the previous low-res logits
    np.testing.assert_array_equal(pred.calls[1]["coords"], [[10, 10], [45, 25]])
    np.testing.assert_array_equal(pred.calls[1]["mask_input"][0], np.where(square_fn(shape, (10, 10), 5), 10, -10))
    assert all(not c["multimask"] for c in pred.calls)


def test_empty_predictions_fail_at_max_clicks(shape_predictor, square_fn):
    gt = square_fn((30, 30), (15, 15), 4)
    pred = shape_predictor(square_fn, size=lambda g: -1, granular=False)  # size -1: empty masks
    pred.set_image(np.zeros((30, 30)))
    res = evaluate_interactive(pred, [Sample(np.zeros((30, 30)), [gt], "a")], granularity=None, max_clicks=5)
    s = res["summary"]
    assert s["noc"] == {"80": 5, "85": 5, "90": 5}
    assert s["noc_over_max"]["90"] == 1
    assert s["iou_at_1"] == 0.0
    assert len(res["objects"][0]["ious"]) == 5


def test_logit_threshold_minus_one_includes_weak_logits():
    class Weak:
        def set_image(self, image):
            pass

        def predict(self, point_coords=None, point_labels=None, multimask_output=False, mask_input=None,
                    return_logits=False, **kw):
            lg = np.full((1, 10, 10), -5.0, np.float32)
            lg[0, :, :5] = -0.5  # weak positives: in the mask at threshold -1, not at 0
            return lg, np.array([0.5]), lg

    gt = np.zeros((10, 10), bool)
    gt[:, :5] = True
    assert simulate_clicks(Weak(), gt, max_clicks=1, logit_threshold=-1.0).ious == [1.0]
    assert simulate_clicks(Weak(), gt, max_clicks=1, logit_threshold=0.0).ious == [0.0]


class ThreeMasks:
    """SAM 2-like: 3 masks on multimask; the best-scored one (index 0) is the wrong one."""

    def __init__(self, gt):
        self.gt = gt

    def set_image(self, image):
        pass

    def predict(self, point_coords=None, point_labels=None, multimask_output=False, mask_input=None,
                return_logits=False, **kw):
        assert "granularity" not in kw
        wrong = np.zeros_like(self.gt)
        wrong[0, 0] = True
        half = self.gt.copy()
        half[: self.gt.shape[0] // 2] = False
        if multimask_output:
            masks = np.stack([wrong, half, self.gt])
            return np.where(masks, 5.0, -5.0), np.array([0.9, 0.5, 0.3]), np.where(masks, 5.0, -5.0)
        assert mask_input is not None and mask_input.shape == (1, *self.gt.shape)
        # keeps the fed-back mask: shows which first mask was chosen
        return mask_input.copy(), np.array([0.5]), mask_input.copy()


def test_sam2_first_click_best_of_three():
    gt = np.zeros((20, 20), bool)
    gt[4:16, 4:16] = True
    oracle = simulate_clicks(ThreeMasks(gt), gt, max_clicks=2, first_click_multimask=True, first_mask="oracle")
    assert oracle.ious == [1.0]
    score = simulate_clicks(ThreeMasks(gt), gt, max_clicks=2, first_click_multimask=True, first_mask="score")
    assert score.ious[0] == 0.0 and len(score.ious) == 2


def test_fixed_granularity_is_passed_through(shape_predictor, disc_fn):
    gt = disc_fn((41, 41), (20, 20), 8)
    pred = shape_predictor(disc_fn, size=lambda g: round(20 * g))
    pred.set_image(np.zeros((41, 41)))
    traj = evaluate_object(pred, gt, granularity=0.4)
    assert traj.ious == [1.0] and traj.granularity == 0.4
    assert {c["granularity"] for c in pred.calls} == {0.4}


def test_oracle_picks_the_granularity_that_needs_fewest_clicks(shape_predictor, disc_fn):
    gt = disc_fn((41, 41), (20, 20), 8)
    pred = shape_predictor(disc_fn, size=lambda g: round(20 * g))  # g = 0.4 -> radius 8 = the object
    res = evaluate_interactive(pred, [Sample(np.zeros((41, 41)), [gt], "x")], granularity="oracle", max_clicks=4)
    obj = res["objects"][0]
    assert obj["granularity"] == 0.4
    assert obj["ious"] == [1.0]
    assert res["summary"]["noc"] == {"80": 1, "85": 1, "90": 1}
    assert res["summary"]["mean_granularity"] == 0.4
    assert pred.images_set == 1  # one embedding for all granularities
    tried = [c["granularity"] for c in pred.calls]
    assert sorted(set(tried)) == [round(0.1 * k, 1) for k in range(1, 11)]
    # after g=0.4 wins in 1 click, later g stop after their 2nd click (they can no longer win)
    assert tried.count(0.9) <= 2


def test_oracle_tie_break_rules():
    a = Trajectory([0.5, 0.95], [], 0.1, reached_target_at=2)
    b = Trajectory([0.7, 0.92], [], 0.2, reached_target_at=2)
    c = Trajectory([0.8, 0.85, 0.9], [], 0.3, reached_target_at=3)
    assert _choose_oracle([a, b, c]).granularity == 0.2  # fewest clicks, then best first-click IoU
    never1 = Trajectory([0.3] * 3, [], 0.1)
    never2 = Trajectory([0.3] * 3, [], 0.2)
    assert _choose_oracle([never1, never2]).granularity == 0.1  # full tie: the smaller g


def test_dataset_summary_counts_every_object(shape_predictor, square_fn):
    shape = (40, 60)
    one = square_fn(shape, (10, 10), 5)
    two = square_fn(shape, (10, 10), 5) | square_fn(shape, (25, 45), 5)
    tiny = np.zeros(shape, bool)
    tiny[0, 0] = True
    pred = shape_predictor(square_fn, size=lambda g: 5, granular=False)
    samples = [Sample(np.zeros(shape), [one, tiny], "a"), Sample(np.zeros(shape), [two], "b")]
    res = evaluate_interactive(pred, samples, granularity=None, min_area=4)
    s = res["summary"]
    assert s["num_objects"] == 2  # the 1-pixel object is below min_area
    assert s["noc"]["90"] == pytest.approx((1 + 2) / 2)
    assert s["iou_at_1"] == pytest.approx((1.0 + 0.5) / 2)
    assert [o["sample_id"] for o in res["objects"]] == ["a", "b"]
