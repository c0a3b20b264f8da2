"""Prompts the predictor did not understand are errors naming the argument, never a silently wrong mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_granseg.engine.interactive import GranularityPredictor
from napari_granseg.engine.prompts import PromptError
from napari_granseg.engine.propagate import ObjectPrompt, propagate
from napari_granseg.zoo import load_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")


@pytest.fixture(scope="module")
def pred(model):
    p = GranularityPredictor(model, precision="fp32")
    p.set_image(np.random.default_rng(0).integers(0, 255, (48, 64)).astype(np.uint8))
    return p


@pytest.mark.parametrize("bad", [[[np.nan, 5.0]], [[3.0, np.inf]], [[-np.inf, 1.0]]], ids=["nan", "inf", "-inf"])
def test_non_finite_clicks_are_refused(pred, bad):
    with pytest.raises(PromptError, match="point_coords contains NaN or infinite values"):
        pred.predict(bad, [1], granularity=0.5)


def test_napari_3d_points_are_not_reshaped_into_clicks(pred):
    """(N, 3) (z, row, col) points used to become 1.5 x N wrong clicks."""
    with pytest.raises(PromptError, match=r"shaped \(N, 2\), got shape \(2, 3\).*\(z, row, col\)"):
        pred.predict([[0, 10, 12], [0, 20, 22]], [1, 1], granularity=0.5)


@pytest.mark.parametrize("labels", [[2], [3], [-1], [0.5]])
def test_point_labels_other_than_0_1_are_refused(pred, labels):
    with pytest.raises(PromptError, match="point_labels must be 1 .object. or 0 .background.*box="):
        pred.predict([[10, 10]], labels, granularity=0.5)


@pytest.mark.parametrize("coords", [None, [], np.zeros((0, 2))], ids=["none", "list", "array"])
def test_an_empty_prompt_is_refused(pred, coords):
    with pytest.raises(PromptError, match="the prompt is empty: give at least one point"):
        pred.predict(coords, granularity=0.5)


def test_unknown_keyword_arguments_are_type_errors(model, pred):
    with pytest.raises(TypeError, match="granularty"):
        pred.predict([[10, 10]], [1], granularty=0.5)
    with pytest.raises(TypeError, match="autocast"):
        GranularityPredictor(model, autocast=False)
    with pytest.raises(TypeError, match="multimask"):
        GranularityPredictor(model, multimask=True)


@pytest.mark.parametrize("g, message", [
    ("fine", "granularity='fine' is a word, not a number"),
    ([0.2, "coarse"], "holds something that is not a number"),
    ([], "is empty"),
    ({"g": 0.5}, "is a dict"),
    (float("nan"), r"granularity \[nan\] is outside \[0.1, 1\]"),
])
def test_bad_granularity_names_the_argument(pred, g, message):
    with pytest.raises(PromptError, match=message):
        pred.predict([[10, 10]], [1], granularity=g)


def test_bad_boxes_and_labels_without_points(pred):
    with pytest.raises(PromptError, match=r"box must be 4 numbers"):
        pred.predict(box=[1, 2, 3])
    with pytest.raises(PromptError, match=r"box .* has x1 < x0"):
        pred.predict(box=[30, 2, 3, 40])
    with pytest.raises(PromptError, match="box contains NaN"):
        pred.predict(box=[1, np.nan, 3, 4])
    with pytest.raises(PromptError, match="point_labels given without point_coords"):
        pred.predict(None, [1])


def test_a_valid_box_alone_is_a_prompt(pred):
    masks, ious, _ = pred.predict(box=[5, 5, 40, 30], granularity=0.5)
    assert masks.shape == (1, 48, 64) and np.isfinite(ious).all()


def test_propagation_prompts_are_checked_the_same_way(model):
    stack = np.zeros((2, 32, 32), np.uint8)
    with pytest.raises(PromptError, match="point_coords contains NaN"):
        propagate(model, stack, ObjectPrompt(frame=0, points=[[np.nan, 3]]))
    with pytest.raises(PromptError, match="point_labels must be 1"):
        propagate(model, stack, ObjectPrompt(frame=0, points=[[3, 3]], labels=[2]))
    with pytest.raises(ValueError, match="ObjectPrompt for object 1 on slice 0 is empty"):
        propagate(model, stack, ObjectPrompt(frame=0))
    with pytest.raises(PromptError, match="granularity='whole' is a word"):
        propagate(model, stack, ObjectPrompt(frame=0, points=[[3, 3]]), granularity="whole")
