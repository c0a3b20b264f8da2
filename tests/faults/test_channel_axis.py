"""channel_axis: a value that is not an axis is refused by name, and an axis that holds no channels says where
the channels are; (C, H, W) with channel_axis=0 works (the API, the CLI and the widgets share this rule)."""
from __future__ import annotations

import numpy as np
import pytest

import napari_granseg as gs
from napari_granseg.engine.channels import ChannelError
from napari_granseg.engine.source import ImagePlan


@pytest.mark.parametrize("axis", [5, "x", 1.5, True, -4])
def test_a_channel_axis_that_is_not_one_is_refused_by_name(axis):
    with pytest.raises(ChannelError, match=r"channel_axis=.*give 0 for \(C, H, W\) or -1 for \(H, W, C\)"):
        ImagePlan.from_array(np.zeros((32, 32, 2), np.uint8), channels=0, channel_axis=axis)


def test_an_axis_without_channels_says_where_they_are():
    with pytest.raises(ChannelError, match=r"channel_axis=0 has 32 entries .* channels are on axis -1"):
        ImagePlan.from_array(np.zeros((32, 32, 2), np.uint8), channels=0, channel_axis=0)
    with pytest.raises(ChannelError, match=r"channel_axis=-1 has 32 entries .* channels are on axis 0"):
        gs.segment(np.zeros((2, 32, 32), np.uint8), points=[(5, 5)], channels=1, channel_axis=-1)


def test_channels_first_with_channel_axis_0_is_one_image():
    image = np.zeros((2, 48, 40), np.uint8)
    plan = ImagePlan.from_array(image, channels=1, channel_axis=0)
    assert not plan.is_stack and plan.plane_shape == (48, 40)
