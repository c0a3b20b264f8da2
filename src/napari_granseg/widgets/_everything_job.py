"""The work behind the "Segment everything" widget, run in its worker thread (no Qt here).

One granularity of one layer: a 2D image downscaled into one model input or tiled at its own pixel scale
(``engine.tiling``), or a stack segmented slice by slice (read one slice at a time, one intensity range for
the stack, labels written into an in-memory or zarr array as each slice is done). Then the result layers'
specifications (hierarchy and feature tables built here, off the GUI thread).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ._layer_pixels import LayerPixels

__all__ = ["SCALE_TIP", "TILE_TIP", "settings_for", "segment_level", "layer_specs"]

SCALE_TIP = ("what the model sees of an image larger than its input (1024 px; 256 px for the demo): "
             "'tile' = windows at the image's own pixel scale, overlapping, objects stitched across tiles (small "
             "objects: cells in a 4k frame or a stitched slide, strips); 'downscale' = the whole image squeezed "
             "into one model input (objects large compared with a tile); 'auto' tiles when the model would "
             "shrink the image more than 2x or the image is more than twice as long as wide")
TILE_TIP = "tile size in pixels for scale 'tile' (default: the model's input size); tiles overlap by a quarter"


def settings_for(predictor, g, preset_device: str | None, points: int, stability: float = 0.0):
    """The AutomaticSettings of one run: the model's defaults, the device preset, the widget's overrides."""
    from ..engine.automatic import AutomaticSettings, model_defaults

    extra = {**model_defaults(predictor), "points_per_side": points}
    if stability > 0:
        extra["stability_score_thresh"] = stability
    return AutomaticSettings.for_device(preset_device or predictor.device, g, **extra)


def segment_level(pred, pixels: LayerPixels, g, settings, scale: str, tile: int | None, out,
                  progress: Callable[[int, int], None], cancel: Callable[[], bool]):
    """(labels, per-label info or None) of ``pixels`` at granularity ``g``.

    ``out``: the (Z, H, W) array a stack's labels are written into, slice by slice (None for a 2D image).
    """
    from ..engine.automatic import segment_everything, segment_everything_stack
    from ..engine.tiling import choose_scale, segment_everything_tiled

    tiled = choose_scale(pixels.plane_shape, int(pred.model.image_size), scale) == "tile"
    intensity = pixels.intensity()
    if not pixels.is_stack:
        image = pixels.image()
        if tiled:
            return segment_everything_tiled(pred, image, g, tile=tile, intensity=intensity, progress=progress,
                                            cancel=cancel, settings=settings), None
        return segment_everything(pred, image, g, progress, cancel, settings, return_info=True, intensity=intensity)
    if not tiled:
        return segment_everything_stack(pred, pixels, g, progress, cancel, settings, intensity=intensity,
                                        out=out), None
    n, offset = pixels.n, 0
    for z in range(n):
        def slice_progress(done: int, total: int, z: int = z) -> None:
            progress(z * total + done, n * total)

        lab = segment_everything_tiled(pred, pixels[z], g, tile=tile, intensity=intensity, progress=slice_progress,
                                       cancel=cancel, settings=settings)
        out[z] = np.where(lab > 0, lab + offset, 0)  # ids unique across the stack, as segment_everything_stack
        offset += int(lab.max())
    return out, None


def remote_level(session, model_name, pixels: LayerPixels, g, overrides: dict, precision: str, scale: str,
                 tile: int | None, out, progress: Callable[[int, int], None], cancel: Callable[[], bool]):
    """:func:`segment_level` on a GPU worker (``session``: a ``remote.RemoteSession``): the same
    ``gs.segment_everything`` runs there, one image (or one slice of a stack) per call, so a stack is never
    sent whole and the labels come back slice by slice into ``out``."""
    kw = dict(model=model_name, precision=precision, intensity=pixels.intensity(), scale=scale, tile=tile,
              **overrides)
    if not pixels.is_stack:
        return session.segment_everything(pixels.image(), g, progress=progress, cancel=cancel, **kw), None
    n, offset = pixels.n, 0
    for z in range(n):
        def slice_progress(done: int, total: int, z: int = z) -> None:
            progress(z * total + done, n * total)

        lab = session.segment_everything(pixels[z], g, progress=slice_progress, cancel=cancel, **kw)
        out[z] = np.where(lab > 0, lab + offset, 0)
        offset += int(lab.max())
    return out, None


def remote_job(session, pixels: LayerPixels, gvals, source: tuple, name: str, model_name, overrides: dict,
               precision: str, scale: str, tile: int | None):
    """The task (a generator function for ``BackgroundTask``) of a segment-everything run on a GPU worker."""
    from ._layer_pixels import new_labels_array
    from ._tasks import Progress, blocking_with_progress, rescaled_progress

    def job(is_cancelled):
        yield Progress(0, 0, f"loading the model on {session.address}…")
        pred = session.predictor(model_name, precision=precision)
        yield ("remote-model", pred)
        granularity = gvals if pred.has_granularity else [None]
        results, stores = {}, {}
        for k, g in enumerate(granularity):
            if is_cancelled():
                return None
            label = "SAM 2" if g is None else f"g={g:g}"
            out = None
            if pixels.is_stack:
                out, store = new_labels_array(pixels.labels_shape, f"{name} everything {label}")
                if store is not None:
                    stores[g] = store

            def fn(progress, cancel, g=g, out=out):
                return remote_level(session, model_name, pixels, g, overrides, precision, scale, tile, out,
                                    progress, cancel)
            results[g] = yield from rescaled_progress(blocking_with_progress(fn, is_cancelled), k,
                                                      len(granularity), label)
        if is_cancelled():
            return None
        return layer_specs(results, name, source, stores)

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
