"""What the model sees of an array: the ONE place that decides it (napari-free, lazy).

Every front end (the API, the CLI and batch workers, the three widgets) hands its data to
:meth:`ImagePlan.from_array` and asks the plan, so the same array is always seen the same way:

- a multiscale image (a list/tuple of arrays, napari's multiscale data, OME-Zarr levels): level 0, the full
  resolution; the other levels are never read;
- the channel rule: a 2-5 channel image, (H, W, C) or (C, H, W), needs a channel choice (``channels=K`` or a
  composite ``channels=(A, B[, C])``, :mod:`.channels`); an (H, W, 3|4) array is RGB(A) unless ``rgb=False``;
  (Z, H, W) without a choice is a stack;
- a stack (z or t) is read one slice at a time (:meth:`ImagePlan.plane`), and all its slices are scaled with
  ONE intensity range (:meth:`ImagePlan.intensity`, read from at most 16 slices, once);
- tile or downscale (:attr:`ImagePlan.tiled`): tiles at the image's own pixel scale when the model would shrink
  it more than 2x or it is a strip (:func:`.tiling.choose_scale`), unless ``scale`` says otherwise.
"""
from __future__ import annotations

from collections.abc import Sequence as _SequenceABC
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from .channels import MAX_CHANNELS, ChannelError, channel_axis_of, parse_channels, select_channels
from .normalize import stack_intensity_range
from .tiling import check_scale, check_tile, choose_scale

__all__ = ["ImagePlan", "level0", "needs_channel_choice", "is_stack_shape", "MAX_CHANNELS", "parse_channels"]

Channels = int | Sequence[int] | None


def level0(data: Any, multiscale: bool | None = None) -> Any:
    """The full-resolution array of ``data``, unread: level 0 of a multiscale image, else ``data`` itself.

    multiscale: True for napari's multiscale layers (``layer.multiscale``); None recognises napari's
    multiscale data and a list/tuple of arrays whose later levels are smaller (a list of equal arrays is a
    stack of slices, not a pyramid).
    """
    if multiscale is None:
        shapes = getattr(data, "shapes", None)  # napari's MultiScaleData
        if isinstance(shapes, tuple) and isinstance(data, _SequenceABC):
            multiscale = True
        elif isinstance(data, (list, tuple)) and len(data) > 1 and all(hasattr(d, "shape") for d in data):
            multiscale = tuple(data[1].shape) != tuple(data[0].shape)
        else:
            multiscale = False
    return data[0] if multiscale else data


def _default_rgb(shape: Sequence[int]) -> bool:
    """An (H, W, 3|4) or (Z, H, W, 3|4) array is RGB(A) when nobody says otherwise (as napari and sam2 read it)."""
    return len(shape) in (3, 4) and shape[-1] in (3, 4)


def needs_channel_choice(shape: Sequence[int], rgb: bool | None = None) -> bool:
    """True for an (H, W, C) image with C = 2..5 channels that cannot be shown as is (the channel rule).

    RGB(A) ((H, W, 3|4), ``rgb`` None or True) needs no choice; neither does a (C, H, W) array, which is read as
    a stack of C slices unless a channel choice is given.
    """
    shape = tuple(int(s) for s in shape)
    rgb = _default_rgb(shape) if rgb is None else rgb
    if rgb or len(shape) != 3:
        return len(shape) == 4 and not rgb and 2 <= shape[-1] <= MAX_CHANNELS
    return 2 <= shape[-1] <= MAX_CHANNELS and shape[-1] < min(shape[:2])


