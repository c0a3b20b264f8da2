"""The three-line scripting API (napari console, notebooks, scripts). See ../shared spec api.md / docs/scripting.md.

Points here are in napari order, ``(row, col)``, because that is what ``viewer.layers['Points'].data`` holds;
the lower-level :class:`GranularityPredictor` takes ``(x, y)`` like sam2.
"""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from .models.loaded import LoadedModel
from .zoo import load_model

__all__ = ["segment", "segment_everything", "get_predictor", "get_model"]

_lock = threading.Lock()
_models: dict[tuple, LoadedModel] = {}
_predictors: dict[int, object] = {}


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


def get_predictor(model: LoadedModel | str | None = None, device: str = "auto"):
    """The cached :class:`GranularityPredictor` of ``model`` (embeddings persist between calls)."""
    from .engine.interactive import GranularityPredictor

    loaded = get_model(model, device=device)
    with _lock:
        pred = _predictors.get(id(loaded.module))
        if pred is None:
            pred = _predictors[id(loaded.module)] = GranularityPredictor(loaded)
        return pred


def segment(image: np.ndarray, points: Sequence[Sequence[float]], granularity: float | Sequence[float] = 0.5,
            model: LoadedModel | str | None = None, labels: Sequence[int] | None = None,
            refine: bool = False) -> np.ndarray:
    """Segment one object per point at ``granularity`` and return an int32 label image (ids 1..n).

    points: ``[(row, col), ...]`` (napari order). granularity: one value for all points or one per point.
    labels: optional 1/0 per point; points with label 0 are negative clicks shared by every object.
    Overlaps go to the object with the higher logit.
    """
    pred = get_predictor(model)
    pred.set_image(image)
    pts = np.asarray(points, dtype=np.float32).reshape(-1, 2)
    lab = np.ones(len(pts), int) if labels is None else np.asarray(labels).reshape(-1)
    if len(lab) != len(pts):
        raise ValueError(f"{len(pts)} points but {len(lab)} labels")
    pos, neg = pts[lab == 1], pts[lab == 0]
    if len(pos) == 0:
        raise ValueError("give at least one positive point (label 1) to segment an object")
    g = np.broadcast_to(np.asarray(granularity, dtype=np.float32), (len(pts),))[lab == 1]
    out = np.zeros(np.asarray(image).shape[:2], np.int32)
    best = np.full(out.shape, -np.inf, np.float32)
    for obj_id, ((row, col), g_obj) in enumerate(zip(pos, g), start=1):
        xy = [[col, row]] + [[c, r] for r, c in neg]
        lb = [1] + [0] * len(neg)
        logits, _, _ = pred.predict(xy, lb, granularity=float(g_obj) if pred.has_granularity else None,
                                    return_logits=True, refine=refine)
        lg = logits[0]
        take = (lg > pred.mask_threshold) & (lg > best)
        out[take] = obj_id
        best[take] = lg[take]
    return out


def segment_everything(image: np.ndarray, granularity: float = 0.5, model: LoadedModel | str | None = None,
                       **settings) -> np.ndarray:
    """Instance labels of the whole image at ``granularity`` (see :mod:`napari_granseg.engine.automatic`)."""
    from .engine.automatic import segment_everything as _everything

    return _everything(get_predictor(model), image, granularity=granularity, **settings)
