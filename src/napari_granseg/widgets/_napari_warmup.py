"""Warm napari's first-layer costs in a worker thread, before a widget adds its layers on the GUI thread.

Why: the first Points layer of a napari session imports pandas (~300 modules), the first Labels layer scipy's
linear algebra and parts of scikit-image, and vispy builds its dash patterns; napari does all this inside
``viewer.add_*`` on the GUI thread. Measured (``benchmarks/gui_stall.py --trace``, 2-core CPU): the interactive
widget's first layers froze the viewer ~1.5 s while a model loaded beside them. Building throwaway layer
*models* (no Qt, no canvas) in a worker triggers the same imports off the GUI thread; the real layers are then
added afterwards at napari's usual cost.
"""
from __future__ import annotations

import logging
from typing import Callable

from ._tasks import BackgroundTask, _unless_closed

__all__ = ["warm_layer_imports", "start_warmup"]

log = logging.getLogger(__name__)


def warm_layer_imports() -> None:
    """Construct throwaway Points/Shapes/Labels models (their lazy imports) and vispy's dash patterns."""
    import numpy as np
    from napari.layers import Labels, Points, Shapes

    Points(np.empty((0, 2)), features={"positive": np.zeros(0, bool)})
    Shapes(None, ndim=2)
    Labels(np.zeros((8, 8), np.uint8)).thumbnail  # noqa: B018 - the colormap/thumbnail path imports skimage
    try:  # vispy caches the patterns at module level (lru_cache); the first lines of a layer need them
        from vispy.visuals.line.dash_atlas import DashAtlas

        DashAtlas()
    except ImportError:  # pragma: no cover - another vispy layout: napari pays it on the GUI thread
        pass


_warmed = False


def start_warmup(then: Callable[[], None]) -> BackgroundTask | None:
    """Run :func:`warm_layer_imports` in the background, then ``then()`` on the GUI thread (also after a failure:
    the warm-up only saves time). Returns the task, or None when this process already warmed up (``then`` runs
    at the next event-loop turn)."""
    from qtpy.QtCore import QTimer

    then = _unless_closed(then)  # the widget may be closed before the warm-up ends
    if _warmed:
        QTimer.singleShot(0, then)
        return None
    task = BackgroundTask(context="napari warm-up")

    def finished():
        global _warmed
        _warmed = True
        then()

    def job(_is_cancelled):
        warm_layer_imports()

    # started at the next event-loop turn: napari docks the widget right after building it, and a worker
    # importing beside that (it shares the interpreter lock) doubled the dock's freeze
    QTimer.singleShot(0, lambda: task.start(job, on_error=lambda exc: log.debug(
        "napari-granseg: layer warm-up failed: %s", exc), on_finished=finished))
    return task
