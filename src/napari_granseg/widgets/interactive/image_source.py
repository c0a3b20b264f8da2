"""What the model sees of the widget's image: the scale (tiles at the image's own pixels, or the whole image
downscaled) and, for several channels, which channel or composite.

Why a module: the choices depend only on the layer's shape and the other layers, and the reading must happen
in the worker (dask/zarr layers are read one slice at a time there), so the GUI thread only builds a small
:class:`ChannelChoice` and the worker calls :func:`read_model_image`.

Channels the widget understands:

- a layer shaped (C, H, W) with C = 2..5 (napari shows it as C slices): one channel, or a composite of up to
  three (first into red, second green, third blue) — the model then sees that 2D image whatever slice is shown;
- napari's channel-split layers (``viewer.add_image(data, channel_axis=...)``: several 2D Image layers of one
  shape): a composite of the widget's image with up to two others.

A stack with channels (T, C, H, W) is not handled here: add the channel you want as its own layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...engine.channels import MAX_CHANNELS

__all__ = ["ChannelChoice", "channel_choices", "read_model_image", "level0", "SCALE_TIP", "TILE_TIP", "CHANNELS_TIP"]


SCALE_TIP = ("what the model sees of an image larger than its input (1024 px, demo 256 px):\n"
             "tile: windows at the image's own pixel scale - small objects (cells in a 4k frame, a stitched "
             "slide, a long strip);\n"
             "downscale: the whole image squeezed into one input - large objects (an organ, a few big cells);\n"
             "auto: tile when the model would shrink the image more than 2x or it is a strip, else downscale")
TILE_TIP = ("tile size in image pixels when tiling (0: the model's input size). A click is answered in the tile "
            "that holds it; all prompts of one object must fit in one tile")
CHANNELS_TIP = ("for a 2-5 channel image: the channel the model sees, or a composite (first channel into red, "
                "second green, third blue); for napari's channel-split layers: a composite with other layers "
                "of the same size")


@dataclass(frozen=True)
class ChannelChoice:
    """One entry of the channels box: ``kind`` "image" (as it is), "axis" (channels of a (C, H, W) layer) or
    "layers" (a composite of same-shape 2D layers, by name, the widget's image first)."""

    text: str
    kind: str = "image"
    picks: tuple[int, ...] = ()
    layers: tuple[str, ...] = ()

    @property
    def flattens_stack(self) -> bool:
        """True when the model sees one 2D image whatever slice of the layer is shown."""
        return self.kind == "axis"


def level0(layer):
    """A layer's full-resolution data (level 0 of a multiscale / OME-Zarr layer), never read here."""
    from ...engine.source import level0 as data_level0

    return data_level0(layer.data, bool(layer.multiscale))


def _shape(layer) -> tuple[int, ...]:
    return tuple(int(s) for s in level0(layer).shape)


def channel_choices(layer, others=()) -> list[ChannelChoice]:
    """The entries of the channels box for ``layer``; ``others``: the viewer's other Image layers."""
    if layer.rgb:
        return [ChannelChoice("RGB image")]
    shape = _shape(layer)
    if len(shape) == 3 and 2 <= shape[0] <= MAX_CHANNELS:
        n = shape[0]
        out = [ChannelChoice(f"slices (a stack of {n})")]
        out += [ChannelChoice(f"channel {c}", "axis", (c,)) for c in range(n)]
        out += [ChannelChoice("composite " + " + ".join(map(str, p)), "axis", p)
                for p in [tuple(range(min(n, 3)))] + ([(1, 0)] if n == 2 else [])]
        return out
    out = [ChannelChoice("this layer")]
    if len(shape) == 2:
        same = [o.name for o in others if o.name != layer.name and not o.rgb
                and _shape(o) == shape]
        if same:
            out.append(ChannelChoice("composite: " + " + ".join([layer.name] + same[:2]), "layers",
                                     layers=(layer.name, *same[:2])))
    return out


def read_model_image(choice: ChannelChoice | None, slice_data, full_data=None, layer_data=()) -> np.ndarray:
    """The 2D (or RGB) image the model sees; call it in a worker (it reads the pixels).

    slice_data: the slice shown (array-like); full_data: the whole (C, H, W) layer ("axis");
    layer_data: the 2D arrays of the composite's layers ("layers").
    """
    from ...engine.channels import select_channels

    if choice is None or choice.kind == "image":
        return np.asarray(slice_data)
    if choice.kind == "axis":
        return select_channels(np.asarray(full_data), choice.picks, channel_axis=0)
    planes = np.stack([np.asarray(d) for d in layer_data], axis=0)
    return select_channels(planes, tuple(range(len(planes))), channel_axis=0)
