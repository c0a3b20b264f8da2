"""The interactive widget's model: which one, where it runs (this machine or a GPU worker), and its predictor.

Why apart from the dock: loading, the compute switch and the predictor's construction all happen in workers
and call back into the dock; keeping them here leaves the dock module to prompts, commits and the status.
Nothing here imports torch on the GUI thread: the zoo list, the model and the predictor are built in workers
(``widgets._common.import_engines``), and a GPU worker is reached through ``widgets._compute``.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from qtpy.QtCore import QTimer

from ._common import WidgetError, import_engines
from ._compute import make_predictor as make_any_predictor
from ._predictor import make_predictor
from ._tasks import Progress

if TYPE_CHECKING:  # pragma: no cover
    from ..models.loaded import LoadedModel

__all__ = ["ModelBinding"]


class ModelBinding:
    """Mixin of :class:`~napari_granseg.widgets.interactive.InteractiveWidget` (uses its combos, tasks,
    preview controller, ``_report`` and ``_refresh``)."""

    @property
    def model(self) -> "LoadedModel | None":
        return self._model

    @model.setter
    def model(self, loaded: "LoadedModel") -> None:
        self.set_model(loaded)

    def _models_listed(self, described) -> None:
        names, default, _demo = described
        typed = self.model_combo.currentText()
        self.model_combo.clear()
        self.model_combo.addItems(names)
        self.model_combo.setCurrentText(typed or default)

    def _load_clicked(self) -> None:
        self._guard(lambda: self.load_model(self.model_combo.currentText().strip() or None,
                                            self.device_combo.currentText()))

    def load_model(self, name_or_path: str | None = None, device: str = "auto") -> None:
        """Load a model (and build its predictor) in a thread worker; non-blocking."""
        if self._task.running:
            raise WidgetError("wait for the running task to finish (or press Cancel) before loading a model")
        self._model_serial += 1
        serial, precision, label = self._model_serial, self.precision_combo.currentText(), name_or_path or "default"
        session = self.compute.session
        if session is not None:
            return self._load_remote(session, name_or_path, device, precision, serial)

        def job(is_cancelled):
            yield Progress(0, 0, f"loading {label} model…")
            import_engines("napari_granseg.engine.interactive")
            from .. import zoo

            named = name_or_path is None or name_or_path in zoo.ZOO
            loaded = zoo.load_model(name_or_path, kind=None if named else "unsamv2", device=device)
            if loaded.kind not in ("unsamv2", "sam2"):
                raise WidgetError(f"{loaded.name} is a {loaded.kind} model; the interactive widget needs an "
                                  f"UnSAMv2 (or SAM 2) model, e.g. 'unsamv2-plus'. SANSA models go in the "
                                  f"few-shot widget.")
            return loaded, make_predictor(loaded, precision)

        def done(result):
            if serial == self._model_serial:  # a model injected meanwhile wins
                self.set_model(*result)

        self._task.start(job, on_done=done, on_error=self._report, message=f"loading {label} model…")

    def _load_remote(self, session, name, device: str, precision: str, serial: int) -> None:
        """The predictor on the GPU worker (the model loads there, from its own cache)."""
        def job(is_cancelled):
            yield Progress(0, 0, f"loading {name or 'the default'} model on {session.address}…")
            pred = make_any_predictor(name, precision, session)
            return pred, pred.info()

        def done(result):
            if serial == self._model_serial and self.compute.session is session:
                self._use_remote(*result)

        self._task.start(job, on_done=done, on_error=self._report, message=f"loading on {session.address}…")

    def _use_remote(self, pred, info: dict) -> None:
        self._model = None
        self.predictor = pred
        self.preview.invalidate()
        demo = bool(info.get("is_demo"))
        self.model_label.setText(f"{info.get('name')} on {info.get('device')} of {self.compute.address}"
                                 + (" (DEMO model, see the banner above)" if demo else ""))
        self.demo_banner.setVisible(demo)
        self.demo_banner.setText(f"DEMO model ({info.get('name')}) on the GPU worker: trained on synthetic cells "
                                 f"only. Put a real checkpoint in the worker's cache (docs/remote.md).")
        self.granularity_slider.setEnabled(bool(pred.has_granularity))
        self._last_action = f"connected to {self.compute.address}"
        self.model_changed.emit()
        self.preview.schedule()
        self._refresh()

    def _compute_changed(self, session) -> None:
        """Compute switched (this machine <-> a scheduler): drop the predictor and load the model there."""
        self._model_serial += 1
        self.predictor, self._model = None, None
        self.preview.invalidate()
        self._last_action = "this machine" if session is None else f"connected to {session.address}"
        if self._task.running:
            self._pending_load = True
            self._task.cancel()
        else:
            self._load_clicked()
        self._refresh()

    def _load_if_pending(self) -> None:
        if self._pending_load and not self._task.running:
            self._pending_load = False
            QTimer.singleShot(0, self._load_clicked)

    def _compute_failed(self, message: str) -> None:
        self._last_action = message
        self._notify("error", message)
        self._refresh()

    def _require_local(self, what: str) -> None:
        if self.compute.session is not None:
            raise WidgetError(f"{what} runs on this machine only for now: set Compute to 'this machine' (the "
                              f"preview and commits work with the GPU worker)")

    def set_model(self, loaded: "LoadedModel", predictor=None) -> None:
        """Use ``loaded`` (a LoadedModel from ``gs.load_model``) with a fresh predictor at the chosen precision.

        The predictor is built here only when none is given; ``loaded`` comes from ``gs.load_model``, so the
        engine is already imported (the Load button builds both in its worker)."""
        self._model_serial += 1
        self._model = loaded
        if predictor is None and "napari_granseg.engine.interactive" not in sys.modules:
            self._build_predictor_in_worker(loaded)
            return
        self.predictor = predictor or make_predictor(loaded, self.precision_combo.currentText())
        self.preview.invalidate()
        demo = bool(getattr(loaded, "is_demo", False))
        text = f"{loaded.name} on {loaded.device}" + (" (DEMO model, see the banner above)" if demo else "")
        if not self.predictor.has_granularity:
            text += " | stock SAM 2: no granularity input, the slider is ignored"
        self.model_label.setText(text)
        self.demo_banner.setVisible(demo)
        self.demo_banner.setText(f"DEMO model ({loaded.name}): trained on synthetic cells only. For real images "
                                 f"load 'unsamv2-plus' (see docs/checkpoints.md).")
        self.granularity_slider.setEnabled(self.predictor.has_granularity)
        self.model_changed.emit()
        self.preview.schedule()
        self._refresh()

    def _build_predictor_in_worker(self, loaded) -> None:
        """Import the engine and build the predictor off the GUI thread, then :meth:`set_model` with it."""
        serial, precision = self._model_serial, self.precision_combo.currentText()
        self.predictor = None

        def build():
            try:
                import_engines("napari_granseg.engine.interactive")
                return make_predictor(loaded, precision)
            except Exception as exc:  # noqa: BLE001 - handed to failed() (a raised one would pop up a dialog)
                return exc

        def done(pred):
            if isinstance(pred, Exception):
                return failed(pred)
            self._building = False
            if serial == self._model_serial:
                self.set_model(loaded, pred)

        def failed(exc):
            self._building = False
            self._report(exc)
            self._refresh()

        from napari.qt.threading import create_worker

        worker = create_worker(build, _start_thread=False)  # not self._task: a model load may be running
        worker.returned.connect(done)
        self._building = True
        worker.start()
        self._refresh()

    def _rebuild_predictor(self) -> None:
        if self.compute.session is not None and not self._task.running:
            self._load_clicked()
        elif self._model is not None:
            self._guard(lambda: self.set_model(self._model))

    def _require_model(self):
        if self.predictor is None:
            raise WidgetError("no model loaded yet: press Load (the first load can take a while), or wait for "
                              "the default model to finish loading")
        return self.predictor
