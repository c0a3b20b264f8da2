"""The three-line scripting API (napari console, notebooks, scripts); see docs/scripting.md.

Points here are in napari order, ``(row, col)``, because that is what ``viewer.layers['Points'].data`` holds;
the lower-level :class:`GranularityPredictor` takes ``(x, y)`` like sam2.

State kept between calls, and where: a model given by zoo name or path is loaded once and kept in this
module (``get_model``; :func:`release_models` drops them). Each :class:`LoadedModel` carries its own
predictors (one per precision, in a private attribute of that LoadedModel), so the embeddings of the last
images live exactly as long as the model does; nothing is keyed by object ids.
"""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from .devices import check_precision
from .models.loaded import LoadedModel
from .zoo import load_model

__all__ = ["segment", "segment_everything", "get_predictor", "get_model", "release_models"]

_lock = threading.Lock()
_models: dict[tuple, LoadedModel] = {}
_PREDICTORS = "_granseg_predictors"  # attribute of a LoadedModel: {precision: GranularityPredictor}


def get_model(model: LoadedModel | str | None = None, kind: str = "unsamv2", device: str = "auto") -> LoadedModel:
    """A loaded model, reused across calls: a LoadedModel as is, a zoo name/path loaded once, None = default."""
    if isinstance(model, LoadedModel):
        return model
    key = (str(model), kind, device)
    with _lock:
        if key not in _models:
            from .zoo import ZOO

            named = model is None or str(model) in ZOO
            _models[key] = load_model(model, kind=None if named else kind, device=device)
        return _models[key]


def release_models() -> None:
    """Forget the models (and with them their predictors and embeddings) loaded by name through this API."""
    with _lock:
        _models.clear()


def get_predictor(model: LoadedModel | str | None = None, device: str = "auto", precision: str = "auto"):
    """The :class:`GranularityPredictor` of ``model`` at ``precision`` (embeddings persist between calls).

    It is stored on the LoadedModel itself, so it lives and dies with the model. Share it between threads
    by holding ``predictor.lock`` around ``set_image`` + ``predict``.
    """
    from .engine.interactive import GranularityPredictor

    check_precision(precision)
    loaded = get_model(model, device=device)
    with _lock:
        own = loaded.__dict__.setdefault(_PREDICTORS, {})
        pred = own.get(precision)
        if pred is None:
            pred = own[precision] = GranularityPredictor(loaded, precision=precision)
        return pred


