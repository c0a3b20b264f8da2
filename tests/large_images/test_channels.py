"""Multi-channel images: the user chooses the channel or composite the model sees (engine.channels)."""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.engine.channels import ChannelError, channel_axis_of, select_channels
from napari_granseg.synthetic import nested_cells_scene


def two_channel_scene(seed: int = 4):
    """(H, W, 2): channel 0 shows cell A only, channel 1 shows cell B only (the other channel is flat)."""
    scene = nested_cells_scene(size=256, n_cells=2, seed=seed)
    a, b = scene.masks[2]
    flat = np.full(scene.image.shape, 1000, np.uint16)
    ch0 = np.where(b, flat, scene.image)  # B erased from channel 0
    ch1 = np.where(a, flat, scene.image)  # A erased from channel 1
    return np.stack([ch0, ch1], axis=-1), scene


def test_channel_axis_is_found_last_then_first():
    assert channel_axis_of((100, 120, 2)) == 2
    assert channel_axis_of((3, 100, 120)) == 0
    assert channel_axis_of((100, 120)) is None
    assert channel_axis_of((3, 100, 120), channel_axis=0) == 0
    with pytest.raises(ChannelError, match="has 100 entries"):  # 100 rows are not channels
        channel_axis_of((100, 120, 3), channel_axis=0)
    with pytest.raises(ChannelError, match="rows"):
        channel_axis_of((4, 100, 120), channel_axis=1)


def test_multichannel_without_a_choice_says_what_to_pass():
    image, _ = two_channel_scene()
    with pytest.raises(ChannelError, match=r"channels=K .*channels=\(A, B"):
        select_channels(image)
    with pytest.raises(ChannelError, match="out of range"):
        select_channels(image, channels=2)
    with pytest.raises(ChannelError, match="one channel"):
        select_channels(image[..., 0], channels=1)


def test_one_channel_and_composites():
    image, _ = two_channel_scene()
    assert np.array_equal(select_channels(image, 1), image[..., 1])
    assert np.array_equal(select_channels(np.moveaxis(image, -1, 0), 0), image[..., 0])  # (C, H, W)
    comp = select_channels(image, (1, 0))
    assert comp.shape == image.shape[:2] + (3,) and comp.dtype == np.float32
    assert comp[..., 2].max() == 0.0 and 0.0 <= comp.min() and comp.max() <= 1.0
    # each channel scaled by its own range: the composite's red is channel 1 scaled to [0, 1]
    from napari_granseg.engine.normalize import intensity_range

    for slot, channel in ((0, 1), (1, 0)):
        lo, hi = intensity_range(image[..., channel])
        want = np.clip((image[..., channel].astype(np.float32) - lo) / (hi - lo), 0, 1)
        assert np.allclose(comp[..., slot], want, atol=1e-6)
    rgb = np.zeros((64, 64, 3), np.uint8)
    assert select_channels(rgb) is rgb  # RGB stays RGB


def test_the_chosen_channel_decides_what_a_click_finds():
    import napari_granseg as gs

    image, scene = two_channel_scene()
    a, b = scene.masks[2]
    row, col = scene.centers[1]  # a click on cell B, visible in channel 1 only
    model = gs.load_model("unsamv2-demo")
    on_b = gs.segment(image, points=[(row, col)], granularity=1.0, model=model, channels=1) == 1
    on_a_channel = gs.segment(image, points=[(row, col)], granularity=1.0, model=model, channels=0) == 1
    iou = (on_b & b).sum() / max(1, (on_b | b).sum())
    iou_wrong = (on_a_channel & b).sum() / max(1, (on_a_channel | b).sum())
    assert iou > 0.8 and iou_wrong < 0.5, (iou, iou_wrong)
