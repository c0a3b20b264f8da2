"""The three-line scripting API (napari console, notebooks, scripts); see docs/scripting.md.

Points here are in napari order, ``(row, col)``, because that is what ``viewer.layers['Points'].data`` holds;
the lower-level :class:`GranularityPredictor` takes ``(x, y)`` like sam2.

What the model sees of an image (multiscale level, channels, stack intensity, tile or downscale) is decided
by :class:`~napari_granseg.engine.source.ImagePlan`; the work on this machine is :mod:`.segmentation`;
``scheduler=`` hands the same call to a GPU worker through :mod:`.compute`, which runs :mod:`.segmentation`
there. Models loaded by name are kept once per process (:func:`get_model`, :func:`release_models`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .models.loaded import LoadedModel
from .segmentation import get_model, get_predictor, release_models

__all__ = ["segment", "segment_everything", "get_predictor", "get_model", "release_models"]


def segment(image: np.ndarray, points: Sequence[Sequence[float]], granularity: float | Sequence[float] = 0.5,
            model: LoadedModel | str | None = None, labels: Sequence[int] | None = None,
            refine: bool = False, precision: str = "auto",
            intensity: tuple[float, float] | None = None, *, channels: int | Sequence[int] | None = None,
            channel_axis: int | None = None, scale: str = "auto", tile: int | None = None,
            scheduler=None) -> np.ndarray:
    """Segment one object per positive point at ``granularity`` and return an int32 label image (ids 1..n).

    points: ``[(row, col), ...]`` (napari order). On a (Z, H, W[, 3]) stack give napari ``(z, row, col)``
    points on one slice: that slice is segmented (scaled with the stack's intensity range) and a (Z, H, W)
    label stack comes back. On a 2D image, (z, row, col) points with one constant z are accepted (the z is
    dropped). granularity: one value for all points or one per point (in [0.1, 1]).
    labels: optional 1/0 per point; points with label 0 are negative clicks shared by every object.
    precision: "auto" | "fp32" | "bf16". intensity: the (low, high) grey range to scale with (a slice of a
    stack: the stack's range, see docs/scripting.md); None: the image's own range, or the stack's for a stack.
    Overlaps go to the object with the higher logit.

    channels / channel_axis: for a multi-channel image, the channel the model sees (``channels=1``) or a
    composite of up to three (``channels=(0, 2)``); see :mod:`napari_granseg.engine.channels`.
    scale: "auto" | "tile" | "downscale" and tile (pixels, default the model's input size): large images are
    segmented at their own pixel scale in tiles (:mod:`napari_granseg.engine.tiling`); with tiling, negative
    clicks count for the objects within half a tile of them.
    scheduler: where the work runs (:mod:`napari_granseg.compute`): a dask scheduler address, a session from
    ``napari_granseg.remote.connect`` or ``compute.Local()``; a GPU worker runs this same call and the same
    labels come back (docs/remote.md).
    """
    from . import segmentation

    call = dict(model=model, labels=labels, refine=refine, precision=precision, intensity=intensity,
                channels=channels, channel_axis=channel_axis, scale=scale, tile=tile)
    if scheduler is not None:
        from .compute import resolve_where

        return resolve_where(scheduler).segment(image, points, granularity, **call)
    return segmentation.segment(image, points, granularity, **call)


def segment_everything(image: np.ndarray, granularity: float | Sequence[float] = 0.5, model: LoadedModel | str | None = None,
                       precision: str = "auto", intensity: tuple[float, float] | None = None, *,
                       channels: int | Sequence[int] | None = None, channel_axis: int | None = None,
                       scale: str = "auto", tile: int | None = None, scheduler=None, **settings) -> np.ndarray:
    """Instance labels of the whole image at ``granularity`` (see :mod:`napari_granseg.engine.automatic`).

    ``granularity``: a number in [0.1, 1]; a list of them gives the hierarchy of those levels, as the
    everything widget does (an ``engine.hierarchy.Hierarchy``: ``.levels[g]`` the labels at g, parts linked
    to the wholes containing them).

    ``intensity``: the (low, high) grey range (a stack's, for a slice); handed to the automatic engine,
    which scales every crop with it. ``settings``: fields of ``AutomaticSettings`` (unknown names are errors),
    ``progress``/``cancel`` callbacks. ``channels``, ``scale``/``tile`` and ``scheduler`` as in :func:`segment`:
    with tiling every tile is segmented at the image's own pixel scale and objects are stitched across tiles.
    """
    from . import segmentation

    if isinstance(granularity, (list, tuple, np.ndarray)) and np.ndim(granularity) > 0:
        return _everything_levels(image, granularity, model=model, precision=precision, intensity=intensity,
                                  channels=channels, channel_axis=channel_axis, scale=scale, tile=tile,
                                  scheduler=scheduler, **settings)
    call = dict(model=model, precision=precision, intensity=intensity, channels=channels,
                channel_axis=channel_axis, scale=scale, tile=tile, **settings)
    if scheduler is not None:
        from .compute import resolve_where

        return resolve_where(scheduler).segment_everything(image, granularity, **call)
    return segmentation.segment_everything(image, granularity, **call)


def _everything_levels(image: np.ndarray, granularity, **kwargs):
    """:func:`segment_everything` at each granularity of a list: the parts-to-wholes hierarchy the everything
    widget builds from its levels (``Hierarchy.levels``: g -> instance labels, finest first; ``parent``,
    ``children``, ``to_table`` link each part to the whole containing it)."""
    from .engine.hierarchy import build_hierarchy
    from .engine.prompts import as_granularities

    as_granularities(granularity, name="granularity")  # every value a number in [0.1, 1], or a clear error
    if kwargs.get("return_info"):
        raise ValueError("return_info=True needs one granularity (a number); with a list of granularities the "
                         "result is a hierarchy of label images")
    values = dict.fromkeys(float(g) for g in np.asarray(granularity, np.float64).reshape(-1))
    return build_hierarchy({g: segment_everything(image, g, **kwargs) for g in values})

