import numpy as np
import pytest

from granseg_training.evaluation.clicker import Click, Clicker, next_click


def _gt():
    gt = np.zeros((40, 40), bool)
    gt[10:21, 5:16] = True  # 11x11 square, centre (15, 10)
    return gt


def test_first_click_at_square_centre():
    gt = _gt()
    assert next_click(gt, np.zeros_like(gt)) == Click(15, 10, True)


def test_next_click_inside_missed_square_at_its_centre():
    gt = _gt()
    pred = gt.copy()
    pred[13:18, 8:13] = False  # misses a 5x5 square centred at (15, 10)
    assert next_click(gt, pred) == Click(15, 10, True)
    pred = gt.copy()
    pred[10:15, 5:10] = False  # misses the 5x5 corner block rows 10-14, cols 5-9: centre (12, 7)
    assert next_click(gt, pred) == Click(12, 7, True)


def test_false_positive_blob_gives_negative_click_at_its_centre():
    gt = _gt()
    pred = gt.copy()
    pred[27:34, 25:32] = True  # 7x7 false positive centred at (30, 28)
    assert next_click(gt, pred) == Click(30, 28, False)


def test_image_border_counts_as_boundary():
    # padding: a false-negative block in the image corner is clicked at its own centre, not at the corner pixel
    gt = np.zeros((20, 20), bool)
    gt[0:5, 0:5] = True
    assert next_click(gt, np.zeros_like(gt)) == Click(2, 2, True)


def test_tie_between_fn_and_fp_is_negative():
    gt = np.zeros((30, 30), bool)
    gt[2:7, 2:7] = True  # 5x5 missed
    pred = np.zeros_like(gt)
    pred[20:25, 20:25] = True  # 5x5 false positive, same depth
    assert next_click(gt, pred) == Click(22, 22, False)


def test_ignore_region_is_never_an_error():
    gt = _gt()
    pred = gt.copy()
    pred[27:34, 25:32] = True
    ignore = np.zeros_like(gt)
    ignore[26:35, 24:33] = True
    pred[13:18, 8:13] = False
    assert next_click(gt, pred, ignore) == Click(15, 10, True)


def test_clicker_does_not_click_the_same_pixel_twice_and_gives_xy_prompts():
    gt = _gt()
    clicker = Clicker(gt)
    empty = np.zeros_like(gt)
    assert clicker.make_next_click(empty) == Click(15, 10, True)
    # the centre is taken: next deepest pixels (distance 5) start at row 14, col 9
    assert clicker.make_next_click(empty) == Click(14, 9, True)
    coords, labels = clicker.prompts()
    np.testing.assert_array_equal(coords, [[10, 15], [9, 14]])  # (x, y)
    np.testing.assert_array_equal(labels, [1, 1])
    clicker.reset()
    assert clicker.clicks == []


def test_empty_ground_truth_is_refused():
    with pytest.raises(ValueError, match="empty"):
        Clicker(np.zeros((5, 5), bool))
