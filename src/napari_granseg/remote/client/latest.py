"""Newest value wins: at most one request in flight, and a newer request replaces the one waiting.

A granularity slider moves faster than a remote predict answers (and a dask actor serves one call at a time:
twenty calls sent at once come back one after the other, the last after all the others). Sending every value
makes the display lag further and further behind the hand. :class:`LatestOnly` keeps exactly one call running
and remembers only the newest value asked for meanwhile; when the running call ends, that newest value runs
next and every value in between is skipped. It has no Qt in it: a widget passes callbacks that hand results to
the GUI thread (e.g. through a signal) and calls :meth:`submit` from slider events.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

__all__ = ["LatestOnly"]

_NOTHING = object()
log = logging.getLogger(__name__)


class LatestOnly:
    """Run ``fn(value)`` in one background thread, always for the newest submitted value.

    on_result(value, result) and on_error(value, exception) are called in that thread after each run, before
    the next value starts (a result
    for a value that was superseded while it ran is still delivered: it is the freshest one available; compare
    ``value`` with :attr:`latest` to skip it).
    """

    def __init__(self, fn: Callable[[Any], Any], on_result: Callable[[Any, Any], None] | None = None,
                 on_error: Callable[[Any, BaseException], None] | None = None, name: str = "latest-only"):
        self._fn = fn
        self._on_result = on_result
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: Any = _NOTHING
        self._running = False
        self._closed = False
        self.latest: Any = _NOTHING
        #: submitted: calls to submit; run: values computed; skipped: values replaced before they ran
        self.counts = {"submitted": 0, "run": 0, "skipped": 0}
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, value: Any) -> None:
        """Ask for ``value``; replaces a value still waiting (never the running one). Returns at once."""
        with self._cond:
            if self._closed:
                raise RuntimeError("this LatestOnly was closed; make a new one")
            if self._pending is not _NOTHING:
                self.counts["skipped"] += 1
            self._pending = value
            self.latest = value
            self.counts["submitted"] += 1
            self._cond.notify_all()

    def discard_pending(self) -> bool:
        """Drop the waiting value (e.g. the image changed); returns whether there was one."""
        with self._cond:
            had = self._pending is not _NOTHING
            if had:
                self.counts["skipped"] += 1
            self._pending = _NOTHING
            self._cond.notify_all()
            return had

    @property
    def busy(self) -> bool:
        """A value is running or waiting."""
        with self._cond:
            return self._running or self._pending is not _NOTHING

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing runs or waits (a commit waits for the newest preview); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._running and self._pending is _NOTHING, timeout)

    def close(self, timeout: float | None = None) -> None:
        """Stop after the running value (the waiting one is dropped) and join the thread."""
        with self._cond:
            self._closed = True
            self._pending = _NOTHING
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._pending is not _NOTHING)
                if self._closed:
                    return
                value, self._pending = self._pending, _NOTHING
                self._running = True
            try:
                try:
                    result = self._fn(value)
                except Exception as err:  # handed to on_error: the thread must serve the next value
                    self._deliver(self._on_error, value, err)
                else:
                    self._deliver(self._on_result, value, result)
            finally:  # after delivery, so that wait_idle() returns once the newest result is handed over
                self._finish()

    @staticmethod
    def _deliver(callback, value, payload) -> None:
        if callback is None:
            return
        try:
            callback(value, payload)
        except Exception:  # a faulty callback must not stop the thread that serves the slider
            log.exception("LatestOnly callback %r failed", callback)

    def _finish(self) -> None:
        with self._cond:
            self._running = False
            self.counts["run"] += 1
            self._cond.notify_all()
