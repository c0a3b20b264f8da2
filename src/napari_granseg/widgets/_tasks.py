"""The one way the plugin runs work off napari's GUI thread, and the one way it reports errors.

Why: every model call (loading, image embeddings, decoding, propagation) can take seconds; on the GUI thread
napari would freeze. Every widget runs such work as a *job* through a runner, so that all of them behave the
same way: a progress bar that moves, a Cancel button that works, and errors shown as napari notifications whose
message says what to do (never a traceback dialog for a user mistake).

Jobs
----
A job is a function ``job(is_cancelled)``, usually a generator:

- ``is_cancelled()`` turns True once the user pressed Cancel: check it between steps;
- it yields :class:`Progress` ``(done, total, message)`` as it goes (``total=0``: busy indicator) and may yield
  other values, handed to ``on_yield``;
- its ``return`` value goes to ``on_done``; any exception to ``on_error`` (default: a notification).

Runners
-------
:class:`BackgroundTask` runs a job in a napari thread worker and calls back on the GUI thread, wired to optional
Qt controls; :class:`SyncRunner` runs the same job in the calling thread (tests, scripts). Sessions take either.

Errors
------
:class:`WidgetError` is the widgets' user-mistake type; :func:`error_text` tells a user mistake (its message is
shown) from a bug (logged with its traceback, shown as "internal error, please report"); :func:`guard` wraps
GUI actions with the same rule.

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
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from collections.abc import Generator
from typing import Any, Callable, Protocol

__all__ = ["Progress", "JobRunner", "BackgroundTask", "SyncRunner", "blocking_with_progress", "rescaled_progress",
           "WidgetError", "USER_ERRORS", "is_user_error", "error_text", "notify", "notify_error", "guard"]

log = logging.getLogger("napari_granseg.widgets")

Job = Callable[[Callable[[], bool]], Any]


# ------------------------------------------------------------------------------------------------ errors
class WidgetError(ValueError):
    """A user mistake in a widget (no image, wrong view, ...); the message says what to do."""


#: exception types that are user mistakes whatever module raised them (their message says what to do)
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)

#: user-facing errors of modules that import torch or dask, named rather than imported: telling a user mistake
#: from a bug must not import torch on napari's GUI thread
_NAMED_USER_ERRORS = frozenset({"CheckpointError", "ModelDownloadError", "PropagationCancelled", "RemoteError"})


def is_user_error(exc: BaseException) -> bool:
    """True for a user mistake (shown as it is); False for a bug (TypeError, KeyError, ... get a traceback)."""
    if isinstance(exc, USER_ERRORS):
        return True
    return any(cls.__module__.startswith("napari_granseg.") and cls.__qualname__ in _NAMED_USER_ERRORS
               for cls in type(exc).__mro__)


def error_text(exc: BaseException, context: str = "") -> str:
    """What the user reads for ``exc``: a user mistake's message, or "internal error, please report" for a bug
    (whose traceback goes to the log). No napari here: sessions use it without Qt."""
    prefix = f"{context}: " if context else ""
    if is_user_error(exc):
        return f"{prefix}{exc}"
    log.error("napari-granseg: %s failed", context or "a background task", exc_info=exc)
    return f"{prefix}internal error, please report it (with the log): {type(exc).__name__}: {exc}"


def notify(level: str, message: str) -> None:
    """Show a napari notification: ``level`` is "error", "warning" or "info"."""
    from napari.utils import notifications

    {"error": notifications.show_error, "warning": notifications.show_warning,
     "info": notifications.show_info}[level](message)


def notify_error(exc: BaseException, context: str = "") -> str:
    """Show ``exc`` as an error notification (text from :func:`error_text`) and return the text shown."""
    text = error_text(exc, context)
    notify("error", text)
    return text


def guard(fn: Callable[[], Any], context: str = "", on_error: Callable[[str], None] | None = None) -> Any:
    """Run a GUI action; an exception becomes a notification (see :func:`notify_error`). Returns fn's value or None.

    ``on_error(text)`` also receives the text shown (widgets keep it for their status line and tests).
    """
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - shown to the user, bugs logged with traceback
        text = notify_error(exc, context)
        if on_error is not None:
            on_error(text)
        return None


# ------------------------------------------------------------------------------------------------ jobs
@dataclass(frozen=True)
class Progress:
    """A progress report yielded by a job: ``done`` of ``total`` steps (``total=0``: unknown, busy bar)."""

    done: int = 0
    total: int = 0
    message: str = ""


class JobRunner(Protocol):
    """What a session needs to run its jobs: :class:`BackgroundTask` in napari, :class:`SyncRunner` in tests."""

    @property
    def running(self) -> bool: ...

    def is_cancelled(self) -> bool: ...

    def cancel(self) -> None: ...

    def start(self, job: Job, *, on_done: Callable[[Any], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None,
              on_yield: Callable[[Any], None] | None = None, on_finished: Callable[[], None] | None = None,
              message: str = "") -> Any: ...


class _Failure:
    """What the worker returns instead of raising (see :class:`BackgroundTask`)."""

    def __init__(self, exc: BaseException):
        self.exc = exc


def _guarded(job: Job, is_cancelled: Callable[[], bool]):
    """Run ``job`` (a generator is iterated) and turn any exception into a returned :class:`_Failure`.

    Why: superqt's worker silently swallows ``RuntimeError`` and napari shows a traceback dialog for others, so
    exceptions are caught inside the worker and ``on_error`` sees every failure exactly once.
    """
    try:
        result = job(is_cancelled)
        if isinstance(result, Generator):
            result = yield from result
        return result
    except BaseException as exc:  # noqa: BLE001 - reported on the GUI thread
        return _Failure(exc)


class _Callbacks:
    """A run's callbacks: progress to the controls, the rest to the caller (shared by both runners)."""

    def __init__(self, runner, cancel_event: threading.Event, on_done, on_error, on_yield, on_finished):
        self.runner, self.cancel_event = runner, cancel_event
        self.on_done, self.on_error, self.on_yield, self.on_finished = on_done, on_error, on_yield, on_finished
        self.worker = None  # the napari worker running the job (BackgroundTask)

    def yielded(self, value) -> None:
        if isinstance(value, Progress):
            self.runner._show_progress(value)
        elif self.on_yield is not None:
            self.on_yield(value)

    def returned(self, value) -> None:
        if isinstance(value, _Failure):
            if self.cancel_event.is_set():  # the job stopped because it was asked to: not an error
                return
            (self.on_error or (lambda e: notify_error(e, self.runner.context)))(value.exc)
        elif not self.cancel_event.is_set() and self.on_done is not None:
            self.on_done(value)

    def finished(self) -> None:
        self.runner._end(self)
        if self.on_finished is not None:
            self.on_finished()
        for cb in list(self.runner._finished_callbacks):
            cb()


