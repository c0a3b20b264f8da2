"""The scripting calls' work on this machine: a model loaded once per process, its shared predictor, and
``segment`` / ``segment_everything`` on one predictor (napari-free).

Why apart from :mod:`napari_granseg.api`: the API adds where the work runs (``scheduler=``, through
:mod:`napari_granseg.compute`); the GPU worker's actors (``remote.server``) and :class:`compute.Local` run
exactly these functions, so a result is the same whichever machine computes it.

State kept between calls, and where: a model given by zoo name or path is loaded once per process
(``model_store.cached_model``; :func:`release_models` drops them). Each :class:`LoadedModel` carries its own
predictors (one per precision, in a private attribute of that LoadedModel), so the embeddings of the last
images live exactly as long as the model does; nothing is keyed by object ids.
"""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from .devices import check_precision
from .engine.source import ImagePlan
from .model_store import ModelRef, cached_model, release_cached_models
from .models.loaded import LoadedModel

__all__ = ["segment", "segment_everything", "get_predictor", "get_model", "release_models", "napari_points",
           "plan_for"]

_lock = threading.Lock()
_PREDICTORS = "_granseg_predictors"  # attribute of a LoadedModel: {precision: GranularityPredictor}


def get_model(model: LoadedModel | str | None = None, kind: str = "unsamv2", device: str = "auto") -> LoadedModel:
    """A loaded model, reused across calls: a LoadedModel as is, a zoo name/path loaded once, None = default."""
    if isinstance(model, LoadedModel):
        return model
    from .zoo import ZOO

    named = model is None or str(model) in ZOO
    if model is not None and named and (ZOO[str(model)].kind == "sansa") != (kind == "sansa"):
        spec = ZOO[str(model)]  # the zoo knows each name's kind: a model of the other task is refused by name
        raise ValueError(f"model {spec.name!r} is of kind {spec.kind!r}: " + (
            "few-shot needs a SANSA model (e.g. 'sansa-universal', or 'sansa-demo')" if kind == "sansa" else
            "clicks and segment everything need an UnSAMv2 or SAM 2 model (e.g. 'unsamv2-plus', or 'unsamv2-demo'); "
            "SANSA models are for few-shot"))
    return cached_model(ModelRef(None if model is None else str(model), None if named else kind, None, device))


def release_models() -> None:
    """Forget the models (and with them their predictors and embeddings) loaded by name in this process."""
    release_cached_models()


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


def plan_for(image, model_size: int, channels=None, channel_axis=None, scale: str = "auto", tile=None,
             intensity=None) -> ImagePlan:
    """The :class:`~napari_granseg.engine.source.ImagePlan` of an API call's image (an ImagePlan as is)."""
    if isinstance(image, ImagePlan):
        return image if image.model_size is not None else image.for_model(model_size)
    return ImagePlan.from_array(image, channels=channels, channel_axis=channel_axis, model_size=model_size,
                                scale=scale, tile=tile, intensity=intensity)


def napari_points(points, plan: ImagePlan) -> tuple[np.ndarray, int | None]:
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
    is_stack, shape = plan.is_stack, plan.shape
    h, w = plan.plane_shape
    rc = pts[:, -2:]
    outside = ~((rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w))
    if outside.any():
        row, col = rc[outside][0]
        raise PromptError(f"point (row {row:g}, col {col:g}) is outside the image of {h} rows x {w} columns: give "
                          f"points as (row, col) in pixels, napari order (rows 0..{h - 1}, cols 0..{w - 1})")
    if pts.shape[1] == 2:
        if is_stack:
            raise PromptError(f"image is a stack of shape {shape}: give points as napari (z, row, col) so "
                              f"the slice is known, or pass one slice image[z] with (row, col) points")
        return pts, None
    z = pts[:, 0]
    if not is_stack:
        if not np.all(z == z[0]):
            raise PromptError(f"points have 3 coordinates but the image is 2D (shape {shape}): pass "
                              f"(row, col) pairs, e.g. points[:, 1:] of a napari 3D Points layer")
        return pts[:, 1:], None  # a 2D image in a 3D viewer: the constant leading coordinate carries nothing
    if not np.all(z == z[0]):
        raise PromptError(f"points lie on several slices (z = {sorted(set(z.tolist()))}): segment one slice at "
                          f"a time (points on one z), or propagate through the stack")
    zi = int(round(z[0]))
    if abs(z[0] - zi) > 1e-6 or not 0 <= zi < shape[0]:
        raise PromptError(f"points are on slice z={z[0]} but the stack has slices 0..{shape[0] - 1}")
    return pts[:, 1:], zi


def segment(image, points: Sequence[Sequence[float]], granularity: float | Sequence[float] = 0.5,
            model: LoadedModel | str | None = None, labels: Sequence[int] | None = None,
            refine: bool = False, precision: str = "auto",
            intensity: tuple[float, float] | None = None, *, channels=None, channel_axis: int | None = None,
            scale: str = "auto", tile: int | None = None) -> np.ndarray:
    """``napari_granseg.segment`` on this machine (see :func:`napari_granseg.api.segment`)."""
    from .engine.prompts import PromptError, as_granularities
    from .engine.tiling import TiledPredictor

    check_precision(precision)
    pred = get_predictor(model, precision=precision)
    plan = plan_for(image, pred.image_size, channels, channel_axis, scale, tile, intensity)
    pts, z = napari_points(points, plan)
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
    if pred.has_granularity:
        g = as_granularities(granularity, n=len(pts))[lab == 1]
    else:
        g = [None] * len(pos)
    plane = plan.plane(z)
    out = np.zeros(plan.plane_shape, np.int32)
    best = np.full(out.shape, -np.inf, np.float32)
    tiled = plan.tiled
    engine = TiledPredictor(pred, plan.tile) if tiled else pred
    with pred.lock:
        engine.set_image(plane, intensity=plan.intensity())
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
    stack = np.zeros(plan.labels_shape, np.int32)
    stack[z] = out
    return stack


def segment_everything(image, granularity: float = 0.5, model: LoadedModel | str | None = None,
                       precision: str = "auto", intensity: tuple[float, float] | None = None, *,
                       channels=None, channel_axis: int | None = None, scale: str = "auto",
                       tile: int | None = None, with_info: bool = False, **settings):
    """``napari_granseg.segment_everything`` on this machine (see :func:`napari_granseg.api.segment_everything`).

    with_info: return (labels, per-label info) where the image is segmented whole, (labels, None) where it
    is tiled (a job that does not know the model's input size in advance asks for it this way).
    """
    from .engine.automatic import segment_everything as _everything
    from .engine.tiling import segment_everything_tiled

    pred = get_predictor(model, precision=precision)
    plan = plan_for(image, pred.image_size, channels, channel_axis, scale, tile, intensity)
    if plan.is_stack:
        raise ValueError(f"segment_everything takes one 2D image; this is a stack of {plan.n} slices (shape "
                         f"{plan.shape}): segment one slice (image[z]) or use "
                         f"napari_granseg.jobs.segment_everything_slices for the whole stack")
    image = plan.plane()
    intensity = plan.intensity()
    if with_info and not plan.tiled:
        settings["return_info"] = True
    if plan.tiled and settings.get("return_info"):
        raise ValueError("return_info=True is not available with tiling: pass scale='downscale', or drop "
                         "return_info")
    with pred.lock:
        if plan.tiled:
            labels = segment_everything_tiled(pred, image, granularity, tile=plan.tile, intensity=intensity,
                                              **settings)
            return (labels, None) if with_info else labels
        if intensity is not None:
            settings["intensity"] = intensity
        return _everything(pred, image, granularity=granularity, **settings)
