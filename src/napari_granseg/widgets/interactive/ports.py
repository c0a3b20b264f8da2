"""What the interactive session needs from the outside world, as small interfaces: a job runner, a debounce
timer and a port for the napari layers. The session imports neither Qt nor napari; the app plugs in a
thread-worker runner, a ``QTimer`` and the napari adapters (:mod:`.layers`), tests and scripts plug in
:class:`SyncRunner`, :class:`ImmediateTimer` and a fake layer port.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from .._common import WidgetError

__all__ = ["JobRunner", "LayerPort", "ImageInfo", "Prompts", "SyncRunner", "ImmediateTimer", "Timer"]

Job = Callable[[Callable[[], bool]], Any]


@dataclass
class Prompts:
    """Model input read from the prompt layers for one slice."""

    points_xy: np.ndarray            # (N, 2) float32 (x, y)
    point_labels: np.ndarray         # (N,) int32 1/0
    box: np.ndarray | None           # (4,) x0, y0, x1, y1 of the newest rectangle, or None
    n_outside: int = 0               # points outside the image, ignored


class Timer(Protocol):
    """A single-shot debounce timer (a ``QTimer`` in the app); its timeout runs the callback it was built with."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def isActive(self) -> bool: ...


class JobRunner(Protocol):
    """Runs one job at a time (a generator function ``job(is_cancelled)``, see ``widgets._tasks``)."""

    @property
    def running(self) -> bool: ...

    def start(self, generator_fn: Job, *, on_done: Callable[[Any], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None,
              on_yield: Callable[[Any], None] | None = None, on_finished: Callable[[], None] | None = None,
              message: str = "") -> Any: ...

    def cancel(self) -> None: ...


@dataclass(frozen=True)
class ImageInfo:
    """The image the session segments, described without napari: ``data`` is level 0 of the layer (never read
    on the GUI thread), ``shape`` its spatial shape (no RGB axis)."""

    name: str
    data: Any
    shape: tuple[int, ...]
    rgb: bool = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def hw(self) -> tuple[int, int]:
        return int(self.shape[-2]), int(self.shape[-1])

    def slice(self, index: tuple[int, ...]) -> Any:
        """The 2D (H, W[, C]) slice ``index`` (array-like, not read)."""
        return self.data[tuple(index)] if index else self.data

    def stack(self) -> Any:
        """The (T, H, W[, C]) data of a 3D image; 2D and 4D+ images raise a message saying what to do."""
        if self.ndim < 3:
            raise WidgetError(f"{self.name!r} is a single 2D image; embedding all slices and propagation are for "
                              f"z-stacks and time series (3D layers)")
        if self.ndim > 3:
            raise WidgetError(f"{self.name!r} has {self.ndim} spatial/time axes {self.shape} "
                              f"{'(RGB) ' if self.rgb else ''}but propagation runs along one axis (z or t): add one "
                              f"time point or one z as its own layer, e.g. viewer.add_image(layer.data[t])")
        return self.data


class LayerPort(Protocol):
    """The napari side of the session: images, prompt layers, the preview layer and labels writes.

    Layers are named, never held: the session keeps names and asks the port. Every write into a labels
    layer is ONE undo step of that layer and touches background pixels only (refine: its own label too).
    """

    def bind(self, on_prompts_changed: Callable[[], None]) -> None:
        """Call ``on_prompts_changed`` whenever prompts are added, moved or removed (canvas or code)."""

    def image(self, name: str | None) -> ImageInfo | None: ...

    def layer_data(self, names: Sequence[str]) -> list: ...

    def channel_choices(self, name: str) -> list: ...

    def current_index(self, name: str) -> tuple[int, ...]: ...

    def check_view(self) -> None: ...

    # prompts
    def prompts_image(self) -> str | None: ...

    def attach(self, name: str) -> None: ...

    def read_prompts(self, index: tuple[int, ...], hw: tuple[int, int]) -> Prompts: ...

    def prompt_count(self) -> int: ...

    def add_point(self, coords: Sequence[float], positive: bool) -> None: ...

    def clear_prompts(self, index: tuple[int, ...]) -> None: ...

    def activate(self, mode: str) -> None: ...

    def click_target(self) -> str | None:
        """None when a canvas click adds a prompt; else the name of the layer clicks go to ("" for none)."""

    # preview
    def show_preview(self, mask: np.ndarray) -> None: ...

    def clear_preview(self) -> None: ...

    # labels
    def labels_region(self, name: str | None, index: tuple[int, ...]) -> Any: ...

    def target_labels(self, image: ImageInfo, name: str | None, shape: tuple[int, ...]) -> str: ...

    def write_object(self, labels: str, index: tuple[int, ...], mask: np.ndarray,
                     refine_label: int | None) -> tuple[int, int]: ...

    def write_propagation(self, labels: str, result: np.ndarray, label_id: int, committed_slice: int) -> int: ...

    def can_undo(self, labels: str | None) -> bool: ...

    def undo(self, labels: str) -> None: ...

    def redo(self, labels: str) -> None: ...


class SyncRunner:
    """A :class:`JobRunner` that runs each job at once in the caller's thread (tests, scripts)."""

    def __init__(self):
        self.running = False
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def start(self, generator_fn: Job, *, on_done=None, on_error=None, on_yield=None, on_finished=None,
              message: str = "") -> None:
        from .._tasks import Progress

        self.running, self._cancelled = True, False
        try:
            gen = generator_fn(lambda: self._cancelled)
            result = gen
            if hasattr(gen, "__next__"):
                while True:
                    try:
                        item = next(gen)
                    except StopIteration as stop:
                        result = stop.value
                        break
                    if not isinstance(item, Progress) and on_yield is not None:
                        on_yield(item)
        except Exception as exc:  # noqa: BLE001 - handed to on_error, as the thread runner does
            self.running = False
            if on_error is not None:
                on_error(exc)
            else:
                raise
        else:
            self.running = False
            if on_done is not None and not self._cancelled:
                on_done(result)
        finally:
            self.running = False
            if on_finished is not None:
                on_finished()


class ImmediateTimer:
    """A :class:`Timer` without delay: ``start`` runs the callback at once (tests, scripts)."""

    def __init__(self, callback: Callable[[], None]):
        self._callback = callback

    def start(self) -> None:
        self._callback()

    def stop(self) -> None:
        pass

    def isActive(self) -> bool:
        return False