def _napari_points(points, image: np.ndarray) -> tuple[np.ndarray, int | None]:
    """(N, 2) (row, col) points and the slice index they lie on (None for a 2D image).

    (N, 3) points of a napari 3D Points layer are (z, row, col): on a stack the z selects the slice (all
    points must lie on one slice); on a 2D image a constant leading coordinate (a 2D image shown in a 3D
    viewer) is dropped, anything else is refused.
    """
    from .engine.prompts import PromptError

    if points is None:
        raise PromptError("points=None: give the clicks as points=[(row, col), ...] (napari order), e.g. "
                          "viewer.layers['Points'].data")
    try:
        pts = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise PromptError(f"points must be numbers [(row, col), ...]; got {points!r}") from None
    if pts.ndim == 1 and pts.size in (2, 3):
        pts = pts[None]
    if pts.ndim != 2 or pts.shape[0] == 0 or pts.shape[1] not in (2, 3):
        raise PromptError(f"points must be (row, col) pairs shaped (N, 2) (or napari (z, row, col) on a stack), "
                          f"got shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise PromptError(f"points contain NaN or infinite values: {pts[~np.isfinite(pts).all(1)].tolist()}; "
                          f"give finite (row, col) pixel positions")
    ndim = len(image.shape)
    is_stack = ndim == 4 or (ndim == 3 and image.shape[-1] not in (1, 3, 4))
    if pts.shape[1] == 2:
        if is_stack:
            raise PromptError(f"image is a stack of shape {image.shape}: give points as napari (z, row, col) so "
                              f"the slice is known, or pass one slice image[z] with (row, col) points")
        return pts, None
    z = pts[:, 0]
    if not is_stack:
        if not np.all(z == z[0]):
            raise PromptError(f"points have 3 coordinates but the image is 2D (shape {image.shape}): pass "
                              f"(row, col) pairs, e.g. points[:, 1:] of a napari 3D Points layer")
        return pts[:, 1:], None  # a 2D image in a 3D viewer: the constant leading coordinate carries nothing
    if not np.all(z == z[0]):
        raise PromptError(f"points lie on several slices (z = {sorted(set(z.tolist()))}): segment one slice at "
                          f"a time (points on one z), or propagate through the stack")
    zi = int(round(z[0]))
    if abs(z[0] - zi) > 1e-6 or not 0 <= zi < image.shape[0]:
        raise PromptError(f"points are on slice z={z[0]} but the stack has slices 0..{image.shape[0] - 1}")
    return pts[:, 1:], zi


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
    scheduler: a dask scheduler address (or a session from ``napari_granseg.remote.connect``): the work runs
    on that machine's GPU worker and the same labels come back (docs/remote.md).
    """
    from .engine.normalize import stack_intensity_range
    from .engine.prompts import PromptError, as_granularities
    from .engine.tiling import TiledPredictor, choose_scale

    if scheduler is not None:
        from .remote import session_for

        return session_for(scheduler).segment(image, points, granularity, model=model, labels=labels,
                                              refine=refine, precision=precision, intensity=intensity,
                                              channels=channels, channel_axis=channel_axis, scale=scale, tile=tile)
    if not (hasattr(image, "shape") and hasattr(image, "dtype")):
        image = np.asarray(image)  # lists; numpy, dask and zarr stacks stay lazy (one slice is read)
    image, intensity = _with_channels(image, channels, channel_axis, intensity)
    pts, z = _napari_points(points, image)
    if labels is None:
        lab = np.ones(len(pts), int)
    else:
        lab = np.asarray(labels).reshape(-1)
        if len(lab) != len(pts):
            raise PromptError(f"{len(pts)} points but {len(lab)} labels: give one label (1 object, 0 background) "
                              f"per point")
        if not np.isin(lab, (0, 1)).all():
            raise PromptError(f"labels must be 1 (object) or 0 (background) per point, got {sorted(set(lab.tolist()))}")
    pos, neg = pts[lab == 1], pts[lab == 0]
    if len(pos) == 0:
        raise PromptError("give at least one positive point (label 1) to segment an object")
    pred = get_predictor(model, precision=precision)
    if pred.has_granularity:
        g = as_granularities(granularity, n=len(pts))[lab == 1]
    else:
        g = [None] * len(pos)
    plane = np.asarray(image) if z is None else np.asarray(image[z])
    if intensity is None and z is not None:
        intensity = stack_intensity_range(image, pred.percentiles)
    out = np.zeros(plane.shape[:2], np.int32)
    best = np.full(out.shape, -np.inf, np.float32)
    tiled = choose_scale(plane.shape[:2], int(pred.model.image_size), scale) == "tile"
    engine = TiledPredictor(pred, tile) if tiled else pred
    with pred.lock:
        engine.set_image(plane, intensity=intensity)
        for obj_id, ((row, col), g_obj) in enumerate(zip(pos, g), start=1):
            near = [(r, c) for r, c in neg
                    if not tiled or max(abs(r - row), abs(c - col)) < engine.tile / 2]
            xy = [[col, row]] + [[c, r] for r, c in near]
            lb = [1] + [0] * len(near)
            logits, _, _ = engine.predict(xy, lb, granularity=None if g_obj is None else float(g_obj),
                                          return_logits=True, refine=refine)
            lg = logits[0]
            take = (lg > pred.mask_threshold) & (lg > best)
            out[take] = obj_id
            best[take] = lg[take]
    if z is None:
        return out
    stack = np.zeros(image.shape[:3], np.int32)
    stack[z] = out
    return stack


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
    from .engine.automatic import segment_everything as _everything
    from .engine.tiling import choose_scale, segment_everything_tiled

    if isinstance(granularity, (list, tuple, np.ndarray)) and np.ndim(granularity) > 0:
        return _everything_levels(image, granularity, model=model, precision=precision, intensity=intensity,
                                  channels=channels, channel_axis=channel_axis, scale=scale, tile=tile,
                                  scheduler=scheduler, **settings)
    if scheduler is not None:
        from .remote import session_for

        return session_for(scheduler).segment_everything(
            image, granularity, model=model, precision=precision, intensity=intensity, channels=channels,
            channel_axis=channel_axis, scale=scale, tile=tile, **settings)
    image, intensity = _with_channels(np.asarray(image), channels, channel_axis, intensity)
    pred = get_predictor(model, precision=precision)
    tiled = choose_scale(image.shape[:2], int(pred.model.image_size), scale) == "tile"
    if tiled and settings.get("return_info"):
        raise ValueError("return_info=True is not available with tiling: pass scale='downscale', or drop "
                         "return_info")
    with pred.lock:
        if tiled:
            return segment_everything_tiled(pred, image, granularity, tile=tile, intensity=intensity, **settings)
        if intensity is not None:
            settings["intensity"] = intensity
        return _everything(pred, image, granularity=granularity, **settings)


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


def _with_channels(image: np.ndarray, channels, channel_axis, intensity):
    """The image the model sees for a ``channels`` choice, and the intensity range that goes with it (a
    composite is already scaled to [0, 1] per channel)."""
    from .engine.channels import select_channels

    if channels is None and channel_axis is None:
        if len(image.shape) == 3 and image.shape[-1] in (2, 5):
            select_channels(np.asarray(image))  # raises: a multi-channel image needs a channel choice
        return image, intensity
    image = np.asarray(image)
    out = select_channels(image, channels, channel_axis)
    if out.ndim == 3 and out.dtype == np.float32 and out is not image:
        return out, (0.0, 1.0)
    return out, intensity
