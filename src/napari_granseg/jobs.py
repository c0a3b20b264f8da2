"""Job bodies every front end runs (widgets, scripts), written once against :mod:`napari_granseg.compute`.

Why here: a job (segment a whole stack at several granularities) is a loop over slices and levels with
progress, cancel and ids kept unique across slices. Written once against a ``compute.Backend``, the same loop
runs with the model on this machine or on a GPU worker (``where=``); only the per-image call travels, and on
the worker it is the very function this machine runs (:func:`napari_granseg.segmentation.segment_everything`),
so both give identical labels. Nothing here imports napari or Qt: a widget runs the job in its worker thread.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .compute import Where, resolve_where
from .engine.protocols import Cancel, Progress
from .engine.source import ImagePlan

__all__ = ["segment_everything_slices"]


def _cancelled(cancel: Any) -> bool:
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)  # a threading.Event works as well as a callable
    return bool(is_set() if is_set is not None else cancel())


def segment_everything_slices(plan: ImagePlan, levels: Sequence[float | None], model: Any = None,
                              precision: str = "auto", where: Where = None, settings: dict | None = None,
                              outputs: Callable[[float | None], Any] | None = None,
                              progress: Progress | None = None, cancel: Cancel | Any = None,
                              ) -> dict[float | None, tuple[Any, list | None]]:
    """Segment everything in every plane of ``plan`` at every granularity of ``levels``.

    plan: an :class:`~napari_granseg.engine.source.ImagePlan` (a 2D image or a stack, read one slice at a
    time; its channel choice, its ONE intensity range and its ``scale``/``tile`` apply to every plane).
    levels: granularities in [0.1, 1]; ``[None]`` for a stock SAM 2 model. model / precision: as for
    ``gs.segment_everything`` (a zoo name or a worker path when remote). where: ``compute.Local()`` (default),
    a scheduler address or a remote session. settings: ``AutomaticSettings`` fields (plain values, e.g.
    ``{"points_per_side": 24}``), resolved where the model runs. outputs(g): the (Z, H, W) array a stack's
    labels at g are written into slice by slice (a zarr array for a stack larger than memory; default: a
    new in-memory array). progress(done, total) covers all levels and slices; cancel() (or an Event) stops
    between decoder batches and raises ``engine.automatic.Cancelled``.

    Returns {g: (labels, info)}: info is the per-label list (predicted_iou, stability_score, ...) for a 2D
    image segmented whole, else None. Stack ids are unique across slices (slice z's follow slice z-1's).
    """
    from .engine.automatic import Cancelled

    backend = resolve_where(where)
    settings = dict(settings or {})
    call = dict(model=model, precision=precision, intensity=plan.intensity(), scale=plan.scale, tile=plan.tile,
                **settings)
    levels = list(levels)
    n_planes, results = plan.n, {}
    steps = len(levels) * n_planes
    per_plane = {"total": 1}  # decoder batches of one plane, as last reported

    def report(step: int, done: int, total: int) -> None:
        if progress is not None and total > 0:
            per_plane["total"] = total
            progress(step * total + done, steps * total)
    for k, g in enumerate(levels):
        if _cancelled(cancel):
            raise Cancelled("cancelled")
        out = None
        if plan.is_stack:
            out = outputs(g) if outputs is not None else np.zeros(plan.labels_shape, np.int32)
        offset, info = 0, None
        for z in range(n_planes):
            if _cancelled(cancel):
                raise Cancelled("cancelled")

            step = k * n_planes + z

            def plane_progress(done: int, total: int, step: int = step) -> None:
                report(step, done, total)

            image = plan.plane(z if plan.is_stack else None)
            lab, info = backend.segment_everything(image, g, progress=plane_progress, cancel=cancel,
                                                   with_info=True, **call)
            report(step, per_plane["total"], per_plane["total"])  # a worker's last report may come after it ended
            if not plan.is_stack:
                out = lab
                break
            out[z] = np.where(lab > 0, lab + offset, 0)  # ids unique across the stack
            offset += int(lab.max())
            info = None
        results[g] = (out, info)
    return results