class BackgroundTask:
    """Runs one job at a time in a napari thread worker, wired to optional Qt controls.

    progress_bar: a ``QProgressBar`` shown while the job runs (range from :class:`Progress`).
    cancel_button: a ``QPushButton`` enabled while the job runs; clicking it calls :meth:`cancel`.
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
        """Ask the running job to stop (at its next ``yield`` or ``is_cancelled()`` check)."""
        self._cancel.set()
        if self.worker is not None:
            self.worker.quit()
        if self.status_label is not None:
            self.status_label.setText("cancelling…")

    def start(self, job: Job, *, on_done: Callable[[Any], None] | None = None,
              on_error: Callable[[BaseException], None] | None = None, on_yield: Callable[[Any], None] | None = None,
              on_finished: Callable[[], None] | None = None, message: str = ""):
        """Start ``job`` in a thread worker (see the module docstring); returns the worker.

        Raises RuntimeError if a job is already running (check :attr:`running`, or :meth:`cancel` first).
        ``on_finished`` runs after success, error or cancel alike.
        """
        from napari.qt.threading import create_worker

        if self.worker is not None:
            raise RuntimeError("another task is still running: wait for it or press Cancel")
        self._cancel = threading.Event()
        calls = _Callbacks(self, self._cancel, on_done, on_error, on_yield, on_finished)
        worker = create_worker(_guarded, job, self._cancel.is_set, _start_thread=False)
        self.worker = worker
        calls.worker = worker
        worker.yielded.connect(_unless_closed(calls.yielded))
        worker.returned.connect(_unless_closed(calls.returned))
        worker.finished.connect(_unless_closed(calls.finished))
        self._set_busy(message)
        worker.start()
        return worker

    def on_any_finished(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the GUI thread after every job of this runner ends."""
        self._finished_callbacks.append(callback)

    # ---------------------------------------------------------------- controls
    def _end(self, calls: _Callbacks) -> None:
        if self.worker is calls.worker:
            self.worker = None
        self._set_idle(cancelled=calls.cancel_event.is_set())

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


