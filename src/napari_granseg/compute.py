"""Where the models run: the one place that turns "here or on that GPU machine" into a predictor.

    import napari_granseg as gs
    pred = gs.compute.open_predictor("unsamv2-plus")                                  # this machine
    pred = gs.compute.open_predictor("unsamv2-plus", where="tcp://127.0.0.1:8786")    # a GPU worker (docs/remote.md)
    fs = gs.compute.open_fewshot("sansa-universal", image_size=640, where=session)

Both kinds of result implement the same protocols (:class:`~napari_granseg.engine.protocols.Predictor`,
:class:`~napari_granseg.engine.protocols.FewShot`) with the same calls and the same results, so code above
this module (the API's ``scheduler=``, the widgets' compute setting, the job bodies) never branches on where
it runs. ``where`` is :class:`Local` (default), a dask scheduler address, or a session from
``napari_granseg.remote.connect`` (TLS, a trusted network, other timeouts).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Union, runtime_checkable

import numpy as np

from .engine.protocols import FewShot, Predictor, Progress

if TYPE_CHECKING:
    from .remote.client.session import RemoteSession

__all__ = ["Backend", "Local", "Where", "open_predictor", "open_fewshot", "resolve_where", "is_local", "describe"]


@runtime_checkable
class Backend(Protocol):
    """What a place to compute offers: :class:`Local` and ``remote.RemoteSession`` both implement it, so a job
    body written against it runs here or on a GPU worker through the same code."""

    def predictor(self, model: Any = None, **settings: Any) -> Predictor: ...

    def fewshot(self, model: Any = None, image_size: int | None = 640, **settings: Any) -> FewShot: ...

    def segment(self, image: Any, points: Any, granularity: Any = 0.5, model: Any = None,
                labels: Any = None, **kwargs: Any) -> np.ndarray: ...

    def segment_everything(self, image: Any, granularity: Any = 0.5, model: Any = None,
                           progress: Progress | None = None, cancel: Any = None, **settings: Any) -> Any: ...


@dataclass(frozen=True)
class Local:
    """Run on this machine: ``device`` "auto" (cuda > mps > cpu), "cpu", "cuda", "cuda:1" or "mps".

    Models given by name are loaded once per process; the three-line calls use the model's shared predictor
    (:mod:`napari_granseg.segmentation`), exactly as a GPU worker does for its client.
    """

    device: str = "auto"

    @property
    def address(self) -> str:
        return "this machine"

    def model(self, model: Any = None, kind: str = "unsamv2"):
        """A loaded model here: a ``LoadedModel`` as is; a zoo name, a path or None loaded once per process."""
        if model is not None and not isinstance(model, (str, os.PathLike)):
            return model
        from .segmentation import get_model

        if model is None and kind == "sansa":
            from .zoo import default_model_name

            model = default_model_name("sansa")
        return get_model(None if model is None else os.fspath(model), kind=kind, device=self.device)

    def predictor(self, model: Any = None, precision: str = "auto", **settings: Any) -> Predictor:
        from .engine.interactive import GranularityPredictor

        return GranularityPredictor(self.model(model), precision=precision, **settings)

    def fewshot(self, model: Any = None, image_size: int | None = 640, precision: str = "auto",
                **settings: Any) -> FewShot:
        from .engine.fewshot import FewShotSegmenter

        return FewShotSegmenter(self.model(model, "sansa"), image_size=image_size, precision=precision, **settings)

    def segment(self, image: Any, points: Any, granularity: Any = 0.5, model: Any = None, labels: Any = None,
                **kwargs: Any) -> np.ndarray:
        from . import segmentation

        return segmentation.segment(image, points, granularity, model=self.model(model), labels=labels, **kwargs)

    def segment_everything(self, image: Any, granularity: Any = 0.5, model: Any = None,
                           progress: Progress | None = None, cancel: Any = None, **settings: Any) -> Any:
        from . import segmentation

        return segmentation.segment_everything(image, granularity, model=self.model(model), progress=progress,
                                               cancel=cancel, **settings)


#: where the models run: this machine, a scheduler address, or a connected remote session
Where = Union[Local, str, "RemoteSession", None]


def resolve_where(where: Where) -> Backend:
    """``where`` as a :class:`Backend`: :class:`Local`, or the connected ``RemoteSession`` (an address
    connects, or reuses the session already connected to it). None means this machine."""
    if where is None:
        return Local()
    if isinstance(where, Local):
        return where
    from .remote.client.session import session_for

    return session_for(where)


def is_local(where: Where) -> bool:
    """True when ``where`` means this machine (no connection is made)."""
    return where is None or isinstance(where, Local)


def _remote_model(model: Any) -> Any:
    """What the worker loads: a zoo name or a path on the worker's disk (a loaded zoo model by its name)."""
    if model is None or isinstance(model, (str, os.PathLike)):
        return model
    return getattr(model, "name", model)


def open_predictor(model: Any = None, precision: str = "auto", where: Where = None,
                   **settings: Any) -> Predictor:
    """A :class:`~napari_granseg.engine.protocols.Predictor` for ``model`` running ``where``.

    model: a ``LoadedModel`` (here; on a worker it travels by its zoo name), a zoo name, a checkpoint path
    (on the worker's disk when remote) or None (the default model). precision: "auto" | "fp32" | "bf16".
    settings: ``GranularityPredictor``'s (``cache_size``, ``mask_threshold``, ``percentiles``...).
    Call it off the GUI thread: it loads a model or talks to the worker.
    """
    if is_local(where):
        return resolve_where(where).predictor(model, precision=precision, **settings)
    return resolve_where(where).predictor(_remote_model(model), precision=precision, **settings)


def open_fewshot(model: Any = None, image_size: int | None = 640, precision: str = "auto", where: Where = None,
                 **settings: Any) -> FewShot:
    """A :class:`~napari_granseg.engine.protocols.FewShot` (SANSA) for ``model`` running ``where``.

    image_size: upstream's square pre-resize (640 natural images, 518 FSS-1000 / medical; None: straight to
    the model's size). settings: ``FewShotSegmenter``'s (``intensity_range``).
    """
    if is_local(where):
        return resolve_where(where).fewshot(model, image_size=image_size, precision=precision, **settings)
    return resolve_where(where).fewshot(_remote_model(model), image_size=image_size, precision=precision,
                                        **settings)


def describe(where: Where) -> str:
    """Where the work runs, in words: "this machine" or the scheduler's address."""
    if is_local(where):
        return "this machine"
    return str(getattr(where, "address", where))
