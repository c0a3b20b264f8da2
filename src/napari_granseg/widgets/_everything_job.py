"""The one job body of "Segment everything": the same per-image calls on this machine or on a GPU worker.

Why one body: a run here and a run on a dask worker must give the same labels, so both go through one loop;
only ``where`` differs (None: this machine, else a connected ``remote.RemoteSession``), and each image or slice
is segmented by that backend's ``segment_everything`` (the API's function here, the same function there).
A stack is read and segmented one slice at a time with ONE intensity range, its labels written into an
in-memory or zarr array as each slice is done, ids unique across the stack. Then the result layers'
specifications (hierarchy and feature tables built here, off the GUI thread). No Qt here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..compute import describe, is_local, open_predictor, resolve_where
from ..engine.source import ImagePlan
from ._layer_pixels import new_labels_array
from ._tasks import Progress, blocking_with_progress, rescaled_progress

__all__ = ["SCALE_TIP", "TILE_TIP", "EverythingRequest", "ModelShown", "overrides_for",
           "segment_level", "everything_job", "layer_specs"]

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


def segment_level(backend, model, request: EverythingRequest, g, with_info: bool, out,
                  progress: Callable[[int, int], None], cancel: Callable[[], bool]):
    """(labels, per-label info or None) of the request's image at granularity ``g`` on ``backend``.

    ``out``: the (Z, H, W) array a stack's labels are written into, slice by slice (None for a 2D image).
    """
    plan = request.plan
    kw = dict(model=model, precision=request.precision, intensity=plan.intensity(), scale=plan.scale,
              tile=plan.tile, **overrides_for(request.points, request.stability))
    if not plan.is_stack:
        if with_info:
            return backend.segment_everything(plan.plane(), g, progress=progress, cancel=cancel, return_info=True,
                                              **kw)
        return backend.segment_everything(plan.plane(), g, progress=progress, cancel=cancel, **kw), None
    n, offset = plan.n, 0
    for z in range(n):
        if cancel():
            return None

        def slice_progress(done: int, total: int, z: int = z) -> None:
            progress(z * total + done, n * total)

        lab = backend.segment_everything(plan[z], g, progress=slice_progress, cancel=cancel, **kw)
        out[z] = np.where(lab > 0, lab + offset, 0)  # ids unique across the stack
        offset += int(lab.max())
    return out, None


def _model_for(request: EverythingRequest, where):
    """The model the backend loads: a LoadedModel here (loaded now), a zoo name or None on a worker."""
    if not is_local(where):
        return getattr(request.model, "name", request.model)
    return resolve_where(where).model(request.model)


def everything_job(request: EverythingRequest, where=None):
    """The job (see ``_tasks``) of one run: load the model, segment every granularity, build the layer specs.

    ``where``: None (or ``compute.Local()``) for this machine, or a connected ``remote.RemoteSession``. Yields
    :class:`ModelShown` once the model is known, :class:`Progress` as it goes; returns the specs
    (:func:`layer_specs`) or None if cancelled.
    """
    def job(is_cancelled):
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
        granularity = list(request.granularities) if pred.has_granularity else [None]
        plan = request.plan.for_model(pred.image_size)
        tiled = plan.tiled
        backend = resolve_where(where)
        results, stores = {}, {}
        for k, g in enumerate(granularity):
            if is_cancelled():
                return None
            label = "SAM 2" if g is None else f"g={g:g}"
            yield Progress(0, 0, f"{label}: {request.points ** 2} prompts per image or tile "
                                 f"({k + 1}/{len(granularity)})")
            out = None
            if plan.is_stack:
                out, store = new_labels_array(plan.labels_shape, f"{request.layer_name} everything {label}")
                if store is not None:
                    stores[g] = store

            def fn(progress, cancel, g=g, out=out):
                return segment_level(backend, model, request, g, not tiled, out, progress, cancel)
            # one bar over all levels: level k's (done, total) becomes (k * total + done, levels * total)
            results[g] = yield from rescaled_progress(blocking_with_progress(fn, is_cancelled), k,
                                                      len(granularity), label)
        if is_cancelled():
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
