"""``gs.segment`` with prompts as users have them (napari layers, lists): used correctly or refused clearly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_granseg as gs
from napari_granseg.engine.prompts import PromptError
from napari_granseg.zoo import load_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(1).integers(0, 255, (40, 48)).astype(np.uint8)


@pytest.mark.parametrize("points, message", [
    (None, r"points=None: give the clicks as points=\[\(row, col\)"),
    ([[np.nan, 3.0]], "points contain NaN or infinite values"),
    ([[3.0, np.inf]], "points contain NaN or infinite values"),
    ([], r"shaped \(N, 2\)"),
    ([[1, 2, 3, 4]], r"shaped \(N, 2\)"),
    ([["a", "b"]], "points must be numbers"),
    ([[0, 5, 5], [1, 9, 9]], r"points have 3 coordinates but the image is 2D .*pass \(row, col\) pairs"),
])
def test_bad_points_name_the_argument(model, image, points, message):
    with pytest.raises(PromptError, match=message):
        gs.segment(image, points, model=model)


@pytest.mark.parametrize("granularity, message", [
    ("fine", "granularity='fine' is a word"),
    (None, "granularity=None is not a value"),
    ([0.2, 0.5], "granularity has 2 values for 3 points: give one value for all points or exactly one per point"),
    ([0.2, 0.5, 7.0], r"granularity \[7.0\] is outside \[0.1, 1\]"),
])
def test_bad_granularity_names_the_argument(model, image, granularity, message):
    with pytest.raises(PromptError, match=message):
        gs.segment(image, [(5, 5), (20, 20), (30, 30)], granularity=granularity, model=model)


def test_bad_labels_and_unknown_keywords(model, image):
    with pytest.raises(PromptError, match=r"labels must be 1 \(object\) or 0"):
        gs.segment(image, [(5, 5)], labels=[2], model=model)
    with pytest.raises(PromptError, match="1 points but 2 labels"):
        gs.segment(image, [(5, 5)], labels=[1, 0], model=model)
    with pytest.raises(TypeError, match="granulartiy"):
        gs.segment(image, [(5, 5)], granulartiy=0.3, model=model)
    with pytest.raises(ValueError, match="precision='half' is not one of"):
        gs.segment(image, [(5, 5)], model=model, precision="half")
    with pytest.raises(TypeError, match="points_per_sid"):
        gs.segment_everything(image, model=model, points_per_sid=8)
    with pytest.raises(ValueError, match="precision='half' is not one of"):
        gs.segment_everything(image, model=model, precision="half")


def test_napari_3d_points_on_a_2d_image_drop_a_constant_z(model, image):
    flat = gs.segment(image, [(10, 12), (30, 40)], granularity=[0.3, 0.8], model=model, precision="fp32")
    nd = gs.segment(image, [(0, 10, 12), (0, 30, 40)], granularity=[0.3, 0.8], model=model, precision="fp32")
    np.testing.assert_array_equal(flat, nd)


def test_napari_3d_points_on_a_stack_select_their_slice(model):
    rng = np.random.default_rng(2)
    stack = rng.integers(0, 4000, (3, 40, 48)).astype(np.uint16)
    out = gs.segment(stack, [(2, 20, 24)], granularity=0.5, model=model, precision="fp32")
    assert out.shape == (3, 40, 48) and not out[0].any() and not out[1].any()
    # the slice is scaled with the STACK's range: the same as set_image(slice, intensity=stack range)
    pred = gs.get_predictor(model, precision="fp32")
    from napari_granseg.engine.normalize import intensity_range

    pred.set_image(stack[2], intensity=intensity_range(stack))
    logits = pred.predict([[24, 20]], [1], granularity=0.5, return_logits=True)[0][0]
    np.testing.assert_array_equal(out[2] == 1, logits > pred.mask_threshold)
    with pytest.raises(PromptError, match=r"points lie on several slices \(z = \[0.0, 1.0\]\)"):
        gs.segment(stack, [(0, 5, 5), (1, 5, 5)], model=model)
    with pytest.raises(PromptError, match=r"slice z=5.0 but the stack has slices 0..2"):
        gs.segment(stack, [(5, 5, 5)], model=model)
    with pytest.raises(PromptError, match=r"image is a stack .* give points as napari \(z, row, col\)"):
        gs.segment(stack, [(5, 5)], model=model)


def test_an_explicit_intensity_range_is_used(model):
    img = np.random.default_rng(6).integers(100, 900, (40, 48)).astype(np.uint16)
    out = gs.segment(img, [(20, 24)], granularity=0.5, model=model, precision="fp32", intensity=(0, 4095))
    pred = gs.get_predictor(model, precision="fp32")
    assert pred.current_intensity == (0.0, 4095.0)
    pred.set_image(img, intensity=(0, 4095))
    logits = pred.predict([[24, 20]], [1], granularity=0.5, return_logits=True)[0][0]
    np.testing.assert_array_equal(out == 1, logits > pred.mask_threshold)
