"""Run model work off napari's GUI thread, with a progress bar, a cancel button and readable errors.

Why: every model call (loading, image embeddings, decoding, propagation) can take seconds; on the GUI thread
napari would freeze. Every widget of the plugin runs such work through this module, so that all of them
behave the same way: a progress bar that moves, a Cancel button that works, and errors shown as napari
notifications whose message says what to do (never a traceback dialog for a user mistake).

Protocol
--------
A task is a *generator function* ``generator_fn(is_cancelled)`` run in a napari thread worker
(:func:`napari.qt.threading.create_worker`):

- it receives ``is_cancelled``, a callable returning True once the user pressed Cancel (check it between
  steps; the worker is also asked to quit, which stops the generator at its next ``yield``);
- it yields :class:`Progress` ``(done, total, message)`` as it goes (``total=0``: busy indicator) and may
  yield other values, passed to ``on_yield`` on the GUI thread;
- its ``return`` value goes to ``on_done(value)`` on the GUI thread;
- any exception goes to ``on_error(exc)`` on the GUI thread (default: :func:`notify_error`).

Exceptions are caught inside the worker thread (superqt's worker silently swallows ``RuntimeError``, and
napari would show a traceback dialog for others), so ``on_error`` sees every failure exactly once.

Callback-style engine functions (``fn(progress=cb, cancel=cb)``, e.g. :func:`napari_granseg.propagate`) are
turned into such generators with :func:`blocking_with_progress`.

Example::

    task = BackgroundTask(progress_bar=bar, cancel_button=cancel, status_label=status)

    def job(is_cancelled):
        for i, image in enumerate(images):
            if is_cancelled():
                return None
            predictor.set_image(image)
            yield Progress(i + 1, len(images), f"embedded image {i + 1}")
        return len(images)

    task.start(job, on_done=lambda n: print(n, "images embedded"))

or in one call: ``run_in_background(widget, job, on_done, on_error, progress_bar, cancel_button)``.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Generator, Iterable

from ._common import USER_ERRORS, WidgetError, avoid_triton_llvm_crash, import_engines, notify_error

__all__ = ["Progress", "BackgroundTask", "run_in_background", "blocking_with_progress", "notify_error",
           "USER_ERRORS", "WidgetError", "avoid_triton_llvm_crash", "import_engines", "rescaled_progress"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """A progress report yielded by a task: ``done`` of ``total`` steps (``total=0``: unknown, busy bar)."""

    done: int = 0
    total: int = 0
    message: str = ""


class _Failure:
    """What the worker returns instead of raising (see the module docstring)."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def _guarded(generator_fn: Callable[[Callable[[], bool]], Iterable], is_cancelled: Callable[[], bool]):
    """Run ``generator_fn`` and turn any exception into a returned :class:`_Failure`."""
    try:
        result = generator_fn(is_cancelled)
        if hasattr(result, "__next__"):
            result = yield from result
        return result
    except BaseException as exc:  # noqa: BLE001 - reported on the GUI thread
        return _Failure(exc)


