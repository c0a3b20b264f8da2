"""The interactive preview as a small state machine: debounce, request, show, stale results dropped.

Why a separate module: the order of events is where the interactive widget can go wrong (a commit that
writes the previous mask because the newer one is still being computed, a cleared preview that reappears
when a late result arrives, a slider that waits for the decoder). Kept free of Qt widgets and napari, the
rules are unit-tested with a fake timer and synchronous callbacks.

The rules:

- ``schedule()`` (a click, a moved slider) restarts the debounce timer; when it fires, ``fire()`` takes a
  snapshot of the prompts (``snapshot(serial)``) and launches ONE background run; a request arriving while a
  run is going is remembered (``pending``) and run when the current one ends: the newest request wins.
- Every request carries a serial number; ``offer(result)`` shows a result only if its serial is the newest
  issued. ``invalidate()`` (next object, image switched, preview cleared) bumps the serial, so a result in
  flight is dropped when it arrives.
- ``ready`` is True only when the preview shown is the answer to the current prompts (no timer, no pending
  request, no newer request running). A commit asks for ``ready``; otherwise it is deferred with
  ``commit_when_ready()`` and done by ``offer`` the moment the right preview arrives.
- After a click the worker decodes a sweep of g values (:data:`SWEEP_G`) for the same prompts;
  ``nearest(key, g)`` returns the closest decoded mask at once, so the slider answers without waiting for
  the decoder; the exact mask follows when the slider rests (the debounce fires).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

__all__ = ["PreviewRequest", "PreviewResult", "PreviewController", "SWEEP_G", "Timer"]

#: granularities decoded in the background after each new set of prompts (the slider's quick answers)
SWEEP_G: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))


class Timer(Protocol):
    """What the controller needs of a single-shot timer (a ``QTimer`` in the widget, a fake in tests)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def isActive(self) -> bool: ...


@dataclass
class PreviewRequest:
    """A snapshot of what to segment, taken on the GUI thread (the worker never reads layers)."""

    serial: int
    image_name: str
    index: tuple[int, ...]                  # leading (z/t/...) indices of the slice
    image: Any                              # the 2D (H, W[, C]) slice (array-like)
    points_xy: np.ndarray                   # (N, 2) (x, y) pixels
    point_labels: np.ndarray                # (N,) 1/0
    granularity: float | None
    box: np.ndarray | None = None           # (4,) x0, y0, x1, y1
    mask_input: np.ndarray | None = None    # (1, h, w) low-res logits of an existing label
    refine_label: int | None = None         # the label id ``mask_input`` came from
    intensity: tuple[float, float] | None = None   # the stack's range, for slices of a stack
    extra: dict = field(default_factory=dict)

    @property
    def prompt_key(self) -> tuple:
        """Identifies the prompts (not g): sweep masks are reusable while the key stays the same."""
        box = None if self.box is None else tuple(np.round(self.box, 2).tolist())
        return (self.image_name, self.index, np.round(self.points_xy, 2).tobytes(), self.point_labels.tobytes(),
                box, self.refine_label)

    @property
    def has_prompt(self) -> bool:
        return bool((self.point_labels == 1).any()) or self.box is not None or self.mask_input is not None


@dataclass
class PreviewResult:
    """A decoded mask for a request (``mask`` is (H, W) uint8 0/1, ready for a Labels layer without copy)."""

    request: PreviewRequest
    mask: np.ndarray
    iou: float = float("nan")
    granularity: float | None = None


