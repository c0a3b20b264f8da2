"""Multi-channel images (2-5 fluorescence channels) turned into what SAM 2 takes: one channel or an RGB composite.

Why a choice and not a guess: in a (H, W, 2) nuclei + membrane image, the object a user means may be visible in
one channel only; averaging channels, or reading the first as red, silently changes what the model sees. So a
multi-channel image needs ``channels=``:

- ``channels=1``: channel 1 alone (gray, repeated to RGB by the model input);
- ``channels=(0, 2)`` (up to three): a composite, the first into red, the second into green, the third into
  blue, each channel scaled by its own intensity range (a dim channel stays visible next to a bright one).

Channel axis: the last axis when it has 2-5 entries, else the first when it has 2-5 (napari's and tifffile's
(C, H, W)); give ``channel_axis=`` when both could be. An (H, W, 3) or (H, W, 4) image without ``channels`` is
taken as RGB(A), as it always was.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .normalize import ImageShapeError, intensity_range

__all__ = ["ChannelError", "select_channels", "channel_axis_of", "parse_channels", "MAX_CHANNELS"]

MAX_CHANNELS = 5
Channels = int | Sequence[int] | None


class ChannelError(ImageShapeError):
    """A multi-channel image without a valid channel choice, with what to pass."""


def channel_axis_of(shape: Sequence[int], channel_axis: int | None = None) -> int | None:
    """The channel axis of a 3D image shape (None for 2D): explicit, else last then first with 2-5 entries."""
    if len(shape) == 2:
        return None
    if len(shape) != 3:
        raise ChannelError(f"expected a 2D image, (H, W, C) or (C, H, W), got shape {tuple(shape)}")
    if channel_axis is not None:
        axis = channel_axis % 3
        if axis == 1:
            raise ChannelError(f"channel_axis={channel_axis} points at the image rows; use 0 (C, H, W) or -1 (H, W, C)")
        return axis
    if 2 <= shape[-1] <= MAX_CHANNELS:
        return 2
    if 2 <= shape[0] <= MAX_CHANNELS:
        return 0
    return None


def parse_channels(text: str | None, control: str = "channels") -> int | tuple[int, ...] | None:
    """A channel choice typed as text: '' or None -> None, '1' -> 1, '0, 2' (or '0,2', '0;2') -> (0, 2).

    ``control`` names where it was typed (the widget's "channels" box, the CLI's "--channels") in the
    ValueError, which says what to type.
    """
    if text is None:
        return None
    parts = [p.strip() for p in str(text).replace(";", ",").split(",") if p.strip()]
    if not parts:
        return None
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{control} {text!r}: give one channel index (e.g. {control} 1) or up to three for a "
                         f"composite (e.g. {control} 0,2); leave it empty for a gray or RGB image") from None
    if len(values) > 3:
        raise ValueError(f"{control} {text!r}: at most three channels make a composite (red, green, blue)")
    if any(v < 0 for v in values):
        raise ValueError(f"{control} {text!r}: channel indices start at 0")
    return values[0] if len(values) == 1 else values


def _scaled(channel: np.ndarray, value_range: tuple[float, float] | None) -> np.ndarray:
    lo, hi = value_range if value_range is not None else intensity_range(channel)
    if channel.dtype == np.uint8 and value_range is None:
        lo, hi = 0.0, 255.0
    hi = hi if hi > lo else lo + 1.0
    return np.clip((np.nan_to_num(channel.astype(np.float32)) - lo) / (hi - lo), 0.0, 1.0)


def select_channels(image: np.ndarray, channels: Channels = None, channel_axis: int | None = None,
                    ranges: Sequence[tuple[float, float]] | None = None) -> np.ndarray:
    """One 2D channel or an (H, W, 3) float32 composite in [0, 1] from a multi-channel image.

    ``ranges``: per selected channel (lo, hi), e.g. computed once over a whole stack so every slice is scaled
    alike; None scales each channel by its own 0.5-99.5 percentiles. Images without a channel axis are
    returned unchanged (``channels`` must then be None or 0).
    """
    arr = np.asarray(image)
    if arr.ndim == 2:
        if channels not in (None, 0, (0,), [0]):
            raise ChannelError(f"channels={channels!r} was given, but the image has one channel (shape {arr.shape})")
        return arr
    axis = channel_axis_of(arr.shape, channel_axis)
    if axis is None:
        raise ChannelError(f"image of shape {arr.shape} has no channel axis of 2-{MAX_CHANNELS} entries; for a "
                           f"z-stack or time series segment one slice at a time (stack[i])")
    n = arr.shape[axis]
    if channels is None:
        if axis == 2 and n in (3, 4) and channel_axis is None:
            return arr  # RGB(A), as the engines always took it
        raise ChannelError(
            f"image of shape {arr.shape} has {n} channels (axis {axis}): choose what the model sees with "
            f"channels=K (one channel, 0..{n - 1}) or channels=(A, B[, C]) (a composite: red, green, blue)")
    picks = [int(channels)] if np.isscalar(channels) else [int(c) for c in channels]
    if not 1 <= len(picks) <= 3:
        raise ChannelError(f"channels={channels!r}: give one channel index or up to three for a composite")
    bad = [c for c in picks if not 0 <= c < n]
    if bad:
        raise ChannelError(f"channels={channels!r}: index {bad} out of range; the image has channels 0..{n - 1}")
    if ranges is not None and len(ranges) != len(picks):
        raise ChannelError(f"ranges: give one (lo, hi) per selected channel ({len(picks)}), got {len(ranges)}")
    planes = [np.take(arr, c, axis=axis) for c in picks]
    if len(picks) == 1:
        return planes[0]
    out = np.zeros(planes[0].shape + (3,), np.float32)
    for i, plane in enumerate(planes):
        out[..., i] = _scaled(plane, None if ranges is None else tuple(ranges[i]))
    return out