def is_stack_shape(shape: Sequence[int], channels_chosen: bool = False) -> bool:
    """True when an array of ``shape`` is a stack of images (z or t) for :meth:`ImagePlan.from_array` (the
    same rule, from a shape alone: a file's shape before it is read)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4:
        return True
    if len(shape) != 3:
        return False
    if channels_chosen:
        return False  # (H, W, C) or (C, H, W): one image whose channels were chosen
    return not (_default_rgb(shape) or shape[-1] == 1 or needs_channel_choice(shape))


class _ChannelPlanes:
    """One channel of every slice of a multi-channel stack, read on indexing (for the stack's intensity range)."""

    def __init__(self, data, channel: int, axis: int):
        self.data, self.channel, self.axis = data, channel, axis
        shape = tuple(data.shape)
        self.shape = (shape[0],) + tuple(s for i, s in enumerate(shape[1:]) if i != axis)
        self.dtype = np.dtype(data.dtype)

    def __getitem__(self, z: int) -> np.ndarray:
        return np.take(np.asarray(self.data[z]), self.channel, axis=self.axis)


@dataclass(frozen=True)
class ImagePlan:
    """How one array becomes model images; build it with :meth:`from_array` (shapes only: nothing is read).

    ``plane(z)`` reads one model-ready image ((H, W) or (H, W, 3)); ``plan[z]``, ``len(plan)``, ``shape`` and
    ``dtype`` let a stack plan stand in for the stack of model images (``engine.automatic`` reads it slice by
    slice). ``intensity()`` is the ONE grey range of every plane; ``tiled`` the tile-or-downscale decision.
    """

    data: Any
    rgb: bool
    channels: Channels
    channel_axis: int | None  # the channel axis within one image (None: no channel choice)
    is_stack: bool
    n: int
    image_shape: tuple[int, ...]
    dtype: np.dtype
    spatial_axes: tuple[int, ...]
    model_size: int | None = None
    scale: str = "auto"
    tile: int | None = None
    given_intensity: tuple[float, float] | None = None
    _cache: dict = field(default_factory=dict, compare=False, repr=False)

    # ------------------------------------------------------------------------------------------ building
    @classmethod
    def from_array(cls, data: Any, rgb: bool | None = None, channels: Channels = None,
                   channel_axis: int | None = None, model_size: int | None = None, scale: str = "auto",
                   tile: int | None = None, intensity: tuple[float, float] | None = None,
                   name: str = "image", multiscale: bool | None = None) -> "ImagePlan":
        """The plan of ``data`` (numpy, dask, zarr, a multiscale list; never read here).

        rgb: None reads (H, W, 3|4) as RGB(A) (napari layers pass ``layer.rgb``). channels / channel_axis: the
        channel the model sees (``1``) or a composite of up to three (``(0, 2)``), and the channel axis of ONE
        image (0 or -1; default: last, then first with 2-5 entries); a text such as ``"0, 2"`` is parsed.
        model_size: the model's input size (needed for :attr:`tiled`; :meth:`for_model` sets it later).
        scale: "auto" | "tile" | "downscale"; tile: tile size in pixels (default: the model's input size).
        intensity: the caller's (lo, hi) grey range (gray data only: a composite is scaled per channel).
        name: how errors name the data (a layer's name). multiscale: see :func:`level0`.
        """
        scale, tile = check_scale(scale), check_tile(tile)
        if isinstance(channels, str):
            channels = parse_channels(channels)
        data = level0(data, multiscale)
        if not (hasattr(data, "shape") and hasattr(data, "dtype")):
            data = np.asarray(data)
        shape = tuple(int(s) for s in data.shape)
        if channels is not None and rgb is None:
            rgb = False
        rgb = _default_rgb(shape) if rgb is None else bool(rgb)
        if channels is None and not rgb and len(shape) == 3 and shape[-1] == 1:
            data, shape = data[..., 0], shape[:2]  # (H, W, 1): a gray image
        spatial = len(shape) - (1 if rgb else 0)
        axis: int | None = None
        if channels is None and channel_axis is not None:
            raise ChannelError(f"channel_axis={channel_axis} was given without channels: choose what the model "
                               f"sees with channels=K (one channel) or channels=(A, B[, C]) (a composite)")
        if channels is not None and spatial == 2 and channels in (0, (0,), [0]) and not rgb:
            channels = None  # a gray image has channel 0 only
        if channels is not None:
            if rgb:
                axis, is_stack = 2, spatial == 3
            elif spatial in (3, 4):
                is_stack = spatial == 4
                axis = channel_axis_of(shape[-3:], channel_axis)
                if axis is None:
                    raise ChannelError(f"{name} of shape {shape} has no axis of 2-{MAX_CHANNELS} channels; leave "
                                       f"the channels empty for a gray image or stack")
            else:
                raise ChannelError(f"channels={channels!r} was given, but {name} of shape {shape} has one channel: "
                                   f"leave the channels empty")
            one = shape[1:] if is_stack else shape
            n_channels = one[axis]
            picks = [int(channels)] if np.isscalar(channels) else [int(c) for c in channels]
            if not 1 <= len(picks) <= 3:
                raise ChannelError(f"channels={channels!r}: give one channel index or up to three for a composite")
            bad = [c for c in picks if not 0 <= c < n_channels]
            if bad:
                raise ChannelError(f"channels={channels!r}: index {bad} out of range; {name} has channels "
                                   f"0..{n_channels - 1}")
            channels = picks[0] if len(picks) == 1 else tuple(picks)
            plane = tuple(s for i, s in enumerate(one) if i != axis)[:2]
            composite = len(picks) > 1
            image_shape = plane + ((3,) if composite else ())
            dtype = np.dtype(np.float32) if composite else np.dtype(data.dtype)
        elif spatial == 2:
            is_stack, image_shape, dtype = False, shape, np.dtype(data.dtype)
        elif spatial == 3:
            if needs_channel_choice(shape, rgb):
                raise ChannelError(
                    f"{name} of shape {shape} has {shape[-1]} channels: choose what the model sees with "
                    f"channels=K (one channel, 0..{shape[-1] - 1}) or channels=(A, B[, C]) (a composite: red, "
                    f"green, blue)")
            is_stack, image_shape, dtype = True, shape[1:], np.dtype(data.dtype)
        else:
            hint = "; choose the channel(s) for a multi-channel stack" if spatial == 4 else ""
            raise ChannelError(f"{name} has {spatial} dimensions (shape {shape}): use a 2D image or a z/t "
                               f"stack{hint}")
        n_axes = spatial if rgb else len(shape)
        channel_dim = None if (axis is None or rgb) else (1 if is_stack else 0) + axis
        return cls(data=data, rgb=rgb, channels=channels, channel_axis=axis, is_stack=is_stack,
                   n=shape[0] if is_stack else 1, image_shape=tuple(image_shape), dtype=dtype,
                   spatial_axes=tuple(i for i in range(n_axes) if i != channel_dim),
                   model_size=None if model_size is None else int(model_size), scale=scale,
                   tile=None if tile is None else int(tile),
                   given_intensity=None if intensity is None else (float(intensity[0]), float(intensity[1])))

    def for_model(self, model_size: int) -> "ImagePlan":
        """This plan for a model of input size ``model_size`` (the tile decision needs it); keeps the cache."""
        return replace(self, model_size=int(model_size), _cache=self._cache)

    # ------------------------------------------------------------------------------------------ shapes
    @property
    def plane_shape(self) -> tuple[int, int]:
        """(H, W) of every model image (and of the labels of one plane)."""
        return tuple(self.image_shape[:2])  # type: ignore[return-value]

    @property
    def labels_shape(self) -> tuple[int, ...]:
        """Shape of the label image(s): (H, W) or (Z, H, W)."""
        return ((self.n,) if self.is_stack else ()) + self.plane_shape

    @property
    def composite(self) -> bool:
        """True when the model sees an RGB composite of several channels (float32, scaled to [0, 1])."""
        return self.channel_axis is not None and not np.isscalar(self.channels)

    @property
    def shape(self) -> tuple[int, ...]:
        return ((self.n,) if self.is_stack else ()) + self.image_shape

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __len__(self) -> int:
        return self.n

    # ------------------------------------------------------------------------------------------ pixels
    def _select(self, raw: np.ndarray) -> np.ndarray:
        if self.channel_axis is None:
            return raw
        return select_channels(raw, self.channels, self.channel_axis, ranges=self._cache.get("ranges"))

    def plane(self, index: int | None = None) -> np.ndarray:
        """The model-ready image: slice ``index`` of a stack (only that slice is read), or the 2D image."""
        if not self.is_stack:
            if index not in (None, 0):
                raise IndexError(f"a single image has no slice {index}")
            return self._select(np.asarray(self.data))
        if index is None:
            raise ValueError(f"the image is a stack of {self.n} slices: say which slice (plane(z))")
        z = int(index)
        if not 0 <= z < self.n:
            raise IndexError(f"slice {z} is outside the stack (0..{self.n - 1})")
        if self.composite:
            self.intensity()  # the composite's per-channel ranges are the stack's
        return self._select(np.asarray(self.data[z]))

    def __getitem__(self, z: int) -> np.ndarray:
        return self.plane(z)

    def intensity(self) -> tuple[float, float] | None:
        """The ONE (lo, hi) range every plane is scaled with, computed once: (0, 1) for a composite (scaled
        per channel), the caller's range if given, the stack's (from at most 16 slices) for a stack, None for
        a 2D image (its own range) or uint8 data."""
        if "intensity" in self._cache:
            return self._cache["intensity"]
        if self.composite:
            if self.is_stack:
                ranges = [stack_intensity_range(_ChannelPlanes(self.data, c, self.channel_axis))
                          for c in self.channels]
                self._cache["ranges"] = [r if r is not None else (0.0, 255.0) for r in ranges]
            value: tuple[float, float] | None = (0.0, 1.0)
        elif self.given_intensity is not None:
            value = self.given_intensity
        elif not self.is_stack:
            value = None
        elif self.channel_axis is not None and not self.rgb:
            value = stack_intensity_range(_ChannelPlanes(self.data, int(self.channels), self.channel_axis))
        else:
            value = stack_intensity_range(self.data)
        self._cache["intensity"] = value
        return value

    # ------------------------------------------------------------------------------------------ scale
    @property
    def scale_choice(self) -> str:
        """"tile" or "downscale": THE decision (``scale`` and, for "auto", the plane and model sizes)."""
        if self.scale != "auto":
            return self.scale
        if self.model_size is None:
            raise ValueError("the tile-or-downscale choice needs the model's input size: plan.for_model(size)")
        return choose_scale(self.plane_shape, self.model_size, "auto")

    @property
    def tiled(self) -> bool:
        """True when the planes are segmented in tiles at their own pixel scale."""
        return self.scale_choice == "tile"

    @property
    def tile_size(self) -> int | None:
        """The tile edge in pixels when tiling (``tile`` or the model's input size)."""
        return self.tile if self.tile is not None else self.model_size