class PreviewController:
    """The state machine (see the module docstring); all methods run on the GUI thread.

    snapshot(serial) -> PreviewRequest | None: the current prompts (None: nothing to segment).
    launch(request): start the background run; it must call :meth:`offer` for the exact mask,
    :meth:`store_sweep` for sweep masks and :meth:`run_finished` at the end (success or not).
    show(result, exact): put a mask on screen; clear(): remove it.
    commit(): called when a deferred commit becomes possible; cancel_commit(reason): when it cannot happen.
    """

    def __init__(self, timer: Timer, snapshot: Callable[[int], PreviewRequest | None],
                 launch: Callable[[PreviewRequest], None], show: Callable[[PreviewResult, bool], None],
                 clear: Callable[[], None], commit: Callable[[], None] | None = None,
                 cancel_commit: Callable[[str], None] | None = None):
        self.timer = timer
        self._snapshot, self._launch, self._show, self._clear = snapshot, launch, show, clear
        self._commit, self._cancel_commit = commit, cancel_commit
        self.serial = 0
        self.running = False
        self.pending = False
        self.shown: PreviewResult | None = None
        self.want_commit = False
        self._sweep_key: tuple | None = None
        self._sweep: dict[float, np.ndarray] = {}

    # ------------------------------------------------------------------ requests
    def schedule(self) -> None:
        """Prompts or g changed: (re)start the debounce."""
        self.timer.start()

    def fire(self) -> None:
        """The debounce elapsed: launch a run for the current prompts (or queue it behind the running one)."""
        if self.running:
            self.pending = True
            self.serial += 1  # the running request is outdated: its result (and sweep) will be dropped
            return
        self.pending = False
        self.serial += 1
        request = self._snapshot(self.serial)
        if request is None or not request.has_prompt:
            if self.shown is not None:
                self.shown = None
                self._clear()
            self._drop_commit("nothing to commit: the prompts were removed; click an object first")
            return
        cached = self._exact_from_sweep(request)
        if cached is not None:
            self.offer(cached)
            return
        self.running = True
        self._launch(request)

    def run_finished(self) -> None:
        """The background run ended (result, error or cancel): run the queued request, if any."""
        self.running = False
        if self.pending:
            self.fire()
        elif self.want_commit and not self.ready:
            self._drop_commit("the preview could not be computed: nothing was committed")

    def is_stale(self, serial: int) -> bool:
        """True once a newer request was issued or the preview was invalidated (workers check it too)."""
        return serial != self.serial

    # ------------------------------------------------------------------ results
    def offer(self, result: PreviewResult) -> bool:
        """Show ``result`` if it answers the newest request; returns whether it was shown."""
        if self.is_stale(result.request.serial):
            return False
        self.shown = result
        self._show(result, True)
        if self.want_commit and self.ready and self._commit is not None:
            self.want_commit = False
            self._commit()
        return True

    def invalidate(self) -> None:
        """Forget the preview and everything in flight (its result will be dropped); clears the screen."""
        self.serial += 1
        self.timer.stop()
        self.pending = False
        self._sweep_key, self._sweep = None, {}
        self._drop_commit("the preview was discarded before it was committed")
        if self.shown is not None:
            self.shown = None
        self._clear()

    @property
    def ready(self) -> bool:
        """The preview shown answers the current prompts and g (what a commit may write)."""
        return (self.shown is not None and not self.timer.isActive() and not self.pending
                and self.shown.request.serial == self.serial)

    @property
    def busy(self) -> bool:
        return self.running or self.pending or self.timer.isActive()

    # ------------------------------------------------------------------ commit
    def commit_when_ready(self) -> bool:
        """Commit now if ready (returns True), else remember to commit when the current preview arrives."""
        if self.ready:
            return True
        if not self.busy:
            raise ValueError("nothing to commit: click on an object first (prompts layer in add mode) and wait "
                             "for the yellow preview")
        self.want_commit = True
        return False

    def _drop_commit(self, reason: str) -> None:
        if self.want_commit:
            self.want_commit = False
            if self._cancel_commit is not None:
                self._cancel_commit(reason)

    # ------------------------------------------------------------------ sweep (quick slider answers)
    def store_sweep(self, request: PreviewRequest, g_values, masks) -> None:
        """Keep sweep masks of ``request``'s prompts (dropped if a newer set of prompts exists)."""
        if self.shown is not None and self.shown.request.prompt_key != request.prompt_key:
            return
        if self._sweep_key != request.prompt_key:
            self._sweep_key, self._sweep = request.prompt_key, {}
        for g, m in zip(g_values, masks):
            self._sweep[round(float(g), 3)] = m

    def nearest(self, key: tuple, g: float) -> tuple[float, np.ndarray] | None:
        """(g', mask) of the decoded sweep value closest to ``g`` for prompts ``key``, or None."""
        if key != self._sweep_key or not self._sweep:
            return None
        best = min(self._sweep, key=lambda v: abs(v - g))
        return best, self._sweep[best]

    def quick_show(self, g: float) -> bool:
        """On a slider move: show the nearest sweep mask at once (not commit-ready); True if one was shown."""
        if self.shown is None:
            return False
        hit = self.nearest(self.shown.request.prompt_key, g)
        if hit is None:
            return False
        g_near, mask = hit
        self._show(PreviewResult(self.shown.request, mask, granularity=g_near), False)
        return True

    def _exact_from_sweep(self, request: PreviewRequest) -> PreviewResult | None:
        if request.granularity is None:
            return None
        hit = self.nearest(request.prompt_key, request.granularity)
        if hit is None or abs(hit[0] - request.granularity) > 1e-6:
            return None
        return PreviewResult(request, hit[1], granularity=hit[0])
