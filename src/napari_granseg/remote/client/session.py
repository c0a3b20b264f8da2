"""Connecting this machine to a dask scheduler whose worker has the GPU, and the calls users make through it.

``connect(address)`` checks the address (:mod:`.addresses`), connects, waits for a worker, compares package
versions (:mod:`.versions`) and returns a :class:`RemoteSession`, cached per address so that every widget and
console call shares one connection. The session runs the same functions as this machine would
(``gs.segment``, ``gs.segment_everything``, propagation, few-shot) on the worker's model and returns the same
labels; nothing is written on this machine until a complete result is back.
"""
from __future__ import annotations

import os
import threading
from typing import Any, Callable, Sequence

import numpy as np

from .addresses import SchedulerUnreachableError, check_address, open_client
from .calls import RemoteError
from .versions import local_versions, version_differences

__all__ = ["connect", "session_for", "RemoteSession", "RemoteError", "model_spec", "close_all"]

_sessions: dict[tuple, "RemoteSession"] = {}
_sessions_lock = threading.Lock()


def model_spec(model: Any = None, kind: str | None = "unsamv2", config: str | None = None, device: str = "auto",
               base_checkpoint: str | None = None) -> dict:
    """The worker-side model reference (fields of ``model_store.ModelRef``) for a zoo name, a path or None.

    Paths are paths ON THE WORKER (its disk). A loaded model cannot travel: a ``LoadedModel`` of a zoo model is
    sent by its name, any other one is refused with what to pass instead. None: the worker's default model
    (a real checkpoint in its cache, else the demo).
    """
    from ...zoo import ZOO

    if model is not None and not isinstance(model, (str, os.PathLike)):
        name = getattr(model, "name", None)
        if name in ZOO:
            model = name
        else:
            raise TypeError(f"model={model!r} cannot be sent to the GPU worker: pass a zoo name "
                            f"({', '.join(ZOO)}) or the path of the checkpoint on the worker's disk")
    if model is None:
        return {"name": None, "kind": None, "config": config, "device": device, "base_checkpoint": base_checkpoint}
    name = os.fspath(model)
    named = name in ZOO
    return {"name": name, "kind": None if named else kind, "config": config, "device": device,
            "base_checkpoint": base_checkpoint}


def connect(address: str, *, allow_insecure_remote: bool = False, security=None, timeout: float = 10,
            load_timeout: float = 600, direct_to_workers: bool = False) -> "RemoteSession":
    """A session on the dask scheduler at ``address`` (one per address: later calls return the same one).

    address: 'tcp://127.0.0.1:8786' (this machine or an SSH tunnel) or 'tls://host:8786' with ``security``.
    allow_insecure_remote: accept plain tcp:// to another machine (a trusted private network only).
    security: a ``distributed.Security`` for tls:// (mutual TLS, ``require_encryption=True``).
    timeout: seconds to connect, and to notice a worker that stopped answering.
    load_timeout: seconds allowed for the worker to load a model.
    direct_to_workers: call the worker directly instead of through the scheduler (saves a hop, but the
    worker's own port must be reachable: not through an SSH tunnel that forwards only the scheduler port).
    Raises :class:`~.addresses.InsecureAddressError` before any connection for an unsafe address,
    :class:`RemoteError` when the scheduler cannot be reached, has no worker, or versions differ.
    """
    full = check_address(address, allow_insecure_remote, security)
    key = (full, id(security), bool(direct_to_workers))
    with _sessions_lock:
        session = _sessions.get(key)
        if session is not None and session.alive:
            return session
        session = _sessions[key] = RemoteSession(full, security=security, timeout=timeout,
                                                 load_timeout=load_timeout, direct_to_workers=direct_to_workers)
        return session


def session_for(scheduler: "str | RemoteSession") -> "RemoteSession":
    """What a ``scheduler=`` argument of the API or a widget's compute setting means: an address string
    (:func:`connect` with its defaults: this machine or an SSH tunnel) or a session already made with
    :func:`connect` (TLS, a trusted network, other timeouts)."""
    if isinstance(scheduler, RemoteSession):
        return scheduler
    if isinstance(scheduler, str):
        return connect(scheduler)
    raise TypeError(f"scheduler={scheduler!r}: give a dask scheduler address such as 'tcp://127.0.0.1:8786' or a "
                    f"session from napari_granseg.remote.connect(...)")


def close_all() -> None:
    """Close every cached session (tests, application exit)."""
    with _sessions_lock:
        for session in _sessions.values():
            session.close()
        _sessions.clear()


