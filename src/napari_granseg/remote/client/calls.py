"""One actor on the GPU worker, seen from the laptop: calls with liveness checks, images sent once, jobs with
progress and cancel, and every lost connection turned into one clear :class:`RemoteError`.

Waiting is never blind: while a call computes, the client pings the worker (an ``async`` actor method, answered
by the worker's event loop even while the actor thread computes), so a slow first embedding is waited for but a
killed worker or a dropped network is reported within 1.5 x ``timeout`` seconds.
"""
from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .wire import Missing, image_digest, pack_array, payload_bytes

__all__ = ["RemoteError", "ActorClass", "ActorHandle", "is_connection_error"]

#: how often a waiting call looks at its result, progress and cancel flag (seconds)
POLL_S = 0.05


class RemoteError(RuntimeError):
    """The GPU worker or the connection to it is gone; nothing was written on this machine."""


def is_connection_error(err: BaseException) -> bool:
    """True for errors of the link or the worker (not for errors the engine raised about the input)."""
    from distributed.client import FutureCancelledError
    from distributed.comm.core import CommClosedError
    from distributed.scheduler import KilledWorker

    if isinstance(err, (CommClosedError, KilledWorker, FutureCancelledError, TimeoutError, asyncio.TimeoutError)):
        return True
    if type(err) is OSError:  # "Unable to contact Actor's worker" (engine errors are subclasses: kept)
        return True
    return isinstance(err, RuntimeError) and ("Worker holding Actor was lost" in str(err)
                                              or "IOLoop is closed" in str(err))


def _cancelled(cancel) -> bool:
    if cancel is None:
        return False
    return bool(cancel.is_set() if hasattr(cancel, "is_set") else cancel())


@dataclass(frozen=True)
class ActorClass:
    """A class of the server half (``remote.server``), named by its import path ``"module:Class"``.

    Why a name and not the class: the server half may use the API and the engines, and the API reaches this
    client half through ``compute``; importing the server here would close that loop. dask builds the actor
    on the worker by calling this object there, which imports the class in the worker's process.
    """

    path: str

    @property
    def __name__(self) -> str:  # dask names the task after it
        return self.path.rpartition(":")[2]

    def __call__(self, *args: Any) -> Any:
        module, _, name = self.path.partition(":")
        return getattr(importlib.import_module(module), name)(*args)


class ActorHandle:
    """A live actor of class ``cls`` on a worker of ``session``; dead for good after a lost connection."""

    def __init__(self, session, cls: ActorClass, *args: Any):
        self.session = session
        self.cls_name = cls.__name__
        self.dead = False
        self._sent: set[str] = set()
        self.stats = {"calls": 0, "images_sent": 0, "image_bytes_sent": 0, "reply_bytes": 0}
        client = session.client
        try:
            future = client.submit(cls, *args, actor=True, pure=False)
            self.actor = future.result(timeout=session.load_timeout)
            if self.actor._client is None:  # the session's client is not dask's default client (on purpose:
                self.actor._client = client  # a user's own dask work keeps its client); bind the handle to it
                self.actor._future = future
            self.worker = str(self.actor._address)
        except Exception as err:
            if is_connection_error(err):
                raise RemoteError(session.lost_message(err, starting=True)) from err
            raise

    # ------------------------------------------------------------------------------------- calls
    def _fail(self, err: BaseException) -> RemoteError:
        self.dead = True
        self._sent.clear()
        return RemoteError(self.session.lost_message(err, worker=getattr(self, "worker", None)))

    def call(self, method: str, *args: Any, job: str | None = None, progress: Callable | None = None,
             cancel: Any = None) -> Any:
        """``actor.method(*args)``, waited for with liveness pings; ``job``: poll its progress and cancel."""
        if self.dead:
            raise RemoteError(self.session.lost_message(RuntimeError("this connection was lost before"),
                                                        worker=self.worker))
        self.stats["calls"] += 1
        try:
            future = getattr(self.actor, method)(*args)
            reply = self._wait(future, job, progress, cancel)
        except RemoteError:
            raise
        except Exception as err:
            if is_connection_error(err):
                raise self._fail(err) from err
            raise
        self.stats["reply_bytes"] += payload_bytes(reply)
        return reply

    def _wait(self, future, job, progress, cancel) -> Any:
        try:
            return self._poll(future, job, progress, cancel)
        except BaseException:  # Ctrl+C in the console, a failing progress callback: stop the worker's job too
            if job is not None and not future.done():
                try:
                    self.actor.cancel(job).result(timeout=self.session.timeout)
                except Exception:  # the link itself is gone: the original error says so
                    pass
            raise

    def _poll(self, future, job, progress, cancel) -> Any:
        next_ping = time.monotonic() + max(1.0, self.session.timeout / 2)
        last, cancel_sent = None, False
        while True:
            if future.done():  # the reply (or the worker's error) is here
                return future.result()
            try:
                return future.result(timeout=POLL_S)
            except (TimeoutError, asyncio.TimeoutError):
                if future.done():  # it arrived just then (or the worker raised a TimeoutError): take it above
                    continue
            if job is not None and not cancel_sent and _cancelled(cancel):
                self.actor.cancel(job).result(timeout=self.session.timeout)
                cancel_sent = True
            if job is not None and progress is not None:
                state = tuple(self.actor.progress(job).result(timeout=self.session.timeout))
                next_ping = time.monotonic() + max(1.0, self.session.timeout / 2)
                if state != last and state[1] > 0:
                    progress(*state)
                    last = state
            elif time.monotonic() > next_ping:
                self.actor.progress("").result(timeout=self.session.timeout)
                next_ping = time.monotonic() + max(1.0, self.session.timeout / 2)

    def call_with_image(self, method: str, image: np.ndarray, *args: Any, job: str | None = None,
                        progress: Callable | None = None, cancel: Any = None, key: str | None = None) -> Any:
        """``actor.method([job,] key, payload, *args)`` where the pixels travel only if the worker lacks them."""
        image = np.asarray(image)
        key = key or image_digest(image)
        lead = () if job is None else (job,)
        payload = None
        if key not in self._sent:
            payload = self._pack(image)
        reply = self.call(method, *lead, key, payload, *args, job=job, progress=progress, cancel=cancel)
        if isinstance(reply, Missing):  # the worker dropped it (store full, or a new worker): send once more
            payload = self._pack(image)
            reply = self.call(method, *lead, key, payload, *args, job=job, progress=progress, cancel=cancel)
        self._sent.add(key)
        return reply

    def _pack(self, image: np.ndarray) -> dict:
        payload = pack_array(image)
        self.stats["images_sent"] += 1
        self.stats["image_bytes_sent"] += len(payload["data"])
        return payload

    @staticmethod
    def new_job() -> str:
        return uuid.uuid4().hex