class BackgroundTask:
    """Runs one generator task at a time in a napari thread worker, wired to optional Qt controls.

    progress_bar: a ``QProgressBar`` shown while the task runs (range from :class:`Progress`).
    cancel_button: a ``QPushButton`` enabled while the task runs; clicking it calls :meth:`cancel`.
    status_label: a ``QLabel`` showing the latest :class:`Progress` message.
    context: prefix of error notifications (e.g. "Interactive segmentation").
    """

    def __init__(self, progress_bar=None, cancel_button=None, status_label=None, context: str = ""):
        self.progress_bar = progress_bar
        self.cancel_button = cancel_button
        self.status_label = status_label
        self.context = context
        self.worker = None
        self._cancel = threading.Event()
        self._finished_callbacks: list[Callable[[], None]] = []
        if cancel_button is not None:
            cancel_button.clicked.connect(self.cancel)
            cancel_button.setEnabled(False)
        if progress_bar is not None:
            progress_bar.setVisible(False)

    @property
    def running(self) -> bool:
        return self.worker is not None

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        """Ask the running task to stop (at its next ``yield`` or ``is_cancelled()`` check)."""
        self._cancel.set()
        if self.worker is not None:
            self.worker.quit()
        if self.status_label is not None:
            self.status_label.setText("cancelling…")

    def start(self, generator_fn: Callable[[Callable[[], bool]], Any], *, on_done: Callable[[Any], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None, on_yield: Callable[[Any], None] | None = None,
              on_finished: Callable[[], None] | None = None, message: str = ""):
        """Start ``generator_fn`` in a thread worker (see the module docstring); returns the worker.

        Raises RuntimeError if a task is already running (check :attr:`running`, or :meth:`cancel` first).
        ``on_finished`` runs after success, error or cancel alike.
        """
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise RuntimeError("another task is still running: wait for it or press Cancel")
        self._cancel = threading.Event()
        cancel_event = self._cancel
        worker = create_worker(_guarded, generator_fn, cancel_event.is_set, _start_thread=False)
        self.worker = worker

        def yielded(value):
            if isinstance(value, Progress):
                self._show_progress(value)
            elif on_yield is not None:
                on_yield(value)

        def returned(value):
            if isinstance(value, _Failure):
                if cancel_event.is_set():  # the task stopped because it was asked to: not an error
                    return
                (on_error or (lambda e: notify_error(e, self.context)))(value.exc)
            elif not cancel_event.is_set() and on_done is not None:
                on_done(value)

        def finished():
            if self.worker is worker:
                self.worker = None
            self._set_idle(cancelled=cancel_event.is_set())
            if on_finished is not None:
                on_finished()
            for cb in list(self._finished_callbacks):
                cb()

        worker.yielded.connect(_unless_closed(yielded))
        worker.returned.connect(_unless_closed(returned))
        worker.finished.connect(_unless_closed(finished))
        self._set_busy(message)
        worker.start()
        return worker

    def on_any_finished(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the GUI thread after every task of this runner ends."""
        self._finished_callbacks.append(callback)

    # ---------------------------------------------------------------- controls
    def _show_progress(self, p: Progress) -> None:
        bar = self.progress_bar
        if bar is not None:
            if p.total > 0:
                bar.setRange(0, int(p.total))
                bar.setValue(int(min(p.done, p.total)))
            else:
                bar.setRange(0, 0)
        if self.status_label is not None and p.message:
            self.status_label.setText(p.message)

    def _set_busy(self, message: str) -> None:
        if self.progress_bar is not None:
            self.progress_bar.setRange(0, 0)
            self.progress_bar.setVisible(True)
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(True)
        if self.status_label is not None and message:
            self.status_label.setText(message)

    def _set_idle(self, cancelled: bool) -> None:
        if self.progress_bar is not None:
            self.progress_bar.setVisible(False)
        if self.cancel_button is not None:
            self.cancel_button.setEnabled(False)
        if self.status_label is not None and cancelled:
            self.status_label.setText("cancelled")


def _unless_closed(callback: Callable) -> Callable:
    """Wrap a GUI-thread callback so a task that ends after its widget was closed does nothing.

    Why: a model load started when a dock widget opens can finish after the user (or a test) closed the
    viewer; Qt has then deleted the widgets and touching them raises RuntimeError("... has been deleted").
    """
    def wrapper(*args):
        try:
            return callback(*args)
        except RuntimeError as err:
            if "has been deleted" in str(err):
                log.debug("napari-granseg: task finished after its widget was closed")
                return None
            raise

    return wrapper


def run_in_background(widget, generator_fn, on_done=None, on_error=None, progress_bar=None, cancel_button=None,
                      status_label=None, message: str = ""):
    """One-shot form of :class:`BackgroundTask`: start ``generator_fn`` and return the task object.

    ``widget``'s title (``windowTitle()``, else its class name) prefixes error notifications. The returned
    task is kept alive on ``widget._granseg_tasks`` until it finishes.
    """
    context = (widget.windowTitle() if hasattr(widget, "windowTitle") else "") or type(widget).__name__
    task = BackgroundTask(progress_bar, cancel_button, status_label, context=context)
    keep = widget.__dict__.setdefault("_granseg_tasks", [])
    keep.append(task)
    task.start(generator_fn, on_done=on_done, on_error=on_error, message=message,
               on_finished=lambda: keep.remove(task) if task in keep else None)
    return task


def blocking_with_progress(fn: Callable[..., Any], is_cancelled: Callable[[], bool],
                           poll_s: float = 0.1) -> Generator[Progress, None, Any]:
    """Run ``fn(progress, cancel)`` (a callback-style blocking call) and yield its progress as it comes.

    ``fn`` runs in a helper thread and receives ``progress(done, total)`` and ``cancel() -> bool`` callbacks
    (e.g. ``lambda progress, cancel: gs.propagate(model, stack, prompt, progress=progress, cancel=cancel)``).
    Use with ``result = yield from blocking_with_progress(fn, is_cancelled)`` inside a task; ``fn``'s
    exception is re-raised in the task.
    """
    q: queue.Queue = queue.Queue()
    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = fn(lambda done, total: q.put(Progress(int(done), int(total))), is_cancelled)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the task
            box["error"] = exc
        finally:
            q.put(None)

    thread = threading.Thread(target=target, name="granseg-blocking", daemon=True)
    thread.start()
    while True:
        if is_cancelled():
            # the task ends only once ``fn`` has seen is_cancelled() and returned (at its next slice or batch):
            # no computation goes on behind the user's back, nor races the next run
            thread.join()
            return None
        try:
            item = q.get(timeout=poll_s)
        except queue.Empty:
            continue
        if item is None:
            break
        yield item
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


def rescaled_progress(steps: Generator[Progress, None, Any], part: int, n_parts: int,
                      label: str = "") -> Generator[Progress, None, Any]:
    """Forward the progress of part ``part`` of ``n_parts`` equal parts as progress of the whole; return its value.

    Why: a task made of several runs (e.g. one per granularity) shows one bar from 0 to 100 %, not one that
    restarts at every part. Use as ``value = yield from rescaled_progress(blocking_with_progress(...), k, n)``.
    """
    while True:
        try:
            p = next(steps)
        except StopIteration as stop:
            return stop.value
        total = max(int(p.total), 0)
        if total:
            yield Progress(part * total + int(p.done), n_parts * total, f"{label}: {p.done}/{total}" if label
                           else p.message)
        else:
            yield p