class SyncRunner:
    """Runs a job to its end in the calling thread, with the callbacks of :class:`BackgroundTask`.

    For Qt-free tests and scripts of a session. ``progress`` keeps every :class:`Progress` seen; ``cancel_after``
    (a number of yields) presses Cancel mid-job, as a person would.
    """

    def __init__(self, context: str = "", cancel_after: int | None = None):
        self.context = context
        self.cancel_after = cancel_after
        self.progress: list[Progress] = []
        self._cancel = threading.Event()
        self._running = False
        self._finished_callbacks: list[Callable[[], None]] = []

    @property
    def running(self) -> bool:
        return self._running

    def is_cancelled(self) -> bool:
        return self._cancel.is_set()

    def cancel(self) -> None:
        self._cancel.set()

    def on_any_finished(self, callback: Callable[[], None]) -> None:
        self._finished_callbacks.append(callback)

    def start(self, job: Job, *, on_done=None, on_error=None, on_yield=None, on_finished=None, message: str = ""):
        if self._running:
            raise RuntimeError("another task is still running: wait for it or press Cancel")
        self._cancel = threading.Event()
        calls = _Callbacks(self, self._cancel, on_done, on_error, on_yield, on_finished)
        self._running = True
        steps, n = _guarded(job, self._cancel.is_set), 0
        while True:
            try:
                value = next(steps)
            except StopIteration as stop:
                calls.returned(stop.value)
                break
            calls.yielded(value)
            n += 1
            if self.cancel_after is not None and n >= self.cancel_after:
                self._cancel.set()
        calls.finished()
        return None

    def _show_progress(self, p: Progress) -> None:
        self.progress.append(p)

    def _end(self, calls: _Callbacks) -> None:
        self._running = False


def _unless_closed(callback: Callable) -> Callable:
    """Wrap a GUI-thread callback so a job that ends after its widget was closed does nothing.

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


def blocking_with_progress(fn: Callable[..., Any], is_cancelled: Callable[[], bool],
                           poll_s: float = 0.1) -> Generator[Progress, None, Any]:
    """Run ``fn(progress, cancel)`` (a callback-style blocking call) and yield its progress as it comes.

    ``fn`` runs in a helper thread and receives ``progress(done, total)`` and ``cancel() -> bool`` callbacks
    (e.g. ``lambda progress, cancel: gs.propagate(model, stack, prompt, progress=progress, cancel=cancel)``).
    Use with ``result = yield from blocking_with_progress(fn, is_cancelled)`` inside a job; ``fn``'s
    exception is re-raised in the job.
    """
    q: queue.Queue = queue.Queue()
    box: dict[str, Any] = {}

    def target():
        try:
            box["result"] = fn(lambda done, total: q.put(Progress(int(done), int(total))), is_cancelled)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the job
            box["error"] = exc
        finally:
            q.put(None)

    thread = threading.Thread(target=target, name="granseg-blocking", daemon=True)
    thread.start()
    while True:
        if is_cancelled():
            # the job ends only once ``fn`` has seen is_cancelled() and returned (at its next slice or batch):
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

    Why: a job made of several runs (e.g. one per granularity) shows one bar from 0 to 100 %, not one that
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
