"""Loading the interactive session's model, here or on a remote worker, as background jobs.

Why apart from the session: these are the only places that import torch (through the zoo and the engine) or
talk to a remote worker to get a predictor; each runs in a job, never on the GUI thread. A job returns the
ready :class:`~.state.ModelState`; :class:`ModelLoader` owns that state and decides whether a result is
still wanted (its serial).
"""
from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any, Callable, Generator

from .._common import WidgetError, import_engines
from .._tasks import Progress
from .state import ModelState

__all__ = ["ModelLoader", "load_job", "build_job", "build_now", "engine_imported", "ready_state"]

ENGINE = "napari_granseg.engine.interactive"
#: slice embeddings kept in memory by the widget's predictor (a few slices back and forth stay instant)
CACHE_SIZE = 8


def engine_imported() -> bool:
    """True once the engine (torch, sam2) is imported: a predictor can then be built without a worker."""
    return ENGINE in sys.modules


def ready_state(loaded: Any, predictor: Any, serial: int, where: Any = None, info: dict | None = None
                ) -> ModelState:
    """The model state of a usable predictor (``info``: a remote predictor's description)."""
    if where is None:
        return ModelState("ready", loaded, predictor, loaded.name, str(loaded.device), None,
                          bool(getattr(loaded, "is_demo", False)), bool(predictor.has_granularity), "", serial)
    info = info or {}
    return ModelState("ready", None, predictor, str(info.get("name")), str(info.get("device")), where,
                      bool(info.get("is_demo")), bool(info.get("has_granularity", True)), "", serial)


def open_predictor(model: Any, precision: str, where: Any = None):
    """The predictor of ``model`` here (a ``LoadedModel``) or on the worker of ``where`` (a zoo name or a path
    there): the one composition root, ``napari_granseg.compute``."""
    from ... import compute

    return compute.open_predictor(model, precision=precision, where=where,
                                  **({"cache_size": CACHE_SIZE} if where is None else {}))


def build_now(loaded: Any, precision: str, serial: int) -> ModelState:
    """A predictor for ``loaded`` on this machine, built in the calling thread (the engine is imported)."""
    return ready_state(loaded, open_predictor(loaded, precision), serial)


def build_job(loaded: Any, precision: str, serial: int) -> Callable[[Callable[[], bool]], Generator]:
    """Import the engine and build the predictor of an already loaded model (a worker)."""
    def job(is_cancelled):
        yield Progress(0, 0, f"preparing {loaded.name}…")
        import_engines(ENGINE)
        return build_now(loaded, precision, serial)

    return job


def load_job(name: str | None, device: str, precision: str, serial: int, where: Any = None
             ) -> Callable[[Callable[[], bool]], Generator]:
    """Load ``name`` (a zoo name, a checkpoint path, None: the default) and build its predictor, on this
    machine (``where`` None) or on the worker of the remote session ``where`` (the model loads there, from its
    own cache)."""
    label = name or "the default"

    def local(is_cancelled):
        yield Progress(0, 0, f"loading {label} model…")
        import_engines(ENGINE)
        from ... import zoo

        named = name is None or name in zoo.ZOO
        loaded = zoo.load_model(name, kind=None if named else "unsamv2", device=device)
        if loaded.kind not in ("unsamv2", "sam2"):
            raise WidgetError(f"{loaded.name} is a {loaded.kind} model; the interactive widget needs an UnSAMv2 "
                              f"(or SAM 2) model, e.g. 'unsamv2-plus'. SANSA models go in the few-shot widget.")
        return build_now(loaded, precision, serial)

    def remote(is_cancelled):
        yield Progress(0, 0, f"loading {label} model on {where.address}…")
        pred = open_predictor(name, precision, where)
        return ready_state(None, pred, serial, where, pred.info())

    return local if where is None else remote


class ModelLoader:
    """Owns the session's :class:`~.state.ModelState` (one value) and the runner that loads models.

    on_change(state, is_new_model): called on the GUI thread after every change of the state.
    on_finished(): a load job ended (the runner is free again). report(exc): a failed load. A load asked for while another one runs is queued: the running one is
    cancelled and its result, if it still arrives, loses to the newer serial.
    """

    def __init__(self, runner, on_change: Callable[[ModelState, bool], None], on_finished: Callable[[], None],
                 report: Callable[[BaseException], None]):
        self._runner, self._on_change, self._on_finished, self._report = runner, on_change, on_finished, report
        self.state = ModelState()
        self.precision = "auto"
        self._queued: Callable[[], None] | None = None

    @property
    def busy(self) -> bool:
        return self._runner.running or self.state.phase == "loading"

    def load(self, name: str | None = None, device: str = "auto", where: Any = None) -> None:
        """Load a model (and build its predictor) in the background, here or on ``where`` (a remote session)."""
        if self._runner.running:
            return self._queue(lambda: self.load(name, device, where))
        serial = self.state.serial + 1
        self._set(ModelState("loading", name=name or "", where=where, serial=serial))
        self._runner.start(load_job(name, device, self.precision, serial, where), on_done=self._ready,
                           on_error=self._failed(serial), on_finished=self._finished, message="")

    def use(self, loaded: Any, predictor: Any = None) -> None:
        """Use ``loaded`` (from ``gs.load_model``) on this machine; its predictor is built at once when the
        engine is imported (it is, once a model was loaded), else in the background."""
        serial = self.state.serial + 1
        if predictor is not None or engine_imported():  # wins over any load still running (older serial)
            self._queued = None
            self._set(build_now(loaded, self.precision, serial) if predictor is None
                      else ready_state(loaded, predictor, serial), True)
            return
        if self._runner.running:
            return self._queue(lambda: self.use(loaded))
        self._set(ModelState("loading", name=loaded.name, serial=serial))
        self._runner.start(build_job(loaded, self.precision, serial), on_done=self._ready,
                           on_error=self._failed(serial), on_finished=self._finished)

    def switch(self, where: Any, name: str | None, device: str = "auto") -> None:
        """Compute switched (this machine <-> a remote session): drop the predictor and load the model there."""
        self._set(ModelState(where=where, serial=self.state.serial + 1))
        self.load(name, device, where)

    def set_precision(self, precision: str) -> None:
        """Build the predictor again at ``precision`` ("auto", "fp32", "bf16")."""
        self.precision = precision
        if self.state.where is not None and self.state.phase in ("ready", "failed"):
            self.load(self.state.name, where=self.state.where)
        elif self.state.model is not None:
            self.use(self.state.model)

    def _queue(self, fn: Callable[[], None]) -> None:
        self._queued = fn
        self._set(replace(self.state, phase="loading", serial=self.state.serial + 1))
        self._runner.cancel()

    def _finished(self) -> None:
        queued, self._queued = self._queued, None
        if queued is not None:
            queued()
        else:
            self._on_finished()

    def _set(self, state: ModelState, is_new_model: bool = False) -> None:
        self.state = state
        self._on_change(state, is_new_model)

    def _ready(self, state: ModelState) -> None:
        if state.serial == self.state.serial and self._queued is None:  # else a newer load or model won
            self._set(state, True)

    def _failed(self, serial: int) -> Callable[[BaseException], None]:
        def failed(exc: BaseException) -> None:
            if serial == self.state.serial:
                self.state = replace(self.state, phase="failed", error=str(exc))
            self._report(exc)

        return failed
