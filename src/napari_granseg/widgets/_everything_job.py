"""The job of "Segment everything": the same body on this machine or on a GPU worker.

Why one body: a run here and a run on a dask worker must give the same labels, so both go through
``jobs.segment_everything_slices``; only ``where`` differs (None: this machine, else a connected
``remote.RemoteSession``). A stack is read and segmented one slice at a time with ONE intensity range, its
labels written into an in-memory or zarr array as each slice is done, ids unique across the stack. Then the
result layers' specifications (hierarchy and feature tables built here, off the GUI thread). No Qt here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..compute import describe, is_local, open_predictor, resolve_where
from ..engine.source import ImagePlan
from ._layer_pixels import new_labels_array
from ._tasks import Progress, blocking_with_progress

__all__ = ["SCALE_TIP", "TILE_TIP", "EverythingRequest", "ModelShown", "overrides_for", "everything_job",
           "layer_specs"]

SCALE_TIP = ("what the model sees of an image larger than its input (1024 px; 256 px for the demo): "
             "'tile' = windows at the image's own pixel scale, overlapping, objects stitched across tiles (small "
             "objects: cells in a 4k frame or a stitched slide, strips); 'downscale' = the whole image squeezed "
             "into one model input (objects large compared with a tile); 'auto' tiles when the model would "
             "shrink the image more than 2x or the image is more than twice as long as wide")
TILE_TIP = "tile size in pixels for scale 'tile' (default: the model's input size); tiles overlap by a quarter"


@dataclass(frozen=True)
class EverythingRequest:
    """Everything a run needs, read from the controls on the GUI thread (pixels are read later, in the job).

    ``plan``: the image as the model sees it (level 0, channel choice, one intensity range for a stack, and
    ``scale``/``tile``: tile or downscale); its ``model_size`` is filled in once the model is known.
    """

    plan: ImagePlan
    layer_name: str
    source: tuple  # (scale, translate) of the layer's spatial axes, for the result layers
    granularities: tuple[float, ...]
    model: Any = None  # a LoadedModel the user gave, a zoo name, or None for the default
    precision: str = "auto"
    points: int = 24
    stability: float = 0.0  # 0: the model's own default


@dataclass(frozen=True)
class ModelShown:
    """What the badge shows once the job knows its model: name (with the worker's address) and demo or not."""

    name: str
    demo: bool
    model: Any = None  # the LoadedModel when it runs here


def overrides_for(points: int, stability: float = 0.0) -> dict:
    """The settings a run changes from the model's defaults: the click grid, and min stability when set."""
    return {"points_per_side": int(points), **({"stability_score_thresh": float(stability)} if stability > 0
                                               else {})}


def _model_for(request: EverythingRequest, where):
    """The model the backend loads: a LoadedModel here (loaded now), a zoo name or None on a worker."""
    if not is_local(where):
        return getattr(request.model, "name", request.model)
    return resolve_where(where).model(request.model)


def everything_job(request: EverythingRequest, where=None):
    """The job (see ``_tasks``) of one run: load the model, segment every granularity, build the layer specs.

    ``where``: None (or ``compute.Local()``) for this machine, or a connected ``remote.RemoteSession``. The
    segmentation itself is ``jobs.segment_everything_slices``, the same body the API and the batch use. Yields
    :class:`ModelShown` once the model is known, :class:`Progress` as it goes; returns the specs
    (:func:`layer_specs`) or None if cancelled.
    """
    def job(is_cancelled):
        from ..jobs import segment_everything_slices
        from ._common import import_engines, quiet_model_build

        yield Progress(0, 0, f"loading the model on {describe(where)}…")
        import_engines("napari_granseg.api", "napari_granseg.engine.automatic", "napari_granseg.engine.hierarchy",
                       "napari_granseg.engine.tiling")
        model = _model_for(request, where)
        with quiet_model_build():
            pred = open_predictor(model, request.precision, where)
        if is_local(where):
            yield ModelShown(model.name, bool(model.is_demo), model)
        else:
            yield ModelShown(f"{model or 'default'} on {describe(where)}", bool(pred.is_demo))
        levels = list(request.granularities) if pred.has_granularity else [None]
        plan, stores = request.plan, {}

        def outputs(g):  # a stack's labels: in memory, or a zarr array on disk when large
            label = "SAM 2" if g is None else f"g={g:g}"
            out, store = new_labels_array(plan.labels_shape, f"{request.layer_name} everything {label}")
            if store is not None:
                stores[g] = store
            return out

        yield Progress(0, 0, f"{len(levels)} level(s), {request.points ** 2} prompts per image or tile")

        def run(progress, cancel):
            return segment_everything_slices(plan, levels, model=model, precision=request.precision, where=where,
                                             settings=overrides_for(request.points, request.stability),
                                             outputs=outputs, progress=progress, cancel=cancel)
        results = yield from blocking_with_progress(run, is_cancelled)  # one bar over all levels and slices
        if results is None or is_cancelled():
            return None
        return layer_specs(results, request.layer_name, request.source, stores)

    return job


def layer_specs(results: dict, source_name: str, source: tuple, stores: dict) -> dict[str, Any]:
    """Everything the GUI thread needs to add the result layers.

    In-memory results get the parts-to-wholes hierarchy and per-label features; labels written to a zarr
    store (a large stack, ``stores``: g -> folder) are never read back whole, so they get neither.
    """
    from ..engine.hierarchy import build_hierarchy, level_name

    in_memory = {g: r for g, r in results.items() if g not in stores}
    hierarchy = None
    if in_memory and len(in_memory) == len(results):
        hierarchy = build_hierarchy({(1.0 if g is None else g): lab for g, (lab, _) in in_memory.items()})
    scale, translate = source
    specs = []
    for g, (lab, info) in results.items():
        key = 1.0 if g is None else g
        features = hierarchy.features(key) if hierarchy is not None else None
        if features is not None and info is not None and len(features):
            by_id = {i + 1: d for i, d in enumerate(info)}
            features["predicted_iou"] = [by_id[int(i)]["predicted_iou"] for i in features["index"]]
            features["stability_score"] = [by_id[int(i)]["stability_score"] for i in features["index"]]
        metadata = {"granularity": g, "source": source_name}
        if g in stores:
            metadata["store"] = str(stores[g])
        specs.append({"key": key, "data": lab, "features": features,
                      "name": "everything SAM 2" if g is None else f"everything g={level_name(g)}",
                      "scale": scale[-lab.ndim:], "translate": translate[-lab.ndim:], "metadata": metadata})
    counts = []
    for g, (lab, _) in results.items():
        n = "?" if g in stores else int(np.asarray(lab).max())  # a zarr store: ids are unique but not read back
        counts.append(f"{'SAM 2' if g is None else f'g={g:g}'}: {n}")
    summary = "objects: " + ", ".join(counts)
    if stores:
        summary += f" (large stack: labels written to {', '.join(str(p) for p in stores.values())}; save the " \
                   f"layer to keep them, then delete that folder)"
    return {"hierarchy": hierarchy, "layers": specs, "summary": summary}