class RemoteSession:
    """A connection to one scheduler; use :func:`connect`, which checks the address first."""

    def __init__(self, address: str, security=None, timeout: float = 10, load_timeout: float = 600,
                 direct_to_workers: bool = False):
        self.address = address
        self.timeout = float(timeout)
        self.load_timeout = float(load_timeout)
        self._predictors: dict[tuple, Any] = {}
        self._lock = threading.Lock()
        try:
            self.client = open_client(address, timeout, security=security, direct_to_workers=direct_to_workers)
        except SchedulerUnreachableError as err:
            raise RemoteError(str(err)) from None
        try:
            self._check_workers()
        except BaseException:
            self.client.close()
            raise

    def _check_workers(self) -> None:
        try:
            self.client.wait_for_workers(1, timeout=self.timeout)
        except (OSError, TimeoutError) as err:
            raise RemoteError(f"no dask worker has joined the scheduler at {self.address} within {self.timeout:g} "
                              f"s: start one on the GPU machine (dask worker {self.address} --nworkers 1 "
                              f"--nthreads 1)") from err
        try:
            theirs = self.client.run(local_versions)
        except Exception as err:  # the worker cannot even import this package
            raise RemoteError(f"the worker of {self.address} cannot run napari-granseg ({type(err).__name__}: "
                              f"{err}); install the same napari-granseg, torch and sam2 there as here") from err
        differences = version_differences(local_versions(), theirs)
        if differences:
            raise RemoteError(f"package versions differ between this machine and the worker of {self.address}:\n"
                              + "\n".join(differences) + "\ninstall the same versions on both machines "
                              "(masks and pickled objects depend on them), then connect again.")

    # ------------------------------------------------------------------------------------- state
    @property
    def alive(self) -> bool:
        return self.client.status == "running"

    def lost_message(self, err: BaseException, worker: str | None = None, starting: bool = False) -> str:
        """The message of every lost connection: who stopped, that nothing local changed, how to go on."""
        where = f" ({worker})" if worker else ""
        what = "could not start" if starting else "stopped"
        return (f"the GPU worker at {self.address}{where} {what}: {type(err).__name__}: {err or 'no answer'}; "
                f"your local labels are unchanged; reconnect with napari_granseg.remote.connect({self.address!r}) "
                f"(check that the worker runs on the GPU machine) and run it again: the model loads again on "
                f"the worker")

    def close(self) -> None:
        """Close the connection (the worker's actors go with it)."""
        self._predictors.clear()
        self.client.close()

    def __repr__(self) -> str:
        return f"RemoteSession({self.address!r}, {'connected' if self.alive else 'closed'})"

    # ------------------------------------------------------------------------------- entry points
    def predictor(self, model_name_or_path: Any = None, kind: str = "unsamv2", device: str = "auto",
                  config: str | None = None, torch_threads: int | None = None, **predictor_kwargs):
        """A :class:`~.proxies.RemotePredictor` (``GranularityPredictor`` on the worker; same calls, same
        masks). ``predictor_kwargs`` go to ``GranularityPredictor(model, **predictor_kwargs)`` there."""
        from .proxies import RemotePredictor

        return RemotePredictor(self, model_spec(model_name_or_path, kind, config, device), predictor_kwargs,
                               torch_threads)

    def fewshot(self, model_name_or_path: Any = None, image_size: int | None = 640, device: str = "auto",
                config: str | None = None, base_checkpoint: str | None = None, torch_threads: int | None = None,
                **segmenter_kwargs):
        """A :class:`~.proxies.RemoteFewShotSegmenter` (``FewShotSegmenter`` on the worker)."""
        from .proxies import RemoteFewShotSegmenter

        spec = model_spec(model_name_or_path, "sansa", config, device, base_checkpoint)
        return RemoteFewShotSegmenter(self, spec, image_size, segmenter_kwargs, torch_threads)

    def _shared_predictor(self, model: Any):
        """One predictor actor per model for the three-line calls (like ``api.get_predictor`` locally)."""
        spec = model_spec(model)
        key = tuple(sorted(spec.items()))
        with self._lock:
            if key not in self._predictors:
                self._predictors[key] = self.predictor(model)
            shared = self._predictors[key]
        shared.drop_if_worker_gone()  # a worker lost between two calls: load again instead of failing
        return shared

    def segment(self, image: np.ndarray, points: Sequence[Sequence[float]], granularity: Any = 0.5,
                model: Any = None, labels: Sequence[int] | None = None, **kwargs) -> np.ndarray:
        """``gs.segment`` on the worker: the same int32 label image (points in (row, col) order)."""
        return self._shared_predictor(model).segment(image, points, granularity, labels, **kwargs)

    def segment_everything(self, image: np.ndarray, granularity: float | None = 0.5, model: Any = None,
                           progress: Callable[[int, int], None] | None = None, cancel: Any = None, **settings):
        """``gs.segment_everything`` on the worker, with progress(done, total) and cancel() (or an Event)
        read on this machine; a cancel raises ``engine.automatic.Cancelled`` as locally."""
        return self._shared_predictor(model).segment_everything(image, granularity, progress, cancel, **settings)

    def segment_everything_stack(self, stack: np.ndarray, granularity: float | None = 0.5, model: Any = None,
                                 progress: Callable[[int, int], None] | None = None, cancel: Any = None,
                                 **settings) -> np.ndarray:
        """``engine.automatic.segment_everything_stack`` on the worker (ids unique across the stack)."""
        return self._shared_predictor(model).segment_everything_stack(stack, granularity, progress, cancel,
                                                                      **settings)

    def propagate(self, stack: np.ndarray, prompts: Any, granularity: float | None = None, model: Any = None,
                  progress: Callable[[int, int], None] | None = None, cancel: Any = None, **kwargs) -> np.ndarray:
        """``gs.propagate`` on the worker: an int32 label stack, or ``PropagationCancelled`` on cancel."""
        return self._shared_predictor(model).propagate(stack, prompts, granularity, progress, cancel, **kwargs)
