"""The state of "Segment everything", without Qt or napari: what to run, what ran, and what went wrong.

Why apart from the widget: the widget only reads its controls into an :class:`EverythingRequest`, calls
:meth:`EverythingSession.run`, and shows what the session tells it through its signals. The session can then be
driven and tested without a window (a :class:`~._tasks.SyncRunner` runs the job in the calling thread), and a
run here and a run on a GPU worker go through the same job body (``_everything_job.everything_job``).

Signals (psygnal, emitted on the thread the runner calls back on: napari's GUI thread for a BackgroundTask):
``model_shown(ModelShown)`` once the run knows its model; ``finished(specs)`` with the result layers'
specifications (``_everything_job.layer_specs``); ``failed(text)`` with the message the user reads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from psygnal import Signal

from ._everything_job import EverythingRequest, ModelShown, everything_job
from ._tasks import JobRunner, WidgetError, error_text

__all__ = ["EverythingSession", "parse_granularities"]

CONTEXT = "Segment everything"


def parse_granularities(text: str) -> list[float]:
    """'0.1, 0.5,1' -> [0.1, 0.5, 1.0] (sorted, unique); raises WidgetError saying what to type."""
    values = []
    for part in text.replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            values.append(float(part))
        except ValueError:
            raise WidgetError(f"cannot read granularity {part!r}: type one number in [0.1, 1] or a comma list "
                              f"such as '0.1, 0.5, 1.0'") from None
    if not values:
        raise WidgetError("type a granularity in [0.1, 1] (0.1 = finest parts, 1.0 = whole objects), or a comma "
                          "list for a hierarchy")
    from ..engine.prompts import as_granularities

    try:  # the API's rule (gs.segment_everything(granularity=[...]) checks the same)
        as_granularities(values)
    except ValueError as err:
        raise WidgetError(str(err)) from None
    return sorted(set(values))


class EverythingSession:
    """One widget's runs (see the module docstring).

    After a run: ``result`` (the layer specs: labels per level, features, the summary), ``hierarchy`` (a
    :class:`~napari_granseg.engine.hierarchy.Hierarchy`, None for labels written to disk), ``model_shown``.
    ``last_error`` is the last message shown for a failed action ("" after a successful start).
    """

    model_shown_changed = Signal(object)
    finished = Signal(object)
    failed = Signal(str)

    def __init__(self, runner: JobRunner, notify: Callable[[str, str], None] | None = None, context: str = CONTEXT):
        self.runner = runner
        self.notify = notify  # notify(level, text): napari's notifications in the app, None in tests
        self.context = context
        self.result: dict | None = None
        self.hierarchy = None
        self.model_shown: ModelShown | None = None
        self.last_error = ""

    @property
    def running(self) -> bool:
        return self.runner.running

    def run(self, request: EverythingRequest, where=None) -> Any:
        """Start a run of ``request`` here (``where`` None) or on a connected worker; returns what the runner
        returns (the napari worker in the app). Raises WidgetError while another run is going."""
        if self.runner.running:
            raise WidgetError("a run is in progress: wait for it or press Cancel")
        self.last_error = ""
        return self.runner.start(everything_job(request, where), on_done=self._done, on_yield=self._yielded,
                                 on_error=self._error, message="starting…")

    def cancel(self) -> None:
        """Stop after the current slice or batch; nothing of the run is kept."""
        self.runner.cancel()

    def fail(self, text: str) -> None:
        """Record ``text`` (already shown to the user) as the last error."""
        self.last_error = text
        self.failed.emit(text)

    def export(self, folder, levels: dict[float, np.ndarray] | None = None) -> list[Path]:
        """Write label TIFFs (one per level) and the hierarchy CSV to ``folder``; returns the paths.

        ``levels``: the labels as they are now (the user may have corrected them); default: the run's.
        """
        if self.hierarchy is None:
            raise WidgetError("nothing to export yet: press Run first")
        from ..engine.hierarchy import build_hierarchy

        hierarchy = build_hierarchy(levels) if levels else self.hierarchy
        return hierarchy.export(folder)

    # ---------------------------------------------------------------- job callbacks
    def _yielded(self, value) -> None:
        if isinstance(value, ModelShown):
            self.model_shown = value
            self.model_shown_changed.emit(value)

    def _done(self, specs) -> None:
        if specs is None:
            return
        self.result = specs
        self.hierarchy = specs["hierarchy"]
        self.finished.emit(specs)

    def _error(self, exc: BaseException) -> None:
        text = error_text(exc, self.context)
        if self.notify is not None:
            self.notify("error", text)
        self.fail(text)
