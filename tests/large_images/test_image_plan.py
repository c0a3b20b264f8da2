"""engine.source.ImagePlan: the one place that decides what the model sees of an array (no model needed)."""
from __future__ import annotations

import numpy as np
import pytest

from napari_granseg.engine.channels import ChannelError, parse_channels
from napari_granseg.engine.normalize import intensity_range, stack_intensity_range
from napari_granseg.engine.source import ImagePlan, is_stack_shape, needs_channel_choice


class CountingStack:
    """A (Z, H, W) array-like that records which slices were read (a stand-in for a zarr/dask stack)."""

    def __init__(self, data: np.ndarray):
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []

    def __getitem__(self, z):
        self.reads.append(z)
        return self.data[z]


def test_multiscale_uses_level_0_and_reads_nothing_else():
    rng = np.random.default_rng(0)
    full = rng.integers(0, 4000, (64, 96), dtype=np.uint16)
    small = CountingStack(full[::2, ::2].copy())
    plan = ImagePlan.from_array([full, small])
    assert plan.plane_shape == (64, 96) and not plan.is_stack and small.reads == []
    assert np.array_equal(plan.plane(), full)
    stack = np.stack([full, full])  # a list of equal arrays is not a pyramid
    assert ImagePlan.from_array([stack[0], stack[1]]).plane_shape == (64, 96)


def test_the_channel_rule():
    two = np.zeros((40, 50, 2), np.uint16)
    with pytest.raises(ChannelError, match=r"channels=K .*channels=\(A, B"):
        ImagePlan.from_array(two)
    assert needs_channel_choice(two.shape) and not needs_channel_choice((40, 50, 3))
    assert ImagePlan.from_array(np.zeros((40, 50, 3), np.uint8)).rgb  # RGB stays RGB
    with pytest.raises(ChannelError, match="channels"):
        ImagePlan.from_array(np.zeros((40, 50, 3), np.uint8), rgb=False)  # a napari layer that is not RGB
    one = ImagePlan.from_array(two, channels="1")
    assert one.plane_shape == (40, 50) and one.plane().shape == (40, 50) and one.dtype == np.uint16
    with pytest.raises(ChannelError, match="out of range"):
        ImagePlan.from_array(two, channels=2)
    with pytest.raises(ChannelError, match="without channels"):
        ImagePlan.from_array(two, channel_axis=-1)
    cyx = ImagePlan.from_array(np.zeros((3, 40, 50), np.uint16))  # (C, H, W) without a choice: a stack
    assert cyx.is_stack and cyx.n == 3
    assert not ImagePlan.from_array(np.zeros((3, 40, 50), np.uint16), channels=(0, 2)).is_stack
    assert is_stack_shape((5, 40, 50)) and not is_stack_shape((40, 50, 2)) and not is_stack_shape((3, 40, 50), True)
    assert parse_channels("") is None and parse_channels("0; 2") == (0, 2)
    with pytest.raises(ValueError, match="--channels 'a'"):
        parse_channels("a", "--channels")


def test_a_stack_is_read_one_slice_at_a_time_with_one_intensity():
    rng = np.random.default_rng(1)
    data = (rng.random((20, 32, 32)) * np.arange(1, 21)[:, None, None] * 100).astype(np.uint16)
    stack = CountingStack(data)
    plan = ImagePlan.from_array(stack)
    assert plan.is_stack and plan.labels_shape == (20, 32, 32) and stack.reads == []
    assert np.array_equal(plan.plane(7), data[7]) and stack.reads == [7]
    value = plan.intensity()
    assert value == stack_intensity_range(data) and len(stack.reads) <= 1 + 16  # a sample, never all 20
    reads = len(stack.reads)
    assert plan.intensity() == value and len(stack.reads) == reads  # computed once
    assert ImagePlan.from_array(data, intensity=(0, 10)).intensity() == (0.0, 10.0)
    assert ImagePlan.from_array(data[0]).intensity() is None  # a 2D image: its own range


def test_a_composite_stack_scales_each_channel_by_the_stack_range():
    rng = np.random.default_rng(2)
    data = np.stack([rng.integers(0, 100, (6, 24, 24)), rng.integers(0, 10000, (6, 24, 24))], -1).astype(np.uint16)
    plan = ImagePlan.from_array(data, channels=(1, 0))
    assert plan.is_stack and plan.composite and plan.shape == (6, 24, 24, 3) and plan.intensity() == (0.0, 1.0)
    plane = plan[3]
    lo, hi = stack_intensity_range(data[..., 1])
    want = np.clip((data[3, ..., 1].astype(np.float32) - lo) / (hi - lo), 0, 1)
    assert plane.dtype == np.float32 and np.allclose(plane[..., 0], want, atol=1e-6) and plane[..., 2].max() == 0
    lo0, hi0 = intensity_range(data[3, ..., 1])
    assert (lo, hi) != (lo0, hi0)  # the stack's range, not the slice's own


def test_tile_or_downscale_is_decided_here():
    image = np.zeros((100, 500), np.uint8)  # a strip: tiled
    assert ImagePlan.from_array(image, model_size=256).tiled
    assert not ImagePlan.from_array(image, model_size=256, scale="downscale").tiled
    square = ImagePlan.from_array(np.zeros((300, 300), np.uint8))
    with pytest.raises(ValueError, match="model's input size"):
        square.tiled
    assert not square.for_model(256).tiled and square.for_model(128).tiled
    assert square.for_model(128).tile_size == 128 and ImagePlan.from_array(image, tile=64).tile_size == 64
    with pytest.raises(ValueError, match="scale='tiles'"):
        ImagePlan.from_array(image, scale="tiles")
