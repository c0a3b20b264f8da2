"""What the model sees from an image layer, read one image at a time, and where large results are written.

Why: microscopy layers are often backed by dask or zarr (OME-Zarr, multiscale) and larger than memory, and may
hold 2-5 channels. The widgets build a :class:`LayerPixels` on the GUI thread from the layer's shape only;
the worker then reads one slice at a time through it (never the whole stack), with the channel choice applied
and ONE intensity range for the whole stack (``engine.normalize.stack_intensity_range``). Results of a large
stack go to a zarr array in a folder of their own (:func:`new_labels_array`), written slice by slice.
"""
from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["LayerPixels", "parse_channels", "level0", "new_labels_array", "LARGE_LABELS_BYTES", "CHANNELS_TIP"]

#: Labels larger than this (int32 bytes) are written to a zarr array on disk instead of memory.
LARGE_LABELS_BYTES = 512 * 2**20

CHANNELS_TIP = ("for a 2-5 channel image, (H, W, C) or (C, H, W): the channel the model sees (e.g. 1), or up to "
                "three for a composite (0, 2 = first into red, second into green); empty for a gray or RGB image")


def parse_channels(text: str) -> int | tuple[int, ...] | None:
    """'' -> None, '1' -> 1, '0, 2' -> (0, 2); raises ValueError naming the control and what to type."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    if not parts:
        return None
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"channels {text!r}: type one channel index (1) or up to three for a composite "
                         f"(0, 2); leave it empty for a gray or RGB image") from None
    if len(values) > 3:
        raise ValueError(f"channels {text!r}: at most three channels make a composite (red, green, blue)")
    return values[0] if len(values) == 1 else values


def level0(layer: Any):
    """The layer's full-resolution data (level 0 of a multiscale layer), not read."""
    data = layer.data
    return data[0] if getattr(layer, "multiscale", False) else data


class _ChannelPlanes:
    """One channel of every slice of a multi-channel stack, read on indexing (for the stack's intensity range)."""

    def __init__(self, data, channel: int, axis: int):
        self.data, self.channel, self.axis = data, channel, axis
        shape = tuple(data.shape)
        self.shape = (shape[0],) + tuple(s for i, s in enumerate(shape[1:]) if i != axis)
        self.dtype = np.dtype(data.dtype)

    def __getitem__(self, z: int) -> np.ndarray:
        return np.take(np.asarray(self.data[z]), self.channel, axis=self.axis)


