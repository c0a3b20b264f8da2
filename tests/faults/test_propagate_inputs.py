"""gs.propagate refuses the inputs gs.segment refuses (the same rule), and its out= array never mixes old
values with the result."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_granseg.engine.propagate import ObjectPrompt, propagate
from napari_granseg.synthetic import nested_cells_stack
from napari_granseg.zoo import load_model


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return load_model(None, kind="unsamv2", config="granseg_tiny.yaml", device="cpu")


@pytest.fixture(scope="module")
def stack_and_click():
    stack, scenes = nested_cells_stack(n_slices=3, size=64)
    r, c = scenes[0].centers[0]
    return stack, [[c, r]]


def test_an_empty_mask_prompt_is_refused_like_empty_points(model, stack_and_click):
    stack, _ = stack_and_click
    with pytest.raises(ValueError, match="no True pixel"):
        propagate(model, stack, ObjectPrompt(frame=0, mask=np.zeros(stack.shape[1:], bool)), granularity=0.5)


@pytest.mark.parametrize("intensity", [(200.0, 10.0), (float("nan"), 1.0), ("low", "high")])
def test_a_bad_intensity_is_refused_by_name(model, stack_and_click, intensity):
    stack, click = stack_and_click
    with pytest.raises(ValueError, match="intensity"):
        propagate(model, stack, ObjectPrompt(frame=0, points=click), granularity=0.5, intensity=intensity)


def test_out_holds_the_result_only(model, stack_and_click):
    stack, click = stack_and_click
    prompt = ObjectPrompt(frame=0, points=click, obj_id=2)
    fresh = propagate(model, stack, prompt, granularity=0.5, precision="fp32")
    dirty = np.full(fresh.shape, 7, np.int32)
    got = propagate(model, stack, prompt, granularity=0.5, precision="fp32", out=dirty)
    assert got is dirty
    np.testing.assert_array_equal(got, fresh)
    assert not (got == 7).any()