class LayerPixels:
    """The model's input images from one image layer: a 2D image, or a stack read slice by slice.

    Built from shapes only (cheap, GUI thread); :meth:`image`, ``pixels[z]`` and :meth:`intensity` read pixels
    (call them in a worker). ``shape``/``dtype`` describe the stack of model images, so a ``LayerPixels`` can be
    handed to engines that read a stack per slice (``segment_everything_stack``).
    """

    def __init__(self, data, rgb: bool = False, channels: int | Sequence[int] | None = None, name: str = "image"):
        from ..engine.channels import MAX_CHANNELS, channel_axis_of

        self.data, self.name = data, name
        self.channels = channels
        shape = tuple(int(s) for s in data.shape)
        spatial = len(shape) - (1 if rgb else 0)
        self._axis: int | None = None  # channel axis within one image (2D multi-channel or one slice)
        if channels is not None:
            if rgb:
                self._axis = 2
                self.is_stack = spatial == 3
            elif spatial in (3, 4):
                self.is_stack = spatial == 4
                self._axis = channel_axis_of(shape[-3:])
                if self._axis is None:
                    raise ValueError(f"channels: layer {name!r} of shape {shape} has no axis of 2-{MAX_CHANNELS} "
                                     f"channels; leave 'channels' empty for a gray image or stack")
            else:
                raise ValueError(f"channels: layer {name!r} of shape {shape} is a single-channel 2D image; "
                                 f"leave 'channels' empty")
        elif spatial == 2:
            self.is_stack = False
        elif spatial == 3:
            if 2 <= shape[-1] <= MAX_CHANNELS and shape[-1] < min(shape[:2]):
                raise ValueError(f"layer {name!r} of shape {shape} looks like a {shape[-1]}-channel image "
                                 f"(H, W, C): type the channel(s) the model should see in 'channels' (e.g. 1, or "
                                 f"0, 2 for a composite)")
            self.is_stack = True
        else:
            hint = " or type the channel(s) in 'channels' for a multi-channel stack" if spatial == 4 else ""
            raise ValueError(f"layer {name!r} has {spatial} dimensions (shape {shape}): use a 2D image, a z/t "
                             f"stack{hint}")
        one = shape[1:] if self.is_stack else shape
        if self._axis is not None:
            one = tuple(s for i, s in enumerate(one) if i != self._axis)
            composite = not np.isscalar(channels) and len(channels) > 1
            one = one[:2] + ((3,) if composite else ())
            self.dtype = np.dtype(np.float32) if composite else np.dtype(data.dtype)
        else:
            self.dtype = np.dtype(data.dtype)
        self.image_shape: tuple[int, ...] = one
        self.plane_shape: tuple[int, int] = one[:2]
        self.n = shape[0] if self.is_stack else 1
        self.shape = ((self.n,) + one) if self.is_stack else one
        self.ndim = len(self.shape)
        # the layer's axes that the labels keep (its scale/translate entries): all but the channel axis
        n_axes = spatial if rgb else len(shape)
        channel = None if (self._axis is None or rgb) else (1 if self.is_stack else 0) + self._axis
        self.spatial_axes: tuple[int, ...] = tuple(i for i in range(n_axes) if i != channel)
        self._ranges: list[tuple[float, float]] | None = None

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """Shape of the label image(s): (H, W) or (Z, H, W)."""
        return ((self.n,) if self.is_stack else ()) + self.plane_shape

    @property
    def composite(self) -> bool:
        return self._axis is not None and not np.isscalar(self.channels) and len(self.channels) > 1

    def _select(self, raw: np.ndarray) -> np.ndarray:
        if self._axis is None:
            return raw
        from ..engine.channels import select_channels

        return select_channels(raw, self.channels, self._axis, ranges=self._ranges)

    def image(self) -> np.ndarray:
        """The 2D image the model sees (worker thread; a composite scaled by its own channels' ranges)."""
        if self.is_stack:
            raise ValueError(f"layer {self.name!r} is a stack: segment it slice by slice")
        return self._select(np.asarray(self.data))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, z: int) -> np.ndarray:
        """Slice ``z`` as the model sees it (reads that slice only)."""
        if not self.is_stack:
            raise ValueError(f"layer {self.name!r} is a single image, not a stack")
        if self.composite and self._ranges is None:
            self.intensity()
        return self._select(np.asarray(self.data[int(z)]))

    def intensity(self) -> tuple[float, float] | None:
        """The ONE (lo, hi) range the model images are scaled with: the stack's (read from at most 16 slices),
        (0, 1) for a composite (already scaled), None for a 2D gray image (its own range) or uint8 data."""
        from ..engine.normalize import stack_intensity_range

        if self.composite:
            if self.is_stack and self._ranges is None:
                picks = list(self.channels)
                ranges = [stack_intensity_range(_ChannelPlanes(self.data, c, self._axis)) for c in picks]
                self._ranges = [r if r is not None else (0.0, 255.0) for r in ranges]
            return 0.0, 1.0
        if not self.is_stack:
            return None
        if self._axis is not None:
            return stack_intensity_range(_ChannelPlanes(self.data, int(self.channels), self._axis))
        return stack_intensity_range(self.data)


def new_labels_array(shape: tuple[int, ...], name: str):
    """(a zeroed int32 label array of ``shape``, the folder holding it or None).

    Up to :data:`LARGE_LABELS_BYTES` the array is in memory; above, it is a zarr array chunked one slice per
    chunk in a new temporary folder of its own (``tempfile.mkdtemp``), so a stack's labels are written slice by
    slice and never held whole. The folder is never deleted by the plugin: save the layer, then delete it.
    """
    nbytes = int(np.prod(shape, dtype=np.int64)) * 4
    if nbytes <= LARGE_LABELS_BYTES or len(shape) < 3:
        return np.zeros(shape, np.int32), None
    import zarr

    folder = Path(tempfile.mkdtemp(prefix="granseg-labels-"))
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "_", name).strip("_") or "labels"
    arr = zarr.open_array(str(folder / f"{safe}.zarr"), mode="w", shape=tuple(shape),
                          chunks=(1,) + tuple(shape[1:]), dtype="int32", fill_value=0)
    return arr, folder / f"{safe}.zarr"
